/* guest_memtest: runs inside the test VM (static, no libraries there).
 * Writes a per-page pattern over most of the guest's free RAM, verifies it
 * over several passes, and prints timings and a checksum. Every word of
 * every page is checked, so a page served from the wrong place, lost in an
 * eviction or zeroed by a discard shows as a bad page.
 *
 *   guest_memtest [--mib N | --percent P] [--passes N] [--seed S]
 *                 [--label NAME] [--hold FILE] [--text]
 *
 * --text fills pages with words of English-like text instead of the
 * incompressible pattern (each page still a function of seed and page
 * number), for the local store's compression figures (bench/README.md).
 *
 * Exit status 0 when every pass verified, 1 on a bad page, 2 on bad usage. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"   /* header-only helpers: nothing to link */

#define PAGE 4096u
#define WORDS (PAGE / 8)

static const char *label = "main";

/* A /proc/meminfo field in KiB, or 0. */
static uint64_t meminfo_kib(const char *key)
{
	char line[256];
	uint64_t v = 0;
	size_t klen = strlen(key);
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
			v = strtoull(line + klen + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

/* Free KiB in the Movable zones (hot-plugged memory onlined movable): how
 * the test tells that the pattern really covers a new DIMM. */
static uint64_t movable_free_kib(void)
{
	char line[256];
	uint64_t pages = 0;
	int in_movable = 0;
	FILE *f = fopen("/proc/zoneinfo", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "Node ", 5) == 0)
			in_movable = strstr(line, "zone  Movable") || strstr(line, "zone Movable");
		else if (in_movable && strstr(line, "pages free"))
			pages += strtoull(strstr(line, "free") + 4, NULL, 10);
	}
	fclose(f);
	return pages * (PAGE / 1024);
}

static inline uint64_t page_base(uint64_t seed, uint64_t pno)
{
	return fm_mix64(seed ^ (pno * 0x9e3779b97f4a7c15ull));
}

static int text_mode;

/* Text: words picked by a generator seeded with the page's base. */
static void text_page(uint64_t *w, uint64_t b, size_t p)
{
	static const char *const words[] = {
		"the ", "of ", "and ", "to ", "in ", "a ", "is ", "that ", "for ", "it ",
		"as ", "was ", "with ", "be ", "by ", "on ", "not ", "he ", "this ", "are ",
		"memory ", "page ", "kernel ", "process ", "file ", "system ", "which ", "from ",
		"their ", "would ", "there ", "been ", "when ", "were ", "more ", "into ",
		"time ", "could ", "other ", "these ", ". ", ", ", "\n", "The ", "data ",
		"store ", "region ", "evicted ", "compressed ", "between ", "through ", "after ",
		"first ", "because ", "should ", "number ", "without ", "however ", "machine ",
		"virtual ", "network ", "server ", "request ", "return ",
	};
	char *c = (char *)w;
	size_t off = 8;
	uint64_t s = b;

	w[0] = p;
	while (off < PAGE) {
		const char *wd;
		size_t n;

		s = s * 6364136223846793005ull + 1442695040888963407ull;
		wd = words[(s >> 33) % (sizeof(words) / sizeof(words[0]))];
		n = strlen(wd);
		if (n > PAGE - off)
			n = PAGE - off;
		memcpy(c + off, wd, n);
		off += n;
	}
}

static void fill(uint64_t *w, size_t pages, uint64_t seed)
{
	for (size_t p = 0; p < pages; p++, w += WORDS) {
		uint64_t b = page_base(seed, p);

		if (text_mode) {
			text_page(w, b, p);
			continue;
		}
		w[0] = p;
		for (size_t i = 1; i < WORDS; i++)
			w[i] = b + i * 0x100000001b3ull;
	}
}

/* Bad pages; *sum gets a checksum of what was read (the same every pass,
 * and the same for the same seed and size on any VM). */
static size_t verify(const uint64_t *w, size_t pages, uint64_t seed, uint64_t *sum)
{
	size_t bad = 0;
	uint64_t s = 0;

	for (size_t p = 0; p < pages; p++, w += WORDS) {
		uint64_t b = page_base(seed, p), diff = w[0] ^ p;
		static uint64_t want[WORDS];

		if (text_mode)
			text_page(want, b, p);
		for (size_t i = 1; i < WORDS; i++) {
			diff |= w[i] ^ (text_mode ? want[i] : b + i * 0x100000001b3ull);
			s += w[i];
		}
		if (diff && bad++ < 5)
			printf("memtest[%s]: BAD page %zu: word0 %#llx expected %#zx\n", label, p,
			       (unsigned long long)w[0], p);
	}
	*sum = s;
	return bad;
}

static double mib_per_s(size_t bytes, uint64_t ns)
{
	return ns ? (double)bytes / (1 << 20) / ((double)ns / 1e9) : 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: guest_memtest [--mib N | --percent P] [--passes N] [--seed S]\n"
		   "                     [--label NAME] [--hold FILE] [--text]\n"
		   "  --mib N       test N MiB (default: --percent of MemAvailable)\n"
		   "  --percent P   test P%% of MemAvailable, 1..95 (default 80)\n"
		   "  --passes N    verify passes after the write (default 3)\n"
		   "  --hold FILE   after the passes, wait until FILE exists, verify again\n"
		   "  --text        English-like text (compressible) instead of the pattern\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "mib", required_argument, NULL, 'm' },   { "percent", required_argument, NULL, 'p' },
		{ "passes", required_argument, NULL, 'n' }, { "seed", required_argument, NULL, 's' },
		{ "label", required_argument, NULL, 'l' },  { "hold", required_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },         { "text", no_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t mib = 0, seed = 1, sum = 0, first_sum = 0, t0, movable_before, movable_during;
	long percent = 80, passes = 3;
	const char *hold = NULL;
	size_t bytes, pages, bad = 0;
	uint64_t *mem;
	int opt;

	while ((opt = getopt_long(argc, argv, "m:p:n:s:l:H:ht", opts, NULL)) != -1) {
		switch (opt) {
		case 'm': mib = strtoull(optarg, NULL, 10); break;
		case 'p': percent = strtol(optarg, NULL, 10); break;
		case 'n': passes = strtol(optarg, NULL, 10); break;
		case 's': seed = strtoull(optarg, NULL, 0); break;
		case 'l': label = optarg; break;
		case 'H': hold = optarg; break;
		case 't': text_mode = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (percent < 1 || percent > 95 || passes < 1 || passes > 100) {
		usage(stderr);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!mib)
		mib = meminfo_kib("MemAvailable") * (uint64_t)percent / 100 / 1024;
	bytes = (size_t)mib << 20;
	pages = bytes / PAGE;
	if (!pages) {
		fprintf(stderr, "memtest[%s]: nothing to test\n", label);
		return 2;
	}
	movable_before = movable_free_kib();
	mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		fprintf(stderr, "memtest[%s]: mmap %llu MiB: %s\n", label, (unsigned long long)mib,
			strerror(errno));
		return 2;
	}
	printf("memtest[%s]: %llu MiB of %llu MiB RAM, seed %llu, %ld passes\n", label,
	       (unsigned long long)mib, (unsigned long long)meminfo_kib("MemTotal") / 1024,
	       (unsigned long long)seed, passes);
	t0 = fm_now_ns();
	fill(mem, pages, seed);
	t0 = fm_now_ns() - t0;
	printf("memtest[%s]: write %llu MiB: %.0f ms (%.1f MiB/s)\n", label, (unsigned long long)mib,
	       t0 / 1e6, mib_per_s(bytes, t0));
	movable_during = movable_free_kib();
	if (movable_before)
		printf("memtest[%s]: movable zone free %llu KiB before, %llu KiB while holding\n",
		       label, (unsigned long long)movable_before, (unsigned long long)movable_during);
	for (long k = 1; k <= passes; k++) {
		size_t b;

		t0 = fm_now_ns();
		b = verify(mem, pages, seed, &sum);
		t0 = fm_now_ns() - t0;
		bad += b;
		printf("memtest[%s]: verify pass %ld: %.0f ms (%.1f MiB/s), %zu bad pages\n", label, k,
		       t0 / 1e6, mib_per_s(bytes, t0), b);
		if (k == 1)
			first_sum = sum;
		else if (sum != first_sum && bad++ == 0)
			printf("memtest[%s]: BAD checksum changed between passes\n", label);
	}
	if (hold) {
		char ready[512];
		FILE *f;

		snprintf(ready, sizeof(ready), "%s.holding", hold);
		f = fopen(ready, "w");
		if (f)
			fclose(f);
		printf("memtest[%s]: holding %llu MiB until %s exists\n", label,
		       (unsigned long long)mib, hold);
		while (access(hold, F_OK) != 0)
			usleep(100000);
		t0 = fm_now_ns();
		size_t b = verify(mem, pages, seed, &sum);
		t0 = fm_now_ns() - t0;
		bad += b + (sum != first_sum);
		printf("memtest[%s]: verify after hold: %.0f ms, %zu bad pages\n", label, t0 / 1e6, b);
	}
	printf("memtest[%s]: checksum %016llx\n", label, (unsigned long long)sum);
	printf("memtest[%s]: %s\n", label, bad ? "FAIL" : "OK");
	munmap(mem, bytes);
	return bad ? 1 : 0;
}
