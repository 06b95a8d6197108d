/* shard/prefetch: the stream detector (pure) and the shard's fetch-ahead.
 * See prefetch.h for the design. */
#include "shard/prefetch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "base/failpoint.h"
#include "base/log.h"
#include "kv/kv.h"
#include "shard/page_hash.h"
#include "shard/shard_priv.h"
#include "uffd/uffd.h"

/* ---- the detector ---- */

bool pf_majority_of(const int64_t *hist, unsigned head, unsigned n, int64_t *delta)
{
	int64_t cand = 0;
	unsigned count = 0, votes = 0;

	/* Boyer-Moore: one pass for the candidate, one to check it. */
	for (unsigned i = 0; i < n; i++) {
		int64_t d = hist[(head + PF_HIST - 1 - i) % PF_HIST];

		if (count == 0) {
			cand = d;
			count = 1;
		} else {
			count += d == cand ? 1 : -1u;
		}
	}
	for (unsigned i = 0; i < n; i++)
		votes += hist[(head + PF_HIST - 1 - i) % PF_HIST] == cand;
	if (cand == 0 || votes * 2 <= n)
		return false;
	*delta = cand;
	return true;
}

bool pf_trend(const struct pf_stream *st, int64_t *delta)
{
	unsigned half = st->n < PF_HIST / 2 ? st->n : PF_HIST / 2;

	if (half < 2)
		return false;
	if (pf_majority_of(st->hist, st->head, half, delta))
		return true;
	return st->n > half && pf_majority_of(st->hist, st->head, st->n, delta);
}

static uint64_t dist(uint64_t a, uint64_t b)
{
	return a > b ? a - b : b - a;
}

struct pf_stream *pf_stream_for(struct pf_region *pr, uint64_t page)
{
	struct pf_stream *best = NULL, *lru = &pr->st[0];
	uint64_t best_d = UINT64_MAX;

	pr->clock++;
	for (unsigned i = 0; i < PF_STREAMS; i++) {
		struct pf_stream *st = &pr->st[i];
		uint64_t d, reach;

		if (st->used < lru->used)
			lru = st;
		if (!st->used)
			continue;
		d = dist(page, st->last);
		/* A stream that prefetched reaches past its window. */
		reach = PF_REACH + (uint64_t)st->span * (uint64_t)(st->delta < 0 ? -st->delta : st->delta);
		if (d <= reach && d < best_d) {
			best = st;
			best_d = d;
		}
	}
	if (!best) {
		best = lru;
		memset(best, 0, sizeof(*best));
		best->last = page;
	}
	best->used = pr->clock;
	return best;
}

uint32_t pf_on_fault(struct pf_stream *st, uint64_t page, uint32_t hits, uint32_t max_window,
		     int64_t *delta)
{
	int64_t d, trend;

	if (st->n == 0 && st->last == page && st->delta == 0 && st->window == 0) {
		/* a fresh stream: its first fault has no delta yet */
		st->window = PF_WINDOW_MIN;
		return 0;
	}
	/* A fault that walked through the previous prefetch continues the
	 * trend: count it as the trend's step, not as the jump over the
	 * window, or prefetching would erase the history it relies on. */
	d = hits && st->delta ? st->delta : (int64_t)(page - st->last);
	if (st->issued) {
		if (hits * 2 >= st->issued)
			st->window = st->window * 2 > max_window ? max_window : st->window * 2;
		else if (hits == 0)
			st->window /= 2;
	}
	st->issued = 0;
	st->span = 0;
	st->last = page;
	if (d != 0) {
		st->hist[st->head] = d;
		st->head = (uint8_t)((st->head + 1) % PF_HIST);
		if (st->n < PF_HIST)
			st->n++;
	}
	if (max_window == 0 || !pf_trend(st, &trend)) {
		st->delta = 0;
		return 0;
	}
	if (st->window < PF_WINDOW_MIN)
		st->window = PF_WINDOW_MIN;
	if (st->window > max_window)
		st->window = max_window;
	st->delta = trend;
	*delta = trend;
	return st->window;
}

bool pf_next(uint64_t p, int64_t delta, uint64_t npages, uint32_t rot, unsigned shard,
	     unsigned nshards, uint64_t *out)
{
	uint64_t ad = delta < 0 ? (uint64_t)-delta : (uint64_t)delta, q;

	if (delta == 0 || p >= npages)
		return false;
	if (delta > 0 ? ad >= npages - p : ad > p)
		return false;
	q = delta > 0 ? p + ad : p - ad;
	for (unsigned tries = 0; tries < 4; tries++) {
		uint64_t sq = q >> FM_STRIPE_SHIFT, k;
		unsigned own = fm_stripe_shard(rot, q, nshards);

		if (own == shard) {
			*out = q;
			return true;
		}
		/* Jump along the delta to the first page of our next stripe. */
		if (delta > 0) {
			uint64_t start = (sq + (shard + nshards - own) % nshards) << FM_STRIPE_SHIFT;

			if (start >= npages)
				return false;
			k = (start - q + ad - 1) / ad;
			if (k * ad >= npages - q)
				return false;
			q += k * ad;
		} else {
			uint64_t back = (own + nshards - shard) % nshards, end;

			if (back > sq)
				return false;
			end = ((sq - back + 1) << FM_STRIPE_SHIFT) - 1;
			k = (q - end + ad - 1) / ad;
			if (k * ad > q)
				return false;
			q -= k * ad;
		}
	}
	return false;
}

/* ---- the shard's fetch-ahead ---- */

struct pf_buffers {
	uint32_t max;
	struct shard_getbuf g;     /* max pages */
	uint64_t *page;            /* region page index of each */
	uint32_t *id;
};

int prefetch_setup(struct shard *s, uint32_t max_pages)
{
	struct pf_buffers *b;

	s->pf = NULL;
	if (max_pages == 0)
		return 0;
	if (max_pages > PF_MAX_PAGES)
		max_pages = PF_MAX_PAGES;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->max = max_pages;
	b->page = calloc(max_pages, sizeof(*b->page));
	b->id = calloc(max_pages, sizeof(*b->id));
	s->pf = b;
	if (shard_getbuf_init(&b->g, max_pages) < 0 || !b->page || !b->id) {
		prefetch_teardown(s);
		return -ENOMEM;
	}
	return 0;
}

void prefetch_teardown(struct shard *s)
{
	struct pf_buffers *b = s->pf;

	if (!b)
		return;
	shard_getbuf_free(&b->g);
	free(b->page);
	free(b->id);
	free(b);
	s->pf = NULL;
}

void prefetch_hit(struct shard *s, uint32_t id)
{
	if (s->pt.state[id] & PS_PREFETCHED) {
		s->pt.state[id] &= (uint8_t)~PS_PREFETCHED;
		s->st.prefetch_hits++;
	}
}

/* Pages of the previous prefetch that the stream walked through to reach
 * `page`: the span pages behind it along the trend. Resident pages are
 * invisible to the daemon, so this is inferred from the stream, which is
 * what a sequential or strided scan does. */
static uint32_t confirm_hits(struct shard *s, struct shard_region *sr, uint64_t page, int64_t delta,
			     uint32_t span)
{
	uint64_t p = page, q;
	uint32_t hits = 0;
	uint64_t before = s->st.prefetch_hits;

	for (uint32_t i = 0; i < span; i++) {
		if (!pf_next(p, -delta, sr->pt.npages, sr->pt.rot, s->idx, s->nshards, &q))
			break;
		p = q;
		if (pt_has_stripe(&s->pt, &sr->pt, q))
			prefetch_hit(s, page_id(s, sr, q));
	}
	hits = (uint32_t)(s->st.prefetch_hits - before);
	return hits;
}

static void install(struct shard *s, struct shard_region *sr, uint32_t id)
{
	shard_set_state(s, sr, id, PS_RESIDENT);
	policy_admit(s->policy, id);
}

/* The page is in the client now (installed, or found there): the fault
 * path's bookkeeping, with the flag that counts it until it is used. */
static void installed(struct shard *s, struct shard_region *sr, uint32_t id, uint64_t page,
		      bool ours, bool stored)
{
	install(s, sr, id);
	if (ours) {
		s->pt.state[id] |= PS_PREFETCHED;
		s->st.prefetched++;
	}
	if (stored && !s->kv_keeps && kv_del(s->kv, (struct kv_key){ sr->r->id, page }) < 0)
		s->st.store_errors++;
}

void prefetch_after_fault(struct shard *s, struct shard_region *sr, uint64_t page)
{
	struct pf_buffers *b = s->pf;
	struct uffd_region *r = sr->r;
	struct pf_stream *st;
	uint32_t hits = 0, w, n = 0, steps = 0, got = 0;
	uint64_t p, q, cap;
	int64_t d = 0;

	if (!b)
		return;
	st = pf_stream_for(&sr->pf, page);
	if (st->delta && st->span)
		hits = confirm_hits(s, sr, page, st->delta, st->span);
	w = pf_on_fault(st, page, hits, b->max, &d);
	/* Prefetched pages count against the budget: never let one window
	 * take more than an eighth of it, or evict the working set it serves. */
	cap = s->budget / 8;
	if (sr->budget != UINT64_MAX && sr->budget / 8 < cap)
		cap = sr->budget / 8;
	if (w > cap)
		w = (uint32_t)cap;
	if (w == 0)
		return;

	/* Only pages known to be elsewhere are fetched: stored ones with one
	 * batched read, zero ones with a zero page. A resident page is never
	 * overwritten, an untouched one is left to its first touch, a poisoned
	 * one to its SIGBUS. */
	for (p = page; steps < w && pf_next(p, d, r->npages, sr->pt.rot, s->idx, s->nshards, &q); p = q) {
		uint32_t id;
		uint8_t ps;
		int rc;

		steps++;
		if (!pt_has_stripe(&s->pt, &sr->pt, q))
			continue;
		id = page_id(s, sr, q);
		ps = s->pt.state[id] & PS_MASK;
		if (ps == PS_STORED) {
			b->g.keys[n] = (struct kv_key){ r->id, q };
			b->page[n] = q;
			b->id[n++] = id;
		} else if (ps == PS_ZERO) {
			rc = uffd_zeropage_nowake(r->uffd, sr->base + (q << FM_PAGE_SHIFT), FM_PAGE_SIZE);
			if (rc == 0 || rc == -EEXIST) {
				installed(s, sr, id, q, rc == 0, false);
				got += rc == 0;
			} else if (rc == -ESRCH || rc == -EAGAIN) {
				n = 0;   /* client gone, or a discard pending: stop */
				break;
			}
		}
	}
	if (n > 0) {
		kv_mget(s->kv, b->g.keys, b->g.ptrs, b->g.res, n);
		fm_failpoint_delay(FM_FP_PREFETCH_BEFORE_INSTALL);
		for (uint32_t i = 0; i < n; i++) {
			uint64_t want;
			int rc;

			/* A discard the dispatcher read for us (in our ring,
			 * parked, or just read) may cover these pages: one
			 * installed before we handled it would bring back the
			 * data the client dropped. Checked before each install:
			 * the client may discard at any moment. */
			if (shard_discard_pending(s)) {
				s->st.discard_waits++;
				break;
			}
			/* A failed or doubtful copy is left to the demand
			 * fault, which retries replicas or poisons: a prefetch
			 * never decides a page is lost. */
			if (b->g.res[i] != 0)
				continue;
			if (sc_synced_hash(&s->sc, b->id[i], &want) &&
			    page_hash(&sr->hkey, b->g.ptrs[i]) != want)
				continue;
			fm_failpoint_delay(FM_FP_PREFETCH_AFTER_CHECK);
			rc = uffd_copy_nowake(r->uffd, sr->base + (b->page[i] << FM_PAGE_SHIFT), b->g.ptrs[i],
					      FM_PAGE_SIZE);
			if (rc == -ESRCH || rc == -EAGAIN)
				break;   /* client gone, or a discard pending: stop */
			if (rc == 0 && shard_discard_pending(s)) {
				/* read during the copy: it may have landed
				 * after the client's discard (as serve_fault) */
				s->st.discard_waits++;
				shard_undo_install(s, sr, b->page[i]);
				break;
			}
			if (rc == 0 || rc == -EEXIST) {
				installed(s, sr, b->id[i], b->page[i], rc == 0, true);
				got += rc == 0;
			} else {
				shard_note_ioctl_error(s, sr, "prefetching a page", rc, b->page[i]);
			}
		}
	}
	st->issued = got;
	st->span = got ? steps : 0;
}
