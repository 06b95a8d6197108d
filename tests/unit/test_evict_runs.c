/* Eviction in runs (src/shard/evict.c) and eviction ahead of demand: the
 * real fluidmemd, a real client, and every page checked afterwards. A run
 * is one write-protect and one punch over many pages, so these tests look
 * for what a range could get wrong: a refused page in the middle of a run,
 * a run reaching into the next stripe (another shard's), writers left
 * blocked, and the free watermarks. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "base/base.h"
#include "client/fluidmem.h"
#include "harness.h"

#define PAGE 4096u

static struct td fmd;

static void start(const char *const *sets)
{
	cr_assert_eq(td_start(&fmd, sets), 0, "fluidmemd did not start");
}

static uint64_t word(uint64_t pg, uint64_t v, size_t i)
{
	return fm_mix64(pg ^ (v << 40)) + i;
}

static void stamp(volatile uint64_t *base, uint64_t pg, uint64_t v)
{
	for (size_t i = 0; i < PAGE / 8; i++)
		base[pg * (PAGE / 8) + i] = word(pg, v, i);
}

/* Pages whose content is not stamp(pg, v). */
static uint64_t check(volatile uint64_t *base, uint64_t first, uint64_t n, uint64_t v)
{
	uint64_t bad = 0;

	for (uint64_t pg = first; pg < first + n; pg++)
		for (size_t i = 0; i < PAGE / 8; i++)
			if (base[pg * (PAGE / 8) + i] != word(pg, v, i)) {
				bad++;
				break;
			}
	return bad;
}

/* "v1 evict N" until `total` pages were evicted or a call evicts none. */
static void evict_until(int64_t total)
{
	for (int i = 0; i < 1000 && td_stat(&fmd, "evictions") < total; i++) {
		int64_t before = td_stat(&fmd, "evictions");

		free(td_ctl(&fmd, "v1 evict 512"));
		if (td_stat(&fmd, "evictions") == before)
			break;
	}
}

static void expect_clean_errors(void)
{
	cr_expect_eq(td_stat(&fmd, "punch_errors"), 0);
	cr_expect_eq(td_stat(&fmd, "unprotect_errors"), 0);
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	cr_expect_eq(td_stat(&fmd, "fault_errors"), 0);
}

/* The store refuses every second page of each run (a failpoint): the
 * refused pages sit between evicted ones, so a run is punched in pieces
 * around them and un-protected whole. Refused pages must stay resident and
 * writable, evicted ones must come back intact. */
Test(evict_runs, refused_page_in_the_middle_of_a_run, .timeout = 120)
{
	const char *sets[] = { "memory.resident_pages=4096", "memory.policy=\"fifo\"",
			       "memory.free_low_pct=0", "memory.free_high_pct=0",
			       "memory.evict_batch=64", NULL };
	size_t pages = 1024;
	struct fm_client *c;
	struct fm_region *r;
	volatile uint64_t *base;
	int64_t ev, refused, runs;

	setenv("FLUIDMEM_FAILPOINTS", "evict.store_alternate=ENOSPC", 1);
	start(sets);
	unsetenv("FLUIDMEM_FAILPOINTS");
	r = td_region(&fmd, &c, pages, "refused");
	base = fm_region_addr(r);
	for (uint64_t pg = 0; pg < pages; pg++)
		stamp(base, pg, 1);
	for (int i = 0; i < 20; i++)
		free(td_ctl(&fmd, "v1 evict 512"));
	ev = td_stat(&fmd, "evictions");
	refused = td_stat(&fmd, "evict_refused");
	runs = td_stat(&fmd, "evict_runs");
	cr_expect_gt(ev, 64, "only %ld evictions", (long)ev);
	cr_expect_gt(refused, 0, "the failpoint refused nothing");
	/* Pages went in runs, not one by one: a run is at least 2 pages. */
	cr_expect_leq(runs * 2, ev + refused, "%ld runs for %ld pages", (long)runs, (long)(ev + refused));
	/* Writers of kept and evicted pages alike get through. */
	cr_expect_eq(check(base, 0, pages, 1), 0, "pages lost across refused runs");
	for (uint64_t pg = 0; pg < pages; pg++)
		stamp(base, pg, 2);
	cr_expect_eq(check(base, 0, pages, 2), 0, "rewrites lost");
	expect_clean_errors();
	fm_region_destroy(r);
	fm_disconnect(c);
	td_expect_stop(&fmd);
}

/* Pages FM_STRIPE_PAGES apart on either side of a stripe boundary belong to
 * different shards: a run must end at its stripe, or one shard's punch
 * would drop the other's resident pages. Half of every stripe is evicted,
 * the half next to the boundary stays resident, then everything is
 * checked; with one shard the stripes are one shard's but not one run. */
static void stripe_boundary(const char *shards, const char *cpus)
{
	const char *sets[] = { "memory.resident_pages=8192", "memory.policy=\"fifo\"",
			       "memory.free_low_pct=0", "memory.free_high_pct=0",
			       "memory.evict_batch=512", "memory.evict_run=512", shards, cpus, NULL };
	size_t stripes = 4, pages = stripes * FM_STRIPE_PAGES;
	struct fm_client *c;
	struct fm_region *r;
	volatile uint64_t *base;
	int64_t ev, runs;

	start(sets);
	r = td_region(&fmd, &c, pages, "stripes");
	base = fm_region_addr(r);
	for (uint64_t pg = 0; pg < pages; pg++)
		stamp(base, pg, 3);
	evict_until((int64_t)pages);
	ev = td_stat(&fmd, "evictions");
	runs = td_stat(&fmd, "evict_runs");
	cr_expect_eq(ev, (int64_t)pages, "evicted %ld of %zu pages", (long)ev, pages);
	cr_expect_geq(runs, (int64_t)stripes, "%ld runs for %zu stripes: one crossed a boundary",
		      (long)runs, stripes);
	cr_expect_lt(runs, ev / 8, "%ld runs for %ld pages: no grouping", (long)runs, (long)ev);
	/* Bring back the pages next to each boundary, evict the rest again. */
	for (size_t s = 1; s < stripes; s++)
		cr_expect_eq(check(base, s * FM_STRIPE_PAGES - 64, 128, 3), 0, "boundary %zu", s);
	evict_until(ev + (int64_t)(stripes - 1) * 128);
	cr_expect_eq(check(base, 0, pages, 3), 0, "pages lost at a stripe boundary");
	expect_clean_errors();
	fm_region_destroy(r);
	fm_disconnect(c);
	td_expect_stop(&fmd);
}

Test(evict_runs, runs_end_at_stripe_boundaries_two_shards, .timeout = 120)
{
	stripe_boundary("shards.count=2", "shards.cpus=[]");
}

Test(evict_runs, runs_end_at_stripe_boundaries_one_shard, .timeout = 120)
{
	stripe_boundary("shards.count=1", "shards.cpus=[]");
}

/* Once fewer than free_low_pct of a shard's budget are free, the shard
 * evicts on its own, ahead of any fault that would need the room, until
 * free_high_pct are free; nothing was over budget, so every eviction was
 * ahead of demand. Waits for the daemon's counters, not for a time. */
Test(evict_runs, free_watermarks_evict_ahead, .timeout = 120)
{
	const char *sets[] = { "memory.resident_pages=1024", "shards.count=1", "shards.cpus=[]",
			       "memory.free_low_pct=4", "memory.free_high_pct=8", NULL };
	struct fm_client *c;
	struct fm_region *r;
	volatile uint64_t *base;
	int64_t resident = -1;

	start(sets);
	r = td_region(&fmd, &c, 1024, "ahead");
	base = fm_region_addr(r);
	/* 960 pages: 6.25% free, under the high mark but not the low one. */
	for (uint64_t pg = 0; pg < 960; pg++)
		stamp(base, pg, 4);
	cr_expect_eq(td_stat(&fmd, "resident"), 960);
	cr_expect_eq(td_stat(&fmd, "evictions"), 0, "evicted above the low watermark");
	/* 1000 pages: 2.3% free, under the low mark: refill to 8% free. */
	for (uint64_t pg = 960; pg < 1000; pg++)
		stamp(base, pg, 4);
	for (int i = 0; i < 5000; i++) {
		resident = td_stat(&fmd, "resident");
		if (resident >= 0 && resident <= 1024 - 82)
			break;
		td_sleep_ms(2);
	}
	cr_expect_leq(resident, 1024 - 82, "resident %ld: the reserve was not refilled", (long)resident);
	cr_expect_geq(resident, 1024 - 82 - 64, "resident %ld: evicted far past the high mark",
		      (long)resident);
	cr_expect_gt(td_stat(&fmd, "evict_ahead"), 0);
	cr_expect_eq(td_stat(&fmd, "evict_ahead"), td_stat(&fmd, "evictions"),
		     "an eviction ran on demand although the reserve sufficed");
	cr_expect_eq(check(base, 0, 1000, 4), 0, "pages lost");
	expect_clean_errors();
	fm_region_destroy(r);
	fm_disconnect(c);
	td_expect_stop(&fmd);
}

/* With the watermarks at 0 the shard evicts only when over budget. */
Test(evict_runs, watermarks_off_evict_on_demand_only, .timeout = 120)
{
	const char *sets[] = { "memory.resident_pages=1024", "shards.count=1", "shards.cpus=[]",
			       "memory.free_low_pct=0", "memory.free_high_pct=0", NULL };
	struct fm_client *c;
	struct fm_region *r;
	volatile uint64_t *base;

	start(sets);
	r = td_region(&fmd, &c, 2048, "demand");
	base = fm_region_addr(r);
	for (uint64_t pg = 0; pg < 1020; pg++)
		stamp(base, pg, 5);
	cr_expect_eq(td_stat(&fmd, "resident"), 1020);
	cr_expect_eq(td_stat(&fmd, "evictions"), 0);
	for (uint64_t pg = 1020; pg < 2048; pg++)
		stamp(base, pg, 5);
	cr_expect_gt(td_stat(&fmd, "evictions"), 0);
	cr_expect_eq(td_stat(&fmd, "evict_ahead"), 0);
	cr_expect_eq(check(base, 0, 2048, 5), 0, "pages lost");
	expect_clean_errors();
	fm_region_destroy(r);
	fm_disconnect(c);
	td_expect_stop(&fmd);
}
