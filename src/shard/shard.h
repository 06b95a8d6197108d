/* shard: one pinned thread that owns a stripe-set of every region's pages:
 * their states, its share of the resident budget, its replacement policy and
 * its own store handle. Nothing here is written by any other thread; the
 * dispatcher and the control plane reach a shard only through its rings.
 *
 * Per-page state (1 byte here + the policy's links) lives in shard-local
 * page ids: each region stripe this shard owns gets a chunk of 512 ids. */
#ifndef FM_SHARD_H
#define FM_SHARD_H

#include <pthread.h>
#include <stdint.h>

#include "base/hist.h"
#include "kv/kv.h"
#include "ring/ring.h"

struct uffd_region;

/* One X-macro list per kind makes the fields, their names, the JSON, the
 * Prometheus text and the aggregation. Everything is written by the shard
 * thread only and copied out on request (FM_MSG_STATS).
 *
 * Every fault message ends in exactly one outcome, so
 *   faults = zero_fills + fetches + dup_faults + wp_faults + poison_faults + fault_errors
 * once no fault is parked (a parked fault waits for its store server and
 * gets its outcome when served; `parked` counts parkings, not outcomes).
 * "Cache hits" are faults served without a store round trip (zero fills,
 * duplicates, write-protect wakes); "misses" are store fetches. */
#define SHARD_COUNTER_FIELDS(X)                                                       \
	X(faults, "page-fault messages served")                                       \
	X(zero_fills, "faults served with a zero page (first touch or known zero)")   \
	X(fetches, "faults served by fetching the page from the store")               \
	X(dup_faults, "faults on pages already resident (woken)")                    \
	X(wp_faults, "write-protect faults: writers that met an eviction")           \
	X(poison_faults, "faults answered with SIGBUS: the store lost the page")     \
	X(fault_errors, "faults that could not be served (client gone, ioctl error)")\
	X(evictions, "pages evicted")                                                 \
	X(evict_zero, "evicted pages found all zero: no store write")                \
	X(evict_clean, "evicted pages unchanged since stored: no store write")       \
	X(evict_refused, "evictions refused by the store (full or failing): page kept")\
	X(evict_runs, "eviction runs: one write-protect and one punch each")         \
	X(evict_ahead, "pages evicted ahead of demand (below the free watermark)")   \
	X(store_puts, "pages written to the store")                                   \
	X(store_errors, "store errors")                                               \
	X(store_retries, "store requests retried")                                    \
	X(poisoned, "pages the store could not return: poisoned, never zero-filled") \
	X(state_alloc_failures, "first touches poisoned: no memory for the stripe's page state") \
	X(discarded, "pages dropped by REMOVE/UNMAP events")                         \
	X(restored, "stored pages copied back to clients by a restoring detach")     \
	X(restore_errors, "stored pages a restoring detach could not copy back")     \
	X(punch_errors, "hole punches that failed: the page stayed resident")        \
	X(unprotect_errors, "write-protect removals that failed (client alive)")     \
	X(eagain_giveups, "uffd ioctls abandoned after 2 s of EAGAIN")               \
	X(stale_faults, "faults for regions this shard no longer serves")            \
	X(eagain_retries, "ioctl retries after EAGAIN")                              \
	X(drain_moved, "stored pages moved off a drained store server")              \
	X(drain_errors, "stored pages a drain could not move (the drain failed)")    \
	X(sleeps, "times the shard slept on its doorbell")                          \
	X(spin_hits, "idle spins that met the next message (a wake-up saved)")       \
	X(replies_parked, "replies held while the reply ring was full, sent later in order") \
	X(prefetched, "pages installed ahead of their fault by prefetch")            \
	X(prefetch_hits, "prefetched pages used (a fault or the stream passed them)")\
	X(prefetch_wasted, "prefetched pages evicted or dropped before any use")     \
	X(parked, "faults parked while their store server did not answer (served later)") \
	X(fault_batches, "batched store reads serving several queued faults at once")   \
	X(batched_get_faults, "faults served by a batched store read (counted in fetches)") \
	X(discard_waits, "stored-page installs dropped while a discard was not handled yet") \
	X(discard_undone, "stored-page installs punched out again: a discard was read during the copy") \
	X(evict_protect_ns, "eviction time in choosing victims and write-protecting runs (ns)") \
	X(evict_store_ns, "eviction time in zero checks, hashing and store puts (ns)")  \
	X(evict_punch_ns, "eviction time in marking and punching pages out (ns)")     \
	X(evict_unprotect_ns, "eviction time in un-protecting runs, waking writers (ns)")

#define SHARD_GAUGE_FIELDS(X)                                                         \
	X(resident, "resident pages now")                                             \
	X(resident_max, "most resident pages at once since the budget was last set") \
	X(budget, "resident budget of this shard")                                    \
	X(tracked, "pages with state in this shard")                                  \
	X(store_bytes, "bytes the store holds for this shard, where known")          \
	X(store_pages, "pages the store holds (local: both tiers)")                  \
	X(store_encoded_bytes, "encoded (compressed) bytes of those pages")          \
	X(store_ram_bytes, "RAM the local store's RAM tier holds, free slots included") \
	X(store_disk_pages, "pages in the local store's disk tier")                  \
	X(store_disk_file_bytes, "bytes the local store's files occupy on disk")     \
	X(store_disk_live_bytes, "bytes of live records in those files (file / live: space reuse)") \
	X(store_corrupt, "stored copies that failed a checksum (their pages were poisoned)") \
	X(ring_depth, "messages waiting in the shard's data ring")                   \
	X(store_servers, "store servers (memcached; 0 for local)")                  \
	X(store_down_servers, "store servers failed and not answered since")

#define SHARD_HIST_FIELDS(X)                                                          \
	X(fault_ns, "fault service: dispatcher read to fault resolved")              \
	X(fetch_ns, "store get, per page")                                            \
	X(put_ns, "store put, per page of a batch")                                   \
	X(evict_ns, "eviction, per page: write-protect to wake")

struct shard_stats {
#define X(name, help) uint64_t name;
	SHARD_COUNTER_FIELDS(X)
	SHARD_GAUGE_FIELDS(X)
#undef X
#define X(name, help) struct fm_hist name;
	SHARD_HIST_FIELDS(X)
#undef X
};

/* One region's pages in one shard (FM_MSG_REGION_STATS fills one per slot;
 * `present` is 0 for slots this shard does not serve). */
struct shard_region_stats {
	uint64_t present;
	uint64_t resident;
	uint64_t stored;
	uint64_t zero;
	uint64_t faults;
	uint64_t budget;       /* UINT64_MAX when the region has no cap of its own */
};

struct shard;

/* FM_MSG_ORPHAN_DROP: delete what this shard's store handle holds of a
 * region of a previous run nobody re-adopted. A store that can delete a
 * region at once does (local); else the shard deletes the keys of its share
 * of the pages whose bit is set (one stripe in nshards, by stripe index). */
struct shard_orphan {
	uint64_t region_id;
	uint64_t npages;
	const uint8_t *bits;   /* the region file's bitmap (base/statebits.h) */
};

/* FM_MSG_DRAIN (`servers drain`, after FM_MSG_SET_SERVERS removed a
 * server): one bounded step of a pass over every page this shard has a
 * store copy of, moving each key whose owner changed to its current owners
 * (kv_rehome). A step looks at up to .pages page ids, so faults wait at most
 * one step. FM_DRAIN_BEGIN restarts the pass; a step past the last region
 * answers 1; FM_DRAIN_FINISH (sent once every shard completed a pass
 * without errors) drops the previous lists. Pages stored while the pass runs
 * go to the current list anyway. Errors count in drain_errors. */

/* What one shard is built from; ctl fills it from the config
 * (fm_config_shard_params). */
struct shard_params {
	uint32_t shard_count;      /* pages are striped over this many shards */
	uint32_t ring_slots;       /* the dispatcher -> shard ring; power of two */
	uint32_t spin_us;          /* busy-poll before sleeping */
	int cpu;                   /* -1 = unpinned */
	uint32_t evict_batch;      /* pages evicted per store round trip */
	uint32_t evict_run;        /* pages one write-protect + punch may span; 1 = single */
	uint32_t free_low_pct;     /* evict ahead below this % of the budget free; 0 = off */
	uint32_t free_high_pct;    /* ... up to this % free (>= free_low_pct) */
	uint32_t prefetch_pages;   /* largest prefetch window; 0 = off */
	uint32_t fault_batch;      /* queued stored-page faults read with one; 0 = off */
	int policy;                /* enum fm_policy_kind */
	struct kv_params kv;       /* this shard's store handle */
};

/* Create shard `idx` (not started). NULL + errno. */
struct shard *shard_create(const struct shard_params *p, unsigned idx, uint64_t budget,
			   struct fm_doorbell *reply_bell);
int shard_start(struct shard *s);
/* Join (after FM_MSG_STOP was sent and acknowledged) and free. NULL no-op. */
void shard_destroy(struct shard *s);

/* The rings and doorbell other threads use to talk to this shard. */
struct fm_ring *shard_data_ring(struct shard *s);     /* dispatcher -> shard */
struct fm_ring *shard_ctl_ring(struct shard *s);      /* control -> shard */
struct fm_ring *shard_reply_ring(struct shard *s);    /* shard -> control */
struct fm_doorbell *shard_doorbell(struct shard *s);
/* The dispatcher's count of discards routed to the shard (dispatch_target). */
uint64_t *shard_discards_routed(struct shard *s);
unsigned shard_index(const struct shard *s);

/* Metadata bytes this shard spends per tracked page (state + policy). A
 * store that keeps copies (memcached) adds 8.25 bytes per page in chunks
 * that have had a page stored (shard/storecopy.h). */
size_t shard_bytes_per_page(void);

#endif
