/* client/client_int: what libfluidmem's files share; not installed.
 *   fluidmem.c      the public API: clients, regions, their descriptors
 *   registration.c  requests and replies on the registration socket
 *   reconnect.c     the watcher thread: reconnection and READOPT
 *   say.c           one line on stderr without allocating (shared with
 *                   the preload shim: say.h)
 * Every name here is hidden: libfluidmem exports only fm_* (and a program
 * linking the static library sees none of these). */
#ifndef FM_CLIENT_CLIENT_INT_H
#define FM_CLIENT_CLIENT_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/un.h>

#include "client/fluidmem.h"
#include "client/say.h"
#include "proto/proto.h"

#define FM_API __attribute__((visibility("default")))
#define FMC_HIDDEN __attribute__((visibility("hidden")))

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

/* libfluidmem's log lines: "libfluidmem[pid]: ..." (say.h). */
#define say(...) fmc_say("libfluidmem", __VA_ARGS__)

/* ---- registration.c ---- */

FMC_HIDDEN void fmc_set_error(struct fm_client *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* A connected registration socket (its sends bounded by timeout_ms), or
 * -errno; -ETIMEDOUT when the daemon's backlog stayed full. */
FMC_HIDDEN int fmc_dial(const char *path, int timeout_ms);
/* Collect the reply owed to a request that timed out (c->late). */
FMC_HIDDEN int fmc_settle_late(struct fm_client *c);
/* One request and its reply: 0 when a reply came (whatever its status),
 * else -errno with c->error set; -ETIMEDOUT and -ECANCELED leave the reply
 * owed (c->late). */
FMC_HIDDEN int fmc_exchange(struct fm_client *c, struct fm_reg_req *q, const int *fds, int nfds,
			    struct fm_reg_reply *rep);
/* fmc_exchange(), and a refusal is the daemon's status. */
FMC_HIDDEN int fmc_transact(struct fm_client *c, struct fm_reg_req *q, const int *fds, int nfds,
			    struct fm_reg_reply *rep);

/* ---- reconnect.c ---- */

/* Start the watcher once the client holds a region. Under c->mu. A failure
 * only costs the reconnection (logged). */
FMC_HIDDEN void fmc_start_watcher(struct fm_client *c);
/* End the watcher thread, if any (fm_disconnect). Not under c->mu. */
FMC_HIDDEN void fmc_stop_watcher(struct fm_client *c);
/* Apply the daemon's answer to r's READOPT. Under c->mu. */
FMC_HIDDEN void fmc_readopt_result(struct fm_region *r, int status, const char *reason);

#endif
