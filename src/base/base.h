/* base: small shared helpers used by every module (no state, no threads). */
#ifndef FM_BASE_H
#define FM_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define FM_CACHELINE 64
#define FM_PAGE_SIZE 4096u
#define FM_PAGE_SHIFT 12

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
