/* kv/memcached: pages on a memcached cluster. One handle per shard, used by
 * that shard's thread only; nothing here locks.
 *
 * Layout. Every page is one item under a fixed-width key (kv.h:
 * "fm1:<region 16 hex>:<page 16 hex>", 37 bytes) holding exactly the 4 KiB
 * page, flags 0, no expiry. The server of a key comes from libmemcached's
 * distribution over the configured list (ketama consistent hashing by
 * default); with replicas = N the page is also kept on the N servers that
 * follow it in the list (the convention libmemcached uses itself).
 *
 * Why part of the I/O is our own. libmemcached serves reads and deletes
 * here: one memcached_st per server per shard (plus one that only routes
 * keys), with the configured protocol and timeouts. It cannot serve page
 * writes, because both of its ways to write many items without a round trip
 * each drop errors:
 *   - buffered requests (MEMCACHED_BEHAVIOR_BUFFER_REQUESTS): the answers are
 *     read later by memcached_purge(), which discards their status, so a
 *     "SERVER_ERROR out of memory" under -M is never seen;
 *   - its replication (MEMCACHED_BEHAVIOR_NUMBER_OF_REPLICAS) writes the
 *     copies with SETQ (noreply) and ignores the result.
 * Either would lose pages silently on a full server. So eviction writes go
 * out on a connection of our own per server, pipelined: one flush sends every
 * SET of a batch to all servers at once (binary SET with the request index as
 * opaque, or ASCII "set"), then every answer is read and matched to its
 * item. Never noreply, never a quiet opcode. kv_mtouch uses the same
 * pipeline with TOUCH (exptime 0, as stored): it confirms that every
 * replica still holds a page the shard is about to skip rewriting, so a
 * server that restarted empty gets the page written again.
 *
 * Results. A put succeeds when at least one replica stored the page and no
 * reachable replica said it is full; "out of memory" anywhere is -ENOSPC
 * (memcached run with -M refuses instead of evicting), nothing stored
 * anywhere is -EIO. A get tries the primary, then each replica; a copy must
 * pass the caller's content check (kv_get_checked) or it is rejected as
 * stale. -ENOENT means every server answered and none had a good copy;
 * when some server did not answer the get is retried (store.memcached.retries,
 * delays doubling from retry_delay_ms) and then fails with -EIO.
 *
 * Failures. A server that fails a request (refused, reset, timed out,
 * protocol error) is "down" for a window that starts at retry_delay_ms and
 * doubles on each failure up to MC_DOWN_MAX_MS; requests skip it meanwhile
 * (writes go to the surviving replicas and count as degraded; reads go to
 * the next replica), and the first request after the window tries it again
 * on fresh connections.
 *
 * Limits, on purpose or not yet done:
 *   - no re-replication: a page written while one of its servers was down
 *     stays short of a copy until it is evicted again after a refault, and a
 *     server that comes back empty is not refilled. A returning server that
 *     kept an older copy is harmless for reads that carry a content check
 *     (the copy is rejected and the next replica is read).
 *   - the server list changes while running only through kv_set_servers
 *     (the cluster's watched list): ketama keeps most keys in place, and a
 *     page whose owner moved is read and deleted on its old owner (the
 *     previous lists are kept behind the handle) until its next eviction
 *     writes it to the new one, or `servers drain` moves it (kv_rehome,
 *     then kv_forget_previous drops the old lists).
 *   - bytes_stored is not known (memcached does not say per client).
 *   - deletes are one synchronous request per replica.
 *   - a server run without -M evicts pages when full; the first shard warns
 *     at start. Those pages then fail their get and are poisoned, never
 *     zero-filled. */
#include "kv/mc_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <libmemcached/memcached.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "base/log.h"
#include "kv/mc_wire.h"

void kv_memcached_key(struct kv_key key, char out[KV_MEMCACHED_KEY_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";

	memcpy(out, "fm1:", 4);
	for (int i = 0; i < 16; i++)
		out[4 + i] = hex[(key.region >> (60 - 4 * i)) & 0xf];
	out[20] = ':';
	for (int i = 0; i < 16; i++)
		out[21 + i] = hex[(key.page >> (60 - 4 * i)) & 0xf];
	out[KV_MEMCACHED_KEY_LEN] = '\0';
}

/* ---- reads and deletes (libmemcached) ---- */

/* One server's copy: 0 (page_out filled), -ENOENT, -EBADMSG (a value that is
 * not a page) or -EIO (the server is now down). */
static int sv_get(struct mc_store *ms, struct mc_server *sv, const char *key, void *page_out)
{
	const char *keys[1] = { key };
	size_t lens[1] = { KV_MEMCACHED_KEY_LEN };
	memcached_result_st *res;
	memcached_return_t rc;
	int ret;

	if (mc_sv_prepare(ms, sv) < 0) {
		mc_sv_failed(ms, sv, "get", "no handle");
		return -EIO;
	}
	rc = memcached_mget(sv->mc, keys, lens, 1);
	if (rc != MEMCACHED_SUCCESS)
		return mc_sv_lm_error(ms, sv, "get", rc);
	res = memcached_fetch_result(sv->mc, &sv->result, &rc);
	if (!res) {
		if (rc == MEMCACHED_END || rc == MEMCACHED_NOTFOUND) {
			mc_sv_answered(ms, sv);
			return -ENOENT;
		}
		return mc_sv_lm_error(ms, sv, "get", rc);
	}
	if (memcached_result_length(res) == FM_PAGE_SIZE) {
		memcpy(page_out, memcached_result_value(res), FM_PAGE_SIZE);
		ret = 0;
	} else {
		fm_log_once(FM_LOG_ERROR, "kv/memcached: %s holds %zu bytes under %s, not a page",
			    sv->name, memcached_result_length(res), key);
		ret = -EBADMSG;
	}
	/* Read the end marker, so the next request starts on a clean stream.
	 * The page came whole, but a server whose end marker does not come
	 * (it stopped between the two writes, or the stream is out of step)
	 * did not answer: it is down like one that timed out on the value,
	 * else the next get would wait io_timeout_ms on it again (and a
	 * kv_get_try must not wait on a server that just failed). */
	while (memcached_fetch_result(sv->mc, &sv->result, &rc))
		;
	if (rc != MEMCACHED_END && rc != MEMCACHED_NOTFOUND)
		mc_sv_lm_error(ms, sv, "get (end of the answer)", rc);
	else
		mc_sv_answered(ms, sv);
	return ret;
}

/* A get on one server list (the current one or a previous one); the
 * counters go to kv, the handle the shard holds. With try_only, one pass
 * that never sleeps and never waits on a server that is down (mc_sv_ready):
 * -EAGAIN when a server that may hold the page did not answer and the
 * store has not given up on it yet (kv_get_try). */
static int get_on_list(struct kv_store *kv, struct mc_store *ms, const char *k, void *page_out,
		       kv_check_fn *check, void *arg, bool try_only)
{
	unsigned delay = ms->retry_ms;

	for (unsigned attempt = 0;; attempt++) {
		uint64_t now = fm_now_ns();
		unsigned unreachable = 0, tried = 0, waiting = 0;

		for (unsigned i = 0; i <= ms->replicas; i++) {
			struct mc_server *sv = &ms->sv[route(ms, k, i)];
			int rc;

			/* The first pass trusts the down windows; retries
			 * ask every server, the page may be on the down one. */
			if (try_only ? mc_sv_ready(ms, sv, now) <= 0
				     : attempt == 0 && !mc_sv_usable(sv, now)) {
				unreachable++;
				waiting += !mc_sv_given_up(ms, sv);
				continue;
			}
			rc = sv_get(ms, sv, k, page_out);
			tried++;
			if (rc == 0 && (!check || check(page_out, arg))) {
				if (i > 0 || tried > 1)
					ms->info.failover_reads++;
				return 0;
			}
			if (rc == 0 || rc == -EBADMSG) {
				kv->stats.stale++;
			} else if (rc == -EIO) {
				unreachable++;
				waiting += !mc_sv_given_up(ms, sv);
			}
		}
		if (unreachable == 0)
			return -ENOENT;
		if (try_only)
			return waiting ? -EAGAIN : -EIO;
		if (attempt >= ms->retries)
			return -EIO;
		kv->stats.retries++;
		nanosleep(&(struct timespec){ delay / 1000, (long)(delay % 1000) * 1000000L }, NULL);
		delay = FM_MIN(delay * 2, FM_MAX(MC_DOWN_MAX_MS, ms->retry_ms));
	}
}

/* The current list first; a miss there may be a page whose owner moved
 * with a server list change and that was not rewritten since. */
static int get_lists(struct kv_store *kv, struct kv_key key, void *page_out, kv_check_fn *check,
		     void *arg, bool try_only)
{
	struct mc_store *ms = to_mc(kv);
	char k[KV_MEMCACHED_KEY_LEN + 1];
	int rc;

	kv_memcached_key(key, k);
	rc = get_on_list(kv, ms, k, page_out, check, arg, try_only);
	for (struct mc_store *p = ms->prev; rc == -ENOENT && p; p = p->prev) {
		rc = get_on_list(kv, p, k, page_out, check, arg, try_only);
		if (rc == 0)
			ms->info.failover_reads++;
	}
	return rc;
}

static int mc_get_checked(struct kv_store *kv, struct kv_key key, void *page_out,
			  kv_check_fn *check, void *arg)
{
	return get_lists(kv, key, page_out, check, arg, false);
}

static int mc_get_try(struct kv_store *kv, struct kv_key key, void *page_out, kv_check_fn *check,
		      void *arg)
{
	return get_lists(kv, key, page_out, check, arg, true);
}

static int mc_get(struct kv_store *kv, struct kv_key key, void *page_out)
{
	return mc_get_checked(kv, key, page_out, NULL, NULL);
}

static int del_on_list(struct mc_store *ms, const char *k)
{
	unsigned deleted = 0, unreachable = 0;
	uint64_t now = fm_now_ns();

	for (unsigned i = 0; i <= ms->replicas; i++) {
		struct mc_server *sv = &ms->sv[route(ms, k, i)];
		memcached_return_t rc;

		if (mc_sv_ready(ms, sv, now) <= 0 || mc_sv_prepare(ms, sv) < 0) {
			unreachable++;
			continue;
		}
		rc = memcached_delete(sv->mc, k, KV_MEMCACHED_KEY_LEN, 0);
		if (rc == MEMCACHED_SUCCESS || rc == MEMCACHED_NOTFOUND) {
			deleted += rc == MEMCACHED_SUCCESS;
			mc_sv_answered(ms, sv);
		} else {
			mc_sv_lm_error(ms, sv, "delete", rc);
			unreachable++;
		}
	}
	/* A copy may remain on a server that did not answer. */
	if (unreachable)
		return -EIO;
	return deleted ? 0 : -ENOENT;
}

/* Every list: a page whose owner moved may still sit on its old owner. */
static int mc_del(struct kv_store *kv, struct kv_key key)
{
	char k[KV_MEMCACHED_KEY_LEN + 1];
	bool deleted = false, unreachable = false;

	kv_memcached_key(key, k);
	for (struct mc_store *ms = to_mc(kv); ms; ms = ms->prev) {
		int rc = del_on_list(ms, k);

		deleted |= rc == 0;
		unreachable |= rc == -EIO;
	}
	if (unreachable)
		return -EIO;
	return deleted ? 0 : -ENOENT;
}

/* ---- pipelined writes (our own connection per server) ---- */

/* Queue request q of this server's job: a SET of `page` for item `item`, or
 * with page NULL a TOUCH (exptime 0, as stored) that only asks whether the
 * server still holds the key. */
static void job_add(struct mc_store *ms, struct mc_server *sv, uint32_t item, const void *page)
{
	uint32_t q = sv->rx.nreq++;
	uint8_t *h = sv->hdr + (size_t)q * MC_HDR_MAX;
	size_t hlen;

	sv->req_item[q] = item;
	sv->rx.req_done[q] = 0;
	sv->rx.req_touch[q] = !page;
	hlen = mc_req_header(h, ms->binary, !page, q, ms->keys[item]);
	sv->iov[sv->niov++] = (struct iovec){ h, hlen };
	if (!page)
		return;
	sv->iov[sv->niov++] = (struct iovec){ (void *)page, FM_PAGE_SIZE };
	if (!ms->binary)
		sv->iov[sv->niov++] = (struct iovec){ (void *)mc_crlf, sizeof(mc_crlf) };
}

/* The job is over: every request that has no answer counts as unreachable. */
static void job_fail(struct mc_store *ms, struct mc_server *sv, const char *why)
{
	for (uint32_t q = 0; q < sv->rx.nreq; q++) {
		if (!sv->rx.req_done[q]) {
			ms->it_err[sv->req_item[q]]++;
			sv->rx.req_done[q] = 1;
		}
	}
	sv->active = false;
	mc_sv_failed(ms, sv, "write", why);
}

/* The tally of one answer; ctx is the server whose job it answers. */
struct answer_ctx {
	struct mc_store *ms;
	struct mc_server *sv;
};

static void job_answer(void *ctx, uint32_t q, int res)
{
	const struct answer_ctx *a = ctx;
	uint32_t item = a->sv->req_item[q];

	if (res == 0)
		a->ms->it_ok[item]++;
	else if (res == -ENOSPC)
		a->ms->it_full[item]++;
	else if (res == -ENOENT)
		a->ms->it_miss[item]++;
	else
		a->ms->it_err[item]++;
}

static int job_send(struct mc_server *sv)
{
	while (sv->iov_pos < sv->niov) {
		struct msghdr msg = {
			.msg_iov = &sv->iov[sv->iov_pos],
			.msg_iovlen = FM_MIN(sv->niov - sv->iov_pos, (uint32_t)IOV_MAX),
		};
		ssize_t n = sendmsg(sv->wfd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -errno;
		while (n > 0) {
			struct iovec *v = &sv->iov[sv->iov_pos];

			if ((size_t)n >= v->iov_len) {
				n -= (ssize_t)v->iov_len;
				sv->iov_pos++;
			} else {
				v->iov_base = (uint8_t *)v->iov_base + n;
				v->iov_len -= (size_t)n;
				n = 0;
			}
		}
	}
	return 0;
}

/* 1 when the job has every answer, 0 when it waits for more, -errno. */
static int job_recv(struct mc_store *ms, struct mc_server *sv)
{
	struct answer_ctx a = { ms, sv };

	for (;;) {
		ssize_t n = recv(sv->wfd, sv->rx.rbuf + sv->rx.rlen, MC_RBUF - sv->rx.rlen,
				 MSG_DONTWAIT);

		if (n == 0)
			return -ECONNRESET;
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -errno;
		sv->rx.rlen += (size_t)n;
		if (mc_rx_parse(&sv->rx, job_answer, &a) < 0)
			return -EPROTO;
		if (sv->rx.nresp == sv->rx.nreq)
			return 1;
	}
}

/* Run every server's job of this flush to its end: all requests written and
 * all answers read, or the server failed. */
static void flush_jobs(struct mc_store *ms)
{
	for (unsigned s = 0; s < ms->nsv; s++) {
		struct mc_server *sv = &ms->sv[s];
		int rc;

		if (!sv->rx.nreq)
			continue;
		ms->info.flushes++;
		ms->info.writes_sent += sv->rx.nreq;
		sv->active = true;
		if (sv->wfd < 0 && (rc = mc_sv_connect_write(ms, sv)) < 0)
			job_fail(ms, sv, strerror(-rc));
	}
	for (;;) {
		unsigned n = 0;
		int ready;

		for (unsigned s = 0; s < ms->nsv; s++) {
			struct mc_server *sv = &ms->sv[s];

			if (!sv->active)
				continue;
			ms->pfd[n] = (struct pollfd){
				.fd = sv->wfd,
				.events = (short)(POLLIN | (sv->iov_pos < sv->niov ? POLLOUT : 0)),
			};
			ms->pfd_sv[n++] = s;
		}
		if (n == 0)
			return;
		ready = poll(ms->pfd, n, (int)ms->io_ms);
		if (ready < 0 && errno == EINTR)
			continue;
		for (unsigned i = 0; i < n; i++) {
			struct mc_server *sv = &ms->sv[ms->pfd_sv[i]];
			short ev = ms->pfd[i].revents;
			int rc = 0;

			if (ready <= 0) {
				job_fail(ms, sv, ready == 0 ? "timed out" : strerror(errno));
				continue;
			}
			if (ev & POLLOUT)
				rc = job_send(sv);
			if (rc == 0 && (ev & (POLLIN | POLLHUP | POLLERR | POLLNVAL)))
				rc = job_recv(ms, sv);
			if (rc < 0) {
				job_fail(ms, sv, rc == -EPROTO ? "protocol error" : strerror(-rc));
			} else if (sv->rx.nresp == sv->rx.nreq) {
				sv->active = false;
				/* An answer nobody asked for: the stream is
				 * out of step, start the next flush afresh. */
				if (sv->rx.rlen || sv->rx.skip)
					mc_sv_close_write(sv);
				mc_sv_answered(ms, sv);
			}
		}
	}
}

/* One flush of at most ms->batch items: SETs of pages, or TOUCHes when
 * pages is NULL. */
static void flush_chunk(struct mc_store *ms, const struct kv_key *keys, const void *const *pages,
			int *results, size_t n)
{
	uint64_t now = fm_now_ns();

	for (unsigned s = 0; s < ms->nsv; s++) {
		struct mc_server *sv = &ms->sv[s];

		sv->rx.nreq = sv->rx.nresp = sv->niov = sv->iov_pos = 0;
		sv->active = false;
		ms->ready[s] = mc_sv_ready(ms, sv, now) > 0;
	}
	for (size_t i = 0; i < n; i++) {
		kv_memcached_key(keys[i], ms->keys[i]);
		ms->it_ok[i] = ms->it_full[i] = ms->it_err[i] = ms->it_miss[i] = 0;
		for (unsigned r = 0; r <= ms->replicas; r++) {
			unsigned sn = route(ms, ms->keys[i], r);

			if (ms->ready[sn])
				job_add(ms, &ms->sv[sn], (uint32_t)i, pages ? pages[i] : NULL);
			else
				ms->it_err[i]++;
		}
	}
	flush_jobs(ms);
	for (size_t i = 0; i < n; i++) {
		if (!pages) {   /* a copy missing anywhere must be rewritten */
			results[i] = ms->it_miss[i] ? -ENOENT : ms->it_ok[i] ? 0 : -EIO;
		} else if (ms->it_full[i]) {
			results[i] = -ENOSPC;
		} else if (ms->it_ok[i]) {
			results[i] = 0;
			if (ms->it_ok[i] <= ms->replicas)
				ms->info.degraded_writes++;
		} else {
			results[i] = -EIO;
		}
	}
}

static int mc_mput(struct kv_store *kv, const struct kv_key *keys, const void *const *pages,
		   int *results, size_t n)
{
	struct mc_store *ms = to_mc(kv);

	for (size_t done = 0; done < n; done += ms->batch)
		flush_chunk(ms, keys + done, pages + done, results + done,
			    FM_MIN((size_t)ms->batch, n - done));
	for (size_t i = 0; i < n; i++)
		if (results[i])
			return results[i];
	return 0;
}

static int mc_mtouch(struct kv_store *kv, const struct kv_key *keys, int *results, size_t n)
{
	struct mc_store *ms = to_mc(kv);

	for (size_t done = 0; done < n; done += ms->batch)
		flush_chunk(ms, keys + done, NULL, results + done,
			    FM_MIN((size_t)ms->batch, n - done));
	for (size_t i = 0; i < n; i++)
		if (results[i])
			return results[i];
	return 0;
}

static int mc_put(struct kv_store *kv, struct kv_key key, const void *page)
{
	int result;

	mc_mput(kv, &key, &page, &result, 1);
	return result;
}

/* ---- multi-get (libmemcached: one mget per server) ---- */

/* Round r of a multi-get chunk: every item without its page yet asks its
 * r-th server (r = 0 the primary, then the replicas). Every server's
 * request goes out before any answer is read, so the servers work at the
 * same time; a server that does not answer costs libmemcached's poll
 * timeout (io_timeout_ms) once, and one that is down (mc_sv_ready) costs
 * nothing. it_ok: the item has its page; it_err: a server of it did not
 * answer; it_full: answered in this round. */
static void mget_round(struct kv_store *kv, struct mc_store *ms, void *const *pages, size_t n,
		       unsigned r)
{
	uint32_t off[MC_MAX_SERVERS + 1] = { 0 }, pos[MC_MAX_SERVERS];
	bool sent[MC_MAX_SERVERS] = { false };
	uint64_t now = fm_now_ns();

	for (size_t i = 0; i < n; i++) {
		ms->it_full[i] = 0;
		if (!ms->it_ok[i])
			off[route(ms, ms->keys[i], r) + 1]++;
	}
	for (unsigned sn = 0; sn < ms->nsv; sn++) {
		off[sn + 1] += off[sn];
		pos[sn] = off[sn];
	}
	for (size_t i = 0; i < n; i++) {
		uint32_t j;

		if (ms->it_ok[i])
			continue;
		j = pos[route(ms, ms->keys[i], r)]++;
		ms->mg_item[j] = (uint32_t)i;
		ms->mg_keys[j] = ms->keys[i];
		ms->mg_lens[j] = KV_MEMCACHED_KEY_LEN;
	}
	for (unsigned sn = 0; sn < ms->nsv; sn++) {
		struct mc_server *sv = &ms->sv[sn];
		memcached_return_t rc;

		if (off[sn] == off[sn + 1])
			continue;
		if (mc_sv_ready(ms, sv, now) <= 0 || mc_sv_prepare(ms, sv) < 0) {
			for (uint32_t j = off[sn]; j < off[sn + 1]; j++)
				ms->it_err[ms->mg_item[j]]++;
			continue;
		}
		rc = memcached_mget(sv->mc, &ms->mg_keys[off[sn]], &ms->mg_lens[off[sn]],
				    off[sn + 1] - off[sn]);
		if (rc != MEMCACHED_SUCCESS) {
			mc_sv_lm_error(ms, sv, "get", rc);
			for (uint32_t j = off[sn]; j < off[sn + 1]; j++)
				ms->it_err[ms->mg_item[j]]++;
			continue;
		}
		sent[sn] = true;
	}
	for (unsigned sn = 0; sn < ms->nsv; sn++) {
		struct mc_server *sv = &ms->sv[sn];
		memcached_result_st *res;
		memcached_return_t rc;

		if (!sent[sn])
			continue;
		while ((res = memcached_fetch_result(sv->mc, &sv->result, &rc))) {
			const char *key = memcached_result_key_value(res);
			bool page = memcached_result_length(res) == FM_PAGE_SIZE;

			if (memcached_result_key_length(res) != KV_MEMCACHED_KEY_LEN)
				continue;
			if (!page)
				fm_log_once(FM_LOG_ERROR,
					    "kv/memcached: %s holds %zu bytes under %.*s, not a page",
					    sv->name, memcached_result_length(res),
					    KV_MEMCACHED_KEY_LEN, key);
			/* Every item of that key: one batch may ask for a
			 * page twice. */
			for (uint32_t j = off[sn]; j < off[sn + 1]; j++) {
				uint32_t i = ms->mg_item[j];

				if (ms->it_ok[i] || memcmp(key, ms->keys[i], KV_MEMCACHED_KEY_LEN))
					continue;
				ms->it_full[i] = 1;
				if (!page) {
					kv->stats.stale++;
					continue;
				}
				memcpy(pages[i], memcached_result_value(res), FM_PAGE_SIZE);
				ms->it_ok[i] = 1;
				if (r > 0)
					ms->info.failover_reads++;
			}
		}
		if (rc == MEMCACHED_END || rc == MEMCACHED_NOTFOUND) {
			mc_sv_answered(ms, sv);
			continue;
		}
		mc_sv_lm_error(ms, sv, "get", rc);
		for (uint32_t j = off[sn]; j < off[sn + 1]; j++)
			if (!ms->it_full[ms->mg_item[j]])
				ms->it_err[ms->mg_item[j]]++;
	}
}

/* No retry delays: an item none of whose servers answered is -EIO at once
 * (a prefetch skips it; a fault asks again through kv_get_try). */
static int mc_mget(struct kv_store *kv, const struct kv_key *keys, void *const *pages,
		   int *results, size_t n)
{
	struct mc_store *ms = to_mc(kv);

	for (size_t done = 0; done < n; done += ms->batch) {
		size_t m = FM_MIN((size_t)ms->batch, n - done);

		for (size_t i = 0; i < m; i++) {
			kv_memcached_key(keys[done + i], ms->keys[i]);
			ms->it_ok[i] = ms->it_err[i] = 0;
		}
		for (unsigned r = 0; r <= ms->replicas; r++)
			mget_round(kv, ms, pages + done, m, r);
		for (size_t i = 0; i < m; i++)
			results[done + i] = ms->it_ok[i] ? 0 : ms->it_err[i] ? -EIO : -ENOENT;
	}
	/* A miss may be a page whose owner moved with a server list change. */
	for (size_t i = 0; ms->prev && i < n; i++) {
		char k[KV_MEMCACHED_KEY_LEN + 1];

		if (results[i] != -ENOENT)
			continue;
		kv_memcached_key(keys[i], k);
		for (struct mc_store *p = ms->prev; results[i] == -ENOENT && p; p = p->prev)
			results[i] = get_on_list(kv, p, k, pages[i], NULL, NULL, true);
		if (results[i] == 0)
			ms->info.failover_reads++;
		else if (results[i] == -EAGAIN)
			results[i] = -EIO;
	}
	for (size_t i = 0; i < n; i++)
		if (results[i])
			return results[i];
	return 0;
}

/* ---- open and close ---- */

static int parse_server(struct mc_server *sv, const char *entry, char *why, size_t whylen)
{
	char host[MC_NAME_MAX], port[16];
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
	const char *colon;
	int rc;

	snprintf(sv->name, sizeof(sv->name), "%s", entry);
	if (entry[0] == '/') {
		struct sockaddr_un *un = (struct sockaddr_un *)&sv->addr;

		if (strlen(entry) >= sizeof(un->sun_path)) {
			snprintf(why, whylen, "socket path \"%s\" is longer than %zu bytes", entry,
				 sizeof(un->sun_path) - 1);
			return -EINVAL;
		}
		un->sun_family = AF_UNIX;
		strcpy(un->sun_path, entry);
		sv->addrlen = sizeof(*un);
		snprintf(sv->host, sizeof(sv->host), "%s", entry);
		sv->port = 0;
		return 0;
	}
	if (entry[0] == '[') { /* [v6 address]:port */
		const char *end = strchr(entry, ']');

		if (!end || (end[1] && end[1] != ':')) {
			snprintf(why, whylen, "\"%s\" is not [address]:port", entry);
			return -EINVAL;
		}
		snprintf(host, sizeof(host), "%.*s", (int)(end - entry - 1), entry + 1);
		colon = end[1] ? end + 1 : NULL;
	} else {
		colon = strrchr(entry, ':');
		if (colon && strchr(entry, ':') != colon) {
			snprintf(why, whylen, "\"%s\": write an IPv6 address as [address]:port", entry);
			return -EINVAL;
		}
		snprintf(host, sizeof(host), "%.*s",
			 (int)(colon ? (size_t)(colon - entry) : strlen(entry)), entry);
	}
	if (colon) {
		char *end;
		unsigned long p = strtoul(colon + 1, &end, 10);

		if (!colon[1] || *end || p == 0 || p > 65535) {
			snprintf(why, whylen, "\"%s\": the port must be 1..65535", entry);
			return -EINVAL;
		}
		sv->port = (unsigned)p;
	} else {
		sv->port = MC_DEFAULT_PORT;
	}
	if (!host[0]) {
		snprintf(why, whylen, "\"%s\" has no host", entry);
		return -EINVAL;
	}
	snprintf(sv->host, sizeof(sv->host), "%s", host);
	snprintf(port, sizeof(port), "%u", sv->port);
	rc = getaddrinfo(host, port, &hints, &ai);
	if (rc) {
		snprintf(why, whylen, "\"%s\": %s", entry, gai_strerror(rc));
		return -EINVAL;
	}
	memcpy(&sv->addr, ai->ai_addr, ai->ai_addrlen);
	sv->addrlen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static int parse_servers(struct mc_store *ms, const char *list)
{
	char *copy = strdup(list), *save = NULL, why[MC_NAME_MAX + 96];
	int rc = 0;

	if (!copy)
		return -ENOMEM;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *end;

		while (*tok == ' ' || *tok == '\t')
			tok++;
		end = tok + strlen(tok);
		while (end > tok && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		if (!*tok)
			continue;
		if (ms->nsv == MC_MAX_SERVERS) {
			snprintf(why, sizeof(why), "more than %d servers", MC_MAX_SERVERS);
			rc = -EINVAL;
			break;
		}
		rc = parse_server(&ms->sv[ms->nsv], tok, why, sizeof(why));
		if (rc)
			break;
		ms->nsv++;
	}
	if (!rc && ms->nsv == 0) {
		snprintf(why, sizeof(why), "no server in \"%s\"", list);
		rc = -EINVAL;
	}
	if (rc)
		FM_ERR("kv/memcached: store.memcached.servers: %s", why);
	free(copy);
	return rc;
}

static int router_new(struct mc_store *ms, int distribution)
{
	memcached_return_t rc = MEMCACHED_SUCCESS;

	ms->router = memcached_create(NULL);
	if (!ms->router)
		return -ENOMEM;
	for (unsigned i = 0; i < ms->nsv && rc == MEMCACHED_SUCCESS; i++) {
		const struct mc_server *sv = &ms->sv[i];

		rc = sv->port ? memcached_server_add(ms->router, sv->host, (in_port_t)sv->port)
			      : memcached_server_add_unix_socket(ms->router, sv->host);
	}
	if (rc == MEMCACHED_SUCCESS) {
		if (distribution == FM_MC_KETAMA)
			rc = memcached_behavior_set(ms->router, MEMCACHED_BEHAVIOR_KETAMA, 1);
		else
			rc = memcached_behavior_set_distribution(ms->router,
								 MEMCACHED_DISTRIBUTION_MODULA);
	}
	if (rc != MEMCACHED_SUCCESS) {
		FM_ERR("kv/memcached: cannot build the server list: %s",
		       memcached_strerror(ms->router, rc));
		return -EINVAL;
	}
	/* route() indexes ms->sv with libmemcached's server positions. */
	for (unsigned i = 0; i < ms->nsv; i++) {
		const memcached_instance_st *in = memcached_server_instance_by_position(ms->router, i);

		if (!in || strcmp(memcached_server_name(in), ms->sv[i].host) ||
		    (ms->sv[i].port && memcached_server_port(in) != ms->sv[i].port)) {
			FM_ERR("kv/memcached: libmemcached reordered the server list");
			return -EINVAL;
		}
	}
	return 0;
}

/* memcached without -M evicts old items when full: pages would vanish. */
static memcached_return_t settings_cb(const memcached_instance_st *in, const char *key,
				      size_t klen, const char *value, size_t vlen, void *ctx)
{
	bool *evicting = ctx;

	if (klen == 9 && !memcmp(key, "evictions", 9) && vlen >= 2 && !memcmp(value, "on", 2))
		*evicting = true;
	return MEMCACHED_SUCCESS;
}

static void check_no_evictions(struct mc_store *ms, struct mc_server *sv)
{
	bool evicting = false;

	if (mc_sv_prepare(ms, sv) < 0)
		return;
	if (memcached_stat_execute(sv->mc, "settings", settings_cb, &evicting) != MEMCACHED_SUCCESS) {
		sv->mc_reset = true;
		return;
	}
	if (evicting)
		FM_ERR("kv/memcached: server %s runs without -M: when full it drops pages, which "
		       "fluidmemd then poisons (SIGBUS). Start it with -M so a full server refuses "
		       "writes instead", sv->name);
}

static void mc_close(struct kv_store *kv)
{
	struct mc_store *ms = to_mc(kv);

	if (ms->prev)
		mc_close(&ms->prev->base);

	for (unsigned i = 0; ms->sv && i < ms->nsv; i++) {
		struct mc_server *sv = &ms->sv[i];

		mc_sv_close_write(sv);
		mc_sv_handle_free(sv);
		free(sv->iov);
		free(sv->hdr);
		free(sv->req_item);
		free(sv->rx.req_done);
		free(sv->rx.req_touch);
	}
	if (ms->router)
		memcached_free(ms->router);
	free(ms->sv);
	free(ms->it_ok);
	free(ms->it_full);
	free(ms->it_err);
	free(ms->it_miss);
	free(ms->keys);
	free(ms->mg_item);
	free(ms->mg_keys);
	free(ms->mg_lens);
	free(ms->pfd);
	free(ms->pfd_sv);
	free(ms);
}

static struct kv_store *mc_open(const struct kv_params *p, unsigned shard)
{
	const struct kv_mc_params *mp = &p->mc;
	struct mc_store *ms = calloc(1, sizeof(*ms));
	unsigned reachable = 0;
	int rc;

	if (!ms)
		return NULL;
	ms->shard = shard;
	ms->replicas = mp->replicas;
	ms->batch = mp->batch ? mp->batch : 1;
	ms->retries = mp->retries;
	ms->retry_ms = mp->retry_delay_ms ? mp->retry_delay_ms : 1;
	ms->connect_ms = mp->connect_timeout_ms ? mp->connect_timeout_ms : 1;
	ms->io_ms = mp->io_timeout_ms ? mp->io_timeout_ms : 1;
	ms->binary = mp->binary;
	ms->distribution = mp->distribution;
	ms->sv = calloc(MC_MAX_SERVERS, sizeof(*ms->sv));
	rc = ms->sv ? 0 : -ENOMEM;
	if (!rc && !memchr(mp->servers, '\0', sizeof(mp->servers)))
		rc = -EINVAL;
	if (!rc)
		rc = parse_servers(ms, mp->servers);
	if (!rc && ms->replicas >= ms->nsv) {
		FM_ERR("kv/memcached: store.memcached.replicas = %u needs at least %u servers, "
		       "store.memcached.servers has %u", ms->replicas, ms->replicas + 1, ms->nsv);
		rc = -EINVAL;
	}
	if (!rc)
		rc = router_new(ms, mp->distribution);
	if (rc)
		goto fail;
	rc = -ENOMEM;
	ms->it_ok = calloc(ms->batch, 1);
	ms->it_full = calloc(ms->batch, 1);
	ms->it_err = calloc(ms->batch, 1);
	ms->it_miss = calloc(ms->batch, 1);
	ms->keys = calloc(ms->batch, sizeof(*ms->keys));
	ms->mg_item = calloc(ms->batch, sizeof(*ms->mg_item));
	ms->mg_keys = calloc(ms->batch, sizeof(*ms->mg_keys));
	ms->mg_lens = calloc(ms->batch, sizeof(*ms->mg_lens));
	ms->pfd = calloc(ms->nsv, sizeof(*ms->pfd));
	ms->pfd_sv = calloc(ms->nsv, sizeof(*ms->pfd_sv));
	if (!ms->it_ok || !ms->it_full || !ms->it_err || !ms->it_miss || !ms->keys || !ms->mg_item ||
	    !ms->mg_keys || !ms->mg_lens || !ms->pfd ||
	    !ms->pfd_sv)
		goto fail;
	for (unsigned i = 0; i < ms->nsv; i++) {
		struct mc_server *sv = &ms->sv[i];

		sv->wfd = -1;
		sv->delay_ms = ms->retry_ms;
		sv->iov = calloc((size_t)ms->batch * 3, sizeof(*sv->iov));
		sv->hdr = malloc((size_t)ms->batch * MC_HDR_MAX);
		sv->req_item = calloc(ms->batch, sizeof(*sv->req_item));
		sv->rx.name = sv->name;
		sv->rx.binary = ms->binary;
		sv->rx.req_done = calloc(ms->batch, 1);
		sv->rx.req_touch = calloc(ms->batch, 1);
		if (!sv->iov || !sv->hdr || !sv->req_item || !sv->rx.req_done || !sv->rx.req_touch)
			goto fail;
	}
	/* The servers that do not answer count as down and are retried. */
	for (unsigned i = 0; i < ms->nsv; i++) {
		struct mc_server *sv = &ms->sv[i];

		rc = mc_sv_connect_write(ms, sv);
		if (rc < 0) {
			mc_sv_failed(ms, sv, "connect", strerror(-rc));
			continue;
		}
		reachable++;
		if (shard == 0)
			check_no_evictions(ms, sv);
	}
	/* None at all: memcached may simply not be up yet (it started
	 * after us). Serve anyway; the servers are retried with backoff and
	 * the state shows in stats (kv_stats.servers_down). */
	if (!reachable && shard == 0)
		FM_WARN("kv/memcached: no server of \"%s\" answers yet; retrying with backoff "
			"(pages stay resident until one does)", mp->servers);
	ms->info.servers = ms->nsv;
	ms->info.replicas = ms->replicas;
	return &ms->base;
fail:
	mc_close(&ms->base);
	errno = -rc;
	return NULL;
}

/* Open the new list as a handle of its own, then move it into this one and
 * keep the old one behind it (ms->prev), so the shard's pointer stays. */
static int mc_set_servers(struct kv_store *kv, const char *servers)
{
	struct mc_store *ms = to_mc(kv), *old, *n, *p;
	struct kv_params kp = { .backend = "memcached" };
	struct kv_store *nkv;
	unsigned depth = 0;

	if (strlen(servers) >= sizeof(kp.mc.servers))
		return -EINVAL;
	kp.mc = (struct kv_mc_params){ .distribution = ms->distribution, .replicas = ms->replicas,
				       .binary = ms->binary, .connect_timeout_ms = ms->connect_ms,
				       .io_timeout_ms = ms->io_ms, .batch = ms->batch,
				       .retries = ms->retries, .retry_delay_ms = ms->retry_ms };
	strcpy(kp.mc.servers, servers);
	nkv = mc_open(&kp, ms->shard);
	if (!nkv)
		return errno == EINVAL ? -EINVAL : -EIO;
	/* mc_open accepts servers that are down (a store that is not up yet
	 * at start); a new list none of whose servers answers would make
	 * every page unreadable, so it is refused. */
	{
		struct mc_store *t = to_mc(nkv);
		unsigned down = 0;

		for (unsigned i = 0; i < t->nsv; i++)
			down += t->sv[i].down;
		if (down == t->nsv) {
			mc_close(nkv);
			return -EIO;
		}
	}
	old = malloc(sizeof(*old));
	if (!old) {
		mc_close(nkv);
		return -ENOMEM;
	}
	n = to_mc(nkv);
	*old = *ms;
	*ms = *n;
	free(n);
	ms->base = old->base;           /* the handle's ops and counters */
	ms->info = old->info;
	ms->info.servers = ms->nsv;
	ms->prev = old;
	for (p = ms; p->prev && ++depth < KV_SERVER_LISTS_KEPT; p = p->prev)
		;
	if (p->prev) {
		mc_close(&p->prev->base);
		p->prev = NULL;
	}
	FM_INFO("kv/memcached: shard %u: servers now \"%s\"", ms->shard, servers);
	return 0;
}

/* ---- draining (kv_rehome): its own functions, on top of the above ---- */

/* Whether server `name` is one of the key's owners in list ms. */
static bool owns(const struct mc_store *ms, const char *k, const char *name)
{
	for (unsigned i = 0; i <= ms->replicas; i++)
		if (!strcmp(ms->sv[route(ms, k, i)].name, name))
			return true;
	return false;
}

/* Delete k from the servers of the previous lists that held it and do not
 * own it now; servers are matched by their configured names. */
static int del_lost_owners(struct mc_store *cur, const char *k)
{
	int ret = 0;

	for (struct mc_store *p = cur->prev; p; p = p->prev) {
		for (unsigned i = 0; i <= p->replicas; i++) {
			struct mc_server *sv = &p->sv[route(p, k, i)];
			memcached_return_t rc;

			if (owns(cur, k, sv->name))
				continue;
			if (mc_sv_prepare(p, sv) < 0) {
				ret = -EIO;
				continue;
			}
			rc = memcached_delete(sv->mc, k, KV_MEMCACHED_KEY_LEN, 0);
			if (rc == MEMCACHED_SUCCESS || rc == MEMCACHED_NOTFOUND)
				mc_sv_answered(p, sv);
			else
				ret = mc_sv_lm_error(p, sv, "delete", rc);
		}
	}
	return ret < 0 ? -EIO : 0;
}

static int mc_rehome(struct kv_store *kv, struct kv_key key, kv_check_fn *check, void *arg,
		     void *buf)
{
	struct mc_store *ms = to_mc(kv);
	char k[KV_MEMCACHED_KEY_LEN + 1];
	bool moved = false;
	int rc;

	kv_memcached_key(key, k);
	for (struct mc_store *p = ms->prev; p && !moved; p = p->prev)
		for (unsigned i = 0; i <= p->replicas && !moved; i++)
			moved = !owns(ms, k, p->sv[route(p, k, i)].name);
	if (!moved)
		return 1;
	/* Already at its owners (rewritten since, or moved by an earlier
	 * pass): only the old copies go. */
	rc = get_on_list(kv, ms, k, buf, check, arg, false);
	if (rc == 0)
		return del_lost_owners(ms, k) < 0 ? -EIO : 1;
	rc = mc_get_checked(kv, key, buf, check, arg);
	if (rc < 0)
		return rc;
	if (mc_mput(kv, &key, (const void *const *)&buf, &rc, 1) < 0)
		return rc;
	return del_lost_owners(ms, k);
}

static void mc_forget_previous(struct kv_store *kv)
{
	struct mc_store *ms = to_mc(kv);

	if (ms->prev) {
		mc_close(&ms->prev->base);   /* closes the older ones behind it */
		ms->prev = NULL;
	}
}

int kv_memcached_info(const struct kv_store *kv, struct kv_memcached_info *out)
{
	const struct mc_store *ms;
	uint64_t now = fm_now_ns();

	if (!kv || !out || kv->ops != &kv_memcached_ops)
		return -EINVAL;
	ms = (const struct mc_store *)kv;
	*out = ms->info;
	out->servers_down = 0;
	for (unsigned i = 0; i < ms->nsv; i++)
		out->servers_down += !mc_sv_usable(&ms->sv[i], now);
	return 0;
}

int kv_memcached_server_of(const struct kv_store *kv, struct kv_key key, unsigned i)
{
	const struct mc_store *ms;
	char k[KV_MEMCACHED_KEY_LEN + 1];

	if (!kv || kv->ops != &kv_memcached_ops)
		return -EINVAL;
	ms = (const struct mc_store *)kv;
	if (i > ms->replicas)
		return -EINVAL;
	kv_memcached_key(key, k);
	return (int)route(ms, k, i);
}

/* The servers' state for stats; a down server whose window has passed is
 * tried here too, so the state recovers while no request needs the store
 * (a daemon that started before memcached, with nothing evicted yet). On
 * the shard's thread, like every other op. */
static void mc_stats(const struct kv_store *kv, struct kv_stats *out)
{
	struct mc_store *ms = (struct mc_store *)kv;   /* the probe changes server state */
	uint64_t now = fm_now_ns();

	out->servers = ms->nsv;
	out->servers_down = 0;
	for (unsigned i = 0; i < ms->nsv; i++) {
		struct mc_server *sv = &ms->sv[i];

		if (sv->down)
			mc_sv_ready(ms, sv, now);
		out->servers_down += sv->down;
	}
}

const struct kv_ops kv_memcached_ops = {
	.name = "memcached",
	.keeps_after_get = true,
	.open = mc_open,
	.close = mc_close,
	.get = mc_get,
	.get_checked = mc_get_checked,
	.get_try = mc_get_try,
	.mget = mc_mget,
	.put = mc_put,
	.del = mc_del,
	.mput = mc_mput,
	.mtouch = mc_mtouch,
	.set_servers = mc_set_servers,
	.rehome = mc_rehome,
	.forget_previous = mc_forget_previous,
	.stats = mc_stats,
};
