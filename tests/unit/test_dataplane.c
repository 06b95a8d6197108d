/* Black-box tests of the dataplane: the real fluidmemd, real clients
 * through libfluidmem, and attempts to lose data under eviction. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "base/base.h"
#include "client/fluidmem.h"
#include "harness.h"
#include "mirror.h"

#define PAGE 4096u

static struct td fmd;

/* ---- writers racing eviction, checked against a mirror ---- */

Test(dataplane, writers_race_eviction_8x_budget, .timeout = 240)
{
	const char *sets[] = { "memory.resident_pages=512", NULL };
	struct fm_client *c;
	struct fm_region *r;
	uint64_t errors;

	td_must_start(&fmd, sets);
	r = td_region(&fmd, &c, 4096, "stress");
	struct storm st;

	storm_start(&st, fm_region_addr(r), 4096, 4, 30000);
	errors = storm_finish(&st);
	cr_expect_eq(errors, 0, "%lu pages differ from the mirror", (unsigned long)errors);
	int64_t ev = td_stat(&fmd, "evictions");
	cr_expect_gt(ev, 10000, "only %ld evictions: the test did not stress eviction", (long)ev);
	cr_expect_leq(td_stat(&fmd, "resident"), 512 + 2 * 32, "budget not honoured");
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	fm_region_destroy(r);
	fm_disconnect(c);
	td_expect_stop(&fmd);
}

/* Atomic increments on shared pages from several threads: a write lost in
 * an eviction window would show as a short count. */
struct incr_arg {
	_Atomic uint64_t *base;
	size_t pages;
	uint64_t rounds;
	uint64_t seed;
};

static void *incr_main(void *arg)
{
	struct incr_arg *a = arg;
	uint64_t x = a->seed;

	for (uint64_t i = 0; i < a->rounds; i++) {
		x = fm_mix64(x + i);
		atomic_fetch_add(&a->base[(x % a->pages) * (PAGE / 8) + (x >> 40) % 4], 1);
	}
	return NULL;
}

Test(dataplane, shared_counters_survive_eviction, .timeout = 240)
{
	const char *sets[] = { "memory.resident_pages=64", NULL };
	struct fm_client *c;
	struct fm_region *r;
	pthread_t th[4];
	struct incr_arg a[4];
	uint64_t total = 0, want = 0;

	td_must_start(&fmd, sets);
	r = td_region(&fmd, &c, 512, "counters");
	for (int i = 0; i < 4; i++) {
		a[i] = (struct incr_arg){ fm_region_addr(r), 512, 20000, 99 + (uint64_t)i };
		want += a[i].rounds;
		pthread_create(&th[i], NULL, incr_main, &a[i]);
	}
	/* and an operator evicting on top of the budget */
	for (int i = 0; i < 50; i++)
		free(td_ctl(&fmd, "v1 evict 32"));
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	for (size_t p = 0; p < 512; p++)
		for (size_t k = 0; k < 4; k++)
			total += ((uint64_t *)fm_region_addr(r))[p * (PAGE / 8) + k];
	cr_expect_eq(total, want, "counted %lu increments, made %lu", (unsigned long)total,
		     (unsigned long)want);
	cr_expect_gt(td_stat(&fmd, "evictions"), 1000);
	cr_expect_gt(td_stat(&fmd, "wp_faults"), 0, "no writer ever met an eviction window");
	fm_region_destroy(r);
	fm_disconnect(c);
	td_expect_stop(&fmd);
}

Test(dataplane, zero_pages_are_not_stored, .timeout = 60)
{
	const char *sets[] = { "memory.resident_pages=64", NULL };
	struct fm_client *c;
	struct fm_region *r;
	volatile uint8_t *p;
	uint64_t sum = 0;

	td_must_start(&fmd, sets);
	r = td_region(&fmd, &c, 1024, "zeros");
	p = fm_region_addr(r);
	for (size_t i = 0; i < 1024; i++)   /* read-touch: zero-filled pages */
		sum += p[i * PAGE];
	for (size_t i = 0; i < 1024; i++)
		sum += p[i * PAGE];
	cr_expect_eq(sum, 0);
	cr_expect_gt(td_stat(&fmd, "evict_zero"), 900);
	cr_expect_eq(td_stat(&fmd, "store_puts"), 0, "an all-zero page was written to the store");
	cr_expect_eq(td_stat(&fmd, "store_bytes"), 0);
	fm_region_destroy(r);
	fm_disconnect(c);
	td_expect_stop(&fmd);
}

Test(dataplane, discard_reads_zero_and_frees_store, .timeout = 60)
{
	const char *sets[] = { "memory.resident_pages=128", NULL };
	struct fm_client *c;
	struct fm_region *r;
	uint8_t *p;

	td_must_start(&fmd, sets);
	r = td_region(&fmd, &c, 2048, "discard");
	p = fm_region_addr(r);
	for (size_t i = 0; i < 2048; i++)
		stamp(p + i * PAGE, i, 1);
	int64_t before = td_stat(&fmd, "store_bytes");
	cr_assert_gt(before, 1500 * PAGE, "pages were not evicted to the store");
	cr_assert_eq(fm_region_discard(r, 0, 1024 * PAGE), 0);
	for (size_t i = 0; i < 2048; i++)
		cr_expect(check(p + i * PAGE, i, i < 1024 ? 0 : 1), "page %zu wrong after discard", i);
	/* Only pages 1024.. can be stored now, minus the resident ones. */
	int64_t after = td_stat(&fmd, "store_bytes"), discarded = td_stat(&fmd, "discarded");
	cr_expect_leq(after, 1024 * (int64_t)PAGE,
		      "discarded pages still held by the store: before %ld pages, after %ld, "
		      "discarded %ld, store errors %ld",
		      (long)(before / PAGE), (long)(after / PAGE), (long)discarded,
		      (long)td_stat(&fmd, "store_errors"));
	cr_expect_gt(discarded, 900);
	cr_expect_eq(fm_region_discard(r, 1, PAGE), -EINVAL);
	cr_expect_eq(fm_region_discard(r, 0, 4096 * PAGE), -EINVAL);
	fm_region_destroy(r);
	fm_disconnect(c);
	td_expect_stop(&fmd);
}

Test(dataplane, partial_munmap_drops_pages, .timeout = 60)
{
	const char *sets[] = { "memory.resident_pages=128", NULL };
	struct fm_client *c;
	struct fm_region *r;
	uint8_t *p;

	td_must_start(&fmd, sets);
	r = td_region(&fmd, &c, 2048, "unmap");
	p = fm_region_addr(r);
	for (size_t i = 0; i < 2048; i++)
		stamp(p + i * PAGE, i, 1);
	cr_assert_eq(munmap(p + 1024 * PAGE, 1024 * PAGE), 0);
	for (size_t i = 0; i < 1024; i++)
		cr_expect(check(p + i * PAGE, i, 1), "page %zu lost", i);
	cr_expect_gt(td_stat(&fmd, "discarded"), 900);
	cr_expect_eq(td_stat(&fmd, "dispatch_unmap_events"), 1);
	fm_region_destroy(r);
	fm_disconnect(c);
	td_expect_stop(&fmd);
}

Test(dataplane, full_store_keeps_pages_resident, .timeout = 60)
{
	/* 1 MiB of store = 256 pages; the region needs far more. */
	const char *sets[] = { "memory.resident_pages=64", "store.local.max_mib=1", NULL };
	struct fm_client *c;
	struct fm_region *r;
	uint8_t *p;

	td_must_start(&fmd, sets);
	r = td_region(&fmd, &c, 1024, "full");
	p = fm_region_addr(r);
	for (size_t i = 0; i < 1024; i++)
		stamp(p + i * PAGE, i, 7);
	for (size_t i = 0; i < 1024; i++)
		cr_expect(check(p + i * PAGE, i, 7), "page %zu lost with a full store", i);
	cr_expect_gt(td_stat(&fmd, "evict_refused"), 0);
	cr_expect_gt(td_stat(&fmd, "resident"), 64, "overshoot not visible in stats");
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	fm_region_destroy(r);
	fm_disconnect(c);
	td_expect_stop(&fmd);
}

Test(dataplane, many_regions_and_clients, .timeout = 120)
{
	const char *sets[] = { "memory.resident_pages=256", NULL };
	struct fm_client *c[4];
	struct fm_region *r[4][3];

	td_must_start(&fmd, sets);
	for (int i = 0; i < 4; i++) {
		c[i] = fm_connect(fmd.reg);
		cr_assert_not_null(c[i]);
		for (int j = 0; j < 3; j++) {
			r[i][j] = fm_region_create(c[i], (size_t)(100 + 300 * j) * PAGE, "multi");
			cr_assert_not_null(r[i][j], "%s", fm_client_error(c[i]));
		}
	}
	for (int round = 1; round <= 2; round++)
		for (int i = 0; i < 4; i++)
			for (int j = 0; j < 3; j++)
				for (size_t k = 0; k < (size_t)(100 + 300 * j); k++)
					stamp((uint8_t *)fm_region_addr(r[i][j]) + k * PAGE, k + 100000u * (unsigned)(i * 3 + j), (uint32_t)round);
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 3; j++)
			for (size_t k = 0; k < (size_t)(100 + 300 * j); k++)
				cr_expect(check((uint8_t *)fm_region_addr(r[i][j]) + k * PAGE,
						k + 100000u * (unsigned)(i * 3 + j), 2));
	char *rep = td_ctl(&fmd, "v1 regions");
	int n = 0;
	for (char *q = rep; (q = strstr(q, "\"id\":")); q++)
		n++;
	free(rep);
	cr_expect_eq(n, 12);
	for (int i = 0; i < 4; i++)
		fm_disconnect(c[i]);   /* destroys its regions */
	cr_expect_eq(td_stat(&fmd, "regions"), 0);
	cr_expect_eq(td_stat(&fmd, "store_bytes"), 0);
	td_expect_stop(&fmd);
}

Test(dataplane, register_existing_mapping, .timeout = 60)
{
	const char *sets[] = { "memory.resident_pages=64", NULL };
	struct fm_client *c;
	struct fm_region *r;
	int memfd = memfd_create("external", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	uint8_t *p;

	td_must_start(&fmd, sets);
	cr_assert_eq(ftruncate(memfd, 512 * PAGE), 0);
	p = mmap(NULL, 512 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	cr_assert_neq(p, MAP_FAILED);
	c = fm_connect(fmd.reg);
	cr_assert_not_null(c);
	cr_expect_null(fm_region_register(c, p + 1, 512 * PAGE, memfd, "bad"));
	cr_expect_eq(errno, EINVAL);
	r = fm_region_register(c, p, 512 * PAGE, memfd, "external");
	cr_assert_not_null(r, "%s", fm_client_error(c));
	cr_expect_eq(fm_region_addr(r), p);
	for (size_t i = 0; i < 512; i++)
		stamp(p + i * PAGE, i, 3);
	for (size_t i = 0; i < 512; i++)
		cr_expect(check(p + i * PAGE, i, 3), "page %zu", i);
	cr_expect_gt(td_stat(&fmd, "evictions"), 400);
	/* Registration sealed the memfd: it can no longer shrink under the
	 * daemon's reads (which would SIGBUS the daemon). */
	cr_expect_eq(ftruncate(memfd, PAGE), -1);
	cr_expect_eq(errno, EPERM);
	cr_assert_eq(fm_region_destroy(r), 0);
	/* The caller's mapping stays; it is no longer served by fluidmem. */
	p[0] = 1;
	cr_expect_eq(p[0], 1);
	munmap(p, 512 * PAGE);
	close(memfd);
	fm_disconnect(c);
	td_expect_stop(&fmd);
}
