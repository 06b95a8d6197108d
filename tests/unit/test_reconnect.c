/* libfluidmem across a daemon restart (issue 10, client side), against a
 * fake daemon: a SEQPACKET server in this test that registers regions with a
 * credential and serves faults with UFFDIO_COPY from the uffd it received.
 * "Crashing" it closes everything it held while a client thread is blocked
 * on a fault; a second instance on the same path must get a READOPT with
 * the right credential and the same uffd, and serve that very fault. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/base.h"
#include "client/fluidmem.h"
#include "proto/proto.h"
#include "harness.h"

#define PAGE 4096u
#define MAXID 8
#define MAXCONN 4

struct fake {
	char path[108];
	int lfd, stop[2];
	pthread_t th;
	/* behaviour, set before fake_start */
	uint8_t gen;            /* content generation: whose copy a page is */
	int eagain[MAXID];      /* READOPT of region id: answer -EAGAIN this often first */
	int enoent_id;          /* READOPT of this id: -ENOENT */
	bool silent_readopt;    /* take READOPT and never answer */
	int slow_readopt_ms;    /* answer the first READOPT this late */
	/* state */
	int conn[MAXCONN];
	int uffd[MAXID], memfd[MAXID];
	uint64_t next_id;
	/* observed, read by the test with atomics */
	int registers, unregisters, bad_cred, faults;
	int readopts[MAXID];
};

static void cred_of(uint64_t id, uint8_t *cred)
{
	for (int i = 0; i < FM_CREDENTIAL_LEN; i++)
		cred[i] = (uint8_t)(id * 37 + (uint64_t)i * 11 + 0x5a);
}

static uint8_t content(uint64_t id, size_t page, uint8_t gen)
{
	return (uint8_t)(id * 31 + page * 7 + gen);
}

static int ld(const int *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void inc(int *p)
{
	__atomic_add_fetch(p, 1, __ATOMIC_RELEASE);
}

static void reply(int fd, int status, uint64_t id)
{
	struct fm_reg_reply rep = { .magic = FM_PROTO_MAGIC, .version = FM_PROTO_VERSION,
				    .type = FM_REG_REPLY, .status = status, .region_id = id };

	if (status == 0)
		cred_of(id, rep.credential);
	if (status < 0)
		snprintf(rep.reason, sizeof(rep.reason), "fake says %d", status);
	send(fd, &rep, sizeof(rep), MSG_NOSIGNAL);
}

static void close_fds(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/* One request from connection slot i. */
static void serve_request(struct fake *f, int i)
{
	struct fm_reg_req q;
	char cbuf[CMSG_SPACE(sizeof(int) * 2)];
	struct iovec iov = { &q, sizeof(q) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	int fds[2] = { -1, -1 }, nfds = 0;
	ssize_t n = recvmsg(f->conn[i], &mh, MSG_CMSG_CLOEXEC);
	uint8_t cred[FM_CREDENTIAL_LEN];
	uint64_t id;

	if (n <= 0) {
		close(f->conn[i]);
		f->conn[i] = -1;
		return;
	}
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		for (size_t k = 0; k < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int) && nfds < 2; k++)
			memcpy(&fds[nfds++], CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
	switch (q.type) {
	case FM_REG_REGISTER:
		id = f->next_id++;
		cr_assert_lt(id, MAXID);
		f->uffd[id] = fds[0];
		f->memfd[id] = fds[1];
		inc(&f->registers);
		reply(f->conn[i], 0, id);
		return;
	case FM_REG_UNREGISTER:
		id = q.region_id;
		if (id < MAXID) {
			close_fds(&f->uffd[id], 1);
			close_fds(&f->memfd[id], 1);
			f->uffd[id] = f->memfd[id] = -1;
		}
		inc(&f->unregisters);
		reply(f->conn[i], 0, id);
		break;
	case FM_REG_READOPT:
		id = q.region_id;
		cr_assert_lt(id, MAXID);
		cr_assert_eq(nfds, 2, "READOPT must carry the uffd and the memfd");
		inc(&f->readopts[id]);
		cred_of(id, cred);
		if (memcmp(cred, q.credential, sizeof(cred)) != 0) {
			inc(&f->bad_cred);
			reply(f->conn[i], -EPERM, id);
		} else if (f->silent_readopt) {
			break;
		} else if ((int)id == f->enoent_id) {
			reply(f->conn[i], -ENOENT, id);
		} else if (f->eagain[id] > 0) {
			f->eagain[id]--;
			reply(f->conn[i], -EAGAIN, id);
		} else {
			if (f->slow_readopt_ms) {
				td_sleep_ms(f->slow_readopt_ms);
				f->slow_readopt_ms = 0;
			}
			f->uffd[id] = fds[0];
			f->memfd[id] = fds[1];
			reply(f->conn[i], 0, id);
			return;
		}
		break;
	default:
		reply(f->conn[i], -EINVAL, 0);
		break;
	}
	close_fds(fds, nfds);
}

/* Serve one fault of region id with this instance's content. */
static void serve_fault(struct fake *f, uint64_t id, uintptr_t base)
{
	static __thread uint8_t page[PAGE];
	struct uffd_msg m;
	struct uffdio_copy cp;
	uintptr_t a;

	if (read(f->uffd[id], &m, sizeof(m)) != (ssize_t)sizeof(m) || m.event != UFFD_EVENT_PAGEFAULT)
		return;
	a = (uintptr_t)m.arg.pagefault.address & ~(uintptr_t)(PAGE - 1);
	memset(page, content(id, (a - base) / PAGE, f->gen), PAGE);
	cp = (struct uffdio_copy){ .dst = a, .src = (uintptr_t)page, .len = PAGE };
	if (ioctl(f->uffd[id], UFFDIO_COPY, &cp) < 0)
		cr_assert_eq(errno, EEXIST, "UFFDIO_COPY: %s", strerror(errno));
	inc(&f->faults);
}

static uintptr_t region_base[MAXID];   /* id -> client address (same process) */

static void *fake_main(void *arg)
{
	struct fake *f = arg;

	for (;;) {
		struct pollfd p[2 + MAXCONN + MAXID];
		int np = 0;

		p[np++] = (struct pollfd){ f->stop[0], POLLIN, 0 };
		p[np++] = (struct pollfd){ f->lfd, POLLIN, 0 };
		for (int i = 0; i < MAXCONN; i++)
			p[np++] = (struct pollfd){ f->conn[i], POLLIN, 0 };
		for (int i = 0; i < MAXID; i++)
			p[np++] = (struct pollfd){ f->uffd[i], POLLIN, 0 };
		if (poll(p, (nfds_t)np, -1) < 0)
			continue;
		if (p[0].revents)
			break;
		if (p[1].revents) {
			int c = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);

			for (int i = 0; i < MAXCONN && c >= 0; i++)
				if (f->conn[i] < 0) {
					f->conn[i] = c;
					c = -1;
				}
			if (c >= 0)
				close(c);
		}
		for (int i = 0; i < MAXCONN; i++)
			if (f->conn[i] >= 0 && p[2 + i].revents)
				serve_request(f, i);
		for (int i = 0; i < MAXID; i++)
			if (f->uffd[i] >= 0 && p[2 + MAXCONN + i].revents)
				serve_fault(f, (uint64_t)i, region_base[i]);
	}
	return NULL;
}

/* Defaults; the caller may set behaviour, then fake_run. */
static void fake_init(struct fake *f, const char *path, uint8_t gen)
{
	memset(f, 0, sizeof(*f));
	f->gen = gen;
	f->enoent_id = -1;
	f->next_id = 1;
	for (int i = 0; i < MAXCONN; i++)
		f->conn[i] = -1;
	for (int i = 0; i < MAXID; i++)
		f->uffd[i] = f->memfd[i] = -1;
	snprintf(f->path, sizeof(f->path), "%s", path);
}

static void fake_run(struct fake *f)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	f->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	cr_assert(f->lfd >= 0 && bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
		  listen(f->lfd, 8) == 0, "fake listen: %s", strerror(errno));
	cr_assert_eq(pipe2(f->stop, O_CLOEXEC), 0);
	cr_assert_eq(pthread_create(&f->th, NULL, fake_main, f), 0);
}

static void fake_start(struct fake *f, const char *path, uint8_t gen)
{
	fake_init(f, path, gen);
	fake_run(f);
}

/* A crash: everything it held is closed at once, listener first. */
static void fake_stop(struct fake *f)
{
	cr_assert_eq(write(f->stop[1], "x", 1), 1);
	pthread_join(f->th, NULL);
	close(f->stop[0]);
	close(f->stop[1]);
	close(f->lfd);
	unlink(f->path);
	close_fds(f->conn, MAXCONN);
	close_fds(f->uffd, MAXID);
	close_fds(f->memfd, MAXID);
}

/* ---- the client side ---- */

static char dir[64], sock_path[108];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/fmreconn.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(sock_path, sizeof(sock_path), "%s/reg.sock", dir);
	/* Fast retries keep the test short; the bound itself is the point. */
	setenv("FLUIDMEM_RECONNECT_MIN_MS", "5", 1);
	setenv("FLUIDMEM_RECONNECT_MAX_MS", "100", 1);
	setenv("FLUIDMEM_TIMEOUT", "30", 1);
}

static void teardown(void)
{
	unlink(sock_path);
	rmdir(dir);
}

/* Daemon 1 (a fake) and a client connected to it. */
static struct fm_client *first_daemon(struct fake *f1)
{
	struct fm_client *c;

	fake_start(f1, sock_path, 1);
	c = fm_connect(sock_path);
	cr_assert_not_null(c, "fm_connect: %s", strerror(errno));
	return c;
}

static struct fm_region *mkregion(struct fm_client *c, size_t pages, const char *name)
{
	struct fm_region *r = fm_region_create(c, pages * PAGE, name);

	cr_assert_not_null(r, "fm_region_create: %s (%s)", strerror(errno), fm_client_error(c));
	cr_assert_lt(fm_region_id(r), MAXID);
	region_base[fm_region_id(r)] = (uintptr_t)fm_region_addr(r);
	return r;
}

/* Two 4-page regions; their ids in *a and *b when asked for. */
static void mkregions(struct fm_client *c, struct fm_region *rs[2], const char *n0,
		      const char *n1, uint64_t *a, uint64_t *b)
{
	rs[0] = mkregion(c, 4, n0);
	rs[1] = mkregion(c, 4, n1);
	if (a)
		*a = fm_region_id(rs[0]);
	if (b)
		*b = fm_region_id(rs[1]);
}

static void expect_page(struct fm_region *r, size_t page, uint8_t gen)
{
	const uint8_t *p = (const uint8_t *)fm_region_addr(r) + page * PAGE;
	uint8_t want = content(fm_region_id(r), page, gen);

	for (size_t i = 0; i < PAGE; i++)
		cr_assert_eq(p[i], want, "region %llu page %zu byte %zu: %u, want %u (gen %u)",
			     (unsigned long long)fm_region_id(r), page, i, p[i], want, gen);
}

/* A thread that touches one page and then says so. */
struct toucher {
	pthread_t th;
	volatile uint8_t *p;
	pid_t tid;
	int done;
	uint8_t seen;
};

static void *touch_main(void *arg)
{
	struct toucher *t = arg;

	__atomic_store_n(&t->tid, (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
	t->seen = *t->p;
	__atomic_store_n(&t->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static char thread_state(pid_t tid)
{
	char path[64], buf[256], *rp;
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return '?';
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return '?';
	buf[n] = '\0';
	rp = strrchr(buf, ')');
	return rp && rp[1] && rp[2] ? rp[2] : '?';
}

/* Start a thread on page `page` of r and wait until it sleeps in the fault
 * (nobody serves the uffd meanwhile). */
static void touch_blocked(struct toucher *t, struct fm_region *r, size_t page)
{
	uint64_t deadline = fm_now_ns() + 10000000000ull;

	memset(t, 0, sizeof(*t));
	t->p = (volatile uint8_t *)fm_region_addr(r) + page * PAGE + 123;
	cr_assert_eq(pthread_create(&t->th, NULL, touch_main, t), 0);
	while (!__atomic_load_n(&t->tid, __ATOMIC_ACQUIRE) || thread_state(t->tid) != 'S') {
		cr_assert_lt(fm_now_ns(), deadline, "the toucher never blocked");
		cr_assert_eq(__atomic_load_n(&t->done, __ATOMIC_ACQUIRE), 0,
			     "a fault was answered while no daemon was there");
		td_sleep_ms(2);
	}
	cr_assert_eq(__atomic_load_n(&t->done, __ATOMIC_ACQUIRE), 0);
}

static void wait_status(struct fm_region *r, int want)
{
	uint64_t deadline = fm_now_ns() + 20000000000ull;

	while (fm_region_status(r) != want) {
		cr_assert_lt(fm_now_ns(), deadline, "region %llu status %d, want %d",
			     (unsigned long long)fm_region_id(r), fm_region_status(r), want);
		td_sleep_ms(2);
	}
}

static void wait_count(const int *p, int want)
{
	uint64_t deadline = fm_now_ns() + 20000000000ull;

	while (ld(p) < want) {
		cr_assert_lt(fm_now_ns(), deadline, "count %d, want %d", ld(p), want);
		td_sleep_ms(2);
	}
}

/* The daemon "crashes" under a client holding regions whose first page it
 * has served: the watcher notices and every region waits. */
static void crash(struct fake *f, struct fm_region **rs, int n)
{
	fake_stop(f);
	for (int i = 0; i < n; i++)
		wait_status(rs[i], -EAGAIN);
}

TestSuite(reconnect, .init = setup, .fini = teardown, .timeout = 60);

Test(reconnect, blocked_fault_served_by_the_restarted_daemon)
{
	static struct fake f1, f2;
	struct fm_client *c;
	struct fm_region *r;
	struct toucher t;

	c = first_daemon(&f1);
	r = mkregion(c, 8, "vmram");
	expect_page(r, 0, 1);
	cr_assert_eq(fm_region_status(r), 0);

	crash(&f1, &r, 1);
	touch_blocked(&t, r, 3);
	/* Still blocked, with no daemon at all: a few reconnection tries. */
	td_sleep_ms(150);
	cr_assert_eq(__atomic_load_n(&t.done, __ATOMIC_ACQUIRE), 0, "fault answered by nobody");

	fake_start(&f2, sock_path, 2);
	pthread_join(t.th, NULL);
	cr_assert_eq(t.seen, content(fm_region_id(r), 3, 2), "the blocked fault read %u", t.seen);
	expect_page(r, 3, 2);          /* served by the new daemon from the kept uffd */
	expect_page(r, 0, 1);          /* resident in the kept memfd all along */
	wait_status(r, 0);
	cr_expect_eq(ld(&f2.readopts[fm_region_id(r)]), 1);
	cr_expect_eq(ld(&f2.bad_cred), 0, "the credential from REGISTER's reply was not sent back");
	cr_expect_eq(ld(&f2.registers), 0, "a region was registered afresh");
	expect_page(r, 5, 2);          /* and later faults too */

	cr_expect_eq(fm_region_destroy(r), 0);
	cr_expect_eq(ld(&f2.unregisters), 1, "UNREGISTER went to the new daemon");
	fm_disconnect(c);
	fake_stop(&f2);
}

Test(reconnect, eagain_is_retried)
{
	static struct fake f1, f2;
	struct fm_client *c;
	struct fm_region *r;
	struct toucher t;
	uint64_t id;

	c = first_daemon(&f1);
	r = mkregion(c, 4, "eagain");
	id = fm_region_id(r);
	expect_page(r, 0, 1);
	crash(&f1, &r, 1);
	touch_blocked(&t, r, 1);
	fake_init(&f2, sock_path, 2);
	f2.eagain[id] = 2;
	fake_run(&f2);
	pthread_join(t.th, NULL);
	cr_assert_eq(t.seen, content(id, 1, 2));
	wait_status(r, 0);
	cr_expect_eq(ld(&f2.readopts[id]), 3, "two -EAGAIN then success");
	cr_expect_eq(ld(&f2.registers), 0);
	fm_disconnect(c);
	fake_stop(&f2);
}

Test(reconnect, enoent_stops_and_never_registers_afresh)
{
	static struct fake f1, f2;
	struct fm_client *c;
	struct fm_region *rs[2];
	struct toucher t;
	uint64_t a, b;

	c = first_daemon(&f1);
	mkregions(c, rs, "gone", "kept", &a, &b);
	expect_page(rs[0], 0, 1);
	expect_page(rs[1], 0, 1);
	crash(&f1, rs, 2);
	touch_blocked(&t, rs[1], 2);
	fake_init(&f2, sock_path, 2);
	f2.enoent_id = (int)a;
	f2.eagain[b] = 3;      /* b's retries give a's a chance to be (wrongly) retried */
	fake_run(&f2);
	pthread_join(t.th, NULL);
	cr_assert_eq(t.seen, content(b, 2, 2));
	wait_status(rs[1], 0);
	cr_expect_eq(fm_region_status(rs[0]), -ENOENT);
	cr_expect_eq(ld(&f2.readopts[a]), 1, "a region whose state is gone was retried");
	cr_expect_eq(ld(&f2.readopts[b]), 4);
	cr_expect_eq(ld(&f2.registers), 0, "a lost region was registered afresh (zero pages)");
	/* The lost region's resident page is still there, untouched. */
	expect_page(rs[0], 0, 1);
	cr_expect_eq(fm_region_destroy(rs[0]), 0);
	cr_expect_eq(ld(&f2.unregisters), 0, "nothing to unregister for a lost region");
	fm_disconnect(c);
	cr_expect_eq(ld(&f2.unregisters), 1);
	fake_stop(&f2);
}

Test(reconnect, destroy_while_reconnecting)
{
	static struct fake f1, f2;
	struct fm_client *c;
	struct fm_region *rs[2];
	struct toucher t;
	uint64_t a, b;

	c = first_daemon(&f1);
	mkregions(c, rs, "dropped", "kept", &a, &b);
	crash(&f1, rs, 2);
	/* No daemon: the watcher is between tries. */
	cr_expect_eq(fm_region_destroy(rs[0]), 0);
	/* A new region cannot be registered on a dead connection. */
	cr_expect_null(fm_region_create(c, PAGE, "new"));
	cr_expect_eq(errno, ENOTCONN);
	touch_blocked(&t, rs[1], 0);
	fake_start(&f2, sock_path, 2);
	pthread_join(t.th, NULL);
	cr_assert_eq(t.seen, content(b, 0, 2));
	wait_status(rs[1], 0);
	cr_expect_eq(ld(&f2.readopts[a]), 0, "a destroyed region was re-adopted");
	cr_expect_eq(ld(&f2.readopts[b]), 1);
	fm_disconnect(c);
	fake_stop(&f2);
}

Test(reconnect, disconnect_while_reconnecting)
{
	static struct fake f1;
	struct fm_client *c;
	struct fm_region *rs[2];

	c = first_daemon(&f1);
	mkregions(c, rs, "one", "two", NULL, NULL);
	expect_page(rs[0], 0, 1);
	crash(&f1, rs, 2);
	fm_disconnect(c);      /* must return: no daemon, watcher backing off */
}

Test(reconnect, disconnect_while_readopt_unanswered)
{
	static struct fake f1, f2;
	struct fm_client *c;
	struct fm_region *r;
	uint64_t t0;

	c = first_daemon(&f1);
	r = mkregion(c, 4, "stuck");
	crash(&f1, &r, 1);
	fake_init(&f2, sock_path, 2);
	f2.silent_readopt = true;
	fake_run(&f2);
	wait_count(&f2.readopts[fm_region_id(r)], 1);
	t0 = fm_now_ns();
	fm_disconnect(c);      /* the watcher waits for a reply that never comes */
	cr_expect_lt(fm_now_ns() - t0, 10000000000ull, "fm_disconnect waited for the reply timeout");
	fake_stop(&f2);
}

/* A READOPT answered after the client's timeout: the reply is collected on
 * the next pass, never paired with another request, and the region is
 * served. */
Test(reconnect, readopt_reply_after_timeout)
{
	static struct fake f1, f2;
	struct fm_client *c;
	struct fm_region *rs[2];
	struct toucher t;

	setenv("FLUIDMEM_TIMEOUT", "1", 1);
	c = first_daemon(&f1);
	mkregions(c, rs, "slow", "other", NULL, NULL);
	crash(&f1, rs, 2);
	touch_blocked(&t, rs[0], 1);
	fake_init(&f2, sock_path, 2);
	f2.slow_readopt_ms = 1500;
	fake_run(&f2);
	pthread_join(t.th, NULL);
	cr_assert_eq(t.seen, content(fm_region_id(rs[0]), 1, 2));
	wait_status(rs[0], 0);
	wait_status(rs[1], 0);
	cr_expect_eq(ld(&f2.readopts[fm_region_id(rs[0])]) + ld(&f2.readopts[fm_region_id(rs[1])]), 2,
		     "a region was asked for twice");
	expect_page(rs[1], 2, 2);
	fm_disconnect(c);
	cr_expect_eq(ld(&f2.unregisters), 2);
	fake_stop(&f2);
}

Test(reconnect, daemon_restarts_twice)
{
	static struct fake f[3];
	struct fm_client *c;
	struct fm_region *r;
	struct toucher t;

	fake_start(&f[0], sock_path, 1);
	c = fm_connect(sock_path);
	cr_assert_not_null(c);
	r = mkregion(c, 8, "twice");
	expect_page(r, 0, 1);
	for (int i = 1; i <= 2; i++) {
		crash(&f[i - 1], &r, 1);
		touch_blocked(&t, r, (size_t)i);
		fake_start(&f[i], sock_path, (uint8_t)(i + 1));
		pthread_join(t.th, NULL);
		cr_assert_eq(t.seen, content(fm_region_id(r), (size_t)i, (uint8_t)(i + 1)));
		wait_status(r, 0);
		cr_expect_eq(ld(&f[i].bad_cred), 0);
	}
	fm_disconnect(c);
	fake_stop(&f[2]);
}

/* A plain shutdown hands pages back and unregisters the range: the client
 * must not ask the next daemon for it (and cry "lost"). */
Test(reconnect, handed_back_region_is_not_readopted)
{
	static struct fake f1, f2;
	struct fm_client *c;
	struct fm_region *r;
	uint64_t id;
	struct uffdio_range range;

	c = first_daemon(&f1);
	r = mkregion(c, 4, "handed");
	id = fm_region_id(r);
	expect_page(r, 0, 1);
	range = (struct uffdio_range){ (uintptr_t)fm_region_addr(r), 4 * PAGE };
	cr_assert_eq(ioctl(f1.uffd[id], UFFDIO_UNREGISTER, &range), 0, "%s", strerror(errno));
	crash(&f1, &r, 1);
	fake_start(&f2, sock_path, 2);
	wait_status(r, -ENODEV);
	cr_expect_eq(ld(&f2.readopts[id]), 0);
	expect_page(r, 0, 1);
	cr_expect_eq(((volatile uint8_t *)fm_region_addr(r))[2 * PAGE], 0, "plain memory now");
	fm_disconnect(c);
	fake_stop(&f2);
}

/* ---- the real daemon: shutdown --keep-clients ---- */

/* Is addr still registered on a userfaultfd (smaps VmFlags "um")? */
static bool uffd_registered(const void *addr)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[512];
	bool in = false, um = false;

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
			in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
		else if (in && strncmp(line, "VmFlags:", 8) == 0) {
			um = strstr(line, " um") != NULL;
			break;
		}
	}
	fclose(f);
	return um;
}

/* A graceful restart end to end: `shutdown --keep-clients` exits without
 * handing pages back or unregistering (resident pages stay readable, an
 * evicted page blocks, never a zero page), then a new daemon on the same
 * registration path, state directory and store re-adopts the region: the
 * blocked fault and every other page read back as written. */
Test(reconnect, keep_clients_restart_readopts, .timeout = 120)
{
	static char sreg[160], sstate[160], sstore[160];
	const char *const sets[] = { "memory.resident_pages=64", "shards.count=1", "shards.cpus=[1]",
				     sreg, sstate, sstore, NULL };
	static struct toucher t;
	struct td fmd, fmd2;
	struct fm_client *c;
	struct fm_region *r;
	uint8_t *p;
	size_t pages = 512, evicted = SIZE_MAX;
	char *rep, cmd[512];
	int status = -1;
	uint64_t t0;

	snprintf(sreg, sizeof(sreg), "register.path=\"%s\"", sock_path);
	snprintf(sstate, sizeof(sstate), "daemon.state_dir=\"%s/state\"", dir);
	snprintf(sstore, sizeof(sstore), "store.local.path=\"%s/store\"", dir);
	cr_assert_eq(td_start(&fmd, sets), 0, "fluidmemd did not start");
	c = fm_connect(sock_path);
	cr_assert_not_null(c);
	r = fm_region_create(c, pages * PAGE, "kept");
	cr_assert_not_null(r, "%s", fm_client_error(c));
	p = fm_region_addr(r);
	for (size_t i = 0; i < pages; i++)
		memset(p + i * PAGE, (int)(i * 13 + 1), PAGE);
	t0 = fm_now_ns();
	rep = td_ctl(&fmd, "v1 shutdown --keep-clients");
	cr_assert(rep && strstr(rep, "\"ok\":true"), "%s", rep ? rep : "(no reply)");
	free(rep);
	for (int i = 0; i < 3000 && waitpid(fmd.pid, &status, WNOHANG) != fmd.pid; i++)
		td_sleep_ms(10);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		td_dump_log(&fmd);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fluidmemd exit status %d", status);
	fmd.pid = 0;
	wait_status(r, -EAGAIN);
	cr_expect(uffd_registered(p), "the daemon unregistered the region on --keep-clients");
	/* Resident pages read as written; find one the daemon evicted: a hole
	 * in the memfd, not handed back. */
	for (size_t i = 0; i < pages; i++) {
		unsigned char v;

		cr_assert_eq(mincore(p + i * PAGE, PAGE, &v), 0);
		if (!(v & 1)) {
			evicted = i;
			break;
		}
		cr_assert_eq(p[i * PAGE + 7], (uint8_t)(i * 13 + 1), "resident page %zu", i);
	}
	cr_assert_neq(evicted, SIZE_MAX, "nothing was evicted (budget 64 pages of %zu)", pages);
	touch_blocked(&t, r, evicted);

	cr_assert_eq(td_start(&fmd2, sets), 0, "the second fluidmemd did not start");
	pthread_join(t.th, NULL);
	cr_log_info("graceful restart: the blocked fault waited %llu ms from the shutdown request",
		    (unsigned long long)((fm_now_ns() - t0) / 1000000u));
	cr_assert_eq(t.seen, (uint8_t)(evicted * 13 + 1), "the blocked fault read %u", t.seen);
	wait_status(r, 0);
	for (size_t i = 0; i < pages; i++)
		for (size_t b = 0; b < PAGE; b += 512)
			cr_assert_eq(p[i * PAGE + b], (uint8_t)(i * 13 + 1), "page %zu byte %zu after the restart",
				     i, b);
	cr_expect_eq(fm_region_destroy(r), 0, "%s", fm_client_error(c));
	fm_disconnect(c);
	td_expect_stop(&fmd2);
	if (getenv("FM_TEST_KEEP_LOGS") == NULL) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s/state' '%s/store'", fmd.dir, dir, dir);
		cr_expect_eq(system(cmd), 0);
	}
}
