/* ctl/layout: the "auto" placement planned for machines of 1 to 64 CPUs
 * and for odd cpusets (holes, high CPU numbers), as a pure function; the
 * cgroup v2 CPU quota (cpu.max) read from a scratch cgroup tree. That the
 * config's "auto" plans within the quota: test_config.c. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ctl/layout.h"

static void range(int *cpus, unsigned n, int first)
{
	for (unsigned i = 0; i < n; i++)
		cpus[i] = first + (int)i;
}

static void plan(const int *cpus, unsigned n, struct fm_layout *l)
{
	fm_layout_plan(cpus, n, FM_LAYOUT_AUTO, FM_LAYOUT_AUTO, l);
}

Test(layout, one_cpu)
{
	int cpus[1] = { 0 };
	struct fm_layout l;

	plan(cpus, 1, &l);
	cr_assert_eq(l.dispatcher_cpu, -1);
	cr_assert_eq(l.shard_count, 1);
	cr_assert(!l.shards_pinned);
	cr_assert_eq(l.shard_cpus[0], -1);
}

Test(layout, two_cpus)
{
	int cpus[2] = { 0, 1 };
	struct fm_layout l;

	plan(cpus, 2, &l);
	cr_assert_eq(l.dispatcher_cpu, 0);
	cr_assert_eq(l.shard_count, 2);
	cr_assert(l.shards_pinned);
	cr_assert_eq(l.shard_cpus[0], 1);
	cr_assert_eq(l.shard_cpus[1], 1);
}

Test(layout, four_cpus)
{
	int cpus[4];
	struct fm_layout l;

	range(cpus, 4, 0);
	plan(cpus, 4, &l);
	cr_assert_eq(l.dispatcher_cpu, 0);
	cr_assert_eq(l.shard_count, 3);
	for (unsigned i = 0; i < 3; i++)
		cr_assert_eq(l.shard_cpus[i], (int)i + 1);
}

Test(layout, sixteen_cpus)
{
	int cpus[16];
	struct fm_layout l;

	range(cpus, 16, 0);
	plan(cpus, 16, &l);
	cr_assert_eq(l.dispatcher_cpu, 0);
	cr_assert_eq(l.shard_count, 15);
	for (unsigned i = 0; i < 15; i++)
		cr_assert_eq(l.shard_cpus[i], (int)i + 1);
}

Test(layout, sixty_four_cpus_capped)
{
	int cpus[64];
	struct fm_layout l;

	range(cpus, 64, 0);
	plan(cpus, 64, &l);
	cr_assert_eq(l.dispatcher_cpu, 0);
	cr_assert_eq(l.shard_count, FM_LAYOUT_AUTO_SHARDS_CAP);
	/* Each shard has a CPU of its own, none the dispatcher's. */
	for (unsigned i = 0; i < l.shard_count; i++) {
		cr_assert_eq(l.shard_cpus[i], (int)i + 1);
		for (unsigned j = 0; j < i; j++)
			cr_assert_neq(l.shard_cpus[i], l.shard_cpus[j]);
	}
}

Test(layout, odd_cpusets)
{
	struct fm_layout l;

	/* A cpuset with holes: CPUs 3, 7, 8, 40. */
	int holes[] = { 3, 7, 8, 40 };

	plan(holes, 4, &l);
	cr_assert_eq(l.dispatcher_cpu, 3);
	cr_assert_eq(l.shard_count, 3);
	cr_assert_eq(l.shard_cpus[0], 7);
	cr_assert_eq(l.shard_cpus[1], 8);
	cr_assert_eq(l.shard_cpus[2], 40);

	/* One CPU, not CPU 0: nothing pinned. */
	int one[] = { 5 };

	plan(one, 1, &l);
	cr_assert_eq(l.dispatcher_cpu, -1);
	cr_assert_eq(l.shard_count, 1);

	/* Two high CPUs. */
	int two[] = { 62, 1023 };

	plan(two, 2, &l);
	cr_assert_eq(l.dispatcher_cpu, 62);
	cr_assert_eq(l.shard_count, 2);
	cr_assert_eq(l.shard_cpus[0], 1023);
	cr_assert_eq(l.shard_cpus[1], 1023);

	/* Three CPUs: two shards, one each. */
	int three[] = { 1, 2, 3 };

	plan(three, 3, &l);
	cr_assert_eq(l.dispatcher_cpu, 1);
	cr_assert_eq(l.shard_count, 2);
	cr_assert_eq(l.shard_cpus[0], 2);
	cr_assert_eq(l.shard_cpus[1], 3);
}

Test(layout, fixed_inputs_are_kept)
{
	int cpus[4] = { 0, 1, 2, 3 };
	struct fm_layout l;

	/* A fixed dispatcher CPU: shards avoid it. */
	fm_layout_plan(cpus, 4, 2, FM_LAYOUT_AUTO, &l);
	cr_assert_eq(l.dispatcher_cpu, 2);
	cr_assert_eq(l.shard_count, 3);
	cr_assert_eq(l.shard_cpus[0], 0);
	cr_assert_eq(l.shard_cpus[1], 1);
	cr_assert_eq(l.shard_cpus[2], 3);
	/* A fixed count above the CPUs left: round-robin. */
	fm_layout_plan(cpus, 4, FM_LAYOUT_AUTO, 7, &l);
	cr_assert_eq(l.shard_count, 7);
	cr_assert_eq(l.shard_cpus[3], 1);
	cr_assert_eq(l.shard_cpus[6], 1);
	/* Unpinned dispatcher, fixed: shards may use every CPU. */
	fm_layout_plan(cpus, 4, -1, FM_LAYOUT_AUTO, &l);
	cr_assert_eq(l.dispatcher_cpu, -1);
	cr_assert_eq(l.shard_count, 4);
	/* The only CPU is the dispatcher's: shards share it. */
	fm_layout_plan(cpus, 1, 0, 2, &l);
	cr_assert_eq(l.dispatcher_cpu, 0);
	cr_assert_eq(l.shard_count, 2);
	/* Out-of-range counts are clamped (the config checks them first). */
	fm_layout_plan(cpus, 4, FM_LAYOUT_AUTO, 1000, &l);
	cr_assert_eq(l.shard_count, FM_LAYOUT_SHARDS_MAX);
}

Test(layout, cpus_of_this_process_and_format)
{
	int cpus[FM_LAYOUT_CPUS_MAX];
	unsigned n = fm_layout_cpus(cpus, FM_LAYOUT_CPUS_MAX);
	char buf[64];

	cr_assert(n >= 1);
	for (unsigned i = 1; i < n; i++)
		cr_assert_gt(cpus[i], cpus[i - 1]);
	int set[] = { 0, 1, 2, 3, 8, 10, 11 };

	fm_layout_format_cpus(set, 7, buf, sizeof(buf));
	cr_assert_str_eq(buf, "0-3,8,10-11");
	fm_layout_format_cpus(set, 1, buf, sizeof(buf));
	cr_assert_str_eq(buf, "0");
	fm_layout_format_cpus(set, 7, buf, 4);   /* cut, NUL-terminated */
	cr_assert_eq(strlen(buf), 3);
}

/* cgroup v2 cpu.max, read under a scratch cgroup root: each case writes
 * cpu.max files (NULL: none; "DIR": a directory where the file should be,
 * which cannot be read) at the leaf /a/b, its parent /a and the root, and
 * expects the whole CPUs allowed (0: no quota). */
struct quota_case {
	const char *leaf, *parent, *root;
	unsigned cpus;
};

static const struct quota_case quota_cases[] = {
	{ NULL, NULL, NULL, 0 },                              /* no files: no cgroup v2 CPU controller */
	{ "max 100000\n", "max 100000\n", NULL, 0 },          /* "max": no quota */
	{ "100000 100000\n", NULL, NULL, 1 },                 /* 1 CPU's worth */
	{ "150000 100000\n", NULL, NULL, 2 },                 /* fractional: rounded up */
	{ "50000 100000\n", NULL, NULL, 1 },                  /* half a CPU still gets one */
	{ "1000 10000\n", NULL, NULL, 1 },                    /* another period */
	{ "800000 100000\n", NULL, NULL, 8 },
	{ "max 100000\n", "200000 100000\n", NULL, 2 },       /* nested: the parent limits */
	{ "400000 100000\n", "200000 100000\n", "300000 100000\n", 2 },   /* the smallest wins */
	{ "100000 100000\n", "400000 100000\n", NULL, 1 },    /* the leaf is smaller */
	{ NULL, NULL, "300000 100000\n", 3 },                 /* only the mount's root (a container) */
	{ "300000\n", NULL, NULL, 3 },                        /* no period: the default 100000 */
	{ "DIR", "200000 100000\n", NULL, 2 },                /* unreadable: ignored */
	{ "", "200000 100000\n", NULL, 2 },                   /* empty: ignored */
	{ "garbage\n", NULL, NULL, 0 },
	{ "-100000 100000\n", NULL, NULL, 0 },
	{ "100000 0\n", NULL, NULL, 0 },                      /* period 0 */
	{ "0 100000\n", NULL, NULL, 0 },                      /* quota 0 */
	{ "100000x 100000\n", NULL, NULL, 0 },
	{ "100000 100000 7\n", NULL, NULL, 0 },
	{ "99999999999 1000\n", NULL, NULL, FM_LAYOUT_CPUS_MAX },   /* capped */
};

static void put(const char *dir, const char *content)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/cpu.max", dir);
	if (!content)
		return;
	if (!strcmp(content, "DIR")) {
		cr_assert_eq(mkdir(path, 0755), 0);
		return;
	}
	FILE *f = fopen(path, "w");

	cr_assert(f);
	fputs(content, f);
	fclose(f);
}

static void rm_rf(const char *dir)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

Test(layout, cpu_quota_table)
{
	for (size_t i = 0; i < sizeof(quota_cases) / sizeof(quota_cases[0]); i++) {
		const struct quota_case *q = &quota_cases[i];
		char root[] = "/tmp/fmlq.XXXXXX", a[64], b[64];

		cr_assert(mkdtemp(root));
		snprintf(a, sizeof(a), "%s/a", root);
		snprintf(b, sizeof(b), "%s/a/b", root);
		cr_assert_eq(mkdir(a, 0755), 0);
		cr_assert_eq(mkdir(b, 0755), 0);
		put(b, q->leaf);
		put(a, q->parent);
		put(root, q->root);
		cr_expect_eq(fm_layout_cpu_quota_at(root, "/a/b"), q->cpus, "case %zu: got %u, want %u",
			     i, fm_layout_cpu_quota_at(root, "/a/b"), q->cpus);
		/* A trailing slash names the same cgroup. */
		cr_expect_eq(fm_layout_cpu_quota_at(root, "/a/b/"), q->cpus, "case %zu", i);
		rm_rf(root);
	}
	/* The root cgroup alone, a missing cgroup, no mount, a relative path. */
	char root[] = "/tmp/fmlq.XXXXXX";

	cr_assert(mkdtemp(root));
	put(root, "200000 100000\n");
	cr_assert_eq(fm_layout_cpu_quota_at(root, "/"), 2);
	cr_assert_eq(fm_layout_cpu_quota_at(root, "/gone/away"), 2);
	cr_assert_eq(fm_layout_cpu_quota_at("/nonexistent-fluidmem", "/a"), 0);
	cr_assert_eq(fm_layout_cpu_quota_at(root, "a"), 0);
	rm_rf(root);
}

Test(layout, cgroup_path_of_proc_self_cgroup)
{
	char path[64];

	/* cgroup v2 only. */
	cr_assert(fm_layout_cgroup_path("0::/system.slice/fluidmemd.service\n", path, sizeof(path)));
	cr_assert_str_eq(path, "/system.slice/fluidmemd.service");
	/* Hybrid: v1 lines first, the v2 line last, no final newline. */
	cr_assert(fm_layout_cgroup_path("12:cpu,cpuacct:/x\n1:name=systemd:/y\n0::/z", path,
					sizeof(path)));
	cr_assert_str_eq(path, "/z");
	cr_assert(fm_layout_cgroup_path("0::/\n", path, sizeof(path)));
	cr_assert_str_eq(path, "/");
	/* cgroup v1 only, empty, or a path that does not fit. */
	cr_assert(!fm_layout_cgroup_path("4:cpu:/a\n3:memory:/a\n", path, sizeof(path)));
	cr_assert(!fm_layout_cgroup_path("", path, sizeof(path)));
	cr_assert(!fm_layout_cgroup_path("0::/a/long/path\n", path, 8));
	/* This process: whatever it says, the quota read from it is sane. */
	cr_assert_leq(fm_layout_cpu_quota(), FM_LAYOUT_CPUS_MAX);
}
