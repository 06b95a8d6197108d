/* Control commands: one request line in, one JSON line out. Handlers talk to
 * shards only through daemon_shard_request() (messages on their rings). */
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

static void fail(struct strbuf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct strbuf *out, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	sb_printf(out, "{\"v\":1,\"ok\":false,\"error\":");
	sb_json_str(out, msg);
	sb_printf(out, "}\n");
}

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

static int gather_stats(struct daemon *d, struct shard_stats *tot)
{
	int64_t res[FM_MAX_SHARDS];
	uint64_t det[FM_MAX_SHARDS];

	if (daemon_shard_request(d, FM_MSG_STATS, NULL, NULL, res, det) < 0)
		return -ETIMEDOUT;
	memset(tot, 0, sizeof(*tot));
	for (unsigned i = 0; i < d->nshards; i++) {
		const struct shard_stats *s = &d->snap[i];
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

static int reset(struct daemon *d, uint64_t what)
{
	uint64_t a[FM_MAX_SHARDS], det[FM_MAX_SHARDS];
	int64_t res[FM_MAX_SHARDS];

	for (unsigned i = 0; i < d->nshards; i++)
		a[i] = what;
	if ((what & FM_RESET_COUNTERS) && daemon_dispatcher_request(d, FM_MSG_RESET, NULL) < 0)
		FM_WARN("reset: the dispatcher did not answer; its counters were not cleared");
	return daemon_shard_request(d, FM_MSG_RESET, a, NULL, res, det);
}

/* ---- stats ---- */

static void stats_fields(struct strbuf *out, const struct shard_stats *s)
{
#define X(name, help) sb_printf(out, "\"" #name "\":%" PRIu64 ",", s->name);
	SHARD_COUNTER_FIELDS(X)
	SHARD_GAUGE_FIELDS(X)
#undef X
	sb_printf(out, "\"cache_hits\":%" PRIu64 ",\"cache_misses\":%" PRIu64 ",\"hit_rate\":%.4f,",
		  s->zero_fills + s->dup_faults + s->wp_faults, s->fetches, hit_rate(s));
	sb_printf(out, "\"writes_avoided\":%" PRIu64 ",", s->evict_zero + s->evict_clean);
	sb_printf(out, "\"fault_p50_us\":%.1f,\"fault_p99_us\":%.1f,\"fault_p999_us\":%.1f",
		  fm_hist_quantile(&s->fault_ns, 0.5) / 1e3, fm_hist_quantile(&s->fault_ns, 0.99) / 1e3,
		  fm_hist_quantile(&s->fault_ns, 0.999) / 1e3);
}

static enum ctl_next cmd_stats(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	bool do_reset = take_flag(&argc, argv, "--reset");
	struct shard_stats *tot;
	struct dispatch_snapshot ds;
	double up = (double)(fm_now_ns() - d->started_ns) / 1e9;

	if (!no_unknown_flags(argc, argv, out))
		return CTL_CONTINUE;
	if (argc > 1) {
		fail(out, "usage: stats [--reset]");
		return CTL_CONTINUE;
	}
	tot = calloc(1, sizeof(*tot));
	if (!tot) {
		fail(out, "out of memory");
		return CTL_CONTINUE;
	}
	if (gather_stats(d, tot) < 0) {
		fail(out, "a shard did not answer within the timeout");
		free(tot);
		return CTL_CONTINUE;
	}
	if (daemon_dispatcher_request(d, FM_MSG_STATS, &ds) < 0) {
		fail(out, "the dispatcher did not answer within the timeout");
		free(tot);
		return CTL_CONTINUE;
	}
	sb_printf(out, "{\"v\":1,\"ok\":true,\"totals\":{");
	stats_fields(out, tot);
#define X(name, help) sb_printf(out, ",\"dispatch_" #name "\":%" PRIu64, ds.st.name);
	DISPATCH_STATS_FIELDS(X)
#undef X
	sb_printf(out, ",\"regions\":%u,\"registrations\":%" PRIu64 ",\"refusals\":%" PRIu64
		       ",\"conns_refused\":%" PRIu64 ",\"accept_paused\":%" PRIu64
		       ",\"uptime_s\":%.1f,\"fault_rate\":%.1f,\"store\":",
		  region_table_count(), d->registrations, d->refusals, d->conns_refused,
		  d->accept_paused, up,
		  up > 0 ? (double)tot->faults / up : 0.0);
	sb_json_str(out, d->cfg.store_backend);
	sb_printf(out, "},\"shards\":[");
	for (unsigned i = 0; i < d->nshards; i++) {
		sb_printf(out, "%s{\"shard\":%u,", i ? "," : "", i);
		stats_fields(out, &d->snap[i]);
		sb_printf(out, ",\"ring_full\":%" PRIu64 "}", ds.ring_full[i]);
	}
	sb_printf(out, "],\"reset\":%s}\n", do_reset ? "true" : "false");
	free(tot);
	if (do_reset && reset(d, FM_RESET_COUNTERS) < 0)
		FM_WARN("stats --reset: a shard did not answer; its counters were not cleared");
	return CTL_CONTINUE;
}

/* ---- latency ---- */

static void hist_json(struct strbuf *out, const char *name, const struct fm_hist *h)
{
	bool first = true;

	sb_printf(out, "\"%s\":{\"count\":%" PRIu64 ",\"mean_us\":%.2f,\"p50_us\":%.2f,\"p90_us\":%.2f,"
		       "\"p99_us\":%.2f,\"p999_us\":%.2f,\"max_us\":%.2f,\"buckets\":[",
		  name, h->count, h->count ? (double)h->sum / (double)h->count / 1e3 : 0.0,
		  fm_hist_quantile(h, 0.5) / 1e3, fm_hist_quantile(h, 0.9) / 1e3,
		  fm_hist_quantile(h, 0.99) / 1e3, fm_hist_quantile(h, 0.999) / 1e3, h->max / 1e3);
	/* Sparse [low_ns, count] pairs: enough for a client to diff two
	 * snapshots and compute interval percentiles (fluidmemctl top). */
	for (unsigned i = 0; i < FM_HIST_BUCKETS; i++) {
		if (!h->bucket[i])
			continue;
		sb_printf(out, "%s[%" PRIu64 ",%" PRIu64 "]", first ? "" : ",", fm_hist_bucket_low(i),
			  h->bucket[i]);
		first = false;
	}
	sb_printf(out, "]}");
}

static void hists_json(struct strbuf *out, const struct shard_stats *s)
{
	const char *sep = "";
#define X(name, help)                          \
	sb_printf(out, "%s", sep);             \
	hist_json(out, #name, &s->name);       \
	sep = ",";
	SHARD_HIST_FIELDS(X)
#undef X
}

static enum ctl_next cmd_latency(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	bool do_reset = take_flag(&argc, argv, "--reset");
	struct shard_stats *tot;

	if (!no_unknown_flags(argc, argv, out))
		return CTL_CONTINUE;
	if (argc > 1) {
		fail(out, "usage: latency [--reset]");
		return CTL_CONTINUE;
	}
	tot = calloc(1, sizeof(*tot));
	if (!tot || gather_stats(d, tot) < 0) {
		fail(out, tot ? "a shard did not answer within the timeout" : "out of memory");
		free(tot);
		return CTL_CONTINUE;
	}
	sb_printf(out, "{\"v\":1,\"ok\":true,\"totals\":{");
	hists_json(out, tot);
	sb_printf(out, "},\"shards\":[");
	for (unsigned i = 0; i < d->nshards; i++) {
		sb_printf(out, "%s{\"shard\":%u,", i ? "," : "", i);
		hists_json(out, &d->snap[i]);
		sb_printf(out, "}");
	}
	sb_printf(out, "],\"reset\":%s}\n", do_reset ? "true" : "false");
	free(tot);
	if (do_reset && reset(d, FM_RESET_LATENCY) < 0)
		FM_WARN("latency --reset: a shard did not answer; its histograms were not cleared");
	return CTL_CONTINUE;
}

/* ---- regions ---- */

static enum ctl_next cmd_regions(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	static const char *const states[] = { "attaching", "live", "detaching", "detaching" };
	int64_t res[FM_MAX_SHARDS];
	uint64_t det[FM_MAX_SHARDS], a[FM_MAX_SHARDS];
	bool first = true;

	memset(d->region_snap, 0, (size_t)d->nshards * FM_MAX_REGIONS * sizeof(*d->region_snap));
	for (unsigned i = 0; i < d->nshards; i++)
		a[i] = (uint64_t)(uintptr_t)&d->region_snap[(size_t)i * FM_MAX_REGIONS];
	if (daemon_shard_request(d, FM_MSG_REGION_STATS, a, NULL, res, det) < 0) {
		fail(out, "a shard did not answer within the timeout");
		return CTL_CONTINUE;
	}
	sb_printf(out, "{\"v\":1,\"ok\":true,\"regions\":[");
	for (unsigned slot = 0; slot < FM_MAX_REGIONS; slot++) {
		const struct uffd_region *r = d->regions[slot];
		struct shard_region_stats sum = { 0 };
		bool capped = false;

		if (!r)
			continue;
		for (unsigned i = 0; i < d->nshards; i++) {
			const struct shard_region_stats *x = &d->region_snap[(size_t)i * FM_MAX_REGIONS + slot];

			sum.resident += x->resident;
			sum.stored += x->stored;
			sum.zero += x->zero;
			sum.faults += x->faults;
			if (x->present && x->budget != UINT64_MAX) {
				capped = true;
				sum.budget += x->budget;
			}
		}
		sb_printf(out, "%s{\"id\":%" PRIu64 ",\"pid\":%d,\"name\":", first ? "" : ",", r->id,
			  (int)r->pid);
		sb_json_str(out, r->name);
		sb_printf(out, ",\"pages\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"state\":\"%s\""
			       ",\"client_alive\":%s,\"resident\":%" PRIu64 ",\"in_store\":%" PRIu64
			       ",\"zero\":%" PRIu64 ",\"faults\":%" PRIu64,
			  r->npages, r->npages << FM_PAGE_SHIFT, states[r->state],
			  client_alive(r) ? "true" : "false", sum.resident, sum.stored, sum.zero,
			  sum.faults);
		if (capped)
			sb_printf(out, ",\"budget\":%" PRIu64 "}", sum.budget);
		else
			sb_printf(out, ",\"budget\":null}");
		first = false;
	}
	sb_printf(out, "]}\n");
	return CTL_CONTINUE;
}

/* ---- resize, evict ---- */

static enum ctl_next set_budget(struct daemon *d, uint64_t pages, struct strbuf *out)
{
	uint64_t a[FM_MAX_SHARDS], det[FM_MAX_SHARDS], resident = 0;
	int64_t res[FM_MAX_SHARDS];
	bool within = true;

	if (pages == 0) {
		fail(out, "the budget must be at least 1 page");
		return CTL_CONTINUE;
	}
	/* Every shard keeps at least one page, so a faulting thread always
	 * gets to use the page it faulted in before it can be evicted again. */
	for (unsigned i = 0; i < d->nshards; i++)
		a[i] = FM_MAX(1, pages / d->nshards + (i < pages % d->nshards ? 1 : 0));
	if (daemon_shard_request(d, FM_MSG_SET_BUDGET, a, NULL, res, det) < 0) {
		fail(out, "a shard did not answer within the timeout");
		return CTL_CONTINUE;
	}
	for (unsigned i = 0; i < d->nshards; i++) {
		resident += det[i];
		within = within && res[i] == 0;
	}
	d->cfg.resident_pages = pages;
	FM_INFO("resident budget set to %" PRIu64 " pages; %" PRIu64 " resident", pages, resident);
	sb_printf(out, "{\"v\":1,\"ok\":true,\"budget\":%" PRIu64 ",\"resident\":%" PRIu64
		       ",\"within_budget\":%s}\n",
		  pages, resident, within ? "true" : "false");
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
	sb_printf(out, "{\"v\":1,\"ok\":true,\"region\":%" PRIu64 ",\"budget\":", r->id);
	if (unlimited)
		sb_printf(out, "null");
	else
		sb_printf(out, "%" PRIu64, pages);
	sb_printf(out, ",\"resident\":%" PRIu64 ",\"within_budget\":%s}\n", resident,
		  within ? "true" : "false");
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
	sb_printf(out, "{\"v\":1,\"ok\":true,\"requested\":%" PRIu64 ",\"evicted\":%" PRIu64 "}\n", n,
		  done);
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
	if (r->state == REGION_DETACHING || r->state == REGION_RELEASING) {
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
	sb_printf(out, "{\"v\":1,\"ok\":true,\"detached\":%" PRIu64 ",\"pages_restored\":%s}\n", id,
		  alive ? "true" : "false");
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
	sb_printf(out, "{\"v\":1,\"ok\":true,\"log_level\":\"%s\"}\n", fm_log_level_name(level));
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
	sb_printf(out, "{\"v\":1,\"ok\":true,\"content_type\":\"text/plain; version=0.0.4\",\"text\":");
	sb_json_str(out, text.s ? text.s : "");
	sb_printf(out, "}\n");
	sb_free(&text);
	return CTL_CONTINUE;
}

static enum ctl_next cmd_ping(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	sb_printf(out, "{\"v\":1,\"ok\":true,\"pong\":true,\"pid\":%d}\n", (int)getpid());
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
	sb_printf(out, "{\"v\":1,\"ok\":true,\"live_regions\":%u,\"note\":", region_table_count());
	sb_json_str(out, keep ? "live regions stay registered in their clients with their stored pages: "
				"their faults on evicted pages wait until the next fluidmemd re-adopts them"
			: drop ? "live regions are dropped with their stored pages; their clients' next "
				 "faults on evicted pages wait forever (never read zeros)"
			       : "every page of a live region is handed back to its client, which "
				 "keeps running on plain memory; then the daemon stops");
	sb_printf(out, "}\n");
	return CTL_SHUTDOWN;
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
	{ "regions", "regions", "list regions with their resident, stored and zero pages", 0, 0,
	  cmd_regions },
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
	{ "shutdown", "shutdown [--drop|--keep-clients]",
	  "stop cleanly; live clients get their pages back, unless --drop, or --keep-clients (an "
	  "upgrade: they wait for the next daemon, which re-adopts their regions)", 0, 2, cmd_shutdown },
};

static enum ctl_next cmd_help(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	sb_printf(out, "{\"v\":1,\"ok\":true,\"commands\":[");
	for (size_t i = 0; i < FM_ARRAY_SIZE(commands); i++) {
		sb_printf(out, "%s{\"usage\":", i ? "," : "");
		sb_json_str(out, commands[i].usage);
		sb_printf(out, ",\"help\":");
		sb_json_str(out, commands[i].help);
		sb_printf(out, "}");
	}
	sb_printf(out, "]}\n");
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
