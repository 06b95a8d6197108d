/* libfluidmem-preload: put an unmodified program's big allocations (QEMU's
 * guest RAM and hot-plugged DIMMs) on fluidmemd.
 *
 * Interposes mmap/mmap64/munmap/madvise/mremap. A large mapping is registered with
 * the daemon inside the mmap call, before the caller can touch it:
 *  - MAP_SHARED of a memfd (memory-backend-memfd) is registered as it is;
 *  - MAP_PRIVATE|MAP_ANONYMOUS read-write memory placed MAP_FIXED into a
 *    PROT_NONE reservation (QEMU's default -m RAM and memory-backend-ram) is
 *    replaced by a memfd mapped MAP_SHARED at the same address, since the
 *    daemon can only evict memfd-backed pages (DESIGN.md). Other anonymous
 *    memory (malloc's) is left alone: converted, it would be shared, not
 *    copied, with a fork child, so it is MADV_DONTFORK, which a program that
 *    forks cannot live with.
 * Every served mapping is MADV_DONTFORK, and no other mapping of a served
 * memfd is allowed in this process (EBUSY): an unserved mapping reads
 * evicted pages as zeros and puts those zeros into the memfd (README,
 * "What must not share a region's memfd").
 * For such converted memory the caller believes it owns private anonymous
 * pages, so MADV_DONTNEED/MADV_FREE (balloon inflation) must free them:
 * the shim punches the memfd first, then lets the madvise raise the REMOVE
 * event that drops the daemon's stored copies. QEMU's memfd backend punches
 * by itself.
 *
 * Failure policy: a program must never run on memory nobody serves. If the
 * first registration fails the process exits with the reason; once some
 * memory is served (a running VM) a refused later mapping fails with ENOMEM,
 * so a QMP object-add reports an error and the VM keeps running.
 *
 * Environment: see preload.h. Only the interposed symbols are exported
 * (preload.map); everything else, libfluidmem included, is hidden. */
#include "client/preload.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "client/fluidmem.h"
#include "client/maps.h"
#include "client/say.h"
#include "proto/proto.h"

#define SHIM_API __attribute__((visibility("default")))
#define PAGE ((size_t)FM_PAGE_SIZE)   /* size_t, so ~(PAGE - 1) masks 64-bit lengths */
#define MAX_TRACKED 64       /* RAM + DIMM slots of one VM, with room to spare */
#define MAX_FOREIGN 64       /* a fork child's memory of its parents' memfds */
#define MAX_MATCH 512

typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);
typedef int (*munmap_fn)(void *, size_t);
typedef int (*madvise_fn)(void *, size_t, int);

/* A slot is free (!used), reserved (used, no region yet: being registered)
 * or live (region set). claimed: a thread is unregistering it. */
struct tracked {
	uintptr_t addr;
	size_t size;
	struct fm_region *region;
	int memfd;          /* ours for converted memory, else -1 (the caller's) */
	dev_t dev;          /* the memfd's inode: one mapping per served memfd */
	ino_t ino;
	bool used, claimed;
};

struct inode_id {
	dev_t dev;
	ino_t ino;
};

/* Two locks, taken in this order: reg is held across one exchange with the
 * daemon (which may take up to the client timeout), tab only for table
 * lookups and updates. So a munmap or madvise that concerns no served
 * memory never waits behind a slow reply. */
static struct {
	pthread_mutex_t reg;        /* shim.client */
	pthread_mutex_t tab;        /* t[], foreign[] */
	bool ready;         /* the constructor ran */
	bool debug;
	bool any_registered;   /* decides exit vs ENOMEM on failure */
	int nused;          /* used slots + foreign inodes: 0 lets calls skip the table */
	uint64_t min_size;
	char match[MAX_MATCH];
	char name[FM_REGION_NAME_MAX];   /* FLUIDMEM_NAME: every region's name (a VM's) */
	mmap_fn real_mmap;
	munmap_fn real_munmap;
	madvise_fn real_madvise;
	struct fm_client *client;
	struct tracked t[MAX_TRACKED];
	struct inode_id foreign[MAX_FOREIGN];   /* served by an ancestor: never map */
	int nforeign;
} shim = { .reg = PTHREAD_MUTEX_INITIALIZER, .tab = PTHREAD_MUTEX_INITIALIZER,
	   .min_size = FM_PRELOAD_DEFAULT_MIN_SIZE };

/* Set while the shim is at work on this thread: whatever libc or libfluidmem
 * maps meanwhile (malloc may mmap) goes straight through. initial-exec: no
 * allocation on first access (the shim is loaded at start-up). */
static __thread int shim_busy __attribute__((tls_model("initial-exec")));

/* stdio may allocate; say.h writes one stack buffer. */
#define say(...) fmc_say("fluidmem-preload", __VA_ARGS__)

#define DBG(...)                          \
	do {                              \
		if (shim.debug)           \
			say(__VA_ARGS__); \
	} while (0)

/* Before dlsym has answered (or from inside it) use the system calls. */
static void *do_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
	if (shim.real_mmap)
		return shim.real_mmap(a, len, prot, flags, fd, off);
	return (void *)syscall(SYS_mmap, a, len, prot, flags, fd, off);
}

static int do_munmap(void *a, size_t len)
{
	return shim.real_munmap ? shim.real_munmap(a, len) : (int)syscall(SYS_munmap, a, len);
}

static int do_madvise(void *a, size_t len, int advice)
{
	return shim.real_madvise ? shim.real_madvise(a, len, advice)
				 : (int)syscall(SYS_madvise, a, len, advice);
}

static void __attribute__((noreturn)) fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fatal(const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	say("%s", msg);
	say("refusing to run with memory that fluidmemd does not serve; exiting");
	_exit(1);
}

static int nused(void)
{
	return __atomic_load_n(&shim.nused, __ATOMIC_ACQUIRE);
}

static void nused_add(int d)
{
	__atomic_add_fetch(&shim.nused, d, __ATOMIC_RELEASE);
}

/* fork: no registration may be half done and no table update torn in the
 * child, so the forking thread takes both locks (in order) around it. */
static void shim_atfork_prepare(void)
{
	pthread_mutex_lock(&shim.reg);
	pthread_mutex_lock(&shim.tab);
}

static void shim_atfork_parent(void)
{
	pthread_mutex_unlock(&shim.tab);
	pthread_mutex_unlock(&shim.reg);
}

/* The child is not the registered process: it must neither talk on the
 * parent's connection (closed here, silently) nor map the parent's served
 * memfds (their inodes are remembered as foreign; the served mappings
 * themselves are MADV_DONTFORK, so the child has none). */
static void shim_atfork_child(void)
{
	for (int i = 0; i < MAX_TRACKED; i++) {
		struct tracked *t = &shim.t[i];

		if (t->used && shim.nforeign < MAX_FOREIGN)
			shim.foreign[shim.nforeign++] = (struct inode_id){ t->dev, t->ino };
		if (t->memfd >= 0)
			close(t->memfd);
		*t = (struct tracked){ .memfd = -1 };
	}
	fm_client_forget(shim.client);
	shim.client = NULL;
	shim.any_registered = false;
	shim.nused = shim.nforeign;
	pthread_mutex_unlock(&shim.tab);
	pthread_mutex_unlock(&shim.reg);
}

__attribute__((constructor)) static void shim_init(void)
{
	const char *v;
	uint64_t sz;

	shim_busy = 1;
	shim.real_mmap = (mmap_fn)dlsym(RTLD_NEXT, "mmap");
	shim.real_munmap = (munmap_fn)dlsym(RTLD_NEXT, "munmap");
	shim.real_madvise = (madvise_fn)dlsym(RTLD_NEXT, "madvise");
	v = getenv("FLUIDMEM_DEBUG");
	shim.debug = v && *v && strcmp(v, "0") != 0;
	v = getenv("FLUIDMEM_MIN_SIZE");
	if (v && *v) {
		if (fm_parse_size(v, &sz) < 0)
			fatal("FLUIDMEM_MIN_SIZE=\"%s\" is not a size (examples: 64M, 1G, 1048576)", v);
		shim.min_size = sz < PAGE ? PAGE : sz;
	}
	v = getenv("FLUIDMEM_TIMEOUT");
	if (v && *v) {
		char *end;
		unsigned long s = strtoul(v, &end, 10);

		if (*end || s < 1 || s > FM_MAX_TIMEOUT_S)
			fatal("FLUIDMEM_TIMEOUT=\"%s\" is not a number of seconds from 1 to %d", v,
			      FM_MAX_TIMEOUT_S);
	}
	v = getenv("FLUIDMEM_MATCH");
	if (v && strlen(v) >= sizeof(shim.match))
		fatal("FLUIDMEM_MATCH is longer than %zu bytes", sizeof(shim.match) - 1);
	snprintf(shim.match, sizeof(shim.match), "%s", v ? v : "");
	/* Longer names are cut: the protocol keeps 63 bytes. */
	v = getenv("FLUIDMEM_NAME");
	snprintf(shim.name, sizeof(shim.name), "%s", v ? v : "");
	for (int i = 0; i < MAX_TRACKED; i++)
		shim.t[i].memfd = -1;
	DBG("loaded: min size %llu bytes, match \"%s\", socket %s",
	    (unsigned long long)shim.min_size, shim.match[0] ? shim.match : "(all)",
	    getenv("FLUIDMEM_SOCKET") ? getenv("FLUIDMEM_SOCKET") : FM_DEFAULT_REGISTER_SOCKET);
	pthread_atfork(shim_atfork_prepare, shim_atfork_parent, shim_atfork_child);
	shim.ready = true;
	shim_busy = 0;
}

/* Is `name` selected by FLUIDMEM_MATCH? Empty list selects everything. */
static bool name_matches(const char *name)
{
	const char *p = shim.match;

	if (!*p)
		return true;
	while (*p) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		char item[MAX_MATCH];

		memcpy(item, p, n);
		item[n] = '\0';
		if (n && strstr(name, item))
			return true;
		p += n + (end ? 1 : 0);
	}
	return false;
}

/* The memfd name behind fd ("memory-backend-memfd"), or false when fd is
 * not a memfd. Hugetlb memfds are skipped: the daemon serves 4 KiB pages. */
static bool memfd_name(int fd, char *name, size_t cap)
{
	char path[64], link[256];
	ssize_t n;
	struct statfs sf;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 7)
		return false;
	link[n] = '\0';
	if (strncmp(link, "/memfd:", 7) != 0)
		return false;
	if (fstatfs(fd, &sf) == 0 && sf.f_type == HUGETLBFS_MAGIC)
		return false;
	if (n > 17 && strcmp(link + n - 10, " (deleted)") == 0)
		link[n - 10] = '\0';
	n = (ssize_t)strlen(link + 7);
	if ((size_t)n >= cap)
		n = (ssize_t)cap - 1;   /* the protocol keeps 63 bytes of a name */
	memcpy(name, link + 7, (size_t)n);
	name[n] = '\0';
	return true;
}

/* ---- what /proc/self/maps says about a range ---- */

struct remain_q {
	const struct tracked *t;
	uintptr_t a, end;     /* the range going away */
	bool remains;
};

static bool remain_fn(const struct fm_vma *v, void *arg)
{
	struct remain_q *q = arg;
	uintptr_t lo = v->lo > q->t->addr ? v->lo : q->t->addr;
	uintptr_t hi = v->hi < q->t->addr + q->t->size ? v->hi : q->t->addr + q->t->size;

	if (v->lo >= q->t->addr + q->t->size)
		return false;
	if (lo >= hi || v->ino != q->t->ino || v->dev_major != major(q->t->dev) ||
	    v->dev_minor != minor(q->t->dev))
		return true;
	/* part of the served mapping: does any of it lie outside [a, end)? */
	if (lo < q->a || hi > q->end)
		q->remains = true;
	return !q->remains;
}

/* Would any of t's mapping survive [a, a+len) going away? A region is
 * unregistered when its last page goes, whether by one munmap or several,
 * so that a partial munmap neither leaks its slot nor frees it early. */
static bool survives(const struct tracked *t, uintptr_t a, size_t len)
{
	struct remain_q q = { t, a, a + len, false };

	if (a <= t->addr && a + len >= t->addr + t->size)
		return false;
	if (a + len <= t->addr || a >= t->addr + t->size)
		return true;
	if (fm_maps_walk(remain_fn, &q) < 0)
		return true;   /* cannot tell: keep serving it */
	return q.remains;
}

struct resv_q {
	uintptr_t next, end;
	bool ok;
};

static bool resv_fn(const struct fm_vma *v, void *arg)
{
	struct resv_q *q = arg;

	if (v->hi <= q->next)
		return true;
	if (v->lo > q->next || v->ino != 0 || strcmp(v->perms, "---p") != 0)
		return false;   /* a hole or something else: not one reservation */
	q->next = v->hi;
	if (q->next >= q->end) {
		q->ok = true;
		return false;
	}
	return true;
}

/* Is [a, a+len) wholly PROT_NONE private anonymous memory: a reservation
 * such as QEMU makes before placing guest RAM into it? */
static bool is_reservation(uintptr_t a, size_t len)
{
	struct resv_q q = { a, a + len, false };

	return fm_maps_walk(resv_fn, &q) == 0 && q.ok;
}

/* ---- the table (shim.tab held) ---- */

static struct tracked *slot_of_inode(dev_t dev, ino_t ino)
{
	for (int i = 0; i < MAX_TRACKED; i++)
		if (shim.t[i].used && shim.t[i].dev == dev && shim.t[i].ino == ino)
			return &shim.t[i];
	return NULL;
}

static bool inode_foreign(dev_t dev, ino_t ino)
{
	for (int i = 0; i < shim.nforeign; i++)
		if (shim.foreign[i].dev == dev && shim.foreign[i].ino == ino)
			return true;
	return false;
}

/* Claim every live region that [a, a+len) going away would leave with no
 * mapping; the caller unregisters them (unclaimed_release). Returns how
 * many, their slots in out[]. */
static int claim_emptied(uintptr_t a, size_t len, struct tracked **out)
{
	int n = 0;

	for (int i = 0; i < MAX_TRACKED; i++) {
		struct tracked *t = &shim.t[i];

		if (t->region && !t->claimed && !survives(t, a, len)) {
			t->claimed = true;
			out[n++] = t;
		}
	}
	return n;
}

static bool overlaps_any(uintptr_t a, size_t len)
{
	for (int i = 0; i < MAX_TRACKED; i++)
		if (shim.t[i].used && a < shim.t[i].addr + shim.t[i].size &&
		    a + len > shim.t[i].addr)
			return true;
	return false;
}

/* Unregister claimed regions (shim.tab not held) and free their slots. */
static void untrack(struct tracked **ts, int n)
{
	for (int i = 0; i < n; i++) {
		struct tracked *t = ts[i];
		int rc;

		pthread_mutex_lock(&shim.reg);
		rc = fm_region_destroy(t->region);
		pthread_mutex_unlock(&shim.reg);
		if (rc < 0)
			say("unregistering %zu MiB at %#lx: %s", t->size >> 20, (unsigned long)t->addr,
			    strerror(-rc));
		else
			DBG("unregistered %zu MiB at %#lx", t->size >> 20, (unsigned long)t->addr);
		pthread_mutex_lock(&shim.tab);
		if (t->memfd >= 0)
			close(t->memfd);
		*t = (struct tracked){ .memfd = -1 };
		nused_add(-1);
		pthread_mutex_unlock(&shim.tab);
	}
}

/* A range that lost its registration but could not be unmapped: make it
 * fault rather than read zeros. */
static void fence(uintptr_t a, size_t len)
{
	if (mprotect((void *)a, len, PROT_NONE) < 0)
		say("cannot fence %zu MiB at %#lx: %s; it is no longer served and reads "
		    "evicted pages as zeros", len >> 20, (unsigned long)a, strerror(errno));
}

/* Register [p, p+size) mapped from memfd (offset 0). On failure: exit if
 * nothing is served yet, else return -1 with errno ENOMEM; the caller unmaps. */
static int track(void *p, size_t size, int memfd, bool converted, const char *name)
{
	struct tracked *t = NULL;
	struct fm_region *region;
	struct stat st;
	int err;

	if (fstat(memfd, &st) < 0) {
		err = errno;
		goto fail_local;
	}
	/* Reserve the slot (with its inode) first: a concurrent mmap of the
	 * same memfd is refused while we talk to the daemon. */
	pthread_mutex_lock(&shim.tab);
	if (slot_of_inode(st.st_dev, st.st_ino)) {
		/* Mapped twice at once by two threads: serve the first only. */
		pthread_mutex_unlock(&shim.tab);
		say("memfd \"%s\" is being served at another address; failing this mmap with EBUSY",
		    name);
		errno = EBUSY;
		return -1;
	}
	for (int i = 0; i < MAX_TRACKED && !t; i++)
		if (!shim.t[i].used)
			t = &shim.t[i];
	if (t) {
		*t = (struct tracked){ .addr = (uintptr_t)p, .size = size, .memfd = -1,
				       .dev = st.st_dev, .ino = st.st_ino, .used = true };
		nused_add(1);
	}
	pthread_mutex_unlock(&shim.tab);
	if (!t) {
		err = ENOSPC;
		goto fail_local;
	}
	pthread_mutex_lock(&shim.reg);
	if (!shim.client) {
		shim.client = fm_connect(NULL);
		if (!shim.client) {
			const char *sock = getenv("FLUIDMEM_SOCKET");

			err = errno;
			pthread_mutex_unlock(&shim.reg);
			if (__atomic_load_n(&shim.any_registered, __ATOMIC_RELAXED))
				goto fail_slot;
			fatal("cannot reach fluidmemd at %s: %s (is it running? see fluidmem-run --help)",
			      sock && *sock ? sock : FM_DEFAULT_REGISTER_SOCKET, strerror(err));
		}
	}
	region = fm_region_register(shim.client, p, size, memfd, shim.name[0] ? shim.name : name);
	if (!region) {
		char why[192];

		err = errno;
		snprintf(why, sizeof(why), "%s", fm_client_error(shim.client));
		pthread_mutex_unlock(&shim.reg);
		if (!__atomic_load_n(&shim.any_registered, __ATOMIC_RELAXED))
			fatal("fluidmemd did not take %zu MiB of \"%s\": %s", size >> 20, name, why);
		say("fluidmemd did not take %zu MiB of \"%s\": %s (%s); failing this mmap with ENOMEM",
		    size >> 20, name, why, strerror(err));
		err = ENOMEM;
		goto release;
	}
	pthread_mutex_unlock(&shim.reg);
	pthread_mutex_lock(&shim.tab);
	t->region = region;
	t->memfd = converted ? memfd : -1;
	pthread_mutex_unlock(&shim.tab);
	__atomic_store_n(&shim.any_registered, true, __ATOMIC_RELAXED);
	DBG("serving %zu MiB at %p (%s \"%s\") as region %llu", size >> 20, p,
	    converted ? "anonymous, now a memfd" : "memfd", name,
	    (unsigned long long)fm_region_id(region));
	return 0;
fail_slot:
	say("cannot take %zu MiB of \"%s\": %s; failing this mmap with ENOMEM", size >> 20, name,
	    strerror(err));
	err = ENOMEM;
release:
	pthread_mutex_lock(&shim.tab);
	*t = (struct tracked){ .memfd = -1 };
	nused_add(-1);
	pthread_mutex_unlock(&shim.tab);
	errno = err;
	return -1;
fail_local:
	if (!__atomic_load_n(&shim.any_registered, __ATOMIC_RELAXED))
		fatal("cannot take %zu MiB of \"%s\": %s", size >> 20, name, strerror(err));
	say("cannot take %zu MiB of \"%s\": %s; failing this mmap with ENOMEM", size >> 20, name,
	    strerror(err));
	errno = ENOMEM;
	return -1;
}

static bool anon_candidate(void *addr, size_t len, int prot, int flags)
{
	return (flags & MAP_ANONYMOUS) && (flags & MAP_TYPE) == MAP_PRIVATE &&
	       (flags & MAP_FIXED) &&   /* placed, as QEMU places RAM into a reservation */
	       !(flags & (MAP_HUGETLB | MAP_GROWSDOWN | MAP_STACK)) && (prot & PROT_WRITE) &&
	       !(prot & PROT_EXEC) &&   /* TCG's code buffer is big, private and executable */
	       len >= shim.min_size && is_reservation((uintptr_t)addr, len);
}

static bool memfd_candidate(size_t len, int prot, int flags, int fd, off_t off)
{
	int type = flags & MAP_TYPE;

	return fd >= 0 && off == 0 && (type == MAP_SHARED || type == MAP_SHARED_VALIDATE) &&
	       (prot & PROT_WRITE) && len >= shim.min_size;
}

/* Undo a mapping fluidmemd did not take. MAP_FIXED replaced part of the
 * caller's reservation: leave it reserved (PROT_NONE), as QEMU will unmap the
 * whole reservation itself. errno is kept (track's). */
static void unmap_refused(void *p, size_t size, int flags)
{
	int err = errno;

	if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE))
		do_mmap(p, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
			-1, 0);
	else
		do_munmap(p, size);
	errno = err;
}

/* The real mmap, for a call that may replace served memory. A served
 * region must stay registered until its replacement exists: if the mmap
 * fails (EEXIST for MAP_FIXED_NOREPLACE, EBADF, EACCES, ...), the old
 * mapping stays, and it must stay served or its evicted pages read as
 * zeros. So the new mapping is made at an address of the kernel's choice
 * first, the regions it will replace are unregistered, and it is moved into
 * place. Unregistering first also keeps the replacement from raising an
 * UNMAP event that the daemon would have to read before mmap returns. */
static void *place(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	struct tracked *gone[MAX_TRACKED];
	size_t size = (len + PAGE - 1) & ~(PAGE - 1);
	int n = 0, err;
	void *scratch, *p;

	/* NOREPLACE never replaces anything, so it never unregisters. */
	if (!(flags & MAP_FIXED) || (flags & MAP_FIXED_NOREPLACE) || (uintptr_t)addr % PAGE ||
	    len == 0 || !nused())
		return do_mmap(addr, len, prot, flags, fd, off);
	pthread_mutex_lock(&shim.tab);
	n = claim_emptied((uintptr_t)addr, size, gone);
	pthread_mutex_unlock(&shim.tab);
	if (n == 0)
		return do_mmap(addr, len, prot, flags, fd, off);
	if (flags & (MAP_HUGETLB | MAP_GROWSDOWN)) {
		/* Cannot be moved into place: the old order, with its window. */
		untrack(gone, n);
		return do_mmap(addr, len, prot, flags, fd, off);
	}
	/* Nothing may populate the scratch copy: for a served memfd that would
	 * be exactly the unserved reading this function exists to avoid. */
	scratch = do_mmap(NULL, size, prot, flags & ~(MAP_FIXED | MAP_POPULATE | MAP_LOCKED), fd, off);
	if (scratch == MAP_FAILED) {
		err = errno;
		pthread_mutex_lock(&shim.tab);
		for (int i = 0; i < n; i++)
			gone[i]->claimed = false;
		pthread_mutex_unlock(&shim.tab);
		DBG("mmap over served memory at %p failed (%s): it stays served", addr, strerror(err));
		errno = err;
		return MAP_FAILED;
	}
	untrack(gone, n);
	p = (void *)syscall(SYS_mremap, scratch, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, addr);
	if (p == MAP_FAILED) {
		err = errno;
		do_munmap(scratch, size);
		say("moving a new mapping over served memory at %p failed: %s", addr, strerror(err));
		fence((uintptr_t)addr, size);
		errno = err;
		return MAP_FAILED;
	}
	if (flags & MAP_LOCKED)
		mlock(p, size);
	return p;
}

/* Anonymous private -> our memfd, shared, same address and protection. */
static void *map_converted(void *addr, size_t len, int prot, int flags)
{
	size_t size = (len + PAGE - 1) & ~(PAGE - 1);
	int memfd, keep = flags & ~(MAP_TYPE | MAP_ANONYMOUS | MAP_POPULATE);
	void *p;

	memfd = memfd_create("fluidmem-anon", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (memfd < 0 || ftruncate(memfd, (off_t)size) < 0 ||
	    fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0) {
		int err = errno;

		if (memfd >= 0)
			close(memfd);
		if (!__atomic_load_n(&shim.any_registered, __ATOMIC_RELAXED))
			fatal("memfd for %zu MiB: %s", size >> 20, strerror(err));
		say("memfd for %zu MiB: %s; failing this mmap with ENOMEM", size >> 20, strerror(err));
		errno = ENOMEM;
		return MAP_FAILED;
	}
	p = place(addr, size, prot, keep | MAP_SHARED, memfd, 0);
	if (p == MAP_FAILED) {
		int err = errno;

		close(memfd);
		errno = err;
		return MAP_FAILED;
	}
	/* (fm_region_register makes it MADV_DONTFORK.) */
	if (track(p, size, memfd, true, "anon") < 0) {
		int err = errno;

		unmap_refused(p, size, flags);
		close(memfd);
		errno = err;
		return MAP_FAILED;
	}
	return p;
}

/* Would mapping fd at [addr, addr+len) make a second mapping of a memfd
 * that is served here (or was served by a parent)? Only a MAP_FIXED that
 * replaces all that is left of the served mapping is not one. */
static bool second_mapping(void *addr, size_t len, int flags, int fd, char *name, size_t cap)
{
	struct tracked *t;
	struct stat st;
	bool bad = false;

	if (fstat(fd, &st) < 0)
		return false;   /* the kernel will say EBADF */
	pthread_mutex_lock(&shim.tab);
	t = slot_of_inode(st.st_dev, st.st_ino);
	if (t)
		bad = !(flags & MAP_FIXED) || (flags & MAP_FIXED_NOREPLACE) || !t->region ||
		      survives(t, (uintptr_t)addr, len);
	else
		bad = inode_foreign(st.st_dev, st.st_ino);
	pthread_mutex_unlock(&shim.tab);
	if (bad && !memfd_name(fd, name, cap))
		snprintf(name, cap, "?");
	return bad;
}

static void *shim_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	char name[FM_REGION_NAME_MAX];
	void *p;

	if (fd >= 0 && !(flags & MAP_ANONYMOUS) && nused() &&
	    second_mapping(addr, len, flags, fd, name, sizeof(name))) {
		say("refusing a second mapping of memfd \"%s\", which fluidmemd serves: reading "
		    "through it would replace evicted pages with zeros (EBUSY)",
		    name);
		errno = EBUSY;
		return MAP_FAILED;
	}
	if (len < shim.min_size)
		return place(addr, len, prot, flags, fd, off);
	if ((flags & MAP_ANONYMOUS) && (flags & MAP_TYPE) == MAP_PRIVATE &&
	    anon_candidate(addr, len, prot, flags)) {
		if (!name_matches("anon")) {
			DBG("not taking %zu MiB anonymous mapping: FLUIDMEM_MATCH has no \"anon\"",
			    len >> 20);
			return place(addr, len, prot, flags, fd, off);
		}
		return map_converted(addr, len, prot, flags);
	}
	if (!memfd_candidate(len, prot, flags, fd, off) || !memfd_name(fd, name, sizeof(name)))
		return place(addr, len, prot, flags, fd, off);
	if (!name_matches(name)) {
		DBG("not taking %zu MiB of memfd \"%s\": not in FLUIDMEM_MATCH", len >> 20, name);
		return place(addr, len, prot, flags, fd, off);
	}
	p = place(addr, len, prot, flags, fd, off);
	if (p == MAP_FAILED)
		return p;
	{
		struct stat st;
		size_t size = (len + PAGE - 1) & ~(PAGE - 1);

		if (fstat(fd, &st) < 0 || (uint64_t)st.st_size < size) {
			/* Past the end of the file it would SIGBUS anyway. */
			DBG("not taking memfd \"%s\": the mapping is longer than the file", name);
			return p;
		}
		if (track(p, size, fd, false, name) < 0) {
			unmap_refused(p, size, flags);
			return MAP_FAILED;
		}
	}
	return p;
}

SHIM_API void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p;
	int err;

	/* A small mapping of no file is neither taken nor, unless MAP_FIXED,
	 * can it replace served memory. */
	if (shim_busy || !shim.ready ||
	    (len < shim.min_size && (!nused() || (fd < 0 && !(flags & MAP_FIXED)))))
		return do_mmap(addr, len, prot, flags, fd, off);
	shim_busy = 1;
	p = shim_mmap(addr, len, prot, flags, fd, off);
	err = errno;
	shim_busy = 0;
	errno = err;
	return p;
}

/* off_t is 64 bits on every target this builds for; mmap64 is mmap. */
_Static_assert(sizeof(off_t) == 8, "mmap64 forwards to mmap");
SHIM_API void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return mmap(addr, len, prot, flags, fd, off);
}

/* A region goes when its last mapped page goes: unregistered before that
 * munmap (no UNMAP event to wait for, and it works with a dead daemon).
 * A munmap that leaves some of it is partial: the kernel's UNMAP event
 * tells the daemon which part went, and the region stays. */
SHIM_API int munmap(void *addr, size_t len)
{
	struct tracked *gone[MAX_TRACKED];
	int n, rc, err;

	if (shim_busy || !nused() || (uintptr_t)addr % PAGE || len == 0)
		return do_munmap(addr, len);   /* the kernel judges bad arguments */
	len = (len + PAGE - 1) & ~(PAGE - 1);
	shim_busy = 1;
	pthread_mutex_lock(&shim.tab);
	n = overlaps_any((uintptr_t)addr, len) ? claim_emptied((uintptr_t)addr, len, gone) : 0;
	pthread_mutex_unlock(&shim.tab);
	untrack(gone, n);
	rc = do_munmap(addr, len);
	err = errno;
	if (rc < 0 && n > 0) {
		say("munmap of unregistered memory at %p failed: %s", addr, strerror(err));
		fence((uintptr_t)addr, len);
	}
	shim_busy = 0;
	errno = err;
	return rc;
}

/* Converted memory is private anonymous memory to the caller. Advice that
 * drops such pages (DONTNEED, FREE) must free them, not leave them in the
 * memfd: punch first, so that on the REMOVE event the madvise raises the
 * daemon finds them gone and frees its copies too. MADV_DOFORK would give
 * a fork child an unserved mapping: served ranges keep DONTFORK. */
SHIM_API int madvise(void *addr, size_t len, int advice)
{
	uintptr_t a = (uintptr_t)addr, end = a + len;
	bool converted = false, served = false;

	if (shim_busy || (advice != MADV_DONTNEED && advice != MADV_FREE && advice != MADV_DOFORK) ||
	    !nused() || len == 0 || a % PAGE || end < a)
		return do_madvise(addr, len, advice);   /* the kernel judges bad arguments */
	end = (end + PAGE - 1) & ~(PAGE - 1);
	shim_busy = 1;
	pthread_mutex_lock(&shim.tab);
	for (int i = 0; i < MAX_TRACKED; i++) {
		struct tracked *t = &shim.t[i];
		uintptr_t lo, hi;

		if (!t->used || end <= t->addr || a >= t->addr + t->size)
			continue;
		served = true;
		if (!t->region || t->memfd < 0 || advice == MADV_DOFORK)
			continue;
		lo = a > t->addr ? a : t->addr;
		hi = end < t->addr + t->size ? end : t->addr + t->size;
		if (fallocate(t->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)(lo - t->addr), (off_t)(hi - lo)) < 0)
			say("punching %zu KiB of converted memory: %s", (size_t)(hi - lo) >> 10,
			    strerror(errno));
		converted = true;
	}
	pthread_mutex_unlock(&shim.tab);
	shim_busy = 0;
	if (advice == MADV_DOFORK && served) {
		say("ignoring MADV_DOFORK on served memory at %p: a fork child's mapping would "
		    "not be served",
		    addr);
		return 0;
	}
	/* MADV_FREE is for private memory only: EINVAL on the shared mapping. */
	return do_madvise(addr, len, converted ? MADV_DONTNEED : advice);
}

/* Moving or resizing served memory would leave it unregistered (we do not
 * ask for remap events) or, grown, past the end of its memfd: refuse with
 * ENOMEM, which callers such as realloc answer with a copy. */
SHIM_API void *mremap(void *old, size_t old_size, size_t new_size, int flags, ...)
{
	uintptr_t a = (uintptr_t)old;
	void *new_addr = NULL;
	bool ours = false;
	va_list ap;

	if (flags & MREMAP_FIXED) {
		va_start(ap, flags);
		new_addr = va_arg(ap, void *);
		va_end(ap);
	}
	if (!shim_busy && nused()) {
		pthread_mutex_lock(&shim.tab);
		ours = overlaps_any(a, old_size) ||
		       ((flags & MREMAP_FIXED) && overlaps_any((uintptr_t)new_addr, new_size));
		pthread_mutex_unlock(&shim.tab);
	}
	if (ours) {
		DBG("refusing mremap of served memory at %p", old);
		errno = ENOMEM;
		return MAP_FAILED;
	}
	return (void *)syscall(SYS_mremap, old, old_size, new_size, flags, new_addr);
}
