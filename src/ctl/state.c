/* ctl/state: the daemon's side of the state directory at start and while
 * regions of a previous run wait to be re-adopted (statefile.h;
 * docs/design.md, "Restart and re-adoption"). Control thread only. */
#include "ctl/daemon_priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

static void note_pending(uint64_t id, void *arg)
{
	struct daemon *d = arg;
	uint64_t *v;

	if (d->npending % 64 == 0) {
		v = realloc(d->pending, (d->npending + 64) * sizeof(*v));
		if (!v)
			return;   /* not collected this run: the next start sees it */
		d->pending = v;
	}
	d->pending[d->npending++] = id;
}

void daemon_state_open(struct daemon *d)
{
	char path[FM_STATE_PATH_MAX];
	int rc, n;

	d->sdir.dirfd = d->sdir.lockfd = -1;
	d->state_node = -1;
	d->smaps = calloc(FM_MAX_REGIONS, sizeof(*d->smaps));
	fm_state_dir_default(d->cfg.state_dir, path, sizeof(path));
	rc = d->smaps ? fm_state_dir_open(&d->sdir, path) : -ENOMEM;
	if (rc < 0) {
		FM_WARN("state directory %s: %s; regions will not survive a restart of the daemon%s",
			path, strerror(-rc), rc == -EBUSY ? " (another fluidmemd uses it)" : "");
		return;
	}
	n = fm_state_scan(&d->sdir, note_pending, d);
	rc = fm_state_node_read(&d->sdir);
	if (rc >= 0)
		d->state_node = rc;
	else if (rc != -ENOENT)
		FM_WARN("%s/" FM_STATE_NODE_FILE ": %s: not a node id; ignored", path,
			rc == -EINVAL ? "torn or foreign contents" : strerror(-rc));
	if (d->state_node < 0 && d->npending > 0) {
		/* A directory older than the node file: a region id's top 16
		 * bits are the node that made it. */
		d->state_node = (int32_t)(d->pending[0] >> 48);
		FM_INFO("state %s: no node id recorded; node %d, from the region ids", path,
			d->state_node);
	}
	if (n > 0) {
		unsigned other = 0;

		for (unsigned i = 0; i < d->npending; i++)
			other += (int32_t)(d->pending[i] >> 48) != d->state_node;
		if (other)
			FM_WARN("state %s: %u of the waiting region(s) carry the id of another node "
				"than %d (written before the node id was kept): their ZooKeeper "
				"records cannot be rewritten by this node", path, other,
				d->state_node);
		FM_INFO("state %s (generation %u, node %d): %d region(s) of a previous run wait %u s "
			"for their clients to re-adopt them", path, d->sdir.generation, d->state_node,
			n, d->cfg.readopt_grace_s);
	} else {
		FM_INFO("state %s (generation %u)", path, d->sdir.generation);
	}
}

int daemon_state_node_check(struct daemon *d)
{
	int32_t want = fm_config_node_id(&d->cfg);   /* < 0: "auto" */
	char err[1024];

	if (d->state_node < 0 || d->npending == 0 || want < 0 || want == d->state_node)
		return 0;
	fm_state_node_mismatch(err, sizeof(err), want, d->npending, d->sdir.path, d->state_node,
			       d->cfg.cluster_hosts[0] != '\0');
	FM_ERR("%s", err);
	return -EINVAL;
}

void daemon_state_started(struct daemon *d)
{
	int rc;

	if (!fm_state_dir_on(&d->sdir))
		return;
	if (d->npending > 0)
		d->readopt_deadline_ns =
			fm_now_ns() + (uint64_t)d->cfg.readopt_grace_s * 1000000000ull;
	if (d->state_node == (int32_t)d->node_id && fm_state_node_read(&d->sdir) == d->state_node)
		return;
	if (d->npending > 0 && d->state_node >= 0 && d->state_node != (int32_t)d->node_id) {
		/* Ruled out by the check and the lease; never overwrite the
		 * id the waiting regions need. */
		FM_ERR("state %s: serving as node %u, but %u region(s) of node %d wait: not "
		       "recording node %u", d->sdir.path, d->node_id, d->npending, d->state_node,
		       d->node_id);
		return;
	}
	rc = fm_state_node_write(&d->sdir, d->node_id);
	if (rc < 0) {
		FM_WARN("state %s: cannot record node id %u: %s; a restart with daemon.node_id = "
			"\"auto\" may lease another id and lose this run's regions", d->sdir.path,
			d->node_id, strerror(-rc));
		return;
	}
	d->state_node = d->node_id;
}

void daemon_state_close(struct daemon *d)
{
	if (d->smaps)
		for (unsigned i = 0; i < FM_MAX_REGIONS; i++)
			fm_state_map_close(&d->smaps[i]);
	free(d->smaps);
	d->smaps = NULL;
	free(d->pending);
	d->pending = NULL;
	d->npending = 0;
	fm_state_dir_close(&d->sdir);
}

/* Delete an orphan's stored pages through every shard (each holds its own
 * store handle), then its file: never the file first, or a crash in
 * between would leak the pages for good. */
static void collect_orphan(struct daemon *d, uint64_t id)
{
	struct fm_state_map map;
	struct shard_orphan *req;
	char name[FM_REGION_NAME_MAX];
	int pid;
	uint64_t a[FM_MAX_SHARDS], details[FM_MAX_SHARDS], deleted = 0;
	int64_t results[FM_MAX_SHARDS];
	int rc = fm_state_region_open(&d->sdir, id, &map);

	if (rc < 0) {
		FM_WARN("orphan region %llu: its state file is unreadable (%s): removed",
			(unsigned long long)id, strerror(-rc));
		fm_state_region_unlink(&d->sdir, id);
		return;
	}
	memcpy(name, map.hdr->name, sizeof(name));
	pid = map.hdr->pid;
	req = malloc(sizeof(*req));
	if (!req) {
		fm_state_map_close(&map);
		return;
	}
	*req = (struct shard_orphan){ .region_id = id, .npages = map.hdr->npages, .bits = map.bits };
	for (unsigned i = 0; i < d->nshards; i++)
		a[i] = (uint64_t)(uintptr_t)req;
	rc = daemon_shard_request(d, FM_MSG_ORPHAN_DROP, a, NULL, results, details);
	for (unsigned i = 0; rc == 0 && i < d->nshards; i++) {
		if (results[i] < 0)
			rc = (int)results[i];
		deleted += details[i];
	}
	if (rc == -ETIMEDOUT) {
		/* A shard may still read req and the bits: leave both
		 * (a bounded leak; nothing more is collected this run). */
		FM_WARN("orphan region %llu: the shards did not answer; kept for the next start",
			(unsigned long long)id);
		d->stuck_orphan = true;
		return;
	}
	if (rc < 0) {
		FM_WARN("orphan region %llu: deleting its pages failed (%s); kept for the next start",
			(unsigned long long)id, strerror(-rc));
		fm_state_map_close(&map);
		free(req);
		return;
	}
	fm_state_region_unlink(&d->sdir, id);
	fm_state_map_close(&map);
	free(req);
	d->orphans++;
	d->orphan_keys += deleted;
	FM_INFO("orphan region %llu \"%s\" of pid %d: not re-adopted in %u s; %llu stored page(s) "
		"deleted", (unsigned long long)id, name, pid, d->cfg.readopt_grace_s,
		(unsigned long long)deleted);
}

void daemon_state_tick(struct daemon *d, uint64_t now)
{
	if (!d->readopt_deadline_ns || now < d->readopt_deadline_ns)
		return;
	d->readopt_deadline_ns = 0;
	while (d->npending > 0 && !d->stuck_orphan)
		collect_orphan(d, d->pending[--d->npending]);
}
