/* fluidmemctl: control and observe a running fluidmemd over its control
 * socket. Each command sends one "v1 ..." line and renders the JSON reply
 * (parsed with jansson). */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fm_version.h"
#include "ctl/fluidmemctl_progress.h"

#define DEFAULT_CONTROL "/run/fluidmem/control.sock"
#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define EXIT_NO_DAEMON 3

struct command {
	const char *name;
	const char *args;
	const char *help;
};

static const struct command commands[] = {
	{ "stats", "[--reset]", "counters: totals and one row per shard; --reset clears them after reading" },
	{ "top", "[--interval SECONDS] [--count N]", "live view: fault rate, hit rate, p50/p99, resident per shard" },
	{ "latency", "[--reset]", "histograms: fault service, store get/put, eviction (p50/p90/p99/p99.9)" },
	{ "regions", "[--cluster]", "registered regions: id, pid, name, size, resident/stored/zero pages, faults; --cluster: every node's records in ZooKeeper" },
	{ "servers", "list | add HOST:PORT | drain HOST:PORT", "the memcached server list; add: for every node, in ZooKeeper, while running; drain: move every stored page off a server, then remove it (waits for the end, every node with the cluster; progress with -P)" },
	{ "resize", "PAGES | --region ID PAGES|unlimited", "set the resident budget; a shrink evicts before it replies" },
	{ "evict", "N", "evict N pages now" },
	{ "detach", "ID [--force]", "free a dead client's region; --force hands a live client its pages back" },
	{ "metrics", "", "everything in Prometheus text format" },
	{ "log-level", "error|warn|info|debug", "change the daemon's log level" },
	{ "config", "", "the running configuration as TOML, with its file and --set overrides" },
	{ "ping", "", "check that the daemon answers" },
	{ "shutdown", "[--drop|--keep-clients]",
	  "stop cleanly and wait until the daemon is gone; live clients get their pages back, "
	  "unless --drop, or --keep-clients (a restart or upgrade: they wait for the next daemon, "
	  "which re-adopts their regions)" },
};

static const char *sock_path;
static bool json;
static bool progress;   /* --progress: also when stderr is not a tty */

static void usage(FILE *f)
{
	fprintf(f, "usage: fluidmemctl [--socket PATH] [--json] COMMAND [ARGS]\n\nCommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %-36s %s\n", commands[i].name, commands[i].args, commands[i].help);
	fprintf(f, "\nOptions:\n"
		   "  -s, --socket PATH  control socket (default $FLUIDMEM_CONTROL or " DEFAULT_CONTROL ")\n"
		   "  -j, --json         print the daemon's JSON reply as is (any command)\n"
		   "  -P, --progress     show progress of resize (shrink), evict, detach --force and\n"
		   "                     shutdown on stderr even when it is not a tty\n"
		   "  -V, --version      print \"fluidmemctl VERSION\" and exit\n"
		   "  -h, --help         this text; `fluidmemctl COMMAND --help` for one command\n"
		   "\nOnly root and fluidmemd's own user may use the control socket.\n"
		   "Exit status: 0 ok, 1 the daemon refused the command, 2 usage, 3 no daemon.\n");
}

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

/* ---- talking to the daemon ---- */

static int ctl_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(sock_path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "fluidmemctl: socket path too long\n");
		exit(EXIT_USAGE);
	}
	strcpy(sa.sun_path, sock_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "fluidmemctl: cannot reach fluidmemd at %s: %s (is it running? start it "
				"with `fluidmemd --config configs/local.toml`)\n",
			sock_path, strerror(errno));
		exit(EXIT_NO_DAEMON);
	}
	return fd;
}

/* Send one request line; return the malloc'd reply line (NUL-terminated). */
static char *request(int fd, const char *line)
{
	size_t len = 0, cap = 65536, n = strlen(line);
	char *reply = malloc(cap);

	if (!reply || write(fd, line, n) != (ssize_t)n || write(fd, "\n", 1) != 1) {
		fprintf(stderr, "fluidmemctl: write: %s\n", strerror(errno));
		exit(EXIT_NO_DAEMON);
	}
	for (;;) {
		ssize_t r;

		if (len + 1 >= cap && !(reply = realloc(reply, cap *= 2)))
			exit(EXIT_REFUSED);
		r = read(fd, reply + len, cap - len - 1);
		if (r <= 0)
			break;
		len += (size_t)r;
		reply[len] = '\0';
		if (reply[len - 1] == '\n')
			break;
	}
	if (len == 0) {
		fprintf(stderr, "fluidmemctl: fluidmemd closed the connection without a reply\n");
		exit(EXIT_NO_DAEMON);
	}
	reply[len] = '\0';
	return reply;
}

/* ---- reading replies (jansson) ---- */

/* The reply line as a JSON object, or NULL when it is not one. */
static json_t *parse_reply(const char *reply)
{
	json_t *root = json_loads(reply, 0, NULL);

	if (!json_is_object(root)) {
		json_decref(root);
		return NULL;
	}
	return root;
}

static double num(json_t *obj, const char *key)
{
	return json_number_value(json_object_get(obj, key));
}

static const char *str(json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));
	return s ? s : "";
}

/* A scalar as the daemon wrote it: numbers and literals bare, strings quoted
 * and escaped. Reals keep up to 15 significant digits, enough for every
 * figure the daemon prints. Returns a malloc'd string. */
static char *scalar_text(json_t *v)
{
	char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(15));
	return t ? t : strdup("?");
}

/* Print every scalar member of an object, one per line, in reply order. */
static void print_flat(json_t *obj, const char *indent)
{
	const char *key;
	json_t *v;

	json_object_foreach(obj, key, v) {
		char *t;

		if (json_is_object(v) || json_is_array(v))
			continue;
		t = scalar_text(v);
		printf("%s%-24s %s\n", indent, key, t);
		free(t);
	}
}

/* ---- renderers ---- */

static void render_stats(json_t *rep)
{
	static const char *const cols[] = { "cpu", "faults", "zero_fills", "fetches", "dup_faults",
		"evictions", "writes_avoided", "poisoned", "ring_full", "ring_depth", "resident",
		"budget", "store_errors", "store_retries", "hit_rate", "fault_p50_us", "fault_p99_us" };
	json_t *tot = json_object_get(rep, "totals"), *shards = json_object_get(rep, "shards"), *o;
	size_t ncols = sizeof(cols) / sizeof(cols[0]), idx;

	if (json_is_object(tot)) {
		printf("totals\n");
		print_flat(tot, "  ");
	}
	if (!json_is_array(shards))
		return;
	printf("\n%-5s", "shard");
	for (size_t i = 0; i < ncols; i++)
		printf(" %*s", (int)(strlen(cols[i]) > 9 ? strlen(cols[i]) : 9), cols[i]);
	printf("\n");
	json_array_foreach(shards, idx, o) {
		if (!json_is_object(o))
			break;
		printf("%-5.0f", num(o, "shard"));
		for (size_t i = 0; i < ncols; i++) {
			int w = (int)(strlen(cols[i]) > 9 ? strlen(cols[i]) : 9);
			json_t *v = json_object_get(o, cols[i]);
			char *t = v ? scalar_text(v) : strdup("-");

			printf(" %*s", w, t);
			free(t);
		}
		printf("\n");
	}
}

static void render_latency(json_t *rep)
{
	static const char *const hists[] = { "fault_ns", "fetch_ns", "put_ns", "evict_ns" };
	static const char *const names[] = { "fault service", "store get", "store put (per page)",
					     "eviction (per page)" };
	json_t *tot = json_object_get(rep, "totals");

	printf("%-22s %10s %9s %9s %9s %9s %9s %9s   (µs)\n", "", "count", "mean", "p50", "p90", "p99",
	       "p99.9", "max");
	for (size_t i = 0; tot && i < 4; i++) {
		json_t *h = json_object_get(tot, hists[i]);

		if (!json_is_object(h))
			continue;
		printf("%-22s %10.0f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f\n", names[i], num(h, "count"),
		       num(h, "mean_us"), num(h, "p50_us"), num(h, "p90_us"), num(h, "p99_us"),
		       num(h, "p999_us"), num(h, "max_us"));
	}
}

static void render_regions(json_t *rep)
{
	json_t *arr = json_object_get(rep, "regions"), *o;
	size_t idx;

	printf("%-18s %7s %-16s %10s %9s %9s %9s %10s %8s %s\n", "id", "pid", "name", "size_mib",
	       "resident", "in_store", "zero", "faults", "budget", "state");
	json_array_foreach(arr, idx, o) {
		json_t *b = json_object_get(o, "budget");
		char budget[24] = "-";

		if (!json_is_object(o))
			break;
		if (json_is_number(b))
			snprintf(budget, sizeof(budget), "%.0f", json_number_value(b));
		printf("%-18.0f %7.0f %-16.16s %10.1f %9.0f %9.0f %9.0f %10.0f %8s %s%s\n",
		       num(o, "id"), num(o, "pid"), str(o, "name"), num(o, "bytes") / 1048576.0,
		       num(o, "resident"), num(o, "in_store"), num(o, "zero"), num(o, "faults"), budget,
		       str(o, "state"),
		       json_is_true(json_object_get(o, "client_alive")) ? "" : " (client gone)");
	}
}

/* regions --cluster: records, one per region of every node. Ids are
 * printed in hex (node << 48 | generation << 32 | counter), from the
 * integer: a double would round them. */
static void render_cluster_regions(json_t *rep)
{
	json_t *arr = json_object_get(rep, "regions"), *o;
	size_t idx;

	printf("%-18s %5s %7s %-16s %10s %-10s\n", "id", "node", "pid", "name", "size_mib", "store");
	json_array_foreach(arr, idx, o) {
		if (!json_is_object(o))
			break;
		printf("%016llx %5.0f %7.0f %-16.16s %10.1f %-10s\n",
		       (unsigned long long)json_integer_value(json_object_get(o, "id")),
		       num(o, "node"), num(o, "pid"), str(o, "name"), num(o, "bytes") / 1048576.0,
		       str(o, "ns"));
	}
}

/* ---- top ---- */

#define MAX_SHARDS 64
#define BUCKETS 4096

struct snap {
	unsigned n;
	double faults[MAX_SHARDS], hits[MAX_SHARDS], fetches[MAX_SHARDS], resident[MAX_SHARDS];
	double budget[MAX_SHARDS];
	/* fault_ns histogram per shard as (low_ns, count) pairs */
	double low[MAX_SHARDS][BUCKETS], cnt[MAX_SHARDS][BUCKETS];
	unsigned nb[MAX_SHARDS];
};

static void take_snap(int fd, struct snap *s)
{
	char *st_text = request(fd, "v1 stats"), *lat_text = request(fd, "v1 latency");
	json_t *st = parse_reply(st_text), *lat = parse_reply(lat_text), *o, *pair;
	size_t i, k;

	s->n = 0;
	json_array_foreach(json_object_get(st, "shards"), i, o) {
		if (s->n == MAX_SHARDS)
			break;
		s->faults[s->n] = num(o, "faults");
		s->hits[s->n] = num(o, "cache_hits");
		s->fetches[s->n] = num(o, "cache_misses");
		s->resident[s->n] = num(o, "resident");
		s->budget[s->n] = num(o, "budget");
		s->n++;
	}
	json_array_foreach(json_object_get(lat, "shards"), i, o) {
		json_t *b = json_object_get(json_object_get(o, "fault_ns"), "buckets");

		if (i == MAX_SHARDS)
			break;
		s->nb[i] = 0;
		json_array_foreach(b, k, pair) {
			if (s->nb[i] == BUCKETS || json_array_size(pair) != 2)
				break;
			s->low[i][s->nb[i]] = json_number_value(json_array_get(pair, 0));
			s->cnt[i][s->nb[i]++] = json_number_value(json_array_get(pair, 1));
		}
	}
	json_decref(st);
	json_decref(lat);
	free(st_text);
	free(lat_text);
}

/* Interval quantile from two cumulative histograms (bucket lows in ns). */
static double interval_q(const struct snap *a, const struct snap *b, unsigned sh, double q)
{
	double total = 0, seen = 0, d[BUCKETS];

	for (unsigned i = 0; i < b->nb[sh]; i++) {
		double prev = 0;
		for (unsigned k = 0; k < a->nb[sh]; k++)
			if (a->low[sh][k] == b->low[sh][i])
				prev = a->cnt[sh][k];
		d[i] = b->cnt[sh][i] - prev;
		total += d[i];
	}
	if (total <= 0)
		return 0;
	for (unsigned i = 0; i < b->nb[sh]; i++) {
		seen += d[i];
		if (seen >= q * total)
			return b->low[sh][i] / 1e3;
	}
	return b->low[sh][b->nb[sh] - 1] / 1e3;
}

static volatile sig_atomic_t stop_top;
static void on_sigint(int sig)
{
	(void)sig;
	stop_top = 1;
}

static int run_top(int argc, char **argv)
{
	double interval = 1.0;
	long count = -1;
	static struct snap a, b;
	bool tty = isatty(1);
	int fd;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc) {
			interval = strtod(argv[++i], NULL);
		} else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
			count = strtol(argv[++i], NULL, 10);
		} else {
			fprintf(stderr, "fluidmemctl top: unknown argument \"%s\"\n", argv[i]);
			return EXIT_USAGE;
		}
	}
	if (interval < 0.1 || interval > 3600) {
		fprintf(stderr, "fluidmemctl top: --interval must be 0.1..3600 seconds\n");
		return EXIT_USAGE;
	}
	signal(SIGINT, on_sigint);
	fd = ctl_connect();
	take_snap(fd, &a);
	for (long iter = 0; !stop_top && (count < 0 || iter < count); iter++) {
		struct timespec ts = { (time_t)interval, (long)((interval - (time_t)interval) * 1e9) };
		double tf = 0, th = 0, tm = 0, tr = 0, tb = 0;

		nanosleep(&ts, NULL);
		take_snap(fd, &b);
		if (tty)
			printf("\033[H\033[2J");
		printf("fluidmemd on %s, every %.1f s (Ctrl-C to quit)\n\n", sock_path, interval);
		printf("%-5s %12s %9s %10s %10s %10s %10s\n", "shard", "faults/s", "hit_rate", "p50_us",
		       "p99_us", "resident", "budget");
		for (unsigned i = 0; i < b.n; i++) {
			double f = b.faults[i] - (i < a.n ? a.faults[i] : 0);
			double h = b.hits[i] - (i < a.n ? a.hits[i] : 0);
			double m = b.fetches[i] - (i < a.n ? a.fetches[i] : 0);

			printf("%-5u %12.0f %8.1f%% %10.1f %10.1f %10.0f %10.0f\n", i, f / interval,
			       h + m > 0 ? 100.0 * h / (h + m) : 0.0, interval_q(&a, &b, i, 0.5),
			       interval_q(&a, &b, i, 0.99), b.resident[i], b.budget[i]);
			tf += f;
			th += h;
			tm += m;
			tr += b.resident[i];
			tb += b.budget[i];
		}
		printf("%-5s %12.0f %8.1f%% %10s %10s %10.0f %10.0f\n", "all", tf / interval,
		       th + tm > 0 ? 100.0 * th / (th + tm) : 0.0, "", "", tr, tb);
		fflush(stdout);
		a = b;
	}
	close(fd);
	return 0;
}

/* ---- main ---- */

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' }, { "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },         { "version", no_argument, NULL, 'V' },
		{ "progress", no_argument, NULL, 'P' },     { NULL, 0, NULL, 0 },
	};
	const struct command *cmd;
	char req[4096];
	char *reply;
	json_t *root;
	size_t n;
	int opt, fd, cargc = 0;
	char *cargv[64];
	bool ok;

	sock_path = getenv("FLUIDMEM_CONTROL");
	while ((opt = getopt_long(argc, argv, "+s:jhVP", opts, NULL)) != -1) {
		switch (opt) {
		case 's':
			sock_path = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'P':
			progress = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("fluidmemctl %s\n", FM_VERSION);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (!sock_path || !*sock_path)
		sock_path = DEFAULT_CONTROL;
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!(cmd = find_command(argv[optind]))) {
		fprintf(stderr, "fluidmemctl: unknown command \"%s\" (see fluidmemctl --help)\n",
			argv[optind]);
		return EXIT_USAGE;
	}
	/* Global flags may also follow the command. */
	for (int i = optind; i < argc && cargc < 63; i++) {
		if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0) {
			json = true;
		} else if (strcmp(argv[i], "--progress") == 0 || strcmp(argv[i], "-P") == 0) {
			progress = true;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			printf("usage: fluidmemctl [--socket PATH] [--json] %s %s\n  %s\n", cmd->name,
			       cmd->args, cmd->help);
			return 0;
		} else {
			cargv[cargc++] = argv[i];
		}
	}
	if (strcmp(cmd->name, "top") == 0)
		return run_top(cargc, cargv);

	n = (size_t)snprintf(req, sizeof(req), "v1");
	for (int i = 0; i < cargc; i++) {
		n += (size_t)snprintf(req + n, sizeof(req) - n, " %s", cargv[i]);
		if (n >= sizeof(req) - 1) {
			fprintf(stderr, "fluidmemctl: command too long\n");
			return EXIT_USAGE;
		}
	}
	fd = ctl_connect();
	reply = fmctl_request_progress(fd, req, sock_path, progress, cargc, cargv, request);
	/* shutdown returns once the daemon is gone (it closes this connection
	 * last): systemd's ExecStop must not return while it still stops. */
	if (strcmp(cmd->name, "shutdown") == 0 && strstr(reply, "\"ok\":true")) {
		char b[256];

		while (read(fd, b, sizeof(b)) > 0)
			;
	}
	close(fd);
	if (strcmp(cmd->name, "servers") == 0 && cargc == 3 && strcmp(cargv[1], "drain") == 0)
		reply = fmctl_drain_wait(sock_path, progress, reply);
	root = parse_reply(reply);
	ok = json_is_true(json_object_get(root, "ok"));
	if (json) {
		fputs(reply, stdout);
	} else if (!ok) {
		const char *e = str(root, "error");
		fprintf(stderr, "fluidmemctl: %s\n", *e ? e : reply);
	} else if (strcmp(cmd->name, "stats") == 0) {
		render_stats(root);
	} else if (strcmp(cmd->name, "latency") == 0) {
		render_latency(root);
	} else if (strcmp(cmd->name, "regions") == 0 && json_object_get(root, "node_id")) {
		render_cluster_regions(root);
	} else if (strcmp(cmd->name, "regions") == 0) {
		render_regions(root);
	} else if (strcmp(cmd->name, "metrics") == 0) {
		fputs(str(root, "text"), stdout);
	} else if (strcmp(cmd->name, "config") == 0) {
		json_t *sets = json_object_get(root, "sets"), *v;
		size_t i;

		printf("# the running configuration of fluidmemd\n# source: %s\n",
		       json_is_string(json_object_get(root, "source")) ? str(root, "source") : "(none)");
		json_array_foreach(sets, i, v)
			printf("# --set %s\n", json_string_value(v));
		fputs(str(root, "toml"), stdout);
	} else {
		print_flat(root, "");
	}
	json_decref(root);
	free(reply);
	return ok ? 0 : EXIT_REFUSED;
}
