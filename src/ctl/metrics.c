/* Prometheus text exposition (format 0.0.4), generated from the same
 * X-macro lists as the JSON stats, so a new counter shows up everywhere. */
#include "ctl/daemon_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "ctl/cluster_hooks.h"

/* Histogram bucket bounds: powers of two from 1 µs to ~1 s. They are exact
 * bucket edges of fm_hist, so the cumulative counts are exact too. */
#define LE_FIRST_SHIFT 10
#define LE_LAST_SHIFT 30

static uint64_t count_le(const struct fm_hist *h, uint64_t le_ns)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < FM_HIST_BUCKETS && fm_hist_bucket_low(i) <= le_ns; i++)
		if (i + 1 >= FM_HIST_BUCKETS || fm_hist_bucket_low(i + 1) - 1 <= le_ns)
			n += h->bucket[i];
	return n;
}

static void hist_text(struct strbuf *out, const char *name, const char *help,
		      const struct shard_stats *snap, unsigned nshards, size_t offset)
{
	sb_printf(out, "# HELP fluidmem_%s_seconds %s\n# TYPE fluidmem_%s_seconds histogram\n", name,
		  help, name);
	for (unsigned i = 0; i < nshards; i++) {
		const struct fm_hist *h = (const struct fm_hist *)((const char *)&snap[i] + offset);

		for (unsigned k = LE_FIRST_SHIFT; k <= LE_LAST_SHIFT; k++)
			sb_printf(out, "fluidmem_%s_seconds_bucket{shard=\"%u\",le=\"%.9g\"} %" PRIu64 "\n",
				  name, i, (double)(1ull << k) / 1e9, count_le(h, (1ull << k) - 1));
		sb_printf(out, "fluidmem_%s_seconds_bucket{shard=\"%u\",le=\"+Inf\"} %" PRIu64 "\n", name,
			  i, h->count);
		sb_printf(out, "fluidmem_%s_seconds_sum{shard=\"%u\"} %.9f\n", name, i,
			  (double)h->sum / 1e9);
		sb_printf(out, "fluidmem_%s_seconds_count{shard=\"%u\"} %" PRIu64 "\n", name, i,
			  h->count);
	}
}

int ctl_metrics_text(struct daemon *d, struct strbuf *out)
{
	int64_t res[FM_MAX_SHARDS];
	uint64_t det[FM_MAX_SHARDS];
	struct dispatch_snapshot ds;
	unsigned n = d->nshards;

	if (daemon_shard_request(d, FM_MSG_STATS, NULL, NULL, res, det) < 0 ||
	    daemon_dispatcher_request(d, FM_MSG_STATS, &ds) < 0)
		return -ETIMEDOUT;

#define X(name, help)                                                                           \
	sb_printf(out, "# HELP fluidmem_" #name "_total " help "\n# TYPE fluidmem_" #name          \
		       "_total counter\n");                                                         \
	for (unsigned i = 0; i < n; i++)                                                        \
		sb_printf(out, "fluidmem_" #name "_total{shard=\"%u\"} %" PRIu64 "\n", i,          \
			  d->snap[i].name);
	SHARD_COUNTER_FIELDS(X)
#undef X
#define X(name, help)                                                                           \
	sb_printf(out, "# HELP fluidmem_" #name " " help "\n# TYPE fluidmem_" #name " gauge\n");  \
	for (unsigned i = 0; i < n; i++)                                                        \
		sb_printf(out, "fluidmem_" #name "{shard=\"%u\"} %" PRIu64 "\n", i, d->snap[i].name);
	SHARD_GAUGE_FIELDS(X)
#undef X
	sb_printf(out, "# HELP fluidmem_ring_full_total times the dispatcher found a shard's ring full\n"
		       "# TYPE fluidmem_ring_full_total counter\n");
	for (unsigned i = 0; i < n; i++)
		sb_printf(out, "fluidmem_ring_full_total{shard=\"%u\"} %" PRIu64 "\n", i,
			  ds.ring_full[i]);
#define X(name, help)                                                                           \
	sb_printf(out, "# HELP fluidmem_dispatch_" #name "_total " help "\n# TYPE fluidmem_dispatch_" \
		       #name "_total counter\nfluidmem_dispatch_" #name "_total %" PRIu64 "\n",     \
		  ds.st.name);
	DISPATCH_STATS_FIELDS(X)
#undef X
	/* Histograms: the name without its _ns suffix, in seconds. */
#define X(field, help)                                                                         \
	do {                                                                                   \
		char base[32];                                                                 \
		snprintf(base, sizeof(base), "%s", #field);                                    \
		base[strlen(base) - 3] = '\0';                                                 \
		hist_text(out, base, help, d->snap, n, offsetof(struct shard_stats, field));   \
	} while (0);
	SHARD_HIST_FIELDS(X)
#undef X
	sb_printf(out, "# HELP fluidmem_regions registered regions\n# TYPE fluidmem_regions gauge\n"
		       "fluidmem_regions %u\n",
		  region_table_count());
	sb_printf(out, "# HELP fluidmem_registrations_total regions registered since start\n"
		       "# TYPE fluidmem_registrations_total counter\nfluidmem_registrations_total %" PRIu64
		       "\n",
		  d->registrations);
	sb_printf(out, "# HELP fluidmem_refusals_total registration requests refused\n"
		       "# TYPE fluidmem_refusals_total counter\nfluidmem_refusals_total %" PRIu64 "\n",
		  d->refusals);
	sb_printf(out, "# HELP fluidmem_conns_refused_total connections closed at accept: over a limit or not allowed\n"
		       "# TYPE fluidmem_conns_refused_total counter\nfluidmem_conns_refused_total %" PRIu64 "\n",
		  d->conns_refused);
	sb_printf(out, "# HELP fluidmem_accept_paused_total times the listeners paused out of descriptors\n"
		       "# TYPE fluidmem_accept_paused_total counter\nfluidmem_accept_paused_total %" PRIu64 "\n",
		  d->accept_paused);
	sb_printf(out, "# HELP fluidmem_uptime_seconds seconds since fluidmemd started\n"
		       "# TYPE fluidmem_uptime_seconds gauge\nfluidmem_uptime_seconds %.3f\n",
		  (double)(fm_now_ns() - d->started_ns) / 1e9);
	ctl_cluster_metrics_text(d, out);
	return 0;
}
