/* Hostile clients: malformed registrations, refused uids, clients killed
 * mid-run. The daemon must refuse with a reason and keep serving others. */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "client/fluidmem.h"
#include "proto/proto.h"
#include "harness.h"

#define PAGE 4096u

static struct td fmd;

static int raw_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fmd.reg);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* Send a raw packet with optional fds; return the reply (status, reason). */
static int send_raw(const void *buf, size_t len, const int *fds, int nfds, char *reason)
{
	struct fm_reg_reply rep;
	struct timeval tv = { 5, 0 };
	int fd = raw_connect();

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert_eq(td_reg_exchange(fd, buf, len, fds, nfds, &rep), 0, "no reply to a bad request");
	cr_assert_eq(rep.magic, FM_PROTO_MAGIC);
	snprintf(reason, 160, "%s", rep.reason);
	close(fd);
	return rep.status;
}

static struct fm_reg_req good_req(void *addr, size_t size)
{
	struct fm_reg_req q = { .magic = FM_PROTO_MAGIC, .version = FM_PROTO_VERSION,
				.type = FM_REG_REGISTER, .length = sizeof(q), .page_size = PAGE,
				.addr = (uint64_t)(uintptr_t)addr, .size = size };
	strcpy(q.name, "raw");
	return q;
}

/* A region the test registers itself: memfd + uffd, like libfluidmem. */
struct raw_region {
	int uffd, memfd;
	void *addr;
	size_t size;
};

static struct raw_region raw_region(size_t size)
{
	struct raw_region r = { .size = size };
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
					      UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP };

	r.memfd = memfd_create("raw", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	cr_assert_eq(ftruncate(r.memfd, (off_t)size), 0);
	r.addr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, r.memfd, 0);
	r.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	cr_assert_geq(r.uffd, 0);
	cr_assert_eq(ioctl(r.uffd, UFFDIO_API, &api), 0);
	return r;
}

static void raw_free(struct raw_region *r)
{
	close(r->uffd);
	munmap(r->addr, r->size);
	close(r->memfd);
}

static void expect_refused(const void *buf, size_t len, const int *fds, int nfds, int status,
			   const char *needle)
{
	char reason[160];
	int rc = send_raw(buf, len, fds, nfds, reason);

	cr_expect_eq(rc, status, "status %d, want %d (reason \"%s\")", rc, status, reason);
	cr_expect(strstr(reason, needle) != NULL, "reason \"%s\" does not mention \"%s\"", reason,
		  needle);
}

/* After every bad request, a well-behaved client is still served. */
static void expect_still_serving(void)
{
	struct fm_client *c = fm_connect(fmd.reg);
	struct fm_region *r;

	cr_assert_not_null(c);
	r = fm_region_create(c, 64 * PAGE, "ok");
	cr_assert_not_null(r, "a good client was refused: %s", fm_client_error(c));
	memset(fm_region_addr(r), 0x5a, 64 * PAGE);
	cr_expect_eq(((uint8_t *)fm_region_addr(r))[63 * PAGE], 0x5a);
	fm_region_destroy(r);
	fm_disconnect(c);
}

Test(registration, malformed_requests_are_refused_with_a_reason, .timeout = 60)
{
	struct raw_region rr;
	struct fm_reg_req q;
	char big[sizeof(q) + 64];
	int fds[2];

	cr_assert_eq(td_start(&fmd, NULL), 0);
	rr = raw_region(64 * PAGE);
	fds[0] = rr.uffd;
	fds[1] = rr.memfd;

	q = good_req(rr.addr, rr.size);
	expect_refused(&q, sizeof(q) - 8, fds, 2, -EPROTO, "length");          /* truncated */
	memset(big, 0, sizeof(big));
	memcpy(big, &q, sizeof(q));
	expect_refused(big, sizeof(big), fds, 2, -EPROTO, "length");           /* oversized */
	expect_refused("hello", 5, NULL, 0, -EPROTO, "length");                /* garbage */
	/* A good request with one field wrong: refused, and the reason says which. */
#define REFUSED_WITH(field, value, err, why)                                   \
	do {                                                                   \
		q = good_req(rr.addr, rr.size);                                \
		q.field = (value);                                             \
		expect_refused(&q, sizeof(q), fds, 2, (err), (why));           \
	} while (0)
	REFUSED_WITH(magic, 0xdeadbeef, -EPROTO, "magic");
	REFUSED_WITH(version, FM_PROTO_VERSION + 1, -EPROTONOSUPPORT, "version");
	REFUSED_WITH(page_size, 2u << 20, -EINVAL, "page size");
	REFUSED_WITH(size, 0, -EINVAL, "bad region");
	REFUSED_WITH(size, PAGE + 1, -EINVAL, "bad region");
	REFUSED_WITH(addr, UINT64_MAX - PAGE + 1, -EINVAL, "bad region");
#undef REFUSED_WITH
	q = good_req(rr.addr, rr.size);
	expect_refused(&q, sizeof(q), NULL, 0, -EPROTO, "descriptors");        /* no fds */
	expect_refused(&q, sizeof(q), fds, 1, -EPROTO, "descriptors");         /* one fd */
	int two_memfds[2] = { rr.memfd, rr.memfd };
	expect_refused(&q, sizeof(q), two_memfds, 2, -EBADF, "userfaultfd");   /* not a uffd */
	int swapped[2] = { rr.memfd, rr.uffd };
	expect_refused(&q, sizeof(q), swapped, 2, -EBADF, "userfaultfd");
	int uffd_twice[2] = { rr.uffd, rr.uffd };
	expect_refused(&q, sizeof(q), uffd_twice, 2, -EBADF, "memfd");
	q.size = 128 * PAGE;   /* larger than the memfd */
	expect_refused(&q, sizeof(q), fds, 2, -EBADF, "memfd");
	/* A memfd that could shrink under the daemon (no sealing allowed). */
	int loose = memfd_create("loose", MFD_CLOEXEC);
	cr_assert_eq(ftruncate(loose, 64 * PAGE), 0);
	int loose_fds[2] = { rr.uffd, loose };
	q = good_req(rr.addr, rr.size);
	expect_refused(&q, sizeof(q), loose_fds, 2, -EPERM, "shrink");
	/* Over register.max_region_mib (1 TiB by default): a sparse 2 TiB memfd. */
	int huge = memfd_create("huge", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	cr_assert_eq(ftruncate(huge, 2ll << 40), 0);
	int huge_fds[2] = { rr.uffd, huge };
	q = good_req(rr.addr, 2ull << 40);
	expect_refused(&q, sizeof(q), huge_fds, 2, -E2BIG, "max_region_mib");
	close(loose);
	close(huge);
	q = good_req(rr.addr, rr.size);
	memset(q.name, 'x', sizeof(q.name));                                     /* no NUL */
	expect_refused(&q, sizeof(q), fds, 2, -EINVAL, "name");
	q = good_req(rr.addr, rr.size);
	q.flags = 1;
	expect_refused(&q, sizeof(q), fds, 2, -EINVAL, "flags");
	q = good_req(rr.addr, rr.size);
	q.type = 77;
	expect_refused(&q, sizeof(q), fds, 2, -EPROTO, "type");
	q.type = FM_REG_UNREGISTER;
	q.region_id = 424242;
	expect_refused(&q, sizeof(q), NULL, 0, -ENOENT, "no such region");

	raw_free(&rr);
	expect_still_serving();
	cr_expect_eq(td_stat(&fmd, "regions"), 0, "a refused request left a region behind");
	cr_expect_geq(td_stat(&fmd, "refusals"), 20);
	td_expect_stop(&fmd);
}

Test(registration, uid_not_allowed_is_refused, .timeout = 60)
{
	const char *sets[] = { "register.allowed_uids=[4242]", NULL };
	struct fm_client *c;

	cr_assert_eq(td_start(&fmd, sets), 0);
	c = fm_connect(fmd.reg);
	cr_assert_not_null(c);
	cr_expect_null(fm_region_create(c, 16 * PAGE, "denied"));
	cr_expect_eq(errno, EPERM);
	cr_expect(strstr(fm_client_error(c), "uid 0") != NULL, "reason: %s", fm_client_error(c));
	fm_disconnect(c);
	td_expect_stop(&fmd);
}

/* Every recv in this process (libfluidmem's included) goes through here;
 * while recv_delay_ms is set it sleeps first, as a client descheduled
 * between its send and its recv would. */
static volatile int recv_delay_ms;

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
	static ssize_t (*real_recv)(int, void *, size_t, int);

	if (!real_recv)
		real_recv = (ssize_t(*)(int, void *, size_t, int))dlsym(RTLD_NEXT, "recv");
	if (recv_delay_ms)
		td_sleep_ms(recv_delay_ms);
	return real_recv(fd, buf, len, flags);
}

/* Regression: the daemon closes a refused connection after queueing the
 * reason and reading what the client had sent. A request landing after
 * that read is closed over, which resets the client's socket: its first
 * recv reports ECONNRESET even though the reason is queued, and the client
 * said "closed the connection" instead of the reason (1 run in 10 under
 * load). Here the failpoint holds the daemon 300 ms between its read and
 * its close, the request is sent 100 ms in, and the client reads 500 ms
 * after sending, past the close. */
Test(registration, refusal_read_after_reset, .timeout = 60)
{
	const char *sets[] = { "register.allowed_uids=[4242]", NULL };
	struct fm_client *c;
	void *r;

	setenv("FLUIDMEM_FAILPOINTS", "register.before_close=300", 1);
	cr_assert_eq(td_start(&fmd, sets), 0);
	unsetenv("FLUIDMEM_FAILPOINTS");
	c = fm_connect(fmd.reg);
	cr_assert_not_null(c);
	td_sleep_ms(100);
	recv_delay_ms = 500;
	r = fm_region_create(c, 16 * PAGE, "denied");
	recv_delay_ms = 0;
	cr_expect_null(r);
	cr_expect_eq(errno, EPERM, "errno %d: %s", errno, fm_client_error(c));
	cr_expect(strstr(fm_client_error(c), "uid 0") != NULL, "reason: %s", fm_client_error(c));
	fm_disconnect(c);
	td_expect_stop(&fmd);
}

/* A child registers, fills its region well past the budget, and is killed
 * with SIGKILL while writing. The daemon frees the region and every stored
 * page, and serves the next client. */
static void kill_child_mid_run(bool wait_until_full)
{
	int pipefd[2];
	pid_t pid;
	char b;

	cr_assert_eq(pipe(pipefd), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct fm_client *c = fm_connect(fmd.reg);
		struct fm_region *r = c ? fm_region_create(c, 4096 * PAGE, "victim") : NULL;
		uint8_t *p;

		if (!r)
			_exit(1);
		p = fm_region_addr(r);
		if (!wait_until_full) {
			if (write(pipefd[1], "s", 1) != 1)
				_exit(1);
		}
		for (unsigned pass = 0;; pass++) {
			for (size_t i = 0; i < 4096; i++)
				p[i * PAGE + pass % PAGE] = (uint8_t)(i + pass + 1);
			if (pass == 0 && wait_until_full && write(pipefd[1], "f", 1) != 1)
				_exit(1);
		}
	}
	close(pipefd[1]);
	cr_assert_eq(read(pipefd[0], &b, 1), 1, "child did not start");
	close(pipefd[0]);
	if (!wait_until_full)
		td_sleep_ms(50);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	cr_expect_eq(td_await_stat(&fmd, "regions", 0), 0, "the killed client's region was not freed");
	cr_expect_eq(td_stat(&fmd, "store_bytes"), 0, "the killed client's pages stay in the store");
	cr_expect_eq(td_stat(&fmd, "resident"), 0);
	cr_expect_eq(td_stat(&fmd, "tracked"), 0);
	cr_expect(td_alive(&fmd), "fluidmemd died with its client");
}

Test(registration, client_killed_mid_run_frees_everything, .timeout = 120)
{
	const char *sets[] = { "memory.resident_pages=256", NULL };

	cr_assert_eq(td_start(&fmd, sets), 0);
	kill_child_mid_run(true);
	kill_child_mid_run(false);
	for (int i = 0; i < 5; i++)
		kill_child_mid_run(i % 2);
	expect_still_serving();
	td_expect_stop(&fmd);
}

Test(registration, client_exits_without_destroy, .timeout = 60)
{
	const char *sets[] = { "memory.resident_pages=64", NULL };
	pid_t pid;
	int status;

	cr_assert_eq(td_start(&fmd, sets), 0);
	pid = fork();
	if (pid == 0) {
		struct fm_client *c = fm_connect(fmd.reg);
		struct fm_region *r = c ? fm_region_create(c, 1024 * PAGE, "leaky") : NULL;
		if (!r)
			_exit(1);
		memset(fm_region_addr(r), 1, 1024 * PAGE);
		_exit(0);   /* no destroy, no disconnect */
	}
	waitpid(pid, &status, 0);
	cr_assert_eq(WEXITSTATUS(status), 0);
	cr_expect_eq(td_await_stat(&fmd, "regions", 0), 0);
	cr_expect_eq(td_stat(&fmd, "store_bytes"), 0);
	td_expect_stop(&fmd);
}

Test(registration, no_daemon_fails_fast, .timeout = 10)
{
	errno = 0;
	cr_expect_null(fm_connect("/tmp/fluidmem-no-such-daemon.sock"));
	cr_expect_eq(errno, ENOENT);
}

/* fluidmemd killed with SIGKILL under a live client: pages it had evicted
 * are gone with it, and the client must never read them as zeros. Its
 * faulting thread waits instead (the client keeps its uffd open). */
Test(registration, daemon_killed_client_waits_never_reads_zeros, .timeout = 60)
{
	const char *sets[] = { "memory.resident_pages=64", NULL };
	int up[2], down[2];   /* child -> parent, parent -> child */
	pid_t child;
	char b;
	int status;

	cr_assert_eq(td_start(&fmd, sets), 0);
	cr_assert_eq(pipe(up), 0);
	cr_assert_eq(pipe(down), 0);
	child = fork();
	if (child == 0) {
		struct fm_client *c = fm_connect(fmd.reg);
		struct fm_region *r = c ? fm_region_create(c, 1024 * PAGE, "orphaned") : NULL;
		volatile uint8_t *p;

		if (!r)
			_exit(2);
		p = fm_region_addr(r);
		for (size_t i = 0; i < 1024; i++)
			p[i * PAGE] = 0xab;
		if (write(up[1], "w", 1) != 1)
			_exit(2);
		/* Wait for the parent to kill the daemon, then read every
		 * page. Most were evicted to the dead daemon's store, so the
		 * first of those must block; finishing the loop means zeros
		 * (3) or data that could not be there (4) were read. */
		if (read(down[0], &b, 1) != 1)
			_exit(2);
		size_t zeros = 0;
		for (size_t i = 0; i < 1024; i++)
			zeros += p[i * PAGE] == 0;
		_exit(zeros ? 3 : 4);
	}
	cr_assert_eq(read(up[0], &b, 1), 1);
	cr_assert_gt(td_stat(&fmd, "store_bytes"), 900 * PAGE);
	kill(fmd.pid, SIGKILL);
	waitpid(fmd.pid, NULL, 0);
	fmd.pid = 0;
	cr_assert_eq(write(down[1], "k", 1), 1);
	/* Wait for the event itself: the child's thread asleep in
	 * handle_userfault, where nobody will ever wake it. A child that read
	 * zeros or data instead exits (3 or 4) and never gets there. */
	for (;;) {
		int in = td_in_uffd_wait(child);

		if (in == 1 || in == -ENOENT || waitpid(child, &status, WNOHANG) == child)
			break;
		if (in == -ENOTSUP) {   /* wchan hidden: the old timed check */
			td_sleep_ms(1000);
			break;
		}
		td_sleep_ms(5);
	}
	/* Still blocked in the fault: not exited with zeros (3) or data (4). */
	cr_expect_eq(waitpid(child, &status, WNOHANG), 0,
		     "the client returned from a fault with no daemon (exit %d)",
		     WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fmd.dir);
	cr_expect_eq(system(cmd), 0);
}
