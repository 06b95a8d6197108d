/* Test harness for ZooKeeper: start Debian's server (the `zookeeper`
 * package) as a child of the test, on free loopback ports with a private
 * data directory, and stop it afterwards. One server or a three-server
 * ensemble. Servers die with the test process (PR_SET_PDEATHSIG).
 *
 * The class path is zookeeper.jar (its manifest names the other jars in
 * /usr/share/java) and /etc/zookeeper/conf for log4j.properties. The JVM is
 * told to use one GC thread and the client compiler: start-up is CPU-bound
 * and the machine has 2 CPUs. Header-only, like memcached_harness.h.
 *
 * A server counts as up when `srvr` reports a mode (`ruok` answers "imok"
 * about 0.3 s before a starting server takes clients) and `conf` names our
 * private data dir: after a kill, another test's server may take the port,
 * and its answers must not pass for ours (tests/unit/test_zk_harness.c). */
#ifndef FM_TEST_ZK_HARNESS_H
#define FM_TEST_ZK_HARNESS_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loopback.h"

#define ZKH_TICK_MS 200   /* server tick: sessions may be 2..300 ticks */

struct zkh {
	pid_t pid;
	unsigned port, peer_port, elect_port;
	unsigned myid;            /* 0 = standalone */
	char dir[64];             /* private: zoo.cfg, data/, zk.log */
	char hosts[64];           /* "127.0.0.1:port" */
};

struct zke {                      /* a three-server ensemble */
	struct zkh s[3];
	char hosts[200];
};

/* Send a four-letter word; the reply (up to len-1 bytes) in buf. 0 or -1. */
static inline int zkh_4lw(unsigned port, const char *cmd, char *buf, size_t len)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	size_t got = 0;

	buf[0] = '\0';
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    write(fd, cmd, strlen(cmd)) != (ssize_t)strlen(cmd)) {
		close(fd);
		return -1;
	}
	for (;;) {
		struct pollfd p = { fd, POLLIN, 0 };
		ssize_t n;

		if (poll(&p, 1, 1000) <= 0 || got + 1 >= len)
			break;
		n = read(fd, buf + got, len - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	close(fd);
	return got ? 0 : -1;
}

/* Write zoo.cfg; `servers` is the ensemble's server.N lines or "". */
static inline int zkh_write_cfg(const struct zkh *z, const char *servers)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/data", z->dir);
	mkdir(path, 0700);
	if (z->myid) {
		snprintf(path, sizeof(path), "%s/data/myid", z->dir);
		f = fopen(path, "w");
		if (!f)
			return -1;
		fprintf(f, "%u\n", z->myid);
		fclose(f);
	}
	snprintf(path, sizeof(path), "%s/zoo.cfg", z->dir);
	f = fopen(path, "w");
	if (!f)
		return -1;
	fprintf(f,
		"tickTime=%d\ninitLimit=20\nsyncLimit=10\ndataDir=%s/data\n"
		"clientPort=%u\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n"
		"4lw.commands.whitelist=ruok,srvr,conf\nminSessionTimeout=%d\nmaxSessionTimeout=60000\n"
		"electionPortBindRetry=1000\n%s",
		ZKH_TICK_MS, z->dir, z->port, 2 * ZKH_TICK_MS, servers);
	fclose(f);
	return 0;
}

static inline int zkh_spawn(struct zkh *z)
{
	char cfg[128], log[128];

	snprintf(cfg, sizeof(cfg), "%s/zoo.cfg", z->dir);
	snprintf(log, sizeof(log), "%s/zk.log", z->dir);
	z->pid = fork();
	if (z->pid < 0)
		return -1;
	if (z->pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execlp("java", "java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xmx256m",
		       "-Dzookeeper.root.logger=WARN,CONSOLE",
		       "-cp", "/usr/share/java/zookeeper.jar:/etc/zookeeper/conf",
		       "org.apache.zookeeper.server.quorum.QuorumPeerMain", cfg, (char *)NULL);
		_exit(127);
	}
	return 0;
}

/* Serving clients: srvr reports a mode (standalone, or leader/follower
 * once an ensemble has a quorum). Whoever listens on the port. */
static inline bool zkh_serving(const struct zkh *z)
{
	char buf[512];

	return zkh_4lw(z->port, "srvr", buf, sizeof(buf)) == 0 && strstr(buf, "Mode: ") &&
	       !strstr(buf, "not currently serving");
}

/* 1: the server on z's port keeps its data in z's private dir (conf says
 * "dataDir=<dir>/data/version-2"); 0: another server; -1: no answer yet. */
static inline int zkh_owned(const struct zkh *z)
{
	char buf[2048], want[128];

	if (zkh_4lw(z->port, "conf", buf, sizeof(buf)) < 0 || !strstr(buf, "\ndataDir="))
		return -1;
	snprintf(want, sizeof(want), "\ndataDir=%s/data/", z->dir);
	return strstr(buf, want) != NULL;
}

/* Until our process serves on our port: 0, or -1 (it exited, another
 * server holds the port, or ms passed). Our process is killed on -1. */
static inline int zkh_wait(struct zkh *z, int ms)
{
	for (int t = 0; t < ms; t += 50) {
		if (waitpid(z->pid, NULL, WNOHANG) == z->pid) {
			z->pid = 0;
			return -1;
		}
		if (zkh_serving(z)) {
			int own = zkh_owned(z);

			if (own == 1)
				return 0;
			if (own == 0) {
				/* Ours cannot bind the port: it is someone else's. */
				fprintf(stderr, "zk_harness: port %u is served by another "
						"ZooKeeper, not ours (%s)\n", z->port, z->dir);
				break;
			}
		}
		lb_sleep_ms(50);
	}
	if (z->pid > 0) {
		kill(z->pid, SIGKILL);
		waitpid(z->pid, NULL, 0);
		z->pid = 0;
	}
	return -1;
}

/* A standalone server on a free port. 0 or -1. */
static inline int zkh_start(struct zkh *z)
{
	memset(z, 0, sizeof(*z));
	snprintf(z->dir, sizeof(z->dir), "/tmp/fmzk.XXXXXX");
	if (!mkdtemp(z->dir))
		return -1;
	for (int attempt = 0; attempt < 3; attempt++) {
		z->port = lb_free_port();
		snprintf(z->hosts, sizeof(z->hosts), "127.0.0.1:%u", z->port);
		if (zkh_write_cfg(z, "") == 0 && zkh_spawn(z) == 0 && zkh_wait(z, 30000) == 0)
			return 0;
	}
	return -1;
}

static inline void zkh_kill(struct zkh *z, int sig)
{
	if (z->pid <= 0)
		return;
	kill(z->pid, sig);
	waitpid(z->pid, NULL, 0);
	z->pid = 0;
}

/* Start again on the same port and data dir (sessions survive if the
 * restart is quicker than their timeout). Does not wait for serving. */
static inline int zkh_restart_nowait(struct zkh *z)
{
	zkh_kill(z, SIGKILL);
	return zkh_spawn(z);
}

/* Start again and wait until our server serves on the port: 0, or -1 (it
 * did not start, or another server took the port meanwhile). */
static inline int zkh_restart(struct zkh *z)
{
	if (zkh_restart_nowait(z) < 0)
		return -1;
	return zkh_wait(z, 30000);
}

static inline void zkh_stop(struct zkh *z)
{
	char cmd[160];

	zkh_kill(z, SIGKILL);
	if (z->dir[0] && getenv("FM_TEST_KEEP_LOGS") == NULL) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", z->dir);
		if (system(cmd) != 0) {
			/* a leftover temp dir is harmless */
		}
	}
	z->dir[0] = '\0';
}

/* Three servers on loopback; waits until all three serve. 0 or -1. */
static inline int zke_start(struct zke *e)
{
	char servers[512];
	size_t n = 0;

	memset(e, 0, sizeof(*e));
	for (unsigned i = 0; i < 3; i++) {
		struct zkh *z = &e->s[i];

		snprintf(z->dir, sizeof(z->dir), "/tmp/fmzk.XXXXXX");
		if (!mkdtemp(z->dir))
			return -1;
		z->myid = i + 1;
		z->port = lb_free_port();
		z->peer_port = lb_free_port();
		z->elect_port = lb_free_port();
		snprintf(z->hosts, sizeof(z->hosts), "127.0.0.1:%u", z->port);
		n += (size_t)snprintf(servers + n, sizeof(servers) - n,
				      "server.%u=127.0.0.1:%u:%u\n", z->myid, z->peer_port,
				      z->elect_port);
	}
	snprintf(e->hosts, sizeof(e->hosts), "%s,%s,%s", e->s[0].hosts, e->s[1].hosts,
		 e->s[2].hosts);
	for (int i = 0; i < 3; i++)
		if (zkh_write_cfg(&e->s[i], servers) < 0 || zkh_spawn(&e->s[i]) < 0)
			return -1;
	for (int i = 0; i < 3; i++)
		if (zkh_wait(&e->s[i], 60000) < 0)
			return -1;
	return 0;
}

/* Index of the member whose srvr says "Mode: leader", or -1. */
static inline int zke_leader(const struct zke *e)
{
	char buf[512];

	for (int i = 0; i < 3; i++)
		if (e->s[i].pid > 0 && zkh_4lw(e->s[i].port, "srvr", buf, sizeof(buf)) == 0 &&
		    strstr(buf, "Mode: leader"))
			return i;
	return -1;
}

static inline void zke_stop(struct zke *e)
{
	for (int i = 0; i < 3; i++)
		zkh_stop(&e->s[i]);
}

/* One ZooKeeper for a whole test file: started in Criterion's runner
 * process before the first test (ZKH_SHARED_HOOKS, two ReportHooks on their
 * own lines: Criterion names hooks by line) and stopped after the last; each
 * test (a child process) finds it through FM_TEST_ZK_HOSTS, read by
 * zk_hosts(). Use once per file, at file scope, after criterion. */
#define ZKH_SHARED_PER_FILE()                                                           \
	static struct zkh shared_zk;                                                     \
	static inline void zkh_shared_start(void)                                        \
	{                                                                                \
		if (zkh_start(&shared_zk) == 0)                                          \
			setenv("FM_TEST_ZK_HOSTS", shared_zk.hosts, 1);                  \
	}                                                                                \
	static inline const char *zk_hosts(void)                                         \
	{                                                                                \
		const char *h = getenv("FM_TEST_ZK_HOSTS");                              \
                                                                                         \
		cr_assert(h, "the shared ZooKeeper did not start (java, package zookeeper?)"); \
		return h;                                                                \
	}

#endif
