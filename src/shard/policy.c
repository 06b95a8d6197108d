/* shard/policy: FIFO and miss-only S3-FIFO over intrusive index lists.
 *
 * Every id is on at most one of three circular lists (small, main, ghost),
 * linked by uint32 indices in one preallocated array, so each operation is
 * O(1) and never allocates. Links 0..2 are the lists' sentinels; id i lives
 * at link i + NSENT, which keeps list code free of head/tail special cases
 * and leaves the sentinels in place when policy_grow() extends the array. */
#include "shard/policy.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

/* Queue an id is on: the low bits of its flags byte. */
enum {
	Q_NONE = POLICY_Q_NONE,
	Q_SMALL = POLICY_Q_SMALL,
	Q_MAIN = POLICY_Q_MAIN,
	Q_GHOST = POLICY_Q_GHOST,
	Q_NR
};
#define FL_QMASK 0x3u
/* Set when policy_victim() took the id from main, so a failed eviction
 * (policy_reinsert) puts it back where it was instead of promoting a
 * one-touch page from small into main. */
#define FL_FROM_MAIN 0x4u
/* Bits 3..7: the main-queue epoch an id entered main in (mod 32), one epoch
 * per budget/8 pushes, so eviction can tell main's old half from its young
 * half without a stamp of its own per page (policy_is_cold). Coarse: an id
 * that lingers 32 epochs merely reads young again. */
#define FL_EPOCH_SHIFT 3
#define EPOCH_MOD 32u

#define NSENT 3u
#define SENT(q) ((uint32_t)(q) - 1u)
#define NODE(id) ((id) + NSENT)
/* Keeps NODE(id) within uint32 and POLICY_NONE out of the id space. */
#define POLICY_MAX_PAGES (UINT32_MAX - NSENT)

/* Sizing in percent of the budget B, chosen with the miss-only simulator of
 * tests/unit/test_policy.c on its workloads plus loops, Zipf working-set
 * shifts and phase changes (differences in hit-rate points):
 *  - ghost 25% beat 50% / 100% on every Zipf trace by +0.3..0.8 /
 *    +0.8..2.4 (100% also lost 10 on a 1.5 x B loop), tied on scans and
 *    was <= 0.2 slower on phase changes; 10% lost 0.9 on a Zipf
 *    working-set shift. A short ghost promotes only pages with a short
 *    reuse distance, which keeps main selective.
 *  - small 5..20% moved Zipf by at most 1 point; 10% is S3-FIFO's value.
 *  - Victims from main do NOT enter the ghost. With them Zipf gained
 *    +0.3..0.6, but a loop of 1.1..1.2 x B fell from 71..83% to 9% (main
 *    churns on its own refaults) and phase changes lost 0.3. Without them
 *    main is displaced only by pages that refaulted out of small. */
#define SMALL_PCT 10
#define GHOST_PCT 25

struct link {
	uint32_t prev, next;
};

struct policy {
	enum fm_policy_kind kind;
	uint32_t max_pages;
	uint32_t n[Q_NR];       /* ids per queue; n[Q_NONE] unused */
	uint64_t small_target;  /* small is evicted first while at or above this */
	uint64_t ghost_max;
	uint64_t budget;
	uint64_t main_pushes;   /* ids pushed onto main so far (the epoch clock) */
	uint64_t epoch_len;     /* pushes per epoch: budget / 8, at least 1 */
	struct link *links;     /* NSENT + max_pages */
	uint8_t *flags;         /* max_pages */
};

static inline unsigned id_queue(const struct policy *p, uint32_t id)
{
	return p->flags[id] & FL_QMASK;
}

static unsigned main_epoch(const struct policy *p)
{
	return (unsigned)((p->main_pushes / p->epoch_len) % EPOCH_MOD);
}

static void push_head(struct policy *p, unsigned q, uint32_t id)
{
	uint32_t s = SENT(q), x = NODE(id), h = p->links[s].next;
	uint8_t fl = (uint8_t)((p->flags[id] & ~FL_QMASK) | q);

	p->links[x].prev = s;
	p->links[x].next = h;
	p->links[h].prev = x;
	p->links[s].next = x;
	if (q == Q_MAIN) {
		fl = (uint8_t)((fl & ((1u << FL_EPOCH_SHIFT) - 1)) | (main_epoch(p) << FL_EPOCH_SHIFT));
		p->main_pushes++;
	}
	p->flags[id] = fl;
	p->n[q]++;
}

static void unlink_id(struct policy *p, uint32_t id)
{
	unsigned q = id_queue(p, id);
	uint32_t x = NODE(id), pv, nx;

	if (q == Q_NONE)
		return;
	pv = p->links[x].prev;
	nx = p->links[x].next;
	p->links[pv].next = nx;
	p->links[nx].prev = pv;
	p->flags[id] &= (uint8_t)~FL_QMASK;
	p->n[q]--;
}

static uint32_t pop_tail(struct policy *p, unsigned q)
{
	uint32_t s = SENT(q), x = p->links[s].prev, id;

	if (x == s)
		return POLICY_NONE;
	id = x - NSENT;
	unlink_id(p, id);
	return id;
}

static void ghost_trim(struct policy *p)
{
	while (p->n[Q_GHOST] > p->ghost_max)
		pop_tail(p, Q_GHOST);
}

struct policy *policy_create(enum fm_policy_kind kind, uint32_t max_pages, uint64_t budget)
{
	struct policy *p;

	if (kind != FM_POLICY_FIFO && kind != FM_POLICY_S3FIFO) {
		errno = EINVAL;
		return NULL;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		errno = ENOMEM;
		return NULL;
	}
	p->kind = kind;
	p->links = malloc(NSENT * sizeof(*p->links));
	if (!p->links) {
		free(p);
		errno = ENOMEM;
		return NULL;
	}
	for (uint32_t s = 0; s < NSENT; s++)
		p->links[s] = (struct link){ s, s };
	policy_set_budget(p, budget);
	if (max_pages) {
		int rc = policy_grow(p, max_pages);

		if (rc) {
			policy_destroy(p);
			errno = -rc;
			return NULL;
		}
	}
	return p;
}

void policy_destroy(struct policy *p)
{
	if (!p)
		return;
	free(p->links);
	free(p->flags);
	free(p);
}

int policy_grow(struct policy *p, uint32_t max_pages)
{
	struct link *links;
	uint8_t *flags;

	if (max_pages <= p->max_pages)
		return 0;
	if (max_pages > POLICY_MAX_PAGES)
		return -EINVAL;
	/* Each realloc leaves p valid on failure; a grown links array with
	 * the old max_pages is merely oversized. */
	links = realloc(p->links, ((size_t)NSENT + max_pages) * sizeof(*links));
	if (!links)
		return -ENOMEM;
	p->links = links;
	flags = realloc(p->flags, max_pages);
	if (!flags)
		return -ENOMEM;
	memset(flags + p->max_pages, 0, max_pages - p->max_pages);
	p->flags = flags;
	p->max_pages = max_pages;
	return 0;
}

void policy_set_budget(struct policy *p, uint64_t budget)
{
	p->small_target = FM_MAX(budget * SMALL_PCT / 100, 1);
	p->ghost_max = budget * GHOST_PCT / 100;
	p->budget = budget;
	p->epoch_len = FM_MAX(budget / 8, 1);
	ghost_trim(p);
}

static bool admit_to_main(const struct policy *p, unsigned q)
{
	if (p->kind == FM_POLICY_FIFO)
		return true;
	/* A fault on a ghost id is the only reuse signal a miss-only policy
	 * gets: the page came back soon after it was evicted. */
	if (q == Q_GHOST)
		return true;
	/* While the cache has room beyond the small share (warm-up, after a
	 * grow or drops), fill main directly. A hot page that stays resident
	 * never faults, so it never earns promotion: without this a working
	 * set loaded into an empty cache sits in small and the first scan
	 * longer than the ghost flushes it. Measured: hot set + scans
	 * 53.5% -> 66.9%, loops of 1.5..4 x B 0% -> 22..60%; Zipf within
	 * 0.05; phase changes up to -0.6 (main forgets an old set slowly). */
	return policy_resident(p) + p->small_target < p->budget;
}

void policy_admit(struct policy *p, uint32_t id)
{
	unsigned q;

	if (id >= p->max_pages)
		return;
	q = id_queue(p, id);
	if (q == Q_SMALL || q == Q_MAIN)
		return;
	unlink_id(p, id);
	p->flags[id] = 0;
	push_head(p, admit_to_main(p, q) ? Q_MAIN : Q_SMALL, id);
}

void policy_drop(struct policy *p, uint32_t id)
{
	if (id >= p->max_pages)
		return;
	unlink_id(p, id);
	p->flags[id] = 0;
}

/* id, just taken off queue q as a victim: remembered as policy_victim()
 * says (small -> ghost; main -> forgotten, marked for policy_reinsert). */
static void victim_taken(struct policy *p, unsigned q, uint32_t id)
{
	if (p->kind == FM_POLICY_FIFO)
		return;
	if (q == Q_MAIN) {
		p->flags[id] |= FL_FROM_MAIN;
		return;
	}
	if (p->ghost_max) {
		push_head(p, Q_GHOST, id);
		ghost_trim(p);
	}
}

uint32_t policy_victim(struct policy *p)
{
	unsigned q = Q_MAIN;
	uint32_t id;

	if (p->kind == FM_POLICY_S3FIFO && (p->n[Q_SMALL] >= p->small_target || p->n[Q_MAIN] == 0))
		q = Q_SMALL;
	id = pop_tail(p, q);
	if (id != POLICY_NONE)
		victim_taken(p, q, id);
	return id;
}

bool policy_is_cold(const struct policy *p, uint32_t id)
{
	unsigned age;

	if (id >= p->max_pages)
		return false;
	switch (id_queue(p, id)) {
	case Q_SMALL:
		return true;   /* admitted once, never proved hot */
	case Q_MAIN:
		age = (main_epoch(p) + EPOCH_MOD - (p->flags[id] >> FL_EPOCH_SHIFT)) % EPOCH_MOD;
		return (uint64_t)age * p->epoch_len * 2 >= p->n[Q_MAIN];
	default:
		return false;   /* not resident, or already taken */
	}
}

void policy_take(struct policy *p, uint32_t id)
{
	unsigned q;

	if (id >= p->max_pages)
		return;
	q = id_queue(p, id);
	if (q != Q_SMALL && q != Q_MAIN)
		return;
	unlink_id(p, id);
	victim_taken(p, q, id);
}

void policy_reinsert(struct policy *p, uint32_t id)
{
	unsigned q;

	if (id >= p->max_pages)
		return;
	q = id_queue(p, id);
	if (q == Q_SMALL || q == Q_MAIN)
		return;
	unlink_id(p, id);
	/* At the head, so the next victim is a different page. */
	if (p->kind == FM_POLICY_FIFO || (p->flags[id] & FL_FROM_MAIN))
		push_head(p, Q_MAIN, id);
	else
		push_head(p, Q_SMALL, id);
	p->flags[id] &= (uint8_t)~FL_FROM_MAIN;
}

uint64_t policy_resident(const struct policy *p)
{
	return (uint64_t)p->n[Q_SMALL] + p->n[Q_MAIN];
}

const char *policy_name(enum fm_policy_kind kind)
{
	switch (kind) {
	case FM_POLICY_FIFO:
		return "fifo";
	case FM_POLICY_S3FIFO:
		return "s3fifo";
	}
	return "unknown";
}

enum policy_queue policy_queue_of(const struct policy *p, uint32_t id)
{
	if (id >= p->max_pages)
		return POLICY_Q_NONE;
	return (enum policy_queue)id_queue(p, id);
}

size_t policy_bytes_per_page(void)
{
	return sizeof(struct link) + sizeof(uint8_t);
}
