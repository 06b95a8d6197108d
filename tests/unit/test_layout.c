/* ctl/layout: the "auto" placement planned for machines of 1 to 64 CPUs
 * and for odd cpusets (holes, high CPU numbers), as a pure function. */
#include <criterion/criterion.h>
#include <string.h>

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
