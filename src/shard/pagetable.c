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

/* Chunk 0 is the null chunk: all PS_NONE, owned by nobody, never freed. */
static int null_chunk_init(struct pagetable *pt)
{
	int rc;

	if (pt->nchunks > 0)
		return 0;
	if (pt->cap == 0 && (rc = grow(pt)) < 0)
		return rc;
	pt->nchunks = 1;
	pt->owner[0].pr = NULL;
	pt->owner[0].first_page = 0;
	memset(pt->state, PS_NONE, FM_STRIPE_PAGES);
	return 0;
}

int pt_region_attach(struct pagetable *pt, struct pt_region *pr, uint32_t rot, uint64_t npages)
{
	uint64_t stripes = (npages + FM_STRIPE_PAGES - 1) >> FM_STRIPE_SHIFT;
	/* Global stripe g is ours when (g + rot) % n == shard; s0 is the first. */
	uint64_t s0 = (pt->shard + pt->nshards - (rot % pt->nshards)) % pt->nshards;
	int rc;

	if ((rc = null_chunk_init(pt)) < 0)
		return rc;
	pr->rot = rot;
	pr->npages = npages;
	pr->nstripes = s0 < stripes ? (stripes - s0 + pt->nshards - 1) / pt->nshards : 0;
	pr->chunk = calloc(pr->nstripes ? pr->nstripes : 1, sizeof(*pr->chunk));
	if (!pr->chunk)
		return -ENOMEM;
	return 0;
}

static int stripe_alloc(struct pagetable *pt, struct pt_region *pr, uint64_t ls)
{
	uint32_t c;
	int rc;

	if (pr->chunk[ls])
		return 0;
	if ((rc = chunk_alloc(pt, &c)) < 0)
		return rc;
	pr->chunk[ls] = c;
	pt->owner[c].pr = pr;
	pt->owner[c].first_page = pt_stripe_first_page(pt, pr, ls);
	memset(pt->state + ((size_t)c << FM_STRIPE_SHIFT), PS_NONE, FM_STRIPE_PAGES);
	return 0;
}

int pt_stripe_alloc(struct pagetable *pt, struct pt_region *pr, uint64_t page)
{
	return stripe_alloc(pt, pr, fm_stripe_local(page, pt->nshards));
}

int pt_region_add(struct pagetable *pt, struct pt_region *pr, uint32_t rot, uint64_t npages)
{
	int rc = pt_region_attach(pt, pr, rot, npages);

	for (uint64_t ls = 0; rc == 0 && ls < pr->nstripes; ls++) {
		if ((rc = stripe_alloc(pt, pr, ls)) < 0)
			pt_region_del(pt, pr);
	}
	return rc;
}

void pt_region_del(struct pagetable *pt, struct pt_region *pr)
{
	for (uint64_t ls = 0; ls < pr->nstripes; ls++) {
		uint32_t c = pr->chunk[ls];

		if (c == 0)
			continue;
		pt->owner[c].pr = NULL;
		pt->free_chunks[pt->nfree++] = c;
	}
	free(pr->chunk);
	pr->chunk = NULL;
	pr->nstripes = 0;
}
