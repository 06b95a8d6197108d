/* kv/local: the embedded page store. One handle per shard, used by that
 * shard's thread only, so nothing here locks.
 *
 * Index: an open-addressing hash table of (region, page) -> where the page
 * is, linear probing, power-of-two size, doubled when it would pass 70%
 * load. Deletion shifts the following run back (no tombstones), so probe
 * lengths never rot under the put/del churn that eviction produces. Each
 * entry keeps 32 bits of its hash, so growth and back-shifts never rehash.
 *
 * RAM tier: each page is compressed (store.local.compression; a page that
 * would not fit in a smaller size class is kept raw) into a slot of a size
 * class (kv/slab.h). The tier's RAM (slots carved, fragmentation included)
 * never passes store.local.max_mib / shards.
 *
 * Disk tier (store.local.path set): every put is first appended to the
 * shard's log file (kv/dlog.h), so a page whose put returned 0 survives a
 * crash of the process. The RAM tier is then a write-through cache of the
 * most recently put pages: when it has no room, its oldest pages (FIFO, the
 * coldest: the shard deletes a page when it reads it back) lose their RAM
 * copy and are read from the file with one pread. Without a path the RAM
 * tier is the store, and a full tier refuses puts (-ENOSPC).
 *
 * Metadata: one 40-byte entry per table cell at 35-70% load (57-114 bytes
 * per page), plus 24 bytes per RAM-cached page in the FIFO with a path. */
#include "kv/kv.h"

#include "base/base.h"
#include "base/log.h"
#include "kv/codec.h"
#include "kv/dlog.h"
#include "kv/slab.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define LOCAL_TABLE_MIN 256u /* 10 KiB: a shard that stores little pays little */
#define LOCAL_NONE UINT32_MAX /* no RAM copy */
#define LOCAL_NODISK UINT64_MAX
/* Oldest RAM copies dropped to make room for one put before giving up on
 * caching it (it is on disk either way). */
#define LOCAL_EVICT_TRIES 64
#define LOCAL_SEG_MIB_DEFAULT 16

struct local_ent {
	uint64_t region;
	uint64_t page;
	uint64_t disk; /* record offset in the log, LOCAL_NODISK */
	uint32_t hash; /* low 32 bits of the key hash; home = hash & mask */
	uint32_t slot; /* RAM slot in class kv_slab_class_of(len), LOCAL_NONE */
	uint16_t len;  /* encoded bytes, 1..4096 */
	uint8_t enc;   /* enum kv_enc */
	uint8_t live;  /* the cell holds a key */
	uint32_t pad;
};
_Static_assert(sizeof(struct local_ent) == 40, "table entry grew");

/* Insertion order of RAM copies (with a disk tier only). An item is stale
 * once its key's RAM copy is gone or moved: checked when it is popped. */
struct fifo_ent {
	uint64_t region;
	uint64_t page;
	uint32_t slot;
	uint32_t cls;
};

struct local_store {
	struct kv_store base; /* first: kv.c sees only this */
	struct local_ent *tab;
	size_t mask;
	size_t used;    /* live entries */
	size_t grow_at; /* double the table before used passes this */
	uint32_t table_grows;
	unsigned shard;
	struct kv_slab slab;
	struct kv_codec *codec;
	struct dlog *dlog; /* NULL: RAM only */
	struct fifo_ent *fifo;
	size_t fifo_cap, fifo_head, fifo_n; /* cap is a power of two */
	uint64_t ram_pages, blob_bytes, ram_blob_bytes, raw_pages, disk_pages, corrupt;
	/* local_mput's batch: encoded pages, their records' items and places */
	uint8_t *mblob;
	struct dlog_item *mitems;
	uint64_t *mlocs;
	size_t mcap;
	uint8_t blob[KV_CODEC_MAX];
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

/* The cell holding key (*found), or the empty cell where it would go. The
 * table is never full, so the probe ends. */
static inline size_t local_find(const struct local_store *ls, struct kv_key key, uint32_t h,
				bool *found)
{
	size_t i = h & ls->mask;

	for (;;) {
		const struct local_ent *e = &ls->tab[i];

		if (!e->live) {
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

static struct local_ent *local_lookup(struct local_store *ls, struct kv_key key)
{
	bool found;
	size_t i = local_find(ls, key, local_hash(key), &found);

	return found ? &ls->tab[i] : NULL;
}

static size_t grow_threshold(size_t cells)
{
	return cells * 7 / 10;
}

static int local_grow(struct local_store *ls)
{
	size_t ncells = (ls->mask + 1) * 2;
	size_t nmask = ncells - 1;
	struct local_ent *nt = calloc(ncells, sizeof(*nt));

	if (!nt)
		return -ENOMEM;
	for (size_t i = 0; i <= ls->mask; i++) {
		const struct local_ent *e = &ls->tab[i];
		size_t j;

		if (!e->live)
			continue;
		for (j = e->hash & nmask; nt[j].live; j = (j + 1) & nmask)
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

/* The cell for a new key, growing the table first if needed. */
static int local_slot_for_new(struct local_store *ls, struct kv_key key, uint32_t h, size_t *i)
{
	bool found;

	if (ls->used + 1 > ls->grow_at) {
		int rc = local_grow(ls);

		if (rc)
			return rc;
		*i = local_find(ls, key, h, &found);
	}
	return 0;
}

static void local_remove_cell(struct local_store *ls, size_t hole)
{
	size_t mask = ls->mask;
	size_t j = hole;

	/* Backward shift: pull each later entry of the run into the hole when
	 * the hole lies on its probe path (between its home and where it is). */
	for (;;) {
		struct local_ent *e;

		j = (j + 1) & mask;
		e = &ls->tab[j];
		if (!e->live)
			break;
		if (((j - (e->hash & mask)) & mask) >= ((j - hole) & mask)) {
			ls->tab[hole] = *e;
			hole = j;
		}
	}
	ls->tab[hole].live = 0;
	ls->used--;
}

/* ---- RAM copies ---- */

static void ram_drop(struct local_store *ls, struct local_ent *e)
{
	if (e->slot == LOCAL_NONE)
		return;
	kv_slab_free(&ls->slab, kv_slab_class_of(e->len), e->slot);
	e->slot = LOCAL_NONE;
	ls->ram_pages--;
	ls->ram_blob_bytes -= e->len;
}

static bool fifo_valid(struct local_store *ls, const struct fifo_ent *f)
{
	struct local_ent *e = local_lookup(ls, (struct kv_key){ f->region, f->page });

	return e && e->slot == f->slot && kv_slab_class_of(e->len) == f->cls;
}

/* Drop the oldest valid RAM copy; false when the FIFO is empty. */
static bool fifo_evict_one(struct local_store *ls)
{
	while (ls->fifo_n) {
		struct fifo_ent f = ls->fifo[ls->fifo_head];

		ls->fifo_head = (ls->fifo_head + 1) & (ls->fifo_cap - 1);
		ls->fifo_n--;
		if (fifo_valid(ls, &f)) {
			ram_drop(ls, local_lookup(ls, (struct kv_key){ f.region, f.page }));
			return true;
		}
	}
	return false;
}

/* Room for one more: drop stale items, then double if still half full. */
static int fifo_make_room(struct local_store *ls)
{
	size_t n = 0, cap = ls->fifo_cap;

	for (size_t k = 0; k < ls->fifo_n; k++) {
		struct fifo_ent f = ls->fifo[(ls->fifo_head + k) & (cap - 1)];

		if (fifo_valid(ls, &f))
			ls->fifo[(ls->fifo_head + n++) & (cap - 1)] = f;
	}
	ls->fifo_n = n;
	if (n < cap / 2 && cap)
		return 0;
	size_t ncap = cap ? cap * 2 : 1024;
	struct fifo_ent *nf = malloc(ncap * sizeof(*nf));

	if (!nf)
		return -ENOMEM;
	for (size_t k = 0; k < n; k++)
		nf[k] = ls->fifo[(ls->fifo_head + k) & (cap - 1)];
	free(ls->fifo);
	ls->fifo = nf;
	ls->fifo_cap = ncap;
	ls->fifo_head = 0;
	return 0;
}

/* Keep a RAM copy of e's blob if there is room, dropping the oldest
 * copies to make some. With a disk tier only: failing is harmless. */
static void ram_cache(struct local_store *ls, struct local_ent *e, struct kv_key key,
		      const uint8_t *blob)
{
	unsigned c = kv_slab_class_of(e->len);
	uint32_t slot;

	for (int t = 0; t < LOCAL_EVICT_TRIES && !kv_slab_can_alloc(&ls->slab, c); t++)
		if (!fifo_evict_one(ls))
			break;
	if (ls->fifo_n == ls->fifo_cap && fifo_make_room(ls) != 0)
		return;
	if (kv_slab_alloc(&ls->slab, c, &slot) != 0)
		return;
	memcpy(kv_slab_ptr(&ls->slab, c, slot), blob, e->len);
	e->slot = slot;
	ls->ram_pages++;
	ls->ram_blob_bytes += e->len;
	ls->fifo[(ls->fifo_head + ls->fifo_n++) & (ls->fifo_cap - 1)] =
		(struct fifo_ent){ key.region, key.page, slot, c };
}

/* ---- the ops ---- */

static int local_decode(struct local_store *ls, uint8_t enc, const void *blob, uint32_t len,
			void *page_out)
{
	int rc = kv_codec_decode(ls->codec, enc, blob, len, page_out);

	if (rc) {
		ls->corrupt++;
		fm_log_once(FM_LOG_ERROR, "kv/local: shard %u: a stored page failed to decode",
			    ls->shard);
	}
	return rc;
}

static int local_get(struct kv_store *kv, struct kv_key key, void *page_out)
{
	struct local_store *ls = to_local(kv);
	struct local_ent *e = local_lookup(ls, key);
	const uint8_t *blob;
	uint8_t enc;
	int rc;

	if (!e)
		return -ENOENT;
	if (e->slot != LOCAL_NONE)
		return local_decode(ls, e->enc,
				    kv_slab_ptr(&ls->slab, kv_slab_class_of(e->len), e->slot),
				    e->len, page_out);
	rc = dlog_read(ls->dlog, e->disk, key, e->len, &blob, &enc);
	if (rc) {
		ls->corrupt++;
		fm_log_once(FM_LOG_ERROR, "kv/local: shard %u: a record failed its checksum",
			    ls->shard);
		return rc;
	}
	return local_decode(ls, enc, blob, e->len, page_out);
}

/* A batch of gets (prefetch): find every entry first, touching the RAM
 * copies' cache lines ahead, then decode them in order, so the table
 * probes and blob misses of the batch overlap instead of queueing behind
 * each decode. Disk-tier pages still take one pread each. */
#define LOCAL_MGET_AHEAD 16
static int local_mget(struct kv_store *kv, const struct kv_key *keys, void *const *pages,
		      int *results, size_t n)
{
	struct local_store *ls = to_local(kv);
	struct local_ent *e[LOCAL_MGET_AHEAD];

	for (size_t first = 0; first < n; first += LOCAL_MGET_AHEAD) {
		size_t m = n - first < LOCAL_MGET_AHEAD ? n - first : LOCAL_MGET_AHEAD;

		for (size_t i = 0; i < m; i++) {
			e[i] = local_lookup(ls, keys[first + i]);
			if (e[i] && e[i]->slot != LOCAL_NONE)
				__builtin_prefetch(kv_slab_ptr(&ls->slab, kv_slab_class_of(e[i]->len),
							       e[i]->slot));
		}
		for (size_t i = 0; i < m; i++) {
			size_t k = first + i;

			if (!e[i])
				results[k] = -ENOENT;
			else if (e[i]->slot != LOCAL_NONE)
				results[k] = local_decode(
					ls, e[i]->enc,
					kv_slab_ptr(&ls->slab, kv_slab_class_of(e[i]->len), e[i]->slot),
					e[i]->len, pages[k]);
			else
				results[k] = local_get(kv, keys[k], pages[k]);
		}
	}
	return 0;
}

static void account_new(struct local_store *ls, const struct local_ent *e, int sign)
{
	ls->blob_bytes += (uint64_t)(int64_t)sign * e->len;
	if (e->enc == KV_ENC_RAW)
		ls->raw_pages += (uint64_t)(int64_t)sign;
	if (e->disk != LOCAL_NODISK)
		ls->disk_pages += (uint64_t)(int64_t)sign;
}

/* key's new record is at loc: cell i holds key (found) or is the empty
 * cell for it. Kill the old record, point the index at the new one and
 * keep a RAM copy of blob. */
static void index_disk(struct local_store *ls, struct kv_key key, uint32_t h, size_t i,
		       bool found, uint64_t loc, uint32_t len, uint8_t enc, const uint8_t *blob)
{
	struct local_ent *e = &ls->tab[i];

	if (found) {
		ram_drop(ls, e);
		dlog_kill(ls->dlog, e->disk, e->len);
		account_new(ls, e, -1);
	} else {
		ls->used++;
	}
	*e = (struct local_ent){ .region = key.region, .page = key.page, .disk = loc, .hash = h,
				 .slot = LOCAL_NONE, .len = (uint16_t)len, .enc = enc, .live = 1 };
	account_new(ls, e, 1);
	ram_cache(ls, e, key, blob);
}

static int local_put_disk(struct local_store *ls, struct kv_key key, uint32_t h, size_t i,
			  bool found, uint32_t len, uint8_t enc)
{
	uint64_t loc;
	int rc;

	if (!found) {
		rc = local_slot_for_new(ls, key, h, &i);
		if (rc)
			return rc;
	}
	/* On disk first: the old copy stays the key's until the new one is
	 * durable, so a failed put loses nothing. */
	rc = dlog_append(ls->dlog, key, enc, ls->blob, len, &loc);
	if (rc)
		return rc;
	index_disk(ls, key, h, i, found, loc, len, enc, ls->blob);
	return 0;
}

static int local_put(struct kv_store *kv, struct kv_key key, const void *page);

/* Batched puts with the disk tier: every page is encoded first, then the
 * records go out with one pwrite per run that fits the active segment (the
 * shard's eviction batch is one mput), and each run is indexed before the
 * next is written. Items keep kv_mput's in-order semantics. */
static int local_mput(struct kv_store *kv, const struct kv_key *keys, const void *const *pages,
		      int *results, size_t n)
{
	struct local_store *ls = to_local(kv);
	size_t i = 0;

	if (ls->dlog && n > 1 && n > ls->mcap) {
		uint8_t *nb = realloc(ls->mblob, n * KV_CODEC_MAX);
		struct dlog_item *ni;
		uint64_t *nl;

		if (nb)
			ls->mblob = nb;
		ni = nb ? realloc(ls->mitems, n * sizeof(*ni)) : NULL;
		if (ni)
			ls->mitems = ni;
		nl = ni ? realloc(ls->mlocs, n * sizeof(*nl)) : NULL;
		if (nl) {
			ls->mlocs = nl;
			ls->mcap = n;
		}
	}
	/* Cells for n new keys first: an appended record is always indexed. */
	while (ls->dlog && n > 1 && n <= ls->mcap && ls->used + n > ls->grow_at)
		if (local_grow(ls) != 0)
			break;
	if (!ls->dlog || n < 2 || n > ls->mcap || ls->used + n > ls->grow_at) {
		for (size_t k = 0; k < n; k++)
			results[k] = local_put(kv, keys[k], pages[k]);
		return 0;
	}
	for (size_t k = 0; k < n; k++) {
		uint8_t *b = ls->mblob + k * KV_CODEC_MAX;

		ls->mitems[k].key = keys[k];
		ls->mitems[k].data = b;
		ls->mitems[k].len = kv_codec_encode(ls->codec, pages[k], b, KV_SLAB_STEP,
						    &ls->mitems[k].enc);
	}
	while (i < n) {
		int m = dlog_append_many(ls->dlog, ls->mitems + i, n - i, ls->mlocs + i);

		if (m < 0) {
			results[i++] = m == -ENOMEM ? -ENOSPC : m;
			continue;
		}
		for (size_t k = i; k < i + (size_t)m; k++) {
			const struct dlog_item *it = &ls->mitems[k];
			uint32_t h = local_hash(it->key);
			bool found;
			size_t c = local_find(ls, it->key, h, &found);

			index_disk(ls, it->key, h, c, found, ls->mlocs[k], it->len, it->enc, it->data);
			results[k] = 0;
		}
		i += (size_t)m;
	}
	return 0;
}

static int local_put_ram(struct local_store *ls, struct kv_key key, uint32_t h, size_t i,
			 bool found, uint32_t len, uint8_t enc)
{
	unsigned c = kv_slab_class_of(len);
	uint32_t slot;
	int rc;

	if (found && ls->tab[i].slot != LOCAL_NONE && kv_slab_class_of(ls->tab[i].len) == c) {
		slot = ls->tab[i].slot; /* same class: overwrite in place */
	} else {
		if (!found) {
			rc = local_slot_for_new(ls, key, h, &i);
			if (rc)
				return rc;
		}
		/* Take the new slot before freeing the old one, so a refusal
		 * leaves the old page in place. */
		rc = kv_slab_alloc(&ls->slab, c, &slot);
		if (rc)
			return rc;
		if (found)
			ram_drop(ls, &ls->tab[i]);
		else
			ls->used++;
	}
	struct local_ent *e = &ls->tab[i];
	if (found && e->slot != LOCAL_NONE) { /* in place */
		ls->ram_blob_bytes -= e->len;
		ls->ram_pages--;
	}
	if (found)
		account_new(ls, e, -1);
	*e = (struct local_ent){ .region = key.region, .page = key.page, .disk = LOCAL_NODISK,
				 .hash = h, .slot = slot, .len = (uint16_t)len, .enc = enc,
				 .live = 1 };
	memcpy(kv_slab_ptr(&ls->slab, c, slot), ls->blob, len);
	ls->ram_pages++;
	ls->ram_blob_bytes += len;
	account_new(ls, e, 1);
	return 0;
}

static int local_put(struct kv_store *kv, struct kv_key key, const void *page)
{
	struct local_store *ls = to_local(kv);
	uint32_t h = local_hash(key);
	bool found;
	size_t i = local_find(ls, key, h, &found);
	uint8_t enc;
	/* A blob that would land in the last class saves nothing: keep it raw
	 * and skip the decode on every get. */
	uint32_t len = kv_codec_encode(ls->codec, page, ls->blob, KV_SLAB_STEP, &enc);
	int rc = ls->dlog ? local_put_disk(ls, key, h, i, found, len, enc)
			  : local_put_ram(ls, key, h, i, found, len, enc);

	if (rc == -ENOMEM) {
		fm_log_once(FM_LOG_WARN,
			    "kv/local: shard %u: out of host memory at %zu pages; put refused",
			    ls->shard, ls->used);
		rc = -ENOSPC;
	}
	return rc;
}

static int local_del(struct kv_store *kv, struct kv_key key)
{
	struct local_store *ls = to_local(kv);
	bool found;
	size_t i = local_find(ls, key, local_hash(key), &found);
	struct local_ent *e = &ls->tab[i];

	if (!found)
		return -ENOENT;
	ram_drop(ls, e);
	if (e->disk != LOCAL_NODISK)
		dlog_kill(ls->dlog, e->disk, e->len);
	account_new(ls, e, -1);
	local_remove_cell(ls, i);
	return 0;
}

/* ---- the disk tier's view of the index ---- */

static bool own_live(void *arg, struct kv_key key, uint64_t loc)
{
	struct local_ent *e = local_lookup(arg, key);

	return e && e->disk == loc;
}

static void own_moved(void *arg, struct kv_key key, uint64_t old_loc, uint64_t new_loc)
{
	struct local_ent *e = local_lookup(arg, key);

	if (e && e->disk == old_loc)
		e->disk = new_loc;
}

/* The open scan: keep the newest copy of each key (two can exist when a
 * crash fell between writing a new copy and killing the old one). */
static int own_found(void *arg, struct dlog *d, struct kv_key key, uint64_t loc, uint64_t seq, uint32_t len,
		     uint8_t enc)
{
	struct local_store *ls = arg;
	uint32_t h = local_hash(key);
	bool found;
	size_t i = local_find(ls, key, h, &found);

	if (found) {
		struct local_ent *e = &ls->tab[i];

		if (seq <= dlog_seq_at(d, e->disk)) {
			dlog_kill(d, loc, len);
			return 0;
		}
		dlog_kill(d, e->disk, e->len);
		account_new(ls, e, -1);
	} else {
		int rc = local_slot_for_new(ls, key, h, &i);

		if (rc)
			return rc;
		ls->used++;
	}
	ls->tab[i] = (struct local_ent){ .region = key.region, .page = key.page, .disk = loc,
					 .hash = h, .slot = LOCAL_NONE, .len = (uint16_t)len,
					 .enc = enc, .live = 1 };
	account_new(ls, &ls->tab[i], 1);
	return 0;
}

static int64_t local_foreach_key(struct kv_store *kv, kv_key_fn *fn, void *arg)
{
	struct local_store *ls = to_local(kv);
	int64_t n = 0;

	for (size_t i = 0; i <= ls->mask; i++)
		if (ls->tab[i].live) {
			fn(arg, (struct kv_key){ ls->tab[i].region, ls->tab[i].page });
			n++;
		}
	return n;
}

static int64_t local_region_delete(struct kv_store *kv, uint64_t region)
{
	struct local_store *ls = to_local(kv);
	int64_t n = 0;

	/* A back-shift only moves entries from later cells into the hole at
	 * or after i, so re-examining cell i after a delete misses nothing. */
	for (size_t i = 0; i <= ls->mask;) {
		struct local_ent *e = &ls->tab[i];

		if (!e->live || e->region != region) {
			i++;
			continue;
		}
		ram_drop(ls, e);
		if (e->disk != LOCAL_NODISK)
			dlog_kill(ls->dlog, e->disk, e->len);
		account_new(ls, e, -1);
		local_remove_cell(ls, i);
		n++;
	}
	return n;
}

static void local_close(struct kv_store *kv)
{
	struct local_store *ls = to_local(kv);

	dlog_close(ls->dlog);
	kv_codec_destroy(ls->codec);
	kv_slab_destroy(&ls->slab);
	free(ls->fifo);
	free(ls->tab);
	free(ls->mblob);
	free(ls->mitems);
	free(ls->mlocs);
	free(ls);
}

static const enum kv_enc enc_of_choice[] = {
	[FM_LOCAL_LZ4] = KV_ENC_LZ4,
	[FM_LOCAL_ZSTD] = KV_ENC_ZSTD,
	[FM_LOCAL_NONE] = KV_ENC_RAW,
};

static struct kv_store *local_open(const struct kv_params *p, unsigned shard)
{
	const struct kv_local_params *lp = &p->local;
	struct local_store *ls;
	uint64_t shards = lp->shard_count ? lp->shard_count : 1;
	int err;

	if (lp->max_mib == 0 || lp->max_mib > KV_LOCAL_MAX_MIB) {
		FM_ERR("kv/local: store.local.max_mib %llu is outside 1..%llu",
		       (unsigned long long)lp->max_mib,
		       (unsigned long long)KV_LOCAL_MAX_MIB);
		errno = EINVAL;
		return NULL;
	}
	if ((unsigned)lp->compression >= FM_ARRAY_SIZE(enc_of_choice)) {
		errno = EINVAL;
		return NULL;
	}
	ls = calloc(1, sizeof(*ls));
	if (!ls)
		return NULL;
	ls->shard = shard;
	ls->mask = LOCAL_TABLE_MIN - 1;
	ls->grow_at = grow_threshold(LOCAL_TABLE_MIN);
	/* The cap is the daemon's total; each shard's handle holds an equal
	 * share (pages of one shard never land in another's store). */
	uint64_t total = lp->max_mib << (20 - FM_PAGE_SHIFT);
	kv_slab_init(&ls->slab, ((total + shards - 1) / shards) << FM_PAGE_SHIFT);
	ls->tab = calloc(LOCAL_TABLE_MIN, sizeof(*ls->tab));
	ls->codec = kv_codec_create(enc_of_choice[lp->compression]);
	if (!ls->tab || !ls->codec) {
		err = ENOMEM;
		goto fail;
	}
	if (lp->path[0]) {
		uint64_t seg_mib = lp->segment_mib ? lp->segment_mib
							  : LOCAL_SEG_MIB_DEFAULT;
		uint64_t cap = lp->disk_mib ? (lp->disk_mib << 20) / shards : 0;
		struct dlog_owner own = { own_live, own_moved, own_found, ls };

		ls->dlog = dlog_open(lp->path, shard, seg_mib << 20, cap, &own);
		if (!ls->dlog) {
			err = errno;
			FM_ERR("kv/local: shard %u: cannot open the store under %s: %s", shard,
			       lp->path, strerror(err));
			goto fail;
		}
		if (ls->used)
			FM_INFO("kv/local: shard %u: recovered %zu pages from %s", shard, ls->used,
				lp->path);
	}
	return &ls->base;
fail:
	local_close(&ls->base);
	errno = err;
	return NULL;
}

static void local_stats(const struct kv_store *kv, struct kv_stats *out)
{
	struct local_store *ls = (struct local_store *)kv;
	struct dlog_info di = { 0 };

	if (ls->dlog)
		dlog_get_info(ls->dlog, &di);
	out->pages = ls->used;
	out->blob_bytes = ls->blob_bytes;
	out->raw_pages = ls->raw_pages;
	out->ram_pages = ls->ram_pages;
	out->ram_held_bytes = ls->slab.held;
	out->ram_live_bytes = ls->slab.live_bytes;
	out->disk_pages = ls->disk_pages;
	out->disk_live_bytes = di.live_bytes;
	out->disk_file_bytes = di.file_bytes;
	out->compactions = di.compactions;
	out->corrupt = ls->corrupt;
	out->bytes_stored = (uint64_t)ls->used * FM_PAGE_SIZE; /* page data, before compression */
}

int kv_local_info(const struct kv_store *kv, struct kv_local_info *out)
{
	const struct local_store *ls;
	uint64_t carved = 0;

	if (!kv || !out || kv->ops != &kv_local_ops)
		return -EINVAL;
	ls = (const struct local_store *)kv;
	for (unsigned c = 0; c < KV_SLAB_CLASSES; c++)
		carved += ls->slab.cls[c].carved;
	*out = (struct kv_local_info){
		.pages = ls->used,
		.max_pages = ls->slab.cap >> FM_PAGE_SHIFT,
		.table_slots = ls->mask + 1,
		.table_grows = ls->table_grows,
		.chunks = kv_slab_chunks(&ls->slab),
		.chunks_released = kv_slab_released(&ls->slab),
		.slots_carved = carved,
		.meta_bytes = sizeof(*ls) + (ls->mask + 1) * sizeof(struct local_ent) +
			      ls->fifo_cap * sizeof(struct fifo_ent),
		.ram_pages = ls->ram_pages,
		.ram_held_bytes = ls->slab.held,
		.ram_live_bytes = ls->slab.live_bytes,
		.ram_blob_bytes = ls->ram_blob_bytes,
		.disk_pages = ls->disk_pages,
	};
	out->meta_bytes += kv_slab_meta_bytes(&ls->slab);
	if (ls->dlog) {
		struct dlog_info di;

		dlog_get_info(ls->dlog, &di);
		out->disk_live_bytes = di.live_bytes;
		out->disk_file_bytes = di.file_bytes;
		out->disk_apparent_bytes = di.apparent_bytes;
		out->disk_appended_bytes = di.appended_bytes;
		out->disk_moved_bytes = di.moved_bytes;
		out->disk_compactions = di.compactions;
		out->disk_seg_bytes = di.seg_bytes;
	}
	return 0;
}

/* mget overlaps a batch's lookups (prefetch); mput batches the disk tier's
 * writes (RAM only: a loop of puts). */
const struct kv_ops kv_local_ops = {
	.name = "local",
	.keeps_after_get = false,
	.open = local_open,
	.close = local_close,
	.get = local_get,
	.put = local_put,
	.del = local_del,
	.mget = local_mget,
	.mput = local_mput,
	.stats = local_stats,
	.foreach_key = local_foreach_key,
	.region_delete = local_region_delete,
};
