/* kv/slab: the RAM tier's allocator. Blobs of 1..4096 bytes live in size
 * classes of KV_SLAB_STEP bytes; each class carves 2 MiB anonymous chunks
 * (MAP_NORESERVE: the kernel backs a slot when it is first written) into
 * equal slots and keeps a free list threaded through its free slots, so
 * the list costs no memory. Chunks are kept until destroy.
 *
 * Memory figures: held = slots ever carved x their size (what the process
 * really touched); live = slots in use x their size; used = blob bytes.
 * held - live is external fragmentation (free slots of some class), live -
 * used is internal (round-up to the class). Single-threaded. */
#ifndef FM_KV_SLAB_H
#define FM_KV_SLAB_H

#include <stdint.h>

#define KV_SLAB_STEP 256u
#define KV_SLAB_CLASSES (4096u / KV_SLAB_STEP)
#define KV_SLAB_NONE UINT32_MAX

struct kv_slab_class {
	uint8_t **chunks;
	uint32_t nchunks, chunks_cap;
	uint32_t per_chunk; /* slots per chunk */
	uint32_t size;      /* slot bytes */
	uint32_t free_head; /* KV_SLAB_NONE: empty */
	uint32_t carved;    /* slots [0, carved) are live or free */
	uint32_t live;
};

struct kv_slab {
	struct kv_slab_class cls[KV_SLAB_CLASSES];
	uint64_t held, live_bytes, used;
	uint64_t cap; /* held never passes it */
};

/* Class of a blob of len bytes (1..4096). */
static inline unsigned kv_slab_class_of(uint32_t len)
{
	return (len - 1) / KV_SLAB_STEP;
}

void kv_slab_init(struct kv_slab *s, uint64_t cap_bytes);
void kv_slab_destroy(struct kv_slab *s);
/* A slot of class c: 0, -ENOSPC when the class has no free slot and carving
 * one would pass the cap, -ENOMEM when the host refuses a chunk. */
int kv_slab_alloc(struct kv_slab *s, unsigned c, uint32_t *slot);
void kv_slab_free(struct kv_slab *s, unsigned c, uint32_t slot);
/* True when class c can hand out a slot without passing the cap. */
int kv_slab_can_alloc(const struct kv_slab *s, unsigned c);

static inline uint8_t *kv_slab_ptr(const struct kv_slab *s, unsigned c, uint32_t slot)
{
	const struct kv_slab_class *k = &s->cls[c];

	return k->chunks[slot / k->per_chunk] + (uint64_t)(slot % k->per_chunk) * k->size;
}

/* Chunks mapped over every class (for tests). */
uint64_t kv_slab_chunks(const struct kv_slab *s);

#endif
