/* shard/drain: moving this shard's stored pages off a drained store server
 * (FM_MSG_DRAIN, shard.h). On the shard thread, between fault bursts: a
 * step is bounded, so a fault waits at most one step. */
#include "shard/shard_priv.h"

#include <errno.h>
#include <string.h>

#include "base/failpoint.h"
#include "base/log.h"

#define DRAIN_STEP_MOVES 256   /* a round trip or three each */

struct rehome_check {
	const struct page_hash_key *key;
	uint64_t want;
};

static bool rehome_ok(const void *page, void *arg)
{
	const struct rehome_check *c = arg;

	return page_hash(c->key, page) == c->want;
}

/* One page with a store copy. A stored page's copy is checked against its
 * recorded hash, so a stale copy is never what moves. A resident page's
 * copy only saves a write: an unverified one may move (it stays recorded
 * unsynced and is rewritten at the next eviction), and one found nowhere
 * is simply forgotten. */
static void drain_page(struct shard *s, struct shard_region *sr, uint32_t id, uint64_t page,
		       uint64_t *moved)
{
	uint8_t st = s->pt.state[id] & PS_MASK;
	struct rehome_check chk = { &sr->hkey, 0 };
	bool checked;
	int rc;

	if (st == PS_POISONED || (st != PS_STORED && !sc_has(&s->sc, id)))
		return;
	checked = sc_synced_hash(&s->sc, id, &chk.want);
	rc = kv_rehome(s->kv, (struct kv_key){ sr->r->id, page }, checked ? rehome_ok : NULL, &chk,
		       s->bounce);
	if (rc == 0) {
		(*moved)++;
		s->st.drain_moved++;
		(void)fm_failpoint(FM_FP_DRAIN_AFTER_MOVE);
		return;
	}
	if (rc == 1)
		return;
	if (rc == -ENOENT && st != PS_STORED) {
		sc_clear(&s->sc, id);
		return;
	}
	s->st.drain_errors++;
	s->st.store_errors++;
	fm_log_ratelimited(FM_LOG_ERROR, "shard %u: drain: region %llx page %llu not moved: %s",
			   s->idx, (unsigned long long)sr->r->id, (unsigned long long)page,
			   strerror(-rc));
}

int shard_drain_step(struct shard *s, uint32_t flags, uint64_t budget, uint64_t *moved)
{
	*moved = 0;
	if (flags & FM_DRAIN_FINISH) {
		kv_forget_previous(s->kv);
		return 1;
	}
	if (flags & FM_DRAIN_BEGIN)
		s->drain_slot = 0, s->drain_ls = 0, s->drain_off = 0;
	for (; s->drain_slot < FM_MAX_REGIONS; s->drain_slot++, s->drain_ls = 0, s->drain_off = 0) {
		struct shard_region *sr = s->regions[s->drain_slot];

		if (!sr)
			continue;
		for (; s->drain_ls < sr->pt.nstripes; s->drain_ls++, s->drain_off = 0) {
			uint32_t c = sr->pt.chunk[s->drain_ls];
			uint64_t first;

			if (c == 0)
				continue;   /* never touched: nothing stored */
			first = s->pt.owner[c].first_page;
			for (; s->drain_off < FM_STRIPE_PAGES; s->drain_off++) {
				uint32_t id = (c << FM_STRIPE_SHIFT) | s->drain_off;

				/* a step's bound: ids looked at, pages moved */
				if (budget == 0 || *moved >= DRAIN_STEP_MOVES)
					return 0;
				budget--;
				if (first + s->drain_off < sr->pt.npages)
					drain_page(s, sr, id, first + s->drain_off, moved);
			}
		}
	}
	return 1;
}
