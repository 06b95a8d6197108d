/* The prefetch detector (shard/prefetch.h) on its own: Leap's majority
 * vote, the adaptive window, stream matching and the walk over a shard's
 * own stripes. Pure functions: no daemon, no kernel. */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "shard/prefetch.h"

#define STRIPE ((uint64_t)FM_STRIPE_PAGES)

static void push(struct pf_stream *st, int64_t d)
{
	st->hist[st->head] = d;
	st->head = (uint8_t)((st->head + 1) % PF_HIST);
	if (st->n < PF_HIST)
		st->n++;
}

Test(prefetch, majority_vote)
{
	struct pf_stream st = { 0 };
	int64_t d = 0;

	cr_expect(!pf_trend(&st, &d), "no history, no trend");
	push(&st, 1);
	cr_expect(!pf_trend(&st, &d), "one delta is not a trend");
	push(&st, 1);
	cr_assert(pf_trend(&st, &d));
	cr_expect_eq(d, 1);
	/* 1 1 7 -3: no majority in the newest four (2 of 4 is not > half) */
	push(&st, 7);
	push(&st, -3);
	cr_expect(!pf_trend(&st, &d));
	/* newest half 5 5 5 x: the recent trend wins over older history */
	memset(&st, 0, sizeof(st));
	for (int i = 0; i < 4; i++)
		push(&st, 1);
	push(&st, 5);
	push(&st, 5);
	push(&st, 9);
	push(&st, 5);
	cr_assert(pf_trend(&st, &d));
	cr_expect_eq(d, 5);
	/* the whole ring decides when the newest half is split: 6 of 8 */
	memset(&st, 0, sizeof(st));
	for (int i = 0; i < 6; i++)
		push(&st, -2);
	push(&st, 3);
	push(&st, 4);
	cr_expect(!pf_majority_of(st.hist, st.head, 4, &d) || d == -2);
	cr_assert(pf_trend(&st, &d));
	cr_expect_eq(d, -2);
	/* zero deltas never make a trend */
	memset(&st, 0, sizeof(st));
	for (int i = 0; i < 8; i++)
		push(&st, 0);
	cr_expect(!pf_trend(&st, &d));
}

/* A sequential scan: the window grows while every prefetched page is used,
 * up to the cap, and the trend survives the jumps over the windows. */
Test(prefetch, window_grows_on_hits_and_shrinks_on_misses)
{
	struct pf_region pr = { 0 };
	uint64_t page = 1000;
	int64_t d = 0;
	uint32_t w = 0, last_w = 0;
	struct pf_stream *st = pf_stream_for(&pr, page);

	cr_expect_eq(pf_on_fault(st, page, 0, 32, &d), 0, "first fault: no delta yet");
	for (int i = 1; i < 3; i++) {
		st = pf_stream_for(&pr, ++page);
		w = pf_on_fault(st, page, 0, 32, &d);
	}
	cr_assert_gt(w, 0, "two equal deltas make a trend");
	cr_expect_eq(d, 1);
	for (int i = 0; i < 10; i++) {
		/* the client walks through the window, faults just after it */
		st->issued = w;
		st->span = w;
		page += w + 1;
		st = pf_stream_for(&pr, page);
		last_w = w;
		w = pf_on_fault(st, page, last_w, 32, &d);
		cr_assert_eq(d, 1, "the trend survives the jump over the window");
		cr_expect_geq(w, last_w);
	}
	cr_expect_eq(w, 32, "grown to the cap");
	/* nothing used: halve (the window never drops below the minimum while
	 * the trend holds) */
	st->issued = w;
	st->span = w;
	page += 1;
	st = pf_stream_for(&pr, page);
	w = pf_on_fault(st, page, 0, 32, &d);
	cr_expect_eq(w, 16);
	/* prefetch off: never a window */
	st->issued = 0;
	page += 1;
	cr_expect_eq(pf_on_fault(pf_stream_for(&pr, page), page, 0, 0, &d), 0);
}

/* Uniform random faults over a large region never show a trend. */
Test(prefetch, random_faults_never_prefetch)
{
	struct pf_region pr = { 0 };
	uint64_t x = 12345;
	unsigned prefetches = 0;

	for (int i = 0; i < 100000; i++) {
		int64_t d;
		uint64_t page;
		struct pf_stream *st;

		x = x * 6364136223846793005ull + 1442695040888963407ull;
		page = (x >> 33) % (1u << 20);
		st = pf_stream_for(&pr, page);
		prefetches += pf_on_fault(st, page, 0, 32, &d) > 0;
	}
	cr_expect_lt(prefetches, 10, "%u prefetches on random faults", prefetches);
}

/* Two interleaved scans far apart keep their own streams and trends. */
Test(prefetch, two_streams)
{
	struct pf_region pr = { 0 };
	uint64_t a = 0, b = 500000;
	int64_t da = 0, db = 0;
	uint32_t wa = 0, wb = 0;

	for (int i = 0; i < 6; i++) {
		struct pf_stream *sa, *sb;

		a += 1;
		sa = pf_stream_for(&pr, a);
		wa = pf_on_fault(sa, a, 0, 32, &da);
		b -= 3;
		sb = pf_stream_for(&pr, b);
		cr_assert_neq(sa, sb);
		wb = pf_on_fault(sb, b, 0, 32, &db);
	}
	cr_expect(wa > 0 && da == 1);
	cr_expect(wb > 0 && db == -3);
}

/* pf_next visits exactly the pages of the progression p + k*d that the
 * shard owns, in order, and stops at the region's ends. */
static void walk_check(uint64_t npages, uint32_t slot, unsigned shard, unsigned nshards,
		       uint64_t p0, int64_t d)
{
	uint64_t p = p0, q, expect = p0;
	unsigned steps = 0;

	while (pf_next(p, d, npages, slot, shard, nshards, &q)) {
		/* the brute-force next own page along d */
		for (;;) {
			cr_assert(d > 0 ? expect + (uint64_t)d < npages : expect >= (uint64_t)-d,
				  "pf_next went past the end: %llu", (unsigned long long)q);
			expect += (uint64_t)d;
			if (fm_stripe_shard(slot, expect, nshards) == shard)
				break;
		}
		cr_assert_eq(q, expect, "p0 %llu d %lld: got %llu, want %llu",
			     (unsigned long long)p0, (long long)d, (unsigned long long)q,
			     (unsigned long long)expect);
		p = q;
		if (++steps > 200000)
			break;
	}
	/* and nothing was left: no own page further along (within 4 stripes
	 * of jumping, which a delta under a stripe always manages) */
	if ((d > 0 ? (uint64_t)d : (uint64_t)-d) < STRIPE) {
		for (;;) {
			if (d > 0 ? expect + (uint64_t)d >= npages : expect < (uint64_t)-d)
				break;
			expect += (uint64_t)d;
			cr_assert_neq(fm_stripe_shard(slot, expect, nshards), shard,
				      "p0 %llu d %lld: stopped early before %llu",
				      (unsigned long long)p0, (long long)d,
				      (unsigned long long)expect);
		}
	}
}

Test(prefetch, next_stays_on_own_stripes)
{
	const int64_t deltas[] = { 1, -1, 2, 3, -7, 64, -64, 511, 513, -1000 };
	uint64_t npages = 20 * STRIPE + 77;

	for (unsigned nshards = 1; nshards <= 3; nshards++)
		for (unsigned shard = 0; shard < nshards; shard++)
			for (uint32_t slot = 0; slot < 3; slot++)
				for (size_t i = 0; i < FM_ARRAY_SIZE(deltas); i++) {
					uint64_t p0 = deltas[i] > 0 ? 5 : npages - 3;

					walk_check(npages, slot, shard, nshards, p0, deltas[i]);
					walk_check(npages, slot, shard, nshards, 3 * STRIPE + 100,
						   deltas[i]);
				}
	/* ends of the region */
	uint64_t q;
	cr_expect(!pf_next(10, 1, 11, 0, 0, 1, &q));
	cr_expect(!pf_next(0, -1, 11, 0, 0, 1, &q));
	cr_expect(!pf_next(5, 0, 11, 0, 0, 1, &q));
	cr_expect(!pf_next(UINT64_MAX - 1, 5, UINT64_MAX, 0, 0, 1, &q));
}
