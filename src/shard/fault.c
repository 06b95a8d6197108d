/* shard/fault: serving faults (fetch, zero-fill, poison), the ranges a
 * client discards or unmaps, and handing pages back when a region goes. */
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
#include "shard/prefetch.h"
#include "shard/storecopy.h"
#include "uffd/uffd.h"

/* Log an ioctl failure once per call site; ESRCH (the client's mm is gone)
 * is expected while a dead client's region waits to be torn down. */
void shard_note_ioctl_error(struct shard *s, struct shard_region *sr, const char *what, int rc,
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
	shard_set_state(s, sr, id, PS_RESIDENT);
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
 * value is refused, never installed. With try_only the store never waits
 * on a server that is down: -EAGAIN says ask again later (kv_get_try). */
static int fetch(struct shard *s, struct shard_region *sr, uint64_t page, bool try_only)
{
	struct kv_key k = { sr->r->id, page };
	struct fetch_check chk = { &sr->hkey, 0 };
	uint64_t t0 = fm_now_ns();
	bool synced = sc_synced_hash(&s->sc, page_id(s, sr, page), &chk.want);
	int rc = try_only ? kv_get_try(s->kv, k, s->bounce, synced ? fetch_ok : NULL, &chk)
		 : synced ? kv_get_checked(s->kv, k, s->bounce, fetch_ok, &chk)
			  : kv_get(s->kv, k, s->bounce);

	if (rc != -EAGAIN)   /* a parked fault's tries found nothing out */
		fm_hist_add(&s->st.fetch_ns, fm_now_ns() - t0);
	return rc;
}

/* Never a silent zero: a page we stored and cannot get back is an error
 * the client must see, as SIGBUS on every touch. */
static int poison(struct shard *s, struct shard_region *sr, uint32_t id, uint64_t page, int why)
{
	s->st.store_errors++;
	s->st.poisoned++;
	shard_set_state(s, sr, id, PS_POISONED);
	FM_ERR("shard %u: region %llu page %llu lost by the store (%s): poisoned", s->idx,
	       (unsigned long long)sr->r->id, (unsigned long long)page, strerror(-why));
	return uffd_poison(sr->r->uffd, sr->base + (page << FM_PAGE_SHIFT), FM_PAGE_SIZE,
			   &s->st.eagain_retries);
}

/* Serve one fault. Returns the outcome counter to bump; every fault ends in
 * exactly one (see the invariant in shard.h). With may_park, a fetch whose
 * store server is down returns &s->st.parked instead, changing nothing:
 * the caller parks the fault and serves it again later. */
static uint64_t *serve_fault(struct shard *s, struct shard_region *sr, uint64_t page, uint32_t flags,
			     bool may_park)
{
	struct uffd_region *r = sr->r;
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
			prefetch_hit(s, id);   /* a thread waited on a prefetched page */
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
		rc = fetch(s, sr, page, may_park);
		if (rc == -EAGAIN && may_park)
			return &s->st.parked;
		fm_failpoint_delay(FM_FP_FAULT_BEFORE_INSTALL);
		if (rc < 0) {
			if (shard_discard_pending(s))
				goto discarding;   /* no SIGBUS for a page just dropped */
			rc = poison(s, sr, id, page, rc);
			if (rc < 0 && rc != -EEXIST)
				goto fail;
			return &s->st.poison_faults;
		}
		rc = uffd_copy_unless_discard(r->uffd, &s->discards_routed, s->discards_handled, addr,
					      s->bounce, FM_PAGE_SIZE, &s->st.eagain_retries);
		if (rc == -ECANCELED)
			goto discarding;
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
	shard_note_ioctl_error(s, sr, "serving a fault", rc, page);
	return &s->st.fault_errors;
discarding:
	/* The dispatcher read a discard for us that we have not handled: the
	 * client may have dropped this page since we fetched it, and the
	 * fetched data (or a poison) installed now would outlive the discard.
	 * Install nothing and wake the thread: its access faults again, and
	 * that fault is read after the discard, so it reaches us behind it and
	 * is served from the state the discard leaves (docs/design.md,
	 * "Prefetch", Discards). */
	s->st.discard_waits++;
	rc = uffd_wake(r->uffd, addr, FM_PAGE_SIZE);
	if (rc < 0)
		goto fail;
	return &s->st.dup_faults;
}

/* Parked faults: their page's store server is down or did not answer, and
 * the store has not given up on it (kv_get_try). Each waits here, its page
 * still missing in the client (never a zero page, never SIGBUS for this),
 * while the shard goes on serving every other fault; shard_retry_parked
 * serves them again every SHARD_PARK_RETRY_NS. Once the store gives up on
 * the server (store.memcached.retries failures in a row) the page is
 * poisoned as before. A fault whose region went away meanwhile is dropped:
 * its thread was woken when the range was unregistered. */
struct shard_parked {
	struct uffd_region *r;   /* compared, never dereferenced: it may be freed */
	uint64_t region_id;      /* with r: the same region, not one at its address */
	uint32_t slot;
	uint64_t page;
	uint64_t read_ns;
	uint32_t flags;
};

static bool park(struct shard *s, struct shard_region *sr, const struct fm_msg *m)
{
	if (!s->park) {
		s->park = calloc(SHARD_PARK_MAX, sizeof(*s->park));
		if (!s->park)
			return false;
	}
	if (s->npark == SHARD_PARK_MAX)
		return false;
	s->park[s->npark++] = (struct shard_parked){
		.r = sr->r, .region_id = sr->r->id, .slot = sr->r->slot, .page = m->fault.page,
		.read_ns = m->fault.read_ns, .flags = m->flags,
	};
	if (s->npark == 1)
		s->park_due = fm_now_ns() + SHARD_PARK_RETRY_NS;
	return true;
}

void shard_handle_fault(struct shard *s, const struct fm_msg *m)
{
	struct uffd_region *r = m->fault.region;
	struct shard_region *sr = s->regions[r->slot];
	uint64_t *out;

	if (unlikely(!sr || sr->r != r || m->fault.page >= r->npages)) {
		s->st.stale_faults++;
		return;
	}

	s->st.faults++;
	sr->faults++;
	out = serve_fault(s, sr, m->fault.page, m->flags, s->npark < SHARD_PARK_MAX);
	/* No room to park (or no memory): wait for the store, as before. */
	if (out == &s->st.parked && !park(s, sr, m))
		out = serve_fault(s, sr, m->fault.page, m->flags, false);
	(*out)++;
	if (out == &s->st.parked)
		return;
	fm_hist_add(&s->st.fault_ns, fm_now_ns() - m->fault.read_ns);
	/* After the faulting thread is woken: fetch ahead of its stream. */
	if (s->pf && (out == &s->st.fetches || out == &s->st.zero_fills))
		prefetch_after_fault(s, sr, m->fault.page);
}

void shard_retry_parked(struct shard *s, bool wait)
{
	uint32_t keep = 0, n = s->npark;

	if (!n || (!wait && fm_now_ns() < s->park_due))
		return;
	for (uint32_t i = 0; i < n; i++) {
		struct shard_parked p = s->park[i];
		struct shard_region *sr = s->regions[p.slot];
		uint64_t *out;

		if (!sr || sr->r != p.r || sr->r->id != p.region_id) {
			s->st.fault_errors++;   /* counted in faults already */
			continue;
		}
		/* wait (a stopping shard): the store's own retries decide. */
		out = serve_fault(s, sr, p.page, p.flags, !wait);
		if (out == &s->st.parked) {
			s->park[keep++] = p;
			continue;
		}
		(*out)++;
		fm_hist_add(&s->st.fault_ns, fm_now_ns() - p.read_ns);
	}
	s->npark = keep;
	s->park_due = fm_now_ns() + SHARD_PARK_RETRY_NS;
}

/* REMOVE: the client discarded [first, first+n) with madvise. UNMAP: the
 * range is gone from the client. Either way stored copies are dropped and
 * the pages read as zero next time. A resident page that is still in the
 * memfd after a REMOVE keeps its contents (MADV_DONTNEED on a shared mapping
 * only zaps page tables); punching it here would race with the client's next
 * write, so only the client may free it (fm_region_discard punches first). */
void shard_handle_range(struct shard *s, const struct fm_msg *m)
{
	struct uffd_region *r = m->range.region;
	struct shard_region *sr = s->regions[r->slot];
	uint64_t first = m->range.first, end = m->range.first + m->range.count;
	bool unmap = m->type == FM_MSG_UNMAP;

	/* Counted when done, whatever it was for: installs of stored data
	 * wait for this (shard_discard_pending). */
	if (!sr || sr->r != r) {
		s->discards_handled++;
		return;
	}
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
		shard_mark_stored(s, sr, page, false);
		shard_drop_copy(s, sr, id, page, st);
		policy_drop(s->policy, id);
		shard_set_state(s, sr, id, PS_NONE);
		s->st.discarded++;
	}
	s->discards_handled++;
}

uint64_t *shard_discards_routed(struct shard *s)
{
	return &s->discards_routed;
}


/* Hand every stored page of a region back to its client (copied in), before
 * forgetting a region that a live client still maps, so it loses no data.
 * Zero and untouched pages are left alone: the dispatcher unregisters the
 * range next, which wakes every waiting fault, and from then on the kernel
 * fills holes with zeros itself, which is exactly their content. (Filling
 * them here cost a zero-page per page of the region, and grew the client.) */
void shard_restore_region(struct shard *s, struct shard_region *sr)
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
			rc = fetch(s, sr, page, false);
			rc = rc < 0 ? poison(s, sr, id, page, rc)
				    : uffd_copy(sr->r->uffd, addr, s->bounce, FM_PAGE_SIZE,
						&s->st.eagain_retries);
			if (rc == -ESRCH)
				return;   /* the client is gone: nothing to hand back */
			if (rc == 0 || rc == -EEXIST) {
				s->st.restored++;
			} else {
				s->st.restore_errors++;
				shard_note_ioctl_error(s, sr, "restoring a page", rc, page);
			}
		}
	}
}
