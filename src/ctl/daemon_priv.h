/* ctl internals shared by daemon.c (sockets, registration, wiring) and
 * commands.c (control commands). Not a public header. */
#ifndef FM_DAEMON_PRIV_H
#define FM_DAEMON_PRIV_H

#include <sys/types.h>

#include "ctl/ctl.h"
#include "ring/ring.h"
#include "shard/shard.h"
#include "uffd/uffd.h"

/* A registration connection: one client process. */
struct reg_conn {
	struct reg_conn *prev, *next;   /* every connection, freed at shutdown */
	int fd;
	pid_t pid;
	uid_t uid;
	struct region **regions;   /* regions registered on this connection */
	unsigned nregions, cap;
	bool closed;               /* peer gone; free when nregions == 0 */
	bool denied;               /* uid not allowed: every request is refused */
};

/* A control connection. */
struct ctl_conn {
	struct ctl_conn *prev, *next;
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
	uint64_t started_ns;
	bool stopping;
	/* every live region, for listing and teardown */
	struct region *regions[FM_MAX_REGIONS];
	struct reg_conn *reg_conns;
	struct ctl_conn *ctl_conns;
	/* per-shard snapshot buffers; only shards write them, on request */
	struct shard_stats *snap;
	struct shard_region_stats *region_snap;   /* nshards * FM_MAX_REGIONS */
	int metrics_fd;                  /* HTTP listener, -1 when off */
	bool restore_on_shutdown;
	uint64_t registrations, refusals;
	/* connections held, per kind, against register./control.max_connections */
	unsigned nreg_conns, nctl_conns, nmetrics_conns;
	unsigned nmetrics_doomed;        /* metrics connections to close after this batch */
	uint64_t conns_refused;          /* connections closed at accept: over a limit or not allowed */
	uint64_t accept_paused;          /* times a listener paused at EMFILE/ENFILE */
	uint64_t paused_until_ns;        /* listeners paused until then; 0 = none */
	uint64_t last_sweep_ns;          /* last check of metrics connections' deadlines */
};

/* Send one control message to every shard and wait for all replies (5 s
 * for queries, 2 min for requests that evict). a[i], b[i] are the arguments for shard i (NULL: 0 for all);
 * results[i]/details[i] receive the replies. 0, or -ETIMEDOUT. Other
 * replies that arrive meanwhile (region acks) are handled as usual. */
int daemon_shard_request(struct daemon *d, uint16_t type, const uint64_t *a, const uint64_t *b,
			 int64_t *results, uint64_t *details);

/* Ask the dispatcher thread for its counters (type FM_MSG_STATS, into *out)
 * or to reset them (FM_MSG_RESET, out unused) and wait up to 5 s for the
 * answer; the dispatcher copies its own counters, so nothing is read while
 * written. 0, -ENOMEM, -EAGAIN or -ETIMEDOUT. Control thread only. */
int daemon_dispatcher_request(struct daemon *d, uint16_t type, struct dispatch_snapshot *out);

/* The Prometheus text exposition of every counter, gauge and histogram
 * (metrics.c). 0 or -ETIMEDOUT. */
int ctl_metrics_text(struct daemon *d, struct strbuf *out);

/* Start detaching a region (client gone, unregister, detach command).
 * restore: shards hand every page back to the still-running client first. */
void daemon_detach_region(struct daemon *d, struct region *r, bool restore);
/* Handle shard replies until `r` is freed or timeout_ms passes. 0 or -ETIMEDOUT. */
int daemon_wait_region_gone(struct daemon *d, struct region *r, int timeout_ms);

#endif
