/* ctl/statefile: the state directory that lets a restarted daemon re-adopt
 * live regions (statefile.h). */
#include "ctl/statefile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "shard/page_hash.h"

void fm_state_dir_default(const char *configured, char *out, size_t cap)
{
	const char *rt = getenv("RUNTIME_DIRECTORY");

	if (configured && configured[0])
		snprintf(out, cap, "%s", configured);
	else if (rt && rt[0] && rt[0] == '/')
		/* systemd may list several, colon-separated: the first is ours */
		snprintf(out, cap, "%.*s/state", (int)strcspn(rt, ":"), rt);
	else
		snprintf(out, cap, "/run/fluidmem/state");
}

/* mkdir -p, each new level 0700. */
static int mkdirs(const char *path)
{
	char buf[FM_STATE_PATH_MAX];
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int read_all(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EINVAL;
		got += (size_t)n;
	}
	return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
	size_t put = 0;

	while (put < len) {
		ssize_t n = write(fd, (const char *)buf + put, len - put);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		put += (size_t)n;
	}
	return 0;
}

/* Write name under a temporary name, then rename over it: readers after a
 * crash see the old contents or the new, never a torn file. */
static int replace_file(int dirfd, const char *name, const void *buf, size_t len, mode_t mode)
{
	char tmp[64];
	int fd, rc;

	snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	rc = write_all(fd, buf, len);
	/* The contents reach the disk before the name does, and the name
	 * before we return: a power cut leaves the old file or the new one. */
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	close(fd);
	if (rc == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		rc = -errno;
	if (rc == 0 && fsync(dirfd) < 0)
		rc = -errno;
	if (rc < 0)
		unlinkat(dirfd, tmp, 0);
	return rc;
}

/* Read a small file of the directory whole: *got bytes, at most cap (a
 * file of cap bytes or more is reported as cap). 0 or -errno. */
static int read_small(int dirfd, const char *name, char *buf, size_t cap, size_t *got)
{
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), rc = 0;

	*got = 0;
	if (fd < 0)
		return -errno;
	while (*got < cap) {
		ssize_t k = read(fd, buf + *got, cap - *got);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			rc = -errno;
		if (k <= 0)
			break;
		*got += (size_t)k;
	}
	close(fd);
	return rc;
}

static int load_secret(struct fm_state_dir *sd)
{
	int fd = openat(sd->dirfd, "secret", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	int rc;

	if (fd >= 0) {
		rc = fstat(fd, &st) < 0 ? -errno : 0;
		if (rc == 0 && (st.st_mode & 077)) {
			FM_ERR("%s/secret is readable by others (mode %o): refusing it", sd->path,
			       (unsigned)(st.st_mode & 0777));
			rc = -EPERM;
		}
		if (rc == 0)
			rc = read_all(fd, sd->secret, sizeof(sd->secret));
		close(fd);
		return rc;
	}
	if (errno != ENOENT)
		return -errno;
	if (getrandom(sd->secret, sizeof(sd->secret), 0) != (ssize_t)sizeof(sd->secret))
		return -EIO;
	return replace_file(sd->dirfd, "secret", sd->secret, sizeof(sd->secret), 0600);
}

static int bump_generation(struct fm_state_dir *sd)
{
	char buf[32] = "";
	unsigned long long g = 0;
	int fd = openat(sd->dirfd, "generation", O_RDONLY | O_CLOEXEC);
	int n;

	if (fd >= 0) {
		ssize_t k = read(fd, buf, sizeof(buf) - 1);

		close(fd);
		if (k > 0) {
			buf[k] = '\0';
			g = strtoull(buf, NULL, 10);
		}
	} else if (errno != ENOENT) {
		return -errno;
	}
	g++;
	n = snprintf(buf, sizeof(buf), "%llu\n", g);
	sd->generation = (uint32_t)g;
	return replace_file(sd->dirfd, "generation", buf, (size_t)n, 0600);
}

int fm_state_dir_open(struct fm_state_dir *sd, const char *path)
{
	int rc;

	memset(sd, 0, sizeof(*sd));
	sd->dirfd = sd->lockfd = -1;
	if (strlen(path) >= sizeof(sd->path))
		return -ENAMETOOLONG;
	snprintf(sd->path, sizeof(sd->path), "%s", path);
	if ((rc = mkdirs(path)) < 0)
		return rc;
	sd->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sd->dirfd < 0)
		return -errno;
	sd->lockfd = openat(sd->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (sd->lockfd < 0) {
		rc = -errno;
		goto fail;
	}
	/* Two daemons on one directory would each take the other's regions
	 * for orphans. */
	if (flock(sd->lockfd, LOCK_EX | LOCK_NB) < 0) {
		rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
		goto fail;
	}
	if ((rc = load_secret(sd)) < 0 || (rc = bump_generation(sd)) < 0)
		goto fail;
	return 0;
fail:
	fm_state_dir_close(sd);
	return rc;
}

int32_t fm_state_node_parse(const char *data, size_t n)
{
	char buf[8];
	unsigned long v;
	char *end;

	/* Exactly "<1..5 digits>\n": anything else (empty, torn, a sign,
	 * spaces, leading zeros, trailing bytes, > 65535) is not an id this code wrote. */
	if (n < 2 || n > 6 || data[0] < '0' || data[0] > '9' || data[n - 1] != '\n' ||
	    (data[0] == '0' && n > 2))   /* a leading zero: not written by us */
		return -EINVAL;
	memcpy(buf, data, n);
	buf[n] = '\0';
	errno = 0;
	v = strtoul(buf, &end, 10);
	if (errno || end != buf + n - 1 || v > 65535)
		return -EINVAL;
	return (int32_t)v;
}

int32_t fm_state_node_read(const struct fm_state_dir *sd)
{
	char buf[16];
	size_t n;
	int rc;

	if (!fm_state_dir_on(sd))
		return -ENOENT;
	rc = read_small(sd->dirfd, FM_STATE_NODE_FILE, buf, sizeof(buf), &n);
	if (rc < 0)
		return rc;
	return fm_state_node_parse(buf, n);
}

int fm_state_node_write(struct fm_state_dir *sd, uint16_t node)
{
	char buf[16];
	int n = snprintf(buf, sizeof(buf), "%u\n", (unsigned)node);

	if (!fm_state_dir_on(sd))
		return -EBADF;
	return replace_file(sd->dirfd, FM_STATE_NODE_FILE, buf, (size_t)n, 0600);
}

/* The id of a region file's name, "region-<16 hex>.state"; -1 for any other. */
static int region_name_id(const char *name, uint64_t *id)
{
	unsigned long long v;
	char tail[8];

	if (strlen(name) != 7 + 16 + 6 || sscanf(name, "region-%16llx%7s", &v, tail) != 2 ||
	    strcmp(tail, ".state"))
		return -1;
	*id = (uint64_t)v;
	return 0;
}

void fm_state_node_mismatch(char *err, size_t cap, int32_t want, unsigned n, const char *path,
			    int32_t node, bool cluster)
{
	snprintf(err, cap,
		 "daemon.node_id = %d, but the %u region(s) awaiting re-adoption in %s were written "
		 "by node %d: their store keys and records belong to node %d, and this daemon "
		 "would look them up as node %d. Start with daemon.node_id = %d%s to re-adopt "
		 "them, or remove %s/region-*.state to give them up (with the cluster on, node "
		 "%d's stored pages are then collected after cluster.orphan_grace_s)",
		 want, n, path, node, node, want, node, cluster ? " (or \"auto\")" : "", path, node);
}

int fm_state_node_check(const char *path, int32_t want, bool cluster, char *err, size_t cap)
{
	struct fm_state_dir sd = { .lockfd = -1 };
	int32_t node = -1;
	int fd;
	unsigned n = 0;
	struct dirent *e;
	DIR *dir;

	if (want < 0)
		return 0;
	sd.dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sd.dirfd < 0)
		return 0;
	fd = dup(sd.dirfd);
	dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dir && fd >= 0)
		close(fd);
	if (dir) {
		/* The names fm_state_scan takes, in its order (daemon_state_open
		 * takes the first one's node when no node file says it). */
		while ((e = readdir(dir)) != NULL) {
			uint64_t id;

			if (region_name_id(e->d_name, &id) < 0)
				continue;
			if (n++ == 0)
				node = (int32_t)(id >> 48);
		}
		closedir(dir);
	}
	if (n > 0) {
		int32_t rec = fm_state_node_read(&sd);

		if (rec >= 0)
			node = rec;
	}
	close(sd.dirfd);
	if (n == 0 || node == want)
		return 0;
	fm_state_node_mismatch(err, cap, want, n, path, node, cluster);
	return -1;
}

void fm_state_dir_close(struct fm_state_dir *sd)
{
	if (sd->lockfd >= 0)
		close(sd->lockfd);
	if (sd->dirfd >= 0)
		close(sd->dirfd);
	sd->dirfd = sd->lockfd = -1;
	memset(sd->secret, 0, sizeof(sd->secret));
}

void fm_state_credential(const struct fm_state_dir *sd, uint64_t id, uint32_t uid,
			 uint8_t out[FM_CREDENTIAL_LEN])
{
	struct page_hash_key k0, k1;
	uint64_t msg[2] = { id, uid }, h[2];

	memcpy(&k0, sd->secret, sizeof(k0));
	memcpy(&k1, sd->secret + sizeof(k0), sizeof(k1));
	h[0] = siphash_cd(&k0, msg, sizeof(msg), 2, 4);
	h[1] = siphash_cd(&k1, msg, sizeof(msg), 2, 4);
	_Static_assert(sizeof(h) == FM_CREDENTIAL_LEN, "two SipHash words make a credential");
	memcpy(out, h, FM_CREDENTIAL_LEN);
}

bool fm_state_credential_eq(const uint8_t a[FM_CREDENTIAL_LEN], const uint8_t b[FM_CREDENTIAL_LEN])
{
	uint8_t diff = 0;

	for (unsigned i = 0; i < FM_CREDENTIAL_LEN; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

static void region_name(uint64_t id, char *out, size_t cap)
{
	snprintf(out, cap, "region-%016" PRIx64 ".state", id);
}

static int map_fd(int fd, size_t len, struct fm_state_map *out)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if (p == MAP_FAILED)
		return -errno;
	out->hdr = p;
	out->bits = (uint8_t *)p + FM_STATE_HDR_BYTES;
	out->len = len;
	return 0;
}

int fm_state_region_create(struct fm_state_dir *sd, const struct fm_state_hdr *h,
			   struct fm_state_map *out)
{
	char name[48], tmp[64];
	uint64_t bm = fm_state_bitmap_bytes(h->npages);
	size_t len = FM_STATE_HDR_BYTES + bm;
	struct fm_state_hdr hdr = *h;
	int fd, rc;

	memset(out, 0, sizeof(*out));
	hdr.magic = FM_STATE_MAGIC;
	hdr.version = FM_STATE_VERSION;
	hdr.hdr_bytes = FM_STATE_HDR_BYTES;
	hdr.bitmap_bytes = bm;
	region_name(h->region_id, name, sizeof(name));
	snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
	fd = openat(sd->dirfd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	/* Sparse: the bitmap costs page cache only where bits get set. */
	rc = ftruncate(fd, (off_t)len) < 0 ? -errno : 0;
	if (rc == 0 && pwrite(fd, &hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr))
		rc = -EIO;
	if (rc == 0 && renameat(sd->dirfd, tmp, sd->dirfd, name) < 0)
		rc = -errno;
	if (rc == 0)
		rc = map_fd(fd, len, out);
	close(fd);
	if (rc < 0) {
		unlinkat(sd->dirfd, tmp, 0);
		unlinkat(sd->dirfd, name, 0);
	}
	return rc;
}

int fm_state_region_open(struct fm_state_dir *sd, uint64_t id, struct fm_state_map *out)
{
	char name[48];
	struct fm_state_hdr h;
	struct stat st;
	int fd, rc;

	memset(out, 0, sizeof(*out));
	if (!fm_state_dir_on(sd))
		return -ENOENT;
	region_name(id, name, sizeof(name));
	fd = openat(sd->dirfd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	rc = fstat(fd, &st) < 0 ? -errno : 0;
	if (rc == 0 && pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h))
		rc = -EINVAL;
	if (rc == 0 &&
	    (h.magic != FM_STATE_MAGIC || h.version != FM_STATE_VERSION ||
	     h.hdr_bytes != FM_STATE_HDR_BYTES || h.region_id != id || h.npages == 0 ||
	     h.size != h.npages * FM_PAGE_SIZE || h.bitmap_bytes != fm_state_bitmap_bytes(h.npages) ||
	     (uint64_t)st.st_size != FM_STATE_HDR_BYTES + h.bitmap_bytes ||
	     memchr(h.name, '\0', sizeof(h.name)) == NULL))
		rc = -EINVAL;
	if (rc == 0)
		rc = map_fd(fd, FM_STATE_HDR_BYTES + h.bitmap_bytes, out);
	close(fd);
	return rc;
}

int fm_state_region_unlink(struct fm_state_dir *sd, uint64_t id)
{
	char name[48];

	if (!fm_state_dir_on(sd))
		return -ENOENT;
	region_name(id, name, sizeof(name));
	return unlinkat(sd->dirfd, name, 0) < 0 ? -errno : 0;
}

void fm_state_map_close(struct fm_state_map *m)
{
	if (m->hdr)
		munmap(m->hdr, m->len);
	memset(m, 0, sizeof(*m));
}

int fm_state_scan(struct fm_state_dir *sd, void (*fn)(uint64_t id, void *arg), void *arg)
{
	int fd, n = 0;
	struct dirent *e;
	DIR *dir;

	if (!fm_state_dir_on(sd))
		return 0;
	fd = openat(sd->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return -errno;
	}
	while ((e = readdir(dir)) != NULL) {
		uint64_t id;

		/* Temporaries of an interrupted create start with '.'. */
		if (e->d_name[0] == '.' && strncmp(e->d_name, ".region-", 8) == 0) {
			unlinkat(sd->dirfd, e->d_name, 0);
			continue;
		}
		if (region_name_id(e->d_name, &id) < 0)
			continue;
		fn(id, arg);
		n++;
	}
	closedir(dir);
	return n;
}

/* ---- the store's server lists (file "servers") ---- */

#define SERVERS_FILE "servers"
#define SERVERS_MAGIC "fluidmem-servers 1"
_Static_assert(sizeof(SERVERS_MAGIC) + FM_STATE_SERVER_LISTS * FM_STATE_SERVERS_MAX < FM_STATE_SERVERS_FILE_MAX,
	       "a full servers file fits below the limit that marks it overlong");

int fm_state_servers_push(struct fm_state_servers *s, const char *list)
{
	size_t len = strlen(list);

	if (len >= FM_STATE_SERVERS_MAX)
		return -ENAMETOOLONG;
	if (s->n && !strcmp(s->list[s->n - 1], list))
		return 0;
	if (s->n == FM_STATE_SERVER_LISTS) {
		memmove(s->list[0], s->list[1], sizeof(s->list[0]) * (FM_STATE_SERVER_LISTS - 1));
		s->n--;
	}
	memcpy(s->list[s->n++], list, len + 1);
	return 0;
}

size_t fm_state_servers_format(const struct fm_state_servers *s, char *buf, size_t cap)
{
	size_t o = (size_t)snprintf(buf, cap, SERVERS_MAGIC "\n");

	for (unsigned i = 0; i < s->n && i < FM_STATE_SERVER_LISTS && o < cap; i++)
		o += (size_t)snprintf(buf + o, cap - o, "%s\n", s->list[i]);
	return o < cap ? o : cap;
}

int fm_state_servers_write(struct fm_state_dir *sd, const struct fm_state_servers *s)
{
	char buf[FM_STATE_SERVERS_FILE_MAX];

	if (!fm_state_dir_on(sd))
		return -ENOENT;
	return replace_file(sd->dirfd, SERVERS_FILE, buf, fm_state_servers_format(s, buf, sizeof(buf)),
			    0600);
}

int fm_state_servers_parse(const char *buf, size_t got, struct fm_state_servers *s)
{
	size_t ml = strlen(SERVERS_MAGIC);
	const char *p;

	s->n = 0;
	/* Whole lines only: the last ends with '\n'. */
	if (got >= FM_STATE_SERVERS_FILE_MAX || got <= ml + 1 ||
	    memcmp(buf, SERVERS_MAGIC "\n", ml + 1) || buf[got - 1] != '\n')
		return -EINVAL;
	for (p = buf + ml + 1; p < buf + got;) {
		const char *e = memchr(p, '\n', (size_t)(buf + got - p));
		size_t len = (size_t)(e - p);

		if (len == 0 || len >= FM_STATE_SERVERS_MAX || s->n == FM_STATE_SERVER_LISTS)
			goto bad;
		for (size_t i = 0; i < len; i++)
			if ((unsigned char)p[i] <= ' ' || p[i] == 0x7f)
				goto bad;
		memcpy(s->list[s->n], p, len);
		s->list[s->n++][len] = '\0';
		p = e + 1;
	}
	if (s->n)
		return 0;
bad:
	s->n = 0;
	return -EINVAL;
}

int fm_state_servers_read(struct fm_state_dir *sd, struct fm_state_servers *s)
{
	char buf[FM_STATE_SERVERS_FILE_MAX];
	size_t got;
	int rc;

	s->n = 0;
	if (!fm_state_dir_on(sd))
		return -ENOENT;
	if ((rc = read_small(sd->dirfd, SERVERS_FILE, buf, sizeof(buf), &got)) < 0)
		return rc;
	return fm_state_servers_parse(buf, got, s);
}
