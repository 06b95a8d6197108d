/* libfluidmem-preload: put an unmodified program's big allocations (QEMU's
 * guest RAM and hot-plugged DIMMs) on fluidmemd.
 *
 * Interposes mmap/mmap64/munmap/madvise/mremap. A large mapping is registered with
 * the daemon inside the mmap call, before the caller can touch it:
 *  - MAP_SHARED of a memfd (memory-backend-memfd) is registered as it is;
 *  - MAP_PRIVATE|MAP_ANONYMOUS read-write memory (default -m RAM,
 *    memory-backend-ram) is replaced by a memfd mapped MAP_SHARED at the same
 *    address, since the daemon can only evict memfd-backed pages (DESIGN.md).
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
#include <unistd.h>

#include "client/fluidmem.h"

#define SHIM_API __attribute__((visibility("default")))
#define PAGE 4096ul
#define MAX_TRACKED 64       /* RAM + DIMM slots of one VM, with room to spare */
#define MAX_MATCH 512
#define NAME_LEN 64          /* the registration protocol's name field */

typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);
typedef int (*munmap_fn)(void *, size_t);
typedef int (*madvise_fn)(void *, size_t, int);

struct tracked {
	uintptr_t addr;
	size_t size;
	struct fm_region *region;
	int memfd;          /* ours for converted memory, else -1 (the caller's) */
	dev_t dev;          /* the memfd's inode: one registration per memfd */
	ino_t ino;
};

static struct {
	pthread_mutex_t lock;
	bool ready;         /* the constructor ran */
	bool debug;
	bool any_registered;   /* decides exit vs ENOMEM on failure */
	uint64_t min_size;
	char match[MAX_MATCH];
	mmap_fn real_mmap;
	munmap_fn real_munmap;
	madvise_fn real_madvise;
	struct fm_client *client;
	struct tracked t[MAX_TRACKED];
} shim = { .lock = PTHREAD_MUTEX_INITIALIZER, .min_size = FM_PRELOAD_DEFAULT_MIN_SIZE };

/* Set while the shim is at work on this thread: whatever libc or libfluidmem
 * maps meanwhile (malloc may mmap) goes straight through. initial-exec: no
 * allocation on first access (the shim is loaded at start-up). */
static __thread int shim_busy __attribute__((tls_model("initial-exec")));

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* stdio may allocate; one write(2) of a stack buffer may not. */
static void say(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n = snprintf(line, sizeof(line), "fluidmem-preload[%d]: ", (int)getpid());

	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (write(2, line, (size_t)n) < 0) {
		/* nowhere else to say it */
	}
}

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

/* A forked child must not unregister its parent's memory through the
 * inherited connection: it forgets both (guest RAM is MADV_DONTFORK). */
static void shim_atfork_child(void)
{
	shim.client = NULL;
	shim.any_registered = false;
	for (int i = 0; i < MAX_TRACKED; i++)
		shim.t[i] = (struct tracked){ .memfd = -1 };
	pthread_mutex_init(&shim.lock, NULL);
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
	v = getenv("FLUIDMEM_MATCH");
	if (v && strlen(v) >= sizeof(shim.match))
		fatal("FLUIDMEM_MATCH is longer than %zu bytes", sizeof(shim.match) - 1);
	snprintf(shim.match, sizeof(shim.match), "%s", v ? v : "");
	for (int i = 0; i < MAX_TRACKED; i++)
		shim.t[i].memfd = -1;
	DBG("loaded: min size %llu bytes, match \"%s\", socket %s",
	    (unsigned long long)shim.min_size, shim.match[0] ? shim.match : "(all)",
	    getenv("FLUIDMEM_SOCKET") ? getenv("FLUIDMEM_SOCKET") : FM_DEFAULT_REGISTER_SOCKET);
	pthread_atfork(NULL, NULL, shim_atfork_child);
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

static struct tracked *slot_free(void)
{
	for (int i = 0; i < MAX_TRACKED; i++)
		if (!shim.t[i].region)
			return &shim.t[i];
	return NULL;
}

static struct tracked *slot_of_inode(dev_t dev, ino_t ino)
{
	for (int i = 0; i < MAX_TRACKED; i++)
		if (shim.t[i].region && shim.t[i].dev == dev && shim.t[i].ino == ino)
			return &shim.t[i];
	return NULL;
}

static void untrack(struct tracked *t)
{
	int rc = fm_region_destroy(t->region);

	if (rc < 0)
		say("unregistering %zu MiB at %#lx: %s", t->size >> 20, (unsigned long)t->addr,
		    strerror(-rc));
	else
		DBG("unregistered %zu MiB at %#lx", t->size >> 20, (unsigned long)t->addr);
	if (t->memfd >= 0)
		close(t->memfd);
	*t = (struct tracked){ .memfd = -1 };
}

/* The caller is replacing or unmapping [a, a+len): drop every registration
 * it covers whole before the mapping goes, so the range is unregistered and
 * the munmap raises no event. Partly covered regions stay registered; the
 * kernel's UNMAP event tells the daemon about the part that went. */
static void untrack_covered(uintptr_t a, size_t len)
{
	for (int i = 0; i < MAX_TRACKED; i++) {
		struct tracked *t = &shim.t[i];

		if (t->region && t->addr >= a && t->addr + t->size <= a + len)
			untrack(t);
	}
}

/* Register [p, p+size) mapped from memfd (offset 0). On failure: exit if
 * nothing is served yet, else return -1 with errno ENOMEM; the caller unmaps. */
static int track(void *p, size_t size, int memfd, bool converted, const char *name)
{
	struct tracked *t = slot_free();
	struct stat st;
	int err;

	if (fstat(memfd, &st) < 0) {
		err = errno;
		goto fail_local;
	}
	if (slot_of_inode(st.st_dev, st.st_ino)) {
		/* Two registrations would evict the same memfd pages twice. */
		say("memfd \"%s\" is already served at another address; this mapping of it is "
		    "not, and reads holes there as zeros",
		    name);
		return 0;
	}
	if (!t) {
		err = ENOSPC;
		goto fail_local;
	}
	if (!shim.client) {
		shim.client = fm_connect(NULL);
		if (!shim.client) {
			const char *sock = getenv("FLUIDMEM_SOCKET");

			err = errno;
			if (shim.any_registered)
				goto fail_local;
			fatal("cannot reach fluidmemd at %s: %s (is it running? see fluidmem-run --help)",
			      sock && *sock ? sock : FM_DEFAULT_REGISTER_SOCKET, strerror(err));
		}
	}
	t->region = fm_region_register(shim.client, p, size, memfd, name);
	if (!t->region) {
		if (!shim.any_registered)
			fatal("fluidmemd did not take %zu MiB of \"%s\": %s", size >> 20, name,
			      fm_client_error(shim.client));
		say("fluidmemd did not take %zu MiB of \"%s\": %s; failing this mmap with ENOMEM",
		    size >> 20, name, fm_client_error(shim.client));
		errno = ENOMEM;
		return -1;
	}
	t->addr = (uintptr_t)p;
	t->size = size;
	t->memfd = converted ? memfd : -1;
	t->dev = st.st_dev;
	t->ino = st.st_ino;
	__atomic_store_n(&shim.any_registered, true, __ATOMIC_RELAXED);
	DBG("serving %zu MiB at %p (%s \"%s\") as region %llu", size >> 20, p,
	    converted ? "anonymous, now a memfd" : "memfd", name,
	    (unsigned long long)fm_region_id(t->region));
	return 0;
fail_local:
	if (!shim.any_registered)
		fatal("cannot take %zu MiB of \"%s\": %s", size >> 20, name, strerror(err));
	say("cannot take %zu MiB of \"%s\": %s; failing this mmap with ENOMEM", size >> 20, name,
	    strerror(err));
	errno = ENOMEM;
	return -1;
}

static bool anon_candidate(size_t len, int prot, int flags)
{
	return (flags & MAP_ANONYMOUS) && (flags & MAP_TYPE) == MAP_PRIVATE &&
	       !(flags & (MAP_HUGETLB | MAP_GROWSDOWN | MAP_STACK)) && (prot & PROT_WRITE) &&
	       !(prot & PROT_EXEC) &&   /* TCG's code buffer is big, private and executable */
	       len >= shim.min_size;
}

static bool memfd_candidate(size_t len, int prot, int flags, int fd, off_t off)
{
	int type = flags & MAP_TYPE;

	return fd >= 0 && off == 0 && (type == MAP_SHARED || type == MAP_SHARED_VALIDATE) &&
	       (prot & PROT_WRITE) && len >= shim.min_size;
}

/* Undo a mapping fluidmemd did not take. MAP_FIXED replaced part of the
 * caller's reservation: leave it reserved (PROT_NONE), as QEMU will unmap the
 * whole reservation itself. errno stays ENOMEM. */
static void unmap_refused(void *p, size_t size, int flags)
{
	if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE))
		do_mmap(p, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
			-1, 0);
	else
		do_munmap(p, size);
	errno = ENOMEM;
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
		if (!shim.any_registered)
			fatal("memfd for %zu MiB: %s", size >> 20, strerror(err));
		say("memfd for %zu MiB: %s; failing this mmap with ENOMEM", size >> 20, strerror(err));
		errno = ENOMEM;
		return MAP_FAILED;
	}
	p = do_mmap(addr, size, prot, keep | MAP_SHARED, memfd, 0);
	if (p == MAP_FAILED) {
		int err = errno;

		close(memfd);
		errno = err;
		return MAP_FAILED;
	}
	/* A forked child would share these pages without our registration and
	 * read evicted ones as zeros; anonymous memory would have been copied. */
	do_madvise(p, size, MADV_DONTFORK);
	if (track(p, size, memfd, true, "anon") < 0) {
		unmap_refused(p, size, flags);
		close(memfd);
		return MAP_FAILED;
	}
	return p;
}

static void *shim_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	char name[NAME_LEN];
	void *p;

	if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE))
		untrack_covered((uintptr_t)addr, len);
	if (anon_candidate(len, prot, flags)) {
		if (!name_matches("anon")) {
			DBG("not taking %zu MiB anonymous mapping: FLUIDMEM_MATCH has no \"anon\"",
			    len >> 20);
			return do_mmap(addr, len, prot, flags, fd, off);
		}
		return map_converted(addr, len, prot, flags);
	}
	if (!memfd_candidate(len, prot, flags, fd, off) || !memfd_name(fd, name, sizeof(name)))
		return do_mmap(addr, len, prot, flags, fd, off);
	if (!name_matches(name)) {
		DBG("not taking %zu MiB of memfd \"%s\": not in FLUIDMEM_MATCH", len >> 20, name);
		return do_mmap(addr, len, prot, flags, fd, off);
	}
	p = do_mmap(addr, len, prot, flags, fd, off);
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

	/* A small mapping is neither taken nor can it cover a region whole. */
	if (shim_busy || !shim.ready || len < shim.min_size)
		return do_mmap(addr, len, prot, flags, fd, off);
	shim_busy = 1;
	pthread_mutex_lock(&shim.lock);
	p = shim_mmap(addr, len, prot, flags, fd, off);
	pthread_mutex_unlock(&shim.lock);
	shim_busy = 0;
	return p;
}

/* off_t is 64 bits on every target this builds for; mmap64 is mmap. */
_Static_assert(sizeof(off_t) == 8, "mmap64 forwards to mmap");
SHIM_API void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return mmap(addr, len, prot, flags, fd, off);
}

SHIM_API int munmap(void *addr, size_t len)
{
	if (shim_busy || !__atomic_load_n(&shim.any_registered, __ATOMIC_RELAXED) ||
	    len < shim.min_size)
		return do_munmap(addr, len);
	shim_busy = 1;
	pthread_mutex_lock(&shim.lock);
	untrack_covered((uintptr_t)addr, len);
	pthread_mutex_unlock(&shim.lock);
	shim_busy = 0;
	return do_munmap(addr, len);
}

/* Converted memory is private anonymous memory to the caller. Advice that
 * drops such pages (DONTNEED, FREE) must free them, not leave them in the
 * memfd: punch first, so that on the REMOVE event the madvise raises the
 * daemon finds them gone and frees its copies too. */
SHIM_API int madvise(void *addr, size_t len, int advice)
{
	uintptr_t a = (uintptr_t)addr, end = a + len;
	bool converted = false;

	if (shim_busy || (advice != MADV_DONTNEED && advice != MADV_FREE) ||
	    !__atomic_load_n(&shim.any_registered, __ATOMIC_RELAXED) || len == 0 || a % PAGE ||
	    end < a)
		return do_madvise(addr, len, advice);   /* the kernel judges bad arguments */
	end = (end + PAGE - 1) & ~(PAGE - 1);
	shim_busy = 1;
	pthread_mutex_lock(&shim.lock);
	for (int i = 0; i < MAX_TRACKED; i++) {
		struct tracked *t = &shim.t[i];
		uintptr_t lo, hi;

		if (!t->region || t->memfd < 0 || end <= t->addr || a >= t->addr + t->size)
			continue;
		lo = a > t->addr ? a : t->addr;
		hi = end < t->addr + t->size ? end : t->addr + t->size;
		if (fallocate(t->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)(lo - t->addr), (off_t)(hi - lo)) < 0)
			say("punching %zu KiB of converted memory: %s", (size_t)(hi - lo) >> 10,
			    strerror(errno));
		converted = true;
	}
	pthread_mutex_unlock(&shim.lock);
	shim_busy = 0;
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
	if (!shim_busy && __atomic_load_n(&shim.any_registered, __ATOMIC_RELAXED)) {
		pthread_mutex_lock(&shim.lock);
		for (int i = 0; i < MAX_TRACKED && !ours; i++)
			ours = shim.t[i].region && a < shim.t[i].addr + shim.t[i].size &&
			       a + old_size > shim.t[i].addr;
		pthread_mutex_unlock(&shim.lock);
	}
	if (ours) {
		DBG("refusing mremap of served memory at %p", old);
		errno = ENOMEM;
		return MAP_FAILED;
	}
	return (void *)syscall(SYS_mremap, old, old_size, new_size, flags, new_addr);
}
