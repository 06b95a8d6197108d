/* ctl/shardcount: the local store's shard count is recorded, inferred for a
 * store from before the record, and a different count is refused. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl/shardcount.h"

static char dir[64];

static void setup(void)
{
	strcpy(dir, "/tmp/fm-shardcount.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

static void touch(const char *name)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);

	cr_assert_geq(fd, 0);
	close(fd);
}

TestSuite(shardcount, .init = setup, .fini = teardown);

Test(shardcount, new_store_accepts_any_count_and_records_it)
{
	char err[512];

	cr_assert_eq(fm_shard_count_recorded(dir), 0);
	cr_assert_eq(fm_shard_count_check("local", dir, 3, err, sizeof(err)), 0);
	cr_assert_eq(fm_shard_count_record("local", dir, 3), 0);
	cr_assert_eq(fm_shard_count_recorded(dir), 3);
	cr_assert_eq(fm_shard_count_check("local", dir, 3, err, sizeof(err)), 0);
	cr_assert_eq(fm_shard_count_check("local", dir, 2, err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "shards.count is 2 but"), "%s", err);
	cr_assert_not_null(strstr(err, "written with 3 shards"), "%s", err);
	cr_assert_not_null(strstr(err, "Set shards.count = 3"), "%s", err);
}

Test(shardcount, store_without_record_is_inferred_from_its_files)
{
	char err[512];

	touch("shard-0.fmkv");
	touch("shard-1.fmkv");
	touch("shard-7.fmkv.tmp");   /* not shard files */
	touch("shard--1.fmkv");
	touch("shard-count.tmp");
	cr_assert_eq(fm_shard_count_recorded(dir), 2);
	cr_assert_eq(fm_shard_count_check("local", dir, 2, err, sizeof(err)), 0);
	cr_assert_eq(fm_shard_count_check("local", dir, 1, err, sizeof(err)), -1);
	cr_assert_eq(fm_shard_count_check("local", dir, 4, err, sizeof(err)), -1);
}

Test(shardcount, corrupt_record_is_refused)
{
	char err[512], path[128];

	snprintf(path, sizeof(path), "%s/" FM_SHARD_COUNT_FILE, dir);
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f);
	fputs("two\n", f);
	fclose(f);
	cr_assert_lt(fm_shard_count_recorded(dir), 0);
	cr_assert_eq(fm_shard_count_check("local", dir, 2, err, sizeof(err)), -1);
}

Test(shardcount, only_the_local_store_with_a_path_is_guarded)
{
	char err[512];

	touch("shard-0.fmkv");
	touch("shard-1.fmkv");
	cr_assert_eq(fm_shard_count_check("memcached", dir, 5, err, sizeof(err)), 0);
	cr_assert_eq(fm_shard_count_check("local", "", 5, err, sizeof(err)), 0);
	cr_assert_eq(fm_shard_count_record("local", "", 5), 0);
}
