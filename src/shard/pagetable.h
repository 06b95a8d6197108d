/* shard/pagetable: the page-state table of one shard.
 *
 * Each region stripe the shard owns gets a chunk of 512 dense page ids, so
 * the state is one byte per page in one array, and the policy's links are
 * indexed by the same ids. Chunks of freed regions are reused. Single
 * threaded: only the owning shard touches its table.
 *
 * Chunks are handed out lazily: a stripe nobody touched maps to chunk 0, the
 * null chunk, which is never owned and whose pages always read PS_NONE. So
 * registering a huge sparse region costs one zero-filled (untouched, hence
 * unbacked) array of chunk numbers, and the daemon pays for stripes as the
 * client touches them. State must never be written through chunk 0: call
 * pt_stripe_alloc() first. */
#ifndef FM_PAGETABLE_H
#define FM_PAGETABLE_H

#include <stdint.h>

#include "base/base.h"   /* stripe geometry */

enum page_state {
	PS_NONE = 0,      /* never touched, or discarded: zero-fill on fault */
	PS_RESIDENT,      /* in the client's memory */
	PS_STORED,        /* evicted; the store holds it */
	PS_ZERO,          /* evicted as all-zero; nothing stored */
	PS_POISONED,      /* the store lost it; every touch gets SIGBUS */
	PS_NR
};

/* One region as the table sees it; embedded in the shard's region record. */
struct pt_region {
	uint32_t rot;           /* stripe rotation (fm_region_rot): decides stripe ownership */
	uint64_t npages;        /* pages in the whole region */
	uint64_t nstripes;      /* stripes of the region this shard owns */
	uint32_t *chunk;        /* local stripe -> chunk; 0 = none yet (the null chunk) */
};

struct pt_chunk_owner {
	struct pt_region *pr;   /* NULL when free */
	uint64_t first_page;    /* region page index of the chunk's first page */
};

struct pagetable {
	unsigned shard, nshards;
	uint8_t *state;                 /* per page id */
	struct pt_chunk_owner *owner;   /* per chunk */
	uint32_t nchunks, cap;          /* chunks handed out / allocated */
	uint32_t *free_chunks;
	uint32_t nfree;
};

void pt_init(struct pagetable *pt, unsigned shard, unsigned nshards);
void pt_destroy(struct pagetable *pt);   /* frees the arrays, not the regions */

/* Attach a region with no chunk yet: every page reads PS_NONE through the
 * null chunk. O(1) but for one calloc of 4 bytes per stripe, which the
 * kernel backs only where written. 0 or -ENOMEM. */
int pt_region_attach(struct pagetable *pt, struct pt_region *pr, uint32_t rot, uint64_t npages);
/* Give the stripe of `page` (one this shard owns) its own chunk, all
 * PS_NONE, if it has none. 0, -ENOMEM or -ENOSPC (ids exhausted); on error
 * the stripe still reads through the null chunk. */
int pt_stripe_alloc(struct pagetable *pt, struct pt_region *pr, uint64_t page);
/* pt_region_attach, then a chunk for every stripe (eagerly). 0, -ENOMEM
 * or -ENOSPC. Nothing is kept on error. */
int pt_region_add(struct pagetable *pt, struct pt_region *pr, uint32_t rot, uint64_t npages);
/* Return the region's chunks for reuse and free pr->chunk. The caller
 * handles page states first (pt_for_each). */
void pt_region_del(struct pagetable *pt, struct pt_region *pr);

/* Number of ids the table can hold now (for sizing the policy). */
static inline uint32_t pt_capacity(const struct pagetable *pt)
{
	return pt->cap << FM_STRIPE_SHIFT;
}

/* Pages with an id of their own (tracked pages; the null chunk is not). */
static inline uint64_t pt_tracked(const struct pagetable *pt)
{
	return pt->nchunks ? (uint64_t)(pt->nchunks - pt->nfree - 1) << FM_STRIPE_SHIFT : 0;
}

/* Whether the stripe of `page` has a chunk of its own. */
static inline int pt_has_stripe(const struct pagetable *pt, const struct pt_region *pr,
				uint64_t page)
{
	return pr->chunk[fm_stripe_local(page, pt->nshards)] != 0;
}

/* Region page index of the first page of local stripe ls. */
static inline uint64_t pt_stripe_first_page(const struct pagetable *pt, const struct pt_region *pr,
					    uint64_t ls)
{
	uint64_t s0 = (pt->shard + pt->nshards - (pr->rot % pt->nshards)) % pt->nshards;

	return (s0 + ls * pt->nshards) << FM_STRIPE_SHIFT;
}

/* id of a page this shard owns (the caller checked region_shard_of). */
static inline uint32_t pt_id(const struct pagetable *pt, const struct pt_region *pr, uint64_t page)
{
	uint64_t ls = fm_stripe_local(page, pt->nshards);

	return (pr->chunk[ls] << FM_STRIPE_SHIFT) | (uint32_t)(page & (FM_STRIPE_PAGES - 1));
}

static inline struct pt_region *pt_page_of(const struct pagetable *pt, uint32_t id, uint64_t *page)
{
	const struct pt_chunk_owner *o = &pt->owner[id >> FM_STRIPE_SHIFT];

	*page = o->first_page + (id & (FM_STRIPE_PAGES - 1));
	return o->pr;
}

/* True when a page id maps to a real page (the last stripe may be short). */
static inline int pt_id_valid(const struct pagetable *pt, uint32_t id)
{
	uint64_t page;
	const struct pt_region *pr = pt_page_of(pt, id, &page);

	return pr && page < pr->npages;
}

#endif
