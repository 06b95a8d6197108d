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
		shard_note_ioctl_error(s, sr, "un-protect", rc, page);
	}
}

/* Eviction, step 1: take up to `want` victims (the policy's, or only
 * `only`'s pages) into s->ev_ids and write-protect each, so writers wait
 * while we copy. A page that cannot be protected (client gone, range
 * vanished) is forgotten rather than stored as garbage. Returns how many. */
static uint32_t evict_select(struct shard *s, uint64_t want, struct shard_region *only)
{
	uint32_t n = 0;

	while (n < s->evict_batch && n < want) {
		uint32_t id = only ? region_victim(s, only) : policy_victim(s->policy);
		struct shard_region *sr;
		uint64_t page;
		int rc;

		if (id == POLICY_NONE)
			break;
		sr = region_of_id(s, id, &page);
		rc = uffd_writeprotect(sr->r->uffd, sr->base + (page << FM_PAGE_SHIFT),
				       FM_PAGE_SIZE, true, &s->st.eagain_retries);
		if (rc < 0) {
			shard_note_ioctl_error(s, sr, "write-protect", rc, page);
			shard_set_state(s, sr, id, PS_NONE);
			continue;
		}
		s->ev_ids[n] = id;
		n++;
		(void)fm_failpoint(FM_FP_EVICT_AFTER_PROTECT);
	}
	return n;
}

/* Eviction, step 2: decide per page (s->ev_results) and store the ones that
 * need it in one batch (s->ev_rc: 0 or -errno). Zero pages are remembered,
 * not stored; clean ones are only confirmed (confirm_clean). */
static void evict_store(struct shard *s, uint32_t n)
{
	uint32_t nput = 0;

	for (uint32_t i = 0; i < n; i++) {
		struct shard_region *sr;
		uint64_t page;
		const uint8_t *src;

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

/* Eviction, step 3: for each page whose copy is safe, punch it out of the
 * memfd, record its new state and let its writers go; a page whose store or
 * punch failed stays RESIDENT (keep_resident) and *refused is set. Returns
 * the pages evicted. */
static uint32_t evict_commit(struct shard *s, uint32_t n, bool only, bool *refused)
{
	uint32_t done = 0;

	for (uint32_t i = 0; i < n; i++) {
		uint32_t id = s->ev_ids[i];
		struct shard_region *sr;
		uint64_t page, addr;
		int rc = s->ev_results[i] == EV_ZERO ? 0 : s->ev_rc[i];

		sr = region_of_id(s, id, &page);
		addr = sr->base + (page << FM_PAGE_SHIFT);
		if (rc < 0) {
			/* Full or failing store: the page stays, nothing
			 * is lost, and we back off before trying again. */
			s->st.evict_refused++;
			if (rc != -ENOSPC)
				s->st.store_errors++;
			*refused = true;
			/* A write that failed somewhere may have landed
			 * elsewhere: the copy no longer matches a hash. */
			sc_set_unsynced(&s->sc, id);
			keep_resident(s, sr, id, page, only);
			continue;
		}
		if (s->ev_results[i] == EV_PUT)
			sc_set_synced(&s->sc, id, s->ev_hash[i]);   /* prepared: cannot fail */
		/* Before the punch: a crash after it must find the bit that
		 * says "fetch me" (or, for a zero page, "do not"). */
		shard_mark_stored(s, sr, page, s->ev_results[i] != EV_ZERO);
		(void)fm_failpoint(FM_FP_EVICT_AFTER_MARK);
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
			*refused = true;
			keep_resident(s, sr, id, page, only);
			continue;
		}
		(void)fm_failpoint(FM_FP_EVICT_AFTER_PUNCH);
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
		/* The page is gone from the memfd, so a writer that
		 * stays blocked here retries into a MISSING fault once
		 * woken; wake it even if the un-protect failed. */
		rc = uffd_writeprotect(sr->r->uffd, addr, FM_PAGE_SIZE, false,
				       &s->st.eagain_retries);
		if (rc < 0) {
			if (rc != -ESRCH)
				s->st.unprotect_errors++;
			shard_note_ioctl_error(s, sr, "un-protect", rc, page);
			uffd_wake(sr->r->uffd, addr, FM_PAGE_SIZE);
		}
		(void)fm_failpoint(FM_FP_EVICT_AFTER_UNPROTECT);
		s->st.evictions++;
		done++;
	}
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

		if (n == 0)
			break;
		evict_store(s, n);
		done += evict_commit(s, n, only != NULL, &refused);
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
