/* bench/workload: the fault-storm threads, their access patterns, page
 * stamps and the mirror check. */
#include "storm.h"

#include "base/base.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WORDS_PER_PAGE (FM_PAGE_SIZE / sizeof(uint64_t))
#define WORDS_PER_LINE (FM_CACHELINE / sizeof(uint64_t))

static const char *const pattern_names[STORM_PATTERN_NR] = { "seq", "random", "zipf", "stride" };

const char *storm_pattern_name(enum storm_pattern p)
{
	return (unsigned)p < STORM_PATTERN_NR ? pattern_names[p] : "?";
}

int storm_pattern_parse(const char *name)
{
	for (int i = 0; i < STORM_PATTERN_NR; i++)
		if (strcmp(name, pattern_names[i]) == 0)
			return i;
	return -1;
}

/* Opens once every thread exists, or tells them to leave when one could not
 * be created (a pthread barrier cannot shrink to the threads that exist). */
struct gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int state;   /* 0 closed, 1 go, -1 abort */
};

struct storm_shared {
	const struct storm_opts *o;
	uint8_t *base;
	uint64_t threshold_ns;
	struct gate start;
	pthread_barrier_t pass_done;     /* workers + the starting thread */
	pthread_barrier_t check_go;
	unsigned reported;               /* mismatches printed so far */
};

struct storm_thread {
	struct storm_shared *sh;
	pthread_t tid;
	unsigned id;
	uint64_t npages;       /* pages owned: global page = k * T + id */
	uint32_t *version;     /* mirror: 0 = never written, must read zero */
	uint8_t *touched;      /* 1 once this run accessed the page */
	uint32_t *perm;        /* zipf: rank -> local page, scatters the hot set */
	double *cdf;           /* zipf: cumulative probability of ranks 0..k */
	uint64_t rng;
	uint64_t sink;
	uint64_t accesses, reads, writes, verify_errors;
	uint64_t *pass_faults, *pass_first;   /* per pass */
	unsigned pass;
	uint64_t sj, so;       /* stride: the next local page is sj * stride + so */
	struct fm_hist all, first, refault;
} FM_ALIGNED_CL;

/* splitmix64: fm_mix64 is its finaliser. */
static inline uint64_t rng_next(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ull;
	return fm_mix64(*s);
}

/* Uniform in [0, n) (Lemire's multiply; the bias is < n / 2^64). */
static inline uint64_t rng_below(uint64_t *s, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)rng_next(s) * n) >> 64);
}

static inline double rng_unit(uint64_t *s)
{
	return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

static inline uint64_t stamp_base(uint64_t page, uint64_t version, uint64_t seed)
{
	return fm_mix64(page ^ (version << 40) ^ seed);
}

/* --content text: word i is one of 16 eight-byte words picked by (b, i),
 * so lz4 sees repeats (about 2.5x, like text or code) and the check still
 * covers every byte. --content random (the default): b + i; successive
 * words share their high bytes, so lz4 and lzo-rle still shrink a page to
 * a few hundred bytes (zram stored 73 bytes per page of it). --content
 * noise: every word hashed, nothing for any compressor to find. */
static bool stamp_text, stamp_noise;

static inline uint64_t stamp_word(uint64_t b, size_t i)
{
	static const uint64_t vocab[16] = {
		0x2065687420666f20ull, 0x207473757274730aull, 0x206e7275746572ull,
		0x3b29656761702820ull, 0x20746c7561660a7bull, 0x2079726f6d656d20ull,
		0x202020202020200aull, 0x3078316630203d20ull, 0x206e6f6967657220ull,
		0x20746369766520ull, 0x2064726168732020ull, 0x6c656e72656b2820ull,
		0x3d3d206628666920ull, 0x7d0a7d0a2020200aull, 0x20726f7473202f2full,
		0x000000000000000aull,
	};

	if (stamp_noise)
		return fm_mix64(b + i);
	if (!stamp_text)
		return b + i;
	return vocab[((b ^ i) * 0x9e3779b97f4a7c15ull) >> 60];
}

static void stamp_page(uint64_t *w, uint64_t page, uint64_t version, uint64_t seed)
{
	uint64_t b = stamp_base(page, version, seed);

	w[0] = page;
	w[1] = version;
	for (size_t i = 2; i < WORDS_PER_PAGE; i++)
		w[i] = stamp_word(b, i);
}

/* Index of the first word that differs from the expected page, or -1. */
static long page_mismatch(const uint64_t *w, uint64_t page, uint64_t version, uint64_t seed)
{
	uint64_t b;

	if (version == 0) {
		if (fm_page_is_zero(w))
			return -1;
		for (size_t i = 0; i < WORDS_PER_PAGE; i++)
			if (w[i])
				return (long)i;
		return -1;
	}
	if (w[0] != page)
		return 0;
	if (w[1] != version)
		return 1;
	b = stamp_base(page, version, seed);
	for (size_t i = 2; i < WORDS_PER_PAGE; i++)
		if (w[i] != stamp_word(b, i))
			return (long)i;
	return -1;
}

static void report_mismatch(struct storm_thread *t, const uint64_t *w, uint64_t page,
			    uint64_t version, long word, const char *when)
{
	struct storm_shared *sh = t->sh;
	unsigned n = __atomic_fetch_add(&sh->reported, 1, __ATOMIC_RELAXED);

	if (n >= STORM_MAX_REPORTED_ERRORS) {
		if (n == STORM_MAX_REPORTED_ERRORS)
			fprintf(stderr, "fault-storm: verify: further mismatches are only counted\n");
		return;
	}
	fprintf(stderr,
		"fault-storm: verify: %s: page %" PRIu64 " thread %u: expected version %" PRIu64
		"%s, found page %" PRIu64 " version %" PRIu64 "%s; first bad word %ld\n",
		when, page, t->id, version, version ? "" : " (never written: zeros)", w[0], w[1],
		fm_page_is_zero(w) ? " (all zero)" : "", word);
}

/* Zipf over ranks 1..n with exponent s, as a CDF table: exact for every
 * s >= 0 and 8 bytes per owned page, which is small next to the page. */
static int zipf_setup(struct storm_thread *t, uint64_t seed)
{
	uint64_t n = t->npages, rs = fm_mix64(seed ^ 0x5a17f00dull ^ ((uint64_t)t->id << 32));
	double sum = 0;

	t->cdf = malloc(n * sizeof(*t->cdf));
	t->perm = malloc(n * sizeof(*t->perm));
	if (!t->cdf || !t->perm)
		return -ENOMEM;
	for (uint64_t k = 0; k < n; k++) {
		sum += 1.0 / pow((double)(k + 1), t->sh->o->zipf_s);
		t->cdf[k] = sum;
	}
	for (uint64_t k = 0; k < n; k++)
		t->cdf[k] /= sum;
	t->cdf[n - 1] = 1.0;
	/* Fisher-Yates: the hottest ranks land anywhere in the thread's pages. */
	for (uint64_t k = 0; k < n; k++)
		t->perm[k] = (uint32_t)k;
	for (uint64_t k = n - 1; k > 0; k--) {
		uint64_t j = rng_below(&rs, k + 1);
		uint32_t tmp = t->perm[k];

		t->perm[k] = t->perm[j];
		t->perm[j] = tmp;
	}
	return 0;
}

static inline uint64_t zipf_pick(struct storm_thread *t)
{
	double u = rng_unit(&t->rng);
	uint64_t lo = 0, hi = t->npages - 1;

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		if (t->cdf[mid] > u)
			hi = mid;
		else
			lo = mid + 1;
	}
	return t->perm[lo];
}

static inline uint64_t pick(struct storm_thread *t, uint64_t i)
{
	switch (t->sh->o->pattern) {
	case STORM_SEQ:
		return i;
	case STORM_RANDOM:
		return rng_below(&t->rng, t->npages);
	case STORM_STRIDE: {
		/* Every stride-th page, then the same from the next offset: a
		 * permutation of the thread's pages, one strided scan each. */
		uint64_t s = t->sh->o->stride, k;

		if (i == 0)
			t->sj = t->so = 0;
		k = t->sj * s + t->so;
		if (++t->sj * s + t->so >= t->npages) {
			t->sj = 0;
			t->so++;
		}
		return k;
	}
	default:
		return zipf_pick(t);
	}
}

static void one_access(struct storm_thread *t, uint64_t k)
{
	const struct storm_opts *o = t->sh->o;
	uint64_t page = k * o->threads + t->id;
	uint64_t *w = (uint64_t *)(t->sh->base + page * FM_PAGE_SIZE);
	bool write = o->write_ratio > 0 && rng_unit(&t->rng) < o->write_ratio;
	uint64_t t0, dt, ver = t->version[k];
	long bad = -1;

	t0 = fm_now_ns();
	if (write) {
		stamp_page(w, page, ++ver, o->seed);
	} else if (o->verify) {
		bad = page_mismatch(w, page, ver, o->seed);
	} else {
		const volatile uint64_t *vw = w;
		uint64_t s = 0;

		/* One word per cache line: the access faults and the line is read,
		 * without the cost of a full check. */
		for (size_t i = 0; i < WORDS_PER_PAGE; i += WORDS_PER_LINE)
			s += vw[i];
		t->sink += s;
	}
	dt = fm_now_ns() - t0;

	t->accesses++;
	if (write) {
		t->writes++;
		t->version[k] = (uint32_t)ver;
	} else {
		t->reads++;
	}
	if (dt > t->sh->threshold_ns) {
		fm_hist_add(&t->all, dt);
		t->pass_faults[t->pass]++;
		if (t->touched[k]) {
			fm_hist_add(&t->refault, dt);
		} else {
			fm_hist_add(&t->first, dt);
			t->pass_first[t->pass]++;
		}
	}
	t->touched[k] = 1;
	if (bad >= 0) {
		t->verify_errors++;
		report_mismatch(t, w, page, ver, bad, "read");
	}
}

static void final_check(struct storm_thread *t)
{
	const struct storm_opts *o = t->sh->o;

	for (uint64_t k = 0; k < t->npages; k++) {
		uint64_t page = k * o->threads + t->id;
		const uint64_t *w = (const uint64_t *)(t->sh->base + page * FM_PAGE_SIZE);
		long bad = page_mismatch(w, page, t->version[k], o->seed);

		if (bad >= 0) {
			t->verify_errors++;
			report_mismatch(t, w, page, t->version[k], bad, "final check");
		}
	}
}

static bool gate_wait(struct gate *g)
{
	int st;

	pthread_mutex_lock(&g->lock);
	while (g->state == 0)
		pthread_cond_wait(&g->cond, &g->lock);
	st = g->state;
	pthread_mutex_unlock(&g->lock);
	return st > 0;
}

static void gate_open(struct gate *g, int state)
{
	pthread_mutex_lock(&g->lock);
	g->state = state;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

static void *storm_thread_main(void *arg)
{
	struct storm_thread *t = arg;
	const struct storm_opts *o = t->sh->o;

	if (o->ncpus) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(o->cpus[t->id % o->ncpus], &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	if (!gate_wait(&t->sh->start))
		return NULL;
	for (t->pass = 0; t->pass < o->passes; t->pass++) {
		for (uint64_t i = 0; i < t->npages; i++)
			one_access(t, pick(t, i));
		pthread_barrier_wait(&t->sh->pass_done);
	}
	pthread_barrier_wait(&t->sh->check_go);
	if (o->verify)
		final_check(t);
	return NULL;
}

static void thread_free(struct storm_thread *t)
{
	free(t->version);
	free(t->touched);
	free(t->perm);
	free(t->cdf);
	free(t->pass_faults);
	free(t->pass_first);
}

void storm_result_free(struct storm_result *res)
{
	free(res->pass);
	res->pass = NULL;
}

int storm_run(const struct storm_opts *o, void *base, struct storm_result *res,
	      storm_passes_done_fn *done, void *done_arg)
{
	struct storm_shared sh = {
		.o = o,
		.base = base,
		.threshold_ns = (uint64_t)(o->fault_threshold_us * 1000.0),
		.start = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 },
	};
	struct storm_thread *th;
	unsigned created = 0;
	uint64_t t0, tp, t1, t2;
	int err = 0;

	memset(res, 0, sizeof(*res));
	stamp_text = o->text;
	stamp_noise = o->noise;
	if (o->threads == 0 || o->threads > STORM_MAX_THREADS || o->pages < o->threads ||
	    o->passes == 0 || o->passes > STORM_MAX_PASSES)
		return -EINVAL;
	res->pass = calloc(o->passes, sizeof(*res->pass));
	if (!res->pass)
		return -ENOMEM;
	/* Cache-line aligned: each thread's counters are written on every access. */
	if (posix_memalign((void **)&th, FM_CACHELINE, o->threads * sizeof(*th)))
		return -ENOMEM;
	memset(th, 0, o->threads * sizeof(*th));
	for (unsigned i = 0; i < o->threads && !err; i++) {
		struct storm_thread *t = &th[i];

		t->sh = &sh;
		t->id = i;
		t->npages = (o->pages - i + o->threads - 1) / o->threads;
		t->rng = fm_mix64(o->seed ^ (0x1000193ull * (i + 1)));
		t->version = calloc(t->npages, sizeof(*t->version));
		t->touched = calloc(t->npages, sizeof(*t->touched));
		t->pass_faults = calloc(o->passes, sizeof(*t->pass_faults));
		t->pass_first = calloc(o->passes, sizeof(*t->pass_first));
		if (!t->version || !t->touched || !t->pass_faults || !t->pass_first)
			err = -ENOMEM;
		else if (o->pattern == STORM_ZIPF)
			err = zipf_setup(t, o->seed);
	}
	if (err)
		goto out;
	pthread_barrier_init(&sh.pass_done, NULL, o->threads + 1);
	pthread_barrier_init(&sh.check_go, NULL, o->threads + 1);
	for (; created < o->threads; created++) {
		err = -pthread_create(&th[created].tid, NULL, storm_thread_main, &th[created]);
		if (err)
			break;
	}
	if (err) {
		gate_open(&sh.start, -1);
		for (unsigned i = 0; i < created; i++)
			pthread_join(th[i].tid, NULL);
		goto out_barriers;
	}

	t0 = tp = t1 = fm_now_ns();
	gate_open(&sh.start, 1);
	for (unsigned p = 0; p < o->passes; p++) {
		pthread_barrier_wait(&sh.pass_done);
		t1 = fm_now_ns();
		res->pass[p].wall_s = (double)(t1 - tp) / 1e9;
		tp = t1;
	}
	if (done)
		done(done_arg);
	t2 = fm_now_ns();
	pthread_barrier_wait(&sh.check_go);
	for (unsigned i = 0; i < created; i++)
		pthread_join(th[i].tid, NULL);

	res->wall_s = (double)(t1 - t0) / 1e9;
	res->final_check_s = o->verify ? (double)(fm_now_ns() - t2) / 1e9 : 0;
	for (unsigned i = 0; i < created; i++) {
		struct storm_thread *t = &th[i];

		fm_hist_merge(&res->all, &t->all);
		fm_hist_merge(&res->first, &t->first);
		fm_hist_merge(&res->refault, &t->refault);
		res->accesses += t->accesses;
		res->reads += t->reads;
		res->writes += t->writes;
		res->verify_errors += t->verify_errors;
		for (unsigned p = 0; p < o->passes; p++) {
			res->pass[p].faults += t->pass_faults[p];
			res->pass[p].first += t->pass_first[p];
		}
	}
out_barriers:
	pthread_barrier_destroy(&sh.pass_done);
	pthread_barrier_destroy(&sh.check_go);
out:
	for (unsigned i = 0; i < o->threads; i++)
		thread_free(&th[i]);
	free(th);
	if (err)
		storm_result_free(res);
	return err;
}
