/* Test harness: start the real fluidmemd in a private directory, talk to its
 * control socket, and stop it. Header-only so every test program can use it.
 * FM_BUILD_DIR and FM_SOURCE_DIR come from tests/CMakeLists.txt. */
#ifndef FM_TEST_HARNESS_H
#define FM_TEST_HARNESS_H

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/fluidmem.h"
#include "proto/proto.h"

struct td {
	pid_t pid;
	char dir[64];
	char reg[108];
	char ctl[108];
	char log[128];
};

static inline void td_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Send one control request; returns the malloc'd reply line or NULL. */
static inline char *td_ctl(const struct td *t, const char *fmt, ...)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char req[4200];
	size_t cap = 1 << 16, len = 0;
	char *out = malloc(cap);
	va_list ap;
	int fd, n;

	va_start(ap, fmt);
	n = vsnprintf(req, sizeof(req) - 1, fmt, ap);
	va_end(ap);
	req[n++] = '\n';
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", t->ctl);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || write(fd, req, (size_t)n) != n) {
		if (fd >= 0)
			close(fd);
		free(out);
		return NULL;
	}
	for (;;) {
		ssize_t r;
		if (len + 1 >= cap)
			out = realloc(out, cap *= 2);
		r = read(fd, out + len, cap - len - 1);
		if (r <= 0)
			break;
		len += (size_t)r;
		out[len] = '\0';
		if (memchr(out, '\n', len))
			break;
	}
	close(fd);
	out[len] = '\0';
	return out;
}

/* A number from the stats totals (first occurrence of "key":), or -1. */
static inline int64_t td_stat(const struct td *t, const char *key)
{
	char *rep = td_ctl(t, "v1 stats"), pat[96], *p;
	int64_t v = -1;

	if (!rep)
		return -1;
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(rep, pat);
	if (p)
		v = strtoll(p + strlen(pat), NULL, 10);
	free(rep);
	return v;
}

/* Start fluidmemd with configs/local.toml, private socket paths and the
 * given NULL-terminated "key=value" overrides. 0 or -1. */
static inline int td_start(struct td *t, const char *const *sets)
{
	const char *argv[64];
	char regset[160], ctlset[160], stateset[160];
	int argc = 0;

	memset(t, 0, sizeof(*t));
	snprintf(t->dir, sizeof(t->dir), "/tmp/fmtest.XXXXXX");
	if (!mkdtemp(t->dir))
		return -1;
	snprintf(t->reg, sizeof(t->reg), "%s/reg.sock", t->dir);
	snprintf(t->ctl, sizeof(t->ctl), "%s/ctl.sock", t->dir);
	snprintf(t->log, sizeof(t->log), "%s/fluidmemd.log", t->dir);
	snprintf(regset, sizeof(regset), "register.path=\"%s\"", t->reg);
	snprintf(ctlset, sizeof(ctlset), "control.path=\"%s\"", t->ctl);
	/* a private state directory: never the host's /run/fluidmem/state */
	snprintf(stateset, sizeof(stateset), "daemon.state_dir=\"%s/state\"", t->dir);
	argv[argc++] = FM_BUILD_DIR "/bin/fluidmemd";
	argv[argc++] = "--config";
	argv[argc++] = FM_SOURCE_DIR "/configs/local.toml";
	argv[argc++] = "--set";
	argv[argc++] = regset;
	argv[argc++] = "--set";
	argv[argc++] = ctlset;
	argv[argc++] = "--set";
	argv[argc++] = stateset;
	for (int i = 0; sets && sets[i] && argc < 60; i++) {
		argv[argc++] = "--set";
		argv[argc++] = sets[i];
	}
	argv[argc] = NULL;
	t->pid = fork();
	if (t->pid < 0)
		return -1;
	if (t->pid == 0) {
		/* Die with the test: a test that times out or crashes must not
		 * leave a daemon behind. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		int fd = open(t->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		char *rep = td_ctl(t, "v1 ping");
		if (rep) {
			free(rep);
			return 0;
		}
		if (waitpid(t->pid, NULL, WNOHANG) == t->pid) {
			t->pid = 0;
			return -1;
		}
		td_sleep_ms(10);
	}
	return -1;
}

/* True when the daemon process is still running. */
static inline int td_alive(const struct td *t)
{
	return t->pid > 0 && kill(t->pid, 0) == 0 && waitpid(t->pid, NULL, WNOHANG) == 0;
}

/* Ask for a clean shutdown; returns the exit status (or -1 / 128+sig). */
static inline int td_stop(struct td *t)
{
	int status = 0;
	char cmd[200];
	char *rep;

	if (t->pid <= 0)
		return -1;
	rep = td_ctl(t, "v1 shutdown");
	free(rep);
	for (int i = 0; i < 1000; i++) {
		if (waitpid(t->pid, &status, WNOHANG) == t->pid)
			goto reaped;
		td_sleep_ms(10);
	}
	fprintf(stderr, "fluidmemd did not stop on request; SIGTERM\n");
	kill(t->pid, SIGTERM);
	for (int i = 0; i < 500; i++) {
		if (waitpid(t->pid, &status, WNOHANG) == t->pid)
			goto reaped;
		td_sleep_ms(10);
	}
	fprintf(stderr, "fluidmemd ignored SIGTERM; SIGKILL\n");
	kill(t->pid, SIGKILL);
	waitpid(t->pid, &status, 0);
reaped:
	t->pid = 0;
	if (getenv("FM_TEST_KEEP_LOGS") == NULL) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
		if (system(cmd) != 0) {
			/* a leftover temp dir is harmless */
		}
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Connect to the daemon and create a region of `pages` pages; the test
 * fails at once (naming the daemon's reason) if either is refused. */
static inline struct fm_region *td_region(const struct td *t, struct fm_client **c, size_t pages,
					  const char *name)
{
	struct fm_region *r;

	*c = fm_connect(t->reg);
	cr_assert_not_null(*c, "connect: %s", strerror(errno));
	r = fm_region_create(*c, pages * 4096u, name);
	cr_assert_not_null(r, "create: %s (%s)", strerror(errno), fm_client_error(*c));
	return r;
}

/* Print the daemon's log (for failing tests). */
static inline void td_dump_log(const struct td *t)
{
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "tail -n 40 '%s' >&2", t->log);
	if (system(cmd) != 0) {
		/* nothing more to show */
	}
}

/* Stop a daemon started by td_start, if it runs: a non-zero exit fails the
 * test and shows the tail of its log. */
static inline void td_expect_stop(struct td *t)
{
	int status;

	if (t->pid <= 0)
		return;
	status = td_stop(t);
	if (status != 0)
		td_dump_log(t);
	cr_expect_eq(status, 0, "fluidmemd exited with %d", status);
}

/* Send one packet with descriptors attached (SCM_RIGHTS): the raw
 * registration protocol, for tests that speak it without libfluidmem.
 * sendmsg's result. */
static inline ssize_t td_send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds)
{
	char cbuf[CMSG_SPACE(sizeof(int) * 8)];
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	memset(cbuf, 0, sizeof(cbuf));
	if (nfds > 0 && nfds <= 8) {
		struct cmsghdr *cm;

		mh.msg_control = cbuf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	return sendmsg(sock, &mh, MSG_NOSIGNAL);
}

/* One raw registration exchange on a connected socket: the request (with
 * descriptors) out, the fixed-size reply in. 0 with *rep filled, -errno
 * when sending failed, -EPIPE when no whole reply came. */
static inline int td_reg_exchange(int sock, const void *req, size_t len, const int *fds, int nfds,
				  struct fm_reg_reply *rep)
{
	memset(rep, 0, sizeof(*rep));
	if (td_send_fds(sock, req, len, fds, nfds) < 0)
		return -errno;
	if (recv(sock, rep, sizeof(*rep), 0) != (ssize_t)sizeof(*rep))
		return -EPIPE;
	return 0;
}

#endif
