/* Prefetch through the real daemon: writer threads scanning a region 8x the
 * budget, sequentially or strided, so pages are evicted and prefetched while
 * they are written, each read checked against a mirror (tests/mirror.h). */
#include <criterion/criterion.h>
#include <pthread.h>

#include "base/base.h"
#include "client/fluidmem.h"
#include "harness.h"
#include "mirror.h"

#define PAGES 4096u
#define THREADS 4u

static struct td fmd;

/* Every test ends so: no page was poisoned, no fault failed, and the
 * daemon stops cleanly once the client is gone. */
static void end_clean(struct fm_region *r, struct fm_client *c)
{
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	cr_expect_eq(td_stat(&fmd, "fault_errors"), 0);
	fm_region_destroy(r);
	fm_disconnect(c);
	td_expect_stop(&fmd);
}

struct scanner {
	uint8_t *base;
	unsigned id;
	unsigned stride;     /* in the thread's own pages */
	unsigned passes;
	uint32_t *mirror;
	uint64_t seed;
	uint64_t errors;
};

/* Thread id owns pages k * THREADS + id; it visits its k in strided order
 * (every stride-th, then the next offset), reading and checking or
 * writing each, so neighbouring pages fault from different threads. */
static void *scan_main(void *arg)
{
	struct scanner *s = arg;
	uint64_t mine = PAGES / THREADS, x = s->seed;

	for (unsigned pass = 0; pass < s->passes; pass++)
		for (uint64_t off = 0; off < s->stride; off++)
			for (uint64_t k = off; k < mine; k += s->stride) {
				uint64_t p = k * THREADS + s->id;
				uint8_t *page = s->base + p * MIRROR_PAGE;

				x = fm_mix64(x + p);
				if (x >> 63) {
					stamp(page, p, ++s->mirror[p]);
				} else if (!check(page, p, s->mirror[p]) && s->errors++ < 5) {
					fprintf(stderr, "page %lu: expected version %u, found %lu\n",
						(unsigned long)p, s->mirror[p],
						(unsigned long)((uint64_t *)page)[1]);
				}
			}
	return NULL;
}

static void scan_storm(unsigned stride, const char *why)
{
	const char *sets[] = { "memory.resident_pages=512", "memory.prefetch_pages=32", NULL };
	struct scanner sc[THREADS];
	pthread_t th[THREADS];
	uint32_t *mirror = calloc(PAGES, sizeof(*mirror));
	struct fm_client *c;
	struct fm_region *r;
	uint64_t errors = 0;
	uint8_t *base;

	cr_assert(mirror);
	td_must_start(&fmd, sets);
	r = td_region(&fmd, &c, PAGES, why);
	base = fm_region_addr(r);
	for (unsigned i = 0; i < THREADS; i++) {
		sc[i] = (struct scanner){ .base = base, .id = i, .stride = stride, .passes = 4,
					  .mirror = mirror, .seed = 77 + i };
		pthread_create(&th[i], NULL, scan_main, &sc[i]);
	}
	for (unsigned i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		errors += sc[i].errors;
	}
	for (uint64_t p = 0; p < PAGES; p++)
		errors += !check(base + p * MIRROR_PAGE, p, mirror[p]);
	cr_expect_eq(errors, 0, "%s: %lu reads or pages differ from the mirror", why,
		     (unsigned long)errors);

	int64_t pf = td_stat(&fmd, "prefetched"), hits = td_stat(&fmd, "prefetch_hits");
	int64_t wasted = td_stat(&fmd, "prefetch_wasted"), ev = td_stat(&fmd, "evictions");

	fprintf(stderr, "%s: prefetched %ld, hits %ld, wasted %ld, evictions %ld\n", why, (long)pf,
		(long)hits, (long)wasted, (long)ev);
	cr_expect_gt(ev, 5000, "%s: only %ld evictions: eviction was not stressed", why, (long)ev);
	cr_expect_gt(pf, 1000, "%s: only %ld pages prefetched", why, (long)pf);
	cr_expect_gt(hits, 0, "%s: no prefetch hit", why);
	/* Every prefetched page is decided at most once (hit or wasted). */
	cr_expect_leq(hits + wasted, pf, "%s: %ld hits + %ld wasted > %ld prefetched", why,
		      (long)hits, (long)wasted, (long)pf);
	cr_expect_leq(td_stat(&fmd, "resident"), 512 + 2 * 32, "budget not honoured");
	end_clean(r, c);
	free(mirror);
}

Test(prefetch_daemon, sequential_writers_race_eviction_and_prefetch, .timeout = 240)
{
	scan_storm(1, "sequential");
}

Test(prefetch_daemon, strided_writers_race_eviction_and_prefetch, .timeout = 240)
{
	scan_storm(4, "strided");
}

/* ---- discards racing installs of stored data ----
 *
 * The client discards pages (fm_region_discard) whose stored copies the
 * daemon is about to install: after the discard they must read all zero,
 * never their old data. Delay failpoints (base/failpoint.h) hold each side
 * at the racy step, so the race is met every run: the install waits
 * INSTALL_MS after its store read, the client discards SETTLE_MS into that
 * wait, and the dispatcher waits ROUTE_MS after reading the REMOVE (the
 * client's madvise has returned by then) before it routes it: the install
 * comes while the discard is read but not handled. */
#define RACE_PAGES 128u
#define INSTALL_MS "1000"
#define ROUTE_MS "2000"
#define SETTLE_MS 300       /* well inside INSTALL_MS, even under ASan */

/* A daemon with the failpoints set, and a region whose pages hold stamps
 * (version 1) and are all evicted to the store. */
static struct fm_region *stored_region_set(const char *const *sets, const char *failpoints,
					   struct fm_client **c)
{
	struct fm_region *r;
	uint8_t *base;
	int64_t resident = -1;

	setenv("FLUIDMEM_FAILPOINTS", failpoints, 1);
	td_must_start(&fmd, sets);
	unsetenv("FLUIDMEM_FAILPOINTS");
	r = td_region(&fmd, c, RACE_PAGES, "discard-race");
	base = fm_region_addr(r);
	for (uint64_t p = 0; p < RACE_PAGES; p++)
		stamp(base + p * MIRROR_PAGE, p, 1);
	for (int i = 0; i < 50 && resident != 0; i++) {
		free(td_ctl(&fmd, "v1 evict 4096"));
		resident = td_stat(&fmd, "resident");
	}
	cr_assert_eq(resident, 0, "%ld pages still resident: cannot evict them all", (long)resident);
	return r;
}

static struct fm_region *stored_region(const char *failpoints, struct fm_client **c)
{
	const char *sets[] = { "memory.resident_pages=4096", "memory.prefetch_pages=32", NULL };

	return stored_region_set(sets, failpoints, c);
}

/* Pages [first, end) must read zero (discarded) or their stamp (kept). */
static uint64_t check_pages(const uint8_t *base, uint64_t first, uint64_t end, uint32_t version,
			    const char *what)
{
	uint64_t bad = 0;

	for (uint64_t p = first; p < end; p++) {
		if (check(base + p * MIRROR_PAGE, p, version))
			continue;
		if (bad++ < 5)
			fprintf(stderr, "%s: page %lu does not read %s (word 0 = %lu, word 1 = %lu)\n",
				what, (unsigned long)p, version ? "its stamp" : "zero",
				(unsigned long)((const uint64_t *)(base + p * MIRROR_PAGE))[0],
				(unsigned long)((const uint64_t *)(base + p * MIRROR_PAGE))[1]);
	}
	return bad;
}

struct streamer {
	const uint8_t *base;
	uint64_t end;
};

static void *stream_main(void *arg)
{
	const struct streamer *st = arg;
	volatile uint64_t sink = 0;

	for (uint64_t p = 0; p < st->end; p++)
		sink += ((const volatile uint64_t *)(st->base + p * MIRROR_PAGE))[0];
	(void)sink;
	return NULL;
}

/* A thread streams through stored pages [0, RACE_PAGES / 2) of a daemon
 * with `failpoints` set; the client discards [1, RACE_PAGES / 2) (its madvise
 * held pause_ms after its first punch, unless NULL) while the stream's
 * first prefetch window waits in its failpoint. The discarded pages must
 * read zero, the others their stamps; `stat`, unless NULL, counts the
 * installs the discard stopped (the race was met). */
static void stream_discard(const char *failpoints, const char *pause_ms, const char *stat,
			   const char *why)
{
	const uint64_t first = 1, end = RACE_PAGES / 2;
	struct fm_client *c;
	struct fm_region *r = stored_region(failpoints, &c);
	uint8_t *base = fm_region_addr(r);
	struct streamer st = { base, end };
	pthread_t th;
	uint64_t bad;
	int rc;

	cr_assert_eq(pthread_create(&th, NULL, stream_main, &st), 0);
	td_sleep_ms(SETTLE_MS);   /* the first window waits in its failpoint */
	if (pause_ms)
		setenv("FLUIDMEM_TEST_DISCARD_PAUSE_MS", pause_ms, 1);
	rc = fm_region_discard(r, first * MIRROR_PAGE, (end - first) * MIRROR_PAGE);
	unsetenv("FLUIDMEM_TEST_DISCARD_PAUSE_MS");
	cr_assert_eq(rc, 0);
	bad = check_pages(base, first, end, 0, "discarded");
	pthread_join(th, NULL);
	bad += check_pages(base, first, end, 0, "discarded, after the stream");
	bad += check_pages(base, 0, first, 1, "before");
	bad += check_pages(base, end, RACE_PAGES, 1, "after");
	int64_t pf = td_stat(&fmd, "prefetched"), met = stat ? td_stat(&fmd, stat) : 0;

	fprintf(stderr, "%s: %lu bad pages, prefetched %ld, %s %ld\n", why, (unsigned long)bad,
		(long)pf, stat ? stat : "-", (long)met);
	cr_expect_eq(bad, 0, "%s: %lu pages read wrong after the discard", why, (unsigned long)bad);
	cr_expect_gt(pf, 0, "%s: nothing prefetched: the stream was not seen", why);
	if (stat)
		cr_expect_gt(met, 0, "%s: no install met the discard: the race was not provoked", why);
	end_clean(r, c);
}

/* Their prefetch, whichever window comes first (at the stream's first fault
 * when the stamping writes left a trend, else at its third), waits to
 * install when the client discards the pages ahead of the stream. */
Test(prefetch_daemon, discard_while_prefetching_reads_zero, .timeout = 120)
{
	stream_discard("prefetch.before_install=" INSTALL_MS ",dispatch.remove_read=" ROUTE_MS,
		       NULL, "discard_waits", "discard during prefetch");
}

/* The same stream, but the prefetch installs while the client's discard
 * has punched the memfd and not yet called madvise: no event is pending, so
 * nothing stops the install, and only fm_region_discard's second punch
 * (after the madvise) keeps the old data from surviving the discard. */
Test(prefetch_daemon, discard_between_punch_and_madvise_reads_zero, .timeout = 120)
{
	stream_discard("prefetch.before_install=" INSTALL_MS, ROUTE_MS /* past its install */, NULL,
		       "discard between punch and madvise");
}

struct toucher {
	const volatile uint64_t *word;
	uint64_t seen;
};

static void *touch_main(void *arg)
{
	struct toucher *t = arg;

	t->seen = *t->word;
	return NULL;
}

/* A demand fault fetched its stored page and waits to install it when
 * another thread discards the page. */
Test(prefetch_daemon, discard_while_fault_fetches_reads_zero, .timeout = 120)
{
	const uint64_t page = 40;
	struct fm_client *c;
	struct fm_region *r = stored_region("fault.before_install=" INSTALL_MS
					    ",dispatch.remove_read=" ROUTE_MS, &c);
	uint8_t *base = fm_region_addr(r);
	struct toucher t = { (const volatile uint64_t *)(base + page * MIRROR_PAGE), 0 };
	pthread_t th;
	uint64_t bad;

	cr_assert_eq(pthread_create(&th, NULL, touch_main, &t), 0);
	td_sleep_ms(SETTLE_MS);   /* its fault is read and fetched; the install waits */
	cr_assert_eq(fm_region_discard(r, page * MIRROR_PAGE, MIRROR_PAGE), 0);
	bad = check_pages(base, page, page + 1, 0, "discarded");
	pthread_join(th, NULL);
	/* the toucher ran concurrently with the discard: either is right */
	cr_expect(t.seen == 0 || t.seen == page, "the toucher read %lu", (unsigned long)t.seen);
	bad += check_pages(base, page, page + 1, 0, "discarded, after the toucher");
	bad += check_pages(base, page + 1, page + 3, 1, "after");
	int64_t waits = td_stat(&fmd, "discard_waits");

	fprintf(stderr, "discard during a fault's fetch: %lu bad pages, discard_waits %ld\n",
		(unsigned long)bad, (long)waits);
	cr_expect_eq(bad, 0, "%lu pages read wrong after the discard", (unsigned long)bad);
	cr_expect_gt(waits, 0, "no install met the discard: the race was not provoked");
	end_clean(r, c);
}

/* Demand faults of several threads on distinct stored pages pile up behind
 * a stalled one (shard.fault_stall) and are read in one batch
 * (memory.fault_batch; no prefetch, so only the batch installs); the batch
 * waits to install them (fault.before_install) when the client discards
 * some of those pages. The discarded ones must read zero, the others their
 * stamps. */
#define BATCH_THREADS 12u
#define BATCH_FIRST 8u            /* the threads fault BATCH_FIRST + i */
#define BATCH_DROP_FIRST 11u      /* discarded: [BATCH_DROP_FIRST, BATCH_DROP_END) */
#define BATCH_DROP_END 17u
#define BATCH_END (BATCH_FIRST + BATCH_THREADS)

struct batch_toucher {
	struct toucher t;
	pthread_barrier_t *go;
};

static void *batch_touch_main(void *arg)
{
	struct batch_toucher *bt = arg;

	pthread_barrier_wait(bt->go);
	return touch_main(&bt->t);
}

/* The batch's installs are held as `failpoints` say, the client discards
 * [drop, drop_end); `stat` counts the installs the discard stopped. */
static void batch_discard(const char *failpoints, uint64_t drop, uint64_t drop_end,
			  const char *stat)
{
	const char *sets[] = { "memory.resident_pages=4096", "memory.prefetch_pages=0",
			       "memory.fault_batch=16", NULL };
	struct fm_client *c;
	struct fm_region *r = stored_region_set(sets, failpoints, &c);
	uint8_t *base = fm_region_addr(r);
	struct batch_toucher bt[BATCH_THREADS];
	pthread_t th[BATCH_THREADS];
	pthread_barrier_t go;
	uint64_t bad;

	cr_assert_eq(pthread_barrier_init(&go, NULL, BATCH_THREADS), 0);
	for (unsigned i = 0; i < BATCH_THREADS; i++) {
		uint64_t p = BATCH_FIRST + i;

		bt[i] = (struct batch_toucher){
			{ (const volatile uint64_t *)(base + p * MIRROR_PAGE), 0 }, &go };
		cr_assert_eq(pthread_create(&th[i], NULL, batch_touch_main, &bt[i]), 0);
	}
	/* the faults pile up behind the first, are read together, and the
	 * batch's installs wait */
	td_sleep_ms(SETTLE_MS);
	cr_assert_eq(fm_region_discard(r, drop * MIRROR_PAGE, (drop_end - drop) * MIRROR_PAGE), 0);
	bad = check_pages(base, drop, drop_end, 0, "discarded");
	for (unsigned i = 0; i < BATCH_THREADS; i++) {
		uint64_t p = BATCH_FIRST + i;
		bool dropped = p >= drop && p < drop_end;

		pthread_join(th[i], NULL);
		/* a discarded page's toucher ran concurrently with the discard */
		cr_expect(bt[i].t.seen == p || (dropped && bt[i].t.seen == 0),
			  "the toucher of page %lu read %lu", (unsigned long)p,
			  (unsigned long)bt[i].t.seen);
	}
	pthread_barrier_destroy(&go);
	bad += check_pages(base, drop, drop_end, 0, "discarded, after the touchers");
	/* only the touched pages: every other stored fault waits INSTALL_MS */
	bad += check_pages(base, BATCH_FIRST, drop, 1, "before");
	bad += check_pages(base, drop_end, BATCH_END, 1, "after");
	int64_t batches = td_stat(&fmd, "fault_batches"), batched = td_stat(&fmd, "batched_get_faults");
	int64_t waits = td_stat(&fmd, stat), pf = td_stat(&fmd, "prefetched");

	fprintf(stderr,
		"discard during a fault batch: %lu bad pages, fault_batches %ld, batched_get_faults %ld, "
		"%s %ld, prefetched %ld\n",
		(unsigned long)bad, (long)batches, (long)batched, stat, (long)waits, (long)pf);
	cr_expect_eq(bad, 0, "%lu pages read wrong after the discard", (unsigned long)bad);
	cr_expect_gt(batches, 0, "no fault batch: the faults did not pile up");
	cr_expect_gt(waits, 0, "no install met the discard: the race was not provoked");
	cr_expect_eq(pf, 0, "prefetch installed pages: memory.prefetch_pages=0 not honoured");
	end_clean(r, c);
}

Test(prefetch_daemon, discard_while_fault_batch_fetches_reads_zero, .timeout = 120)
{
	batch_discard("shard.fault_stall=EIO,fault.before_install=" INSTALL_MS
		      ",dispatch.remove_read=" ROUTE_MS,
		      BATCH_DROP_FIRST, BATCH_DROP_END, "discard_waits");
}

/* ---- a discard read between an install's check and its copy ----
 *
 * The install found no discard pending and is held between that check and
 * its UFFDIO_COPY (fault.after_check, prefetch.after_check; the first
 * install only): meanwhile the client discards the page, the dispatcher
 * reads and counts the REMOVE (the fence is up, but the install is past
 * its check), the client's madvise and second punch return, and only then
 * does the copy land, in the hole the client just made. Once the discard
 * returned, the page must read zero, for good. */

/* A demand fault on page 40 has its install held after its check; the
 * client discards page `drop` meanwhile. */
static void fault_check_discard(uint64_t drop, const char *why)
{
	const uint64_t page = 40;
	struct fm_client *c;
	struct fm_region *r = stored_region("fault.after_check=" INSTALL_MS "@1", &c);
	uint8_t *base = fm_region_addr(r);
	struct toucher t = { (const volatile uint64_t *)(base + page * MIRROR_PAGE), 0 };
	pthread_t th;
	uint64_t bad;

	cr_assert_eq(pthread_create(&th, NULL, touch_main, &t), 0);
	td_sleep_ms(SETTLE_MS);   /* its install passed the check and waits */
	cr_assert_eq(fm_region_discard(r, drop * MIRROR_PAGE, MIRROR_PAGE), 0);
	bad = check_pages(base, drop, drop + 1, 0, "discarded");
	pthread_join(th, NULL);
	/* a toucher of the discarded page ran concurrently with the discard */
	cr_expect(t.seen == page || (drop == page && t.seen == 0), "the toucher read %lu",
		  (unsigned long)t.seen);
	bad += check_pages(base, drop, drop + 1, 0, "discarded, after the toucher");
	bad += check_pages(base, page, drop, 1, "touched, kept");
	bad += check_pages(base, drop + 1, drop + 3, 1, "after");
	int64_t undone = td_stat(&fmd, "discard_undone");

	fprintf(stderr, "%s: %lu bad pages, discard_undone %ld\n", why, (unsigned long)bad,
		(long)undone);
	cr_expect_eq(bad, 0, "%s: %lu pages read wrong", why, (unsigned long)bad);
	cr_expect_eq(undone, 1, "%s: discard_undone %ld: the race was not met once", why,
		     (long)undone);
	end_clean(r, c);
}

Test(prefetch_daemon, discard_after_fault_check_reads_zero, .timeout = 120)
{
	fault_check_discard(40, "discard after a fault's check");
}

/* A prefetch window's first install, held after its check. */
Test(prefetch_daemon, discard_after_prefetch_check_reads_zero, .timeout = 120)
{
	stream_discard("prefetch.after_check=" INSTALL_MS "@1", NULL, "discard_undone",
		       "discard after a prefetch check");
}

/* The batch's first install, held after its check: the discard comes
 * between the check and the copy of whichever page is first, so it takes
 * every touched page. */
Test(prefetch_daemon, discard_after_fault_batch_check_reads_zero, .timeout = 120)
{
	batch_discard("shard.fault_stall=EIO,fault.after_check=" INSTALL_MS "@1", BATCH_FIRST,
		      BATCH_END, "discard_undone");
}

/* As discard_after_fault_check_reads_zero, but the discard is of the next
 * page: the install is taken out all the same (the shard cannot tell which
 * pages a discard it has not handled covers), and the toucher's refault
 * must fetch the page again, its data intact. */
Test(prefetch_daemon, discard_of_another_page_after_fault_check_keeps_data, .timeout = 120)
{
	fault_check_discard(41, "discard of another page after a fault's check");
}

/* No failpoints: streams through stored pages while another thread
 * discards blocks ahead of them, round after round, with eviction pressure
 * (two spans of 1024 pages against a budget of 512). A discarded page must
 * read zero once its discard returned, every other page its stamp. */
#define SPAN 1024u
#define BLOCK 16u
#define ROUNDS 16u

struct span_job {
	struct fm_region *r;
	uint8_t *base;
	uint64_t first;      /* the span's first page */
	uint32_t version;
	uint64_t errors;
};

static bool dropped_block(uint64_t off)
{
	return (off / BLOCK) % 3 == 1;
}

static void *span_reader(void *arg)
{
	struct span_job *j = arg;

	for (uint64_t off = 0; off < SPAN; off++) {
		uint64_t p = j->first + off;
		const uint8_t *page = j->base + p * MIRROR_PAGE;

		/* racing the discard: either content is right here */
		if (!check(page, p, j->version) && !(dropped_block(off) && check(page, p, 0)) &&
		    j->errors++ < 5)
			fprintf(stderr, "stream: page %lu reads neither its stamp nor zero\n",
				(unsigned long)p);
	}
	return NULL;
}

static void *span_discarder(void *arg)
{
	struct span_job *j = arg;

	for (uint64_t off = BLOCK; off < SPAN; off += 3 * BLOCK)
		if (fm_region_discard(j->r, (j->first + off) * MIRROR_PAGE, BLOCK * MIRROR_PAGE) < 0)
			j->errors++;
	return NULL;
}

Test(prefetch_daemon, discards_ahead_of_streams_keep_data, .timeout = 240)
{
	const char *sets[] = { "memory.resident_pages=512", "memory.prefetch_pages=32", NULL };
	struct fm_client *c;
	struct fm_region *r;
	struct span_job rd[2], dc[2];
	pthread_t th[4];
	uint64_t bad = 0, errors = 0;
	uint8_t *base;

	td_must_start(&fmd, sets);
	r = td_region(&fmd, &c, 2 * SPAN, "discard-storm");
	base = fm_region_addr(r);
	for (uint32_t v = 1; v <= ROUNDS; v++) {
		for (uint64_t p = 0; p < 2 * SPAN; p++)
			stamp(base + p * MIRROR_PAGE, p, v);
		for (unsigned i = 0; i < 2; i++) {
			rd[i] = (struct span_job){ r, base, i * SPAN, v, 0 };
			dc[i] = rd[i];
			cr_assert_eq(pthread_create(&th[2 * i], NULL, span_reader, &rd[i]), 0);
			cr_assert_eq(pthread_create(&th[2 * i + 1], NULL, span_discarder, &dc[i]), 0);
		}
		for (unsigned i = 0; i < 4; i++)
			pthread_join(th[i], NULL);
		for (unsigned i = 0; i < 2; i++) {
			errors += rd[i].errors + dc[i].errors;
			for (uint64_t off = 0; off < SPAN; off++) {
				uint64_t p = i * SPAN + off;

				if (!check(base + p * MIRROR_PAGE, p, dropped_block(off) ? 0 : v) &&
				    bad++ < 5)
					fprintf(stderr, "round %u: page %lu should read %s\n", v,
						(unsigned long)p, dropped_block(off) ? "zero" : "its stamp");
			}
		}
	}
	int64_t pf = td_stat(&fmd, "prefetched"), ev = td_stat(&fmd, "evictions");
	int64_t waits = td_stat(&fmd, "discard_waits"), disc = td_stat(&fmd, "discarded");

	fprintf(stderr, "discard storm: %lu bad, %lu errors; prefetched %ld, evictions %ld, "
		"discarded %ld, discard_waits %ld\n", (unsigned long)bad, (unsigned long)errors,
		(long)pf, (long)ev, (long)disc, (long)waits);
	cr_expect_eq(bad, 0, "%lu pages read wrong after their round", (unsigned long)bad);
	cr_expect_eq(errors, 0, "%lu reads or discards went wrong during the rounds",
		     (unsigned long)errors);
	cr_expect_gt(pf, 0, "nothing prefetched");
	cr_expect_gt(ev, 1000, "only %ld evictions: no pressure", (long)ev);
	end_clean(r, c);
}
