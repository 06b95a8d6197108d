/* The shard's page-state machine on its own: one shard thread, no
 * dispatcher, no control plane, no daemon. The test is both: it pushes the
 * messages they would send (faults, ranges, budgets) and reads the shard's
 * answers (its counters and the per-region state counts), against a region
 * registered on a uffd in this very process.
 *
 *   NONE --fault--> RESIDENT --evict--> STORED | ZERO --fault--> RESIDENT
 *   any --REMOVE/UNMAP--> NONE (stored copy dropped)
 *   STORED --fault, store lost it--> POISONED --fault--> SIGBUS again
 *   (POISONED -> NONE by REMOVE needs the client's madvise, which waits for
 *   a dispatcher to read its event: covered by test_memcached)
 *   RESIDENT --evict refused (store or punch failed)--> RESIDENT
 *
 * The test never touches a page of the client mapping that is not
 * resident: with no dispatcher, nobody would serve the fault. It writes
 * through a second, unregistered mapping of the memfd instead. */
#include <criterion/criterion.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "config_params.h"
#include "kv/kv.h"
#include "base/base.h"
#include "base/failpoint.h"
#include "ctl/config.h"
#include "proto/proto.h"
#include "ring/ring.h"
#include "shard/shard.h"
#include "uffd/uffd.h"
#include "memcached_harness.h"

#define PAGE ((uint64_t)FM_PAGE_SIZE)
#define NPAGES (2 * FM_STRIPE_PAGES)

struct rig {
	struct shard *sh;
	struct fm_doorbell bell;
	struct uffd_region r, other;   /* other: never added (stale faults) */
	uint8_t *mem;                  /* the client's mapping, registered */
	uint8_t *poke;                 /* another mapping of the memfd, for writes */
	uint64_t request;
};

static void rig_start(struct rig *g, const struct fm_config *cfg)
{
	struct uffdio_api api = { .api = UFFD_API, .features = FM_UFFD_FEATURES };
	struct uffd_region *r = &g->r;

	memset(g, 0, sizeof(*g));
	cr_assert_eq(fm_doorbell_init(&g->bell), 0);
	g->bell.sleeping = 1;   /* replies ring it; the test polls instead */
	g->sh = shard_create_cfg(cfg, 0, 1000, &g->bell);
	cr_assert_not_null(g->sh, "shard_create: %s", strerror(errno));
	cr_assert_eq(shard_start(g->sh), 0);

	r->memfd = memfd_create("shard-test", MFD_CLOEXEC);
	cr_assert_eq(ftruncate(r->memfd, (off_t)(NPAGES * PAGE)), 0);
	g->mem = mmap(NULL, NPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd, 0);
	g->poke = mmap(NULL, NPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd, 0);
	r->view = mmap(NULL, NPAGES * PAGE, PROT_READ, MAP_SHARED, r->memfd, 0);
	cr_assert(g->mem != MAP_FAILED && g->poke != MAP_FAILED && r->view != MAP_FAILED);
	cr_assert_geq(r->uffd = uffd_open(), 0);
	cr_assert_eq(ioctl(r->uffd, UFFDIO_API, &api), 0);
	struct uffdio_register reg = { .range = { (uint64_t)(uintptr_t)g->mem, NPAGES * PAGE },
				       .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP };
	cr_assert_eq(ioctl(r->uffd, UFFDIO_REGISTER, &reg), 0);
	r->base = (uint64_t)(uintptr_t)g->mem;
	r->npages = NPAGES;
	r->id = 5;
	r->slot = 3;
	g->other = *r;
	g->other.slot = 4;
	g->other.id = 6;
}

static struct fm_msg await_done(struct rig *g, uint64_t request)
{
	struct fm_msg m;

	for (unsigned attempt = 0;;) {
		if (fm_ring_pop(shard_reply_ring(g->sh), &m)) {
			cr_assert_eq(m.type, FM_MSG_DONE);
			cr_assert_eq(fm_msg_request(&m), request, "a reply out of order: %lu (to %u), want %lu", (unsigned long)fm_msg_request(&m), m.flags, (unsigned long)request);
			return m;
		}
		fm_ring_full_wait(&attempt);
	}
}

static void push(struct rig *g, struct fm_ring *ring, const struct fm_msg *m)
{
	for (unsigned attempt = 0; !fm_ring_push(ring, m);)
		fm_ring_full_wait(&attempt);
	fm_doorbell_ring(shard_doorbell(g->sh));
}

/* A data-ring request, answered once every message before it is handled:
 * the ring is FIFO and the shard takes it in order. */
static struct fm_msg data_req(struct rig *g, uint16_t type, struct uffd_region *r)
{
	struct fm_msg m = { .type = type, .region = { .region = r, .request = ++g->request } };

	push(g, shard_data_ring(g->sh), &m);
	return await_done(g, g->request);
}

/* Everything pushed on the data ring so far has been handled: a REGION_DEL
 * of a region the shard does not have is a no-op that still answers. */
static void barrier(struct rig *g)
{
	data_req(g, FM_MSG_REGION_DEL, &g->other);
}

static void fault(struct rig *g, struct uffd_region *r, uint64_t page, uint32_t flags)
{
	struct fm_msg m = { .type = FM_MSG_FAULT, .flags = flags,
			    .fault = { .region = r, .page = page, .read_ns = fm_now_ns() } };

	push(g, shard_data_ring(g->sh), &m);
}

static void range(struct rig *g, uint16_t type, uint64_t first, uint64_t count)
{
	struct fm_msg m = { .type = type, .range = { .region = &g->r, .first = first, .count = count } };

	push(g, shard_data_ring(g->sh), &m);
	barrier(g);
}

/* A control request after the data ring is drained. */
static struct fm_msg ctl_req(struct rig *g, uint16_t type, uint64_t a, void *out)
{
	struct fm_msg m = { .type = type };

	barrier(g);
	if (type == FM_MSG_STATS || type == FM_MSG_REGION_STATS)
		m.fill = (typeof(m.fill)){ .out = out, .request = ++g->request };
	else
		m.pages = (typeof(m.pages)){ .pages = a, .request = ++g->request };
	push(g, shard_ctl_ring(g->sh), &m);
	return await_done(g, g->request);
}

static struct shard_stats stats(struct rig *g)
{
	struct shard_stats st;

	ctl_req(g, FM_MSG_STATS, 0, &st);
	/* every fault ends in exactly one outcome (shard.h) */
	cr_assert_eq(st.faults, st.zero_fills + st.fetches + st.dup_faults + st.wp_faults +
					st.poison_faults + st.fault_errors);
	return st;
}

static struct shard_region_stats region_stats(struct rig *g)
{
	static struct shard_region_stats all[FM_MAX_REGIONS];

	memset(all, 0, sizeof(all));
	ctl_req(g, FM_MSG_REGION_STATS, 0, all);
	cr_assert_eq(all[g->r.slot].present, 1);
	return all[g->r.slot];
}

#define expect_states(g, res, sto, zer)                                                      \
	do {                                                                                \
		struct shard_region_stats rs_ = region_stats(g);                            \
		cr_expect_eq(rs_.resident, (res), "resident %lu, want %lu",                 \
			     (unsigned long)rs_.resident, (unsigned long)(res));             \
		cr_expect_eq(rs_.stored, (sto), "stored %lu, want %lu",                     \
			     (unsigned long)rs_.stored, (unsigned long)(sto));               \
		cr_expect_eq(rs_.zero, (zer), "zero %lu, want %lu", (unsigned long)rs_.zero, \
			     (unsigned long)(zer));                                          \
	} while (0)

static uint64_t stamp_of(uint64_t page, uint64_t round)
{
	return fm_mix64(page << 8 | round) | 1;   /* never zero */
}

static void stamp(struct rig *g, uint64_t page, uint64_t round)
{
	uint64_t v = stamp_of(page, round);

	memcpy(g->poke + page * PAGE, &v, sizeof(v));
	memcpy(g->poke + page * PAGE + PAGE - sizeof(v), &v, sizeof(v));
}

/* The page's contents as the client would read them (only for resident
 * pages: reading a hole through a mapping would fill it). */
static bool holds(struct rig *g, uint64_t page, uint64_t round)
{
	uint64_t v = round ? stamp_of(page, round) : 0, a, b;

	memcpy(&a, g->r.view + page * PAGE, sizeof(a));
	memcpy(&b, g->r.view + page * PAGE + PAGE - sizeof(b), sizeof(b));
	return a == v && b == v;
}

/* Pages [first, first + n) made resident by faults, then written. */
static void resident_stamped(struct rig *g, uint64_t first, uint64_t n, uint64_t round)
{
	for (uint64_t p = first; p < first + n; p++)
		fault(g, &g->r, p, 0);
	barrier(g);
	for (uint64_t p = first; p < first + n; p++)
		stamp(g, p, round);
}

static void rig_stop(struct rig *g)
{
	struct fm_msg m = { .type = FM_MSG_STOP };

	data_req(g, FM_MSG_REGION_DEL, &g->r);
	m.any.request = ++g->request;
	push(g, shard_ctl_ring(g->sh), &m);
	await_done(g, g->request);
	shard_destroy(g->sh);
	fm_doorbell_destroy(&g->bell);
	/* Close the uffd first: an unmap of a registered range would wait for
	 * a reader of its UNMAP event, and there is none. */
	close(g->r.uffd);
	munmap(g->mem, NPAGES * PAGE);
	munmap(g->poke, NPAGES * PAGE);
	munmap(g->r.view, NPAGES * PAGE);
	close(g->r.memfd);
}

static void local_config(struct fm_config *cfg)
{
	fm_config_defaults(cfg);
	cfg->shard_count = 1;
	cfg->shard_cpus_n = 0;
	cfg->spin_us = 0;
	cfg->evict_batch = 4;
	cfg->policy = FM_POLICY_FIFO;
	/* The state machine page by page: no prefetch moving pages ahead of
	 * the faults the test sends (test_prefetch*.c covers prefetch). */
	cfg->prefetch_pages = 0;
	snprintf(cfg->store_backend, sizeof(cfg->store_backend), "local");
}

Test(shard, every_transition_of_the_page_state_machine, .timeout = 60)
{
	struct fm_config cfg;
	struct rig g;
	struct shard_stats st;

	local_config(&cfg);
	rig_start(&g, &cfg);
	cr_assert_eq(data_req(&g, FM_MSG_REGION_ADD, &g.r).done.result, 0);
	cr_expect_eq(data_req(&g, FM_MSG_REGION_ADD, &g.r).done.result, -EEXIST, "added twice");
	expect_states(&g, 0, 0, 0);

	/* NONE -> RESIDENT: first touches are zero-filled */
	for (uint64_t p = 0; p < 10; p++)
		fault(&g, &g.r, p, 0);
	st = stats(&g);
	cr_expect_eq(st.zero_fills, 10);
	cr_expect_eq(st.resident, 10);
	cr_expect_eq(st.resident_max, 10);
	cr_expect_eq(st.tracked, FM_STRIPE_PAGES, "one stripe has state, the untouched one none");
	expect_states(&g, 10, 0, 0);
	for (uint64_t p = 0; p < 10; p++)
		cr_assert(holds(&g, p, 0));

	/* RESIDENT -> STORED (data) and RESIDENT -> ZERO (all zero, not stored) */
	for (uint64_t p = 0; p < 5; p++)
		stamp(&g, p, 1);
	cr_expect_eq(ctl_req(&g, FM_MSG_SET_BUDGET, 0, NULL).done.result, 0);
	st = stats(&g);
	cr_expect_eq(st.evictions, 10);
	cr_expect_eq(st.store_puts, 5);
	cr_expect_eq(st.evict_zero, 5);
	cr_expect_eq(st.store_pages, 5);
	cr_expect_eq(st.resident, 0);
	cr_expect_eq(st.resident_max, 0, "the high-water mark restarts at a new budget");
	expect_states(&g, 0, 5, 5);

	/* STORED -> RESIDENT (fetched, same bytes) and ZERO -> RESIDENT */
	cr_expect_eq(ctl_req(&g, FM_MSG_SET_BUDGET, 100, NULL).done.result, 0);
	for (uint64_t p = 0; p < 10; p++)
		fault(&g, &g.r, p, FM_FAULT_WRITE);
	st = stats(&g);
	cr_expect_eq(st.fetches, 5);
	cr_expect_eq(st.zero_fills, 15);
	cr_expect_eq(st.store_pages, 0, "the embedded store drops a copy once fetched");
	cr_expect_eq(st.resident_max, 10);
	expect_states(&g, 10, 0, 0);
	for (uint64_t p = 0; p < 10; p++)
		cr_assert(holds(&g, p, p < 5 ? 1 : 0), "page %lu came back wrong", (unsigned long)p);

	/* RESIDENT stays RESIDENT: a second thread's fault, a write-protect
	 * fault; nothing changes */
	fault(&g, &g.r, 0, 0);
	fault(&g, &g.r, 1, FM_FAULT_WRITE | FM_FAULT_WP);
	st = stats(&g);
	cr_expect_eq(st.dup_faults, 1);
	cr_expect_eq(st.wp_faults, 1);
	expect_states(&g, 10, 0, 0);
	cr_assert(holds(&g, 0, 1) && holds(&g, 1, 1));

	/* STORED and ZERO -> NONE by REMOVE, the stored copy dropped */
	cr_expect_eq(ctl_req(&g, FM_MSG_SET_BUDGET, 0, NULL).done.result, 0);
	expect_states(&g, 0, 5, 5);
	range(&g, FM_MSG_REMOVE, 0, 3);
	st = stats(&g);
	cr_expect_eq(st.discarded, 3);
	cr_expect_eq(st.store_pages, 2);
	expect_states(&g, 0, 2, 5);
	/* ... and by UNMAP; NONE pages are left alone */
	range(&g, FM_MSG_UNMAP, 0, 10);
	st = stats(&g);
	cr_expect_eq(st.discarded, 10);
	cr_expect_eq(st.store_pages, 0);
	expect_states(&g, 0, 0, 0);

	/* NONE again: a discarded page reads zero, not its old bytes */
	cr_expect_eq(ctl_req(&g, FM_MSG_SET_BUDGET, 100, NULL).done.result, 0);
	fault(&g, &g.r, 3, 0);
	st = stats(&g);
	cr_expect_eq(st.zero_fills, 16);
	expect_states(&g, 1, 0, 0);
	cr_assert(holds(&g, 3, 0));

	/* REMOVE of a resident page still in the memfd keeps it: only the
	 * client may free what it may still write */
	stamp(&g, 3, 2);
	range(&g, FM_MSG_REMOVE, 3, 1);
	expect_states(&g, 1, 0, 0);
	cr_assert(holds(&g, 3, 2));

	/* faults for a region this shard does not serve, or past its end */
	fault(&g, &g.other, 0, 0);
	fault(&g, &g.r, NPAGES, 0);
	st = stats(&g);
	cr_expect_eq(st.stale_faults, 2);
	cr_expect_eq(st.faults, 10 + 10 + 2 + 1, "stale faults are not served faults");
	rig_stop(&g);
}

/* RESIDENT -> RESIDENT when the hole punch fails: the page is still the
 * client's live copy, so it stays resident and tracked, and the store keeps
 * no orphan copy. */
Test(shard, a_failed_punch_keeps_the_page_resident, .timeout = 60)
{
	struct fm_config cfg;
	struct rig g;
	struct shard_stats st;

	cr_assert_eq(fm_failpoints_parse("evict.punch=EIO"), 0);
	local_config(&cfg);
	rig_start(&g, &cfg);
	cr_assert_eq(data_req(&g, FM_MSG_REGION_ADD, &g.r).done.result, 0);
	resident_stamped(&g, 0, 4, 1);
	cr_expect_eq(ctl_req(&g, FM_MSG_SET_BUDGET, 0, NULL).done.result, -ENOSPC,
		     "the budget cannot be met");
	st = stats(&g);
	cr_expect_eq(st.evictions, 0);
	cr_expect_geq(st.punch_errors, 1);
	cr_expect_eq(st.store_pages, 0, "a copy of a page that stayed was left in the store");
	expect_states(&g, 4, 0, 0);
	for (uint64_t p = 0; p < 4; p++)
		cr_assert(holds(&g, p, 1));
	rig_stop(&g);
}

/* With a store that keeps copies (memcached): an unchanged page is evicted
 * without a write (clean), a store that refuses keeps the page RESIDENT,
 * and STORED -> POISONED when the store lost the page: every touch gets
 * SIGBUS, never zeros. */
Test(shard, a_lost_page_is_poisoned_and_a_refused_one_kept, .timeout = 90)
{
	struct fm_config cfg;
	struct rig g;
	struct shard_stats st;
	struct mcd srv;

	cr_assert_eq(mcd_start(&srv, 16, false), 0, "cannot start memcached (scripts/test installs it)");
	local_config(&cfg);
	snprintf(cfg.store_backend, sizeof(cfg.store_backend), "memcached");
	snprintf(cfg.mc.servers, sizeof(cfg.mc.servers), "%s", srv.addr);
	cfg.mc.retries = 0;
	rig_start(&g, &cfg);
	cr_assert_eq(data_req(&g, FM_MSG_REGION_ADD, &g.r).done.result, 0);
	resident_stamped(&g, 0, 8, 1);
	cr_expect_eq(ctl_req(&g, FM_MSG_SET_BUDGET, 0, NULL).done.result, 0);
	st = stats(&g);
	cr_expect_eq(st.store_puts, 8);
	expect_states(&g, 0, 8, 0);

	/* fetched and unchanged: the kept copy is confirmed, not rewritten */
	cr_expect_eq(ctl_req(&g, FM_MSG_SET_BUDGET, 100, NULL).done.result, 0);
	for (uint64_t p = 0; p < 4; p++)
		fault(&g, &g.r, p, 0);
	cr_expect_eq(ctl_req(&g, FM_MSG_SET_BUDGET, 0, NULL).done.result, 0);
	st = stats(&g);
	cr_expect_eq(st.fetches, 4);
	cr_expect_eq(st.evict_clean, 4);
	cr_expect_eq(st.store_puts, 8);
	expect_states(&g, 0, 8, 0);

	/* the store loses everything */
	mcd_kill(&srv, SIGKILL);
	cr_expect_eq(ctl_req(&g, FM_MSG_SET_BUDGET, 100, NULL).done.result, 0);
	fault(&g, &g.r, 0, 0);
	fault(&g, &g.r, 0, 0);   /* touched again: SIGBUS again, no second fetch */
	st = stats(&g);
	cr_expect_eq(st.poisoned, 1);
	cr_expect_eq(st.poison_faults, 2);
	cr_expect_eq(st.fetches, 4);
	expect_states(&g, 0, 7, 0);   /* POISONED is counted in none of the three */

	/* a refused eviction: the page stays RESIDENT with its bytes */
	resident_stamped(&g, 100, 1, 3);
	cr_expect_eq(ctl_req(&g, FM_MSG_SET_BUDGET, 0, NULL).done.result, -ENOSPC);
	st = stats(&g);
	cr_expect_geq(st.evict_refused, 1);   /* and again after each backoff */
	expect_states(&g, 1, 7, 0);
	cr_assert(holds(&g, 100, 3));

	rig_stop(&g);
	mcd_stop(&srv);
}

/* Whether the memfd holds `page` (resident through a fault), without
 * touching either mapping. */
static bool in_memfd(struct rig *g, uint64_t page)
{
	unsigned char v = 0;

	cr_assert_eq(mincore(g->poke + page * PAGE, PAGE, &v), 0);
	return v & 1;
}

/* A control plane that stops reading replies must not stop the shard: with
 * the reply ring full, replies are parked (in order, none lost) and faults
 * are still served; once the ring is drained every reply arrives. */
Test(shard, a_full_reply_ring_parks_replies_and_faults_go_on, .timeout = 120)
{
	struct fm_config cfg;
	struct rig g;
	const unsigned nreq = 700;   /* well past the 256-slot reply ring */
	uint64_t first;

	local_config(&cfg);
	rig_start(&g, &cfg);
	data_req(&g, FM_MSG_REGION_ADD, &g.r);
	first = g.request + 1;
	for (unsigned i = 0; i < nreq; i++) {
		struct fm_msg m = { .type = FM_MSG_REGION_DEL,
				    .region = { .region = &g.other, .request = ++g.request } };

		push(&g, shard_data_ring(g.sh), &m);
	}
	/* Nobody reads the replies; a fault behind them is still served. */
	cr_assert(!in_memfd(&g, 7));
	fault(&g, &g.r, 7, 0);
	uint64_t deadline = fm_now_ns() + 60ull * 1000000000ull;

	while (!in_memfd(&g, 7)) {
		cr_assert_lt(fm_now_ns(), deadline, "the shard stopped at a full reply ring");
		usleep(1000);
	}
	/* Every reply, in order, once the ring is read again. */
	for (uint64_t r = first; r < first + nreq; r++)
		await_done(&g, r);
	struct shard_stats st = stats(&g);

	cr_assert_gt(st.replies_parked, 0);
	cr_assert_eq(st.faults, 1);
	rig_stop(&g);
}

/* ---- fault batching (memory.fault_batch) ---- */

/* A stand-in for the dispatcher: reads the rig's uffd and pushes each
 * page fault to the shard, until told to stop. */
struct mini_dispatch {
	struct rig *g;
	volatile bool stop;
	uint64_t pushed;
};

static void *mini_dispatch_main(void *arg)
{
	struct mini_dispatch *d = arg;
	struct rig *g = d->g;

	while (!d->stop) {
		struct pollfd pfd = { .fd = g->r.uffd, .events = POLLIN };
		struct uffd_msg msg;

		if (poll(&pfd, 1, 10) <= 0)
			continue;
		if (read(g->r.uffd, &msg, sizeof(msg)) != sizeof(msg) ||
		    msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		fault(g, &g->r, (msg.arg.pagefault.address - g->r.base) / PAGE,
		      msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE ? FM_FAULT_WRITE : 0);
		d->pushed++;
	}
	return NULL;
}

#define READERS 8
#define PER_READER 6

struct reader {
	struct rig *g;
	unsigned id;
	uint64_t got[PER_READER];   /* the first word of each page, as read */
};

/* Reader i reads pages i, i + READERS, ...: real faults on the client
 * mapping, each blocking until the shard serves it. */
static void *reader_main(void *arg)
{
	struct reader *rd = arg;

	for (unsigned k = 0; k < PER_READER; k++)
		memcpy(&rd->got[k], rd->g->mem + (uint64_t)(k * READERS + rd->id) * PAGE,
		       sizeof(rd->got[k]));
	return NULL;
}

/* Several threads fault distinct stored pages while the shard stalls on
 * each stored-page fault (shard.fault_stall): the faults pile up, and with
 * batching on they are read together. Every byte comes back either way. */
static void readers_refault(unsigned batch)
{
	const uint64_t npg = READERS * PER_READER;
	struct fm_config cfg;
	struct rig g;
	struct shard_stats st;
	struct mini_dispatch d = { .g = &g };
	struct reader rd[READERS];
	pthread_t th[READERS], disp;

	cr_assert_eq(fm_failpoints_parse("shard.fault_stall=EIO"), 0);
	local_config(&cfg);
	cfg.fault_batch = batch;
	rig_start(&g, &cfg);
	cr_assert_eq(data_req(&g, FM_MSG_REGION_ADD, &g.r).done.result, 0);
	resident_stamped(&g, 0, npg, 7);
	cr_assert_eq(ctl_req(&g, FM_MSG_SET_BUDGET, 0, NULL).done.result, 0);
	expect_states(&g, 0, npg, 0);
	cr_assert_eq(ctl_req(&g, FM_MSG_SET_BUDGET, 1000, NULL).done.result, 0);

	pthread_create(&disp, NULL, mini_dispatch_main, &d);
	for (unsigned i = 0; i < READERS; i++) {
		rd[i] = (struct reader){ .g = &g, .id = i };
		pthread_create(&th[i], NULL, reader_main, &rd[i]);
	}
	for (unsigned i = 0; i < READERS; i++)
		pthread_join(th[i], NULL);
	d.stop = true;
	pthread_join(disp, NULL);

	/* every read against the mirror (the stamps written before eviction) */
	for (unsigned i = 0; i < READERS; i++)
		for (unsigned k = 0; k < PER_READER; k++) {
			uint64_t p = (uint64_t)k * READERS + i;

			cr_expect_eq(rd[i].got[k], stamp_of(p, 7), "page %lu read %#lx, want %#lx",
				     (unsigned long)p, (unsigned long)rd[i].got[k],
				     (unsigned long)stamp_of(p, 7));
		}
	for (uint64_t p = 0; p < npg; p++)
		cr_expect(holds(&g, p, 7), "page %lu came back wrong", (unsigned long)p);
	st = stats(&g);
	cr_expect_eq(st.fetches, npg);
	cr_expect_eq(st.poisoned, 0);
	cr_expect_eq(st.fault_errors, 0);
	expect_states(&g, npg, 0, 0);
	fprintf(stderr, "fault_batch %u: %lu faults, %lu batches, %lu batched\n", batch,
		(unsigned long)st.faults, (unsigned long)st.fault_batches,
		(unsigned long)st.batched_get_faults);
	if (batch) {
		cr_expect_gt(st.fault_batches, 0, "faults piled up, yet no batched read");
		cr_expect_geq(st.batched_get_faults, 2 * st.fault_batches);
		cr_expect_leq(st.batched_get_faults, st.fault_batches * (batch + 1));
	} else {
		cr_expect_eq(st.fault_batches, 0);
		cr_expect_eq(st.batched_get_faults, 0);
	}
	rig_stop(&g);
}

Test(shard, queued_stored_faults_are_read_in_one_batch, .timeout = 60)
{
	readers_refault(16);
}

Test(shard, batches_of_two_still_serve_every_fault, .timeout = 60)
{
	readers_refault(1);
}

Test(shard, fault_batch_zero_reads_page_by_page, .timeout = 60)
{
	readers_refault(0);
}

/* The look-ahead never passes a discard: a fault queued behind a REMOVE
 * of its page reads zero, not the discarded bytes. A page faulted twice in
 * one batch is read once, the second fault a duplicate. */
Test(shard, a_batch_never_overtakes_a_discard, .timeout = 60)
{
	struct fm_config cfg;
	struct rig g;
	struct shard_stats st;
	struct fm_msg rm = { .type = FM_MSG_REMOVE, .range = { .region = NULL, .first = 5, .count = 1 } };

	cr_assert_eq(fm_failpoints_parse("shard.fault_stall=EIO"), 0);
	local_config(&cfg);
	rig_start(&g, &cfg);
	rm.range.region = &g.r;
	cr_assert_eq(data_req(&g, FM_MSG_REGION_ADD, &g.r).done.result, 0);
	resident_stamped(&g, 0, 8, 3);
	cr_assert_eq(ctl_req(&g, FM_MSG_SET_BUDGET, 0, NULL).done.result, 0);
	cr_assert_eq(ctl_req(&g, FM_MSG_SET_BUDGET, 1000, NULL).done.result, 0);

	/* all queued before the shard looks (the first one stalls it) */
	fault(&g, &g.r, 0, 0);
	fault(&g, &g.r, 1, 0);
	fault(&g, &g.r, 1, 0);
	fault(&g, &g.r, 2, 0);
	push(&g, shard_data_ring(g.sh), &rm);
	fault(&g, &g.r, 5, 0);
	fault(&g, &g.r, 6, 0);
	barrier(&g);
	for (uint64_t p = 0; p < 3; p++)
		cr_expect(holds(&g, p, 3), "page %lu came back wrong", (unsigned long)p);
	cr_expect(holds(&g, 5, 0), "a fault overtook the discard of its page");
	cr_expect(holds(&g, 6, 3));
	st = stats(&g);
	cr_expect_eq(st.discarded, 1);
	cr_expect_eq(st.dup_faults, 1);
	cr_expect_eq(st.fetches, 4);
	cr_expect_eq(st.zero_fills, 8 + 1);
	cr_expect_geq(st.fault_batches, 1);
	cr_expect_geq(st.batched_get_faults, 3, "pages 0, 1, 2 were queued together");
	rig_stop(&g);
}

/* Over memcached, with one of two servers killed while faults wait: pages
 * of the live server are served by the batch with their bytes, pages of the
 * dead one go to the single path, which parks them while the store still
 * retries the server (retries > 0) and poisons them once it gives up, and
 * first touches in between are zero-filled. Nothing hangs, nothing stored
 * comes back as a zero page. */
static void killed_server(unsigned retries)
{
	struct fm_config cfg;
	struct rig g;
	struct shard_stats st;
	struct mcd srv[2];
	struct kv_store *kv;
	int own[64];
	uint64_t live = 0, dead = 0;

	cr_assert_eq(fm_failpoints_parse("shard.fault_stall=EIO"), 0);
	for (unsigned i = 0; i < 2; i++)
		cr_assert_eq(mcd_start(&srv[i], 16, false), 0, "cannot start memcached (scripts/test installs it)");
	local_config(&cfg);
	snprintf(cfg.store_backend, sizeof(cfg.store_backend), "memcached");
	snprintf(cfg.mc.servers, sizeof(cfg.mc.servers), "%s,%s", srv[0].addr, srv[1].addr);
	cfg.mc.retries = retries;
	cfg.mc.retry_delay_ms = 5;
	cfg.mc.io_timeout_ms = 500;
	kv = kv_open_cfg(&cfg, 0);
	cr_assert_not_null(kv);
	for (uint64_t p = 0; p < 64; p++)
		own[p] = kv_memcached_server_of(kv, (struct kv_key){ 5, p }, 0);
	kv_close(kv);
	rig_start(&g, &cfg);
	cr_assert_eq(data_req(&g, FM_MSG_REGION_ADD, &g.r).done.result, 0);
	resident_stamped(&g, 0, 64, 4);
	cr_assert_eq(ctl_req(&g, FM_MSG_SET_BUDGET, 0, NULL).done.result, 0);
	expect_states(&g, 0, 64, 0);
	cr_assert_eq(ctl_req(&g, FM_MSG_SET_BUDGET, 1000, NULL).done.result, 0);

	mcd_kill(&srv[1], SIGKILL);
	/* every stored page, a first touch after every fourth */
	for (uint64_t p = 0; p < 64; p++) {
		fault(&g, &g.r, p, 0);
		if (p % 4 == 3)
			fault(&g, &g.r, 600 + p, 0);
		live += own[p] == 0;
		dead += own[p] == 1;
	}
	barrier(&g);
	cr_assert_gt(live, 0);
	cr_assert_gt(dead, 0);
	/* parked faults are served again every millisecond until given up */
	for (uint64_t deadline = fm_now_ns() + 30000000000ull;;) {
		st = stats(&g);
		if (st.poison_faults >= dead)
			break;
		cr_assert_lt(fm_now_ns(), deadline, "parked faults never given up: %lu of %lu",
			     (unsigned long)st.poison_faults, (unsigned long)dead);
		usleep(10000);
	}
	for (uint64_t p = 0; p < 64; p++) {
		if (own[p] == 0)
			cr_expect(holds(&g, p, 4), "page %lu (live server) came back wrong", (unsigned long)p);
		else
			cr_expect(!in_memfd(&g, p), "page %lu (dead server) was filled", (unsigned long)p);
	}
	for (uint64_t p = 3; p < 64; p += 4)
		cr_expect(holds(&g, 600 + p, 0));
	st = stats(&g);
	cr_expect_eq(st.fetches, live);
	cr_expect_eq(st.poisoned, dead);
	cr_expect_eq(st.poison_faults, dead);
	cr_expect_eq(st.zero_fills, 64 + 16);
	cr_expect_geq(st.fault_batches, 1);
	cr_expect_gt(st.batched_get_faults, 0);
	cr_expect_leq(st.batched_get_faults, live);
	if (retries)
		cr_expect_gt(st.parked, 0, "the store still retried: the dead pages wait parked");
	fprintf(stderr, "killed server, retries %u: %lu live, %lu dead, %lu batches, %lu batched, "
		"%lu parkings\n", retries, (unsigned long)live, (unsigned long)dead,
		(unsigned long)st.fault_batches, (unsigned long)st.batched_get_faults,
		(unsigned long)st.parked);
	rig_stop(&g);
	mcd_stop(&srv[0]);
	mcd_stop(&srv[1]);
}

Test(shard, a_killed_server_fails_its_pages_and_the_batch_serves_the_rest, .timeout = 120)
{
	killed_server(0);
}

Test(shard, a_killed_servers_pages_park_while_the_batch_serves_the_rest, .timeout = 120)
{
	killed_server(3);
}
