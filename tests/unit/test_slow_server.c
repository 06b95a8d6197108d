/* A slow or dead memcached server must not stall a shard (issue 11 goal
 * 5). fluidmemd on three memcached servers, one shard; the test knows
 * which server holds each page (the same ketama list in a kv handle of its
 * own). One thread touches a page whose server is stopped (SIGSTOP: its
 * connections are accepted, nothing answers) and waits, parked; meanwhile
 * the main thread reads pages held by the two healthy servers, and must get
 * them (right content) while that thread still waits. After SIGCONT the
 * parked page arrives intact: never a zero page, never SIGBUS.
 *
 * It also prints the healthy faults' rate and worst wait before and during
 * the stop (bench/README.md, "Store I/O under a slow server"); with
 * FM_TEST_FLUIDMEMD naming another daemon binary (a baseline build) the
 * numbers are that daemon's. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>

#include "config_params.h"
#include "base/base.h"
#include "client/fluidmem.h"
#include "ctl/config.h"
#include "harness.h"
#include "kv/kv.h"
#include "memcached_harness.h"

#define PAGE 4096u
#define NPAGES 2048
#define BUDGET 256
#define IO_MS 200
#define HEALTHY_TOUCHES 3000

static struct td fmd;
static struct mcd srv[3];
static char servers[400];

static uint64_t stamp_of(uint64_t page)
{
	return fm_mix64(page * 0x9e3779b97f4a7c15ull + 5);
}

static void start_all(unsigned replicas)
{
	static char sv_set[450], rep_set[64];
	const char *sets[] = { "store.backend=memcached", sv_set, rep_set,
			       "shards.count=1", "shards.cpus=[1]",
			       "memory.resident_pages=256", "store.memcached.retries=10",
			       "store.memcached.io_timeout_ms=200", NULL };
	size_t len = 0;

	for (unsigned i = 0; i < 3; i++) {
		cr_assert_eq(mcd_start(&srv[i], 64, false), 0,
			     "cannot start memcached (scripts/test installs it)");
		len += (size_t)snprintf(servers + len, sizeof(servers) - len, "%s%s", i ? "," : "",
					srv[i].addr);
	}
	snprintf(sv_set, sizeof(sv_set), "store.memcached.servers=\"%s\"", servers);
	snprintf(rep_set, sizeof(rep_set), "store.memcached.replicas=%u", replicas);
	cr_assert_eq(td_start(&fmd, sets), 0, "fluidmemd did not start over memcached");
}

static void stop_all(void)
{
	if (fmd.pid > 0) {
		int status = td_stop(&fmd);

		if (status != 0)
			td_dump_log(&fmd);
		cr_expect_eq(status, 0, "fluidmemd exited with %d", status);
	}
	for (unsigned i = 0; i < 3; i++) {
		if (srv[i].pid > 0)
			kill(srv[i].pid, SIGCONT);
		mcd_stop(&srv[i]);
	}
}

/* The primary server of each page of region id. */
static void owners(uint64_t id, int *own)
{
	struct fm_config c;
	struct kv_store *kv;

	fm_config_defaults(&c);
	snprintf(c.store_backend, sizeof(c.store_backend), "memcached");
	snprintf(c.mc.servers, sizeof(c.mc.servers), "%s", servers);
	kv = kv_open_cfg(&c, 0);
	cr_assert_not_null(kv);
	for (uint64_t p = 0; p < NPAGES; p++)
		own[p] = kv_memcached_server_of(kv, (struct kv_key){ id, p }, 0);
	kv_close(kv);
}

/* How long the stop may last at most (FM_TEST_STOP_S, default 60 s): a
 * daemon that stalls would otherwise wait out every retry of every page. */
static uint64_t stop_limit_s(void)
{
	const char *e = getenv("FM_TEST_STOP_S");

	return e && atoi(e) > 0 ? (uint64_t)atoi(e) : 60;
}

struct waiter {
	volatile uint64_t *words;
	const uint64_t *pages;
	size_t n;
	atomic_int started, done;
	size_t bad, bus;
};

/* A poisoned page (SIGBUS) is counted, not fatal: a baseline daemon gives
 * up on the stopped server's pages, and its numbers are still printed. */
static _Thread_local sigjmp_buf bus_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

static void *touch_stopped(void *arg)
{
	struct waiter *w = arg;

	atomic_store(&w->started, 1);
	for (volatile size_t i = 0; i < w->n; i++) {
		if (sigsetjmp(bus_jmp, 1)) {
			w->bus++;
			continue;
		}
		w->bad += w->words[w->pages[i] * (PAGE / 8)] != stamp_of(w->pages[i]);
	}
	atomic_store(&w->done, 1);
	return NULL;
}

/* n reads of random healthy pages (fewer if the waiter w is done or the
 * deadline passed): rate (per s) and worst wait (ms). Returns the reads
 * whose content was wrong; *done the reads made. */
static size_t read_healthy(volatile uint64_t *words, const uint64_t *healthy, size_t nh, size_t n,
			   uint64_t *seed, double *rate, double *worst_ms, const struct waiter *w,
			   size_t *done)
{
	uint64_t t0 = fm_now_ns(), worst = 0, deadline = t0 + stop_limit_s() * 1000000000ull;
	size_t bad = 0, i;

	for (i = 0; i < n; i++) {
		uint64_t p = healthy[fm_mix64((*seed)++) % nh], t = fm_now_ns();

		bad += words[p * (PAGE / 8)] != stamp_of(p);
		worst = FM_MAX(worst, fm_now_ns() - t);
		if (w && (atomic_load(&w->done) || fm_now_ns() > deadline))
			break;   /* the stop is over for the waiter, or too long */
	}
	*done = i;
	*rate = (double)i / ((double)(fm_now_ns() - t0) / 1e9);
	*worst_ms = (double)worst / 1e6;
	return bad;
}

Test(slow_server, healthy_servers_pages_served_while_one_is_stopped, .timeout = 240)
{
	static int own[NPAGES];
	static uint64_t healthy[NPAGES], stopped[NPAGES];
	struct fm_client *c;
	struct fm_region *r;
	volatile uint64_t *words;
	size_t nh = 0, ns = 0, bad, done0, done1;
	uint64_t seed = 1;
	int64_t fetches0, parked;
	double rate0, worst0, rate1, worst1;
	struct waiter w = { 0 };
	pthread_t t;

	start_all(0);
	r = td_region(&fmd, &c, NPAGES, "slow-server");
	words = fm_region_addr(r);
	owners(fm_region_id(r), own);
	for (uint64_t p = 0; p < NPAGES; p++) {
		words[p * (PAGE / 8)] = stamp_of(p);
		if (own[p] == 1)
			stopped[ns++] = p;
		else
			healthy[nh++] = p;
	}
	cr_assert_gt(ns, NPAGES / 10);
	cr_assert_gt(nh, NPAGES / 2);
	cr_assert_gt(td_stat(&fmd, "store_puts"), NPAGES / 2, "pages were not evicted");

	bad = read_healthy(words, healthy, nh, HEALTHY_TOUCHES, &seed, &rate0, &worst0, NULL,
			   &done0);
	cr_expect_eq(bad, 0);

	cr_assert_eq(mcd_pause(&srv[1]), 0);
	w.words = words;
	w.pages = stopped;
	w.n = ns;
	fetches0 = td_stat(&fmd, "fetches");
	signal(SIGBUS, on_sigbus);
	cr_assert_eq(pthread_create(&t, NULL, touch_stopped, &w), 0);
	while (!atomic_load(&w.started))
		td_sleep_ms(1);
	bad = read_healthy(words, healthy, nh, HEALTHY_TOUCHES, &seed, &rate1, &worst1, &w,
			   &done1);
	cr_expect_eq(bad, 0, "%zu healthy pages wrong during the stop", bad);
	parked = td_stat(&fmd, "parked");
	fprintf(stderr,
		"slow_server: healthy-server reads: before the stop %.0f/s (worst %.1f ms), "
		"during it %.0f/s (worst %.1f ms, %zu of %d reads); fetches during the stop %lld; parked %lld; "
		"the stopped server's reader %s (%zu SIGBUS)\n",
		rate0, worst0, rate1, worst1, done1, HEALTHY_TOUCHES, (long long)(td_stat(&fmd, "fetches") - fetches0),
		(long long)parked, atomic_load(&w.done) ? "finished" : "still waits", w.bus);
	/* The point: the shard served them while a fault of the stopped
	 * server's pages waited. */
	cr_expect(!atomic_load(&w.done), "the stopped server's page did not wait (%d pages)",
		  (int)ns);
	cr_expect_eq(done1, HEALTHY_TOUCHES, "only %zu healthy reads during the stop", done1);
	cr_expect_gt(parked, 0, "no fault was parked");
	cr_expect_gt(td_stat(&fmd, "fetches") - fetches0, HEALTHY_TOUCHES / 4,
		     "healthy pages were not fetched during the stop");

	mcd_resume(&srv[1]);
	pthread_join(t, NULL);
	signal(SIGBUS, SIG_DFL);
	cr_expect_eq(w.bad, 0, "%zu pages of the stopped server came back wrong", w.bad);
	cr_expect_eq(w.bus, 0, "%zu pages of the stopped server poisoned", w.bus);
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	fm_region_destroy(r);
	fm_disconnect(c);
	stop_all();
}

/* A killed server with replicas = 1: every page still read from its
 * replica, nothing poisoned, nothing wrong. */
Test(slow_server, killed_server_with_a_replica_loses_nothing, .timeout = 240)
{
	struct fm_client *c;
	struct fm_region *r;
	volatile uint64_t *words;
	size_t bad = 0;

	start_all(1);
	r = td_region(&fmd, &c, NPAGES, "dead-server");
	words = fm_region_addr(r);
	for (uint64_t p = 0; p < NPAGES; p++)
		words[p * (PAGE / 8)] = stamp_of(p);
	cr_assert_gt(td_stat(&fmd, "store_puts"), NPAGES / 2, "pages were not evicted");
	mcd_kill(&srv[1], SIGKILL);
	for (int pass = 0; pass < 3; pass++)
		for (uint64_t p = 0; p < NPAGES; p++)
			bad += words[p * (PAGE / 8)] != stamp_of(p);
	cr_expect_eq(bad, 0, "%zu pages wrong after a server died", bad);
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	/* Sequential passes: prefetch (its multi-get skipping the dead
	 * server) brings many of the pages, demand fetches the rest. */
	cr_expect_gt(td_stat(&fmd, "fetches") + td_stat(&fmd, "prefetched"), NPAGES,
		     "the passes were not served from the store");
	fm_region_destroy(r);
	fm_disconnect(c);
	stop_all();
}
