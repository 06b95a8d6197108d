/* cluster: fluidmemd's shared state in ZooKeeper (issue 10). A node leases
 * its id as an ephemeral znode, allocates cluster-unique region ids without a
 * round trip, keeps one persistent record per region, and one elected node
 * collects the keys and records of nodes whose lease has been gone longer
 * than a grace. The store's server list lives in a watched znode.
 *
 * Znode layout under opts.root (docs/design.md, "Cluster state"):
 *   nodes/N           ephemeral lease of node id N, "host boot_id pid starttime"
 *                     (or "collector M" while leader M collects N)
 *   regions/N         persistent dir of N's records; its data version is N's
 *                     generation, bumped at each lease (region id bits 32..47)
 *   regions/N/<id>    one region record, 16 hex digits, cluster_region_encode()
 *   election/n-SEQ    ephemeral sequential: the lowest is the leader
 *   autoid/a-SEQ      transient, seeds the search of node_id = "auto"
 *   servers           the store's server list
 *   drained/N         the server list node N last finished draining to
 *
 * Threads. The module runs one worker thread of its own. It alone makes the
 * blocking ZooKeeper calls that change state (queued writes, the election,
 * orphan collection, session re-establishment) and it runs the callbacks.
 * The ZooKeeper client's completion thread only records events and wakes
 * the worker (a blocking call from it would deadlock the client). Public
 * calls come from the daemon's control thread; none is meant for the fault
 * path. Unless stated otherwise a function is safe to call from any thread
 * concurrently with the others, but not concurrently with cluster_destroy.
 *
 * ZooKeeper down. Writes (region records, the server list) go into a bounded
 * FIFO queue that the worker applies in order once the session is back;
 * every queued operation is idempotent (create-or-set, delete-if-present) so
 * a replay after a lost reply is harmless. A full queue refuses the write
 * and counts it. cluster_state() reports the session for `stats`. */
#ifndef FM_CLUSTER_H
#define FM_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CLUSTER_NODE_AUTO (-1)       /* opts.node_id: ZooKeeper allocates one */
#define CLUSTER_NODE_MAX 65535u      /* ids fit the top 16 bits of a region id */
#define CLUSTER_NAME_MAX 64          /* bytes of a region name, NUL included */
#define CLUSTER_NS_MAX 64            /* bytes of a store namespace, NUL included */
#define CLUSTER_RECORD_MAX 256       /* bytes of an encoded region record */
#define CLUSTER_RECORD_VERSION 1

struct cluster;

enum cluster_state {
	CLUSTER_CONNECTING,   /* no session yet, or the server is unreachable: writes queue */
	CLUSTER_CONNECTED,    /* session up, lease held */
	CLUSTER_EXPIRED,      /* the session expired: a new one is being made, the lease re-taken */
	CLUSTER_LOST,         /* while our session was gone the id went to another node, or
			       * the leader collected us (our keys are gone): stop serving */
	CLUSTER_STATE_NR
};

/* Called on the worker thread by the elected node, once per orphan, with
 * the node's lease held by the collector so that the owner cannot come back
 * meanwhile: delete every store key of `node`. Return 0 when done; < 0
 * keeps the records and retries at a later scan. It must be idempotent (a
 * leader that dies mid-collection leaves the work to the next one) and it
 * holds up the worker: queued writes wait until it returns. */
typedef int (*cluster_collect_fn)(void *arg, uint16_t node);
/* Called on the worker thread with the new server list whenever the
 * servers znode changes (and once at start if it exists). */
typedef void (*cluster_servers_fn)(void *arg, const char *servers);

struct cluster_opts {
	const char *hosts;              /* "host:port,host:port" */
	const char *root;               /* "/fluidmem": absolute, no trailing '/' */
	int32_t node_id;                /* 0..CLUSTER_NODE_MAX or CLUSTER_NODE_AUTO */
	uint32_t session_timeout_ms;    /* asked of the server; it may clamp it */
	uint32_t orphan_grace_ms;       /* a lease gone this long makes an orphan */
	uint32_t queue_max;             /* writes held while disconnected; 0 = 65536 */
	uint32_t sync_wait_ms;          /* how long a write waits for its reply; 0 = 2000 */
	cluster_collect_fn collect;     /* may be NULL: then orphans are not collected */
	cluster_servers_fn servers_changed;  /* may be NULL */
	void *arg;
};

struct cluster_region {
	uint64_t id;
	uint16_t node;                  /* owner; set by the module from the handle */
	int32_t pid;                    /* client process */
	uint64_t start_time;            /* its start time (clock ticks since boot, /proc/PID/stat) */
	uint64_t size;                  /* bytes */
	char name[CLUSTER_NAME_MAX];    /* printable, no newline */
	char ns[CLUSTER_NS_MAX];        /* store namespace: no whitespace, not empty */
};

/* Counters for `stats`; single writer each, read racily. */
struct cluster_stats {
	uint64_t queued;                /* writes that found the session down and waited */
	uint64_t queue_full;            /* writes refused: queue at queue_max */
	uint64_t applied;               /* writes applied */
	uint64_t write_errors;          /* writes dropped on a non-retryable error */
	uint64_t queue_len;             /* writes waiting now */
	uint64_t reconnects;            /* sessions re-made after expiry */
	uint64_t disconnects;           /* connections to ZooKeeper lost (the session may
					 * resume on another server: not a reconnect) */
	uint64_t collected;             /* orphans collected by this node */
	uint64_t collect_failed;        /* collect callbacks that asked for a retry */
	bool leader;
};

/* Connect, lease the node id and join the election; waits up to
 * max(session_timeout_ms, 2000) ms for the first session. Returns NULL and
 * errno: EINVAL (bad opts), ETIMEDOUT (no session), EEXIST (the id is leased
 * by a live process, or is being collected), ENOSPC (auto: no id free),
 * EIO (an unexpected ZooKeeper error), ENOMEM.
 * A lease left by this host's previous fluidmemd, dead now (same host name
 * and boot id; the recorded pid is gone or has another start time), is
 * taken over at once rather than waiting for its session to expire: that
 * process can no longer use it. */
struct cluster *cluster_create(const struct cluster_opts *o);
/* Close the session: the lease is released at once (records stay for
 * re-adoption or, after the grace, collection). Writes still queued are
 * dropped and logged: a daemon that exits with ZooKeeper down leaves its
 * records as they were, which the next start re-adopts or the leader
 * collects. NULL is a no-op. Not concurrent with any other call on c. */
void cluster_destroy(struct cluster *c);

uint16_t cluster_node_id(const struct cluster *c);
/* This lease's generation: regions/N's data version, bumped at each lease.
 * 1 means regions/N was created by this lease: the node had no state in
 * ZooKeeper (new, or collected as an orphan, keys and records deleted). */
uint16_t cluster_generation(const struct cluster *c);
enum cluster_state cluster_state(const struct cluster *c);
const char *cluster_state_name(enum cluster_state s);
void cluster_get_stats(const struct cluster *c, struct cluster_stats *s);

/* A region id unique in the cluster, without a ZooKeeper round trip:
 * node << 48 | generation << 32 | counter. 0 or -ENOSPC (2^32 ids in this
 * lease generation). */
int cluster_region_id(struct cluster *c, uint64_t *id);

/* Write r's record (r->node is ignored: the record is this node's). Called
 * before the client's acknowledgement. Returns 0 when applied (or dropped
 * on a non-retryable ZooKeeper error such as ZNOAUTH: logged and counted in
 * write_errors), 1 when queued (session down, or no reply within
 * sync_wait_ms: applied later, in order), -ENOSPC (queue full, counted),
 * -EINVAL (bad field, or the id is not this node's), -ENOMEM, -ESTALE
 * (state CLUSTER_LOST: nothing is written any more).
 * cluster_region_update is the same for a changed record; both create or
 * overwrite. */
int cluster_region_create(struct cluster *c, const struct cluster_region *r);
int cluster_region_update(struct cluster *c, const struct cluster_region *r);
/* Remove a record, after the region's keys are deleted. 0, 1, -ENOSPC,
 * -ESTALE as above; a missing record is not an error. */
int cluster_region_delete(struct cluster *c, uint64_t id);

/* The same writes for the daemon's control thread, which must never wait
 * for ZooKeeper: queued and never waited for. 1 (queued; *ticket, if not
 * NULL, names the write for cluster_applied), or the errors above.
 * Writes are applied in the order they were queued, waited for or not. */
int cluster_region_create_nowait(struct cluster *c, const struct cluster_region *r,
				 uint64_t *ticket);
int cluster_region_delete_nowait(struct cluster *c, uint64_t id);
int cluster_servers_set_nowait(struct cluster *c, const char *servers);
/* Whether the write named by ticket is applied (or dropped as unretryable). */
bool cluster_applied(struct cluster *c, uint64_t ticket);
/* A non-blocking eventfd that becomes readable when a write was applied or
 * the session changed state; the caller reads (resets) it and then looks
 * at cluster_applied / cluster_state. Owned by c. */
int cluster_event_fd(const struct cluster *c);
/* Wait up to ms for every queued write to be applied, while the session is
 * up (a clean shutdown's last record deletes): 0 or -ETIMEDOUT. */
int cluster_flush(struct cluster *c, uint32_t ms);

/* Read the records of `node`, or of every node (node < 0), into a malloc'd
 * array (free() it). Synchronous, reads only. 0, -ENOTCONN (no session),
 * -EIO, -ENOMEM. Records that do not decode are skipped. */
int cluster_regions_list(struct cluster *c, int node, struct cluster_region **out, size_t *n);

/* The store's server list. get: 0, -ENOENT (never set), -ENOTCONN,
 * -ENOBUFS (len too small), -EIO. set: as cluster_region_create. */
int cluster_servers_get(struct cluster *c, char *buf, size_t len);
int cluster_servers_set(struct cluster *c, const char *servers);

/* Draining a store server (`servers drain`): each node, once it moved its
 * keys to the list without the server, records that list in drained/N
 * (queued like the other writes: 1, or the errors of
 * cluster_region_create). cluster_drained_get tells, for every live node
 * (a lease in nodes/), whether its drained/N equals `servers`: *live and
 * *done (done <= live), and in `pending` (len bytes) the ids of the live
 * nodes not done yet, comma-separated. Synchronous read: 0, -ENOTCONN,
 * -EIO, -ENOMEM. */
int cluster_drained_set_nowait(struct cluster *c, const char *servers);
int cluster_drained_get(struct cluster *c, const char *servers, unsigned *live, unsigned *done,
			char *pending, size_t len);
/* Record encoding, version first: "1 <id hex> <node> <pid> <start> <size>
 * <ns> <name...>" (the name is the rest of the line). encode: the length
 * or -EINVAL; decode: 0 or -EINVAL (also on an unknown version). Pure. */
int cluster_region_encode(const struct cluster_region *r, char *buf, size_t len);
int cluster_region_decode(const char *buf, size_t len, struct cluster_region *r);

/* Config checks for the [cluster] section (ctl/config.c), pure:
 * "auto" -> CLUSTER_NODE_AUTO, "0".."65535" -> the number, else -EINVAL;
 * hosts: comma-separated host:port, port 1..65535; root: absolute, not "/",
 * no trailing or doubled '/'. */
int cluster_parse_node_id(const char *s, int32_t *id);
int cluster_check_hosts(const char *hosts);
int cluster_check_root(const char *root);

#endif
