/* Control commands: one request line in, one JSON line out (built with
 * jansson). Handlers talk to shards only through daemon_shard_request()
 * (messages on their rings).
 *
 * Resets: `stats --reset` and `latency --reset` never clear a counter in a
 * shard or the dispatcher, since Prometheus scrapes the same counters and
 * must see them only grow. They move a baseline kept here instead, and
 * stats/latency show what happened since it. */
#include "ctl/daemon_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "ctl/cluster_hooks.h"
#include "ctl/json_out.h"
#include "fm_version.h"
#include "kv/kv.h"

#define MAX_ARGS 8
#define DETACH_TIMEOUT_MS 30000   /* a restoring detach copies a whole region */

struct ctl_command {
	const char *name;
	const char *usage;
	const char *help;
	int min_args, max_args;
	enum ctl_next (*run)(struct daemon *d, int argc, char **argv, struct strbuf *out);
};

#define fail cj_fail

static bool parse_u64(const char *s, uint64_t *v)
{
	char *end;

	if (!s || !*s || *s == '-' || *s == '+')
		return false;
	errno = 0;
	*v = strtoull(s, &end, 10);
	return errno == 0 && *end == '\0';
}

/* Remove a flag from argv; true when it was there. */
static bool take_flag(int *argc, char **argv, const char *flag)
{
	for (int i = 1; i < *argc; i++) {
		if (strcmp(argv[i], flag) == 0) {
			memmove(&argv[i], &argv[i + 1], (size_t)(*argc - i) * sizeof(*argv));
			(*argc)--;
			return true;
		}
	}
	return false;
}

/* Reject any leftover option-looking argument. */
static bool no_unknown_flags(int argc, char **argv, struct strbuf *out)
{
	for (int i = 1; i < argc; i++) {
		if (argv[i][0] == '-' && argv[i][1] == '-') {
			fail(out, "%s: unknown option %s", argv[0], argv[i]);
			return false;
		}
	}
	return true;
}

static struct uffd_region *find_region(struct daemon *d, const char *arg, struct strbuf *out)
{
	uint64_t id;

	if (!parse_u64(arg, &id)) {
		fail(out, "region id must be a whole number, got \"%.64s\"", arg);
		return NULL;
	}
	for (unsigned i = 0; i < FM_MAX_REGIONS; i++)
		if (d->regions[i] && d->regions[i]->id == id)
			return d->regions[i];
	fail(out, "no region %" PRIu64 " (see `fluidmemctl regions`)", id);
	return NULL;
}

static bool client_alive(const struct uffd_region *r)
{
	const struct reg_conn *c = r->owner;

	if (!c || c->closed)
		return false;
	return kill(r->pid, 0) == 0 || errno == EPERM;
}

static double hit_rate(const struct shard_stats *s)
{
	uint64_t hits = s->zero_fills + s->dup_faults + s->wp_faults;
	uint64_t served = hits + s->fetches;

	return served ? (double)hits / (double)served : 0.0;
}

/* ---- gathering ---- */

/* raw - base for a histogram. The maximum cannot be subtracted: it is the
 * raw one when it falls in the highest bucket used since the baseline, and
 * otherwise that bucket's upper edge. */
static void hist_since(struct fm_hist *out, const struct fm_hist *raw, const struct fm_hist *base)
{
	int top = -1;

	out->count = raw->count - base->count;
	out->sum = raw->sum - base->sum;
	for (unsigned i = 0; i < FM_HIST_BUCKETS; i++) {
		out->bucket[i] = raw->bucket[i] - base->bucket[i];
		if (out->bucket[i])
			top = (int)i;
	}
	if (top < 0)
		out->max = 0;
	else if (fm_hist_index(raw->max) == (unsigned)top)
		out->max = raw->max;
	else
		out->max = (unsigned)top + 1 < FM_HIST_BUCKETS ? fm_hist_bucket_low((unsigned)top + 1) - 1
							     : raw->max;
}

/* What a shard did since the baselines: counters and histograms relative,
 * gauges as they are. */
static void shard_since(struct shard_stats *out, const struct shard_stats *raw,
			const struct shard_stats *base)
{
#define X(name, help) out->name = raw->name - base->name;
	SHARD_COUNTER_FIELDS(X)
#undef X
#define X(name, help) out->name = raw->name;
	SHARD_GAUGE_FIELDS(X)
#undef X
#define X(name, help) hist_since(&out->name, &raw->name, &base->name);
	SHARD_HIST_FIELDS(X)
#undef X
}

/* Fill view[0..nshards) with each shard's stats since the baselines, and
 * *tot with their sum. */
static int gather_stats(struct daemon *d, struct shard_stats *view, struct shard_stats *tot)
{
	int64_t res[FM_MAX_SHARDS];
	uint64_t det[FM_MAX_SHARDS];

	if (daemon_shard_request(d, FM_MSG_STATS, NULL, NULL, res, det) < 0)
		return -ETIMEDOUT;
	memset(tot, 0, sizeof(*tot));
	for (unsigned i = 0; i < d->nshards; i++) {
		const struct shard_stats *s = &view[i];

		shard_since(&view[i], &d->snap[i], &d->baseline[i]);
#define X(name, help) tot->name += s->name;
		SHARD_COUNTER_FIELDS(X)
		SHARD_GAUGE_FIELDS(X)
#undef X
#define X(name, help) fm_hist_merge(&tot->name, &s->name);
		SHARD_HIST_FIELDS(X)
#undef X
	}
	return 0;
}

/* Move the baselines to the values just read (d->snap, *ds). */
static void move_baseline(struct daemon *d, uint64_t what, const struct dispatch_snapshot *ds)
{
	for (unsigned i = 0; i < d->nshards; i++) {
		struct shard_stats *b = &d->baseline[i];
		const struct shard_stats *s = &d->snap[i];

		if (what & FM_RESET_COUNTERS) {
#define X(name, help) b->name = s->name;
			SHARD_COUNTER_FIELDS(X)
#undef X
		}
		if (what & FM_RESET_LATENCY) {
#define X(name, help) b->name = s->name;
			SHARD_HIST_FIELDS(X)
#undef X
		}
	}
	if ((what & FM_RESET_COUNTERS) && ds)
		d->baseline_disp = *ds;
}

/* ---- stats ---- */

/* Allocated per request: a shard_stats holds four 4 KiB histograms. */
struct stats_view {
	struct shard_stats tot;
	struct shard_stats shard[];
};

static struct stats_view *view_alloc(const struct daemon *d)
{
	return calloc(1, sizeof(struct stats_view) + d->nshards * sizeof(struct shard_stats));
}

static void stats_fields(json_t *o, const struct shard_stats *s)
{
#define X(name, help) json_object_set_new(o, #name, cj_u64(s->name));
	SHARD_COUNTER_FIELDS(X)
	SHARD_GAUGE_FIELDS(X)
#undef X
	json_object_set_new(o, "cache_hits", cj_u64(s->zero_fills + s->dup_faults + s->wp_faults));
	json_object_set_new(o, "cache_misses", cj_u64(s->fetches));
	json_object_set_new(o, "hit_rate", cj_real(hit_rate(s), 4));
	/* Of the prefetched pages decided so far, the share that was used. */
	json_object_set_new(o, "prefetch_accuracy",
			    cj_real(s->prefetch_hits + s->prefetch_wasted
					    ? (double)s->prefetch_hits /
						      (double)(s->prefetch_hits + s->prefetch_wasted)
					    : 0.0,
				    4));
	json_object_set_new(o, "writes_avoided", cj_u64(s->evict_zero + s->evict_clean));
	/* The store's compression ratio: page bytes held / encoded bytes. */
	json_object_set_new(o, "store_ratio",
			    cj_real(s->store_encoded_bytes ? (double)s->store_pages * FM_PAGE_SIZE /
							    (double)s->store_encoded_bytes
							  : 0.0,
				    3));
	json_object_set_new(o, "fault_p50_us", cj_real(fm_hist_quantile(&s->fault_ns, 0.5) / 1e3, 1));
	json_object_set_new(o, "fault_p99_us", cj_real(fm_hist_quantile(&s->fault_ns, 0.99) / 1e3, 1));
	json_object_set_new(o, "fault_p999_us",
			    cj_real(fm_hist_quantile(&s->fault_ns, 0.999) / 1e3, 1));
}

static enum ctl_next cmd_stats(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	bool do_reset = take_flag(&argc, argv, "--reset");
	struct stats_view *v;
	struct dispatch_snapshot ds;
	const struct dispatch_snapshot *b = &d->baseline_disp;
	double up = (double)(fm_now_ns() - d->started_ns) / 1e9;
	json_t *rep, *tot, *shards;
	uint64_t faults = 0;

	if (!no_unknown_flags(argc, argv, out))
		return CTL_CONTINUE;
	if (argc > 1) {
		fail(out, "usage: stats [--reset]");
		return CTL_CONTINUE;
	}
	if (!(v = view_alloc(d))) {
		fail(out, "out of memory");
		return CTL_CONTINUE;
	}
	if (gather_stats(d, v->shard, &v->tot) < 0) {
		fail(out, "a shard did not answer within the timeout");
		free(v);
		return CTL_CONTINUE;
	}
	if (daemon_dispatcher_request(d, FM_MSG_STATS, &ds) < 0) {
		fail(out, "the dispatcher did not answer within the timeout");
		free(v);
		return CTL_CONTINUE;
	}
	rep = cj_ok();
	tot = json_object();
	stats_fields(tot, &v->tot);
	/* parked_max is a high-water mark, not a count: no baseline. */
#define X(name, help)                                                                          \
	json_object_set_new(tot, "dispatch_" #name,                                            \
			    cj_u64(strcmp(#name, "parked_max") == 0 ? ds.st.name                \
								     : ds.st.name - b->st.name));
	DISPATCH_STATS_FIELDS(X)
#undef X
	json_object_set_new(tot, "regions", json_integer(region_table_count()));
	json_object_set_new(tot, "registrations", cj_u64(d->registrations - d->baseline_ctl.registrations));
	json_object_set_new(tot, "refusals", cj_u64(d->refusals - d->baseline_ctl.refusals));
	json_object_set_new(tot, "conns_refused", cj_u64(d->conns_refused - d->baseline_ctl.conns_refused));
	json_object_set_new(tot, "accept_paused", cj_u64(d->accept_paused - d->baseline_ctl.accept_paused));
	json_object_set_new(tot, "readopts", cj_u64(d->readopts));
	json_object_set_new(tot, "readopt_refusals", cj_u64(d->readopt_refusals));
	json_object_set_new(tot, "orphan_regions", cj_u64(d->orphans));
	json_object_set_new(tot, "orphan_keys", cj_u64(d->orphan_keys));
	json_object_set_new(tot, "drains", cj_u64(d->drains));
	json_object_set_new(tot, "drains_failed", cj_u64(d->drains_failed));
	json_object_set_new(tot, "drain_state", json_string(d->drain.state == DRAIN_IDLE ? "idle"
		: d->drain.state == DRAIN_WAITING ? "waiting" : d->drain.state == DRAIN_RUNNING ? "running"
		: d->drain.state == DRAIN_DONE ? "done" : "failed"));
	json_object_set_new(tot, "uptime_s", cj_real(up, 1));
	/* Faults per second over the whole uptime, whatever the baseline. */
	for (unsigned i = 0; i < d->nshards; i++)
		faults += d->snap[i].faults;
	json_object_set_new(tot, "fault_rate", cj_real(up > 0 ? (double)faults / up : 0.0, 1));
	json_object_set_new(tot, "store", cj_str(d->cfg.store_backend));
	{
		char layout[256];

		fm_config_layout_text(&d->cfg, layout, sizeof(layout));
		json_object_set_new(tot, "layout", cj_str(layout));
		json_object_set_new(tot, "dispatcher_cpu", json_integer(d->cfg.dispatcher_cpu));
	}
	json_object_set_new(tot, "store_state", json_string(daemon_store_state_name(daemon_store_state(d))));
	ctl_cluster_stats_json(d, tot);
	json_object_set_new(rep, "version", json_string(FM_VERSION));
	json_object_set_new(rep, "pid", json_integer(getpid()));
	json_object_set_new(rep, "totals", tot);
	shards = json_array();
	for (unsigned i = 0; i < d->nshards; i++) {
		json_t *o = json_pack("{s:i}", "shard", (int)i);

		stats_fields(o, &v->shard[i]);
		json_object_set_new(o, "cpu", json_integer(d->cfg.shard_cpus_n > i ? d->cfg.shard_cpus[i] : -1));
		json_object_set_new(o, "ring_full", cj_u64(ds.ring_full[i] - b->ring_full[i]));
		json_array_append_new(shards, o);
	}
	json_object_set_new(rep, "shards", shards);
	json_object_set_new(rep, "reset", json_boolean(do_reset));
	cj_reply(out, rep);
	free(v);
	if (do_reset) {
		move_baseline(d, FM_RESET_COUNTERS, &ds);
		d->baseline_ctl.registrations = d->registrations;
		d->baseline_ctl.refusals = d->refusals;
		d->baseline_ctl.conns_refused = d->conns_refused;
		d->baseline_ctl.accept_paused = d->accept_paused;
	}
	return CTL_CONTINUE;
}

/* ---- latency ---- */

static json_t *hist_json(const struct fm_hist *h)
{
	json_t *o = json_object(), *buckets = json_array();

	json_object_set_new(o, "count", cj_u64(h->count));
	json_object_set_new(o, "mean_us",
			    cj_real(h->count ? (double)h->sum / (double)h->count / 1e3 : 0.0, 2));
	json_object_set_new(o, "p50_us", cj_real(fm_hist_quantile(h, 0.5) / 1e3, 2));
	json_object_set_new(o, "p90_us", cj_real(fm_hist_quantile(h, 0.9) / 1e3, 2));
	json_object_set_new(o, "p99_us", cj_real(fm_hist_quantile(h, 0.99) / 1e3, 2));
	json_object_set_new(o, "p999_us", cj_real(fm_hist_quantile(h, 0.999) / 1e3, 2));
	json_object_set_new(o, "max_us", cj_real((double)h->max / 1e3, 2));
	/* Sparse [low_ns, count] pairs: enough for a client to diff two
	 * snapshots and compute interval percentiles (fluidmemctl top). */
	for (unsigned i = 0; i < FM_HIST_BUCKETS; i++)
		if (h->bucket[i])
			json_array_append_new(buckets, json_pack("[o,o]", cj_u64(fm_hist_bucket_low(i)),
								 cj_u64(h->bucket[i])));
	json_object_set_new(o, "buckets", buckets);
	return o;
}

static json_t *hists_json(json_t *o, const struct shard_stats *s)
{
#define X(name, help) json_object_set_new(o, #name, hist_json(&s->name));
	SHARD_HIST_FIELDS(X)
#undef X
	return o;
}

static enum ctl_next cmd_latency(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	bool do_reset = take_flag(&argc, argv, "--reset");
	struct stats_view *v;
	json_t *rep, *shards;

	if (!no_unknown_flags(argc, argv, out))
		return CTL_CONTINUE;
	if (argc > 1) {
		fail(out, "usage: latency [--reset]");
		return CTL_CONTINUE;
	}
	v = view_alloc(d);
	if (!v || gather_stats(d, v->shard, &v->tot) < 0) {
		fail(out, v ? "a shard did not answer within the timeout" : "out of memory");
		free(v);
		return CTL_CONTINUE;
	}
	rep = cj_ok();
	json_object_set_new(rep, "totals", hists_json(json_object(), &v->tot));
	shards = json_array();
	for (unsigned i = 0; i < d->nshards; i++)
		json_array_append_new(shards, hists_json(json_pack("{s:i}", "shard", (int)i), &v->shard[i]));
	json_object_set_new(rep, "shards", shards);
	json_object_set_new(rep, "reset", json_boolean(do_reset));
	cj_reply(out, rep);
	free(v);
	if (do_reset)
		move_baseline(d, FM_RESET_LATENCY, NULL);
	return CTL_CONTINUE;
}

/* ---- regions ---- */

int daemon_region_sums(struct daemon *d, struct shard_region_stats *sums)
{
	int64_t res[FM_MAX_SHARDS];
	uint64_t det[FM_MAX_SHARDS], a[FM_MAX_SHARDS];

	memset(d->region_snap, 0, (size_t)d->nshards * FM_MAX_REGIONS * sizeof(*d->region_snap));
	for (unsigned i = 0; i < d->nshards; i++)
		a[i] = (uint64_t)(uintptr_t)&d->region_snap[(size_t)i * FM_MAX_REGIONS];
	if (daemon_shard_request(d, FM_MSG_REGION_STATS, a, NULL, res, det) < 0)
		return -ETIMEDOUT;
	for (unsigned slot = 0; slot < FM_MAX_REGIONS; slot++) {
		struct shard_region_stats *sum = &sums[slot];

		memset(sum, 0, sizeof(*sum));
		sum->budget = UINT64_MAX;
		if (!d->regions[slot])
			continue;
		sum->present = 1;
		for (unsigned i = 0; i < d->nshards; i++) {
			const struct shard_region_stats *x = &d->region_snap[(size_t)i * FM_MAX_REGIONS + slot];

			sum->resident += x->resident;
			sum->stored += x->stored;
			sum->zero += x->zero;
			sum->faults += x->faults;
			if (x->present && x->budget != UINT64_MAX)
				sum->budget = (sum->budget == UINT64_MAX ? 0 : sum->budget) + x->budget;
		}
	}
	return 0;
}

static enum ctl_next cmd_regions(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	static const char *const states[] = { "attaching", "live", "detaching", "detaching" };
	struct shard_region_stats *sums;
	json_t *rep, *list;

	if (take_flag(&argc, argv, "--cluster")) {
		if (no_unknown_flags(argc, argv, out) && argc == 1)
			ctl_cluster_regions_json(d, out);
		else if (argc > 1 && !out->len)
			fail(out, "usage: regions [--cluster]");
		return CTL_CONTINUE;
	}
	if (!no_unknown_flags(argc, argv, out))
		return CTL_CONTINUE;
	if (argc > 1) {
		fail(out, "usage: regions [--cluster]");
		return CTL_CONTINUE;
	}
	sums = calloc(FM_MAX_REGIONS, sizeof(*sums));
	if (!sums) {
		fail(out, "out of memory");
		return CTL_CONTINUE;
	}
	if (daemon_region_sums(d, sums) < 0) {
		free(sums);
		fail(out, "a shard did not answer within the timeout");
		return CTL_CONTINUE;
	}
	rep = cj_ok();
	list = json_array();
	for (unsigned slot = 0; slot < FM_MAX_REGIONS; slot++) {
		const struct uffd_region *r = d->regions[slot];
		const struct shard_region_stats *sum = &sums[slot];
		json_t *o;

		if (!r)
			continue;
		o = json_pack("{s:o,s:i,s:o,s:o,s:o,s:s,s:b,s:o,s:o,s:o,s:o}", "id", cj_u64(r->id),
			      "pid", (int)r->pid, "name", cj_str(r->name), "pages", cj_u64(r->npages),
			      "bytes", cj_u64(r->npages << FM_PAGE_SHIFT), "state", states[r->state],
			      "client_alive", client_alive(r), "resident", cj_u64(sum->resident),
			      "in_store", cj_u64(sum->stored), "zero", cj_u64(sum->zero), "faults",
			      cj_u64(sum->faults));
		if (o)
			json_object_set_new(o, "budget",
					    sum->budget == UINT64_MAX ? json_null() : cj_u64(sum->budget));
		json_array_append_new(list, o);
	}
	free(sums);
	json_object_set_new(rep, "regions", list);
	cj_reply(out, rep);
	return CTL_CONTINUE;
}

/* ---- resize, evict ---- */

int daemon_set_budget(struct daemon *d, uint64_t pages, uint64_t *resident, bool *within)
{
	uint64_t a[FM_MAX_SHARDS], det[FM_MAX_SHARDS];
	int64_t res[FM_MAX_SHARDS];

	if (pages == 0)
		return -EINVAL;
	/* Every shard keeps at least one page, so a faulting thread always
	 * gets to use the page it faulted in before it can be evicted again. */
	for (unsigned i = 0; i < d->nshards; i++)
		a[i] = FM_MAX(1, pages / d->nshards + (i < pages % d->nshards ? 1 : 0));
	if (daemon_shard_request(d, FM_MSG_SET_BUDGET, a, NULL, res, det) < 0)
		return -ETIMEDOUT;
	*resident = 0;
	*within = true;
	for (unsigned i = 0; i < d->nshards; i++) {
		*resident += det[i];
		*within = *within && res[i] == 0;
	}
	d->cfg.resident_pages = pages;
	FM_INFO("resident budget set to %" PRIu64 " pages; %" PRIu64 " resident", pages, *resident);
	return 0;
}

static enum ctl_next set_budget(struct daemon *d, uint64_t pages, struct strbuf *out)
{
	uint64_t resident;
	bool within;
	int rc = daemon_set_budget(d, pages, &resident, &within);

	if (rc == -EINVAL)
		fail(out, "the budget must be at least 1 page");
	else if (rc < 0)
		fail(out, "a shard did not answer within the timeout");
	else
		cj_reply(out, json_pack("{s:i,s:b,s:o,s:o,s:b}", "v", 1, "ok", 1, "budget",
					cj_u64(pages), "resident", cj_u64(resident), "within_budget",
					within));
	return CTL_CONTINUE;
}

static enum ctl_next resize_region(struct daemon *d, struct uffd_region *r, const char *arg, struct strbuf *out)
{
	uint64_t pages, a[FM_MAX_SHARDS], det[FM_MAX_SHARDS], resident = 0;
	int64_t res[FM_MAX_SHARDS];
	bool unlimited = strcmp(arg, "unlimited") == 0, within = true;

	if (!unlimited && !parse_u64(arg, &pages)) {
		fail(out, "resize: PAGES must be a whole number or \"unlimited\", got \"%.64s\"", arg);
		return CTL_CONTINUE;
	}
	if (!unlimited && pages == 0) {
		fail(out, "a region budget must be at least 1 page");
		return CTL_CONTINUE;
	}
	uint64_t b[FM_MAX_SHARDS];

	/* One REGION_BUDGET per shard on its ctl ring: a = region, b = pages. */
	for (unsigned i = 0; i < d->nshards; i++) {
		a[i] = (uint64_t)(uintptr_t)r;
		b[i] = unlimited ? UINT64_MAX
				 : FM_MAX(1, pages / d->nshards + (i < pages % d->nshards ? 1 : 0));
	}
	if (daemon_shard_request(d, FM_MSG_REGION_BUDGET, a, b, res, det) < 0) {
		fail(out, "a shard did not answer within the timeout");
		return CTL_CONTINUE;
	}
	for (unsigned i = 0; i < d->nshards; i++) {
		resident += det[i];
		within = within && res[i] == 0;
	}
	cj_reply(out, json_pack("{s:i,s:b,s:o,s:o,s:o,s:b}", "v", 1, "ok", 1, "region", cj_u64(r->id),
				"budget", unlimited ? json_null() : cj_u64(pages), "resident",
				cj_u64(resident), "within_budget", within));
	return CTL_CONTINUE;
}

static enum ctl_next cmd_resize(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	uint64_t pages;

	if (argc == 4 && strcmp(argv[1], "--region") == 0) {
		struct uffd_region *r = find_region(d, argv[2], out);
		return r ? resize_region(d, r, argv[3], out) : CTL_CONTINUE;
	}
	if (argc != 2 || !no_unknown_flags(argc, argv, out)) {
		if (!out->len)
			fail(out, "usage: resize PAGES | resize --region ID PAGES|unlimited");
		return CTL_CONTINUE;
	}
	if (!parse_u64(argv[1], &pages)) {
		fail(out, "resize: PAGES must be a whole number, got \"%.64s\"", argv[1]);
		return CTL_CONTINUE;
	}
	return set_budget(d, pages, out);
}

static enum ctl_next cmd_evict(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	uint64_t n, a[FM_MAX_SHARDS], det[FM_MAX_SHARDS], done = 0;
	int64_t res[FM_MAX_SHARDS];

	if (!parse_u64(argv[1], &n)) {
		fail(out, "evict: N must be a whole number, got \"%.64s\"", argv[1]);
		return CTL_CONTINUE;
	}
	for (unsigned i = 0; i < d->nshards; i++)
		a[i] = n / d->nshards + (i < n % d->nshards ? 1 : 0);
	if (daemon_shard_request(d, FM_MSG_EVICT, a, NULL, res, det) < 0) {
		fail(out, "a shard did not answer within the timeout");
		return CTL_CONTINUE;
	}
	for (unsigned i = 0; i < d->nshards; i++)
		done += det[i];
	cj_reply(out, json_pack("{s:i,s:b,s:o,s:o}", "v", 1, "ok", 1, "requested", cj_u64(n),
				"evicted", cj_u64(done)));
	return CTL_CONTINUE;
}

/* ---- detach ---- */

static enum ctl_next cmd_detach(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	bool force = take_flag(&argc, argv, "--force");
	struct uffd_region *r;
	bool alive;
	uint64_t id;

	if (!no_unknown_flags(argc, argv, out))
		return CTL_CONTINUE;
	if (argc != 2) {
		fail(out, "usage: detach ID [--force]");
		return CTL_CONTINUE;
	}
	if (!(r = find_region(d, argv[1], out)))
		return CTL_CONTINUE;
	if (r->state == UFFD_REGION_DETACHING || r->state == UFFD_REGION_RELEASING) {
		fail(out, "region %" PRIu64 " is already being detached", r->id);
		return CTL_CONTINUE;
	}
	alive = client_alive(r);
	if (alive && !force) {
		fail(out, "region %" PRIu64 " belongs to live pid %d; --force detaches it anyway "
			  "(its pages are handed back to it first)", r->id, (int)r->pid);
		return CTL_CONTINUE;
	}
	id = r->id;
	/* A live client keeps running on memory we hand back; a dead one's
	 * pages are simply freed. */
	daemon_detach_region(d, r, alive);
	if (daemon_wait_region_gone(d, r, DETACH_TIMEOUT_MS) < 0) {
		fail(out, "region %" PRIu64 " is still detaching after %d s", id,
		     DETACH_TIMEOUT_MS / 1000);
		return CTL_CONTINUE;
	}
	FM_INFO("region %" PRIu64 " detached by the operator%s", id, alive ? " (pages handed back)" : "");
	cj_reply(out, json_pack("{s:i,s:b,s:o,s:b}", "v", 1, "ok", 1, "detached", cj_u64(id),
				"pages_restored", alive));
	return CTL_CONTINUE;
}

/* ---- misc ---- */

static enum ctl_next cmd_log_level(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	int level = fm_log_level_parse(argv[1]);

	if (level < 0) {
		fail(out, "log-level: want error, warn, info or debug, got \"%.32s\"", argv[1]);
		return CTL_CONTINUE;
	}
	__atomic_store_n(&fm_log_level, level, __ATOMIC_RELAXED);
	d->cfg.log_level = level;
	FM_INFO("log level set to %s", fm_log_level_name(level));
	cj_reply(out, json_pack("{s:i,s:b,s:s}", "v", 1, "ok", 1, "log_level", fm_log_level_name(level)));
	return CTL_CONTINUE;
}

static enum ctl_next cmd_metrics(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	struct strbuf text = { 0 };

	if (ctl_metrics_text(d, &text) < 0 || text.oom) {
		sb_free(&text);
		fail(out, "a shard did not answer within the timeout");
		return CTL_CONTINUE;
	}
	cj_reply(out, json_pack("{s:i,s:b,s:s,s:o}", "v", 1, "ok", 1, "content_type",
				"text/plain; version=0.0.4", "text", cj_str(text.s ? text.s : "")));
	sb_free(&text);
	return CTL_CONTINUE;
}

/* The running configuration as TOML, with where it came from. */
static enum ctl_next cmd_config(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	json_t *rep, *sets;

	if (!f) {
		fail(out, "out of memory");
		return CTL_CONTINUE;
	}
	fm_config_dump(&d->cfg, f);
	fclose(f);
	rep = cj_ok();
	sets = json_array();
	for (int i = 0; i < d->nsets; i++)
		json_array_append_new(sets, cj_str(d->sets[i]));
	json_object_set_new(rep, "source", d->config_path ? cj_str(d->config_path) : json_null());
	json_object_set_new(rep, "sets", sets);
	json_object_set_new(rep, "reloads", cj_u64(d->reloads));
	json_object_set_new(rep, "toml", cj_str(text ? text : ""));
	cj_reply(out, rep);
	free(text);
	return CTL_CONTINUE;
}

static enum ctl_next cmd_ping(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	cj_reply(out, json_pack("{s:i,s:b,s:b,s:i,s:s}", "v", 1, "ok", 1, "pong", 1, "pid", (int)getpid(),
				"version", FM_VERSION));
	return CTL_CONTINUE;
}

static enum ctl_next cmd_shutdown(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	bool drop = take_flag(&argc, argv, "--drop");
	bool keep = take_flag(&argc, argv, "--keep-clients");

	if (!no_unknown_flags(argc, argv, out))
		return CTL_CONTINUE;
	if (argc > 1 || (drop && keep)) {
		fail(out, "usage: shutdown [--drop|--keep-clients]");
		return CTL_CONTINUE;
	}
	d->restore_on_shutdown = !drop && !keep;
	d->keep_clients_on_shutdown = keep;
	cj_reply(out, json_pack(
		"{s:i,s:b,s:i,s:s}", "v", 1, "ok", 1, "live_regions", (int)region_table_count(), "note",
		keep ? "live regions stay registered in their clients with their stored pages: their "
		       "faults on evicted pages wait until the next fluidmemd re-adopts them"
		: drop ? "live regions are dropped with their stored pages; their clients' next faults "
			 "on evicted pages wait forever (never read zeros)"
		       : "every page of a live region is handed back to its client, which keeps "
			 "running on plain memory; then the daemon stops"));
	return CTL_SHUTDOWN;
}

static enum ctl_next cmd_servers(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	ctl_cluster_servers_cmd(d, argc, argv, out);
	return CTL_CONTINUE;
}

static enum ctl_next cmd_help(struct daemon *d, int argc, char **argv, struct strbuf *out);

static const struct ctl_command commands[] = {
	{ "help", "help", "list commands", 0, 0, cmd_help },
	{ "ping", "ping", "check the daemon answers", 0, 0, cmd_ping },
	{ "stats", "stats [--reset]", "counters: totals and per shard; --reset clears them after reading",
	  0, 1, cmd_stats },
	{ "latency", "latency [--reset]",
	  "histograms of fault service, store get/put and eviction (p50/p90/p99/p99.9)", 0, 1,
	  cmd_latency },
	{ "regions", "regions [--cluster]",
	  "list regions with their resident, stored and zero pages; --cluster: every node's region "
	  "records in ZooKeeper",
	  0, 1, cmd_regions },
	{ "servers", "servers list | add HOST:PORT | drain HOST:PORT",
	  "the memcached server list; add changes it in ZooKeeper for every node while running; "
	  "drain moves every stored page off a server, then removes it (every node, with the "
	  "cluster); list shows the drain's progress",
	  1, 2, cmd_servers },
	{ "resize", "resize PAGES | resize --region ID PAGES|unlimited",
	  "set the resident budget (all, or one region's cap); a shrink evicts before replying", 1, 3,
	  cmd_resize },
	{ "evict", "evict N", "evict N pages now", 1, 1, cmd_evict },
	{ "detach", "detach ID [--force]",
	  "free a dead client's region and its stored pages; --force hands a live client its pages "
	  "back and stops serving it",
	  1, 2, cmd_detach },
	{ "log-level", "log-level error|warn|info|debug", "change the log level", 1, 1, cmd_log_level },
	{ "metrics", "metrics", "everything in Prometheus text format (in the reply's \"text\")", 0, 0,
	  cmd_metrics },
	{ "config", "config",
	  "the running configuration as TOML (\"toml\"), its file (\"source\") and --set overrides",
	  0, 0, cmd_config },
	{ "shutdown", "shutdown [--drop|--keep-clients]",
	  "stop cleanly; live clients get their pages back, unless --drop, or --keep-clients (an "
	  "upgrade: they wait for the next daemon, which re-adopts their regions)", 0, 2, cmd_shutdown },
};

static enum ctl_next cmd_help(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	json_t *rep = cj_ok(), *list = json_array();

	for (size_t i = 0; i < FM_ARRAY_SIZE(commands); i++)
		json_array_append_new(list, json_pack("{s:s,s:s}", "usage", commands[i].usage, "help",
						      commands[i].help));
	json_object_set_new(rep, "commands", list);
	cj_reply(out, rep);
	return CTL_CONTINUE;
}

enum ctl_next ctl_execute(struct daemon *d, const char *line, struct strbuf *out)
{
	char buf[CTL_MAX_REQUEST + 1], *argv[MAX_ARGS + 2], *save = NULL, *tok;
	int argc = 0;

	if (strlen(line) > CTL_MAX_REQUEST) {
		fail(out, "request longer than %d bytes", CTL_MAX_REQUEST);
		return CTL_CONTINUE;
	}
	snprintf(buf, sizeof(buf), "%s", line);
	for (tok = strtok_r(buf, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
		if (argc == MAX_ARGS + 1) {
			fail(out, "too many arguments");
			return CTL_CONTINUE;
		}
		argv[argc++] = tok;
	}
	argv[argc] = NULL;
	if (argc == 0 || strcmp(argv[0], "v1") != 0) {
		fail(out, "unsupported protocol: requests start with \"v1\"");
		return CTL_CONTINUE;
	}
	if (argc == 1) {
		fail(out, "empty request: try \"v1 help\"");
		return CTL_CONTINUE;
	}
	for (size_t i = 0; i < FM_ARRAY_SIZE(commands); i++) {
		const struct ctl_command *c = &commands[i];

		if (strcmp(argv[1], c->name) != 0)
			continue;
		if (argc - 2 < c->min_args || argc - 2 > c->max_args) {
			fail(out, "usage: %s", c->usage);
			return CTL_CONTINUE;
		}
		return c->run(d, argc - 1, argv + 1, out);
	}
	fail(out, "unknown command \"%.64s\": try \"v1 help\"", argv[1]);
	return CTL_CONTINUE;
}
