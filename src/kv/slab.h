/* kv/slab: the RAM tier's allocator. Blobs of 1..4096 bytes live in size
 * classes of KV_SLAB_STEP bytes; each class maps 2 MiB anonymous chunks
 * (MAP_NORESERVE: the kernel backs a slot when it is first written) and
 * carves them into equal slots. Each chunk keeps its own free list, threaded
 * through its free slots, so the lists cost no memory.
 *
 * Memory goes back to the host: a chunk whose last slot is freed is
 * unmapped at once, and allocation takes the lowest-numbered chunk with a
 * free slot, so the high chunks drain when the tier shrinks. A slot number
 * is chunk index x slots per chunk + index in the chunk; an unmapped chunk
 * leaves a hole in the numbering that the next new chunk fills.
 *
 * Memory figures: held = slots carved in the mapped chunks x their size
 * (what the process really touched and has not given back); live = slots in
 * use x their size; used = blob bytes. held - live is external fragmentation
 * (free slots of some class), live - used is internal (round-up to the
 * class). Single-threaded. */
#ifndef FM_KV_SLAB_H
#define FM_KV_SLAB_H

#include <stdint.h>

#define KV_SLAB_STEP 256u
#define KV_SLAB_CLASSES (4096u / KV_SLAB_STEP)
#define KV_SLAB_NONE UINT32_MAX

struct kv_slab_chunk {
	uint8_t *base;      /* NULL: unmapped (a hole in the slot numbering) */
	uint32_t free_head; /* index in the chunk, KV_SLAB_NONE: no free slot */
	uint32_t carved;    /* slots [0, carved) are live or on the free list */
	uint32_t live;
};

struct kv_slab_class {
	struct kv_slab_chunk *chunks;
	uint64_t *room;     /* bit i: chunk i is mapped and has a free or uncarved slot */
	uint32_t nchunks, chunks_cap; /* chunks[0, nchunks) exist, mapped or not */
	uint32_t mapped;
	uint32_t per_chunk; /* slots per chunk */
	uint32_t size;      /* slot bytes */
	uint64_t carved;    /* slots carved in mapped chunks */
	uint32_t live;
	uint64_t released;  /* chunks unmapped since init */
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
/* Free a slot; the last free slot of a chunk unmaps the chunk. */
void kv_slab_free(struct kv_slab *s, unsigned c, uint32_t slot);
/* True when class c can hand out a slot without passing the cap. */
int kv_slab_can_alloc(const struct kv_slab *s, unsigned c);

static inline uint8_t *kv_slab_ptr(const struct kv_slab *s, unsigned c, uint32_t slot)
{
	const struct kv_slab_class *k = &s->cls[c];

	return k->chunks[slot / k->per_chunk].base + (uint64_t)(slot % k->per_chunk) * k->size;
}

/* Chunks mapped now, over every class (for tests). */
uint64_t kv_slab_chunks(const struct kv_slab *s);
/* Chunks unmapped since init, over every class. */
uint64_t kv_slab_released(const struct kv_slab *s);
/* Bytes of chunk index arrays and bitmaps (metadata). */
uint64_t kv_slab_meta_bytes(const struct kv_slab *s);

#endif
