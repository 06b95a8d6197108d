/* Hostile clients against the dataplane (issue 8): each test is a client
 * that breaks the daemon's assumptions about uffds, and each asserts that
 * the daemon survives, keeps serving others, and loses no page.
 *
 * Clients here speak the registration protocol themselves (memfd + uffd,
 * like libfluidmem) because they need what the library hides: the
 * registration socket, the uffd's flags and features, the memfd's seals. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "config_params.h"
#include "base/base.h"
#include "ctl/config.h"
#include "proto/proto.h"
#include "shard/shard.h"
#include "uffd/uffd.h"
#include "harness.h"

#define PAGE 4096u

static struct td fmd;

/* ---- a raw client ---- */

struct raw {
	int sock, uffd, memfd;
	uint8_t *addr;
	size_t size;
	uint64_t id;
	char why[160];
};

static int raw_send(struct raw *h, const struct fm_reg_req *q, const int *fds, int nfds)
{
	struct fm_reg_reply rep;
	int rc = td_reg_exchange(h->sock, q, sizeof(*q), fds, nfds, &rep);

	if (rc < 0)
		return rc == -EPIPE ? -EPROTO : rc;
	snprintf(h->why, sizeof(h->why), "%s", rep.reason);
	h->id = rep.region_id;
	return rep.status;
}

/* Map a sealed memfd, open a uffd with `features` (plus what the daemon
 * needs), register MISSING|WP and hand both over. 0 or the daemon's status. */
static int raw_create(struct raw *h, size_t size, uint64_t features)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
					      UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP | features };
	struct timeval tv = { 10, 0 };
	struct fm_reg_req q = { .magic = FM_PROTO_MAGIC, .version = FM_PROTO_VERSION,
				.type = FM_REG_REGISTER, .length = sizeof(q), .page_size = PAGE,
				.size = size };

	memset(h, 0, sizeof(*h));
	h->size = size;
	h->memfd = memfd_create("hostile", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	cr_assert_geq(h->memfd, 0);
	cr_assert_eq(ftruncate(h->memfd, (off_t)size), 0);
	cr_assert_eq(fcntl(h->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
	h->addr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, h->memfd, 0);
	cr_assert_neq(h->addr, MAP_FAILED);
	h->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	cr_assert_geq(h->uffd, 0);
	cr_assert_eq(ioctl(h->uffd, UFFDIO_API, &api), 0);
	struct uffdio_register reg = { .range = { (uint64_t)(uintptr_t)h->addr, size },
				       .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP };
	cr_assert_eq(ioctl(h->uffd, UFFDIO_REGISTER, &reg), 0);
	h->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fmd.reg);
	cr_assert_eq(connect(h->sock, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setsockopt(h->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	q.addr = (uint64_t)(uintptr_t)h->addr;
	strcpy(q.name, "hostile");
	return raw_send(h, &q, (int[]){ h->uffd, h->memfd }, 2);
}

static int raw_unregister(struct raw *h)
{
	struct fm_reg_req q = { .magic = FM_PROTO_MAGIC, .version = FM_PROTO_VERSION,
				.type = FM_REG_UNREGISTER, .length = sizeof(q), .page_size = PAGE,
				.region_id = h->id };

	return raw_send(h, &q, NULL, 0);
}

static void raw_free(struct raw *h)
{
	/* The uffd goes first: a refused registration leaves the range
	 * registered on it with EVENT_UNMAP, and a munmap would then wait for
	 * a reader that does not exist. */
	if (h->sock >= 0)
		close(h->sock);
	close(h->uffd);
	munmap(h->addr, h->size);
	close(h->memfd);
}

/* ---- helpers ---- */

static void stamp(uint8_t *p, uint64_t page, uint64_t tag)
{
	uint64_t v = tag << 32 | page;

	memcpy(p + page * PAGE, &v, sizeof(v));
	memcpy(p + page * PAGE + PAGE - sizeof(v), &v, sizeof(v));
}

static bool stamped(const uint8_t *p, uint64_t page, uint64_t tag)
{
	uint64_t v = tag << 32 | page, a, b;

	memcpy(&a, p + page * PAGE, sizeof(a));
	memcpy(&b, p + page * PAGE + PAGE - sizeof(b), sizeof(b));
	return a == v && b == v;
}

/* Wait for a child up to timeout_ms; SIGKILL it after. Its exit status, or
 * -1 when it had to be killed. */
static int await_child(pid_t pid, int timeout_ms)
{
	int rc = td_wait_exit(pid, timeout_ms);

	if (rc == -1) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	return rc;
}

/* fork() for a client child: it dies with the test (a failed assertion
 * ends the test process) and never outlives 60 s. */
static pid_t fork_client(void)
{
	pid_t pid = fork();

	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		alarm(60);
	}
	return pid;
}

/* Where a blocked thread of ours sleeps in the kernel (root only). */
static void dump_kernel_stack(int tid)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "cat /proc/%d/task/%d/stack >&2", (int)getpid(), tid);
	if (system(cmd) != 0) {
		/* not root: nothing to show */
	}
}

/* ---- finding 1: hang up while faulting ---- */

#define HANGUP_THREADS 4
#define HANGUP_PAGES (256u << 8)        /* a 256 MiB region */
#define HANGUP_TOUCHED 4096u            /* pages each round touches (16 MiB) */

struct hanger {
	uint8_t *p;
	unsigned t;
	uint64_t tag;
	volatile bool *stop;
	unsigned bad;
	int tid;
	bool done;
};

/* Stamp this thread's pages, then re-read and re-stamp them until told to
 * stop: every page it wrote must read back, whoever serves it. */
static void *hang_worker(void *arg)
{
	struct hanger *h = arg;

	h->tid = (int)syscall(SYS_gettid);

	for (uint64_t pg = h->t; pg < HANGUP_TOUCHED; pg += HANGUP_THREADS)
		stamp(h->p, pg, h->tag);
	while (!*h->stop) {
		for (uint64_t pg = h->t; pg < HANGUP_TOUCHED; pg += HANGUP_THREADS)
			h->bad += !stamped(h->p, pg, h->tag);
	}
	for (uint64_t pg = h->t; pg < HANGUP_TOUCHED; pg += HANGUP_THREADS)
		h->bad += !stamped(h->p, pg, h->tag);
	__atomic_store_n(&h->done, true, __ATOMIC_RELEASE);
	return NULL;
}

/* Issue 8 finding 1: four threads fault on a 256 MiB region while the
 * client closes its registration socket, alive. The old dispatcher routed
 * faults batched with REGION_DEL after the region was freed (use-after-free
 * in the shard), and dropped faults after REGION_DEL without waking them.
 * Every round must end with the daemon alive, every thread done, and every
 * page the threads wrote intact (restored, never zero). The report needed
 * 30 to 60 rounds; FM_HANGUP_ROUNDS=300 makes a longer hunt. */
Test(hostile_dataplane, hangup_while_faulting, .timeout = 120)
{
	const char *sets[] = { "memory.resident_pages=1024", NULL };
	int rounds = getenv("FM_HANGUP_ROUNDS") ? atoi(getenv("FM_HANGUP_ROUNDS")) : 60;

	td_must_start(&fmd, sets);
	srand(8);
	for (int round = 0; round < rounds; round++) {
		struct raw h;
		struct hanger w[HANGUP_THREADS];
		pthread_t th[HANGUP_THREADS];
		volatile bool stop_flag = false;
		int rc = raw_create(&h, (size_t)HANGUP_PAGES * PAGE, 0);

		cr_assert_eq(rc, 0, "round %d: registration refused: %s", round, h.why);
		for (unsigned t = 0; t < HANGUP_THREADS; t++) {
			w[t] = (struct hanger){ .p = h.addr, .t = t, .tag = (uint64_t)round + 1,
						.stop = &stop_flag };
			pthread_create(&th[t], NULL, hang_worker, &w[t]);
		}
		td_sleep_ms(5 + rand() % 40);
		close(h.sock);   /* hang up while the threads fault */
		h.sock = -1;
		cr_assert_eq(td_await_stat(&fmd, "regions", 0), 0, "round %d: the region was not freed", round);
		stop_flag = true;
		for (unsigned t = 0; t < HANGUP_THREADS; t++) {
			for (int i = 0; i < 1000 && !__atomic_load_n(&w[t].done, __ATOMIC_ACQUIRE); i++)
				td_sleep_ms(10);
			if (!__atomic_load_n(&w[t].done, __ATOMIC_ACQUIRE))
				dump_kernel_stack(w[t].tid);
			cr_assert(__atomic_load_n(&w[t].done, __ATOMIC_ACQUIRE),
				  "round %d: thread %u is still blocked after the detach", round, t);
			pthread_join(th[t], NULL);
			cr_expect_eq(w[t].bad, 0, "round %d: thread %u read %u wrong pages", round, t,
				     w[t].bad);
		}
		raw_free(&h);
		cr_assert(td_alive(&fmd), "fluidmemd died in round %d", round);
	}
	td_expect_stop(&fmd);
}

/* ---- finding 2: a client makes its uffd blocking ---- */

static void *touch_one(void *arg)
{
	volatile uint8_t *p = arg;

	p[0] = 7;
	return NULL;
}

/* Issue 8 finding 2: the uffd's open file is shared with the client, which
 * can clear O_NONBLOCK; the old dispatcher then blocked in read() and every
 * client hung, and SIGTERM no longer stopped the daemon. Now the region is
 * detached as hostile, another client keeps being served, and SIGTERM
 * works. */
Test(hostile_dataplane, blocking_uffd_is_detached, .timeout = 60)
{
	const char *sets[] = { "memory.resident_pages=256", NULL };
	struct raw h;
	pthread_t th;
	pid_t good;
	int status;

	td_must_start(&fmd, sets);
	cr_assert_eq(raw_create(&h, 64 * PAGE, 0), 0, "refused: %s", h.why);
	cr_assert_eq(fcntl(h.uffd, F_SETFL, fcntl(h.uffd, F_GETFL) & ~O_NONBLOCK), 0);
	/* A fault on the hostile region: it must end (served, restored or
	 * unregistered), not hang. */
	pthread_create(&th, NULL, touch_one, h.addr + 3 * PAGE);

	good = fork_client();
	if (good == 0) {
		struct fm_client *c = fm_connect(fmd.reg);
		struct fm_region *r = c ? fm_region_create(c, 2048 * PAGE, "good") : NULL;
		uint8_t *p;

		alarm(20);
		if (!r)
			_exit(2);
		p = fm_region_addr(r);
		for (int pass = 1; pass <= 2; pass++) {
			for (uint64_t pg = 0; pg < 2048; pg++)
				stamp(p, pg, (uint64_t)pass);
			for (uint64_t pg = 0; pg < 2048; pg++)
				if (!stamped(p, pg, (uint64_t)pass))
					_exit(3);
		}
		fm_region_destroy(r);
		fm_disconnect(c);
		_exit(0);
	}
	cr_expect_eq(await_child(good, 30000), 0, "a well-behaved client was not served");
	cr_expect_eq(td_await_stat(&fmd, "dispatch_hostile_regions", 1), 1, "the hostile region was not reported");
	cr_expect_eq(td_await_stat(&fmd, "regions", 0), 0, "the hostile region was not detached");
	for (int i = 0; i < 500; i++) {
		if (pthread_tryjoin_np(th, NULL) == 0)
			break;
		cr_assert_lt(i, 499, "a fault on the hostile region never ended");
		td_sleep_ms(10);
	}
	cr_expect_eq(h.addr[3 * PAGE], 7);

	kill(fmd.pid, SIGTERM);
	status = await_child(fmd.pid, 15000);
	if (status != 0)
		td_dump_log(&fmd);
	cr_expect_eq(status, 0, "fluidmemd did not stop cleanly on SIGTERM (%d)", status);
	raw_free(&h);
	/* Reaped already: remove its private directory as td_stop would. */
	fmd.pid = 0;
	if (!getenv("FM_TEST_KEEP_LOGS")) {
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fmd.dir);
		if (system(cmd) != 0) {
			/* a leftover temp dir is harmless */
		}
	}
}

/* ---- finding 4: restoring detach while the client madvises ---- */

struct madviser {
	uint8_t *p;
	size_t size;
	volatile bool stop;
};

static void *madvise_loop(void *arg)
{
	struct madviser *m = arg;

	while (!m->stop)
		for (size_t off = 0; off < m->size && !m->stop; off += 64 * PAGE)
			madvise(m->p + off, 64 * PAGE, MADV_DONTNEED);
	return NULL;
}

/* The client: fill a region well over the budget (most pages stored), then
 * madvise(MADV_DONTNEED) over it in a loop while the parent detaches. When
 * told, stop and check that madvise and reads of the whole range no longer
 * wait for a daemon that is gone. */
static void madvise_client(int to_parent, int from_parent)
{
	struct fm_client *c = fm_connect(fmd.reg);
	size_t pages = 2048;
	struct fm_region *r = c ? fm_region_create(c, pages * PAGE, "madvise") : NULL;
	struct madviser m;
	pthread_t th;
	char go;
	volatile uint8_t sum = 0;

	if (!r)
		_exit(2);
	m = (struct madviser){ .p = fm_region_addr(r), .size = pages * PAGE };
	for (uint64_t pg = 0; pg < pages; pg++)
		stamp(m.p, pg, 1);
	dprintf(to_parent, "%lu\n", (unsigned long)fm_region_id(r));
	if (read(from_parent, &go, 1) != 1)   /* the parent saw pages stored */
		_exit(4);
	/* Discard the first half over and over; the second half keeps its
	 * stored pages, which the restore copies back meanwhile. */
	m.size = pages * PAGE / 2;
	pthread_create(&th, NULL, madvise_loop, &m);
	if (read(from_parent, &go, 1) != 1)
		_exit(4);
	alarm(10);   /* a blocked madvise or read below fails the test */
	m.stop = true;
	pthread_join(th, NULL);
	if (madvise(m.p, pages * PAGE, MADV_DONTNEED) != 0)
		_exit(5);
	for (uint64_t pg = 0; pg < pages; pg++)
		sum += m.p[pg * PAGE];
	(void)sum;
	/* The half nobody discarded came back whole. */
	for (uint64_t pg = pages / 2; pg < pages; pg++)
		if (!stamped(m.p, pg, 1))
			_exit(6);
	_exit(0);
}

static void restore_detach_while_madvising(bool by_shutdown)
{
	const char *sets[] = { "memory.resident_pages=128", NULL };
	int up[2], down[2];
	char buf[32] = { 0 }, *rep, cmd[64];
	uint64_t t0;
	pid_t child;

	td_must_start(&fmd, sets);
	cr_assert_eq(pipe(up), 0);
	cr_assert_eq(pipe(down), 0);
	child = fork_client();
	if (child == 0)
		madvise_client(up[1], down[0]);
	cr_assert_gt(read(up[0], buf, sizeof(buf) - 1), 0, "the client did not register");
	cr_assert_gt(td_stat(&fmd, "store_bytes"), 0, "nothing was evicted");
	cr_assert_eq(write(down[1], "m", 1), 1);
	td_sleep_ms(200);   /* let REMOVE events pile up */
	t0 = fm_now_ns();
	if (by_shutdown) {
		cr_expect_eq(td_stop(&fmd), 0, "fluidmemd did not stop cleanly");
	} else {
		snprintf(cmd, sizeof(cmd), "v1 detach %lu --force", strtoul(buf, NULL, 10));
		rep = td_ctl(&fmd, "%s", cmd);
		cr_expect(rep && strstr(rep, "\"ok\":true"), "%s", rep);
		free(rep);
		cr_expect_eq(td_stat(&fmd, "regions"), 0);
	}
	cr_expect_lt(fm_now_ns() - t0, 10000000000ull, "the restoring detach took %.1f s",
		     (double)(fm_now_ns() - t0) / 1e9);
	cr_assert_eq(write(down[1], "g", 1), 1);
	cr_expect_eq(await_child(child, 20000), 0, "the client's madvise or reads blocked after the detach");
	if (!by_shutdown)
		td_expect_stop(&fmd);
}

/* Issue 8 finding 4: the old restoring detach stopped reading the uffd before
 * the shards handed pages back, so a REMOVE made meanwhile was never read,
 * every UFFDIO_COPY returned EAGAIN forever, and shutdown never finished. */
Test(hostile_dataplane, forced_detach_while_madvising, .timeout = 90)
{
	restore_detach_while_madvising(false);
}

Test(hostile_dataplane, shutdown_while_madvising, .timeout = 90)
{
	restore_detach_while_madvising(true);
}

/* The detach that does not restore (shutdown --drop) drops a live client's
 * stored pages. It must then leave the range registered: a touch of a
 * dropped page waits (until the client exits) instead of reading zeros. */
Test(hostile_dataplane, dropping_shutdown_never_reads_zeros, .timeout = 60)
{
	const char *sets[] = { "memory.resident_pages=64", NULL };
	int up[2], down[2];
	char buf[8];
	pid_t child;
	char *rep;

	td_must_start(&fmd, sets);
	cr_assert_eq(pipe(up), 0);
	cr_assert_eq(pipe(down), 0);
	child = fork_client();
	if (child == 0) {
		struct fm_client *c = fm_connect(fmd.reg);
		struct fm_region *r = c ? fm_region_create(c, 1024 * PAGE, "drop") : NULL;
		uint8_t *p;

		if (!r)
			_exit(2);
		p = fm_region_addr(r);
		for (uint64_t pg = 0; pg < 1024; pg++)
			stamp(p, pg, 3);
		if (write(up[1], "s", 1) != 1 || read(down[0], buf, 1) != 1)
			_exit(4);
		/* Page 0 was evicted long ago: it must not read as zero. */
		_exit(stamped(p, 0, 3) ? 0 : 5);
	}
	cr_assert_eq(read(up[0], buf, 1), 1);
	cr_assert_gt(td_stat(&fmd, "store_bytes"), 900 * PAGE);
	rep = td_ctl(&fmd, "v1 shutdown --drop");
	free(rep);
	for (int i = 0; i < 1000 && waitpid(fmd.pid, NULL, WNOHANG) == 0; i++)
		td_sleep_ms(10);
	cr_assert_eq(write(down[1], "g", 1), 1);
	/* Either it waits (killed here: -1) or reads the stored data back;
	 * reading zeros (5) is the one wrong answer. */
	int rc = await_child(child, 1000);
	cr_expect(rc == -1 || rc == 0, "a dropped page read as zeros (client status %d)", rc);
	fmd.pid = 0;
	if (!getenv("FM_TEST_KEEP_LOGS")) {
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fmd.dir);
		if (system(cmd) != 0) {
			/* a leftover temp dir is harmless */
		}
	}
}

/* ---- finding 9: a hole that cannot be punched ---- */

/* Issue 8 finding 9: eviction ignored fallocate(PUNCH_HOLE) failures and
 * recorded the page as STORED while it was still in the memfd. A client can
 * no longer make the punch fail (registration seals the memfd against new
 * seals, and F_SEAL_FUTURE_WRITE was the way), so the evict.punch failpoint
 * makes it fail with EPERM: every eviction must fail, be counted, and leave
 * the page resident, tracked and intact. */
Test(hostile_dataplane, punch_failure_keeps_page_resident, .timeout = 60)
{
	const char *sets[] = { "memory.resident_pages=64", NULL };
	size_t pages = 512;
	struct raw h;

	setenv("FLUIDMEM_FAILPOINTS", "evict.punch=EPERM", 1);
	td_must_start(&fmd, sets);
	unsetenv("FLUIDMEM_FAILPOINTS");
	cr_assert_eq(raw_create(&h, pages * PAGE, 0), 0, "refused: %s", h.why);
	for (uint64_t pg = 0; pg < pages; pg++)
		stamp(h.addr, pg, 9);
	td_sleep_ms(100);
	cr_expect_gt(td_stat(&fmd, "punch_errors"), 0, "no punch failure was counted");
	cr_expect_eq(td_stat(&fmd, "evictions"), 0, "a page that stayed in the memfd counted as evicted");
	cr_expect_eq(td_stat(&fmd, "resident"), (int64_t)pages, "resident pages drifted");
	cr_expect_eq(td_stat(&fmd, "store_bytes"), 0, "copies of unevicted pages stayed in the store");
	for (uint64_t pg = 0; pg < pages; pg++)
		cr_expect(stamped(h.addr, pg, 9), "page %lu lost", (unsigned long)pg);
	/* Writes after a failed eviction still reach a tracked page. */
	for (uint64_t pg = 0; pg < pages; pg++)
		stamp(h.addr, pg, 10);
	for (uint64_t pg = 0; pg < pages; pg++)
		cr_expect(stamped(h.addr, pg, 10), "page %lu lost", (unsigned long)pg);
	cr_expect_eq(td_stat(&fmd, "resident"), (int64_t)pages);
	cr_assert_eq(raw_unregister(&h), 0, "%s", h.why);
	raw_free(&h);
	td_expect_stop(&fmd);
}

/* ---- finding 7: UFFD_EVENT_FORK ---- */

/* Issue 8 finding 7: every fork of a client whose uffd has EVENT_FORK made
 * the kernel install a new uffd in the daemon, which it never closed. The
 * daemon may refuse such a uffd at registration; if it takes it, forks
 * must not grow its descriptor table. (2,000 forks of an ASan test process
 * take up to a minute, hence the timeout.) */
Test(hostile_dataplane, fork_events_leak_no_descriptor, .timeout = 180)
{
	const char *sets[] = { "memory.resident_pages=256", NULL };
	int before, after, forks = 2000;
	struct raw h;
	int rc;

	td_must_start(&fmd, sets);
	rc = raw_create(&h, 64 * PAGE, UFFD_FEATURE_EVENT_FORK);
	if (rc != 0) {
		cr_log_info("EVENT_FORK uffd refused at registration: %s", h.why);
		raw_free(&h);
		td_expect_stop(&fmd);
		return;
	}
	stamp(h.addr, 1, 1);
	before = td_count_fds(fmd.pid);
	for (int i = 0; i < forks; i++) {
		pid_t p = fork();

		cr_assert_geq(p, 0);
		if (p == 0)
			_exit(0);
		waitpid(p, NULL, 0);
	}
	cr_expect_eq(td_await_stat(&fmd, "dispatch_fork_events", forks), forks);
	after = td_count_fds(fmd.pid);
	cr_expect_lt(after - before, 8, "fluidmemd's descriptors grew from %d to %d", before, after);
	cr_expect(stamped(h.addr, 1, 1));
	cr_assert_eq(raw_unregister(&h), 0, "%s", h.why);
	raw_free(&h);
	td_expect_stop(&fmd);
}

/* ---- finding 11: acknowledged after release ---- */

/* Issue 8 finding 11: UNREGISTER was answered before the daemon let go of
 * the uffd, so the client's munmap right after raised an UNMAP event nobody
 * would read, and blocked. The client here keeps its own uffd open. */
Test(hostile_dataplane, munmap_after_unregister_does_not_block, .timeout = 60)
{
	const char *sets[] = { "memory.resident_pages=64", NULL };
	pid_t child;

	td_must_start(&fmd, sets);
	child = fork_client();
	if (child == 0) {
		struct raw h;

		if (raw_create(&h, 512 * PAGE, 0) != 0)
			_exit(2);
		for (uint64_t pg = 0; pg < 512; pg++)
			stamp(h.addr, pg, 1);
		if (raw_unregister(&h) != 0)
			_exit(3);
		alarm(10);
		if (munmap(h.addr, h.size) != 0)
			_exit(4);
		_exit(0);
	}
	cr_expect_eq(await_child(child, 20000), 0, "munmap after UNREGISTER blocked or failed");
	td_expect_stop(&fmd);
}

/* Dispatcher counters come from the dispatcher thread on request, and a
 * reset clears them there (they used to be memcpy'd by the control thread
 * while being written). */
Test(hostile_dataplane, dispatcher_stats_by_message, .timeout = 60)
{
	const char *sets[] = { "memory.resident_pages=64", NULL };
	struct fm_client *c;
	struct fm_region *r;
	char *rep;
	uint8_t *p;

	td_must_start(&fmd, sets);
	r = td_region(&fmd, &c, 256, "stats");
	p = fm_region_addr(r);
	for (uint64_t pg = 0; pg < 256; pg++)
		stamp(p, pg, 1);
	cr_expect_geq(td_stat(&fmd, "dispatch_fault_events"), 256);
	rep = td_ctl(&fmd, "v1 stats --reset");
	cr_expect(rep && strstr(rep, "\"ok\":true"), "%s", rep);
	free(rep);
	cr_expect_eq(td_stat(&fmd, "dispatch_fault_events"), 0);
	fm_region_destroy(r);
	fm_disconnect(c);
	td_expect_stop(&fmd);
}

/* ---- finding 11: a uffd that cannot be polled ---- */

/* Wait for the next reply of `ring` whose flags say `what`. */
static struct fm_msg await_reply(struct fm_ring *ring, uint32_t what)
{
	struct fm_msg m = { 0 };

	for (int i = 0; i < 5000; i++) {
		while (fm_ring_pop(ring, &m))
			if (m.flags == what)
				return m;
		usleep(1000);
	}
	cr_assert_fail("no reply %u", what);
	return m;
}

/* Issue 8 finding 11: a failed EPOLL_CTL_ADD was only logged, so the region
 * went live and its faults were never read. The dispatcher must refuse the
 * attach with the reason (the control plane then refuses the registration
 * with it). Unit level: a descriptor epoll refuses (a regular file, EPERM)
 * cannot reach the dispatcher through registration. */
Test(hostile_dataplane, unpollable_uffd_fails_attach, .timeout = 30)
{
	struct fm_config cfg;
	struct shard *sh;
	struct fm_doorbell bell;
	struct dispatcher *d;
	struct uffd_region *r = calloc(1, sizeof(*r));
	struct fm_msg m;
	size_t pages = 512;

	fm_config_defaults(&cfg);
	cfg.shard_count = 1;
	cfg.shard_cpus_n = 0;
	cfg.resident_pages = 64;
	cr_assert_eq(fm_doorbell_init(&bell), 0);
	bell.sleeping = 1;
	cr_assert_not_null(sh = shard_create_cfg(&cfg, 0, 64, &bell));
	struct dispatch_target t = { shard_data_ring(sh), shard_doorbell(sh), shard_discards_routed(sh) };
	cr_assert_not_null(d = dispatcher_create(&t, 1, -1, 64, 0, &bell));
	cr_assert_eq(shard_start(sh), 0);
	cr_assert_eq(dispatcher_start(d), 0);

	r->memfd = memfd_create("unpollable", MFD_CLOEXEC);
	cr_assert_eq(ftruncate(r->memfd, (off_t)(pages * PAGE)), 0);
	r->view = mmap(NULL, pages * PAGE, PROT_READ, MAP_SHARED, r->memfd, 0);
	r->uffd = memfd_create("not-a-uffd", MFD_CLOEXEC);   /* empty: reads see EOF */
	r->base = 1ull << 32;
	r->npages = pages;
	r->id = 11;
	cr_assert_eq(region_table_publish(r), 0);
	cr_assert_eq(dispatcher_attach(d, r), 0);
	m = await_reply(dispatcher_reply_ring(d), FM_MSG_REGION_ADD);
	cr_expect_eq(m.done.result, -EPERM, "the dispatcher took a uffd it cannot poll (%lld)",
		     (long long)m.done.result);
	cr_expect_eq(m.done.detail, (uint64_t)(uintptr_t)r);
	m = await_reply(shard_reply_ring(sh), FM_MSG_REGION_ADD);
	cr_expect_eq(m.done.result, 0);

	/* The control plane's answer to a refusal: detach, then forget. */
	cr_assert_eq(dispatcher_detach(d, r, false), 0);
	await_reply(shard_reply_ring(sh), FM_MSG_REGION_DEL);
	cr_assert_eq(dispatcher_forget(d, r, true), 0);
	await_reply(dispatcher_reply_ring(d), FM_MSG_REGION_FORGET);

	m = (struct fm_msg){ .type = FM_MSG_STOP };
	cr_assert(fm_ring_push(shard_ctl_ring(sh), &m));
	fm_doorbell_ring(shard_doorbell(sh));
	dispatcher_destroy(d);
	shard_destroy(sh);
	region_table_unpublish(r);
	region_release(r);
	fm_doorbell_destroy(&bell);
}
