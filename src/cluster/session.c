/* cluster/session: the ZooKeeper session, the lease of the node id (and
 * its generation), the worker thread that makes every state-changing call,
 * and the module's life cycle (cluster.h). */
#include "cluster/cluster_priv.h"

#include "base/procstat.h"

uint64_t cl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void cl_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

const char *cluster_state_name(enum cluster_state s)
{
	static const char *const names[] = { [CLUSTER_CONNECTING] = "connecting",
					     [CLUSTER_CONNECTED] = "connected",
					     [CLUSTER_EXPIRED] = "expired",
					     [CLUSTER_LOST] = "lost" };

	return (unsigned)s < CLUSTER_STATE_NR ? names[s] : "?";
}

/* ---- session ---- */

void cl_path(const struct cluster *c, char *buf, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(buf, PATH_MAX_ZK, "%s/", c->root);

	va_start(ap, fmt);
	vsnprintf(buf + n, PATH_MAX_ZK - (size_t)n, fmt, ap);
	va_end(ap);
}

/* Tell the daemon's loop (cluster_event_fd); never blocks. */
void cl_notify(struct cluster *c)
{
	uint64_t one = 1;

	if (c->event_fd >= 0 && write(c->event_fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is already non-zero, the loop will wake */
	}
}

void cl_wake_worker(struct cluster *c, bool elect, bool servers)
{
	pthread_mutex_lock(&c->mu);
	c->elect_dirty |= elect;
	c->servers_dirty |= servers;
	pthread_cond_broadcast(&c->wake);
	pthread_cond_broadcast(&c->done);
	pthread_mutex_unlock(&c->mu);
}

/* On the client's completion thread: record and wake, never block. */
static void on_event(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
	struct cluster *c = ctx;
	char sp[PATH_MAX_ZK];

	if (type == ZOO_SESSION_EVENT) {
		/* A connected session that is not any more: the server died, or
		 * dropped its clients (a follower that lost its leader does). */
		if (atomic_exchange(&c->zk_state, state) == ZOO_CONNECTED_STATE &&
		    state != ZOO_CONNECTED_STATE)
			atomic_fetch_add(&c->disconnects, 1);
		if (state == ZOO_CONNECTED_STATE &&
		    atomic_load(&c->state) == CLUSTER_CONNECTING)
			atomic_store(&c->state, CLUSTER_CONNECTED);
		else if (state == ZOO_CONNECTING_STATE || state == ZOO_ASSOCIATING_STATE)
			atomic_compare_exchange_strong(&c->state, &(int){ CLUSTER_CONNECTED },
						       CLUSTER_CONNECTING);
		else if (state == ZOO_EXPIRED_SESSION_STATE && atomic_load(&c->state) != CLUSTER_LOST)
			atomic_store(&c->state, CLUSTER_EXPIRED);
		/* After a reconnect re-check what watches may have missed. */
		cl_wake_worker(c, true, true);
		cl_notify(c);
		return;
	}
	cl_path(c, sp, "servers");
	cl_wake_worker(c, !path || strcmp(path, sp) != 0, path && !strcmp(path, sp));
}

/* Wait for the handle to connect; 0 or -ETIMEDOUT (or -ECANCELED on stop). */
static int wait_connected(struct cluster *c, uint32_t ms)
{
	uint64_t end = cl_now_ms() + ms;

	while (atomic_load(&c->zk_state) != ZOO_CONNECTED_STATE) {
		if (cl_now_ms() >= end)
			return -ETIMEDOUT;
		if (atomic_load(&c->zk_state) == ZOO_EXPIRED_SESSION_STATE)
			return -ETIMEDOUT;
		pthread_mutex_lock(&c->mu);
		bool stop = c->stop;
		pthread_mutex_unlock(&c->mu);
		if (stop)
			return -ECANCELED;
		cl_sleep_ms(10);
	}
	return 0;
}

static int zk_open(struct cluster *c)
{
	zhandle_t *zh;

	atomic_store(&c->zk_state, ZOO_CONNECTING_STATE);
	zh = zookeeper_init(c->hosts, on_event, (int)c->o.session_timeout_ms, NULL, c, 0);
	if (!zh)
		return -errno ? -errno : -EIO;
	pthread_rwlock_wrlock(&c->zh_lock);
	c->zh = zh;
	pthread_rwlock_unlock(&c->zh_lock);
	return 0;
}

/* Create path (persistent) if missing. */
static int ensure(zhandle_t *zh, const char *path)
{
	int rc = zoo_create(zh, path, NULL, -1, &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT, NULL, 0);

	return rc == ZOK || rc == ZNODEEXISTS ? 0 : rc;
}

static int ensure_tree(struct cluster *c)
{
	static const char *const dirs[] = { "nodes", "regions", "election", "autoid", "drained" };
	char p[PATH_MAX_ZK];
	int rc;

	/* Every prefix of the root, then the dirs below it. */
	snprintf(p, sizeof(p), "%s", c->root);
	for (char *s = p + 1;; s++) {
		if (*s == '/' || *s == '\0') {
			char ch = *s;

			*s = '\0';
			if ((rc = ensure(c->zh, p)) != 0)
				return rc;
			*s = ch;
			if (!ch)
				break;
		}
	}
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		cl_path(c, p, "%s", dirs[i]);
		if ((rc = ensure(c->zh, p)) != 0)
			return rc;
	}
	return 0;
}

/* "host boot_id pid starttime" of this process: who holds a lease. */
static unsigned long long proc_start(pid_t pid)
{
	return (unsigned long long)fm_pid_start_time(pid);
}

static void make_lease_data(struct cluster *c)
{
	char host[128] = "?", boot[64] = "?";
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");

	gethostname(host, sizeof(host) - 1);
	if (f) {
		if (!fgets(boot, sizeof(boot), f))
			strcpy(boot, "?");
		boot[strcspn(boot, "\n")] = '\0';
		fclose(f);
	}
	snprintf(c->lease_data, sizeof(c->lease_data), "%s %s %d %llu", host, boot, (int)getpid(),
		 proc_start(getpid()));
}

/* A lease from this host and boot whose process is gone (or whose pid now
 * names another process) can never be used again: taking it over early is
 * safe. Anything else (another host, a live process, a collector) is not. */
static bool lease_is_stale(const struct cluster *c, const char *data)
{
	char host[128], boot[64], mhost[128], mboot[64];
	int pid, mpid;
	unsigned long long st, mst;

	if (sscanf(data, "%127s %63s %d %llu", host, boot, &pid, &st) != 4 ||
	    sscanf(c->lease_data, "%127s %63s %d %llu", mhost, mboot, &mpid, &mst) != 4)
		return false;
	if (strcmp(host, mhost) || strcmp(boot, mboot) || pid <= 0)
		return false;
	if (pid == mpid && st == mst)
		return false;   /* this very process: a second handle */
	if (kill(pid, 0) < 0 && errno == ESRCH)
		return true;
	return proc_start(pid) != st;
}

/* Lease node id `id`: 0, -EEXIST, or -EIO. */
static int lease_one(struct cluster *c, uint16_t id)
{
	char p[PATH_MAX_ZK], data[LEASE_DATA_MAX];
	struct Stat st;

	cl_path(c, p, "nodes/%u", id);
	for (int attempt = 0; attempt < 2; attempt++) {
		int len = sizeof(data) - 1;
		int rc = zoo_create(c->zh, p, c->lease_data, (int)strlen(c->lease_data),
				    &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL, NULL, 0);

		if (rc == ZOK)
			return 0;
		if (rc != ZNODEEXISTS)
			return -EIO;
		rc = zoo_get(c->zh, p, 0, data, &len, &st);
		if (rc == ZNONODE)
			continue;
		if (rc != ZOK)
			return -EIO;
		data[len < 0 ? 0 : len] = '\0';
		if (!lease_is_stale(c, data)) {
			FM_WARN("cluster: node id %u is leased by \"%s\"", id, data);
			return -EEXIST;
		}
		FM_INFO("cluster: taking over node id %u from our dead predecessor \"%s\"", id, data);
		rc = zoo_delete(c->zh, p, st.version);
		if (rc != ZOK && rc != ZNONODE && rc != ZBADVERSION)
			return -EIO;
	}
	return -EEXIST;
}

/* After the lease: the node's dir exists and its version, bumped now, is
 * this lease's generation (region id bits 32..47). */
static int bump_generation(struct cluster *c)
{
	char p[PATH_MAX_ZK];
	struct Stat st;
	int rc;

	cl_path(c, p, "regions/%u", c->node);
	if (ensure(c->zh, p))
		return -EIO;
	rc = zoo_set2(c->zh, p, NULL, -1, -1, &st);
	if (rc != ZOK)
		return -EIO;
	c->gen = (uint16_t)st.version;
	atomic_store(&c->next_id, (uint64_t)c->gen << 32);
	return 0;
}

static int lease(struct cluster *c, int32_t want)
{
	char p[PATH_MAX_ZK], got[PATH_MAX_ZK];
	uint32_t start;
	int rc;

	if (want != CLUSTER_NODE_AUTO) {
		rc = lease_one(c, (uint16_t)want);
		if (rc)
			return rc;
		c->node = (uint16_t)want;
		return bump_generation(c);
	}
	/* A sequential znode spreads concurrent starters over the id space;
	 * the ephemeral create then decides. Ids with records (a dead node
	 * within its grace, awaiting re-adoption or collection) are skipped. */
	cl_path(c, p, "autoid/a-");
	rc = zoo_create(c->zh, p, NULL, -1, &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT_SEQUENTIAL, got,
			sizeof(got));
	if (rc != ZOK)
		return -EIO;
	zoo_delete(c->zh, got, -1);
	start = (uint32_t)strtoul(strrchr(got, '-') + 1, NULL, 10);
	for (uint32_t i = 0; i < CLUSTER_NODE_MAX; i++) {
		uint16_t id = (uint16_t)((start + i) % CLUSTER_NODE_MAX + 1);

		cl_path(c, p, "regions/%u", id);
		rc = zoo_exists(c->zh, p, 0, NULL);
		if (rc == ZOK)
			continue;
		if (rc != ZNONODE)
			return -EIO;
		rc = lease_one(c, id);
		if (rc == -EEXIST)
			continue;
		if (rc)
			return rc;
		c->node = id;
		return bump_generation(c);
	}
	return -ENOSPC;
}

/* ---- the worker ---- */

/* The session expired: every ephemeral (lease, election) is gone. Make a
 * new session and take the same id again; if someone else took it (the
 * leader collected us), we are lost for good. */
static void reestablish(struct cluster *c)
{
	zhandle_t *old;
	int rc;

	FM_WARN("cluster: ZooKeeper session expired; re-establishing node %u", c->node);
	pthread_rwlock_wrlock(&c->zh_lock);
	old = c->zh;
	c->zh = NULL;
	pthread_rwlock_unlock(&c->zh_lock);
	zookeeper_close(old);
	c->my_elect[0] = '\0';
	c->leader = false;
	if (zk_open(c) < 0)
		return;
	if (wait_connected(c, c->o.session_timeout_ms) < 0) {
		/* Still unreachable: keep trying with fresh handles. */
		atomic_store(&c->zk_state, ZOO_EXPIRED_SESSION_STATE);
		return;
	}
	rc = lease_one(c, c->node);
	if (rc == 0) {
		char p[PATH_MAX_ZK];

		/* Our dir gone means the leader collected us meanwhile (it
		 * released our id when done): our keys are gone. */
		cl_path(c, p, "regions/%u", c->node);
		rc = zoo_exists(c->zh, p, 0, NULL);
		if (rc == ZNONODE) {
			FM_ERR("cluster: node %u was collected while our session was gone", c->node);
			char lp[PATH_MAX_ZK];

			cl_path(c, lp, "nodes/%u", c->node);
			zoo_delete(c->zh, lp, -1);
			atomic_store(&c->state, CLUSTER_LOST);
			return;
		}
		rc = rc == ZOK ? 0 : -EIO;
	}
	if (rc == 0 && bump_generation(c))
		rc = -EIO;   /* a new generation: ids of the old one stay unique */
	if (rc == -EEXIST) {
		FM_ERR("cluster: node id %u was taken while our session was gone", c->node);
		atomic_store(&c->state, CLUSTER_LOST);
		return;
	}
	if (rc) {
		atomic_store(&c->zk_state, ZOO_EXPIRED_SESSION_STATE);
		return;
	}
	c->st.reconnects++;
	atomic_store(&c->state, CLUSTER_CONNECTED);
	cl_wake_worker(c, true, true);
	cl_notify(c);
}

static void *worker_main(void *arg)
{
	struct cluster *c = arg;
	uint32_t tick = c->o.orphan_grace_ms / 4;
	uint64_t next_scan = 0;

	tick = tick < 50 ? 50 : tick > 1000 ? 1000 : tick;
	pthread_mutex_lock(&c->mu);
	while (!c->stop) {
		int st = atomic_load(&c->state);

		if (st == CLUSTER_LOST) {
			pthread_cond_wait(&c->wake, &c->mu);
			continue;
		}
		if (atomic_load(&c->zk_state) == ZOO_EXPIRED_SESSION_STATE) {
			atomic_store(&c->state, CLUSTER_EXPIRED);
			pthread_mutex_unlock(&c->mu);
			reestablish(c);
			pthread_mutex_lock(&c->mu);
			if (atomic_load(&c->zk_state) == ZOO_EXPIRED_SESSION_STATE && !c->stop) {
				pthread_mutex_unlock(&c->mu);
				cl_sleep_ms(200);
				pthread_mutex_lock(&c->mu);
			}
			continue;
		}
		if (atomic_load(&c->zk_state) == ZOO_CONNECTED_STATE) {
			if (atomic_load(&c->state) != CLUSTER_CONNECTED)
				atomic_store(&c->state, CLUSTER_CONNECTED);
			if (c->elect_dirty) {
				c->elect_dirty = false;
				pthread_mutex_unlock(&c->mu);
				int rc = cl_elect(c);
				pthread_mutex_lock(&c->mu);
				c->st.leader = c->leader;
				if (rc == ZOK)
					continue;
				/* Retry at the next tick, not in a spin. */
				c->elect_dirty = true;
				goto wait;
			}
			if (c->servers_dirty) {
				c->servers_dirty = false;
				pthread_mutex_unlock(&c->mu);
				cl_read_servers(c);
				pthread_mutex_lock(&c->mu);
				continue;
			}
			if (c->head) {
				struct op *op = c->head;

				pthread_mutex_unlock(&c->mu);
				int rc = cl_apply(c, op);
				pthread_mutex_lock(&c->mu);
				if (rc == ZOK) {
					c->head = op->next;
					if (!c->head)
						c->tail = NULL;
					c->qlen--;
					c->applied_seq = op->seq;
					c->st.applied++;
					free(op);
					pthread_cond_broadcast(&c->done);
					cl_notify(c);
					continue;
				}
				/* Connection trouble: wait for the session event. */
			}
			if (c->leader && cl_now_ms() >= next_scan) {
				pthread_mutex_unlock(&c->mu);
				cl_scan_orphans(c);
				pthread_mutex_lock(&c->mu);
				next_scan = cl_now_ms() + tick;
				continue;
			}
		}
wait:;
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (long)tick * 1000000L;
		while (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&c->wake, &c->mu, &ts);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* ---- public ---- */

struct cluster *cluster_create(const struct cluster_opts *o)
{
	struct cluster *c;
	int rc;

	if (!o || !o->hosts || cluster_check_hosts(o->hosts) || !o->root ||
	    cluster_check_root(o->root) ||
	    (o->node_id != CLUSTER_NODE_AUTO &&
	     (o->node_id < 0 || o->node_id > (int32_t)CLUSTER_NODE_MAX)) ||
	    o->session_timeout_ms == 0) {
		errno = EINVAL;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->o = *o;
	c->hosts = strdup(o->hosts);
	c->root = strdup(o->root);
	if (!c->hosts || !c->root) {
		free(c->hosts);
		free(c->root);
		free(c);
		errno = ENOMEM;
		return NULL;
	}
	if (!c->o.queue_max)
		c->o.queue_max = 65536;
	if (!c->o.sync_wait_ms)
		c->o.sync_wait_ms = 2000;
	c->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->event_fd < 0) {
		free(c->hosts);
		free(c->root);
		free(c);
		return NULL;
	}
	pthread_rwlock_init(&c->zh_lock, NULL);
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->wake, NULL);
	pthread_cond_init(&c->done, NULL);
	atomic_store(&c->state, CLUSTER_CONNECTING);
	make_lease_data(c);
	/* The library logs every failed connect to stderr; we report state
	 * changes ourselves. Level 0 turns its log off. */
	zoo_set_debug_level(fm_log_get_level() >= FM_LOG_DEBUG ? ZOO_LOG_LEVEL_WARN : (ZooLogLevel)0);

	rc = zk_open(c);
	if (rc == 0)
		rc = wait_connected(c, FM_MAX(o->session_timeout_ms, 2000u));
	if (rc == 0)
		rc = ensure_tree(c) ? -EIO : 0;
	if (rc == 0)
		rc = lease(c, o->node_id);
	if (rc == 0) {
		atomic_store(&c->state, CLUSTER_CONNECTED);
		c->elect_dirty = c->servers_dirty = true;
		rc = -pthread_create(&c->worker, NULL, worker_main, c);
	}
	if (rc) {
		if (c->zh)
			zookeeper_close(c->zh);
		close(c->event_fd);
		free(c->hosts);
		free(c->root);
		free(c);
		errno = -rc;
		return NULL;
	}
	FM_INFO("cluster: node %u leased (generation %u) at %s%s", c->node, c->gen, o->hosts,
		o->root);
	return c;
}

void cluster_destroy(struct cluster *c)
{
	struct op *op;

	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	c->stop = true;
	pthread_cond_broadcast(&c->wake);
	pthread_cond_broadcast(&c->done);
	pthread_mutex_unlock(&c->mu);
	pthread_join(c->worker, NULL);
	if (c->qlen)
		FM_WARN("cluster: %" PRIu64 " queued writes not applied at shutdown", c->qlen);
	if (c->zh)
		zookeeper_close(c->zh);
	while ((op = c->head)) {
		c->head = op->next;
		free(op);
	}
	free(c->missing);
	free(c->servers_seen);
	close(c->event_fd);
	free(c->hosts);
	free(c->root);
	pthread_rwlock_destroy(&c->zh_lock);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->wake);
	pthread_cond_destroy(&c->done);
	free(c);
}

uint16_t cluster_node_id(const struct cluster *c)
{
	return c->node;
}

uint16_t cluster_generation(const struct cluster *c)
{
	return c->gen;
}

enum cluster_state cluster_state(const struct cluster *c)
{
	return (enum cluster_state)atomic_load(&((struct cluster *)c)->state);
}

void cluster_get_stats(const struct cluster *c, struct cluster_stats *s)
{
	struct cluster *m = (struct cluster *)c;

	pthread_mutex_lock(&m->mu);
	*s = m->st;
	s->queue_len = m->qlen;
	s->disconnects = atomic_load(&m->disconnects);
	pthread_mutex_unlock(&m->mu);
}

int cluster_region_id(struct cluster *c, uint64_t *id)
{
	uint64_t v = atomic_load(&c->next_id);

	/* CAS, not fetch_add: an exhausted counter must not carry into the
	 * generation bits (those ids belong to a later lease). */
	do {
		if ((uint32_t)v == UINT32_MAX)
			return -ENOSPC;
	} while (!atomic_compare_exchange_weak(&c->next_id, &v, v + 1));
	*id = (uint64_t)c->node << 48 | v;
	return 0;
}

/* Hold the handle for a synchronous read; NULL when no session. */
zhandle_t *cl_read_begin(struct cluster *c)
{
	pthread_rwlock_rdlock(&c->zh_lock);
	if (!c->zh || atomic_load(&c->zk_state) != ZOO_CONNECTED_STATE) {
		pthread_rwlock_unlock(&c->zh_lock);
		return NULL;
	}
	return c->zh;
}
