/* ctl/daemon: fluidmemd's wiring (shards, dispatcher, sockets), the one
 * epoll loop on the main thread that serves them, and accepting connections.
 * Requests and replies are in requests.c, registration connections and
 * region life cycles in regions.c, control connections in ctl_conn.c. */
#include "ctl/daemon_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "ctl/cluster_hooks.h"
#include "ctl/listen.h"
#include "ctl/params.h"

/* A listener that meets EMFILE/ENFILE sleeps this long instead of waking
 * the level-triggered loop again at once. */
#define ACCEPT_PAUSE_MS 100

/* ---- accepting connections ---- */

bool daemon_uid_allowed(const struct daemon *d, uid_t uid)
{
	if (d->cfg.allowed_uids_n == 0)
		return uid == 0 || uid == geteuid();
	for (uint32_t i = 0; i < d->cfg.allowed_uids_n; i++)
		if (d->cfg.allowed_uids[i] == uid)
			return true;
	return false;
}

/* Registration admits register.allowed_uids (default: root and our uid);
 * the control socket admits only root and our own uid: it can stop us. */
bool daemon_peer_allowed(struct daemon *d, int fd, struct ucred *cred, bool control)
{
	socklen_t len = sizeof(*cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) < 0)
		return false;
	if (control)
		return cred->uid == 0 || cred->uid == geteuid();
	return daemon_uid_allowed(d, cred->uid);
}

/* A listener that hit EMFILE/ENFILE stays readable: with level-triggered
 * epoll it would wake us at once, forever. Take all listeners out of the
 * loop for ACCEPT_PAUSE_MS instead; the backlog waits in the kernel. */
static void pause_listeners(struct daemon *d, int err)
{
	int fds[] = { d->reg_fd, d->ctl_fd, d->metrics_fd };

	d->accept_paused++;
	d->paused_until_ns = fm_now_ns() + ACCEPT_PAUSE_MS * 1000000ull;
	fm_log_ratelimited(FM_LOG_WARN, "out of descriptors (%s): not accepting for %d ms",
			   strerror(err), ACCEPT_PAUSE_MS);
	for (size_t i = 0; i < FM_ARRAY_SIZE(fds); i++) {
		struct epoll_event ev = { .events = 0 };

		if (fds[i] >= 0)
			epoll_ctl(d->epfd, EPOLL_CTL_MOD, fds[i], &ev);
	}
}

static void resume_listeners(struct daemon *d)
{
	struct {
		int fd, tag;
	} l[] = { { d->reg_fd, TAG_REG_LISTEN }, { d->ctl_fd, TAG_CTL_LISTEN },
		  { d->metrics_fd, TAG_METRICS_LISTEN } };

	d->paused_until_ns = 0;
	for (size_t i = 0; i < FM_ARRAY_SIZE(l); i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)l[i].tag };

		if (l[i].fd >= 0)
			epoll_ctl(d->epfd, EPOLL_CTL_MOD, l[i].fd, &ev);
	}
}

/* accept4, or -1 when the loop should stop accepting for now. */
int daemon_accept_one(struct daemon *d, int lfd)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM))
		pause_listeners(d, errno);
	return fd;
}

/* ---- the store's state ---- */

/* While the store is not up, ask the shards this often: their kv retries
 * the down servers when asked (with its own doubling backoff), so the state
 * recovers even when nothing is evicted. */
#define STORE_CHECK_MS 1000

enum store_state daemon_store_state(const struct daemon *d)
{
	unsigned cut_off = 0, degraded = 0;

	for (unsigned i = 0; i < d->nshards; i++) {
		const struct shard_stats *s = &d->snap[i];

		if (s->store_servers && s->store_down_servers >= s->store_servers)
			cut_off++;
		else if (s->store_down_servers)
			degraded++;
	}
	if (cut_off == d->nshards)
		return STORE_DOWN;
	return cut_off || degraded ? STORE_DEGRADED : STORE_UP;
}

const char *daemon_store_state_name(enum store_state s)
{
	static const char *const names[] = { "up", "degraded", "down" };

	return names[s];
}

static void check_store(struct daemon *d, uint64_t now, bool force)
{
	int64_t res[FM_MAX_SHARDS];
	uint64_t det[FM_MAX_SHARDS];
	enum store_state was = daemon_store_state(d), is;

	if (!force && (was == STORE_UP || now - d->store_checked_ns < STORE_CHECK_MS * 1000000ull))
		return;
	d->store_checked_ns = now;
	if (daemon_shard_request(d, FM_MSG_STATS, NULL, NULL, res, det) < 0)
		return;
	is = daemon_store_state(d);
	if (is == STORE_UP && (is != was || force))
		FM_INFO("store %s: up", d->cfg.store_backend);
	else if (is == STORE_DOWN && (is != was || force))
		FM_WARN("store %s: down, no server answers: registrations are refused until one "
			"does (retried with backoff)", d->cfg.store_backend);
	else if (is != was)
		FM_WARN("store %s: degraded, some servers are down", d->cfg.store_backend);
}

/* ---- lifecycle ---- */

struct daemon *daemon_create(const struct fm_config *cfg)
{
	struct daemon *d = calloc(1, sizeof(*d));   /* the connection lists start empty */
	sigset_t sigs;
	int rc;

	if (!d)
		return NULL;
	d->cfg = *cfg;
	d->epfd = d->reg_fd = d->ctl_fd = d->sig_fd = d->metrics_fd = -1;
	d->reg_lock_fd = d->ctl_lock_fd = -1;
	d->sdir.dirfd = d->sdir.lockfd = -1;
	d->reply_bell.efd = -1;
	d->nshards = cfg->shard_count;
	d->started_ns = fm_now_ns();
	/* Block before any thread starts so only the signalfd sees them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);   /* reload, never the default (which kills) */
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* The state directory before the node id: its regions must be served
	 * as the node that wrote them (an "auto" id asks for that node again;
	 * another explicit id is refused). */
	daemon_state_open(d);
	if ((rc = daemon_state_node_check(d)) < 0)
		goto fail;
	/* The node id next: a refused node binds no socket. The ZooKeeper
	 * client's threads start here, with the mask above. Nothing may fork
	 * from now on (their locks would deadlock a child). */
	if ((rc = ctl_cluster_start(d)) < 0)
		goto fail;
	daemon_state_started(d);
	/* The server list after the cluster (with it on, the list in ZooKeeper
	 * wins) and before the shards open the store: it depends on the regions
	 * waiting in the state directory. */
	daemon_servers_choose(d, (int)d->npending);
	if ((rc = fm_doorbell_init(&d->reply_bell)) < 0)
		goto fail;
	d->reply_bell.sleeping = 1;   /* the control plane always wants the wake */
	d->snap = calloc(d->nshards, sizeof(*d->snap));
	d->region_snap = calloc((size_t)d->nshards * FM_MAX_REGIONS, sizeof(*d->region_snap));
	d->baseline = calloc(d->nshards, sizeof(*d->baseline));
	d->restore_on_shutdown = true;
	if (!d->snap || !d->region_snap || !d->baseline) {
		rc = -ENOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < d->nshards; i++) {
		/* Spread the budget; the first shards take the remainder. */
		uint64_t budget = cfg->resident_pages / d->nshards +
				  (i < cfg->resident_pages % d->nshards ? 1 : 0);

		struct shard_params sp;

		fm_config_shard_params(&d->cfg, i, &sp);
		d->shards[i] = shard_create(&sp, i, budget, &d->reply_bell);
		if (!d->shards[i]) {
			rc = -errno;
			FM_ERR("cannot create shard %u: %s", i, strerror(errno));
			goto fail;
		}
	}
	struct dispatch_target targets[FM_MAX_SHARDS];

	for (unsigned i = 0; i < d->nshards; i++)
		targets[i] = (struct dispatch_target){ shard_data_ring(d->shards[i]),
						       shard_doorbell(d->shards[i]),
						       shard_discards_routed(d->shards[i]) };
	d->disp = dispatcher_create(targets, d->nshards, cfg->dispatcher_cpu, cfg->dispatcher_batch,
				   cfg->dispatcher_spin_us, &d->reply_bell);
	if (!d->disp) {
		rc = -errno;
		goto fail;
	}
	d->reg_fd = ctl_listen_unix(cfg->register_path, SOCK_SEQPACKET, cfg->register_mode, &d->reg_lock_fd);
	if (d->reg_fd < 0) {
		rc = d->reg_fd;
		if (rc == -EADDRINUSE)
			FM_ERR("another fluidmemd serves %s", cfg->register_path);
		else
			FM_ERR("cannot listen on %s: %s%s", cfg->register_path, strerror(-rc),
			       ctl_listen_strerror(rc));
		goto fail;
	}
	d->ctl_fd = ctl_listen_unix(cfg->control_path, SOCK_STREAM, cfg->control_mode, &d->ctl_lock_fd);
	if (d->ctl_fd < 0) {
		rc = d->ctl_fd;
		if (rc == -EADDRINUSE)
			FM_ERR("another fluidmemd serves %s", cfg->control_path);
		else
			FM_ERR("cannot listen on %s: %s%s", cfg->control_path, strerror(-rc),
			       ctl_listen_strerror(rc));
		goto fail;
	}
	if (cfg->metrics_listen[0]) {
		struct sockaddr_storage ss;
		socklen_t len;
		int one = 1;

		rc = fm_config_metrics_addr(cfg, &ss, &len);
		if (rc == 0) {
			d->metrics_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
			setsockopt(d->metrics_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			if (d->metrics_fd < 0 || bind(d->metrics_fd, (struct sockaddr *)&ss, len) < 0 ||
			    listen(d->metrics_fd, 16) < 0)
				rc = -errno;
		}
		if (rc < 0) {
			FM_ERR("cannot serve metrics on %s: %s", cfg->metrics_listen, strerror(-rc));
			goto fail;
		}
	}
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	d->sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	d->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (d->sig_fd < 0 || d->epfd < 0) {
		rc = -errno;
		goto fail;
	}
	struct {
		int fd, tag;
	} watch[] = { { d->reg_fd, TAG_REG_LISTEN }, { d->ctl_fd, TAG_CTL_LISTEN },
		      { d->sig_fd, TAG_SIGNAL }, { d->reply_bell.efd, TAG_REPLIES },
		      { d->metrics_fd, TAG_METRICS_LISTEN }, { ctl_cluster_fd(d), TAG_CLUSTER } };
	for (size_t i = 0; i < FM_ARRAY_SIZE(watch); i++) {
		if (watch[i].fd < 0)
			continue;
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)watch[i].tag };
		if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, watch[i].fd, &ev) < 0) {
			rc = -errno;
			goto fail;
		}
	}
	for (unsigned i = 0; i < d->nshards; i++) {
		if ((rc = shard_start(d->shards[i])) < 0)
			goto fail;
	}
	if ((rc = dispatcher_start(d->disp)) < 0)
		goto fail;
	daemon_servers_replay(d);
	return d;
fail:
	daemon_destroy(d);
	errno = -rc;
	return NULL;
}

int daemon_run(struct daemon *d)
{
	struct epoll_event evs[64];

	FM_INFO("serving: register %s, control %s, %u shard(s), budget %llu pages, store %s%s%s",
		d->cfg.register_path, d->cfg.control_path, d->nshards,
		(unsigned long long)d->cfg.resident_pages, d->cfg.store_backend,
		d->metrics_fd >= 0 ? ", metrics on http://" : "",
		d->metrics_fd >= 0 ? d->cfg.metrics_listen : "");
	check_store(d, fm_now_ns(), true);
	while (!d->stopping) {
		int n = epoll_wait(d->epfd, evs, 64,
				   d->paused_until_ns			       ? ACCEPT_PAUSE_MS / 2
				   : daemon_drain_running(d)		       ? 0
				   : d->nmetrics_conns || ctl_cluster_busy(d) ? 100
									       : 1000);
		uint64_t now;

		if (n < 0 && errno != EINTR)
			return -errno;
		for (int i = 0; i < n && !d->stopping; i++) {
			uint64_t data = evs[i].data.u64;
			int tag = (int)(data & ((1u << TAG_BITS) - 1));
			void *p = (void *)(uintptr_t)(data & ~(uint64_t)((1u << TAG_BITS) - 1));

			switch (tag) {
			case TAG_CLUSTER:
				ctl_cluster_events(d);
				break;
			case TAG_REG_LISTEN:
				reg_accept(d);
				break;
			case TAG_CTL_LISTEN:
				ctl_accept(d, false);
				break;
			case TAG_METRICS_LISTEN:
				ctl_accept(d, true);
				break;
			case TAG_SIGNAL: {
				struct signalfd_siginfo si;

				if (read(d->sig_fd, &si, sizeof(si)) != sizeof(si))
					break;
				if (si.ssi_signo == SIGHUP) {
					FM_INFO("SIGHUP: reloading %s", d->config_path ? d->config_path : "(none)");
					daemon_reload(d);
					break;
				}
				FM_INFO("signal %u: shutting down", si.ssi_signo);
				d->stopping = true;
				break;
			}
			case TAG_REPLIES:
				daemon_drain_replies(d);
				break;
			case TAG_REG_CONN:
				reg_conn_readable(d, p, evs[i].events);
				break;
			case TAG_CTL_CONN:
				if (evs[i].events & EPOLLOUT)
					ctl_conn_flush(d, p);
				else
					ctl_conn_readable(d, p);
				break;
			}
		}
		/* Only between batches: a batch may hold events of the
		 * connections these free. */
		now = fm_now_ns();
		if (ctl_cluster_busy(d))
			ctl_cluster_events(d);   /* held acks have a deadline */
		if (d->paused_until_ns && now >= d->paused_until_ns)
			resume_listeners(d);
		check_store(d, now, false);
		daemon_state_tick(d, now);
		daemon_servers_tick(d);
		daemon_drain_tick(d);
		if (d->nmetrics_doomed || now - d->last_sweep_ns >= 100000000ull) {
			d->last_sweep_ns = now;
			ctl_sweep_metrics_conns(d, now);
		}
	}
	return 0;
}

void daemon_destroy(struct daemon *d)
{
	if (!d)
		return;
	/* --keep-clients: let detaches already under way finish (their
	 * clients are gone), start none, and leave live regions registered in
	 * their clients with their stored pages, for the next daemon. */
	if (d->disp && d->keep_clients_on_shutdown) {
		uint64_t deadline = fm_now_ns() + 5000000000ull;

		/* Refuse new connections now: a client reconnecting must reach
		 * the next daemon, not this one's backlog. */
		if (d->reg_fd >= 0)
			shutdown(d->reg_fd, SHUT_RD);

		FM_INFO("shutdown --keep-clients: %u region(s) stay registered in their clients with "
			"their stored pages; their faults wait for the next fluidmemd to re-adopt them",
			region_table_count());
		while (fm_now_ns() < deadline) {
			bool any = false;

			for (unsigned i = 0; i < FM_MAX_REGIONS && !any; i++)
				any = d->regions[i] && (d->regions[i]->state == UFFD_REGION_DETACHING ||
							d->regions[i]->state == UFFD_REGION_RELEASING);
			if (!any)
				break;
			fm_doorbell_wait(&d->reply_bell, 100);
			daemon_drain_replies(d);
		}
	} else if (d->disp) {
		/* Detach every region so stored pages are freed, then stop threads. */
		uint64_t deadline = fm_now_ns() + 5000000000ull;
		unsigned live = 0;

		for (unsigned i = 0; i < FM_MAX_REGIONS; i++) {
			if (d->regions[i]) {
				live++;
				struct uffd_region *r = d->regions[i];
				bool alive = r->owner && !((struct reg_conn *)r->owner)->closed;

				r->detach_when_live = true;
				r->restore = alive && d->restore_on_shutdown;
				daemon_detach_region(d, r, r->restore);
			}
		}
		if (live)
			FM_INFO("shutdown: detaching %u region(s); %s", live,
				d->restore_on_shutdown
					? "live clients get their pages back and keep running unserved"
					: "their clients' next faults will wait (never read zeros) until they exit");
		while (fm_now_ns() < deadline) {
			bool any = false;
			for (unsigned i = 0; i < FM_MAX_REGIONS && !any; i++)
				any = d->regions[i] != NULL;
			if (!any)
				break;
			fm_doorbell_wait(&d->reply_bell, 100);
			daemon_drain_replies(d);
		}
	}
	/* The freed regions' record deletes go out before the lease does. */
	ctl_cluster_stop(d);
	for (unsigned i = 0; i < d->nshards; i++) {
		if (d->shards[i]) {
			struct fm_msg m = { .type = FM_MSG_STOP,
					    .flags = d->keep_clients_on_shutdown ? FM_STOP_KEEP : 0 };
			unsigned attempt = 0;

			while (!fm_ring_push(shard_ctl_ring(d->shards[i]), &m))
				fm_ring_full_wait(&attempt);
			fm_doorbell_ring(shard_doorbell(d->shards[i]));
		}
	}
	/* The dispatcher goes first: it rings shard doorbells. */
	dispatcher_destroy(d->disp);
	for (unsigned i = 0; i < d->nshards; i++) {
		/* a shard that never started has no thread to stop */
		shard_destroy(d->shards[i]);
	}
	/* Kept regions: only our copies of their descriptors go. No
	 * UFFDIO_UNREGISTER: the clients' ranges stay registered on their own
	 * uffds, so their faults wait for the next daemon instead of reading
	 * holes as zeros. */
	if (d->keep_clients_on_shutdown) {
		for (unsigned i = 0; i < FM_MAX_REGIONS; i++) {
			if (d->regions[i]) {
				region_table_unpublish(d->regions[i]);
				region_release(d->regions[i]);
				d->regions[i] = NULL;
			}
		}
	} else if (d->disp) {
		/* Detaches not acknowledged by the deadline (a shard stuck in a
		 * slow store): every thread that could name them is joined. */
		unsigned left = daemon_free_left_regions(d);

		if (left)
			FM_WARN("shutdown: %u region(s) were still detaching at the 5 s deadline; "
				"freed with their state files", left);
	}
	/* Connections still open at shutdown: control replies already went
	 * out; registration clients see their socket close. */
	while (!LIST_EMPTY(&d->ctl_conns))
		ctl_conn_free(d, LIST_FIRST(&d->ctl_conns));
	while (!LIST_EMPTY(&d->reg_conns))
		reg_conn_free(d, LIST_FIRST(&d->reg_conns));
	if (d->reg_fd >= 0) {
		close(d->reg_fd);
		unlink(d->cfg.register_path);
	}
	if (d->ctl_fd >= 0) {
		close(d->ctl_fd);
		unlink(d->cfg.control_path);
	}
	/* The locks go last: the paths are ours until then. */
	if (d->reg_lock_fd >= 0)
		close(d->reg_lock_fd);
	if (d->ctl_lock_fd >= 0)
		close(d->ctl_lock_fd);
	if (d->sig_fd >= 0)
		close(d->sig_fd);
	if (d->metrics_fd >= 0)
		close(d->metrics_fd);
	if (d->epfd >= 0)
		close(d->epfd);
	daemon_state_close(d);   /* after the shards: they wrote the bitmaps */
	fm_doorbell_destroy(&d->reply_bell);
	free(d->snap);
	free(d->region_snap);
	free(d->baseline);
	daemon_free_config_source(d);
	daemon_requests_free();   /* every writer is joined */
	free(d);
}
