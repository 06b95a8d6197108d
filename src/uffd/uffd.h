/* uffd: everything that talks to the kernel's userfaultfd, the region
 * record, and the dispatcher thread.
 *
 * A region is one contiguous range of a client's memory, backed by a memfd
 * and registered MISSING|WP on a userfaultfd that the client handed over.
 * Its record is immutable after creation except where marked. Lifetime: the
 * control plane frees it only after every shard acknowledged REGION_DEL and
 * the dispatcher acknowledged REGION_FORGET (it has unregistered the range
 * and will never name the region again), so the dispatcher and shards may
 * hold plain pointers to it until then. */
#ifndef FM_UFFD_H
#define FM_UFFD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/base.h"
#include "proto/proto.h"
#include "ring/ring.h"

#define FM_MAX_REGIONS 4096


struct uffd_region {
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
	/* Re-adoption (docs/design.md, "Restart and re-adoption"): the region
	 * file's bitmap, 1 bit per page "a copy is in the store", or NULL when
	 * the daemon keeps no state. Each shard writes only its stripes' bytes. */
	uint8_t *state_bits;
	bool adopt;             /* READOPT: shards rebuild page state at REGION_ADD */
	/* written by ctl only */
	int acks_pending;       /* shard acknowledgements still awaited */
	int state;              /* enum uffd_region_state */
	uint64_t request;       /* what the pending acks complete */
	int attach_error;       /* first shard refusal of REGION_ADD */
	bool reply_on_detach;   /* the client asked to unregister: answer it */
	bool detach_when_live;  /* the client left while we were attaching */
	bool restore;           /* hand the pages back to the client on detach */
	bool keep_copies;       /* detach without deleting store copies: the region
				 * file keeps them for a later re-adoption */
};

/* ATTACHING: waiting for REGION_ADD acks (every shard + the dispatcher).
 * DETACHING: waiting for every shard's REGION_DEL ack.
 * RELEASING: waiting for the dispatcher's REGION_FORGET ack. */
enum uffd_region_state { UFFD_REGION_ATTACHING, UFFD_REGION_LIVE, UFFD_REGION_DETACHING, UFFD_REGION_RELEASING };

static inline unsigned region_shard_of(const struct uffd_region *r, uint64_t page, unsigned nshards)
{
	return fm_stripe_shard(fm_region_rot(r->id), page, nshards);
}

/* ---- the control plane's slot table: slot -> region. Control thread only.
 * The dispatcher keeps its own table, changed only by the commands on its
 * ring (dispatcher.c), so nothing here is shared between threads. */
/* Assign r->slot. 0 or -ENOSPC (FM_MAX_REGIONS live). */
int region_table_publish(struct uffd_region *r);
/* NULL when the slot is empty. */
struct uffd_region *region_table_lookup(uint32_t slot);
/* Free the slot; reuse is safe once the dispatcher forgot the region. */
void region_table_unpublish(struct uffd_region *r);
unsigned region_table_count(void);
/* Unmap the view, close the fds, free. NULL is a no-op. */
void region_release(struct uffd_region *r);

/* ---- kernel calls: each returns 0 or -errno; EAGAIN is retried inside
 * (a non-fault event is unread; the dispatcher will read it), so callers
 * see EEXIST (already there: wake), ESRCH (the client is gone), ENOENT,
 * EINVAL and friends. *retries counts the EAGAIN loops. */
int uffd_zeropage(int uffd, uint64_t addr, uint64_t len, uint64_t *retries);
int uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len, uint64_t *retries);
int uffd_wake(int uffd, uint64_t addr, uint64_t len);
/* uffd_copy of stored data, given up with -ECANCELED (nothing installed)
 * once uffd_discard_pending(routed, handled): checked before each try, the
 * EAGAIN retries included, since a pending REMOVE is read (and the client's
 * discard goes on) during them. The copy does not wake the range; checked
 * again after it, it is woken (0) when still nothing is pending, else
 * -ESTALE: installed, not woken, and the discard read meanwhile may have
 * come after it landed (the caller takes the page out again). */
int uffd_copy_unless_discard(int uffd, const uint64_t *routed, uint64_t handled, uint64_t dst,
			     const void *src, uint64_t len, uint64_t *retries);
/* The same without waking threads waiting in the range (prefetch), and
 * without retrying EAGAIN: a non-fault event is pending, give up. */
int uffd_copy_nowake(int uffd, uint64_t dst, const void *src, uint64_t len);
int uffd_zeropage_nowake(int uffd, uint64_t addr, uint64_t len);
int uffd_writeprotect(int uffd, uint64_t addr, uint64_t len, bool protect, uint64_t *retries);
int uffd_poison(int uffd, uint64_t addr, uint64_t len, uint64_t *retries);
/* EAGAIN is retried for at most about 2 s (UFFD_EAGAIN_MAX_LOOPS); then the
 * calls above return -EAGAIN, which callers count as a failure. */

/* UFFDIO_UNREGISTER on the uffd's own mm (the client's, whichever process
 * calls): wakes every fault waiting in the range, and later faults and
 * madvise/munmap of the range raise no events. 0 or -errno. */
int uffd_unregister(int uffd, uint64_t addr, uint64_t len);

struct uffd_msg;
/* Read up to n messages without ever blocking, whatever the file's
 * O_NONBLOCK flag: the client shares the open file and may clear it
 * (preadv2 RWF_NOWAIT). Returns bytes read, -EAGAIN when none, -EPERM when
 * the kernel lacks RWF_NOWAIT for uffds and the flag was cleared, or -errno.
 * Thread-safe. */
ssize_t uffd_read_nowait(int uffd, struct uffd_msg *msgs, size_t n);

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

/* Where the dispatcher sends shard i's messages: its data ring (the
 * dispatcher is the only producer) and the doorbell that wakes it. */
struct dispatch_target {
	struct fm_ring *ring;
	struct fm_doorbell *bell;
	/* The shard's count of REMOVE/UNMAP messages routed to it, or NULL.
	 * Written by the dispatcher only, read by the shard, alone on its cache
	 * line (docs/design.md, "Prefetch", Discards): bumped as soon as a read
	 * returned the event, before it is routed. */
	uint64_t *discards;
};

/* A discard routed to the shard (*routed, the dispatch target's counter)
 * that it has not handled yet (`handled` REMOVE/UNMAP messages so far): its
 * client may have dropped data the shard still takes for stored, so no
 * stored data may be installed now. One acquire load. Signed: a test that
 * pushes discards past the dispatcher only makes `handled` run ahead. */
static inline bool uffd_discard_pending(const uint64_t *routed, uint64_t handled)
{
	return (int64_t)(__atomic_load_n(routed, __ATOMIC_ACQUIRE) - handled) > 0;
}

/* Create the dispatcher over `nshards` targets (copied). Its replies to the
 * control plane go on its reply ring and ring `reply_bell`. NULL + errno on
 * failure. */
struct dispatcher *dispatcher_create(const struct dispatch_target *targets, unsigned nshards, int cpu,
				     unsigned batch, unsigned spin_us, struct fm_doorbell *reply_bell);
int dispatcher_start(struct dispatcher *d);
/* Stop the thread and free. Regions must have been detached. NULL no-op. */
void dispatcher_destroy(struct dispatcher *d);

/* Control plane -> dispatcher. Each only queues a command and returns 0, or
 * -EAGAIN when the command queue is full (retry later). Control thread only.
 * attach: take the region into the dispatcher's table, poll its uffd, push
 *         REGION_ADD to every shard. The dispatcher acknowledges REGION_ADD
 *         on its reply ring (a = 0 or -errno: the uffd cannot be polled),
 *         as every shard does on its own.
 * detach: stop routing the region's faults (they are read and dropped: the
 *         thread is woken by the restore or the unregister), keep reading its
 *         other events so no ioctl or client madvise waits on them, and push
 *         REGION_DEL to every shard; with restore, shards first copy every
 *         stored page back to the client.
 * forget: after every shard acknowledged REGION_DEL: with `unregister`,
 *         unregister the range in the client and wake it; read what is
 *         left, stop polling and drop the region. Acknowledged as
 *         REGION_FORGET; then the region may be freed and its slot reused.
 *         Unregister only when the client keeps its data (restored) or gave
 *         it up (asked to unregister): a live client whose stored pages were
 *         dropped would otherwise read them as zeros instead of waiting.
 * The dispatcher also sends FM_MSG_REGION_HOSTILE (a = -errno, b = region)
 * unasked when a region's uffd cannot be read without blocking (its client
 * cleared O_NONBLOCK) or fails: the control plane must detach it. */
int dispatcher_attach(struct dispatcher *d, struct uffd_region *r);
int dispatcher_detach(struct dispatcher *d, struct uffd_region *r, bool restore);
int dispatcher_forget(struct dispatcher *d, struct uffd_region *r, bool unregister);
/* The dispatcher's replies (FM_MSG_DONE, .shard = FM_DISPATCHER_SENDER, and
 * FM_MSG_REGION_HOSTILE). Consumer: the control thread. */
struct fm_ring *dispatcher_reply_ring(struct dispatcher *d);

#define DISPATCH_STATS_FIELDS(X)                                          \
	X(events, "uffd messages read")                                   \
	X(fault_events, "page-fault messages routed")                    \
	X(remove_events, "REMOVE (discard) messages routed")             \
	X(unmap_events, "UNMAP messages routed")                         \
	X(other_events, "other uffd messages (ignored)")                 \
	X(ring_full, "times a shard ring was full and messages were parked") \
	X(parked_max, "most messages parked at once")                    \
	X(stray_faults, "faults outside every known region")              \
	X(read_errors, "uffd read errors")                                \
	X(fork_events, "FORK messages: the uffd they delivered was closed") \
	X(hostile_regions, "regions detached because their uffd could block or failed") \
	X(detach_drops, "messages of detaching regions read and not routed") \
	X(epoll_errors, "regions whose uffd could not be polled (refused)")  \
	X(unregister_errors, "UFFDIO_UNREGISTER failures at release (client alive)")

struct dispatch_stats {
#define X(name, help) uint64_t name;
	DISPATCH_STATS_FIELDS(X)
#undef X
};
#define FM_DISPATCHER_SENDER 0xffffu   /* fm_msg.shard of the dispatcher's replies */
#define FM_DISPATCH_MAX_SHARDS 64      /* = FM_MAX_SHARDS (ctl/config.h) */

/* What FM_MSG_STATS asks of the dispatcher: it copies its own counters in,
 * on its own thread, so nobody reads them while they are written. */
struct dispatch_snapshot {
	struct dispatch_stats st;
	uint64_t ring_full[FM_DISPATCH_MAX_SHARDS];   /* per shard: times its ring was full */
};
/* Queue a stats request: the dispatcher fills *out, then replies DONE with
 * flags FM_MSG_STATS and `cookie`. *out must stay valid until that reply
 * (a request that timed out must keep it alive). 0 or -EAGAIN. */
int dispatcher_request_stats(struct dispatcher *d, struct dispatch_snapshot *out, uint64_t cookie);
/* Queue a reset of the counters; replied DONE with flags FM_MSG_RESET.
 * 0 or -EAGAIN. */
int dispatcher_request_reset(struct dispatcher *d, uint64_t cookie);

#endif
