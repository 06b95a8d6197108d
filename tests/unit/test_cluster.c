/* src/cluster against a real ZooKeeper (Debian's server, tests/zk_harness.h).
 * One server is shared by the program (started in the runner before any
 * test, each test under its own root path) because a JVM start costs about
 * a second of both CPUs; the restart test starts its own. The three-server
 * leader change is test_cluster_ensemble.c. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "zk_harness.h"

ZKH_SHARED_PER_FILE()
ReportHook(PRE_ALL)(struct criterion_test_set *set) { (void)set; zkh_shared_start(); }
ReportHook(POST_ALL)(struct criterion_global_stats *stats) { (void)stats; zkh_stop(&shared_zk); }

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* cluster_create waits up to the session timeout for its session. Beside
 * the other ZooKeeper tests (ctest -j2: an ensemble's three JVMs starting)
 * a handshake on this 2-CPU machine took over 4 s (seen: "cluster_create:
 * Connection timed out" at 4000 ms). No test here waits for a default
 * session to expire (they close theirs; the expiry tests set 1 s), so a
 * long one costs nothing. */
#define SESSION_MS 20000

static struct cluster_opts opts_for(const char *hosts, const char *root, int32_t node)
{
	return (struct cluster_opts){ .hosts = hosts, .root = root, .node_id = node,
				      .session_timeout_ms = SESSION_MS, .orphan_grace_ms = 1500 };
}

static struct cluster *open_node(const char *root, int32_t node)
{
	struct cluster_opts o = opts_for(zk_hosts(), root, node);
	struct cluster *c = cluster_create(&o);

	cr_assert(c, "cluster_create(node %d): %s", node, strerror(errno));
	return c;
}

static struct cluster_region region_of(struct cluster *c, const char *name, uint64_t size)
{
	struct cluster_region r = { .pid = 4242, .start_time = 123456, .size = size };

	cr_assert_eq(cluster_region_id(c, &r.id), 0);
	snprintf(r.name, sizeof(r.name), "%s", name);
	snprintf(r.ns, sizeof(r.ns), "ns%u", cluster_node_id(c));
	return r;
}

static const struct cluster_region *find(const struct cluster_region *v, size_t n, uint64_t id)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].id == id)
			return &v[i];
	return NULL;
}

static size_t count_of(struct cluster *c, int node)
{
	struct cluster_region *v;
	size_t n;

	cr_assert_eq(cluster_regions_list(c, node, &v, &n), 0);
	free(v);
	return n;
}

/* ---- pure parts ---- */

Test(cluster, record_encoding_round_trip)
{
	struct cluster_region r = { .id = 0x0002000100000007ull, .node = 2, .pid = -5,
				    .start_time = UINT64_MAX, .size = 1ull << 40 };
	struct cluster_region d;
	char buf[CLUSTER_RECORD_MAX];
	int n;

	strcpy(r.name, "qemu guest  ram: pc.ram");
	strcpy(r.ns, "fm2");
	n = cluster_region_encode(&r, buf, sizeof(buf));
	cr_assert_gt(n, 0);
	cr_assert_eq(buf[0], '1', "the version comes first: %s", buf);
	cr_assert_eq(cluster_region_decode(buf, (size_t)n, &d), 0, "%s", buf);
	cr_assert_eq(d.id, r.id);
	cr_assert_eq(d.node, r.node);
	cr_assert_eq(d.pid, r.pid);
	cr_assert_eq(d.start_time, r.start_time);
	cr_assert_eq(d.size, r.size);
	cr_assert_str_eq(d.name, r.name);
	cr_assert_str_eq(d.ns, r.ns);

	/* An unknown version, a truncation, or bad fields are refused. */
	buf[0] = '2';
	cr_assert_eq(cluster_region_decode(buf, (size_t)n, &d), -EINVAL);
	buf[0] = '1';
	cr_assert_eq(cluster_region_decode(buf, 20, &d), -EINVAL);
	strcpy(r.ns, "has space");
	cr_assert_eq(cluster_region_encode(&r, buf, sizeof(buf)), -EINVAL);
	strcpy(r.ns, "ok");
	strcpy(r.name, "line\nbreak");
	cr_assert_eq(cluster_region_encode(&r, buf, sizeof(buf)), -EINVAL);
	cr_assert_eq(cluster_region_decode("1 0000000000000001 70000 1 1 1 ns x", 35, &d),
		     -EINVAL, "node above 65535");
	/* Found by fuzz_cluster_record: a NUL inside a field hid its tail. */
	static const char nul[] = "1 0001000100000000 1 4242 123456 1073741824 fm\0\0\0\0\0006 1073am";
	cr_assert_eq(cluster_region_decode(nul, sizeof(nul) - 1, &d), -EINVAL);
	static const char nulnum[] = "1 0001000100000000 1 42\0x 1 1 ns name";
	cr_assert_eq(cluster_region_decode(nulnum, sizeof(nulnum) - 1, &d), -EINVAL);
}

Test(cluster, config_checks)
{
	int32_t id;

	cr_assert_eq(cluster_parse_node_id("auto", &id), 0);
	cr_assert_eq(id, CLUSTER_NODE_AUTO);
	cr_assert_eq(cluster_parse_node_id("65535", &id), 0);
	cr_assert_eq(id, 65535);
	cr_assert_eq(cluster_parse_node_id("65536", &id), -EINVAL);
	cr_assert_eq(cluster_parse_node_id("-1", &id), -EINVAL);
	cr_assert_eq(cluster_parse_node_id("", &id), -EINVAL);
	cr_assert_eq(cluster_parse_node_id("1x", &id), -EINVAL);
	cr_assert_eq(cluster_check_hosts("127.0.0.1:2181,zk2:2181"), 0);
	cr_assert_eq(cluster_check_hosts("127.0.0.1"), -EINVAL);
	cr_assert_eq(cluster_check_hosts("a:2181,"), -EINVAL);
	cr_assert_eq(cluster_check_hosts("a:0"), -EINVAL);
	cr_assert_eq(cluster_check_hosts("a:70000"), -EINVAL);
	cr_assert_eq(cluster_check_root("/fluidmem"), 0);
	cr_assert_eq(cluster_check_root("/a/b"), 0);
	cr_assert_eq(cluster_check_root("/"), -EINVAL);
	cr_assert_eq(cluster_check_root("fluidmem"), -EINVAL);
	cr_assert_eq(cluster_check_root("/a/"), -EINVAL);
	cr_assert_eq(cluster_check_root("/a//b"), -EINVAL);
}

/* ---- against the server ---- */

Test(cluster, same_node_id_refused)
{
	struct cluster *a = open_node("/t_same", 1), *b;
	struct cluster_opts o = opts_for(zk_hosts(), "/t_same", 1);

	cr_assert_eq(cluster_state(a), CLUSTER_CONNECTED);
	errno = 0;
	b = cluster_create(&o);
	cr_assert_null(b, "a second lease of node 1 was granted");
	cr_assert_eq(errno, EEXIST, "errno %d", errno);
	/* Closing the session releases the lease at once. */
	cluster_destroy(a);
	b = open_node("/t_same", 1);
	cr_assert_eq(cluster_node_id(b), 1);
	cluster_destroy(b);
}

/* A previous fluidmemd of this host that died without closing its session
 * leaves an ephemeral lease until the session times out; its successor
 * takes it over at once instead of waiting (or failing). */
Test(cluster, dead_predecessor_lease_taken_over)
{
	int pfd[2];
	char ok = 0;
	pid_t pid;
	uint64_t t0;
	struct cluster *c;
	struct cluster_opts o = opts_for(zk_hosts(), "/t_pred", 7);

	o.session_timeout_ms = 60000;   /* the server's maximum */
	cr_assert_eq(pipe(pfd), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct cluster *cc = cluster_create(&o);

		ok = cc ? 1 : 0;
		if (write(pfd[1], &ok, 1) != 1) {
			/* the parent fails the test */
		}
		_exit(0);   /* no close: the session and its lease stay */
	}
	close(pfd[1]);   /* a child that dies early gives EOF, not a hang */
	cr_assert_eq(read(pfd[0], &ok, 1), 1);
	cr_assert_eq(ok, 1, "the child could not lease node 7");
	waitpid(pid, NULL, 0);
	t0 = ms_now();
	c = cluster_create(&o);
	cr_assert(c, "the dead predecessor's lease was not taken over: %s", strerror(errno));
	/* Far below the predecessor's 60 s, with room for a slow handshake. */
	cr_assert_lt(ms_now() - t0, 20000, "waited for the old session to expire");
	cluster_destroy(c);
	close(pfd[0]);
}

Test(cluster, auto_ids_distinct)
{
	struct cluster *c[4];
	uint64_t ids[4][3];

	for (int i = 0; i < 4; i++) {
		c[i] = open_node("/t_auto", CLUSTER_NODE_AUTO);
		cr_assert_geq(cluster_node_id(c[i]), 1);
		for (int j = 0; j < i; j++)
			cr_assert_neq(cluster_node_id(c[i]), cluster_node_id(c[j]),
				      "two auto nodes got id %u", cluster_node_id(c[i]));
		for (int k = 0; k < 3; k++) {
			cr_assert_eq(cluster_region_id(c[i], &ids[i][k]), 0);
			cr_assert_eq(ids[i][k] >> 48, cluster_node_id(c[i]));
		}
	}
	for (int i = 0; i < 4; i++)
		for (int k = 0; k < 3; k++)
			for (int j = 0; j < 4; j++)
				for (int l = 0; l < 3; l++)
					cr_assert((i == j && k == l) || ids[i][k] != ids[j][l]);
	for (int i = 0; i < 4; i++)
		cluster_destroy(c[i]);
}

Test(cluster, region_ids_unique_across_restarts)
{
	struct cluster *c = open_node("/t_gen", 3);
	uint64_t a, b;

	cr_assert_eq(cluster_region_id(c, &a), 0);
	cluster_destroy(c);
	c = open_node("/t_gen", 3);
	cr_assert_eq(cluster_region_id(c, &b), 0);
	cr_assert_neq(a, b, "the same id after a restart: %" PRIx64, a);
	cluster_destroy(c);
}

Test(cluster, records_round_trip_across_two_nodes)
{
	struct cluster *n1 = open_node("/t_rec", 1), *n2 = open_node("/t_rec", 2);
	struct cluster_region r1[3], r2[2], *v;
	size_t n;

	for (int i = 0; i < 3; i++) {
		char name[32];

		snprintf(name, sizeof(name), "vm one %d", i);
		r1[i] = region_of(n1, name, (uint64_t)(i + 1) << 30);
		cr_assert_eq(cluster_region_create(n1, &r1[i]), 0, "not applied while connected");
	}
	for (int i = 0; i < 2; i++) {
		r2[i] = region_of(n2, "two", 4096);
		cr_assert_eq(cluster_region_create(n2, &r2[i]), 0);
	}
	/* A record of another node's id is refused. */
	cr_assert_eq(cluster_region_create(n1, &r2[0]), -EINVAL);

	cr_assert_eq(cluster_regions_list(n2, 1, &v, &n), 0);
	cr_assert_eq(n, 3);
	for (int i = 0; i < 3; i++) {
		const struct cluster_region *g = find(v, n, r1[i].id);

		cr_assert(g, "region %d of node 1 missing", i);
		cr_assert_eq(g->node, 1);
		cr_assert_eq(g->pid, 4242);
		cr_assert_eq(g->start_time, 123456);
		cr_assert_eq(g->size, r1[i].size);
		cr_assert_str_eq(g->name, r1[i].name);
		cr_assert_str_eq(g->ns, "ns1");
	}
	free(v);
	cr_assert_eq(cluster_regions_list(n1, -1, &v, &n), 0);
	cr_assert_eq(n, 5);
	cr_assert(find(v, n, r2[1].id) && find(v, n, r2[1].id)->node == 2);
	free(v);

	r1[1].size = 12345;
	cr_assert_eq(cluster_region_update(n1, &r1[1]), 0);
	cr_assert_eq(cluster_region_delete(n1, r1[0].id), 0);
	cr_assert_eq(cluster_region_delete(n1, r1[0].id), 0, "deleting twice is not an error");
	cr_assert_eq(cluster_regions_list(n2, 1, &v, &n), 0);
	cr_assert_eq(n, 2);
	cr_assert_null(find(v, n, r1[0].id));
	cr_assert_eq(find(v, n, r1[1].id)->size, 12345);
	free(v);
	cluster_destroy(n1);
	cluster_destroy(n2);
}

static _Atomic int collected_calls[8];

static int count_collect(void *arg, uint16_t node)
{
	(void)arg;
	if (node < 8)
		collected_calls[node]++;
	return 0;
}

/* Nodes 1 (the only survivor, hence leader), 2 (gone for good) and 3
 * (gone and back within the grace). */
#define ORPHAN_GRACE_MS 4000

Test(cluster, orphan_collected_once_after_grace)
{
	struct cluster_opts o = opts_for(zk_hosts(), "/t_orphan", 1);
	struct cluster *n1, *n2, *n3;
	struct cluster_region r;
	struct cluster_stats st;
	uint64_t gone;

	/* Long enough that node 3 is back well within it on a loaded
	 * machine (a session's handshake there can take seconds). */
	o.orphan_grace_ms = ORPHAN_GRACE_MS;
	o.collect = count_collect;
	n1 = cluster_create(&o);
	cr_assert(n1);
	n2 = open_node("/t_orphan", 2);
	n3 = open_node("/t_orphan", 3);
	for (int i = 0; i < 3; i++) {
		r = region_of(n1, "one", 4096);
		cr_assert_eq(cluster_region_create(n1, &r), 0);
		r = region_of(n2, "two", 4096);
		cr_assert_eq(cluster_region_create(n2, &r), 0);
		r = region_of(n3, "three", 4096);
		cr_assert_eq(cluster_region_create(n3, &r), 0);
	}
	cluster_destroy(n2);
	cluster_destroy(n3);
	gone = ms_now();
	lb_sleep_ms(300);
	n3 = open_node("/t_orphan", 3);   /* back within the grace: re-adopts */

	/* Nothing within the grace. */
	while (ms_now() - gone < ORPHAN_GRACE_MS - 300) {
		cr_assert_eq(collected_calls[2], 0, "collected within the grace");
		lb_sleep_ms(50);
	}
	for (int i = 0; i < 200 && collected_calls[2] == 0; i++)
		lb_sleep_ms(50);
	cr_assert_eq(collected_calls[2], 1);
	cr_assert_geq(ms_now() - gone, ORPHAN_GRACE_MS);
	for (int i = 0; i < 100 && count_of(n1, 2) != 0; i++)
		lb_sleep_ms(20);
	cr_assert_eq(count_of(n1, 2), 0, "node 2's records survived its collection");
	lb_sleep_ms(2000);   /* more scans: still exactly once, node 3 never */
	cr_assert_eq(collected_calls[2], 1);
	cr_assert_eq(collected_calls[3], 0);
	cr_assert_eq(collected_calls[1], 0);
	cr_assert_eq(count_of(n1, 1), 3, "the leader's own records were touched");
	cr_assert_eq(count_of(n1, 3), 3, "a node back within the grace lost its records");
	cluster_get_stats(n1, &st);
	cr_assert(st.leader);
	cr_assert_eq(st.collected, 1);
	cluster_destroy(n3);
	cluster_destroy(n1);
}

struct seen {
	_Atomic int calls;
	char last[128];
	pthread_mutex_t mu;
};

static void on_servers(void *arg, const char *servers)
{
	struct seen *s = arg;

	pthread_mutex_lock(&s->mu);
	snprintf(s->last, sizeof(s->last), "%s", servers);
	pthread_mutex_unlock(&s->mu);
	s->calls++;
}

static bool seen_is(struct seen *s, const char *want)
{
	bool eq;

	pthread_mutex_lock(&s->mu);
	eq = !strcmp(s->last, want);
	pthread_mutex_unlock(&s->mu);
	return eq;
}

Test(cluster, server_list_watch_fires)
{
	static struct seen s = { .mu = PTHREAD_MUTEX_INITIALIZER };
	struct cluster_opts o = opts_for(zk_hosts(), "/t_servers", 1);
	struct cluster *n1, *n2 = open_node("/t_servers", 2);
	char buf[128];
	int before;

	o.servers_changed = on_servers;
	o.arg = &s;
	n1 = cluster_create(&o);
	cr_assert(n1);
	cr_assert_eq(cluster_servers_get(n1, buf, sizeof(buf)), -ENOENT);

	cr_assert_eq(cluster_servers_set(n2, "10.0.0.1:11211"), 0);
	/* Bounded at 10 s for a slow (ASan, loaded) ZooKeeper; the test
	 * waits for the event, not for the time. */
	for (int i = 0; i < 500 && !seen_is(&s, "10.0.0.1:11211"); i++)
		lb_sleep_ms(20);
	cr_assert(seen_is(&s, "10.0.0.1:11211"), "the watch did not fire on creation");
	before = s.calls;
	cr_assert_eq(cluster_servers_set(n2, "10.0.0.1:11211,10.0.0.2:11211"), 0);
	for (int i = 0; i < 500 && !seen_is(&s, "10.0.0.1:11211,10.0.0.2:11211"); i++)
		lb_sleep_ms(20);
	cr_assert(seen_is(&s, "10.0.0.1:11211,10.0.0.2:11211"), "the watch did not fire on change");
	cr_assert_eq(s.calls, before + 1);
	cr_assert_eq(cluster_servers_get(n1, buf, sizeof(buf)), 0);
	cr_assert_str_eq(buf, "10.0.0.1:11211,10.0.0.2:11211");
	cr_assert_eq(cluster_servers_get(n1, buf, 5), -ENOBUFS);
	cluster_destroy(n1);
	cluster_destroy(n2);
}

/* ZooKeeper killed: writes queue and the state says so; restarted (same
 * data dir, quicker than the session timeout): they are applied in order. */
Test(cluster, queued_writes_applied_after_restart, .timeout = 60)
{
	struct zkh z;
	struct cluster_opts o;
	struct cluster *c;
	struct cluster_region keep, gone, late, *v;
	struct cluster_stats st;
	size_t n;

	cr_assert_eq(zkh_start(&z), 0);
	o = opts_for(z.hosts, "/t_down", 1);
	/* The client gives a connection attempt 2/3 of the session timeout: one
	 * made while the JVM starts can stall that long (seen: 9 s of 15). */
	o.session_timeout_ms = 6000;
	o.queue_max = 4;
	c = cluster_create(&o);
	cr_assert(c);
	keep = region_of(c, "keep", 4096);
	gone = region_of(c, "gone", 4096);
	cr_assert_eq(cluster_region_create(c, &keep), 0);
	cr_assert_eq(cluster_region_create(c, &gone), 0);

	zkh_kill(&z, SIGKILL);
	for (int i = 0; i < 200 && cluster_state(c) == CLUSTER_CONNECTED; i++)
		lb_sleep_ms(20);
	cr_assert_eq(cluster_state(c), CLUSTER_CONNECTING, "state %s",
		     cluster_state_name(cluster_state(c)));
	late = region_of(c, "late", 8192);
	uint64_t t0 = ms_now();

	cr_assert_eq(cluster_region_create(c, &late), 1, "not queued");
	cr_assert_lt(ms_now() - t0, 100, "a write waited for a down ZooKeeper");
	keep.size = 777;
	cr_assert_eq(cluster_region_update(c, &keep), 1);
	cr_assert_eq(cluster_region_delete(c, gone.id), 1);
	cr_assert_eq(cluster_servers_set(c, "m1:11211"), 1);
	cr_assert_eq(cluster_region_update(c, &keep), -ENOSPC, "the queue is bounded");
	cr_assert_eq(cluster_regions_list(c, 1, &v, &n), -ENOTCONN);
	cluster_get_stats(c, &st);
	cr_assert_eq(st.queue_len, 4);
	cr_assert_eq(st.queued, 4);
	cr_assert_eq(st.queue_full, 1);

	cr_assert_eq(zkh_restart(&z), 0);
	t0 = ms_now();
	for (int i = 0; i < 2000; i++) {
		cluster_get_stats(c, &st);
		if (cluster_state(c) == CLUSTER_CONNECTED && st.queue_len == 0)
			break;
		lb_sleep_ms(20);
	}
	cr_assert_eq(cluster_state(c), CLUSTER_CONNECTED, "state %s after %llu ms",
		     cluster_state_name(cluster_state(c)), (unsigned long long)(ms_now() - t0));
	cr_assert_eq(st.queue_len, 0);
	cr_assert_eq(cluster_regions_list(c, 1, &v, &n), 0);
	cr_assert_eq(n, 2);
	cr_assert(find(v, n, late.id));
	cr_assert_null(find(v, n, gone.id));
	cr_assert_eq(find(v, n, keep.id)->size, 777);
	free(v);
	char buf[64];

	cr_assert_eq(cluster_servers_get(c, buf, sizeof(buf)), 0);
	cr_assert_str_eq(buf, "m1:11211");
	cluster_destroy(c);
	zkh_stop(&z);
}

/* The session expires under a node (its process stopped longer than the
 * session timeout): back, it makes a new session and re-takes its lease,
 * or, when another took the id meanwhile, reports LOST. Run in a child so
 * that SIGSTOP freezes the module's threads and ZooKeeper's together. */
static int expiry_child(const char *hosts, const char *root, int wfd)
{
	struct cluster_opts o = opts_for(hosts, root, 5);
	struct cluster *c;
	struct cluster_stats st;
	char ready = 'r';

	o.session_timeout_ms = 1000;
	c = cluster_create(&o);
	if (!c)
		return 10;
	if (write(wfd, &ready, 1) != 1)
		return 11;
	/* The parent stops us here, then continues us. */
	for (int i = 0; i < 1000; i++) {
		cluster_get_stats(c, &st);
		if (st.reconnects == 1 && cluster_state(c) == CLUSTER_CONNECTED)
			break;
		if (cluster_state(c) == CLUSTER_LOST)
			break;
		lb_sleep_ms(20);
	}
	int rc = cluster_state(c) == CLUSTER_CONNECTED ? 0 : cluster_state(c) == CLUSTER_LOST ? 3 : 4;
	struct cluster_region r = { .pid = 1, .size = 1 };

	cluster_region_id(c, &r.id);
	strcpy(r.ns, "x");
	if (rc == 3 && cluster_region_create(c, &r) != -ESTALE)
		rc = 5;   /* a lost node must not write */

	cluster_destroy(c);
	return rc;
}

enum expiry_mode { EXPIRY_BACK, EXPIRY_STOLEN, EXPIRY_COLLECTED };

static _Atomic int expiry_collected;

static int expiry_collect(void *arg, uint16_t node)
{
	(void)arg;
	if (node == 5)
		expiry_collected++;
	return 0;
}

static int run_expiry(enum expiry_mode mode, const char *root)
{
	int pfd[2], status = -1;
	char ready;
	pid_t pid;
	struct cluster *thief = NULL;

	/* Fork before this process has any ZooKeeper thread: a child forked
	 * beside them inherits locks they hold (seen: a hang under ASan). */
	cr_assert_eq(pipe(pfd), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(expiry_child(zk_hosts(), root, pfd[1]));
	close(pfd[1]);
	struct pollfd pf = { pfd[0], POLLIN, 0 };

	if (poll(&pf, 1, 30000) != 1 || read(pfd[0], &ready, 1) != 1) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		cr_assert_fail("the child did not start");
	}
	kill(pid, SIGSTOP);
	if (mode == EXPIRY_COLLECTED) {
		/* The leader once the stopped child's session (and its place
		 * in the election) expires; its grace (1.5 s) then runs out. */
		struct cluster_opts o = opts_for(zk_hosts(), root, 1);

		o.collect = expiry_collect;
		thief = cluster_create(&o);
		cr_assert(thief);
		for (int i = 0; i < 500 && !expiry_collected; i++)
			lb_sleep_ms(20);
		cr_assert_eq(expiry_collected, 1, "the stopped node was not collected");
	} else if (mode == EXPIRY_STOLEN) {
		struct cluster_opts o = opts_for(zk_hosts(), root, 5);

		/* The stopped child's lease is not stale (its process lives):
		 * it goes only when the server expires the session. */
		for (int i = 0; i < 200 && !thief; i++) {
			thief = cluster_create(&o);
			if (!thief) {
				cr_assert_eq(errno, EEXIST);
				lb_sleep_ms(50);
			}
		}
		cr_assert(thief, "the expired session's lease never went");
	} else {
		lb_sleep_ms(3000);
	}
	kill(pid, SIGCONT);
	waitpid(pid, &status, 0);
	cluster_destroy(thief);
	close(pfd[0]);
	cr_assert(WIFEXITED(status), "status %#x", status);
	return WEXITSTATUS(status);
}

Test(cluster, session_expiry_relets_lease)
{
	cr_assert_eq(run_expiry(EXPIRY_BACK, "/t_expire"), 0, "not reconnected after expiry");
}

Test(cluster, session_expiry_lease_taken_is_lost)
{
	cr_assert_eq(run_expiry(EXPIRY_STOLEN, "/t_expire_stolen"), 3,
		     "the node did not report LOST (5: it still wrote)");
}

/* Gone longer than the grace: collected. Back, the node must not re-take
 * its id as if nothing happened: its keys were deleted. */
Test(cluster, session_expiry_after_collection_is_lost)
{
	cr_assert_eq(run_expiry(EXPIRY_COLLECTED, "/t_expire_coll"), 3,
		     "a collected node came back as if alive (5: it still wrote)");
}

static _Atomic int succ_calls[8];

static int succ_collect(void *arg, uint16_t node)
{
	(void)arg;
	if (node < 8)
		succ_calls[node]++;
	return 0;
}

static bool is_leader(struct cluster *c)
{
	struct cluster_stats st;

	cluster_get_stats(c, &st);
	return st.leader;
}

/* Each node watches only its predecessor: the middle one leaving changes
 * nothing, the leader leaving hands over to the next, which then collects
 * both departed nodes after the grace. */
Test(cluster, leadership_passes_to_successor)
{
	struct cluster_opts o = opts_for(zk_hosts(), "/t_succ", 3);
	struct cluster *n1 = open_node("/t_succ", 1), *n2 = open_node("/t_succ", 2), *n3;

	o.collect = succ_collect;
	n3 = cluster_create(&o);
	cr_assert(n3);
	for (int i = 0; i < 500 && !is_leader(n1); i++)
		lb_sleep_ms(20);
	cr_assert(is_leader(n1));
	cr_assert_not(is_leader(n2));
	cr_assert_not(is_leader(n3));
	cluster_destroy(n2);
	lb_sleep_ms(300);
	cr_assert_not(is_leader(n3), "node 3 took over while node 1 still leads");
	cluster_destroy(n1);
	for (int i = 0; i < 500 && !is_leader(n3); i++)
		lb_sleep_ms(20);
	cr_assert(is_leader(n3), "the successor did not take over");
	for (int i = 0; i < 500 && (succ_calls[1] == 0 || succ_calls[2] == 0); i++)
		lb_sleep_ms(20);
	cr_assert_eq(succ_calls[1], 1);
	cr_assert_eq(succ_calls[2], 1);
	cr_assert_eq(succ_calls[3], 0);
	cluster_destroy(n3);
}
