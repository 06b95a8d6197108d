/* libfluidmem: create regions whose pages fluidmemd serves. */
#include "client/fluidmem.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/base.h"
#include "proto/proto.h"

#define FM_API __attribute__((visibility("default")))

struct fm_region {
	struct fm_client *client;
	struct fm_region *next;
	void *addr;
	size_t size;
	uint64_t id;
	int uffd;
	int memfd;
	bool owned;    /* we mapped it (fm_region_create) and unmap it */
	bool uffd_registered;   /* UFFDIO_REGISTER succeeded on r->uffd */
};

struct fm_client {
	int fd;
	int timeout_ms;   /* bound on one exchange with the daemon */
	/* A request whose reply did not come in time (FM_REG_REGISTER or
	 * FM_REG_UNREGISTER), else 0. Its reply is still owed: it is read
	 * before the next request, so replies never pair with the wrong
	 * request, and a late REGISTER success is undone at once. */
	uint16_t late;
	struct fm_region *regions;
	char error[192];
};

static void set_error(struct fm_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_error(struct fm_client *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
}

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

FM_API struct fm_client *fm_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct fm_client *c;
	struct timeval tv;
	int err, tmo = timeout_ms_from_env();

	if (!path)
		path = getenv("FLUIDMEM_SOCKET");
	if (!path || !*path)
		path = FM_DEFAULT_REGISTER_SOCKET;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	if (tmo < 0) {
		errno = EINVAL;
		return NULL;
	}
	strcpy(sa.sun_path, path);
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->timeout_ms = tmo;
	tv = (struct timeval){ .tv_sec = tmo / 1000, .tv_usec = (tmo % 1000) * 1000 };
	c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	/* The send timeout also bounds connect: a unix connect to a listener
	 * whose backlog is full waits for it. */
	if (c->fd < 0 || setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err = errno;
		if (c->fd >= 0)
			close(c->fd);
		free(c);
		errno = err == EAGAIN ? ETIMEDOUT : err;
		return NULL;
	}
	return c;
}

/* Wait up to the client's timeout for one reply. 0, -ETIMEDOUT or -EPROTO
 * (with c->error set). */
static int recv_reply(struct fm_client *c, struct fm_reg_reply *rep)
{
	uint64_t deadline = fm_now_ns() + (uint64_t)c->timeout_ms * 1000000u;
	ssize_t n;

	for (;;) {
		struct pollfd p = { c->fd, POLLIN, 0 };
		uint64_t now = fm_now_ns();
		int left = now >= deadline ? 0 : (int)((deadline - now + 999999u) / 1000000u);
		int rc = left ? poll(&p, 1, left) : 0;

		if (rc < 0 && errno == EINTR)
			continue;
		if (rc == 0) {
			set_error(c, "fluidmemd did not answer within %d s", c->timeout_ms / 1000);
			return -ETIMEDOUT;
		}
		n = recv(c->fd, rep, sizeof(*rep), MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		break;
	}
	if (n != (ssize_t)sizeof(*rep) || rep->magic != FM_PROTO_MAGIC) {
		set_error(c, "fluidmemd closed the connection or sent a malformed reply");
		return -EPROTO;
	}
	rep->reason[sizeof(rep->reason) - 1] = '\0';
	return 0;
}

static int transact(struct fm_client *c, struct fm_reg_req *q, const int *fds, int nfds,
		    struct fm_reg_reply *rep);

/* Collect the reply owed to a request that timed out. A region the daemon
 * registered after we gave up on it is unregistered: its mapping is gone. */
static int settle_late(struct fm_client *c)
{
	struct fm_reg_reply rep;
	uint16_t late = c->late;
	int rc;

	if (!late)
		return 0;
	rc = recv_reply(c, &rep);
	if (rc == -ETIMEDOUT)
		set_error(c, "fluidmemd has not answered an earlier request within %d s",
			  c->timeout_ms / 1000);
	if (rc < 0)
		return rc;
	c->late = 0;
	if (late == FM_REG_REGISTER && rep.status == 0) {
		struct fm_reg_req q = { .magic = FM_PROTO_MAGIC, .version = FM_PROTO_VERSION,
					.type = FM_REG_UNREGISTER, .length = sizeof(q),
					.page_size = FM_PAGE_SIZE, .region_id = rep.region_id };

		rc = transact(c, &q, NULL, 0, &rep);
		if (rc == -ETIMEDOUT)
			return rc;
	}
	return 0;
}

/* Send one request (with fds when nfds > 0) and wait, at most the client's
 * timeout, for the reply. 0 or -errno with c->error set; -ETIMEDOUT leaves
 * the reply owed (c->late). */
static int transact(struct fm_client *c, struct fm_reg_req *q, const int *fds, int nfds,
		    struct fm_reg_reply *rep)
{
	char cbuf[CMSG_SPACE(sizeof(int) * 2)];
	struct iovec iov = { q, sizeof(*q) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	int rc = settle_late(c);

	if (rc < 0)
		return rc;
	memset(cbuf, 0, sizeof(cbuf));
	if (nfds > 0) {
		struct cmsghdr *cm;

		mh.msg_control = cbuf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	if (sendmsg(c->fd, &mh, MSG_NOSIGNAL) < 0) {
		int err = errno;

		/* A daemon that refused us at accept has queued its reason and
		 * closed: read that rather than report a broken pipe. */
		if ((err == EPIPE || err == ECONNRESET) &&
		    recv(c->fd, rep, sizeof(*rep), MSG_DONTWAIT) == (ssize_t)sizeof(*rep) &&
		    rep->magic == FM_PROTO_MAGIC && rep->status < 0) {
			rep->reason[sizeof(rep->reason) - 1] = '\0';
			set_error(c, "fluidmemd refused: %s", rep->reason);
			return rep->status;
		}
		if (err == EAGAIN) {   /* SO_SNDTIMEO: nothing was sent */
			set_error(c, "fluidmemd did not take a request within %d s",
				  c->timeout_ms / 1000);
			return -ETIMEDOUT;
		}
		set_error(c, "cannot reach fluidmemd: %s", strerror(err));
		return -err;
	}
	rc = recv_reply(c, rep);
	if (rc == -ETIMEDOUT)
		c->late = q->type;
	if (rc < 0)
		return rc;
	if (rep->status < 0) {
		set_error(c, "fluidmemd refused: %s", rep->reason[0] ? rep->reason : strerror(-rep->status));
		return rep->status;
	}
	return 0;
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
		set_error(c, "userfaultfd: %s", strerror(errno));
		return err;
	}
	if (ioctl(r->uffd, UFFDIO_API, &api) < 0 || (api.features & FM_UFFD_FEATURES) != FM_UFFD_FEATURES) {
		set_error(c, "this kernel's userfaultfd lacks features 0x%llx",
			  (unsigned long long)(FM_UFFD_FEATURES & ~api.features));
		return ENOSYS;
	}
	reg = (struct uffdio_register){
		.range = { (uint64_t)(uintptr_t)r->addr, r->size },
		.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
	};
	if (ioctl(r->uffd, UFFDIO_REGISTER, &reg) < 0) {
		err = errno;
		set_error(c, "UFFDIO_REGISTER: %s", strerror(err));
		return err;
	}
	r->uffd_registered = true;
	q.addr = (uint64_t)(uintptr_t)r->addr;
	q.size = r->size;
	snprintf(q.name, sizeof(q.name), "%s", name);
	fds[0] = r->uffd;
	fds[1] = r->memfd;
	err = -transact(c, &q, fds, 2, &rep);
	if (err)
		return err;
	r->id = rep.region_id;
	/* We keep our uffd open: if fluidmemd dies, faulting threads wait
	 * rather than find holes and read zeros. */
	r->next = c->regions;
	c->regions = r;
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
		set_error(c, "memfd: %s", strerror(err));
		goto fail;
	}
	r->addr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd, 0);
	if (r->addr == MAP_FAILED) {
		err = errno;
		set_error(c, "mmap: %s", strerror(err));
		goto fail;
	}
	/* A child sharing this memfd without our registration would fill
	 * evicted pages with zeros that the parent then sees. */
	if (madvise(r->addr, size, MADV_DONTFORK) < 0) {
		err = errno;
		set_error(c, "MADV_DONTFORK: %s", strerror(err));
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
		set_error(c, "memfd: %s", strerror(err));
		free(r);
		errno = err;
		return NULL;
	}
	/* A fork child would share this memfd without our registration and
	 * fill evicted pages with zeros that we then see (README). */
	if (madvise(addr, size, MADV_DONTFORK) < 0) {
		err = errno;
		set_error(c, "MADV_DONTFORK: %s", strerror(err));
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
	int rc;

	if (!r)
		return 0;
	c = r->client;
	q.region_id = r->id;
	rc = transact(c, &q, NULL, 0, &rep);
	for (struct fm_region **p = &c->regions; *p; p = &(*p)->next) {
		if (*p == r) {
			*p = r->next;
			break;
		}
	}
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
	while (c->regions)
		fm_region_destroy(c->regions);
	close(c->fd);
	free(c);
}

FM_API void fm_client_forget(struct fm_client *c)
{
	if (!c)
		return;
	/* No UFFDIO_UNREGISTER here: the uffd acts on the mm that created it,
	 * which is the parent's. Closing our copies leaves the parent served. */
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
	free(c);
}

FM_API int fm_region_discard(struct fm_region *r, size_t offset, size_t len)
{
	if (!r || offset % FM_PAGE_SIZE || len % FM_PAGE_SIZE || offset > r->size || len > r->size - offset)
		return -EINVAL;
	if (len == 0)
		return 0;
	/* Punch first: the pages are gone before anyone can write them again.
	 * MADV_DONTNEED then zaps our page tables and raises the REMOVE event
	 * that tells fluidmemd to drop its state and stored copies. */
	if (fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
		      (off_t)len) < 0)
		return -errno;
	if (madvise((char *)r->addr + offset, len, MADV_DONTNEED) < 0)
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
