/* Helpers for the tests that run real fluidmemd nodes against a real
 * ZooKeeper (zk_harness.h) and memcached (memcached_harness.h):
 * test_cluster_daemon.c and test_cluster_zkdown.c. Header-only. */
#ifndef FM_TEST_CLUSTER_DAEMON_H
#define FM_TEST_CLUSTER_DAEMON_H

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "harness.h"
#include "memcached_harness.h"
#include "zk_harness.h"

static inline uint64_t cd_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The --set list of one node: memcached store, the cluster on under root,
 * node id `node` ("1", "auto"), plus `extra` (NULL-terminated) appended. */
struct cd_sets {
	char s[12][256];   /* an ensemble's hosts: up to 200 bytes */
	const char *v[24];
};

static inline const char *const *cd_node_sets(struct cd_sets *cs, const char *zk_hosts,
					      const char *root, const struct mcd *m,
					      const char *node, const char *const *extra)
{
	int n = 0, k = 0;

	snprintf(cs->s[n++], sizeof(cs->s[0]), "store.backend=\"memcached\"");
	snprintf(cs->s[n++], sizeof(cs->s[0]), "store.memcached.servers=\"%s\"", m->addr);
	snprintf(cs->s[n++], sizeof(cs->s[0]), "cluster.hosts=\"%s\"", zk_hosts);
	snprintf(cs->s[n++], sizeof(cs->s[0]), "cluster.root=\"%s\"", root);
	snprintf(cs->s[n++], sizeof(cs->s[0]), "daemon.node_id=\"%s\"", node);
	snprintf(cs->s[n++], sizeof(cs->s[0]), "memory.resident_pages=256");
	for (int i = 0; i < n; i++)
		cs->v[k++] = cs->s[i];
	for (int i = 0; extra && extra[i] && k < 23; i++)
		cs->v[k++] = extra[i];
	cs->v[k] = NULL;
	return cs->v;
}

/* The key of (region, page) as the daemon stores it (kv.h). */
static inline void cd_key(uint64_t region, uint64_t page, char out[64])
{
	snprintf(out, 64, "fm1:%016" PRIx64 ":%016" PRIx64, region, page);
}

/* How many of region's pages 0..pages-1 memcached holds, asked with
 * pipelined meta gets ("mg KEY" answers HD or EN). -1 on a socket error. */
static inline long cd_count_keys(const struct mcd *m, uint64_t region, uint64_t pages)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)m->port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	long found = 0;

	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	for (uint64_t p0 = 0; p0 < pages; p0 += 64) {
		char req[64 * 48], key[64], rep[64 * 8 + 1];
		size_t n = 0, want = 0, got = 0, lines = 0;

		for (uint64_t p = p0; p < pages && p < p0 + 64; p++, want++) {
			cd_key(region, p, key);
			n += (size_t)snprintf(req + n, sizeof(req) - n, "mg %s\r\n", key);
		}
		if (write(fd, req, n) != (ssize_t)n) {
			close(fd);
			return -1;
		}
		/* Every answer is "HD\r\n" or "EN\r\n": 4 bytes each. */
		while (got < want * 4) {
			struct pollfd pf = { fd, POLLIN, 0 };
			ssize_t r;

			if (poll(&pf, 1, 5000) <= 0 ||
			    (r = read(fd, rep + got, want * 4 - got)) <= 0) {
				close(fd);
				return -1;
			}
			got += (size_t)r;
		}
		for (lines = 0; lines < want; lines++)
			found += rep[lines * 4] == 'H';
	}
	close(fd);
	return found;
}

/* Run fluidmemd with configs/local.toml, private sockets and sets, expect
 * it to exit by itself within 60 s; its exit status (or -1), and its log
 * in log (at most len bytes). */
static inline int cd_run_to_exit(const char *const *sets, char *log, size_t len)
{
	char dir[64] = "/tmp/fmtest.XXXXXX", logp[128], cmd[128];
	int status = -1;
	pid_t pid;

	memset(log, 0, len);
	if (!mkdtemp(dir))
		return -1;
	snprintf(logp, sizeof(logp), "%s/fluidmemd.log", dir);
	{
		char reg[128], ctl[128];

		snprintf(reg, sizeof(reg), "%s/reg.sock", dir);
		snprintf(ctl, sizeof(ctl), "%s/ctl.sock", dir);
		pid = td_exec_daemon(reg, ctl, logp, sets);
	}
	for (int i = 0; i < 6000 && pid > 0; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			pid = 0;
			break;
		}
		td_sleep_ms(10);
	}
	if (pid > 0) {
		/* Still running after 60 s: it was not refused. */
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	FILE *f = fopen(logp, "re");
	if (f) {
		size_t n = fread(log, 1, len - 1, f);
		log[n] = '\0';
		fclose(f);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0) {
		/* a leftover temp dir is harmless */
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Whether `regions --cluster` on t lists region id (with owner node). */
static inline bool cd_cluster_lists(const struct td *t, uint64_t id, unsigned node)
{
	char *rep = td_ctl(t, "v1 regions --cluster"), pat[96];
	bool yes;

	if (!rep)
		return false;
	snprintf(pat, sizeof(pat), "{\"id\":%" PRIu64 ",\"node\":%u,", id, node);
	yes = strstr(rep, pat) != NULL;
	free(rep);
	return yes;
}

/* Write a stamp in every page of r (forces evictions past the budget). */
static inline void cd_stamp(struct fm_region *r, uint64_t pages, uint64_t salt)
{
	uint64_t *p = fm_region_addr(r);

	for (uint64_t i = 0; i < pages; i++)
		p[i * 512] = i * 1000003u + salt;
}

static inline uint64_t cd_check(struct fm_region *r, uint64_t pages, uint64_t salt)
{
	uint64_t *p = fm_region_addr(r), bad = 0;

	for (uint64_t i = 0; i < pages; i++)
		bad += p[i * 512] != i * 1000003u + salt;
	return bad;
}

/* The daemon's ZooKeeper session state as `stats` shows it ("?" if none). */
static inline const char *cd_cluster_state(const struct td *t, char *out, size_t len)
{
	char *rep = td_ctl(t, "v1 stats"), *p;

	snprintf(out, len, "?");
	if (rep && (p = strstr(rep, "\"cluster_state\":\"")))
		snprintf(out, len, "%.*s", (int)strcspn(p + 17, "\""), p + 17);
	free(rep);
	return out;
}

/* A verifying fault-storm against t in the background: 2 threads, 4096
 * pages (4x the tests' 1024-page budget), random, half writes. */
static inline FILE *cd_storm_start(const struct td *t, unsigned passes)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd),
		 FM_BUILD_DIR "/bin/fault-storm --socket %s --control %s --pages 4096 --threads 2 "
			      "--passes %u --pattern random --write-ratio 0.5 --verify --quiet --json",
		 t->reg, t->ctl, passes);
	return popen(cmd, "r");
}

/* Waits for a command started with popen, its output in out; its exit
 * status. */
static inline int cd_pclose_read(FILE *f, char *out, size_t len)
{
	size_t got = fread(out, 1, len - 1, f);

	out[got] = '\0';
	return pclose(f);
}

/* Waits for cd_storm_start's storm: it must exit 0 with no verify error. */
static inline void cd_storm_finish(FILE *storm, char *out, size_t len)
{
	int status = cd_pclose_read(storm, out, len);

	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fault-storm failed: %s", out);
	cr_expect(strstr(out, "\"verify_errors\":0"), "%s", out);
}

/* memcached's "STAT <name> N" of server m, or -1. */
static inline long cd_mc_stat(const struct mcd *m, const char *name)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)m->port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	char buf[16384], pat[64], *p;
	size_t got = 0;
	long v = -1;

	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    write(fd, "stats\r\n", 7) != 7) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	while (got + 1 < sizeof(buf)) {
		struct pollfd pf = { fd, POLLIN, 0 };
		ssize_t r;

		if (poll(&pf, 1, 5000) <= 0 || (r = read(fd, buf + got, sizeof(buf) - 1 - got)) <= 0)
			break;
		got += (size_t)r;
		buf[got] = '\0';
		if (strstr(buf, "END\r\n"))
			break;
	}
	buf[got] = '\0';
	close(fd);
	snprintf(pat, sizeof(pat), "STAT %s ", name);
	if ((p = strstr(buf, pat)))
		v = strtol(p + strlen(pat), NULL, 10);
	return v;
}

#endif
