/* libfluidmem: create regions whose pages fluidmemd serves. The public
 * API; the registration client is registration.c, the reconnection watcher
 * reconnect.c (client_int.h). */
#include "client/fluidmem.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/base.h"
#include "client/client_int.h"

FM_API const char *fm_client_error(const struct fm_client *c)
{
	return c ? c->error : "no client";
}

/* FLUIDMEM_TIMEOUT (whole seconds) or the default; -EINVAL when malformed. */
static int timeout_ms_from_env(void)
{
	const char *v = getenv("FLUIDMEM_TIMEOUT");
	char *end;
	unsigned long s;

	if (!v || !*v)
		return FM_DEFAULT_TIMEOUT_S * 1000;
	errno = 0;
	s = strtoul(v, &end, 10);
	if (errno || *end || s < 1 || s > FM_MAX_TIMEOUT_S)
		return -EINVAL;
	return (int)s * 1000;
}

/* $name as milliseconds in [lo, hi], else `def`; -EINVAL when malformed. */
static int ms_from_env(const char *name, int def, int lo, int hi)
{
	const char *v = getenv(name);
	char *end;
	long ms;

	if (!v || !*v)
		return def;
	errno = 0;
	ms = strtol(v, &end, 10);
	if (errno || *end || ms < lo || ms > hi)
		return -EINVAL;
	return (int)ms;
}

FM_API struct fm_client *fm_connect(const char *path)
{
	struct fm_client *c;
	int fd, tmo = timeout_ms_from_env();
	int rc_max = ms_from_env("FLUIDMEM_RECONNECT_MAX_MS", FM_DEFAULT_RECONNECT_MAX_MS, 0,
				 FM_MAX_RECONNECT_MS);
	int rc_min = ms_from_env("FLUIDMEM_RECONNECT_MIN_MS", FM_DEFAULT_RECONNECT_MIN_MS, 1,
				 FM_MAX_RECONNECT_MS);

	if (!path)
		path = getenv("FLUIDMEM_SOCKET");
	if (!path || !*path)
		path = FM_DEFAULT_REGISTER_SOCKET;
	if (strlen(path) >= sizeof(c->path)) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	if (tmo < 0 || rc_max < 0 || rc_min < 0) {
		errno = EINVAL;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	fd = fmc_dial(path, tmo);
	if (fd < 0) {
		free(c);
		errno = -fd;
		return NULL;
	}
	c->fd = fd;
	c->timeout_ms = tmo;
	c->rc_max_ms = rc_max;
	c->rc_min_ms = rc_min < rc_max ? rc_min : rc_max;
	c->wake[0] = c->wake[1] = -1;
	c->connected = true;
	strcpy(c->path, path);
	pthread_mutex_init(&c->mu, NULL);
	return c;
}

static int open_uffd(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd >= 0)
		return fd;
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -1;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	close(dev);
	return fd;
}

/* Register r->addr/r->size (mapped from r->memfd) on a new uffd and hand
 * both descriptors to the daemon. 0 or an errno value (with c->error set). */
static int register_region(struct fm_client *c, struct fm_region *r, const char *name)
{
	struct uffdio_api api = { .api = UFFD_API, .features = FM_UFFD_FEATURES };
	struct uffdio_register reg;
	struct fm_reg_req q = { .magic = FM_PROTO_MAGIC, .version = FM_PROTO_VERSION,
				.type = FM_REG_REGISTER, .length = sizeof(q), .page_size = FM_PAGE_SIZE };
	struct fm_reg_reply rep;
	int err, fds[2];

	r->uffd = open_uffd();
	if (r->uffd < 0) {
		err = errno == EPERM || errno == EACCES ? errno : ENOSYS;
		fmc_set_error(c, "userfaultfd: %s", strerror(errno));
		return err;
	}
	if (ioctl(r->uffd, UFFDIO_API, &api) < 0 || (api.features & FM_UFFD_FEATURES) != FM_UFFD_FEATURES) {
		fmc_set_error(c, "this kernel's userfaultfd lacks features 0x%llx",
			  (unsigned long long)(FM_UFFD_FEATURES & ~api.features));
		return ENOSYS;
	}
	reg = (struct uffdio_register){
		.range = { (uint64_t)(uintptr_t)r->addr, r->size },
		.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
	};
	if (ioctl(r->uffd, UFFDIO_REGISTER, &reg) < 0) {
		err = errno;
		fmc_set_error(c, "UFFDIO_REGISTER: %s", strerror(err));
		return err;
	}
	r->uffd_registered = true;
	q.addr = (uint64_t)(uintptr_t)r->addr;
	q.size = r->size;
	snprintf(q.name, sizeof(q.name), "%s", name);
	memcpy(r->name, q.name, sizeof(r->name));
	fds[0] = r->uffd;
	fds[1] = r->memfd;
	pthread_mutex_lock(&c->mu);
	if (!c->connected) {
		pthread_mutex_unlock(&c->mu);
		fmc_set_error(c, "fluidmemd is restarting: the connection is being re-established");
		return ENOTCONN;
	}
	err = -fmc_transact(c, &q, fds, 2, &rep);
	if (err) {
		pthread_mutex_unlock(&c->mu);
		return err;
	}
	r->id = rep.region_id;
	memcpy(r->cred, rep.credential, sizeof(r->cred));
	/* We keep our uffd open: if fluidmemd dies, faulting threads wait
	 * rather than find holes and read zeros, until the watcher has the
	 * restarted daemon re-adopt the region. */
	r->next = c->regions;
	c->regions = r;
	fmc_start_watcher(c);
	pthread_mutex_unlock(&c->mu);
	return 0;
}

static void region_free(struct fm_region *r)
{
	int err = errno;

	/* The daemon may still hold a copy of the uffd (it timed out, or it
	 * refused after taking it): unregister the range in our mm ourselves,
	 * so that the munmap to come raises no UNMAP event that would wait
	 * for a reader. */
	if (r->uffd_registered) {
		struct uffdio_range range = { (uint64_t)(uintptr_t)r->addr, r->size };

		ioctl(r->uffd, UFFDIO_UNREGISTER, &range);
	}
	if (r->uffd >= 0)
		close(r->uffd);
	if (r->owned && r->addr != MAP_FAILED)
		munmap(r->addr, r->size);
	if (r->memfd >= 0)
		close(r->memfd);
	free(r);
	errno = err;
}

FM_API struct fm_region *fm_region_create(struct fm_client *c, size_t size, const char *name)
{
	struct fm_region *r;
	int err;

	if (!c || size == 0) {
		errno = EINVAL;
		return NULL;
	}
	size = (size + FM_PAGE_SIZE - 1) & ~(size_t)(FM_PAGE_SIZE - 1);
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->client = c;
	r->size = size;
	r->uffd = r->memfd = -1;
	r->addr = MAP_FAILED;
	r->owned = true;
	if (!name)
		name = "fluidmem";
	/* Sealed against resizing: fluidmemd reads victims through its own
	 * mapping, and a memfd that shrank under it would SIGBUS the daemon. */
	r->memfd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (r->memfd < 0 || ftruncate(r->memfd, (off_t)size) < 0 ||
	    fcntl(r->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0) {
		err = errno;
		fmc_set_error(c, "memfd: %s", strerror(err));
		goto fail;
	}
	r->addr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd, 0);
	if (r->addr == MAP_FAILED) {
		err = errno;
		fmc_set_error(c, "mmap: %s", strerror(err));
		goto fail;
	}
	/* A child sharing this memfd without our registration would fill
	 * evicted pages with zeros that the parent then sees. */
	if (madvise(r->addr, size, MADV_DONTFORK) < 0) {
		err = errno;
		fmc_set_error(c, "MADV_DONTFORK: %s", strerror(err));
		goto fail;
	}
	err = register_region(c, r, name);
	if (err)
		goto fail;
	return r;
fail:
	errno = err;
	region_free(r);
	return NULL;
}

FM_API struct fm_region *fm_region_register(struct fm_client *c, void *addr, size_t size,
					    int memfd, const char *name)
{
	struct fm_region *r;
	int err;

	if (!c || size == 0 || size % FM_PAGE_SIZE || (uintptr_t)addr % FM_PAGE_SIZE || memfd < 0) {
		errno = EINVAL;
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->client = c;
	r->size = size;
	r->addr = addr;
	r->uffd = -1;
	r->memfd = fcntl(memfd, F_DUPFD_CLOEXEC, 0);
	/* The daemon requires a memfd that cannot shrink; seal it if we may.
	 * If sealing is not allowed the daemon refuses and says why. */
	if (r->memfd >= 0 && !(fcntl(r->memfd, F_GET_SEALS) & F_SEAL_SHRINK))
		fcntl(r->memfd, F_ADD_SEALS, F_SEAL_SHRINK);
	if (r->memfd < 0) {
		err = errno;
		fmc_set_error(c, "memfd: %s", strerror(err));
		free(r);
		errno = err;
		return NULL;
	}
	/* A fork child would share this memfd without our registration and
	 * fill evicted pages with zeros that we then see (README). */
	if (madvise(addr, size, MADV_DONTFORK) < 0) {
		err = errno;
		fmc_set_error(c, "MADV_DONTFORK: %s", strerror(err));
		errno = err;
		region_free(r);
		return NULL;
	}
	err = register_region(c, r, name ? name : "fluidmem");
	if (err) {
		errno = err;
		region_free(r);
		return NULL;
	}
	return r;
}

FM_API int fm_region_destroy(struct fm_region *r)
{
	struct fm_client *c;
	struct fm_reg_req q = { .magic = FM_PROTO_MAGIC, .version = FM_PROTO_VERSION,
				.type = FM_REG_UNREGISTER, .length = sizeof(q), .page_size = FM_PAGE_SIZE };
	struct fm_reg_reply rep;
	int rc = 0;

	if (!r)
		return 0;
	c = r->client;
	q.region_id = r->id;
	pthread_mutex_lock(&c->mu);
	/* An owed READOPT reply may be this region's: settle it first, so we
	 * know whether the daemon serves it on this connection. */
	if (c->connected && c->late == FM_REG_READOPT)
		fmc_settle_late(c);
	if (c->late_region == r)
		c->late_region = NULL;   /* a late success is undone by its id */
	/* A region waiting for READOPT is held by no connection: nothing to
	 * tell the daemon (a restarted one keeps its record until it expires). */
	if (c->connected && r->status == 0)
		rc = fmc_transact(c, &q, NULL, 0, &rep);
	for (struct fm_region **p = &c->regions; *p; p = &(*p)->next) {
		if (*p == r) {
			*p = r->next;
			break;
		}
	}
	pthread_mutex_unlock(&c->mu);
	/* The daemon has dropped its descriptors; closing ours (first, in
	 * region_free) unregisters the range, so the munmap raises no UNMAP
	 * event that nobody would read. */
	region_free(r);
	return rc;
}

FM_API void fm_disconnect(struct fm_client *c)
{
	if (!c)
		return;
	fmc_stop_watcher(c);
	/* A READOPT cut short by the stop: closing the connection frees on the
	 * daemon whatever it serves on it, so the UNREGISTERs are skipped
	 * rather than wait for its reply. */
	if (c->late == FM_REG_READOPT)
		c->connected = false;
	while (c->regions)
		fm_region_destroy(c->regions);
	close(c->fd);
	if (c->wake[0] >= 0) {
		close(c->wake[0]);
		close(c->wake[1]);
	}
	pthread_mutex_destroy(&c->mu);
	free(c);
}

FM_API void fm_client_forget(struct fm_client *c)
{
	if (!c)
		return;
	/* A fork child has no watcher thread and may have inherited c->mu
	 * held: touch neither. No UFFDIO_UNREGISTER here: the uffd acts on
	 * the mm that created it, which is the parent's. Closing our copies
	 * leaves the parent served. */
	while (c->regions) {
		struct fm_region *r = c->regions;

		c->regions = r->next;
		if (r->uffd >= 0)
			close(r->uffd);
		if (r->memfd >= 0)
			close(r->memfd);
		free(r);
	}
	close(c->fd);
	if (c->wake[0] >= 0) {
		close(c->wake[0]);
		close(c->wake[1]);
	}
	free(c);
}

FM_API int fm_region_status(const struct fm_region *r)
{
	return r ? __atomic_load_n(&r->status, __ATOMIC_ACQUIRE) : -EINVAL;
}

/* Testing only: FLUIDMEM_TEST_DISCARD_PAUSE_MS=N holds each discard N ms
 * between its first punch and its madvise, where a stored page installed
 * meanwhile would survive without the second punch (test_prefetch_daemon,
 * discard_between_punch_and_madvise_reads_zero). Unset, it costs a getenv. */
static void test_pause_after_punch(void)
{
	const char *v = getenv("FLUIDMEM_TEST_DISCARD_PAUSE_MS");
	long ms = v ? strtol(v, NULL, 10) : 0;

	if (ms > 0 && ms < 60000)
		usleep((useconds_t)ms * 1000);
}

FM_API int fm_region_discard(struct fm_region *r, size_t offset, size_t len)
{
	if (!r || offset % FM_PAGE_SIZE || len % FM_PAGE_SIZE || offset > r->size || len > r->size - offset)
		return -EINVAL;
	if (len == 0)
		return 0;
	/* Punch first: the pages are gone before anyone can write them again,
	 * and fluidmemd, handling the REMOVE that MADV_DONTNEED then raises,
	 * finds them gone and drops their state and stored copies. Punch once
	 * more after it: until the REMOVE is pending nothing stops fluidmemd
	 * from installing a stored page (a prefetch, a fault of another
	 * thread) into the hole just punched, and MADV_DONTNEED of a shared
	 * mapping only zaps page tables, so that page's old data would stay in
	 * the memfd and be read back. Once the REMOVE has been read (madvise
	 * returned), fluidmemd installs no stored page of ours until it has
	 * handled it (docs/design.md, "Prefetch", Discards). */
	if (fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
		      (off_t)len) < 0)
		return -errno;
	test_pause_after_punch();
	if (madvise((char *)r->addr + offset, len, MADV_DONTNEED) < 0)
		return -errno;
	if (fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
		      (off_t)len) < 0)
		return -errno;
	return 0;
}

FM_API void *fm_region_addr(const struct fm_region *r)
{
	return r->addr;
}

FM_API size_t fm_region_size(const struct fm_region *r)
{
	return r->size;
}

FM_API uint64_t fm_region_id(const struct fm_region *r)
{
	return r->id;
}
