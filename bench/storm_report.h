/* bench/storm_report: what fault-storm prints about a run: the human
 * summary and the JSON object (keys in bench/README.md, "JSON"). */
#ifndef FM_BENCH_STORM_REPORT_H
#define FM_BENCH_STORM_REPORT_H

#include "base/hist.h"
#include "mc_probe.h"
#include "raw_uffd.h"
#include "storm.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define TIMER_NAME "clock_gettime(CLOCK_MONOTONIC) (vDSO)"

/* One measured run (fluidmemd or raw) as reported. */
struct run_report {
	const char *mode;            /* "fluidmemd" or "raw" */
	struct storm_result res;
	int64_t budget;              /* -1 unknown */
	int64_t evictions;           /* -1 unknown */
	int64_t handler_faults;      /* faults the serving side counted; -1 unknown */
	const char *evictions_source;
	bool raw;
	bool ran;                    /* the workload completed; res is valid */
	struct raw_uffd_stats raw_st;
	/* fluidmemd: the store traffic of the run (daemon totals; -1 unknown) */
	int64_t store_puts, evict_clean, evict_zero;
	double fetch_p50_us, fetch_p99_us;   /* the daemon's store gets; < 0 unknown */
	char error[256];             /* non-empty: the run is not trustworthy */
};

/* The human summary of one run (a line saying why when it did not run). */
void report_summary(FILE *f, const struct storm_opts *o, const struct run_report *r);
/* The members of one run's JSON object, without the braces. */
void report_json_run(FILE *f, const struct storm_opts *o, const struct run_report *r);
/* The --memcached probe: one summary line (pr->ran only), and its JSON
 * members (the timings, or "store_get_error"), each led by a comma. */
void report_probe_summary(FILE *f, const char *server, const struct mc_probe *pr);
void report_probe_json(FILE *f, const struct mc_probe *pr);

#endif
