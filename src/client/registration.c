/* libfluidmem: the registration client. Requests and replies on the
 * registration socket, one at a time under c->mu; a reply that did not come
 * in time is owed and read before the next request (c->late). */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/base.h"
#include "client/client_int.h"

void fmc_set_error(struct fm_client *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
}

int fmc_dial(const char *path, int timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
	int fd, err;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	/* The send timeout also bounds connect: a unix connect to a listener
	 * whose backlog is full waits for it. */
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err = errno == EAGAIN ? ETIMEDOUT : errno;
		if (fd >= 0)
			close(fd);
		return -err;
	}
	return fd;
}

/* recv without waiting. A daemon that closes a connection over a request
 * it has not read resets ours: the first recv reports ECONNRESET (and
 * clears it) even when a reply was queued before the close, so read once
 * more to get that reply. */
static ssize_t recv_queued(int fd, struct fm_reg_reply *rep)
{
	ssize_t n = recv(fd, rep, sizeof(*rep), MSG_DONTWAIT);

	if (n < 0 && errno == ECONNRESET)
		n = recv(fd, rep, sizeof(*rep), MSG_DONTWAIT);
	return n;
}

/* Wait up to the client's timeout for one reply. 0, -ETIMEDOUT or -EPROTO
 * (with c->error set); -ECANCELED in the watcher when fm_disconnect stops it. */
static int recv_reply(struct fm_client *c, struct fm_reg_reply *rep)
{
	uint64_t deadline = fm_now_ns() + (uint64_t)c->timeout_ms * 1000000u;
	ssize_t n;

	for (;;) {
		struct pollfd p[2] = { { c->fd, POLLIN, 0 }, { c->wake[0], POLLIN, 0 } };
		uint64_t now = fm_now_ns();
		int left = now >= deadline ? 0 : (int)((deadline - now + 999999u) / 1000000u);
		int rc = left ? poll(p, c->cancellable ? 2 : 1, left) : 0;

		if (rc < 0 && errno == EINTR)
			continue;
		if (rc > 0 && c->cancellable && p[1].revents) {
			fmc_set_error(c, "the client is disconnecting");
			return -ECANCELED;
		}
		if (rc == 0) {
			fmc_set_error(c, "fluidmemd did not answer within %d s", c->timeout_ms / 1000);
			return -ETIMEDOUT;
		}
		n = recv_queued(c->fd, rep);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		break;
	}
	if (n != (ssize_t)sizeof(*rep) || rep->magic != FM_PROTO_MAGIC) {
		fmc_set_error(c, "fluidmemd closed the connection or sent a malformed reply");
		return -EPROTO;
	}
	rep->reason[sizeof(rep->reason) - 1] = '\0';
	return 0;
}

/* A region the daemon registered after we gave up on it is unregistered:
 * its mapping is gone. */
int fmc_settle_late(struct fm_client *c)
{
	struct fm_reg_reply rep;
	uint16_t late = c->late;
	int rc;

	if (!late)
		return 0;
	rc = recv_reply(c, &rep);
	if (rc == -ETIMEDOUT)
		fmc_set_error(c, "fluidmemd has not answered an earlier request within %d s",
			      c->timeout_ms / 1000);
	if (rc < 0)
		return rc;
	c->late = 0;
	if (late == FM_REG_READOPT && c->late_region) {
		fmc_readopt_result(c->late_region, rep.status, rep.reason);
		c->late_region = NULL;
		return 0;
	}
	/* A late READOPT success for a region destroyed meanwhile is undone
	 * like a late REGISTER's. */
	if ((late == FM_REG_REGISTER || late == FM_REG_READOPT) && rep.status == 0) {
		struct fm_reg_req q = { .magic = FM_PROTO_MAGIC, .version = FM_PROTO_VERSION,
					.type = FM_REG_UNREGISTER, .length = sizeof(q),
					.page_size = FM_PAGE_SIZE,
					.region_id = late == FM_REG_READOPT ? c->late_id : rep.region_id };

		rc = fmc_transact(c, &q, NULL, 0, &rep);
		if (rc == -ETIMEDOUT)
			return rc;
	}
	return 0;
}

int fmc_exchange(struct fm_client *c, struct fm_reg_req *q, const int *fds, int nfds,
		 struct fm_reg_reply *rep)
{
	int rc = fmc_settle_late(c);

	if (rc < 0)
		return rc;
	if (fm_proto_send_fds(c->fd, q, sizeof(*q), fds, nfds) < 0) {
		int err = errno;

		/* A daemon that refused us at accept has queued its reason and
		 * closed: read that rather than report a broken pipe. */
		if ((err == EPIPE || err == ECONNRESET) &&
		    recv_queued(c->fd, rep) == (ssize_t)sizeof(*rep) &&
		    rep->magic == FM_PROTO_MAGIC && rep->status < 0) {
			rep->reason[sizeof(rep->reason) - 1] = '\0';
			fmc_set_error(c, "fluidmemd refused: %s", rep->reason);
			return rep->status;
		}
		if (err == EAGAIN) {   /* SO_SNDTIMEO: nothing was sent */
			fmc_set_error(c, "fluidmemd did not take a request within %d s",
				      c->timeout_ms / 1000);
			return -ETIMEDOUT;
		}
		fmc_set_error(c, "cannot reach fluidmemd: %s", strerror(err));
		return -err;
	}
	rc = recv_reply(c, rep);
	if (rc == -ETIMEDOUT || rc == -ECANCELED)
		c->late = q->type;
	return rc;
}

int fmc_transact(struct fm_client *c, struct fm_reg_req *q, const int *fds, int nfds,
		 struct fm_reg_reply *rep)
{
	int rc = fmc_exchange(c, q, fds, nfds, rep);

	if (rc < 0)
		return rc;
	if (rep->status < 0) {
		fmc_set_error(c, "fluidmemd refused: %s",
			      rep->reason[0] ? rep->reason : strerror(-rep->status));
		return rep->status;
	}
	return 0;
}
