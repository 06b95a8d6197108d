/* ctl/layout: where the dispatcher and the shards run when the config says
 * "auto" (dispatcher.cpu, shards.count, shards.cpus). fm_layout_plan is a
 * pure function of the CPUs this process may use (tested for any machine);
 * fm_layout_cpus reads them from sched_getaffinity, which the kernel already
 * narrows to the cgroup's cpuset and to online CPUs. The rules and the
 * measurements behind them: bench/README.md, "Placement". */
#ifndef FM_LAYOUT_H
#define FM_LAYOUT_H

#include <stdbool.h>

#define FM_LAYOUT_CPUS_MAX 1024     /* CPU numbers 0..1023, as the config allows */
#define FM_LAYOUT_SHARDS_MAX 64     /* FM_MAX_SHARDS */
#define FM_LAYOUT_AUTO_SHARDS_CAP 16   /* more shards split the budget finer for little gain */
#define FM_LAYOUT_AUTO (-2)         /* an input left to the plan */

struct fm_layout {
	int dispatcher_cpu;                  /* -1: unpinned */
	unsigned shard_count;
	int shard_cpus[FM_LAYOUT_SHARDS_MAX];   /* -1: unpinned */
	bool shards_pinned;                  /* false: every shard_cpus[i] is -1 (1 CPU) */
};

/* Plan a layout on the usable CPUs cpus[0..n) (ascending, distinct, n >= 1).
 * dispatcher_cpu and count are either fixed values (kept as given; count
 * 1..64, cpu -1..1023) or FM_LAYOUT_AUTO. Shard CPUs are always planned; a
 * caller with fixed shard CPUs ignores them.
 *   1 CPU:   nothing pinned, 1 shard.
 *   2+ CPUs: the dispatcher on the first CPU, the shards on the others, one
 *            per CPU (at least 2, at most FM_LAYOUT_AUTO_SHARDS_CAP); more
 *            shards than CPUs share them round-robin. On 2 CPUs: dispatcher
 *            on one, 2 shards on the other (measured best).
 * A fixed dispatcher CPU is kept out of the shards' CPUs where another is
 * left. */
void fm_layout_plan(const int *cpus, unsigned n, int dispatcher_cpu, int count,
		    struct fm_layout *out);

/* The CPUs this process may run on, ascending, into cpus[0..cap): their
 * number (>= 1; 1 with cpus[0] = 0 if the kernel will not say). */
unsigned fm_layout_cpus(int *cpus, unsigned cap);

/* "0-3,8" for cpus[0..n), cut to len. */
void fm_layout_format_cpus(const int *cpus, unsigned n, char *buf, unsigned len);

#endif
