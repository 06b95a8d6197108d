/* kv_set_servers on the memcached backend against real servers: a server
 * added while running takes new pages, a page whose ketama owner moved is
 * still read (from its old owner) and deleted everywhere, and kv_mtouch
 * asks only the new owners, so an unchanged page is rewritten where it now
 * belongs. */
#include <criterion/criterion.h>
#include <string.h>

#include "base/base.h"
#include "kv/kv.h"
#include "memcached_harness.h"

#define N 2000

static struct kv_params params(const char *servers)
{
	struct kv_params p = { .backend = "memcached" };

	p.mc.distribution = FM_MC_KETAMA;
	p.mc.binary = true;
	p.mc.connect_timeout_ms = 500;
	p.mc.io_timeout_ms = 1000;
	p.mc.batch = 64;
	p.mc.retries = 1;
	p.mc.retry_delay_ms = 5;
	snprintf(p.mc.servers, sizeof(p.mc.servers), "%s", servers);
	return p;
}

static void fill(uint8_t *page, uint64_t i)
{
	memset(page, (int)(i & 0xff), FM_PAGE_SIZE);
	memcpy(page, &i, sizeof(i));
}

Test(kv_servers, added_server_keeps_every_page_readable, .timeout = 60)
{
	struct mcd a, b;
	struct kv_store *kv;
	struct kv_params p;
	struct kv_memcached_info info;
	static uint8_t page[FM_PAGE_SIZE], want[FM_PAGE_SIZE];
	char both[300];
	unsigned moved = 0;
	int touch[N];

	cr_assert_eq(mcd_start(&a, 64, false), 0);
	cr_assert_eq(mcd_start(&b, 64, false), 0);
	p = params(a.addr);
	kv = kv_open(&p, 0);
	cr_assert_not_null(kv);
	for (uint64_t i = 0; i < N; i++) {
		fill(page, i);
		cr_assert_eq(kv_put(kv, (struct kv_key){ 7, i }, page), 0);
	}
	snprintf(both, sizeof(both), "%s,%s", a.addr, b.addr);
	cr_assert_eq(kv_set_servers(kv, both), 0);
	cr_expect_eq(kv_set_servers(kv, "127.0.0.1:1"), -EIO, "a dead list is refused");
	cr_expect_eq(kv_set_servers(kv, "no-such-host.invalid:1"), -EINVAL);
	for (uint64_t i = 0; i < N; i++) {
		moved += kv_memcached_server_of(kv, (struct kv_key){ 7, i }, 0) == 1;
		fill(want, i);
		cr_assert_eq(kv_get(kv, (struct kv_key){ 7, i }, page), 0, "page %lu lost", (unsigned long)i);
		cr_assert(!memcmp(page, want, FM_PAGE_SIZE), "page %lu wrong", (unsigned long)i);
	}
	cr_assert_eq(kv_memcached_info(kv, &info), 0);
	cr_expect(moved > N / 10, "ketama moved only %u of %d keys", moved, N);
	cr_expect_eq(info.failover_reads, moved, "reads from the old owner: %lu, moved: %u",
		     (unsigned long)info.failover_reads, moved);
	cr_expect_eq(info.servers, 2);
	/* Moved keys are absent on their new owner: touch says rewrite. */
	struct kv_key keys[N];
	for (uint64_t i = 0; i < N; i++)
		keys[i] = (struct kv_key){ 7, i };
	kv_mtouch(kv, keys, touch, N);
	unsigned missing = 0;
	for (unsigned i = 0; i < N; i++)
		missing += touch[i] == -ENOENT;
	cr_expect_eq(missing, moved);
	/* Deletes reach the old owner too. */
	for (uint64_t i = 0; i < N; i++)
		cr_expect_eq(kv_del(kv, keys[i]), 0);
	for (uint64_t i = 0; i < N; i++)
		cr_expect_eq(kv_get(kv, keys[i], page), -ENOENT);
	kv_close(kv);
	mcd_stop(&a);
	mcd_stop(&b);
}

/* kv_rehome (servers drain): after the list drops b, every key b held
 * moves to a (checked content), the others are left alone, b ends empty,
 * and once the old list is forgotten b can be stopped with every page
 * still readable. */
static bool rehome_check(const void *page, void *arg)
{
	uint64_t i;

	memcpy(&i, page, sizeof(i));
	return i == *(const uint64_t *)arg;
}

Test(kv_servers, rehome_drains_a_server, .timeout = 60)
{
	struct mcd a, b;
	struct kv_store *kv;
	struct kv_params p;
	static uint8_t page[FM_PAGE_SIZE], buf[FM_PAGE_SIZE], want[FM_PAGE_SIZE];
	char both[300];
	unsigned moved = 0, onb = 0;

	cr_assert_eq(mcd_start(&a, 64, false), 0);
	cr_assert_eq(mcd_start(&b, 64, false), 0);
	snprintf(both, sizeof(both), "%s,%s", a.addr, b.addr);
	p = params(both);
	kv = kv_open(&p, 0);
	cr_assert_not_null(kv);
	for (uint64_t i = 0; i < N; i++) {
		fill(page, i);
		cr_assert_eq(kv_put(kv, (struct kv_key){ 9, i }, page), 0);
		onb += kv_memcached_server_of(kv, (struct kv_key){ 9, i }, 0) == 1;
	}
	cr_assert_gt(onb, 0);
	cr_assert_eq(kv_set_servers(kv, a.addr), 0);
	for (uint64_t i = 0; i < N; i++) {
		int rc = kv_rehome(kv, (struct kv_key){ 9, i }, rehome_check, &i, buf);

		cr_assert(rc == 0 || rc == 1, "key %lu: %d", (unsigned long)i, rc);
		moved += rc == 0;
	}
	cr_expect_eq(moved, onb, "moved %u, b held %u", moved, onb);
	/* A second pass moves nothing: every key is at its owner. */
	for (uint64_t i = 0; i < 50; i++)
		cr_expect_eq(kv_rehome(kv, (struct kv_key){ 9, i }, NULL, NULL, buf), 1);
	kv_forget_previous(kv);
	mcd_stop(&b);
	for (uint64_t i = 0; i < N; i++) {
		fill(want, i);
		cr_assert_eq(kv_get(kv, (struct kv_key){ 9, i }, page), 0, "page %lu lost",
			     (unsigned long)i);
		cr_assert(!memcmp(page, want, FM_PAGE_SIZE), "page %lu wrong", (unsigned long)i);
	}
	/* Deletes no longer go to the stopped server. */
	cr_expect_eq(kv_del(kv, (struct kv_key){ 9, 0 }), 0);
	kv_close(kv);
	mcd_stop(&a);
}
