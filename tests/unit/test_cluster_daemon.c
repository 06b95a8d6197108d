/* fluidmemd with [cluster] on: real daemons as nodes, sharing one memcached
 * and one ZooKeeper (started once for the program in the runner, each test
 * under its own root). ZooKeeper killed in the middle of a storm is
 * test_cluster_zkdown.c: it restarts its server. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cluster_daemon.h"

ZKH_SHARED_PER_FILE()
ReportHook(PRE_ALL)(struct criterion_test_set *set) { (void)set; zkh_shared_start(); }
ReportHook(POST_ALL)(struct criterion_global_stats *stats) { (void)stats; zkh_stop(&shared_zk); }

static void root_for(char *root, size_t n, const char *test)
{
	snprintf(root, n, "/fmtest/%s-%d", test, (int)getpid());
}

/* A second daemon with a leased id is refused at start with a clear error
 * and exit status 1; "auto" gets another id and starts. */
Test(cluster_daemon, same_node_id_refused, .timeout = 90)
{
	struct mcd m;
	struct td n1, n3;
	struct cd_sets s1, s2, s3;
	char root[96], log[16384];
	int status;

	root_for(root, sizeof(root), "refused");
	cr_assert_eq(mcd_start(&m, 64, false), 0);
	cr_assert_eq(td_start(&n1, cd_node_sets(&s1, zk_hosts(), root, &m, "7", NULL)), 0);
	cr_expect_eq(td_stat(&n1, "node_id"), 7);
	status = cd_run_to_exit(cd_node_sets(&s2, zk_hosts(), root, &m, "7", NULL), log,
				sizeof(log));
	cr_expect_eq(status, 1, "the second node 7 exited with %d:\n%s", status, log);
	cr_expect(strstr(log, "node id 7 is leased"), "no clear error:\n%s", log);
	/* auto: ZooKeeper allocates a free id. */
	cr_assert_eq(td_start(&n3, cd_node_sets(&s3, zk_hosts(), root, &m, "auto", NULL)), 0);
	int64_t id = td_stat(&n3, "node_id");
	cr_expect(id > 0 && id != 7, "auto gave %" PRId64, id);
	char *rep = td_ctl(&n3, "v1 stats");
	cr_expect(rep && strstr(rep, "\"cluster_state\":\"connected\""), "%s", rep);
	free(rep);
	td_expect_stop(&n3);
	td_expect_stop(&n1);
	mcd_stop(&m);
}

/* Records are written before the registration's ack and listed for every
 * node; they go when the region is freed. */
Test(cluster_daemon, regions_cluster_lists_both_nodes, .timeout = 90)
{
	struct mcd m;
	struct td n1, n2;
	struct cd_sets s1, s2;
	struct fm_client *c1, *c2;
	struct fm_region *r1, *r2;
	char root[96];
	uint64_t id1, id2;
	int64_t w0, w1;

	root_for(root, sizeof(root), "list");
	cr_assert_eq(mcd_start(&m, 64, false), 0);
	cr_assert_eq(td_start(&n1, cd_node_sets(&s1, zk_hosts(), root, &m, "1", NULL)), 0);
	cr_assert_eq(td_start(&n2, cd_node_sets(&s2, zk_hosts(), root, &m, "2", NULL)), 0);
	w0 = td_stat(&n1, "cluster_writes");
	r1 = td_region(&n1, &c1, 64, "vm-one");
	r2 = td_region(&n2, &c2, 128, "vm-two");
	w1 = td_stat(&n1, "cluster_writes");
	id1 = fm_region_id(r1);
	id2 = fm_region_id(r2);
	cr_expect_eq(id1 >> 48, 1);
	cr_expect_eq(id2 >> 48, 2);
	/* No wait: the ack came after the record. */
	cr_expect(cd_cluster_lists(&n1, id1, 1));
	cr_expect(cd_cluster_lists(&n1, id2, 2));
	cr_expect(cd_cluster_lists(&n2, id1, 1));
	cr_expect_eq(w1 - w0, 1, "ZooKeeper writes for one registration: %" PRId64, w1 - w0);
	char *rep = td_ctl(&n1, "v1 regions --cluster");
	cr_expect(rep && strstr(rep, "\"name\":\"vm-two\"") && strstr(rep, "\"bytes\":524288"),
		  "%s", rep);
	free(rep);
	cr_expect_eq(fm_region_destroy(r1), 0);
	for (int i = 0; i < 200 && cd_cluster_lists(&n2, id1, 1); i++)
		td_sleep_ms(20);
	cr_expect(!cd_cluster_lists(&n2, id1, 1), "the freed region's record stayed");
	cr_expect(cd_cluster_lists(&n2, id2, 2));
	fm_region_destroy(r2);
	fm_disconnect(c1);
	fm_disconnect(c2);
	td_expect_stop(&n2);
	td_expect_stop(&n1);
	mcd_stop(&m);
}

/* Node 2 killed for good: after its session and the grace, node 1 (the
 * leader) deletes node 2's keys from memcached and its records; every key
 * of node 1 stays. */
Test(cluster_daemon, dead_node_keys_collected, .timeout = 90)
{
	/* 4 s sessions expired spuriously under load (2 CPUs, ASan); node 2's
	 * collection waits its session + the grace, 10 s now. */
	const char *fast[] = { "cluster.orphan_grace_s=2", "cluster.session_timeout_ms=8000", NULL };
	enum { PAGES = 1024 };
	struct mcd m;
	struct td n1, n2;
	struct cd_sets s1, s2;
	struct fm_client *c1, *c2;
	struct fm_region *r1, *r2;
	char root[96];
	uint64_t id1, id2;
	long k1, k2, left = -1;

	root_for(root, sizeof(root), "orphan");
	cr_assert_eq(mcd_start(&m, 64, false), 0);
	cr_assert_eq(td_start(&n1, cd_node_sets(&s1, zk_hosts(), root, &m, "1", fast)), 0);
	cr_assert_eq(td_start(&n2, cd_node_sets(&s2, zk_hosts(), root, &m, "2", fast)), 0);
	r1 = td_region(&n1, &c1, PAGES, "stays");
	r2 = td_region(&n2, &c2, PAGES, "orphan");
	id1 = fm_region_id(r1);
	id2 = fm_region_id(r2);
	/* Budget 256 pages: at least 3/4 of each region goes to memcached. */
	cd_stamp(r1, PAGES, 11);
	cd_stamp(r2, PAGES, 22);
	free(td_ctl(&n1, "v1 evict 256"));
	free(td_ctl(&n2, "v1 evict 256"));
	k1 = cd_count_keys(&m, id1, PAGES);
	k2 = cd_count_keys(&m, id2, PAGES);
	cr_assert(k1 >= PAGES * 3 / 4 && k2 >= PAGES * 3 / 4, "keys: node 1 %ld, node 2 %ld", k1,
		  k2);
	cr_assert(cd_cluster_lists(&n1, id2, 2));

	kill(n2.pid, SIGKILL);
	waitpid(n2.pid, NULL, 0);
	n2.pid = 0;
	/* Session 8 s, grace 2 s, scans every 500 ms: well within 45 s. */
	for (uint64_t end = cd_ms() + 45000; cd_ms() < end; td_sleep_ms(200)) {
		left = cd_count_keys(&m, id2, PAGES);
		if (left == 0 && !cd_cluster_lists(&n1, id2, 2))
			break;
	}
	cr_expect_eq(left, 0, "node 2 still has %ld keys in memcached", left);
	cr_expect(!cd_cluster_lists(&n1, id2, 2), "node 2's record is still there");
	cr_expect_eq(cd_count_keys(&m, id1, PAGES), k1, "node 1's keys changed");
	cr_expect_eq(td_stat(&n1, "cluster_collected"), 1);
	cr_expect_eq(cd_check(r1, PAGES, 11), 0, "node 1's pages read back wrong");
	fm_region_destroy(r1);
	fm_disconnect(c1);
	/* Node 2 is gone: the unregister fails, and closing our uffd first
	 * (libfluidmem does) lets the unmap go through unserved. */
	fm_disconnect(c2);
	td_expect_stop(&n1);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", n2.dir);
	if (system(cmd) != 0) {
		/* harmless */
	}
	mcd_stop(&m);
}

/* A memcached server added in the middle of a verifying storm, through
 * ZooKeeper: 0 errors (pages whose ketama position moved are read from
 * their old server), and the new server receives pages. */
Test(cluster_daemon, server_added_mid_storm, .timeout = 120)
{
	const char *extra[] = { "memory.resident_pages=1024", NULL };
	struct mcd a, b;
	struct td n1;
	struct cd_sets s1;
	char root[96], out[8192] = { 0 }, *rep;
	FILE *storm;

	root_for(root, sizeof(root), "addserver");
	cr_assert_eq(mcd_start(&a, 128, false), 0);
	cr_assert_eq(mcd_start(&b, 128, false), 0);
	cr_assert_eq(td_start(&n1, cd_node_sets(&s1, zk_hosts(), root, &a, "1", extra)), 0);
	storm = cd_storm_start(&n1, 10);
	cr_assert_not_null(storm);
	/* Half-way into the first pass: many pages already live on a. */
	for (int i = 0; i < 3000 && td_stat(&n1, "evictions") < 4096; i++)
		td_sleep_ms(10);
	cr_expect_eq(td_stat(&n1, "regions"), 1, "the storm ended too early");
	rep = td_ctl(&n1, "v1 servers add %s", b.addr);
	cr_expect(rep && strstr(rep, "\"ok\":true"), "%s", rep);
	free(rep);
	for (int i = 0; i < 500 && td_stat(&n1, "cluster_server_changes") < 1; i++)
		td_sleep_ms(10);
	cr_expect_eq(td_stat(&n1, "cluster_server_changes"), 1, "the node did not switch");
	rep = td_ctl(&n1, "v1 servers list");
	char want[300];
	snprintf(want, sizeof(want), "\"servers\":\"%s,%s\"", a.addr, b.addr);
	cr_expect(rep && strstr(rep, want), "%s", rep);
	free(rep);
	cr_expect_eq(td_stat(&n1, "regions"), 1, "the storm ended before the switch");

	cd_storm_finish(storm, out, sizeof(out));
	cr_expect_eq(td_stat(&n1, "poisoned"), 0);
	cr_expect_eq(td_stat(&n1, "cluster_server_change_errors"), 0);
	/* The region is gone and its pages with it: b's counter of stores
	 * shows what it received. */
	long sets_b = cd_mc_stat(&b, "cmd_set"), sets_a = cd_mc_stat(&a, "cmd_set");
	cr_expect(sets_b > 0, "the new server received no page (a took %ld)", sets_a);
	fprintf(stderr, "server_added_mid_storm: pages stored: old server %ld, new server %ld\n",
		sets_a, sets_b);
	td_expect_stop(&n1);
	mcd_stop(&a);
	mcd_stop(&b);
}

/* The server's zxid advances once per committed write and for nothing else
 * (sessions and reads do not): ZooKeeper writes per registration and per
 * region end, through fluidmemd. Also times a registration with the
 * cluster on against one with it off, in the same run (bench/README.md,
 * "ZooKeeper"). */
static uint64_t zxid(void)
{
	const char *h = zk_hosts(), *colon = strrchr(h, ':');
	char buf[1024], *p;

	if (!colon || zkh_4lw((unsigned)atoi(colon + 1), "srvr", buf, sizeof(buf)) < 0 ||
	    !(p = strstr(buf, "Zxid: ")))
		return 0;
	return strtoull(p + 6, NULL, 16);
}

/* Mean ms of n registrations on t (one connection each). */
static double register_ms(const struct td *t, struct fm_client **c, struct fm_region **r, int n)
{
	uint64_t t0 = cd_ms();

	for (int i = 0; i < n; i++)
		r[i] = td_region(t, &c[i], 16, "w");
	return (double)(cd_ms() - t0) / n;
}

static void unregister_all(struct fm_client **c, struct fm_region **r, int n)
{
	for (int i = 0; i < n; i++) {
		fm_region_destroy(r[i]);
		fm_disconnect(c[i]);
	}
}

Test(cluster_daemon, zk_writes_per_registration, .timeout = 90)
{
	enum { N = 50 };
	struct mcd m;
	struct td on, off;
	struct cd_sets s1, s2;
	struct fm_client *c[N];
	struct fm_region *r[N];
	char root[96];
	uint64_t z0, z1, z2;
	double ms_on, ms_off;

	root_for(root, sizeof(root), "writes");
	cr_assert_eq(mcd_start(&m, 64, false), 0);
	cr_assert_eq(td_start(&on, cd_node_sets(&s1, zk_hosts(), root, &m, "1", NULL)), 0);
	const char *const *sets = cd_node_sets(&s2, zk_hosts(), root, &m, "2", NULL);
	const char *off_sets[24];
	int k = 0;
	for (int i = 0; sets[i]; i++)
		if (strncmp(sets[i], "cluster.hosts", 13))
			off_sets[k++] = sets[i];
	off_sets[k++] = "cluster.hosts=\"\"";
	off_sets[k] = NULL;
	cr_assert_eq(td_start(&off, off_sets), 0);
	td_sleep_ms(500);   /* the election and the servers watch settle */
	z0 = zxid();
	ms_on = register_ms(&on, c, r, N);
	z1 = zxid();
	unregister_all(c, r, N);
	for (int i = 0; i < 500 && td_stat(&on, "cluster_queue_len") > 0; i++)
		td_sleep_ms(10);
	z2 = zxid();
	ms_off = register_ms(&off, c, r, N);
	unregister_all(c, r, N);
	fprintf(stderr, "zk_writes_per_registration: %d regions: %.2f ZooKeeper writes per "
			"registration, %.2f per region end; registration %.2f ms with the cluster, "
			"%.2f ms without\n",
		N, (double)(z1 - z0) / N, (double)(z2 - z1) / N, ms_on, ms_off);
	cr_expect_eq(z1 - z0, N, "writes for %d registrations: %" PRIu64, N, z1 - z0);
	cr_expect_eq(z2 - z1, N, "writes for %d region ends: %" PRIu64, N, z2 - z1);
	td_expect_stop(&off);
	td_expect_stop(&on);
	mcd_stop(&m);
}

/* `servers drain` with the cluster: node 1 removes b from the watched list;
 * both nodes drain their own keys off it and record it (drained/N), and
 * node 1's `servers list` counts both nodes done. Then b holds no key of
 * either node, and stopping it loses nothing. */
Test(cluster_daemon, server_drained_by_every_node, .timeout = 120)
{
	enum { PAGES = 1024 };
	struct mcd a, b;
	struct td n1, n2;
	struct cd_sets s1, s2;
	struct fm_client *c1, *c2;
	struct fm_region *r1, *r2;
	char root[96], both[400], *rep = NULL;
	const char *extra[] = { both, NULL };
	long before;

	root_for(root, sizeof(root), "drain");
	cr_assert_eq(mcd_start(&a, 64, false), 0);
	cr_assert_eq(mcd_start(&b, 64, false), 0);
	snprintf(both, sizeof(both), "store.memcached.servers=\"%s,%s\"", a.addr, b.addr);
	cr_assert_eq(td_start(&n1, cd_node_sets(&s1, zk_hosts(), root, &a, "1", extra)), 0);
	cr_assert_eq(td_start(&n2, cd_node_sets(&s2, zk_hosts(), root, &a, "2", extra)), 0);
	r1 = td_region(&n1, &c1, PAGES, "one");
	r2 = td_region(&n2, &c2, PAGES, "two");
	cd_stamp(r1, PAGES, 31);
	cd_stamp(r2, PAGES, 32);
	free(td_ctl(&n1, "v1 evict 256"));
	free(td_ctl(&n2, "v1 evict 256"));
	before = cd_mc_stat(&b, "curr_items");
	cr_assert_gt(before, 0, "b holds nothing to drain");

	rep = td_ctl(&n2, "v1 servers drain 127.0.0.1:1");
	cr_expect(rep && strstr(rep, "not in the server list"), "%s", rep);
	free(rep);
	rep = td_ctl(&n1, "v1 servers drain %s", b.addr);
	cr_expect(rep && strstr(rep, "\"ok\":true"), "%s", rep);
	free(rep);
	rep = NULL;
	for (uint64_t end = cd_ms() + 60000; cd_ms() < end; td_sleep_ms(50)) {
		free(rep);
		rep = td_ctl(&n1, "v1 servers list");
		if (rep && strstr(rep, "\"state\":\"done\"") &&
		    strstr(rep, "\"live\":2,\"drained\":2"))
			break;
	}
	cr_expect(rep && strstr(rep, "\"live\":2,\"drained\":2"), "%s", rep);
	fprintf(stderr, "server_drained_by_every_node: %s (b held %ld)\n", rep, before);
	free(rep);
	cr_expect_eq(cd_mc_stat(&b, "curr_items"), 0, "b still holds keys");
	cr_expect_eq(td_stat(&n1, "drains"), 1);
	cr_expect_eq(td_stat(&n2, "drains"), 1);
	mcd_stop(&b);
	cr_expect_eq(cd_check(r1, PAGES, 31), 0, "node 1's pages read back wrong");
	cr_expect_eq(cd_check(r2, PAGES, 32), 0, "node 2's pages read back wrong");
	cr_expect_eq(td_stat(&n1, "poisoned") + td_stat(&n2, "poisoned"), 0);
	fm_region_destroy(r1);
	fm_region_destroy(r2);
	fm_disconnect(c1);
	fm_disconnect(c2);
	td_expect_stop(&n2);
	td_expect_stop(&n1);
	mcd_stop(&a);
}
