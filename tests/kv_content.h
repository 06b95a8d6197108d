/* Page contents for the local store's tests and bench/kv_bench.c: a pure
 * function of a seed (so a mirror keeps 8 bytes per key and still checks
 * every byte), in four kinds that compress differently. */
#ifndef FM_TEST_KV_CONTENT_H
#define FM_TEST_KV_CONTENT_H

#include <stdint.h>
#include <string.h>

#include "base/base.h"

static inline uint64_t kvp_rng(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ull;
	return fm_mix64(*s);
}

enum kvp_kind { KVP_RANDOM, KVP_TEXT, KVP_SPARSE, KVP_HALF, KVP_NR };

static inline enum kvp_kind kvp_kind_of(uint64_t seed)
{
	return (enum kvp_kind)(fm_mix64(seed ^ 0xabcdef) % KVP_NR);
}

/* Text: words from a small vocabulary, like a log or a source file. */
static inline void kvp_fill(void *page, uint64_t seed)
{
	static const char *const words[] = { "the ", "page ", "fault ", "memory ", "store ",
					     "region ", "evict ", "shard ", "kernel ", "0x1f ",
					     "return ", "struct ", "\n", "if (", ") {\n", "}\n" };
	uint8_t *p = page;
	uint64_t s = seed;

	switch (kvp_kind_of(seed)) {
	case KVP_RANDOM:
		for (size_t i = 0; i < FM_PAGE_SIZE; i += 8) {
			uint64_t w = kvp_rng(&s);
			memcpy(p + i, &w, 8);
		}
		break;
	case KVP_TEXT:
		for (size_t i = 0; i < FM_PAGE_SIZE;) {
			const char *w = words[kvp_rng(&s) % FM_ARRAY_SIZE(words)];
			size_t n = FM_MIN(strlen(w), FM_PAGE_SIZE - i);
			memcpy(p + i, w, n);
			i += n;
		}
		break;
	case KVP_SPARSE:
		memset(p, 0, FM_PAGE_SIZE);
		for (int k = 0; k < 8; k++) {
			uint64_t w = kvp_rng(&s);
			memcpy(p + (w % (FM_PAGE_SIZE / 8)) * 8, &w, 8);
		}
		break;
	default:
		memset(p, 0, FM_PAGE_SIZE);
		for (size_t i = 0; i < FM_PAGE_SIZE / 2; i += 8) {
			uint64_t w = kvp_rng(&s);
			memcpy(p + i, &w, 8);
		}
		break;
	}
	memcpy(p, &seed, 8); /* every page differs, whatever its kind */
}

#endif
