/* kv/local: the embedded page store. One handle per shard, used by that
 * shard's thread only, so nothing here locks.
 *
 * Index: an open-addressing hash table of (region, page) -> slot number,
 * linear probing, power-of-two size, doubled when it would pass 70% load.
 * Deletion shifts the following run back (no tombstones), so probe lengths
 * never rot under the put/del churn that eviction produces. Each entry keeps
 * 32 bits of its hash, so growth and back-shifts never rehash a key and most
 * mismatches are rejected without touching the key.
 *
 * Data: a slab of 2 MiB anonymous chunks (MAP_NORESERVE; the kernel backs a
 * slot only when it is first written), carved into 4 KiB slots. A freed slot
 * goes on a free list threaded through the free slots themselves, so the
 * list costs no memory and the next put reuses the slot. Chunks are never
 * returned before close: a store that reached some size under eviction tends
 * to come back to it, and returning a chunk would need every live slot in it
 * moved first. Once the store has held its peak count of pages, put, get and
 * del allocate nothing.
 *
 * Metadata: one 24-byte entry per table cell at 35-70% load, so 34-69 bytes
 * per stored page, plus 8 bytes per 2 MiB chunk.
 *
 * Compression (not done) would take: size classes in the slab (e.g. 512 B
 * steps, one free list per class) with incompressible pages kept in a full
 * slot; the entry's 32-bit slot widened to class + index + length (the hash
 * field can shrink to make room); the cap counted in compressed bytes; and
 * a per-shard scratch page for the compressor so the path stays
 * allocation-free. LZ4 costs about 1 us per page each way against ~0.1 us for
 * a copy, so it should be a config choice. */
#include "kv/kv.h"

#include "base/base.h"
#include "base/log.h"
#include "ctl/config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define LOCAL_CHUNK_SHIFT 9 /* 512 slots, 2 MiB: one mmap per 512 new pages */
#define LOCAL_CHUNK_SLOTS (1u << LOCAL_CHUNK_SHIFT)
#define LOCAL_TABLE_MIN 256u /* 6 KiB: a shard that stores little pays little */
#define LOCAL_NONE UINT32_MAX /* empty table cell, end of the free list */

struct local_ent {
	uint64_t region;
	uint64_t page;
	uint32_t hash; /* low 32 bits of the key hash; home = hash & mask */
	uint32_t slot; /* LOCAL_NONE: the cell is empty */
};
_Static_assert(sizeof(struct local_ent) == 24, "table entry grew");

struct local_store {
	struct kv_store base; /* first: kv.c sees only this */
	struct local_ent *tab;
	size_t mask;
	size_t used;    /* live entries == live slots */
	size_t grow_at; /* double the table before used passes this */
	uint8_t **chunks;
	uint32_t nchunks;
	uint32_t chunks_cap;
	uint32_t free_head; /* free slots, linked through their first 4 bytes */
	uint32_t carved;    /* slots [0, carved) are live or on the free list */
	uint32_t max_slots;
	uint32_t table_grows;
	unsigned shard;
};

static inline struct local_store *to_local(struct kv_store *kv)
{
	return (struct local_store *)kv;
}

static inline uint32_t local_hash(struct kv_key key)
{
	/* Consecutive pages of one region must scatter: one full mix. */
	return (uint32_t)fm_mix64(key.page + key.region * 0x9e3779b97f4a7c15ull);
}

uint32_t kv_local_hash(struct kv_key key)
{
	return local_hash(key);
}

static inline uint8_t *slot_ptr(const struct local_store *ls, uint32_t slot)
{
	return ls->chunks[slot >> LOCAL_CHUNK_SHIFT] +
	       ((size_t)(slot & (LOCAL_CHUNK_SLOTS - 1)) << FM_PAGE_SHIFT);
}

/* The cell holding key (*found), or the empty cell where it would go. The
 * table is never full, so the probe ends. */
static inline size_t local_find(const struct local_store *ls, struct kv_key key, uint32_t h,
				bool *found)
{
	size_t i = h & ls->mask;

	for (;;) {
		const struct local_ent *e = &ls->tab[i];

		if (e->slot == LOCAL_NONE) {
			*found = false;
			return i;
		}
		if (e->hash == h && e->page == key.page && e->region == key.region) {
			*found = true;
			return i;
		}
		i = (i + 1) & ls->mask;
	}
}

static size_t grow_threshold(size_t cells)
{
	return cells * 7 / 10;
}

static struct local_ent *table_alloc(size_t cells)
{
	struct local_ent *t = malloc(cells * sizeof(*t));

	if (t)
		memset(t, 0xff, cells * sizeof(*t)); /* every slot = LOCAL_NONE */
	return t;
}

static int local_grow(struct local_store *ls)
{
	size_t ncells = (ls->mask + 1) * 2;
	size_t nmask = ncells - 1;
	struct local_ent *nt = table_alloc(ncells);

	if (!nt)
		return -ENOMEM;
	for (size_t i = 0; i <= ls->mask; i++) {
		const struct local_ent *e = &ls->tab[i];
		size_t j;

		if (e->slot == LOCAL_NONE)
			continue;
		for (j = e->hash & nmask; nt[j].slot != LOCAL_NONE; j = (j + 1) & nmask)
			;
		nt[j] = *e;
	}
	free(ls->tab);
	ls->tab = nt;
	ls->mask = nmask;
	ls->grow_at = grow_threshold(ncells);
	ls->table_grows++;
	return 0;
}

/* The last chunk is cut short at the cap. */
static size_t chunk_len(const struct local_store *ls, uint32_t c)
{
	size_t first = (size_t)c << LOCAL_CHUNK_SHIFT;

	return (size_t)FM_MIN(LOCAL_CHUNK_SLOTS, ls->max_slots - first) << FM_PAGE_SHIFT;
}

static int local_chunk_add(struct local_store *ls)
{
	void *p;

	if (ls->nchunks == ls->chunks_cap) {
		uint32_t ncap = ls->chunks_cap ? ls->chunks_cap * 2 : 16;
		uint8_t **nc = realloc(ls->chunks, ncap * sizeof(*nc));

		if (!nc)
			return -ENOMEM;
		ls->chunks = nc;
		ls->chunks_cap = ncap;
	}
	p = mmap(NULL, chunk_len(ls, ls->nchunks), PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	ls->chunks[ls->nchunks++] = p;
	return 0;
}

/* Callers guarantee used < max_slots, so carved < max_slots whenever the
 * free list is empty (carved - used == free list length). */
static int local_slot_alloc(struct local_store *ls, uint32_t *out)
{
	uint32_t s = ls->free_head;

	if (s != LOCAL_NONE) {
		memcpy(&ls->free_head, slot_ptr(ls, s), sizeof(ls->free_head));
		*out = s;
		return 0;
	}
	if (ls->carved >> LOCAL_CHUNK_SHIFT == ls->nchunks) { /* first slot of a new chunk */
		int rc = local_chunk_add(ls);

		if (rc)
			return rc;
	}
	*out = ls->carved++;
	return 0;
}

static void local_slot_free(struct local_store *ls, uint32_t s)
{
	memcpy(slot_ptr(ls, s), &ls->free_head, sizeof(ls->free_head));
	ls->free_head = s;
}

static int local_get(struct kv_store *kv, struct kv_key key, void *page_out)
{
	struct local_store *ls = to_local(kv);
	bool found;
	size_t i = local_find(ls, key, local_hash(key), &found);

	if (!found)
		return -ENOENT;
	memcpy(page_out, slot_ptr(ls, ls->tab[i].slot), FM_PAGE_SIZE);
	return 0;
}

static int local_put(struct kv_store *kv, struct kv_key key, const void *page)
{
	struct local_store *ls = to_local(kv);
	uint32_t h = local_hash(key);
	uint32_t slot;
	bool found;
	size_t i = local_find(ls, key, h, &found);
	int rc;

	if (found) {
		memcpy(slot_ptr(ls, ls->tab[i].slot), page, FM_PAGE_SIZE);
		return 0;
	}
	if (ls->used >= ls->max_slots)
		return -ENOSPC;
	/* Grow and take a slot before touching the table, so a failure leaves
	 * the store exactly as it was. */
	if (ls->used + 1 > ls->grow_at) {
		rc = local_grow(ls);
		if (rc)
			goto nomem;
		i = local_find(ls, key, h, &found);
	}
	rc = local_slot_alloc(ls, &slot);
	if (rc)
		goto nomem;
	ls->tab[i] = (struct local_ent){ .region = key.region, .page = key.page, .hash = h,
					 .slot = slot };
	ls->used++;
	memcpy(slot_ptr(ls, slot), page, FM_PAGE_SIZE);
	kv->stats.bytes_stored += FM_PAGE_SIZE;
	return 0;
nomem:
	fm_log_once(FM_LOG_WARN, "kv/local: shard %u: out of host memory at %zu pages; put refused",
		    ls->shard, ls->used);
	return -ENOSPC;
}

static int local_del(struct kv_store *kv, struct kv_key key)
{
	struct local_store *ls = to_local(kv);
	size_t mask = ls->mask;
	bool found;
	size_t hole = local_find(ls, key, local_hash(key), &found);
	size_t j = hole;

	if (!found)
		return -ENOENT;
	local_slot_free(ls, ls->tab[hole].slot);
	/* Backward shift: pull each later entry of the run into the hole when
	 * the hole lies on its probe path (between its home and where it is). */
	for (;;) {
		struct local_ent *e;

		j = (j + 1) & mask;
		e = &ls->tab[j];
		if (e->slot == LOCAL_NONE)
			break;
		if (((j - (e->hash & mask)) & mask) >= ((j - hole) & mask)) {
			ls->tab[hole] = *e;
			hole = j;
		}
	}
	ls->tab[hole].slot = LOCAL_NONE;
	ls->used--;
	kv->stats.bytes_stored -= FM_PAGE_SIZE;
	return 0;
}

static void local_close(struct kv_store *kv)
{
	struct local_store *ls = to_local(kv);

	for (uint32_t c = 0; c < ls->nchunks; c++)
		munmap(ls->chunks[c], chunk_len(ls, c));
	free(ls->chunks);
	free(ls->tab);
	free(ls);
}

static struct kv_store *local_open(const struct fm_config *cfg, unsigned shard)
{
	struct local_store *ls;

	if (cfg->local_max_mib == 0 || cfg->local_max_mib > KV_LOCAL_MAX_MIB) {
		FM_ERR("kv/local: store.local.max_mib %llu is outside 1..%llu",
		       (unsigned long long)cfg->local_max_mib,
		       (unsigned long long)KV_LOCAL_MAX_MIB);
		errno = EINVAL;
		return NULL;
	}
	ls = calloc(1, sizeof(*ls));
	if (!ls)
		return NULL;
	ls->tab = table_alloc(LOCAL_TABLE_MIN);
	if (!ls->tab) {
		free(ls);
		errno = ENOMEM;
		return NULL;
	}
	ls->mask = LOCAL_TABLE_MIN - 1;
	ls->grow_at = grow_threshold(LOCAL_TABLE_MIN);
	ls->free_head = LOCAL_NONE;
	/* The cap is the daemon's total; each shard's handle holds an equal
	 * share (pages of one shard never land in another's store). */
	uint64_t total = cfg->local_max_mib << (20 - FM_PAGE_SHIFT);
	uint64_t shards = cfg->shard_count ? cfg->shard_count : 1;
	ls->max_slots = (uint32_t)((total + shards - 1) / shards);
	ls->shard = shard;
	return &ls->base;
}

int kv_local_info(const struct kv_store *kv, struct kv_local_info *out)
{
	const struct local_store *ls;

	if (!kv || !out || kv->ops != &kv_local_ops)
		return -EINVAL;
	ls = (const struct local_store *)kv;
	*out = (struct kv_local_info){
		.pages = ls->used,
		.max_pages = ls->max_slots,
		.table_slots = ls->mask + 1,
		.table_grows = ls->table_grows,
		.chunks = ls->nchunks,
		.slots_carved = ls->carved,
		.meta_bytes = sizeof(*ls) + (ls->mask + 1) * sizeof(struct local_ent) +
			      ls->chunks_cap * sizeof(*ls->chunks),
	};
	return 0;
}

/* No mget/mput: a batch is a loop over copies either way, so the generic
 * loop costs nothing extra here. */
const struct kv_ops kv_local_ops = {
	.name = "local",
	.keeps_after_get = false,
	.open = local_open,
	.close = local_close,
	.get = local_get,
	.put = local_put,
	.del = local_del,
};
