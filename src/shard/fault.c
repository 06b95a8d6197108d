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
		if (rc == -ESTALE)
			shard_undo_install(s, sr, page);
		if (rc == -ECANCELED || rc == -ESTALE)
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

/* The single-fault path: serve one fault message on its own. */
static void handle_one(struct shard *s, const struct fm_msg *m)
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

int shard_getbuf_init(struct shard_getbuf *g, uint32_t n)
{
	g->pages = aligned_alloc(FM_PAGE_SIZE, (size_t)n * FM_PAGE_SIZE);
	g->ptrs = calloc(n, sizeof(*g->ptrs));
	g->keys = calloc(n, sizeof(*g->keys));
	g->res = calloc(n, sizeof(*g->res));
	if (!g->pages || !g->ptrs || !g->keys || !g->res) {
		shard_getbuf_free(g);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++)
		g->ptrs[i] = g->pages + (size_t)i * FM_PAGE_SIZE;
	return 0;
}

void shard_getbuf_free(struct shard_getbuf *g)
{
	free(g->pages);
	free(g->ptrs);
	free(g->keys);
	free(g->res);
	*g = (struct shard_getbuf){ 0 };
}

/* ---- fault batching (memory.fault_batch) ----
 *
 * A fault on a stored page costs a store round trip. When more faults on
 * stored pages already wait in the ring right behind it, the shard reads
 * them all with one kv_mget (memcached: one multi-get per server; local: one
 * batched lookup) and then serves every message it took, in ring order.
 * The look-ahead takes only a run of FAULT messages: it stops at the first
 * message of any other type (REMOVE, UNMAP, region add/del), so nothing
 * overtakes a discard. Faults in the run that are not on stored pages, or
 * repeat a page already in the batch, are taken too and served by the
 * single path at their turn. A page whose batched read failed, or whose
 * copy fails its content check, or whose state changed meanwhile (a
 * prefetch of an earlier fault installed it), is served by the single path
 * too, exactly as without batching: retries, parking, poisoning; never a
 * zero page for a stored page. */
struct shard_fault_batch {
	uint32_t max;            /* faults on stored pages read with the first */
	uint32_t window;         /* messages looked at behind the first */
	struct shard_getbuf g;   /* max + 1 pages */
	struct fm_msg *msgs;     /* window + 1: the first, then those taken */
	int32_t *item;           /* per message: its index in keys, or -1 */
};

int shard_fault_batch_setup(struct shard *s, uint32_t max)
{
	struct shard_fault_batch *b;

	s->fb = NULL;
	if (max == 0)
		return 0;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	s->fb = b;
	b->max = max;
	/* Faults on other pages may sit between the stored ones: look at
	 * twice as many messages as the batch takes. */
	b->window = 2 * max;
	b->msgs = calloc(b->window + 1, sizeof(*b->msgs));
	b->item = calloc(b->window + 1, sizeof(*b->item));
	if (shard_getbuf_init(&b->g, max + 1) < 0 || !b->msgs || !b->item) {
		shard_fault_batch_teardown(s);
		return -ENOMEM;
	}
	return 0;
}

void shard_fault_batch_teardown(struct shard *s)
{
	struct shard_fault_batch *b = s->fb;

	if (!b)
		return;
	shard_getbuf_free(&b->g);
	free(b->msgs);
	free(b->item);
	free(b);
	s->fb = NULL;
}

/* The region of a fault on a page in state PS_STORED (a MISSING fault: a
 * write-protect fault never fetches), or NULL. */
static struct shard_region *stored_fault(struct shard *s, const struct fm_msg *m)
{
	struct uffd_region *r = m->fault.region;
	struct shard_region *sr = s->regions[r->slot];

	if (!sr || sr->r != r || m->fault.page >= r->npages || (m->flags & FM_FAULT_WP) ||
	    !pt_has_stripe(&s->pt, &sr->pt, m->fault.page))
		return NULL;
	return (s->pt.state[page_id(s, sr, m->fault.page)] & PS_MASK) == PS_STORED ? sr : NULL;
}

/* Serve fault message m from batch item k. False, changing nothing, when
 * the single path must serve it instead. */
static bool serve_batched(struct shard *s, const struct fm_msg *m, uint32_t k)
{
	struct shard_fault_batch *b = s->fb;
	struct shard_region *sr = stored_fault(s, m);
	uint64_t page = m->fault.page, addr, want;
	struct uffd_region *r;
	uint32_t id;
	int rc;

	if (!sr || b->g.res[k] != 0)
		return false;
	r = sr->r;
	id = page_id(s, sr, page);
	if (sc_synced_hash(&s->sc, id, &want) && page_hash(&sr->hkey, b->g.ptrs[k]) != want)
		return false;   /* a stale or corrupt copy: the single path tries the others */
	s->st.faults++;
	sr->faults++;
	addr = sr->base + (page << FM_PAGE_SHIFT);
	/* The same fence as serve_fault's: never over a discard not handled yet. */
	rc = uffd_copy_unless_discard(r->uffd, &s->discards_routed, s->discards_handled, addr,
				      b->g.ptrs[k], FM_PAGE_SIZE, &s->st.eagain_retries);
	if (rc == -ESTALE)
		shard_undo_install(s, sr, page);
	if (rc == -ECANCELED || rc == -ESTALE) {
		/* As serve_fault's "discarding": install nothing, wake the
		 * thread, its refault comes behind the discard. */
		s->st.discard_waits++;
		rc = uffd_wake(r->uffd, addr, FM_PAGE_SIZE);
		if (rc == 0) {
			s->st.dup_faults++;
			fm_hist_add(&s->st.fault_ns, fm_now_ns() - m->fault.read_ns);
			return true;
		}
	} else if (rc == -EEXIST) {
		rc = uffd_wake(r->uffd, addr, FM_PAGE_SIZE);
	}
	if (rc < 0) {
		shard_note_ioctl_error(s, sr, "serving a fault", rc, page);
		s->st.fault_errors++;
		fm_hist_add(&s->st.fault_ns, fm_now_ns() - m->fault.read_ns);
		return true;
	}
	make_resident(s, sr, id);
	if (!s->kv_keeps && kv_del(s->kv, (struct kv_key){ r->id, page }) < 0)
		s->st.store_errors++;
	s->st.fetches++;
	s->st.batched_get_faults++;
	fm_hist_add(&s->st.fault_ns, fm_now_ns() - m->fault.read_ns);
	if (s->pf)
		prefetch_after_fault(s, sr, page);
	return true;
}

/* m is a fault on a stored page: take the faults queued behind it and read
 * the stored pages among them with one kv_mget. False when there were none
 * (nothing taken: the caller serves m alone). */
static bool fault_batch(struct shard *s, const struct fm_msg *m)
{
	struct shard_fault_batch *b = s->fb;
	uint32_t n = 1, last = 0;
	uint64_t t0, per;

	b->msgs[0] = *m;
	b->item[0] = 0;
	b->g.keys[0] = (struct kv_key){ m->fault.region->id, m->fault.page };
	for (uint32_t i = 1; i <= b->window && n <= b->max; i++) {
		struct fm_msg *q = &b->msgs[i];
		bool dup = false;

		if (!fm_ring_peek(&s->data, i - 1, q) || q->type != FM_MSG_FAULT)
			break;   /* never past a discard, an unmap or a region message */
		b->item[i] = -1;
		if (!stored_fault(s, q))
			continue;
		for (uint32_t k = 0; k < n && !dup; k++)
			dup = b->g.keys[k].region == q->fault.region->id && b->g.keys[k].page == q->fault.page;
		if (dup)
			continue;   /* a second thread on the page: woken at its turn */
		b->item[i] = (int32_t)n;
		b->g.keys[n++] = (struct kv_key){ q->fault.region->id, q->fault.page };
		last = i;
	}
	if (n < 2)
		return false;
	/* Take what was looked at, up to the last page in the batch; what
	 * follows stays queued. The ring is ours to pop: the same messages. */
	for (uint32_t i = 1; i <= last; i++) {
		struct fm_msg q;

		if (!fm_ring_pop(&s->data, &q)) {
			last = i - 1;   /* cannot happen: only this thread pops */
			break;
		}
	}
	t0 = fm_now_ns();
	kv_mget(s->kv, b->g.keys, b->g.ptrs, b->g.res, n);
	per = (fm_now_ns() - t0) / n;
	for (uint32_t k = 0; k < n; k++)
		fm_hist_add(&s->st.fetch_ns, per);
	s->st.fault_batches++;
	/* fault.before_install (tests): hold the installs after the read, as
	 * serve_fault does, so a discard can be routed meanwhile. */
	fm_failpoint_delay(FM_FP_FAULT_BEFORE_INSTALL);
	for (uint32_t i = 0; i <= last; i++)
		if (b->item[i] < 0 || !serve_batched(s, &b->msgs[i], (uint32_t)b->item[i]))
			handle_one(s, &b->msgs[i]);
	return true;
}

void shard_handle_fault(struct shard *s, const struct fm_msg *m)
{
	if (stored_fault(s, m)) {
		/* shard.fault_stall: faults pile up behind this one (tests). */
		if (unlikely(fm_failpoint(FM_FP_SHARD_FAULT_STALL)))
			usleep(20000);
		if (s->fb && fault_batch(s, m))
			return;
	}
	handle_one(s, m);
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

void shard_undo_install(struct shard *s, struct shard_region *sr, uint64_t page)
{
	s->st.discard_undone++;
	if (fallocate(sr->r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)(page << FM_PAGE_SHIFT), FM_PAGE_SIZE) < 0) {
		s->st.punch_errors++;
		fm_log_ratelimited(FM_LOG_ERROR,
				   "shard %u: cannot punch region %llu page %llu out after a "
				   "discard raced its install (%s): it may keep its old data",
				   s->idx, (unsigned long long)sr->r->id, (unsigned long long)page,
				   strerror(errno));
	}
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
