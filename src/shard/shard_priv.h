/* shard internals shared by shard.c (the thread, its messages, region
 * life cycle and page states), fault.c (serving faults, handing pages back)
 * and evict.c (choosing, storing and dropping pages under the budget). Not a
 * public header: one shard thread owns everything here. */
#ifndef FM_SHARD_PRIV_H
#define FM_SHARD_PRIV_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "kv/kv.h"
#include "ring/ring.h"
#include "shard/page_hash.h"
#include "shard/pagetable.h"
#include "shard/policy.h"
#include "shard/prefetch.h"
#include "shard/shard.h"
#include "shard/storecopy.h"
#include "uffd/uffd.h"
#include "base/statebits.h"

#define EVICT_BACKOFF_NS 10000000ull   /* after a refused eviction, wait 10 ms, */
#define EVICT_BACKOFF_MAX_NS 1000000000ull   /* doubling while refusals go on, up to 1 s */

#define PS_MASK 0x0f
/* Flag on a resident page a prefetch installed and no fault or stream has
 * shown used yet; a state change that drops it counts the page wasted. */
#define PS_PREFETCHED 0x10

#define SHARD_PARK_MAX 4096            /* parked faults per shard (fault.c) */
#define SHARD_PARK_RETRY_NS 1000000ull /* parked faults are served again every 1 ms */
struct shard_parked;

/* The shard's view of one region. */
struct shard_region {
	struct pt_region pt;    /* first: pt_page_of() results cast back */
	struct uffd_region *r;
	uint64_t base;          /* client address of page 0 */
	uint64_t resident;      /* pages of this region in each state (this shard) */
	uint64_t stored;
	uint64_t zero;
	uint64_t faults;
	uint64_t budget;        /* this shard's cap for the region; UINT64_MAX = none */
	uint64_t hand;          /* next local page index the per-region scan looks at */
	struct page_hash_key hkey;   /* content hashes of this region's pages (storecopy.h) */
	struct pf_region pf;         /* fault streams for prefetch (prefetch.h) */
};

/* A run of evicted pages: ev_ids[first .. first+n), sorted, one stripe;
 * its ranges span from the first id to the last (evict.c). */
struct ev_run {
	uint32_t first, n;
};

struct shard {
	/* hot: the fault path */
	struct fm_ring data FM_ALIGNED_CL;
	struct fm_ring ctl;
	struct fm_doorbell bell;
	unsigned idx;
	unsigned nshards;
	uint64_t budget;
	uint64_t resident;
	struct pagetable pt;
	struct policy *policy;
	struct kv_store *kv;
	bool kv_keeps;
	void *bounce;                   /* one page for store gets */
	uint64_t evict_backoff_until;
	uint64_t evict_backoff_ns;      /* the next backoff: doubles per refused round */
	struct storecopy sc;            /* what a keeping store holds per page */
	unsigned capped_regions;        /* regions with a budget of their own */
	struct shard_stats st;
	struct pf_buffers *pf;          /* prefetch's batch; NULL = off */
	struct shard_parked *park;      /* faults waiting for a store server (fault.c) */
	uint32_t npark;
	uint64_t park_due;              /* ns: when they are served again */
	struct shard_fault_batch *fb;   /* queued faults read together (fault.c); NULL = off */
	uint64_t discards_handled;      /* REMOVE/UNMAP messages handled (fault.c) */

	/* cold */
	struct fm_ring reply FM_ALIGNED_CL;
	struct fm_doorbell *reply_bell;
	struct shard_region *regions[FM_MAX_REGIONS];
	uint32_t evict_batch;
	struct kv_key *ev_keys;
	const void **ev_pages;
	int *ev_results;
	int *ev_put_results;
	uint32_t *ev_ids;
	uint64_t *ev_hash;              /* per evicted page: its content hash */
	int *ev_rc;                     /* per evicted page: the store's answer */
	uint32_t *ev_idx;
	struct ev_run *ev_runs;         /* this round's runs */
	uint32_t ev_nruns;
	uint32_t evict_run;             /* pages a run may span; 1 = one page each */
	uint32_t free_low_pct, free_high_pct;
	bool refilling;                 /* below free_low once; until free_high */
	uint32_t spin_us;               /* the idle spin's ceiling */
	uint32_t spin_misses;           /* pauses in a row the spin could not catch */
	struct fm_msg *parked;          /* replies waiting for room in the reply ring */
	uint32_t nparked, parked_cap;
	int cpu;
	pthread_t thread;
	bool started;
	bool stop;
	bool keep_copies;   /* stopped with FM_STOP_KEEP: the store keeps our pages */
	/* FM_MSG_DRAIN's cursor: region slot, local stripe, page in it */
	uint32_t drain_slot, drain_off;
	uint64_t drain_ls;

	/* REMOVE/UNMAP messages routed to this shard: written by the
	 * dispatcher only, as soon as it read them (uffd.h, dispatch_target);
	 * the shard only loads it, before each install of stored data. Shards
	 * share nothing writable but this one-writer counter, so it sits alone
	 * on its cache line, away from everything the shard writes. */
	uint64_t discards_routed FM_ALIGNED_CL;
	char discards_pad_[FM_CACHELINE - sizeof(uint64_t)];
};

/* Buffers for one batched store read (kv_mget) of up to n pages: the
 * demand-fault batch (fault.c) and prefetch windows (prefetch.c). */
struct shard_getbuf {
	uint8_t *pages;            /* n pages, page aligned */
	void **ptrs;               /* ptrs[i] = pages + i pages */
	struct kv_key *keys;
	int *res;
};
/* 0 or -ENOMEM (nothing left allocated). */
int shard_getbuf_init(struct shard_getbuf *g, uint32_t n);
void shard_getbuf_free(struct shard_getbuf *g);

/* A discard routed to us is not handled yet: install no stored data. */
static inline bool shard_discard_pending(const struct shard *s)
{
	return uffd_discard_pending(&s->discards_routed, s->discards_handled);
}

/* ---- page ids ---- */
static inline uint32_t page_id(const struct shard *s, const struct shard_region *sr, uint64_t page)
{
	return pt_id(&s->pt, &sr->pt, page);
}

/* The region (and, in *page, the page index) that shard-local page id `id` names. */
static inline struct shard_region *region_of_id(const struct shard *s, uint32_t id, uint64_t *page)
{
	return (struct shard_region *)pt_page_of(&s->pt, id, page);
}

/* ---- shard.c ---- */
/* Every state change goes through here so the per-shard and per-region
 * counts stay exact. The policy is told separately. */
void shard_set_state(struct shard *s, struct shard_region *sr, uint32_t id, uint8_t to);
/* Delete the store's copy of a page, in state st, that leaves its care
 * (discarded, found zero, region gone); a failed delete is retried later. */
void shard_drop_copy(struct shard *s, struct shard_region *sr, uint32_t id, uint64_t page,
		     uint8_t st);

/* Record in the region's state file whether the store holds a copy of
 * `page` (re-adoption; docs/design.md "Restart and re-adoption"). Eviction
 * sets it after the put returned 0 and before the punch, clears it before
 * punching a zero page; a discard clears it. No-op without a state file. */
static inline void shard_mark_stored(struct shard *s, struct shard_region *sr, uint64_t page,
				     bool stored)
{
	(void)s;
	if (sr->r->state_bits)
		fm_state_bit_set(sr->r->state_bits, page, stored);
}

/* ---- drain.c ---- */
/* FM_MSG_DRAIN: one step (shard.h). Returns 1 when the pass is complete,
 * 0 when more remains; *moved gets the pages moved. */
int shard_drain_step(struct shard *s, uint32_t flags, uint64_t budget, uint64_t *moved);

/* ---- fault.c ---- */
/* Log an ioctl failure once per call site; ESRCH (the client's mm is gone)
 * is expected while a dead client's region waits to be torn down. */
void shard_note_ioctl_error(struct shard *s, struct shard_region *sr, const char *what, int rc,
			    uint64_t page);
/* FM_MSG_FAULT: serve one page fault, and with memory.fault_batch the
 * faults on stored pages queued right behind it, with one batched read. */
void shard_handle_fault(struct shard *s, const struct fm_msg *m);
/* The batch's buffers for up to max faults behind the first (0 = off). */
int shard_fault_batch_setup(struct shard *s, uint32_t max);
void shard_fault_batch_teardown(struct shard *s);
/* Serve the parked faults again if their time has come (or now, with
 * wait: a stopping shard, where the store's blocking retries decide). */
void shard_retry_parked(struct shard *s, bool wait);
/* FM_MSG_REMOVE, FM_MSG_UNMAP: the client discarded or unmapped a range. */
void shard_handle_range(struct shard *s, const struct fm_msg *m);
/* Copy every stored page of sr back into the client before sr is forgotten. */
void shard_restore_region(struct shard *s, struct shard_region *sr);

/* ---- evict.c ---- */
/* Evict up to want pages (the policy's victims, or only `only`'s). Returns
 * the pages evicted; a refusal starts a backoff. */
uint64_t shard_evict(struct shard *s, uint64_t want, struct shard_region *only);
/* Evict down to the shard's budget and every capped region's cap, unless
 * backing off after a refusal. */
void shard_enforce_budget(struct shard *s);
/* Eviction ahead of demand: whether the shard's free pages fell below its
 * low watermark (then it is "refilling" until the high one is reached). */
bool shard_evict_ahead_due(struct shard *s);
/* One bounded round of eviction towards the high watermark. Returns the
 * pages evicted (0: nothing to do, or backing off). */
uint64_t shard_evict_ahead(struct shard *s);
/* FM_MSG_REGION_BUDGET: cap r's resident pages in this shard (UINT64_MAX:
 * no cap), evicting at once. */
void shard_region_budget_apply(struct shard *s, struct uffd_region *r, uint64_t pages);

#endif
