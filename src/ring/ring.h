/* ring: the one wire contract between the dispatcher, the control plane and
 * the shards, and the SPSC rings (ck_ring) that carry it.
 *
 * Every message is a fixed 32-byte struct fm_msg. Each shard has three rings:
 *   data  dispatcher -> shard   faults, REMOVE/UNMAP ranges, region add/del
 *   ctl   control    -> shard   stats, budget, evict, stop
 *   reply shard      -> control completions of ctl and region messages
 * Each ring has exactly one producer thread and one consumer thread.
 *
 * Region lifecycle messages travel on the data ring so that a shard sees
 * REGION_ADD before any fault of that region and REGION_DEL after the last. */
#ifndef FM_RING_H
#define FM_RING_H

#include <ck_ring.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/base.h"

enum fm_msg_type {
	FM_MSG_NONE = 0,
	/* data ring, from the dispatcher */
	FM_MSG_FAULT,       /* a=region*, b=page index, flags=FM_FAULT_*, cookie=read time ns */
	FM_MSG_REMOVE,      /* a=region*, b=first page, cookie=page count: range is now zero */
	FM_MSG_UNMAP,       /* a=region*, b=first page, cookie=page count: range is gone */
	FM_MSG_REGION_ADD,  /* a=region*; reply DONE with cookie = region id */
	FM_MSG_REGION_DEL,  /* a=region*, flags=FM_DEL_RESTORE?; reply DONE: no reference kept */
	/* ctl ring, from the control plane */
	FM_MSG_STATS,       /* a=struct shard_stats * to fill, cookie=request id */
	FM_MSG_SET_BUDGET,  /* a=resident pages for this shard, cookie=request id */
	FM_MSG_EVICT,       /* a=pages to evict now, cookie=request id */
	FM_MSG_RESET,       /* a=FM_RESET_* bits, cookie=request id */
	FM_MSG_REGION_STATS,/* a=struct shard_region_stats[FM_MAX_REGIONS] to fill, by slot */
	FM_MSG_REGION_BUDGET,/* a=region*, b=resident pages for this shard's part */
	FM_MSG_STOP,        /* shard thread exits after replying */
	/* dispatcher command ring only (see dispatcher_forget) */
	FM_MSG_REGION_FORGET,/* a=region*, flags=FM_FORGET_UNREGISTER?; reply DONE: dropped */
	FM_MSG_REGION_HOSTILE,/* dispatcher -> control: a=-errno, b=region*: detach it */
	/* reply ring, to the control plane */
	FM_MSG_DONE,        /* a=result (0 or -errno), b=detail, cookie=request id */
	FM_MSG_NR
};

/* REGION_DEL flag: hand every page back to the client before forgetting
 * the region (stored pages copied in, the rest zero-filled), so a client
 * that outlives its registration keeps its data and never waits. */
#define FM_DEL_RESTORE 0x1u
/* REGION_FORGET flag: unregister the range in the client first. */
#define FM_FORGET_UNREGISTER 0x1u
/* RESET bits */
#define FM_RESET_COUNTERS 0x1u
#define FM_RESET_LATENCY 0x2u

/* Fault flags, copied from the uffd event. */
#define FM_FAULT_WRITE 0x1u
#define FM_FAULT_WP 0x2u

struct fm_msg {
	uint16_t type;
	uint16_t shard;     /* sender's or receiver's shard index */
	uint32_t flags;
	uint64_t a;
	uint64_t b;
	uint64_t cookie;
};
_Static_assert(sizeof(struct fm_msg) == 32, "fm_msg is the wire contract: keep it 32 bytes");

CK_RING_PROTOTYPE(fm_msg, fm_msg)

struct fm_ring {
	ck_ring_t ring;             /* producer and consumer indices, cache-line split by ck */
	struct fm_msg *slots;
	unsigned capacity;          /* usable slots: size - 1 */
};

/* Create a ring of `slots` entries (a power of two, >= 4).
 * Returns 0, -EINVAL for a bad size or -ENOMEM. Not thread-safe. */
int fm_ring_init(struct fm_ring *r, unsigned slots);
/* Free the slots. Safe on a zeroed or destroyed ring. */
void fm_ring_destroy(struct fm_ring *r);

/* Producer only. Returns false when the ring is full: the caller must keep
 * the message and count the event; nothing is ever dropped here. */
static inline bool fm_ring_push(struct fm_ring *r, const struct fm_msg *m)
{
	return ck_ring_enqueue_spsc_fm_msg(&r->ring, r->slots, (struct fm_msg *)m);
}

/* Consumer only. Returns false when empty. */
static inline bool fm_ring_pop(struct fm_ring *r, struct fm_msg *m)
{
	return ck_ring_dequeue_spsc_fm_msg(&r->ring, r->slots, m);
}

/* Either side; a snapshot that may be stale by the time it returns. */
static inline unsigned fm_ring_depth(const struct fm_ring *r)
{
	return ck_ring_size(&r->ring);
}

/* A doorbell wakes one sleeping consumer. The consumer announces it is about
 * to sleep, re-checks its rings, then blocks; producers ring only when the
 * announcement is visible, so a wake costs a syscall only for a sleeper. */
struct fm_doorbell {
	int efd;
	int sleeping;
};

int fm_doorbell_init(struct fm_doorbell *d);   /* 0 or -errno */
void fm_doorbell_destroy(struct fm_doorbell *d);
/* Producer: call after pushing. Returns true if a wake syscall was made. */
bool fm_doorbell_ring(struct fm_doorbell *d);
/* Consumer: announce (1) or retract (0) an intent to sleep. Full barrier. */
static inline void fm_doorbell_announce(struct fm_doorbell *d, int sleeping)
{
	__atomic_store_n(&d->sleeping, sleeping, __ATOMIC_SEQ_CST);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}
/* Consumer: block until rung or timeout_ms passes (-1 = forever). */
void fm_doorbell_wait(struct fm_doorbell *d, int timeout_ms);

#endif
