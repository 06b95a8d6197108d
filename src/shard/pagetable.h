/* shard/pagetable: the page-state table of one shard.
 *
 * Each region stripe the shard owns gets a chunk of 512 dense page ids, so
 * the state is one byte per page in one array, and the policy's links are
 * indexed by the same ids. Chunks of freed regions are reused. Single
 * threaded: only the owning shard touches its table. */
#ifndef FM_PAGETABLE_H
#define FM_PAGETABLE_H

#include <stdint.h>

#include "uffd/uffd.h"   /* stripe geometry */

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
	uint32_t slot;          /* region table slot: decides stripe ownership */
	uint64_t npages;        /* pages in the whole region */
	uint64_t nstripes;      /* stripes of the region this shard owns */
	uint32_t *chunk;        /* local stripe -> chunk */
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

/* Give every stripe of the region that this shard owns a chunk of ids, all
 * PS_NONE. 0, -ENOMEM or -ENOSPC (ids exhausted). Nothing is kept on error. */
int pt_region_add(struct pagetable *pt, struct pt_region *pr, uint32_t slot, uint64_t npages);
/* Return the region's chunks for reuse and free pr->chunk. The caller
 * handles page states first (pt_for_each). */
void pt_region_del(struct pagetable *pt, struct pt_region *pr);

/* Number of ids the table can hold now (for sizing the policy). */
static inline uint32_t pt_capacity(const struct pagetable *pt)
{
	return pt->cap << FM_STRIPE_SHIFT;
}

/* Pages with an id (tracked pages). */
static inline uint64_t pt_tracked(const struct pagetable *pt)
{
	return (uint64_t)(pt->nchunks - pt->nfree) << FM_STRIPE_SHIFT;
}

/* id of a page this shard owns (the caller checked region_shard_of). */
static inline uint32_t pt_id(const struct pagetable *pt, const struct pt_region *pr, uint64_t page)
{
	uint64_t ls = region_local_stripe(page, pt->nshards);

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
