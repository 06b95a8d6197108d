/* The daemon's sockets against what a hostile or careless neighbour does
 * (issue 8, findings 5 and 12): files and symlinks at the socket path, two
 * daemons at once, empty packets, floods of refused or idle connections,
 * and running out of descriptors. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "base/log.h"
#include "ctl/http.h"
#include "proto/proto.h"
#include "harness.h"

#define PAGE 4096u

static struct td fmd;

static void stop(void)
{
	td_expect_stop(&fmd);
}

/* Start fluidmemd on the sockets under dir without waiting for it. */
static pid_t spawn(const char *dir, const char *log)
{
	char regset[200], ctlset[200], stateset[200];
	pid_t pid;

	snprintf(regset, sizeof(regset), "register.path=\"%s/reg.sock\"", dir);
	snprintf(ctlset, sizeof(ctlset), "control.path=\"%s/ctl.sock\"", dir);
	snprintf(stateset, sizeof(stateset), "daemon.state_dir=\"%s/state\"", dir);
	pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execl(FM_BUILD_DIR "/bin/fluidmemd", "fluidmemd", "--config",
		      FM_SOURCE_DIR "/configs/local.toml", "--set", regset, "--set", ctlset, "--set",
		      stateset, NULL);
		_exit(127);
	}
	return pid;
}

/* Wait up to ms for pid to exit; its status, or -1 if it still runs. */
static int wait_exit(pid_t pid, int ms)
{
	int status;

	for (int i = 0; i < ms / 10; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		td_sleep_ms(10);
	}
	return -1;
}

static bool file_has(const char *path, const char *needle)
{
	char buf[8192] = { 0 };
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 && strstr(buf, needle) != NULL;
}

static int count_lines_with(const char *path, const char *needle)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	int n = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

/* Finding 12: a regular file at the socket path is never deleted. */
Test(sockets, regular_file_at_path_survives, .timeout = 30)
{
	char dir[] = "/tmp/fmsock.XXXXXX", path[128], log[128];
	struct stat st;
	pid_t pid;
	int fd, rc;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/reg.sock", dir);
	snprintf(log, sizeof(log), "%s/log", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	cr_assert_eq(write(fd, "precious", 8), 8);
	close(fd);
	pid = spawn(dir, log);
	rc = wait_exit(pid, 10000);
	cr_expect_neq(rc, 0, "fluidmemd started over a regular file");
	cr_expect_eq(stat(path, &st), 0, "the file was deleted");
	cr_expect(S_ISREG(st.st_mode) && st.st_size == 8, "the file was replaced");
	cr_expect(file_has(log, "not a socket"), "no clear reason in the log");
	if (rc == -1) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	snprintf(log, sizeof(log), "rm -rf '%s'", dir);
	cr_expect_eq(system(log), 0);
}

/* Finding 12: a symlink at the path is neither followed nor chmod'ed
 * through; the daemon refuses to start. */
Test(sockets, symlink_at_path_is_not_followed, .timeout = 30)
{
	char dir[] = "/tmp/fmsock.XXXXXX", path[128], target[128], log[128];
	struct stat st;
	pid_t pid;
	int fd, rc;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/reg.sock", dir);
	snprintf(target, sizeof(target), "%s/target", dir);
	snprintf(log, sizeof(log), "%s/log", dir);
	fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	close(fd);
	cr_assert_eq(chmod(target, 0600), 0);
	cr_assert_eq(symlink(target, path), 0);
	pid = spawn(dir, log);
	rc = wait_exit(pid, 10000);
	cr_expect_neq(rc, 0, "fluidmemd started over a symlink");
	cr_expect_eq(lstat(path, &st), 0);
	cr_expect(S_ISLNK(st.st_mode), "the symlink was replaced");
	cr_expect_eq(stat(target, &st), 0);
	cr_expect_eq(st.st_mode & 07777, 0600, "the target's mode changed to %o", st.st_mode & 07777);
	if (rc == -1) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	snprintf(log, sizeof(log), "rm -rf '%s'", dir);
	cr_expect_eq(system(log), 0);
}

/* Finding 12: two daemons started at once: exactly one serves, the other
 * exits non-zero and says why. Repeated: the race is narrow. */
Test(sockets, two_daemons_at_once_one_wins, .timeout = 120)
{
	for (int round = 0; round < 3; round++) {
		char dir[] = "/tmp/fmsock.XXXXXX", loga[128], logb[128], cmd[160];
		pid_t a, b;
		int ra, rb;

		cr_assert_not_null(mkdtemp(dir));
		snprintf(loga, sizeof(loga), "%s/a.log", dir);
		snprintf(logb, sizeof(logb), "%s/b.log", dir);
		a = spawn(dir, loga);
		b = spawn(dir, logb);
		ra = wait_exit(a, 3000);
		rb = ra == -1 ? wait_exit(b, 3000) : wait_exit(b, 100);
		cr_expect((ra == -1) != (rb == -1), "round %d: a %d, b %d: want exactly one running",
			  round, ra, rb);
		pid_t loser = ra == -1 ? b : a, winner = ra == -1 ? a : b;
		const char *loser_log = ra == -1 ? logb : loga;
		(void)loser;
		cr_expect_neq(ra == -1 ? rb : ra, 0);
		cr_expect(file_has(loser_log, "another fluidmemd serves"), "round %d: loser's log", round);
		/* The winner answers on both sockets. */
		struct td t = { .pid = winner };
		snprintf(t.ctl, sizeof(t.ctl), "%s/ctl.sock", dir);
		snprintf(t.reg, sizeof(t.reg), "%s/reg.sock", dir);
		char *rep = td_ctl(&t, "v1 ping");
		cr_expect_not_null(rep, "round %d: the winner does not answer", round);
		free(rep);
		struct fm_client *c = fm_connect(t.reg);
		cr_expect_not_null(c);
		fm_disconnect(c);
		kill(a, SIGTERM);
		kill(b, SIGTERM);
		waitpid(a, NULL, 0);
		waitpid(b, NULL, 0);
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		cr_expect_eq(system(cmd), 0);
	}
}

/* Finding 12: on SEQPACKET an empty packet and end-of-file both read as
 * 0; an empty packet must not close the connection. */
Test(sockets, empty_packet_is_not_eof, .timeout = 30)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct fm_reg_reply rep;
	struct timeval tv = { 5, 0 };
	int fd;

	cr_assert_eq(td_start(&fmd, NULL), 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fmd.reg);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(send(fd, "", 0, MSG_NOSIGNAL), 0);
		ssize_t n = recv(fd, &rep, sizeof(rep), 0);
		cr_assert_eq(n, (ssize_t)sizeof(rep), "round %d: recv %zd (%s): connection closed", i,
			     n, n < 0 ? strerror(errno) : "eof");
		cr_expect_eq(rep.status, -EPROTO);
		cr_expect(strstr(rep.reason, "empty") != NULL, "reason: %s", rep.reason);
	}
	close(fd);
	stop();
}

static int connect_unix(const char *path, int type)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int count_fds(pid_t pid)
{
	char cmd[96], out[32] = { 0 };
	FILE *p;

	snprintf(cmd, sizeof(cmd), "ls /proc/%d/fd | wc -l", (int)pid);
	p = popen(cmd, "r");
	if (!p)
		return -1;
	if (!fgets(out, sizeof(out), p))
		out[0] = '\0';
	pclose(p);
	return atoi(out);
}

/* Findings 5 and 12: 290 refused connects are each answered and closed,
 * log a bounded number of lines, and hold no descriptor of the daemon. */
Test(sockets, refused_connects_are_closed_and_rate_limited, .timeout = 60)
{
	const char *sets[] = { "register.allowed_uids=[4242]", NULL };
	int fds[290], before;

	cr_assert_eq(td_start(&fmd, sets), 0);
	before = count_fds(fmd.pid);
	for (int i = 0; i < 290; i++) {
		fds[i] = connect_unix(fmd.reg, SOCK_SEQPACKET);
		cr_assert_geq(fds[i], 0, "connect %d: %s", i, strerror(errno));
	}
	td_sleep_ms(300);
	cr_expect_leq(count_fds(fmd.pid), before + 2, "refused peers hold descriptors: %d, was %d",
		      count_fds(fmd.pid), before);
	/* Each got the reason. */
	struct fm_reg_reply rep;
	cr_expect_eq(recv(fds[0], &rep, sizeof(rep), MSG_DONTWAIT), (ssize_t)sizeof(rep));
	cr_expect(strstr(rep.reason, "may not register") != NULL, "reason: %s", rep.reason);
	for (int i = 0; i < 290; i++)
		close(fds[i]);
	int lines = count_lines_with(fmd.log, "uid 0");
	cr_expect_leq(lines, 10, "%d log lines for 290 refused connects", lines);
	cr_expect_geq(lines, 1);
	cr_expect_geq(td_stat(&fmd, "conns_refused"), 290);
	stop();
}

/* Finding 5: user nobody opening many registration and control connections
 * cannot exhaust the daemon; an allowed uid is held to its own share. */
Test(sockets, nobody_cannot_exhaust_connections, .timeout = 60)
{
	const char *sets[] = { "register.allowed_uids=[0, 65534]", "register.mode=0o666",
			       "control.mode=0o666", "register.max_connections_per_uid=32", NULL };
	int pipefd[2], before;
	pid_t pid;
	char c;

	cr_assert_eq(td_start(&fmd, sets), 0);
	cr_assert_eq(chmod(fmd.dir, 0755), 0);
	before = count_fds(fmd.pid);
	cr_assert_eq(pipe(pipefd), 0);
	pid = fork();
	if (pid == 0) {
		struct rlimit rl = { 4096, 4096 };
		int n = 0;

		setrlimit(RLIMIT_NOFILE, &rl);
		close(pipefd[0]);
		if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
			_exit(2);
		for (int i = 0; i < 1000; i++)
			n += connect_unix(fmd.reg, SOCK_SEQPACKET) >= 0;
		for (int i = 0; i < 1000; i++)
			n += connect_unix(fmd.ctl, SOCK_STREAM) >= 0;
		if (write(pipefd[1], "x", 1) != 1)
			_exit(3);
		pause();
		_exit(0);
	}
	close(pipefd[1]);
	cr_assert_eq(read(pipefd[0], &c, 1), 1);
	close(pipefd[0]);
	td_sleep_ms(300);
	int held = count_fds(fmd.pid) - before;
	cr_expect_leq(held, 40, "nobody holds %d descriptors of the daemon", held);
	/* Root still registers and controls. */
	struct fm_client *cl;
	struct fm_region *r = td_region(&fmd, &cl, 16, "root");
	fm_region_destroy(r);
	fm_disconnect(cl);
	char *rep = td_ctl(&fmd, "v1 ping");
	cr_expect_not_null(rep);
	free(rep);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	stop();
}

static int tcp_connect(int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd >= 0 && connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* A free loopback port (a race with other programs, good enough here). */
static int free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	bind(fd, (struct sockaddr *)&sin, sizeof(sin));
	getsockname(fd, (struct sockaddr *)&sin, &len);
	close(fd);
	return ntohs(sin.sin_port);
}

static bool scrape(int port)
{
	char buf[4096] = { 0 };
	int fd = tcp_connect(port);
	struct timeval tv = { 5, 0 };
	ssize_t n;

	if (fd < 0)
		return false;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (write(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 35) != 35) {
		close(fd);
		return false;
	}
	n = recv(fd, buf, sizeof(buf) - 1, MSG_WAITALL);
	close(fd);
	return n > 0 && strncmp(buf, "HTTP/1.1 200", 12) == 0 && strstr(buf, "fluidmem_") != NULL;
}

/* Finding 5: 300 idle metrics connections are limited and cut off, while
 * a real scrape and the control socket still work. */
Test(sockets, idle_metrics_connections_are_limited, .timeout = 60)
{
	char listen[64];
	int port = free_port(), fds[300], before, idle_closed = 0;

	snprintf(listen, sizeof(listen), "control.metrics_listen=\"127.0.0.1:%d\"", port);
	const char *sets[] = { listen, "control.metrics_timeout_ms=500", NULL };
	cr_assert_eq(td_start(&fmd, sets), 0);
	before = count_fds(fmd.pid);
	for (int i = 0; i < 300; i++)
		fds[i] = tcp_connect(port);
	/* Half of them start a request they never finish. */
	for (int i = 0; i < 300; i += 2)
		if (fds[i] >= 0 && write(fds[i], "GET /metr", 9) != 9)
			cr_log_warn("write %d", i);
	td_sleep_ms(200);
	int held = count_fds(fmd.pid) - before;
	cr_expect_leq(held, 20, "300 idle metrics connections hold %d descriptors", held);
	cr_expect(scrape(port), "a real scrape failed");
	char *rep = td_ctl(&fmd, "v1 ping");
	cr_expect_not_null(rep);
	free(rep);
	td_sleep_ms(1000);
	for (int i = 0; i < 300; i++) {
		char b;
		if (fds[i] >= 0 && recv(fds[i], &b, 1, MSG_DONTWAIT) == 0)
			idle_closed++;
		if (fds[i] >= 0)
			close(fds[i]);
	}
	cr_expect_eq(idle_closed, 300, "only %d of 300 idle connections were closed", idle_closed);
	cr_expect_leq(count_fds(fmd.pid), before + 1);
	stop();
}

static long cpu_ticks(pid_t pid)
{
	char path[64], buf[1024];
	unsigned long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = '\0';
	fclose(f);
	char *p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (long)(ut + st);
}

/* Finding 5: at EMFILE the level-triggered listeners must not spin, and
 * the daemon recovers once descriptors are free again. */
Test(sockets, emfile_does_not_spin, .timeout = 60)
{
	struct rlimit rl;
	int fds[64], n = 0, before;

	cr_assert_eq(td_start(&fmd, NULL), 0);
	before = count_fds(fmd.pid);
	rl.rlim_cur = rl.rlim_max = (rlim_t)before + 8;
	cr_assert_eq(prlimit(fmd.pid, RLIMIT_NOFILE, &rl, NULL), 0);
	/* Fill its table with control connections, then queue more. */
	for (int i = 0; i < 40; i++) {
		fds[n] = connect_unix(fmd.ctl, SOCK_STREAM);
		if (fds[n] >= 0)
			n++;
	}
	td_sleep_ms(300);
	long t0 = cpu_ticks(fmd.pid);
	td_sleep_ms(1000);
	long used = cpu_ticks(fmd.pid) - t0;
	long hz = sysconf(_SC_CLK_TCK);
	cr_expect_leq(used, hz / 10, "the daemon used %ld ticks of %ld in 1 s at EMFILE", used, hz);
	for (int i = 0; i < n; i++)
		close(fds[i]);
	td_sleep_ms(300);
	char *rep = td_ctl(&fmd, "v1 ping");
	cr_expect_not_null(rep, "the daemon did not recover");
	free(rep);
	cr_expect_gt(td_stat(&fmd, "accept_paused"), 0, "the listeners never paused");
	rl.rlim_cur = rl.rlim_max = 4096;
	prlimit(fmd.pid, RLIMIT_NOFILE, &rl, NULL);
	stop();
}

/* Finding 12: the limiter behind fm_log_ratelimited: a burst per interval,
 * then drops, and the next allowed line learns how many were dropped. */
Test(sockets, log_rate_limiter)
{
	struct fm_ratelimit rl = { 0 };
	uint32_t dropped;
	int allowed = 0;

	for (int i = 0; i < 100; i++)
		allowed += fm_ratelimit_ok(&rl, 5, 50, &dropped);
	cr_expect_eq(allowed, 5);
	td_sleep_ms(60);
	cr_expect(fm_ratelimit_ok(&rl, 5, 50, &dropped));
	cr_expect_eq(dropped, 95);
	cr_expect(fm_ratelimit_ok(&rl, 5, 50, &dropped));
	cr_expect_eq(dropped, 0);
	cr_expect_eq(fm_log_get_level(), FM_LOG_INFO);
	fm_log_set_level(FM_LOG_ERROR);
	cr_expect_eq(fm_log_get_level(), FM_LOG_ERROR);
}

/* The metrics port's request parser, without a socket. */
Test(sockets, http_classify_verdicts)
{
#define V(s, max) http_classify(s, sizeof(s) - 1, max)
	cr_expect_eq(V("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 4096), HTTP_METRICS);
	cr_expect_eq(V("GET / HTTP/1.0\r\n\r\n", 4096), HTTP_METRICS);
	cr_expect_eq(V("GET /metrics?name[]=x HTTP/1.1\r\n\r\n", 4096), HTTP_METRICS);
	cr_expect_eq(V("GET /metricsX HTTP/1.1\r\n\r\n", 4096), HTTP_NOT_FOUND);
	cr_expect_eq(V("GET /favicon.ico HTTP/1.1\r\n\r\n", 4096), HTTP_NOT_FOUND);
	cr_expect_eq(V("GET /metr", 4096), HTTP_INCOMPLETE);
	cr_expect_eq(V("GET /metrics HTTP/1.1\r\nHost: x\r\n", 4096), HTTP_INCOMPLETE);
	cr_expect_eq(V("GET /metrics HTTP/1.1\r\nHost: x\r\n", 20), HTTP_TOO_LONG);
	cr_expect_eq(V("POST /metrics HTTP/1.1\r\n\r\n", 4096), HTTP_BAD_REQUEST);
	cr_expect_eq(V("HEAD", 4096), HTTP_BAD_REQUEST);
	cr_expect_eq(V("GET /metrics\r\n\r\n", 4096), HTTP_BAD_REQUEST);
	cr_expect_eq(V("G\n", 4096), HTTP_BAD_REQUEST);
	cr_expect_eq(http_classify("", 0, 4096), HTTP_INCOMPLETE);
#undef V
}
