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
#include <stddef.h>
#include <sched.h>
#include <time.h>
#include <stdint.h>

#include "base/base.h"

enum fm_msg_type {
	FM_MSG_NONE = 0,
	/* data ring, from the dispatcher */
	FM_MSG_FAULT,       /* .fault */
	FM_MSG_REMOVE,      /* .range: the range is now zero */
	FM_MSG_UNMAP,       /* .range: the range is gone */
	FM_MSG_REGION_ADD,  /* .region; reply DONE with detail = the region */
	FM_MSG_REGION_DEL,  /* .region, flags=FM_DEL_RESTORE?; reply DONE: no reference kept */
	/* ctl ring, from the control plane */
	FM_MSG_STATS,       /* .fill: struct shard_stats (dispatcher: struct dispatch_snapshot) */
	FM_MSG_SET_BUDGET,  /* .pages: resident pages for this shard */
	FM_MSG_EVICT,       /* .pages: pages to evict now */
	FM_MSG_RESET,       /* .reset */
	FM_MSG_REGION_STATS,/* .fill: struct shard_region_stats[FM_MAX_REGIONS], by slot */
	FM_MSG_REGION_BUDGET,/* .region_budget */
	FM_MSG_SET_SERVERS, /* .servers: the store's new server list; the shard frees it */
	FM_MSG_STOP,        /* flags=FM_STOP_KEEP?; the shard thread exits after replying */
	FM_MSG_ORPHAN_DROP, /* .fill.out: struct shard_orphan; reply DONE, detail = pages deleted */
	FM_MSG_DRAIN,       /* .pages: ids to look at, flags FM_DRAIN_*; reply DONE, result 1 =
			     * pass complete (0 = more), detail = pages moved | errors << 32 */
	/* dispatcher command ring only (see dispatcher_forget) */
	FM_MSG_REGION_FORGET,/* .region, flags=FM_FORGET_UNREGISTER?; reply DONE: dropped */
	FM_MSG_REGION_HOSTILE,/* dispatcher -> control: .hostile: detach it */
	/* reply ring, to the control plane */
	FM_MSG_DONE,        /* .done, flags = the type of the request it completes */
	FM_MSG_NR
};

/* REGION_DEL flag: hand every page back to the client before forgetting
 * the region (stored pages copied in, the rest zero-filled), so a client
 * that outlives its registration keeps its data and never waits. */
#define FM_DEL_RESTORE 0x1u
/* REGION_FORGET flag: unregister the range in the client first. */
#define FM_FORGET_UNREGISTER 0x1u
/* STOP for `shutdown --keep-clients`: serve the faults already queued, and
 * keep every stored copy (the next daemon re-adopts the regions). */
#define FM_STOP_KEEP 0x1u
/* DRAIN flags: start a pass from the first region; end it (forget the
 * store's previous server lists). */
#define FM_DRAIN_BEGIN 0x1u
#define FM_DRAIN_FINISH 0x2u
/* RESET bits */
#define FM_RESET_COUNTERS 0x1u
#define FM_RESET_LATENCY 0x2u

/* Fault flags, copied from the uffd event. */
#define FM_FAULT_WRITE 0x1u
#define FM_FAULT_WP 0x2u

/* Named, never dereferenced here: the ring only carries the pointers. */
struct uffd_region;

/* One message: a header, then the payload that `type` selects (the union
 * member named in enum fm_msg_type). Every payload that expects a reply
 * keeps its request id in the last word, so a reply can always name it. */
struct fm_msg {
	uint16_t type;      /* enum fm_msg_type */
	uint16_t shard;     /* sender's or receiver's shard index */
	uint32_t flags;     /* FM_FAULT_*, FM_DEL_RESTORE, FM_FORGET_UNREGISTER; DONE: request type */
	union {
		struct {                    /* FAULT */
			struct uffd_region *region;
			uint64_t page;      /* page index in the region */
			uint64_t read_ns;   /* when the dispatcher read the event */
		} fault;
		struct {                    /* REMOVE, UNMAP */
			struct uffd_region *region;
			uint64_t first;     /* first page index */
			uint64_t count;     /* pages */
		} range;
		struct {                    /* REGION_ADD, REGION_DEL, REGION_FORGET */
			struct uffd_region *region;
			uint64_t unused;
			uint64_t request;
		} region;
		struct {                    /* STATS, REGION_STATS */
			void *out;          /* filled before the reply */
			uint64_t unused;
			uint64_t request;
		} fill;
		struct {                    /* SET_BUDGET, EVICT */
			uint64_t pages;
			uint64_t unused;
			uint64_t request;
		} pages;
		struct {                    /* RESET */
			uint64_t what;      /* FM_RESET_* bits */
			uint64_t unused;
			uint64_t request;
		} reset;
		struct {                    /* REGION_BUDGET */
			struct uffd_region *region;
			uint64_t pages;     /* resident pages for this shard's part */
			uint64_t request;
		} region_budget;
		struct {                    /* SET_SERVERS */
			char *list;         /* malloc'd for this shard alone */
			uint64_t unused;
			uint64_t request;
		} servers;
		struct {                    /* REGION_HOSTILE */
			int64_t error;      /* -errno: why the region must go */
			struct uffd_region *region;
			uint64_t unused;
		} hostile;
		struct {                    /* DONE */
			int64_t result;     /* 0 or -errno */
			uint64_t detail;    /* region replies: the region; else request-specific */
			uint64_t request;
		} done;
		struct {                    /* STOP, and any request's id (fm_msg_request) */
			uint64_t unused[2];
			uint64_t request;
		} any;
	};
};
_Static_assert(sizeof(struct fm_msg) == 32, "fm_msg is the wire contract: keep it 32 bytes");
#define FM_MSG_REQUEST_AT(member)                                                          \
	_Static_assert(offsetof(struct fm_msg, member.request) == offsetof(struct fm_msg, any.request), \
		       #member ": the request id is the last word")
FM_MSG_REQUEST_AT(region);
FM_MSG_REQUEST_AT(fill);
FM_MSG_REQUEST_AT(pages);
FM_MSG_REQUEST_AT(reset);
FM_MSG_REQUEST_AT(region_budget);
FM_MSG_REQUEST_AT(servers);
FM_MSG_REQUEST_AT(done);
#undef FM_MSG_REQUEST_AT

/* The request id of any message that expects a reply. */
static inline uint64_t fm_msg_request(const struct fm_msg *m)
{
	return m->any.request;
}
_Static_assert(sizeof(void *) == sizeof(uint64_t), "payload words hold pointers");

CK_RING_PROTOTYPE(fm_msg, fm_msg)

#define FM_RING_WAIT_YIELDS 16        /* fm_ring_full_wait: yields before sleeping */
#define FM_RING_WAIT_MIN_NS 10000u    /* first sleep, 10 us */
#define FM_RING_WAIT_DOUBLINGS 7      /* longest sleep: 10 us << 7, about 1.3 ms */

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

/* A producer that found a ring full (or a command queue answering -EAGAIN)
 * waits for its consumer, another running thread, to make room: it yields
 * at first, then sleeps with a delay that doubles from 10 us to about 1 ms,
 * so a long wait costs no CPU. Retry the push after each call; `attempt`
 * starts at 0 and is kept across the calls of one wait. */
static inline void fm_ring_full_wait(unsigned *attempt)
{
	unsigned n = (*attempt)++;
	struct timespec ts = { 0, 0 };

	if (n < FM_RING_WAIT_YIELDS) {
		sched_yield();
		return;
	}
	n -= FM_RING_WAIT_YIELDS;
	ts.tv_nsec = (long)(FM_RING_WAIT_MIN_NS << (n < FM_RING_WAIT_DOUBLINGS ? n : FM_RING_WAIT_DOUBLINGS));
	nanosleep(&ts, NULL);
}

/* Consumer only. Returns false when empty. */
static inline bool fm_ring_pop(struct fm_ring *r, struct fm_msg *m)
{
	return ck_ring_dequeue_spsc_fm_msg(&r->ring, r->slots, m);
}

/* Consumer only: copy the i-th waiting message (0 = the one the next pop
 * returns) into *m without taking it. False when fewer than i + 1 wait. The
 * producer never rewrites a slot before the consumer pops it, so the copy
 * is whole, and the next pops return the same messages in order. */
static inline bool fm_ring_peek(const struct fm_ring *r, unsigned i, struct fm_msg *m)
{
	unsigned c = ck_pr_load_uint(&r->ring.c_head);
	unsigned p = ck_pr_load_uint(&r->ring.p_tail);

	ck_pr_fence_load();
	if (p - c <= i)
		return false;
	*m = r->slots[(c + i) & r->ring.mask];
	return true;
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
