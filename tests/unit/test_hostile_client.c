/* libfluidmem (and the preload shim) against a daemon that does not answer,
 * answers late, or serves memory a fork child could reach: issue 8,
 * findings 7 and 10, client side. */
#include <criterion/criterion.h>
#include <poll.h>
#include <pthread.h>
#include <sys/mman.h>

#include "base/base.h"
#include "proto/proto.h"
#include "harness.h"

#define FAKE FM_BUILD_DIR "/tests/fake-qemu"
#define SHIM FM_BUILD_DIR "/lib/libfluidmem-preload.so"
#define PAGE 4096u

/* ---- a fake registration daemon ---- */

enum fake_mode { FAKE_SILENT, FAKE_LATE_FIRST };

struct fake_daemon {
	char dir[64], path[108];
	int lfd;
	enum fake_mode mode;
	pthread_t th;
	int stop_pipe[2];
	/* what it saw, for the late mode */
	int unregistered_id;    /* region id of the UNREGISTER received, or -1 */
	int requests;
};

static void fake_reply(int fd, int status, uint64_t id)
{
	struct fm_reg_reply rep = { .magic = FM_PROTO_MAGIC, .version = FM_PROTO_VERSION,
				    .type = FM_REG_REPLY, .status = status, .region_id = id };

	cr_assert_eq(send(fd, &rep, sizeof(rep), MSG_NOSIGNAL), (ssize_t)sizeof(rep));
}

/* Accept one client. Silent: hold it and never answer. Late: answer the
 * first request 1.5 s late (success, region 7), the rest at once (regions
 * 8, 9, ...), and note any UNREGISTER. Ends when stop_pipe is written. */
static void *fake_main(void *arg)
{
	struct fake_daemon *f = arg;
	int cfd = -1;
	uint64_t next_id = 7;

	for (;;) {
		struct pollfd p[2] = { { f->stop_pipe[0], POLLIN, 0 },
				       { cfd >= 0 ? cfd : f->lfd, POLLIN, 0 } };

		if (poll(p, 2, -1) < 0)
			continue;
		if (p[0].revents)
			break;
		if (!p[1].revents)
			continue;
		if (cfd < 0) {
			cfd = accept(f->lfd, NULL, NULL);
			continue;
		}
		if (f->mode == FAKE_SILENT) {
			struct fm_reg_req q;
			char cbuf[CMSG_SPACE(sizeof(int) * 2)];
			struct iovec iov = { &q, sizeof(q) };
			struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
					     .msg_controllen = sizeof(cbuf) };

			/* Take the request (keeping its descriptors, as a stuck
			 * daemon would) and say nothing. */
			if (recvmsg(cfd, &mh, MSG_CMSG_CLOEXEC) <= 0) {
				close(cfd);
				cfd = -1;
			}
			f->requests++;
			continue;
		}
		{
			struct fm_reg_req q;
			char cbuf[CMSG_SPACE(sizeof(int) * 2)];
			struct iovec iov = { &q, sizeof(q) };
			struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
					     .msg_controllen = sizeof(cbuf) };
			ssize_t n = recvmsg(cfd, &mh, MSG_CMSG_CLOEXEC);

			if (n <= 0) {
				close(cfd);
				cfd = -1;
				continue;
			}
			for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
				for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
					int fd;

					memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
					close(fd);
				}
			if (f->requests++ == 0)
				td_sleep_ms(1500);
			if (q.type == FM_REG_UNREGISTER) {
				f->unregistered_id = (int)q.region_id;
				fake_reply(cfd, 0, q.region_id);
			} else {
				fake_reply(cfd, 0, next_id++);
			}
		}
	}
	if (cfd >= 0)
		close(cfd);
	return NULL;
}

static void fake_start(struct fake_daemon *f, enum fake_mode mode)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	memset(f, 0, sizeof(*f));
	f->mode = mode;
	f->unregistered_id = -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/fmfake.XXXXXX");
	cr_assert_not_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/reg.sock", f->dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	f->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	cr_assert(f->lfd >= 0 && bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
		  listen(f->lfd, 8) == 0);
	cr_assert_eq(pipe2(f->stop_pipe, O_CLOEXEC), 0);
	cr_assert_eq(pthread_create(&f->th, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake_daemon *f)
{
	cr_assert_eq(write(f->stop_pipe[1], "x", 1), 1);
	pthread_join(f->th, NULL);
	close(f->stop_pipe[0]);
	close(f->stop_pipe[1]);
	close(f->lfd);
	unlink(f->path);
	rmdir(f->dir);
}

static bool mapped_name(const char *needle)
{
	char line[512];
	bool found = false;
	FILE *m = fopen("/proc/self/maps", "r");

	while (m && fgets(line, sizeof(line), m))
		found |= strstr(line, needle) != NULL;
	if (m)
		fclose(m);
	return found;
}

/* Finding 10: a registration waited for the daemon's reply with no bound
 * (under one global lock in the shim), so a stuck daemon hung the client's
 * mmap. Now it fails with ETIMEDOUT within FLUIDMEM_TIMEOUT and leaves
 * nothing mapped or registered. */
Test(hostile_client, silent_daemon_times_out, .timeout = 30)
{
	struct fake_daemon f;
	struct fm_client *c;
	struct fm_region *r;
	uint64_t t0;

	fake_start(&f, FAKE_SILENT);
	setenv("FLUIDMEM_TIMEOUT", "1", 1);
	c = fm_connect(f.path);
	cr_assert_not_null(c, "connect: %s", strerror(errno));
	t0 = fm_now_ns();
	r = fm_region_create(c, 16u << 20, "fm-timeout-probe");
	cr_expect_null(r);
	cr_expect_eq(errno, ETIMEDOUT, "%s", strerror(errno));
	cr_expect_lt(fm_now_ns() - t0, 3000000000ull, "took %llu ms",
		     (unsigned long long)((fm_now_ns() - t0) / 1000000));
	cr_expect_not_null(strstr(fm_client_error(c), "did not answer within 1 s"), "%s",
			   fm_client_error(c));
	cr_expect(!mapped_name("fm-timeout-probe"), "the refused region is still mapped");
	/* The reply is still owed: the next request waits for it, bounded. */
	t0 = fm_now_ns();
	cr_expect_null(fm_region_create(c, 16u << 20, "fm-timeout-probe"));
	cr_expect_eq(errno, ETIMEDOUT);
	cr_expect_lt(fm_now_ns() - t0, 3000000000ull);
	fm_disconnect(c);
	unsetenv("FLUIDMEM_TIMEOUT");
	fake_stop(&f);
}

/* A registration the daemon accepted after we gave up on it is undone
 * before the next request, and replies are never paired with the wrong
 * request. */
Test(hostile_client, late_acceptance_is_undone, .timeout = 30)
{
	struct fake_daemon f;
	struct fm_client *c;
	struct fm_region *r;

	fake_start(&f, FAKE_LATE_FIRST);
	setenv("FLUIDMEM_TIMEOUT", "1", 1);
	c = fm_connect(f.path);
	cr_assert_not_null(c);
	cr_expect_null(fm_region_create(c, 1u << 20, "late"));
	cr_expect_eq(errno, ETIMEDOUT);
	r = fm_region_create(c, 1u << 20, "next");
	cr_assert_not_null(r, "%s", fm_client_error(c));
	cr_expect_eq(f.unregistered_id, 7, "the late region 7 must be unregistered");
	cr_expect_eq(fm_region_id(r), 8, "the second request got the reply meant for the first");
	fm_disconnect(c);
	unsetenv("FLUIDMEM_TIMEOUT");
	fake_stop(&f);
}

/* The shim's first registration against a silent daemon: the program
 * exits with the reason within the timeout instead of hanging in mmap. */
Test(hostile_client, shim_mmap_against_silent_daemon_fails, .timeout = 30)
{
	struct fake_daemon f;
	char env_sock[160], err[4096] = "";
	int pe[2], st;
	uint64_t t0;
	size_t len = 0;
	pid_t pid;

	fake_start(&f, FAKE_SILENT);
	snprintf(env_sock, sizeof(env_sock), "FLUIDMEM_SOCKET=%s", f.path);
	cr_assert_eq(pipe(pe), 0);
	t0 = fm_now_ns();
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		char *argv[] = { FAKE, "one", "32", NULL };
		char *envp[] = { "LD_PRELOAD=" SHIM, env_sock, "FLUIDMEM_TIMEOUT=1",
				 "FLUIDMEM_MIN_SIZE=16M", "ASAN_OPTIONS=verify_asan_link_order=0",
				 NULL };

		dup2(pe[1], 2);
		dup2(pe[1], 1);
		execve(argv[0], argv, envp);
		_exit(127);
	}
	close(pe[1]);
	for (ssize_t n; (n = read(pe[0], err + len, sizeof(err) - 1 - len)) > 0;)
		len += (size_t)n;
	err[len] = '\0';
	close(pe[0]);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "status %#x:\n%s", st, err);
	cr_expect_null(strstr(err, "TOUCHED"), "the program ran on unserved memory");
	cr_expect_not_null(strstr(err, "did not answer within 1 s"), "%s", err);
	cr_expect_lt(fm_now_ns() - t0, 5000000000ull, "took %llu ms",
		     (unsigned long long)((fm_now_ns() - t0) / 1000000));
	fake_stop(&f);
}

/* Finding 7 with libfluidmem alone: a region registered from the caller's
 * own memfd mapping (fm_region_register) was inherited by a fork child,
 * whose reads put zeros into the evicted pages. */
Test(hostile_client, registered_mapping_is_not_inherited, .timeout = 120)
{
	const char *sets[] = { "memory.resident_pages=2048", NULL };
	const size_t size = 128u << 20;
	struct td d;
	struct fm_client *c;
	struct fm_region *r;
	uint64_t *w;
	size_t bad = 0;
	int fd, st;
	pid_t pid;

	cr_assert_eq(td_start(&d, sets), 0);
	c = fm_connect(d.reg);
	cr_assert_not_null(c);
	fd = memfd_create("hostile-fork", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	cr_assert(fd >= 0 && ftruncate(fd, (off_t)size) == 0);
	w = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(w, MAP_FAILED);
	r = fm_region_register(c, w, size, fd, "hostile-fork");
	cr_assert_not_null(r, "%s", fm_client_error(c));
	for (size_t i = 0; i < size / 8; i += PAGE / 8)
		w[i] = i ^ 0xabcdef;
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		unsigned char v;

		/* mincore fails with ENOMEM where nothing is mapped. */
		if (mincore(w, PAGE, &v) == 0) {
			size_t zero = 0;

			for (size_t i = 0; i < size / 8; i += PAGE / 8)
				zero += w[i] == 0;
			_exit(zero ? 2 : 1);
		}
		_exit(0);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child inherited the mapping (%#x)",
		  st);
	for (size_t i = 0; i < size / 8; i += PAGE / 8)
		bad += w[i] != (i ^ 0xabcdef);
	cr_expect_eq(bad, 0, "%zu of %zu pages changed", bad, size / PAGE);
	cr_expect_gt(td_stat(&d, "evictions"), 20000);
	cr_expect_eq(fm_region_destroy(r), 0);
	munmap(w, size);
	close(fd);
	fm_disconnect(c);
	cr_expect_eq(td_stop(&d), 0);
}
