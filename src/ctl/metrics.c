/* Prometheus text exposition (format 0.0.4), generated from the same
 * X-macro lists as the JSON stats, so a new counter shows up everywhere.
 *
 * Naming (https://prometheus.io/docs/practices/naming/): the unit is in the
 * name (_pages, _bytes, _seconds, _messages), and _total ends counters and
 * nothing else. A field whose own name says neither is renamed in
 * metric_names[]; tests/blackbox/metrics_names.sh scrapes a live daemon and
 * fails on any name that breaks the rules, so a new gauge without a unit is
 * caught there. These counters are never reset: `stats --reset` moves a
 * baseline in commands.c instead. */
#include "ctl/daemon_priv.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "ctl/cluster_hooks.h"
#include "fm_version.h"

/* Histogram bucket bounds: powers of two from 1 µs to ~1 s. They are exact
 * bucket edges of fm_hist, so the cumulative counts are exact too. */
#define LE_FIRST_SHIFT 10
#define LE_LAST_SHIFT 30

enum metric_type { M_COUNTER, M_GAUGE };

static const char *const type_names[] = { "counter", "gauge" };

/* Exported names for fields whose own name lacks the unit or the right
 * suffix. name NULL: not exported under this field. */
static const struct metric_name {
	const char *field;
	const char *name;          /* after "fluidmem_" */
	enum metric_type type;
} metric_names[] = {
	/* shard counters that count pages */
	{ "evictions", "evicted_pages_total", M_COUNTER },
	{ "evict_zero", "evicted_zero_pages_total", M_COUNTER },
	{ "evict_clean", "evicted_clean_pages_total", M_COUNTER },
	{ "evict_refused", "evict_refused_pages_total", M_COUNTER },
	{ "store_puts", "store_put_pages_total", M_COUNTER },
	{ "poisoned", "poisoned_pages_total", M_COUNTER },
	{ "discarded", "discarded_pages_total", M_COUNTER },
	{ "restored", "restored_pages_total", M_COUNTER },
	{ "prefetched", "prefetched_pages_total", M_COUNTER },
	{ "prefetch_hits", "prefetch_hit_pages_total", M_COUNTER },
	{ "prefetch_wasted", "prefetch_wasted_pages_total", M_COUNTER },
	{ "drain_moved", "drain_moved_pages_total", M_COUNTER },
	{ "drain_errors", "drain_error_pages_total", M_COUNTER },
	/* daemon counters: restarts, orphans, drains */
	{ "readopts", "readopted_regions_total", M_COUNTER },
	{ "readopt_refusals", "readopt_refusals_total", M_COUNTER },
	{ "orphan_regions", "orphan_regions_collected_total", M_COUNTER },
	{ "orphan_keys", "orphan_pages_deleted_total", M_COUNTER },
	{ "drains", "drains_total", M_COUNTER },
	{ "drains_failed", "drains_failed_total", M_COUNTER },
	/* eviction steps' time (stats JSON only: a diagnostic in ns, not a
	 * rate anyone alerts on) */
	{ "evict_protect_ns", NULL, M_COUNTER },
	{ "evict_store_ns", NULL, M_COUNTER },
	{ "evict_punch_ns", NULL, M_COUNTER },
	{ "evict_unprotect_ns", NULL, M_COUNTER },
	/* shard gauges */
	{ "resident", "resident_pages", M_GAUGE },
	{ "resident_max", "resident_max_pages", M_GAUGE },
	{ "budget", "budget_pages", M_GAUGE },
	{ "tracked", "tracked_pages", M_GAUGE },
	{ "store_corrupt", "store_corrupt_pages", M_GAUGE },
	{ "ring_depth", "ring_depth_messages", M_GAUGE },
	/* dispatcher: a high-water mark is a gauge; ring-full is exported
	 * once, per shard (dispatch_ring_full_total{shard}), not also summed */
	{ "dispatch_parked_max", "dispatch_parked_max_messages", M_GAUGE },
	{ "dispatch_ring_full", NULL, M_COUNTER },
	{ "dispatch_ring_full_per_shard", "dispatch_ring_full_total", M_COUNTER },
};

/* The exported name of a field, into buf; NULL when it is not exported. */
static const char *export_name(const char *field, enum metric_type *type, char *buf, size_t len)
{
	for (size_t i = 0; i < FM_ARRAY_SIZE(metric_names); i++) {
		if (strcmp(metric_names[i].field, field) == 0) {
			*type = metric_names[i].type;
			return metric_names[i].name;
		}
	}
	snprintf(buf, len, "%s%s", field, *type == M_COUNTER ? "_total" : "");
	return buf;
}

static void family(struct strbuf *out, const char *name, enum metric_type type, const char *help)
{
	sb_printf(out, "# HELP fluidmem_%s %s\n# TYPE fluidmem_%s %s\n", name, help, name,
		  type_names[type]);
}

/* One family with a sample per shard: values[i] is shard i's. */
static void per_shard(struct strbuf *out, const char *field, enum metric_type type,
		      const char *help, const uint64_t *values, size_t stride, unsigned n)
{
	char buf[96];
	const char *name = export_name(field, &type, buf, sizeof(buf));

	if (!name)
		return;
	family(out, name, type, help);
	for (unsigned i = 0; i < n; i++)
		sb_printf(out, "fluidmem_%s{shard=\"%u\"} %" PRIu64 "\n", name, i,
			  *(const uint64_t *)((const char *)values + i * stride));
}

/* One family with one sample, no labels. */
static void scalar(struct strbuf *out, const char *field, enum metric_type type, const char *help,
		   uint64_t v)
{
	char buf[96];
	const char *name = export_name(field, &type, buf, sizeof(buf));

	if (!name)
		return;
	family(out, name, type, help);
	sb_printf(out, "fluidmem_%s %" PRIu64 "\n", name, v);
}

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

/* A label value: \, " and newline escaped as the format wants; other
 * control bytes and non-ASCII (a client's name need not be UTF-8) as '_'. */
static void label_value(struct strbuf *out, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '\\' || c == '"')
			sb_printf(out, "\\%c", c);
		else if (c == '\n')
			sb_printf(out, "\\n");
		else
			sb_printf(out, "%c", c < 0x20 || c >= 0x7f ? '_' : c);
	}
}

/* Per region, so an operator can tell which VM thrashes: labelled with
 * the region's id and name (libvirt names regions after the domain). */
static int region_metrics(struct daemon *d, struct strbuf *out)
{
	static const struct {
		const char *name;
		enum metric_type type;
		size_t off;
		const char *help;
	} cols[] = {
		{ "region_faults_total", M_COUNTER, offsetof(struct shard_region_stats, faults),
		  "faults served for this region" },
		{ "region_resident_pages", M_GAUGE, offsetof(struct shard_region_stats, resident),
		  "pages of this region resident now" },
		{ "region_stored_pages", M_GAUGE, offsetof(struct shard_region_stats, stored),
		  "pages of this region in the store" },
		{ "region_zero_pages", M_GAUGE, offsetof(struct shard_region_stats, zero),
		  "pages of this region known to be zero" },
	};
	struct shard_region_stats *sums = calloc(FM_MAX_REGIONS, sizeof(*sums));

	if (!sums || daemon_region_sums(d, sums) < 0) {
		free(sums);
		return -ETIMEDOUT;
	}
	for (size_t c = 0; c < FM_ARRAY_SIZE(cols); c++) {
		family(out, cols[c].name, cols[c].type, cols[c].help);
		for (unsigned slot = 0; slot < FM_MAX_REGIONS; slot++) {
			const struct uffd_region *r = d->regions[slot];

			if (!r)
				continue;
			sb_printf(out, "fluidmem_%s{region_id=\"%" PRIu64 "\",region=\"", cols[c].name,
				  r->id);
			label_value(out, r->name);
			sb_printf(out, "\"} %" PRIu64 "\n",
				  *(const uint64_t *)((const char *)&sums[slot] + cols[c].off));
		}
	}
	free(sums);
	return 0;
}

/* The usual process_* families of Prometheus client libraries. */
static void process_metrics(struct daemon *d, struct strbuf *out)
{
	long page = sysconf(_SC_PAGESIZE);
	unsigned long size = 0, rss = 0;
	unsigned fds = 0;
	struct rlimit rl;
	struct dirent *e;
	FILE *f = fopen("/proc/self/statm", "re");
	DIR *dir = opendir("/proc/self/fd");
	double start = (double)time(NULL) - (double)(fm_now_ns() - d->started_ns) / 1e9;

	if (f) {
		if (fscanf(f, "%lu %lu", &size, &rss) != 2)
			size = rss = 0;
		fclose(f);
	}
	if (dir) {
		while ((e = readdir(dir)))
			fds += e->d_name[0] != '.';
		fds--;   /* the one opendir holds */
		closedir(dir);
	}
	sb_printf(out, "# HELP process_resident_memory_bytes resident set size\n"
		       "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %lu\n"
		       "# HELP process_virtual_memory_bytes virtual memory size\n"
		       "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %lu\n"
		       "# HELP process_open_fds open file descriptors\n"
		       "# TYPE process_open_fds gauge\nprocess_open_fds %u\n",
		  rss * (unsigned long)page, size * (unsigned long)page, fds);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		sb_printf(out, "# HELP process_max_fds the descriptor limit\n"
			       "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n",
			  (unsigned long long)rl.rlim_cur);
	sb_printf(out, "# HELP process_start_time_seconds start time since the epoch\n"
		       "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.3f\n",
		  start);
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

	sb_printf(out, "# HELP fluidmem_build_info the running fluidmemd's version\n"
		       "# TYPE fluidmem_build_info gauge\nfluidmem_build_info{version=\"%s\"} 1\n",
		  FM_VERSION);
#define X(name, help)                                                                      \
	per_shard(out, #name, M_COUNTER, help, &d->snap[0].name, sizeof(d->snap[0]), n);
	SHARD_COUNTER_FIELDS(X)
#undef X
#define X(name, help)                                                                      \
	per_shard(out, #name, M_GAUGE, help, &d->snap[0].name, sizeof(d->snap[0]), n);
	SHARD_GAUGE_FIELDS(X)
#undef X
	per_shard(out, "dispatch_ring_full_per_shard", M_COUNTER,
		  "times the dispatcher found this shard's ring full and parked messages",
		  ds.ring_full, sizeof(ds.ring_full[0]), n);
#define X(name, help) scalar(out, "dispatch_" #name, M_COUNTER, help, ds.st.name);
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
	scalar(out, "regions", M_GAUGE, "registered regions", region_table_count());
	scalar(out, "registrations", M_COUNTER, "regions registered since start", d->registrations);
	scalar(out, "refusals", M_COUNTER, "registration requests refused", d->refusals);
	scalar(out, "conns_refused", M_COUNTER,
	       "connections closed at accept: over a limit or not allowed", d->conns_refused);
	scalar(out, "accept_paused", M_COUNTER, "times the listeners paused out of descriptors",
	       d->accept_paused);
	scalar(out, "readopts", M_COUNTER, "regions re-adopted after a daemon restart", d->readopts);
	scalar(out, "readopt_refusals", M_COUNTER, "re-adoption requests refused",
	       d->readopt_refusals);
	scalar(out, "orphan_regions", M_COUNTER,
	       "regions of a previous run collected as orphans (not re-adopted in the grace)",
	       d->orphans);
	scalar(out, "orphan_keys", M_COUNTER, "stored pages deleted with those orphans",
	       d->orphan_keys);
	scalar(out, "drains", M_COUNTER, "store servers drained by this node (servers drain)",
	       d->drains);
	scalar(out, "drains_failed", M_COUNTER, "drains that ended with pages not moved",
	       d->drains_failed);
	family(out, "store_up", M_GAUGE, "1 when some store server answers, 0 when none does");
	sb_printf(out, "fluidmem_store_up %d\n", daemon_store_state(d) != STORE_DOWN);
	family(out, "uptime_seconds", M_GAUGE, "seconds since fluidmemd started");
	sb_printf(out, "fluidmem_uptime_seconds %.3f\n", (double)(fm_now_ns() - d->started_ns) / 1e9);
	ctl_cluster_metrics_text(d, out);
	process_metrics(d, out);
	return region_metrics(d, out);
}

int ctl_health_text(struct daemon *d, struct strbuf *out)
{
	int64_t res[FM_MAX_SHARDS];
	uint64_t det[FM_MAX_SHARDS];
	struct dispatch_snapshot ds;

	if (daemon_shard_request(d, FM_MSG_STATS, NULL, NULL, res, det) < 0) {
		sb_printf(out, "a shard did not answer\n");
		return -1;
	}
	if (daemon_dispatcher_request(d, FM_MSG_STATS, &ds) < 0) {
		sb_printf(out, "the dispatcher did not answer\n");
		return -1;
	}
	if (daemon_store_state(d) == STORE_DOWN) {
		sb_printf(out, "store %s: down, no server answers\n", d->cfg.store_backend);
		return -1;
	}
	sb_printf(out, "ok\n");
	return 0;
}
