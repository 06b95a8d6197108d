/* base/statebits: the per-page bitmap of a region's state file (ctl/
 * statefile.h), 1 bit per page, "a copy of this page is in the store".
 * Stripe s of a region is bytes [64 s, 64 s + 64): one cache line, written
 * only by the shard that owns the stripe, so plain stores suffice. */
#ifndef FM_STATEBITS_H
#define FM_STATEBITS_H

#include <stdbool.h>
#include <stdint.h>

#include "base/base.h"

_Static_assert(FM_STRIPE_PAGES % 8 == 0, "a stripe is a whole number of bitmap bytes");

static inline bool fm_state_bit(const uint8_t *bits, uint64_t page)
{
	return (bits[page >> 3] >> (page & 7)) & 1;
}

static inline void fm_state_bit_set(uint8_t *bits, uint64_t page, bool on)
{
	uint8_t m = (uint8_t)(1u << (page & 7));

	if (on)
		bits[page >> 3] |= m;
	else
		bits[page >> 3] &= (uint8_t)~m;
}

#endif
