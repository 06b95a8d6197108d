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
#include "ring/ring.h"

struct fm_config;
struct region;

/* One X-macro list makes the counters, their names, the JSON and the
 * aggregation. Counters are written by the shard thread only. */
#define SHARD_STATS_FIELDS(X)                                                         \
	X(faults, "page-fault messages served")                                       \
	X(zero_fills, "first touches (or known-zero pages) filled with zeros")       \
	X(fetches, "pages fetched from the store")                                    \
	X(dup_faults, "faults on pages already resident (woken)")                    \
	X(wp_faults, "write-protect faults (writers that met an eviction)")          \
	X(evictions, "pages evicted")                                                 \
	X(evict_zero, "evicted pages found all zero: no store write")                \
	X(evict_refused, "evictions refused by the store (full or failing): page kept")\
	X(store_puts, "pages written to the store")                                   \
	X(store_errors, "store errors")                                               \
	X(poisoned, "pages the store could not return: poisoned, never zero-filled") \
	X(discarded, "pages dropped by REMOVE/UNMAP events")                         \
	X(stale_faults, "faults for regions this shard no longer serves")            \
	X(client_gone, "ioctls that found the client gone (ESRCH)")                  \
	X(eagain_retries, "ioctl retries after EAGAIN")                              \
	X(sleeps, "times the shard slept on its doorbell")                           \
	X(resident, "resident pages now (gauge)")                                    \
	X(budget, "resident budget of this shard (gauge)")                           \
	X(tracked, "pages with state in this shard (gauge)")                        \
	X(store_bytes, "bytes the store holds for this shard, where known (gauge)")

struct shard_stats {
#define X(name, help) uint64_t name;
	SHARD_STATS_FIELDS(X)
#undef X
	uint64_t ring_depth;        /* data ring depth when the snapshot was taken */
	struct fm_hist fault_ns;    /* dispatcher read -> fault resolved */
	struct fm_hist fetch_ns;    /* store get */
	struct fm_hist evict_ns;    /* per evicted page, WP to wake */
};

struct shard;

/* Create shard `idx` (not started). NULL + errno. */
struct shard *shard_create(const struct fm_config *cfg, unsigned idx, uint64_t budget,
			   struct fm_doorbell *reply_bell);
int shard_start(struct shard *s);
/* Join (after FM_MSG_STOP was sent and acknowledged) and free. NULL no-op. */
void shard_destroy(struct shard *s);

/* The rings and doorbell other threads use to talk to this shard. */
struct fm_ring *shard_data_ring(struct shard *s);     /* dispatcher -> shard */
struct fm_ring *shard_ctl_ring(struct shard *s);      /* control -> shard */
struct fm_ring *shard_reply_ring(struct shard *s);    /* shard -> control */
struct fm_doorbell *shard_doorbell(struct shard *s);
unsigned shard_index(const struct shard *s);

/* Metadata bytes this shard spends per tracked page (state + policy). */
size_t shard_bytes_per_page(void);

#endif
