/* kv generic layer + the embedded local store.
 *
 * The main property: under any mix of put/get/del/mget/mput the store
 * answers exactly like a plain map with a page cap, and the counters add up
 * exactly. The other tests pin the edges: the cap, reuse after deletes,
 * in-place overwrite, table growth, churn at full load, bad arguments. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_params.h"
#include "base/base.h"
#include "ctl/config.h"
#include "kv/kv.h"

#define PAGES_PER_MIB (1u << (20 - FM_PAGE_SHIFT))

/* Built by hand: config.c is not ours to call here. */
static struct fm_config make_cfg(const char *backend, uint64_t max_mib)
{
	struct fm_config c;

	memset(&c, 0, sizeof(c));
	snprintf(c.store_backend, sizeof(c.store_backend), "%s", backend);
	c.local_max_mib = max_mib;
	return c;
}

static struct kv_store *open_local(uint64_t max_mib)
{
	struct fm_config c = make_cfg("local", max_mib);
	struct kv_store *kv = kv_open_cfg(&c, 0);

	cr_assert_not_null(kv, "kv_open(local, %llu MiB): errno %d", (unsigned long long)max_mib,
			   errno);
	return kv;
}

static uint64_t rng_next(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ull;
	return fm_mix64(*s);
}

/* Page contents are a pure function of a seed, so the mirror keeps 8 bytes
 * per key and still checks every byte. */
static void fill_page(void *page, uint64_t seed)
{
	uint64_t *w = page;
	uint64_t s = seed;

	for (size_t i = 0; i < FM_PAGE_SIZE / sizeof(*w); i++)
		w[i] = rng_next(&s);
}

static void expect_page(struct kv_store *kv, struct kv_key key, uint64_t seed)
{
	static uint64_t got[FM_PAGE_SIZE / 8], want[FM_PAGE_SIZE / 8];
	int rc = kv_get(kv, key, got);

	cr_assert_eq(rc, 0, "get (%llu,%llu): %d", (unsigned long long)key.region,
		     (unsigned long long)key.page, rc);
	fill_page(want, seed);
	cr_assert(memcmp(got, want, FM_PAGE_SIZE) == 0, "page (%llu,%llu) differs",
		  (unsigned long long)key.region, (unsigned long long)key.page);
}

static int put_seed(struct kv_store *kv, struct kv_key key, uint64_t seed)
{
	static uint64_t buf[FM_PAGE_SIZE / 8];

	fill_page(buf, seed);
	return kv_put(kv, key, buf);
}

/* The request counters; the gauges after them are checked by value. */
#define KV_COUNTERS(X)                                                               \
	X(gets, "") X(get_misses, "") X(puts, "") X(put_full, "") X(dels, "")        \
	X(errors, "") X(retries, "") X(stale, "") X(touches, "") X(bytes_stored, "")

static void expect_stats(const struct kv_store *kv, const struct kv_stats *want)
{
	struct kv_stats got;

	kv_get_stats(kv, &got);
#define X(name, help)                                                                   \
	cr_assert_eq(got.name, want->name, "stats." #name ": got %llu want %llu",       \
		     (unsigned long long)got.name, (unsigned long long)want->name);
	KV_COUNTERS(X)
#undef X
	/* Random pages do not compress: every one is kept raw in RAM. */
	cr_assert_eq(got.pages, want->bytes_stored / FM_PAGE_SIZE);
	cr_assert_eq(got.raw_pages, got.pages);
	cr_assert_eq(got.blob_bytes, got.pages * FM_PAGE_SIZE);
	cr_assert_eq(got.ram_pages, got.pages);
	cr_assert_eq(got.ram_live_bytes, got.pages * FM_PAGE_SIZE);
	cr_assert_geq(got.ram_held_bytes, got.ram_live_bytes);
	cr_assert_eq(got.disk_pages, 0);
}

static struct kv_local_info info_of(const struct kv_store *kv)
{
	struct kv_local_info in;

	cr_assert_eq(kv_local_info(kv, &in), 0);
	return in;
}

/* ---- opening and arguments ---- */

Test(kv, open_rejects_unknown_backend)
{
	const char *bad[] = { "nosuchstore", "", "LOCAL", "local ", "loca" };
	struct fm_config c;

	for (size_t i = 0; i < FM_ARRAY_SIZE(bad); i++) {
		c = make_cfg(bad[i], 64);
		errno = 0;
		cr_assert_null(kv_open_cfg(&c, 0), "backend \"%s\" opened", bad[i]);
		cr_assert_eq(errno, EINVAL, "backend \"%s\": errno %d", bad[i], errno);
	}
	/* No terminator in the name: must not read past the array. */
	c = make_cfg("local", 64);
	memset(c.store_backend, 'l', sizeof(c.store_backend));
	errno = 0;
	cr_assert_null(kv_open_cfg(&c, 0));
	cr_assert_eq(errno, EINVAL);
	errno = 0;
	cr_assert_null(kv_open(NULL, 0));
	cr_assert_eq(errno, EINVAL);
}

Test(kv, open_local_checks_cap)
{
	struct fm_config c = make_cfg("local", 0);
	struct kv_store *kv;

	errno = 0;
	cr_assert_null(kv_open_cfg(&c, 0));
	cr_assert_eq(errno, EINVAL);
	c.local_max_mib = KV_LOCAL_MAX_MIB + 1;
	errno = 0;
	cr_assert_null(kv_open_cfg(&c, 0));
	cr_assert_eq(errno, EINVAL);
	/* The largest cap opens without reserving anything for it. */
	c.local_max_mib = KV_LOCAL_MAX_MIB;
	kv = kv_open_cfg(&c, 3);
	cr_assert_not_null(kv);
	cr_assert_eq(info_of(kv).max_pages, KV_LOCAL_MAX_MIB * PAGES_PER_MIB);
	cr_assert_eq(info_of(kv).chunks, 0);
	kv_close(kv);
}

Test(kv, close_null_and_null_handles)
{
	struct kv_stats s;

	kv_close(NULL);
	memset(&s, 0xab, sizeof(s));
	kv_get_stats(NULL, &s);
	cr_assert_eq(s.gets, 0);
	cr_assert_eq(s.bytes_stored, 0);
	cr_assert_str_eq(kv_name(NULL), "none");
	cr_assert_not(kv_keeps_after_get(NULL));
	cr_assert_eq(kv_local_info(NULL, NULL), -EINVAL);
}

Test(kv, local_name_and_policy)
{
	struct kv_store *kv = open_local(1);

	cr_assert_str_eq(kv_name(kv), "local");
	cr_assert_not(kv_keeps_after_get(kv), "a kept copy would double memory");
	kv_close(kv);
}

Test(kv, bad_arguments_rejected_and_not_counted)
{
	struct kv_store *kv = open_local(1);
	struct kv_key k = { 1, 2 };
	static uint8_t page[FM_PAGE_SIZE];
	struct kv_stats zero = { 0 };
	int res[2];

	cr_assert_eq(kv_get(kv, k, NULL), -EINVAL);
	cr_assert_eq(kv_put(kv, k, NULL), -EINVAL);
	cr_assert_eq(kv_get(NULL, k, page), -EINVAL);
	cr_assert_eq(kv_put(NULL, k, page), -EINVAL);
	cr_assert_eq(kv_del(NULL, k), -EINVAL);
	cr_assert_eq(kv_mget(kv, NULL, NULL, NULL, 2), -EINVAL);
	cr_assert_eq(kv_mput(kv, &k, NULL, res, 1), -EINVAL);
	cr_assert_eq(kv_mget(NULL, &k, NULL, res, 0), -EINVAL);
	/* An empty batch is fine even without arrays. */
	cr_assert_eq(kv_mget(kv, NULL, NULL, NULL, 0), 0);
	cr_assert_eq(kv_mput(kv, NULL, NULL, NULL, 0), 0);
	expect_stats(kv, &zero);
	kv_close(kv);
}

Test(kv, absent_keys_are_enoent)
{
	struct kv_store *kv = open_local(1);
	struct kv_key k = { 7, 9 };
	static uint8_t page[FM_PAGE_SIZE];
	struct kv_stats want = { 0 };

	cr_assert_eq(kv_get(kv, k, page), -ENOENT);
	cr_assert_eq(kv_del(kv, k), -ENOENT);
	cr_assert_eq(put_seed(kv, k, 1), 0);
	/* Same page index, other region; same region, other page. */
	cr_assert_eq(kv_get(kv, (struct kv_key){ 8, 9 }, page), -ENOENT);
	cr_assert_eq(kv_get(kv, (struct kv_key){ 7, 10 }, page), -ENOENT);
	cr_assert_eq(kv_del(kv, k), 0);
	cr_assert_eq(kv_get(kv, k, page), -ENOENT);
	cr_assert_eq(kv_del(kv, k), -ENOENT);
	want.gets = 4;
	want.get_misses = 4;
	want.puts = 1;
	want.dels = 3;
	expect_stats(kv, &want);
	kv_close(kv);
}

/* ---- the cap ---- */

Test(kv, enospc_at_cap_writes_nothing)
{
	const uint64_t n = PAGES_PER_MIB; /* 1 MiB cap */
	struct kv_store *kv = open_local(1);
	struct kv_key extra = { 99, 0 };
	static uint8_t page[FM_PAGE_SIZE];
	struct kv_stats s;

	for (uint64_t p = 0; p < n; p++)
		cr_assert_eq(put_seed(kv, (struct kv_key){ 1, p }, 100 + p), 0);
	cr_assert_eq(put_seed(kv, extra, 5), -ENOSPC);
	cr_assert_eq(kv_get(kv, extra, page), -ENOENT);
	for (uint64_t p = 0; p < n; p++)
		expect_page(kv, (struct kv_key){ 1, p }, 100 + p);

	/* A batch at the cap: overwrites pass, the new key is refused. */
	{
		static uint64_t a[FM_PAGE_SIZE / 8], b[FM_PAGE_SIZE / 8], c[FM_PAGE_SIZE / 8];
		struct kv_key keys[3] = { { 1, 0 }, { 99, 1 }, { 1, 1 } };
		const void *pages[3] = { a, b, c };
		int res[3];

		fill_page(a, 7000);
		fill_page(b, 7001);
		fill_page(c, 7002);
		cr_assert_eq(kv_mput(kv, keys, pages, res, 3), -ENOSPC);
		cr_assert_eq(res[0], 0);
		cr_assert_eq(res[1], -ENOSPC);
		cr_assert_eq(res[2], 0);
		expect_page(kv, keys[0], 7000);
		expect_page(kv, keys[2], 7002);
		cr_assert_eq(kv_get(kv, keys[1], page), -ENOENT);
	}
	kv_get_stats(kv, &s);
	cr_assert_eq(s.puts, n + 4);
	cr_assert_eq(s.put_full, 2);
	cr_assert_eq(s.bytes_stored, n * FM_PAGE_SIZE);
	cr_assert_eq(s.errors, 0);
	cr_assert_eq(info_of(kv).slots_carved, n);
	kv_close(kv);
}

Test(kv, overwrite_in_place)
{
	const uint64_t n = PAGES_PER_MIB;
	struct kv_store *kv = open_local(1);
	struct kv_local_info before;

	for (uint64_t p = 0; p < n; p++)
		cr_assert_eq(put_seed(kv, (struct kv_key){ 4, p }, 1 + p), 0);
	before = info_of(kv);
	/* At the cap, an overwrite must not need a second slot. */
	for (int round = 0; round < 3; round++)
		for (uint64_t p = 0; p < n; p++)
			cr_assert_eq(put_seed(kv, (struct kv_key){ 4, p }, 1000 * (round + 1) + p),
				     0);
	for (uint64_t p = 0; p < n; p++)
		expect_page(kv, (struct kv_key){ 4, p }, 3000 + p);
	cr_assert_eq(info_of(kv).slots_carved, before.slots_carved);
	cr_assert_eq(info_of(kv).pages, n);
	{
		struct kv_stats s;

		kv_get_stats(kv, &s);
		cr_assert_eq(s.bytes_stored, n * FM_PAGE_SIZE);
		cr_assert_eq(s.put_full, 0);
	}
	kv_close(kv);
}

Test(kv, space_reused_after_deletes)
{
	/* 3 MiB: one full chunk and a short last one. */
	const uint64_t cap = 3 * PAGES_PER_MIB;
	struct kv_store *kv = open_local(3);
	uint64_t *seed = calloc(cap * 8, sizeof(*seed)); /* page index -> seed, 0 absent */
	uint64_t next = 0, held = 0, rs = 42;
	struct kv_local_info full;

	cr_assert_not_null(seed);
	for (; held < cap; next++, held++)
		cr_assert_eq(put_seed(kv, (struct kv_key){ 2, next }, seed[next] = next + 1), 0);
	cr_assert_eq(put_seed(kv, (struct kv_key){ 2, next }, 1), -ENOSPC);
	full = info_of(kv);
	cr_assert_eq(full.slots_carved, cap);

	for (int cycle = 0; cycle < 6; cycle++) {
		uint64_t deleted = 0, added = 0;

		/* Delete a random half of what is held. */
		for (uint64_t p = 0; p < next && deleted < cap / 2; p++) {
			if (!seed[p] || (rng_next(&rs) & 1))
				continue;
			cr_assert_eq(kv_del(kv, (struct kv_key){ 2, p }), 0);
			seed[p] = 0;
			deleted++;
		}
		for (uint64_t p = 0; p < next && deleted < cap / 2; p++) {
			if (!seed[p])
				continue;
			cr_assert_eq(kv_del(kv, (struct kv_key){ 2, p }), 0);
			seed[p] = 0;
			deleted++;
		}
		held -= deleted;
		/* Fill again with new keys: exactly the freed room is there. */
		for (;; next++) {
			uint64_t sd = rng_next(&rs) | 1;
			int rc = put_seed(kv, (struct kv_key){ 2, next }, sd);

			if (rc == -ENOSPC)
				break;
			cr_assert_eq(rc, 0);
			seed[next] = sd;
			added++;
			held++;
		}
		cr_assert_eq(added, deleted, "cycle %d: freed %llu, refilled %llu", cycle,
			     (unsigned long long)deleted, (unsigned long long)added);
		next++;
		for (uint64_t p = 0; p < next; p++)
			if (seed[p])
				expect_page(kv, (struct kv_key){ 2, p }, seed[p]);
		/* Steady state: no new slot, chunk or table cell. */
		{
			struct kv_local_info now = info_of(kv);

			cr_assert_eq(now.pages, cap);
			cr_assert_eq(now.slots_carved, full.slots_carved);
			cr_assert_eq(now.chunks, full.chunks);
			cr_assert_eq(now.table_slots, full.table_slots);
			cr_assert_eq(now.meta_bytes, full.meta_bytes);
		}
	}
	cr_assert_eq(full.chunks, 2);
	free(seed);
	kv_close(kv);
}

/* ---- the table ---- */

Test(kv, table_grows_across_resizes)
{
	const uint64_t n = 20000; /* 256 cells -> 32768: seven doublings */
	struct kv_store *kv = open_local(128);
	uint64_t grows = 0, verified_to = 0;
	struct kv_stats s;

	cr_assert_eq(info_of(kv).table_slots, 256);
	for (uint64_t i = 0; i < n; i++) {
		/* Three regions of consecutive pages: the hash must scatter them. */
		struct kv_key k = { i % 3, i / 3 };

		cr_assert_eq(put_seed(kv, k, i + 1), 0);
		if (info_of(kv).table_grows != grows) {
			grows = info_of(kv).table_grows;
			/* Everything put so far survives the rehash. */
			for (uint64_t j = 0; j <= i; j++)
				expect_page(kv, (struct kv_key){ j % 3, j / 3 }, j + 1);
			verified_to = i;
		}
	}
	cr_assert_eq(grows, 7);
	cr_assert_eq(info_of(kv).table_slots, 32768);
	cr_assert_geq(verified_to, n / 2);
	for (uint64_t i = 0; i < n; i++)
		expect_page(kv, (struct kv_key){ i % 3, i / 3 }, i + 1);
	/* Delete in a scrambled order; the rest must stay findable. */
	for (uint64_t i = 0; i < n; i++) {
		uint64_t j = (i * 7919) % n; /* 7919 is prime, coprime to n */
		static uint8_t page[FM_PAGE_SIZE];

		cr_assert_eq(kv_del(kv, (struct kv_key){ j % 3, j / 3 }), 0);
		cr_assert_eq(kv_get(kv, (struct kv_key){ j % 3, j / 3 }, page), -ENOENT);
		if (i % 1000 == 999)
			for (uint64_t t = i + 1; t < n; t += 97) {
				uint64_t q = (t * 7919) % n;

				expect_page(kv, (struct kv_key){ q % 3, q / 3 }, q + 1);
			}
	}
	kv_get_stats(kv, &s);
	cr_assert_eq(s.bytes_stored, 0);
	cr_assert_eq(info_of(kv).pages, 0);
	kv_close(kv);
}

Test(kv, churn_at_full_load_without_growth)
{
	/* Hold the table at its 70% threshold and churn: back-shift deletion
	 * must keep every key findable with no tombstones and no growth. */
	enum { HELD = 179, ROUNDS = 20000 }; /* 179 = 256 * 0.7 */
	struct kv_store *kv = open_local(64);
	struct kv_key keys[HELD];
	uint64_t seeds[HELD], rs = 9;
	static uint8_t page[FM_PAGE_SIZE];

	for (int i = 0; i < HELD; i++) {
		/* Random but distinct: the low digits carry i. */
		keys[i] = (struct kv_key){ rng_next(&rs) % 5, rng_next(&rs) % 100000 * 1000 + i };
		seeds[i] = rng_next(&rs) | 1;
		cr_assert_eq(put_seed(kv, keys[i], seeds[i]), 0);
	}
	cr_assert_eq(info_of(kv).pages, HELD);
	cr_assert_eq(info_of(kv).table_slots, 256);
	for (int r = 0; r < ROUNDS; r++) {
		int v = (int)(rng_next(&rs) % HELD);
		struct kv_key nk;

		cr_assert_eq(kv_del(kv, keys[v]), 0);
		cr_assert_eq(kv_get(kv, keys[v], page), -ENOENT);
		/* Fresh keys come from a range the held keys never use. */
		nk = (struct kv_key){ rng_next(&rs) % 5, 1000000000 + (uint64_t)r };
		keys[v] = nk;
		seeds[v] = rng_next(&rs) | 1;
		cr_assert_eq(put_seed(kv, nk, seeds[v]), 0);
		if (r % 200 == 0)
			for (int i = 0; i < HELD; i++)
				expect_page(kv, keys[i], seeds[i]);
	}
	for (int i = 0; i < HELD; i++)
		expect_page(kv, keys[i], seeds[i]);
	cr_assert_eq(info_of(kv).table_slots, 256);
	cr_assert_eq(info_of(kv).pages, HELD);
	kv_close(kv);
}

struct hkey {
	uint32_t h;
	uint64_t v;
};

static int hkey_cmp(const void *a, const void *b)
{
	const struct hkey *x = a, *y = b;

	return x->h < y->h ? -1 : x->h > y->h;
}

/* Birthday search: two keys that differ only in the region (or only in the
 * page) yet share the table's 32-bit hash. 2^18 draws give ~8 pairs. */
static bool find_collision(bool vary_region, struct kv_key *a, struct kv_key *b)
{
	const size_t n = 1u << 18;
	struct hkey *v = malloc(n * sizeof(*v));
	bool ok = false;

	cr_assert_not_null(v);
	for (size_t i = 0; i < n; i++) {
		struct kv_key k = vary_region ? (struct kv_key){ i, 5 } : (struct kv_key){ 5, i };

		v[i] = (struct hkey){ kv_local_hash(k), i };
	}
	qsort(v, n, sizeof(*v), hkey_cmp);
	for (size_t i = 1; i < n && !ok; i++) {
		uint64_t x = v[i - 1].v, y = v[i].v;

		if (v[i].h != v[i - 1].h)
			continue;
		*a = vary_region ? (struct kv_key){ x, 5 } : (struct kv_key){ 5, x };
		*b = vary_region ? (struct kv_key){ y, 5 } : (struct kv_key){ 5, y };
		ok = true;
	}
	free(v);
	return ok;
}

Test(kv, full_hash_collisions_keep_keys_apart)
{
	for (int vary_region = 0; vary_region < 2; vary_region++) {
		struct kv_store *kv = open_local(1);
		struct kv_key a, b;
		static uint8_t page[FM_PAGE_SIZE];

		cr_assert(find_collision(vary_region, &a, &b), "no 32-bit collision in 2^18 keys");
		cr_assert_eq(kv_local_hash(a), kv_local_hash(b));
		cr_assert_eq(put_seed(kv, a, 1), 0);
		cr_assert_eq(kv_get(kv, b, page), -ENOENT);
		cr_assert_eq(kv_del(kv, b), -ENOENT);
		cr_assert_eq(put_seed(kv, b, 2), 0);
		expect_page(kv, a, 1);
		expect_page(kv, b, 2);
		cr_assert_eq(info_of(kv).pages, 2);
		cr_assert_eq(kv_del(kv, a), 0);
		expect_page(kv, b, 2);
		cr_assert_eq(kv_get(kv, a, page), -ENOENT);
		kv_close(kv);
	}
}

/* ---- batches ---- */

Test(kv, batches_fill_results_per_item)
{
	struct kv_store *kv = open_local(1);
	static uint64_t p0[512], p1[512], p2[512], p3[512];
	struct kv_key keys[4] = { { 1, 1 }, { 1, 2 }, { 1, 1 }, { 1, 3 } };
	const void *in[4] = { p0, p1, p2, NULL };
	void *out[4] = { p0, p1, p2, p3 };
	int res[4];
	struct kv_stats s;

	fill_page(p0, 10);
	fill_page(p1, 11);
	fill_page(p2, 12);
	/* A NULL page fails that item only; a repeated key ends with its last page. */
	cr_assert_eq(kv_mput(kv, keys, in, res, 4), -EINVAL);
	cr_assert_eq(res[0], 0);
	cr_assert_eq(res[1], 0);
	cr_assert_eq(res[2], 0);
	cr_assert_eq(res[3], -EINVAL);
	expect_page(kv, keys[0], 12);
	expect_page(kv, keys[1], 11);

	keys[2] = (struct kv_key){ 2, 1 }; /* absent */
	cr_assert_eq(kv_mget(kv, keys, out, res, 4), -ENOENT);
	cr_assert_eq(res[0], 0);
	cr_assert_eq(res[1], 0);
	cr_assert_eq(res[2], -ENOENT);
	cr_assert_eq(res[3], -ENOENT);
	fill_page(p3, 12);
	cr_assert(memcmp(p0, p3, FM_PAGE_SIZE) == 0);
	fill_page(p3, 11);
	cr_assert(memcmp(p1, p3, FM_PAGE_SIZE) == 0);

	out[0] = NULL;
	cr_assert_eq(kv_mget(kv, keys, out, res, 2), -EINVAL);
	cr_assert_eq(res[0], -EINVAL);
	cr_assert_eq(res[1], 0);

	kv_get_stats(kv, &s);
	cr_assert_eq(s.puts, 3);
	cr_assert_eq(s.gets, 2 + 4 + 1); /* two expect_page, two mgets */
	cr_assert_eq(s.get_misses, 2);
	cr_assert_eq(s.errors, 0);
	cr_assert_eq(s.bytes_stored, 2 * FM_PAGE_SIZE);
	kv_close(kv);
}

/* A backend with its own batch calls: the generic layer must count each
 * item from results[] and report the first failure. */
static int fake_get(struct kv_store *kv, struct kv_key key, void *page_out)
{
	return key.page == 0 ? 0 : key.page == 1 ? -ENOENT : -EIO;
}

static int fake_put(struct kv_store *kv, struct kv_key key, const void *page)
{
	return key.page == 0 ? 0 : key.page == 1 ? -ENOSPC : -EIO;
}

static int fake_del(struct kv_store *kv, struct kv_key key)
{
	return key.page == 0 ? 0 : key.page == 1 ? -ENOENT : -EIO;
}

static int fake_mget(struct kv_store *kv, const struct kv_key *keys, void *const *pages,
		     int *results, size_t n)
{
	for (size_t i = 0; i < n; i++)
		results[i] = fake_get(kv, keys[i], pages[i]);
	return 0; /* deliberately wrong: the layer must trust results[] */
}

static int fake_mput(struct kv_store *kv, const struct kv_key *keys, const void *const *pages,
		     int *results, size_t n)
{
	for (size_t i = 0; i < n; i++)
		results[i] = fake_put(kv, keys[i], pages[i]);
	return 0;
}

static const struct kv_ops fake_ops = {
	.name = "fake",
	.keeps_after_get = true,
	.get = fake_get,
	.put = fake_put,
	.del = fake_del,
	.mget = fake_mget,
	.mput = fake_mput,
};

Test(kv, native_batches_and_errors_are_counted)
{
	struct kv_store fake = { .ops = &fake_ops };
	struct kv_key keys[3] = { { 0, 0 }, { 0, 1 }, { 0, 2 } };
	static uint8_t a[FM_PAGE_SIZE], b[FM_PAGE_SIZE], c[FM_PAGE_SIZE];
	void *out[3] = { a, b, c };
	const void *in[3] = { a, b, c };
	int res[3];
	struct kv_stats want = { 0 };

	cr_assert_eq(kv_mget(&fake, keys, out, res, 3), -ENOENT);
	cr_assert_eq(res[2], -EIO);
	cr_assert_eq(kv_mput(&fake, keys, in, res, 3), -ENOSPC);
	cr_assert_eq(kv_get(&fake, keys[2], a), -EIO);
	cr_assert_eq(kv_put(&fake, keys[2], a), -EIO);
	for (int i = 0; i < 3; i++)
		kv_del(&fake, keys[i]);
	/* A NULL page routes the batch through the loop; still one count each. */
	out[1] = NULL;
	cr_assert_eq(kv_mget(&fake, keys, out, res, 3), -EINVAL);
	cr_assert_eq(res[0], 0);
	cr_assert_eq(res[1], -EINVAL);
	cr_assert_eq(res[2], -EIO);
	want.gets = 3 + 1 + 2;
	want.get_misses = 1;
	want.puts = 3 + 1;
	want.put_full = 1;
	want.dels = 3;
	want.errors = 1 + 1 + 1 + 1 + 1 + 1; /* mget, mput, get, put, del, loop mget */
	expect_stats(&fake, &want);
	cr_assert(kv_keeps_after_get(&fake));
	cr_assert_eq(kv_local_info(&fake, &(struct kv_local_info){ 0 }), -EINVAL);
}

/* ---- the property, against a mirror ---- */

#define NREG 16
#define NPAGE 512
#define MIRROR_CAP_MIB 8 /* 2048 pages against 8192 keys: the cap is hit often */
#define MAX_BATCH 16

struct mirror {
	uint64_t region[NREG];
	uint64_t page[NPAGE];
	uint64_t seed[NREG * NPAGE]; /* 0: absent */
	uint64_t held;
	uint64_t cap;
	struct kv_stats want;
};

static struct kv_key mkey(const struct mirror *m, size_t idx)
{
	return (struct kv_key){ m->region[idx / NPAGE], m->page[idx % NPAGE] };
}

static bool seen(const uint64_t *v, size_t n, uint64_t x)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == x)
			return true;
	return false;
}

static void mirror_init(struct mirror *m, uint64_t *rs)
{
	memset(m, 0, sizeof(*m));
	m->cap = MIRROR_CAP_MIB * PAGES_PER_MIB;
	/* Edge ids first, then random ones; dense pages first, then sparse. */
	m->region[0] = 0;
	m->region[1] = UINT64_MAX;
	m->region[2] = 1;
	for (size_t r = 3; r < NREG; r++) {
		do
			m->region[r] = rng_next(rs);
		while (seen(m->region, r, m->region[r]));
	}
	for (size_t p = 0; p < NPAGE / 2; p++)
		m->page[p] = p;
	m->page[NPAGE / 2] = UINT64_MAX;
	for (size_t p = NPAGE / 2 + 1; p < NPAGE; p++) {
		do
			m->page[p] = rng_next(rs) >> (rng_next(rs) % 40);
		while (seen(m->page, p, m->page[p]));
	}
}

/* What a put must answer, and the mirror after it. */
static int mirror_put(struct mirror *m, size_t idx, uint64_t sd)
{
	m->want.puts++;
	if (!m->seed[idx]) {
		if (m->held == m->cap) {
			m->want.put_full++;
			return -ENOSPC;
		}
		m->held++;
	}
	m->seed[idx] = sd;
	return 0;
}

static int mirror_get(struct mirror *m, size_t idx)
{
	m->want.gets++;
	if (m->seed[idx])
		return 0;
	m->want.get_misses++;
	return -ENOENT;
}

static void check_all(struct kv_store *kv, struct mirror *m)
{
	static uint8_t page[FM_PAGE_SIZE];

	for (size_t idx = 0; idx < NREG * NPAGE; idx++) {
		if (mirror_get(m, idx) == 0)
			expect_page(kv, mkey(m, idx), m->seed[idx]);
		else
			cr_assert_eq(kv_get(kv, mkey(m, idx), page), -ENOENT);
	}
	m->want.bytes_stored = m->held * FM_PAGE_SIZE;
	expect_stats(kv, &m->want);
	cr_assert_eq(info_of(kv).pages, m->held);
	cr_assert_leq(info_of(kv).slots_carved, m->cap);
}

Test(kv, random_ops_match_mirror, .timeout = 240)
{
	enum { OPS = 200000, PHASE = 4000 };
	static struct mirror m;
	static uint64_t bufs[MAX_BATCH][FM_PAGE_SIZE / 8], want[FM_PAGE_SIZE / 8];
	uint64_t rs = 0x5eed;
	struct kv_store *kv = open_local(MIRROR_CAP_MIB);
	unsigned put_pct = 0;
	uint64_t n_enospc = 0;

	mirror_init(&m, &rs);
	for (int op = 0; op < OPS; op++) {
		unsigned pick = (unsigned)(rng_next(&rs) % 100);
		size_t idx = rng_next(&rs) % (NREG * NPAGE);
		int rc, exp;

		/* Alternate filling and draining phases so the store crosses the
		 * cap, empties out and refills, not just sits at one size. */
		if (op % PHASE == 0)
			put_pct = (op / PHASE) % 2 ? 15 : 50;
		if (pick < put_pct) {
			uint64_t sd = rng_next(&rs) | 1;

			exp = mirror_put(&m, idx, sd);
			n_enospc += exp == -ENOSPC;
			rc = put_seed(kv, mkey(&m, idx), sd);
			cr_assert_eq(rc, exp, "op %d put idx %zu: %d want %d", op, idx, rc, exp);
		} else if (pick < put_pct + 25) {
			exp = mirror_get(&m, idx);
			rc = kv_get(kv, mkey(&m, idx), bufs[0]);
			cr_assert_eq(rc, exp, "op %d get idx %zu: %d want %d", op, idx, rc, exp);
			if (rc == 0) {
				fill_page(want, m.seed[idx]);
				cr_assert(memcmp(bufs[0], want, FM_PAGE_SIZE) == 0, "op %d", op);
			}
		} else if (pick < put_pct + 25 + 20 + (put_pct == 15 ? 25 : 0)) {
			m.want.dels++;
			exp = m.seed[idx] ? 0 : -ENOENT;
			if (m.seed[idx]) {
				m.seed[idx] = 0;
				m.held--;
			}
			rc = kv_del(kv, mkey(&m, idx));
			cr_assert_eq(rc, exp, "op %d del idx %zu: %d want %d", op, idx, rc, exp);
		} else {
			/* A batch of random keys, repeats allowed, now and then one
			 * NULL page (rejected for that item, not counted). */
			size_t n = 1 + rng_next(&rs) % MAX_BATCH;
			bool is_put = rng_next(&rs) & 1;
			struct kv_key keys[MAX_BATCH];
			size_t idxs[MAX_BATCH];
			uint64_t sds[MAX_BATCH];
			void *pages[MAX_BATCH];
			int res[MAX_BATCH], exps[MAX_BATCH], first = 0;
			size_t null_at = rng_next(&rs) % 10 == 0 ? rng_next(&rs) % n : SIZE_MAX;

			for (size_t i = 0; i < n; i++) {
				idxs[i] = rng_next(&rs) % (NREG * NPAGE);
				keys[i] = mkey(&m, idxs[i]);
				pages[i] = i == null_at ? NULL : bufs[i];
				sds[i] = rng_next(&rs) | 1;
				if (is_put && pages[i])
					fill_page(bufs[i], sds[i]);
			}
			for (size_t i = 0; i < n; i++) {
				if (!pages[i])
					exps[i] = -EINVAL;
				else if (is_put)
					exps[i] = mirror_put(&m, idxs[i], sds[i]);
				else
					exps[i] = mirror_get(&m, idxs[i]);
				n_enospc += exps[i] == -ENOSPC;
				if (!first)
					first = exps[i];
			}
			rc = is_put ? kv_mput(kv, keys, (const void *const *)pages, res, n)
				    : kv_mget(kv, keys, pages, res, n);
			cr_assert_eq(rc, first, "op %d m%s: %d want %d", op, is_put ? "put" : "get",
				     rc, first);
			for (size_t i = 0; i < n; i++) {
				cr_assert_eq(res[i], exps[i], "op %d item %zu: %d want %d", op, i,
					     res[i], exps[i]);
				if (is_put || res[i])
					continue;
				/* A repeated key in one mget reads the same page. */
				fill_page(want, m.seed[idxs[i]]);
				cr_assert(memcmp(bufs[i], want, FM_PAGE_SIZE) == 0,
					  "op %d mget %zu", op, i);
			}
		}
		if (op % 20000 == 19999)
			check_all(kv, &m);
	}
	check_all(kv, &m);
	/* The run must have exercised the cap, not merely stayed under it. */
	cr_assert_gt(n_enospc, 100);
	cr_assert_gt(info_of(kv).table_grows, 2);
	kv_close(kv);
}
