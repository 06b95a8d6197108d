#include "shard/storecopy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void sc_init(struct storecopy *sc, bool enabled)
{
	memset(sc, 0, sizeof(*sc));
	sc->enabled = enabled;
}

void sc_destroy(struct storecopy *sc)
{
	for (uint32_t c = 0; c < sc->cap; c++)
		free(sc->chunk[c]);
	free(sc->chunk);
	memset(sc, 0, sizeof(*sc));
}

int sc_reserve(struct storecopy *sc, uint32_t nchunks)
{
	struct sc_chunk **p;

	if (!sc->enabled || nchunks <= sc->cap)
		return 0;
	p = realloc(sc->chunk, nchunks * sizeof(*p));
	if (!p)
		return -ENOMEM;
	memset(p + sc->cap, 0, (nchunks - sc->cap) * sizeof(*p));
	sc->chunk = p;
	sc->cap = nchunks;
	return 0;
}

void sc_drop_chunk(struct storecopy *sc, uint32_t chunk)
{
	if (chunk < sc->cap) {
		free(sc->chunk[chunk]);
		sc->chunk[chunk] = NULL;
	}
}

static inline void bit_set(uint64_t *bits, uint32_t id, bool on)
{
	uint32_t off = id & (FM_STRIPE_PAGES - 1);
	uint64_t m = 1ull << (off & 63);

	if (on)
		bits[off >> 6] |= m;
	else
		bits[off >> 6] &= ~m;
}

int sc_prepare(struct storecopy *sc, uint32_t id)
{
	uint32_t c = id >> FM_STRIPE_SHIFT;

	if (!sc->enabled || (c < sc->cap && sc->chunk[c]))
		return 0;
	if (c >= sc->cap)
		return -ENOMEM;   /* sc_reserve was not called: refuse, never guess */
	sc->chunk[c] = calloc(1, sizeof(struct sc_chunk));
	return sc->chunk[c] ? 0 : -ENOMEM;
}

int sc_set_synced(struct storecopy *sc, uint32_t id, uint64_t hash)
{
	struct sc_chunk *ch;

	if (!sc->enabled)
		return 0;
	if (sc_prepare(sc, id) < 0)
		return -ENOMEM;
	ch = sc->chunk[id >> FM_STRIPE_SHIFT];
	ch->hash[id & (FM_STRIPE_PAGES - 1)] = hash;
	bit_set(ch->has, id, true);
	bit_set(ch->synced, id, true);
	return 0;
}

void sc_set_unsynced(struct storecopy *sc, uint32_t id)
{
	struct sc_chunk *ch = sc_chunk_of(sc, id);

	/* The caller ran sc_prepare before the write, so the chunk exists. */
	if (ch) {
		bit_set(ch->has, id, true);
		bit_set(ch->synced, id, false);
	}
}

void sc_clear(struct storecopy *sc, uint32_t id)
{
	struct sc_chunk *ch = sc_chunk_of(sc, id);

	if (ch) {
		bit_set(ch->has, id, false);
		bit_set(ch->synced, id, false);
	}
}

size_t sc_bytes(const struct storecopy *sc)
{
	size_t n = sc->cap * sizeof(*sc->chunk);

	for (uint32_t c = 0; c < sc->cap; c++)
		if (sc->chunk[c])
			n += sizeof(struct sc_chunk);
	return n;
}
