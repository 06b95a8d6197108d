/* fake-qemu: allocates memory the way QEMU 7.2 does (FACTS.md), so
 * tests/unit/test_preload.c can check the preload shim without booting a VM.
 * Run under fluidmem-run or LD_PRELOAD=libfluidmem-preload.so.
 *
 *   fake-qemu serve MIB   reserve + MAP_FIXED anonymous RAM (default -m), a
 *                         memfd backend, a small and an executable mapping;
 *                         write and verify patterns; discard; unmap. Prints
 *                         "UNMAPPED" and waits for a line on stdin before
 *                         exiting, so the test can look at the daemon.
 *   fake-qemu plug MIB    map MIB of RAM, touch it, print "READY", wait for a
 *                         line, then map a second ("hot-plugged") block and
 *                         report how that went: "PLUG ok" / "PLUG ENOMEM",
 *                         while another thread maps and unmaps unrelated
 *                         memory ("UNRELATED n rounds, slowest t ms").
 *   fake-qemu one MIB     map MIB anonymous and touch it ("TOUCHED").
 *   fake-qemu fork MIB    fill a memfd backend, fork: the child must have no
 *                         mapping of it, no second mapping of the memfd may be
 *                         made, and every page must survive ("FORK done").
 *   fake-qemu replace MIB fill RAM, then mmaps over it that fail (NOREPLACE,
 *                         a bad fd): every page must survive; then one that
 *                         succeeds ("REPLACED", waits for a line).
 *   fake-qemu halves MIB  64 rounds of RAM unmapped in pieces, then one more
 *                         mapping ("HALVES done", waits for a line).
 *   fake-qemu malloc MIB  a plain program: malloc and mmap anonymous memory,
 *                         fork, the child reads and writes its copy
 *                         ("MALLOC done").
 *   fake-qemu forkreg MIB fork while another thread registers memory: each
 *                         child holds no inherited socket and maps its own
 *                         ("FORKREG done").
 * Exit 0 when every check held, 1 otherwise. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096ul
#define ALIGN (2ul << 20)

static int failures;

#define CHECK(cond, ...)                                   \
	do {                                               \
		if (!(cond)) {                             \
			printf("FAIL %s:%d: ", __FILE__, __LINE__); \
			printf(__VA_ARGS__);               \
			printf("\n");                      \
			failures++;                        \
		}                                          \
	} while (0)

/* What /proc/self/maps says backs addr: "" for anonymous memory. */
static void backing(const void *addr, char *out, size_t cap)
{
	char line[512];
	FILE *f = fopen("/proc/self/maps", "r");

	snprintf(out, cap, "?");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		int off = 0;

		if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &off) < 2)
			continue;
		if ((uintptr_t)addr >= lo && (uintptr_t)addr < hi) {
			line[strcspn(line, "\n")] = '\0';
			snprintf(out, cap, "%s", off ? line + off : "");
			break;
		}
	}
	fclose(f);
}

/* QEMU: reserve size + 2 MiB PROT_NONE, then map the RAM inside, aligned. */
static void *reserve(size_t size)
{
	char *r = mmap(NULL, size + ALIGN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);

	if (r == MAP_FAILED)
		return NULL;
	return (void *)(((uintptr_t)r + ALIGN - 1) & ~(ALIGN - 1));
}

static void *qemu_ram_anon(size_t size)
{
	void *at = reserve(size);

	return at ? mmap(at, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS,
			 -1, 0)
		  : MAP_FAILED;
}

static void *qemu_ram_memfd(size_t size, int *fd_out)
{
	void *at = reserve(size);
	int fd = memfd_create("memory-backend-memfd", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	*fd_out = fd;
	if (!at || fd < 0 || ftruncate(fd, (off_t)size) < 0)
		return MAP_FAILED;
	fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
	return mmap(at, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
}

static void fill(uint64_t *w, size_t bytes, uint64_t seed)
{
	for (size_t i = 0; i < bytes / 8; i += PAGE / 8)
		for (size_t j = 0; j < PAGE / 8; j += 8)
			w[i + j] = seed ^ (i + j);
}

/* Pages in [from, to) (byte offsets from w) that lost fill()'s pattern. */
static size_t bad_pages(const uint64_t *w, size_t from, size_t to, uint64_t seed)
{
	size_t bad = 0;

	for (size_t i = from / 8; i < to / 8; i += PAGE / 8)
		for (size_t j = 0; j < PAGE / 8; j += 8)
			if (w[i + j] != (seed ^ (i + j))) {
				bad++;
				break;
			}
	return bad;
}

static bool all_zero(const uint64_t *w, size_t bytes)
{
	for (size_t i = 0; i < bytes / 8; i++)
		if (w[i])
			return false;
	return true;
}

static void wait_line(void)
{
	char buf[64];

	fflush(stdout);
	if (!fgets(buf, sizeof(buf), stdin)) {
		/* EOF: the test is done with us */
	}
}

static int serve(size_t size)
{
	char how[256];
	int fd;
	uint64_t *ram = qemu_ram_anon(size), *mem = qemu_ram_memfd(size / 2, &fd);
	void *small = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void *code = mmap(NULL, size, PROT_READ | PROT_WRITE | PROT_EXEC,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	CHECK(ram != MAP_FAILED && mem != MAP_FAILED, "mmap: %s", strerror(errno));
	if (ram == MAP_FAILED || mem == MAP_FAILED)
		return 1;
	backing(ram, how, sizeof(how));
	printf("anonymous RAM is backed by \"%s\"\n", how);
	CHECK(strstr(how, "/memfd:fluidmem-anon") != NULL, "anonymous RAM not converted: %s", how);
	backing(small, how, sizeof(how));
	CHECK(how[0] == '\0', "a 1 MiB mapping was taken over: %s", how);
	backing(code, how, sizeof(how));
	CHECK(how[0] == '\0', "an executable mapping was taken over: %s", how);
	munmap(small, 1 << 20);
	munmap(code, size);

	/* Several passes over more than the budget: served, evicted, fetched. */
	fill(ram, size, 0x1111);
	fill(mem, size / 2, 0x2222);
	for (int pass = 0; pass < 2; pass++) {
		size_t b1 = bad_pages(ram, 0, size, 0x1111), b2 = bad_pages(mem, 0, size / 2, 0x2222);

		printf("pass %d: %zu bad pages in RAM, %zu in the memfd backend\n", pass, b1, b2);
		CHECK(b1 == 0 && b2 == 0, "pattern lost");
	}

	/* Balloon: MADV_DONTNEED on converted memory must free it and read back
	 * zeros, like the private anonymous memory the program asked for. */
	CHECK(madvise((char *)ram + PAGE, 64 * PAGE, MADV_DONTNEED) == 0, "madvise: %s",
	      strerror(errno));
	CHECK(all_zero((uint64_t *)((char *)ram + PAGE), 64 * PAGE), "discarded pages not zero");
	CHECK(bad_pages(ram, 0, PAGE, 0x1111) == 0, "the page before the discard changed");
	CHECK(bad_pages(ram, 65 * PAGE, size, 0x1111) == 0, "pages after the discard changed");
	/* QEMU's memfd backend punches by itself, then madvises. */
	CHECK(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 16 * PAGE) == 0 &&
		      madvise(mem, 16 * PAGE, MADV_DONTNEED) == 0,
	      "memfd discard: %s", strerror(errno));
	CHECK(all_zero(mem, 16 * PAGE), "discarded memfd pages not zero");
	printf("discards read back as zeros\n");
	/* MADV_FREE is valid on the private memory the caller thinks it has. */
	CHECK(madvise((char *)ram + 128 * PAGE, 8 * PAGE, MADV_FREE) == 0, "MADV_FREE: %s",
	      strerror(errno));
	CHECK(bad_pages(ram, 136 * PAGE, size, 0x1111) == 0, "pages after MADV_FREE changed");
	/* Moved or grown, served memory would lose its registration. */
	errno = 0;
	CHECK(mremap(ram, size, size * 2, MREMAP_MAYMOVE) == MAP_FAILED && errno == ENOMEM,
	      "mremap of served memory was not refused: %s", strerror(errno));
	CHECK(bad_pages(ram, 136 * PAGE, size, 0x1111) == 0, "pattern lost after a refused mremap");

	CHECK(munmap(ram, size) == 0 && munmap(mem, size / 2) == 0, "munmap: %s", strerror(errno));
	close(fd);
	printf("UNMAPPED\n");
	wait_line();
	return failures ? 1 : 0;
}

static volatile int unrelated_stop;
static uint64_t unrelated_max_ns, unrelated_rounds;

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Memory that has nothing to do with served memory: its mmap, munmap and
 * madvise must not wait for the daemon's answer to someone else's
 * registration. */
static void *unrelated(void *arg)
{
	size_t size = *(size_t *)arg;

	while (!__atomic_load_n(&unrelated_stop, __ATOMIC_RELAXED)) {
		uint64_t t0 = mono_ns(), dt;
		char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p != MAP_FAILED) {
			p[0] = 1;
			madvise(p, size, MADV_DONTNEED);
			munmap(p, size);
		}
		dt = mono_ns() - t0;
		if (dt > unrelated_max_ns)
			unrelated_max_ns = dt;
		unrelated_rounds++;
		{
			struct timespec ts = { 0, 2000000 };
			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

static int plug(size_t size)
{
	uint64_t *ram = qemu_ram_anon(size), *dimm;
	pthread_t th;

	CHECK(ram != MAP_FAILED, "boot RAM: %s", strerror(errno));
	if (ram == MAP_FAILED)
		return 1;
	fill(ram, size, 0x3333);
	printf("READY\n");
	wait_line();
	CHECK(pthread_create(&th, NULL, unrelated, &size) == 0, "thread");
	dimm = qemu_ram_anon(size);
	if (dimm == MAP_FAILED)
		printf("PLUG %s\n", errno == ENOMEM ? "ENOMEM" : strerror(errno));
	else
		printf("PLUG ok\n");
	__atomic_store_n(&unrelated_stop, 1, __ATOMIC_RELAXED);
	pthread_join(th, NULL);
	printf("UNRELATED %llu rounds, slowest %llu ms\n", (unsigned long long)unrelated_rounds,
	       (unsigned long long)(unrelated_max_ns / 1000000));
	return failures ? 1 : 0;
}

/* Sockets among our descriptors: a fork child of the shim must hold none of
 * its parent's (the registration connection). */
static int count_sockets(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		char path[300], link[256];
		ssize_t k;

		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		k = readlink(path, link, sizeof(link) - 1);
		if (k > 0) {
			link[k] = '\0';
			n += strncmp(link, "socket:", 7) == 0;
		}
	}
	closedir(d);
	return n;
}

/* Issue 8 finding 7: a fork child reading a served memfd through an
 * inherited mapping put zeros into the parent's evicted pages. */
static int forked(size_t size)
{
	int fd, st;
	uint64_t *mem = qemu_ram_memfd(size, &fd);
	char how[256];
	pid_t pid;
	void *again;

	CHECK(mem != MAP_FAILED, "memfd backend: %s", strerror(errno));
	if (mem == MAP_FAILED)
		return 1;
	fill(mem, size, 0x7777);
	CHECK(bad_pages(mem, 0, size, 0x7777) == 0, "pattern lost before the fork");
	pid = fork();
	if (pid == 0) {
		size_t zero = 0;

		backing(mem, how, sizeof(how));
		if (strcmp(how, "?") != 0) {
			/* Inherited: read it all, as the reported child did. */
			for (size_t i = 0; i < size / 8; i += PAGE / 8)
				zero += mem[i] == 0 && mem[i + 1] == 0;
			printf("FAIL child inherited the served mapping (%s); %zu zero pages\n", how,
			       zero);
			_exit(1);
		}
		again = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
		if (again != MAP_FAILED || errno != EBUSY) {
			printf("FAIL child mapped its parent's served memfd: %s\n",
			       again == MAP_FAILED ? strerror(errno) : "it worked");
			_exit(1);
		}
		printf("child has no mapping and may not make one\n");
		_exit(0);
	}
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "child failed (status %#x)", st);
	/* A second mapping in this process: refused, large or small. */
	errno = 0;
	again = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(again == MAP_FAILED && errno == EBUSY, "second mapping: %s",
	      again == MAP_FAILED ? strerror(errno) : "made");
	errno = 0;
	again = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, PAGE);
	CHECK(again == MAP_FAILED && errno == EBUSY, "second small mapping: %s",
	      again == MAP_FAILED ? strerror(errno) : "made");
	{
		size_t bad = bad_pages(mem, 0, size, 0x7777);

		printf("parent: %zu of %zu pages changed\n", bad, size / PAGE);
		CHECK(bad == 0, "the parent's data changed");
	}
	printf("FORK done\n");
	return failures ? 1 : 0;
}

/* Finding 8: an mmap over served memory that fails must leave it served. */
static int replace(size_t size)
{
	uint64_t *ram = qemu_ram_anon(size);
	void *p;

	CHECK(ram != MAP_FAILED, "RAM: %s", strerror(errno));
	if (ram == MAP_FAILED)
		return 1;
	fill(ram, size, 0x4444);
	errno = 0;
	p = mmap(ram, size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	CHECK(p == MAP_FAILED && errno == EEXIST, "NOREPLACE over RAM: %s",
	      p == MAP_FAILED ? strerror(errno) : "made");
	errno = 0;
	p = mmap(ram, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, 1000, 0);
	CHECK(p == MAP_FAILED && errno == EBADF, "MAP_FIXED with a bad fd: %s",
	      p == MAP_FAILED ? strerror(errno) : "made");
	{
		size_t bad = bad_pages(ram, 0, size, 0x4444);

		printf("after failed replacements: %zu of %zu pages changed\n", bad, size / PAGE);
		CHECK(bad == 0, "served pages lost");
	}
	p = mmap(ram, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	CHECK(p == ram, "MAP_FIXED replacement: %s", p == MAP_FAILED ? strerror(errno) : "moved");
	if (p == ram) {
		CHECK(all_zero(p, size), "the replacement is not fresh memory");
		fill(p, size, 0x5555);
		CHECK(bad_pages(p, 0, size, 0x5555) == 0, "the replacement lost writes");
	}
	printf("REPLACED\n");
	wait_line();
	return failures ? 1 : 0;
}

/* Finding 10: partial munmaps leaked tracking slots and regions. */
static int halves(size_t size)
{
	const size_t q = size / 4;

	for (int round = 0; round < 64; round++) {
		char *ram = qemu_ram_anon(size);

		CHECK(ram != MAP_FAILED, "round %d: %s", round, strerror(errno));
		if (ram == MAP_FAILED)
			return 1;
		ram[0] = ram[size - 1] = 1;
		if (round % 2 == 0) {
			CHECK(munmap(ram, size / 2) == 0 && munmap(ram + size / 2, size / 2) == 0,
			      "munmap: %s", strerror(errno));
		} else {   /* middle first, then the ends */
			CHECK(munmap(ram + q, 2 * q) == 0 && munmap(ram, q) == 0 &&
				      munmap(ram + 3 * q, size - 3 * q) == 0,
			      "munmap: %s", strerror(errno));
		}
	}
	{
		char *last = qemu_ram_anon(size);

		CHECK(last != MAP_FAILED, "the mapping after 64 rounds: %s", strerror(errno));
		if (last != MAP_FAILED)
			last[0] = 1;
	}
	printf("HALVES done\n");
	wait_line();
	return failures ? 1 : 0;
}

/* Finding 10: a plain program's memory (malloc'd, or mapped anonymous
 * private as allocators such as jemalloc do; glibc's malloc maps without
 * going through the interposed mmap) must keep fork semantics: the child
 * gets a private copy. */
static int mallocd(size_t size)
{
	uint64_t *m = malloc(size);
	uint64_t *a = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char how[256];
	pid_t pid;
	int st;

	CHECK(m != NULL && a != MAP_FAILED, "malloc/mmap: %s", strerror(errno));
	if (!m || a == MAP_FAILED)
		return 1;
	fill(m, size, 0x6666);
	fill(a, size, 0x8888);
	backing(m, how, sizeof(how));
	CHECK(how[0] == '\0', "malloc'd memory was taken over: %s", how);
	backing(a, how, sizeof(how));
	CHECK(how[0] == '\0', "mmap'd anonymous memory was taken over: %s", how);
	pid = fork();
	if (pid == 0) {
		if (bad_pages(m, 0, size, 0x6666) != 0 || bad_pages(a, 0, size, 0x8888) != 0)
			_exit(1);
		fill(m, size, 0x9999);
		fill(a, size, 0x9999);
		_exit(bad_pages(a, 0, size, 0x9999) != 0 ? 2 : 0);
	}
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid, "fork/wait: %s", strerror(errno));
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status %#x (signal %d)", st,
	      WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	CHECK(bad_pages(m, 0, size, 0x6666) == 0 && bad_pages(a, 0, size, 0x8888) == 0,
	      "the child's writes reached the parent");
	free(m);
	munmap(a, size);
	printf("MALLOC done\n");
	return failures ? 1 : 0;
}

static volatile int forkreg_stop;

static void *forkreg_worker(void *arg)
{
	size_t size = *(size_t *)arg;

	while (!__atomic_load_n(&forkreg_stop, __ATOMIC_RELAXED)) {
		char *ram = qemu_ram_anon(size);

		if (ram == MAP_FAILED) {
			printf("FAIL worker mmap: %s\n", strerror(errno));
			break;
		}
		ram[0] = 1;
		munmap(ram, size);
	}
	return NULL;
}

/* Finding 10: fork while another thread is registering. */
static int forkreg(size_t size)
{
	pthread_t th;
	int ok = 0;

	if (pthread_create(&th, NULL, forkreg_worker, &size) != 0)
		return 1;
	for (int i = 0; i < 20; i++) {
		struct timespec ts = { 0, 7000000 };
		pid_t pid;
		int st;

		nanosleep(&ts, NULL);
		pid = fork();
		if (pid == 0) {
			char *ram;

			alarm(20);   /* a deadlocked child dies of SIGALRM */
			if (count_sockets() != 0)
				_exit(3);
			ram = qemu_ram_anon(size);   /* its own registration */
			if (ram == MAP_FAILED)
				_exit(4);
			ram[0] = 1;
			_exit(ram[0] == 1 ? 0 : 5);
		}
		if (pid < 0 || waitpid(pid, &st, 0) != pid)
			continue;
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			ok++;
		else
			printf("FAIL child %d: status %#x\n", i, st);
	}
	__atomic_store_n(&forkreg_stop, 1, __ATOMIC_RELAXED);
	pthread_join(th, NULL);
	printf("%d of 20 children fine\n", ok);
	CHECK(ok == 20, "children failed");
	printf("FORKREG done\n");
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 3 || mib == 0) {
		fprintf(stderr, "usage: fake-qemu serve|plug|one|fork|replace|halves|malloc|forkreg MIB\n");
		return 2;
	}
	if (strcmp(argv[1], "serve") == 0)
		return serve(mib << 20);
	if (strcmp(argv[1], "plug") == 0)
		return plug(mib << 20);
	if (strcmp(argv[1], "fork") == 0)
		return forked(mib << 20);
	if (strcmp(argv[1], "replace") == 0)
		return replace(mib << 20);
	if (strcmp(argv[1], "halves") == 0)
		return halves(mib << 20);
	if (strcmp(argv[1], "malloc") == 0)
		return mallocd(mib << 20);
	if (strcmp(argv[1], "forkreg") == 0)
		return forkreg(mib << 20);
	if (strcmp(argv[1], "one") == 0) {
		uint64_t *p = qemu_ram_anon(mib << 20);

		if (p == MAP_FAILED) {
			printf("MAP_FAILED %s\n", strerror(errno));
			return 1;
		}
		fill(p, mib << 20, 1);
		printf("TOUCHED\n");
		return 0;
	}
	fprintf(stderr, "fake-qemu: unknown mode %s\n", argv[1]);
	return 2;
}
