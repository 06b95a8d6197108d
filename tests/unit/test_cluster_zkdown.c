/* fluidmemd with [cluster] on, ZooKeeper killed in the middle of a
 * verifying fault storm: faults, evictions and registrations go on, and the
 * state changes made meanwhile reach ZooKeeper once it is back. Its own
 * server (it is killed and restarted), in its own program. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cluster_daemon.h"

static bool cluster_connected(const struct td *t)
{
	char state[32];

	return !strcmp(cd_cluster_state(t, state, sizeof(state)), "connected");
}

Test(cluster_zkdown, storm_and_registration_while_zookeeper_is_down, .timeout = 150)
{
	/* 4 s sessions expired spuriously under load (2 CPUs, ASan); nothing
	 * here needs a fast expiry. */
	const char *extra[] = { "memory.resident_pages=1024", "cluster.session_timeout_ms=8000",
				NULL };
	struct zkh z;
	struct mcd m;
	struct td n1;
	struct cd_sets s1;
	struct fm_client *c;
	struct fm_region *r;
	char out[8192] = { 0 };
	FILE *storm;
	uint64_t t0, reg_ms, id;

	cr_assert_eq(zkh_start(&z), 0, "ZooKeeper did not start (java, package zookeeper?)");
	cr_assert_eq(mcd_start(&m, 128, false), 0);
	cr_assert_eq(td_start(&n1, cd_node_sets(&s1, z.hosts, "/fmtest/zkdown", &m, "1", extra)),
		     0);
	/* Working set 4x the budget, 2 threads, every read verified. */
	storm = cd_storm_start(&n1, 12);
	cr_assert_not_null(storm);
	for (int i = 0; i < 1000 && td_stat(&n1, "regions") < 1; i++)
		td_sleep_ms(10);
	cr_assert_eq(td_stat(&n1, "regions"), 1, "the storm did not register");

	zkh_kill(&z, SIGKILL);
	cr_expect_eq(td_stat(&n1, "regions"), 1, "the storm ended before ZooKeeper died");
	for (int i = 0; i < 500 && cluster_connected(&n1); i++)
		td_sleep_ms(10);
	cr_expect(!cluster_connected(&n1), "the daemon did not notice ZooKeeper's death");
	/* A registration with ZooKeeper down is not held up. */
	t0 = cd_ms();
	r = td_region(&n1, &c, 256, "while-down");
	reg_ms = cd_ms() - t0;
	id = fm_region_id(r);
	cr_expect(reg_ms < 1000, "registration took %" PRIu64 " ms with ZooKeeper down", reg_ms);
	cd_stamp(r, 256, 5);
	cr_expect(td_stat(&n1, "cluster_queue_len") >= 1, "the record was not queued");

	cr_assert_eq(zkh_restart(&z), 0, "ZooKeeper did not come back");
	for (uint64_t end = cd_ms() + 40000; cd_ms() < end && !cd_cluster_lists(&n1, id, 1);)
		td_sleep_ms(100);
	cr_expect(cd_cluster_lists(&n1, id, 1), "the record made while ZooKeeper was down never "
						"appeared");

	cd_storm_finish(storm, out, sizeof(out));
	cr_expect_eq(cd_check(r, 256, 5), 0);
	/* The storm's region is gone: its record too, once the queue drains. */
	for (uint64_t end = cd_ms() + 20000; cd_ms() < end && td_stat(&n1, "cluster_queue_len");)
		td_sleep_ms(100);
	char *rep = td_ctl(&n1, "v1 regions --cluster");
	cr_expect(rep && strstr(rep, "\"regions\":[{") && !strstr(rep, "},{"),
		  "exactly one record should be left: %s", rep);
	free(rep);
	fm_region_destroy(r);
	fm_disconnect(c);
	/* A stop with ZooKeeper down: the record delete stays queued (at most
	 * 2 s of waiting for it), and the stop does not hang. */
	zkh_kill(&z, SIGKILL);
	t0 = cd_ms();
	td_expect_stop(&n1);
	cr_expect(cd_ms() - t0 < 8000, "the stop took %" PRIu64 " ms with ZooKeeper down",
		  cd_ms() - t0);
	mcd_stop(&m);
	zkh_stop(&z);
}
