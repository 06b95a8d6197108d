/* The memcached backend against real memcached servers the tests start
 * themselves, plus its pure parts: the key format, the page hash (SipHash
 * reference vectors) and the store-copy table the shard keeps. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <libmemcached/memcached.h>

#include "config_params.h"
#include "base/base.h"
#include "ctl/config.h"
#include "kv/kv.h"
#include "memcached_harness.h"
#include "shard/page_hash.h"
#include "shard/storecopy.h"

#define PAGE FM_PAGE_SIZE

/* ---- pure parts ---- */

Test(kv_memcached, key_format_is_fixed_width_and_documented)
{
	char k[KV_MEMCACHED_KEY_LEN + 1];

	kv_memcached_key((struct kv_key){ (1ull << 48) | 2, 0x1f }, k);
	cr_expect_str_eq(k, "fm1:0001000000000002:000000000000001f");
	kv_memcached_key((struct kv_key){ UINT64_MAX, UINT64_MAX }, k);
	cr_expect_str_eq(k, "fm1:ffffffffffffffff:ffffffffffffffff");
	cr_expect_eq(strlen(k), KV_MEMCACHED_KEY_LEN);
	kv_memcached_key((struct kv_key){ 0, 0 }, k);
	cr_expect_str_eq(k, "fm1:0000000000000000:0000000000000000");
	/* printable and without blanks: valid for the ASCII protocol too */
	for (size_t i = 0; i < KV_MEMCACHED_KEY_LEN; i++)
		cr_expect(k[i] > ' ' && k[i] < 0x7f);
}

Test(page_hash, siphash_reference_vectors)
{
	/* Key 00..0f, message 00..n-1 (the SipHash paper and reference code). */
	const struct page_hash_key key = { 0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull };
	static const struct {
		size_t n;
		uint64_t h24, h13;
	} v[] = {
		{ 0, 0x726fdb47dd0e0e31ull, 0xabac0158050fc4dcull },
		{ 1, 0x74f839c593dc67fdull, 0xc9f49bf37d57ca93ull },
		{ 8, 0x93f5f5799a932462ull, 0x369095118d299a8eull },
		{ 15, 0xa129ca6149be45e5ull, 0xd320d86d2a519956ull },
		{ 16, 0x3f2acc7f57c29bdbull, 0xcc4fdd1a7d908b66ull },
	};
	uint8_t msg[16];

	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)i;
	for (size_t i = 0; i < FM_ARRAY_SIZE(v); i++) {
		cr_expect_eq(siphash_cd(&key, msg, v[i].n, 2, 4), v[i].h24, "SipHash-2-4, %zu bytes",
			     v[i].n);
		cr_expect_eq(siphash_cd(&key, msg, v[i].n, 1, 3), v[i].h13, "SipHash-1-3, %zu bytes",
			     v[i].n);
	}
}

Test(page_hash, every_bit_and_the_key_matter)
{
	static uint8_t page[PAGE] __attribute__((aligned(64)));
	struct page_hash_key k1, k2;
	uint64_t h;

	page_hash_key_init(&k1);
	page_hash_key_init(&k2);
	cr_assert(k1.k0 != k2.k0 || k1.k1 != k2.k1, "two random keys are equal");
	for (size_t i = 0; i < PAGE; i++)
		page[i] = (uint8_t)(i * 7);
	h = page_hash(&k1, page);
	cr_expect_eq(page_hash(&k1, page), h, "not deterministic");
	cr_expect_neq(page_hash(&k2, page), h, "the key does not matter");
	cr_expect_eq(page_hash(&k1, page), siphash_cd(&k1, page, PAGE, 1, 3));
	for (size_t bit = 0; bit < PAGE * 8; bit += 97) {
		page[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		cr_expect_neq(page_hash(&k1, page), h, "flipping bit %zu kept the hash", bit);
		page[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
}

Test(storecopy, disabled_table_records_nothing)
{
	struct storecopy sc;
	uint64_t h;

	sc_init(&sc, false);
	cr_expect_eq(sc_reserve(&sc, 4), 0);
	cr_expect_eq(sc_set_synced(&sc, 5, 42), 0);
	cr_expect_not(sc_has(&sc, 5));
	cr_expect_not(sc_synced_hash(&sc, 5, &h));
	cr_expect_eq(sc_bytes(&sc), 0);
	sc_destroy(&sc);
}

Test(storecopy, bits_and_hashes)
{
	struct storecopy sc;
	uint32_t a = 3, b = (2u << FM_STRIPE_SHIFT) | 511;
	uint64_t h = 0;

	sc_init(&sc, true);
	cr_expect_eq(sc_prepare(&sc, a), -ENOMEM, "no room reserved: must refuse");
	cr_assert_eq(sc_reserve(&sc, 3), 0);
	cr_expect_eq(sc_bytes(&sc), 3 * sizeof(void *), "chunks allocated before use");
	cr_expect_not(sc_has(&sc, a));
	cr_assert_eq(sc_set_synced(&sc, a, 0xabc), 0);
	cr_expect(sc_has(&sc, a));
	cr_expect(sc_synced_hash(&sc, a, &h));
	cr_expect_eq(h, 0xabc);
	cr_expect_not(sc_has(&sc, a + 1), "a neighbour got the bit");
	cr_expect_not(sc_has(&sc, b));
	cr_assert_eq(sc_prepare(&sc, b), 0);
	sc_set_unsynced(&sc, b);
	cr_expect(sc_has(&sc, b));
	cr_expect_not(sc_synced_hash(&sc, b, &h));
	sc_set_unsynced(&sc, a);
	cr_expect(sc_has(&sc, a));
	cr_expect_not(sc_synced_hash(&sc, a, &h), "an unsynced copy must not allow a skip");
	sc_clear(&sc, a);
	cr_expect_not(sc_has(&sc, a));
	cr_expect_eq(sc_bytes(&sc), 3 * sizeof(void *) + 2 * sizeof(struct sc_chunk));
	sc_drop_chunk(&sc, 2);
	cr_expect_not(sc_has(&sc, b));
	cr_expect_eq(sc_bytes(&sc), 3 * sizeof(void *) + sizeof(struct sc_chunk));
	sc_destroy(&sc);
}

static bool always(const void *page, void *arg)
{
	return arg != NULL;
}

/* The generic layer gives every backend the checked get and the touch. */
Test(kv_generic, checked_get_and_touch_on_a_backend_without_them)
{
	struct fm_config c;
	struct kv_store *kv;
	struct kv_stats st;
	uint8_t page[PAGE] = { 1 }, out[PAGE];
	struct kv_key k = { 1, 2 };
	int res[2];
	struct kv_key keys[2] = { { 1, 2 }, { 1, 3 } };

	fm_config_defaults(&c);
	kv = kv_open_cfg(&c, 0);
	cr_assert_not_null(kv);
	cr_assert_eq(kv_put(kv, k, page), 0);
	cr_expect_eq(kv_get_checked(kv, k, out, always, kv), 0);
	cr_expect_eq(memcmp(out, page, PAGE), 0);
	cr_expect_eq(kv_get_checked(kv, k, out, always, NULL), -ENOENT, "a rejected copy passed");
	cr_expect_eq(kv_get_checked(kv, (struct kv_key){ 1, 9 }, out, always, kv), -ENOENT);
	cr_expect_eq(kv_get_checked(kv, k, out, NULL, NULL), -EINVAL);
	/* without a touch of its own a backend asks for every page to be rewritten */
	cr_expect_eq(kv_mtouch(kv, keys, res, 2), -ENOENT);
	cr_expect_eq(res[0], -ENOENT);
	cr_expect_eq(res[1], -ENOENT);
	kv_get_stats(kv, &st);
	cr_expect_eq(st.stale, 1);
	cr_expect_eq(st.gets, 3);
	cr_expect_eq(st.get_misses, 2);
	cr_expect_eq(st.errors, 0);
	kv_close(kv);
}

/* ---- the backend against real servers ---- */

static struct mcd srv[3];
static unsigned nsrv;

static void stop_servers(void)
{
	for (unsigned i = 0; i < nsrv; i++)
		mcd_stop(&srv[i]);
	nsrv = 0;
}

static void start_servers(unsigned n, unsigned mib, bool unix_socket)
{
	for (unsigned i = 0; i < n; i++) {
		cr_assert_eq(mcd_start(&srv[i], mib, unix_socket), 0,
			     "cannot start memcached (is it installed? scripts/test installs it)");
		nsrv = i + 1;
	}
}

static struct kv_store *open_store(unsigned replicas, bool binary, const char *extra_server)
{
	struct fm_config c;
	size_t len = 0;

	fm_config_defaults(&c);
	snprintf(c.store_backend, sizeof(c.store_backend), "memcached");
	c.mc.servers[0] = '\0';
	for (unsigned i = 0; i < nsrv; i++)
		len += (size_t)snprintf(c.mc.servers + len, sizeof(c.mc.servers) - len, "%s%s",
					i ? "," : "", srv[i].addr);
	if (extra_server)
		snprintf(c.mc.servers + len, sizeof(c.mc.servers) - len, ",%s", extra_server);
	c.mc.replicas = replicas;
	c.mc.binary = binary;
	c.mc.batch = 16;
	c.mc.retries = 2;
	c.mc.retry_delay_ms = 5;
	c.mc.io_timeout_ms = 500;
	return kv_open_cfg(&c, 0);
}

static void fill(uint8_t *page, uint64_t pno, uint32_t version)
{
	uint64_t *w = (uint64_t *)page;

	for (size_t i = 0; i < PAGE / 8; i++)
		w[i] = fm_mix64(pno * 1000003 + version) + i;
}

static bool same(const uint8_t *page, uint64_t pno, uint32_t version)
{
	static uint8_t want[PAGE];

	fill(want, pno, version);
	return memcmp(page, want, PAGE) == 0;
}

/* mput n pages (version v) of region 7 in batches of `chunk`; returns the
 * number refused. */
static size_t put_pages(struct kv_store *kv, size_t first, size_t n, uint32_t v, int *last_rc)
{
	static uint8_t buf[64][PAGE];
	struct kv_key keys[64];
	const void *pages[64];
	int res[64];
	size_t refused = 0;

	for (size_t done = 0; done < n; done += 64) {
		size_t m = FM_MIN((size_t)64, n - done);

		for (size_t i = 0; i < m; i++) {
			keys[i] = (struct kv_key){ 7, first + done + i };
			fill(buf[i], first + done + i, v);
			pages[i] = buf[i];
		}
		kv_mput(kv, keys, pages, res, m);
		for (size_t i = 0; i < m; i++) {
			if (res[i]) {
				refused++;
				*last_rc = res[i];
			}
		}
	}
	return refused;
}

static size_t bad_pages(struct kv_store *kv, size_t first, size_t n, uint32_t v)
{
	static uint8_t page[PAGE];
	size_t bad = 0;

	for (size_t p = first; p < first + n; p++)
		if (kv_get(kv, (struct kv_key){ 7, p }, page) != 0 || !same(page, p, v))
			bad++;
	return bad;
}

static void roundtrip(bool binary, bool unix_socket)
{
	struct kv_store *kv;
	uint8_t page[PAGE];
	struct kv_stats st;
	int rc = 0;

	start_servers(1, 64, unix_socket);
	kv = open_store(0, binary, NULL);
	cr_assert_not_null(kv, "open: %s", strerror(errno));
	cr_expect_str_eq(kv_name(kv), "memcached");
	cr_expect(kv_keeps_after_get(kv));
	cr_expect_eq(kv_get(kv, (struct kv_key){ 7, 1 }, page), -ENOENT);
	cr_expect_eq(put_pages(kv, 0, 300, 1, &rc), 0, "refused: %s", strerror(-rc));
	cr_expect_eq(bad_pages(kv, 0, 300, 1), 0);
	cr_expect_eq(put_pages(kv, 0, 300, 2, &rc), 0, "overwrite refused");
	cr_expect_eq(bad_pages(kv, 0, 300, 2), 0);
	fill(page, 5, 9);
	cr_expect_eq(kv_put(kv, (struct kv_key){ 7, 5 }, page), 0);
	cr_expect_eq(kv_del(kv, (struct kv_key){ 7, 4 }), 0);
	cr_expect_eq(kv_del(kv, (struct kv_key){ 7, 4 }), -ENOENT);
	cr_expect_eq(kv_get(kv, (struct kv_key){ 7, 4 }, page), -ENOENT);
	cr_expect_eq(kv_get(kv, (struct kv_key){ 7, 5 }, page), 0);
	cr_expect(same(page, 5, 9));
	/* another region's page of the same index is another key */
	cr_expect_eq(kv_get(kv, (struct kv_key){ 8, 5 }, page), -ENOENT);
	{
		struct kv_key tk[3] = { { 7, 5 }, { 7, 4 }, { 7, 299 } };
		int tr[3];

		cr_expect_eq(kv_mtouch(kv, tk, tr, 3), -ENOENT);
		cr_expect_eq(tr[0], 0, "a stored key must touch");
		cr_expect_eq(tr[1], -ENOENT, "a deleted key touched");
		cr_expect_eq(tr[2], 0);
		/* touching keeps the page as it was */
		cr_expect_eq(kv_get(kv, (struct kv_key){ 7, 299 }, page), 0);
		cr_expect(same(page, 299, 2));
	}
	kv_get_stats(kv, &st);
	cr_expect_eq(st.touches, 3);
	cr_expect_eq(st.puts, 601);
	cr_expect_eq(st.errors, 0);
	cr_expect_eq(st.put_full, 0);
	kv_close(kv);
	stop_servers();
}

Test(kv_memcached, roundtrip_binary_tcp, .timeout = 60)
{
	roundtrip(true, false);
}

Test(kv_memcached, roundtrip_ascii_tcp, .timeout = 60)
{
	roundtrip(false, false);
}

Test(kv_memcached, roundtrip_binary_unix_socket, .timeout = 60)
{
	roundtrip(true, true);
}

Test(kv_memcached, roundtrip_ascii_unix_socket, .timeout = 60)
{
	roundtrip(false, true);
}

static void full_server(bool binary)
{
	struct kv_store *kv;
	struct kv_stats st;
	size_t refused, stored;
	int rc = 0;

	start_servers(1, 2, false);   /* 2 MiB: a few hundred pages */
	kv = open_store(0, binary, NULL);
	cr_assert_not_null(kv);
	refused = put_pages(kv, 0, 2000, 1, &rc);
	cr_assert_gt(refused, 0, "a 2 MiB server took 2000 pages");
	cr_expect_eq(rc, -ENOSPC, "a full server must answer -ENOSPC, got %s", strerror(-rc));
	kv_get_stats(kv, &st);
	cr_expect_eq(st.put_full, refused);
	cr_expect_eq(st.errors, 0);
	/* Every page the store accepted is still there: nothing was evicted. */
	stored = 0;
	for (size_t p = 0; p < 2000; p++) {
		static uint8_t page[PAGE];

		rc = kv_get(kv, (struct kv_key){ 7, p }, page);
		if (rc == 0) {
			cr_expect(same(page, p, 1), "page %zu corrupt", p);
			stored++;
		} else {
			cr_expect_eq(rc, -ENOENT);
		}
	}
	cr_expect_eq(stored, 2000 - refused, "%zu stored, %zu refused", stored, refused);
	/* Deleting makes room again. */
	for (size_t p = 0; p < 100; p++)
		kv_del(kv, (struct kv_key){ 7, p });
	cr_expect_lt(put_pages(kv, 5000, 20, 1, &rc), 20, "no room after deletes");
	kv_close(kv);
	stop_servers();
}

Test(kv_memcached, full_server_refuses_binary, .timeout = 60)
{
	full_server(true);
}

Test(kv_memcached, full_server_refuses_ascii, .timeout = 60)
{
	full_server(false);
}

Test(kv_memcached, down_server_is_eio_then_recovers, .timeout = 60)
{
	struct kv_store *kv;
	struct kv_memcached_info info;
	struct kv_stats st0, st1;
	uint8_t page[PAGE];
	int rc = 0;

	start_servers(1, 64, false);
	kv = open_store(0, true, NULL);
	cr_assert_not_null(kv);
	cr_assert_eq(put_pages(kv, 0, 50, 1, &rc), 0);
	mcd_kill(&srv[0], SIGKILL);
	kv_get_stats(kv, &st0);
	cr_expect_eq(kv_get(kv, (struct kv_key){ 7, 3 }, page), -EIO, "an unreachable server is -EIO");
	/* Bounded by count, not by the clock: exactly the configured retries
	 * (open_store sets 2), then -EIO. */
	kv_get_stats(kv, &st1);
	cr_expect_eq(st1.retries - st0.retries, 2, "a get of a down server retried %" PRIu64 " times",
		     st1.retries - st0.retries);
	cr_expect_eq(put_pages(kv, 0, 10, 2, &rc), 10);
	cr_expect_eq(rc, -EIO);
	cr_expect_eq(kv_del(kv, (struct kv_key){ 7, 3 }), -EIO);
	{
		struct kv_key tk = { 7, 3 };
		int tr;

		cr_expect_eq(kv_mtouch(kv, &tk, &tr, 1), -EIO);
	}
	kv_memcached_info(kv, &info);
	cr_expect_gt(info.server_failures, 0);
	/* A restarted server is empty: a miss, not an error. */
	cr_assert_eq(mcd_restart(&srv[0]), 0);
	/* The store skips the server until its down window ends, however long
	 * the store makes it: wait for that event, not for a guessed time.
	 * Then one get reconnects and misses. */
	do {
		lb_sleep_ms(10);
		kv_memcached_info(kv, &info);
	} while (info.servers_down > 0);
	rc = kv_get(kv, (struct kv_key){ 7, 3 }, page);
	cr_expect_eq(rc, -ENOENT, "after restart: %s", strerror(-rc));
	{
		struct kv_key tk = { 7, 3 };
		int tr;

		cr_expect_eq(kv_mtouch(kv, &tk, &tr, 1), -ENOENT, "a restarted server still has it?");
	}
	cr_expect_eq(put_pages(kv, 0, 50, 3, &rc), 0, "writes after restart: %s", strerror(-rc));
	cr_expect_eq(bad_pages(kv, 0, 50, 3), 0);
	kv_memcached_info(kv, &info);
	cr_expect_gt(info.server_recoveries, 0);
	kv_close(kv);
	stop_servers();
}

Test(kv_memcached, replica_survives_a_killed_server, .timeout = 60)
{
	struct kv_store *kv;
	struct kv_memcached_info info;
	unsigned on[2] = { 0, 0 };
	int rc = 0;

	start_servers(2, 64, false);
	kv = open_store(1, true, NULL);
	cr_assert_not_null(kv);
	for (size_t p = 0; p < 400; p++) {
		int a = kv_memcached_server_of(kv, (struct kv_key){ 7, p }, 0);
		int b = kv_memcached_server_of(kv, (struct kv_key){ 7, p }, 1);

		cr_assert(a >= 0 && b >= 0 && a != b, "replicas of page %zu: %d and %d", p, a, b);
		on[a]++;
	}
	cr_expect(on[0] > 100 && on[1] > 100, "ketama spread %u / %u", on[0], on[1]);
	cr_assert_eq(put_pages(kv, 0, 400, 1, &rc), 0);
	mcd_kill(&srv[0], SIGKILL);
	cr_expect_eq(bad_pages(kv, 0, 400, 1), 0, "a replica did not serve");
	kv_memcached_info(kv, &info);
	cr_expect_gt(info.failover_reads, 100);
	/* writes go to the survivor */
	cr_expect_eq(put_pages(kv, 0, 400, 2, &rc), 0, "degraded writes refused: %s", strerror(-rc));
	kv_memcached_info(kv, &info);
	cr_expect_gt(info.degraded_writes, 0);
	cr_expect_eq(bad_pages(kv, 0, 400, 2), 0);
	/* a copy on the survivor is confirmed while the other is down */
	{
		struct kv_key tk[400];
		int tr[400];

		for (size_t p = 0; p < 400; p++)
			tk[p] = (struct kv_key){ 7, p };
		cr_expect_eq(kv_mtouch(kv, tk, tr, 400), 0, "touch with one server down");
		/* the dead one comes back empty: its misses fall over to the
		 * replica, and touching finds the copies it lost */
		cr_assert_eq(mcd_restart(&srv[0]), 0);
		/* Until its down window ends the restarted server is skipped;
		 * wait for that, however long the store makes the window. */
		do {
			lb_sleep_ms(10);
			kv_memcached_info(kv, &info);
		} while (info.servers_down > 0);
		cr_expect_eq(bad_pages(kv, 0, 400, 2), 0);
		kv_mtouch(kv, tk, tr, 400);
		size_t lost = 0;
		for (size_t p = 0; p < 400; p++)
			lost += tr[p] == -ENOENT;
		cr_expect_eq(lost, 400, "every page had a copy on the restarted server");
	}
	kv_close(kv);
	stop_servers();
}

struct want_hash {
	struct page_hash_key k;
	uint64_t h;
};

static bool check_hash(const void *page, void *arg)
{
	const struct want_hash *w = arg;

	return page_hash(&w->k, page) == w->h;
}

Test(kv_memcached, stale_copy_is_rejected_and_replica_read, .timeout = 60)
{
	struct kv_store *kv;
	struct kv_stats st;
	struct want_hash w;
	uint8_t page[PAGE], stale[PAGE];
	char key[KV_MEMCACHED_KEY_LEN + 1];
	struct kv_key k = { 7, 11 };
	memcached_st *direct;
	int primary;

	start_servers(2, 64, false);
	kv = open_store(1, true, NULL);
	cr_assert_not_null(kv);
	fill(page, 11, 1);
	cr_assert_eq(kv_put(kv, k, page), 0);
	page_hash_key_init(&w.k);
	w.h = page_hash(&w.k, page);
	/* Overwrite the primary's copy behind the backend's back, as a server
	 * that missed a later write would hold an older one. */
	primary = kv_memcached_server_of(kv, k, 0);
	kv_memcached_key(k, key);
	fill(stale, 11, 0);
	direct = memcached_create(NULL);
	memcached_server_add(direct, "127.0.0.1", (in_port_t)srv[primary].port);
	cr_assert_eq(memcached_set(direct, key, KV_MEMCACHED_KEY_LEN, (const char *)stale, PAGE, 0, 0),
		     MEMCACHED_SUCCESS);
	memset(page, 0, sizeof(page));
	cr_expect_eq(kv_get_checked(kv, k, page, check_hash, &w), 0);
	cr_expect(same(page, 11, 1), "the stale copy was returned");
	kv_get_stats(kv, &st);
	cr_expect_eq(st.stale, 1);
	/* With every copy stale the page is lost: an error, never the stale data. */
	{
		memcached_st *other = memcached_create(NULL);

		memcached_server_add(other, "127.0.0.1", (in_port_t)srv[1 - primary].port);
		cr_assert_eq(memcached_set(other, key, KV_MEMCACHED_KEY_LEN, (const char *)stale, PAGE,
					   0, 0), MEMCACHED_SUCCESS);
		memcached_free(other);
	}
	cr_expect_eq(kv_get_checked(kv, k, page, check_hash, &w), -ENOENT);
	kv_get_stats(kv, &st);
	cr_expect_eq(st.stale, 3);
	/* A value of the wrong size is not a page either. */
	cr_assert_eq(memcached_set(direct, key, KV_MEMCACHED_KEY_LEN, "short", 5, 0, 0),
		     MEMCACHED_SUCCESS);
	cr_expect_eq(kv_get(kv, k, page), 0, "the replica's copy should serve");
	memcached_free(direct);
	kv_close(kv);
	stop_servers();
}

Test(kv_memcached, open_errors, .timeout = 60)
{
	struct fm_config c;

	fm_config_defaults(&c);
	snprintf(c.store_backend, sizeof(c.store_backend), "memcached");
	/* Nobody listens there (yet): it opens with every server down, so a
	 * daemon started before memcached waits for it instead of exiting. */
	for (int i = 0; i < 2; i++) {
		struct kv_store *kv;
		struct kv_stats ks;

		if (i == 0)
			snprintf(c.mc.servers, sizeof(c.mc.servers), "127.0.0.1:%u", lb_free_port());
		else
			snprintf(c.mc.servers, sizeof(c.mc.servers), "/nonexistent/mc.sock");
		kv = kv_open_cfg(&c, 0);
		cr_assert_not_null(kv, "%s: %s", c.mc.servers, strerror(errno));
		kv_get_stats(kv, &ks);
		cr_expect_eq(ks.servers, 1);
		cr_expect_eq(ks.servers_down, 1, "%s shows up", c.mc.servers);
		kv_close(kv);
	}
	static const char *const bad[] = { "", " , ", "127.0.0.1:0", "127.0.0.1:70000",
					   "127.0.0.1:x", "::1:11211", "[::1", ":11211",
					   "no-such-host.invalid:11211" };
	for (size_t i = 0; i < FM_ARRAY_SIZE(bad); i++) {
		snprintf(c.mc.servers, sizeof(c.mc.servers), "%s", bad[i]);
		errno = 0;
		cr_expect_null(kv_open_cfg(&c, 0), "\"%s\" was accepted", bad[i]);
		cr_expect_eq(errno, EINVAL, "\"%s\": %s", bad[i], strerror(errno));
	}
	start_servers(1, 8, false);
	snprintf(c.mc.servers, sizeof(c.mc.servers), "%s", srv[0].addr);
	c.mc.replicas = 1;
	cr_expect_null(kv_open_cfg(&c, 0), "1 replica needs 2 servers");
	cr_expect_eq(errno, EINVAL);
	/* One server of two down at start: open, the other is retried later. */
	snprintf(c.mc.servers, sizeof(c.mc.servers), "%s, 127.0.0.1:%u", srv[0].addr, lb_free_port());
	struct kv_store *kv = kv_open_cfg(&c, 0);
	cr_expect_not_null(kv, "a cluster with one server up must open");
	if (kv) {
		struct kv_memcached_info info;

		kv_memcached_info(kv, &info);
		cr_expect_eq(info.servers, 2);
		cr_expect_eq(info.servers_down, 1);
	}
	kv_close(kv);
	stop_servers();
}

Test(kv_memcached, ketama_spreads_and_modula_differs, .timeout = 60)
{
	struct fm_config c;
	struct kv_store *ket, *mod;
	unsigned on[3] = { 0 }, moved = 0;

	start_servers(3, 8, false);
	fm_config_defaults(&c);
	snprintf(c.store_backend, sizeof(c.store_backend), "memcached");
	snprintf(c.mc.servers, sizeof(c.mc.servers), "%s,%s,%s", srv[0].addr, srv[1].addr,
		 srv[2].addr);
	c.mc.replicas = 2;
	ket = kv_open_cfg(&c, 0);
	c.mc.distribution = FM_MC_MODULA;
	mod = kv_open_cfg(&c, 1);
	cr_assert_not_null(ket);
	cr_assert_not_null(mod);
	for (uint64_t p = 0; p < 3000; p++) {
		struct kv_key k = { 1ull << 48 | 1, p };
		int a = kv_memcached_server_of(ket, k, 0), b = kv_memcached_server_of(ket, k, 1);
		int d = kv_memcached_server_of(ket, k, 2);

		cr_assert(a >= 0 && a < 3);
		cr_assert(a != b && b != d && a != d);
		on[a]++;
		moved += a != kv_memcached_server_of(mod, k, 0);
	}
	for (int i = 0; i < 3; i++)
		cr_expect(on[i] > 600 && on[i] < 1500, "server %d got %u of 3000 keys", i, on[i]);
	cr_expect_gt(moved, 500, "modula and ketama place keys alike");
	cr_expect_eq(kv_memcached_server_of(ket, (struct kv_key){ 1, 1 }, 3), -EINVAL);
	kv_close(ket);
	kv_close(mod);
	stop_servers();
}
