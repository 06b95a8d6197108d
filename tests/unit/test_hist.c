/* base/hist: bucket geometry and quantiles against exact order statistics.
 * The histogram promises 1/8 relative precision: a quantile is the upper
 * edge of the bucket that holds the exact order statistic, capped at max. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdlib.h>

#include "base/base.h"
#include "base/hist.h"

/* Indices that a uint64_t can reach: values >= 2^63 land in group 61. */
#define TOP_INDEX ((61u << FM_HIST_SUB_BITS) + (1u << FM_HIST_SUB_BITS) - 1)

static struct fm_hist *hist_new(void)
{
	struct fm_hist *h = calloc(1, sizeof(*h));

	cr_assert_not_null(h);
	return h;
}

/* The exact value at the rank fm_hist_quantile uses: floor(q * n), clamped
 * to n - 1, in the sorted samples. */
static uint64_t exact_q(const uint64_t *sorted, size_t n, double q)
{
	size_t rank = (size_t)(q * (double)n);

	return sorted[rank >= n ? n - 1 : rank];
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

Test(hist, empty_is_zero)
{
	struct fm_hist *h = hist_new();

	cr_expect_eq(fm_hist_quantile(h, 0), 0);
	cr_expect_eq(fm_hist_quantile(h, 0.5), 0);
	cr_expect_eq(fm_hist_quantile(h, 1), 0);
	free(h);
}

Test(hist, bucket_edges_round_trip)
{
	/* Every reachable bucket holds exactly [low(i), low(i+1) - 1]. */
	for (unsigned i = 0; i < TOP_INDEX; i++) {
		uint64_t lo = fm_hist_bucket_low(i), next = fm_hist_bucket_low(i + 1);

		cr_assert_lt(lo, next, "bucket %u: low %" PRIu64 ", next %" PRIu64, i, lo, next);
		cr_assert_eq(fm_hist_index(lo), i, "low edge of bucket %u", i);
		cr_assert_eq(fm_hist_index(next - 1), i, "high edge of bucket %u", i);
		/* 1/8 relative width: a bucket spans at most lo/8 beyond lo. */
		if (lo >= (1u << FM_HIST_SUB_BITS))
			cr_assert_leq(next - 1 - lo, lo >> FM_HIST_SUB_BITS, "bucket %u too wide", i);
	}
	cr_expect_eq(fm_hist_index(UINT64_MAX), TOP_INDEX);
	cr_expect_lt(TOP_INDEX, FM_HIST_BUCKETS);
}

Test(hist, small_values_are_exact)
{
	struct fm_hist *h = hist_new();

	for (uint64_t v = 0; v < 8; v++)
		fm_hist_add(h, v);
	fm_hist_add(h, 1000); /* keeps the cap at max out of the way */
	for (uint64_t v = 0; v < 8; v++)
		cr_expect_eq(fm_hist_quantile(h, (double)v / 9.0 + 0.01), v, "value %" PRIu64, v);
	free(h);
}

Test(hist, one_value_within_an_eighth)
{
	/* Alone, a value comes back exactly (capped at max); beside a larger
	 * one, as its bucket's upper edge: v <= q <= v + v/8. */
	for (uint64_t v = 1; v < (1ull << 62); v = v * 3 + 1) {
		struct fm_hist *h = hist_new();
		uint64_t q;

		fm_hist_add(h, v);
		cr_expect_eq(fm_hist_quantile(h, 0.5), v);
		fm_hist_add(h, UINT64_MAX);
		q = fm_hist_quantile(h, 0);
		cr_expect(q >= v && q - v <= v / 8, "v %" PRIu64 " -> %" PRIu64, v, q);
		free(h);
	}
}

Test(hist, quantiles_match_order_statistics)
{
	static const double qs[] = { 0, 0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 1 };
	enum { N = 100000 };
	uint64_t *v = malloc(N * sizeof(*v)), seed = 42;
	struct fm_hist *h = hist_new();
	uint64_t prev = 0;

	cr_assert_not_null(v);
	/* Log-uniform over 1 ns .. ~1 s, like fault latencies. */
	for (size_t i = 0; i < N; i++) {
		seed = fm_mix64(seed + i);
		v[i] = 1 + ((seed >> 20) >> (seed % 34));
		fm_hist_add(h, v[i]);
	}
	qsort(v, N, sizeof(*v), cmp_u64);
	cr_expect_eq(h->count, N);
	cr_expect_eq(h->max, v[N - 1]);
	for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
		uint64_t want = exact_q(v, N, qs[i]), got = fm_hist_quantile(h, qs[i]);

		cr_expect(got >= want && got - want <= want / 8, "q %g: exact %" PRIu64 ", got %" PRIu64,
			  qs[i], want, got);
		cr_expect_geq(got, prev, "quantiles must not decrease (q %g)", qs[i]);
		prev = got;
	}
	cr_expect_eq(fm_hist_quantile(h, 1), v[N - 1], "q 1 is the max");
	cr_expect_eq(fm_hist_quantile(h, -3), fm_hist_quantile(h, 0), "q below 0 clamps");
	cr_expect_eq(fm_hist_quantile(h, 7), v[N - 1], "q above 1 clamps");
	free(h);
	free(v);
}

Test(hist, rank_convention)
{
	struct fm_hist *h = hist_new();

	for (uint64_t v = 1; v <= 100; v++)
		fm_hist_add(h, v);
	/* rank floor(0.5 * 100) = 50 is the 51st value, 51: bucket [48, 51]. */
	cr_expect_eq(fm_hist_quantile(h, 0.5), 51);
	/* 100 sits in [96, 103]; the edge is capped at max. */
	cr_expect_eq(fm_hist_quantile(h, 0.99), 100);
	cr_expect_eq(fm_hist_quantile(h, 0), 1);
	free(h);
}

Test(hist, merge_equals_adding_everything)
{
	struct fm_hist *a = hist_new(), *b = hist_new(), *all = hist_new();
	uint64_t seed = 7;

	for (int i = 0; i < 5000; i++) {
		uint64_t x = (seed = fm_mix64(seed)) % 1000000;

		fm_hist_add(i % 3 ? a : b, x);
		fm_hist_add(all, x);
	}
	fm_hist_merge(a, b);
	cr_expect_eq(a->count, all->count);
	cr_expect_eq(a->sum, all->sum);
	cr_expect_eq(a->max, all->max);
	cr_expect_arr_eq(a->bucket, all->bucket, sizeof(a->bucket));
	for (double q = 0; q <= 1; q += 0.05)
		cr_expect_eq(fm_hist_quantile(a, q), fm_hist_quantile(all, q), "q %g", q);
	fm_hist_reset(a);
	cr_expect_eq(a->count, 0);
	cr_expect_eq(fm_hist_quantile(a, 0.5), 0);
	free(a);
	free(b);
	free(all);
}
