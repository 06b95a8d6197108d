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
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	cr_expect_eq(td_stat(&fmd, "fault_errors"), 0);
	fm_region_destroy(r);
	fm_disconnect(c);
	td_expect_stop(&fmd);
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
