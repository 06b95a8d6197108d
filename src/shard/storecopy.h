/* shard/storecopy: what a remote store holds for each page of one shard.
 *
 * A store that keeps copies after a get (kv_keeps_after_get: memcached) lets
 * eviction skip the write of a page that did not change since it was stored
 * or fetched. The shard cannot see writes to resident pages (a synchronous
 * write-protect window per page would cost a fault per first write, and
 * UFFD_FEATURE_WP_ASYNC would make the eviction window asynchronous), so it
 * compares content: the SipHash of the page when it was stored or fetched,
 * against its hash after eviction has write-protected it.
 *
 * Per page id: the content hash and two bits.
 *   has     the store may hold a copy under this page's key: delete it when
 *           the page is discarded, turns zero or its region goes away.
 *   synced  the store's copy is exactly the content whose hash is recorded
 *           (the last write of it succeeded); only then may eviction skip.
 * A PS_STORED page always has both bits. The same hash checks every fetch,
 * so a stale or corrupt copy is never installed.
 *
 * Memory: nothing unless enabled; then 8 bytes per chunk of 512 ids for the
 * index, and 4224 bytes (8.25 per page) for each chunk the first time one
 * of its pages is stored. Chunks are freed with their region.
 * Single-threaded: the owning shard only. */
#ifndef FM_STORECOPY_H
#define FM_STORECOPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"   /* FM_STRIPE_SHIFT: ids come in chunks of 512 */

struct sc_chunk {
	uint64_t hash[FM_STRIPE_PAGES];
	uint64_t has[FM_STRIPE_PAGES / 64];
	uint64_t synced[FM_STRIPE_PAGES / 64];
};

struct storecopy {
	struct sc_chunk **chunk;   /* per id chunk; NULL until a page of it is stored */
	uint32_t cap;              /* entries of chunk[] */
	bool enabled;
};

void sc_init(struct storecopy *sc, bool enabled);
void sc_destroy(struct storecopy *sc);
/* Make room for ids of `nchunks` chunks (control path). 0 or -ENOMEM. */
int sc_reserve(struct storecopy *sc, uint32_t nchunks);
/* Forget one chunk's pages (its region is gone). */
void sc_drop_chunk(struct storecopy *sc, uint32_t chunk);

static inline struct sc_chunk *sc_chunk_of(const struct storecopy *sc, uint32_t id)
{
	uint32_t c = id >> FM_STRIPE_SHIFT;

	return sc->enabled && c < sc->cap ? sc->chunk[c] : NULL;
}

static inline bool sc_bit(const uint64_t *bits, uint32_t id)
{
	uint32_t off = id & (FM_STRIPE_PAGES - 1);

	return (bits[off >> 6] >> (off & 63)) & 1;
}

/* The store may hold a copy of this page. */
static inline bool sc_has(const struct storecopy *sc, uint32_t id)
{
	const struct sc_chunk *c = sc_chunk_of(sc, id);

	return c && sc_bit(c->has, id);
}

/* The recorded hash, when the store's copy is known to be exactly it. */
static inline bool sc_synced_hash(const struct storecopy *sc, uint32_t id, uint64_t *hash)
{
	const struct sc_chunk *c = sc_chunk_of(sc, id);

	if (!c || !sc_bit(c->synced, id))
		return false;
	*hash = c->hash[id & (FM_STRIPE_PAGES - 1)];
	return true;
}

/* Allocate the page's chunk if needed, before its first write is sent, so
 * whatever that write leaves behind is recorded. 0 (also when disabled), or
 * -ENOMEM: the caller must not store the page then. */
int sc_prepare(struct storecopy *sc, uint32_t id);
/* The store now holds exactly the content hashing to `hash` (a write
 * succeeded, or a fetch was verified). Prepares the chunk itself: 0 or
 * -ENOMEM with nothing changed. */
int sc_set_synced(struct storecopy *sc, uint32_t id, uint64_t hash);
/* A write may have reached the store but did not succeed everywhere: a copy
 * may exist and may differ from the page. */
void sc_set_unsynced(struct storecopy *sc, uint32_t id);
/* The store holds nothing for this page any more. */
void sc_clear(struct storecopy *sc, uint32_t id);

/* Bytes of this table now (index + chunks). */
size_t sc_bytes(const struct storecopy *sc);

#endif
