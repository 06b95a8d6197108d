/* Hostile registrations (issue 8, findings 3, 6 and 7): descriptors that are
 * not what they claim, memfds the client does not map, uffds with features
 * the daemon cannot serve, one uid taking every region slot, and huge sparse
 * regions. The daemon must refuse with a clear reason, survive, and keep
 * serving everyone else. */
#include <criterion/criterion.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>

#include "base/procstat.h"
#include "client/fluidmem.h"
#include "proto/proto.h"
#include "ctl/registration.h"
#include "harness.h"
#include "uffd/uffd.h"
#include "uffd/uffd_compat.h"

#define PAGE 4096u
#define FEATURES                                                                            \
	(UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_EVENT_REMOVE | \
	 UFFD_FEATURE_EVENT_UNMAP)

static struct td fmd;

static int reg_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	struct timeval tv = { 10, 0 };

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fmd.reg);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %s",
		     strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* One REGISTER on connection fd; the reply's status, reason in `reason`. */
static int reg_send(int fd, uint64_t addr, uint64_t size, int uffd, int memfd, char *reason)
{
	struct fm_reg_req q = { .magic = FM_PROTO_MAGIC, .version = FM_PROTO_VERSION,
				.type = FM_REG_REGISTER, .length = sizeof(q), .page_size = PAGE,
				.addr = addr, .size = size };
	struct fm_reg_reply rep;
	int rc;

	strcpy(q.name, "hostile");
	rc = td_reg_exchange(fd, &q, sizeof(q), (int[]){ uffd, memfd }, 2, &rep);
	if (rc < 0)
		return rc;
	snprintf(reason, 160, "%s", rep.reason);
	return rep.status;
}

/* A memfd of `size` bytes mapped shared at *addr and registered
 * MISSING|WP on a uffd with `features`; the uffd is returned. */
static int make_region(uint64_t features, size_t size, int *memfd, void **addr, bool do_register)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	int uffd;

	*memfd = memfd_create("hostile", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	cr_assert_geq(*memfd, 0);
	cr_assert_eq(ftruncate(*memfd, (off_t)size), 0);
	*addr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, *memfd, 0);
	cr_assert_neq(*addr, MAP_FAILED);
	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	cr_assert_geq(uffd, 0);
	if (ioctl(uffd, UFFDIO_API, &api) < 0) {
		close(uffd);
		return -errno;
	}
	if (do_register) {
		struct uffdio_register reg = {
			.range = { .start = (uint64_t)(uintptr_t)*addr, .len = size },
			.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
		};
		cr_assert_eq(ioctl(uffd, UFFDIO_REGISTER, &reg), 0, "register: %s", strerror(errno));
	}
	return uffd;
}

/* Undo make_region: the uffd first, so the unmap raises no event. */
static void free_region(int uffd, int memfd, void *addr, size_t size)
{
	close(uffd);
	munmap(addr, size);
	close(memfd);
}

static void expect_serving(void)
{
	struct fm_client *c;
	struct fm_region *r = td_region(&fmd, &c, 64, "good");

	memset(fm_region_addr(r), 0x5a, 64 * PAGE);
	cr_expect_eq(((uint8_t *)fm_region_addr(r))[63 * PAGE], 0x5a);
	fm_region_destroy(r);
	fm_disconnect(c);
}

/* Finding 3: a regular file passes for a memfd (F_GET_SEALS is -1, and
 * -1 & F_SEAL_SHRINK is true); truncating it later made an eviction read
 * SIGBUS the daemon. */
Test(hostile_register, regular_file_is_refused_and_truncation_is_harmless, .timeout = 60)
{
	const char *sets[] = { "memory.resident_pages=16", NULL };
	char path[128], reason[160];
	int memfd, uffd, fd, file;
	void *addr;

	cr_assert_eq(td_start(&fmd, sets), 0);
	uffd = make_region(FEATURES, 64 * PAGE, &memfd, &addr, true);
	snprintf(path, sizeof(path), "%s/not-a-memfd", fmd.dir);
	file = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	cr_assert_geq(file, 0);
	cr_assert_eq(ftruncate(file, 64 * PAGE), 0);
	fd = reg_connect();
	cr_expect_eq(reg_send(fd, (uint64_t)(uintptr_t)addr, 64 * PAGE, uffd, file, reason), -EBADF,
		     "a regular file was accepted: %s", reason);
	cr_expect(strstr(reason, "not a memfd") != NULL, "reason: %s", reason);
	cr_assert_eq(ftruncate(file, 0), 0);
	/* A tmpfs file that is not a memfd (no sealing, anyone with the path
	 * may truncate it) is refused too. */
	int shm = open("/dev/shm", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (shm >= 0) {
		cr_assert_eq(ftruncate(shm, 64 * PAGE), 0);
		cr_expect_eq(reg_send(fd, (uint64_t)(uintptr_t)addr, 64 * PAGE, uffd, shm, reason),
			     -EBADF, "a tmpfs file was accepted: %s", reason);
		close(shm);
	}
	close(fd);
	close(file);
	/* Evictions run on another client; the daemon is alive and serving. */
	expect_serving();
	cr_expect(td_alive(&fmd));
	free_region(uffd, memfd, addr, 64 * PAGE);
	td_expect_stop(&fmd);
}

/* Finding 3: the memfd must be the one the client maps at that address,
 * shared, at offset 0, and the uffd must cover it. */
Test(hostile_register, memfd_not_mapped_there_is_refused, .timeout = 60)
{
	char reason[160];
	int memfd, uffd, fd, other;
	void *addr;

	cr_assert_eq(td_start(&fmd, NULL), 0);
	uffd = make_region(FEATURES, 64 * PAGE, &memfd, &addr, true);
	other = memfd_create("other", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	cr_assert_eq(ftruncate(other, 64 * PAGE), 0);
	fd = reg_connect();
	cr_expect_eq(reg_send(fd, (uint64_t)(uintptr_t)addr, 64 * PAGE, uffd, other, reason), -EINVAL);
	cr_expect(strstr(reason, "not mapped") != NULL, "reason: %s", reason);
	/* The right memfd, but the range runs past its mapping. */
	cr_expect_eq(reg_send(fd, (uint64_t)(uintptr_t)addr + PAGE, 64 * PAGE, uffd, memfd, reason),
		     -EINVAL, "reason: %s", reason);
	/* Mapped, but the uffd has nothing registered there. */
	int memfd2, uffd2;
	void *addr2;
	uffd2 = make_region(FEATURES, 64 * PAGE, &memfd2, &addr2, false);
	cr_expect_eq(reg_send(fd, (uint64_t)(uintptr_t)addr2, 64 * PAGE, uffd2, memfd2, reason),
		     -EINVAL);
	cr_expect(strstr(reason, "does not cover") != NULL, "reason: %s", reason);
	/* A private mapping of the memfd is not where the data lives. */
	void *priv = mmap(NULL, 64 * PAGE, PROT_READ, MAP_PRIVATE, memfd, 0);
	cr_expect_eq(reg_send(fd, (uint64_t)(uintptr_t)priv, 64 * PAGE, uffd, memfd, reason), -EINVAL,
		     "reason: %s", reason);
	/* A memfd sealed against writes could never be evicted from. */
	int memfd3, uffd3;
	void *addr3;
	uffd3 = make_region(FEATURES, 64 * PAGE, &memfd3, &addr3, true);
	void *ro = mmap(NULL, 64 * PAGE, PROT_READ, MAP_SHARED, memfd3, 0);
	cr_assert_eq(fcntl(memfd3, F_ADD_SEALS, F_SEAL_FUTURE_WRITE), 0, "%s", strerror(errno));
	cr_expect_eq(reg_send(fd, (uint64_t)(uintptr_t)addr3, 64 * PAGE, uffd3, memfd3, reason), -EPERM);
	cr_expect(strstr(reason, "sealed against writes") != NULL, "reason: %s", reason);
	/* The uffd goes first: an unmap of a range it covers would wait
	 * for somebody to read the UNMAP event. */
	close(uffd3);
	munmap(ro, 64 * PAGE);
	munmap(addr3, 64 * PAGE);
	close(memfd3);
	/* And the good one is accepted on the same connection; then it can
	 * neither shrink nor take a write seal under the daemon. */
	cr_expect_eq(reg_send(fd, (uint64_t)(uintptr_t)addr, 64 * PAGE, uffd, memfd, reason), 0,
		     "refused: %s", reason);
	cr_expect_eq(ftruncate(memfd, 0), -1, "a registered memfd shrank");
	/* The same range again is refused while the first is live. */
	cr_expect_eq(reg_send(fd, (uint64_t)(uintptr_t)addr, 64 * PAGE, uffd, memfd, reason), -EEXIST,
		     "reason: %s", reason);
	cr_expect(strstr(reason, "overlaps") != NULL, "reason: %s", reason);
	cr_expect_eq(fcntl(memfd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE), -1, "a write seal was added");
	close(fd);
	munmap(priv, 64 * PAGE);
	close(other);
	close(uffd2);
	close(memfd2);
	munmap(addr2, 64 * PAGE);
	expect_serving();
	free_region(uffd, memfd, addr, 64 * PAGE);
	td_expect_stop(&fmd);
}

/* Findings 3 and 7: features the daemon cannot serve are refused by name. */
Test(hostile_register, fork_and_wp_async_uffds_are_refused, .timeout = 60)
{
	char reason[160];
	int memfd, uffd, fd;
	void *addr;

	cr_assert_eq(td_start(&fmd, NULL), 0);
	fd = reg_connect();
	uffd = make_region(FEATURES | UFFD_FEATURE_EVENT_FORK, 64 * PAGE, &memfd, &addr, true);
	cr_assert_geq(uffd, 0);
	cr_expect_eq(reg_send(fd, (uint64_t)(uintptr_t)addr, 64 * PAGE, uffd, memfd, reason), -EINVAL);
	cr_expect(strstr(reason, "EVENT_FORK") != NULL, "reason: %s", reason);
	free_region(uffd, memfd, addr, 64 * PAGE);

	uffd = make_region(FEATURES | UFFD_FEATURE_WP_ASYNC, 64 * PAGE, &memfd, &addr, true);
	if (uffd >= 0) {
		cr_expect_eq(reg_send(fd, (uint64_t)(uintptr_t)addr, 64 * PAGE, uffd, memfd, reason),
			     -EINVAL);
		cr_expect(strstr(reason, "WP_ASYNC") != NULL, "reason: %s", reason);
		close(uffd);
	} else {
		cr_log_warn("this kernel has no UFFD_FEATURE_WP_ASYNC; that case is not tested");
	}
	munmap(addr, 64 * PAGE);
	close(memfd);

	/* Missing EVENT_REMOVE: the daemon would never hear of discards. */
	uffd = make_region(UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM, 64 * PAGE,
			   &memfd, &addr, true);
	cr_expect_eq(reg_send(fd, (uint64_t)(uintptr_t)addr, 64 * PAGE, uffd, memfd, reason), -EINVAL);
	cr_expect(strstr(reason, "lacks required features") != NULL, "reason: %s", reason);
	free_region(uffd, memfd, addr, 64 * PAGE);
	close(fd);
	expect_serving();
	td_expect_stop(&fmd);
}

/* The parsers behind those checks, without a daemon. */
Test(hostile_register, maps_and_fdinfo_parsers)
{
	uint64_t feat = 0;
	const char *maps = "1000-3000 rw-s 00000000 00:01 77 /memfd:a (deleted)\n"
			   "3000-5000 rw-s 00002000 00:01 77 /memfd:a (deleted)\n"
			   "5000-6000 rw-p 00004000 00:01 77 /memfd:a (deleted)\n"
			   "7000-8000 rw-s 00001000 00:01 77 /memfd:a (deleted)\n";
	dev_t dev = makedev(0, 1);

	cr_expect_eq(reg_uffd_features_parse("pos:\t0\nAPI:\taa:80000022:80000000000001ff\n", &feat), 0);
	cr_expect_eq(feat, 0x80000022u);
	cr_expect_eq(reg_uffd_features_parse("pos:\t0\n", &feat), -ENOENT);
	cr_expect(reg_maps_cover(maps, dev, 77, 0x1000, 0x4000));
	cr_expect(reg_maps_cover(maps, dev, 77, 0x1000, 0x1000));
	cr_expect(!reg_maps_cover(maps, dev, 77, 0x2000, 0x1000), "offset 0x1000 is not at 0");
	cr_expect(!reg_maps_cover(maps, dev, 77, 0x1000, 0x5000), "a private mapping");
	cr_expect(!reg_maps_cover(maps, dev, 78, 0x1000, 0x1000), "another inode");
	cr_expect(!reg_maps_cover(maps, dev, 77, 0x1000, 0x7000), "a hole");
	cr_expect(!reg_maps_cover(maps, dev, 77, 0, 0));
}

static int count_regions(void)
{
	return (int)td_stat(&fmd, "regions");
}

/* Finding 6: one uid cannot take every region slot or register without
 * bound; another uid (root here) still registers. */
Test(hostile_register, per_uid_quotas, .timeout = 60)
{
	const char *sets[] = { "register.allowed_uids=[0, 65534]", "register.mode=0o666",
			       "register.max_regions_per_uid=3", "register.max_mib_per_uid=64", NULL };
	int pipefd[2];
	pid_t pid;

	cr_assert_eq(td_start(&fmd, sets), 0);
	cr_assert_eq(chmod(fmd.dir, 0755), 0);
	cr_assert_eq(pipe(pipefd), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		/* uffds are made as root (nobody may not open one here), then
		 * the child becomes nobody and registers as nobody. */
		int memfd[6], uffd[6];
		void *addr[6];
		char reason[160], line[256];
		int fd, n = 0;

		close(pipefd[0]);
		for (int i = 0; i < 6; i++)
			uffd[i] = make_region(FEATURES, i == 5 ? 80u << 20 : 16 * PAGE, &memfd[i], &addr[i], true);
		if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
			_exit(2);
		fd = reg_connect();
		/* Over the byte quota first (80 MiB > 64 MiB), then the count. */
		int rc = reg_send(fd, (uint64_t)(uintptr_t)addr[5], 80u << 20, uffd[5], memfd[5], reason);
		n += snprintf(line + n, sizeof(line) - (size_t)n, "%d|%s\n", rc, reason);
		for (int i = 0; i < 4; i++) {
			rc = reg_send(fd, (uint64_t)(uintptr_t)addr[i], 16 * PAGE, uffd[i], memfd[i], reason);
			if (i == 3)
				n += snprintf(line + n, sizeof(line) - (size_t)n, "%d|%s\n", rc, reason);
			else if (rc != 0)
				_exit(3);
		}
		if (write(pipefd[1], line, (size_t)n) != n)
			_exit(4);
		close(pipefd[1]);
		pause();   /* hold the regions until the parent is done */
		_exit(0);
	}
	close(pipefd[1]);
	char buf[512] = { 0 };
	ssize_t got = 0, r;
	while ((r = read(pipefd[0], buf + got, sizeof(buf) - 1 - (size_t)got)) > 0)
		if (memchr(buf, '\n', (size_t)(got += r)) && strchr(strchr(buf, '\n') + 1, '\n'))
			break;
	close(pipefd[0]);
	cr_expect(strncmp(buf, "-122|", 5) == 0 && strstr(buf, "max_mib_per_uid"),
		  "byte quota not enforced: %s", buf);
	char *second = strchr(buf, '\n');
	cr_assert_not_null(second, "child said: %s", buf);
	cr_expect(strncmp(second + 1, "-122|", 5) == 0 && strstr(second, "max_regions_per_uid"),
		  "region quota not enforced: %s", second + 1);
	cr_expect_eq(count_regions(), 3);
	/* Root is another uid: its quota is its own. */
	expect_serving();
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	td_expect_stop(&fmd);
}

static long rss_kib(pid_t pid)
{
	return (long)fm_proc_value(pid, "status", "VmRSS");
}

/* Finding 6: the daemon pays for touched pages, not registered ones. Two
 * 1 TiB sparse regions used to add 3.3 GB to the daemon and take seconds
 * each, while control queries failed. */
Test(hostile_register, huge_sparse_regions_cost_nothing_until_touched, .timeout = 60)
{
	const char *sets[] = { "register.max_region_mib=2097152", NULL };
	struct fm_client *c;
	struct fm_region *r[2];
	long before, after;

	cr_assert_eq(td_start(&fmd, sets), 0);
	c = fm_connect(fmd.reg);
	cr_assert_not_null(c);
	before = rss_kib(fmd.pid);
	for (int i = 0; i < 2; i++) {
		uint64_t t0 = fm_now_ns();

		r[i] = fm_region_create(c, 1ull << 40, "sparse");
		cr_assert_not_null(r[i], "1 TiB refused: %s", fm_client_error(c));
		double s = (double)(fm_now_ns() - t0) / 1e9;
		cr_expect_lt(s, 0.5, "registering 1 TiB took %.2f s", s);
		char *rep = td_ctl(&fmd, "v1 stats");
		cr_expect(rep && strstr(rep, "\"ok\":true"), "a control query failed: %s", rep);
		free(rep);
	}
	/* Touch a page at each end and in the middle: served, verified. */
	for (int i = 0; i < 2; i++) {
		uint8_t *p = fm_region_addr(r[i]);
		uint64_t offs[] = { 0, 1ull << 39, (1ull << 40) - PAGE };
		for (int k = 0; k < 3; k++)
			p[offs[k]] = (uint8_t)(0x40 + k);
		for (int k = 0; k < 3; k++)
			cr_expect_eq(p[offs[k]], 0x40 + k);
	}
	after = rss_kib(fmd.pid);
	cr_expect_lt(after - before, 8 * 1024, "two sparse 1 TiB regions added %ld KiB to the daemon",
		     after - before);
	cr_expect_leq(td_stat(&fmd, "tracked"), 6 * 512, "tracked pages beyond the touched stripes");
	for (int i = 0; i < 2; i++)
		fm_region_destroy(r[i]);
	fm_disconnect(c);
	td_expect_stop(&fmd);
}
