/* The dispatcher's stripe splitting of REMOVE/UNMAP ranges (uffd/route.h),
 * on its own: every page the byte range touches is named once, no other,
 * and reaches the shard that owns it. */
#include <criterion/criterion.h>

#include "base/base.h"
#include "uffd/route.h"
#include "uffd/uffd.h"

#define PAGE ((uint64_t)FM_PAGE_SIZE)
#define STRIPE ((uint64_t)FM_STRIPE_PAGES)
#define BASE 0x7f0000000000ull

static struct uffd_region region(uint32_t slot, uint64_t npages)
{
	return (struct uffd_region){ .id = slot, .slot = slot, .base = BASE, .npages = npages };
}

/* The same answer, worked out page by page. */
static void check(const struct uffd_region *r, unsigned nshards, uint64_t start, uint64_t end)
{
	struct uffd_route rt = { 0, 0, -2 };
	uint64_t lo = UINT64_MAX, hi = 0;
	unsigned owners[64] = { 0 }, nowners = 0;
	bool got = uffd_route_range(r, nshards, start, end, &rt);

	for (uint64_t p = 0; p < r->npages; p++) {
		uint64_t a = r->base + p * PAGE;

		if (a + PAGE <= start || a >= end)
			continue;   /* untouched */
		lo = FM_MIN(lo, p);
		hi = FM_MAX(hi, p + 1);
		unsigned s = region_shard_of(r, p, nshards);
		if (!owners[s]++)
			nowners++;
	}
	if (lo == UINT64_MAX) {
		cr_assert(!got, "[%#lx, %#lx) touches no page but was routed", (unsigned long)start,
			  (unsigned long)end);
		return;
	}
	cr_assert(got, "[%#lx, %#lx) touches pages %lu..%lu but was dropped", (unsigned long)start,
		  (unsigned long)end, (unsigned long)lo, (unsigned long)hi);
	cr_assert_eq(rt.first, lo, "first %lu, want %lu", (unsigned long)rt.first, (unsigned long)lo);
	cr_assert_eq(rt.count, hi - lo, "count %lu, want %lu", (unsigned long)rt.count,
		     (unsigned long)(hi - lo));
	if (lo / STRIPE == (hi - 1) / STRIPE) {
		/* One stripe: its owner only, and it owns every page named. */
		cr_assert_eq(nowners, 1);
		cr_assert_eq(rt.owner, (int)region_shard_of(r, lo, nshards));
	} else {
		/* Several stripes go to every shard (each skips what it does
		 * not own), so every owner is reached. */
		cr_assert_eq(rt.owner, -1, "pages %lu..%lu span stripes but went to shard %d",
			     (unsigned long)lo, (unsigned long)hi, rt.owner);
	}
}

Test(route, a_page_inside_a_stripe_goes_to_its_owner_only)
{
	struct uffd_region r = region(3, 8 * STRIPE);
	struct uffd_route rt;

	for (uint64_t stripe = 0; stripe < 8; stripe++) {
		uint64_t page = stripe * STRIPE + 17;

		cr_assert(uffd_route_range(&r, 4, BASE + page * PAGE, BASE + (page + 1) * PAGE, &rt));
		cr_expect_eq(rt.first, page);
		cr_expect_eq(rt.count, 1);
		cr_expect_eq(rt.owner, (int)((stripe + 3) % 4), "stripe %lu", (unsigned long)stripe);
	}
}

Test(route, a_whole_stripe_is_one_owner_and_one_more_page_is_everyone)
{
	struct uffd_region r = region(0, 4 * STRIPE);
	struct uffd_route rt;

	cr_assert(uffd_route_range(&r, 2, BASE + STRIPE * PAGE, BASE + 2 * STRIPE * PAGE, &rt));
	cr_expect_eq(rt.first, STRIPE);
	cr_expect_eq(rt.count, STRIPE);
	cr_expect_eq(rt.owner, 1);
	cr_assert(uffd_route_range(&r, 2, BASE + STRIPE * PAGE, BASE + (2 * STRIPE + 1) * PAGE, &rt));
	cr_expect_eq(rt.count, STRIPE + 1);
	cr_expect_eq(rt.owner, -1);
	/* one shard owns everything, yet a range over two stripes still goes
	 * the general way: only the geometry decides */
	cr_assert(uffd_route_range(&r, 1, BASE + (STRIPE - 1) * PAGE, BASE + (STRIPE + 1) * PAGE, &rt));
	cr_expect_eq(rt.owner, -1);
}

Test(route, ranges_are_clipped_to_the_region)
{
	struct uffd_region r = region(1, 1000);
	struct uffd_route rt;

	/* before, after, touching either edge from outside */
	cr_expect(!uffd_route_range(&r, 2, BASE - 10 * PAGE, BASE, &rt));
	cr_expect(!uffd_route_range(&r, 2, BASE + 1000 * PAGE, BASE + 2000 * PAGE, &rt));
	cr_expect(!uffd_route_range(&r, 2, BASE + 5 * PAGE, BASE + 5 * PAGE, &rt), "an empty range");
	/* overlapping the start: pages from 0 */
	cr_assert(uffd_route_range(&r, 2, BASE - 10 * PAGE, BASE + 3 * PAGE, &rt));
	cr_expect_eq(rt.first, 0);
	cr_expect_eq(rt.count, 3);
	/* overlapping the end: up to the last page */
	cr_assert(uffd_route_range(&r, 2, BASE + 998 * PAGE, BASE + 4000 * PAGE, &rt));
	cr_expect_eq(rt.first, 998);
	cr_expect_eq(rt.count, 2);
	/* the whole region and more: the short last stripe included */
	cr_assert(uffd_route_range(&r, 2, 0, UINT64_MAX - PAGE, &rt));
	cr_expect_eq(rt.first, 0);
	cr_expect_eq(rt.count, 1000);
	cr_expect_eq(rt.owner, -1);
	/* partial pages count as touched */
	cr_assert(uffd_route_range(&r, 2, BASE + 5 * PAGE + 100, BASE + 6 * PAGE + 1, &rt));
	cr_expect_eq(rt.first, 5);
	cr_expect_eq(rt.count, 2);
}

/* Random regions, shard counts and ranges, against the page-by-page answer. */
Test(route, random_ranges_match_a_page_by_page_walk)
{
	uint64_t x = 42;

	for (int i = 0; i < 3000; i++) {
		x = fm_mix64(x + (uint64_t)i);
		unsigned nshards = 1 + (unsigned)(x % 8);
		uint32_t slot = (uint32_t)((x >> 8) % FM_MAX_REGIONS);
		uint64_t npages = 1 + (x >> 20) % (6 * STRIPE);
		struct uffd_region r = region(slot, npages);
		uint64_t y = fm_mix64(x);
		/* from a little before the region to a little after it, often
		 * on page boundaries as the kernel sends them, sometimes not */
		int64_t s = (int64_t)(y % ((npages + 8) * PAGE)) - (int64_t)(4 * PAGE);
		uint64_t len = 1 + (fm_mix64(y) % ((i % 4 == 0 ? 3 * STRIPE : 8) * PAGE));

		if (i % 3)
			s &= ~(int64_t)(PAGE - 1);
		if (i % 3)
			len = (len + PAGE - 1) & ~(PAGE - 1);
		check(&r, nshards, BASE + (uint64_t)s, BASE + (uint64_t)s + len);
	}
}
