/* uffd/route.h: how the dispatcher splits a REMOVE or UNMAP byte range of a
 * region into pages and shards. Pure (no state, no kernel), so that it is
 * tested on its own (tests/unit/test_route.c). */
#ifndef FM_UFFD_ROUTE_H
#define FM_UFFD_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "uffd/uffd.h"

struct uffd_route {
	uint64_t first, count;   /* region pages [first, first + count) */
	int owner;               /* the one shard owning them all, or -1: every shard */
};

/* The pages of r that the byte range [start, end) touches (partly touched
 * pages included), and where they go: a range inside one stripe (a balloon
 * page) to its owner only; a larger one to every shard, which skips the
 * pages it does not own. False when the range touches no page of r. */
static inline bool uffd_route_range(const struct uffd_region *r, unsigned nshards, uint64_t start,
				    uint64_t end, struct uffd_route *out)
{
	uint64_t last;

	if (end <= start || end <= r->base || start >= r->base + (r->npages << FM_PAGE_SHIFT))
		return false;
	if (start < r->base)
		start = r->base;
	out->first = (start - r->base) >> FM_PAGE_SHIFT;
	last = (end - r->base + FM_PAGE_SIZE - 1) >> FM_PAGE_SHIFT;
	if (last > r->npages)
		last = r->npages;
	out->count = last - out->first;
	out->owner = (out->first >> FM_STRIPE_SHIFT) == ((last - 1) >> FM_STRIPE_SHIFT)
			     ? (int)region_shard_of(r, out->first, nshards)
			     : -1;
	return true;
}

#endif
