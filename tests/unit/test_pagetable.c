/* The shard page-state table: stripe ownership, dense ids, chunk reuse. */
#include <criterion/criterion.h>

#include "shard/pagetable.h"
#include "uffd/uffd.h"

/* Every page of a region is owned by exactly one shard, and within that
 * shard ids are unique and map back to the same page. */
static void check_partition(unsigned nshards, uint32_t slot, uint64_t npages)
{
	struct pagetable pt[8];
	struct pt_region pr[8];
	struct uffd_region r = { .id = slot, .slot = slot, .npages = npages };
	uint64_t owned = 0;

	for (unsigned s = 0; s < nshards; s++) {
		pt_init(&pt[s], s, nshards);
		cr_assert_eq(pt_region_add(&pt[s], &pr[s], slot, npages), 0);
	}
	uint8_t *seen = calloc(nshards, (size_t)pt_capacity(&pt[0]) * 4 + (1u << 20));
	for (uint64_t p = 0; p < npages; p++) {
		unsigned s = region_shard_of(&r, p, nshards);
		uint32_t id = pt_id(&pt[s], &pr[s], p);
		uint64_t back;

		cr_assert_lt(id, pt_capacity(&pt[s]));
		cr_assert_eq(pt_page_of(&pt[s], id, &back), &pr[s]);
		cr_assert_eq(back, p, "shard %u id %u maps to page %lu, not %lu", s, id,
			     (unsigned long)back, (unsigned long)p);
		cr_assert(pt_id_valid(&pt[s], id));
		cr_assert_eq(pt[s].state[id], PS_NONE);
		owned++;
	}
	cr_expect_eq(owned, npages);
	/* Stripes stay whole: a 2 MiB stripe belongs to one shard. */
	for (uint64_t p = 0; p + 1 < npages; p++)
		if (((p + 1) & (FM_STRIPE_PAGES - 1)) != 0)
			cr_assert_eq(region_shard_of(&r, p, nshards), region_shard_of(&r, p + 1, nshards));
	for (unsigned s = 0; s < nshards; s++) {
		pt_region_del(&pt[s], &pr[s]);
		pt_destroy(&pt[s]);
	}
	free(seen);
}

Test(pagetable, every_page_has_one_owner_and_a_unique_id)
{
	check_partition(1, 1, 1);
	check_partition(2, 1, 1000);
	check_partition(2, 2, 513);
	check_partition(3, 7, 512 * 10 + 3);
	check_partition(4, 4095, 512 * 4);
	check_partition(8, 5, 512 * 3);   /* fewer stripes than shards */
}

Test(pagetable, ids_are_unique_within_a_shard)
{
	struct pagetable pt;
	struct pt_region a, b;
	struct uffd_region ra = { .id = 1, .slot = 1, .npages = 5000 },
			   rb = { .id = 2, .slot = 2, .npages = 3000 };

	pt_init(&pt, 0, 2);
	cr_assert_eq(pt_region_add(&pt, &a, 1, 5000), 0);
	cr_assert_eq(pt_region_add(&pt, &b, 2, 3000), 0);
	uint8_t *used = calloc(pt_capacity(&pt), 1);
	struct {
		struct pt_region *pr;
		struct uffd_region *r;
	} regs[] = { { &a, &ra }, { &b, &rb } };
	for (int k = 0; k < 2; k++) {
		for (uint64_t p = 0; p < regs[k].r->npages; p++) {
			if (region_shard_of(regs[k].r, p, 2) != 0)
				continue;
			uint32_t id = pt_id(&pt, regs[k].pr, p);
			cr_assert_eq(used[id], 0, "id %u handed out twice", id);
			used[id] = 1;
		}
	}
	free(used);
	pt_region_del(&pt, &a);
	pt_region_del(&pt, &b);
	pt_destroy(&pt);
}

Test(pagetable, freed_chunks_are_reused_and_reset)
{
	struct pagetable pt;
	struct pt_region a, b;
	uint32_t cap;

	pt_init(&pt, 0, 1);
	cr_assert_eq(pt_region_add(&pt, &a, 1, 512 * 100), 0);
	cap = pt_capacity(&pt);
	for (uint64_t p = 0; p < 512 * 100; p++)
		pt.state[pt_id(&pt, &a, p)] = PS_STORED;
	cr_expect_eq(pt_tracked(&pt), 512 * 100);
	pt_region_del(&pt, &a);
	cr_expect_eq(pt_tracked(&pt), 0);
	for (int round = 0; round < 10; round++) {
		cr_assert_eq(pt_region_add(&pt, &b, 2, 512 * 100), 0);
		for (uint64_t p = 0; p < 512 * 100; p++)
			cr_assert_eq(pt.state[pt_id(&pt, &b, p)], PS_NONE, "reused id kept old state");
		pt_region_del(&pt, &b);
	}
	cr_expect_eq(pt_capacity(&pt), cap, "the table grew although chunks were free");
	pt_destroy(&pt);
}

Test(pagetable, short_last_stripe_has_invalid_tail_ids)
{
	struct pagetable pt;
	struct pt_region a;

	pt_init(&pt, 0, 1);
	cr_assert_eq(pt_region_add(&pt, &a, 1, 600), 0);
	cr_expect(pt_id_valid(&pt, pt_id(&pt, &a, 599)));
	cr_expect_not(pt_id_valid(&pt, pt_id(&pt, &a, 599) + 1));
	pt_region_del(&pt, &a);
	cr_expect_not(pt_id_valid(&pt, 0), "a freed chunk still maps to a region");
	pt_destroy(&pt);
}

Test(pagetable, many_regions_grow_the_table)
{
	struct pagetable pt;
	struct pt_region r[200];

	pt_init(&pt, 1, 2);
	for (int i = 0; i < 200; i++)
		cr_assert_eq(pt_region_add(&pt, &r[i], (uint32_t)i + 1, 512 * 7 + 1), 0);
	cr_expect_geq(pt_capacity(&pt), 200u * 4 * 512);
	for (int i = 0; i < 200; i += 2)
		pt_region_del(&pt, &r[i]);
	for (int i = 1; i < 200; i += 2)
		pt_region_del(&pt, &r[i]);
	cr_expect_eq(pt_tracked(&pt), 0);
	pt_destroy(&pt);
}

/* Stripe ownership depends on the region's id only, never on its table
 * slot: a restarted daemon re-adopts a region into whatever slot is free,
 * and the local store keeps each shard's pages in that shard's own file
 * (issue 10: a region re-adopted into a slot of the other parity had all
 * its stored pages looked up in the wrong file). */
Test(pagetable, stripe_owner_follows_the_id_not_the_slot)
{
	uint64_t id = (1ull << 48) | (7ull << 32) | 2;   /* node 1, generation 7, 2nd region */

	for (unsigned nshards = 1; nshards <= 5; nshards++) {
		struct uffd_region then = { .id = id, .slot = 2, .npages = 8 * FM_STRIPE_PAGES };
		struct uffd_region now = then;

		now.slot = 1;
		for (uint64_t p = 0; p < then.npages; p += FM_STRIPE_PAGES / 2)
			cr_assert_eq(region_shard_of(&then, p, nshards), region_shard_of(&now, p, nshards),
				     "page %lu of %u shards moved with the slot", (unsigned long)p, nshards);
		for (unsigned s = 0; s < nshards; s++) {
			struct pagetable pt;
			struct pt_region pr;

			pt_init(&pt, s, nshards);
			cr_assert_eq(pt_region_attach(&pt, &pr, fm_region_rot(id), then.npages), 0);
			for (uint64_t ls = 0; ls < pr.nstripes; ls++)
				cr_assert_eq(region_shard_of(&now, pt_stripe_first_page(&pt, &pr, ls), nshards), s);
			pt_region_del(&pt, &pr);
			pt_destroy(&pt);
		}
	}
}
