/* libfluidmem: create regions whose pages fluidmemd serves. */
#include "client/fluidmem.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/base.h"
#include "proto/proto.h"

#define FM_API __attribute__((visibility("default")))

struct fm_region {
	struct fm_client *client;
	struct fm_region *next;
	void *addr;
	size_t size;
	uint64_t id;
	int uffd;
	int memfd;
	bool owned;    /* we mapped it (fm_region_create) and unmap it */
	bool uffd_registered;   /* UFFDIO_REGISTER succeeded on r->uffd */
	bool said_again;   /* the daemon's first -EAGAIN to READOPT was logged */
	/* 0: served on the current connection; -EAGAIN: waits for READOPT;
	 * -ENOENT/-EPERM/...: the daemon refused READOPT for good. Written
	 * under client->mu, read with atomics by fm_region_status. */
	int status;
	unsigned round;    /* the watcher's last READOPT round that tried it */
	char name[FM_REGION_NAME_MAX];
	uint8_t cred[FM_CREDENTIAL_LEN];   /* from REGISTER's reply, for READOPT */
};

struct fm_client {
	/* Serialises the caller's calls and the watcher's reconnection: every
	 * field below but the watcher's own is used under it. */
	pthread_mutex_t mu;
	int fd;           /* its number never changes: a reconnection dup3()s onto it */
	int timeout_ms;   /* bound on one exchange with the daemon */
	/* A request whose reply did not come in time (FM_REG_REGISTER,
	 * FM_REG_UNREGISTER or FM_REG_READOPT), else 0. Its reply is still
	 * owed: it is read before the next request, so replies never pair with
	 * the wrong request, and a late REGISTER success is undone at once. */
	uint16_t late;
	struct fm_region *late_region;   /* READOPT: its region, NULL once destroyed */
	uint64_t late_id;                /* READOPT: that region's id */
	/* c->fd is a connection the daemon serves our regions on; false from
	 * when the watcher sees it drop until it has reconnected. */
	bool connected;
	bool cancellable;   /* the watcher's exchanges: fm_disconnect cuts them short */
	struct fm_region *regions;
	/* The watcher thread (started with the first region). */
	bool watching;
	int stop;           /* atomic: fm_disconnect asks the watcher to end */
	int wake[2];        /* pipe: wakes the watcher's polls and sleeps */
	pthread_t watcher;
	unsigned round;
	int rc_min_ms, rc_max_ms;   /* reconnection backoff; rc_max_ms 0: never reconnect */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char error[192];
};

static void set_error(struct fm_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_error(struct fm_client *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
}

FM_API const char *fm_client_error(const struct fm_client *c)
{
	return c ? c->error : "no client";
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line on stderr in one write(2) of a stack buffer: no stdio, no
 * allocation, so the watcher can log inside any host process (QEMU). */
static void say(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n = snprintf(line, sizeof(line), "libfluidmem[%d]: ", (int)getpid());

	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (write(2, line, (size_t)n) < 0) {
		/* nowhere else to say it */
	}
}

/* FLUIDMEM_TIMEOUT (whole seconds) or the default; -EINVAL when malformed. */
static int timeout_ms_from_env(void)
{
	const char *v = getenv("FLUIDMEM_TIMEOUT");
	char *end;
	unsigned long s;

	if (!v || !*v)
		return FM_DEFAULT_TIMEOUT_S * 1000;
	errno = 0;
	s = strtoul(v, &end, 10);
	if (errno || *end || s < 1 || s > FM_MAX_TIMEOUT_S)
		return -EINVAL;
	return (int)s * 1000;
}

/* $name as milliseconds in [lo, hi], else `def`; -EINVAL when malformed. */
static int ms_from_env(const char *name, int def, int lo, int hi)
{
	const char *v = getenv(name);
	char *end;
	long ms;

	if (!v || !*v)
		return def;
	errno = 0;
	ms = strtol(v, &end, 10);
	if (errno || *end || ms < lo || ms > hi)
		return -EINVAL;
	return (int)ms;
}

FM_API struct fm_client *fm_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct fm_client *c;
	struct timeval tv;
	int err, tmo = timeout_ms_from_env();
	int rc_max = ms_from_env("FLUIDMEM_RECONNECT_MAX_MS", FM_DEFAULT_RECONNECT_MAX_MS, 0,
				 FM_MAX_RECONNECT_MS);
	int rc_min = ms_from_env("FLUIDMEM_RECONNECT_MIN_MS", FM_DEFAULT_RECONNECT_MIN_MS, 1,
				 FM_MAX_RECONNECT_MS);

	if (!path)
		path = getenv("FLUIDMEM_SOCKET");
	if (!path || !*path)
		path = FM_DEFAULT_REGISTER_SOCKET;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	if (tmo < 0 || rc_max < 0 || rc_min < 0) {
		errno = EINVAL;
		return NULL;
	}
	strcpy(sa.sun_path, path);
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->timeout_ms = tmo;
	c->rc_max_ms = rc_max;
	c->rc_min_ms = rc_min < rc_max ? rc_min : rc_max;
	c->wake[0] = c->wake[1] = -1;
	c->connected = true;
	strcpy(c->path, path);
	tv = (struct timeval){ .tv_sec = tmo / 1000, .tv_usec = (tmo % 1000) * 1000 };
	c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	/* The send timeout also bounds connect: a unix connect to a listener
	 * whose backlog is full waits for it. */
	if (c->fd < 0 || setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err = errno;
		if (c->fd >= 0)
			close(c->fd);
		free(c);
		errno = err == EAGAIN ? ETIMEDOUT : err;
		return NULL;
	}
	pthread_mutex_init(&c->mu, NULL);
	return c;
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
			set_error(c, "the client is disconnecting");
			return -ECANCELED;
		}
		if (rc == 0) {
			set_error(c, "fluidmemd did not answer within %d s", c->timeout_ms / 1000);
			return -ETIMEDOUT;
		}
		n = recv(c->fd, rep, sizeof(*rep), MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		break;
	}
	if (n != (ssize_t)sizeof(*rep) || rep->magic != FM_PROTO_MAGIC) {
		set_error(c, "fluidmemd closed the connection or sent a malformed reply");
		return -EPROTO;
	}
	rep->reason[sizeof(rep->reason) - 1] = '\0';
	return 0;
}

static int transact(struct fm_client *c, struct fm_reg_req *q, const int *fds, int nfds,
		    struct fm_reg_reply *rep);
static void readopt_result(struct fm_client *c, struct fm_region *r, int status, const char *reason);

/* Collect the reply owed to a request that timed out. A region the daemon
 * registered after we gave up on it is unregistered: its mapping is gone. */
static int settle_late(struct fm_client *c)
{
	struct fm_reg_reply rep;
	uint16_t late = c->late;
	int rc;

	if (!late)
		return 0;
	rc = recv_reply(c, &rep);
	if (rc == -ETIMEDOUT)
		set_error(c, "fluidmemd has not answered an earlier request within %d s",
			  c->timeout_ms / 1000);
	if (rc < 0)
		return rc;
	c->late = 0;
	if (late == FM_REG_READOPT && c->late_region) {
		readopt_result(c, c->late_region, rep.status, rep.reason);
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

		rc = transact(c, &q, NULL, 0, &rep);
		if (rc == -ETIMEDOUT)
			return rc;
	}
	return 0;
}

/* Send one request (with fds when nfds > 0) and wait, at most the client's
 * timeout, for the reply: 0 when one came (whatever its status), else
 * -errno with c->error set; -ETIMEDOUT and -ECANCELED leave the reply owed
 * (c->late). */
static int exchange(struct fm_client *c, struct fm_reg_req *q, const int *fds, int nfds,
		    struct fm_reg_reply *rep)
{
	char cbuf[CMSG_SPACE(sizeof(int) * 2)];
	struct iovec iov = { q, sizeof(*q) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	int rc = settle_late(c);

	if (rc < 0)
		return rc;
	memset(cbuf, 0, sizeof(cbuf));
	if (nfds > 0) {
		struct cmsghdr *cm;

		mh.msg_control = cbuf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	if (sendmsg(c->fd, &mh, MSG_NOSIGNAL) < 0) {
		int err = errno;

		/* A daemon that refused us at accept has queued its reason and
		 * closed: read that rather than report a broken pipe. */
		if ((err == EPIPE || err == ECONNRESET) &&
		    recv(c->fd, rep, sizeof(*rep), MSG_DONTWAIT) == (ssize_t)sizeof(*rep) &&
		    rep->magic == FM_PROTO_MAGIC && rep->status < 0) {
			rep->reason[sizeof(rep->reason) - 1] = '\0';
			set_error(c, "fluidmemd refused: %s", rep->reason);
			return rep->status;
		}
		if (err == EAGAIN) {   /* SO_SNDTIMEO: nothing was sent */
			set_error(c, "fluidmemd did not take a request within %d s",
				  c->timeout_ms / 1000);
			return -ETIMEDOUT;
		}
		set_error(c, "cannot reach fluidmemd: %s", strerror(err));
		return -err;
	}
	rc = recv_reply(c, rep);
	if (rc == -ETIMEDOUT || rc == -ECANCELED)
		c->late = q->type;
	return rc;
}

/* exchange(), and a refusal is the daemon's status. */
static int transact(struct fm_client *c, struct fm_reg_req *q, const int *fds, int nfds,
		    struct fm_reg_reply *rep)
{
	int rc = exchange(c, q, fds, nfds, rep);

	if (rc < 0)
		return rc;
	if (rep->status < 0) {
		set_error(c, "fluidmemd refused: %s", rep->reason[0] ? rep->reason : strerror(-rep->status));
		return rep->status;
	}
	return 0;
}

static int open_uffd(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd >= 0)
		return fd;
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -1;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	close(dev);
	return fd;
}

/* ---- re-adoption after the daemon's restart ----
 *
 * The watcher thread sleeps in poll() on the registration connection. When
 * the daemon goes away (crash, upgrade) it marks every region as waiting,
 * reconnects with a doubling backoff and sends READOPT for each, with the
 * uffd and memfd this process kept: until then nobody reads the uffd, so
 * faulting threads stay blocked in the kernel; they neither see a zero page
 * nor an error. It blocks every signal (it runs inside the host program,
 * QEMU, whose handlers expect their own threads), allocates nothing, and
 * logs one line per change of state, not per try. In a fork child it does
 * not exist: fm_client_forget never waits for it. */

/* Every region served on the dropped connection waits for READOPT; an owed
 * reply died with the connection. Under c->mu. */
static int connection_lost(struct fm_client *c)
{
	int n = 0;

	c->connected = false;
	c->late = 0;
	c->late_region = NULL;
	for (struct fm_region *r = c->regions; r; r = r->next) {
		if (r->status == 0)
			__atomic_store_n(&r->status, -EAGAIN, __ATOMIC_RELEASE);
		if (r->status == -EAGAIN) {
			r->said_again = false;
			n++;
		}
	}
	return n;
}

/* A new connection, installed on c->fd's number. 0 or -errno. Under c->mu. */
static int reconnect_fd(struct fm_client *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = c->timeout_ms / 1000, .tv_usec = (c->timeout_ms % 1000) * 1000 };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0), err;

	strcpy(sa.sun_path, c->path);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    dup3(fd, c->fd, O_CLOEXEC) < 0) {
		err = errno == EAGAIN ? ETIMEDOUT : errno;
		if (fd >= 0)
			close(fd);
		return -err;
	}
	close(fd);
	return 0;
}

/* Apply the daemon's answer to r's READOPT. Under c->mu. */
static void readopt_result(struct fm_client *c, struct fm_region *r, int status, const char *reason)
{
	const char *why = reason && *reason ? reason : strerror(status < 0 ? -status : status);

	(void)c;
	switch (status) {
	case 0:
		__atomic_store_n(&r->status, 0, __ATOMIC_RELEASE);
		say("region %llu (%s) re-adopted: its faults are served again",
		    (unsigned long long)r->id, r->name);
		return;
	case -EAGAIN:
	case -EBUSY:
	case -ENOMEM:
		if (!r->said_again)
			say("region %llu (%s): fluidmemd is not ready for it yet (%s); retrying",
			    (unsigned long long)r->id, r->name, why);
		r->said_again = true;
		return;
	case -ENOENT:
		say("REGION %llu (%s) IS LOST: the restarted fluidmemd has no record of it (%s). "
		    "Its evicted pages cannot be brought back; threads touching them stay blocked. "
		    "It is not registered again (that would read zeros)",
		    (unsigned long long)r->id, r->name, why);
		break;
	case -EPERM:
		say("region %llu (%s): fluidmemd refused its credential (%s); not retrying, "
		    "threads touching its evicted pages stay blocked",
		    (unsigned long long)r->id, r->name, why);
		break;
	default:
		say("region %llu (%s): fluidmemd refused READOPT (%s); not retrying",
		    (unsigned long long)r->id, r->name, why);
		break;
	}
	__atomic_store_n(&r->status, status < 0 ? status : -EPROTO, __ATOMIC_RELEASE);
}

/* Is addr still registered on a userfaultfd (VmFlags "um" in smaps)? 1,
 * 0, or -1 when smaps cannot tell. A daemon stopped by a plain shutdown
 * hands a live region's pages back and unregisters it: that region needs
 * no READOPT, and a new daemon's -ENOENT for it would be a false alarm.
 * No allocation: read in a stack buffer, line by line. */
static int still_registered(uintptr_t addr)
{
	char buf[4096];
	size_t len = 0;
	bool in = false;
	int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC), rc = -1;

	if (fd < 0)
		return -1;
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		char *line = buf, *nl;

		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = '\0';
		while ((nl = strchr(line, '\n'))) {
			unsigned long lo, hi;

			*nl = '\0';
			if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2)   /* a mapping's first line */
				in = addr >= lo && addr < hi;
			else if (in && strncmp(line, "VmFlags:", 8) == 0) {
				rc = strstr(line, " um") != NULL;
				goto out;
			}
			line = nl + 1;
		}
		len = (size_t)(buf + len - line);
		memmove(buf, line, len);
		if (len == sizeof(buf) - 1)
			len = 0;   /* a line longer than the buffer: none we need */
	}
out:
	close(fd);
	return rc;
}

/* Send READOPT for r and apply the answer. 0 when the connection is still
 * good, -errno when it broke (the caller marks it lost). Under c->mu. */
static int readopt_one(struct fm_client *c, struct fm_region *r)
{
	struct fm_reg_req q = { .magic = FM_PROTO_MAGIC, .version = FM_PROTO_VERSION,
				.type = FM_REG_READOPT, .length = sizeof(q), .page_size = FM_PAGE_SIZE,
				.addr = (uint64_t)(uintptr_t)r->addr, .size = r->size,
				.region_id = r->id };
	struct fm_reg_reply rep;
	int fds[2] = { r->uffd, r->memfd }, rc;

	if (still_registered((uintptr_t)r->addr) == 0) {
		say("region %llu (%s) was handed back by the daemon before it stopped: it runs on "
		    "plain memory now, nothing to re-adopt", (unsigned long long)r->id, r->name);
		__atomic_store_n(&r->status, -ENODEV, __ATOMIC_RELEASE);
		return 0;
	}
	/* An earlier READOPT's reply first: still owed, it stays late and r
	 * waits for the next pass. */
	rc = settle_late(c);
	if (rc == -ETIMEDOUT || rc == -ECANCELED)
		return 0;
	if (rc < 0)
		return rc;
	memcpy(q.name, r->name, sizeof(q.name));
	memcpy(q.credential, r->cred, sizeof(q.credential));
	rc = exchange(c, &q, fds, 2, &rep);
	if (rc == -ETIMEDOUT || rc == -ECANCELED) {
		/* Its reply is owed: the next exchange settles it. */
		c->late_region = r;
		c->late_id = r->id;
		return 0;
	}
	if (rc < 0)
		return rc;
	readopt_result(c, r, rep.status, rep.reason);
	return 0;
}

static bool stopping(struct fm_client *c)
{
	return __atomic_load_n(&c->stop, __ATOMIC_ACQUIRE) != 0;
}

/* Sleep ms, or less when fm_disconnect wakes us. */
static void nap(struct fm_client *c, int ms)
{
	struct pollfd p = { c->wake[0], POLLIN, 0 };

	poll(&p, 1, ms);
}

/* One pass: connect if need be, READOPT every waiting region not yet tried
 * this round. c->mu is dropped between regions, so a caller's
 * fm_region_destroy or fm_disconnect waits at most one exchange. Returns
 * the regions still waiting, or -1 when the connection is down. */
static int readopt_pass(struct fm_client *c, int *last_err)
{
	int waiting = 0, rc;
	unsigned round;

	pthread_mutex_lock(&c->mu);
	if (!c->connected) {
		rc = reconnect_fd(c);
		if (rc < 0) {
			if (rc != *last_err)
				say("fluidmemd at %s is not back yet (%s); still trying", c->path,
				    strerror(-rc));
			*last_err = rc;
			pthread_mutex_unlock(&c->mu);
			return -1;
		}
		c->connected = true;
		*last_err = 0;
		say("reconnected to fluidmemd at %s; re-adopting", c->path);
	}
	round = ++c->round;
	c->cancellable = true;
	for (;;) {
		struct fm_region *r = c->regions;

		while (r && (r->status != -EAGAIN || r->round == round))
			r = r->next;
		if (!r || stopping(c))
			break;
		r->round = round;
		rc = readopt_one(c, r);
		if (rc < 0) {
			say("the new connection to fluidmemd broke (%s); reconnecting", c->error);
			connection_lost(c);
			c->cancellable = false;
			pthread_mutex_unlock(&c->mu);
			return -1;
		}
		c->cancellable = false;
		pthread_mutex_unlock(&c->mu);
		pthread_mutex_lock(&c->mu);
		c->cancellable = true;
	}
	c->cancellable = false;
	/* A region whose READOPT reply is still owed waits too. */
	for (struct fm_region *r = c->regions; r; r = r->next)
		waiting += r->status == -EAGAIN;
	pthread_mutex_unlock(&c->mu);
	return waiting;
}

/* The daemon went away: get every region served again. */
static void recover(struct fm_client *c)
{
	uint64_t t0 = fm_now_ns();
	int delay = c->rc_min_ms, last_err = 0, n, lost = 0;

	pthread_mutex_lock(&c->mu);
	n = connection_lost(c);
	pthread_mutex_unlock(&c->mu);
	say("lost the connection to fluidmemd at %s: %d region(s) wait for re-adoption, their "
	    "faults stay blocked; reconnecting every %d ms to %d ms",
	    c->path, n, c->rc_min_ms, c->rc_max_ms);
	while (!stopping(c)) {
		if (readopt_pass(c, &last_err) == 0) {
			pthread_mutex_lock(&c->mu);
			for (struct fm_region *r = c->regions; r; r = r->next)
				lost += r->status != 0;
			pthread_mutex_unlock(&c->mu);
			say("fluidmemd serves this process again after %llu ms (%d region(s) lost)",
			    (unsigned long long)((fm_now_ns() - t0) / 1000000u), lost);
			return;
		}
		nap(c, delay);
		delay = delay * 2 > c->rc_max_ms ? c->rc_max_ms : delay * 2;
	}
}

static void *watcher_main(void *arg)
{
	struct fm_client *c = arg;

	while (!stopping(c)) {
		/* POLLRDHUP, not POLLIN: the caller's exchanges read replies on
		 * this socket meanwhile; hang-ups are always reported. */
		struct pollfd p[2] = { { c->wake[0], POLLIN, 0 }, { c->fd, POLLRDHUP, 0 } };

		if (poll(p, 2, -1) < 0 || p[0].revents)
			continue;
		if (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR))
			recover(c);
	}
	return NULL;
}

/* Start the watcher once the client holds a region. Under c->mu. A failure
 * only costs the reconnection (logged). */
static void start_watcher(struct fm_client *c)
{
	pthread_attr_t attr;
	sigset_t all, old;
	int err;

	if (c->watching || c->rc_max_ms == 0)
		return;
	if (pipe2(c->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		say("cannot watch the connection to fluidmemd (%s): no reconnection after a restart",
		    strerror(errno));
		c->wake[0] = c->wake[1] = -1;
		return;
	}
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 << 10);
	/* The thread inherits this mask: no signal of the host's lands on it. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&c->watcher, &attr, watcher_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (err) {
		say("cannot start the reconnection thread (%s): no reconnection after a restart",
		    strerror(err));
		close(c->wake[0]);
		close(c->wake[1]);
		c->wake[0] = c->wake[1] = -1;
		return;
	}
	c->watching = true;
}

/* Register r->addr/r->size (mapped from r->memfd) on a new uffd and hand
 * both descriptors to the daemon. 0 or an errno value (with c->error set). */
static int register_region(struct fm_client *c, struct fm_region *r, const char *name)
{
	struct uffdio_api api = { .api = UFFD_API, .features = FM_UFFD_FEATURES };
	struct uffdio_register reg;
	struct fm_reg_req q = { .magic = FM_PROTO_MAGIC, .version = FM_PROTO_VERSION,
				.type = FM_REG_REGISTER, .length = sizeof(q), .page_size = FM_PAGE_SIZE };
	struct fm_reg_reply rep;
	int err, fds[2];

	r->uffd = open_uffd();
	if (r->uffd < 0) {
		err = errno == EPERM || errno == EACCES ? errno : ENOSYS;
		set_error(c, "userfaultfd: %s", strerror(errno));
		return err;
	}
	if (ioctl(r->uffd, UFFDIO_API, &api) < 0 || (api.features & FM_UFFD_FEATURES) != FM_UFFD_FEATURES) {
		set_error(c, "this kernel's userfaultfd lacks features 0x%llx",
			  (unsigned long long)(FM_UFFD_FEATURES & ~api.features));
		return ENOSYS;
	}
	reg = (struct uffdio_register){
		.range = { (uint64_t)(uintptr_t)r->addr, r->size },
		.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
	};
	if (ioctl(r->uffd, UFFDIO_REGISTER, &reg) < 0) {
		err = errno;
		set_error(c, "UFFDIO_REGISTER: %s", strerror(err));
		return err;
	}
	r->uffd_registered = true;
	q.addr = (uint64_t)(uintptr_t)r->addr;
	q.size = r->size;
	snprintf(q.name, sizeof(q.name), "%s", name);
	memcpy(r->name, q.name, sizeof(r->name));
	fds[0] = r->uffd;
	fds[1] = r->memfd;
	pthread_mutex_lock(&c->mu);
	if (!c->connected) {
		pthread_mutex_unlock(&c->mu);
		set_error(c, "fluidmemd is restarting: the connection is being re-established");
		return ENOTCONN;
	}
	err = -transact(c, &q, fds, 2, &rep);
	if (err) {
		pthread_mutex_unlock(&c->mu);
		return err;
	}
	r->id = rep.region_id;
	memcpy(r->cred, rep.credential, sizeof(r->cred));
	/* We keep our uffd open: if fluidmemd dies, faulting threads wait
	 * rather than find holes and read zeros, until the watcher has the
	 * restarted daemon re-adopt the region. */
	r->next = c->regions;
	c->regions = r;
	start_watcher(c);
	pthread_mutex_unlock(&c->mu);
	return 0;
}

static void region_free(struct fm_region *r)
{
	int err = errno;

	/* The daemon may still hold a copy of the uffd (it timed out, or it
	 * refused after taking it): unregister the range in our mm ourselves,
	 * so that the munmap to come raises no UNMAP event that would wait
	 * for a reader. */
	if (r->uffd_registered) {
		struct uffdio_range range = { (uint64_t)(uintptr_t)r->addr, r->size };

		ioctl(r->uffd, UFFDIO_UNREGISTER, &range);
	}
	if (r->uffd >= 0)
		close(r->uffd);
	if (r->owned && r->addr != MAP_FAILED)
		munmap(r->addr, r->size);
	if (r->memfd >= 0)
		close(r->memfd);
	free(r);
	errno = err;
}

FM_API struct fm_region *fm_region_create(struct fm_client *c, size_t size, const char *name)
{
	struct fm_region *r;
	int err;

	if (!c || size == 0) {
		errno = EINVAL;
		return NULL;
	}
	size = (size + FM_PAGE_SIZE - 1) & ~(size_t)(FM_PAGE_SIZE - 1);
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->client = c;
	r->size = size;
	r->uffd = r->memfd = -1;
	r->addr = MAP_FAILED;
	r->owned = true;
	if (!name)
		name = "fluidmem";
	/* Sealed against resizing: fluidmemd reads victims through its own
	 * mapping, and a memfd that shrank under it would SIGBUS the daemon. */
	r->memfd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (r->memfd < 0 || ftruncate(r->memfd, (off_t)size) < 0 ||
	    fcntl(r->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0) {
		err = errno;
		set_error(c, "memfd: %s", strerror(err));
		goto fail;
	}
	r->addr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd, 0);
	if (r->addr == MAP_FAILED) {
		err = errno;
		set_error(c, "mmap: %s", strerror(err));
		goto fail;
	}
	/* A child sharing this memfd without our registration would fill
	 * evicted pages with zeros that the parent then sees. */
	if (madvise(r->addr, size, MADV_DONTFORK) < 0) {
		err = errno;
		set_error(c, "MADV_DONTFORK: %s", strerror(err));
		goto fail;
	}
	err = register_region(c, r, name);
	if (err)
		goto fail;
	return r;
fail:
	errno = err;
	region_free(r);
	return NULL;
}

FM_API struct fm_region *fm_region_register(struct fm_client *c, void *addr, size_t size,
					    int memfd, const char *name)
{
	struct fm_region *r;
	int err;

	if (!c || size == 0 || size % FM_PAGE_SIZE || (uintptr_t)addr % FM_PAGE_SIZE || memfd < 0) {
		errno = EINVAL;
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->client = c;
	r->size = size;
	r->addr = addr;
	r->uffd = -1;
	r->memfd = fcntl(memfd, F_DUPFD_CLOEXEC, 0);
	/* The daemon requires a memfd that cannot shrink; seal it if we may.
	 * If sealing is not allowed the daemon refuses and says why. */
	if (r->memfd >= 0 && !(fcntl(r->memfd, F_GET_SEALS) & F_SEAL_SHRINK))
		fcntl(r->memfd, F_ADD_SEALS, F_SEAL_SHRINK);
	if (r->memfd < 0) {
		err = errno;
		set_error(c, "memfd: %s", strerror(err));
		free(r);
		errno = err;
		return NULL;
	}
	/* A fork child would share this memfd without our registration and
	 * fill evicted pages with zeros that we then see (README). */
	if (madvise(addr, size, MADV_DONTFORK) < 0) {
		err = errno;
		set_error(c, "MADV_DONTFORK: %s", strerror(err));
		errno = err;
		region_free(r);
		return NULL;
	}
	err = register_region(c, r, name ? name : "fluidmem");
	if (err) {
		errno = err;
		region_free(r);
		return NULL;
	}
	return r;
}

FM_API int fm_region_destroy(struct fm_region *r)
{
	struct fm_client *c;
	struct fm_reg_req q = { .magic = FM_PROTO_MAGIC, .version = FM_PROTO_VERSION,
				.type = FM_REG_UNREGISTER, .length = sizeof(q), .page_size = FM_PAGE_SIZE };
	struct fm_reg_reply rep;
	int rc = 0;

	if (!r)
		return 0;
	c = r->client;
	q.region_id = r->id;
	pthread_mutex_lock(&c->mu);
	/* An owed READOPT reply may be this region's: settle it first, so we
	 * know whether the daemon serves it on this connection. */
	if (c->connected && c->late == FM_REG_READOPT)
		settle_late(c);
	if (c->late_region == r)
		c->late_region = NULL;   /* a late success is undone by its id */
	/* A region waiting for READOPT is held by no connection: nothing to
	 * tell the daemon (a restarted one keeps its record until it expires). */
	if (c->connected && r->status == 0)
		rc = transact(c, &q, NULL, 0, &rep);
	for (struct fm_region **p = &c->regions; *p; p = &(*p)->next) {
		if (*p == r) {
			*p = r->next;
			break;
		}
	}
	pthread_mutex_unlock(&c->mu);
	/* The daemon has dropped its descriptors; closing ours (first, in
	 * region_free) unregisters the range, so the munmap raises no UNMAP
	 * event that nobody would read. */
	region_free(r);
	return rc;
}

FM_API void fm_disconnect(struct fm_client *c)
{
	if (!c)
		return;
	if (c->watching) {
		char b = 1;

		__atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
		if (write(c->wake[1], &b, 1) < 0) {
			/* the pipe is non-blocking and never full: one byte wakes it */
		}
		pthread_join(c->watcher, NULL);
	}
	/* A READOPT cut short by the stop: closing the connection frees on the
	 * daemon whatever it serves on it, so the UNREGISTERs are skipped
	 * rather than wait for its reply. */
	if (c->late == FM_REG_READOPT)
		c->connected = false;
	while (c->regions)
		fm_region_destroy(c->regions);
	close(c->fd);
	if (c->wake[0] >= 0) {
		close(c->wake[0]);
		close(c->wake[1]);
	}
	pthread_mutex_destroy(&c->mu);
	free(c);
}

FM_API void fm_client_forget(struct fm_client *c)
{
	if (!c)
		return;
	/* A fork child has no watcher thread and may have inherited c->mu
	 * held: touch neither. No UFFDIO_UNREGISTER here: the uffd acts on
	 * the mm that created it, which is the parent's. Closing our copies
	 * leaves the parent served. */
	while (c->regions) {
		struct fm_region *r = c->regions;

		c->regions = r->next;
		if (r->uffd >= 0)
			close(r->uffd);
		if (r->memfd >= 0)
			close(r->memfd);
		free(r);
	}
	close(c->fd);
	if (c->wake[0] >= 0) {
		close(c->wake[0]);
		close(c->wake[1]);
	}
	free(c);
}

FM_API int fm_region_status(const struct fm_region *r)
{
	return r ? __atomic_load_n(&r->status, __ATOMIC_ACQUIRE) : -EINVAL;
}

FM_API int fm_region_discard(struct fm_region *r, size_t offset, size_t len)
{
	if (!r || offset % FM_PAGE_SIZE || len % FM_PAGE_SIZE || offset > r->size || len > r->size - offset)
		return -EINVAL;
	if (len == 0)
		return 0;
	/* Punch first: the pages are gone before anyone can write them again.
	 * MADV_DONTNEED then zaps our page tables and raises the REMOVE event
	 * that tells fluidmemd to drop its state and stored copies. */
	if (fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
		      (off_t)len) < 0)
		return -errno;
	if (madvise((char *)r->addr + offset, len, MADV_DONTNEED) < 0)
		return -errno;
	return 0;
}

FM_API void *fm_region_addr(const struct fm_region *r)
{
	return r->addr;
}

FM_API size_t fm_region_size(const struct fm_region *r)
{
	return r->size;
}

FM_API uint64_t fm_region_id(const struct fm_region *r)
{
	return r->id;
}
