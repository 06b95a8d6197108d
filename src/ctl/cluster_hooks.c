/* ctl/cluster_hooks: fluidmemd's side of the cluster state (cluster_hooks.h). */
#include "ctl/cluster_hooks.h"
#include "ctl/json_out.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "base/procstat.h"
#include "cluster/cluster.h"
#include "ctl/daemon_priv.h"
#include "ctl/params.h"
#include "kv/kv.h"

struct ctl_cluster {
	struct cluster *_Atomic c;   /* set once cluster_create returned; the worker reads it */
	struct kv_params kvp;        /* for the collector's own store handle */
	struct kv_store *kv;         /* the collector's: cluster worker thread only */
	/* per region slot: its record's write, and a held acknowledgement */
	uint64_t ticket[FM_MAX_REGIONS];
	uint64_t held_until_ns[FM_MAX_REGIONS];   /* 0 = no ack held */
	unsigned nheld;
	uint64_t records_failed;     /* records refused (queue full, bad field) */
	uint64_t acks_held, acks_timed_out;
	_Atomic uint64_t collected_keys;   /* store keys deleted for orphans */
	/* The servers znode changed (worker thread); the control thread hands
	 * the list to the shards (ctl_cluster_events). */
	pthread_mutex_t mu;
	char *servers_pending;       /* under mu */
	_Atomic bool servers_dirty;
	uint64_t server_changes, server_change_errors;
};

bool ctl_cluster_on(const struct daemon *d)
{
	return d->cl != NULL;
}

/* ---- orphan collection: on the cluster's worker thread ---- */

/* Delete every store key of `node`. Memcached cannot list keys, so they
 * come from the node's records: a region's keys are its id and page
 * indices 0..size/4096-1 (kv.h), whatever the node evicted. A dedicated
 * store handle, used by this thread alone: the shards' handles are never
 * touched from here. Keys never written answer -ENOENT, which is fine;
 * an unreachable server makes the leader retry the node at a later scan. */
static int collect_keys(void *arg, uint16_t node)
{
	struct ctl_cluster *cl = arg;
	struct cluster *c = atomic_load(&cl->c);
	struct cluster_region *recs = NULL;
	size_t n = 0;
	uint64_t deleted = 0;
	int rc;

	if (!c)
		return -EAGAIN;   /* still starting: the next scan retries */
	if (strcmp(cl->kvp.backend, "memcached") != 0)
		return 0;         /* only memcached is shared between nodes */
	rc = cluster_regions_list(c, node, &recs, &n);
	if (rc < 0)
		return rc;
	if (!cl->kv) {
		/* Past the shards' indices: its log lines say which handle. */
		cl->kv = kv_open(&cl->kvp, FM_MAX_SHARDS);
		if (!cl->kv) {
			rc = -errno;
			free(recs);
			return rc ? rc : -EIO;
		}
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		uint64_t pages = recs[i].size / FM_PAGE_SIZE;

		for (uint64_t p = 0; p < pages; p++) {
			int r = kv_del(cl->kv, (struct kv_key){ recs[i].id, p });

			if (r == 0)
				deleted++;
			else if (r != -ENOENT) {
				rc = r;
				break;
			}
		}
	}
	free(recs);
	atomic_fetch_add(&cl->collected_keys, deleted);
	FM_INFO("cluster: node %u's %zu region(s): %" PRIu64 " store key(s) deleted%s", node, n,
		deleted, rc ? " before a store error (retried at the next scan)" : "");
	return rc;
}

/* The servers znode changed (and once at start if it exists). Worker
 * thread: the collector's handle follows at once; the shards' handles are
 * theirs, so the list goes to the control thread, which sends it to them
 * in messages. */
static void servers_changed(void *arg, const char *servers)
{
	struct ctl_cluster *cl = arg;
	struct cluster *c = atomic_load(&cl->c);
	char *copy = strdup(servers);

	if (!copy)
		return;
	if (strlen(servers) < sizeof(cl->kvp.mc.servers))
		snprintf(cl->kvp.mc.servers, sizeof(cl->kvp.mc.servers), "%s", servers);
	if (cl->kv && kv_set_servers(cl->kv, servers) < 0) {
		kv_close(cl->kv);   /* reopened from kvp at the next collection */
		cl->kv = NULL;
	}
	pthread_mutex_lock(&cl->mu);
	free(cl->servers_pending);
	cl->servers_pending = copy;
	pthread_mutex_unlock(&cl->mu);
	atomic_store(&cl->servers_dirty, true);
	if (c) {
		uint64_t one = 1;

		if (write(cluster_event_fd(c), &one, sizeof(one)) < 0) {
			/* the loop polls while servers_dirty is set */
		}
	}
}

/* Send the new list to every shard; each opens it and keeps the old one
 * for reads of pages not yet rewritten (kv_set_servers). */
static void apply_servers(struct daemon *d)
{
	struct ctl_cluster *cl = d->cl;
	char *list, old[FM_MC_SERVERS_MAX];
	int failed, rc;

	pthread_mutex_lock(&cl->mu);
	list = cl->servers_pending;
	cl->servers_pending = NULL;
	atomic_store(&cl->servers_dirty, false);
	pthread_mutex_unlock(&cl->mu);
	if (!list)
		return;
	if (strcmp(d->cfg.store_backend, "memcached") || !strcmp(list, d->cfg.mc.servers) ||
	    strlen(list) >= sizeof(d->cfg.mc.servers)) {
		free(list);
		return;
	}
	/* Recorded like a drain's (drain.c); at start the ZooKeeper list wins
	 * over the record, so a failure here only costs a later start
	 * without the cluster. */
	if ((rc = daemon_servers_record(d, list)) < 0)
		FM_WARN("cluster: cannot record the store servers in %s/servers: %s", d->sdir.path,
			strerror(-rc));
	failed = daemon_set_servers(d, list);
	if (failed) {
		cl->server_change_errors++;
		FM_ERR("cluster: store servers \"%s\": a shard could not switch (%s); shards may "
		       "disagree until the list changes again", list, strerror(-failed));
	} else {
		cl->server_changes++;
		FM_INFO("cluster: store servers now \"%s\" (was \"%s\")", list, d->cfg.mc.servers);
	}
	snprintf(old, sizeof(old), "%s", d->cfg.mc.servers);
	snprintf(d->cfg.mc.servers, sizeof(d->cfg.mc.servers), "%s", list);
	/* Every node drains its own keys off a server removed from the list. */
	if (!failed)
		daemon_drain_list_changed(d, old, list);
	free(list);
}

/* ---- start, stop, events ---- */

int ctl_cluster_start(struct daemon *d)
{
	struct ctl_cluster *cl;
	struct cluster_opts o;
	int32_t want = fm_config_node_id(&d->cfg);
	struct cluster *c;
	bool again = false;
	uint32_t wait_ms = 0, waited = 0;

	d->cl = NULL;
	if (!d->cfg.cluster_hosts[0]) {
		d->node_id = (uint16_t)want;
		return 0;
	}
	/* Regions of a previous run waiting: their store keys and records are
	 * the recorded node's, so that node it must be ("auto" asks for it;
	 * another number was refused by daemon_state_node_check). Free once
	 * the dead daemon's session expired (or at once, when the lease names
	 * a dead process of this host); until then, wait for it. */
	if (d->state_node >= 0 && d->npending > 0 &&
	    (want == CLUSTER_NODE_AUTO || want == d->state_node)) {
		again = true;
		if (want == CLUSTER_NODE_AUTO)
			FM_INFO("cluster: daemon.node_id = \"auto\": asking for node %d again, the "
				"node the %u region(s) awaiting re-adoption in %s were written by",
				d->state_node, d->npending, d->sdir.path);
		want = d->state_node;
		wait_ms = FM_MAX(d->cfg.cluster_session_timeout_ms, 2000u) + 2000u;
	}
	cl = calloc(1, sizeof(*cl));
	if (!cl)
		return -ENOMEM;
	pthread_mutex_init(&cl->mu, NULL);
	fm_config_kv_params(&d->cfg, &cl->kvp);
	o = (struct cluster_opts){
		.hosts = d->cfg.cluster_hosts,
		.root = d->cfg.cluster_root,
		.node_id = want,
		.session_timeout_ms = d->cfg.cluster_session_timeout_ms,
		.orphan_grace_ms = d->cfg.cluster_orphan_grace_s * 1000u,
		.queue_max = d->cfg.cluster_queue_max,
		.collect = collect_keys,
		.servers_changed = servers_changed,
		.arg = cl,
	};
	for (uint64_t t0 = fm_now_ns();; waited = (uint32_t)((fm_now_ns() - t0) / 1000000u)) {
		errno = 0;
		c = cluster_create(&o);
		if (c || !again || errno != EEXIST || waited >= wait_ms)
			break;
		if (!waited)
			FM_WARN("cluster: node %d is still leased, by the dead daemon's ZooKeeper "
				"session until it expires (or by the leader collecting it): asking "
				"again every second for up to %u ms", want, wait_ms);
		usleep(1000000);
	}
	if (c && waited)
		FM_INFO("cluster: node %d is free again after %u ms", want, waited);
	if (!c) {
		int err = errno ? errno : EIO;

		if (err == EEXIST && again)
			FM_ERR("cluster: node id %d, which the %u region(s) awaiting re-adoption in %s "
			       "were written by, is still leased in ZooKeeper (%s%s) after %u ms, by "
			       "another live fluidmemd or the leader collecting it. Not starting as "
			       "another node: those regions' store keys and records are node %d's. "
			       "Stop the daemon that holds it, or remove %s/region-*.state to give "
			       "the regions up",
			       want, d->npending, d->sdir.path, d->cfg.cluster_hosts,
			       d->cfg.cluster_root, waited, want, d->sdir.path);
		else if (err == EEXIST)
			FM_ERR("node id %s is leased in ZooKeeper (%s%s) by another live fluidmemd, "
			       "or is being collected: give this daemon another daemon.node_id, or "
			       "\"auto\"",
			       d->cfg.node_id, d->cfg.cluster_hosts, d->cfg.cluster_root);
		else if (err == ETIMEDOUT)
			FM_ERR("cluster: no ZooKeeper session with %s within %u ms: cannot lease a "
			       "node id", d->cfg.cluster_hosts,
			       FM_MAX(d->cfg.cluster_session_timeout_ms, 2000u));
		else
			FM_ERR("cluster: cannot join at %s%s: %s", d->cfg.cluster_hosts,
			       d->cfg.cluster_root, strerror(err));
		free(cl->servers_pending);
		pthread_mutex_destroy(&cl->mu);
		free(cl);
		return -err;
	}
	atomic_store(&cl->c, c);
	d->cl = cl;
	d->node_id = cluster_node_id(c);
	FM_INFO("cluster: this is node %u (daemon.node_id = %s%s)", d->node_id, d->cfg.node_id,
		again ? ", the node of the regions awaiting re-adoption" : "");
	/* The node's records dir was made by this lease: whatever it held is
	 * gone, most likely collected (after cluster.orphan_grace_s without a
	 * lease) with the waiting regions' stored pages. */
	if (again && cluster_generation(c) == 1)
		FM_WARN("cluster: node %u had no state in ZooKeeper (%s%s): it was collected as "
			"an orphan while no daemon held it (longer than cluster.orphan_grace_s), "
			"or ZooKeeper's data is new. The stored pages of the %u region(s) awaiting "
			"re-adoption are likely deleted: their clients get SIGBUS on those pages, "
			"never zeros", d->node_id, d->cfg.cluster_hosts, d->cfg.cluster_root,
			d->npending);
	return 0;
}

void ctl_cluster_stop(struct daemon *d)
{
	struct ctl_cluster *cl = d->cl;
	struct cluster *c;

	if (!cl)
		return;
	c = atomic_load(&cl->c);
	if (cluster_flush(c, 2000) < 0)
		FM_WARN("cluster: ZooKeeper unreachable at shutdown; records left for the next "
			"start or the collector");
	cluster_destroy(c);   /* joins the worker: the collector's handle is ours now */
	kv_close(cl->kv);
	free(cl->servers_pending);
	pthread_mutex_destroy(&cl->mu);
	free(cl);
	d->cl = NULL;
}

int ctl_cluster_fd(const struct daemon *d)
{
	return d->cl ? cluster_event_fd(atomic_load(&d->cl->c)) : -1;
}

bool ctl_cluster_busy(const struct daemon *d)
{
	return d->cl && (d->cl->nheld || atomic_load(&d->cl->servers_dirty));
}

void ctl_cluster_events(struct daemon *d)
{
	struct ctl_cluster *cl = d->cl;
	struct cluster *c;
	uint64_t v, now;
	bool down;

	if (!cl)
		return;
	c = atomic_load(&cl->c);
	if (read(cluster_event_fd(c), &v, sizeof(v)) < 0) {
		/* EAGAIN: a periodic call */
	}
	if (atomic_load(&cl->servers_dirty))
		apply_servers(d);
	if (!cl->nheld)
		return;
	now = fm_now_ns();
	down = cluster_state(c) != CLUSTER_CONNECTED;
	for (unsigned s = 0; s < FM_MAX_REGIONS && cl->nheld; s++) {
		struct uffd_region *r = d->regions[s];

		if (!cl->held_until_ns[s])
			continue;
		if (!down && now < cl->held_until_ns[s] && !cluster_applied(c, cl->ticket[s]))
			continue;
		if (!down && now >= cl->held_until_ns[s] && !cluster_applied(c, cl->ticket[s]))
			cl->acks_timed_out++;
		cl->held_until_ns[s] = 0;
		cl->nheld--;
		if (r)
			daemon_region_ack(d, r);
	}
}

/* ---- regions ---- */

int ctl_cluster_region_id(struct daemon *d, uint64_t *id)
{
	return cluster_region_id(atomic_load(&d->cl->c), id);
}

void ctl_cluster_region_registered(struct daemon *d, struct uffd_region *r)
{
	struct ctl_cluster *cl = d->cl;
	struct cluster_region rec = { .id = r->id, .pid = r->pid, .size = r->npages * FM_PAGE_SIZE };
	size_t i;
	int rc;

	if (!cl)
		return;
	cl->ticket[r->slot] = 0;
	rec.start_time = fm_pid_start_time(r->pid);
	/* A record holds a printable name; the client's may hold anything. */
	for (i = 0; i < sizeof(rec.name) - 1 && i < sizeof(r->name) && r->name[i]; i++)
		rec.name[i] = (unsigned char)r->name[i] < ' ' || r->name[i] == 0x7f ? '?' : r->name[i];
	rec.name[i] = '\0';
	snprintf(rec.ns, sizeof(rec.ns), "%s", d->cfg.store_backend);
	rc = cluster_region_create_nowait(atomic_load(&cl->c), &rec, &cl->ticket[r->slot]);
	if (rc < 0) {
		/* The region is served all the same: ZooKeeper is never a
		 * reason to refuse memory. Only its collection would miss it. */
		cl->records_failed++;
		cl->ticket[r->slot] = 0;
		fm_log_ratelimited(FM_LOG_WARN, "cluster: no record for region %" PRIx64 ": %s",
				   r->id, strerror(-rc));
	}
}

bool ctl_cluster_hold_ack(struct daemon *d, struct uffd_region *r)
{
	struct ctl_cluster *cl = d->cl;
	struct cluster *c;

	if (!cl || !cl->ticket[r->slot])
		return false;
	c = atomic_load(&cl->c);
	if (cluster_applied(c, cl->ticket[r->slot]) || cluster_state(c) != CLUSTER_CONNECTED)
		return false;
	if (!cl->held_until_ns[r->slot])
		cl->nheld++;
	cl->held_until_ns[r->slot] = fm_now_ns() + CLUSTER_ACK_WAIT_MS * 1000000ull;
	cl->acks_held++;
	return true;
}

void ctl_cluster_region_freed(struct daemon *d, struct uffd_region *r)
{
	struct ctl_cluster *cl = d->cl;
	int rc;

	if (!cl)
		return;
	if (cl->held_until_ns[r->slot]) {
		cl->held_until_ns[r->slot] = 0;
		cl->nheld--;
	}
	cl->ticket[r->slot] = 0;
	rc = cluster_region_delete_nowait(atomic_load(&cl->c), r->id);
	if (rc < 0)
		fm_log_ratelimited(FM_LOG_WARN, "cluster: record of region %" PRIx64
				   " not deleted: %s", r->id, strerror(-rc));
}

/* ---- stats and commands ---- */

void ctl_cluster_stats_json(struct daemon *d, json_t *tot)
{
	struct ctl_cluster *cl = d->cl;
	struct cluster_stats st;
	struct cluster *c;

	json_object_set_new(tot, "node_id", json_integer(d->node_id));
	if (!cl) {
		json_object_set_new(tot, "cluster_state", json_string("off"));
		return;
	}
	c = atomic_load(&cl->c);
	cluster_get_stats(c, &st);
	json_object_set_new(tot, "cluster_state", json_string(cluster_state_name(cluster_state(c))));
	json_object_set_new(tot, "cluster_leader", json_boolean(st.leader));
#define SET(key, v) json_object_set_new(tot, key, cj_u64(v))
	SET("cluster_queue_len", st.queue_len);
	SET("cluster_queued", st.queued);
	SET("cluster_queue_full", st.queue_full);
	SET("cluster_writes", st.applied);
	SET("cluster_write_errors", st.write_errors);
	SET("cluster_disconnects", st.disconnects);
	SET("cluster_reconnects", st.reconnects);
	SET("cluster_collected", st.collected);
	SET("cluster_collect_failed", st.collect_failed);
	SET("cluster_collected_keys", atomic_load(&cl->collected_keys));
	SET("cluster_records_failed", cl->records_failed);
	SET("cluster_acks_held", cl->acks_held);
	SET("cluster_acks_timed_out", cl->acks_timed_out);
	SET("cluster_server_changes", cl->server_changes);
	SET("cluster_server_change_errors", cl->server_change_errors);
#undef SET
}

void ctl_cluster_metrics_text(struct daemon *d, struct strbuf *out)
{
	struct ctl_cluster *cl = d->cl;
	struct cluster_stats st;
	struct cluster *c;

	sb_printf(out, "# HELP fluidmem_node_info this daemon's node id (leased with the cluster on)\n"
		       "# TYPE fluidmem_node_info gauge\nfluidmem_node_info{node_id=\"%u\"} 1\n",
		  d->node_id);
	sb_printf(out, "# HELP fluidmem_cluster_state_info ZooKeeper session: 1 for the current state\n"
		       "# TYPE fluidmem_cluster_state_info gauge\n");
	c = cl ? atomic_load(&cl->c) : NULL;
	sb_printf(out, "fluidmem_cluster_state_info{state=\"off\"} %d\n", c ? 0 : 1);
	for (int s = 0; s < CLUSTER_STATE_NR; s++)
		sb_printf(out, "fluidmem_cluster_state_info{state=\"%s\"} %d\n", cluster_state_name(s),
			  c && cluster_state(c) == (enum cluster_state)s);
	if (!c)
		return;
	cluster_get_stats(c, &st);
	sb_printf(out, "# HELP fluidmem_cluster_leader_info 1 while this node collects orphans\n"
		       "# TYPE fluidmem_cluster_leader_info gauge\nfluidmem_cluster_leader_info %d\n"
		       "# HELP fluidmem_cluster_queued_messages state changes waiting for ZooKeeper\n"
		       "# TYPE fluidmem_cluster_queued_messages gauge\nfluidmem_cluster_queued_messages %" PRIu64 "\n"
		       "# HELP fluidmem_cluster_writes_total state changes applied in ZooKeeper\n"
		       "# TYPE fluidmem_cluster_writes_total counter\n"
		       "fluidmem_cluster_writes_total %" PRIu64 "\n"
		       "# HELP fluidmem_cluster_disconnects_total connections to ZooKeeper lost\n"
		       "# TYPE fluidmem_cluster_disconnects_total counter\n"
		       "fluidmem_cluster_disconnects_total %" PRIu64 "\n"
		       "# HELP fluidmem_cluster_collected_total orphan nodes collected by this node\n"
		       "# TYPE fluidmem_cluster_collected_total counter\n"
		       "fluidmem_cluster_collected_total %" PRIu64 "\n"
		       "# HELP fluidmem_cluster_collected_pages_total store keys of orphan nodes "
		       "deleted by this node\n"
		       "# TYPE fluidmem_cluster_collected_pages_total counter\n"
		       "fluidmem_cluster_collected_pages_total %" PRIu64 "\n",
		  st.leader, st.queue_len, st.applied, st.disconnects, st.collected,
		  atomic_load(&cl->collected_keys));
}

void ctl_cluster_regions_json(struct daemon *d, struct strbuf *out)
{
	struct cluster_region *recs = NULL;
	json_t *rep, *list;
	size_t n = 0;
	int rc;

	if (!d->cl) {
		cj_fail(out, "the cluster is off (no cluster.hosts): `regions` lists this node's");
		return;
	}
	/* A read on the control thread, bounded by the client's own timeouts;
	 * an operator's command, never a client's registration. */
	rc = cluster_regions_list(atomic_load(&d->cl->c), -1, &recs, &n);
	if (rc < 0) {
		cj_fail(out, "%s", rc == -ENOTCONN ? "no ZooKeeper session now: try again later"
						   : strerror(-rc));
		return;
	}
	rep = cj_ok();
	json_object_set_new(rep, "node_id", json_integer(d->node_id));
	list = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(
			list, json_pack("{s:o,s:i,s:i,s:o,s:o,s:o,s:o,s:o}", "id", cj_u64(recs[i].id),
					"node", (int)recs[i].node, "pid", (int)recs[i].pid,
					"start_time", cj_u64(recs[i].start_time), "bytes",
					cj_u64(recs[i].size), "pages", cj_u64(recs[i].size / FM_PAGE_SIZE),
					"ns", cj_str(recs[i].ns), "name", cj_str(recs[i].name)));
	json_object_set_new(rep, "regions", list);
	cj_reply(out, rep);
	free(recs);
}

/* Cluster-wide completion of a drain: every live node drained to the list
 * now in ZooKeeper. */
static void drained_json(struct daemon *d, json_t *o, const char *list)
{
	unsigned live, done;
	char pending[256];
	int rc = cluster_drained_get(atomic_load(&d->cl->c), list, &live, &done, pending,
				     sizeof(pending));
	json_t *n;

	if (rc < 0) {
		json_object_set_new(o, "nodes", json_null());
		return;
	}
	n = json_object();
	json_object_set_new(n, "live", json_integer(live));
	json_object_set_new(n, "drained", json_integer(done));
	json_object_set_new(n, "pending", cj_str(pending));
	json_object_set_new(o, "nodes", n);
}

/* A drain is done on this node: the others are told through ZooKeeper
 * (drained/N, the list this node's keys now live on). */
void ctl_cluster_drained(struct daemon *d)
{
	if (!d->cl)
		return;
	if (cluster_drained_set_nowait(atomic_load(&d->cl->c), d->cfg.mc.servers) < 0)
		FM_WARN("cluster: drain done, but its record could not be queued");
}

/* Refusals shared by both modes; true when refused (out filled). */
static bool drain_refused(struct daemon *d, const char *base, const char *server,
			  struct strbuf *out)
{
	char rest[FM_MC_SERVERS_MAX];

	if (d->drain.state == DRAIN_RUNNING || d->drain.state == DRAIN_WAITING) {
		cj_fail(out, "a drain of %s is under way: wait for it (`servers list`)", d->drain.server);
		return true;
	}
	if (!daemon_list_has(base, server)) {
		cj_fail(out, "%s is not in the server list \"%s\"", server, base);
		return true;
	}
	daemon_list_without(base, server, rest, sizeof(rest));
	if (!rest[0]) {
		cj_fail(out, "%s is the last server: its pages would have nowhere to go", server);
		return true;
	}
	return false;
}

/* servers list | add HOST:PORT | drain HOST:PORT */
void ctl_cluster_servers_cmd(struct daemon *d, int argc, char **argv, struct strbuf *out)
{
	char *zk = NULL, *next = NULL;
	int rc = -ENOENT;

	if (argc < 2 || (!strcmp(argv[1], "list") ? argc != 2 : argc != 3)) {
		cj_fail(out, "usage: servers list | add HOST:PORT | drain HOST:PORT");
		return;
	}
	if (strcmp(d->cfg.store_backend, "memcached")) {
		cj_fail(out, "the store is not memcached");
		return;
	}
	if (d->cl && (zk = malloc(FM_MC_SERVERS_MAX)))
		rc = cluster_servers_get(atomic_load(&d->cl->c), zk, FM_MC_SERVERS_MAX);
	if (!strcmp(argv[1], "list")) {
		json_t *o = cj_ok();

		json_object_set_new(o, "servers", cj_str(d->cfg.mc.servers));
		json_object_set_new(o, "cluster", rc == 0 ? cj_str(zk) : json_null());
		daemon_drain_json(d, o);
		if (d->cl)
			drained_json(d, o, rc == 0 ? zk : d->cfg.mc.servers);
		cj_reply(out, o);
		goto out;
	}
	if (!strcmp(argv[1], "drain") && !d->cl) {
		if (!drain_refused(d, d->cfg.mc.servers, argv[2], out))
			daemon_drain_cmd(d, argv[2], out);
		goto out;
	}
	if (!d->cl) {
		cj_fail(out, "the server list lives in ZooKeeper: it needs the cluster (cluster.hosts)");
		goto out;
	}
	if (!strcmp(argv[1], "drain")) {
		const char *base = rc == 0 ? zk : d->cfg.mc.servers;
		char rest[FM_MC_SERVERS_MAX];
		int w;

		if (rc != 0 && rc != -ENOENT) {
			cj_fail(out, "%s", rc == -ENOTCONN ? "no ZooKeeper session now: try again later"
							   : strerror(-rc));
			goto out;
		}
		if (drain_refused(d, base, argv[2], out))
			goto out;
		daemon_list_without(base, argv[2], rest, sizeof(rest));
		w = cluster_servers_set_nowait(atomic_load(&d->cl->c), rest);
		if (w < 0) {
			cj_fail(out, "%s", strerror(-w));
			goto out;
		}
		/* Every node (this one too) switches when its watch fires,
		 * then drains its own keys and says so in drained/N. */
		daemon_drain_start(d, argv[2], true);
		json_t *o = cj_ok();

		json_object_set_new(o, "servers", cj_str(rest));
		json_object_set_new(o, "draining", cj_str(argv[2]));
		cj_reply(out, o);
		goto out;
	}
	if (strcmp(argv[1], "add")) {
		cj_fail(out, "usage: servers list | add HOST:PORT | drain HOST:PORT");
		goto out;
	}
	if (rc != 0 && rc != -ENOENT) {
		cj_fail(out, "%s", rc == -ENOTCONN ? "no ZooKeeper session now: try again later"
						   : strerror(-rc));
		goto out;
	}
	{
		/* The list every node follows: the znode's, else ours. */
		const char *base = rc == 0 ? zk : d->cfg.mc.servers;
		size_t lb = strlen(base), la = strlen(argv[2]);
		int w;

		if (strchr(argv[2], ',') || !la) {
			cj_fail(out, "one HOST:PORT (or socket path) at a time");
			goto out;
		}
		if (lb + la + 2 > FM_MC_SERVERS_MAX || !(next = malloc(lb + la + 3))) {
			cj_fail(out, "the list would be too long");
			goto out;
		}
		/* ",a,b," holds ",x," exactly when x is in the list. */
		next[0] = ',';
		memcpy(next + 1, base, lb);
		next[lb + 1] = ',';
		next[lb + 2] = '\0';
		for (const char *hit = strstr(next, argv[2]); hit; hit = strstr(hit + 1, argv[2])) {
			if (hit[-1] == ',' && hit[la] == ',') {
				cj_fail(out, "already in the list");
				goto out;
			}
		}
		memcpy(next, base, lb);
		next[lb] = ',';
		memcpy(next + lb + 1, argv[2], la + 1);
		w = cluster_servers_set_nowait(atomic_load(&d->cl->c), next);
		if (w < 0) {
			cj_fail(out, "%s", strerror(-w));
			goto out;
		}
		/* Every node (this one too) switches when its watch fires. */
		json_t *o = cj_ok();

		json_object_set_new(o, "servers", cj_str(next));
		json_object_set_new(o, "note", json_string("every node switches when ZooKeeper tells "
							   "it; pages whose server moved stay "
							   "readable on the old one until rewritten"));
		cj_reply(out, o);
	}
out:
	free(zk);
	free(next);
}
