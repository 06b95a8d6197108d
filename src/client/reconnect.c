/* libfluidmem: re-adoption after the daemon's restart.
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

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "client/client_int.h"

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
	int fd = fmc_dial(c->path, c->timeout_ms), err = 0;

	if (fd < 0)
		return fd;
	if (dup3(fd, c->fd, O_CLOEXEC) < 0)
		err = -errno;
	close(fd);
	return err;
}

void fmc_readopt_result(struct fm_region *r, int status, const char *reason)
{
	const char *why = reason && *reason ? reason : strerror(status < 0 ? -status : status);

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
	rc = fmc_settle_late(c);
	if (rc == -ETIMEDOUT || rc == -ECANCELED)
		return 0;
	if (rc < 0)
		return rc;
	memcpy(q.name, r->name, sizeof(q.name));
	memcpy(q.credential, r->cred, sizeof(q.credential));
	rc = fmc_exchange(c, &q, fds, 2, &rep);
	if (rc == -ETIMEDOUT || rc == -ECANCELED) {
		/* Its reply is owed: the next exchange settles it. */
		c->late_region = r;
		c->late_id = r->id;
		return 0;
	}
	if (rc < 0)
		return rc;
	fmc_readopt_result(r, rep.status, rep.reason);
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

void fmc_start_watcher(struct fm_client *c)
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


void fmc_stop_watcher(struct fm_client *c)
{
	char b = 1;

	if (!c->watching)
		return;
	__atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
	if (write(c->wake[1], &b, 1) < 0) {
		/* the pipe is non-blocking and never full: one byte wakes it */
	}
	pthread_join(c->watcher, NULL);
}
