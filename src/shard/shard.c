#include "shard/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/failpoint.h"
#include "base/log.h"
#include "kv/kv.h"
#include "shard/page_hash.h"
#include "shard/pagetable.h"
#include "shard/policy.h"
#include "shard/storecopy.h"
#include "uffd/uffd.h"

#define SHARD_BURST 32          /* messages taken from a ring per turn */
#define SHARD_SLEEP_MS 100      /* a sleeping shard still wakes this often */
#define EVICT_BACKOFF_NS 10000000ull   /* after a refused eviction, wait 10 ms, */
#define EVICT_BACKOFF_MAX_NS 1000000000ull   /* doubling while refusals go on, up to 1 s */

#define PS_MASK 0x0f

/* The shard's view of one region. */
struct shard_region {
	struct pt_region pt;    /* first: pt_page_of() results cast back */
	struct region *r;
	uint64_t base;          /* client address of page 0 */
	uint64_t resident;      /* pages of this region in each state (this shard) */
	uint64_t stored;
	uint64_t zero;
	uint64_t faults;
	uint64_t budget;        /* this shard's cap for the region; UINT64_MAX = none */
	uint64_t hand;          /* next local page index the per-region scan looks at */
	struct page_hash_key hkey;   /* content hashes of this region's pages (storecopy.h) */
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
	uint32_t spin_us;
	int cpu;
	pthread_t thread;
	bool started;
	bool stop;
};

size_t shard_bytes_per_page(void)
{
	return sizeof(uint8_t) + policy_bytes_per_page();
}

struct fm_ring *shard_data_ring(struct shard *s) { return &s->data; }
struct fm_ring *shard_ctl_ring(struct shard *s) { return &s->ctl; }
struct fm_ring *shard_reply_ring(struct shard *s) { return &s->reply; }
struct fm_doorbell *shard_doorbell(struct shard *s) { return &s->bell; }
unsigned shard_index(const struct shard *s) { return s->idx; }

static void reply(struct shard *s, uint32_t what, int64_t result, uint64_t detail, uint64_t cookie)
{
	struct fm_msg m = {
		.type = FM_MSG_DONE, .shard = (uint16_t)s->idx, .flags = what,
		.a = (uint64_t)result, .b = detail, .cookie = cookie,
	};

	/* The control plane drains replies continuously and never has more
	 * than a few requests in flight per shard, so a full reply ring is a
	 * transient: wait for it rather than lose an acknowledgement. */
	while (!fm_ring_push(&s->reply, &m))
		usleep(100);
	if (s->reply_bell)
		fm_doorbell_ring(s->reply_bell);
}

/* ---- page ids ---- */

static inline uint32_t page_id(const struct shard *s, const struct shard_region *sr, uint64_t page)
{
	return pt_id(&s->pt, &sr->pt, page);
}

static inline struct shard_region *id_to_page(const struct shard *s, uint32_t id, uint64_t *page)
{
	return (struct shard_region *)pt_page_of(&s->pt, id, page);
}

/* ---- region lifecycle ---- */

/* Every state change goes through here so the per-shard and per-region
 * counts stay exact. The policy is told separately. */
static void set_state(struct shard *s, struct shard_region *sr, uint32_t id, uint8_t to)
{
	uint8_t from = s->pt.state[id] & PS_MASK;

	if (from == to)
		return;
	if (from == PS_RESIDENT) {
		s->resident--;
		sr->resident--;
	} else if (from == PS_STORED) {
		sr->stored--;
	} else if (from == PS_ZERO) {
		sr->zero--;
	}
	if (to == PS_RESIDENT) {
		s->resident++;
		sr->resident++;
	} else if (to == PS_STORED) {
		sr->stored++;
	} else if (to == PS_ZERO) {
		sr->zero++;
	}
	s->pt.state[id] = to;
}

/* Delete what the store holds for a page that leaves its care (discarded,
 * found zero, region gone): a PS_STORED page's copy, or the copy a keeping
 * store still has of a resident one. A failed delete stays recorded, so a
 * later drop retries it. */
static void drop_copy(struct shard *s, struct shard_region *sr, uint32_t id, uint64_t page,
		      uint8_t st)
{
	int rc;

	if (st != PS_STORED && !sc_has(&s->sc, id))
		return;
	rc = kv_del(s->kv, (struct kv_key){ sr->r->id, page });
	if (rc < 0 && rc != -ENOENT) {
		s->st.store_errors++;
		sc_set_unsynced(&s->sc, id);
		return;
	}
	sc_clear(&s->sc, id);
}

/* Drop every page of the region: stored copies deleted, policy forgotten. */
static void region_free_pages(struct shard *s, struct shard_region *sr)
{
	for (uint64_t ls = 0; ls < sr->pt.nstripes; ls++) {
		uint32_t c = sr->pt.chunk[ls];
		uint64_t first = s->pt.owner[c].first_page;

		if (c == 0)
			continue;   /* never touched: nothing to drop */
		for (uint32_t off = 0; off < FM_STRIPE_PAGES; off++) {
			uint32_t id = (c << FM_STRIPE_SHIFT) | off;
			uint8_t st = s->pt.state[id] & PS_MASK;

			drop_copy(s, sr, id, first + off, st);
			if (st != PS_NONE)
				policy_drop(s->policy, id);
			set_state(s, sr, id, PS_NONE);
		}
		sc_drop_chunk(&s->sc, c);
	}
	pt_region_del(&s->pt, &sr->pt);
}

static int region_add(struct shard *s, struct region *r)
{
	struct shard_region *sr;
	int rc;

	if (r->slot >= FM_MAX_REGIONS || s->regions[r->slot])
		return -EEXIST;
	sr = calloc(1, sizeof(*sr));
	if (!sr)
		return -ENOMEM;
	sr->r = r;
	sr->base = r->base;
	sr->budget = UINT64_MAX;
	page_hash_key_init(&sr->hkey);
	/* O(1): stripes get their page state on first touch (stripe_state). */
	rc = pt_region_attach(&s->pt, &sr->pt, r->slot, r->npages);
	if (rc == 0 && (policy_grow(s->policy, pt_capacity(&s->pt)) < 0 ||
			sc_reserve(&s->sc, s->pt.cap) < 0)) {
		pt_region_del(&s->pt, &sr->pt);
		rc = -ENOMEM;
	}
	if (rc < 0) {
		free(sr);
		return rc;
	}
	s->regions[r->slot] = sr;
	return 0;
}

static void restore_region(struct shard *s, struct shard_region *sr);

static void region_del(struct shard *s, struct region *r, bool restore)
{
	struct shard_region *sr = r->slot < FM_MAX_REGIONS ? s->regions[r->slot] : NULL;

	if (!sr || sr->r != r)
		return;
	if (restore)
		restore_region(s, sr);
	if (sr->budget != UINT64_MAX)
		s->capped_regions--;
	region_free_pages(s, sr);
	s->regions[r->slot] = NULL;
	free(sr);
}

/* ---- faults ---- */

/* Log an ioctl failure once per call site; ESRCH (the client's mm is gone)
 * is expected while a dead client's region waits to be torn down. */
static void note_ioctl_error(struct shard *s, struct shard_region *sr, const char *what, int rc,
			     uint64_t page)
{
	if (rc == -ESRCH)
		return;
	if (rc == -EAGAIN)
		s->st.eagain_giveups++;
	fm_log_once(FM_LOG_ERROR, "shard %u: %s on region %llu page %llu failed: %s", s->idx, what,
		    (unsigned long long)sr->r->id, (unsigned long long)page, strerror(-rc));
}

/* Page state for the stripe of `page`, allocated on its first touch: the
 * only allocation on the fault path, once per 2 MiB stripe. 0 or -ENOMEM /
 * -ENOSPC / -EINVAL (the policy cannot grow). */
static int stripe_state(struct shard *s, struct shard_region *sr, uint64_t page)
{
	int rc;

	if (pt_has_stripe(&s->pt, &sr->pt, page))
		return 0;
	if ((rc = pt_stripe_alloc(&s->pt, &sr->pt, page)) < 0)
		return rc;
	/* The ids are handed out; a policy or storecopy too small for them
	 * is grown now, and on failure the stripe simply stays unused. */
	if ((rc = policy_grow(s->policy, pt_capacity(&s->pt))) < 0 ||
	    (rc = sc_reserve(&s->sc, s->pt.cap)) < 0)
		return rc;
	return 0;
}

static void make_resident(struct shard *s, struct shard_region *sr, uint32_t id)
{
	set_state(s, sr, id, PS_RESIDENT);
	policy_admit(s->policy, id);
}

struct fetch_check {
	const struct page_hash_key *key;
	uint64_t want;
};

static bool fetch_ok(const void *page, void *arg)
{
	const struct fetch_check *c = arg;

	return page_hash(c->key, page) == c->want;
}

/* Fetch a stored page into the bounce buffer, timing it. 0 or -errno. A
 * keeping store's copy must hash as recorded: a stale replica or a corrupt
 * value is refused, never installed. */
static int fetch(struct shard *s, struct shard_region *sr, uint64_t page)
{
	struct kv_key k = { sr->r->id, page };
	struct fetch_check chk = { &sr->hkey, 0 };
	uint64_t t0 = fm_now_ns();
	int rc = sc_synced_hash(&s->sc, page_id(s, sr, page), &chk.want)
			 ? kv_get_checked(s->kv, k, s->bounce, fetch_ok, &chk)
			 : kv_get(s->kv, k, s->bounce);

	fm_hist_add(&s->st.fetch_ns, fm_now_ns() - t0);
	return rc;
}

/* Never a silent zero: a page we stored and cannot get back is an error
 * the client must see, as SIGBUS on every touch. */
static int poison(struct shard *s, struct shard_region *sr, uint32_t id, uint64_t page, int why)
{
	s->st.store_errors++;
	s->st.poisoned++;
	set_state(s, sr, id, PS_POISONED);
	FM_ERR("shard %u: region %llu page %llu lost by the store (%s): poisoned", s->idx,
	       (unsigned long long)sr->r->id, (unsigned long long)page, strerror(-why));
	return uffd_poison(sr->r->uffd, sr->base + (page << FM_PAGE_SHIFT), FM_PAGE_SIZE,
			   &s->st.eagain_retries);
}

/* Serve one fault. Returns the outcome counter to bump; every fault ends in
 * exactly one (see the invariant in shard.h). */
static uint64_t *serve_fault(struct shard *s, struct shard_region *sr, uint64_t page, uint32_t flags)
{
	struct region *r = sr->r;
	uint32_t id = page_id(s, sr, page);
	uint64_t addr = sr->base + (page << FM_PAGE_SHIFT);
	int rc;

	if (flags & FM_FAULT_WP) {
		/* A writer met an eviction's write-protect window. If the
		 * eviction finished, the page is gone and waking sends the
		 * writer to a MISSING fault; if it was refused, the page stayed
		 * and un-protecting it wakes the writer. */
		if ((s->pt.state[id] & PS_MASK) == PS_RESIDENT)
			rc = uffd_writeprotect(r->uffd, addr, FM_PAGE_SIZE, false, &s->st.eagain_retries);
		else
			rc = uffd_wake(r->uffd, addr, FM_PAGE_SIZE);
		if (rc < 0)
			goto fail;
		return &s->st.wp_faults;
	}

	switch (s->pt.state[id] & PS_MASK) {
	case PS_RESIDENT:
		/* Usually a second thread on the same page: the first fault
		 * already filled it, EEXIST says so, and we wake. If the client
		 * punched the page out of its memfd, zero-filling is exactly
		 * what it asked for. */
		rc = uffd_zeropage(r->uffd, addr, FM_PAGE_SIZE, &s->st.eagain_retries);
		if (rc == -EEXIST) {
			rc = uffd_wake(r->uffd, addr, FM_PAGE_SIZE);
			if (rc < 0)
				goto fail;
			return &s->st.dup_faults;
		}
		if (rc < 0)
			goto fail;
		return &s->st.zero_fills;
	case PS_NONE:
	case PS_ZERO:
		if (!pt_has_stripe(&s->pt, &sr->pt, page)) {
			rc = stripe_state(s, sr, page);
			if (rc < 0) {
				/* Untracked, the page could not be evicted or
				 * accounted; the client gets SIGBUS, not a page
				 * the daemon lost track of. */
				s->st.state_alloc_failures++;
				fm_log_ratelimited(FM_LOG_ERROR,
						   "shard %u: no memory for page state of region %llu "
						   "page %llu (%s): poisoned",
						   s->idx, (unsigned long long)r->id,
						   (unsigned long long)page, strerror(-rc));
				rc = uffd_poison(r->uffd, addr, FM_PAGE_SIZE, &s->st.eagain_retries);
				if (rc < 0 && rc != -EEXIST)
					goto fail;
				return &s->st.poison_faults;
			}
			id = page_id(s, sr, page);
		}
		rc = uffd_zeropage(r->uffd, addr, FM_PAGE_SIZE, &s->st.eagain_retries);
		if (rc == -EEXIST)   /* present already (registered with contents) */
			rc = uffd_wake(r->uffd, addr, FM_PAGE_SIZE);
		if (rc < 0)
			goto fail;
		make_resident(s, sr, id);
		return &s->st.zero_fills;
	case PS_STORED:
		rc = fetch(s, sr, page);
		if (rc < 0) {
			rc = poison(s, sr, id, page, rc);
			if (rc < 0 && rc != -EEXIST)
				goto fail;
			return &s->st.poison_faults;
		}
		rc = uffd_copy(r->uffd, addr, s->bounce, FM_PAGE_SIZE, &s->st.eagain_retries);
		if (rc == -EEXIST)
			rc = uffd_wake(r->uffd, addr, FM_PAGE_SIZE);
		if (rc < 0)
			goto fail;
		make_resident(s, sr, id);
		if (!s->kv_keeps) {
			struct kv_key k = { r->id, page };

			if (kv_del(s->kv, k) < 0)
				s->st.store_errors++;
		}
		return &s->st.fetches;
	case PS_POISONED:
		rc = uffd_poison(r->uffd, addr, FM_PAGE_SIZE, &s->st.eagain_retries);
		if (rc == -EEXIST)
			rc = uffd_wake(r->uffd, addr, FM_PAGE_SIZE);
		if (rc < 0)
			goto fail;
		return &s->st.poison_faults;
	}
	rc = -EINVAL;
fail:
	note_ioctl_error(s, sr, "serving a fault", rc, page);
	return &s->st.fault_errors;
}

static void handle_fault(struct shard *s, const struct fm_msg *m)
{
	struct region *r = (struct region *)(uintptr_t)m->a;
	struct shard_region *sr = s->regions[r->slot];

	if (unlikely(!sr || sr->r != r || m->b >= r->npages)) {
		s->st.stale_faults++;
		return;
	}
	s->st.faults++;
	sr->faults++;
	(*serve_fault(s, sr, m->b, m->flags))++;
	fm_hist_add(&s->st.fault_ns, fm_now_ns() - m->cookie);
}

/* REMOVE: the client discarded [first, first+n) with madvise. UNMAP: the
 * range is gone from the client. Either way stored copies are dropped and
 * the pages read as zero next time. A resident page that is still in the
 * memfd after a REMOVE keeps its contents (MADV_DONTNEED on a shared mapping
 * only zaps page tables); punching it here would race with the client's next
 * write, so only the client may free it (fm_region_discard punches first). */
static void handle_range(struct shard *s, const struct fm_msg *m)
{
	struct region *r = (struct region *)(uintptr_t)m->a;
	struct shard_region *sr = s->regions[r->slot];
	uint64_t first = m->b, end = m->b + m->cookie;
	bool unmap = m->type == FM_MSG_UNMAP;

	if (!sr || sr->r != r)
		return;
	if (end > r->npages)
		end = r->npages;
	for (uint64_t page = first; page < end; page++) {
		uint32_t id;
		uint8_t st;

		if (region_shard_of(r, page, s->nshards) != s->idx ||
		    !pt_has_stripe(&s->pt, &sr->pt, page)) {
			page |= FM_STRIPE_PAGES - 1;   /* skip to the next stripe */
			continue;
		}
		id = page_id(s, sr, page);
		st = s->pt.state[id] & PS_MASK;
		if (st == PS_RESIDENT) {
			unsigned char inmem = 1;

			if (!unmap) {
				if (mincore(r->view + (page << FM_PAGE_SHIFT), FM_PAGE_SIZE, &inmem) < 0)
					inmem = 1;
				if (inmem & 1)
					continue;
			} else if (fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					     (off_t)(page << FM_PAGE_SHIFT), FM_PAGE_SIZE) < 0) {
				/* The client unmapped it: the page is nobody's
				 * data any more; only the memory stays with the
				 * memfd until it is closed. */
				s->st.punch_errors++;
			}
		} else if (st == PS_NONE) {
			continue;
		}
		drop_copy(s, sr, id, page, st);
		policy_drop(s->policy, id);
		set_state(s, sr, id, PS_NONE);
		s->st.discarded++;
	}
}

/* ---- eviction ---- */

/* Next resident page of one region in this shard, scanning with a hand so
 * repeated calls walk the whole region; it is taken out of the policy.
 * POLICY_NONE when the region has no resident page here. */
static uint32_t region_victim(struct shard *s, struct shard_region *sr)
{
	uint64_t n = sr->pt.nstripes << FM_STRIPE_SHIFT;

	if (sr->resident == 0)
		return POLICY_NONE;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t local = sr->hand++ % n;
		uint32_t id = (sr->pt.chunk[local >> FM_STRIPE_SHIFT] << FM_STRIPE_SHIFT) |
			      (uint32_t)(local & (FM_STRIPE_PAGES - 1));

		if ((s->pt.state[id] & PS_MASK) == PS_RESIDENT) {
			policy_drop(s->policy, id);
			return id;
		}
	}
	return POLICY_NONE;
}

/* ---- clean pages (a store that keeps copies; storecopy.h) ---- */

enum { EV_PUT, EV_ZERO, EV_CLEAN, EV_KEEP };

/* A non-zero page under eviction: write it (EV_PUT), skip the write because
 * the store's copy is this very content (EV_CLEAN), or keep it resident
 * because there is no memory to track its copy (EV_KEEP). The hash is taken
 * after the write-protect, so the content cannot change under it. */
static int classify(struct shard *s, struct shard_region *sr, uint32_t id, const void *src,
		    uint64_t *hash)
{
	uint64_t was;

	if (!s->kv_keeps)
		return EV_PUT;
	*hash = page_hash(&sr->hkey, src);
	if (sc_synced_hash(&s->sc, id, &was) && was == *hash)
		return EV_CLEAN;
	return sc_prepare(&s->sc, id) < 0 ? EV_KEEP : EV_PUT;
}

/* A clean page is skipped only if every server still holds its copy: one
 * that restarted empty would otherwise turn the skip into a lost page. One
 * touch per clean page rides one pipelined flush; pages a server lost are
 * written after all (and count as puts). Fills ev_rc for EV_CLEAN items. */
static void confirm_clean(struct shard *s, uint32_t n)
{
	uint32_t m = 0, w = 0;
	int *res = s->ev_put_results;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t page;
		struct shard_region *sr;

		if (s->ev_results[i] != EV_CLEAN)
			continue;
		sr = id_to_page(s, s->ev_ids[i], &page);
		s->ev_idx[m] = i;
		s->ev_keys[m++] = (struct kv_key){ sr->r->id, page };
	}
	if (m == 0)
		return;
	kv_mtouch(s->kv, s->ev_keys, res, m);
	for (uint32_t k = 0; k < m; k++) {
		uint32_t i = s->ev_idx[k];
		struct shard_region *sr;
		uint64_t page;

		s->ev_rc[i] = res[k];
		if (res[k] != -ENOENT)
			continue;
		sr = id_to_page(s, s->ev_ids[i], &page);
		s->ev_results[i] = EV_PUT;
		s->ev_idx[w] = i;
		s->ev_keys[w] = (struct kv_key){ sr->r->id, page };
		s->ev_pages[w++] = sr->r->view + (page << FM_PAGE_SHIFT);
	}
	if (w == 0)
		return;
	kv_mput(s->kv, s->ev_keys, (const void *const *)s->ev_pages, res, w);
	for (uint32_t k = 0; k < w; k++)
		s->ev_rc[s->ev_idx[k]] = res[k];
}

/* A remote store pays a round trip per flush: once over budget, evict a
 * whole batch (at most half the budget) so a flush carries evict_batch
 * pages, not the one page each fault pushed over. */
static uint64_t evict_want(const struct shard *s, uint64_t over)
{
	uint64_t batch = FM_MIN((uint64_t)s->evict_batch, s->budget / 2 + 1);

	if (!s->kv_keeps)
		return over;
	return FM_MAX(over, FM_MIN(batch, s->resident));
}

/* An eviction that did not happen (store refused, hole not punched): the
 * page stays RESIDENT, goes back to the policy, and its writers are let go.
 * If the un-protect fails the next write raises a WP fault, whose handler
 * un-protects a resident page again, so nothing stays blocked for good. */
static void keep_resident(struct shard *s, struct shard_region *sr, uint32_t id, uint64_t page,
			  bool only)
{
	int rc;

	if (only)
		policy_admit(s->policy, id);
	else
		policy_reinsert(s->policy, id);
	rc = uffd_writeprotect(sr->r->uffd, sr->base + (page << FM_PAGE_SHIFT), FM_PAGE_SIZE, false,
			       &s->st.eagain_retries);
	if (rc < 0) {
		if (rc != -ESRCH)
			s->st.unprotect_errors++;
		note_ioctl_error(s, sr, "un-protect", rc, page);
	}
}

/* Evict up to `want` pages: the policy's victims, or only `only`'s pages.
 * The race-free method (docs/design.md): write-protect so writers wait, read
 * through our own mapping, store, punch the page out of the memfd (which
 * unmaps it everywhere), then clear the protection, which wakes waiting
 * writers into a MISSING fault that fetches what we stored. */
static uint64_t evict(struct shard *s, uint64_t want, struct shard_region *only)
{
	uint64_t done = 0;

	while (done < want) {
		uint32_t n = 0, nput = 0;
		uint64_t t0 = fm_now_ns();

		while (n < s->evict_batch && done + n < want) {
			uint32_t id = only ? region_victim(s, only) : policy_victim(s->policy);
			struct shard_region *sr;
			uint64_t page;
			int rc;

			if (id == POLICY_NONE)
				break;
			sr = id_to_page(s, id, &page);
			rc = uffd_writeprotect(sr->r->uffd, sr->base + (page << FM_PAGE_SHIFT),
					       FM_PAGE_SIZE, true, &s->st.eagain_retries);
			if (rc < 0) {
				/* The client is gone or the range vanished under
				 * us: forget the page rather than store garbage. */
				note_ioctl_error(s, sr, "write-protect", rc, page);
				set_state(s, sr, id, PS_NONE);
				continue;
			}
			s->ev_ids[n] = id;
			n++;
		}
		if (n == 0)
			break;

		/* Zero pages are remembered, not stored; clean ones are only
		 * confirmed (confirm_clean). */
		for (uint32_t i = 0; i < n; i++) {
			struct shard_region *sr;
			uint64_t page;
			const uint8_t *src;

			sr = id_to_page(s, s->ev_ids[i], &page);
			src = sr->r->view + (page << FM_PAGE_SHIFT);
			if (fm_page_is_zero(src)) {
				s->ev_results[i] = EV_ZERO;
				continue;
			}
			s->ev_results[i] = classify(s, sr, s->ev_ids[i], src, &s->ev_hash[i]);
			s->ev_rc[i] = -ENOSPC;   /* EV_KEEP: no room to track its copy */
			if (s->ev_results[i] != EV_PUT)
				continue;
			s->ev_idx[nput] = i;
			s->ev_keys[nput] = (struct kv_key){ sr->r->id, page };
			s->ev_pages[nput] = src;
			nput++;
		}
		int *put_results = s->ev_put_results;
		if (nput > 0) {
			uint64_t tp = fm_now_ns();

			kv_mput(s->kv, s->ev_keys, (const void *const *)s->ev_pages, put_results, nput);
			fm_hist_add(&s->st.put_ns, (fm_now_ns() - tp) / nput);
		}
		for (uint32_t j = 0; j < nput; j++)
			s->ev_rc[s->ev_idx[j]] = put_results[j];
		confirm_clean(s, n);

		bool refused = false;
		for (uint32_t i = 0; i < n; i++) {
			uint32_t id = s->ev_ids[i];
			struct shard_region *sr;
			uint64_t page, addr;
			int rc = s->ev_results[i] == EV_ZERO ? 0 : s->ev_rc[i];

			sr = id_to_page(s, id, &page);
			addr = sr->base + (page << FM_PAGE_SHIFT);
			if (rc < 0) {
				/* Full or failing store: the page stays, nothing
				 * is lost, and we back off before trying again. */
				s->st.evict_refused++;
				if (rc != -ENOSPC)
					s->st.store_errors++;
				refused = true;
				/* A write that failed somewhere may have landed
				 * elsewhere: the copy no longer matches a hash. */
				sc_set_unsynced(&s->sc, id);
				keep_resident(s, sr, id, page, only != NULL);
				continue;
			}
			if (s->ev_results[i] == EV_PUT)
				sc_set_synced(&s->sc, id, s->ev_hash[i]);   /* prepared: cannot fail */
			/* Punch before the page is recorded as gone: if the
			 * memfd keeps it, it is still the client's live copy
			 * and must stay RESIDENT and tracked. */
			rc = fm_failpoint(FM_FP_EVICT_PUNCH);
			if (rc == 0 && fallocate(sr->r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
						 (off_t)(page << FM_PAGE_SHIFT), FM_PAGE_SIZE) < 0)
				rc = -errno;
			if (rc < 0) {
				s->st.punch_errors++;
				fm_log_once(FM_LOG_ERROR, "shard %u: cannot punch region %llu page %llu "
					    "out of its memfd: %s; the page stays resident", s->idx,
					    (unsigned long long)sr->r->id, (unsigned long long)page,
					    strerror(-rc));
				/* A store that drops after get would keep an
				 * orphan copy; a keeping store's copy stays
				 * valid (its hash was taken under protection). */
				if (s->ev_results[i] == EV_PUT && !s->kv_keeps &&
				    kv_del(s->kv, (struct kv_key){ sr->r->id, page }) < 0)
					s->st.store_errors++;
				refused = true;
				keep_resident(s, sr, id, page, only != NULL);
				continue;
			}
			if (s->ev_results[i] == EV_ZERO) {
				s->st.evict_zero++;
				drop_copy(s, sr, id, page, PS_RESIDENT);
				set_state(s, sr, id, PS_ZERO);
			} else if (s->ev_results[i] == EV_CLEAN) {
				s->st.evict_clean++;
				set_state(s, sr, id, PS_STORED);
			} else {
				s->st.store_puts++;
				set_state(s, sr, id, PS_STORED);
			}
			/* The page is gone from the memfd, so a writer that
			 * stays blocked here retries into a MISSING fault once
			 * woken; wake it even if the un-protect failed. */
			rc = uffd_writeprotect(sr->r->uffd, addr, FM_PAGE_SIZE, false,
					       &s->st.eagain_retries);
			if (rc < 0) {
				if (rc != -ESRCH)
					s->st.unprotect_errors++;
				note_ioctl_error(s, sr, "un-protect", rc, page);
				uffd_wake(sr->r->uffd, addr, FM_PAGE_SIZE);
			}
			s->st.evictions++;
			done++;
		}
		fm_hist_add(&s->st.evict_ns, (fm_now_ns() - t0) / n);
		if (refused) {
			s->evict_backoff_until = fm_now_ns() + s->evict_backoff_ns;
			s->evict_backoff_ns = FM_MIN(s->evict_backoff_ns * 2, EVICT_BACKOFF_MAX_NS);
			break;
		}
		s->evict_backoff_ns = EVICT_BACKOFF_NS;
	}
	return done;
}

static bool backing_off(struct shard *s)
{
	if (!s->evict_backoff_until)
		return false;
	if (fm_now_ns() < s->evict_backoff_until)
		return true;
	s->evict_backoff_until = 0;
	return false;
}

/* The shard's budget, then any region over its own cap. */
static void enforce_budget(struct shard *s)
{
	if (s->resident > s->budget && !backing_off(s))
		evict(s, evict_want(s, s->resident - s->budget), NULL);
	if (s->capped_regions == 0)
		return;
	for (unsigned i = 0; i < FM_MAX_REGIONS; i++) {
		struct shard_region *sr = s->regions[i];

		if (sr && sr->resident > sr->budget && !backing_off(s))
			evict(s, sr->resident - sr->budget, sr);
	}
}

/* Hand every stored page of a region back to its client (copied in), before
 * forgetting a region that a live client still maps, so it loses no data.
 * Zero and untouched pages are left alone: the dispatcher unregisters the
 * range next, which wakes every waiting fault, and from then on the kernel
 * fills holes with zeros itself, which is exactly their content. (Filling
 * them here cost a zero-page per page of the region, and grew the client.) */
static void restore_region(struct shard *s, struct shard_region *sr)
{
	for (uint64_t ls = 0; ls < sr->pt.nstripes; ls++) {
		uint32_t c = sr->pt.chunk[ls];
		/* a never-touched stripe reads PS_NONE through the null chunk */
		uint64_t first = pt_stripe_first_page(&s->pt, &sr->pt, ls);

		for (uint32_t off = 0; off < FM_STRIPE_PAGES && first + off < sr->pt.npages; off++) {
			uint32_t id = (c << FM_STRIPE_SHIFT) | off;
			uint64_t page = first + off, addr = sr->base + (page << FM_PAGE_SHIFT);
			uint8_t st = s->pt.state[id] & PS_MASK;
			int rc;

			if (st != PS_STORED)
				continue;
			rc = fetch(s, sr, page);
			rc = rc < 0 ? poison(s, sr, id, page, rc)
				    : uffd_copy(sr->r->uffd, addr, s->bounce, FM_PAGE_SIZE,
						&s->st.eagain_retries);
			if (rc == -ESRCH)
				return;   /* the client is gone: nothing to hand back */
			if (rc == 0 || rc == -EEXIST) {
				s->st.restored++;
			} else {
				s->st.restore_errors++;
				note_ioctl_error(s, sr, "restoring a page", rc, page);
			}
		}
	}
}

static void set_region_budget(struct shard *s, struct region *r, uint64_t pages)
{
	struct shard_region *sr = r->slot < FM_MAX_REGIONS ? s->regions[r->slot] : NULL;

	if (!sr || sr->r != r)
		return;
	if (sr->budget == UINT64_MAX && pages != UINT64_MAX)
		s->capped_regions++;
	else if (sr->budget != UINT64_MAX && pages == UINT64_MAX)
		s->capped_regions--;
	sr->budget = pages;
	s->evict_backoff_until = 0;
	enforce_budget(s);
}

static void fill_region_stats(struct shard *s, struct shard_region_stats *out)
{
	for (unsigned i = 0; i < FM_MAX_REGIONS; i++) {
		const struct shard_region *sr = s->regions[i];

		if (!sr)
			continue;
		out[i] = (struct shard_region_stats){
			.present = 1, .resident = sr->resident, .stored = sr->stored,
			.zero = sr->zero, .faults = sr->faults, .budget = sr->budget,
		};
	}
}

static void reset_stats(struct shard *s, uint64_t what)
{
	if (what & FM_RESET_COUNTERS) {
#define X(name, help) s->st.name = 0;
		SHARD_COUNTER_FIELDS(X)
#undef X
	}
	if (what & FM_RESET_LATENCY) {
#define X(name, help) fm_hist_reset(&s->st.name);
		SHARD_HIST_FIELDS(X)
#undef X
	}
}

/* ---- the loop ---- */

static void fill_stats(struct shard *s, struct shard_stats *out)
{
	s->st.resident = s->resident;
	s->st.budget = s->budget;
	s->st.tracked = pt_tracked(&s->pt);
	struct kv_stats ks;
	kv_get_stats(s->kv, &ks);
	s->st.store_bytes = ks.bytes_stored;
	s->st.ring_depth = fm_ring_depth(&s->data);
	s->st.store_retries = ks.retries;
	memcpy(out, &s->st, sizeof(*out));
}

static void handle_ctl(struct shard *s, const struct fm_msg *m)
{
	switch (m->type) {
	case FM_MSG_STATS:
		fill_stats(s, (struct shard_stats *)(uintptr_t)m->a);
		reply(s, m->type, 0, 0, m->cookie);
		break;
	case FM_MSG_SET_BUDGET:
		s->budget = m->a;
		policy_set_budget(s->policy, s->budget);
		s->evict_backoff_until = 0;
		enforce_budget(s);
		reply(s, m->type, s->resident <= s->budget ? 0 : -ENOSPC, s->resident, m->cookie);
		break;
	case FM_MSG_EVICT:
		reply(s, m->type, 0, evict(s, m->a, NULL), m->cookie);
		break;
	case FM_MSG_RESET:
		reset_stats(s, m->a);
		reply(s, m->type, 0, 0, m->cookie);
		break;
	case FM_MSG_REGION_STATS:
		fill_region_stats(s, (struct shard_region_stats *)(uintptr_t)m->a);
		reply(s, m->type, 0, 0, m->cookie);
		break;
	case FM_MSG_REGION_BUDGET: {
		struct region *r = (struct region *)(uintptr_t)m->a;
		struct shard_region *sr = r->slot < FM_MAX_REGIONS ? s->regions[r->slot] : NULL;

		set_region_budget(s, r, m->b);
		reply(s, m->type, sr && sr->resident > sr->budget ? -ENOSPC : 0,
		      sr ? sr->resident : 0, m->cookie);
		break;
	}
	case FM_MSG_STOP:
		s->stop = true;
		reply(s, m->type, 0, 0, m->cookie);
		break;
	default:
		fm_log_once(FM_LOG_ERROR, "shard %u: unexpected control message %u", s->idx, m->type);
	}
}

static void handle_data(struct shard *s, const struct fm_msg *m)
{
	struct region *r = (struct region *)(uintptr_t)m->a;
	int rc;

	switch (m->type) {
	case FM_MSG_FAULT:
		handle_fault(s, m);
		break;
	case FM_MSG_REMOVE:
	case FM_MSG_UNMAP:
		handle_range(s, m);
		break;
	case FM_MSG_REGION_ADD:
		rc = region_add(s, r);
		reply(s, m->type, rc, (uint64_t)(uintptr_t)r, m->cookie);
		break;
	case FM_MSG_REGION_DEL:
		region_del(s, r, m->flags & FM_DEL_RESTORE);
		reply(s, m->type, 0, (uint64_t)(uintptr_t)r, m->cookie);
		break;
	default:
		fm_log_once(FM_LOG_ERROR, "shard %u: unexpected data message %u", s->idx, m->type);
	}
}

static void *shard_main(void *arg)
{
	struct shard *s = arg;
	uint64_t idle_since = fm_now_ns();
	char name[16];

	snprintf(name, sizeof(name), "fm-shard%u", s->idx);
	pthread_setname_np(pthread_self(), name);
	if (fm_pin_self(s->cpu) < 0)
		FM_WARN("shard %u: cannot pin to cpu %d", s->idx, s->cpu);

	while (!s->stop) {
		struct fm_msg m;
		unsigned n = 0;

		while (n < SHARD_BURST && fm_ring_pop(&s->data, &m)) {
			handle_data(s, &m);
			n++;
		}
		/* Control traffic is rare; it is served every turn but after
		 * the faults, so it never delays a burst already taken. */
		for (unsigned c = 0; c < 4 && fm_ring_pop(&s->ctl, &m); c++) {
			handle_ctl(s, &m);
			n++;
		}
		enforce_budget(s);
		if (n > 0) {
			idle_since = 0;
			continue;
		}
		uint64_t now = fm_now_ns();
		if (idle_since == 0)
			idle_since = now;
		if (now - idle_since < (uint64_t)s->spin_us * 1000) {
			/* Yield rather than pause: with 2 cores a shard shares
			 * its core with the dispatcher or the client. */
			sched_yield();
			continue;
		}
		/* Announce, re-check, sleep: a producer that pushed before our
		 * announcement is seen by the re-check; one after rings us. */
		fm_doorbell_announce(&s->bell, 1);
		if (fm_ring_depth(&s->data) == 0 && fm_ring_depth(&s->ctl) == 0) {
			s->st.sleeps++;
			/* With a backed-off eviction pending, wake to retry. */
			fm_doorbell_wait(&s->bell, s->evict_backoff_until ? 10 : SHARD_SLEEP_MS);
		}
		fm_doorbell_announce(&s->bell, 0);
		idle_since = 0;
	}
	return NULL;
}

struct shard *shard_create(const struct shard_params *p, unsigned idx, uint64_t budget,
			   struct fm_doorbell *reply_bell)
{
	struct shard *s = aligned_alloc(FM_CACHELINE, sizeof(*s));
	int rc;

	if (!s)
		return NULL;
	memset(s, 0, sizeof(*s));
	s->bell.efd = -1;
	s->idx = idx;
	s->nshards = p->shard_count;
	pt_init(&s->pt, idx, p->shard_count);
	s->budget = budget;
	s->reply_bell = reply_bell;
	s->spin_us = p->spin_us;
	s->cpu = p->cpu;
	s->evict_batch = p->evict_batch;
	rc = fm_ring_init(&s->data, p->ring_slots);
	if (rc == 0)
		rc = fm_ring_init(&s->ctl, 64);
	if (rc == 0)
		rc = fm_ring_init(&s->reply, 256);
	if (rc == 0)
		rc = fm_doorbell_init(&s->bell);
	if (rc < 0)
		goto fail;
	rc = -ENOMEM;
	s->policy = policy_create((enum fm_policy_kind)p->policy, 0, budget);
	s->bounce = aligned_alloc(FM_PAGE_SIZE, FM_PAGE_SIZE);
	s->ev_keys = calloc(s->evict_batch, sizeof(*s->ev_keys));
	s->ev_pages = calloc(s->evict_batch, sizeof(*s->ev_pages));
	s->ev_results = calloc(s->evict_batch, sizeof(*s->ev_results));
	s->ev_put_results = calloc(s->evict_batch, sizeof(*s->ev_put_results));
	s->ev_ids = calloc(s->evict_batch, sizeof(*s->ev_ids));
	s->ev_hash = calloc(s->evict_batch, sizeof(*s->ev_hash));
	s->ev_rc = calloc(s->evict_batch, sizeof(*s->ev_rc));
	s->ev_idx = calloc(s->evict_batch, sizeof(*s->ev_idx));
	s->evict_backoff_ns = EVICT_BACKOFF_NS;
	if (!s->policy || !s->bounce || !s->ev_keys || !s->ev_pages || !s->ev_results || !s->ev_put_results ||
	    !s->ev_ids || !s->ev_hash || !s->ev_rc || !s->ev_idx)
		goto fail;
	s->kv = kv_open(&p->kv, idx);
	if (!s->kv) {
		rc = -errno;
		goto fail;
	}
	s->kv_keeps = kv_keeps_after_get(s->kv);
	sc_init(&s->sc, s->kv_keeps);
	return s;
fail:
	shard_destroy(s);
	errno = -rc;
	return NULL;
}

int shard_start(struct shard *s)
{
	int rc = pthread_create(&s->thread, NULL, shard_main, s);

	if (rc)
		return -rc;
	s->started = true;
	return 0;
}

void shard_destroy(struct shard *s)
{
	if (!s)
		return;
	if (s->started)
		pthread_join(s->thread, NULL);
	for (unsigned i = 0; i < FM_MAX_REGIONS; i++) {
		if (s->regions[i]) {
			region_free_pages(s, s->regions[i]);
			free(s->regions[i]);
		}
	}
	sc_destroy(&s->sc);
	kv_close(s->kv);
	policy_destroy(s->policy);
	fm_ring_destroy(&s->data);
	fm_ring_destroy(&s->ctl);
	fm_ring_destroy(&s->reply);
	fm_doorbell_destroy(&s->bell);
	pt_destroy(&s->pt);
	free(s->bounce);
	free(s->ev_keys);
	free(s->ev_pages);
	free(s->ev_results);
	free(s->ev_put_results);
	free(s->ev_ids);
	free(s->ev_hash);
	free(s->ev_rc);
	free(s->ev_idx);
	free(s);
}
