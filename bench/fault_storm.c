/* fault-storm: drive fluidmemd with a page-fault storm and measure it, and
 * optionally run the same workload against an in-process raw userfaultfd
 * handler (the floor). See bench/README.md and --help. */
#include "client/fluidmem.h"

#include "fm_version.h"
#include "base/base.h"
#include "base/hist.h"
#include "ctl_stats.h"
#include "mc_probe.h"
#include "raw_uffd.h"
#include "storm.h"
#include "storm_report.h"

#include <sched.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
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

enum exit_code {
	EXIT_OK = 0,
	EXIT_VERIFY = 1,
	EXIT_USAGE = 2,
	EXIT_NO_DAEMON = 3,
	EXIT_FAILURE_OTHER = 4,
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
"  --pattern P            seq | random | zipf | stride (default: random)\n"
"  --stride S             pages between the accesses of --pattern stride, 1..65536\n"
"                         (default: 8); each thread scans its pages S apart\n"
"  --zipf-s S             Zipf exponent, >= 0, for --pattern zipf (default: %.2f)\n"
"  --passes K             passes over the region, >= 1 (default: %d)\n"
"  --write-ratio R        probability that an access is a write, 0..1 (default: %.1f)\n"
"  --seed N               seed for patterns and page stamps (default: %d)\n"
"  --content C            page stamps: random (base + i: lz4/lzo shrink it a lot)\n"
"                         | text (about 2.5x with lz4) | noise (hashed words:\n"
"                         incompressible) (default: random)\n"
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
"  --version              print \"fault-storm VERSION\" and exit\n"
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

/* Options with a value of their own set a field of struct storm_opts: the
 * table gives its offset and type, and the range for numbers. The others
 * need a word of checking each: a handler. */
enum opt_kind { OPT_STR, OPT_FLAG, OPT_U64, OPT_UNSIGNED, OPT_INT, OPT_I64, OPT_DOUBLE, OPT_FN };

struct opt_def {
	const char *name;
	enum opt_kind kind;
	size_t off;                  /* of the field in struct storm_opts */
	double min, max;             /* numbers: the accepted range */
	void (*fn)(struct storm_opts *o, const char *opt, const char *arg);   /* OPT_FN */
};

static void opt_pattern(struct storm_opts *o, const char *opt, const char *arg)
{
	int p = storm_pattern_parse(arg);

	if (p < 0)
		bad_arg("%s: expected seq, random, zipf or stride, got '%s'", opt, arg);
	o->pattern = (enum storm_pattern)p;
}

static void opt_content(struct storm_opts *o, const char *opt, const char *arg)
{
	if (strcmp(arg, "random") && strcmp(arg, "text") && strcmp(arg, "noise"))
		bad_arg("%s: expected random, text or noise, got '%s'", opt, arg);
	o->text = !strcmp(arg, "text");
	o->noise = !strcmp(arg, "noise");
}

static void opt_baseline(struct storm_opts *o, const char *opt, const char *arg)
{
	parse_baseline(opt, arg);
	o->baseline = true;
}

static void opt_baseline_only(struct storm_opts *o, const char *opt, const char *arg)
{
	parse_baseline(opt, arg);
	o->baseline_only = true;
}

static void opt_cpus(struct storm_opts *o, const char *opt, const char *arg)
{
	char *list = strdup(arg), *save = NULL;

	o->ncpus = 0;
	for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (o->ncpus == STORM_MAX_THREADS)
			bad_arg("%s: at most %d CPUs", opt, STORM_MAX_THREADS);
		o->cpus[o->ncpus++] = (int)parse_u64(opt, tok, 0, CPU_SETSIZE - 1);
	}
	free(list);
	if (o->ncpus == 0)
		bad_arg("%s wants a list like 0,1", opt);
}

static void opt_help(struct storm_opts *o, const char *opt, const char *arg)
{
	(void)o, (void)opt, (void)arg;
	usage(stdout);
	exit(EXIT_OK);
}

static void opt_version(struct storm_opts *o, const char *opt, const char *arg)
{
	(void)o, (void)opt, (void)arg;
	printf("fault-storm %s\n", FM_VERSION);
	exit(EXIT_OK);
}

#define FIELD(f) offsetof(struct storm_opts, f)

static const struct opt_def opt_defs[] = {
	{ "socket", OPT_STR, FIELD(socket_path), 0, 0, NULL },
	{ "control", OPT_STR, FIELD(control_path), 0, 0, NULL },
	{ "pages", OPT_U64, FIELD(pages), 1, (double)(MAX_PAGES - 1), NULL },
	{ "threads", OPT_UNSIGNED, FIELD(threads), 1, STORM_MAX_THREADS, NULL },
	{ "pattern", OPT_FN, 0, 0, 0, opt_pattern },
	{ "zipf-s", OPT_DOUBLE, FIELD(zipf_s), 0, 100, NULL },
	{ "stride", OPT_U64, FIELD(stride), 1, 65536, NULL },
	{ "passes", OPT_UNSIGNED, FIELD(passes), 1, STORM_MAX_PASSES, NULL },
	{ "write-ratio", OPT_DOUBLE, FIELD(write_ratio), 0, 1, NULL },
	{ "seed", OPT_U64, FIELD(seed), 0, -1, NULL },   /* max -1: UINT64_MAX */
	{ "verify", OPT_FLAG, FIELD(verify), 0, 0, NULL },
	{ "content", OPT_FN, 0, 0, 0, opt_content },
	{ "json", OPT_FLAG, FIELD(json), 0, 0, NULL },
	{ "fault-threshold-us", OPT_DOUBLE, FIELD(fault_threshold_us), 0, 1e9, NULL },
	{ "quiet", OPT_FLAG, FIELD(quiet), 0, 0, NULL },
	{ "baseline", OPT_FN, 0, 0, 0, opt_baseline },
	{ "baseline-only", OPT_FN, 0, 0, 0, opt_baseline_only },
	{ "budget", OPT_I64, FIELD(budget), 1, (double)(MAX_PAGES - 1), NULL },
	{ "cpus", OPT_FN, 0, 0, 0, opt_cpus },
	{ "raw-cpu", OPT_INT, FIELD(raw_cpu), 0, CPU_SETSIZE - 1, NULL },
	{ "memcached", OPT_STR, FIELD(memcached), 0, 0, NULL },
	{ "help", OPT_FLAG, 0, 0, 0, opt_help },
	{ "version", OPT_FLAG, 0, 0, 0, opt_version },
};
#define NOPTS (sizeof(opt_defs) / sizeof(opt_defs[0]))

/* Apply one option with its value (NULL for a flag) to *o. */
static void apply_opt(struct storm_opts *o, const struct opt_def *d, const char *arg)
{
	char opt[40];
	char *field = (char *)o + d->off;
	uint64_t max = d->max < 0 ? UINT64_MAX : (uint64_t)d->max;

	snprintf(opt, sizeof(opt), "--%s", d->name);
	switch (d->kind) {
	case OPT_STR:
		*(const char **)field = arg;
		break;
	case OPT_FLAG:
		if (d->fn)
			d->fn(o, opt, arg);
		else
			*(bool *)field = true;
		break;
	case OPT_U64:
		*(uint64_t *)field = parse_u64(opt, arg, (uint64_t)d->min, max);
		break;
	case OPT_UNSIGNED:
		*(unsigned *)field = (unsigned)parse_u64(opt, arg, (uint64_t)d->min, max);
		break;
	case OPT_INT:
		*(int *)field = (int)parse_u64(opt, arg, (uint64_t)d->min, max);
		break;
	case OPT_I64:
		*(int64_t *)field = (int64_t)parse_u64(opt, arg, (uint64_t)d->min, max);
		break;
	case OPT_DOUBLE:
		*(double *)field = parse_double(opt, arg, d->min, d->max);
		break;
	case OPT_FN:
		d->fn(o, opt, arg);
		break;
	}
}

static void parse_args(int argc, char **argv, struct storm_opts *o)
{
	struct option longopts[NOPTS + 1];
	const char *env = getenv("FLUIDMEM_SOCKET");
	int c;

	for (size_t i = 0; i < NOPTS; i++)
		longopts[i] = (struct option){ opt_defs[i].name,
					       opt_defs[i].kind == OPT_FLAG ? no_argument
									    : required_argument,
					       NULL, 256 + (int)i };
	longopts[NOPTS] = (struct option){ NULL, 0, NULL, 0 };
	*o = (struct storm_opts){
		.socket_path = env && *env ? env : FM_DEFAULT_REGISTER_SOCKET,
		.control_path = DEFAULT_CONTROL_SOCKET,
		.pages = DEFAULT_PAGES,
		.threads = DEFAULT_THREADS,
		.passes = DEFAULT_PASSES,
		.pattern = STORM_RANDOM,
		.zipf_s = DEFAULT_ZIPF_S,
		.stride = 8,
		.write_ratio = DEFAULT_WRITE_RATIO,
		.seed = DEFAULT_SEED,
		.fault_threshold_us = DEFAULT_THRESHOLD_US,
		.budget = -1,
		.raw_cpu = -1,
	};
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
		if (c >= 256 && c < 256 + (int)NOPTS)
			apply_opt(o, &opt_defs[c - 256], optarg);
		else if (c == ':')
			bad_arg("%s needs a value", argv[optind - 1]);
		else
			bad_arg("unknown option '%s'", argv[optind - 1]);
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
		mc_probe_run(o.memcached, &probe);
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
			report_summary(f, &o, &main_rep);
		if (run_base)
			report_summary(f, &o, &base_rep);
		if (probe.ran)
			report_probe_summary(f, o.memcached, &probe);
	}
	if (o.json) {
		const struct run_report *top = o.baseline_only ? &base_rep : &main_rep;

		fputc('{', stdout);
		report_json_run(stdout, &o, top);
		if (o.baseline) {
			fprintf(stdout, ",\"baseline\":{");
			report_json_run(stdout, &o, &base_rep);
			fputc('}', stdout);
		}
		if (o.memcached)
			report_probe_json(stdout, &probe);
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
