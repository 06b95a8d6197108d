/* src/cluster across a ZooKeeper leader change: a three-server ensemble on
 * loopback (tests/zk_harness.h) whose leader is killed while a node writes,
 * first the module on its own, then inside fluidmemd under a verifying fault
 * storm. Its own program because three JVMs cost several seconds of both
 * CPUs. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
/* The multi-threaded client declares its sync calls only with THREADED. */
#define THREADED
#include <zookeeper/zookeeper.h>

#include "cluster/cluster.h"
#include "cluster_daemon.h"

static struct cluster_region region_of(struct cluster *c, int i)
{
	struct cluster_region r = { .pid = 99, .start_time = 1, .size = 4096u * (unsigned)(i + 1) };

	cr_assert_eq(cluster_region_id(c, &r.id), 0);
	snprintf(r.name, sizeof(r.name), "r%d", i);
	snprintf(r.ns, sizeof(r.ns), "fm%u", cluster_node_id(c));
	return r;
}

Test(cluster_ensemble, leader_killed_module_keeps_working, .timeout = 120)
{
	struct zke e;
	struct cluster_opts o;
	struct cluster *c, *c2;
	struct cluster_region r[10], *v;
	struct cluster_stats st;
	size_t n;
	int leader, rc;

	cr_assert_eq(zke_start(&e), 0, "the ensemble did not form (see /tmp/fmzk.*/zk.log)");
	o = (struct cluster_opts){ .hosts = e.hosts, .root = "/t_ens", .node_id = 1,
				   .session_timeout_ms = 10000, .orphan_grace_ms = 5000 };
	c = cluster_create(&o);
	cr_assert(c, "%s", strerror(errno));
	for (int i = 0; i < 5; i++) {
		r[i] = region_of(c, i);
		cr_assert_eq(cluster_region_create(c, &r[i]), 0);
	}
	leader = zke_leader(&e);
	cr_assert_geq(leader, 0, "no member reports Mode: leader");
	zkh_kill(&e.s[leader], SIGKILL);
	/* Writes go on: applied, or queued while the survivors elect. */
	for (int i = 5; i < 10; i++) {
		r[i] = region_of(c, i);
		rc = cluster_region_create(c, &r[i]);
		cr_assert(rc == 0 || rc == 1, "create %d: %d", i, rc);
	}
	for (int i = 0; i < 1500; i++) {
		cluster_get_stats(c, &st);
		if (cluster_state(c) == CLUSTER_CONNECTED && st.queue_len == 0)
			break;
		lb_sleep_ms(20);
	}
	cr_assert_eq(cluster_state(c), CLUSTER_CONNECTED, "state %s",
		     cluster_state_name(cluster_state(c)));
	cr_assert_eq(st.queue_len, 0);
	cr_assert_eq(st.reconnects, 0, "the session should survive a leader change");
	/* Whichever server it was on dropped it (a follower that loses its
	 * leader closes its clients): the connection was lost and re-made. */
	cr_assert_geq(st.disconnects, 1, "no lost connection counted");
	cr_assert_eq(cluster_regions_list(c, 1, &v, &n), 0);
	cr_assert_eq(n, 10);
	free(v);
	/* The surviving quorum still leases ids: node 1 taken, node 2 free. */
	o.node_id = 1;
	cr_assert_null(cluster_create(&o));
	cr_assert_eq(errno, EEXIST);
	o.node_id = 2;
	c2 = cluster_create(&o);
	cr_assert(c2, "%s", strerror(errno));
	cr_assert_eq(cluster_regions_list(c2, -1, &v, &n), 0);
	cr_assert_eq(n, 10);
	free(v);
	cluster_destroy(c2);
	cluster_destroy(c);
	zke_stop(&e);
}

static void zk_quiet_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
	(void)zh, (void)type, (void)state, (void)path, (void)ctx;
}

/* The data of znode path, read through the ensemble's survivors, in buf;
 * -1 if it does not exist or no server answered within 20 s. */
static int zk_read(const char *hosts, const char *path, char *buf, int len)
{
	zhandle_t *zh;
	struct Stat st;
	int rc = -1, n = len - 1;

	zoo_set_debug_level((ZooLogLevel)0);   /* no log line per dead server tried */
	zh = zookeeper_init(hosts, zk_quiet_watcher, 10000, NULL, NULL, 0);
	if (!zh)
		return -1;
	for (int i = 0; i < 400 && zoo_state(zh) != ZOO_CONNECTED_STATE; i++)
		td_sleep_ms(50);
	if (zoo_state(zh) == ZOO_CONNECTED_STATE &&
	    zoo_get(zh, path, 0, buf, &n, &st) == ZOK && st.ephemeralOwner != 0) {
		buf[n < 0 ? 0 : n] = '\0';
		rc = 0;
	}
	zookeeper_close(zh);
	return rc;
}

/* fluidmemd on the ensemble, a verifying 2-thread storm over 4x its budget,
 * the ZooKeeper leader killed -9 in the middle: the storm sees no error, the
 * daemon's session comes back through a survivor with its lease still held,
 * and a registration after the change gets its record. */
Test(cluster_ensemble, leader_killed_under_daemon_storm, .timeout = 180)
{
	const char *extra[] = { "memory.resident_pages=1024", "cluster.session_timeout_ms=10000",
				NULL };
	struct zke e;
	struct mcd m;
	struct td n1;
	struct cd_sets s1;
	struct fm_client *c;
	struct fm_region *r;
	char out[8192] = { 0 }, lease[256], state[32], host[128], boot[64];
	FILE *storm;
	uint64_t t_kill, t_back = 0, id;
	int leader, pid = 0;

	cr_assert_eq(zke_start(&e), 0, "the ensemble did not form (see /tmp/fmzk.*/zk.log)");
	cr_assert_eq(mcd_start(&m, 128, false), 0);
	cr_assert_eq(td_start(&n1, cd_node_sets(&s1, e.hosts, "/fmtest/ensemble", &m, "1", extra)),
		     0);
	cr_assert_eq(td_stat(&n1, "cluster_disconnects"), 0);
	cr_assert_eq(td_stat(&n1, "cluster_reconnects"), 0);
	storm = cd_storm_start(&n1, 12);
	cr_assert_not_null(storm);
	/* Half-way into the first pass: pages live in memcached already. */
	for (int i = 0; i < 3000 && td_stat(&n1, "evictions") < 2048; i++)
		td_sleep_ms(10);
	cr_assert_eq(td_stat(&n1, "regions"), 1, "the storm did not start, or ended too early");

	leader = zke_leader(&e);
	cr_assert_geq(leader, 0, "no member reports Mode: leader");
	zkh_kill(&e.s[leader], SIGKILL);
	t_kill = cd_ms();
	cr_expect_eq(td_stat(&n1, "regions"), 1, "the storm ended before the leader died");
	for (int i = 0; i < 1000 && td_stat(&n1, "cluster_disconnects") < 1; i++)
		td_sleep_ms(10);
	cr_expect_geq(td_stat(&n1, "cluster_disconnects"), 1,
		      "the daemon's connection outlived the leader");
	for (uint64_t end = cd_ms() + 60000; cd_ms() < end; td_sleep_ms(50))
		if (!strcmp(cd_cluster_state(&n1, state, sizeof(state)), "connected")) {
			t_back = cd_ms();
			break;
		}
	cr_assert(t_back, "the session did not come back: cluster_state %s", state);
	cr_expect_eq(td_stat(&n1, "regions"), 1, "the storm ended before the session was back");
	fprintf(stderr, "leader_killed_under_daemon_storm: leader was server %d; session back "
			"%" PRIu64 " ms after the kill; disconnects %" PRId64 ", reconnects %" PRId64
			"\n",
		leader + 1, t_back - t_kill, td_stat(&n1, "cluster_disconnects"),
		td_stat(&n1, "cluster_reconnects"));
	/* cluster_reconnects counts sessions re-made after expiry
	 * (src/cluster/session.c): the election takes about 0.5 s, well
	 * within the 10 s session timeout, so the same session resumed on a
	 * survivor, as in leader_killed_module_keeps_working. */
	cr_expect_eq(td_stat(&n1, "cluster_reconnects"), 0,
		     "the session expired and was re-made: it should survive a leader change");

	/* The lease is still held, by this fluidmemd. */
	cr_assert_eq(zk_read(e.hosts, "/fmtest/ensemble/nodes/1", lease, sizeof(lease)), 0,
		     "the lease znode is gone");
	cr_expect(sscanf(lease, "%127s %63s %d", host, boot, &pid) == 3 && pid == n1.pid,
		  "the lease is held by \"%s\", not fluidmemd %d", lease, (int)n1.pid);
	/* A registration after the change: its record is in ZooKeeper. */
	r = td_region(&n1, &c, 256, "after-leader-change");
	id = fm_region_id(r);
	cd_stamp(r, 256, 7);
	for (uint64_t end = cd_ms() + 20000; cd_ms() < end && !cd_cluster_lists(&n1, id, 1);)
		td_sleep_ms(100);
	cr_expect(cd_cluster_lists(&n1, id, 1), "the record of a region made after the leader "
						"change is not listed");

	cd_storm_finish(storm, out, sizeof(out));
	fprintf(stderr, "leader_killed_under_daemon_storm: storm %s\n", out);
	cr_expect_eq(cd_check(r, 256, 7), 0);
	cr_expect_eq(td_stat(&n1, "poisoned"), 0);
	cr_expect_eq(td_stat(&n1, "cluster_records_failed"), 0);
	cr_expect_eq(td_stat(&n1, "cluster_write_errors"), 0);
	cr_expect_eq(td_stat(&n1, "cluster_reconnects"), 0, "a session expired after the change");
	cd_cluster_state(&n1, state, sizeof(state));
	cr_expect_str_eq(state, "connected");
	fm_region_destroy(r);
	fm_disconnect(c);
	td_expect_stop(&n1);
	mcd_stop(&m);
	zke_stop(&e);
}
