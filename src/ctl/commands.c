/* Control commands: request line in, one JSON line out. */
#include "ctl/daemon_priv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "kv/kv.h"

#define MAX_ARGS 8

struct ctl_command {
	const char *name;
	const char *usage;
	const char *help;
	int min_args, max_args;
	bool (*run)(struct daemon *d, int argc, char **argv, struct strbuf *out);
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

	if (!s || !*s || *s == '-')
		return false;
	errno = 0;
	*v = strtoull(s, &end, 10);
	return errno == 0 && *end == '\0';
}

static void stats_fields(struct strbuf *out, const struct shard_stats *s)
{
#define X(name, help) sb_printf(out, "\"" #name "\":%" PRIu64 ",", s->name);
	SHARD_STATS_FIELDS(X)
#undef X
	sb_printf(out, "\"ring_depth\":%" PRIu64 ",", s->ring_depth);
	sb_printf(out, "\"fault_p50_us\":%.1f,\"fault_p99_us\":%.1f,\"fault_p999_us\":%.1f,",
		  fm_hist_quantile(&s->fault_ns, 0.5) / 1e3, fm_hist_quantile(&s->fault_ns, 0.99) / 1e3,
		  fm_hist_quantile(&s->fault_ns, 0.999) / 1e3);
	sb_printf(out, "\"fetch_p50_us\":%.1f,\"evict_p50_us\":%.1f",
		  fm_hist_quantile(&s->fetch_ns, 0.5) / 1e3, fm_hist_quantile(&s->evict_ns, 0.5) / 1e3);
}

static bool cmd_stats(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	int64_t res[FM_MAX_SHARDS];
	uint64_t det[FM_MAX_SHARDS];
	struct shard_stats *tot = calloc(1, sizeof(*tot));
	struct dispatch_stats ds;

	if (!tot) {
		fail(out, "out of memory");
		return false;
	}
	if (daemon_shard_request(d, FM_MSG_STATS, NULL, res, det) < 0) {
		fail(out, "a shard did not answer within the timeout");
		free(tot);
		return false;
	}
	for (unsigned i = 0; i < d->nshards; i++) {
		const struct shard_stats *s = &d->snap[i];
#define X(name, help) tot->name += s->name;
		SHARD_STATS_FIELDS(X)
#undef X
		tot->ring_depth += s->ring_depth;
		fm_hist_merge(&tot->fault_ns, &s->fault_ns);
		fm_hist_merge(&tot->fetch_ns, &s->fetch_ns);
		fm_hist_merge(&tot->evict_ns, &s->evict_ns);
	}
	dispatcher_get_stats(d->disp, &ds);
	sb_printf(out, "{\"v\":1,\"ok\":true,\"totals\":{");
	stats_fields(out, tot);
#define X(name, help) sb_printf(out, ",\"dispatch_" #name "\":%" PRIu64, ds.name);
	DISPATCH_STATS_FIELDS(X)
#undef X
	sb_printf(out, ",\"regions\":%u,\"registrations\":%" PRIu64 ",\"refusals\":%" PRIu64
		       ",\"uptime_s\":%.1f,\"store\":",
		  region_table_count(), d->registrations, d->refusals,
		  (double)(fm_now_ns() - d->started_ns) / 1e9);
	sb_json_str(out, d->cfg.store_backend);
	sb_printf(out, "},\"shards\":[");
	for (unsigned i = 0; i < d->nshards; i++) {
		sb_printf(out, "%s{\"shard\":%u,", i ? "," : "", i);
		stats_fields(out, &d->snap[i]);
		sb_printf(out, "}");
	}
	sb_printf(out, "]}\n");
	free(tot);
	return false;
}

static bool cmd_regions(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	bool first = true;

	sb_printf(out, "{\"v\":1,\"ok\":true,\"regions\":[");
	for (unsigned i = 0; i < FM_MAX_REGIONS; i++) {
		const struct region *r = d->regions[i];
		static const char *const states[] = { "attaching", "live", "detaching" };

		if (!r)
			continue;
		sb_printf(out, "%s{\"id\":%" PRIu64 ",\"pid\":%d,\"name\":", first ? "" : ",", r->id,
			  (int)r->pid);
		sb_json_str(out, r->name);
		sb_printf(out, ",\"pages\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"state\":\"%s\"}",
			  r->npages, r->npages << FM_PAGE_SHIFT, states[r->state]);
		first = false;
	}
	sb_printf(out, "]}\n");
	return false;
}

static bool set_budget(struct daemon *d, uint64_t pages, struct strbuf *out)
{
	uint64_t a[FM_MAX_SHARDS], det[FM_MAX_SHARDS], resident = 0;
	int64_t res[FM_MAX_SHARDS];
	int worst = 0;

	if (pages < d->nshards) {
		fail(out, "the budget must be at least one page per shard (%u)", d->nshards);
		return false;
	}
	for (unsigned i = 0; i < d->nshards; i++)
		a[i] = pages / d->nshards + (i < pages % d->nshards ? 1 : 0);
	if (daemon_shard_request(d, FM_MSG_SET_BUDGET, a, res, det) < 0) {
		fail(out, "a shard did not answer within the timeout");
		return false;
	}
	for (unsigned i = 0; i < d->nshards; i++) {
		resident += det[i];
		if (res[i] < 0)
			worst = (int)res[i];
	}
	d->cfg.resident_pages = pages;
	sb_printf(out, "{\"v\":1,\"ok\":true,\"budget\":%" PRIu64 ",\"resident\":%" PRIu64
		       ",\"within_budget\":%s}\n",
		  pages, resident, worst ? "false" : "true");
	return false;
}

static bool cmd_resize(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	uint64_t pages;

	if (!parse_u64(argv[1], &pages)) {
		fail(out, "resize: PAGES must be a whole number, got \"%s\"", argv[1]);
		return false;
	}
	return set_budget(d, pages, out);
}

static bool cmd_evict(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	uint64_t n, a[FM_MAX_SHARDS], det[FM_MAX_SHARDS], done = 0;
	int64_t res[FM_MAX_SHARDS];

	if (!parse_u64(argv[1], &n)) {
		fail(out, "evict: N must be a whole number, got \"%s\"", argv[1]);
		return false;
	}
	for (unsigned i = 0; i < d->nshards; i++)
		a[i] = n / d->nshards + (i < n % d->nshards ? 1 : 0);
	if (daemon_shard_request(d, FM_MSG_EVICT, a, res, det) < 0) {
		fail(out, "a shard did not answer within the timeout");
		return false;
	}
	for (unsigned i = 0; i < d->nshards; i++)
		done += det[i];
	sb_printf(out, "{\"v\":1,\"ok\":true,\"requested\":%" PRIu64 ",\"evicted\":%" PRIu64 "}\n", n,
		  done);
	return false;
}

static bool cmd_ping(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	sb_printf(out, "{\"v\":1,\"ok\":true,\"pong\":true,\"pid\":%d}\n", (int)getpid());
	return false;
}

static bool cmd_shutdown(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	sb_printf(out, "{\"v\":1,\"ok\":true,\"live_regions\":%u,\"note\":", region_table_count());
	sb_json_str(out, "live regions are detached and their stored pages freed; their clients' "
			 "next faults wait instead of reading zeros");
	sb_printf(out, "}\n");
	return true;
}

static bool cmd_help(struct daemon *d, int argc, char **argv, struct strbuf *out);

static const struct ctl_command commands[] = {
	{ "help", "help", "list commands", 0, 0, cmd_help },
	{ "ping", "ping", "check the daemon answers", 0, 0, cmd_ping },
	{ "stats", "stats", "counters, totals and per shard", 0, 0, cmd_stats },
	{ "regions", "regions", "list regions", 0, 0, cmd_regions },
	{ "resize", "resize PAGES", "set the resident budget; a shrink evicts before replying", 1, 1,
	  cmd_resize },
	{ "evict", "evict N", "evict N pages now", 1, 1, cmd_evict },
	{ "shutdown", "shutdown", "stop the daemon cleanly", 0, 0, cmd_shutdown },
};

static bool cmd_help(struct daemon *d, int argc, char **argv, struct strbuf *out)
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
	return false;
}

bool ctl_execute(struct daemon *d, const char *line, struct strbuf *out)
{
	char buf[CTL_MAX_REQUEST + 1], *argv[MAX_ARGS + 1], *save = NULL, *tok;
	int argc = 0;

	if (strlen(line) > CTL_MAX_REQUEST) {
		fail(out, "request longer than %d bytes", CTL_MAX_REQUEST);
		return false;
	}
	snprintf(buf, sizeof(buf), "%s", line);
	for (tok = strtok_r(buf, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
		if (argc == MAX_ARGS + 1) {
			fail(out, "too many arguments");
			return false;
		}
		argv[argc++] = tok;
	}
	if (argc == 0 || strcmp(argv[0], "v1") != 0) {
		fail(out, "unsupported protocol: requests start with \"v1\"");
		return false;
	}
	if (argc == 1) {
		fail(out, "empty request: try \"v1 help\"");
		return false;
	}
	for (size_t i = 0; i < FM_ARRAY_SIZE(commands); i++) {
		const struct ctl_command *c = &commands[i];

		if (strcmp(argv[1], c->name) != 0)
			continue;
		if (argc - 2 < c->min_args || argc - 2 > c->max_args) {
			fail(out, "usage: %s", c->usage);
			return false;
		}
		return c->run(d, argc - 1, argv + 1, out);
	}
	fail(out, "unknown command \"%.64s\": try \"v1 help\"", argv[1]);
	return false;
}
