/* shard/prefetch: fetching ahead of sequential and strided fault streams.
 *
 * The detector follows Leap (Maruf & Chowdhury, ATC'20): each stream keeps a
 * short ring of its recent fault deltas; the majority delta (Boyer-Moore,
 * over the newest half of the ring first, then all of it) is the stream's
 * trend, and the pages along it are fetched with one batched store read.
 * The window adapts: it doubles while the pages of the previous prefetch
 * are used and halves when none was.
 *
 * Per region and shard there are a few streams, so two threads scanning
 * different parts of a region do not spoil each other's history: a fault
 * joins the stream whose trend or last fault it continues, else it takes
 * over the least recently used one.
 *
 * A shard sees only the faults of its own stripes (2 MiB each, dealt round
 * robin over the shards), so it prefetches only pages it owns: a stream
 * running into another shard's stripe continues at the next stripe of its
 * own along the same delta (pf_next), and the other shard's detector covers
 * the stripe in between from its own faults.
 *
 * Everything up to pf_next is pure (no shard, no kernel) and tested on its
 * own (tests/unit/test_prefetch.c). */
#ifndef FM_PREFETCH_H
#define FM_PREFETCH_H

#include <stdbool.h>
#include <stdint.h>

#define PF_HIST 8          /* fault deltas a stream remembers (Leap: 8..32) */
#define PF_STREAMS 4       /* streams per region and shard */
#define PF_WINDOW_MIN 2    /* a fresh trend's first window */
#define PF_MAX_PAGES 512   /* memory.prefetch_pages at most */
/* A fault this close to a stream's last one (in pages) joins it when it
 * continues no stream's trend: far enough for strides of a few stripes. */
#define PF_REACH 1024

struct pf_stream {
	uint64_t last;             /* page of the stream's last fault */
	uint64_t used;             /* LRU stamp; 0 = never used */
	int64_t hist[PF_HIST];     /* ring of deltas, newest at head - 1 */
	uint8_t head, n;
	int64_t delta;             /* the trend the last prefetch followed; 0 = none */
	uint32_t window;           /* pages the next prefetch may fetch */
	uint32_t issued;           /* pages the last prefetch installed */
	uint32_t span;             /* steps along delta it covered (installed or not) */
};

struct pf_region {
	struct pf_stream st[PF_STREAMS];
	uint64_t clock;
};

/* The majority delta among the newest n deltas (n <= PF_HIST), if one
 * delta fills more than half of them. */
bool pf_majority_of(const int64_t *hist, unsigned head, unsigned n, int64_t *delta);
/* Leap's trend: the majority of the newest half, else of the whole ring. */
bool pf_trend(const struct pf_stream *st, int64_t *delta);
/* The stream fault `page` belongs to (see above); a recycled one is reset
 * and starts at `page`. */
struct pf_stream *pf_stream_for(struct pf_region *pr, uint64_t page);
/* Record a fault of stream st at `page`. hits: pages of the previous
 * prefetch found used (the fault came after walking through them; its
 * delta is then counted as the trend's). Adapts the window and returns how
 * many pages to prefetch now along *delta: 0 without a trend. max_window
 * caps it (0 = prefetch off). */
uint32_t pf_on_fault(struct pf_stream *st, uint64_t page, uint32_t hits, uint32_t max_window,
		     int64_t *delta);
/* The next page after p along delta that shard `shard` of `nshards` owns
 * in a region of npages pages whose stripes are rotated by `rot` (fm_region_rot), skipping the stripes of
 * other shards. False at the region's ends (or when a huge delta finds no
 * own page within a few stripes). */
bool pf_next(uint64_t p, int64_t delta, uint64_t npages, uint32_t rot, unsigned shard,
	     unsigned nshards, uint64_t *out);

struct shard;
struct shard_region;
/* Shard hooks (prefetch.c). prefetch_setup: buffers for max_pages a prefetch
 * (0 = off); 0 or -ENOMEM. */
int prefetch_setup(struct shard *s, uint32_t max_pages);
void prefetch_teardown(struct shard *s);
/* After serving a fault at page (outcome: fetched or zero-filled), confirm
 * the previous prefetch's hits and fetch ahead. */
void prefetch_after_fault(struct shard *s, struct shard_region *sr, uint64_t page);
/* A fault met resident page id: if a prefetch installed it, it was used. */
void prefetch_hit(struct shard *s, uint32_t id);

#endif
