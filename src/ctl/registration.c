#include "ctl/registration.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "base/base.h"
#include "uffd/uffd.h"
#include "uffd/uffd_compat.h"

#define MAX_REGION_BYTES (1ull << 46)   /* 64 TiB: page ids must fit 32 bits per shard */
/* The kernel's internal "API handshake done" bit, shown in fdinfo. */
#define UFFD_FEATURE_INITIALIZED_BIT (1ull << 31)

static int fail(int rc, char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(int rc, char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (why && whylen) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

int reg_decode(const void *buf, size_t len, int msg_flags, int nfds, struct fm_reg_req *out,
	       char *why, size_t whylen)
{
	(void)nfds;
	memset(out, 0, sizeof(*out));
	if (msg_flags & MSG_CTRUNC)
		return fail(-EPROTO, why, whylen,
			    "too many descriptors (or the daemon is out of descriptors)");
	if ((msg_flags & MSG_TRUNC) || len != sizeof(struct fm_reg_req))
		return fail(-EPROTO, why, whylen,
			    "request has the wrong length (truncated or oversized)");
	memcpy(out, buf, sizeof(*out));
	if (out->magic != FM_PROTO_MAGIC)
		return fail(-EPROTO, why, whylen, "bad magic: not a fluidmem client");
	if (out->version != FM_PROTO_VERSION || out->length != sizeof(struct fm_reg_req))
		return fail(-EPROTONOSUPPORT, why, whylen,
			    "unsupported protocol version (daemon speaks %d)", FM_PROTO_VERSION);
	if (out->type != FM_REG_REGISTER && out->type != FM_REG_UNREGISTER &&
	    out->type != FM_REG_READOPT)
		return fail(-EPROTO, why, whylen, "unknown request type");
	return 0;
}

int reg_check_fields(const struct fm_reg_req *q, int nfds, uint64_t max_bytes, char *why,
		     size_t whylen)
{
	if (nfds != 2)
		return fail(-EPROTO, why, whylen,
			    "REGISTER needs 2 descriptors (uffd, memfd), got %d", nfds);
	if (q->page_size != FM_PAGE_SIZE)
		return fail(-EINVAL, why, whylen, "unsupported page size %u (only %u)", q->page_size,
			    FM_PAGE_SIZE);
	if (q->size == 0 || q->size % FM_PAGE_SIZE || q->size > MAX_REGION_BYTES ||
	    q->addr % FM_PAGE_SIZE || q->addr + q->size < q->addr)
		return fail(-EINVAL, why, whylen, "bad region: addr 0x%" PRIx64 " size %" PRIu64,
			    q->addr, q->size);
	if (memchr(q->name, '\0', sizeof(q->name)) == NULL || q->flags != 0)
		return fail(-EINVAL, why, whylen, "name not NUL-terminated or unknown flags");
	if (q->size > max_bytes)
		return fail(-E2BIG, why, whylen,
			    "region of %" PRIu64 " MiB is over register.max_region_mib (%" PRIu64 ")",
			    q->size >> 20, max_bytes >> 20);
	return 0;
}

int reg_uffd_features_parse(const char *fdinfo, uint64_t *features)
{
	const char *p = fdinfo;

	while (p && *p) {
		unsigned long long api, ioctls;
		unsigned feat;

		if (strncmp(p, "API:", 4) == 0 &&
		    sscanf(p + 4, " %llx:%x:%llx", &api, &feat, &ioctls) == 3) {
			*features = feat;
			return 0;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return -ENOENT;
}

static int read_small_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t len = 0;

	if (fd < 0)
		return -errno;
	while (len + 1 < cap) {
		ssize_t n = read(fd, buf + len, cap - 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	close(fd);
	return 0;
}

static int fd_link(int fd, char *link, size_t cap)
{
	char path[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, cap - 1);
	if (n < 0)
		return -errno;
	link[n] = '\0';
	return 0;
}

int reg_check_uffd(int fd, char *why, size_t whylen)
{
	char link[64], path[64], info[1024];
	uint64_t feat;

	if (fd < 0 || fd_link(fd, link, sizeof(link)) < 0 ||
	    strcmp(link, "anon_inode:[userfaultfd]") != 0)
		return fail(-EBADF, why, whylen, "first descriptor is not a userfaultfd");
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	if (read_small_file(path, info, sizeof(info)) < 0 ||
	    reg_uffd_features_parse(info, &feat) < 0)
		return fail(-EBADF, why, whylen, "cannot read the userfaultfd's features");
	if (!(feat & UFFD_FEATURE_INITIALIZED_BIT))
		return fail(-EINVAL, why, whylen,
			    "the userfaultfd has not done its UFFDIO_API handshake");
	if (feat & UFFD_FEATURE_EVENT_FORK)
		return fail(-EINVAL, why, whylen,
			    "the userfaultfd has UFFD_FEATURE_EVENT_FORK: a fork would share the "
			    "served memfd unserved; fluidmem refuses it");
	if (feat & UFFD_FEATURE_WP_ASYNC)
		return fail(-EINVAL, why, whylen,
			    "the userfaultfd has UFFD_FEATURE_WP_ASYNC, which breaks eviction's "
			    "synchronous write-protect");
	if ((feat & FM_UFFD_FEATURES) != FM_UFFD_FEATURES)
		return fail(-EINVAL, why, whylen,
			    "the userfaultfd lacks required features 0x%llx",
			    (unsigned long long)(FM_UFFD_FEATURES & ~feat));
	return 0;
}

int reg_check_memfd(int fd, uint64_t size, char *why, size_t whylen)
{
	char link[80];
	struct statfs sfs;
	struct stat st;
	int seals;

	/* F_GET_SEALS is -1 (EINVAL) on anything but a shmem or hugetlb
	 * file: it is an answer, never a mask. */
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || fstatfs(fd, &sfs) < 0 ||
	    fd_link(fd, link, sizeof(link)) < 0 || strncmp(link, "/memfd:", 7) != 0)
		return fail(-EBADF, why, whylen, "second descriptor is not a memfd");
	if (sfs.f_type != TMPFS_MAGIC)
		return fail(-EBADF, why, whylen,
			    "second descriptor is not a shmem memfd (hugetlb memfds are not served)");
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0)
		return fail(-EBADF, why, whylen, "second descriptor is not a memfd");
	/* Write seals forbid the hole punch that ends every eviction. */
	if (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))
		return fail(-EPERM, why, whylen,
			    "the memfd is sealed against writes: the daemon could not evict from it");
	/* F_SEAL_SEAL too: a write seal added later would make evictions
	 * fail in the same way. */
	if ((seals & (F_SEAL_SHRINK | F_SEAL_SEAL)) != (F_SEAL_SHRINK | F_SEAL_SEAL))
		(void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL);
	if (!(fcntl(fd, F_GET_SEALS) & F_SEAL_SHRINK))
		return fail(-EPERM, why, whylen,
			    "the memfd could shrink under the daemon: create it with "
			    "MFD_ALLOW_SEALING (QEMU: memory-backend-memfd seal=on)");
	/* The size only counts once nobody can shrink it any more. */
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size < size)
		return fail(-EBADF, why, whylen,
			    "the memfd (%lld bytes) is smaller than the region", (long long)st.st_size);
	return 0;
}

bool reg_maps_cover(const char *maps, dev_t dev, ino_t ino, uint64_t addr, uint64_t size)
{
	uint64_t end = addr + size, next = addr;
	const char *p = maps;

	if (size == 0 || end < addr)
		return false;
	/* Lines come sorted by address: walk the mappings that hold the next
	 * uncovered byte. Each must be this file, shared, and map address x
	 * to file offset x - addr (the daemon's view is at offset 0). */
	while (p && *p && next < end) {
		unsigned long long lo, hi, off, inode;
		unsigned maj, min;
		char perms[8];

		if (sscanf(p, "%llx-%llx %7s %llx %x:%x %llu", &lo, &hi, perms, &off, &maj, &min,
			   &inode) == 7 &&
		    hi > next) {
			if (lo > next || lo < addr || strlen(perms) < 4 || perms[3] != 's' ||
			    makedev(maj, min) != dev || (ino_t)inode != ino || off != lo - addr)
				return false;
			next = hi;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return next >= end;
}

int reg_check_mapping(pid_t pid, int uffd, int memfd, uint64_t addr, uint64_t size, char *why,
		      size_t whylen)
{
	struct uffdio_writeprotect wp = { .range = { .start = addr, .len = size }, .mode = 0 };
	char path[64];
	struct stat st;
	char *maps = NULL;
	size_t cap = 0, len = 0;
	bool ok;
	FILE *f;

	if (fstat(memfd, &st) < 0)
		return fail(-EBADF, why, whylen, "second descriptor is not a memfd");
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return fail(-EACCES, why, whylen, "the daemon cannot read %s: %s", path,
			    strerror(errno));
	for (;;) {
		if (len + 4096 + 1 > cap) {
			size_t ncap = cap ? cap * 2 : 65536;
			char *m = realloc(maps, ncap);

			if (!m) {
				free(maps);
				fclose(f);
				return fail(-ENOMEM, why, whylen, "out of memory");
			}
			maps = m;
			cap = ncap;
		}
		size_t n = fread(maps + len, 1, cap - len - 1, f);
		if (n == 0)
			break;
		len += n;
	}
	fclose(f);
	maps[len] = '\0';
	ok = reg_maps_cover(maps, st.st_dev, st.st_ino, addr, size);
	free(maps);
	if (!ok)
		return fail(-EINVAL, why, whylen,
			    "the memfd is not mapped shared at offset 0 over 0x%" PRIx64 "+%" PRIu64
			    " in pid %d",
			    addr, size, (int)pid);
	/* Nothing is write-protected yet, so clearing the protection changes
	 * nothing; it fails unless the uffd's mm has the whole range
	 * registered for write-protect. */
	if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
		return fail(-EINVAL, why, whylen,
			    "the userfaultfd does not cover the region for write-protect: %s",
			    strerror(errno));
	return 0;
}
