/* fault-storm: drive fluidmemd with a page-fault storm and measure it, and
 * optionally run the same workload against an in-process raw userfaultfd
 * handler (the floor). See bench/README.md and --help. */
#include "client/fluidmem.h"

#include "base/base.h"
#include "base/hist.h"
#include "ctl_stats.h"
#include "raw_uffd.h"
#include "storm.h"

#include <libmemcached/memcached.h>
#include <sched.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CONTROL_SOCKET "/run/fluidmem/control.sock"
#define DEFAULT_PAGES 16384
#define DEFAULT_THREADS 2
#define DEFAULT_PASSES 3
#define DEFAULT_ZIPF_S 0.99
#define DEFAULT_WRITE_RATIO 0.5
#define DEFAULT_SEED 1
#define DEFAULT_THRESHOLD_US 3.0
#define DEFAULT_RAW_BUDGET 4096
#define MAX_PAGES (1ull << 32)   /* raw baseline FIFO keeps u32 page numbers */
#define TIMER_NAME "clock_gettime(CLOCK_MONOTONIC) (vDSO)"
#define MC_PROBE_GETS 4000       /* direct memcached gets timed by --memcached */

enum exit_code {
	EXIT_OK = 0,
	EXIT_VERIFY = 1,
	EXIT_USAGE = 2,
	EXIT_NO_DAEMON = 3,
	EXIT_FAILURE_OTHER = 4,
};

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

/* --memcached: the same 4 KiB get the daemon makes, timed from here. */
struct mc_probe {
	bool ran;
	struct fm_hist get;
	char error[200];
};

static void usage(FILE *f)
{
	fprintf(f,
"usage: fault-storm [options]\n"
"\n"
"Drive fluidmemd with a page-fault storm on one region and measure it.\n"
"Page p belongs to thread p %% T; each thread visits as many pages as it owns\n"
"per pass. Writes stamp the whole page with (page, version); reads check it\n"
"with --verify, else touch one word per cache line.\n"
"\n"
"  --socket PATH          registration socket (default: $FLUIDMEM_SOCKET, else\n"
"                         " FM_DEFAULT_REGISTER_SOCKET ")\n"
"  --control PATH         the daemon's control socket, read for evictions and the\n"
"                         budget (default: " DEFAULT_CONTROL_SOCKET ")\n"
"  --pages N              region size in 4 KiB pages (default: %d)\n"
"  --threads T            workload threads, 1..%d (default: %d)\n"
"  --pattern P            seq | random | zipf (default: random)\n"
"  --zipf-s S             Zipf exponent, >= 0, for --pattern zipf (default: %.2f)\n"
"  --passes K             passes over the region, >= 1 (default: %d)\n"
"  --write-ratio R        probability that an access is a write, 0..1 (default: %.1f)\n"
"  --seed N               seed for patterns and page stamps (default: %d)\n"
"  --verify               check every read against the mirror, and every page\n"
"                         after the last pass (default: off)\n"
"  --fault-threshold-us F an access slower than F us counts as a faulting access\n"
"                         (default: %.0f)\n"
"  --json                 print one JSON object on stdout; the human summary goes\n"
"                         to stderr (default: off)\n"
"  --quiet                no notes on stderr, and with --json no summary (default: off)\n"
"  --baseline raw         also run the workload on the in-process raw handler\n"
"  --baseline-only raw    run only the raw handler; no daemon needed\n"
"  --budget PAGES         resident budget of the raw handler (default: the daemon's\n"
"                         budget from its control socket, else %d)\n"
"  --cpus LIST            pin workload thread i to CPU LIST[i %% n], e.g. 1 or 0,1\n"
"                         (default: unpinned)\n"
"  --raw-cpu N            pin the raw handler thread to CPU N (default: unpinned;\n"
"                         with --cpus N it measures the same-core floor)\n"
"  --memcached SERVER     before the runs, time %d direct 4 KiB gets (libmemcached,\n"
"                         binary protocol, as fluidmemd does) on SERVER, host:port\n"
"                         or a unix socket path; reported as store_get_*\n"
"  --help                 this text\n"
"\n"
"Latencies come from " TIMER_NAME " around each access.\n"
"Exit status: 0 ok, 1 verify errors, 2 bad arguments, 3 fluidmemd unreachable,\n"
"4 another failure (region refused, raw handler failed).\n",
		DEFAULT_PAGES, STORM_MAX_THREADS, DEFAULT_THREADS, DEFAULT_ZIPF_S, DEFAULT_PASSES,
		DEFAULT_WRITE_RATIO, DEFAULT_SEED, DEFAULT_THRESHOLD_US, DEFAULT_RAW_BUDGET,
		MC_PROBE_GETS);
}

static void __attribute__((noreturn, format(printf, 1, 2))) bad_arg(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fault-storm: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see --help)\n");
	exit(EXIT_USAGE);
}

static uint64_t parse_u64(const char *opt, const char *arg, uint64_t min, uint64_t max)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(arg, &end, 0);
	if (!*arg || *end || errno || arg[0] == '-' || v < min || v > max)
		bad_arg("%s: expected an integer in %" PRIu64 "..%" PRIu64 ", got '%s'", opt, min, max,
			arg);
	return v;
}

static double parse_double(const char *opt, const char *arg, double min, double max)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(arg, &end);
	if (!*arg || *end || errno || !isfinite(v) || v < min || v > max)
		bad_arg("%s: expected a number in %g..%g, got '%s'", opt, min, max, arg);
	return v;
}

static void parse_baseline(const char *opt, const char *arg)
{
	if (strcmp(arg, "raw") != 0)
		bad_arg("%s: the only baseline is 'raw', got '%s'", opt, arg);
}

enum {
	OPT_SOCKET = 256, OPT_CONTROL, OPT_PAGES, OPT_THREADS, OPT_PATTERN, OPT_ZIPF_S,
	OPT_PASSES, OPT_WRITE_RATIO, OPT_SEED, OPT_VERIFY, OPT_JSON, OPT_THRESHOLD, OPT_QUIET,
	OPT_BASELINE, OPT_BASELINE_ONLY, OPT_BUDGET, OPT_CPUS, OPT_RAW_CPU, OPT_MEMCACHED, OPT_HELP,
};

static void parse_args(int argc, char **argv, struct storm_opts *o)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "control", required_argument, NULL, OPT_CONTROL },
		{ "pages", required_argument, NULL, OPT_PAGES },
		{ "threads", required_argument, NULL, OPT_THREADS },
		{ "pattern", required_argument, NULL, OPT_PATTERN },
		{ "zipf-s", required_argument, NULL, OPT_ZIPF_S },
		{ "passes", required_argument, NULL, OPT_PASSES },
		{ "write-ratio", required_argument, NULL, OPT_WRITE_RATIO },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "verify", no_argument, NULL, OPT_VERIFY },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "fault-threshold-us", required_argument, NULL, OPT_THRESHOLD },
		{ "quiet", no_argument, NULL, OPT_QUIET },
		{ "baseline", required_argument, NULL, OPT_BASELINE },
		{ "baseline-only", required_argument, NULL, OPT_BASELINE_ONLY },
		{ "budget", required_argument, NULL, OPT_BUDGET },
		{ "cpus", required_argument, NULL, OPT_CPUS },
		{ "raw-cpu", required_argument, NULL, OPT_RAW_CPU },
		{ "memcached", required_argument, NULL, OPT_MEMCACHED },
		{ "help", no_argument, NULL, OPT_HELP },
		{ NULL, 0, NULL, 0 },
	};
	const char *env = getenv("FLUIDMEM_SOCKET");
	int c, p;

	*o = (struct storm_opts){
		.socket_path = env && *env ? env : FM_DEFAULT_REGISTER_SOCKET,
		.control_path = DEFAULT_CONTROL_SOCKET,
		.pages = DEFAULT_PAGES,
		.threads = DEFAULT_THREADS,
		.passes = DEFAULT_PASSES,
		.pattern = STORM_RANDOM,
		.zipf_s = DEFAULT_ZIPF_S,
		.write_ratio = DEFAULT_WRITE_RATIO,
		.seed = DEFAULT_SEED,
		.fault_threshold_us = DEFAULT_THRESHOLD_US,
		.budget = -1,
		.raw_cpu = -1,
	};
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_SOCKET:
			o->socket_path = optarg;
			break;
		case OPT_CONTROL:
			o->control_path = optarg;
			break;
		case OPT_PAGES:
			o->pages = parse_u64("--pages", optarg, 1, MAX_PAGES - 1);
			break;
		case OPT_THREADS:
			o->threads = (unsigned)parse_u64("--threads", optarg, 1, STORM_MAX_THREADS);
			break;
		case OPT_PATTERN:
			p = storm_pattern_parse(optarg);
			if (p < 0)
				bad_arg("--pattern: expected seq, random or zipf, got '%s'", optarg);
			o->pattern = (enum storm_pattern)p;
			break;
		case OPT_ZIPF_S:
			o->zipf_s = parse_double("--zipf-s", optarg, 0, 100);
			break;
		case OPT_PASSES:
			o->passes = (unsigned)parse_u64("--passes", optarg, 1, STORM_MAX_PASSES);
			break;
		case OPT_WRITE_RATIO:
			o->write_ratio = parse_double("--write-ratio", optarg, 0, 1);
			break;
		case OPT_SEED:
			o->seed = parse_u64("--seed", optarg, 0, UINT64_MAX);
			break;
		case OPT_VERIFY:
			o->verify = true;
			break;
		case OPT_JSON:
			o->json = true;
			break;
		case OPT_THRESHOLD:
			o->fault_threshold_us = parse_double("--fault-threshold-us", optarg, 0, 1e9);
			break;
		case OPT_QUIET:
			o->quiet = true;
			break;
		case OPT_BASELINE:
			parse_baseline("--baseline", optarg);
			o->baseline = true;
			break;
		case OPT_BASELINE_ONLY:
			parse_baseline("--baseline-only", optarg);
			o->baseline_only = true;
			break;
		case OPT_BUDGET:
			o->budget = (int64_t)parse_u64("--budget", optarg, 1, MAX_PAGES - 1);
			break;
		case OPT_CPUS: {
			char *list = strdup(optarg), *save = NULL;

			o->ncpus = 0;
			for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
				if (o->ncpus == STORM_MAX_THREADS)
					bad_arg("--cpus: at most %d CPUs", STORM_MAX_THREADS);
				o->cpus[o->ncpus++] = (int)parse_u64("--cpus", tok, 0, CPU_SETSIZE - 1);
			}
			free(list);
			if (o->ncpus == 0)
				bad_arg("--cpus wants a list like 0,1");
			break;
		}
		case OPT_RAW_CPU:
			o->raw_cpu = (int)parse_u64("--raw-cpu", optarg, 0, CPU_SETSIZE - 1);
			break;
		case OPT_MEMCACHED:
			o->memcached = optarg;
			break;
		case OPT_HELP:
			usage(stdout);
			exit(EXIT_OK);
		case ':':
			bad_arg("%s needs a value", argv[optind - 1]);
		default:
			bad_arg("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		bad_arg("unexpected argument '%s'", argv[optind]);
	if (o->pages < o->threads)
		bad_arg("--pages: %" PRIu64 " pages cannot be shared by %u threads", o->pages,
			o->threads);
	if (o->baseline && o->baseline_only)
		bad_arg("--baseline and --baseline-only: give one of them");
}

#define NOTE(o, ...)                                          \
	do {                                                  \
		if (!(o)->quiet) {                            \
			fprintf(stderr, "fault-storm: ");     \
			fprintf(stderr, __VA_ARGS__);         \
			fputc('\n', stderr);                  \
		}                                             \
	} while (0)

/* ---- fluidmemd run ---- */

struct daemon_snap {
	const char *control;
	struct ctl_totals after;
	int rc;
};

static void daemon_passes_done(void *arg)
{
	struct daemon_snap *s = arg;
	char err[160];

	s->rc = ctl_stats_query(s->control, &s->after, err, sizeof(err));
}

static int run_daemon(const struct storm_opts *o, struct run_report *rep)
{
	struct daemon_snap snap = { .control = o->control_path, .rc = -ENODATA };
	struct ctl_totals before = { -1, -1, -1, -1, -1, -1, -1 };
	struct fm_client *c;
	struct fm_region *r;
	char err[160];
	int rc, e;

	rep->mode = "fluidmemd";
	rep->budget = rep->evictions = rep->handler_faults = -1;
	rep->store_puts = rep->evict_clean = rep->evict_zero = -1;
	rep->fetch_p50_us = rep->fetch_p99_us = -1;
	c = fm_connect(o->socket_path);
	if (!c) {
		e = errno;
		fprintf(stderr,
			"fault-storm: cannot reach fluidmemd at %s: %s.\n"
			"  Start it with: fluidmemd --config configs/local.toml (as root), or point\n"
			"  --socket / $FLUIDMEM_SOCKET at its registration socket, or measure only the\n"
			"  floor with --baseline-only raw.\n",
			o->socket_path, strerror(e));
		return EXIT_NO_DAEMON;
	}
	r = fm_region_create(c, o->pages * FM_PAGE_SIZE, "fault-storm");
	if (!r) {
		e = errno;
		fprintf(stderr, "fault-storm: fluidmemd refused a region of %" PRIu64 " pages: %s (%s)\n",
			o->pages, strerror(e), fm_client_error(c));
		fm_disconnect(c);
		return e == ECONNREFUSED || e == ENOENT || e == EPIPE || e == ECONNRESET
			       ? EXIT_NO_DAEMON
			       : EXIT_FAILURE_OTHER;
	}
	rc = ctl_stats_query(o->control_path, &before, err, sizeof(err));
	if (rc < 0) {
		NOTE(o, "control socket %s: %s%s%s; evictions are reported as -1", o->control_path,
		     strerror(-rc), *err ? ": " : "", err);
		rep->evictions_source = "control socket unreachable";
	} else {
		rep->budget = before.budget;
	}
	NOTE(o, "fluidmemd run: region %" PRIu64 " of %" PRIu64 " pages, daemon budget %" PRId64,
	     fm_region_id(r), o->pages, rep->budget);
	rc = storm_run(o, fm_region_addr(r), &rep->res, daemon_passes_done, &snap);
	fm_region_destroy(r);
	fm_disconnect(c);
	if (rc < 0) {
		fprintf(stderr, "fault-storm: running the workload: %s\n", strerror(-rc));
		return EXIT_FAILURE_OTHER;
	}
	rep->ran = true;
	if (before.evictions >= 0 && snap.rc == 0 && snap.after.evictions >= 0) {
		rep->evictions = snap.after.evictions - before.evictions;
		rep->evictions_source = "daemon totals (all regions)";
	} else if (!rep->evictions_source) {
		rep->evictions_source = snap.rc < 0 ? "control socket failed after the run"
						    : "no evictions in the control reply";
		NOTE(o, "control socket %s after the run: %s; evictions are reported as -1",
		     o->control_path, snap.rc < 0 ? strerror(-snap.rc) : "no \"evictions\" in totals");
	}
	if (before.faults >= 0 && snap.rc == 0 && snap.after.faults >= 0)
		rep->handler_faults = snap.after.faults - before.faults;
	if (snap.rc == 0 && before.store_puts >= 0 && snap.after.store_puts >= 0)
		rep->store_puts = snap.after.store_puts - before.store_puts;
	if (snap.rc == 0 && before.evict_clean >= 0 && snap.after.evict_clean >= 0)
		rep->evict_clean = snap.after.evict_clean - before.evict_clean;
	if (snap.rc == 0 && before.evict_zero >= 0 && snap.after.evict_zero >= 0)
		rep->evict_zero = snap.after.evict_zero - before.evict_zero;
	{
		int64_t n = 0;

		if (ctl_fetch_latency(o->control_path, &rep->fetch_p50_us, &rep->fetch_p99_us, &n) < 0 ||
		    n == 0)
			rep->fetch_p50_us = rep->fetch_p99_us = -1;
	}
	return EXIT_OK;
}

/* ---- raw baseline run ---- */

struct raw_snap {
	struct raw_uffd *h;
	struct raw_uffd_stats st;
};

static void raw_passes_done(void *arg)
{
	struct raw_snap *s = arg;

	/* A woken thread can finish before the handler has counted the install
	 * that woke it, or run the evictions that follow. */
	if (!raw_uffd_quiesce(s->h, 1000))
		fprintf(stderr, "fault-storm: raw handler still busy after the last pass; counters may lag\n");
	raw_uffd_get_stats(s->h, &s->st);
}

static int run_raw(const struct storm_opts *o, uint64_t budget, struct run_report *rep)
{
	struct raw_snap snap;
	char err[256] = "";
	int rc;

	rep->mode = "raw";
	rep->raw = true;
	rep->budget = (int64_t)budget;
	snap.h = raw_uffd_create(o->pages, budget, o->raw_cpu, err, sizeof(err));
	if (!snap.h) {
		fprintf(stderr, "fault-storm: raw baseline: %s\n", err);
		snprintf(rep->error, sizeof(rep->error), "%s", err);
		return EXIT_FAILURE_OTHER;
	}
	NOTE(o, "raw baseline: %" PRIu64 " pages, budget %" PRIu64 ", one handler thread (%s)",
	     o->pages, budget, o->raw_cpu >= 0 ? "pinned" : "unpinned");
	rc = storm_run(o, raw_uffd_addr(snap.h), &rep->res, raw_passes_done, &snap);
	if (*raw_uffd_error(snap.h))
		snprintf(rep->error, sizeof(rep->error), "%s", raw_uffd_error(snap.h));
	raw_uffd_destroy(snap.h);
	if (rc < 0) {
		fprintf(stderr, "fault-storm: running the workload: %s\n", strerror(-rc));
		snprintf(rep->error, sizeof(rep->error), "running the workload: %s", strerror(-rc));
		return EXIT_FAILURE_OTHER;
	}
	rep->ran = true;
	rep->raw_st = snap.st;
	rep->evictions = (int64_t)snap.st.evictions;
	rep->handler_faults = (int64_t)snap.st.faults;
	rep->evictions_source = "raw handler";
	return *rep->error ? EXIT_FAILURE_OTHER : EXIT_OK;
}

/* ---- direct memcached gets (--memcached) ---- */

static void probe_memcached(const char *server, struct mc_probe *pr)
{
	static const char key[] = "fault-storm:probe";
	static char page[FM_PAGE_SIZE];
	const char *keys[1] = { key };
	size_t lens[1] = { sizeof(key) - 1 };
	memcached_result_st result;
	memcached_return_t rc;
	memcached_st *mc = memcached_create(NULL);
	char host[256];
	const char *colon = strrchr(server, ':');

	if (!mc) {
		snprintf(pr->error, sizeof(pr->error), "out of memory");
		return;
	}
	if (server[0] == '/') {
		rc = memcached_server_add_unix_socket(mc, server);
	} else {
		snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - server) : (int)strlen(server),
			 server);
		rc = memcached_server_add(mc, host, colon ? (in_port_t)atoi(colon + 1) : 11211);
	}
	/* The daemon's settings: binary protocol, TCP_NODELAY, and a get is an
	 * mget of one key into a reused result (kv/memcached.c). */
	memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1);
	memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_NO_BLOCK, 1);
	memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
	memset(page, 0x5a, sizeof(page));
	if (rc == MEMCACHED_SUCCESS)
		rc = memcached_set(mc, key, sizeof(key) - 1, page, sizeof(page), 0, 0);
	if (rc != MEMCACHED_SUCCESS || !memcached_result_create(mc, &result)) {
		snprintf(pr->error, sizeof(pr->error), "%s: %s", server, memcached_strerror(mc, rc));
		memcached_free(mc);
		return;
	}
	for (int i = 0; i < MC_PROBE_GETS; i++) {
		uint64_t t0 = fm_now_ns();
		memcached_result_st *res;

		rc = memcached_mget(mc, keys, lens, 1);
		res = rc == MEMCACHED_SUCCESS ? memcached_fetch_result(mc, &result, &rc) : NULL;
		if (res)
			memcpy(page, memcached_result_value(res), sizeof(page));
		while (res && memcached_fetch_result(mc, &result, &rc))
			;
		if (!res) {
			snprintf(pr->error, sizeof(pr->error), "%s: get: %s", server,
				 memcached_strerror(mc, rc));
			break;
		}
		fm_hist_add(&pr->get, fm_now_ns() - t0);
	}
	memcached_delete(mc, key, sizeof(key) - 1, 0);
	memcached_result_free(&result);
	memcached_free(mc);
	pr->ran = pr->get.count > 0;
}

/* ---- output ---- */

static double us(uint64_t ns)
{
	return (double)ns / 1000.0;
}

static double q_us(const struct fm_hist *h, double q)
{
	return us(fm_hist_quantile(h, q));
}

static double per_s(uint64_t n, double s)
{
	return s > 0 ? (double)n / s : 0;
}

/* Faults per second after the first pass: with --pattern seq and a region
 * larger than the budget these are all refaults. */
static double steady_faults_per_s(const struct storm_opts *o, const struct storm_result *s)
{
	uint64_t n = 0;
	double wall = 0;

	for (unsigned p = 1; p < o->passes; p++) {
		n += s->pass[p].faults;
		wall += s->pass[p].wall_s;
	}
	return per_s(n, wall);
}

static void summary_hist(FILE *f, const char *name, const struct fm_hist *h, double wall)
{
	fprintf(f, "  %-12s %9" PRIu64 "  (%8.0f/s)   p50 %7.1f  p99 %7.1f  p99.9 %7.1f  max %8.1f us\n",
		name, h->count, per_s(h->count, wall), q_us(h, 0.5), q_us(h, 0.99), q_us(h, 0.999),
		us(h->max));
}

static void summary(FILE *f, const struct storm_opts *o, const struct run_report *r)
{
	const struct storm_result *s = &r->res;

	if (!r->ran) {
		fprintf(f, "fault-storm [%s]: did not run: %s\n", r->mode, r->error);
		return;
	}
	fprintf(f, "fault-storm [%s]: pattern %s", r->mode, storm_pattern_name(o->pattern));
	if (o->pattern == STORM_ZIPF)
		fprintf(f, " (s=%.2f)", o->zipf_s);
	fprintf(f, ", %" PRIu64 " pages (%.1f MiB), %u threads, %u passes, write ratio %.2f, budget ",
		o->pages, (double)(o->pages * FM_PAGE_SIZE) / (1 << 20), o->threads, o->passes,
		o->write_ratio);
	if (r->budget >= 0)
		fprintf(f, "%" PRId64 " pages\n", r->budget);
	else
		fprintf(f, "unknown\n");
	fprintf(f, "  accesses     %9" PRIu64 "  in %.3f s (%.0f/s): %" PRIu64 " reads, %" PRIu64
		   " writes; a fault is an access > %.1f us\n",
		s->accesses, s->wall_s, per_s(s->accesses, s->wall_s), s->reads, s->writes,
		o->fault_threshold_us);
	summary_hist(f, "faults", &s->all, s->wall_s);
	summary_hist(f, "first touch", &s->first, s->wall_s);
	summary_hist(f, "refault", &s->refault, s->wall_s);
	for (unsigned p = 0; p < o->passes && o->passes <= 10; p++)
		fprintf(f, "  pass %-7u %9" PRIu64 "  (%8.0f/s)   %" PRIu64 " first touches, %.3f s\n",
			p + 1, s->pass[p].faults, per_s(s->pass[p].faults, s->pass[p].wall_s),
			s->pass[p].first, s->pass[p].wall_s);
	if (o->passes > 1)
		fprintf(f, "  after pass 1: %.0f faults/s\n", steady_faults_per_s(o, s));
	if (r->evictions >= 0)
		fprintf(f, "  evictions    %9" PRId64 "  (%s)\n", r->evictions, r->evictions_source);
	else
		fprintf(f, "  evictions    unknown (%s)\n", r->evictions_source);
	if (r->raw)
		fprintf(f,
			"  handler      raw, cpu %d: %" PRIu64 " MISSING (%" PRIu64 " zeropage, %" PRIu64
			" copy, %" PRIu64 " wake), %" PRIu64 " WP, %" PRIu64 " EEXIST, %" PRIu64 " EAGAIN\n",
			o->raw_cpu, r->raw_st.faults, r->raw_st.zeropages, r->raw_st.copies,
			r->raw_st.wakes, r->raw_st.wp_faults, r->raw_st.eexist, r->raw_st.eagain);
	else if (r->handler_faults >= 0)
		fprintf(f, "  daemon       %" PRId64 " faults counted by fluidmemd\n", r->handler_faults);
	if (!r->raw && r->store_puts >= 0 && r->evictions > 0)
		fprintf(f, "  store        %" PRId64 " page writes (%.3f per eviction), %" PRId64
			   " clean and %" PRId64 " zero evictions without a write\n",
			r->store_puts, (double)r->store_puts / (double)r->evictions, r->evict_clean,
			r->evict_zero);
	if (!r->raw && r->fetch_p50_us >= 0)
		fprintf(f, "  store get    p50 %7.1f  p99 %7.1f us (fluidmemd's own timing)\n",
			r->fetch_p50_us, r->fetch_p99_us);
	if (o->verify)
		fprintf(f, "  verify       %" PRIu64 " errors (final check of every page took %.3f s)\n",
			s->verify_errors, s->final_check_s);
	else
		fprintf(f, "  verify       off (%" PRIu64 " errors)\n", s->verify_errors);
	fprintf(f, "  wall         %.3f s\n", s->wall_s);
	if (*r->error)
		fprintf(f, "  ERROR        %s\n", r->error);
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static void json_run(FILE *f, const struct storm_opts *o, const struct run_report *r)
{
	const struct storm_result *s = &r->res;

	fprintf(f, "\"mode\":");
	json_str(f, r->mode);
	if (!r->ran) {
		fprintf(f, ",\"error\":");
		json_str(f, r->error);
		return;
	}
	fprintf(f, ",\"pattern\":\"%s\",\"zipf_s\":%g,\"pages\":%" PRIu64
		   ",\"threads\":%u,\"passes\":%u,\"write_ratio\":%g,\"seed\":%" PRIu64
		   ",\"verify\":%s,\"fault_threshold_us\":%g,\"budget\":%" PRId64,
		storm_pattern_name(o->pattern), o->zipf_s, o->pages, o->threads, o->passes,
		o->write_ratio, o->seed, o->verify ? "true" : "false", o->fault_threshold_us,
		r->budget);
	fprintf(f, ",\"accesses\":%" PRIu64 ",\"reads\":%" PRIu64 ",\"writes\":%" PRIu64
		   ",\"accesses_per_s\":%.1f",
		s->accesses, s->reads, s->writes, per_s(s->accesses, s->wall_s));
	fprintf(f, ",\"faults\":%" PRIu64 ",\"faults_per_s\":%.1f,\"p50_us\":%.2f,\"p99_us\":%.2f"
		   ",\"p999_us\":%.2f,\"max_us\":%.2f,\"mean_us\":%.2f",
		s->all.count, per_s(s->all.count, s->wall_s), q_us(&s->all, 0.5), q_us(&s->all, 0.99),
		q_us(&s->all, 0.999), us(s->all.max),
		s->all.count ? us(s->all.sum) / (double)s->all.count : 0.0);
	fprintf(f, ",\"first_touch_faults\":%" PRIu64 ",\"first_touch_p50_us\":%.2f"
		   ",\"first_touch_p99_us\":%.2f,\"first_touch_p999_us\":%.2f",
		s->first.count, q_us(&s->first, 0.5), q_us(&s->first, 0.99), q_us(&s->first, 0.999));
	fprintf(f, ",\"refaults\":%" PRIu64 ",\"refaults_per_s\":%.1f,\"refault_p50_us\":%.2f"
		   ",\"refault_p99_us\":%.2f,\"refault_p999_us\":%.2f",
		s->refault.count, per_s(s->refault.count, s->wall_s), q_us(&s->refault, 0.5),
		q_us(&s->refault, 0.99), q_us(&s->refault, 0.999));
	fprintf(f, ",\"steady_faults_per_s\":%.1f,\"per_pass\":[", steady_faults_per_s(o, s));
	for (unsigned p = 0; p < o->passes; p++)
		fprintf(f, "%s{\"wall_s\":%.6f,\"faults\":%" PRIu64 ",\"first_touch_faults\":%" PRIu64 "}",
			p ? "," : "", s->pass[p].wall_s, s->pass[p].faults, s->pass[p].first);
	fprintf(f, "]");
	fprintf(f, ",\"evictions\":%" PRId64 ",\"evictions_source\":", r->evictions);
	json_str(f, r->evictions_source ? r->evictions_source : "");
	fprintf(f, ",\"handler_faults\":%" PRId64 ",\"verify_errors\":%" PRIu64
		   ",\"wall_s\":%.6f,\"final_check_s\":%.6f,\"timer\":\"%s\"",
		r->handler_faults, s->verify_errors, s->wall_s, s->final_check_s, TIMER_NAME);
	if (!r->raw)
		fprintf(f, ",\"store_puts\":%" PRId64 ",\"evict_clean\":%" PRId64
			   ",\"evict_zero\":%" PRId64 ",\"writes_per_eviction\":%.4f"
			   ",\"daemon_fetch_p50_us\":%.2f,\"daemon_fetch_p99_us\":%.2f",
			r->store_puts, r->evict_clean, r->evict_zero,
			r->store_puts >= 0 && r->evictions > 0
				? (double)r->store_puts / (double)r->evictions : -1.0,
			r->fetch_p50_us, r->fetch_p99_us);
	if (r->raw)
		fprintf(f, ",\"handler\":{\"cpu\":%d,\"faults\":%" PRIu64 ",\"wp_faults\":%" PRIu64
			   ",\"zeropages\":%" PRIu64 ",\"copies\":%" PRIu64 ",\"wakes\":%" PRIu64
			   ",\"eexist\":%" PRIu64 ",\"eagain\":%" PRIu64 ",\"other_events\":%" PRIu64
			   ",\"evictions\":%" PRIu64 "}",
			o->raw_cpu, r->raw_st.faults, r->raw_st.wp_faults, r->raw_st.zeropages, r->raw_st.copies,
			r->raw_st.wakes, r->raw_st.eexist, r->raw_st.eagain, r->raw_st.other_events,
			r->raw_st.evictions);
	if (*r->error) {
		fprintf(f, ",\"error\":");
		json_str(f, r->error);
	}
}

static int worst(int a, int b)
{
	/* A failure to run outranks verify errors, which outrank success. */
	return a > b ? a : b;
}

static int verdict(const struct run_report *r)
{
	if (*r->error)
		return EXIT_FAILURE_OTHER;
	return r->res.verify_errors ? EXIT_VERIFY : EXIT_OK;
}

int main(int argc, char **argv)
{
	static struct run_report main_rep, base_rep;
	static struct mc_probe probe;
	struct storm_opts o;
	struct ctl_totals tot;
	uint64_t raw_budget = DEFAULT_RAW_BUDGET;
	char err[160];
	bool run_base;
	int rc = EXIT_OK;

	parse_args(argc, argv, &o);
	run_base = o.baseline || o.baseline_only;
	if (run_base) {
		if (o.budget > 0) {
			raw_budget = (uint64_t)o.budget;
		} else if (ctl_stats_query(o.control_path, &tot, err, sizeof(err)) == 0 &&
			   tot.budget > 0) {
			raw_budget = (uint64_t)tot.budget;
			NOTE(&o, "raw budget %" PRIu64 " pages, from the daemon's stats", raw_budget);
		} else {
			NOTE(&o, "raw budget %" PRIu64 " pages (default: no daemon stats at %s)",
			     raw_budget, o.control_path);
		}
	}
	if (o.memcached) {
		probe_memcached(o.memcached, &probe);
		if (*probe.error)
			fprintf(stderr, "fault-storm: --memcached %s\n", probe.error);
	}
	if (!o.baseline_only) {
		rc = run_daemon(&o, &main_rep);
		if (rc != EXIT_OK)
			return rc;
	}
	if (run_base) {
		rc = worst(rc, run_raw(&o, raw_budget, &base_rep));
		if (!base_rep.ran && o.baseline_only)
			return rc;
	}

	if (!o.json || !o.quiet) {
		FILE *f = o.json ? stderr : stdout;

		if (!o.baseline_only)
			summary(f, &o, &main_rep);
		if (run_base)
			summary(f, &o, &base_rep);
		if (probe.ran)
			fprintf(f, "memcached direct get (%s, %" PRIu64 " gets): p50 %.1f  p99 %.1f us\n",
				o.memcached, probe.get.count, q_us(&probe.get, 0.5), q_us(&probe.get, 0.99));
	}
	if (o.json) {
		const struct run_report *top = o.baseline_only ? &base_rep : &main_rep;

		fputc('{', stdout);
		json_run(stdout, &o, top);
		if (o.baseline) {
			fprintf(stdout, ",\"baseline\":{");
			json_run(stdout, &o, &base_rep);
			fputc('}', stdout);
		}
		if (probe.ran)
			fprintf(stdout, ",\"store_get_p50_us\":%.2f,\"store_get_p99_us\":%.2f"
					",\"store_get_samples\":%" PRIu64,
				q_us(&probe.get, 0.5), q_us(&probe.get, 0.99), probe.get.count);
		else if (o.memcached) {
			fprintf(stdout, ",\"store_get_error\":");
			json_str(stdout, probe.error);
		}
		fputs("}\n", stdout);
	}
	if (!o.baseline_only)
		rc = worst(rc, verdict(&main_rep));
	if (run_base)
		rc = worst(rc, verdict(&base_rep));
	storm_result_free(&main_rep.res);
	storm_result_free(&base_rep.res);
	return rc;
}
