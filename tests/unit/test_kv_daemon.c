/* The local store's disk tier under the real fluidmemd: a verifying storm
 * at 8x the budget with a RAM tier far too small for it, a disk that fills
 * up, and a damaged record, which must poison its page, never return it. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "client/fluidmem.h"
#include "harness.h"
#include "mirror.h"

#define PAGE 4096u

static struct td fmd;
static char store_dir[64];

static void start(const char *extra)
{
	static char pathset[160];
	const char *sets[] = { "memory.resident_pages=512", "store.local.max_mib=1",
			       "store.local.segment_mib=1", pathset, extra, NULL };

	snprintf(store_dir, sizeof(store_dir), "/tmp/fm-kvd-XXXXXX");
	cr_assert_not_null(mkdtemp(store_dir));
	snprintf(pathset, sizeof(pathset), "store.local.path=\"%s\"", store_dir);
	cr_assert_eq(td_start(&fmd, sets), 0, "fluidmemd did not start");
}

static void stop(void)
{
	char cmd[128];
	int status;

	if (fmd.pid > 0) {
		status = td_stop(&fmd);
		if (status != 0)
			td_dump_log(&fmd);
		cr_expect_eq(status, 0, "fluidmemd exited with %d", status);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", store_dir);
	cr_expect_eq(system(cmd), 0);
}

static uint64_t store_file_bytes(void)
{
	uint64_t total = 0;
	char p[128];
	struct stat st;

	for (int s = 0; s < 2; s++) {
		snprintf(p, sizeof(p), "%s/shard-%d.fmkv", store_dir, s);
		if (stat(p, &st) == 0)
			total += (uint64_t)st.st_size;
	}
	return total;
}

Test(kv_daemon, storm_8x_budget_through_the_disk_tier, .timeout = 240)
{
	struct fm_client *c;
	struct fm_region *r;
	struct storm st;
	uint64_t errors;

	start(NULL);
	r = td_region(&fmd, &c, 4096, "disk-storm");
	storm_start(&st, fm_region_addr(r), 4096, 4, 20000);
	errors = storm_finish(&st);
	cr_expect_eq(errors, 0, "%lu pages differ from the mirror", (unsigned long)errors);
	cr_expect_gt(td_stat(&fmd, "evictions"), 10000);
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	cr_expect_eq(td_stat(&fmd, "evict_refused"), 0);
	/* 1 MiB of RAM tier cannot hold 3584 evicted pages: the file does. */
	cr_expect_gt(store_file_bytes(), 4u << 20);
	fm_region_destroy(r);
	fm_disconnect(c);
	stop();
}

/* 2 MiB of disk per shard (2 segments of 1 MiB, one kept for compaction):
 * evictions are refused, pages stay resident and nothing is lost. */
Test(kv_daemon, disk_full_keeps_pages_resident, .timeout = 240)
{
	struct fm_client *c;
	struct fm_region *r;
	struct storm st;
	uint64_t errors;

	start("store.local.disk_mib=4");
	r = td_region(&fmd, &c, 4096, "disk-full");
	storm_start(&st, fm_region_addr(r), 4096, 4, 20000);
	errors = storm_finish(&st);
	cr_expect_eq(errors, 0, "%lu pages differ from the mirror", (unsigned long)errors);
	cr_expect_gt(td_stat(&fmd, "evict_refused"), 0, "the cap was never reached");
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	cr_expect_leq(store_file_bytes(), 4096 * 2 + (4u << 20));
	fm_region_destroy(r);
	fm_disconnect(c);
	stop();
}

static sigjmp_buf bus_jmp;

static void on_bus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

/* Flip one data byte in every record of region `region` in both shard files. */
__attribute__((noinline)) static unsigned damage_region(uint64_t region)
{
	unsigned n = 0;
	char p[128];

	for (int s = 0; s < 2; s++) {
		struct stat st;
		int fd;

		snprintf(p, sizeof(p), "%s/shard-%d.fmkv", store_dir, s);
		fd = open(p, O_RDWR);
		if (fd < 0 || fstat(fd, &st) != 0)
			continue;
		for (off_t o = 4096; o + 40 <= st.st_size; o += 64) {
			uint8_t h[40], b;
			uint32_t magic;
			uint64_t reg;
			uint16_t len;

			if (pread(fd, h, 40, o) != 40)
				break;
			memcpy(&magic, h, 4);
			memcpy(&reg, h + 8, 8);
			memcpy(&len, h + 36, 2);
			if (magic != 0x4556494cu || reg != region || len == 0 || len > 4096)
				continue;
			if (pread(fd, &b, 1, o + 40 + len / 2) != 1)
				continue;
			b ^= 0x40;
			if (pwrite(fd, &b, 1, o + 40 + len / 2) == 1)
				n++;
		}
		close(fd);
	}
	return n;
}

Test(kv_daemon, damaged_record_poisons_its_page, .timeout = 120)
{
	enum { N = 2048 };
	struct fm_client *c;
	struct fm_region *r;
	volatile uint8_t *p;
	volatile unsigned good = 0, bad = 0, wrong = 0;

	start(NULL);
	r = td_region(&fmd, &c, N, "damaged");
	p = fm_region_addr(r);
	for (unsigned i = 0; i < N; i++)
		stamp((uint8_t *)p + (size_t)i * PAGE, i, 1);
	/* Pages evicted early have lost their RAM copy: damage them on disk. */
	unsigned damaged = damage_region(fm_region_id(r));
	cr_assert_gt(damaged, 100, "only %u records on disk", damaged);
	signal(SIGBUS, on_bus);
	for (volatile unsigned i = 0; i < N; i++) {
		if (sigsetjmp(bus_jmp, 1)) {
			bad++;
			continue;
		}
		if (check((const uint8_t *)p + (size_t)i * PAGE, i, 1))
			good++;
		else
			wrong++;
	}
	signal(SIGBUS, SIG_DFL);
	cr_expect_eq(wrong, 0, "%u pages came back with wrong contents", wrong);
	cr_expect_gt(bad, 0, "no damaged page was poisoned");
	cr_expect_eq(td_stat(&fmd, "poisoned"), bad);
	cr_log_info("%u records damaged: %u pages poisoned, %u intact", damaged, bad, good);
	fm_region_destroy(r);
	fm_disconnect(c);
	stop();
}
