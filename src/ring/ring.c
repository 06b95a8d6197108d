#include "ring/ring.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

int fm_ring_init(struct fm_ring *r, unsigned slots)
{
	memset(r, 0, sizeof(*r));
	if (slots < 4 || (slots & (slots - 1)) != 0)
		return -EINVAL;
	r->slots = aligned_alloc(FM_CACHELINE, (size_t)slots * sizeof(struct fm_msg));
	if (!r->slots)
		return -ENOMEM;
	memset(r->slots, 0, (size_t)slots * sizeof(struct fm_msg));
	ck_ring_init(&r->ring, slots);
	r->capacity = ck_ring_capacity(&r->ring) - 1;
	return 0;
}

void fm_ring_destroy(struct fm_ring *r)
{
	free(r->slots);
	r->slots = NULL;
}

int fm_doorbell_init(struct fm_doorbell *d)
{
	d->sleeping = 0;
	d->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return d->efd < 0 ? -errno : 0;
}

void fm_doorbell_destroy(struct fm_doorbell *d)
{
	if (d->efd >= 0)
		close(d->efd);
	d->efd = -1;
}

bool fm_doorbell_ring(struct fm_doorbell *d)
{
	uint64_t one = 1;

	/* Pairs with the consumer's announce: either it sees our message on
	 * its re-check, or we see its announcement here. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!__atomic_load_n(&d->sleeping, __ATOMIC_RELAXED))
		return false;
	if (write(d->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return false;
	return true;
}

void fm_doorbell_wait(struct fm_doorbell *d, int timeout_ms)
{
	struct pollfd p = { .fd = d->efd, .events = POLLIN };
	uint64_t v;

	if (poll(&p, 1, timeout_ms) > 0) {
		if (read(d->efd, &v, sizeof(v)) < 0) {
			/* EAGAIN: another wake consumed it; nothing to do */
		}
	}
}
