#include "cluster/cluster.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
/* The multi-threaded client (libzookeeper_mt) declares its sync calls only
 * with THREADED. */
#define THREADED
#include <zookeeper/zookeeper.h>

#include "base/base.h"
#include "base/log.h"

#define PATH_MAX_ZK 256
#define SERVERS_MAX 4096
#define LEASE_DATA_MAX 256

enum op_kind { OP_CREATE, OP_UPDATE, OP_DELETE, OP_SERVERS };

/* A queued write; the worker applies the head and pops it only once it is
 * done, so order is kept across a lost session. */
struct op {
	struct op *next;
	enum op_kind kind;
	uint64_t seq;
	char path[PATH_MAX_ZK];
	size_t len;
	char data[];
};

/* An unleased node dir the leader is timing. */
struct missing {
	uint16_t node;
	uint64_t since_ms;
};

struct cluster {
	char *hosts, *root;
	struct cluster_opts o;
	uint16_t node;
	uint16_t gen;
	_Atomic uint64_t next_id;        /* gen << 32 | counter: one word, so a bump is atomic */
	char lease_data[LEASE_DATA_MAX];

	/* zh is replaced only by the worker, under the write lock; readers
	 * (list, servers_get) hold the read lock across their calls. */
	pthread_rwlock_t zh_lock;
	zhandle_t *zh;
	_Atomic int zk_state;            /* last ZOO_*_STATE seen by the watcher */
	_Atomic int state;               /* enum cluster_state */

	pthread_mutex_t mu;              /* guards everything below */
	pthread_cond_t wake;             /* the worker has something to do */
	pthread_cond_t done;             /* applied_seq moved */
	struct op *head, *tail;
	uint64_t qlen, next_seq, applied_seq;
	bool stop, elect_dirty, servers_dirty;
	pthread_t worker;

	/* worker-only */
	char my_elect[PATH_MAX_ZK];
	bool leader;
	struct missing *missing;
	size_t n_missing;
	char *servers_seen;

	struct cluster_stats st;
	int event_fd;                    /* cluster_event_fd: applied writes, state changes */
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* ---- pure parts: encoding and config checks ---- */

static bool ns_ok(const char *s)
{
	if (!s[0] || strnlen(s, CLUSTER_NS_MAX) == CLUSTER_NS_MAX)
		return false;
	for (; *s; s++)
		if (*s <= ' ' || *s == 0x7f)
			return false;
	return true;
}

static bool name_ok(const char *s)
{
	if (strnlen(s, CLUSTER_NAME_MAX) == CLUSTER_NAME_MAX)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < ' ' || *s == 0x7f)
			return false;
	return true;
}

int cluster_region_encode(const struct cluster_region *r, char *buf, size_t len)
{
	int n;

	if (!ns_ok(r->ns) || !name_ok(r->name))
		return -EINVAL;
	n = snprintf(buf, len, "%d %016" PRIx64 " %u %" PRId32 " %" PRIu64 " %" PRIu64 " %s %s",
		     CLUSTER_RECORD_VERSION, r->id, r->node, r->pid, r->start_time, r->size, r->ns,
		     r->name);
	if (n < 0 || (size_t)n >= len)
		return -EINVAL;
	return n;
}

/* One space-separated field, returned NUL-terminated in f. */
static int field(const char **p, const char *end, char *f, size_t cap)
{
	size_t n = 0;

	while (*p < end && **p != ' ') {
		/* A NUL would end the C string early and hide what follows. */
		if (n + 1 >= cap || **p == '\0')
			return -EINVAL;
		f[n++] = *(*p)++;
	}
	if (n == 0 || *p >= end)
		return -EINVAL;
	(*p)++;   /* the space */
	f[n] = '\0';
	return 0;
}

static int num(const char *f, int base, uint64_t max, uint64_t *v)
{
	char *e;

	if (f[0] == '-' || f[0] == '+' || f[0] == ' ')
		return -EINVAL;
	errno = 0;
	*v = strtoull(f, &e, base);
	return errno || *e || *v > max ? -EINVAL : 0;
}

int cluster_region_decode(const char *buf, size_t len, struct cluster_region *r)
{
	const char *p = buf, *end = buf + len;
	char f[CLUSTER_NS_MAX];
	uint64_t v;
	size_t nl;

	memset(r, 0, sizeof(*r));
	if (field(&p, end, f, sizeof(f)) || num(f, 10, UINT32_MAX, &v) ||
	    v != CLUSTER_RECORD_VERSION)
		return -EINVAL;
	if (field(&p, end, f, sizeof(f)) || strlen(f) != 16 || num(f, 16, UINT64_MAX, &r->id))
		return -EINVAL;
	if (field(&p, end, f, sizeof(f)) || num(f, 10, CLUSTER_NODE_MAX, &v))
		return -EINVAL;
	r->node = (uint16_t)v;
	if (field(&p, end, f, sizeof(f)))
		return -EINVAL;
	if (f[0] == '-' ? num(f + 1, 10, (uint64_t)INT32_MAX + 1, &v) : num(f, 10, INT32_MAX, &v))
		return -EINVAL;
	r->pid = f[0] == '-' ? (int32_t)(-(int64_t)v) : (int32_t)v;
	if (field(&p, end, f, sizeof(f)) || num(f, 10, UINT64_MAX, &r->start_time))
		return -EINVAL;
	if (field(&p, end, f, sizeof(f)) || num(f, 10, UINT64_MAX, &r->size))
		return -EINVAL;
	if (field(&p, end, r->ns, sizeof(r->ns)) || !ns_ok(r->ns))
		return -EINVAL;
	nl = (size_t)(end - p);
	if (nl >= sizeof(r->name) || memchr(p, '\0', nl))
		return -EINVAL;
	memcpy(r->name, p, nl);
	r->name[nl] = '\0';
	return name_ok(r->name) ? 0 : -EINVAL;
}

int cluster_parse_node_id(const char *s, int32_t *id)
{
	uint64_t v;

	if (!strcmp(s, "auto")) {
		*id = CLUSTER_NODE_AUTO;
		return 0;
	}
	if (!s[0] || strlen(s) > 5 || num(s, 10, CLUSTER_NODE_MAX, &v))
		return -EINVAL;
	*id = (int32_t)v;
	return 0;
}

int cluster_check_hosts(const char *hosts)
{
	const char *p = hosts;

	if (!hosts[0])
		return -EINVAL;
	while (*p) {
		const char *comma = strchr(p, ','), *e = comma ? comma : p + strlen(p);
		const char *colon = memrchr(p, ':', (size_t)(e - p));
		char port[8];
		uint64_t v;

		if (!colon || colon == p || e - colon - 1 <= 0 || e - colon - 1 >= (long)sizeof(port))
			return -EINVAL;
		for (const char *q = p; q < colon; q++)
			if (*q <= ' ')
				return -EINVAL;
		memcpy(port, colon + 1, (size_t)(e - colon - 1));
		port[e - colon - 1] = '\0';
		if (num(port, 10, 65535, &v) || v == 0)
			return -EINVAL;
		if (!comma)
			break;
		p = comma + 1;
		if (!*p)
			return -EINVAL;
	}
	return 0;
}

int cluster_check_root(const char *root)
{
	size_t n = strlen(root);

	if (n < 2 || root[0] != '/' || root[n - 1] == '/' || strstr(root, "//") ||
	    n > PATH_MAX_ZK - 64)
		return -EINVAL;
	return 0;
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

static void path_of(const struct cluster *c, char *buf, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void path_of(const struct cluster *c, char *buf, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(buf, PATH_MAX_ZK, "%s/", c->root);

	va_start(ap, fmt);
	vsnprintf(buf + n, PATH_MAX_ZK - (size_t)n, fmt, ap);
	va_end(ap);
}

/* Tell the daemon's loop (cluster_event_fd); never blocks. */
static void notify(struct cluster *c)
{
	uint64_t one = 1;

	if (c->event_fd >= 0 && write(c->event_fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is already non-zero, the loop will wake */
	}
}

static void wake_worker(struct cluster *c, bool elect, bool servers)
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
		atomic_store(&c->zk_state, state);
		if (state == ZOO_CONNECTED_STATE &&
		    atomic_load(&c->state) == CLUSTER_CONNECTING)
			atomic_store(&c->state, CLUSTER_CONNECTED);
		else if (state == ZOO_CONNECTING_STATE || state == ZOO_ASSOCIATING_STATE)
			atomic_compare_exchange_strong(&c->state, &(int){ CLUSTER_CONNECTED },
						       CLUSTER_CONNECTING);
		else if (state == ZOO_EXPIRED_SESSION_STATE && atomic_load(&c->state) != CLUSTER_LOST)
			atomic_store(&c->state, CLUSTER_EXPIRED);
		/* After a reconnect re-check what watches may have missed. */
		wake_worker(c, true, true);
		notify(c);
		return;
	}
	path_of(c, sp, "servers");
	wake_worker(c, !path || strcmp(path, sp) != 0, path && !strcmp(path, sp));
}

/* Wait for the handle to connect; 0 or -ETIMEDOUT (or -ECANCELED on stop). */
static int wait_connected(struct cluster *c, uint32_t ms)
{
	uint64_t end = now_ms() + ms;

	while (atomic_load(&c->zk_state) != ZOO_CONNECTED_STATE) {
		if (now_ms() >= end)
			return -ETIMEDOUT;
		if (atomic_load(&c->zk_state) == ZOO_EXPIRED_SESSION_STATE)
			return -ETIMEDOUT;
		pthread_mutex_lock(&c->mu);
		bool stop = c->stop;
		pthread_mutex_unlock(&c->mu);
		if (stop)
			return -ECANCELED;
		sleep_ms(10);
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
	static const char *const dirs[] = { "nodes", "regions", "election", "autoid" };
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
		path_of(c, p, "%s", dirs[i]);
		if ((rc = ensure(c->zh, p)) != 0)
			return rc;
	}
	return 0;
}

/* "host boot_id pid starttime" of this process: who holds a lease. */
static unsigned long long proc_start(pid_t pid)
{
	char path[64], buf[1024];
	unsigned long long st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (fgets(buf, sizeof(buf), f)) {
		char *p = strrchr(buf, ')');

		/* field 22 is starttime; after ')' come fields 3.. */
		for (int i = 3; p && i <= 22; i++)
			p = strchr(p + 1, ' ');
		if (p)
			st = strtoull(p + 1, NULL, 10);
	}
	fclose(f);
	return st;
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

	path_of(c, p, "nodes/%u", id);
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

	path_of(c, p, "regions/%u", c->node);
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
	path_of(c, p, "autoid/a-");
	rc = zoo_create(c->zh, p, NULL, -1, &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT_SEQUENTIAL, got,
			sizeof(got));
	if (rc != ZOK)
		return -EIO;
	zoo_delete(c->zh, got, -1);
	start = (uint32_t)strtoul(strrchr(got, '-') + 1, NULL, 10);
	for (uint32_t i = 0; i < CLUSTER_NODE_MAX; i++) {
		uint16_t id = (uint16_t)((start + i) % CLUSTER_NODE_MAX + 1);

		path_of(c, p, "regions/%u", id);
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

/* ---- the election (ZooKeeper's leader recipe) ---- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Join if needed, then lead if ours is the lowest sequence, else watch the
 * one just below ours (no herd when the leader goes). Worker only. */
static int elect(struct cluster *c)
{
	char p[PATH_MAX_ZK], pred[PATH_MAX_ZK];
	struct String_vector v = { 0, NULL };
	const char *mine;
	int rc, idx = -1;

	for (;;) {
		if (!c->my_elect[0]) {
			char data[8];

			path_of(c, p, "election/n-");
			snprintf(data, sizeof(data), "%u", c->node);
			rc = zoo_create(c->zh, p, data, (int)strlen(data), &ZOO_OPEN_ACL_UNSAFE,
					ZOO_EPHEMERAL_SEQUENTIAL, c->my_elect, sizeof(c->my_elect));
			if (rc != ZOK) {
				c->my_elect[0] = '\0';
				return rc;
			}
		}
		mine = strrchr(c->my_elect, '/') + 1;
		path_of(c, p, "election");
		rc = zoo_get_children(c->zh, p, 0, &v);
		if (rc != ZOK)
			return rc;
		qsort(v.data, (size_t)v.count, sizeof(char *), cmp_str);
		idx = -1;
		for (int i = 0; i < v.count; i++)
			if (!strcmp(v.data[i], mine))
				idx = i;
		if (idx < 0) {
			/* Ours is gone (a session lost meanwhile): join again. */
			c->my_elect[0] = '\0';
			deallocate_String_vector(&v);
			continue;
		}
		if (idx == 0) {
			deallocate_String_vector(&v);
			if (!c->leader) {
				FM_INFO("cluster: node %u is the leader", c->node);
				c->n_missing = 0;   /* grace is timed from now: never early */
			}
			c->leader = true;
			return ZOK;
		}
		path_of(c, pred, "election/%s", v.data[idx - 1]);
		deallocate_String_vector(&v);
		c->leader = false;
		rc = zoo_exists(c->zh, pred, 1, NULL);
		if (rc == ZOK)
			return ZOK;
		if (rc != ZNONODE)
			return rc;
		/* The predecessor left between the listing and the watch. */
	}
}

/* ---- orphan collection (leader only) ---- */

static int delete_records(struct cluster *c, uint16_t node)
{
	char p[PATH_MAX_ZK], q[2 * PATH_MAX_ZK];
	struct String_vector v = { 0, NULL };
	int rc;

	path_of(c, p, "regions/%u", node);
	rc = zoo_get_children(c->zh, p, 0, &v);
	if (rc == ZNONODE)
		return ZOK;
	if (rc != ZOK)
		return rc;
	for (int i = 0; i < v.count && rc == ZOK; i++) {
		snprintf(q, sizeof(q), "%s/%s", p, v.data[i]);
		rc = zoo_delete(c->zh, q, -1);
		if (rc == ZNONODE)
			rc = ZOK;
	}
	deallocate_String_vector(&v);
	if (rc == ZOK) {
		rc = zoo_delete(c->zh, p, -1);
		if (rc == ZNONODE)
			rc = ZOK;
	}
	return rc;
}

static void collect(struct cluster *c, uint16_t node)
{
	char lp[PATH_MAX_ZK], data[32];
	int rc;

	/* Hold the orphan's lease while collecting: its owner, restarting
	 * now, is refused instead of adopting records being deleted. */
	path_of(c, lp, "nodes/%u", node);
	snprintf(data, sizeof(data), "collector %u", c->node);
	rc = zoo_create(c->zh, lp, data, (int)strlen(data), &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL,
			NULL, 0);
	if (rc != ZOK)
		return;   /* it came back (or the session is down): not an orphan now */
	FM_INFO("cluster: collecting node %u (lease gone longer than %u ms)", node,
		c->o.orphan_grace_ms);
	if (c->o.collect && c->o.collect(c->o.arg, node) < 0) {
		c->st.collect_failed++;
		zoo_delete(c->zh, lp, -1);
		return;
	}
	rc = delete_records(c, node);
	zoo_delete(c->zh, lp, -1);
	if (rc == ZOK) {
		c->st.collected++;
		for (size_t i = 0; i < c->n_missing; i++)
			if (c->missing[i].node == node)
				c->missing[i] = c->missing[--c->n_missing];
	}
}

static bool in_list(const struct String_vector *v, const char *s)
{
	for (int i = 0; i < v->count; i++)
		if (!strcmp(v->data[i], s))
			return true;
	return false;
}

/* Time every node dir without a lease; collect those past the grace.
 * Timing restarts with each new leader: never early, at worst late. */
static void scan_orphans(struct cluster *c)
{
	char p[PATH_MAX_ZK];
	struct String_vector dirs = { 0, NULL }, leases = { 0, NULL };
	uint64_t now = now_ms();
	size_t keep = 0;

	path_of(c, p, "regions");
	if (zoo_get_children(c->zh, p, 0, &dirs) != ZOK)
		return;
	path_of(c, p, "nodes");
	if (zoo_get_children(c->zh, p, 0, &leases) != ZOK) {
		deallocate_String_vector(&dirs);
		return;
	}
	/* Forget nodes that came back or whose dir is gone. */
	for (size_t i = 0; i < c->n_missing; i++) {
		char id[8];

		snprintf(id, sizeof(id), "%u", c->missing[i].node);
		if (in_list(&dirs, id) && !in_list(&leases, id))
			c->missing[keep++] = c->missing[i];
	}
	c->n_missing = keep;
	for (int i = 0; i < dirs.count; i++) {
		uint64_t v;
		size_t j;

		if (num(dirs.data[i], 10, CLUSTER_NODE_MAX, &v) || in_list(&leases, dirs.data[i]))
			continue;
		for (j = 0; j < c->n_missing && c->missing[j].node != v; j++)
			;
		if (j == c->n_missing) {
			struct missing *m = realloc(c->missing, (c->n_missing + 1) * sizeof(*m));

			if (!m)
				break;
			c->missing = m;
			m[c->n_missing++] = (struct missing){ (uint16_t)v, now };
			continue;
		}
		if (now - c->missing[j].since_ms >= c->o.orphan_grace_ms)
			collect(c, (uint16_t)v);
	}
	deallocate_String_vector(&dirs);
	deallocate_String_vector(&leases);
}

/* ---- servers ---- */

static void read_servers(struct cluster *c)
{
	char p[PATH_MAX_ZK];
	char *buf = malloc(SERVERS_MAX);
	int len = SERVERS_MAX - 1, rc;

	if (!buf)
		return;
	path_of(c, p, "servers");
	rc = zoo_get(c->zh, p, 1, buf, &len, NULL);
	if (rc == ZNONODE)
		rc = zoo_exists(c->zh, p, 1, NULL);   /* watch for its creation */
	if (rc != ZOK || len < 0) {
		free(buf);
		return;
	}
	buf[len] = '\0';
	if (c->servers_seen && !strcmp(c->servers_seen, buf)) {
		free(buf);
		return;
	}
	free(c->servers_seen);
	c->servers_seen = buf;
	if (c->o.servers_changed)
		c->o.servers_changed(c->o.arg, buf);
}

/* ---- the write queue ---- */

/* Apply one write, idempotently. ZOK when done (or dropped on a
 * non-retryable error, counted); a connection error to retry later. */
static int apply(struct cluster *c, const struct op *op)
{
	int rc;

	switch (op->kind) {
	case OP_DELETE:
		rc = zoo_delete(c->zh, op->path, -1);
		if (rc == ZNONODE)
			rc = ZOK;
		break;
	case OP_CREATE:
		rc = zoo_create(c->zh, op->path, op->data, (int)op->len, &ZOO_OPEN_ACL_UNSAFE,
				ZOO_PERSISTENT, NULL, 0);
		if (rc == ZNODEEXISTS)
			rc = zoo_set(c->zh, op->path, op->data, (int)op->len, -1);
		break;
	default:
		rc = zoo_set(c->zh, op->path, op->data, (int)op->len, -1);
		if (rc == ZNONODE)
			rc = zoo_create(c->zh, op->path, op->data, (int)op->len, &ZOO_OPEN_ACL_UNSAFE,
					ZOO_PERSISTENT, NULL, 0);
		break;
	}
	if (rc == ZNONODE && op->kind != OP_DELETE) {
		/* Only a collection deletes our node dir: the leader took us for
		 * an orphan and deleted our keys. Remaking it would hide that. */
		FM_ERR("cluster: %s: our records were collected; this node is lost", op->path);
		atomic_store(&c->state, CLUSTER_LOST);
		c->st.write_errors++;
		return ZOK;
	}
	if (rc == ZCONNECTIONLOSS || rc == ZOPERATIONTIMEOUT || rc == ZSESSIONEXPIRED ||
	    rc == ZINVALIDSTATE || rc == ZCLOSING || rc == ZSESSIONMOVED)
		return rc;
	if (rc != ZOK) {
		FM_WARN("cluster: write to %s dropped: %s", op->path, zerror(rc));
		c->st.write_errors++;
	}
	return ZOK;
}

static int enqueue(struct cluster *c, enum op_kind kind, const char *path, const char *data,
		   size_t len, bool block, uint64_t *ticket)
{
	struct op *op;
	uint64_t seq, end;
	int rc;

	if (atomic_load(&c->state) == CLUSTER_LOST)
		return -ESTALE;
	pthread_mutex_lock(&c->mu);
	if (c->qlen >= c->o.queue_max) {
		c->st.queue_full++;
		pthread_mutex_unlock(&c->mu);
		return -ENOSPC;
	}
	pthread_mutex_unlock(&c->mu);
	op = malloc(sizeof(*op) + len + 1);
	if (!op)
		return -ENOMEM;
	op->next = NULL;
	op->kind = kind;
	snprintf(op->path, sizeof(op->path), "%s", path);
	op->len = len;
	if (len)
		memcpy(op->data, data, len);
	op->data[len] = '\0';

	pthread_mutex_lock(&c->mu);
	op->seq = seq = ++c->next_seq;
	if (c->tail)
		c->tail->next = op;
	else
		c->head = op;
	c->tail = op;
	c->qlen++;
	pthread_cond_broadcast(&c->wake);
	if (ticket)
		*ticket = seq;
	/* Wait for the reply only while a session is up: a down ZooKeeper
	 * must not stall the control thread. */
	end = now_ms() + (block ? c->o.sync_wait_ms : 0);
	while (c->applied_seq < seq && atomic_load(&c->state) == CLUSTER_CONNECTED &&
	       !c->stop) {
		struct timespec ts;
		uint64_t left = end > now_ms() ? end - now_ms() : 0;

		if (!left)
			break;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += (time_t)(left / 1000);
		ts.tv_nsec += (long)(left % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&c->done, &c->mu, &ts);
	}
	rc = c->applied_seq >= seq ? 0 : 1;
	/* A write nobody waited for counts only when the session was down. */
	if (rc && (block || atomic_load(&c->state) != CLUSTER_CONNECTED))
		c->st.queued++;
	pthread_mutex_unlock(&c->mu);
	return rc;
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
		path_of(c, p, "regions/%u", c->node);
		rc = zoo_exists(c->zh, p, 0, NULL);
		if (rc == ZNONODE) {
			FM_ERR("cluster: node %u was collected while our session was gone", c->node);
			char lp[PATH_MAX_ZK];

			path_of(c, lp, "nodes/%u", c->node);
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
	wake_worker(c, true, true);
	notify(c);
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
				sleep_ms(200);
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
				int rc = elect(c);
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
				read_servers(c);
				pthread_mutex_lock(&c->mu);
				continue;
			}
			if (c->head) {
				struct op *op = c->head;

				pthread_mutex_unlock(&c->mu);
				int rc = apply(c, op);
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
					notify(c);
					continue;
				}
				/* Connection trouble: wait for the session event. */
			}
			if (c->leader && now_ms() >= next_scan) {
				pthread_mutex_unlock(&c->mu);
				scan_orphans(c);
				pthread_mutex_lock(&c->mu);
				next_scan = now_ms() + tick;
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

static int put(struct cluster *c, const struct cluster_region *r, enum op_kind kind, bool block,
	       uint64_t *ticket)
{
	struct cluster_region mine = *r;
	char p[PATH_MAX_ZK], buf[CLUSTER_RECORD_MAX];
	int n;

	if (r->id >> 48 != c->node)
		return -EINVAL;
	mine.node = c->node;
	n = cluster_region_encode(&mine, buf, sizeof(buf));
	if (n < 0)
		return n;
	path_of(c, p, "regions/%u/%016" PRIx64, c->node, r->id);
	return enqueue(c, kind, p, buf, (size_t)n, block, ticket);
}

int cluster_region_create(struct cluster *c, const struct cluster_region *r)
{
	return put(c, r, OP_CREATE, true, NULL);
}

int cluster_region_update(struct cluster *c, const struct cluster_region *r)
{
	return put(c, r, OP_UPDATE, true, NULL);
}

int cluster_region_create_nowait(struct cluster *c, const struct cluster_region *r,
				 uint64_t *ticket)
{
	return put(c, r, OP_CREATE, false, ticket);
}

static int del(struct cluster *c, uint64_t id, bool block)
{
	char p[PATH_MAX_ZK];

	if (id >> 48 != c->node)
		return -EINVAL;
	path_of(c, p, "regions/%u/%016" PRIx64, c->node, id);
	return enqueue(c, OP_DELETE, p, NULL, 0, block, NULL);
}

int cluster_region_delete(struct cluster *c, uint64_t id)
{
	return del(c, id, true);
}

int cluster_region_delete_nowait(struct cluster *c, uint64_t id)
{
	return del(c, id, false);
}

static int servers_set(struct cluster *c, const char *servers, bool block)
{
	char p[PATH_MAX_ZK];
	size_t n = strlen(servers);

	if (n >= SERVERS_MAX)
		return -EINVAL;
	path_of(c, p, "servers");
	return enqueue(c, OP_SERVERS, p, servers, n, block, NULL);
}

int cluster_servers_set(struct cluster *c, const char *servers)
{
	return servers_set(c, servers, true);
}

int cluster_servers_set_nowait(struct cluster *c, const char *servers)
{
	return servers_set(c, servers, false);
}

bool cluster_applied(struct cluster *c, uint64_t ticket)
{
	bool done;

	pthread_mutex_lock(&c->mu);
	done = c->applied_seq >= ticket;
	pthread_mutex_unlock(&c->mu);
	return done;
}

int cluster_event_fd(const struct cluster *c)
{
	return c->event_fd;
}

int cluster_flush(struct cluster *c, uint32_t ms)
{
	uint64_t end = now_ms() + ms;
	int rc;

	pthread_mutex_lock(&c->mu);
	while (c->head && atomic_load(&c->state) == CLUSTER_CONNECTED && now_ms() < end) {
		pthread_mutex_unlock(&c->mu);
		sleep_ms(5);
		pthread_mutex_lock(&c->mu);
	}
	rc = c->head ? -ETIMEDOUT : 0;
	pthread_mutex_unlock(&c->mu);
	return rc;
}

/* Hold the handle for a synchronous read; NULL when no session. */
static zhandle_t *read_begin(struct cluster *c)
{
	pthread_rwlock_rdlock(&c->zh_lock);
	if (!c->zh || atomic_load(&c->zk_state) != ZOO_CONNECTED_STATE) {
		pthread_rwlock_unlock(&c->zh_lock);
		return NULL;
	}
	return c->zh;
}

static int list_node(zhandle_t *zh, const char *dir, int node, struct cluster_region **out,
		     size_t *n, size_t *cap)
{
	struct String_vector v = { 0, NULL };
	char p[2 * PATH_MAX_ZK], buf[CLUSTER_RECORD_MAX];
	int rc = zoo_get_children(zh, dir, 0, &v);

	if (rc == ZNONODE)
		return 0;
	if (rc != ZOK)
		return -EIO;
	for (int i = 0; i < v.count; i++) {
		int len = sizeof(buf);

		snprintf(p, sizeof(p), "%s/%s", dir, v.data[i]);
		rc = zoo_get(zh, p, 0, buf, &len, NULL);
		if (rc == ZNONODE)
			continue;
		if (rc != ZOK) {
			deallocate_String_vector(&v);
			return -EIO;
		}
		if (*n == *cap) {
			size_t nc = *cap ? *cap * 2 : 16;
			struct cluster_region *g = realloc(*out, nc * sizeof(**out));

			if (!g) {
				deallocate_String_vector(&v);
				return -ENOMEM;
			}
			*out = g;
			*cap = nc;
		}
		if (len > 0 && cluster_region_decode(buf, (size_t)len, &(*out)[*n]) == 0 &&
		    (*out)[*n].node == node)
			(*n)++;
	}
	deallocate_String_vector(&v);
	return 0;
}

int cluster_regions_list(struct cluster *c, int node, struct cluster_region **out, size_t *n)
{
	char p[PATH_MAX_ZK];
	struct String_vector v = { 0, NULL };
	size_t cap = 0;
	zhandle_t *zh = read_begin(c);
	int rc = 0;

	*out = NULL;
	*n = 0;
	if (!zh)
		return -ENOTCONN;
	if (node >= 0) {
		path_of(c, p, "regions/%d", node);
		rc = list_node(zh, p, node, out, n, &cap);
	} else {
		path_of(c, p, "regions");
		if (zoo_get_children(zh, p, 0, &v) != ZOK)
			rc = -EIO;
		for (int i = 0; i < v.count && rc == 0; i++) {
			uint64_t id;

			if (num(v.data[i], 10, CLUSTER_NODE_MAX, &id))
				continue;
			path_of(c, p, "regions/%s", v.data[i]);
			rc = list_node(zh, p, (int)id, out, n, &cap);
		}
		deallocate_String_vector(&v);
	}
	pthread_rwlock_unlock(&c->zh_lock);
	if (rc) {
		free(*out);
		*out = NULL;
		*n = 0;
	}
	return rc;
}

int cluster_servers_get(struct cluster *c, char *buf, size_t len)
{
	char p[PATH_MAX_ZK];
	zhandle_t *zh = read_begin(c);
	char *tmp;
	int got = SERVERS_MAX - 1, rc;

	if (!zh)
		return -ENOTCONN;
	tmp = malloc(SERVERS_MAX);
	if (!tmp) {
		pthread_rwlock_unlock(&c->zh_lock);
		return -ENOMEM;
	}
	path_of(c, p, "servers");
	rc = zoo_get(zh, p, 0, tmp, &got, NULL);
	pthread_rwlock_unlock(&c->zh_lock);
	if (rc == ZNONODE || (rc == ZOK && got < 0))
		rc = -ENOENT;
	else if (rc != ZOK)
		rc = -EIO;
	else if ((size_t)got >= len)
		rc = -ENOBUFS;
	else {
		memcpy(buf, tmp, (size_t)got);
		buf[got] = '\0';
	}
	free(tmp);
	return rc;
}
