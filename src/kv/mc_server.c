/* kv/mc_server: one memcached server's health (down windows that double,
 * the log of its failures and recoveries), its libmemcached handle for reads
 * and deletes, and our own connection for pipelined writes. */
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

void mc_sv_close_write(struct mc_server *sv)
{
	if (sv->wfd >= 0)
		close(sv->wfd);
	sv->wfd = -1;
	sv->rx.rlen = 0;
	sv->rx.skip = 0;
}

void mc_sv_handle_free(struct mc_server *sv)
{
	if (!sv->mc)
		return;
	memcached_result_free(&sv->result);
	memcached_free(sv->mc);
	sv->mc = NULL;
}

int mc_sv_handle_new(struct mc_store *ms, struct mc_server *sv)
{
	memcached_st *mc = memcached_create(NULL);
	memcached_return_t rc;

	if (!mc)
		return -ENOMEM;
	rc = sv->port ? memcached_server_add(mc, sv->host, (in_port_t)sv->port)
		      : memcached_server_add_unix_socket(mc, sv->host);
	/* NO_BLOCK makes the connect timeout apply. Noreply stays off: every
	 * request waits for its answer. libmemcached's own dead-server timer
	 * counts whole seconds, so a failed handle is rebuilt instead and the
	 * down window (ours) decides when to try again. */
	if (rc == MEMCACHED_SUCCESS)
		rc = memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, ms->binary);
	if (rc == MEMCACHED_SUCCESS)
		rc = memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_NO_BLOCK, 1);
	if (rc == MEMCACHED_SUCCESS)
		rc = memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
	if (rc == MEMCACHED_SUCCESS)
		rc = memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, ms->connect_ms);
	if (rc == MEMCACHED_SUCCESS)
		rc = memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, ms->io_ms);
	if (rc == MEMCACHED_SUCCESS)
		rc = memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 0);
	if (rc != MEMCACHED_SUCCESS || !memcached_result_create(mc, &sv->result)) {
		FM_ERR("kv/memcached: shard %u: cannot set up a handle for %s: %s", ms->shard,
		       sv->name, memcached_strerror(mc, rc));
		memcached_free(mc);
		return -EIO;
	}
	sv->mc = mc;
	sv->mc_reset = false;
	return 0;
}

/* Ready the libmemcached handle of a server; 0 or -EIO. */
int mc_sv_prepare(struct mc_store *ms, struct mc_server *sv)
{
	if (sv->mc && !sv->mc_reset)
		return 0;
	mc_sv_handle_free(sv);
	return mc_sv_handle_new(ms, sv) < 0 ? -EIO : 0;
}

void mc_sv_failed(struct mc_store *ms, struct mc_server *sv, const char *what,
		      const char *why)
{
	ms->info.server_failures++;
	if (!sv->down)
		FM_WARN("kv/memcached: shard %u: server %s failed (%s: %s); skipped for %u ms, "
			"then retried with doubling delays", ms->shard, sv->name, what, why,
			sv->delay_ms);
	sv->down = true;
	sv->fails++;
	sv->probing = false;
	sv->down_until = fm_now_ns() + (uint64_t)sv->delay_ms * 1000000ull;
	sv->delay_ms = FM_MIN(sv->delay_ms * 2, FM_MAX(MC_DOWN_MAX_MS, ms->retry_ms));
	sv->mc_reset = true;
	mc_sv_close_write(sv);
}

void mc_sv_answered(struct mc_store *ms, struct mc_server *sv)
{
	if (sv->down) {
		FM_INFO("kv/memcached: shard %u: server %s answers again", ms->shard, sv->name);
		ms->info.server_recoveries++;
	}
	sv->down = false;
	sv->fails = 0;
	sv->probing = false;
	sv->down_until = 0;
	sv->delay_ms = ms->retry_ms;
}

/* libmemcached answers that mean the server did not (reliably) answer. */
int mc_sv_lm_error(struct mc_store *ms, struct mc_server *sv, const char *what,
		       memcached_return_t rc)
{
	mc_sv_failed(ms, sv, what, memcached_strerror(sv->mc, rc));
	return -EIO;
}

int mc_sv_connect_write(struct mc_store *ms, struct mc_server *sv)
{
	int fd, one = 1, err = 0;
	socklen_t len = sizeof(err);

	fd = socket(sv->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sv->port)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sv->addr, sv->addrlen) < 0) {
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		int n;

		/* A unix socket's EAGAIN is a full backlog, not progress. */
		if (errno != EINPROGRESS) {
			err = errno;
			close(fd);
			return -err;
		}
		n = poll(&p, 1, (int)ms->connect_ms);
		if (n <= 0) {
			err = n == 0 ? ETIMEDOUT : errno;
			close(fd);
			return -err;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
			err = err ? err : errno;
			close(fd);
			return -err;
		}
	}
	sv->wfd = fd;
	sv->rx.rlen = 0;
	sv->rx.skip = 0;
	return 0;
}

/* The probe's answer, read so far: 1 complete and right, 0 incomplete,
 * -1 not a version answer. */
static int probe_parse(const struct mc_store *ms, const struct mc_server *sv)
{
	const uint8_t *b = (const uint8_t *)sv->probe_buf;

	/* Binary: the header says enough (the connection is closed after
	 * the probe, the version string need not be read). */
	if (ms->binary) {
		if (sv->probe_len < BIN_HDR)
			return 0;
		return b[0] == BIN_RES && b[1] == MC_BIN_OP_VERSION ? 1 : -1;
	}
	if (!memchr(sv->probe_buf, '\n', sv->probe_len))
		return sv->probe_len == sizeof(sv->probe_buf) ? -1 : 0;
	return sv->probe_len >= 8 && !memcmp(sv->probe_buf, "VERSION ", 8) ? 1 : -1;
}

int mc_sv_ready(struct mc_store *ms, struct mc_server *sv, uint64_t now)
{
	int wait = 0, rc;

	if (!sv->down)
		return 1;
	if (now < sv->down_until)
		return 0;
	if (!sv->probing) {
		static const uint8_t bin_version[BIN_HDR] = { BIN_REQ, MC_BIN_OP_VERSION };
		static const char ascii_version[] = "version\r\n";
		const void *req = ms->binary ? (const void *)bin_version : ascii_version;
		size_t len = ms->binary ? sizeof(bin_version) : sizeof(ascii_version) - 1;

		mc_sv_close_write(sv);
		rc = mc_sv_connect_write(ms, sv);
		if (rc == 0) {
			ssize_t n = send(sv->wfd, req, len, MSG_NOSIGNAL | MSG_DONTWAIT);

			if (n != (ssize_t)len)
				rc = n < 0 ? -errno : -EIO;
		}
		if (rc < 0) {
			mc_sv_failed(ms, sv, "probe", strerror(-rc));
			return -1;
		}
		sv->probing = true;
		sv->probe_sent = now;
		sv->probe_len = 0;
		wait = (int)FM_MIN(ms->io_ms, MC_PROBE_WAIT_MS);
	}
	for (;;) {
		struct pollfd p = { .fd = sv->wfd, .events = POLLIN };
		ssize_t n;

		rc = poll(&p, 1, wait);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0)
			break;
		n = recv(sv->wfd, sv->probe_buf + sv->probe_len,
			 sizeof(sv->probe_buf) - sv->probe_len, MSG_DONTWAIT);
		if (n <= 0) {
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			mc_sv_failed(ms, sv, "probe", n == 0 ? "connection closed" : strerror(errno));
			return -1;
		}
		sv->probe_len += (uint32_t)n;
		rc = probe_parse(ms, sv);
		if (rc < 0) {
			mc_sv_failed(ms, sv, "probe", "not a version answer");
			return -1;
		}
		if (rc > 0) {
			/* Writes start on a connection of their own. */
			mc_sv_close_write(sv);
			mc_sv_answered(ms, sv);
			return 1;
		}
	}
	if (fm_now_ns() - sv->probe_sent >= (uint64_t)ms->io_ms * 1000000ull) {
		mc_sv_failed(ms, sv, "probe", "timed out");
		return -1;
	}
	return 0;
}
