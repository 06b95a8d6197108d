/* shard/page_hash: the content hash a shard keeps per stored page.
 *
 * SipHash-1-3 (Aumasson & Bernstein; 1 compression and 3 finalisation
 * rounds, the variant Rust and CPython use for hash tables) with a 128-bit
 * key drawn at random per region and shard. It decides two things:
 *   - a page that hashes as it did when it was last stored is clean, so
 *     eviction skips the write (a collision would silently lose a write, so
 *     the hash is 64-bit and keyed: the client cannot aim for one);
 *   - a copy fetched from the store must hash to the recorded value, so a
 *     stale replica (a server that missed a write while unreachable) or a
 *     corrupted value is rejected and the next replica is tried.
 * Pure functions, no state: callable from any thread. */
#ifndef FM_PAGE_HASH_H
#define FM_PAGE_HASH_H

#include <stddef.h>
#include <stdint.h>

struct page_hash_key {
	uint64_t k0, k1;
};

/* SipHash-c-d of len bytes (little-endian words, as the reference). Exposed
 * with its round counts so tests can check both published vector sets. */
uint64_t siphash_cd(const struct page_hash_key *k, const void *data, size_t len, unsigned c,
		    unsigned d);

/* SipHash-1-3 of one FM_PAGE_SIZE page. */
uint64_t page_hash(const struct page_hash_key *k, const void *page);

/* A fresh random key (getrandom; falls back to time and address bits only
 * if the kernel refuses, which it does not on any supported kernel). */
void page_hash_key_init(struct page_hash_key *k);

#endif
