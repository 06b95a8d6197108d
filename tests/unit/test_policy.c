/* shard/policy: unit tests, a randomized residency model check, and the
 * miss-only hit-rate comparison of S3-FIFO against FIFO. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shard/policy.h"

/* ---- helpers ---------------------------------------------------------- */

struct rng {
	uint64_t s;
};

static uint64_t rng_next(struct rng *r)   /* splitmix64 */
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t rng_below(struct rng *r, uint32_t n)
{
	return (uint32_t)(rng_next(r) % n);
}

static double rng_unit(struct rng *r)
{
	return (double)(rng_next(r) >> 11) * 0x1p-53;
}

static struct policy *mk(enum fm_policy_kind kind, uint32_t max_pages, uint64_t budget)
{
	struct policy *p = policy_create(kind, max_pages, budget);

	cr_assert_not_null(p, "policy_create: errno %d", errno);
	return p;
}

static void admit_range(struct policy *p, uint32_t from, uint32_t to)
{
	for (uint32_t id = from; id < to; id++)
		policy_admit(p, id);
}

static uint32_t count_in(const struct policy *p, uint32_t max_pages, enum policy_queue q)
{
	uint32_t n = 0;

	for (uint32_t id = 0; id < max_pages; id++)
		n += policy_queue_of(p, id) == q;
	return n;
}

/* S3-FIFO with budget 100: small share 10, ghost 25. Ids 0..89 warm-fill
 * main, 90..99 land in small. */
#define B100_MAX 10000u
static struct policy *s3_full_100(void)
{
	struct policy *p = mk(FM_POLICY_S3FIFO, B100_MAX, 100);

	admit_range(p, 0, 100);
	return p;
}

/* ---- unit tests ------------------------------------------------------- */

Test(policy, create_errors_and_names)
{
	errno = 0;
	cr_assert_null(policy_create((enum fm_policy_kind)7, 10, 10));
	cr_assert_eq(errno, EINVAL);
	errno = 0;
	cr_assert_null(policy_create(FM_POLICY_FIFO, UINT32_MAX, 10));
	cr_assert_eq(errno, EINVAL);
	policy_destroy(NULL);
	cr_assert_str_eq(policy_name(FM_POLICY_FIFO), "fifo");
	cr_assert_str_eq(policy_name(FM_POLICY_S3FIFO), "s3fifo");
	cr_assert_leq(policy_bytes_per_page(), 12);
	cr_log_info("policy bytes per page: %zu", policy_bytes_per_page());
}

Test(policy, victim_on_empty)
{
	enum fm_policy_kind kinds[] = { FM_POLICY_FIFO, FM_POLICY_S3FIFO };

	for (size_t k = 0; k < 2; k++) {
		struct policy *p = mk(kinds[k], 0, 10);

		cr_assert_eq(policy_victim(p), POLICY_NONE);
		cr_assert_eq(policy_grow(p, 8), 0);
		cr_assert_eq(policy_victim(p), POLICY_NONE);
		policy_admit(p, 3);
		cr_assert_eq(policy_victim(p), 3);
		cr_assert_eq(policy_victim(p), POLICY_NONE);
		cr_assert_eq(policy_resident(p), 0);
		policy_destroy(p);
	}
}

Test(policy, fifo_order)
{
	struct policy *p = mk(FM_POLICY_FIFO, 64, 8);

	/* Budget does not matter to FIFO: it only orders what it is given. */
	admit_range(p, 10, 30);
	cr_assert_eq(policy_resident(p), 20);
	for (uint32_t id = 10; id < 20; id++)
		cr_assert_eq(policy_victim(p), id);
	admit_range(p, 0, 5);
	for (uint32_t id = 20; id < 30; id++)
		cr_assert_eq(policy_victim(p), id);
	for (uint32_t id = 0; id < 5; id++)
		cr_assert_eq(policy_victim(p), id);
	cr_assert_eq(policy_victim(p), POLICY_NONE);
	/* FIFO keeps no history: a victim is forgotten. */
	cr_assert_eq(count_in(p, 64, POLICY_Q_GHOST), 0);
	policy_destroy(p);
}

Test(policy, fifo_reinsert_goes_to_the_back)
{
	struct policy *p = mk(FM_POLICY_FIFO, 16, 8);

	admit_range(p, 0, 5);
	cr_assert_eq(policy_victim(p), 0);
	cr_assert_eq(policy_resident(p), 4);
	policy_reinsert(p, 0);
	cr_assert_eq(policy_resident(p), 5);
	cr_assert_eq(policy_queue_of(p, 0), POLICY_Q_MAIN);
	for (uint32_t want = 1; want < 5; want++)
		cr_assert_eq(policy_victim(p), want);
	cr_assert_eq(policy_victim(p), 0);
	policy_destroy(p);
}

/* Eviction runs take a victim's neighbours only when the policy calls them
 * cold: small's pages, and main's older half. */
Test(policy, cold_means_small_or_old_main)
{
	struct policy *p = mk(FM_POLICY_S3FIFO, 200, 100);

	admit_range(p, 0, 95);
	/* Warm-up fills main while there is room beyond the small share. */
	cr_assert_eq(policy_queue_of(p, 0), POLICY_Q_MAIN);
	cr_assert_eq(policy_queue_of(p, 94), POLICY_Q_SMALL);
	cr_expect(policy_is_cold(p, 94), "a small page is cold");
	cr_expect(policy_is_cold(p, 0), "main's oldest page is cold");
	cr_expect_not(policy_is_cold(p, 89), "main's youngest page is hot");
	cr_expect_not(policy_is_cold(p, 150), "a page never admitted is not a victim");
	policy_destroy(p);
}

/* policy_take is policy_victim for a chosen id: small -> ghost (so a
 * refault promotes it), main -> forgotten; reinsert puts it back. */
Test(policy, take_acts_like_victim)
{
	struct policy *p = mk(FM_POLICY_S3FIFO, 200, 100);

	admit_range(p, 0, 95);
	policy_take(p, 94);
	cr_expect_eq(policy_queue_of(p, 94), POLICY_Q_GHOST);
	cr_expect_not(policy_is_cold(p, 94), "a taken page is not taken twice");
	policy_take(p, 3);
	cr_expect_eq(policy_queue_of(p, 3), POLICY_Q_NONE);
	cr_expect_eq(policy_resident(p), 93);
	policy_reinsert(p, 3);
	cr_expect_eq(policy_queue_of(p, 3), POLICY_Q_MAIN, "a main page goes back to main");
	policy_take(p, 150);   /* not resident: no-op */
	cr_expect_eq(policy_queue_of(p, 150), POLICY_Q_NONE);
	cr_expect_eq(policy_resident(p), 94);
	policy_admit(p, 94);   /* refault of the ghost: promoted */
	cr_expect_eq(policy_queue_of(p, 94), POLICY_Q_MAIN);
	policy_destroy(p);
}

Test(policy, admit_of_resident_is_noop)
{
	struct policy *p = mk(FM_POLICY_FIFO, 16, 8);

	admit_range(p, 0, 3);
	policy_admit(p, 0);
	policy_reinsert(p, 1);
	cr_assert_eq(policy_resident(p), 3);
	cr_assert_eq(policy_victim(p), 0);
	policy_destroy(p);
}

Test(policy, out_of_range_ids_ignored)
{
	struct policy *p = mk(FM_POLICY_S3FIFO, 16, 8);

	policy_admit(p, 16);
	policy_admit(p, POLICY_NONE);
	policy_drop(p, 99);
	policy_reinsert(p, 1000);
	cr_assert_eq(policy_resident(p), 0);
	cr_assert_eq(policy_queue_of(p, 16), POLICY_Q_NONE);
	cr_assert_eq(policy_victim(p), POLICY_NONE);
	policy_destroy(p);
}

Test(policy, s3fifo_warm_fill_then_small)
{
	struct policy *p = s3_full_100();

	for (uint32_t id = 0; id < 90; id++)
		cr_assert_eq(policy_queue_of(p, id), POLICY_Q_MAIN, "id %u", id);
	for (uint32_t id = 90; id < 100; id++)
		cr_assert_eq(policy_queue_of(p, id), POLICY_Q_SMALL, "id %u", id);
	cr_assert_eq(policy_resident(p), 100);
	policy_destroy(p);
}

Test(policy, s3fifo_one_touch_stream_spares_main)
{
	struct policy *p = s3_full_100();

	/* A scan of new ids: every victim comes from small, oldest first, and
	 * is remembered in the ghost; main is never touched. */
	for (uint32_t id = 100; id < 5000; id++) {
		uint32_t v = policy_victim(p);

		cr_assert_geq(v, 90, "main id %u evicted by a one-touch stream", v);
		cr_assert_eq(v, id - 10, "small is FIFO");
		cr_assert_eq(policy_queue_of(p, v), POLICY_Q_GHOST);
		policy_admit(p, id);
		cr_assert_eq(policy_resident(p), 100);
	}
	/* The ghost is bounded: 25% of the budget. */
	cr_assert_eq(count_in(p, B100_MAX, POLICY_Q_GHOST), 25);
	cr_assert_eq(count_in(p, B100_MAX, POLICY_Q_MAIN), 90);
	policy_destroy(p);
}

Test(policy, s3fifo_ghost_promotion)
{
	struct policy *p = s3_full_100();
	uint32_t v, w;

	v = policy_victim(p);
	cr_assert_eq(v, 90);
	cr_assert_eq(policy_queue_of(p, v), POLICY_Q_GHOST);
	policy_admit(p, 100);
	/* v refaults while in the ghost: proven reuse, straight into main. */
	w = policy_victim(p);
	cr_assert_eq(w, 91);
	policy_admit(p, v);
	cr_assert_eq(policy_queue_of(p, v), POLICY_Q_MAIN);
	cr_assert_eq(policy_resident(p), 100);
	/* Main grew past its share, so small (9 < 10) gives way to main's
	 * oldest, which is not remembered. */
	cr_assert_eq(policy_victim(p), 0);
	cr_assert_eq(policy_queue_of(p, 0), POLICY_Q_NONE);
	policy_admit(p, 101);
	cr_assert_eq(policy_victim(p), 92);

	/* A ghost id that aged out of the history is new again. */
	for (uint32_t id = 200; id < 300; id++) {
		policy_victim(p);
		policy_admit(p, id);
	}
	cr_assert_eq(policy_queue_of(p, w), POLICY_Q_NONE);
	policy_victim(p);
	policy_admit(p, w);
	cr_assert_eq(policy_queue_of(p, w), POLICY_Q_SMALL);
	policy_destroy(p);
}

Test(policy, s3fifo_main_victim_when_small_is_short)
{
	struct policy *p = s3_full_100();

	/* Drop small down to 9 (< its share of 10): victims come from main. */
	policy_drop(p, 95);
	cr_assert_eq(policy_victim(p), 0);
	cr_assert_eq(policy_victim(p), 1);
	cr_assert_eq(policy_queue_of(p, 0), POLICY_Q_NONE, "main victims skip the ghost");
	cr_assert_eq(policy_resident(p), 97);
	policy_destroy(p);
}

Test(policy, drop_from_every_queue)
{
	struct policy *p = s3_full_100();
	uint32_t ghost, in_small = 97, in_main = 40, none = 5000;

	ghost = policy_victim(p);
	cr_assert_eq(policy_queue_of(p, ghost), POLICY_Q_GHOST);
	cr_assert_eq(policy_resident(p), 99);

	policy_drop(p, in_small);
	cr_assert_eq(policy_queue_of(p, in_small), POLICY_Q_NONE);
	cr_assert_eq(policy_resident(p), 98);
	policy_drop(p, in_main);
	cr_assert_eq(policy_queue_of(p, in_main), POLICY_Q_NONE);
	cr_assert_eq(policy_resident(p), 97);
	policy_drop(p, ghost);
	cr_assert_eq(policy_queue_of(p, ghost), POLICY_Q_NONE);
	cr_assert_eq(policy_resident(p), 97);
	policy_drop(p, none);
	policy_drop(p, in_main);   /* twice is harmless */
	cr_assert_eq(policy_resident(p), 97);
	cr_assert_eq(count_in(p, B100_MAX, POLICY_Q_GHOST), 0);

	/* Ids are reused after a drop; a dropped ghost id has no history, so
	 * on its next fault it starts in small like any new page. */
	admit_range(p, 1000, 1003);
	policy_victim(p);
	policy_admit(p, ghost);
	cr_assert_eq(policy_queue_of(p, ghost), POLICY_Q_SMALL);
	policy_victim(p);
	policy_admit(p, in_main);
	cr_assert_eq(policy_queue_of(p, in_main), POLICY_Q_SMALL);

	/* Drain: no dropped id is ever returned as a victim. */
	for (uint32_t v; (v = policy_victim(p)) != POLICY_NONE;)
		cr_assert_neq(v, in_small);
	cr_assert_eq(policy_resident(p), 0);
	policy_destroy(p);
}

Test(policy, s3fifo_reinsert_keeps_queue)
{
	struct policy *p = s3_full_100();
	uint32_t v;

	/* A failed small victim goes back to the head of small, not main:
	 * a store-full episode must not promote one-touch pages. */
	v = policy_victim(p);
	cr_assert_eq(v, 90);
	policy_reinsert(p, v);
	cr_assert_eq(policy_queue_of(p, v), POLICY_Q_SMALL);
	cr_assert_eq(policy_resident(p), 100);
	cr_assert_eq(policy_victim(p), 91, "the next victim is another id");
	policy_reinsert(p, 91);

	/* A failed main victim goes back to the head of main. */
	policy_drop(p, 99);
	policy_drop(p, 98);
	v = policy_victim(p);
	cr_assert_eq(v, 0);
	policy_reinsert(p, v);
	cr_assert_eq(policy_queue_of(p, v), POLICY_Q_MAIN);
	cr_assert_eq(policy_victim(p), 1);
	policy_destroy(p);
}

Test(policy, grow_keeps_order)
{
	struct policy *p = mk(FM_POLICY_FIFO, 0, 1000);

	policy_admit(p, 5);
	cr_assert_eq(policy_resident(p), 0, "ids beyond max_pages are ignored");
	cr_assert_eq(policy_grow(p, 16), 0);
	admit_range(p, 0, 16);
	cr_assert_eq(policy_grow(p, 8), 0, "shrinking is a no-op");
	cr_assert_eq(policy_grow(p, 1u << 20), 0);
	policy_admit(p, (1u << 20) - 1);
	cr_assert_eq(policy_grow(p, UINT32_MAX), -EINVAL);
	cr_assert_eq(policy_resident(p), 17);
	for (uint32_t id = 0; id < 16; id++)
		cr_assert_eq(policy_victim(p), id);
	cr_assert_eq(policy_victim(p), (1u << 20) - 1);
	policy_destroy(p);
}

Test(policy, set_budget_shrink)
{
	struct policy *p = mk(FM_POLICY_S3FIFO, 4000, 1000);
	uint32_t id = 0, v;

	/* Main 0..899, small 900..999, then 250 one-touch ids fill the ghost. */
	admit_range(p, 0, 1000);
	for (id = 1000; id < 1250; id++) {
		policy_victim(p);
		policy_admit(p, id);
	}
	cr_assert_eq(count_in(p, 4000, POLICY_Q_GHOST), 250);

	policy_set_budget(p, 100);
	cr_assert_eq(count_in(p, 4000, POLICY_Q_GHOST), 25, "ghost trimmed at once");
	/* Small's share is now 10: small gives up its 91 oldest (the shard
	 * evicts down to the budget), then main in FIFO order. */
	for (uint32_t i = 0; i < 91; i++) {
		v = policy_victim(p);
		cr_assert_geq(v, 1000, "victim %u of %u from main too early", v, i);
	}
	for (uint32_t i = 0; i < 809; i++)
		cr_assert_eq(policy_victim(p), i);
	cr_assert_eq(policy_resident(p), 100);
	cr_assert_eq(count_in(p, 4000, POLICY_Q_GHOST), 25);

	/* Growing the budget again leaves room, which warm-fills main. */
	policy_set_budget(p, 1000);
	policy_admit(p, 3000);
	cr_assert_eq(policy_queue_of(p, 3000), POLICY_Q_MAIN);
	policy_destroy(p);
}

/* ---- randomized residency model -------------------------------------- */

enum { M_OUT, M_IN, M_VICTIM };   /* M_VICTIM: out, may be reinserted */

static void random_model(enum fm_policy_kind kind, uint64_t seed)
{
	const uint32_t max = 4096;
	uint32_t cur_max = 1024;
	uint64_t budget = 300;
	struct policy *p = mk(kind, cur_max, budget);
	uint8_t *st = calloc(max, 1);
	uint32_t recent[16] = { 0 };
	unsigned nrecent = 0;
	uint64_t count = 0;
	struct rng r = { seed };

	cr_assert_not_null(st);
	for (uint32_t step = 0; step < 300000; step++) {
		uint32_t op = rng_below(&r, 1000), id = rng_below(&r, cur_max), v;

		if (op < 450) {
			/* A fault admits an id that is not resident. */
			if (st[id] != M_IN) {
				policy_admit(p, id);
				st[id] = M_IN;
				count++;
			}
		} else if (op < 800) {
			v = policy_victim(p);
			if (count == 0) {
				cr_assert_eq(v, POLICY_NONE);
			} else {
				cr_assert_lt(v, cur_max, "step %u", step);
				cr_assert_eq(st[v], M_IN, "step %u: victim %u not resident", step, v);
				st[v] = M_VICTIM;
				count--;
				recent[nrecent++ % 16] = v;
			}
		} else if (op < 880) {
			policy_drop(p, id);
			count -= st[id] == M_IN;
			st[id] = M_OUT;
		} else if (op < 960) {
			v = recent[rng_below(&r, 16)];
			if (st[v] == M_VICTIM) {
				policy_reinsert(p, v);
				st[v] = M_IN;
				count++;
			}
		} else if (op < 995) {
			budget = 1 + rng_below(&r, 1500);
			policy_set_budget(p, budget);
		} else if (cur_max < max && op == 999) {
			cur_max += 512;
			cr_assert_eq(policy_grow(p, cur_max), 0);
		}
		cr_assert_eq(policy_resident(p), count, "step %u", step);
		for (int k = 0; k < 4; k++) {
			enum policy_queue q;

			id = rng_below(&r, cur_max);
			q = policy_queue_of(p, id);
			cr_assert_eq(st[id] == M_IN, q == POLICY_Q_SMALL || q == POLICY_Q_MAIN,
				     "step %u: id %u model %d queue %d", step, id, st[id], q);
		}
		/* Drain now and then: every resident id comes out exactly once. */
		if (step % 75000 == 74999 || step == 299999) {
			cr_assert_leq(count_in(p, cur_max, POLICY_Q_GHOST), budget / 4,
				      "ghost over 25%% of the budget");
			while ((v = policy_victim(p)) != POLICY_NONE) {
				cr_assert_lt(v, cur_max);
				cr_assert_eq(st[v], M_IN, "drain: %u returned twice or never admitted", v);
				st[v] = M_VICTIM;
				count--;
			}
			cr_assert_eq(count, 0, "drain ended with %lu resident in the model",
				     (unsigned long)count);
			cr_assert_eq(policy_resident(p), 0);
		}
	}
	free(st);
	policy_destroy(p);
}

Test(policy, random_model_fifo)
{
	random_model(FM_POLICY_FIFO, 1);
}

Test(policy, random_model_s3fifo)
{
	random_model(FM_POLICY_S3FIFO, 2);
	random_model(FM_POLICY_S3FIFO, 3);
}

/* ---- hit rates: miss-only trace replay --------------------------------
 *
 * The policy sees what fluidmemd sees: only misses. A hit is invisible;
 * on a miss with the cache full, policy_victim() picks the page to evict,
 * then the missed page is admitted.
 *
 * Measured (1,000,000 accesses; hit %, FIFO -> S3-FIFO, gap in points):
 *   zipf 0.80        B=5000  41.94 -> 50.44 (+8.5)   B=2500 32.37 -> 42.04 (+9.7)
 *   zipf 0.99        B=5000  66.92 -> 73.41 (+6.5)   B=2500 58.90 -> 67.19 (+8.3)
 *   zipf 1.20        B=5000  88.22 -> 90.88 (+2.7)   B=2500 84.13 -> 88.05 (+3.9)
 *   hot set + scans  B=5000  53.52 -> 66.89 (+13.4)
 *   zipf 0.9 + scans B=5000  59.24 -> 65.87 (+6.6)
 *   loop of 6000     B=5000   0.00 -> 70.99
 *   uniform          B=5000   9.99 ->  9.99          B=2500  4.98 ->  4.98
 * The asserted margins are about half the measured gaps. The whole
 * program takes ~1 s in Debug and ~2 s under ASan+UBSan. */

#define N_PAGES 50000u
#define TRACE_LEN 1000000u

static double hit_rate(enum fm_policy_kind kind, const uint32_t *trace, uint32_t len,
		       uint32_t budget)
{
	struct policy *p = mk(kind, N_PAGES, budget);
	bool *res = calloc(N_PAGES, sizeof(*res));
	uint64_t hits = 0, resident = 0;

	cr_assert_not_null(res);
	for (uint32_t i = 0; i < len; i++) {
		uint32_t id = trace[i];

		if (res[id]) {
			hits++;
			continue;
		}
		if (resident == budget) {
			uint32_t v = policy_victim(p);

			if (v == POLICY_NONE || !res[v])
				cr_assert_fail("bad victim %u at access %u", v, i);
			res[v] = false;
			resident--;
		}
		policy_admit(p, id);
		res[id] = true;
		resident++;
	}
	cr_assert_eq(policy_resident(p), resident);
	free(res);
	policy_destroy(p);
	return 100.0 * (double)hits / len;
}

static uint32_t *trace_alloc(void)
{
	uint32_t *t = malloc(TRACE_LEN * sizeof(*t));

	cr_assert_not_null(t);
	return t;
}

/* Zipf(s) ranks over the first n ids, by inverse CDF. */
static void zipf_fill(uint32_t *t, uint32_t len, uint32_t n, double s, struct rng *r)
{
	double *cdf = malloc(n * sizeof(*cdf)), sum = 0;

	cr_assert_not_null(cdf);
	for (uint32_t k = 0; k < n; k++) {
		sum += pow(k + 1, -s);
		cdf[k] = sum;
	}
	for (uint32_t i = 0; i < len; i++) {
		double u = rng_unit(r) * sum;
		uint32_t lo = 0, hi = n - 1;

		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;

			if (cdf[mid] < u)
				lo = mid + 1;
			else
				hi = mid;
		}
		t[i] = lo;
	}
	free(cdf);
}

/* Runs both policies, logs, and checks S3-FIFO - FIFO >= min_gap points. */
static void compare(const char *name, const uint32_t *t, uint32_t budget, double min_gap)
{
	double fifo = hit_rate(FM_POLICY_FIFO, t, TRACE_LEN, budget);
	double s3 = hit_rate(FM_POLICY_S3FIFO, t, TRACE_LEN, budget);

	cr_log_info("%-22s B=%5u  fifo %6.2f%%  s3fifo %6.2f%%  gap %+6.2f", name, budget, fifo,
		    s3, s3 - fifo);
	cr_expect_geq(s3 - fifo, min_gap, "%s B=%u: s3fifo %.2f%% vs fifo %.2f%%, want +%.1f", name,
		      budget, s3, fifo, min_gap);
}

static void zipf_case(double s, double gap_10pct, double gap_5pct)
{
	uint32_t *t = trace_alloc();
	struct rng r = { 42 };
	char name[32];

	zipf_fill(t, TRACE_LEN, N_PAGES, s, &r);
	snprintf(name, sizeof(name), "zipf %.2f", s);
	compare(name, t, N_PAGES / 10, gap_10pct);
	compare(name, t, N_PAGES / 20, gap_5pct);
	free(t);
}

Test(hitrate, zipf_0_80, .timeout = 60)
{
	zipf_case(0.8, 4.0, 5.0);
}

Test(hitrate, zipf_0_99, .timeout = 60)
{
	zipf_case(0.99, 3.0, 4.0);
}

Test(hitrate, zipf_1_20, .timeout = 60)
{
	zipf_case(1.2, 1.2, 2.0);
}

/* A hot set that fits the cache, and every HOT_RUN accesses a one-touch
 * sequential scan of SCAN_RUN pages through the other ids (each revisited
 * only ~5 scans later). The hot set never misses between scans, so only
 * its placement at load time protects it. */
Test(hitrate, hot_set_with_scans, .timeout = 60)
{
	const uint32_t hot = 4000, hot_run = 20000, scan_run = 10000;
	uint32_t *t = trace_alloc(), i = 0, cur = 0;
	struct rng r = { 7 };

	while (i < TRACE_LEN) {
		for (uint32_t k = 0; k < hot_run && i < TRACE_LEN; k++)
			t[i++] = rng_below(&r, hot);
		for (uint32_t k = 0; k < scan_run && i < TRACE_LEN; k++) {
			t[i++] = hot + cur;
			cur = (cur + 1) % (N_PAGES - hot);
		}
	}
	compare("hot set + scans", t, 5000, 6.0);
	free(t);
}

/* A Zipf(0.9) working set four times the cache, with a 5,000-page scan
 * every 45,000 accesses: here the hot pages do miss, so the ghost has to
 * find them while scans stream through small. */
Test(hitrate, zipf_with_scans, .timeout = 60)
{
	const uint32_t ws = 20000, hot_run = 45000, scan_run = 5000;
	uint32_t *t = trace_alloc(), i = 0, cur = 0;
	struct rng r = { 11 };

	zipf_fill(t, TRACE_LEN, ws, 0.9, &r);
	/* Overwrite every (hot_run + scan_run) window's tail with the scan. */
	for (i = 0; i < TRACE_LEN; i++) {
		if (i % (hot_run + scan_run) >= hot_run) {
			t[i] = ws + cur;
			cur = (cur + 1) % (N_PAGES - ws);
		}
	}
	compare("zipf 0.9 + scans", t, 5000, 3.0);
	free(t);
}

/* A loop slightly larger than the cache defeats FIFO completely. */
Test(hitrate, loop, .timeout = 60)
{
	uint32_t *t = trace_alloc();

	for (uint32_t i = 0; i < TRACE_LEN; i++)
		t[i] = i % 6000;
	compare("loop 6000", t, 5000, 35.0);
	free(t);
}

/* Uniform access: no policy can do better than B/N; S3-FIFO must not do
 * noticeably worse (2% relative). */
Test(hitrate, uniform, .timeout = 60)
{
	uint32_t *t = trace_alloc();
	struct rng r = { 9 };
	uint32_t budgets[] = { N_PAGES / 10, N_PAGES / 20 };

	for (uint32_t i = 0; i < TRACE_LEN; i++)
		t[i] = rng_below(&r, N_PAGES);
	for (size_t k = 0; k < 2; k++) {
		double fifo = hit_rate(FM_POLICY_FIFO, t, TRACE_LEN, budgets[k]);
		double s3 = hit_rate(FM_POLICY_S3FIFO, t, TRACE_LEN, budgets[k]);
		double ideal = 100.0 * budgets[k] / N_PAGES;

		cr_log_info("%-22s B=%5u  fifo %6.2f%%  s3fifo %6.2f%%  gap %+6.2f", "uniform",
			    budgets[k], fifo, s3, s3 - fifo);
		cr_expect(fabs(fifo - ideal) < 0.1 * ideal, "fifo %.2f%% vs B/N %.2f%%", fifo, ideal);
		cr_expect_geq(s3, 0.98 * fifo, "uniform B=%u: s3fifo %.2f%% vs fifo %.2f%%",
			      budgets[k], s3, fifo);
	}
	free(t);
}
