/* ctl/layout: the "auto" placement planned for machines of 1 to 64 CPUs
 * and for odd cpusets (holes, high CPU numbers), as a pure function; the
 * cgroup CPU quota (v2 cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us)
 * read from a scratch cgroup tree, and the v1 hierarchy and mounts found in
 * /proc/self/cgroup and /proc/self/mountinfo texts. That the
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

static void put_file(const char *dir, const char *name, const char *content)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
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

static void put(const char *dir, const char *content)
{
	put_file(dir, "cpu.max", content);
}

static void rm_rf(const char *dir)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

/* A scratch cgroup tree root (a mkdtemp template) with /a (its path into
 * a[64]) and /a/b (into b[64]). */
static void make_tree(char *root, char *a, char *b)
{
	cr_assert(mkdtemp(root));
	snprintf(a, 64, "%s/a", root);
	snprintf(b, 64, "%s/a/b", root);
	cr_assert_eq(mkdir(a, 0755), 0);
	cr_assert_eq(mkdir(b, 0755), 0);
}

Test(layout, cpu_quota_table)
{
	for (size_t i = 0; i < sizeof(quota_cases) / sizeof(quota_cases[0]); i++) {
		const struct quota_case *q = &quota_cases[i];
		char root[] = "/tmp/fmlq.XXXXXX", a[64], b[64];

		make_tree(root, a, b);
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
	cr_assert_leq(fm_layout_cpu_quota(NULL), FM_LAYOUT_CPUS_MAX);
}

/* cgroup v1: cpu.cfs_quota_us and cpu.cfs_period_us (NULL: none; "DIR": a
 * directory in the file's place) at the leaf /a/b and at its parent /a. */
struct cfs_case {
	const char *leaf_quota, *leaf_period, *parent_quota, *parent_period;
	unsigned cpus;
};

static const struct cfs_case cfs_cases[] = {
	{ NULL, NULL, NULL, NULL, 0 },                          /* no files: no v1 cpu controller */
	{ "-1\n", "100000\n", "-1\n", "100000\n", 0 },          /* -1: no quota */
	{ "100000\n", "100000\n", NULL, NULL, 1 },              /* 1 CPU's worth */
	{ "150000\n", "100000\n", NULL, NULL, 2 },              /* rounded up */
	{ "50000\n", "100000\n", NULL, NULL, 1 },
	{ "5000\n", "10000\n", NULL, NULL, 1 },                 /* another period */
	{ "-1\n", "100000\n", "200000\n", "100000\n", 2 },      /* the parent limits */
	{ "300000\n", "100000\n", "200000\n", "100000\n", 2 },  /* the smallest wins */
	{ "100000\n", "100000\n", "400000\n", "100000\n", 1 },
	{ "100000\n", NULL, "200000\n", "100000\n", 2 },        /* no period file: level ignored */
	{ NULL, "100000\n", NULL, NULL, 0 },                    /* no quota file */
	{ "100000\n", "0\n", NULL, NULL, 0 },                   /* period 0 */
	{ "0\n", "100000\n", NULL, NULL, 0 },                   /* quota 0 */
	{ "garbage\n", "100000\n", "200000\n", "100000\n", 2 }, /* garbage: ignored */
	{ "100000\n", "garbage\n", NULL, NULL, 0 },
	{ "100000 7\n", "100000\n", NULL, NULL, 0 },            /* trailing words */
	{ "100000\n", "100000x\n", NULL, NULL, 0 },
	{ "", "100000\n", NULL, NULL, 0 },                       /* empty */
	{ "-100000\n", "100000\n", NULL, NULL, 0 },             /* negative, not -1 */
	{ "99999999999999999999\n", "100000\n", NULL, NULL, 0 }, /* overflows */
	{ "DIR", "100000\n", "300000\n", "100000\n", 3 },        /* unreadable: ignored */
	{ "99999999999\n", "1000\n", NULL, NULL, FM_LAYOUT_CPUS_MAX },   /* capped */
	{ "100000", "100000", NULL, NULL, 1 },                  /* no newline */
};

Test(layout, cpu_quota_v1_table)
{
	for (size_t i = 0; i < sizeof(cfs_cases) / sizeof(cfs_cases[0]); i++) {
		const struct cfs_case *q = &cfs_cases[i];
		char root[] = "/tmp/fmlq.XXXXXX", a[64], b[64];

		make_tree(root, a, b);
		put_file(b, "cpu.cfs_quota_us", q->leaf_quota);
		put_file(b, "cpu.cfs_period_us", q->leaf_period);
		put_file(a, "cpu.cfs_quota_us", q->parent_quota);
		put_file(a, "cpu.cfs_period_us", q->parent_period);
		cr_expect_eq(fm_layout_cpu_quota_v1_at(root, "/a/b"), q->cpus, "case %zu: got %u, want %u",
			     i, fm_layout_cpu_quota_v1_at(root, "/a/b"), q->cpus);
		/* A v2 reader finds no cpu.max in a v1 tree, and the other way. */
		cr_expect_eq(fm_layout_cpu_quota_at(root, "/a/b"), 0, "case %zu", i);
		rm_rf(root);
	}
	char root[] = "/tmp/fmlq.XXXXXX";

	cr_assert(mkdtemp(root));
	put(root, "100000 100000\n");
	cr_assert_eq(fm_layout_cpu_quota_v1_at(root, "/"), 0);
	put_file(root, "cpu.cfs_quota_us", "200000\n");
	put_file(root, "cpu.cfs_period_us", "100000\n");
	cr_assert_eq(fm_layout_cpu_quota_v1_at(root, "/"), 2);
	cr_assert_eq(fm_layout_cpu_quota_v1_at(root, "/gone/away"), 2);
	cr_assert_eq(fm_layout_cpu_quota_v1_at(root, "a"), 0);
	cr_assert_eq(fm_layout_cpu_quota_v1_at("/nonexistent-fluidmem", "/a"), 0);
	rm_rf(root);
}

Test(layout, cgroup_v1_path_of_proc_self_cgroup)
{
	char path[64];
	const char *hybrid = "9:name=systemd:/s\n3:cpuacct:/acct\n2:cpu,cpuacct:/c/d\n0::/z\n";

	cr_assert(fm_layout_cgroup_v1_path(hybrid, "cpu", path, sizeof(path)));
	cr_assert_str_eq(path, "/c/d");
	cr_assert(fm_layout_cgroup_v1_path(hybrid, "cpuacct", path, sizeof(path)));
	cr_assert_str_eq(path, "/acct");   /* the first line naming it */
	cr_assert(fm_layout_cgroup_v1_path(hybrid, NULL, path, sizeof(path)));
	cr_assert_str_eq(path, "/z");
	/* "cpuacct" or "cpuset" alone is not "cpu"; nor is a name= hierarchy. */
	cr_assert(!fm_layout_cgroup_v1_path("3:cpuacct:/a\n4:cpuset:/b\n1:name=cpu:/c\n0::/\n",
					    "cpu", path, sizeof(path)));
	cr_assert(fm_layout_cgroup_v1_path("1:cpu:/\n", "cpu", path, sizeof(path)));
	cr_assert_str_eq(path, "/");
	cr_assert(fm_layout_cgroup_v1_path("5:cpuset,cpu:/x", "cpu", path, sizeof(path)));
	cr_assert_str_eq(path, "/x");
	/* Malformed lines: no second colon, a relative path, too long. */
	cr_assert(!fm_layout_cgroup_v1_path("2:cpu\n", "cpu", path, sizeof(path)));
	cr_assert(!fm_layout_cgroup_v1_path("2:cpu:x\n", "cpu", path, sizeof(path)));
	cr_assert(!fm_layout_cgroup_v1_path("2:cpu:/a/long/path\n", "cpu", path, 8));
	cr_assert(!fm_layout_cgroup_v1_path("", "cpu", path, sizeof(path)));
}

Test(layout, cgroup_mount_of_mountinfo)
{
	char mnt[64], root[64];
	/* A hybrid host (this project's test machines), shortened. */
	const char *hybrid =
		"31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
		"33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
		"32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:7 - cgroup cgroup rw,cpu\n"
		"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

	cr_assert(fm_layout_cgroup_mount(hybrid, "cpu", mnt, sizeof(mnt), root, sizeof(root)));
	cr_assert_str_eq(mnt, "/sys/fs/cgroup/cpu");
	cr_assert_str_eq(root, "/");
	cr_assert(fm_layout_cgroup_mount(hybrid, NULL, mnt, sizeof(mnt), root, sizeof(root)));
	cr_assert_str_eq(mnt, "/sys/fs/cgroup/unified");
	/* Co-mounted controllers, a subtree mounted, an escaped space. */
	cr_assert(fm_layout_cgroup_mount("40 1 0:9 /docker/ab /c\\040g rw - cgroup cgroup "
					 "rw,cpu,cpuacct",
					 "cpu", mnt, sizeof(mnt), root, sizeof(root)));
	cr_assert_str_eq(mnt, "/c g");
	cr_assert_str_eq(root, "/docker/ab");
	/* No such mount: a cgroup2-only host, a cgroup named "cpu" that is
	 * not the controller, a source called cgroup, malformed lines. */
	cr_assert(!fm_layout_cgroup_mount("41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
					  "cpu", mnt, sizeof(mnt), root, sizeof(root)));
	cr_assert(!fm_layout_cgroup_mount("1 2 0:3 / /x rw - cgroup cgroup rw,cpuacct,name=cpu\n"
					  "1 2 0:3 / /y rw - tmpfs cgroup rw,cpu\n"
					  "1 2 0:3 / /z rw - cgroup\n1 2 0:3 /\n\n garbage - -\n",
					  "cpu", mnt, sizeof(mnt), root, sizeof(root)));
	cr_assert(!fm_layout_cgroup_mount("", NULL, mnt, sizeof(mnt), root, sizeof(root)));
	cr_assert(!fm_layout_cgroup_mount(hybrid, "cpu", mnt, 8, root, sizeof(root)));
}

/* Both versions under FLUIDMEM_CGROUP_ROOT (a hybrid host's v2 and v1 cpu
 * paths from /proc/self/cgroup): the one that allows fewer CPUs wins, and
 * the file named is its own. */
Test(layout, cpu_quota_v1_and_v2_the_smaller_wins)
{
	char root[] = "/tmp/fmlq.XXXXXX", text[4096] = "", v1[256], v2[256], d1[512], d2[512],
	     cmd[1100];
	const char *file = "unset";
	FILE *f = fopen("/proc/self/cgroup", "r");

	cr_assert(f);
	text[fread(text, 1, sizeof(text) - 1, f)] = '\0';
	fclose(f);
	if (!fm_layout_cgroup_v1_path(text, "cpu", v1, sizeof(v1)) ||
	    !fm_layout_cgroup_path(text, v2, sizeof(v2)))
		cr_skip_test("needs both a v1 cpu and a v2 line in /proc/self/cgroup (a hybrid host)");
	cr_assert(mkdtemp(root));
	snprintf(d1, sizeof(d1), "%s%s", root, v1);
	snprintf(d2, sizeof(d2), "%s%s", root, v2);
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s' '%s'", d1, d2);
	cr_assert_eq(system(cmd), 0);
	cr_assert_eq(setenv("FLUIDMEM_CGROUP_ROOT", root, 1), 0);

	cr_assert_eq(fm_layout_cpu_quota(&file), 0);   /* nothing yet */
	cr_assert_null(file);
	put(d2, "300000 100000\n");
	cr_assert_eq(fm_layout_cpu_quota(&file), 3);
	cr_assert_str_eq(file, "cpu.max");
	put_file(d1, "cpu.cfs_quota_us", "150000\n");
	put_file(d1, "cpu.cfs_period_us", "100000\n");
	cr_assert_eq(fm_layout_cpu_quota(&file), 2);
	cr_assert_str_eq(file, "cpu.cfs_quota_us");
	put(d2, "100000 100000\n");
	cr_assert_eq(fm_layout_cpu_quota(&file), 1);
	cr_assert_str_eq(file, "cpu.max");
	put(d2, "max 100000\n");
	cr_assert_eq(fm_layout_cpu_quota(&file), 2);
	cr_assert_str_eq(file, "cpu.cfs_quota_us");
	put_file(d1, "cpu.cfs_period_us", "0\n");   /* malformed: no limit left */
	cr_assert_eq(fm_layout_cpu_quota(NULL), 0);

	unsetenv("FLUIDMEM_CGROUP_ROOT");
	rm_rf(root);
}
