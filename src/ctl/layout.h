/* ctl/layout: where the dispatcher and the shards run when the config says
 * "auto" (dispatcher.cpu, shards.count, shards.cpus). fm_layout_plan is a
 * pure function of the CPUs this process may use (tested for any machine);
 * fm_layout_cpus reads them from sched_getaffinity, which the kernel already
 * narrows to the cgroup's cpuset and to online CPUs, and fm_layout_cpu_quota
 * the CPU time the cgroup (v2 cpu.max, v1 cpu.cfs_quota_us) allows (a quota
 * is not a cpuset: the affinity still shows every CPU). The rules and the
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

/* Whole CPUs' worth of time the cgroup CPU controller allows this process,
 * cgroup v2 or v1 (a hybrid host has both; the one that limits more wins):
 *   v2: the smallest cpu.max quota/period, rounded up, of its cgroup (the
 *       "0::/path" line of /proc/self/cgroup) and every ancestor up to the
 *       root of the cgroup2 mount (from /proc/self/mountinfo; /sys/fs/cgroup
 *       if that cannot be read);
 *   v1: the same with cpu.cfs_quota_us / cpu.cfs_period_us (-1: none) of its
 *       cgroup on the line naming the `cpu` controller, under the mount of a
 *       `cgroup` file system with the `cpu` option.
 * 0: no quota (none set, no CPU controller, or nothing readable; a file that
 * cannot be read or parsed is ignored). *file (when not NULL) names the
 * limiting file, "cpu.max" or "cpu.cfs_quota_us", or NULL for none.
 * FLUIDMEM_CGROUP_ROOT replaces both mounts (the v2 and v1 paths are read
 * under it, mountinfo is not); it is for tests only. */
unsigned fm_layout_cpu_quota(const char **file);

/* The v2 quota for the cgroup `path` ("/a/b", "/" for the root) under the
 * cgroup2 mount `root`. */
unsigned fm_layout_cpu_quota_at(const char *root, const char *path);

/* The v1 quota (cpu.cfs_quota_us / cpu.cfs_period_us) for the cgroup
 * `path` under the mount `root` of the v1 `cpu` controller. */
unsigned fm_layout_cpu_quota_v1_at(const char *root, const char *path);

/* The cgroup v2 path in the text of /proc/<pid>/cgroup (its "0::" line)
 * into path[0..len): true, or false when there is none (cgroup v1 only). */
bool fm_layout_cgroup_path(const char *proc_cgroup, char *path, unsigned len);

/* The same for the cgroup v1 hierarchy whose controller list (the middle
 * field, "cpu,cpuacct") holds `controller`; NULL: the v2 line. */
bool fm_layout_cgroup_v1_path(const char *proc_cgroup, const char *controller, char *path,
			      unsigned len);

/* From the text of /proc/<pid>/mountinfo, the first mount of the cgroup v1
 * hierarchy with `controller` among its options (NULL: the cgroup2 mount):
 * its mount point into mnt[0..mlen) and the hierarchy path it shows (its
 * root field, "/" unless a subtree is mounted) into mroot[0..rlen), octal
 * escapes decoded. False: none, or it does not fit. */
bool fm_layout_cgroup_mount(const char *mountinfo, const char *controller, char *mnt,
			    unsigned mlen, char *mroot, unsigned rlen);

/* "0-3,8" for cpus[0..n), cut to len. */
void fm_layout_format_cpus(const int *cpus, unsigned n, char *buf, unsigned len);

#endif
