/* bench/storm: the fault-storm workload, shared by the fluidmemd run and the
 * raw in-process baseline so both measure exactly the same accesses.
 *
 * Page p of the region belongs to thread p % T. Only its owner reads or
 * writes it, so each thread's mirror (one version counter per owned page) is
 * private and exact, while neighbouring pages fault from different threads at
 * the same time. */
#ifndef FM_BENCH_STORM_H
#define FM_BENCH_STORM_H

#include <stdbool.h>
#include <stdint.h>

#include "base/hist.h"

#define STORM_MAX_THREADS 256
#define STORM_MAX_PASSES 10000
/* Mismatches printed in full; the rest are only counted. */
#define STORM_MAX_REPORTED_ERRORS 8

enum storm_pattern { STORM_SEQ, STORM_RANDOM, STORM_ZIPF, STORM_STRIDE, STORM_PATTERN_NR };

const char *storm_pattern_name(enum storm_pattern p);
/* -1 when unknown. */
int storm_pattern_parse(const char *name);

struct storm_opts {
	const char *socket_path;
	const char *control_path;
	const char *memcached;     /* --memcached: server for the direct-get probe, or NULL */
	uint64_t pages;
	unsigned threads;
	unsigned passes;
	enum storm_pattern pattern;
	double zipf_s;
	uint64_t stride;           /* --stride: pages between accesses of --pattern stride */
	double write_ratio;
	uint64_t seed;
	double fault_threshold_us;
	int64_t budget;            /* --budget; -1 when not given */
	int cpus[STORM_MAX_THREADS];   /* --cpus: thread i runs on cpus[i % ncpus] */
	unsigned ncpus;            /* 0: workload threads unpinned */
	int raw_cpu;               /* --raw-cpu: the raw handler's CPU, -1 unpinned */
	bool verify;
	bool text;                 /* --content text: compressible stamps */
	bool noise;                /* --content noise: hashed words, nothing to compress */
	bool json;
	bool quiet;
	bool baseline;             /* --baseline raw */
	bool baseline_only;        /* --baseline-only raw */
};

/* One pass. Threads wait for each other between passes, so a pass's wall
 * time is that of its slowest thread. */
struct storm_pass {
	double wall_s;
	uint64_t faults;
	uint64_t first;            /* faulting first touches */
};

/* What one run of the workload measured. Latencies are in ns. */
struct storm_result {
	struct fm_hist all;        /* every faulting access */
	struct fm_hist first;      /* faulting first touches of a page */
	struct fm_hist refault;    /* faulting accesses to a page touched before */
	uint64_t accesses;
	uint64_t reads;
	uint64_t writes;
	uint64_t verify_errors;
	double wall_s;             /* the passes only, not the final check */
	double final_check_s;      /* the final whole-region check (--verify) */
	struct storm_pass *pass;   /* o->passes entries; free with storm_result_free */
};

void storm_result_free(struct storm_result *res);

/* Called once, by the thread that started the workload, right after the last
 * pass of every thread ended and before the final check starts: the moment
 * the run's counters (evictions, ...) are snapshotted. */
typedef void storm_passes_done_fn(void *arg);

/* Run the workload on `pages` pages at `base` with o->threads threads.
 * o->passes is 1..STORM_MAX_PASSES.
 * Returns 0 or -errno (thread creation, memory); on error `res` is
 * incomplete. Blocks until every thread has finished. */
int storm_run(const struct storm_opts *o, void *base, struct storm_result *res,
	      storm_passes_done_fn *done, void *done_arg);

#endif
