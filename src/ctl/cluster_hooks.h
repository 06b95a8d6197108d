/* ctl/cluster_hooks: where fluidmemd meets src/cluster (issue 10): the node
 * id lease at start, region ids, region records around registration and
 * detach, orphan collection in the store, and the control commands that
 * read cluster state. Every function is a no-op (or answers "off") while
 * [cluster] is off. Control thread only, except where marked. Kept apart
 * from regions.c and registration.c so that work on those merges by hand.
 *
 * Never on the fault path, and the registration path never waits for
 * ZooKeeper: a record is queued at registration, and the client's
 * acknowledgement is held until the record is applied, for at most
 * CLUSTER_ACK_WAIT_MS, and not at all while the session is down (then the
 * record is applied when the session comes back). */
#ifndef FM_CLUSTER_HOOKS_H
#define FM_CLUSTER_HOOKS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/strbuf.h"

struct daemon;
struct uffd_region;

#define CLUSTER_ACK_WAIT_MS 2000

/* Lease the node id (daemon.node_id) and join the cluster. Sets d->node_id
 * (also with the cluster off: the configured number). Call after SIGINT and
 * SIGTERM are blocked (the client's threads inherit the mask), and fork
 * nothing afterwards: a child of a process with ZooKeeper client threads
 * can deadlock on their locks. 0, or -errno with the reason logged
 * (-EEXIST: the id is leased by a live daemon). */
int ctl_cluster_start(struct daemon *d);
/* Apply the last queued writes (up to 2 s while connected), then leave:
 * the lease goes at once. */
void ctl_cluster_stop(struct daemon *d);
/* The eventfd the epoll loop watches (-1 when off), and what to do when
 * it fires: release acknowledgements whose record is applied. Also call
 * it periodically (ctl_cluster_busy): a held ack has a deadline. */
int ctl_cluster_fd(const struct daemon *d);
void ctl_cluster_events(struct daemon *d);
bool ctl_cluster_busy(const struct daemon *d);

/* A cluster-unique region id (node << 48 | generation << 32 | counter).
 * 0 or -ENOSPC. Only with the cluster on. */
int ctl_cluster_region_id(struct daemon *d, uint64_t *id);
bool ctl_cluster_on(const struct daemon *d);
/* r was accepted and is being attached: queue its record. */
void ctl_cluster_region_registered(struct daemon *d, struct uffd_region *r);
/* r is live: true when its acknowledgement must wait for its record (the
 * hook then sends it with daemon_region_ack). */
bool ctl_cluster_hold_ack(struct daemon *d, struct uffd_region *r);
/* r is about to be freed: its store keys are deleted (the shards dropped
 * them before acknowledging REGION_DEL), so its record goes. */
void ctl_cluster_region_freed(struct daemon *d, struct uffd_region *r);

/* "stats" fields (inside "totals", each with a leading comma) and the
 * Prometheus lines. */
void ctl_cluster_stats_json(struct daemon *d, json_t *tot);
void ctl_cluster_metrics_text(struct daemon *d, struct strbuf *out);
/* "regions --cluster": every node's records, one JSON reply line. */
void ctl_cluster_regions_json(struct daemon *d, struct strbuf *out);
/* "servers list | add HOST:PORT | drain HOST:PORT": the store's server
 * list. add writes the cluster's servers znode; every node (this one too)
 * switches when its watch fires, through a message to each shard. drain
 * moves this node's keys off the server (ctl/drain.c), then records it. */
/* This node finished draining (ctl/drain.c): record it in ZooKeeper. */
void ctl_cluster_drained(struct daemon *d);
void ctl_cluster_servers_cmd(struct daemon *d, int argc, char **argv, struct strbuf *out);

#endif
