#include "uffd/uffd.h"
#include "uffd/uffd_compat.h"
#include "base/failpoint.h"
#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* EAGAIN from a uffd ioctl means a non-fault event (REMOVE, UNMAP) is queued
 * and unread; the fault will not be raised again, so we must retry once the
 * dispatcher has read it. Yield first (the dispatcher may share our core),
 * then back off to 50 µs sleeps. The dispatcher reads every region's events
 * until the region is released, so a healthy EAGAIN clears within a
 * dispatcher turn; one that outlasts UFFD_EAGAIN_MAX_LOOPS (about 2 s) means
 * nobody is reading, and retrying forever would wedge the shard (and with it
 * shutdown): give up with -EAGAIN and let the caller count it. */
#define UFFD_EAGAIN_SPIN_LOOPS 64
#define UFFD_EAGAIN_SLEEP_NS 50000
#define UFFD_EAGAIN_MAX_LOOPS (UFFD_EAGAIN_SPIN_LOOPS + 40000)   /* 40000 x 50 us = 2 s */

static bool eagain_pause(unsigned loop)
{
	if (loop >= UFFD_EAGAIN_MAX_LOOPS) {
		fm_log_once(FM_LOG_ERROR, "a uffd ioctl saw EAGAIN for 2 s: giving up on it");
		return false;
	}
	if (loop < UFFD_EAGAIN_SPIN_LOOPS) {
		sched_yield();
	} else {
		struct timespec ts = { 0, UFFD_EAGAIN_SLEEP_NS };
		nanosleep(&ts, NULL);
	}
	return true;
}

int uffd_zeropage(int uffd, uint64_t addr, uint64_t len, uint64_t *retries)
{
	for (unsigned loop = 0;; loop++) {
		struct uffdio_zeropage z = { .range = { addr, len }, .mode = 0 };

		if (ioctl(uffd, UFFDIO_ZEROPAGE, &z) == 0)
			return 0;
		if (errno != EAGAIN)
			return -errno;
		/* A partial zero-fill reports progress; redo the rest. */
		if (z.zeropage > 0) {
			addr += (uint64_t)z.zeropage;
			len -= (uint64_t)z.zeropage;
			if (len == 0)
				return 0;
		}
		(*retries)++;
		if (!eagain_pause(loop))
			return -EAGAIN;
	}
}

static int copy_retrying(int uffd, const uint64_t *routed, uint64_t handled, uint64_t dst,
			 const void *src, uint64_t len, uint64_t *retries)
{
	const uint64_t dst0 = dst, len0 = len;

	for (unsigned loop = 0;; loop++) {
		/* Fenced: do not wake the faulting threads before the check
		 * after the copy. */
		struct uffdio_copy c = { .dst = dst, .src = (uint64_t)(uintptr_t)src, .len = len,
					 .mode = routed ? UFFDIO_COPY_MODE_DONTWAKE : 0 };

		if (routed) {
			if (uffd_discard_pending(routed, handled))
				return -ECANCELED;
			fm_failpoint_delay(FM_FP_FAULT_AFTER_CHECK);
		}
		if (ioctl(uffd, UFFDIO_COPY, &c) == 0)
			break;
		if (errno != EAGAIN)
			return -errno;
		if (c.copy > 0) {
			dst += (uint64_t)c.copy;
			src = (const uint8_t *)src + c.copy;
			len -= (uint64_t)c.copy;
			if (len == 0)
				break;
		}
		(*retries)++;
		if (!eagain_pause(loop))
			return -EAGAIN;
	}
	if (!routed)
		return 0;
	/* A discard read between the check and the copy may have let the
	 * client's madvise return (and fm_region_discard punch again) before
	 * the copy landed: the caller must take the page out again. */
	if (uffd_discard_pending(routed, handled))
		return -ESTALE;
	/* The page is in: a wake-up can fail only when the client is gone. */
	(void)uffd_wake(uffd, dst0, len0);
	return 0;
}

int uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len, uint64_t *retries)
{
	return copy_retrying(uffd, NULL, 0, dst, src, len, retries);
}

int uffd_copy_unless_discard(int uffd, const uint64_t *routed, uint64_t handled, uint64_t dst,
			     const void *src, uint64_t len, uint64_t *retries)
{
	return copy_retrying(uffd, routed, handled, dst, src, len, retries);
}

/* Prefetch installs: nobody waits on these pages (a thread that does has
 * its fault queued, and serving it wakes it), so skip the wake-up. One try:
 * EAGAIN means a REMOVE or UNMAP is pending, and a page installed once it
 * has been read could bring back data the client just discarded, so the
 * caller gives up instead of retrying. */
int uffd_copy_nowake(int uffd, uint64_t dst, const void *src, uint64_t len)
{
	struct uffdio_copy c = { .dst = dst, .src = (uint64_t)(uintptr_t)src, .len = len,
				 .mode = UFFDIO_COPY_MODE_DONTWAKE };

	return ioctl(uffd, UFFDIO_COPY, &c) == 0 ? 0 : -errno;
}

int uffd_zeropage_nowake(int uffd, uint64_t addr, uint64_t len)
{
	struct uffdio_zeropage z = { .range = { addr, len }, .mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE };

	return ioctl(uffd, UFFDIO_ZEROPAGE, &z) == 0 ? 0 : -errno;
}

int uffd_wake(int uffd, uint64_t addr, uint64_t len)
{
	struct uffdio_range r = { addr, len };

	return ioctl(uffd, UFFDIO_WAKE, &r) == 0 ? 0 : -errno;
}

int uffd_writeprotect(int uffd, uint64_t addr, uint64_t len, bool protect, uint64_t *retries)
{
	for (unsigned loop = 0;; loop++) {
		struct uffdio_writeprotect w = {
			.range = { addr, len },
			.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
		};

		if (ioctl(uffd, UFFDIO_WRITEPROTECT, &w) == 0)
			return 0;
		if (errno != EAGAIN)
			return -errno;
		(*retries)++;
		if (!eagain_pause(loop))
			return -EAGAIN;
	}
}

int uffd_poison(int uffd, uint64_t addr, uint64_t len, uint64_t *retries)
{
	for (unsigned loop = 0;; loop++) {
		struct uffdio_poison p = { .range = { addr, len }, .mode = 0 };

		if (ioctl(uffd, UFFDIO_POISON, &p) == 0)
			return 0;
		if (errno != EAGAIN)
			return -errno;
		(*retries)++;
		if (!eagain_pause(loop))
			return -EAGAIN;
	}
}

int uffd_unregister(int uffd, uint64_t addr, uint64_t len)
{
	struct uffdio_range r = { addr, len };

	return ioctl(uffd, UFFDIO_UNREGISTER, &r) == 0 ? 0 : -errno;
}

ssize_t uffd_read_nowait(int uffd, struct uffd_msg *msgs, size_t n)
{
	struct iovec iov = { msgs, n * sizeof(*msgs) };
	ssize_t got = preadv2(uffd, &iov, 1, -1, RWF_NOWAIT);
	int fl;

	if (got >= 0)
		return got;
	if (errno != EOPNOTSUPP)
		return -errno;
	/* Kernels from before userfaultfd gained read_iter refuse RWF_NOWAIT.
	 * Fall back to checking the flag, then read(): a client that clears
	 * O_NONBLOCK between the two, with no event left, still blocks this
	 * read. */
	fm_log_once(FM_LOG_WARN, "this kernel cannot read a userfaultfd with RWF_NOWAIT: a client "
				 "that clears O_NONBLOCK races the dispatcher's flag check");
	fl = fcntl(uffd, F_GETFL);
	if (fl < 0)
		return -errno;
	if (!(fl & O_NONBLOCK))
		return -EPERM;
	got = read(uffd, msgs, n * sizeof(*msgs));
	return got >= 0 ? got : -errno;
}

int uffd_open(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd >= 0)
		return fd;
	/* Unprivileged callers may only have /dev/userfaultfd (5.11+). */
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -errno;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	int err = errno;
	close(dev);
	return fd >= 0 ? fd : -err;
}

int64_t uffd_kernel_features(void)
{
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	int fd = uffd_open();

	if (fd < 0)
		return fd;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	close(fd);
	return (int64_t)api.features;
}

int uffd_report_features(int64_t have)
{
	static const struct {
		uint64_t bit;
		const char *name;
		bool required;
		const char *without;
	} feats[] = {
		{ UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM", true, "memfd regions cannot be served" },
		{ UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM", true,
		  "eviction cannot write-protect memfd pages, so it is not race-free" },
		{ UFFD_FEATURE_EVENT_REMOVE, "EVENT_REMOVE", true, "discards (balloon) would go unseen" },
		{ UFFD_FEATURE_EVENT_UNMAP, "EVENT_UNMAP", true, "munmap would go unseen" },
		{ UFFD_FEATURE_POISON, "POISON", false,
		  "a page the store lost cannot be poisoned; the fault is left waiting instead" },
		{ UFFD_FEATURE_MOVE, "MOVE", false, "nothing (fluidmem does not use it)" },
		{ UFFD_FEATURE_WP_ASYNC, "WP_ASYNC", false, "nothing (fluidmem does not use it)" },
	};
	int ret = 0;

	if (have < 0) {
		FM_ERR("userfaultfd is unavailable: %s (need root, CAP_SYS_PTRACE or access to "
		       "/dev/userfaultfd)",
		       strerror((int)-have));
		return -ENOTSUP;
	}
	for (size_t i = 0; i < FM_ARRAY_SIZE(feats); i++) {
		if ((uint64_t)have & feats[i].bit)
			continue;
		if (feats[i].required) {
			FM_ERR("kernel lacks UFFD_FEATURE_%s: %s", feats[i].name, feats[i].without);
			ret = -ENOTSUP;
		} else {
			FM_WARN("kernel lacks UFFD_FEATURE_%s: %s", feats[i].name, feats[i].without);
		}
	}
	FM_INFO("userfaultfd features 0x%llx%s", (unsigned long long)have,
		ret ? "" : ": everything fluidmem needs is there");
	return ret;
}

int uffd_probe_and_report(void)
{
	return uffd_report_features(uffd_kernel_features());
}
