/* uffd: everything that talks to the kernel's userfaultfd, the region
 * record, and the dispatcher thread.
 *
 * A region is one contiguous range of a client's memory, backed by a memfd
 * and registered MISSING|WP on a userfaultfd that the client handed over.
 * Its record is immutable after creation except where marked; it is freed
 * only after every shard has acknowledged REGION_DEL and an RCU grace period
 * has passed, so the dispatcher and shards may hold plain pointers to it. */
#ifndef FM_UFFD_H
#define FM_UFFD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/base.h"
#include "ctl/proto.h"
#include "ring/ring.h"

/* Pages are dealt to shards in stripes of 2 MiB: a sequential stream stays in
 * one shard (and its store connection) while load still spreads. */
#define FM_STRIPE_SHIFT 9
#define FM_STRIPE_PAGES (1u << FM_STRIPE_SHIFT)
#define FM_MAX_REGIONS 4096

/* Features fluidmem asks of every uffd, and the ones it needs. */
#define FM_UFFD_FEATURES_REQUIRED                                                          \
	(UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_EVENT_REMOVE | \
	 UFFD_FEATURE_EVENT_UNMAP)

struct region {
	uint64_t id;            /* cluster-unique: node_id << 48 | local counter */
	uint32_t slot;          /* index in the region table and shard arrays */
	int uffd;
	int memfd;
	uint64_t base;          /* client address of page 0 */
	uint64_t npages;
	uint8_t *view;          /* fluidmemd's own MAP_SHARED mapping of the memfd */
	pid_t pid;
	uid_t uid;
	uint64_t created_ns;
	char name[FM_REGION_NAME_MAX];
	void *owner;            /* the registration connection (ctl) */
	/* written by ctl only */
	int acks_pending;       /* shard acknowledgements still awaited */
	int state;              /* enum region_state */
	uint64_t request;       /* what the pending acks complete */
	int attach_error;       /* first shard refusal of REGION_ADD */
	bool reply_on_detach;   /* the client asked to unregister: answer it */
	bool detach_when_live;  /* the client left while we were attaching */
	bool restore;           /* hand the pages back to the client on detach */
};

enum region_state { REGION_ATTACHING, REGION_LIVE, REGION_DETACHING };

static inline unsigned region_shard_of(const struct region *r, uint64_t page, unsigned nshards)
{
	return (unsigned)(((page >> FM_STRIPE_SHIFT) + r->slot) % nshards);
}

/* Stripe index of `page` among the stripes of this region that one shard
 * owns (dense, from 0). */
static inline uint64_t region_local_stripe(uint64_t page, unsigned nshards)
{
	return (page >> FM_STRIPE_SHIFT) / nshards;
}


/* ---- the region table: slot -> region, RCU-published. Writers: the
 * control plane only. Readers: registered RCU readers under rcu_read_lock. */
/* Assign r->slot and publish. 0 or -ENOSPC (FM_MAX_REGIONS live). */
int region_table_publish(struct region *r);
/* NULL when the slot is empty. Call under rcu_read_lock(). */
struct region *region_table_lookup(uint32_t slot);
/* Unpublish; free only after synchronize_rcu(). */
void region_table_unpublish(struct region *r);
unsigned region_table_count(void);
/* Unmap the view, close the fds, free. NULL is a no-op. */
void region_release(struct region *r);

/* ---- kernel calls: each returns 0 or -errno; EAGAIN is retried inside
 * (a non-fault event is unread; the dispatcher will read it), so callers
 * see EEXIST (already there: wake), ESRCH (the client is gone), ENOENT,
 * EINVAL and friends. *retries counts the EAGAIN loops. */
int uffd_zeropage(int uffd, uint64_t addr, uint64_t len, uint64_t *retries);
int uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len, uint64_t *retries);
int uffd_wake(int uffd, uint64_t addr, uint64_t len);
int uffd_writeprotect(int uffd, uint64_t addr, uint64_t len, bool protect, uint64_t *retries);
int uffd_poison(int uffd, uint64_t addr, uint64_t len, uint64_t *retries);

/* Open a new userfaultfd (syscall, else /dev/userfaultfd), non-blocking and
 * close-on-exec. Returns the fd or -errno. */
int uffd_open(void);
/* Features this kernel offers (UFFDIO_API with 0 on a scratch uffd), or -errno. */
int64_t uffd_kernel_features(void);
/* Log which features fluidmem needs or uses are missing and what is off
 * without them. Returns 0 when every required feature is there, else
 * -ENOTSUP. */
int uffd_probe_and_report(void);
/* The same report for a given feature mask (or -errno from the probe). */
int uffd_report_features(int64_t have);

/* ---- the dispatcher thread ---- */
struct dispatcher;
struct shard;

/* Create the dispatcher over `nshards` shards (their data rings and
 * doorbells). NULL + errno on failure. */
struct dispatcher *dispatcher_create(struct shard **shards, unsigned nshards, int cpu,
				     unsigned batch, unsigned spin_us);
int dispatcher_start(struct dispatcher *d);
/* Stop the thread and free. Regions must have been detached. NULL no-op. */
void dispatcher_destroy(struct dispatcher *d);

/* Control plane -> dispatcher. Both only queue a command and return; the
 * shards acknowledge REGION_ADD / REGION_DEL on their reply rings.
 * attach: push REGION_ADD to every shard, then start reading the uffd.
 * detach: stop reading the uffd, then push REGION_DEL to every shard; with
 *         restore, shards first hand every page back to the client.
 * Returns 0 or -EAGAIN when the command queue is full (retry later). */
int dispatcher_attach(struct dispatcher *d, struct region *r);
int dispatcher_detach(struct dispatcher *d, struct region *r, bool restore);

#define DISPATCH_STATS_FIELDS(X)                                          \
	X(events, "uffd messages read")                                   \
	X(fault_events, "page-fault messages routed")                    \
	X(remove_events, "REMOVE (discard) messages routed")             \
	X(unmap_events, "UNMAP messages routed")                         \
	X(other_events, "other uffd messages (ignored)")                 \
	X(ring_full, "times a shard ring was full and messages were parked") \
	X(parked_max, "most messages parked at once")                    \
	X(stray_faults, "faults outside every known region")              \
	X(read_errors, "uffd read errors")

struct dispatch_stats {
#define X(name, help) uint64_t name;
	DISPATCH_STATS_FIELDS(X)
#undef X
};
/* A racy snapshot (counters are single-writer, read without locks). */
void dispatcher_get_stats(const struct dispatcher *d, struct dispatch_stats *out);
/* Times shard's ring was found full (racy read). */
uint64_t dispatcher_ring_full(const struct dispatcher *d, unsigned shard);
/* Ask the dispatcher thread to zero its counters (done on its next turn). */
void dispatcher_reset_stats(struct dispatcher *d);

#endif
