#include "shard/pagetable.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void pt_init(struct pagetable *pt, unsigned shard, unsigned nshards)
{
	memset(pt, 0, sizeof(*pt));
	pt->shard = shard;
	pt->nshards = nshards;
}

void pt_destroy(struct pagetable *pt)
{
	free(pt->state);
	free(pt->owner);
	free(pt->free_chunks);
	memset(pt, 0, sizeof(*pt));
}

static int grow(struct pagetable *pt)
{
	uint32_t cap = pt->cap ? pt->cap * 2 : 64;
	void *p;

	if (pt->cap >= (UINT32_MAX >> FM_STRIPE_SHIFT) / 2)
		return -ENOSPC;
	/* Each realloc is kept as soon as it succeeds, so a later failure
	 * leaves a consistent (if larger) table. */
	if (!(p = realloc(pt->state, (size_t)cap << FM_STRIPE_SHIFT)))
		return -ENOMEM;
	pt->state = p;
	if (!(p = realloc(pt->owner, cap * sizeof(*pt->owner))))
		return -ENOMEM;
	pt->owner = p;
	if (!(p = realloc(pt->free_chunks, cap * sizeof(*pt->free_chunks))))
		return -ENOMEM;
	pt->free_chunks = p;
	pt->cap = cap;
	return 0;
}

static int chunk_alloc(struct pagetable *pt, uint32_t *out)
{
	int rc;

	if (pt->nfree > 0) {
		*out = pt->free_chunks[--pt->nfree];
		return 0;
	}
	if (pt->nchunks == pt->cap && (rc = grow(pt)) < 0)
		return rc;
	*out = pt->nchunks++;
	return 0;
}

int pt_region_add(struct pagetable *pt, struct pt_region *pr, uint32_t slot, uint64_t npages)
{
	uint64_t stripes = (npages + FM_STRIPE_PAGES - 1) >> FM_STRIPE_SHIFT;
	/* Global stripe g is ours when (g + slot) % n == shard; s0 is the first. */
	uint64_t s0 = (pt->shard + pt->nshards - (slot % pt->nshards)) % pt->nshards;

	pr->slot = slot;
	pr->npages = npages;
	pr->nstripes = s0 < stripes ? (stripes - s0 + pt->nshards - 1) / pt->nshards : 0;
	pr->chunk = calloc(pr->nstripes ? pr->nstripes : 1, sizeof(*pr->chunk));
	if (!pr->chunk)
		return -ENOMEM;
	for (uint64_t ls = 0; ls < pr->nstripes; ls++) {
		uint32_t c;
		int rc = chunk_alloc(pt, &c);

		if (rc < 0) {
			pr->nstripes = ls;
			pt_region_del(pt, pr);
			return rc;
		}
		pr->chunk[ls] = c;
		pt->owner[c].pr = pr;
		pt->owner[c].first_page = (s0 + ls * pt->nshards) << FM_STRIPE_SHIFT;
		memset(pt->state + ((size_t)c << FM_STRIPE_SHIFT), PS_NONE, FM_STRIPE_PAGES);
	}
	return 0;
}

void pt_region_del(struct pagetable *pt, struct pt_region *pr)
{
	for (uint64_t ls = 0; ls < pr->nstripes; ls++) {
		uint32_t c = pr->chunk[ls];

		pt->owner[c].pr = NULL;
		pt->free_chunks[pt->nfree++] = c;
	}
	free(pr->chunk);
	pr->chunk = NULL;
	pr->nstripes = 0;
}
