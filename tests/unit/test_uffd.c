/* Kernel-facing helpers: the feature report names what is missing and what
 * is turned off without it, and the ioctl wrappers return the kernel's
 * errors the way the shards expect them. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/log.h"
#include "uffd/uffd.h"
#include "uffd/uffd_compat.h"

#define ALL_USED                                                                             \
	((int64_t)(UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM |            \
		   UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_POISON | \
		   UFFD_FEATURE_MOVE | UFFD_FEATURE_WP_ASYNC))

/* Run the report with stderr captured; returns its result, text in out. */
static int report(int64_t have, char *out, size_t len)
{
	FILE *tmp = tmpfile();
	int saved = dup(2), rc;
	size_t n;

	fflush(stderr);
	dup2(fileno(tmp), 2);
	rc = uffd_report_features(have);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	rewind(tmp);
	n = fread(out, 1, len - 1, tmp);
	out[n] = '\0';
	fclose(tmp);
	return rc;
}

Test(uffd, this_kernel_has_everything_required)
{
	int64_t have = uffd_kernel_features();
	char text[4096];

	cr_assert_geq(have, 0, "userfaultfd unavailable: %s", strerror((int)-have));
	cr_expect((have & FM_UFFD_FEATURES) == FM_UFFD_FEATURES);
	cr_expect_eq(report(have, text, sizeof(text)), 0, "%s", text);
}

Test(uffd, a_missing_required_feature_is_named_and_fatal)
{
	char text[4096];

	cr_expect_eq(report(ALL_USED & ~(int64_t)UFFD_FEATURE_WP_HUGETLBFS_SHMEM, text, sizeof(text)),
		     -ENOTSUP);
	cr_expect(strstr(text, "WP_HUGETLBFS_SHMEM") && strstr(text, "race-free"), "%s", text);
	cr_expect_eq(report(ALL_USED & ~(int64_t)UFFD_FEATURE_EVENT_REMOVE, text, sizeof(text)),
		     -ENOTSUP);
	cr_expect(strstr(text, "EVENT_REMOVE"), "%s", text);
}

Test(uffd, a_missing_optional_feature_is_named_not_fatal)
{
	char text[4096];

	cr_expect_eq(report(ALL_USED & ~(int64_t)UFFD_FEATURE_POISON, text, sizeof(text)), 0);
	cr_expect(strstr(text, "POISON") && strstr(text, "warn"), "%s", text);
}

Test(uffd, no_userfaultfd_at_all_is_explained)
{
	char text[4096];

	cr_expect_eq(report(-EPERM, text, sizeof(text)), -ENOTSUP);
	cr_expect(strstr(text, "userfaultfd is unavailable") && strstr(text, "/dev/userfaultfd"), "%s",
		  text);
}

/* The wrappers on a real registered memfd in this process. */
Test(uffd, wrappers_report_kernel_errors)
{
	int memfd = memfd_create("uffd-test", MFD_CLOEXEC), uffd = uffd_open();
	struct uffdio_api api = { .api = UFFD_API, .features = FM_UFFD_FEATURES };
	uint64_t retries = 0;
	uint8_t *mem, *page;
	void *src = aligned_alloc(4096, 4096);

	cr_assert_geq(uffd, 0);
	cr_assert_eq(ftruncate(memfd, 4 * 4096), 0);
	mem = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	cr_assert_eq(ioctl(uffd, UFFDIO_API, &api), 0);
	struct uffdio_register reg = { .range = { (uint64_t)(uintptr_t)mem, 4 * 4096 },
				       .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP };
	cr_assert_eq(ioctl(uffd, UFFDIO_REGISTER, &reg), 0);
	page = mem;
	memset(src, 0x42, 4096);
	cr_expect_eq(uffd_copy(uffd, (uint64_t)(uintptr_t)page, src, 4096, &retries), 0);
	cr_expect_eq(page[100], 0x42);
	/* A second fill of the same page: EEXIST, which the shard turns into a wake. */
	cr_expect_eq(uffd_copy(uffd, (uint64_t)(uintptr_t)page, src, 4096, &retries), -EEXIST);
	cr_expect_eq(uffd_zeropage(uffd, (uint64_t)(uintptr_t)page, 4096, &retries), -EEXIST);
	cr_expect_eq(uffd_zeropage(uffd, (uint64_t)(uintptr_t)mem + 4096, 4096, &retries), 0);
	cr_expect_eq(uffd_writeprotect(uffd, (uint64_t)(uintptr_t)page, 4096, true, &retries), 0);
	cr_expect_eq(uffd_writeprotect(uffd, (uint64_t)(uintptr_t)page, 4096, false, &retries), 0);
	cr_expect_eq(uffd_wake(uffd, (uint64_t)(uintptr_t)page, 4096), 0);
	cr_expect_eq(uffd_poison(uffd, (uint64_t)(uintptr_t)mem + 2 * 4096, 4096, &retries), 0);
	/* Misaligned ranges are the kernel's EINVAL. */
	cr_expect_eq(uffd_copy(uffd, (uint64_t)(uintptr_t)page + 1, src, 4096, &retries), -EINVAL);
	cr_expect_eq(retries, 0);
	close(uffd);
	munmap(mem, 4 * 4096);
	close(memfd);
	free(src);
}
