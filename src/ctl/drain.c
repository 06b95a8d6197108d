/* ctl/drain: `fluidmemctl servers drain HOST:PORT` (docs/design.md,
 * "Draining a store server"). The control plane only sends messages: the
 * shards switch to the list without the server (FM_MSG_SET_SERVERS, which
 * keeps the old list for reads), then each walks its own pages in bounded
 * steps (FM_MSG_DRAIN) and moves every stored key whose owner was the
 * drained server; once every shard completed a pass without an error,
 * FM_MSG_DRAIN_FINISH drops the old lists and the server holds none of
 * this node's keys. The epoll loop drives the steps, so the daemon keeps
 * answering (fluidmemctl polls `servers list` for progress). */
#include "ctl/daemon_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "ctl/cluster_hooks.h"
#include "ctl/json_out.h"

#define DRAIN_STEP_IDS 16384   /* page ids a shard looks at per step */

static const char *const state_names[] = { "idle", "waiting", "running", "done", "failed" };

bool daemon_list_has(const char *list, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = list; n && p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
		if (!strncmp(p, name, n) && (p[n] == ',' || p[n] == '\0'))
			return true;
	return false;
}

void daemon_list_without(const char *list, const char *name, char *out, size_t len)
{
	size_t n = strlen(name), o = 0;

	out[0] = '\0';
	for (const char *p = list; p && *p;) {
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);

		if (!(l == n && !strncmp(p, name, n)) && l && o + l + 2 <= len) {
			if (o)
				out[o++] = ',';
			memcpy(out + o, p, l);
			o += l;
			out[o] = '\0';
		}
		p = e ? e + 1 : NULL;
	}
}

void daemon_drain_start(struct daemon *d, const char *server, bool waiting)
{
	snprintf(d->drain.server, sizeof(d->drain.server), "%s", server);
	d->drain.state = waiting ? DRAIN_WAITING : DRAIN_RUNNING;
	d->drain.begin = true;
	d->drain.moved = d->drain.errors = d->drain.steps = 0;
	d->drain.started_ns = fm_now_ns();
	d->drain.ended_ns = 0;
	d->drain.why[0] = '\0';
	if (!waiting)
		FM_INFO("drain: moving this node's pages off %s", server);
}

/* The first server of `old` that `list` lacks, into name; false if none. */
static bool first_removed(const char *old, const char *list, char name[FM_DRAIN_NAME_MAX])
{
	for (const char *p = old; p && *p;) {
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);

		if (l && l < FM_DRAIN_NAME_MAX) {
			memcpy(name, p, l);
			name[l] = '\0';
			if (!daemon_list_has(list, name))
				return true;
		}
		p = e ? e + 1 : NULL;
	}
	return false;
}

void daemon_drain_list_changed(struct daemon *d, const char *old, const char *list)
{
	char name[FM_DRAIN_NAME_MAX];

	/* A list that only grew: a drain waiting for it goes on waiting. */
	if (!first_removed(old, list, name))
		return;
	/* One pass moves every key whose owner changed, so a second server
	 * removed meanwhile is drained by it too. */
	if (d->drain.state == DRAIN_RUNNING)
		d->drain.begin = true;   /* restart: the list changed again */
	else
		daemon_drain_start(d, name, false);
}

/* ---- the server lists the shards hold, recorded in the state directory ---- */

_Static_assert(FM_STATE_SERVER_LISTS >= KV_SERVER_LISTS_KEPT, "the file keeps what a handle reads");
_Static_assert(FM_STATE_SERVERS_MAX >= FM_MC_SERVERS_MAX, "a recorded list holds any list");

static bool servers_kept(const struct daemon *d)
{
	return fm_state_dir_on(&d->sdir) && !strcmp(d->cfg.store_backend, "memcached");
}

int daemon_servers_record(struct daemon *d, const char *list)
{
	int rc;

	if (!servers_kept(d))
		return 0;
	if (!d->srv.n)
		fm_state_servers_push(&d->srv, d->cfg.mc.servers);
	rc = fm_state_servers_push(&d->srv, list);
	return rc < 0 ? rc : fm_state_servers_write(&d->sdir, &d->srv);
}

/* A drain finished: the shards forgot their previous lists, so does the
 * file. */
static void servers_settled(struct daemon *d)
{
	int rc;

	if (!servers_kept(d))
		return;
	d->srv.n = 0;
	fm_state_servers_push(&d->srv, d->cfg.mc.servers);
	if ((rc = fm_state_servers_write(&d->sdir, &d->srv)) < 0)
		FM_WARN("cannot record the store servers in %s/servers: %s", d->sdir.path,
			strerror(-rc));
}

int daemon_set_servers(struct daemon *d, const char *list)
{
	uint64_t a[FM_MAX_SHARDS], det[FM_MAX_SHARDS];
	int64_t res[FM_MAX_SHARDS];
	int failed = 0;

	for (unsigned i = 0; i < d->nshards; i++)
		a[i] = (uint64_t)(uintptr_t)strdup(list);
	if (daemon_shard_request(d, FM_MSG_SET_SERVERS, a, NULL, res, det) < 0)
		failed = -ETIMEDOUT;
	for (unsigned i = 0; i < d->nshards; i++) {
		/* A message that never left is still ours to free. */
		if (res[i] == -EBUSY)
			free((char *)(uintptr_t)a[i]);
		if (res[i] < 0 && !failed)
			failed = (int)res[i];
	}
	return failed;
}

void daemon_servers_choose(struct daemon *d, int waiting)
{
	struct fm_state_servers *s = &d->srv;
	const char *cfg = d->cfg.mc.servers;
	int rc;

	s->n = 0;
	d->srv_replay = false;
	if (!servers_kept(d))
		return;
	rc = fm_state_servers_read(&d->sdir, s);
	if (rc < 0 && rc != -ENOENT)
		FM_WARN("%s/servers: %s: ignored, the store servers are the config's", d->sdir.path,
			rc == -EINVAL ? "not a server list file" : strerror(-rc));
	if (rc == 0 && waiting > 0 && (s->n > 1 || strcmp(s->list[0], cfg))) {
		const char *run = s->list[s->n - 1];

		if (ctl_cluster_on(d)) {
			/* Unchanged with the cluster on: its watch brings the
			 * list in ZooKeeper, which every node follows. */
			FM_INFO("store servers: \"%s\" was recorded at the last run; with the cluster "
				"on, the list in ZooKeeper replaces the config's \"%s\"", run, cfg);
		} else {
			if (strcmp(run, cfg))
				FM_WARN("store servers: the config names \"%s\", but the list was "
					"changed at run time to \"%s\" (`fluidmemctl servers drain`) "
					"and %d region(s) stored with it wait for re-adoption: using "
					"\"%s\" (recorded in %s/servers). Update store.memcached.servers "
					"in the config to it: a start with no region waiting uses the "
					"config's list", cfg, run, waiting, run, d->sdir.path);
			if (s->n > 1)
				FM_WARN("store servers: a drain to \"%s\" did not finish before the "
					"restart: pages are also read with the %u earlier list(s) "
					"(from \"%s\"), and the drain runs again", run, s->n - 1,
					s->list[0]);
			/* The shards open the oldest; daemon_servers_replay
			 * switches them through the rest. */
			snprintf(d->cfg.mc.servers, sizeof(d->cfg.mc.servers), "%s", s->list[0]);
			d->srv_replay = s->n > 1;
			return;
		}
	}
	s->n = 0;
	fm_state_servers_push(s, cfg);
	if ((rc = fm_state_servers_write(&d->sdir, s)) < 0)
		FM_WARN("cannot record the store servers in %s/servers: %s; a restart after "
			"`servers drain` would use the config's list", d->sdir.path, strerror(-rc));
}

void daemon_servers_replay(struct daemon *d)
{
	char old[FM_MC_SERVERS_MAX], name[FM_DRAIN_NAME_MAX];

	if (!d->srv_replay)
		return;
	d->srv_replay = false;
	snprintf(old, sizeof(old), "%s", d->srv.list[0]);
	for (unsigned i = 1; i < d->srv.n; i++) {
		int rc = daemon_set_servers(d, d->srv.list[i]);

		if (rc < 0) {
			FM_ERR("store servers: the shards could not switch to the recorded \"%s\" "
			       "(%s): pages stored with it may be missed", d->srv.list[i],
			       strerror(-rc));
			return;
		}
		snprintf(d->cfg.mc.servers, sizeof(d->cfg.mc.servers), "%s", d->srv.list[i]);
	}
	FM_INFO("store servers now \"%s\" (recorded), reading also \"%s\"", d->cfg.mc.servers, old);
	/* The drain moves the pages of attached regions only: it waits for
	 * the waiting ones (daemon_servers_tick). */
	if (first_removed(old, d->cfg.mc.servers, name)) {
		daemon_drain_start(d, name, true);
		d->srv_resume = true;
		FM_INFO("drain: %s is drained again once the %u waiting region(s) are re-adopted "
			"or collected", name, d->npending);
	}
}

void daemon_servers_tick(struct daemon *d)
{
	if (!d->srv_resume || d->npending)
		return;
	for (unsigned s = 0; s < FM_MAX_REGIONS; s++)
		if (d->regions[s] && d->regions[s]->state == UFFD_REGION_ATTACHING)
			return;
	d->srv_resume = false;
	if (d->drain.state == DRAIN_WAITING)
		daemon_drain_list_changed(d, d->srv.list[0], d->cfg.mc.servers);
}

/* ---- a drain's steps ---- */

static void drain_end(struct daemon *d, bool ok, const char *why)
{
	d->drain.ended_ns = fm_now_ns();
	d->drain.state = ok ? DRAIN_DONE : DRAIN_FAILED;
	if (ok) {
		d->drains++;
		FM_INFO("drain: %s holds none of this node's pages: %" PRIu64 " moved in %.1f s",
			d->drain.server, d->drain.moved,
			(double)(d->drain.ended_ns - d->drain.started_ns) / 1e9);
		ctl_cluster_drained(d);
		servers_settled(d);
	} else {
		d->drains_failed++;
		snprintf(d->drain.why, sizeof(d->drain.why), "%s", why);
		FM_ERR("drain: %s: %s; it stays readable, run `servers drain %s` again",
		       d->drain.server, why, d->drain.server);
	}
}

void daemon_drain_tick(struct daemon *d)
{
	uint64_t a[FM_MAX_SHARDS], det[FM_MAX_SHARDS];
	int64_t res[FM_MAX_SHARDS];
	unsigned complete = 0;
	uint32_t flags = d->drain.begin ? FM_DRAIN_BEGIN : 0;

	if (d->drain.state != DRAIN_RUNNING)
		return;
	d->drain.begin = false;
	for (unsigned i = 0; i < d->nshards; i++)
		a[i] = DRAIN_STEP_IDS | (uint64_t)flags << 32;
	if (daemon_shard_request(d, FM_MSG_DRAIN, a, NULL, res, det) < 0) {
		drain_end(d, false, "a shard did not answer a drain step");
		return;
	}
	d->drain.steps++;
	for (unsigned i = 0; i < d->nshards; i++) {
		if (res[i] < 0) {
			drain_end(d, false, strerror((int)-res[i]));
			return;
		}
		d->drain.moved += det[i] & 0xffffffffu;
		d->drain_moved += det[i] & 0xffffffffu;
		d->drain.errors += det[i] >> 32;
		complete += res[i] == 1;
	}
	if (complete < d->nshards)
		return;
	if (d->drain.errors) {
		char why[96];

		snprintf(why, sizeof(why), "%" PRIu64 " page(s) could not be moved", d->drain.errors);
		drain_end(d, false, why);
		return;
	}
	for (unsigned i = 0; i < d->nshards; i++)
		a[i] = (uint64_t)FM_DRAIN_FINISH << 32;
	if (daemon_shard_request(d, FM_MSG_DRAIN, a, NULL, res, det) < 0) {
		drain_end(d, false, "a shard did not answer the end of the drain");
		return;
	}
	drain_end(d, true, NULL);
}

/* Without the cluster: this daemon's list is the one to change. */
void daemon_drain_cmd(struct daemon *d, const char *server, struct strbuf *out)
{
	char next[FM_MC_SERVERS_MAX];
	int failed;
	json_t *o;

	daemon_list_without(d->cfg.mc.servers, server, next, sizeof(next));
	/* Before any shard writes with it: a restart with regions waiting
	 * must find their pages where this list put them. */
	failed = daemon_servers_record(d, next);
	if (failed) {
		cj_fail(out, "cannot record the new server list in %s/servers (%s): a restart "
			     "would look pages up with the old one; nothing changed",
			d->sdir.path, strerror(-failed));
		return;
	}
	failed = daemon_set_servers(d, next);
	if (failed) {
		/* Shards that switched still read the old list: nothing is
		 * lost, and the command can be repeated. */
		cj_fail(out, "a shard could not switch to \"%s\": %s", next, strerror(-failed));
		return;
	}
	FM_INFO("store servers now \"%s\" (was \"%s\"): draining %s", next, d->cfg.mc.servers, server);
	snprintf(d->cfg.mc.servers, sizeof(d->cfg.mc.servers), "%s", next);
	daemon_drain_start(d, server, false);
	o = cj_ok();
	json_object_set_new(o, "servers", cj_str(next));
	json_object_set_new(o, "draining", cj_str(server));
	cj_reply(out, o);
}

void daemon_drain_json(const struct daemon *d, json_t *obj)
{
	uint64_t end = d->drain.ended_ns ? d->drain.ended_ns : fm_now_ns();
	json_t *o;

	if (d->drain.state == DRAIN_IDLE) {
		json_object_set_new(obj, "drain", json_null());
		return;
	}
	o = json_object();
	json_object_set_new(o, "server", cj_str(d->drain.server));
	json_object_set_new(o, "state", json_string(state_names[d->drain.state]));
	json_object_set_new(o, "moved_pages", cj_u64(d->drain.moved));
	json_object_set_new(o, "errors", cj_u64(d->drain.errors));
	json_object_set_new(o, "steps", cj_u64(d->drain.steps));
	json_object_set_new(o, "seconds",
			    json_real((double)(end - d->drain.started_ns) / 1e9));
	if (d->drain.why[0])
		json_object_set_new(o, "error", cj_str(d->drain.why));
	json_object_set_new(obj, "drain", o);
}
