#include "shard/shard_priv.h"

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
#define SHARD_BACKOFF_POLL_MS 10   /* ... or this often while an eviction backs off */
#define SHARD_PARKED_POLL_MS 1     /* ... or this often while replies wait for room */
#define SHARD_EXIT_FLUSH_TRIES 300 /* fm_ring_full_wait steps: about 0.3 s */
#define SHARD_PARK_POLL_MS 1       /* ... or this often while faults are parked */
#define SHARD_CTL_SLOTS 64      /* control requests: a few in flight at most */
#define SHARD_REPLY_SLOTS 256   /* replies, region acks included */

size_t shard_bytes_per_page(void)
{
	return sizeof(uint8_t) + policy_bytes_per_page();
}

struct fm_ring *shard_data_ring(struct shard *s) { return &s->data; }
struct fm_ring *shard_ctl_ring(struct shard *s) { return &s->ctl; }
struct fm_ring *shard_reply_ring(struct shard *s) { return &s->reply; }
struct fm_doorbell *shard_doorbell(struct shard *s) { return &s->bell; }
unsigned shard_index(const struct shard *s) { return s->idx; }

/* Push parked replies, oldest first, while the reply ring has room. */
static void reply_flush(struct shard *s)
{
	uint32_t done = 0;

	while (done < s->nparked && fm_ring_push(&s->reply, &s->parked[done]))
		done++;
	if (done == 0)
		return;
	s->nparked -= done;
	memmove(s->parked, s->parked + done, (size_t)s->nparked * sizeof(*s->parked));
	if (s->reply_bell)
		fm_doorbell_ring(s->reply_bell);
}

static void reply(struct shard *s, uint32_t what, int64_t result, uint64_t detail, uint64_t request)
{
	struct fm_msg m = {
		.type = FM_MSG_DONE, .shard = (uint16_t)s->idx, .flags = what,
		.done = { .result = result, .detail = detail, .request = request },
	};

	/* Behind parked replies or on a full ring, park it: the shard goes on
	 * serving faults and the loop sends it once the control plane has
	 * drained some (in order). Never dropped: an acknowledgement lost
	 * would leave a region attaching or a request waiting for ever. */
	if (s->nparked || !fm_ring_push(&s->reply, &m)) {
		if (s->nparked == s->parked_cap) {
			uint32_t cap = s->parked_cap ? 2 * s->parked_cap : 64;
			struct fm_msg *p = realloc(s->parked, (size_t)cap * sizeof(*p));

			if (!p) {
				/* No memory to park: wait for room as before. */
				for (unsigned attempt = 0; s->nparked; ) {
					reply_flush(s);
					if (s->nparked)
						fm_ring_full_wait(&attempt);
				}
				for (unsigned attempt = 0; !fm_ring_push(&s->reply, &m);)
					fm_ring_full_wait(&attempt);
				goto rung;
			}
			s->parked = p;
			s->parked_cap = cap;
		}
		s->parked[s->nparked++] = m;
		s->st.replies_parked++;
		reply_flush(s);
		return;
	}
rung:
	if (s->reply_bell)
		fm_doorbell_ring(s->reply_bell);
}

/* ---- region lifecycle ---- */

/* Every state change goes through here so the per-shard and per-region
 * counts stay exact. The policy is told separately. */
void shard_set_state(struct shard *s, struct shard_region *sr, uint32_t id, uint8_t to)
{
	uint8_t from = s->pt.state[id] & PS_MASK;

	if (from == to)
		return;
	if (s->pt.state[id] & PS_PREFETCHED)
		s->st.prefetch_wasted++;   /* leaves residency never used */
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
		/* Exact, unlike a reader sampling `resident` between turns:
		 * tests check the budget against it. */
		if (s->resident > s->st.resident_max)
			s->st.resident_max = s->resident;
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
void shard_drop_copy(struct shard *s, struct shard_region *sr, uint32_t id, uint64_t page,
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

/* Drop every page of the region: stored copies deleted (unless the control
 * plane keeps them for a later re-adoption), policy forgotten. */
static void region_free_pages(struct shard *s, struct shard_region *sr, bool drop)
{
	for (uint64_t ls = 0; ls < sr->pt.nstripes; ls++) {
		uint32_t c = sr->pt.chunk[ls];
		uint64_t first = s->pt.owner[c].first_page;

		if (c == 0)
			continue;   /* never touched: nothing to drop */
		for (uint32_t off = 0; off < FM_STRIPE_PAGES; off++) {
			uint32_t id = (c << FM_STRIPE_SHIFT) | off;
			uint8_t st = s->pt.state[id] & PS_MASK;

			if (drop)
				shard_drop_copy(s, sr, id, first + off, st);
			if (st != PS_NONE)
				policy_drop(s->policy, id);
			shard_set_state(s, sr, id, PS_NONE);
		}
		sc_drop_chunk(&s->sc, c);
	}
	pt_region_del(&s->pt, &sr->pt);
}

/* Give the stripe of `page` its page state (as a first touch does). */
static int adopt_stripe_state(struct shard *s, struct shard_region *sr, uint64_t page)
{
	int rc;

	if (pt_has_stripe(&s->pt, &sr->pt, page))
		return 0;
	if ((rc = pt_stripe_alloc(&s->pt, &sr->pt, page)) < 0 ||
	    (rc = policy_grow(s->policy, pt_capacity(&s->pt))) < 0 ||
	    (rc = sc_reserve(&s->sc, s->pt.cap)) < 0)
		return rc;
	return 0;
}

static int adopt_page(struct shard *s, struct shard_region *sr, uint64_t page, uint8_t st)
{
	uint32_t id;
	int rc = adopt_stripe_state(s, sr, page);

	if (rc < 0)
		return rc;
	id = page_id(s, sr, page);
	shard_set_state(s, sr, id, st);
	if (st != PS_RESIDENT)
		return 0;
	policy_admit(s->policy, id);
	/* A keeping store may still hold an older copy of a resident page:
	 * recorded as unsynced, it is deleted with the region and rewritten
	 * (never skipped as clean) at its next eviction. */
	if (s->kv_keeps && fm_state_bit(sr->r->state_bits, page) && sc_prepare(&s->sc, id) == 0)
		sc_set_unsynced(&s->sc, id);
	return 0;
}

/* Re-adoption after a daemon restart: rebuild the page state of this
 * shard's stripes from what survived the crash. A page present in the memfd
 * is RESIDENT (whatever its bit says: presence wins); an absent page whose
 * bit is set is STORED; an absent page with a clear bit reads as zero.
 * SEEK_DATA/SEEK_HOLE on the shmem memfd count swapped-out pages as data,
 * where mincore on our view would call them absent. Then the write-protect
 * an interrupted eviction left is cleared and every waiter woken: blocked
 * threads refault into events the new dispatcher reads. 0 or -errno. */
static int region_rebuild(struct shard *s, struct shard_region *sr)
{
	struct uffd_region *r = sr->r;
	int rc;

	(void)fm_failpoint(FM_FP_READOPT_REBUILD);
	for (uint64_t ls = 0; ls < sr->pt.nstripes; ls++) {
		uint64_t first = pt_stripe_first_page(&s->pt, &sr->pt, ls);
		uint64_t end = FM_MIN(first + FM_STRIPE_PAGES, r->npages), page = first;
		uint64_t addr = r->base + (first << FM_PAGE_SHIFT), len = (end - first) << FM_PAGE_SHIFT;

		if (first >= r->npages)
			break;
		while (page < end) {
			off_t data = lseek(r->memfd, (off_t)(page << FM_PAGE_SHIFT), SEEK_DATA);
			uint64_t dpage = data < 0 ? end : FM_MIN((uint64_t)data >> FM_PAGE_SHIFT, end);
			uint64_t hpage;
			off_t hole;

			for (; page < dpage; page++)
				if (fm_state_bit(r->state_bits, page) &&
				    (rc = adopt_page(s, sr, page, PS_STORED)) < 0)
					return rc;
			if (page >= end)
				break;
			hole = lseek(r->memfd, (off_t)(page << FM_PAGE_SHIFT), SEEK_HOLE);
			hpage = hole < 0 ? end
					 : FM_MIN(((uint64_t)hole + FM_PAGE_SIZE - 1) >> FM_PAGE_SHIFT, end);
			if (hpage <= page)
				hpage = page + 1;
			for (; page < hpage; page++)
				if ((rc = adopt_page(s, sr, page, PS_RESIDENT)) < 0)
					return rc;
		}
		rc = uffd_writeprotect(r->uffd, addr, len, false, &s->st.eagain_retries);
		if (rc < 0 && rc != -ESRCH)
			shard_note_ioctl_error(s, sr, "clearing write-protect at re-adoption", rc, first);
		uffd_wake(r->uffd, addr, len);
	}
	return 0;
}

/* Forget a region this shard could not adopt, deleting nothing. */
static void region_forget(struct shard *s, struct shard_region *sr)
{
	region_free_pages(s, sr, false);
	s->regions[sr->r->slot] = NULL;
	free(sr);
}

static int region_add(struct shard *s, struct uffd_region *r)
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
	rc = pt_region_attach(&s->pt, &sr->pt, fm_region_rot(r->id), r->npages);
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
	if (r->adopt && r->state_bits && (rc = region_rebuild(s, sr)) < 0) {
		/* Out of page-state memory: the control plane detaches the
		 * region, keeping every stored copy (keep_copies). */
		region_forget(s, sr);
		return rc;
	}
	return 0;
}


static void region_del(struct shard *s, struct uffd_region *r, bool restore)
{
	struct shard_region *sr = r->slot < FM_MAX_REGIONS ? s->regions[r->slot] : NULL;

	if (!sr || sr->r != r)
		return;
	if (restore)
		shard_restore_region(s, sr);
	if (sr->budget != UINT64_MAX)
		s->capped_regions--;
	region_free_pages(s, sr, !r->keep_copies);
	s->regions[r->slot] = NULL;
	free(sr);
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
	s->st.store_pages = ks.pages;
	s->st.store_encoded_bytes = ks.blob_bytes;
	s->st.store_ram_bytes = ks.ram_held_bytes;
	s->st.store_disk_pages = ks.disk_pages;
	s->st.store_disk_file_bytes = ks.disk_file_bytes;
	s->st.store_disk_live_bytes = ks.disk_live_bytes;
	s->st.store_corrupt = ks.corrupt;
	s->st.ring_depth = fm_ring_depth(&s->data);
	s->st.store_retries = ks.retries;
	s->st.store_servers = ks.servers;
	s->st.store_down_servers = ks.servers_down;
	memcpy(out, &s->st, sizeof(*out));
}

/* Delete an orphan region's copies from this shard's store. Pages deleted,
 * or the first error but -ENOENT. */
static int64_t orphan_drop(struct shard *s, const struct shard_orphan *o)
{
	int64_t n = kv_region_delete(s->kv, o->region_id);

	if (n != -EOPNOTSUPP)
		return n;
	n = 0;
	for (uint64_t page = 0; page < o->npages; page++) {
		int rc;

		if (fm_stripe_shard(fm_region_rot(o->region_id), page, s->nshards) != s->idx) {
			page |= FM_STRIPE_PAGES - 1;
			continue;
		}
		if (!fm_state_bit(o->bits, page))
			continue;
		rc = kv_del(s->kv, (struct kv_key){ o->region_id, page });
		if (rc < 0 && rc != -ENOENT)
			return rc;
		n += rc == 0;
	}
	return n;
}

static void handle_ctl(struct shard *s, const struct fm_msg *m)
{
	switch (m->type) {
	case FM_MSG_STATS:
		fill_stats(s, m->fill.out);
		reply(s, m->type, 0, 0, m->fill.request);
		break;
	case FM_MSG_SET_BUDGET:
		s->budget = m->pages.pages;
		policy_set_budget(s->policy, s->budget);
		s->evict_backoff_until = 0;
		shard_enforce_budget(s);
		s->st.resident_max = s->resident;   /* the high-water mark of this budget */
		reply(s, m->type, s->resident <= s->budget ? 0 : -ENOSPC, s->resident, m->pages.request);
		break;
	case FM_MSG_EVICT:
		reply(s, m->type, 0, shard_evict(s, m->pages.pages, NULL), m->pages.request);
		break;
	case FM_MSG_RESET:
		reset_stats(s, m->reset.what);
		reply(s, m->type, 0, 0, m->reset.request);
		break;
	case FM_MSG_REGION_STATS:
		fill_region_stats(s, m->fill.out);
		reply(s, m->type, 0, 0, m->fill.request);
		break;
	case FM_MSG_REGION_BUDGET: {
		struct uffd_region *r = m->region_budget.region;
		struct shard_region *sr = r->slot < FM_MAX_REGIONS ? s->regions[r->slot] : NULL;

		shard_region_budget_apply(s, r, m->region_budget.pages);
		reply(s, m->type, sr && sr->resident > sr->budget ? -ENOSPC : 0,
		      sr ? sr->resident : 0, m->region_budget.request);
		break;
	}
	case FM_MSG_SET_SERVERS:
		/* Between faults: this thread owns its store handle. */
	{
		int rc = kv_set_servers(s->kv, m->servers.list);

		free(m->servers.list);
		reply(s, m->type, rc, 0, m->servers.request);
		break;
	}
	case FM_MSG_ORPHAN_DROP: {
		int64_t n = orphan_drop(s, m->fill.out);

		reply(s, m->type, n < 0 ? n : 0, n < 0 ? 0 : (uint64_t)n, m->fill.request);
		break;
	}
	case FM_MSG_DRAIN: {
		uint64_t moved = 0, errors = s->st.drain_errors;
		int rc = shard_drain_step(s, m->flags, m->pages.pages, &moved);

		errors = s->st.drain_errors - errors;
		reply(s, m->type, rc, (moved & 0xffffffffu) | errors << 32, m->pages.request);
		break;
	}
	case FM_MSG_STOP:
		s->stop = true;
		s->keep_copies = m->flags & FM_STOP_KEEP;
		reply(s, m->type, 0, 0, fm_msg_request(m));
		break;
	default:
		fm_log_once(FM_LOG_ERROR, "shard %u: unexpected control message %u", s->idx, m->type);
	}
}

static void handle_data(struct shard *s, const struct fm_msg *m)
{
	struct uffd_region *r = m->region.region;   /* REGION_ADD, REGION_DEL only */
	int rc;

	switch (m->type) {
	case FM_MSG_FAULT:
		shard_handle_fault(s, m);
		break;
	case FM_MSG_REMOVE:
	case FM_MSG_UNMAP:
		shard_handle_range(s, m);
		break;
	case FM_MSG_REGION_ADD:
		rc = region_add(s, r);
		reply(s, m->type, rc, (uint64_t)(uintptr_t)r, m->region.request);
		break;
	case FM_MSG_REGION_DEL:
		if (fm_failpoint(FM_FP_SHARD_DETACH_STALL))
			sleep(6);   /* a shard stuck past the shutdown deadline */
		region_del(s, r, m->flags & FM_DEL_RESTORE);
		reply(s, m->type, 0, (uint64_t)(uintptr_t)r, m->region.request);
		break;
	default:
		fm_log_once(FM_LOG_ERROR, "shard %u: unexpected data message %u", s->idx, m->type);
	}
}

/* The idle spin (shards.spin_us) runs only while faults keep coming: after
 * SHARD_SPIN_MISSES pauses in a row longer than the spin, an idle shard
 * sleeps on its doorbell at once, and the first pause short enough for the
 * spin to have caught it turns the spin back on. A pause ends when the
 * dispatcher read the message that ended it (a fault's read_ns), not when
 * the shard noticed it, so a wake-up's own latency does not count. (An
 * average of the gaps, tried first, slept twice as often in a storm, at a
 * higher p50: one descheduled client thread cut the spin for several
 * faults.) */
#define SHARD_SPIN_MISSES 2

static void note_gap(struct shard *s, uint64_t gap_ns)
{
	if (gap_ns <= (uint64_t)s->spin_us * 1000)
		s->spin_misses = 0;
	else if (s->spin_misses < SHARD_SPIN_MISSES)
		s->spin_misses++;
}

static uint64_t spin_window_ns(const struct shard *s)
{
	return s->spin_misses >= SHARD_SPIN_MISSES ? 0 : (uint64_t)s->spin_us * 1000;
}

static void *shard_main(void *arg)
{
	struct shard *s = arg;
	uint64_t idle_since = 0, window = 0;
	bool slept = false;
	char name[16];

	snprintf(name, sizeof(name), "fm-shard%u", s->idx);
	pthread_setname_np(pthread_self(), name);
	if (fm_pin_self(s->cpu) < 0)
		FM_WARN("shard %u: cannot pin to cpu %d", s->idx, s->cpu);

	while (!s->stop) {
		struct fm_msg m;
		unsigned n = 0;

		while (n < SHARD_BURST && fm_ring_pop(&s->data, &m)) {
			if (n == 0 && idle_since) {
				/* The pause this message ended. */
				uint64_t at = m.type == FM_MSG_FAULT && m.fault.read_ns > idle_since
						      ? m.fault.read_ns : fm_now_ns();

				note_gap(s, at - idle_since);
				s->st.spin_hits += !slept;
				idle_since = 0;
			}
			handle_data(s, &m);
			n++;
		}
		/* Control traffic is rare; it is served every turn but after
		 * the faults, so it never delays a burst already taken. */
		for (unsigned c = 0; c < 4 && fm_ring_pop(&s->ctl, &m); c++) {
			handle_ctl(s, &m);
			n++;
		}
		reply_flush(s);
		shard_retry_parked(s, false);
		shard_enforce_budget(s);
		/* Between bursts and while idle, refill the free reserve, one
		 * bounded round per turn so the next burst is not kept waiting. */
		if (shard_evict_ahead(s) > 0 && n == 0) {
			idle_since = 0;
			continue;
		}
		if (n > 0) {
			idle_since = 0;
			continue;
		}
		uint64_t now = fm_now_ns();
		if (idle_since == 0) {
			idle_since = now;
			window = spin_window_ns(s);
			slept = false;
		}
		if (now - idle_since < window) {
			/* Yield rather than pause: with 2 cores a shard shares
			 * its core with the dispatcher or the client. */
			sched_yield();
			continue;
		}
		/* Announce, re-check, sleep: a producer that pushed before our
		 * announcement is seen by the re-check; one after rings us. */
		fm_doorbell_announce(&s->bell, 1);
		if (fm_ring_depth(&s->data) == 0 && fm_ring_depth(&s->ctl) == 0 && !s->nparked) {
			s->st.sleeps++;
			slept = true;
			/* With a backed-off eviction pending, replies parked behind
			 * a full reply ring, or faults parked on a store server,
			 * wake to retry. */
			fm_doorbell_wait(&s->bell, s->nparked ? SHARD_PARKED_POLL_MS
					 : s->npark ? SHARD_PARK_POLL_MS
					 : s->evict_backoff_until ? SHARD_BACKOFF_POLL_MS
					 : SHARD_SLEEP_MS);
		}
		fm_doorbell_announce(&s->bell, 0);
		/* idle_since stays: the gap goes on until a message ends it. */
	}
	/* A graceful restart: serve what the dispatcher has already read from
	 * the uffds (the next daemon never sees those events again). Any
	 * eviction already ran to its end: shard_evict is synchronous. */
	if (s->keep_copies) {
		struct fm_msg m;

		while (fm_ring_pop(&s->data, &m))
			handle_data(s, &m);
		shard_retry_parked(s, true);
	}
	/* Replies still parked (STOP's own among them): the control plane
	 * may still be reading (a test, a stop that waits); give it a moment,
	 * bounded, since at shutdown nobody may drain the ring any more. */
	for (unsigned attempt = 0; s->nparked && attempt < SHARD_EXIT_FLUSH_TRIES;) {
		reply_flush(s);
		if (s->nparked)
			fm_ring_full_wait(&attempt);
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
	s->evict_run = FM_MAX(p->evict_run, 1);
	s->free_low_pct = p->free_low_pct;
	s->free_high_pct = FM_MAX(p->free_high_pct, p->free_low_pct);
	rc = fm_ring_init(&s->data, p->ring_slots);
	if (rc == 0)
		rc = fm_ring_init(&s->ctl, SHARD_CTL_SLOTS);
	if (rc == 0)
		rc = fm_ring_init(&s->reply, SHARD_REPLY_SLOTS);
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
	s->ev_runs = calloc(s->evict_batch, sizeof(*s->ev_runs));
	s->evict_backoff_ns = EVICT_BACKOFF_NS;
	if (!s->policy || !s->bounce || !s->ev_keys || !s->ev_pages || !s->ev_results || !s->ev_put_results ||
	    !s->ev_ids || !s->ev_hash || !s->ev_rc || !s->ev_idx || !s->ev_runs ||
	    prefetch_setup(s, p->prefetch_pages) < 0 || shard_fault_batch_setup(s, p->fault_batch) < 0)
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
			/* A --keep-clients stop keeps every copy for the next
			 * daemon: only our memory goes. */
			region_free_pages(s, s->regions[i],
					  !s->keep_copies && !s->regions[i]->r->keep_copies);
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
	prefetch_teardown(s);
	shard_fault_batch_teardown(s);
	free(s->park);
	free(s->ev_keys);
	free(s->ev_pages);
	free(s->ev_results);
	free(s->ev_put_results);
	free(s->ev_ids);
	free(s->ev_hash);
	free(s->ev_rc);
	free(s->ev_idx);
	free(s->ev_runs);
	free(s->parked);
	free(s);
}
