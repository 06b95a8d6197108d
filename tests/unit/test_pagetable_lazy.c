/* Page state on first touch (issue 8, finding 6): attaching a region costs
 * no chunk; a stripe gets one when first allocated; the null chunk reads
 * PS_NONE and is never owned, handed out or freed. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <time.h>

#include "shard/pagetable.h"

Test(pagetable_lazy, attach_is_free_and_stripes_come_on_demand)
{
	struct pagetable pt;
	struct pt_region a;
	uint64_t npages = 1ull << 28;   /* 1 TiB of 4 KiB pages */
	struct timespec t0, t1;

	pt_init(&pt, 0, 2);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cr_assert_eq(pt_region_attach(&pt, &a, 1, npages), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	cr_expect_lt(ms, 50.0, "attaching 1 TiB took %.1f ms", ms);
	cr_expect_eq(pt_tracked(&pt), 0);
	/* Stripe 1 is shard 0's first with slot 1 (stripe g is ours when
	 * (g + 1) % 2 == 0). Untouched, it reads PS_NONE and maps to no region. */
	uint64_t page = 512 + 7;
	cr_expect_not(pt_has_stripe(&pt, &a, page));
	cr_expect_eq(pt.state[pt_id(&pt, &a, page)], PS_NONE);
	cr_expect_not(pt_id_valid(&pt, pt_id(&pt, &a, page)));
	cr_expect_eq(pt_stripe_first_page(&pt, &a, 0), 512);

	cr_assert_eq(pt_stripe_alloc(&pt, &a, page), 0);
	cr_expect(pt_has_stripe(&pt, &a, page));
	cr_expect_eq(pt_tracked(&pt), 512);
	uint32_t id = pt_id(&pt, &a, page);
	uint64_t back;
	cr_expect_eq(pt_page_of(&pt, id, &back), &a);
	cr_expect_eq(back, page);
	cr_expect_neq(id >> FM_STRIPE_SHIFT, 0u, "a real stripe got the null chunk");
	pt.state[id] = PS_STORED;
	/* Allocating again is a no-op; the far end of the region works too. */
	cr_assert_eq(pt_stripe_alloc(&pt, &a, page + 100), 0);
	cr_expect_eq(pt_tracked(&pt), 512);
	uint64_t last = npages - 1;   /* global stripe 524287: (524287 + 1) % 2 == 0 */
	cr_assert_eq(pt_stripe_alloc(&pt, &a, last), 0);
	cr_expect_eq(pt_tracked(&pt), 1024);
	cr_expect(pt_id_valid(&pt, pt_id(&pt, &a, last)));
	/* The null chunk was never written. */
	for (uint32_t i = 0; i < FM_STRIPE_PAGES; i++)
		cr_assert_eq(pt.state[i], PS_NONE);
	pt_region_del(&pt, &a);
	cr_expect_eq(pt_tracked(&pt), 0);
	/* Freed chunks are reused and reset; chunk 0 never comes back. */
	struct pt_region b;
	cr_assert_eq(pt_region_attach(&pt, &b, 1, 4096), 0);
	cr_assert_eq(pt_stripe_alloc(&pt, &b, 512), 0);
	cr_expect_neq(pt_id(&pt, &b, 512) >> FM_STRIPE_SHIFT, 0u);
	cr_expect_eq(pt.state[pt_id(&pt, &b, 512)], PS_NONE, "a reused chunk kept old state");
	pt_region_del(&pt, &b);
	pt_destroy(&pt);
}
