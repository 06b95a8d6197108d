#include "kv/slab.h"

#include "base/base.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define SLAB_CHUNK (2u << 20)

void kv_slab_init(struct kv_slab *s, uint64_t cap_bytes)
{
	memset(s, 0, sizeof(*s));
	s->cap = cap_bytes;
	for (unsigned c = 0; c < KV_SLAB_CLASSES; c++) {
		s->cls[c].size = (c + 1) * KV_SLAB_STEP;
		s->cls[c].per_chunk = SLAB_CHUNK / s->cls[c].size;
		s->cls[c].free_head = KV_SLAB_NONE;
	}
}

void kv_slab_destroy(struct kv_slab *s)
{
	for (unsigned c = 0; c < KV_SLAB_CLASSES; c++) {
		struct kv_slab_class *k = &s->cls[c];

		for (uint32_t i = 0; i < k->nchunks; i++)
			munmap(k->chunks[i], SLAB_CHUNK);
		free(k->chunks);
		k->chunks = NULL;
		k->nchunks = k->chunks_cap = 0;
	}
}

int kv_slab_can_alloc(const struct kv_slab *s, unsigned c)
{
	const struct kv_slab_class *k = &s->cls[c];

	return k->free_head != KV_SLAB_NONE || s->held + k->size <= s->cap;
}

static int slab_chunk_add(struct kv_slab_class *k)
{
	void *p;

	if (k->nchunks == k->chunks_cap) {
		uint32_t ncap = k->chunks_cap ? k->chunks_cap * 2 : 8;
		uint8_t **nc = realloc(k->chunks, ncap * sizeof(*nc));

		if (!nc)
			return -ENOMEM;
		k->chunks = nc;
		k->chunks_cap = ncap;
	}
	p = mmap(NULL, SLAB_CHUNK, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	k->chunks[k->nchunks++] = p;
	return 0;
}

int kv_slab_alloc(struct kv_slab *s, unsigned c, uint32_t *slot)
{
	struct kv_slab_class *k = &s->cls[c];
	uint32_t x = k->free_head;

	if (x != KV_SLAB_NONE) {
		memcpy(&k->free_head, kv_slab_ptr(s, c, x), sizeof(k->free_head));
	} else {
		if (s->held + k->size > s->cap || k->carved == KV_SLAB_NONE - 1)
			return -ENOSPC;
		if (k->carved / k->per_chunk == k->nchunks) {
			int rc = slab_chunk_add(k);

			if (rc)
				return rc;
		}
		x = k->carved++;
		s->held += k->size;
	}
	k->live++;
	s->live_bytes += k->size;
	*slot = x;
	return 0;
}

void kv_slab_free(struct kv_slab *s, unsigned c, uint32_t slot)
{
	struct kv_slab_class *k = &s->cls[c];

	memcpy(kv_slab_ptr(s, c, slot), &k->free_head, sizeof(k->free_head));
	k->free_head = slot;
	k->live--;
	s->live_bytes -= k->size;
}

uint64_t kv_slab_chunks(const struct kv_slab *s)
{
	uint64_t n = 0;

	for (unsigned c = 0; c < KV_SLAB_CLASSES; c++)
		n += s->cls[c].nchunks;
	return n;
}
