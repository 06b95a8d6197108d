/* bench/ctl_stats: read fluidmemd's totals over its control socket.
 *
 * The control socket speaks lines: send "v1 stats\n", get one JSON line
 * {"v":1,"ok":true,"totals":{"faults":..,"evictions":..,"budget":..},...},
 * parsed with jansson. */
#ifndef FM_BENCH_CTL_STATS_H
#define FM_BENCH_CTL_STATS_H

#include <stddef.h>
#include <stdint.h>

/* A value missing from the reply is -1. */
struct ctl_totals {
	int64_t faults;
	int64_t evictions;
	int64_t resident;
	int64_t budget;
	/* store traffic (all -1 when the daemon does not report them) */
	int64_t store_puts;
	int64_t evict_clean;
	int64_t evict_zero;
};

/* The daemon's store-get latency (its fetch_ns histogram, since start or the
 * last reset) from "v1 latency". 0, -ENOENT or as ctl_stats_query. */
int ctl_fetch_latency(const char *path, double *p50_us, double *p99_us, int64_t *count);

/* Query `path`. Returns 0, or -errno: ENOENT/ECONNREFUSED (no daemon),
 * ETIMEDOUT (no reply within 2 s), EPROTO (a reply without "ok":true or
 * without "totals"), EMSGSIZE (a reply longer than 1 MiB). On -EPROTO the
 * reply's first bytes are copied into err. */
int ctl_stats_query(const char *path, struct ctl_totals *out, char *err, size_t errlen);

#endif
