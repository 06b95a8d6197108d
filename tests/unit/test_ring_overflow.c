/* Ring overflow: with the shards stopped, more faults arrive than a shard's
 * ring holds. The dispatcher must park them in order, count the event, and
 * deliver every one once the shard runs: no fault is ever dropped. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config_params.h"
#include "ctl/config.h"
#include "kv/kv.h"
#include "shard/shard.h"
#include "uffd/uffd.h"

#define NTHREADS 200
#define PAGE 4096u

struct toucher {
	volatile uint8_t *page;
	uint8_t seen;
};

static void *touch(void *arg)
{
	struct toucher *t = arg;
	t->seen = (uint8_t)(t->page[0] + 1);   /* blocks in a uffd fault */
	return NULL;
}

/* The dispatcher's counters, asked for on its command ring; its other
 * replies (region acks) seen meanwhile are counted in *acks. */
static void disp_stats(struct dispatcher *d, struct dispatch_stats *st, unsigned *acks)
{
	static struct dispatch_snapshot snap;
	static uint64_t cookie = 1000;
	struct fm_msg m;

	cookie++;
	cr_assert_eq(dispatcher_request_stats(d, &snap, cookie), 0);
	for (int i = 0; i < 5000; i++) {
		while (fm_ring_pop(dispatcher_reply_ring(d), &m)) {
			if (m.flags == FM_MSG_STATS && m.done.request == cookie) {
				*st = snap.st;
				return;
			}
			(*acks)++;
		}
		usleep(1000);
	}
	cr_assert_fail("the dispatcher did not answer a stats request");
}

Test(ring_overflow, parked_faults_are_all_served, .timeout = 60)
{
	unsigned disp_acks = 0;
	struct fm_config cfg;
	struct shard *shards[2];
	struct fm_doorbell bell;
	struct dispatcher *d;
	struct dispatch_stats st;
	struct uffd_region *r = calloc(1, sizeof(*r));
	size_t pages = 2 * 512;
	pthread_t th[NTHREADS];
	struct toucher t[NTHREADS];

	fm_config_defaults(&cfg);
	cfg.shard_count = 2;
	cfg.shard_cpus_n = 0;
	cfg.ring_slots = 64;   /* holds 63: far fewer than the faults below */
	cfg.resident_pages = 4096;
	cr_assert_eq(fm_doorbell_init(&bell), 0);
	bell.sleeping = 1;
	for (unsigned i = 0; i < 2; i++)
		cr_assert_not_null(shards[i] = shard_create_cfg(&cfg, i, 2048, &bell));
	struct dispatch_target targets[2] = {
		{ shard_data_ring(shards[0]), shard_doorbell(shards[0]), shard_discards_routed(shards[0]) },
		{ shard_data_ring(shards[1]), shard_doorbell(shards[1]), shard_discards_routed(shards[1]) }
	};
	cr_assert_not_null(d = dispatcher_create(targets, 2, -1, 64, 0, &bell));
	cr_assert_eq(dispatcher_start(d), 0);

	/* A region registered on a uffd in this very process. */
	struct uffdio_api api = { .api = UFFD_API, .features = FM_UFFD_FEATURES };
	r->memfd = memfd_create("overflow", MFD_CLOEXEC);
	cr_assert_eq(ftruncate(r->memfd, (off_t)(pages * PAGE)), 0);
	uint8_t *mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd, 0);
	r->view = mmap(NULL, pages * PAGE, PROT_READ, MAP_SHARED, r->memfd, 0);
	cr_assert_geq(r->uffd = uffd_open(), 0);
	cr_assert_eq(ioctl(r->uffd, UFFDIO_API, &api), 0);
	struct uffdio_register reg = { .range = { (uint64_t)(uintptr_t)mem, pages * PAGE },
				       .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP };
	cr_assert_eq(ioctl(r->uffd, UFFDIO_REGISTER, &reg), 0);
	r->base = (uint64_t)(uintptr_t)mem;
	r->npages = pages;
	r->id = 77;
	cr_assert_eq(region_table_publish(r), 0);
	cr_assert_eq(dispatcher_attach(d, r), 0);

	/* All faults in stripe 0: one shard takes every one of them. */
	for (int i = 0; i < NTHREADS; i++) {
		t[i].page = mem + (size_t)i * PAGE;
		t[i].seen = 0;
		pthread_create(&th[i], NULL, touch, &t[i]);
	}
	for (int i = 0; i < 2000; i++) {
		disp_stats(d, &st, &disp_acks);
		if (st.fault_events == NTHREADS)
			break;
		usleep(1000);
	}
	cr_assert_eq(st.fault_events, NTHREADS, "only %lu faults reached the dispatcher",
		     (unsigned long)st.fault_events);
	cr_expect_geq(st.ring_full, 1, "the ring never filled");
	cr_expect_geq(st.parked_max, NTHREADS - 63, "parked at most %lu",
		      (unsigned long)st.parked_max);

	/* Now let the shards run: every parked fault must be served. */
	for (unsigned i = 0; i < 2; i++)
		cr_assert_eq(shard_start(shards[i]), 0);
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(th[i], NULL);
		cr_expect_eq(t[i].seen, 1, "thread %d read garbage", i);
	}

	/* Tear down in the daemon's order: detach, wait for both acks, stop. */
	cr_assert_eq(dispatcher_detach(d, r, false), 0);
	unsigned acks = 0;
	for (int i = 0; i < 2000 && acks < 4; i++) {   /* 2 REGION_ADD + 2 REGION_DEL */
		struct fm_msg m;
		for (unsigned k = 0; k < 2; k++)
			while (fm_ring_pop(shard_reply_ring(shards[k]), &m))
				acks++;
		usleep(1000);
	}
	cr_expect_eq(acks, 4);
	/* Then the dispatcher unregisters the range and lets go of it. */
	cr_assert_eq(dispatcher_forget(d, r, true), 0);
	for (int i = 0; i < 2000 && disp_acks < 2; i++) {   /* REGION_ADD + REGION_FORGET */
		struct fm_msg m;
		while (fm_ring_pop(dispatcher_reply_ring(d), &m))
			disp_acks++;
		usleep(1000);
	}
	cr_expect_eq(disp_acks, 2);
	for (unsigned i = 0; i < 2; i++) {
		struct fm_msg stop = { .type = FM_MSG_STOP };
		cr_assert(fm_ring_push(shard_ctl_ring(shards[i]), &stop));
		fm_doorbell_ring(shard_doorbell(shards[i]));
	}
	dispatcher_destroy(d);
	for (unsigned i = 0; i < 2; i++)
		shard_destroy(shards[i]);
	region_table_unpublish(r);
	region_release(r);
	munmap(mem, pages * PAGE);   /* unregistered: raises no event */
	fm_doorbell_destroy(&bell);
}
