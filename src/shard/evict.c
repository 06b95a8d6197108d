/* shard/evict: eviction under the shard's budget and regions' caps: select
 * and write-protect victims, store them (skipping clean copies a keeping
 * store still holds), then punch and commit; refusals back off. */
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
		sr = region_of_id(s, s->ev_ids[i], &page);
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
		sr = region_of_id(s, s->ev_ids[i], &page);
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

/* ---- runs: one write-protect and one punch for many pages ----
 *
 * Every write-protect and every punch flushes the client's TLB on all its
 * CPUs (an IPI each); per page that was most of an eviction's cost. So the
 * victims of a round are sorted and grouped into runs of one stripe, and
 * each run is protected, punched and un-protected as one range. A run may
 * bridge pages already evicted (STORED, ZERO): the memfd holds nothing
 * there to punch, and the write-protect marker a range puts on them is
 * cleared by the run's un-protect. Any other page ends a run. */

/* A page a run's ranges may cover without evicting it. */
static bool bridgeable(const struct shard *s, uint32_t id)
{
	uint8_t st = s->pt.state[id] & PS_MASK;

	/* Safe across a crash too: STORED and ZERO pages are absent from the
	 * memfd (a fault that fills one makes it RESIDENT in the same step), so the
	 * punch changes nothing there and their bits are not touched; the
	 * write-protect a kill leaves is cleared at re-adoption. (Bridging was
	 * off for a while, blamed for pages poisoned after restarts; the cause
	 * was the slot-dependent stripe owner, fm_region_rot. Bridging only made
	 * storms end sooner, so more regions came second in a daemon's life.) */
	return st == PS_STORED || st == PS_ZERO;
}

/* Take the policy's cold neighbours of victim `id` (same stripe, within
 * evict_run pages of it, across evicted pages) into s->ev_ids from n on, up
 * to cap. A hot, untouched or poisoned page stops the walk, as does `only`
 * for another region (a stripe has one region, so nothing to check). */
static uint32_t take_neighbours(struct shard *s, uint32_t id, uint32_t n, uint32_t cap)
{
	uint32_t first = id & ~(uint32_t)(FM_STRIPE_PAGES - 1);
	uint32_t last = first + FM_STRIPE_PAGES - 1;

	for (int dir = 1; dir >= -1; dir -= 2) {
		for (uint32_t d = 1; d < s->evict_run && n < cap; d++) {
			uint32_t x = id + (uint32_t)dir * d;

			if ((dir > 0 && id + d > last) || (dir < 0 && id < first + d))
				break;
			if ((s->pt.state[x] & PS_MASK) == PS_RESIDENT && policy_is_cold(s->policy, x)) {
				policy_take(s->policy, x);
				s->ev_ids[n++] = x;
			} else if (!bridgeable(s, x)) {
				break;
			}
		}
	}
	return n;
}

static int cmp_id(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* Whether sorted victims a < b can share a run: same stripe, close, and
 * only evicted pages between them. */
static bool joinable(const struct shard *s, uint32_t a, uint32_t b)
{
	if ((a >> FM_STRIPE_SHIFT) != (b >> FM_STRIPE_SHIFT) || b - a >= s->evict_run)
		return false;
	for (uint32_t x = a + 1; x < b; x++)
		if (!bridgeable(s, x))
			return false;
	return true;
}

/* Write-protect pages [first, last] (ids of one stripe) as one range. */
static int protect_range(struct shard *s, uint32_t first, uint32_t last, bool on)
{
	uint64_t page;
	struct shard_region *sr = region_of_id(s, first, &page);

	return uffd_writeprotect(sr->r->uffd, sr->base + (page << FM_PAGE_SHIFT),
				 (uint64_t)(last - first + 1) << FM_PAGE_SHIFT, on,
				 &s->st.eagain_retries);
}

/* Eviction, step 1: take up to `want` victims (the policy's, or only
 * `only`'s pages) and, around each, its cold neighbours; sort them into runs
 * (s->ev_runs) and write-protect each run, so writers wait while we copy.
 * A page that cannot be protected (client gone, range vanished) is
 * forgotten rather than stored as garbage; a run whose range fails is
 * retried page by page. Returns the pages in s->ev_ids. */
static uint32_t evict_select(struct shard *s, uint64_t want, struct shard_region *only)
{
	uint32_t n = 0, m = 0;

	s->ev_nruns = 0;
	while (n < s->evict_batch && n < want) {
		uint32_t id = only ? region_victim(s, only) : policy_victim(s->policy);

		if (id == POLICY_NONE)
			break;
		s->ev_ids[n++] = id;
		if (s->evict_run > 1)
			n = take_neighbours(s, id, n, s->evict_batch);
	}
	qsort(s->ev_ids, n, sizeof(*s->ev_ids), cmp_id);
	/* region_victim's scan may return a page a neighbour walk took. */
	if (n > 1) {
		uint32_t u = 1;

		for (uint32_t i = 1; i < n; i++)
			if (s->ev_ids[i] != s->ev_ids[u - 1])
				s->ev_ids[u++] = s->ev_ids[i];
		n = u;
	}
	/* Group in place: ids are read ahead of where kept ones are written. */
	for (uint32_t i = 0; i < n;) {
		uint32_t j = i + 1, k;

		while (j < n && joinable(s, s->ev_ids[j - 1], s->ev_ids[j]))
			j++;
		if (protect_range(s, s->ev_ids[i], s->ev_ids[j - 1], true) == 0) {
			(void)fm_failpoint(FM_FP_EVICT_AFTER_PROTECT);
			s->ev_runs[s->ev_nruns++] = (struct ev_run){ m, j - i };
			for (k = i; k < j; k++)
				s->ev_ids[m++] = s->ev_ids[k];
			i = j;
			continue;
		}
		for (k = i; k < j; k++) {
			uint32_t id = s->ev_ids[k];
			uint64_t page;
			struct shard_region *sr = region_of_id(s, id, &page);
			int rc = protect_range(s, id, id, true);

			if (rc < 0) {
				shard_note_ioctl_error(s, sr, "write-protect", rc, page);
				shard_set_state(s, sr, id, PS_NONE);
				continue;
			}
			s->ev_runs[s->ev_nruns++] = (struct ev_run){ m, 1 };
			s->ev_ids[m++] = id;
		}
		i = j;
	}
	return m;
}

/* Eviction, step 2: decide per page (s->ev_results) and store the ones that
 * need it in one batch (s->ev_rc: 0 or -errno). Zero pages are remembered,
 * not stored; clean ones are only confirmed (confirm_clean). */
static void evict_store(struct shard *s, uint32_t n)
{
	uint32_t nput = 0, r = 0;

	for (uint32_t i = 0; i < n; i++) {
		struct shard_region *sr;
		uint64_t page;
		const uint8_t *src;
		int fp = fm_failpoint(FM_FP_EVICT_STORE_ALTERNATE);

		while (i >= s->ev_runs[r].first + s->ev_runs[r].n)
			r++;
		if (fp < 0 && (i - s->ev_runs[r].first) % 2 == 1) {
			s->ev_results[i] = EV_KEEP;   /* the store "refused" it */
			s->ev_rc[i] = fp;
			continue;
		}
		sr = region_of_id(s, s->ev_ids[i], &page);
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
	if (nput > 0) {
		uint64_t tp = fm_now_ns();

		kv_mput(s->kv, s->ev_keys, (const void *const *)s->ev_pages, s->ev_put_results, nput);
		fm_hist_add(&s->st.put_ns, (fm_now_ns() - tp) / nput);
		(void)fm_failpoint(FM_FP_EVICT_AFTER_PUT);
	}
	for (uint32_t j = 0; j < nput; j++)
		s->ev_rc[s->ev_idx[j]] = s->ev_put_results[j];
	confirm_clean(s, n);
}

/* Item i will not be evicted after all (store refused, punch failed): it
 * stays RESIDENT and goes back to the policy; the run's un-protect lets
 * its writers go. */
static void keep_item(struct shard *s, uint32_t i, bool only)
{
	uint32_t id = s->ev_ids[i];

	s->ev_results[i] = EV_KEEP;
	if (only)
		policy_admit(s->policy, id);
	else
		policy_reinsert(s->policy, id);
}

/* The copy of item i is safe in the store and the page is about to be
 * punched: the last moment the page is still in the memfd. (The place for
 * per-page bookkeeping that must precede the punch.) */
static void before_punch(struct shard *s, uint32_t i)
{
	uint64_t page;
	struct shard_region *sr = region_of_id(s, s->ev_ids[i], &page);

	if (s->ev_results[i] == EV_PUT)
		sc_set_synced(&s->sc, s->ev_ids[i], s->ev_hash[i]);   /* prepared: cannot fail */
	/* A crash after the punch must find the bit that says "fetch me"
	 * (or, for a zero page, "do not"): docs/design.md, re-adoption. */
	shard_mark_stored(s, sr, page, s->ev_results[i] != EV_ZERO);
	(void)fm_failpoint(FM_FP_EVICT_AFTER_MARK);
}

/* Punch items [a, b) of one run, and the evicted pages between them, out of
 * the memfd as one range. Punch before the pages are recorded as gone: if
 * the memfd keeps them, they are still the client's live copies and must
 * stay RESIDENT and tracked. 0 or -errno. */
static int punch_items(struct shard *s, uint32_t a, uint32_t b)
{
	uint64_t first, last;
	struct shard_region *sr = region_of_id(s, s->ev_ids[a], &first);
	int rc;

	region_of_id(s, s->ev_ids[b - 1], &last);
	uint64_t t0 = fm_now_ns();

	for (uint32_t i = a; i < b; i++)
		before_punch(s, i);
	rc = fm_failpoint(FM_FP_EVICT_PUNCH);
	if (rc == 0 && fallocate(sr->r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				 (off_t)(first << FM_PAGE_SHIFT),
				 (off_t)((last - first + 1) << FM_PAGE_SHIFT)) < 0)
		rc = -errno;
	s->st.evict_punch_ns += fm_now_ns() - t0;
	if (rc == 0)
		return 0;
	s->st.punch_errors++;
	fm_log_once(FM_LOG_ERROR, "shard %u: cannot punch region %llu pages %llu..%llu "
		    "out of its memfd: %s; the pages stay resident", s->idx,
		    (unsigned long long)sr->r->id, (unsigned long long)first,
		    (unsigned long long)last, strerror(-rc));
	return rc;
}

/* Item i is out of the memfd: record where its content went. */
static void record_evicted(struct shard *s, uint32_t i)
{
	uint64_t page;
	uint32_t id = s->ev_ids[i];
	struct shard_region *sr = region_of_id(s, id, &page);

	if (s->ev_results[i] == EV_ZERO) {
		s->st.evict_zero++;
		shard_drop_copy(s, sr, id, page, PS_RESIDENT);
		shard_set_state(s, sr, id, PS_ZERO);
	} else if (s->ev_results[i] == EV_CLEAN) {
		s->st.evict_clean++;
		shard_set_state(s, sr, id, PS_STORED);
	} else {
		s->st.store_puts++;
		shard_set_state(s, sr, id, PS_STORED);
	}
	s->st.evictions++;
}

/* Step 3 for one run: pages whose copy failed are kept; the others are
 * punched in stretches between kept ones, recorded, and then one
 * un-protect over the whole run lets every writer go: to the page if it
 * stayed, into a MISSING fault that fetches the copy if it went. */
static uint32_t commit_run(struct shard *s, const struct ev_run *run, bool only, bool *refused)
{
	uint32_t done = 0, end = run->first + run->n;
	uint64_t page, t0;
	struct shard_region *sr = region_of_id(s, s->ev_ids[run->first], &page);
	int rc;

	for (uint32_t i = run->first; i < end; i++) {
		rc = s->ev_results[i] == EV_ZERO ? 0 : s->ev_rc[i];
		if (rc >= 0)
			continue;
		/* Full or failing store: the page stays, nothing is lost,
		 * and we back off before trying again. */
		s->st.evict_refused++;
		if (rc != -ENOSPC)
			s->st.store_errors++;
		*refused = true;
		/* A write that failed somewhere may have landed elsewhere:
		 * the copy no longer matches a hash. */
		sc_set_unsynced(&s->sc, s->ev_ids[i]);
		keep_item(s, i, only);
	}
	for (uint32_t a = run->first; a < end;) {
		uint32_t b;

		if (s->ev_results[a] == EV_KEEP) {
			a++;
			continue;
		}
		for (b = a + 1; b < end && s->ev_results[b] != EV_KEEP; b++)
			;
		if (punch_items(s, a, b) < 0) {
			*refused = true;
			for (uint32_t i = a; i < b; i++) {
				uint64_t pg;
				struct shard_region *isr = region_of_id(s, s->ev_ids[i], &pg);

				/* A store that drops after get would keep an
				 * orphan copy; a keeping store's copy stays
				 * valid (its hash was taken under protection). */
				if (s->ev_results[i] == EV_PUT && !s->kv_keeps &&
				    kv_del(s->kv, (struct kv_key){ isr->r->id, pg }) < 0)
					s->st.store_errors++;
				keep_item(s, i, only);
			}
		} else {
			(void)fm_failpoint(FM_FP_EVICT_AFTER_PUNCH);
			for (uint32_t i = a; i < b; i++)
				record_evicted(s, i);
			done += b - a;
		}
		a = b;
	}
	/* A page gone from the memfd sends a writer blocked here into a
	 * MISSING fault once woken, so wake even if the un-protect failed; a
	 * kept page's writer that is not woken raises a WP fault, whose
	 * handler un-protects a resident page again. */
	t0 = fm_now_ns();
	rc = protect_range(s, s->ev_ids[run->first], s->ev_ids[end - 1], false);
	s->st.evict_unprotect_ns += fm_now_ns() - t0;
	if (rc < 0) {
		if (rc != -ESRCH)
			s->st.unprotect_errors++;
		shard_note_ioctl_error(s, sr, "un-protect", rc, page);
		uffd_wake(sr->r->uffd, sr->base + (page << FM_PAGE_SHIFT),
			  (uint64_t)(s->ev_ids[end - 1] - s->ev_ids[run->first] + 1) << FM_PAGE_SHIFT);
	}
	(void)fm_failpoint(FM_FP_EVICT_AFTER_UNPROTECT);
	return done;
}

/* Eviction, step 3: run by run, punch each page whose copy is safe out of
 * the memfd, record its new state and let its writers go; a page whose
 * store or punch failed stays RESIDENT and *refused is set. Returns the
 * pages evicted. */
static uint32_t evict_commit(struct shard *s, bool only, bool *refused)
{
	uint32_t done = 0;

	for (uint32_t r = 0; r < s->ev_nruns; r++)
		done += commit_run(s, &s->ev_runs[r], only, refused);
	return done;
}

/* Evict up to `want` pages: the policy's victims, or only `only`'s pages.
 * The race-free method (docs/design.md): write-protect so writers wait, read
 * through our own mapping, store, punch the page out of the memfd (which
 * unmaps it everywhere), then clear the protection, which wakes waiting
 * writers into a MISSING fault that fetches what we stored. A refusal backs
 * off, doubling, before the next try. */
uint64_t shard_evict(struct shard *s, uint64_t want, struct shard_region *only)
{
	uint64_t done = 0;

	while (done < want) {
		uint64_t t0 = fm_now_ns();
		bool refused = false;
		uint32_t n = evict_select(s, want - done, only);
		uint64_t t1 = fm_now_ns();

		s->st.evict_protect_ns += t1 - t0;
		if (n == 0)
			break;
		evict_store(s, n);
		s->st.evict_store_ns += fm_now_ns() - t1;
		done += evict_commit(s, only != NULL, &refused);
		s->st.evict_runs += s->ev_nruns;
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

/* ---- ahead of demand ----
 * A fault that finds the shard over budget waits for an eviction. So the
 * shard keeps a reserve of free pages: once fewer than free_low_pct of its
 * budget are free it evicts, a bounded round at a time, between fault
 * bursts and while idle, until free_high_pct are free. Demand eviction
 * (shard_enforce_budget) is left for bursts that outrun the reserve. */

static uint64_t free_pages(const struct shard *s)
{
	return s->resident < s->budget ? s->budget - s->resident : 0;
}

/* The free pages the reserve aims for (rounded up). */
static uint64_t reserve_high(const struct shard *s)
{
	return (s->budget * s->free_high_pct + 99) / 100;
}

bool shard_evict_ahead_due(struct shard *s)
{
	uint64_t fr;

	/* A budget too small for a whole page of reserve gets none: an ahead
	 * eviction there would take the page a fault just brought in. */
	if (s->budget * s->free_high_pct < 100 || s->resident == 0)
		return false;
	fr = free_pages(s);
	if (fr * 100 >= (uint64_t)s->free_high_pct * s->budget)
		s->refilling = false;
	else if (fr * 100 < (uint64_t)s->free_low_pct * s->budget)
		s->refilling = true;
	return s->refilling && !backing_off(s);
}

uint64_t shard_evict_ahead(struct shard *s)
{
	uint64_t target = s->budget - FM_MIN(s->budget, reserve_high(s));
	uint64_t want, done;

	if (!shard_evict_ahead_due(s) || s->resident <= target)
		return 0;
	/* One round: a fault that arrives meanwhile waits for at most this. */
	want = FM_MIN(s->resident - target, (uint64_t)s->evict_batch);
	done = shard_evict(s, want, NULL);
	s->st.evict_ahead += done;
	return done;
}

/* The shard's budget, then any region over its own cap. */
void shard_enforce_budget(struct shard *s)
{
	if (s->resident > s->budget && !backing_off(s))
		shard_evict(s, evict_want(s, s->resident - s->budget), NULL);
	if (s->capped_regions == 0)
		return;
	for (unsigned i = 0; i < FM_MAX_REGIONS; i++) {
		struct shard_region *sr = s->regions[i];

		if (sr && sr->resident > sr->budget && !backing_off(s))
			shard_evict(s, sr->resident - sr->budget, sr);
	}
}


void shard_region_budget_apply(struct shard *s, struct uffd_region *r, uint64_t pages)
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
	shard_enforce_budget(s);
}
