/* The control plane against a live daemon: every command, resize under a
 * verifying fault storm, counter invariants, Prometheus text checked by a
 * small parser, concurrent and hostile control clients. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "base/base.h"
#include "client/fluidmem.h"
#include "harness.h"

#define PAGE 4096u

static struct td fmd;

static bool reply_ok(const char *rep)
{
	return rep && strstr(rep, "\"ok\":true");
}

/* A number after "key": in s (first occurrence), or -1. */
static double num(const char *s, const char *key)
{
	char pat[96];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = s ? strstr(s, pat) : NULL;
	return p ? strtod(p + strlen(pat), NULL) : -1;
}

/* Fill a region with stamped pages and check them: a small workload. */
static void stamp_all(uint8_t *p, size_t pages, uint32_t v)
{
	for (size_t i = 0; i < pages; i++) {
		uint64_t *w = (uint64_t *)(p + i * PAGE);
		w[0] = i;
		w[1] = v;
		w[511] = fm_mix64(i + v);
	}
}

static size_t check_all(const uint8_t *p, size_t pages, uint32_t v)
{
	size_t bad = 0;

	for (size_t i = 0; i < pages; i++) {
		const uint64_t *w = (const uint64_t *)(p + i * PAGE);
		bad += w[0] != i || w[1] != v || w[511] != fm_mix64(i + v);
	}
	return bad;
}

Test(control, every_command_answers, .timeout = 120)
{
	const char *sets[] = { "memory.resident_pages=256", NULL };
	struct fm_client *c;
	struct fm_region *r;
	char *rep;

	td_must_start(&fmd, sets);
	c = fm_connect(fmd.reg);
	r = fm_region_create(c, 2048 * PAGE, "ctl-test");
	cr_assert_not_null(r);
	stamp_all(fm_region_addr(r), 2048, 1);

	rep = td_ctl(&fmd, "v1 help");
	cr_expect(reply_ok(rep) && strstr(rep, "detach ID [--force]"), "%s", rep);
	free(rep);
	rep = td_ctl(&fmd, "v1 ping");
	cr_expect(reply_ok(rep));
	free(rep);

	rep = td_ctl(&fmd, "v1 stats");
	cr_assert(reply_ok(rep), "%s", rep);
	cr_expect_gt(num(rep, "faults"), 2000);
	cr_expect_gt(num(rep, "evictions"), 1000);
	cr_expect_geq(num(rep, "hit_rate"), 0);
	cr_expect(strstr(rep, "\"shards\":[{\"shard\":0,") != NULL);
	cr_expect(strstr(rep, "\"ring_full\":") != NULL);
	free(rep);

	/* regions: per-region counts add up to the region's pages. */
	rep = td_ctl(&fmd, "v1 regions");
	cr_assert(reply_ok(rep), "%s", rep);
	cr_expect(strstr(rep, "\"name\":\"ctl-test\"") != NULL);
	cr_expect_eq(num(rep, "pages"), 2048);
	cr_expect_eq(num(rep, "resident") + num(rep, "in_store") + num(rep, "zero"), 2048, "%s", rep);
	cr_expect_leq(num(rep, "resident"), 256);
	cr_expect(strstr(rep, "\"client_alive\":true") != NULL);
	free(rep);

	/* latency */
	rep = td_ctl(&fmd, "v1 latency");
	cr_assert(reply_ok(rep), "%s", rep);
	cr_expect_gt(num(rep, "count"), 2000);   /* fault_ns comes first */
	cr_expect(strstr(rep, "\"p90_us\":") && strstr(rep, "\"p999_us\":") &&
		  strstr(rep, "\"put_ns\":") && strstr(rep, "\"evict_ns\":") && strstr(rep, "\"fetch_ns\":"));
	free(rep);
	rep = td_ctl(&fmd, "v1 latency --reset");
	cr_expect(reply_ok(rep));
	free(rep);
	rep = td_ctl(&fmd, "v1 latency");
	cr_expect_eq(num(rep, "count"), 0, "latency --reset did not clear: %s", rep);
	free(rep);

	/* resize: a shrink evicts before it replies */
	rep = td_ctl(&fmd, "v1 resize 64");
	cr_expect(reply_ok(rep) && strstr(rep, "\"within_budget\":true"), "%s", rep);
	cr_expect_leq(num(rep, "resident"), 64);
	free(rep);
	cr_expect_leq(td_stat(&fmd, "resident"), 64);
	cr_expect_eq(check_all(fm_region_addr(r), 2048, 1), 0);
	rep = td_ctl(&fmd, "v1 resize 4096");
	cr_expect(reply_ok(rep));
	free(rep);

	/* per-region resize */
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "v1 resize --region %lu 10", (unsigned long)fm_region_id(r));
	rep = td_ctl(&fmd, "%s", cmd);
	cr_expect(reply_ok(rep) && strstr(rep, "\"within_budget\":true"), "%s", rep);
	free(rep);
	stamp_all(fm_region_addr(r), 2048, 2);
	rep = td_ctl(&fmd, "v1 regions");
	cr_expect_leq(num(rep, "resident"), 10 + 2 * 32, "region cap not honoured: %s", rep);
	cr_expect_eq(num(rep, "budget"), 10);
	free(rep);
	snprintf(cmd, sizeof(cmd), "v1 resize --region %lu unlimited", (unsigned long)fm_region_id(r));
	rep = td_ctl(&fmd, "%s", cmd);
	cr_expect(reply_ok(rep) && strstr(rep, "\"budget\":null"), "%s", rep);
	free(rep);
	rep = td_ctl(&fmd, "v1 resize --region 999999 10");
	cr_expect(!reply_ok(rep) && strstr(rep, "no region"), "%s", rep);
	free(rep);

	/* evict */
	rep = td_ctl(&fmd, "v1 evict 100");
	cr_expect(reply_ok(rep), "%s", rep);
	cr_expect_gt(num(rep, "evicted"), 0);
	free(rep);
	cr_expect_eq(check_all(fm_region_addr(r), 2048, 2), 0);

	/* stats --reset: the reply has the old values, then counters are 0 */
	rep = td_ctl(&fmd, "v1 stats --reset");
	cr_expect(reply_ok(rep) && strstr(rep, "\"reset\":true"));
	cr_expect_gt(num(rep, "faults"), 0);
	free(rep);
	cr_expect_eq(td_stat(&fmd, "faults"), 0);
	cr_expect_eq(td_stat(&fmd, "dispatch_events"), 0);
	cr_expect_gt(td_stat(&fmd, "budget"), 0, "gauges must survive a reset");

	/* log-level */
	rep = td_ctl(&fmd, "v1 log-level debug");
	cr_expect(reply_ok(rep));
	free(rep);
	rep = td_ctl(&fmd, "v1 log-level chatty");
	cr_expect(!reply_ok(rep) && strstr(rep, "want error"), "%s", rep);
	free(rep);
	rep = td_ctl(&fmd, "v1 log-level info");
	free(rep);

	/* metrics */
	rep = td_ctl(&fmd, "v1 metrics");
	cr_expect(reply_ok(rep) && strstr(rep, "fluidmem_faults_total{shard=\\\"0\\\"}"), "%.300s", rep);
	free(rep);

	/* detach: a live client is refused without --force */
	snprintf(cmd, sizeof(cmd), "v1 detach %lu", (unsigned long)fm_region_id(r));
	rep = td_ctl(&fmd, "%s", cmd);
	cr_expect(!reply_ok(rep) && strstr(rep, "live pid"), "%s", rep);
	free(rep);

	/* bad input */
	const char *bad[] = { "v1", "v2 stats", "stats", "v1 frobnicate", "v1 resize", "v1 resize -5",
			      "v1 resize 12abc", "v1 evict", "v1 evict many", "v1 stats --bogus",
			      "v1 detach", "v1 detach x", "v1 resize --region", "v1 shutdown now",
			      "v1 a b c d e f g h i j k" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		rep = td_ctl(&fmd, "%s", bad[i]);
		cr_expect(rep && strstr(rep, "\"ok\":false") && strstr(rep, "\"error\":"),
			  "\"%s\" got %s", bad[i], rep);
		free(rep);
	}
	fm_region_destroy(r);
	fm_disconnect(c);
	td_expect_stop(&fmd);
}

Test(control, forced_detach_hands_pages_back, .timeout = 60)
{
	const char *sets[] = { "memory.resident_pages=64", NULL };
	struct fm_client *c;
	struct fm_region *r;
	char *rep, cmd[64];
	uint8_t *p;

	td_must_start(&fmd, sets);
	c = fm_connect(fmd.reg);
	r = fm_region_create(c, 1024 * PAGE, "detach-me");
	cr_assert_not_null(r);
	p = fm_region_addr(r);
	stamp_all(p, 1024, 5);
	cr_assert_gt(td_stat(&fmd, "store_bytes"), 800 * PAGE);
	snprintf(cmd, sizeof(cmd), "v1 detach %lu --force", (unsigned long)fm_region_id(r));
	rep = td_ctl(&fmd, "%s", cmd);
	cr_expect(reply_ok(rep) && strstr(rep, "\"pages_restored\":true"), "%s", rep);
	free(rep);
	cr_expect_eq(td_stat(&fmd, "regions"), 0);
	cr_expect_eq(td_stat(&fmd, "store_bytes"), 0);
	cr_expect_geq(td_stat(&fmd, "restored"), 900);
	/* The client keeps every byte and runs on without the daemon. */
	cr_expect_eq(check_all(p, 1024, 5), 0, "pages lost by a forced detach");
	stamp_all(p, 1024, 6);
	cr_expect_eq(check_all(p, 1024, 6), 0);
	td_expect_stop(&fmd);
	/* The region is gone on the daemon side; free the client side. */
	fm_region_destroy(r);
	fm_disconnect(c);
}

Test(control, dead_client_region_detaches, .timeout = 60)
{
	const char *sets[] = { "memory.resident_pages=64", NULL };
	int pipefd[2], hold[2], gone[2];
	pid_t child;
	char buf[32] = { 0 }, *rep, cmd[64], c;

	td_must_start(&fmd, sets);
	/* hold: the grandchild lives until its read end sees EOF (the test
	 * closes its write end at the end, or dies). gone: the grandchild holds
	 * the write end, so EOF on it says the grandchild has exited. */
	cr_assert_eq(pipe(pipefd), 0);
	cr_assert_eq(pipe(hold), 0);
	cr_assert_eq(pipe(gone), 0);
	child = fork();
	if (child == 0) {
		/* Register, hand the connection to a grandchild that lingers, die:
		 * the region's pid is dead but its connection stays open. */
		struct fm_client *cl = fm_connect(fmd.reg);
		struct fm_region *r = cl ? fm_region_create(cl, 512 * PAGE, "orphan") : NULL;
		if (!r)
			_exit(1);
		stamp_all(fm_region_addr(r), 512, 1);
		if (fork() == 0) {
			close(hold[1]);
			close(gone[0]);
			close(pipefd[0]);
			close(pipefd[1]);
			while (read(hold[0], &c, 1) < 0 && errno == EINTR)
				;
			_exit(0);
		}
		dprintf(pipefd[1], "%lu\n", (unsigned long)fm_region_id(r));
		_exit(0);
	}
	close(hold[0]);
	close(gone[1]);
	close(pipefd[1]);
	cr_assert_gt(read(pipefd[0], buf, sizeof(buf) - 1), 0);
	close(pipefd[0]);
	waitpid(child, NULL, 0);
	cr_expect_eq(td_stat(&fmd, "regions"), 1, "the orphan's connection is still open");
	rep = td_ctl(&fmd, "v1 regions");
	cr_expect(strstr(rep, "\"client_alive\":false"), "%s", rep);
	free(rep);
	snprintf(cmd, sizeof(cmd), "v1 detach %lu", strtoul(buf, NULL, 10));
	rep = td_ctl(&fmd, "%s", cmd);
	cr_expect(reply_ok(rep) && strstr(rep, "\"pages_restored\":false"), "%s", rep);
	free(rep);
	cr_expect_eq(td_stat(&fmd, "regions"), 0);
	cr_expect_eq(td_stat(&fmd, "store_bytes"), 0);
	close(hold[1]);
	cr_expect_eq(read(gone[0], &c, 1), 0, "the grandchild outlived the test");
	close(gone[0]);
	td_expect_stop(&fmd);
}

/* Start fault-storm --verify --json against the daemon in the background. */
static FILE *storm_spawn(const char *args)
{
	char cmd[512];
	FILE *storm;

	snprintf(cmd, sizeof(cmd),
		 FM_BUILD_DIR "/bin/fault-storm --socket %s --control %s %s --verify --quiet --json",
		 fmd.reg, fmd.ctl, args);
	storm = popen(cmd, "r");
	cr_assert_not_null(storm);
	return storm;
}

/* Wait for it: it must exit 0 with no verify error. */
static void storm_expect_clean(FILE *storm)
{
	char out[8192] = { 0 };
	size_t n = fread(out, 1, sizeof(out) - 1, storm);
	int status = pclose(storm);

	out[n] = '\0';
	cr_expect_eq(WEXITSTATUS(status), 0, "fault-storm failed: %s", out);
	cr_expect(strstr(out, "\"verify_errors\":0"), "%s", out);
}

/* ---- resize under a verifying fault storm ---- */

Test(control, resize_under_verifying_storm, .timeout = 240)
{
	const char *sets[] = { "memory.resident_pages=4096", NULL };
	char *rep;
	FILE *storm;

	td_must_start(&fmd, sets);
	storm = storm_spawn("--pages 8192 --threads 3 --passes 8 --pattern random --write-ratio 0.5");
	/* The storm has registered and is faulting: otherwise the rounds
	 * below would pass without having tested anything. */
	cr_assert_geq(td_await_stat_min(&fmd, "faults", 1000), 1000, "the storm did not start");
	for (int round = 0; round < 3; round++) {
		int64_t f0, f1, hwm;

		rep = td_ctl(&fmd, "v1 resize 1");
		cr_expect(reply_ok(rep), "%s", rep);
		free(rep);
		/* The daemon's own high-water mark since the resize, not samples
		 * between which an overshoot could hide: honoured within one
		 * burst per shard while 500 more faults come in. */
		f0 = td_stat(&fmd, "faults");
		f1 = td_await_stat_min(&fmd, "faults", f0 + 500);
		cr_assert_geq(f1, f0 + 500, "round %d: the storm ended before it met the small budget",
			      round);
		hwm = td_stat(&fmd, "resident_max");
		cr_assert_geq(hwm, 1, "round %d: no high-water mark in the stats", round);
		cr_expect_leq(hwm, 2 + 2 * 32, "round %d: resident reached %lld with a budget of 1",
			      round, (long long)hwm);
		rep = td_ctl(&fmd, "v1 resize 4096");
		cr_expect(reply_ok(rep));
		free(rep);
	}
	storm_expect_clean(storm);
	td_expect_stop(&fmd);
}

/* ---- counters add up ---- */

Test(control, fault_outcomes_add_up, .timeout = 120)
{
	const char *sets[] = { "memory.resident_pages=128", NULL };
	char cmd[512], *rep;

	td_must_start(&fmd, sets);
	snprintf(cmd, sizeof(cmd),
		 FM_BUILD_DIR "/bin/fault-storm --socket %s --control %s --pages 2048 --threads 4 "
			      "--passes 3 --pattern zipf --verify --quiet > /dev/null",
		 fmd.reg, fmd.ctl);
	cr_assert_eq(system(cmd), 0);
	rep = td_ctl(&fmd, "v1 stats");
	/* The totals object comes first, then each shard: check all of them. */
	int objects = 0;
	for (const char *o = strstr(rep, "\"faults\":"); o; o = strstr(o + 1, "\"faults\":")) {
		double f = num(o - 1, "faults"), z = num(o - 1, "zero_fills"), fe = num(o - 1, "fetches"),
		       du = num(o - 1, "dup_faults"), wp = num(o - 1, "wp_faults"),
		       po = num(o - 1, "poison_faults"), er = num(o - 1, "fault_errors");
		cr_expect_eq(f, z + fe + du + wp + po + er,
			     "faults %.0f != zero %.0f + fetches %.0f + dup %.0f + wp %.0f + poison %.0f + "
			     "errors %.0f",
			     f, z, fe, du, wp, po, er);
		objects++;
	}
	cr_expect_eq(objects, 3, "totals + 2 shards");
	cr_expect_eq(num(rep, "faults"), num(rep, "dispatch_fault_events") - num(rep, "stale_faults"));
	free(rep);
	td_expect_stop(&fmd);
}

/* ---- Prometheus text: a small parser ---- */

struct prom {
	int families, samples, errors;
	char types[256][96];
	int ntypes;
};

static bool metric_name_ok(const char *s, size_t n)
{
	if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
			return false;
	return true;
}

/* The family a sample belongs to: strip _bucket/_sum/_count for histograms. */
static bool has_type(const struct prom *p, const char *name, size_t n)
{
	static const char *const sfx[] = { "_bucket", "_sum", "_count", "" };

	for (size_t k = 0; k < 4; k++) {
		size_t sl = strlen(sfx[k]);
		if (n < sl || strncmp(name + n - sl, sfx[k], sl) != 0)
			continue;
		for (int i = 0; i < p->ntypes; i++)
			if (strlen(p->types[i]) == n - sl && strncmp(p->types[i], name, n - sl) == 0)
				return true;
	}
	return false;
}

static void prom_parse(struct prom *p, const char *text)
{
	char line[1024];
	double last_bucket = -1;

	memset(p, 0, sizeof(*p));
	while (*text) {
		size_t len = strcspn(text, "\n");
		snprintf(line, sizeof(line), "%.*s", (int)len, text);
		text += len + (text[len] == '\n');
		if (line[0] == '\0')
			continue;
		if (strncmp(line, "# HELP ", 7) == 0)
			continue;
		if (strncmp(line, "# TYPE ", 7) == 0) {
			char name[96], type[32];
			if (sscanf(line + 7, "%95s %31s", name, type) != 2 ||
			    !metric_name_ok(name, strlen(name)) ||
			    (strcmp(type, "counter") && strcmp(type, "gauge") && strcmp(type, "histogram"))) {
				p->errors++;
				continue;
			}
			snprintf(p->types[p->ntypes++ % 256], 96, "%s", name);
			p->families++;
			last_bucket = -1;
			continue;
		}
		if (line[0] == '#') {
			p->errors++;
			continue;
		}
		/* name{label="v",...} value */
		const char *s = line;
		size_t n = strcspn(s, "{ ");
		if (!metric_name_ok(s, n) || !has_type(p, s, n)) {
			p->errors++;
			continue;
		}
		bool bucket = n > 7 && strncmp(s + n - 7, "_bucket", 7) == 0;
		s += n;
		if (*s == '{') {
			bool bad = false;

			s++;
			while (*s && *s != '}' && !bad) {
				size_t ln = strcspn(s, "=");
				if (!metric_name_ok(s, ln) || s[ln] != '=' || s[ln + 1] != '"') {
					bad = true;
					break;
				}
				s += ln + 2;
				while (*s && *s != '"')
					s += (*s == '\\' && s[1]) ? 2 : 1;
				if (*s != '"') {
					bad = true;
					break;
				}
				s++;
				if (*s == ',')
					s++;
				else if (*s != '}')
					bad = true;
			}
			if (bad || *s != '}') {
				p->errors++;
				continue;
			}
			s++;
		}
		if (*s != ' ') {
			p->errors++;
			continue;
		}
		char *end;
		double v = strtod(s + 1, &end);
		if (end == s + 1 || (*end && *end != ' ') || isnan(v)) {
			p->errors++;
			continue;
		}
		/* Buckets of one series are cumulative. */
		if (bucket) {
			if (strstr(line, "le=\"1.024e-06\""))
				last_bucket = -1;
			if (v < last_bucket)
				p->errors++;
			last_bucket = v;
		}
		p->samples++;
	}
}

Test(control, metrics_are_valid_prometheus_text, .timeout = 60)
{
	const char *sets[] = { "memory.resident_pages=64", NULL };
	struct fm_client *c;
	struct fm_region *r;
	struct prom p;
	char *rep, *text, *q;

	td_must_start(&fmd, sets);
	c = fm_connect(fmd.reg);
	r = fm_region_create(c, 512 * PAGE, "metrics");
	stamp_all(fm_region_addr(r), 512, 1);
	rep = td_ctl(&fmd, "v1 metrics");
	cr_assert(reply_ok(rep));
	/* unescape the JSON string */
	text = strstr(rep, "\"text\":\"") + 8;
	q = text;
	for (char *s = text; *s && *s != '"'; s++) {
		if (*s != '\\') {
			*q++ = *s;
		} else if (s[1] == 'u') {
			*q++ = (char)strtol((char[5]){ s[2], s[3], s[4], s[5], 0 }, NULL, 16);
			s += 5;
		} else {
			s++;
			*q++ = *s == 'n' ? '\n' : *s == 't' ? '\t' : *s;
		}
	}
	*q = '\0';
	prom_parse(&p, text);
	cr_expect_eq(p.errors, 0, "invalid Prometheus text");
	cr_expect_gt(p.families, 30);
	cr_expect_gt(p.samples, 200);
	cr_expect(strstr(text, "fluidmem_fault_seconds_bucket{shard=\"0\",le=\"+Inf\"}"));
	cr_expect(strstr(text, "# TYPE fluidmem_resident_pages gauge"));
	cr_expect(strstr(text, "fluidmem_region_faults_total{region_id=\""));
	cr_expect(strstr(text, "fluidmem_build_info{version=\""));
	cr_expect(strstr(text, "# TYPE fluidmem_evicted_pages_total counter"));
	/* and the parser itself rejects garbage */
	prom_parse(&p, "# TYPE x counter\nx{a=\"1\" 3\n9bad 1\ny 2\n# TYPE z histogram\n"
		       "z_bucket{le=\"1.024e-06\"} 5\nz_bucket{le=\"2\"} 4\n");
	cr_expect_eq(p.errors, 4, "the parser missed bad lines (%d)", p.errors);
	free(rep);
	fm_region_destroy(r);
	fm_disconnect(c);
	td_expect_stop(&fmd);
}

static char *http_get(int port, const char *path)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	size_t cap = 1 << 20, len = 0;
	char *buf = calloc(1, cap);
	ssize_t n;

	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	dprintf(fd, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path);
	while ((n = read(fd, buf + len, cap - len - 1)) > 0)
		len += (size_t)n;
	close(fd);
	return buf;
}

Test(control, metrics_over_http_on_loopback, .timeout = 60)
{
	char set[64], *resp;
	int port = (int)lb_free_port();
	struct prom p;

	snprintf(set, sizeof(set), "control.metrics_listen=\"127.0.0.1:%d\"", port);
	const char *sets[] = { set, NULL };
	td_must_start(&fmd, sets);
	resp = http_get(port, "/metrics");
	cr_expect(strncmp(resp, "HTTP/1.1 200 OK", 15) == 0, "%.80s", resp);
	prom_parse(&p, strstr(resp, "\r\n\r\n") + 4);
	cr_expect_eq(p.errors, 0);
	cr_expect_gt(p.samples, 100);
	free(resp);
	resp = http_get(port, "/secrets");
	cr_expect(strncmp(resp, "HTTP/1.1 404", 12) == 0, "%.80s", resp);
	free(resp);
	td_expect_stop(&fmd);
}

/* ---- many and hostile control clients while the dataplane works ---- */

struct ctl_hammer {
	int ok, bad;
};

static void *hammer(void *arg)
{
	static const char *const reqs[] = { "v1 stats", "v1 latency", "v1 regions", "v1 metrics",
					    "v1 ping", "v1 evict 8", "v1 help" };
	struct ctl_hammer *h = arg;

	for (int i = 0; i < 60; i++) {
		char *rep = td_ctl(&fmd, "%s", reqs[(i + h->ok) % 7]);
		if (reply_ok(rep))
			h->ok++;
		else
			h->bad++;
		free(rep);
	}
	return NULL;
}

Test(control, concurrent_and_slow_clients_never_stall_the_dataplane, .timeout = 240)
{
	const char *sets[] = { "memory.resident_pages=256", NULL };
	pthread_t th[6];
	struct ctl_hammer h[6] = { 0 };
	FILE *storm;
	int slow[4];

	td_must_start(&fmd, sets);
	storm = storm_spawn("--pages 4096 --threads 2 --passes 6 --pattern zipf");
	/* Slow readers: ask for a lot and never read. */
	for (int i = 0; i < 4; i++) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fmd.ctl);
		slow[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
		cr_assert_eq(connect(slow[i], (struct sockaddr *)&sa, sizeof(sa)), 0);
		for (int k = 0; k < 200; k++)
			if (write(slow[i], "v1 metrics\n", 11) < 0)
				break;
	}
	for (int i = 0; i < 6; i++)
		pthread_create(&th[i], NULL, hammer, &h[i]);
	for (int i = 0; i < 6; i++) {
		pthread_join(th[i], NULL);
		cr_expect_eq(h[i].bad, 0, "client %d: %d failed requests", i, h[i].bad);
	}
	storm_expect_clean(storm);
	for (int i = 0; i < 4; i++)
		close(slow[i]);
	char *rep = td_ctl(&fmd, "v1 ping");
	cr_expect(reply_ok(rep), "daemon unresponsive after slow clients");
	free(rep);
	td_expect_stop(&fmd);
}
