/* Test harness: start the real fluidmemd in a private directory, talk to its
 * control socket, and stop it. Header-only so every test program can use it.
 * FM_BUILD_DIR and FM_SOURCE_DIR come from tests/CMakeLists.txt. */
#ifndef FM_TEST_HARNESS_H
#define FM_TEST_HARNESS_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
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
#include "loopback.h"

struct td {
	pid_t pid;
	char dir[64];
	char reg[108];
	char ctl[108];
	char log[128];
};

static inline void td_sleep_ms(int ms)
{
	lb_sleep_ms(ms);
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

/* Fork and exec fluidmemd on configs/local.toml with these socket paths, a
 * private daemon.state_dir beside them, its output in `log` (appended to
 * when `append`, for a daemon restarted on the same directory), the
 * NULL-terminated "key=value" overrides and FLUIDMEM_FAILPOINTS (NULL:
 * none); do not wait for it. Its pid, or -1. */
static inline pid_t td_exec_daemon_ex(const char *reg, const char *ctl, const char *log,
				      const char *const *sets, const char *failpoints, bool append)
{
	const char *argv[64];
	char regset[160], ctlset[160], stateset[160];
	int argc = 0;
	pid_t pid;

	snprintf(regset, sizeof(regset), "register.path=\"%s\"", reg);
	snprintf(ctlset, sizeof(ctlset), "control.path=\"%s\"", ctl);
	/* a private state directory next to the sockets: never the host's
	 * /run/fluidmem/state */
	{
		const char *slash = strrchr(reg, '/');
		int dlen = slash ? (int)(slash - reg) : 1;

		snprintf(stateset, sizeof(stateset), "daemon.state_dir=\"%.*s/state\"", dlen,
			 slash ? reg : ".");
	}
	/* FM_TEST_FLUIDMEMD: another daemon binary (a baseline build for a
	 * bench that runs a test against it); the tests' own by default. */
	argv[argc++] = getenv("FM_TEST_FLUIDMEMD") && *getenv("FM_TEST_FLUIDMEMD")
			       ? getenv("FM_TEST_FLUIDMEMD")
			       : FM_BUILD_DIR "/bin/fluidmemd";
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
	pid = fork();
	if (pid == 0) {
		/* Die with the test: a test that times out or crashes must not
		 * leave a daemon behind. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		int fd = open(log, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC) | O_CLOEXEC, 0644);
		if (failpoints)
			setenv("FLUIDMEM_FAILPOINTS", failpoints, 1);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

/* td_exec_daemon_ex with no failpoints and a fresh log. */
static inline pid_t td_exec_daemon(const char *reg, const char *ctl, const char *log,
				   const char *const *sets)
{
	return td_exec_daemon_ex(reg, ctl, log, sets, NULL, false);
}

/* The last lines of a daemon's log on stderr: why it did not start. */
static inline void td_print_log_tail(const struct td *t)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "echo '--- %s (tail)' >&2; tail -20 '%s' >&2", t->log, t->log);
	if (system(cmd) != 0) {
		/* nothing more to show */
	}
}

/* Start fluidmemd with configs/local.toml, private socket paths and the
 * given NULL-terminated "key=value" overrides. 0 or -1. */
static inline int td_start(struct td *t, const char *const *sets)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->dir, sizeof(t->dir), "/tmp/fmtest.XXXXXX");
	if (!mkdtemp(t->dir))
		return -1;
	snprintf(t->reg, sizeof(t->reg), "%s/reg.sock", t->dir);
	snprintf(t->ctl, sizeof(t->ctl), "%s/ctl.sock", t->dir);
	snprintf(t->log, sizeof(t->log), "%s/fluidmemd.log", t->dir);
	t->pid = td_exec_daemon(t->reg, t->ctl, t->log, sets);
	if (t->pid < 0)
		return -1;
	/* Until it answers or exits: it normally answers within 100 ms, but a
	 * loaded 2-CPU machine running sanitizer builds and TCG guests has
	 * taken more than 5 s, so the bound is 30 s. */
	for (int i = 0; i < 3000; i++) {
		char *rep = td_ctl(t, "v1 ping");
		if (rep) {
			free(rep);
			return 0;
		}
		if (waitpid(t->pid, NULL, WNOHANG) == t->pid) {
			t->pid = 0;
			td_print_log_tail(t);
			return -1;
		}
		td_sleep_ms(10);
	}
	kill(t->pid, SIGKILL);
	waitpid(t->pid, NULL, 0);
	t->pid = 0;
	td_print_log_tail(t);
	return -1;
}

/* td_start, or fail the test at once. */
static inline void td_must_start(struct td *t, const char *const *sets)
{
	cr_assert_eq(td_start(t, sets), 0, "fluidmemd did not start");
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

/* Poll a stats total until it equals `want` (td_await_stat) or reaches at
 * least `want` (td_await_stat_min): the daemon's own counters are the events
 * a test waits for. Gives up after 60 s so that a failing test says which
 * value it saw (the test's .timeout is the real bound). The last value read. */
static inline int64_t td_await_stat_how(const struct td *t, const char *key, int64_t want, bool min)
{
	int64_t v = -1;

	for (int i = 0; i < 6000; i++) {
		v = td_stat(t, key);
		if (v == want || (min && v > want))
			break;
		td_sleep_ms(10);
	}
	return v;
}

static inline int64_t td_await_stat(const struct td *t, const char *key, int64_t want)
{
	return td_await_stat_how(t, key, want, false);
}

static inline int64_t td_await_stat_min(const struct td *t, const char *key, int64_t want)
{
	return td_await_stat_how(t, key, want, true);
}

/* Wait up to ms for a child to exit: its status (128 + signal when killed
 * by one), or -1 when it still runs. */
static inline int td_wait_exit(pid_t pid, int ms)
{
	int status;

	for (int i = 0; i < ms / 10; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		td_sleep_ms(10);
	}
	return -1;
}

/* Call fn(name, arg) for each entry of a directory but . and ..; stop at
 * the first non-zero answer and return it. 0 at the end, -ENOENT when the
 * directory cannot be opened. */
static inline int td_dir_each(const char *path, int (*fn)(const char *name, void *arg), void *arg)
{
	DIR *dir = opendir(path);
	struct dirent *e;
	int rc = 0;

	if (!dir)
		return -ENOENT;
	while (rc == 0 && (e = readdir(dir)))
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			rc = fn(e->d_name, arg);
	closedir(dir);
	return rc;
}

static inline int td_count_one(const char *name, void *arg)
{
	(void)name;
	++*(int *)arg;
	return 0;
}

/* Open descriptors of a process, or -1. */
static inline int td_count_fds(pid_t pid)
{
	char path[64];
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	return td_dir_each(path, td_count_one, &n) < 0 ? -1 : n;
}

/* One line of a /proc file into buf (NUL-terminated, newline dropped);
 * its length or -1. */
static inline ssize_t td_read_proc(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, cap - 1) : -1;

	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = '\0';
	if (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	return n;
}

/* One thread of td_in_uffd_wait: 1 when it sleeps in handle_userfault,
 * -ENOTSUP when it sleeps and its wchan reads "0" (hidden), else 0. */
static inline int td_thread_in_uffd(const char *tid, void *arg)
{
	char p[128], w[64], st[512];
	const char *paren;

	if (snprintf(p, sizeof(p), "%s/%.16s/wchan", (const char *)arg, tid) >= (int)sizeof(p) ||
	    td_read_proc(p, w, sizeof(w)) <= 0)
		return 0;
	if (strcmp(w, "handle_userfault") == 0)
		return 1;
	snprintf(p, sizeof(p), "%s/%.16s/stat", (const char *)arg, tid);
	paren = td_read_proc(p, st, sizeof(st)) > 0 ? strrchr(st, ')') : NULL;
	return strcmp(w, "0") == 0 && paren && paren[1] == ' ' && paren[2] == 'S' ? -ENOTSUP : 0;
}

/* Whether some thread of `pid` sleeps in a userfaultfd fault (its wchan is
 * handle_userfault): 1 yes, 0 not now, -ENOENT when the process is gone,
 * -ENOTSUP when this kernel hides wchan (a sleeping thread reads "0"). */
static inline int td_in_uffd_wait(pid_t pid)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	return td_dir_each(path, td_thread_in_uffd, path);
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

/* One raw registration exchange on a connected socket, for tests that
 * speak the protocol without libfluidmem (and send what it never would: no
 * descriptors, the wrong ones, garbage): the request (with descriptors,
 * fm_proto_send_fds) out, the fixed-size reply in. 0 with *rep filled,
 * -errno when sending failed, -EPIPE when no whole reply came. */
static inline int td_reg_exchange(int sock, const void *req, size_t len, const int *fds, int nfds,
				  struct fm_reg_reply *rep)
{
	memset(rep, 0, sizeof(*rep));
	if (fm_proto_send_fds(sock, req, len, fds, nfds) < 0)
		return -errno;
	if (recv(sock, rep, sizeof(*rep), 0) != (ssize_t)sizeof(*rep))
		return -EPIPE;
	return 0;
}

#endif
