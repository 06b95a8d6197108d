/* The SPSC ring and doorbell: order, capacity, wrap-around, and a two-thread
 * stress where every message is stamped and checked on the other side. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>

#include "ring/ring.h"

Test(ring, rejects_bad_sizes)
{
	struct fm_ring r;

	cr_expect_eq(fm_ring_init(&r, 0), -EINVAL);
	cr_expect_eq(fm_ring_init(&r, 2), -EINVAL);
	cr_expect_eq(fm_ring_init(&r, 100), -EINVAL);
	fm_ring_destroy(&r);   /* safe on a failed init */
	cr_assert_eq(fm_ring_init(&r, 4), 0);
	fm_ring_destroy(&r);
	fm_ring_destroy(&r);   /* and twice */
}

Test(ring, full_ring_refuses_and_keeps_order)
{
	struct fm_ring r;
	struct fm_msg m = { 0 }, out;
	unsigned pushed = 0;

	cr_assert_eq(fm_ring_init(&r, 64), 0);
	for (m.fault.page = 0; fm_ring_push(&r, &m); m.fault.page++)
		pushed++;
	cr_expect_eq(pushed, r.capacity, "a full ring took %u, capacity %u", pushed, r.capacity);
	cr_expect_eq(fm_ring_depth(&r), pushed);
	/* The refused message was not written anywhere. */
	for (uint64_t i = 0; i < pushed; i++) {
		cr_assert(fm_ring_pop(&r, &out));
		cr_expect_eq(out.fault.page, i);
	}
	cr_expect_not(fm_ring_pop(&r, &out));
	cr_expect_eq(fm_ring_depth(&r), 0);
	fm_ring_destroy(&r);
}

/* Peek copies the i-th waiting message without taking it, across the
 * wrap-around, and answers false past the last one. */
Test(ring, peek_sees_waiting_messages_in_order_without_taking_them)
{
	struct fm_ring r;
	struct fm_msg m = { 0 }, out;
	uint64_t next = 0;

	cr_assert_eq(fm_ring_init(&r, 8), 0);
	cr_expect_not(fm_ring_peek(&r, 0, &out), "an empty ring has nothing to peek");
	for (unsigned round = 0; round < 20; round++) {
		unsigned n = 1 + round % r.capacity;

		for (unsigned i = 0; i < n; i++) {
			m.fault.page = next + i;
			cr_assert(fm_ring_push(&r, &m));
		}
		for (unsigned i = 0; i < n; i++) {
			cr_assert(fm_ring_peek(&r, i, &out));
			cr_expect_eq(out.fault.page, next + i);
		}
		cr_expect_not(fm_ring_peek(&r, n, &out), "peeked past the last message");
		cr_expect_eq(fm_ring_depth(&r), n, "peek took a message");
		/* pops return the same messages, and peek(0) follows the head */
		for (unsigned i = 0; i < n; i++) {
			cr_assert(fm_ring_peek(&r, 0, &out));
			cr_expect_eq(out.fault.page, next + i);
			cr_assert(fm_ring_pop(&r, &out));
			cr_expect_eq(out.fault.page, next + i);
		}
		cr_expect_not(fm_ring_peek(&r, 0, &out));
		next += n;
	}
	fm_ring_destroy(&r);
}

Test(ring, wraps_around_many_times)
{
	struct fm_ring r;
	struct fm_msg m = { .type = FM_MSG_FAULT }, out;

	cr_assert_eq(fm_ring_init(&r, 8), 0);
	for (uint64_t i = 0; i < 100000; i++) {
		m.fault.page = i;
		m.fault.read_ns = ~i;
		cr_assert(fm_ring_push(&r, &m));
		if (i % 3 == 0)
			cr_assert(fm_ring_push(&r, &m));
		cr_assert(fm_ring_pop(&r, &out));
		cr_assert_eq(out.fault.page, i);
		cr_assert_eq(out.fault.read_ns, ~i);
		if (i % 3 == 0)
			cr_assert(fm_ring_pop(&r, &out));
	}
	fm_ring_destroy(&r);
}

#define STRESS_N 2000000ull

static void *producer(void *arg)
{
	struct fm_ring *r = arg;
	struct fm_msg m = { .type = FM_MSG_FAULT };

	for (uint64_t i = 0; i < STRESS_N; i++) {
		m.fault.region = (struct uffd_region *)(uintptr_t)i;
		m.fault.page = i * 0x9e3779b97f4a7c15ull;
		m.fault.read_ns = ~m.fault.page;
		m.flags = (uint32_t)i;
		while (!fm_ring_push(r, &m))
			__builtin_ia32_pause();
	}
	return NULL;
}

Test(ring, two_threads_every_message_arrives_intact, .timeout = 120)
{
	struct fm_ring r;
	pthread_t th;
	struct fm_msg out;
	uint64_t bad = 0;

	cr_assert_eq(fm_ring_init(&r, 256), 0);
	pthread_create(&th, NULL, producer, &r);
	for (uint64_t i = 0; i < STRESS_N; i++) {
		while (!fm_ring_pop(&r, &out))
			__builtin_ia32_pause();
		if ((uintptr_t)out.fault.region != i || out.fault.page != i * 0x9e3779b97f4a7c15ull ||
		    out.fault.read_ns != ~out.fault.page ||
		    out.flags != (uint32_t)i || out.type != FM_MSG_FAULT)
			bad++;
	}
	pthread_join(th, NULL);
	cr_expect_eq(bad, 0, "%lu messages arrived wrong or out of order", (unsigned long)bad);
	fm_ring_destroy(&r);
}

struct sleeper {
	struct fm_ring ring;
	struct fm_doorbell bell;
	uint64_t got;   /* written by the consumer, read by the producer */
	uint64_t want;
};

/* Consumer that sleeps whenever idle, using the announce/recheck protocol.
 * It waits without a timeout: a lost wake leaves it asleep for good. */
static void *sleeper_main(void *arg)
{
	struct sleeper *s = arg;
	struct fm_msg m;

	while (__atomic_load_n(&s->got, __ATOMIC_RELAXED) < s->want) {
		if (fm_ring_pop(&s->ring, &m)) {
			__atomic_store_n(&s->got, s->got + 1, __ATOMIC_RELEASE);
			continue;
		}
		fm_doorbell_announce(&s->bell, 1);
		if (fm_ring_depth(&s->ring) == 0)
			fm_doorbell_wait(&s->bell, -1);
		fm_doorbell_announce(&s->bell, 0);
	}
	return NULL;
}

/* Event-driven, no wall clock: the producer pushes bursts of 1-3 messages
 * and then waits until the consumer has taken all of them. The last wake of
 * every burst is the only one that can get the consumer out of its sleep, so
 * a lost wake anywhere hangs the test and its timeout fails it. */
Test(ring, doorbell_never_loses_a_wake, .timeout = 60)
{
	struct sleeper s = { .want = 20000 };
	struct fm_msg m = { .type = FM_MSG_FAULT };
	pthread_t th;
	uint64_t sent = 0;

	cr_assert_eq(fm_ring_init(&s.ring, 64), 0);
	cr_assert_eq(fm_doorbell_init(&s.bell), 0);
	pthread_create(&th, NULL, sleeper_main, &s);
	while (sent < s.want) {
		for (uint64_t b = sent % 3 + 1; b > 0 && sent < s.want; b--, sent++) {
			while (!fm_ring_push(&s.ring, &m))
				sched_yield();
			fm_doorbell_ring(&s.bell);
		}
		while (__atomic_load_n(&s.got, __ATOMIC_ACQUIRE) < sent)
			sched_yield();
	}
	pthread_join(th, NULL);
	cr_expect_eq(s.got, s.want);
	fm_doorbell_destroy(&s.bell);
	fm_ring_destroy(&s.ring);
}
