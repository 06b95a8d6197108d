/* Black-box tests of fluidmemd over real memcached servers that each test
 * starts (and stops) itself: pages must survive eviction, a full server, a
 * killed replica, and when the only server dies they must fail loudly
 * (SIGBUS), never come back as zeros. Zero and unchanged pages must cost no
 * store write. */
#include <criterion/criterion.h>
#include <libmemcached/memcached.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "base/base.h"
#include "client/fluidmem.h"
#include "ctl/config.h"
#include "harness.h"
#include "mirror.h"
#include "kv/kv.h"
#include "memcached_harness.h"

#define PAGE 4096u

static struct td fmd;
static struct mcd srv[2];

static void start_daemon(const char *const *extra)
{
	static char servers[300];
	const char *sets[32];
	int n = 0;

	snprintf(servers, sizeof(servers), "store.memcached.servers=%s%s%s", srv[0].addr,
		 srv[1].pid ? "," : "", srv[1].pid ? srv[1].addr : "");
	sets[n++] = "store.backend=memcached";
	sets[n++] = servers;
	for (int i = 0; extra && extra[i] && n < 30; i++)
		sets[n++] = extra[i];
	sets[n] = NULL;
	cr_assert_eq(td_start(&fmd, sets), 0, "fluidmemd did not start over memcached");
}

static void start_server(int i, unsigned mib, bool unix_socket)
{
	cr_assert_eq(mcd_start(&srv[i], mib, unix_socket), 0,
		     "cannot start memcached (scripts/test installs it)");
}

/* One memcached of mib MiB, the daemon on it with `sets`, and a region of
 * `pages` pages from a new client. */
static struct fm_region *one_server_region(unsigned mib, bool unix_socket, const char *const *sets,
					   struct fm_client **c, size_t pages, const char *name)
{
	start_server(0, mib, unix_socket);
	start_daemon(sets);
	return td_region(&fmd, c, pages, name);
}

static void stop_all(void)
{
	if (fmd.pid > 0) {
		int status = td_stop(&fmd);

		if (status != 0)
			td_dump_log(&fmd);
		cr_expect_eq(status, 0, "fluidmemd exited with %d", status);
	}
	mcd_stop(&srv[0]);
	mcd_stop(&srv[1]);
}

/* ---- tests ---- */

static void writers_8x_budget(bool binary, bool unix_socket)
{
	const char *sets[] = { "memory.resident_pages=512",
			       binary ? "store.memcached.binary_protocol=true"
				      : "store.memcached.binary_protocol=false",
			       NULL };
	struct fm_client *c;
	struct fm_region *r;
	struct storm st;
	uint64_t errors;

	r = one_server_region(64, unix_socket, sets, &c, 4096, "mc-stress");
	storm_start(&st, fm_region_addr(r), 4096, 4, 30000);
	errors = storm_finish(&st);
	cr_expect_eq(errors, 0, "%lu pages differ from the mirror", (unsigned long)errors);
	cr_expect_gt(td_stat(&fmd, "evictions"), 10000, "the test did not stress eviction");
	cr_expect_leq(td_stat(&fmd, "resident"), 512 + 2 * 32, "budget not honoured");
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	cr_expect_eq(td_stat(&fmd, "evict_refused"), 0);
	cr_expect_gt(td_stat(&fmd, "evict_clean"), 0, "read-only refaults were all rewritten");
	fm_region_destroy(r);
	fm_disconnect(c);
	stop_all();
}

Test(memcached, writers_race_eviction_8x_budget, .timeout = 240)
{
	writers_8x_budget(true, false);
}

Test(memcached, writers_8x_budget_ascii_unix_socket, .timeout = 240)
{
	writers_8x_budget(false, true);
}

Test(memcached, full_server_refuses_and_loses_nothing, .timeout = 120)
{
	/* 2 MiB of memcached holds a few hundred pages; the region needs more. */
	const char *sets[] = { "memory.resident_pages=64", NULL };
	struct fm_client *c;
	struct fm_region *r;
	uint8_t *p;
	size_t bad = 0;

	r = one_server_region(2, false, sets, &c, 1536, "mc-full");
	p = fm_region_addr(r);
	for (size_t i = 0; i < 1536; i++)
		stamp(p + i * PAGE, i, 7);
	for (size_t i = 0; i < 1536; i++)
		bad += !check(p + i * PAGE, i, 7);
	cr_expect_eq(bad, 0, "%zu pages lost with a full server", bad);
	cr_expect_gt(td_stat(&fmd, "evict_refused"), 0, "the server never refused");
	cr_expect_gt(td_stat(&fmd, "resident"), 64, "overshoot not visible in stats");
	cr_expect_gt(td_stat(&fmd, "store_puts"), 100, "nothing was stored at all");
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	fm_region_destroy(r);
	fm_disconnect(c);
	stop_all();
}

Test(memcached, replica_killed_mid_run, .timeout = 240)
{
	const char *sets[] = { "memory.resident_pages=256", "store.memcached.replicas=1", NULL };
	struct fm_client *c;
	struct fm_region *r;
	struct storm st;
	uint64_t errors, faults_at_kill;

	start_server(0, 64, false);
	start_server(1, 64, false);
	start_daemon(sets);
	r = td_region(&fmd, &c, 2048, "mc-replica");
	storm_start(&st, fm_region_addr(r), 2048, 4, 40000);
	while (storm_progress(&st) < 40000)   /* a quarter of the run */
		lb_sleep_ms(5);
	faults_at_kill = (uint64_t)td_stat(&fmd, "faults");
	mcd_kill(&srv[0], SIGKILL);
	errors = storm_finish(&st);
	cr_expect_eq(errors, 0, "%lu pages differ after a replica died", (unsigned long)errors);
	cr_expect_gt((uint64_t)td_stat(&fmd, "faults"), faults_at_kill + 1000,
		     "faults stopped being served after the kill");
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	cr_expect_gt(td_stat(&fmd, "evictions"), 5000);
	fm_region_destroy(r);
	fm_disconnect(c);
	stop_all();
}

static sigjmp_buf bus_jmp;
static volatile sig_atomic_t bus_seen;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	bus_seen++;
	siglongjmp(bus_jmp, 1);
}

/* Read one word of the page; 1 when that raised SIGBUS. */
static int touch_bus(const volatile uint64_t *w, uint64_t *out)
{
	if (sigsetjmp(bus_jmp, 1))
		return 1;
	*out = *w;
	return 0;
}

Test(memcached, only_server_killed_gives_sigbus_not_zeros, .timeout = 120)
{
	const char *sets[] = { "memory.resident_pages=64", "store.memcached.retries=1",
			       "store.memcached.retry_delay_ms=1", NULL };
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	struct fm_client *c;
	struct fm_region *r;
	uint8_t *p;
	size_t bus = 0, good = 0, bad = 0;
	uint64_t v;

	r = one_server_region(64, false, sets, &c, 512, "mc-dead");
	p = fm_region_addr(r);
	for (size_t i = 0; i < 512; i++)
		stamp(p + i * PAGE, i, 3);
	cr_assert_gt(td_stat(&fmd, "store_puts"), 300, "pages were not evicted to memcached");
	mcd_kill(&srv[0], SIGKILL);
	sigaction(SIGBUS, &sa, NULL);
	for (size_t i = 0; i < 512; i++) {
		if (touch_bus((const volatile uint64_t *)(p + i * PAGE), &v)) {
			bus++;
			/* and again: a poisoned page stays poisoned */
			cr_expect(touch_bus((const volatile uint64_t *)(p + i * PAGE), &v),
				  "page %zu read after SIGBUS", i);
			continue;
		}
		if (check(p + i * PAGE, i, 3))
			good++;
		else
			bad++;
	}
	signal(SIGBUS, SIG_DFL);
	cr_expect_eq(bad, 0, "%zu pages came back wrong (zeroed?) instead of SIGBUS", bad);
	cr_expect_gt(bus, 300, "only %zu SIGBUS for pages held by a dead server", bus);
	cr_expect_gt(good, 0, "no resident page survived");
	cr_expect_eq(good + bus, 512);
	cr_expect(td_alive(&fmd), "fluidmemd died with its store");
	cr_expect_eq((size_t)td_stat(&fmd, "poisoned"), bus);
	fm_region_destroy(r);
	fm_disconnect(c);
	stop_all();
}

/* The number of pages of region `id` whose key the server holds. */
static size_t keys_held(const struct mcd *m, uint64_t id, size_t pages)
{
	memcached_st *mc = memcached_create(NULL);
	char key[KV_MEMCACHED_KEY_LEN + 1];
	size_t held = 0;

	memcached_server_add(mc, "127.0.0.1", (in_port_t)m->port);
	for (size_t p = 0; p < pages; p++) {
		size_t len;
		uint32_t flags;
		memcached_return_t rc;
		char *v;

		kv_memcached_key((struct kv_key){ id, p }, key);
		v = memcached_get(mc, key, KV_MEMCACHED_KEY_LEN, &len, &flags, &rc);
		held += v != NULL;
		free(v);
	}
	memcached_free(mc);
	return held;
}

Test(memcached, zero_and_clean_pages_cost_no_write, .timeout = 120)
{
	const char *sets[] = { "memory.resident_pages=64", NULL };
	struct fm_client *c;
	struct fm_region *r;
	volatile uint8_t *p;
	uint64_t sum = 0;
	int64_t puts, ev0, ev1, clean, puts1;
	uint64_t id;

	r = one_server_region(64, false, sets, &c, 1024, "mc-zero-clean");
	p = fm_region_addr(r);
	id = fm_region_id(r);
	/* read-touched pages are zero: evicted without a write */
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < 1024; i++)
			sum += p[i * PAGE];
	cr_expect_eq(sum, 0);
	cr_expect_gt(td_stat(&fmd, "evict_zero"), 900);
	cr_expect_eq(td_stat(&fmd, "store_puts"), 0, "an all-zero page was written");
	/* written once, then only read: the second eviction of each is clean */
	for (size_t i = 0; i < 1024; i++)
		stamp((uint8_t *)p + i * PAGE, i, 1);
	puts = td_stat(&fmd, "store_puts");
	cr_expect_gt(puts, 900);
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < 1024; i++)
			cr_expect(check((uint8_t *)p + i * PAGE, i, 1), "page %zu", i);
	clean = td_stat(&fmd, "evict_clean");
	cr_expect_gt(clean, 1700, "clean pages were rewritten (%ld skipped)", (long)clean);
	cr_expect_lt(td_stat(&fmd, "store_puts"), puts + 100, "clean pages cost writes");
	/* half the pages dirtied, half only read: writes per eviction */
	ev0 = td_stat(&fmd, "evictions");
	puts1 = td_stat(&fmd, "store_puts");
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < 1024; i++) {
			if (i & 1)
				stamp((uint8_t *)p + i * PAGE, i, 2 + (uint32_t)pass);
			else
				cr_expect(check((uint8_t *)p + i * PAGE, i, 1));
		}
	ev1 = td_stat(&fmd, "evictions");
	double ratio = (double)(td_stat(&fmd, "store_puts") - puts1) / (double)(ev1 - ev0);
	cr_log_info("half-clean workload: %.3f store writes per evicted page (%ld evictions)",
		    ratio, (long)(ev1 - ev0));
	cr_expect_leq(ratio, 0.55, "%.3f writes per evicted page", ratio);
	/* pages that turn zero drop their stored copy */
	cr_expect_gt(keys_held(&srv[0], id, 1024), 1000);
	for (size_t i = 0; i < 1024; i++)
		memset((uint8_t *)p + i * PAGE, 0, PAGE);
	for (size_t i = 0; i < 1024; i++)
		sum += p[i * PAGE + 8];
	cr_expect_eq(sum, 0);
	cr_expect_lt(keys_held(&srv[0], id, 1024), 100,
		     "zeroed pages still have copies in memcached");
	fm_region_destroy(r);
	fm_disconnect(c);
	/* destroying the region deletes what is left */
	lb_sleep_ms(100);
	cr_expect_eq(keys_held(&srv[0], id, 1024), 0, "a freed region left pages");
	stop_all();
}

Test(memcached, restarted_server_gets_clean_pages_rewritten, .timeout = 120)
{
	/* The server restarts empty while pages are resident and clean: their
	 * next eviction must write them again rather than trust a lost copy. */
	/* No prefetch: exactly the 64 pages read back are resident. */
	const char *sets[] = { "memory.resident_pages=256", "store.memcached.retry_delay_ms=1",
			       "memory.prefetch_pages=0", NULL };
	struct fm_client *c;
	struct fm_region *r;
	uint8_t *p;
	size_t bad = 0;
	int64_t puts, clean;

	r = one_server_region(64, false, sets, &c, 512, "mc-restart");
	p = fm_region_addr(r);
	for (size_t i = 0; i < 512; i++)
		stamp(p + i * PAGE, i, 5);
	free(td_ctl(&fmd, "v1 evict 512"));
	cr_assert_eq(td_stat(&fmd, "resident"), 0);
	/* fetch 64 back: resident (below the budget), clean, copies in memcached */
	for (size_t i = 0; i < 64; i++)
		bad += !check(p + i * PAGE, i, 5);
	cr_assert_eq(td_stat(&fmd, "resident"), 64);
	cr_assert_eq(mcd_restart(&srv[0]), 0);
	puts = td_stat(&fmd, "store_puts");
	clean = td_stat(&fmd, "evict_clean");
	/* evict them (the first flush may meet the dead connection: retry) */
	for (int i = 0; i < 20 && td_stat(&fmd, "resident") > 0; i++) {
		free(td_ctl(&fmd, "v1 evict 64"));
		lb_sleep_ms(20);
	}
	cr_expect_eq(td_stat(&fmd, "resident"), 0);
	cr_expect_geq(td_stat(&fmd, "store_puts"), puts + 64, "lost copies were not rewritten");
	cr_expect_eq(td_stat(&fmd, "evict_clean"), clean, "a page whose copy is gone was skipped");
	for (size_t i = 0; i < 64; i++)
		bad += !check(p + i * PAGE, i, 5);
	cr_expect_eq(bad, 0, "%zu clean pages lost across a server restart", bad);
	/* the other 448 pages were only in the restarted server: untouched here,
	 * they would be poisoned (only_server_killed_gives_sigbus_not_zeros) */
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	fm_region_destroy(r);
	fm_disconnect(c);
	stop_all();
}

Test(memcached, shipped_config_loads)
{
	struct fm_config cfg;
	char err[256];

	fm_config_defaults(&cfg);
	cr_assert_eq(fm_config_load_file(&cfg, FM_SOURCE_DIR "/configs/memcached.toml", err,
					 sizeof(err)), 0, "%s", err);
	cr_assert_eq(fm_config_validate(&cfg, err, sizeof(err)), 0, "%s", err);
	cr_expect_str_eq(cfg.store_backend, "memcached");
	cr_expect(cfg.mc.binary);
	cr_expect_eq(cfg.mc.distribution, FM_MC_KETAMA);
}
