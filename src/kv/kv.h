/* kv: the page store interface. One handle per shard; a handle is used by
 * one thread only and is never shared.
 *
 * Keys are fixed width: a cluster-unique region id plus the page index.
 * Values are exactly one page (FM_PAGE_SIZE bytes).
 *
 * Error rules for every call: 0 on success or a negative errno:
 *   -ENOENT  the key is not stored (get/del)
 *   -ENOSPC  the store is full; nothing was written (put)
 *   -EIO     the store failed or is unreachable; the caller may retry
 *   -EINVAL  bad arguments
 * Batched calls fill results[i] per item with the same codes and return 0
 * when every item succeeded, else the first failing item's code. Items run
 * in order, so a key repeated in one mput ends with its last page.
 * An embedded backend that cannot grow its own memory (host ENOMEM) also
 * answers -ENOSPC: nothing was written and the caller reacts the same way.
 *
 * Stats: the generic layer (kv.c) counts every request that reaches a
 * backend, single or batched, in one place. Calls rejected with -EINVAL
 * before the backend are not counted. errors counts results other than 0,
 * -ENOENT (get_misses, or a del of an absent key) and -ENOSPC (put_full).
 * bytes_stored and retries belong to the backend, and so do the gauges
 * after them (pages .. corrupt), filled by the backend when the stats are
 * read; a backend that does not know one leaves it 0. local: bytes_stored
 * is the page data held before compression (pages x 4096); the RAM really
 * used is ram_held_bytes, the disk used disk_file_bytes.
 *
 * Durability (local with store.local.path): a page whose put returned 0
 * survives the death of the process (kill -9, OOM kill; not a power loss or
 * kernel crash: nothing is fsynced). kv_open on the same path and shard
 * rebuilds the index from the file: every page put and not deleted before
 * the crash is readable. A page deleted just before the crash may come
 * back (its delete is one 4-byte write that may not have happened); it is
 * never an older copy than the last put of that key that returned 0. A
 * record that fails its checksum is never returned: its get answers -EIO,
 * or -ENOENT when even its key was unreadable, and a caller that knows it
 * stored the page (issue 10's page state) must poison it in both cases.
 * docs/local-store.md gives the format and the argument. */
#ifndef FM_KV_H
#define FM_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* store.local.compression; lz4 is 0 so zeroed params get the default */
enum fm_local_compression { FM_LOCAL_LZ4, FM_LOCAL_ZSTD, FM_LOCAL_NONE };
/* store.memcached.distribution */
enum fm_mc_distribution { FM_MC_KETAMA, FM_MC_MODULA };
#define FM_LOCAL_PATH_MAX 256    /* bytes of store.local.path, NUL included */
#define FM_MC_SERVERS_MAX 1024   /* bytes of store.memcached.servers, NUL included */

/* What kv_open needs, filled by ctl from the [store] tables of the config
 * (fm_config_kv_params). Each backend reads only its own part. */
struct kv_local_params {
	uint64_t max_mib;              /* RAM tier, all shards */
	int compression;               /* enum fm_local_compression */
	char path[FM_LOCAL_PATH_MAX];  /* disk tier directory; "" = RAM only */
	uint64_t disk_mib;             /* disk tier cap, all shards; 0 = the file system's */
	uint32_t segment_mib;          /* disk tier segment size (new files) */
	uint32_t shard_count;          /* the caps above are divided among this many */
};

struct kv_mc_params {
	char servers[FM_MC_SERVERS_MAX];   /* "host:port,/unix/socket,..." */
	int distribution;                  /* enum fm_mc_distribution */
	uint32_t replicas;                 /* extra copies: each page on replicas+1 servers */
	bool binary;                       /* binary protocol (else ASCII) */
	uint32_t connect_timeout_ms;
	uint32_t io_timeout_ms;
	uint32_t batch;                    /* requests per pipelined flush */
	uint32_t retries;                  /* extra attempts of a get that met an unreachable server */
	uint32_t retry_delay_ms;           /* first retry delay and down window, doubled each time */
};

struct kv_params {
	char backend[16];                  /* "local" | "memcached" */
	struct kv_local_params local;
	struct kv_mc_params mc;
};

struct kv_key {
	uint64_t region;
	uint64_t page;
};

#define KV_STATS_FIELDS(X)                                             \
	X(gets, "get requests")                                        \
	X(get_misses, "gets that found no page")                       \
	X(puts, "put requests")                                        \
	X(put_full, "puts refused because the store is full")          \
	X(dels, "delete requests")                                     \
	X(errors, "store errors (I/O, protocol, unreachable)")         \
	X(retries, "retried store requests")                           \
	X(stale, "copies rejected by a get's content check")            \
	X(touches, "keys confirmed present without a write (kv_mtouch)") \
	X(bytes_stored, "bytes currently held, where the backend knows")       \
	X(pages, "pages held (local: both tiers)")                              \
	X(blob_bytes, "encoded bytes of the held pages; ratio = pages*4096/blob_bytes") \
	X(raw_pages, "pages kept uncompressed because they did not compress")   \
	X(ram_pages, "pages with a copy in the local RAM tier")                 \
	X(ram_held_bytes, "RAM the RAM tier holds, free slots included")        \
	X(ram_live_bytes, "RAM-tier slot bytes in use (held - live = free slots)") \
	X(disk_pages, "pages in the local disk tier")                           \
	X(disk_live_bytes, "bytes of live records in the disk tier")            \
	X(disk_file_bytes, "bytes the disk tier's files occupy on disk")        \
	X(compactions, "disk-tier segments compacted")                          \
	X(corrupt, "stored copies that failed a checksum or decode (get: -EIO)") \
	X(servers, "servers the backend talks to (memcached; 0 for local)")    \
	X(servers_down, "of those, failed and not answered since")

struct kv_stats {
#define X(name, help) uint64_t name;
	KV_STATS_FIELDS(X)
#undef X
};

struct kv_store;

/* Open the backend named in p->backend for one shard.
 * Returns NULL and sets errno (EINVAL unknown backend or bad options,
 * ENOMEM). memcached opens even when no server answers yet: every server
 * counts as down (kv_stats.servers_down) and is retried with backoff, by
 * requests and by kv_get_stats.
 * local: p->local.max_mib / shard_count caps the RAM this handle's RAM
 * tier holds (compressed pages in size classes); it must be
 * 1..KV_LOCAL_MAX_MIB. With p->local.path set, kv_open recovers the
 * shard's file there (see "Durability" above); errno EBUSY when another
 * process has it open, EINVAL when disk_mib / shard_count holds fewer than
 * two segments or the file is not a store. */
struct kv_store *kv_open(const struct kv_params *p, unsigned shard);
/* Close and free; kv_close(NULL) is a no-op. Pages held only by an embedded
 * backend are freed with it. */
void kv_close(struct kv_store *kv);

int kv_get(struct kv_store *kv, struct kv_key key, void *page_out);
/* A get that accepts a copy only when check(page, arg) is true: the caller
 * knows what it stored (a content hash) and a stale or corrupt copy must not
 * pass for the page. A replicating backend then tries the next replica.
 * -ENOENT when every reachable copy was absent or rejected, -EIO when none
 * passed and some server was unreachable. page_out may hold a rejected copy
 * on error. Rejected copies count in stats.stale. */
typedef bool kv_check_fn(const void *page, void *arg);
int kv_get_checked(struct kv_store *kv, struct kv_key key, void *page_out, kv_check_fn *check,
		   void *arg);
/* A get that never keeps the caller waiting on a server that is down: one
 * pass, no retry delays, a server inside its down window skipped, and a
 * down server whose window passed probed without waiting for it (a server
 * that stops answering mid-request still costs io_timeout_ms, once). check
 * may be NULL. Answers as kv_get_checked, plus -EAGAIN: a server that may
 * hold the page did not answer and the store has not given up on it yet
 * (memcached: fewer than retries + 1 failures in a row); ask again later.
 * -EIO once it has given up. A backend without remote servers never
 * answers -EAGAIN. The shard parks a fault on -EAGAIN instead of blocking
 * every other fault behind it (docs/design.md, "Store I/O"). -EAGAIN is
 * not counted as a get: a parked fault asks many times. */
int kv_get_try(struct kv_store *kv, struct kv_key key, void *page_out, kv_check_fn *check,
	       void *arg);
int kv_put(struct kv_store *kv, struct kv_key key, const void *page);
int kv_del(struct kv_store *kv, struct kv_key key);
/* memcached: one multi-get per server (then per replica round for the
 * items still missing), every server's request sent before any answer is
 * read, so the servers overlap; no retry delays: an item whose servers are
 * down or did not answer within io_timeout_ms is -EIO at once. */
int kv_mget(struct kv_store *kv, const struct kv_key *keys, void *const *pages, int *results,
	    size_t n);
int kv_mput(struct kv_store *kv, const struct kv_key *keys, const void *const *pages,
	    int *results, size_t n);

/* Confirm that the store still holds each key, without sending its page:
 * results[i] = 0 when every server that should hold key i answered that it
 * does (servers that are down are skipped), -ENOENT when one said it does
 * not (the copy must be rewritten: a server restarted empty), -EIO when
 * none answered. Returns 0 or the first failure, like kv_mput. A caller
 * that skips rewriting an unchanged page asks this first, so a lost copy is
 * rewritten instead of trusted. Backends without the op answer -ENOENT for
 * every key (always rewrite). */
int kv_mtouch(struct kv_store *kv, const struct kv_key *keys, int *results, size_t n);

/* Restart support (issue 10). A daemon restarted on the same
 * store.local.path gets its pages back from kv_open; these let it find
 * what the store holds and drop what no region owns any more.
 *
 * Call fn(arg, key) once for every key the handle holds, in no order. fn
 * must not call into this handle. Returns the number of keys visited, or
 * -EOPNOTSUPP for a backend that cannot enumerate (memcached). */
typedef void kv_key_fn(void *arg, struct kv_key key);
int64_t kv_foreach_key(struct kv_store *kv, kv_key_fn *fn, void *arg);
/* Delete every page of region held by this handle (durably, like kv_del).
 * Returns the number deleted, or -EOPNOTSUPP (memcached: delete per key).
 * Not counted in stats.dels. */
int64_t kv_region_delete(struct kv_store *kv, uint64_t region);

/* Change the store's server list while running (memcached: the cluster's
 * watched list, `fluidmemctl servers add`). Pages are written to their
 * owners in the new list from now on. A page whose owner moved is still
 * found: a get that misses on the new owners asks the owners in the
 * previous lists (up to KV_SERVER_LISTS_KEPT of them), deletes go to both,
 * and kv_mtouch asks only the new owners, so the next eviction of an
 * unchanged page rewrites it where it now belongs. 0, -EINVAL (a bad list:
 * nothing changed), -EIO (no server of the new list answers: nothing
 * changed), -EOPNOTSUPP (a backend without servers). */
#define KV_SERVER_LISTS_KEPT 4
int kv_set_servers(struct kv_store *kv, const char *servers);
/* Draining (`fluidmemctl servers drain`): after kv_set_servers, move one
 * key to its owners in the current list. When some server of a previous
 * list that held the key owns it no more, the page is read (current list
 * first, then the previous ones; check as in kv_get_checked, may be NULL),
 * written to its current owners and deleted from the servers that lost
 * it; buf is a page of scratch. Returns 1 when the key did not move
 * (nothing done), 0 when moved, -ENOENT (no copy anywhere), -EIO, -ENOSPC.
 * A key already at its current owners only has its old copies deleted
 * (answer 1). Backends without server lists answer 1. Not counted in stats (a drain
 * counts its own). */
int kv_rehome(struct kv_store *kv, struct kv_key key, kv_check_fn *check, void *arg, void *buf);
/* Every page the caller holds was rehomed: forget the previous lists, so
 * their servers can be stopped (reads and deletes no longer go there).
 * No-op for backends without server lists. */
void kv_forget_previous(struct kv_store *kv);

/* Backend name ("local", "memcached"). */
const char *kv_name(const struct kv_store *kv);
/* True when a copy stays cheap to keep after a get (remote stores): the shard
 * then keeps it to skip rewriting clean pages. False for the embedded store,
 * where a kept copy doubles memory, so the shard deletes after get. */
bool kv_keeps_after_get(const struct kv_store *kv);
/* Copy this handle's counters. Single-threaded like every other call. */
void kv_get_stats(const struct kv_store *kv, struct kv_stats *out);

/* Backend vtable; each backend fills one in its own file. */
struct kv_ops {
	const char *name;
	bool keeps_after_get;
	/* Returns a zeroed-stats handle, or NULL with errno set; kv_open
	 * fills in ->ops. */
	struct kv_store *(*open)(const struct kv_params *p, unsigned shard);
	void (*close)(struct kv_store *kv);
	int (*get)(struct kv_store *kv, struct kv_key key, void *page_out);
	/* Optional; the generic layer runs get then check when NULL. */
	int (*get_checked)(struct kv_store *kv, struct kv_key key, void *page_out,
			   kv_check_fn *check, void *arg);
	/* Optional: see kv_get_try; the generic layer runs get_checked
	 * (or get) when NULL. */
	int (*get_try)(struct kv_store *kv, struct kv_key key, void *page_out, kv_check_fn *check,
		       void *arg);
	int (*put)(struct kv_store *kv, struct kv_key key, const void *page);
	int (*del)(struct kv_store *kv, struct kv_key key);
	/* Optional; the generic layer loops over get/put when NULL. */
	int (*mget)(struct kv_store *kv, const struct kv_key *keys, void *const *pages,
		    int *results, size_t n);
	int (*mput)(struct kv_store *kv, const struct kv_key *keys, const void *const *pages,
		    int *results, size_t n);
	/* Optional: see kv_mtouch. */
	int (*mtouch)(struct kv_store *kv, const struct kv_key *keys, int *results, size_t n);
	/* Optional: fill the backend's gauges into *out (kv_get_stats). */
	void (*stats)(const struct kv_store *kv, struct kv_stats *out);
	/* Optional: see kv_foreach_key and kv_region_delete. */
	int64_t (*foreach_key)(struct kv_store *kv, kv_key_fn *fn, void *arg);
	int64_t (*region_delete)(struct kv_store *kv, uint64_t region);
	/* Optional: see kv_set_servers, kv_rehome, kv_forget_previous. */
	int (*set_servers)(struct kv_store *kv, const char *servers);
	int (*rehome)(struct kv_store *kv, struct kv_key key, kv_check_fn *check, void *arg,
		      void *buf);
	void (*forget_previous)(struct kv_store *kv);
};

/* Every backend handle starts with this header. */
struct kv_store {
	const struct kv_ops *ops;
	struct kv_stats stats;
};

extern const struct kv_ops kv_local_ops;
extern const struct kv_ops kv_memcached_ops;

/* local: the largest store.local.max_mib one handle accepts (4 TiB): slot
 * numbers stay 32-bit and the hash table stays under 2^32 entries. */
#define KV_LOCAL_MAX_MIB (1ull << 22)

/* local: layout figures for tests and the control plane. */
struct kv_local_info {
	uint64_t pages;        /* pages held */
	uint64_t max_pages;    /* RAM cap in 4 KiB units, from local_max_mib */
	uint64_t table_slots;  /* hash table entries allocated (power of two) */
	uint64_t table_grows;  /* table doublings since open */
	uint64_t chunks;       /* slab chunks mapped now */
	uint64_t slots_carved; /* slab slots carved in mapped chunks: live + on a free list */
	uint64_t meta_bytes;   /* handle + table + chunk index + FIFO, no page data */
	uint64_t ram_pages;      /* pages with a RAM copy */
	uint64_t ram_held_bytes; /* slots carved x slot size: the RAM the tier holds */
	uint64_t ram_live_bytes; /* slots in use x slot size */
	uint64_t ram_blob_bytes; /* encoded bytes in those slots */
	uint64_t disk_pages;
	uint64_t disk_live_bytes;     /* records the index points at, padded */
	uint64_t disk_file_bytes;     /* allocated on disk */
	uint64_t disk_apparent_bytes; /* the file's length */
	uint64_t disk_appended_bytes; /* every record ever written, moves included */
	uint64_t disk_moved_bytes;    /* written by compaction */
	uint64_t disk_compactions;
	uint64_t disk_seg_bytes;
	uint64_t chunks_released; /* slab chunks unmapped (emptied) since open */
};
/* Fill *out for a local handle; -EINVAL for NULL or another backend. */
int kv_local_info(const struct kv_store *kv, struct kv_local_info *out);
/* local: the 32-bit key hash its table keeps. Exposed so tests can build
 * keys that collide in it; nothing else should depend on it. */
uint32_t kv_local_hash(struct kv_key key);

/* memcached: the key of a page, fixed width: "fm1:" + 16 hex digits of the
 * region id + ":" + 16 hex digits of the page index (lower case). Region ids
 * are cluster-unique (node_id << 48 | counter), so daemons sharing servers
 * never collide while their node_ids differ. */
#define KV_MEMCACHED_KEY_LEN 37
void kv_memcached_key(struct kv_key key, char out[KV_MEMCACHED_KEY_LEN + 1]);

/* memcached: figures for tests and the control plane. */
struct kv_memcached_info {
	unsigned servers;          /* in store.memcached.servers */
	unsigned replicas;
	unsigned servers_down;     /* inside their down window now */
	uint64_t server_failures;  /* times a server was found unreachable */
	uint64_t server_recoveries;/* times a down server answered again */
	uint64_t failover_reads;   /* gets served by a copy other than the first one tried */
	uint64_t degraded_writes;  /* pages stored on fewer than replicas+1 servers */
	uint64_t flushes;          /* pipelined write flushes (one per server per batch) */
	uint64_t writes_sent;      /* page writes sent, replicas included */
};
/* Fill *out for a memcached handle; -EINVAL for NULL or another backend. */
int kv_memcached_info(const struct kv_store *kv, struct kv_memcached_info *out);
/* Index in store.memcached.servers of the i-th server (i = 0 primary, then
 * replicas) that holds key; -EINVAL for another backend or i > replicas. */
int kv_memcached_server_of(const struct kv_store *kv, struct kv_key key, unsigned i);

#endif
