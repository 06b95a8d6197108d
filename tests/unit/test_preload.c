/* The preload shim (libfluidmem-preload.so) and fluidmem-run, black box: the
 * real daemon, and fake-qemu (tests/vm/fake_qemu.c) allocating memory the
 * way QEMU does. The real QEMU runs in tests/vm/vm_test.sh. */
#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>

#include "base/base.h"
#include "harness.h"

#define RUN FM_BUILD_DIR "/bin/fluidmem-run"
#define SHIM FM_BUILD_DIR "/lib/libfluidmem-preload.so"
#define FAKE FM_BUILD_DIR "/tests/fake-qemu"

static struct td fmd;

static uint64_t now_ms(void)
{
	return fm_now_ns() / 1000000u;
}

struct child {
	pid_t pid;
	int in, out, err;       /* its stdin, stdout and stderr */
	char outbuf[8192], errbuf[8192];
	size_t outlen, errlen;
};

/* Run argv with extra "K=V" environment entries (NULL-terminated). A
 * sanitizer build preloads our instrumented shim into an instrumented
 * program, after its runtime: tell ASan that this order is intended. */
static void spawn(struct child *c, const char *const *argv, const char *const *env)
{
	int pin[2], pout[2], perr[2];

	memset(c, 0, sizeof(*c));
	cr_assert(pipe(pin) == 0 && pipe(pout) == 0 && pipe(perr) == 0);
	c->pid = fork();
	cr_assert_geq(c->pid, 0);
	if (c->pid == 0) {
		const char *asan = getenv("ASAN_OPTIONS");
		char opts[512];

		snprintf(opts, sizeof(opts), "%s%sverify_asan_link_order=0", asan ? asan : "",
			 asan && *asan ? ":" : "");
		setenv("ASAN_OPTIONS", opts, 1);
		for (int i = 0; env && env[i]; i++)
			putenv((char *)env[i]);
		dup2(pin[0], 0);
		dup2(pout[1], 1);
		dup2(perr[1], 2);
		for (int fd = 3; fd < 64; fd++)
			close(fd);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(pin[0]);
	close(pout[1]);
	close(perr[1]);
	c->in = pin[1];
	c->out = pout[0];
	c->err = perr[0];
}

/* Collect output until `want` shows in stdout, the child closes it, or
 * timeout_ms passes. True when `want` was seen (want NULL: until EOF). */
static bool collect(struct child *c, const char *want, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	bool out_open = true, err_open = true;

	while (out_open || err_open) {
		struct pollfd p[2] = { { out_open ? c->out : -1, POLLIN, 0 },
				       { err_open ? c->err : -1, POLLIN, 0 } };
		int64_t left = (int64_t)(end - now_ms());

		if (want && strstr(c->outbuf, want))
			return true;
		if (left <= 0 || poll(p, 2, (int)left) <= 0)
			return false;
		for (int i = 0; i < 2; i++) {
			char *buf = i ? c->errbuf : c->outbuf;
			size_t *len = i ? &c->errlen : &c->outlen;
			ssize_t n;

			if (!(p[i].revents & (POLLIN | POLLHUP)))
				continue;
			n = read(p[i].fd, buf + *len, 8191 - *len);
			if (n <= 0) {
				if (i)
					err_open = false;
				else
					out_open = false;
				continue;
			}
			*len += (size_t)n;
			buf[*len] = '\0';
		}
	}
	return want ? strstr(c->outbuf, want) != NULL : true;
}

/* Close its stdin, read the rest and reap it: the exit status (128+sig). */
static int finish(struct child *c)
{
	int status;

	if (c->in >= 0)
		close(c->in);
	c->in = -1;
	collect(c, NULL, 60000);
	if (waitpid(c->pid, &status, 0) != c->pid)
		return -1;
	close(c->out);
	close(c->err);
	if (strstr(c->outbuf, "FAIL"))
		fprintf(stderr, "--- stdout:\n%s--- stderr:\n%s---\n", c->outbuf, c->errbuf);
	/* A sanitizer report from the child (the shim's own code runs there)
	 * fails the test even when the exit status is the expected one. */
	cr_expect(!strstr(c->errbuf, "Sanitizer") && !strstr(c->errbuf, "runtime error:"),
		  "sanitizer report from the child:\n%s", c->errbuf);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Start the daemon with `sets`, then argv (whose argv[2] is the --socket
 * value, filled in here) as a child with env. */
static void spawn_on_daemon(struct child *c, const char **argv, const char *const *sets,
			    const char *const *env)
{
	td_must_start(&fmd, sets);
	argv[2] = fmd.reg;
	spawn(c, argv, env);
}

/* QEMU-like RAM (converted anonymous memory) and a memfd backend, 12x the
 * budget: registered inside mmap, served, evicted, verified; discards read
 * zeros and free stored copies; munmap unregisters. */
Test(preload, serves_anonymous_and_memfd_ram, .timeout = 240)
{
	const char *sets[] = { "memory.resident_pages=2048", NULL };
	const char *argv[] = { RUN, "--socket", fmd.reg, "--min-size", "16M", "--", FAKE, "serve",
			       "64", NULL };
	struct child c;

	spawn_on_daemon(&c, argv, sets, NULL);
	cr_assert(collect(&c, "UNMAPPED", 180000), "fake-qemu did not get through:\n%s\n%s",
		  c.outbuf, c.errbuf);
	cr_expect_eq(td_stat(&fmd, "registrations"), 2, "RAM and the memfd backend, nothing else");
	cr_expect_eq(td_stat(&fmd, "regions"), 0, "munmap must unregister");
	cr_expect_eq(td_stat(&fmd, "store_bytes"), 0, "unregistered regions keep no pages");
	cr_expect_gt(td_stat(&fmd, "evictions"), 10000, "96 MiB through an 8 MiB budget");
	/* pages came back from the store, on demand or prefetched */
	cr_expect_gt(td_stat(&fmd, "fetches") + td_stat(&fmd, "prefetched"), 10000);
	cr_expect_gt(td_stat(&fmd, "discarded"), 0, "MADV_DONTNEED must reach the daemon");
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	cr_expect_eq(finish(&c), 0);
	cr_expect_null(strstr(c.outbuf, "FAIL"));
	td_expect_stop(&fmd);
}

Test(preload, run_without_daemon_exits_3)
{
	const char *argv[] = { RUN, "--socket", "/nonexistent/fluidmem.sock", "--", "/bin/true", NULL };
	struct child c;

	spawn(&c, argv, NULL);
	cr_expect_eq(finish(&c), 3);
	cr_expect_not_null(strstr(c.errbuf, "not reachable at /nonexistent/fluidmem.sock"), "%s",
			   c.errbuf);
}

/* LD_PRELOAD by hand with no daemon: the program must not run on. */
Test(preload, shim_without_daemon_fails_fast)
{
	const char *argv[] = { FAKE, "one", "80", NULL };
	const char *env[] = { "LD_PRELOAD=" SHIM, "FLUIDMEM_SOCKET=/nonexistent/fluidmem.sock", NULL };
	struct child c;

	spawn(&c, argv, env);
	cr_expect_eq(finish(&c), 1);
	cr_expect_null(strstr(c.outbuf, "TOUCHED"), "the program ran on unserved memory");
	cr_expect_not_null(strstr(c.errbuf, "cannot reach fluidmemd at /nonexistent/fluidmem.sock"),
			   "%s", c.errbuf);
}

Test(preload, refused_registration_exits)
{
	const char *sets[] = { "register.allowed_uids=[12345]", NULL };
	const char *argv[] = { RUN, "--socket", NULL, "--", FAKE, "one", "80", NULL };
	struct child c;

	spawn_on_daemon(&c, argv, sets, NULL);
	cr_expect_eq(finish(&c), 1);
	cr_expect_null(strstr(c.outbuf, "TOUCHED"));
	cr_expect_not_null(strstr(c.errbuf, "may not register memory here"), "%s", c.errbuf);
	td_expect_stop(&fmd);
}

/* Once memory is served, a refused mapping (a hot-plug) fails with ENOMEM
 * and the program, a running VM, goes on. */
Test(preload, later_mapping_fails_with_enomem, .timeout = 60)
{
	const char *argv[] = { RUN, "--socket", NULL, "--min-size", "16M", "--", FAKE, "plug", "32",
			       NULL };
	struct child c;

	spawn_on_daemon(&c, argv, NULL, NULL);
	cr_assert(collect(&c, "READY", 30000), "%s\n%s", c.outbuf, c.errbuf);
	cr_expect_eq(td_stop(&fmd), 0);
	cr_expect_eq(write(c.in, "\n", 1), 1);
	cr_expect(collect(&c, "PLUG ENOMEM", 30000), "%s\n%s", c.outbuf, c.errbuf);
	cr_expect_eq(finish(&c), 0);
	cr_expect_not_null(strstr(c.errbuf, "failing this mmap with ENOMEM"), "%s", c.errbuf);
}

Test(preload, match_filter_and_threshold)
{
	const char *argv[] = { RUN, "--socket", NULL, "--match", "memory-backend", "--debug", "--",
			       FAKE, "one", "80", NULL };
	struct child c;

	spawn_on_daemon(&c, argv, NULL, NULL);
	cr_expect_eq(finish(&c), 0);
	cr_expect_not_null(strstr(c.outbuf, "TOUCHED"));
	cr_expect_not_null(strstr(c.errbuf, "FLUIDMEM_MATCH has no \"anon\""), "%s", c.errbuf);
	/* Below the threshold: not taken, no daemon needed. */
	{
		const char *argv2[] = { RUN, "--socket", fmd.reg, "--min-size", "1G", "--", FAKE, "one",
					"80", NULL };
		spawn(&c, argv2, NULL);
		cr_expect_eq(finish(&c), 0);
	}
	cr_expect_eq(td_stat(&fmd, "registrations"), 0);
	td_expect_stop(&fmd);
}

Test(preload, bad_sizes_are_refused_clearly)
{
	const char *argv[] = { RUN, "--min-size", "12Q", "--", "/bin/true", NULL };
	const char *argv2[] = { FAKE, "one", "80", NULL };
	const char *env[] = { "LD_PRELOAD=" SHIM, "FLUIDMEM_MIN_SIZE=lots", NULL };
	struct child c;

	spawn(&c, argv, NULL);
	cr_expect_eq(finish(&c), 2);
	cr_expect_not_null(strstr(c.errbuf, "\"12Q\" is not a size"), "%s", c.errbuf);
	spawn(&c, argv2, env);
	cr_expect_eq(finish(&c), 1);
	cr_expect_not_null(strstr(c.errbuf, "FLUIDMEM_MIN_SIZE=\"lots\" is not a size"), "%s",
			   c.errbuf);
}

/* Run fake-qemu MODE MIB under fluidmem-run (min size 16M) on the daemon
 * started by td_must_start(&fmd, ); wait for `want` on stdout. */
static void run_fake(struct child *c, const char *mode, const char *mib, const char *want,
		     int timeout_ms)
{
	const char *argv[] = { RUN, "--socket", fmd.reg, "--min-size", "16M", "--", FAKE, mode,
			       mib, NULL };

	spawn(c, argv, NULL);
	cr_assert(collect(c, want, timeout_ms), "fake-qemu %s did not get to %s:\n%s\n%s", mode,
		  want, c->outbuf, c->errbuf);
}

/* A daemon with the default config, fake-qemu MODE run to `want` and to a
 * clean exit. */
static void run_fake_alone(struct child *c, const char *mode, const char *mib, const char *want,
			   int timeout_ms)
{
	td_must_start(&fmd, NULL);
	run_fake(c, mode, mib, want, timeout_ms);
	cr_expect_eq(finish(c), 0, "%s\n%s", c->outbuf, c->errbuf);
}

/* Issue 8 finding 7: a fork child read a served memfd through its inherited
 * mapping, and 31,744 of 32,768 pages of the parent's read as zeros. Served
 * mappings are MADV_DONTFORK, and a second mapping of a served memfd is
 * refused (EBUSY) in the parent and in the child. */
Test(preload, fork_child_cannot_zero_a_served_memfd, .timeout = 120)
{
	const char *sets[] = { "memory.resident_pages=2048", NULL };
	struct child c;

	td_must_start(&fmd, sets);
	run_fake(&c, "fork", "128", "FORK done", 90000);
	cr_expect_eq(finish(&c), 0, "%s\n%s", c.outbuf, c.errbuf);
	cr_expect_not_null(strstr(c.outbuf, "child has no mapping"), "%s", c.outbuf);
	cr_expect_not_null(strstr(c.outbuf, "parent: 0 of 32768 pages changed"), "%s", c.outbuf);
	cr_expect_gt(td_stat(&fmd, "evictions"), 20000, "most pages must have been evicted");
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	td_expect_stop(&fmd);
}

/* Finding 8: the shim unregistered a region before the mmap meant to
 * replace it, so a failing one (EEXIST, EBADF) left it unserved and its
 * evicted pages read as zeros. */
Test(preload, failed_mmap_over_served_memory_keeps_it_served, .timeout = 120)
{
	const char *sets[] = { "memory.resident_pages=1024", NULL };
	struct child c;

	td_must_start(&fmd, sets);
	run_fake(&c, "replace", "64", "REPLACED", 90000);
	cr_expect_not_null(strstr(c.outbuf, "after failed replacements: 0 of 16384 pages changed"),
			   "%s\n%s", c.outbuf, c.errbuf);
	cr_expect_gt(td_stat(&fmd, "evictions"), 10000);
	cr_expect_eq(td_stat(&fmd, "registrations"), 1);
	cr_expect_eq(td_stat(&fmd, "regions"), 0, "the successful replacement unregisters");
	cr_expect_eq(finish(&c), 0, "%s\n%s", c.outbuf, c.errbuf);
	td_expect_stop(&fmd);
}

/* Finding 10: 64 rounds of RAM freed in pieces leaked a slot each, so the
 * next mapping failed with ENOMEM and 64 regions stayed registered. */
Test(preload, partial_munmaps_free_the_region, .timeout = 120)
{
	struct child c;
	char *regions;

	td_must_start(&fmd, NULL);
	run_fake(&c, "halves", "64", "HALVES done", 90000);
	cr_expect_eq(td_stat(&fmd, "registrations"), 65);
	cr_expect_eq(td_stat(&fmd, "regions"), 1, "only the last mapping is still registered");
	regions = td_ctl(&fmd, "v1 regions");
	cr_assert_not_null(regions);
	{
		int n = 0;

		for (const char *p = regions; (p = strstr(p, "\"id\":")); p++)
			n++;
		cr_expect_eq(n, 1, "%s", regions);
	}
	free(regions);
	cr_expect_eq(finish(&c), 0, "%s\n%s", c.outbuf, c.errbuf);
	td_expect_stop(&fmd);
}

/* Finding 10: every large private anonymous mapping of any preloaded
 * program became a shared memfd marked MADV_DONTFORK, so a plain program's
 * forked child died of SIGSEGV reading its malloc'd memory. */
Test(preload, plain_program_keeps_fork_semantics, .timeout = 60)
{
	struct child c;

	run_fake_alone(&c, "malloc", "256", "MALLOC done", 30000);
	cr_expect_eq(td_stat(&fmd, "registrations"), 0, "malloc'd memory is not taken over");
	td_expect_stop(&fmd);
}

/* Finding 10: the atfork child handler kept the parent's connection and
 * re-initialised a mutex that could be held. Children forked while another
 * thread registers must not deadlock, hold the parent's socket, or fail to
 * register memory of their own. */
Test(preload, fork_during_registration, .timeout = 120)
{
	struct child c;

	run_fake_alone(&c, "forkreg", "16", "FORKREG done", 90000);
	cr_expect_not_null(strstr(c.outbuf, "20 of 20 children fine"), "%s", c.outbuf);
	td_expect_stop(&fmd);
}

/* Finding 10: a hot-plug while fluidmemd is stopped (SIGSTOP: it holds the
 * connection and never answers) hung in mmap, and under the shim's one
 * global lock every other large mmap, munmap and madvise hung with it. It
 * now fails with ENOMEM within FLUIDMEM_TIMEOUT, the failed mapping raises
 * no event that would wait for the stopped daemon, and unrelated calls go
 * on meanwhile. */
Test(preload, hotplug_against_stopped_daemon_fails_in_time, .timeout = 60)
{
	const char *argv[] = { RUN, "--socket", NULL, "--min-size", "16M", "--", FAKE, "plug", "32",
			       NULL };
	/* 2 s: a call that waited for the daemon would take about that long,
	 * far from the ~0 ms an unrelated call takes even on a busy machine. */
	const char *env[] = { "FLUIDMEM_TIMEOUT=2", NULL };
	struct child c;
	uint64_t t0;

	spawn_on_daemon(&c, argv, NULL, env);
	cr_assert(collect(&c, "READY", 30000), "%s\n%s", c.outbuf, c.errbuf);
	cr_assert_eq(kill(fmd.pid, SIGSTOP), 0);
	t0 = now_ms();
	cr_expect_eq(write(c.in, "\n", 1), 1);
	cr_expect(collect(&c, "PLUG ENOMEM", 10000), "%s\n%s", c.outbuf, c.errbuf);
	cr_expect_lt(now_ms() - t0, 5000, "the hot-plug took %llu ms",
		     (unsigned long long)(now_ms() - t0));
	cr_expect_not_null(strstr(c.errbuf, "did not answer within 2 s"), "%s", c.errbuf);
	kill(fmd.pid, SIGCONT);
	cr_expect_eq(finish(&c), 0);
	/* Meanwhile another thread's unrelated mmap/madvise/munmap went on:
	 * only the registration exchange waits for the daemon. */
	{
		const char *u = strstr(c.outbuf, "UNRELATED ");
		unsigned long long rounds = 0, slowest = ~0ull;

		cr_assert_not_null(u, "%s", c.outbuf);
		cr_expect_eq(sscanf(u, "UNRELATED %llu rounds, slowest %llu ms", &rounds, &slowest), 2);
		cr_expect_gt(rounds, 10, "%s", u);
		cr_expect_lt(slowest, 1000, "%s", u);
	}
	td_expect_stop(&fmd);
}
