#include "shard/page_hash.h"

#include <string.h>
#include <sys/random.h>

#include "base/base.h"

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

#define SIPROUND(v0, v1, v2, v3)                                                       \
	do {                                                                           \
		v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);             \
		v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                 \
		v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                 \
		v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);             \
	} while (0)

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "SipHash reads little-endian words");

static inline uint64_t load_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/* c and d are compile-time constants at every call site below, so the
 * round loops unroll. */
static inline __attribute__((always_inline)) uint64_t sip(const struct page_hash_key *k,
							   const uint8_t *in, size_t len,
							   unsigned c, unsigned d)
{
	uint64_t v0 = 0x736f6d6570736575ull ^ k->k0;
	uint64_t v1 = 0x646f72616e646f6dull ^ k->k1;
	uint64_t v2 = 0x6c7967656e657261ull ^ k->k0;
	uint64_t v3 = 0x7465646279746573ull ^ k->k1;
	const uint8_t *end = in + (len & ~(size_t)7);
	uint64_t b = (uint64_t)len << 56, m;

	for (; in != end; in += 8) {
		m = load_le64(in);
		v3 ^= m;
		for (unsigned i = 0; i < c; i++)
			SIPROUND(v0, v1, v2, v3);
		v0 ^= m;
	}
	for (unsigned i = 0; i < (len & 7); i++)
		b |= (uint64_t)in[i] << (8 * i);
	v3 ^= b;
	for (unsigned i = 0; i < c; i++)
		SIPROUND(v0, v1, v2, v3);
	v0 ^= b;
	v2 ^= 0xff;
	for (unsigned i = 0; i < d; i++)
		SIPROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t siphash_cd(const struct page_hash_key *k, const void *data, size_t len, unsigned c,
		    unsigned d)
{
	if (c == 1 && d == 3)
		return sip(k, data, len, 1, 3);
	if (c == 2 && d == 4)
		return sip(k, data, len, 2, 4);
	return sip(k, data, len, c, d);
}

uint64_t page_hash(const struct page_hash_key *k, const void *page)
{
	return sip(k, page, FM_PAGE_SIZE, 1, 3);
}

void page_hash_key_init(struct page_hash_key *k)
{
	if (getrandom(k, sizeof(*k), 0) == (ssize_t)sizeof(*k))
		return;
	k->k0 = fm_mix64(fm_now_ns() ^ (uintptr_t)k);
	k->k1 = fm_mix64(k->k0 + 0x9e3779b97f4a7c15ull);
}
