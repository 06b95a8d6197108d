/* base/hist: fixed log-linear latency histogram (HdrHistogram-like, 1/8
 * relative precision). Single writer; readers merge copies. 4 KiB each. */
#ifndef FM_HIST_H
#define FM_HIST_H

#include <stdint.h>

#define FM_HIST_SUB_BITS 3
#define FM_HIST_BUCKETS (64 << FM_HIST_SUB_BITS)

struct fm_hist {
	uint64_t count;
	uint64_t sum;
	uint64_t max;
	uint64_t bucket[FM_HIST_BUCKETS];
};

static inline unsigned fm_hist_index(uint64_t v)
{
	unsigned msb, shift;

	if (v < (1u << FM_HIST_SUB_BITS))
		return (unsigned)v;
	msb = 63u - (unsigned)__builtin_clzll(v);
	shift = msb - FM_HIST_SUB_BITS;
	/* (msb - SUB_BITS + 1) groups of 2^SUB_BITS; inside, the next bits. */
	return ((shift + 1) << FM_HIST_SUB_BITS) + (unsigned)((v >> shift) & ((1u << FM_HIST_SUB_BITS) - 1));
}

static inline void fm_hist_add(struct fm_hist *h, uint64_t v)
{
	h->count++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
	h->bucket[fm_hist_index(v)]++;
}

void fm_hist_reset(struct fm_hist *h);
void fm_hist_merge(struct fm_hist *into, const struct fm_hist *from);
/* Value at quantile q in [0,1] (upper edge of its bucket, capped at max);
 * 0 for an empty histogram. */
uint64_t fm_hist_quantile(const struct fm_hist *h, double q);
/* Lowest value a bucket holds (for exporting bucket edges). */
uint64_t fm_hist_bucket_low(unsigned index);

#endif
