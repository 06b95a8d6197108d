/* fluidmemctl's progress for long commands: a shrinking `resize`, `evict`,
 * `detach` and `shutdown` reply only once done, which can take minutes for
 * gigabytes. While the reply is pending, a second connection polls `stats`
 * and `regions` and shows "evicted N/M pages" on stderr, then a summary. */
#include "ctl/fluidmemctl_progress.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum kind { NONE, SHRINK, EVICT, DETACH, SHUTDOWN };

struct progress {
	enum kind kind;
	const char *sock;
	const char *verb;   /* "evicted", "restored", "handed back" */
	uint64_t region;    /* DETACH */
	int64_t base;       /* the counter at the start */
	int64_t total;      /* M: pages the command has to move */
	int fd;             /* the polling connection, -1 when closed */
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One request on the polling connection; NULL when the daemon is gone. */
static json_t *ask(struct progress *p, const char *line)
{
	char buf[1 << 16];
	size_t len = 0;
	json_t *root;

	if (p->fd < 0) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };

		if (strlen(p->sock) >= sizeof(sa.sun_path))
			return NULL;
		strcpy(sa.sun_path, p->sock);
		p->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (p->fd < 0 || connect(p->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			goto gone;
	}
	if (write(p->fd, line, strlen(line)) != (ssize_t)strlen(line))
		goto gone;
	while (len == 0 || buf[len - 1] != '\n') {
		ssize_t r = read(p->fd, buf + len, sizeof(buf) - 1 - len);

		if (r <= 0 || len + (size_t)r >= sizeof(buf) - 1)
			goto gone;   /* a regions list this long is not worth a progress line */
		len += (size_t)r;
	}
	buf[len] = '\0';
	root = json_loads(buf, 0, NULL);
	if (json_is_true(json_object_get(root, "ok")))
		return root;
	json_decref(root);
	return NULL;
gone:
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	return NULL;
}

static int64_t total_of(struct progress *p, const char *key)
{
	json_t *root = ask(p, "v1 stats\n");
	int64_t v = -1;

	if (root)
		v = (int64_t)json_number_value(json_object_get(json_object_get(root, "totals"), key));
	json_decref(root);
	return v;
}

/* Stored pages of one region (or of all when id is 0); -1 when unknown,
 * 0 when the region is gone. */
static int64_t stored(struct progress *p, uint64_t id)
{
	json_t *root = ask(p, "v1 regions\n"), *r;
	int64_t sum = 0;
	size_t i;

	if (!root)
		return -1;
	json_array_foreach(json_object_get(root, "regions"), i, r) {
		if (!id || (uint64_t)json_integer_value(json_object_get(r, "id")) == id)
			sum += (int64_t)json_number_value(json_object_get(r, "in_store"));
	}
	json_decref(root);
	return sum;
}

/* Pages moved so far, or -1 when the daemon cannot tell (or is gone). */
static int64_t done(struct progress *p)
{
	int64_t v;

	switch (p->kind) {
	case SHRINK:
	case EVICT:
		v = total_of(p, "evictions");
		return v < 0 ? -1 : v - p->base;
	case DETACH:
	case SHUTDOWN:
		v = stored(p, p->region);
		return v < 0 ? -1 : p->base - v;
	default:
		return -1;
	}
}

static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 10);
	return *s && !*end && errno == 0;
}

/* What the command will move, from a first look at the daemon. */
static void plan(struct progress *p, int argc, char **argv)
{
	uint64_t n;
	bool drop = false, force = false;

	for (int i = 1; i < argc; i++) {
		drop |= strcmp(argv[i], "--drop") == 0;
		drop |= strcmp(argv[i], "--keep-clients") == 0;   /* nothing is handed back */
		force |= strcmp(argv[i], "--force") == 0;
	}
	if (strcmp(argv[0], "resize") == 0 && argc == 2 && parse_u64(argv[1], &n)) {
		int64_t resident = total_of(p, "resident");

		p->kind = SHRINK, p->verb = "evicted";
		p->base = total_of(p, "evictions");
		p->total = resident > (int64_t)n ? resident - (int64_t)n : 0;
	} else if (strcmp(argv[0], "evict") == 0 && argc == 2 && parse_u64(argv[1], &n)) {
		p->kind = EVICT, p->verb = "evicted";
		p->base = total_of(p, "evictions");
		p->total = (int64_t)n;
	} else if (strcmp(argv[0], "detach") == 0 && argc >= 2 && force &&
		   parse_u64(argv[1], &p->region) && p->region) {
		p->kind = DETACH, p->verb = "restored";
		p->base = p->total = stored(p, p->region);
	} else if (strcmp(argv[0], "shutdown") == 0 && !drop) {
		p->kind = SHUTDOWN, p->verb = "handed back";
		p->base = p->total = stored(p, 0);
	}
	if (p->base < 0 || p->total <= 0)
		p->kind = NONE;   /* nothing to show, or the daemon would not say */
}

static void show(const struct progress *p, const char *cmd, int64_t n, bool tty)
{
	if (n < 0)
		return;
	if (n > p->total)
		n = p->total;
	fprintf(stderr, "%s%s: %s %" PRId64 "/%" PRId64 " pages (%.0f%%)%s", tty ? "\r" : "", cmd,
		p->verb, n, p->total, 100.0 * (double)n / (double)p->total, tty ? "\033[K" : "\n");
}

char *fmctl_request_progress(int fd, const char *line, const char *sock_path, bool forced, int argc,
			     char **argv, char *(*request)(int fd, const char *line))
{
	struct progress p = { .sock = sock_path, .fd = -1 };
	bool tty = isatty(STDERR_FILENO);
	double t0, last = 0;
	int64_t n = -1;
	size_t len = 0, cap = 65536;
	char *reply;

	if ((!tty && !forced) || argc < 1)
		return request(fd, line);
	plan(&p, argc, argv);
	if (p.kind == NONE) {
		if (p.fd >= 0)
			close(p.fd);
		return request(fd, line);
	}
	t0 = now_s();
	reply = malloc(cap);
	if (!reply || write(fd, line, strlen(line)) != (ssize_t)strlen(line) ||
	    write(fd, "\n", 1) != 1) {
		fprintf(stderr, "fluidmemctl: write: %s\n", strerror(errno));
		exit(3);
	}
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t r;

		if (poll(&pfd, 1, 250) == 0) {
			/* Without a tty, one line a second is enough for a log. */
			if (tty || now_s() - last >= 1.0) {
				show(&p, argv[0], n = done(&p), tty);
				last = now_s();
			}
			continue;
		}
		if (len + 1 >= cap && !(reply = realloc(reply, cap *= 2)))
			exit(1);
		r = read(fd, reply + len, cap - len - 1);
		if (r <= 0)
			break;
		len += (size_t)r;
		if (reply[len - 1] == '\n')
			break;
	}
	reply[len] = '\0';
	if (len == 0) {
		if (tty)
			fputc('\n', stderr);
		fprintf(stderr, "fluidmemctl: fluidmemd closed the connection without a reply\n");
		exit(3);
	}
	/* The daemon is gone after a shutdown: everything was handed back then. */
	{
		int64_t fin = done(&p);

		n = fin >= 0 ? fin : p.kind == SHUTDOWN ? p.total : n;
	}
	if (n > p.total)
		n = p.total;
	fprintf(stderr, "%s%s: %s %" PRId64 " of %" PRId64 " pages in %.1f s%s\n", tty ? "\r" : "",
		argv[0], p.verb, n < 0 ? 0 : n, p.total, now_s() - t0, tty ? "\033[K" : "");
	if (p.fd >= 0)
		close(p.fd);
	return reply;
}

/* `servers drain` answers once the drain has started; this waits for its
 * end by polling `servers list` (this node's drain, and with the cluster
 * every live node's drained/N), showing the pages moved. Returns the reply
 * to print: the last list, or a failure. */
char *fmctl_drain_wait(const char *sock_path, bool forced, char *reply)
{
	struct progress p = { .sock = sock_path, .fd = -1 };
	bool tty = isatty(STDERR_FILENO), show_it = tty || forced;
	double t0 = now_s(), last = 0;
	json_t *root = json_loads(reply, 0, NULL);
	char *out = NULL;

	if (!json_is_true(json_object_get(root, "ok"))) {
		json_decref(root);
		return reply;
	}
	json_decref(root);
	for (;;) {
		json_t *l = ask(&p, "v1 servers list\n"), *dr, *nodes;
		const char *state;
		bool all_nodes;

		if (!l) {
			fprintf(stderr, "fluidmemctl: fluidmemd went away during the drain\n");
			exit(3);
		}
		dr = json_object_get(l, "drain");
		nodes = json_object_get(l, "nodes");
		state = json_string_value(json_object_get(dr, "state"));
		/* no "nodes": the cluster is off; null: ZooKeeper did not
		 * answer this time, so ask again */
		all_nodes = !nodes || (json_is_object(nodes) &&
				       json_integer_value(json_object_get(nodes, "drained")) >=
					       json_integer_value(json_object_get(nodes, "live")));
		if (show_it && (tty || now_s() - last >= 1.0)) {
			fprintf(stderr, "%sservers drain %s: %s, %" PRId64 " pages moved%s%s%s",
				tty ? "\r" : "", json_string_value(json_object_get(dr, "server")),
				state ? state : "?",
				(int64_t)json_integer_value(json_object_get(dr, "moved_pages")),
				json_is_object(nodes) ? ", nodes pending: " : "",
				json_is_object(nodes) ? json_string_value(json_object_get(nodes, "pending"))
						      : "",
				tty ? "\033[K" : "\n");
			last = now_s();
		}
		if (state && !strcmp(state, "failed")) {
			json_t *f = json_pack("{s:i,s:b,s:s,s:O}", "v", 1, "ok", 0, "error",
					      json_string_value(json_object_get(dr, "error")) ?
						      json_string_value(json_object_get(dr, "error")) : "drain failed",
					      "drain", dr);
			out = json_dumps(f, JSON_COMPACT);
			json_decref(f);
		} else if (state && !strcmp(state, "done") && all_nodes) {
			out = json_dumps(l, JSON_COMPACT);
		}
		json_decref(l);
		if (out)
			break;
		poll(NULL, 0, 200);
	}
	if (show_it)
		fprintf(stderr, "%sservers drain: ended in %.1f s%s\n", tty ? "\r" : "", now_s() - t0,
			tty ? "\033[K" : "");
	if (p.fd >= 0)
		close(p.fd);
	free(reply);
	return out;
}
