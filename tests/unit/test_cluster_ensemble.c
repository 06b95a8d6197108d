/* src/cluster across a ZooKeeper leader change: a three-server ensemble on
 * loopback (tests/zk_harness.h) whose leader is killed while a node writes.
 * Its own program because three JVMs cost several seconds of both CPUs. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "zk_harness.h"

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
