/* fluidmemctl: control and observe a running fluidmemd. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_CONTROL "/run/fluidmem/control.sock"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fluidmemctl [--socket PATH] [--json] COMMAND [ARGS]\n"
		"\n"
		"Commands:\n"
		"  stats          counters: totals and one row per shard\n"
		"  regions        list registered regions\n"
		"  resize PAGES   set the resident budget (a shrink evicts before replying)\n"
		"  evict N        evict N pages now\n"
		"  ping           check that the daemon answers\n"
		"  shutdown       stop the daemon cleanly (live regions are detached)\n"
		"  help           the daemon's own list of commands\n"
		"\n"
		"Options:\n"
		"  -s, --socket PATH  control socket (default $FLUIDMEM_CONTROL or " DEFAULT_CONTROL ")\n"
		"  -j, --json         print the daemon's JSON reply as is\n"
		"  -h, --help         this text\n"
		"\n"
		"Exit status: 0 ok, 1 the daemon refused the command, 2 usage, 3 no daemon.\n");
}

/* Find "key": in a JSON text and return a pointer to its value, or NULL.
 * Enough for the flat objects fluidmemd replies with. */
static const char *json_find(const char *json, const char *key)
{
	char pat[96];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(json, pat);
	return p ? p + strlen(pat) : NULL;
}

/* Print the flat members of the object starting at `obj` as aligned lines. */
static void print_object(const char *obj, const char *indent)
{
	const char *p = obj + 1;

	while (*p && *p != '}') {
		const char *k = strchr(p, '"'), *ke, *v, *ve;
		int depth = 0;
		bool in_str = false;

		if (!k)
			return;
		ke = strchr(k + 1, '"');
		if (!ke || ke[1] != ':')
			return;
		v = ke + 2;
		for (ve = v; *ve; ve++) {
			if (in_str) {
				if (*ve == '\\' && ve[1])
					ve++;
				else if (*ve == '"')
					in_str = false;
				continue;
			}
			if (*ve == '"')
				in_str = true;
			else if (*ve == '{' || *ve == '[')
				depth++;
			else if (*ve == '}' || *ve == ']') {
				if (depth == 0)
					break;
				depth--;
			} else if (*ve == ',' && depth == 0)
				break;
		}
		if (*v != '{' && *v != '[')
			printf("%s%-22.*s %.*s\n", indent, (int)(ke - k - 1), k + 1, (int)(ve - v), v);
		p = *ve == ',' ? ve + 1 : ve;
	}
}

static void print_stats(const char *reply)
{
	static const char *const cols[] = { "faults", "zero_fills", "fetches", "evictions",
					    "resident", "budget", "fault_p50_us", "fault_p99_us" };
	const char *totals = json_find(reply, "totals"), *shards = json_find(reply, "shards");

	if (totals) {
		printf("totals:\n");
		print_object(totals, "  ");
	}
	if (!shards)
		return;
	printf("\n%-6s", "shard");
	for (size_t i = 0; i < sizeof(cols) / sizeof(cols[0]); i++)
		printf(" %13s", cols[i]);
	printf("\n");
	for (const char *o = strchr(shards, '{'); o; o = strchr(o + 1, '{')) {
		const char *sh = json_find(o, "shard");
		printf("%-6ld", sh ? strtol(sh, NULL, 10) : -1L);
		for (size_t i = 0; i < sizeof(cols) / sizeof(cols[0]); i++) {
			const char *v = json_find(o, cols[i]);
			char num[32] = "-";

			if (v) {
				size_t n = strcspn(v, ",}");
				snprintf(num, sizeof(num), "%.*s", (int)(n < 31 ? n : 31), v);
			}
			printf(" %13s", num);
		}
		printf("\n");
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' }, { "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },         { NULL, 0, NULL, 0 },
	};
	const char *path = getenv("FLUIDMEM_CONTROL");
	bool json = false;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char req[4096], *reply = NULL;
	size_t len = 0, cap = 0;
	int opt, fd, n;

	while ((opt = getopt_long(argc, argv, "+s:jh", opts, NULL)) != -1) {
		switch (opt) {
		case 's':
			path = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	if (!path || !*path)
		path = DEFAULT_CONTROL;
	n = snprintf(req, sizeof(req), "v1");
	for (int i = optind; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0) {
			json = true;
			continue;
		}
		n += snprintf(req + n, sizeof(req) - (size_t)n, " %s", argv[i]);
		if ((size_t)n >= sizeof(req) - 2) {
			fprintf(stderr, "fluidmemctl: command too long\n");
			return 2;
		}
	}
	req[n++] = '\n';
	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "fluidmemctl: socket path too long\n");
		return 2;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "fluidmemctl: cannot reach fluidmemd at %s: %s (is it running? start it "
				"with `fluidmemd --config configs/local.toml`)\n",
			path, strerror(errno));
		return 3;
	}
	if (write(fd, req, (size_t)n) != n) {
		fprintf(stderr, "fluidmemctl: write: %s\n", strerror(errno));
		return 3;
	}
	for (;;) {
		if (len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 65536;
			reply = realloc(reply, cap);
			if (!reply)
				return 1;
		}
		ssize_t r = read(fd, reply + len, cap - len - 1);
		if (r <= 0)
			break;
		len += (size_t)r;
		reply[len] = '\0';
		if (memchr(reply, '\n', len))
			break;
	}
	close(fd);
	if (!reply || len == 0) {
		fprintf(stderr, "fluidmemctl: fluidmemd closed the connection without a reply\n");
		return 3;
	}
	reply[len] = '\0';
	bool ok = strstr(reply, "\"ok\":true") != NULL;
	if (json) {
		fputs(reply, stdout);
	} else if (!ok) {
		const char *e = json_find(reply, "error");
		fprintf(stderr, "fluidmemctl: %s", e ? e : reply);
	} else if (strcmp(argv[optind], "stats") == 0) {
		print_stats(reply);
	} else {
		const char *regions = json_find(reply, "regions");
		if (strcmp(argv[optind], "regions") == 0 && regions) {
			for (const char *o = strchr(regions, '{'); o; o = strchr(o + 1, '{')) {
				print_object(o, "");
				printf("\n");
			}
		} else {
			print_object(reply, "");
		}
	}
	free(reply);
	return ok ? 0 : 1;
}
