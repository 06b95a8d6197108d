/* uffd/peek: learn that the dispatcher's epoll set has news without a system
 * call, so a busy-polling dispatcher makes none while nothing happens.
 *
 * An io_uring holds one multishot POLL_ADD on the epoll fd. A uffd event
 * wakes the epoll fd's pollers, which queues io_uring task work and, with
 * IORING_SETUP_TASKRUN_FLAG, sets IORING_SQ_TASKRUN in the ring's shared
 * flags word: one load tells the spinning dispatcher to call epoll_wait.
 * IORING_SETUP_COOP_TASKRUN keeps that wake from interrupting us with an
 * IPI; the task work runs on our next return from the kernel.
 *
 * The peek only covers readiness that arrives after an epoll_wait that
 * returned nothing: a level-triggered uffd left with unread events raises
 * no new wake-up, so after a non-empty epoll_wait the caller polls again
 * with epoll_wait. Where io_uring is unavailable (old kernel, disabled,
 * filtered), peek_init fails and the caller polls with epoll_wait. Only the
 * thread that called peek_init may use the ring: its task work goes there. */
#ifndef FM_UFFD_PEEK_H
#define FM_UFFD_PEEK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct peek {
	int ring_fd;          /* -1: no ring, poll with epoll_wait */
	int epfd;
	void *sq_map, *cq_map;
	size_t sq_len, cq_len;
	void *sqes;
	size_t sqes_len;
	uint32_t *sq_head, *sq_tail, *sq_mask, *sq_array, *sq_flags;
	uint32_t *cq_head, *cq_tail, *cq_mask;
	void *cqes;
	bool armed;
};

/* Set up the ring and arm the poll on epfd, on the calling thread. 0 or
 * -errno (then p->ring_fd is -1 and peek_news always says true). */
int peek_init(struct peek *p, int epfd);
/* Whether the epoll set may have news since the last peek_consume: one
 * load, no system call. */
bool peek_news(const struct peek *p);
/* Before an epoll_wait: reap the ring's completions and re-arm the poll if
 * it ended. */
void peek_consume(struct peek *p);
void peek_destroy(struct peek *p);

#endif
