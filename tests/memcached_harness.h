/* Test harness for the memcached backend: start a real memcached as a child
 * of the test, on a free loopback port or a unix socket in a private
 * directory, and stop it afterwards. The server is started with -M (refuse
 * writes when full, never evict) and dies with the test process
 * (PR_SET_PDEATHSIG), so no test depends on, or leaves behind, a server.
 * Header-only, like harness.h. */
#ifndef FM_TEST_MEMCACHED_HARNESS_H
#define FM_TEST_MEMCACHED_HARNESS_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loopback.h"

struct mcd {
	pid_t pid;
	unsigned port;          /* 0 for a unix socket */
	unsigned mib;
	char dir[64];           /* private directory (socket, log) */
	char sock[108];
	char addr[128];         /* what store.memcached.servers names it by */
};

static inline bool mcd_answers(const struct mcd *m)
{
	int fd, ok;

	if (m->port) {
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)m->port),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	} else {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", m->sock);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	}
	if (fd >= 0)
		close(fd);
	return ok;
}

static inline int mcd_spawn(struct mcd *m)
{
	char mib[16], port[16], log[128];
	const char *argv[20];
	int argc = 0;

	snprintf(mib, sizeof(mib), "%u", m->mib);
	snprintf(port, sizeof(port), "%u", m->port);
	snprintf(log, sizeof(log), "%s/memcached.log", m->dir);
	argv[argc++] = "memcached";
	argv[argc++] = "-M";            /* full: refuse writes, never evict */
	argv[argc++] = "-m";
	argv[argc++] = mib;
	argv[argc++] = "-U";
	argv[argc++] = "0";
	argv[argc++] = "-t";
	argv[argc++] = "2";
	if (m->port) {
		argv[argc++] = "-l";
		argv[argc++] = "127.0.0.1";
		argv[argc++] = "-p";
		argv[argc++] = port;
	} else {
		argv[argc++] = "-s";
		argv[argc++] = m->sock;
	}
	if (geteuid() == 0) {
		argv[argc++] = "-u";        /* memcached refuses root without it */
		argv[argc++] = "root";
	}
	argv[argc] = NULL;
	m->pid = fork();
	if (m->pid < 0)
		return -1;
	if (m->pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 300; i++) {
		if (mcd_answers(m))
			return 0;
		if (waitpid(m->pid, NULL, WNOHANG) == m->pid) {
			m->pid = 0;
			return -1;
		}
		lb_sleep_ms(10);
	}
	return -1;
}

/* Start memcached with `mib` MiB on a free TCP port (unix_socket false) or a
 * unix socket. 0 or -1. */
static inline int mcd_start(struct mcd *m, unsigned mib, bool unix_socket)
{
	memset(m, 0, sizeof(*m));
	m->mib = mib;
	snprintf(m->dir, sizeof(m->dir), "/tmp/fmmc.XXXXXX");
	if (!mkdtemp(m->dir))
		return -1;
	if (unix_socket) {
		size_t n = strlen(m->dir);

		memcpy(m->sock, m->dir, n);
		memcpy(m->sock + n, "/mc.sock", sizeof("/mc.sock"));
		memcpy(m->addr, m->sock, n + sizeof("/mc.sock"));
		return mcd_spawn(m);
	}
	/* The port may be taken between the probe and memcached's bind. */
	for (int attempt = 0; attempt < 5; attempt++) {
		m->port = lb_free_port();
		snprintf(m->addr, sizeof(m->addr), "127.0.0.1:%u", m->port);
		if (m->port && mcd_spawn(m) == 0)
			return 0;
	}
	return -1;
}

/* Kill with `sig` and reap. */
static inline void mcd_kill(struct mcd *m, int sig)
{
	if (m->pid <= 0)
		return;
	kill(m->pid, sig);
	waitpid(m->pid, NULL, 0);
	m->pid = 0;
}

/* Stop the server with SIGSTOP (a slow server: the kernel still accepts
 * its connections and requests, nothing answers) and wait until it has
 * stopped. kill() only queues the signal: memcached is multi-threaded, the
 * thread that takes the signal stops the others when it next runs, and
 * until then (long enough under CPU load) a worker may still answer a
 * request, or write half an answer (a get's value without its end marker)
 * and stop after that write. The parent's waitpid(WUNTRACED) returns once
 * the whole thread group has stopped. 0 or -1. */
static inline int mcd_pause(struct mcd *m)
{
	int st;

	if (m->pid <= 0 || kill(m->pid, SIGSTOP) < 0)
		return -1;
	while (waitpid(m->pid, &st, WUNTRACED) < 0)
		if (errno != EINTR)
			return -1;
	return WIFSTOPPED(st) ? 0 : -1;
}

/* Let a paused server run again. */
static inline void mcd_resume(struct mcd *m)
{
	if (m->pid > 0)
		kill(m->pid, SIGCONT);
}

/* Start again on the same address (empty, like a restarted server). */
static inline int mcd_restart(struct mcd *m)
{
	mcd_kill(m, SIGKILL);
	if (!m->port)
		unlink(m->sock);
	for (int attempt = 0; attempt < 50; attempt++) {
		if (mcd_spawn(m) == 0)
			return 0;
		lb_sleep_ms(20);   /* the port may linger briefly */
	}
	return -1;
}

static inline void mcd_stop(struct mcd *m)
{
	char cmd[160];

	mcd_kill(m, SIGTERM);
	if (m->dir[0] && getenv("FM_TEST_KEEP_LOGS") == NULL) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", m->dir);
		if (system(cmd) != 0) {
			/* a leftover temp dir is harmless */
		}
	}
	m->dir[0] = '\0';
}

#endif
