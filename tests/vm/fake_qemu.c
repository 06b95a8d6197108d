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
 *                         report how that went: "PLUG ok" / "PLUG ENOMEM".
 *   fake-qemu one MIB     map MIB anonymous and touch it ("TOUCHED").
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
#include <sys/mman.h>
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

static int plug(size_t size)
{
	uint64_t *ram = qemu_ram_anon(size), *dimm;

	CHECK(ram != MAP_FAILED, "boot RAM: %s", strerror(errno));
	if (ram == MAP_FAILED)
		return 1;
	fill(ram, size, 0x3333);
	printf("READY\n");
	wait_line();
	dimm = qemu_ram_anon(size);
	if (dimm == MAP_FAILED)
		printf("PLUG %s\n", errno == ENOMEM ? "ENOMEM" : strerror(errno));
	else
		printf("PLUG ok\n");
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 3 || mib == 0) {
		fprintf(stderr, "usage: fake-qemu serve|plug|one MIB\n");
		return 2;
	}
	if (strcmp(argv[1], "serve") == 0)
		return serve(mib << 20);
	if (strcmp(argv[1], "plug") == 0)
		return plug(mib << 20);
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
