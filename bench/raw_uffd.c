/* bench/raw_uffd: in-process, single-threaded userfaultfd handler used as the
 * baseline. Idioms follow the kernel's uffd selftests: EAGAIN means a
 * non-fault event is unread (read events, retry), EEXIST on an install means
 * the page is already there (wake). */
#include "raw_uffd.h"

#include "base/base.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Events read per read(2); the queue holds a few batches so events read
 * while retrying an EAGAIN install are kept, not lost. */
#define RAW_BATCH 64
#define RAW_QUEUE (4 * RAW_BATCH)

#define RAW_FEATURES (UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM)
#define RAW_IOCTLS                                                                 \
	((1ull << _UFFDIO_WAKE) | (1ull << _UFFDIO_COPY) | (1ull << _UFFDIO_ZEROPAGE) | \
	 (1ull << _UFFDIO_WRITEPROTECT))

enum raw_page_state { RAW_NEVER = 0, RAW_RESIDENT, RAW_EVICTED };

struct raw_uffd {
	/* Handler-thread state. */
	int uffd;
	int memfd;
	int stopfd;
	uint8_t *view;       /* registered: the workload's view */
	uint8_t *hview;      /* not registered: the handler reads victims here */
	uint8_t *store;      /* one preallocated page per region page */
	uint8_t *state;      /* enum raw_page_state per page */
	uint32_t *fifo;      /* resident pages, oldest first */
	uint64_t pages, budget;
	uint64_t fifo_head, fifo_tail;   /* resident = tail - head */
	struct uffd_msg q[RAW_QUEUE];
	uint64_t q_head, q_tail;
	pthread_t tid;
	bool started;
	bool idle;           /* release-stored: queue empty, about to poll */
	bool failed;         /* release-stored after err is written */
	char err[256];
	struct raw_uffd_stats st;        /* single writer: the handler */
};

static const struct {
	uint64_t bit;
	const char *name;
} feature_names[] = {
	{ UFFD_FEATURE_MISSING_SHMEM, "UFFD_FEATURE_MISSING_SHMEM (MISSING faults on shmem/memfd)" },
	{ UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
	  "UFFD_FEATURE_WP_HUGETLBFS_SHMEM (write-protect on shmem, needed to evict)" },
};

#define STAT_INC(r, f) __atomic_store_n(&(r)->st.f, (r)->st.f + 1, __ATOMIC_RELAXED)

static void missing_features(uint64_t have, char *err, size_t errlen)
{
	size_t n = (size_t)snprintf(err, errlen, "the kernel's userfaultfd lacks");

	for (size_t i = 0; i < FM_ARRAY_SIZE(feature_names) && n < errlen; i++)
		if (!(have & feature_names[i].bit))
			n += (size_t)snprintf(err + n, errlen - n, " %s", feature_names[i].name);
}

static int uffd_open(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

#ifdef USERFAULTFD_IOC_NEW
	/* The syscall is refused to unprivileged users by default since 5.11;
	 * /dev/userfaultfd is the sanctioned way around that. */
	if (fd < 0 && (errno == EPERM || errno == ENOSYS)) {
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);

		if (dev >= 0) {
			fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
			close(dev);
		}
	}
#endif
	return fd;
}

/* Open the uffd with the features eviction needs, naming any that is absent. */
static int uffd_open_api(char *err, size_t errlen)
{
	struct uffdio_api api = { .api = UFFD_API, .features = RAW_FEATURES };
	int fd = uffd_open();

	if (fd < 0) {
		int e = errno;

		snprintf(err, errlen, "userfaultfd: %s (needs root, vm.unprivileged_userfaultfd=1 or access to /dev/userfaultfd)",
			 strerror(e));
		errno = e;
		return -1;
	}
	if (ioctl(fd, UFFDIO_API, &api) == 0) {
		if ((api.features & RAW_FEATURES) == RAW_FEATURES)
			return fd;
		missing_features(api.features, err, errlen);
		close(fd);
		errno = ENOTSUP;
		return -1;
	}
	/* EINVAL when a requested feature is unknown: ask a fresh uffd for what
	 * it has (UFFDIO_API may be issued only once per uffd). */
	close(fd);
	if (errno == EINVAL && (fd = uffd_open()) >= 0) {
		struct uffdio_api probe = { .api = UFFD_API };

		if (ioctl(fd, UFFDIO_API, &probe) == 0) {
			missing_features(probe.features, err, errlen);
			close(fd);
			errno = ENOTSUP;
			return -1;
		}
		close(fd);
	}
	snprintf(err, errlen, "UFFDIO_API: %s", strerror(errno));
	return -1;
}

static void handler_fail(struct raw_uffd *r, const char *what, int e)
{
	struct uffdio_range range = { .start = (uintptr_t)r->view, .len = r->pages * FM_PAGE_SIZE };

	snprintf(r->err, sizeof(r->err), "raw handler: %s: %s", what, strerror(e));
	__atomic_store_n(&r->failed, true, __ATOMIC_RELEASE);
	fprintf(stderr, "fault-storm: %s; unregistering the region so the workload ends\n", r->err);
	/* Unregistering wakes every waiting fault; they then see plain memfd
	 * pages, which the verifier reports. */
	ioctl(r->uffd, UFFDIO_UNREGISTER, &range);
}

/* Read what the uffd has into the queue. Returns messages read (0 when
 * none is pending or the queue is full), or -errno. */
static int read_events(struct raw_uffd *r)
{
	uint64_t used = r->q_tail - r->q_head, at = r->q_tail % RAW_QUEUE;
	uint64_t room = FM_MIN(RAW_QUEUE - used, RAW_QUEUE - at);
	ssize_t n;

	if (room == 0)
		return 0;
	n = read(r->uffd, &r->q[at], FM_MIN(room, RAW_BATCH) * sizeof(struct uffd_msg));
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;
	if (n % sizeof(struct uffd_msg))
		return -EIO;
	r->q_tail += (uint64_t)n / sizeof(struct uffd_msg);
	return (int)((uint64_t)n / sizeof(struct uffd_msg));
}

/* EAGAIN from an ioctl: a non-fault event is unread and the fault will not be
 * raised again, so read events and retry. */
static int on_eagain(struct raw_uffd *r)
{
	int n = read_events(r);

	STAT_INC(r, eagain);
	if (n < 0)
		return n;
	if (n == 0)
		sched_yield();
	return 0;
}

static int wp(struct raw_uffd *r, uint64_t page, uint64_t mode)
{
	struct uffdio_writeprotect w = {
		.range = { .start = (uintptr_t)(r->view + page * FM_PAGE_SIZE), .len = FM_PAGE_SIZE },
		.mode = mode,
	};

	while (ioctl(r->uffd, UFFDIO_WRITEPROTECT, &w) < 0) {
		int rc;

		if (errno != EAGAIN)
			return -errno;
		if ((rc = on_eagain(r)) < 0)
			return rc;
	}
	return 0;
}

static int wake(struct raw_uffd *r, uint64_t page)
{
	struct uffdio_range range = { .start = (uintptr_t)(r->view + page * FM_PAGE_SIZE),
				      .len = FM_PAGE_SIZE };

	STAT_INC(r, wakes);
	return ioctl(r->uffd, UFFDIO_WAKE, &range) < 0 ? -errno : 0;
}

/* Zero-fill a first touch or copy an evicted page back in. */
static int install(struct raw_uffd *r, uint64_t page)
{
	uintptr_t dst = (uintptr_t)(r->view + page * FM_PAGE_SIZE);
	bool zero = r->state[page] == RAW_NEVER;

	for (;;) {
		int rc, e;

		if (zero) {
			struct uffdio_zeropage z = { .range = { .start = dst, .len = FM_PAGE_SIZE } };

			rc = ioctl(r->uffd, UFFDIO_ZEROPAGE, &z);
		} else {
			struct uffdio_copy c = { .dst = dst,
						 .src = (uintptr_t)(r->store + page * FM_PAGE_SIZE),
						 .len = FM_PAGE_SIZE };

			rc = ioctl(r->uffd, UFFDIO_COPY, &c);
		}
		if (rc == 0) {
			if (zero)
				STAT_INC(r, zeropages);
			else
				STAT_INC(r, copies);
			return 0;
		}
		e = errno;
		if (e == EEXIST) {
			/* Present already: our bookkeeping is behind; count it and wake. */
			STAT_INC(r, eexist);
			return wake(r, page);
		}
		if (e != EAGAIN)
			return -e;
		if ((rc = on_eagain(r)) < 0)
			return rc;
	}
}

/* DESIGN.md "Eviction without a kernel patch": writers wait while the page is
 * write-protected, so the copy taken is the last version; the punch unmaps it
 * everywhere; clearing the protection wakes the waiters, who then raise a
 * MISSING fault and get the stored copy. */
static int evict(struct raw_uffd *r, uint64_t page)
{
	off_t off = (off_t)(page * FM_PAGE_SIZE);
	int rc;

	if ((rc = wp(r, page, UFFDIO_WRITEPROTECT_MODE_WP)) < 0)
		return rc;
	memcpy(r->store + page * FM_PAGE_SIZE, r->hview + page * FM_PAGE_SIZE, FM_PAGE_SIZE);
	if (fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, FM_PAGE_SIZE) < 0)
		return -errno;
	if ((rc = wp(r, page, 0)) < 0)
		return rc;
	r->state[page] = RAW_EVICTED;
	STAT_INC(r, evictions);
	return 0;
}

static int on_fault(struct raw_uffd *r, const struct uffd_msg *m, const char **what)
{
	uint64_t addr = m->arg.pagefault.address & ~(uint64_t)(FM_PAGE_SIZE - 1);
	uint64_t page = (addr - (uintptr_t)r->view) / FM_PAGE_SIZE;
	int rc;

	if (addr < (uintptr_t)r->view || page >= r->pages) {
		*what = "fault outside the region";
		return -EFAULT;
	}
	if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
		/* A writer caught in an eviction window that has closed since:
		 * clearing (a no-op now) wakes it. */
		STAT_INC(r, wp_faults);
		*what = "UFFDIO_WRITEPROTECT (clear)";
		return wp(r, page, 0);
	}
	STAT_INC(r, faults);
	if (r->state[page] == RAW_RESIDENT) {
		*what = "UFFDIO_WAKE";
		return wake(r, page);   /* a duplicate of a fault served already */
	}
	*what = r->state[page] == RAW_NEVER ? "UFFDIO_ZEROPAGE" : "UFFDIO_COPY";
	if ((rc = install(r, page)) < 0)
		return rc;
	r->state[page] = RAW_RESIDENT;
	r->fifo[r->fifo_tail++ % r->pages] = (uint32_t)page;
	while (r->fifo_tail - r->fifo_head > r->budget) {
		uint64_t victim = r->fifo[r->fifo_head++ % r->pages];

		*what = "evict";
		if ((rc = evict(r, victim)) < 0)
			return rc;
	}
	return 0;
}

static void *handler_main(void *arg)
{
	struct raw_uffd *r = arg;

	for (;;) {
		const char *what = "read";
		int rc;

		if (r->q_head == r->q_tail) {
			struct pollfd pfd[2] = { { .fd = r->uffd, .events = POLLIN },
						 { .fd = r->stopfd, .events = POLLIN } };

			rc = read_events(r);
			if (rc < 0) {
				handler_fail(r, "read(uffd)", -rc);
				return NULL;
			}
			if (rc > 0) {
				__atomic_store_n(&r->idle, false, __ATOMIC_SEQ_CST);
				continue;
			}
			__atomic_store_n(&r->idle, true, __ATOMIC_RELEASE);
			if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
				handler_fail(r, "poll", errno);
				return NULL;
			}
			if (pfd[1].revents)
				return NULL;
			if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
				handler_fail(r, "poll(uffd)", EIO);
				return NULL;
			}
			continue;
		}
		const struct uffd_msg m = r->q[r->q_head++ % RAW_QUEUE];

		if (m.event != UFFD_EVENT_PAGEFAULT) {
			STAT_INC(r, other_events);
			continue;
		}
		if ((rc = on_fault(r, &m, &what)) < 0) {
			handler_fail(r, what, -rc);
			return NULL;
		}
	}
}

struct raw_uffd *raw_uffd_create(uint64_t pages, uint64_t budget, int cpu, char *err,
				 size_t errlen)
{
	struct raw_uffd *r;
	size_t len = pages * FM_PAGE_SIZE;
	struct uffdio_register reg;
	int e;

	if (pages == 0 || pages > UINT32_MAX || budget == 0) {
		snprintf(err, errlen, "pages must be 1..%u and budget at least 1", UINT32_MAX);
		errno = EINVAL;
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	r->uffd = r->memfd = r->stopfd = -1;
	r->view = r->hview = r->store = MAP_FAILED;
	r->pages = pages;
	r->budget = budget;

	r->memfd = memfd_create("fault-storm-raw", MFD_CLOEXEC);
	if (r->memfd < 0 || ftruncate(r->memfd, (off_t)len) < 0) {
		e = errno;
		snprintf(err, errlen, "memfd of %zu bytes: %s", len, strerror(e));
		goto fail;
	}
	errno = 0;
	r->view = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd, 0);
	r->hview = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd, 0);
	/* Populated up front: the store is the floor, its own faults must not
	 * land in the measurement. */
	r->store = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
			-1, 0);
	r->state = calloc(pages, 1);
	r->fifo = calloc(pages, sizeof(*r->fifo));
	if (r->view == MAP_FAILED || r->hview == MAP_FAILED || r->store == MAP_FAILED || !r->state ||
	    !r->fifo) {
		e = errno ? errno : ENOMEM;
		snprintf(err, errlen, "mapping %zu bytes three times: %s", len, strerror(e));
		goto fail;
	}
	r->uffd = uffd_open_api(err, errlen);
	if (r->uffd < 0) {
		e = errno;
		goto fail;
	}
	reg = (struct uffdio_register){
		.range = { .start = (uintptr_t)r->view, .len = len },
		.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
	};
	if (ioctl(r->uffd, UFFDIO_REGISTER, &reg) < 0) {
		e = errno;
		snprintf(err, errlen, "UFFDIO_REGISTER MISSING|WP on a memfd: %s", strerror(e));
		goto fail;
	}
	if ((reg.ioctls & RAW_IOCTLS) != RAW_IOCTLS) {
		e = ENOTSUP;
		snprintf(err, errlen,
			 "the registered range lacks an ioctl (have 0x%llx, need COPY, ZEROPAGE, WAKE, WRITEPROTECT)",
			 (unsigned long long)reg.ioctls);
		goto fail;
	}
	r->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->stopfd < 0) {
		e = errno;
		snprintf(err, errlen, "eventfd: %s", strerror(e));
		goto fail;
	}
	e = pthread_create(&r->tid, NULL, handler_main, r);
	if (e == 0 && cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		pthread_setaffinity_np(r->tid, sizeof(set), &set);
	}
	if (e) {
		snprintf(err, errlen, "starting the handler thread: %s", strerror(e));
		goto fail;
	}
	r->started = true;
	return r;
fail:
	raw_uffd_destroy(r);
	errno = e;
	return NULL;
}

void *raw_uffd_addr(const struct raw_uffd *r)
{
	return r->view;
}

void raw_uffd_get_stats(const struct raw_uffd *r, struct raw_uffd_stats *out)
{
	const uint64_t *src = (const uint64_t *)&r->st;
	uint64_t *dst = (uint64_t *)out;

	_Static_assert(sizeof(*out) % sizeof(uint64_t) == 0, "stats are u64 counters");
	for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

bool raw_uffd_quiesce(const struct raw_uffd *r, unsigned timeout_ms)
{
	uint64_t deadline = fm_now_ns() + (uint64_t)timeout_ms * 1000000u;

	while (!__atomic_load_n(&r->idle, __ATOMIC_ACQUIRE) &&
	       !__atomic_load_n(&r->failed, __ATOMIC_ACQUIRE)) {
		if (fm_now_ns() > deadline)
			return false;
		sched_yield();
	}
	return true;
}

const char *raw_uffd_error(const struct raw_uffd *r)
{
	return __atomic_load_n(&r->failed, __ATOMIC_ACQUIRE) ? r->err : "";
}

void raw_uffd_destroy(struct raw_uffd *r)
{
	size_t len;

	if (!r)
		return;
	len = r->pages * FM_PAGE_SIZE;
	if (r->started) {
		uint64_t one = 1;

		if (write(r->stopfd, &one, sizeof(one)) != sizeof(one))
			fprintf(stderr, "fault-storm: stopping the raw handler: %s\n", strerror(errno));
		pthread_join(r->tid, NULL);
	}
	if (r->stopfd >= 0)
		close(r->stopfd);
	if (r->uffd >= 0)
		close(r->uffd);
	if (r->view != MAP_FAILED)
		munmap(r->view, len);
	if (r->hview != MAP_FAILED)
		munmap(r->hview, len);
	if (r->store != MAP_FAILED)
		munmap(r->store, len);
	if (r->memfd >= 0)
		close(r->memfd);
	free(r->state);
	free(r->fifo);
	free(r);
}
