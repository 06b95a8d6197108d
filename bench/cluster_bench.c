/* cluster-bench: what a region registration costs in ZooKeeper with
 * src/cluster. Starts a private ZooKeeper (tests/zk_harness.h) unless
 * --hosts names one, creates and then deletes N region records from one
 * node, and reports the latency of each call (p50, p99, max) and the
 * server's writes per registration, read as the zxid delta of `srvr`
 * (every committed write, and nothing else, advances the zxid).
 *
 * For comparison it also times the bare client: a synchronous zoo_create
 * and zoo_delete of a znode of the same size on a handle of its own.
 *
 *   cluster-bench [--regions N] [--hosts host:port]   (--hosts needs srvr in
 *                                                       4lw.commands.whitelist) */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADED
#include <zookeeper/zookeeper.h>

#include "cluster/cluster.h"
#include "zk_harness.h"

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The server's last zxid, from `srvr`; 0 when unknown. */
static uint64_t zxid(unsigned port)
{
	char buf[1024], *p;

	if (zkh_4lw(port, "srvr", buf, sizeof(buf)) < 0 || !(p = strstr(buf, "Zxid: ")))
		return 0;
	return strtoull(p + 6, NULL, 16);
}

static void report(const char *what, uint64_t *lat, int n, uint64_t writes)
{
	qsort(lat, (size_t)n, sizeof(*lat), cmp_u64);
	printf("%-8s n=%d  p50 %.0f us  p99 %.0f us  max %.0f us  zk writes/op %.2f\n", what, n,
	       lat[n / 2] / 1e3, lat[n * 99 / 100] / 1e3, lat[n - 1] / 1e3, (double)writes / n);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = { { "regions", required_argument, NULL, 'n' },
					    { "hosts", required_argument, NULL, 'h' },
					    { "help", no_argument, NULL, 'H' },
					    { NULL, 0, NULL, 0 } };
	const char *hosts = NULL;
	struct zkh z = { 0 };
	struct cluster_opts o = { .root = "/bench", .node_id = 1, .session_timeout_ms = 10000,
				  .orphan_grace_ms = 60000 };
	struct cluster *c;
	uint64_t *lat, *ids, z0, z1;
	unsigned port;
	int n = 2000, opt;

	while ((opt = getopt_long(argc, argv, "n:h:", lo, NULL)) != -1) {
		if (opt == 'n')
			n = atoi(optarg);
		else if (opt == 'h')
			hosts = optarg;
		else if (opt == 'H') {
			printf("usage: cluster-bench [--regions N] [--hosts HOST:PORT]\n"
			       "Creates and deletes N region records (default 2000) through the cluster\n"
			       "module; reports each call's latency and the server's writes per record.\n"
			       "Without --hosts it starts a private ZooKeeper on loopback.\n");
			return 0;
		} else
			return 2;
	}
	if (n < 1)
		return 2;
	if (!hosts) {
		if (zkh_start(&z) < 0) {
			fprintf(stderr, "cluster-bench: cannot start ZooKeeper (package zookeeper)\n");
			return 1;
		}
		hosts = z.hosts;
	}
	port = (unsigned)atoi(strrchr(hosts, ':') + 1);
	o.hosts = hosts;
	c = cluster_create(&o);
	if (!c) {
		perror("cluster_create");
		zkh_stop(&z);
		return 1;
	}
	lat = calloc((size_t)n, sizeof(*lat));
	ids = calloc((size_t)n, sizeof(*ids));
	z0 = zxid(port);
	for (int i = 0; i < n; i++) {
		struct cluster_region r = { .pid = 1234, .start_time = 5678, .size = 1ull << 30 };
		uint64_t t;

		cluster_region_id(c, &r.id);
		ids[i] = r.id;
		snprintf(r.name, sizeof(r.name), "qemu pc.ram %d", i);
		snprintf(r.ns, sizeof(r.ns), "fm1");
		t = now_ns();
		if (cluster_region_create(c, &r) != 0) {
			fprintf(stderr, "create %d not applied\n", i);
			return 1;
		}
		lat[i] = now_ns() - t;
	}
	z1 = zxid(port);
	report("create", lat, n, z0 && z1 ? z1 - z0 : 0);
	z0 = zxid(port);
	for (int i = 0; i < n; i++) {
		uint64_t t = now_ns();

		if (cluster_region_delete(c, ids[i]) != 0)
			return 1;
		lat[i] = now_ns() - t;
	}
	z1 = zxid(port);
	report("delete", lat, n, z0 && z1 ? z1 - z0 : 0);
	cluster_destroy(c);

	/* The floor: the bare client, no queue, no worker thread. */
	zhandle_t *zh = zookeeper_init(hosts, NULL, 10000, NULL, NULL, 0);
	char rec[128], path[64];

	for (int i = 0; i < 500 && zh && zoo_state(zh) != ZOO_CONNECTED_STATE; i++)
		lb_sleep_ms(10);
	memset(rec, 'x', 80);
	for (int pass = 0; zh && pass < 2; pass++) {
		z0 = zxid(port);
		for (int i = 0; i < n; i++) {
			uint64_t t;

			snprintf(path, sizeof(path), "/bench/raw%d", i);
			t = now_ns();
			if ((pass ? zoo_delete(zh, path, -1)
				  : zoo_create(zh, path, rec, 80, &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT,
					       NULL, 0)) != ZOK)
				return 1;
			lat[i] = now_ns() - t;
		}
		z1 = zxid(port);
		report(pass ? "raw del" : "raw crt", lat, n, z0 && z1 ? z1 - z0 : 0);
	}
	if (zh)
		zookeeper_close(zh);
	free(lat);
	free(ids);
	zkh_stop(&z);
	return 0;
}
