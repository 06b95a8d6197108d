/* ctl internals shared by daemon.c (wiring, the epoll loop), requests.c,
 * regions.c, ctl_conn.c and commands.c (control commands). Not a public
 * header. */
#ifndef FM_DAEMON_PRIV_H
#define FM_DAEMON_PRIV_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "ctl/ctl.h"
#include "ctl/statefile.h"
#include "ring/ring.h"
#include "shard/shard.h"
#include "uffd/uffd.h"

#define FM_DRAIN_NAME_MAX 272   /* a server's HOST:PORT or socket path */

/* A registration connection: one client process. */
struct reg_conn {
	LIST_ENTRY(reg_conn) link;   /* every connection, freed at shutdown */
	int fd;
	pid_t pid;
	uid_t uid;
	struct uffd_region **regions;   /* regions registered on this connection */
	unsigned nregions, cap;
	bool closed;               /* peer gone; free when nregions == 0 */
	bool denied;               /* uid not allowed: every request is refused */
};

/* A control connection. */
struct ctl_conn {
	LIST_ENTRY(ctl_conn) link;
	int fd;
	char in[CTL_MAX_REQUEST + 1];
	size_t in_len;
	struct strbuf out;
	size_t out_off;
	bool closing;              /* close once out is flushed */
	bool http;                 /* a metrics scrape, not the control protocol */
	uint64_t accepted_ns;      /* metrics: cut off when its request is late */
};

struct daemon {
	struct fm_config cfg;
	struct shard *shards[FM_MAX_SHARDS];
	unsigned nshards;
	struct dispatcher *disp;
	struct fm_doorbell reply_bell;   /* shards ring it after each reply */
	int epfd;
	int reg_fd, ctl_fd, sig_fd;
	int reg_lock_fd, ctl_lock_fd;    /* flocks on PATH.lock: one daemon per socket */
	uint64_t next_request;
	uint64_t next_region;
	uint16_t node_id;                /* daemon.node_id, or the one ZooKeeper leased */
	struct ctl_cluster *cl;          /* cluster_hooks.c; NULL while [cluster] is off */
	uint64_t started_ns;
	bool stopping;
	/* every live region, for listing and teardown */
	struct uffd_region *regions[FM_MAX_REGIONS];
	LIST_HEAD(, reg_conn) reg_conns;
	LIST_HEAD(, ctl_conn) ctl_conns;
	/* per-shard snapshot buffers; only shards write them, on request */
	struct shard_stats *snap;
	struct shard_region_stats *region_snap;   /* nshards * FM_MAX_REGIONS */
	/* What stats/latency --reset saw (commands.c): they show the counters
	 * relative to these, and never clear the ones Prometheus scrapes. */
	struct shard_stats *baseline;             /* nshards */
	struct dispatch_snapshot baseline_disp;
	struct {
		uint64_t registrations, refusals, conns_refused, accept_paused;
	} baseline_ctl;
	int metrics_fd;                  /* HTTP listener, -1 when off */
	bool restore_on_shutdown;
	/* shutdown --keep-clients: leave every region registered in its client,
	 * its stored pages and state in place, for the next daemon to re-adopt. */
	bool keep_clients_on_shutdown;
	uint64_t registrations, refusals;
	/* connections held, per kind, against register./control.max_connections */
	unsigned nreg_conns, nctl_conns, nmetrics_conns;
	unsigned nmetrics_doomed;        /* metrics connections to close after this batch */
	uint64_t conns_refused;          /* connections closed at accept: over a limit or not allowed */
	uint64_t accept_paused;          /* times a listener paused at EMFILE/ENFILE */
	uint64_t paused_until_ns;        /* listeners paused until then; 0 = none */
	uint64_t last_sweep_ns;          /* last check of metrics connections' deadlines */
	/* where cfg came from, for SIGHUP (reload.c) and `config` */
	char *config_path;               /* NULL: built by a test, nothing to reload */
	char **sets;                     /* --set KEY=VALUE, re-applied by a reload */
	int nsets;
	uint64_t reloads, reload_failures;
	uint64_t store_checked_ns;       /* last STATS round while the store was not up */
	/* re-adoption (statefile.h; docs/design.md "Restart and re-adoption") */
	struct fm_state_dir sdir;        /* dirfd -1: no state kept, READOPT answers -ENOENT */
	struct fm_state_map *smaps;      /* per region slot: its mapped state file */
	uint64_t *pending;               /* region files of a previous run awaiting READOPT */
	unsigned npending;
	uint64_t readopt_deadline_ns;    /* then the pending ones are orphans; 0 = none */
	int32_t state_node;              /* the node id sdir's regions were written by; -1 none */
	uint32_t region_counter;         /* low 32 bits of region ids (region_id_alloc) */
	uint64_t readopts, orphans;      /* regions re-adopted / collected as orphans */
	bool stuck_orphan;               /* a shard never answered ORPHAN_DROP: stop collecting */
	uint64_t readopt_refusals;       /* READOPT requests refused */
	uint64_t orphan_keys;            /* store pages deleted with orphans (state.c) */
	/* `servers drain` (drain.c): one at a time, driven by the epoll loop */
	struct {
		enum { DRAIN_IDLE, DRAIN_WAITING, DRAIN_RUNNING, DRAIN_DONE, DRAIN_FAILED } state;
		char server[FM_DRAIN_NAME_MAX];  /* the server being removed */
		bool begin;                      /* the next step starts the pass */
		uint64_t moved, errors, steps;   /* this drain's */
		uint64_t started_ns, ended_ns;
		char why[160];                   /* DRAIN_FAILED */
	} drain;
	uint64_t drains, drains_failed, drain_moved;
	/* the store's server lists the shards hold, as in <state_dir>/servers
	 * (drain.c): the running one last */
	struct fm_state_servers srv;
	bool srv_replay;                 /* the shards open srv.list[0]: replay the rest */
	bool srv_resume;                 /* a replayed drain waits for the waiting regions */
};

/* ---- drain.c: `servers drain` ---- */
/* Start draining `server`, whose removal from the shards' list
 * (FM_MSG_SET_SERVERS) is done or under way (cluster: the watch). */
void daemon_drain_start(struct daemon *d, const char *server, bool waiting);
/* The watched list changed to `list` from `old` and the shards switched:
 * a server removed from it is drained by every node (cluster_hooks.c). */
void daemon_drain_list_changed(struct daemon *d, const char *old, const char *list);
/* One step of a running drain; the epoll loop calls it every turn. */
void daemon_drain_tick(struct daemon *d);
static inline bool daemon_drain_running(const struct daemon *d)
{
	return d->drain.state == DRAIN_RUNNING;
}
/* The running store server list (memcached) changes to `list`: record it
 * in the state directory before the shards switch (write-ahead: a restart
 * then reads the new list and, behind it, the old ones). 0, or -errno
 * (nothing recorded); 0 when no state is kept. */
int daemon_servers_record(struct daemon *d, const char *list);
/* Hand `list` to every shard (FM_MSG_SET_SERVERS): each opens it and keeps
 * its previous lists for reads. 0, or the first shard's -errno (-ETIMEDOUT:
 * one did not answer); shards that switched read the old list too, so
 * nothing is lost and the change can be repeated. */
int daemon_set_servers(struct daemon *d, const char *list);
/* At start, once the state directory is open and `waiting` region files
 * are counted, before the shards open the store: the list they open. With
 * regions waiting, the recorded lists win over the config's (a drain
 * changed them: logged, with the fix for the config); else the config's
 * is recorded. The cluster's list (ZooKeeper) arrives later and wins. */
void daemon_servers_choose(struct daemon *d, int waiting);
/* Once the shards run: switch them through the recorded lists after the
 * oldest; what an unfinished drain left behind is drained again. */
void daemon_servers_replay(struct daemon *d);
/* Epoll loop: that drain starts once no region waits for re-adoption and
 * none is still attaching (its pages must be in the shards' tables). */
void daemon_servers_tick(struct daemon *d);
/* `servers drain HOST:PORT` without the cluster, and the drain's JSON for
 * `servers list` and `stats`. */
void daemon_drain_cmd(struct daemon *d, const char *server, struct strbuf *out);
struct json_t;
void daemon_drain_json(const struct daemon *d, struct json_t *obj);
/* Whether `name` is an entry of the comma-separated `list`. */
bool daemon_list_has(const char *list, const char *name);
/* `list` without `name`, into out (len bytes). */
void daemon_list_without(const char *list, const char *name, char *out, size_t len);

/* The store as the shards last reported it (d->snap, refreshed by every
 * STATS request and every STORE_CHECK_MS while it is not up): up, some
 * servers down, or unreachable from every shard. Always up for local. */
enum store_state { STORE_UP, STORE_DEGRADED, STORE_DOWN };
enum store_state daemon_store_state(const struct daemon *d);
const char *daemon_store_state_name(enum store_state s);

/* Send one control message to every shard and wait for all replies (5 s
 * for queries, 2 min for requests that evict). a[i], b[i] are the arguments
 * for shard i (NULL: 0 for all): REGION_STATS a = the array to fill;
 * SET_BUDGET, EVICT a = pages; RESET a = FM_RESET_* bits; REGION_BUDGET
 * a = the region, b = pages; STATS none (the daemon's snapshot is filled);
 * results[i]/details[i] receive the replies. 0, or -ETIMEDOUT. Other
 * replies that arrive meanwhile (region acks) are handled as usual. */
int daemon_shard_request(struct daemon *d, uint16_t type, const uint64_t *a, const uint64_t *b,
			 int64_t *results, uint64_t *details);

/* Ask the dispatcher thread for its counters (type FM_MSG_STATS, into *out)
 * or to reset them (FM_MSG_RESET, out unused) and wait up to 5 s for the
 * answer; the dispatcher copies its own counters, so nothing is read while
 * written. 0, -ENOMEM, -EAGAIN or -ETIMEDOUT. Control thread only. */
int daemon_dispatcher_request(struct daemon *d, uint16_t type, struct dispatch_snapshot *out);

/* Set the resident budget over all shards (a shrink evicts before the
 * shards answer): *resident and *within from their replies. 0, -EINVAL
 * (0 pages) or -ETIMEDOUT. */
int daemon_set_budget(struct daemon *d, uint64_t pages, uint64_t *resident, bool *within);

/* SIGHUP (reload.c): read the config source again and apply what may
 * change at run time; refuse the rest with a log line. A file that does not
 * load or validate changes nothing. 0, or -EINVAL when nothing was applied. */
int daemon_reload(struct daemon *d);
void daemon_free_config_source(struct daemon *d);

/* Sum every live region's pages over the shards into sums[slot]
 * (FM_MAX_REGIONS entries; present = 1 for live slots, budget UINT64_MAX
 * when uncapped). 0 or -ETIMEDOUT. */
int daemon_region_sums(struct daemon *d, struct shard_region_stats *sums);

/* The Prometheus text exposition of every counter, gauge and histogram
 * (metrics.c). 0 or -ETIMEDOUT. */
int ctl_metrics_text(struct daemon *d, struct strbuf *out);
/* GET /healthz: "ok" and 0 when every shard and the dispatcher answer and
 * the store is reachable; otherwise the reason and -1 (a 503). */
int ctl_health_text(struct daemon *d, struct strbuf *out);

/* Start detaching a region (client gone, unregister, detach command).
 * restore: shards hand every page back to the still-running client first. */
void daemon_detach_region(struct daemon *d, struct uffd_region *r, bool restore);
/* Shutdown, once the shards and the dispatcher are joined: free the regions
 * whose detach was not acknowledged by the deadline (nothing names them any
 * more; their stored copies went with the shards, so their state files go
 * too unless kept). Our copy of each uffd is closed; a live client keeps its
 * own, so its faults wait rather than read zeros. Returns how many. */
unsigned daemon_free_left_regions(struct daemon *d);
/* Handle shard replies until `r` is freed or timeout_ms passes. 0 or -ETIMEDOUT. */
int daemon_wait_region_gone(struct daemon *d, struct uffd_region *r, int timeout_ms);

/* ---- the epoll loop (daemon.c) ---- */
#define TAG_CLUSTER 0   /* the cluster's eventfd (cluster_hooks.h); no pointer */
#define TAG_REG_LISTEN 1
#define TAG_CTL_LISTEN 2
#define TAG_SIGNAL 3
#define TAG_REPLIES 4
#define TAG_REG_CONN 5
#define TAG_CTL_CONN 6
#define TAG_METRICS_LISTEN 7
#define TAG_BITS 3
/* epoll data: a tag in the low bits, the object pointer above them. */
static inline uint64_t tagged(int tag, void *p)
{
	return (uint64_t)(uintptr_t)p | (uint64_t)tag;
}

/* The registration socket admits register.allowed_uids (default: root and
 * our uid); the control socket only root and our own uid: it can stop us. */
bool daemon_uid_allowed(const struct daemon *d, uid_t uid);
bool daemon_peer_allowed(struct daemon *d, int fd, struct ucred *cred, bool control);
/* accept4 on a listener, or -1 when the loop should stop accepting for now
 * (out of descriptors: the listeners pause). */
int daemon_accept_one(struct daemon *d, int lfd);

/* ---- replies (requests.c) ---- */
/* Handle every reply queued by the shards and the dispatcher. */
void daemon_drain_replies(struct daemon *d);
/* Free the buffers kept for replies that never came (shutdown). */
void daemon_requests_free(void);

/* ---- registration connections and regions (regions.c) ---- */
void reg_accept(struct daemon *d);
void reg_conn_readable(struct daemon *d, struct reg_conn *c, uint32_t events);
/* Close and free a connection; its regions must be gone. */
void reg_conn_free(struct daemon *d, struct reg_conn *c);
/* A shard or the dispatcher acknowledged r's pending request (REGION_ADD,
 * REGION_DEL or REGION_FORGET) with result: advance r's life cycle. */
void daemon_region_acked(struct daemon *d, struct uffd_region *r, int64_t result);
/* Send r's registration acknowledgement, if r is live and its client is
 * still connected (cluster_hooks.c releases a held one through this). */
void daemon_region_ack(struct daemon *d, struct uffd_region *r);
/* The dispatcher cannot read r's uffd (error -why): detach r, restoring. */
void daemon_region_hostile(struct daemon *d, struct uffd_region *r, int why);
/* A new region id, never handed out before on this node, across restarts
 * too: node_id << 48 | generation (16 bits) << 32 | counter. The one place
 * ids are made: with the cluster on, the generation is the lease's
 * (cluster_region_id). 0, -EOVERFLOW or -ENOSPC. */
int region_id_alloc(struct daemon *d, uint64_t *id);
/* Open daemon.state_dir and list a previous run's region files as pending
 * re-adoption (daemon start). Without a usable directory, re-adoption is
 * off: logged, never fatal. */
void daemon_state_open(struct daemon *d);
/* Before the node id is leased: -EINVAL (logged, naming both ids and the
 * way out) when daemon.node_id is a number other than the node the pending
 * regions were written by; they would be served as the wrong node. */
int daemon_state_node_check(struct daemon *d);
/* Once d->node_id is final: record it in the directory (unless regions of
 * another node still wait, which the check and the lease rule out) and
 * start the re-adoption grace. */
void daemon_state_started(struct daemon *d);
void daemon_state_close(struct daemon *d);
/* Collect pending regions whose grace ran out (orphans). Epoll loop. */
void daemon_state_tick(struct daemon *d, uint64_t now);

/* ---- control connections (ctl_conn.c) ---- */
/* http: a metrics scrape on the HTTP listener. */
void ctl_accept(struct daemon *d, bool http);
void ctl_conn_readable(struct daemon *d, struct ctl_conn *c);
/* Write what the socket takes of c's reply (EPOLLOUT). */
void ctl_conn_flush(struct daemon *d, struct ctl_conn *c);
void ctl_conn_free(struct daemon *d, struct ctl_conn *c);
/* Cut off metrics connections whose request is late or doomed. */
void ctl_sweep_metrics_conns(struct daemon *d, uint64_t now);

#endif
