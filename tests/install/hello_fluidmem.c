/* Built by tests/blackbox/install.sh and tests/debs/debs.sh against the
 * INSTALLED header and pkg-config file only: put 8 MiB on fluidmemd (more
 * than its budget in those tests), stamp every page, read every page back. */
#include <fluidmem.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define PAGES 2048
#define PAGE 4096

int main(int argc, char **argv)
{
	struct fm_client *c = fm_connect(argc > 1 ? argv[1] : NULL);
	struct fm_region *r;
	unsigned char *p;
	long bad = 0;

	if (!c) {
		perror("fm_connect");
		return 3;
	}
	r = fm_region_create(c, (size_t)PAGES * PAGE, "hello");
	if (!r) {
		perror("fm_region_create");
		return 4;
	}
	p = fm_region_addr(r);
	for (int pass = 0; pass < 2; pass++) {
		for (uint64_t i = 0; i < PAGES; i++)
			memset(p + i * PAGE, (int)((i * 7 + (uint64_t)pass) & 0xff), PAGE);
		for (uint64_t i = 0; i < PAGES; i++)
			for (size_t b = 0; b < PAGE; b += 512)
				bad += p[i * PAGE + b] != (unsigned char)((i * 7 + (uint64_t)pass) & 0xff);
	}
	if (fm_region_destroy(r) < 0 || bad) {
		fprintf(stderr, "hello_fluidmem: %ld bad bytes\n", bad);
		return 1;
	}
	fm_disconnect(c);
	printf("hello_fluidmem: %d pages verified\n", PAGES);
	return 0;
}
