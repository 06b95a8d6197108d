/* Pages stamped with (page, version) and writer threads checked against a
 * mirror: the shared workload of the black-box tests. Header-only.
 *
 * Page p belongs to writer p % n, so each thread's mirror entries are its own
 * (exact without locks) while neighbouring pages fault from different
 * threads at once. */
#ifndef FM_TEST_MIRROR_H
#define FM_TEST_MIRROR_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/base.h"

#define MIRROR_PAGE 4096u
#define MIRROR_MAX_THREADS 16

/* Word 0 = page, word 1 = version, the rest derived from both. */
static inline void stamp(uint8_t *page, uint64_t pno, uint32_t version)
{
	uint64_t *w = (uint64_t *)page;

	w[0] = pno;
	w[1] = version;
	for (size_t i = 2; i < MIRROR_PAGE / 8; i++)
		w[i] = fm_mix64(pno ^ ((uint64_t)version << 40)) + i;
}

/* 1 when the page holds exactly (pno, version); version 0 = never written,
 * which must read all zero. */
static inline int check(const uint8_t *page, uint64_t pno, uint32_t version)
{
	const uint64_t *w = (const uint64_t *)page;

	if (version == 0) {
		for (size_t i = 0; i < MIRROR_PAGE / 8; i++)
			if (w[i])
				return 0;
		return 1;
	}
	if (w[0] != pno || w[1] != version)
		return 0;
	for (size_t i = 2; i < MIRROR_PAGE / 8; i++)
		if (w[i] != fm_mix64(pno ^ ((uint64_t)version << 40)) + i)
			return 0;
	return 1;
}

struct writer {
	uint8_t *base;
	size_t pages;
	unsigned id, nthreads;
	uint64_t seed;
	uint32_t *mirror;     /* version per page; only this thread's pages */
	uint64_t errors;
	uint64_t ops;
	_Atomic uint64_t done;
};

static inline void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint64_t x = w->seed;
	size_t mine = (w->pages - w->id + w->nthreads - 1) / w->nthreads;

	for (uint64_t op = 0; op < w->ops; op++) {
		x = fm_mix64(x + op);
		size_t p = (x % mine) * w->nthreads + w->id;
		uint8_t *page = w->base + p * MIRROR_PAGE;

		/* The write bit is far from the bits that pick the page, or each
		 * page would only ever be written or only ever be read. */
		if (x >> 63) {
			stamp(page, p, ++w->mirror[p]);
		} else if (!check(page, p, w->mirror[p])) {
			if (w->errors++ < 5)
				fprintf(stderr, "page %zu: expected version %u, found %lu\n", p,
					w->mirror[p], (unsigned long)((uint64_t *)page)[1]);
		}
		atomic_store_explicit(&w->done, op + 1, memory_order_relaxed);
	}
	return NULL;
}

/* A set of writer threads over one region. */
struct storm {
	pthread_t th[MIRROR_MAX_THREADS];
	struct writer w[MIRROR_MAX_THREADS];
	unsigned n;
	uint32_t *mirror;
	uint8_t *base;
	size_t pages;
};

/* Start nthreads writers doing `ops` random reads (checked) and writes each. */
static inline void storm_start(struct storm *s, uint8_t *base, size_t pages, unsigned nthreads,
			       uint64_t ops)
{
	s->mirror = calloc(pages, sizeof(*s->mirror));
	s->n = nthreads < MIRROR_MAX_THREADS ? nthreads : MIRROR_MAX_THREADS;
	s->base = base;
	s->pages = pages;
	for (unsigned i = 0; i < s->n; i++) {
		s->w[i] = (struct writer){ .base = base, .pages = pages, .id = i, .nthreads = s->n,
					   .seed = 1234 + i, .mirror = s->mirror, .ops = ops };
		pthread_create(&s->th[i], NULL, writer_main, &s->w[i]);
	}
}

/* Operations done so far by all writers. */
static inline uint64_t storm_progress(struct storm *s)
{
	uint64_t done = 0;

	for (unsigned i = 0; i < s->n; i++)
		done += atomic_load_explicit(&s->w[i].done, memory_order_relaxed);
	return done;
}

/* Join, then sweep every page; returns the reads and pages that differed. */
static inline uint64_t storm_finish(struct storm *s)
{
	uint64_t errors = 0;

	for (unsigned i = 0; i < s->n; i++) {
		pthread_join(s->th[i], NULL);
		errors += s->w[i].errors;
	}
	for (size_t p = 0; p < s->pages; p++)
		if (!check(s->base + p * MIRROR_PAGE, p, s->mirror[p]))
			errors++;
	free(s->mirror);
	return errors;
}

#endif
