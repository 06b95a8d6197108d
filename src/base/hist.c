#include "base/hist.h"

#include <string.h>

void fm_hist_reset(struct fm_hist *h)
{
	memset(h, 0, sizeof(*h));
}

void fm_hist_merge(struct fm_hist *into, const struct fm_hist *from)
{
	into->count += from->count;
	into->sum += from->sum;
	if (from->max > into->max)
		into->max = from->max;
	for (unsigned i = 0; i < FM_HIST_BUCKETS; i++)
		into->bucket[i] += from->bucket[i];
}

uint64_t fm_hist_bucket_low(unsigned index)
{
	unsigned group = index >> FM_HIST_SUB_BITS, sub = index & ((1u << FM_HIST_SUB_BITS) - 1);

	if (group == 0)
		return index;
	return (uint64_t)((1u << FM_HIST_SUB_BITS) + sub) << (group - 1);
}

uint64_t fm_hist_quantile(const struct fm_hist *h, double q)
{
	uint64_t rank, seen = 0;

	if (h->count == 0)
		return 0;
	if (q < 0)
		q = 0;
	if (q > 1)
		q = 1;
	rank = (uint64_t)(q * (double)h->count);
	if (rank >= h->count)
		rank = h->count - 1;
	for (unsigned i = 0; i < FM_HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen > rank) {
			uint64_t hi = i + 1 < FM_HIST_BUCKETS ? fm_hist_bucket_low(i + 1) - 1 : h->max;
			return hi < h->max ? hi : h->max;
		}
	}
	return h->max;
}
