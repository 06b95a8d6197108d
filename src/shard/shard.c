#include "shard/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/log.h"
#include "ctl/config.h"
#include "kv/kv.h"
#include "shard/pagetable.h"
#include "shard/policy.h"
#include "uffd/uffd.h"

#define SHARD_BURST 32          /* messages taken from a ring per turn */
#define SHARD_SLEEP_MS 100      /* a sleeping shard still wakes this often */
#define EVICT_BACKOFF_NS 10000000ull   /* after a refused eviction, wait 10 ms */

#define PS_MASK 0x0f

/* The shard's view of one region. */
struct shard_region {
	struct pt_region pt;    /* first: pt_page_of() results cast back */
	struct region *r;
	uint64_t base;          /* client address of page 0 */
	uint64_t resident;
	uint64_t faults;
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
	uint32_t spin_us;
	int cpu;
	int policy_kind;
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

/* Drop every page of the region: stored copies deleted, policy forgotten. */
static void region_free_pages(struct shard *s, struct shard_region *sr)
{
	for (uint64_t ls = 0; ls < sr->pt.nstripes; ls++) {
		uint32_t c = sr->pt.chunk[ls];
		uint64_t first = s->pt.owner[c].first_page;

		for (uint32_t off = 0; off < FM_STRIPE_PAGES; off++) {
			uint32_t id = (c << FM_STRIPE_SHIFT) | off;
			uint8_t st = s->pt.state[id] & PS_MASK;

			if (st == PS_RESIDENT)
				s->resident--;
			if (st == PS_STORED) {
				struct kv_key k = { sr->r->id, first + off };
				int rc = kv_del(s->kv, k);
				if (rc < 0 && rc != -ENOENT)
					s->st.store_errors++;
			}
			if (st != PS_NONE)
				policy_drop(s->policy, id);
			s->pt.state[id] = PS_NONE;
		}
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
	rc = pt_region_add(&s->pt, &sr->pt, r->slot, r->npages);
	if (rc == 0 && policy_grow(s->policy, pt_capacity(&s->pt)) < 0) {
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

static void region_del(struct shard *s, struct region *r)
{
	struct shard_region *sr = r->slot < FM_MAX_REGIONS ? s->regions[r->slot] : NULL;

	if (!sr || sr->r != r)
		return;
	region_free_pages(s, sr);
	s->regions[r->slot] = NULL;
	free(sr);
}

/* ---- faults ---- */

static void note_ioctl_error(struct shard *s, struct shard_region *sr, const char *what, int rc,
			     uint64_t page)
{
	if (rc == -ESRCH) {
		/* The client's mm is gone; its connection closing tears the
		 * region down. Nothing is waiting on this fault any more. */
		s->st.client_gone++;
		return;
	}
	fm_log_once(FM_LOG_ERROR, "shard %u: %s on region %llu page %llu failed: %s", s->idx, what,
		    (unsigned long long)sr->r->id, (unsigned long long)page, strerror(-rc));
}

static void make_resident(struct shard *s, struct shard_region *sr, uint32_t id)
{
	s->pt.state[id] = PS_RESIDENT;
	s->resident++;
	sr->resident++;
	policy_admit(s->policy, id);
}

static void handle_fault(struct shard *s, const struct fm_msg *m)
{
	struct region *r = (struct region *)(uintptr_t)m->a;
	struct shard_region *sr = s->regions[r->slot];
	uint64_t page = m->b, addr;
	uint32_t id;
	int rc;

	if (unlikely(!sr || sr->r != r || page >= r->npages)) {
		s->st.stale_faults++;
		return;
	}
	s->st.faults++;
	sr->faults++;
	id = page_id(s, sr, page);
	addr = sr->base + (page << FM_PAGE_SHIFT);

	if (m->flags & FM_FAULT_WP) {
		/* A writer met an eviction's write-protect window. If the
		 * eviction finished, the page is gone and waking sends the
		 * writer to a MISSING fault; if it was refused, the page stayed
		 * and un-protecting it wakes the writer. */
		s->st.wp_faults++;
		if ((s->pt.state[id] & PS_MASK) == PS_RESIDENT)
			rc = uffd_writeprotect(r->uffd, addr, FM_PAGE_SIZE, false, &s->st.eagain_retries);
		else
			rc = uffd_wake(r->uffd, addr, FM_PAGE_SIZE);
		if (rc < 0)
			note_ioctl_error(s, sr, "wp-fault wake", rc, page);
		return;
	}

	switch (s->pt.state[id] & PS_MASK) {
	case PS_RESIDENT:
		/* Usually a second thread on the same page: the first fault
		 * already filled it, EEXIST says so, and we wake. If the client
		 * punched the page out of its memfd, zero-filling is exactly
		 * what it asked for. */
		rc = uffd_zeropage(r->uffd, addr, FM_PAGE_SIZE, &s->st.eagain_retries);
		if (rc == -EEXIST) {
			s->st.dup_faults++;
			rc = uffd_wake(r->uffd, addr, FM_PAGE_SIZE);
		} else if (rc == 0) {
			s->st.zero_fills++;
		}
		if (rc < 0)
			note_ioctl_error(s, sr, "wake", rc, page);
		break;
	case PS_NONE:
	case PS_ZERO:
		rc = uffd_zeropage(r->uffd, addr, FM_PAGE_SIZE, &s->st.eagain_retries);
		if (rc == 0 || rc == -EEXIST) {
			if (rc == -EEXIST)
				uffd_wake(r->uffd, addr, FM_PAGE_SIZE);
			s->st.zero_fills++;
			make_resident(s, sr, id);
		} else {
			note_ioctl_error(s, sr, "zero-fill", rc, page);
		}
		break;
	case PS_STORED: {
		struct kv_key k = { r->id, page };
		uint64_t t0 = fm_now_ns();

		rc = kv_get(s->kv, k, s->bounce);
		fm_hist_add(&s->st.fetch_ns, fm_now_ns() - t0);
		if (rc < 0) {
			/* Never a silent zero: a page we stored and cannot get
			 * back is an error the client must see. */
			s->st.store_errors++;
			s->st.poisoned++;
			s->pt.state[id] = PS_POISONED;
			FM_ERR("shard %u: region %llu page %llu lost by the store (%s): poisoned",
			       s->idx, (unsigned long long)r->id, (unsigned long long)page,
			       strerror(-rc));
			rc = uffd_poison(r->uffd, addr, FM_PAGE_SIZE, &s->st.eagain_retries);
			if (rc < 0 && rc != -EEXIST)
				note_ioctl_error(s, sr, "poison", rc, page);
			break;
		}
		rc = uffd_copy(r->uffd, addr, s->bounce, FM_PAGE_SIZE, &s->st.eagain_retries);
		if (rc == 0 || rc == -EEXIST) {
			if (rc == -EEXIST)
				uffd_wake(r->uffd, addr, FM_PAGE_SIZE);
			s->st.fetches++;
			make_resident(s, sr, id);
			if (!s->kv_keeps) {
				rc = kv_del(s->kv, k);
				if (rc < 0)
					s->st.store_errors++;
			}
		} else {
			note_ioctl_error(s, sr, "copy", rc, page);
		}
		break;
	}
	case PS_POISONED:
		rc = uffd_poison(r->uffd, addr, FM_PAGE_SIZE, &s->st.eagain_retries);
		if (rc == -EEXIST)
			rc = uffd_wake(r->uffd, addr, FM_PAGE_SIZE);
		if (rc < 0)
			note_ioctl_error(s, sr, "poison", rc, page);
		break;
	}
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

		if (region_shard_of(r, page, s->nshards) != s->idx) {
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
			} else {
				fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					  (off_t)(page << FM_PAGE_SHIFT), FM_PAGE_SIZE);
			}
			s->resident--;
			sr->resident--;
		} else if (st == PS_STORED) {
			struct kv_key k = { r->id, page };

			if (kv_del(s->kv, k) < 0)
				s->st.store_errors++;
		} else if (st == PS_NONE) {
			continue;
		}
		policy_drop(s->policy, id);
		s->pt.state[id] = PS_NONE;
		s->st.discarded++;
	}
}

/* ---- eviction ---- */

/* Evict up to `want` pages. The race-free method (DESIGN.md): write-protect
 * so writers wait, read through our own mapping, store, punch the page out of
 * the memfd (which unmaps it everywhere), then clear the protection, which
 * wakes waiting writers into a MISSING fault that fetches what we stored. */
static uint64_t evict(struct shard *s, uint64_t want)
{
	uint64_t done = 0;

	while (done < want) {
		uint32_t n = 0, nput = 0;
		uint64_t t0 = fm_now_ns();

		while (n < s->evict_batch && done + n < want) {
			uint32_t id = policy_victim(s->policy);
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
				s->pt.state[id] = PS_NONE;
				s->resident--;
				sr->resident--;
				continue;
			}
			s->ev_ids[n] = id;
			n++;
		}
		if (n == 0)
			break;

		/* Zero pages are remembered, not stored. */
		for (uint32_t i = 0; i < n; i++) {
			struct shard_region *sr;
			uint64_t page;
			const uint8_t *src;

			sr = id_to_page(s, s->ev_ids[i], &page);
			src = sr->r->view + (page << FM_PAGE_SHIFT);
			if (fm_page_is_zero(src)) {
				s->ev_results[i] = 1;
				continue;
			}
			s->ev_results[i] = 0;
			s->ev_keys[nput] = (struct kv_key){ sr->r->id, page };
			s->ev_pages[nput] = src;
			nput++;
		}
		int *put_results = s->ev_put_results;
		if (nput > 0)
			kv_mput(s->kv, s->ev_keys, (const void *const *)s->ev_pages, put_results, nput);

		bool refused = false;
		for (uint32_t i = 0, j = 0; i < n; i++) {
			uint32_t id = s->ev_ids[i];
			struct shard_region *sr;
			uint64_t page, addr;
			int rc = 0;

			sr = id_to_page(s, id, &page);
			addr = sr->base + (page << FM_PAGE_SHIFT);
			if (s->ev_results[i] == 0)
				rc = put_results[j++];
			if (rc < 0) {
				/* Full or failing store: the page stays, nothing
				 * is lost, and we back off before trying again. */
				s->st.evict_refused++;
				if (rc != -ENOSPC)
					s->st.store_errors++;
				refused = true;
				policy_reinsert(s->policy, id);
				uffd_writeprotect(sr->r->uffd, addr, FM_PAGE_SIZE, false,
						  &s->st.eagain_retries);
				continue;
			}
			if (s->ev_results[i] == 1) {
				s->st.evict_zero++;
				s->pt.state[id] = PS_ZERO;
			} else {
				s->st.store_puts++;
				s->pt.state[id] = PS_STORED;
			}
			fallocate(sr->r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				  (off_t)(page << FM_PAGE_SHIFT), FM_PAGE_SIZE);
			rc = uffd_writeprotect(sr->r->uffd, addr, FM_PAGE_SIZE, false,
					       &s->st.eagain_retries);
			if (rc < 0 && rc != -ESRCH)
				note_ioctl_error(s, sr, "un-protect", rc, page);
			s->resident--;
			sr->resident--;
			s->st.evictions++;
			done++;
		}
		uint64_t dt = fm_now_ns() - t0;
		fm_hist_add(&s->st.evict_ns, dt / n);
		if (refused) {
			s->evict_backoff_until = fm_now_ns() + EVICT_BACKOFF_NS;
			break;
		}
	}
	return done;
}

static void enforce_budget(struct shard *s)
{
	if (s->resident <= s->budget)
		return;
	if (s->evict_backoff_until && fm_now_ns() < s->evict_backoff_until)
		return;
	s->evict_backoff_until = 0;
	evict(s, s->resident - s->budget);
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
		reply(s, m->type, 0, evict(s, m->a), m->cookie);
		break;
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
		region_del(s, r);
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

struct shard *shard_create(const struct fm_config *cfg, unsigned idx, uint64_t budget,
			   struct fm_doorbell *reply_bell)
{
	struct shard *s = aligned_alloc(FM_CACHELINE, sizeof(*s));
	int rc;

	if (!s)
		return NULL;
	memset(s, 0, sizeof(*s));
	s->bell.efd = -1;
	s->idx = idx;
	s->nshards = cfg->shard_count;
	pt_init(&s->pt, idx, cfg->shard_count);
	s->budget = budget;
	s->reply_bell = reply_bell;
	s->spin_us = cfg->spin_us;
	s->cpu = cfg->shard_cpus_n ? cfg->shard_cpus[idx] : -1;
	s->evict_batch = cfg->evict_batch;
	s->policy_kind = cfg->policy;
	rc = fm_ring_init(&s->data, cfg->ring_slots);
	if (rc == 0)
		rc = fm_ring_init(&s->ctl, 64);
	if (rc == 0)
		rc = fm_ring_init(&s->reply, 256);
	if (rc == 0)
		rc = fm_doorbell_init(&s->bell);
	if (rc < 0)
		goto fail;
	rc = -ENOMEM;
	s->policy = policy_create((enum fm_policy_kind)cfg->policy, 0, budget);
	s->bounce = aligned_alloc(FM_PAGE_SIZE, FM_PAGE_SIZE);
	s->ev_keys = calloc(s->evict_batch, sizeof(*s->ev_keys));
	s->ev_pages = calloc(s->evict_batch, sizeof(*s->ev_pages));
	s->ev_results = calloc(s->evict_batch, sizeof(*s->ev_results));
	s->ev_put_results = calloc(s->evict_batch, sizeof(*s->ev_put_results));
	s->ev_ids = calloc(s->evict_batch, sizeof(*s->ev_ids));
	if (!s->policy || !s->bounce || !s->ev_keys || !s->ev_pages || !s->ev_results || !s->ev_put_results ||
	    !s->ev_ids)
		goto fail;
	s->kv = kv_open(cfg, idx);
	if (!s->kv) {
		rc = -errno;
		goto fail;
	}
	s->kv_keeps = kv_keeps_after_get(s->kv);
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
	free(s);
}
