/* cluster/cluster_priv: what the files of src/cluster share; not a public
 * header. One concern per file:
 *   session.c  the ZooKeeper session, the node id lease, the worker thread,
 *              create/destroy and the getters
 *   queue.c    the ordered, idempotent write queue (applied by the worker)
 *   records.c  region records: encoding, writes, listing
 *   orphans.c  the leader election and the collection of orphaned nodes
 *   servers.c  the store's server list znode and its watch
 *   checks.c   config checks of the [cluster] section (pure) */
#ifndef FM_CLUSTER_PRIV_H
#define FM_CLUSTER_PRIV_H

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
	_Atomic uint64_t disconnects;    /* stats.disconnects: written by the watcher only */

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

/* ---- shared helpers (each in the file of its concern) ---- */
/* session.c */
/* Monotonic milliseconds. */
uint64_t cl_now_ms(void);
void cl_sleep_ms(unsigned ms);
/* root + "/" + the formatted rest, into buf[PATH_MAX_ZK]. */
void cl_path(const struct cluster *c, char *buf, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Wake the daemon's loop (cluster_event_fd); never blocks. */
void cl_notify(struct cluster *c);
/* Wake the worker, marking the election and/or the server list to re-read. */
void cl_wake_worker(struct cluster *c, bool elect, bool servers);
/* Hold the handle for a synchronous read (release: unlock zh_lock); NULL
 * when there is no session. */
zhandle_t *cl_read_begin(struct cluster *c);
/* queue.c */
/* Apply one queued write idempotently: ZOK, or a connection error to retry. */
int cl_apply(struct cluster *c, const struct op *op);
/* Queue a write; with block, wait for it while the session is up. */
int cl_enqueue(struct cluster *c, enum op_kind kind, const char *path, const char *data,
		   size_t len, bool block, uint64_t *ticket);
/* orphans.c */
/* Join the election if needed and lead or watch the predecessor. Worker. */
int cl_elect(struct cluster *c);
/* Time unleased node dirs; collect those past the grace. Leader's worker. */
void cl_scan_orphans(struct cluster *c);
/* servers.c */
/* Read (and re-watch) the servers znode; call servers_changed on a change. */
void cl_read_servers(struct cluster *c);
/* checks.c */
/* A decimal or hex number, no sign, <= max: 0 or -EINVAL. */
int cl_num(const char *f, int base, uint64_t max, uint64_t *v);

#endif
