/* uffd/peek: see peek.h. Raw io_uring system calls: only one request type
 * is needed, and liburing's headers are not a build dependency. */
#include "uffd/peek.h"

#include <errno.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PEEK_ENTRIES 16
#define PEEK_TAG 0x7065656bu

#define AT(base, off) ((uint32_t *)((char *)(base) + (off)))

static uint32_t load_acq(const uint32_t *x)
{
	return atomic_load_explicit((const _Atomic uint32_t *)x, memory_order_acquire);
}

static void store_rel(uint32_t *x, uint32_t v)
{
	atomic_store_explicit((_Atomic uint32_t *)x, v, memory_order_release);
}

static int arm(struct peek *p)
{
	uint32_t tail = *p->sq_tail, i = tail & *p->sq_mask;
	struct io_uring_sqe *sqe = (struct io_uring_sqe *)p->sqes + i;
	long rc;

	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = IORING_OP_POLL_ADD;
	sqe->fd = p->epfd;
	sqe->poll32_events = POLLIN;
	sqe->len = IORING_POLL_ADD_MULTI;
	sqe->user_data = PEEK_TAG;
	p->sq_array[i] = i;
	store_rel(p->sq_tail, tail + 1);
	rc = syscall(__NR_io_uring_enter, p->ring_fd, 1, 0, 0, NULL, 0);
	if (rc < 0)
		return -errno;
	p->armed = rc == 1;
	return p->armed ? 0 : -EIO;
}

int peek_init(struct peek *p, int epfd)
{
	struct io_uring_params par;
	int rc;

	memset(p, 0, sizeof(*p));
	p->ring_fd = -1;
	p->epfd = epfd;
	memset(&par, 0, sizeof(par));
	par.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
	rc = (int)syscall(__NR_io_uring_setup, PEEK_ENTRIES, &par);
	if (rc < 0)
		return -errno;
	p->ring_fd = rc;
	p->sq_len = par.sq_off.array + par.sq_entries * sizeof(uint32_t);
	p->cq_len = par.cq_off.cqes + par.cq_entries * sizeof(struct io_uring_cqe);
	p->sqes_len = par.sq_entries * sizeof(struct io_uring_sqe);
	p->sq_map = mmap(NULL, p->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
			 p->ring_fd, IORING_OFF_SQ_RING);
	p->cq_map = mmap(NULL, p->cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
			 p->ring_fd, IORING_OFF_CQ_RING);
	p->sqes = mmap(NULL, p->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
		       p->ring_fd, IORING_OFF_SQES);
	if (p->sq_map == MAP_FAILED || p->cq_map == MAP_FAILED || p->sqes == MAP_FAILED) {
		rc = -errno;
		goto fail;
	}
	p->sq_head = AT(p->sq_map, par.sq_off.head);
	p->sq_tail = AT(p->sq_map, par.sq_off.tail);
	p->sq_mask = AT(p->sq_map, par.sq_off.ring_mask);
	p->sq_array = AT(p->sq_map, par.sq_off.array);
	p->sq_flags = AT(p->sq_map, par.sq_off.flags);
	p->cq_head = AT(p->cq_map, par.cq_off.head);
	p->cq_tail = AT(p->cq_map, par.cq_off.tail);
	p->cq_mask = AT(p->cq_map, par.cq_off.ring_mask);
	p->cqes = (char *)p->cq_map + par.cq_off.cqes;
	if ((rc = arm(p)) < 0)
		goto fail;
	return 0;
fail:
	peek_destroy(p);
	return rc;
}

bool peek_news(const struct peek *p)
{
	if (p->ring_fd < 0 || !p->armed)
		return true;
	return (atomic_load_explicit((const _Atomic uint32_t *)p->sq_flags, memory_order_acquire) &
		IORING_SQ_TASKRUN) ||
	       load_acq(p->cq_tail) != *p->cq_head;
}

void peek_consume(struct peek *p)
{
	uint32_t head, tail;

	if (p->ring_fd < 0)
		return;
	head = *p->cq_head;
	tail = load_acq(p->cq_tail);
	for (; head != tail; head++) {
		const struct io_uring_cqe *c = (const struct io_uring_cqe *)p->cqes + (head & *p->cq_mask);

		/* A multishot poll that ended (error, overflow) is re-armed
		 * below; until then peek_news says true. */
		if (c->user_data == PEEK_TAG && !(c->flags & IORING_CQE_F_MORE))
			p->armed = false;
	}
	store_rel(p->cq_head, head);
	if (!p->armed && arm(p) < 0) {
		/* Give up on the ring: epoll_wait polling, as without it. */
		peek_destroy(p);
	}
}

void peek_destroy(struct peek *p)
{
	if (p->sqes && p->sqes != MAP_FAILED)
		munmap(p->sqes, p->sqes_len);
	if (p->cq_map && p->cq_map != MAP_FAILED)
		munmap(p->cq_map, p->cq_len);
	if (p->sq_map && p->sq_map != MAP_FAILED)
		munmap(p->sq_map, p->sq_len);
	if (p->ring_fd >= 0)
		close(p->ring_fd);
	memset(p, 0, sizeof(*p));
	p->ring_fd = -1;
}
