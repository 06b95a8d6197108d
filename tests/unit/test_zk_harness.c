/* The ZooKeeper test harness itself (tests/zk_harness.h): the cluster tests
 * that restart a server trust zkh_restart to return only once their own
 * server serves on their port. Two ways that went wrong and made those
 * tests flaky: `ruok` answers "imok" before the server serves (clients are
 * then refused for a while), and a port freed by our kill can be taken by
 * another test's server, whose answers looked like ours. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zk_harness.h"

/* srvr: the server answers clients now (not "not currently serving"). */
static bool serves_now(unsigned port, char *buf, size_t len)
{
	return zkh_4lw(port, "srvr", buf, len) == 0 && strstr(buf, "Mode: ") &&
	       !strstr(buf, "not currently serving");
}

/* conf: the server on port keeps its data in dir/data. */
static bool data_dir_is(unsigned port, const char *dir)
{
	char buf[2048], want[128];

	snprintf(want, sizeof(want), "\ndataDir=%s/data/", dir);
	return zkh_4lw(port, "conf", buf, sizeof(buf)) == 0 && strstr(buf, want);
}

/* Another standalone server on a given port with its own data dir, made
 * from the harness's pieces: what another test's server looks like. */
static int start_foreign(struct zkh *f, unsigned port)
{
	memset(f, 0, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/fmzk.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	f->port = port;
	snprintf(f->hosts, sizeof(f->hosts), "127.0.0.1:%u", port);
	if (zkh_write_cfg(f, "") < 0 || zkh_spawn(f) < 0)
		return -1;
	return zkh_wait(f, 30000);
}

/* zkh_restart returns once the new process serves clients on the same port,
 * and that server is ours: conf names our data dir. Three restarts: the
 * window in which a starting server answers ruok but refuses clients is
 * about 0.3 s, and the old harness returned inside it every time. */
Test(zk_harness, restart_returns_when_our_server_serves, .timeout = 120)
{
	struct zkh z;
	char buf[2048];

	cr_assert_eq(zkh_start(&z), 0, "ZooKeeper did not start (java, package zookeeper?)");
	cr_expect(serves_now(z.port, buf, sizeof(buf)), "after start: %s", buf);
	cr_expect(data_dir_is(z.port, z.dir), "conf does not name %s/data", z.dir);
	for (int i = 0; i < 3; i++) {
		pid_t old = z.pid;
		unsigned port = z.port;

		cr_assert_eq(zkh_restart(&z), 0, "restart %d failed (see %s/zk.log)", i, z.dir);
		cr_expect_neq(z.pid, old, "restart %d: the same process", i);
		cr_expect_eq(z.port, port);
		cr_expect(serves_now(z.port, buf, sizeof(buf)),
			  "restart %d returned before the server serves: %s", i, buf);
		cr_expect(data_dir_is(z.port, z.dir), "restart %d: conf does not name %s/data", i,
			  z.dir);
	}
	zkh_stop(&z);
}

/* Our server killed, its port taken by another test's server meanwhile:
 * the restart fails (quickly: our JVM cannot bind) instead of passing the
 * other server off as ours, and the other server is left alone. */
Test(zk_harness, restart_refuses_a_foreign_server_on_our_port, .timeout = 120)
{
	struct zkh ours, foreign;
	char buf[2048];
	uint64_t t0;
	struct timespec ts;

	cr_assert_eq(zkh_start(&ours), 0, "ZooKeeper did not start (java, package zookeeper?)");
	zkh_kill(&ours, SIGKILL);
	cr_assert_eq(start_foreign(&foreign, ours.port), 0, "the other server did not start");
	cr_expect(data_dir_is(ours.port, foreign.dir), "conf does not name the other server's dir");
	clock_gettime(CLOCK_MONOTONIC, &ts);
	t0 = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	cr_expect_eq(zkh_restart(&ours), -1, "a foreign server was taken for ours");
	clock_gettime(CLOCK_MONOTONIC, &ts);
	cr_expect_lt((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 - t0, 20000,
		     "the refusal waited for the whole timeout");
	cr_expect_eq(ours.pid, 0, "our failed server is still running");
	cr_expect(serves_now(foreign.port, buf, sizeof(buf)), "the other server was hurt: %s",
		  buf);
	cr_expect(data_dir_is(foreign.port, foreign.dir));
	zkh_stop(&foreign);
	zkh_stop(&ours);
}
