#include "kv/slab.h"

#include "base/base.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define SLAB_CHUNK (2u << 20)

/* Two bitmaps per class, chunks_cap bits each, in one allocation: chunks
 * with a free-listed slot (taken first, lowest chunk first, so the high
 * chunks drain and can be unmapped) and mapped chunks with uncarved slots. */
static inline uint64_t *bm_free(struct kv_slab_class *k)
{
	return k->room;
}

static inline uint64_t *bm_uncarved(struct kv_slab_class *k)
{
	return k->room + k->chunks_cap / 64;
}

static inline void bit_set(uint64_t *bm, uint32_t i)
{
	bm[i / 64] |= 1ull << (i % 64);
}

static inline void bit_clear(uint64_t *bm, uint32_t i)
{
	bm[i / 64] &= ~(1ull << (i % 64));
}

static uint32_t bit_first(const uint64_t *bm, uint32_t nbits)
{
	for (uint32_t w = 0; w < (nbits + 63) / 64; w++)
		if (bm[w]) {
			uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(bm[w]);

			return i < nbits ? i : KV_SLAB_NONE;
		}
	return KV_SLAB_NONE;
}

void kv_slab_init(struct kv_slab *s, uint64_t cap_bytes)
{
	memset(s, 0, sizeof(*s));
	s->cap = cap_bytes;
	for (unsigned c = 0; c < KV_SLAB_CLASSES; c++) {
		s->cls[c].size = (c + 1) * KV_SLAB_STEP;
		s->cls[c].per_chunk = SLAB_CHUNK / s->cls[c].size;
	}
}

void kv_slab_destroy(struct kv_slab *s)
{
	for (unsigned c = 0; c < KV_SLAB_CLASSES; c++) {
		struct kv_slab_class *k = &s->cls[c];

		for (uint32_t i = 0; i < k->nchunks; i++)
			if (k->chunks[i].base)
				munmap(k->chunks[i].base, SLAB_CHUNK);
		free(k->chunks);
		free(k->room);
		k->chunks = NULL;
		k->room = NULL;
		k->nchunks = k->chunks_cap = k->mapped = 0;
	}
}

int kv_slab_can_alloc(const struct kv_slab *s, unsigned c)
{
	const struct kv_slab_class *k = &s->cls[c];

	return k->carved > k->live || s->held + k->size <= s->cap;
}

/* Room for one more chunk record (index arrays grow by doubling; the
 * bitmaps stay whole 64-bit words). */
static int slab_index_grow(struct kv_slab_class *k)
{
	uint32_t ncap = k->chunks_cap ? k->chunks_cap * 2 : 64;
	struct kv_slab_chunk *nc;
	uint64_t *nr;

	if (k->nchunks < k->chunks_cap)
		return 0;
	nc = realloc(k->chunks, ncap * sizeof(*nc));
	if (!nc)
		return -ENOMEM;
	k->chunks = nc;
	nr = calloc(2 * (size_t)ncap / 64, sizeof(*nr));
	if (!nr)
		return -ENOMEM;
	if (k->room) {
		memcpy(nr, k->room, k->chunks_cap / 64 * sizeof(*nr));
		memcpy(nr + ncap / 64, k->room + k->chunks_cap / 64, k->chunks_cap / 64 * sizeof(*nr));
		free(k->room);
	}
	k->room = nr;
	k->chunks_cap = ncap;
	return 0;
}

/* Map a chunk in the lowest hole, or a new one at the end. */
static int slab_chunk_map(struct kv_slab_class *k, uint32_t *out)
{
	uint32_t i;
	void *p;

	for (i = 0; i < k->nchunks && k->chunks[i].base; i++)
		;
	if (i == k->nchunks) {
		if ((uint64_t)(i + 1) * k->per_chunk >= KV_SLAB_NONE)
			return -ENOSPC; /* slot numbers stay 32-bit */
		int rc = slab_index_grow(k);

		if (rc)
			return rc;
	}
	p = mmap(NULL, SLAB_CHUNK, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	k->chunks[i] = (struct kv_slab_chunk){ .base = p, .free_head = KV_SLAB_NONE };
	if (i == k->nchunks)
		k->nchunks++;
	k->mapped++;
	bit_set(bm_uncarved(k), i);
	*out = i;
	return 0;
}

int kv_slab_alloc(struct kv_slab *s, unsigned c, uint32_t *slot)
{
	struct kv_slab_class *k = &s->cls[c];
	struct kv_slab_chunk *ch;
	uint32_t i = k->carved > k->live ? bit_first(bm_free(k), k->nchunks) : KV_SLAB_NONE;
	uint32_t x;

	if (i != KV_SLAB_NONE) {
		ch = &k->chunks[i];
		x = ch->free_head;
		memcpy(&ch->free_head, ch->base + (uint64_t)x * k->size, sizeof(ch->free_head));
		if (ch->free_head == KV_SLAB_NONE)
			bit_clear(bm_free(k), i);
	} else {
		if (s->held + k->size > s->cap)
			return -ENOSPC;
		i = bit_first(bm_uncarved(k), k->nchunks);
		if (i == KV_SLAB_NONE) {
			int rc = slab_chunk_map(k, &i);

			if (rc)
				return rc;
		}
		ch = &k->chunks[i];
		x = ch->carved++;
		if (ch->carved == k->per_chunk)
			bit_clear(bm_uncarved(k), i);
		k->carved++;
		s->held += k->size;
	}
	ch->live++;
	k->live++;
	s->live_bytes += k->size;
	*slot = i * k->per_chunk + x;
	return 0;
}

void kv_slab_free(struct kv_slab *s, unsigned c, uint32_t slot)
{
	struct kv_slab_class *k = &s->cls[c];
	uint32_t i = slot / k->per_chunk, x = slot % k->per_chunk;
	struct kv_slab_chunk *ch = &k->chunks[i];

	k->live--;
	s->live_bytes -= k->size;
	if (--ch->live == 0) {
		/* Empty: give the whole chunk back to the host. */
		munmap(ch->base, SLAB_CHUNK);
		s->held -= (uint64_t)ch->carved * k->size;
		k->carved -= ch->carved;
		*ch = (struct kv_slab_chunk){ .free_head = KV_SLAB_NONE };
		bit_clear(bm_free(k), i);
		bit_clear(bm_uncarved(k), i);
		k->mapped--;
		k->released++;
		while (k->nchunks > 0 && !k->chunks[k->nchunks - 1].base)
			k->nchunks--;
		return;
	}
	memcpy(ch->base + (uint64_t)x * k->size, &ch->free_head, sizeof(ch->free_head));
	ch->free_head = x;
	bit_set(bm_free(k), i);
}

uint64_t kv_slab_chunks(const struct kv_slab *s)
{
	uint64_t n = 0;

	for (unsigned c = 0; c < KV_SLAB_CLASSES; c++)
		n += s->cls[c].mapped;
	return n;
}

uint64_t kv_slab_released(const struct kv_slab *s)
{
	uint64_t n = 0;

	for (unsigned c = 0; c < KV_SLAB_CLASSES; c++)
		n += s->cls[c].released;
	return n;
}

uint64_t kv_slab_meta_bytes(const struct kv_slab *s)
{
	uint64_t n = 0;

	for (unsigned c = 0; c < KV_SLAB_CLASSES; c++)
		n += s->cls[c].chunks_cap * sizeof(struct kv_slab_chunk) + s->cls[c].chunks_cap / 4;
	return n;
}
