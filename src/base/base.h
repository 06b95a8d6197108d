/* base: small shared helpers used by every module (no state, no threads). */
#ifndef FM_BASE_H
#define FM_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define FM_CACHELINE 64
#define FM_PAGE_SIZE 4096u
#define FM_PAGE_SHIFT 12
/* Pages are dealt to shards in stripes of 2 MiB: a sequential stream stays in
 * one shard (and its store connection) while load still spreads. The
 * dispatcher routes by it and the shards number their pages by it. */
#define FM_STRIPE_SHIFT 9
#define FM_STRIPE_PAGES (1u << FM_STRIPE_SHIFT)

/* The shard that owns `page` of a region whose stripes are rotated by `rot`
 * (fm_region_rot): stripes go round-robin, starting at a shard that depends
 * on the region so that small regions do not all land on shard 0. */
static inline unsigned fm_stripe_shard(uint32_t rot, uint64_t page, unsigned nshards)
{
	return (unsigned)(((page >> FM_STRIPE_SHIFT) + rot) % nshards);
}

/* A region's stripe rotation, from its id. It must be the same in every
 * daemon that serves the region: the local store keeps each shard's pages
 * in that shard's own file, so a re-adopted region whose stripes moved to
 * other shards would find none of its stored pages (issue 10). It once was
 * the region's table slot, which depends on the order regions arrive. Ids
 * of one run differ in their low bits, so consecutive regions still start
 * on different shards. */
static inline uint32_t fm_region_rot(uint64_t id)
{
	return (uint32_t)id ^ (uint32_t)(id >> 32);
}

/* Stripe index of `page` among the stripes of its region that one shard
 * owns (dense, from 0). */
static inline uint64_t fm_stripe_local(uint64_t page, unsigned nshards)
{
	return (page >> FM_STRIPE_SHIFT) / nshards;
}

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define FM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define FM_ALIGNED_CL __attribute__((aligned(FM_CACHELINE)))
#define FM_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FM_MAX(a, b) ((a) > (b) ? (a) : (b))

static inline uint64_t fm_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Pin the calling thread to one CPU; cpu < 0 leaves it unpinned.
 * Returns 0 or -errno. */
int fm_pin_self(int cpu);

/* A 64-bit mix (splitmix64 finaliser): cheap, good enough to scatter keys. */
static inline uint64_t fm_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

/* A spin-wait hint: tells the CPU we are polling so a sibling hyperthread
 * gets the pipeline. A compiler barrier elsewhere, so the loop still
 * re-reads memory. */
static inline void fm_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__asm__ __volatile__("pause" ::: "memory");
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

/* True when the whole page is zero. */
int fm_page_is_zero(const void *page);

#endif
