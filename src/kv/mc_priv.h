/* kv/mc_priv: what memcached.c (the kv_ops glue, reads, the pipelined
 * write jobs) and mc_server.c (server health, connections) share. Internal
 * to kv/; one shard's thread owns a store and its servers. */
#ifndef FM_KV_MC_PRIV_H
#define FM_KV_MC_PRIV_H

#include <libmemcached/memcached.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "base/base.h"
#include "kv/kv.h"
#include "kv/mc_wire.h"

#define MC_MAX_SERVERS 32
#define MC_NAME_MAX 272         /* host:port, or a unix socket path (< 108) */
#define MC_DOWN_MAX_MS 1000u    /* longest down window and retry delay */
#define MC_DEFAULT_PORT 11211
#define MC_PROBE_WAIT_MS 20     /* a probe's answer is waited for this long, then polled */


struct mc_server {
	char name[MC_NAME_MAX];         /* as configured, for messages */
	char host[MC_NAME_MAX];         /* host name, address or socket path */
	unsigned port;                  /* 0 for a unix socket */
	struct sockaddr_storage addr;   /* for our own write connection */
	socklen_t addrlen;
	memcached_st *mc;               /* reads and deletes; NULL until needed */
	memcached_result_st result;     /* reused: a get allocates nothing */
	bool mc_reset;                  /* failed: rebuild mc before the next use */
	int wfd;                        /* pipelined write connection, -1 closed */
	uint64_t down_until;            /* ns; the server is skipped before this */
	uint32_t delay_ms;              /* length of the next down window */
	bool down;                      /* failed and not answered since (logged) */
	uint32_t fails;                 /* failures in a row since it last answered */
	/* the health probe of a down server whose window passed (mc_sv_ready) */
	bool probing;
	uint64_t probe_sent;            /* ns */
	uint32_t probe_len;
	char probe_buf[64];

	/* the write job of the current flush */
	uint32_t niov, iov_pos;
	bool active;
	struct iovec *iov;              /* 3 per request */
	uint8_t *hdr;                   /* MC_HDR_MAX per request */
	uint32_t *req_item;             /* request -> item of the flush */
	struct mc_rx rx;                /* requests of the job and their answers */
};

struct mc_store {
	struct kv_store base;           /* first: kv.c sees only this */
	memcached_st *router;           /* all servers: maps a key to its primary */
	struct mc_server *sv;
	unsigned nsv, replicas, batch, retries, retry_ms, connect_ms, io_ms;
	bool binary;
	int distribution;               /* enum fm_mc_distribution */
	unsigned shard;
	/* The lists before the last changes (kv_set_servers), newest first:
	 * pages not yet rewritten since are read and deleted there too. */
	struct mc_store *prev;
	/* one flush: per item tallies and keys */
	uint8_t *it_ok, *it_full, *it_err, *it_miss;
	char (*keys)[KV_MEMCACHED_KEY_LEN + 1];
	bool ready[MC_MAX_SERVERS];     /* one flush: mc_sv_ready, asked once per server */
	/* one multi-get round: items grouped by server */
	uint32_t *mg_item;
	const char **mg_keys;
	size_t *mg_lens;
	struct pollfd *pfd;
	uint32_t *pfd_sv;
	struct kv_memcached_info info;
};

static inline struct mc_store *to_mc(struct kv_store *kv)
{
	return (struct mc_store *)kv;
}

/* The i-th server of a key: its primary, then the ones after it. */
static inline unsigned route(const struct mc_store *ms, const char *key, unsigned i)
{
	uint32_t p = memcached_generate_hash(ms->router, key, KV_MEMCACHED_KEY_LEN);

	return (p + i) % ms->nsv;
}

static inline bool mc_sv_usable(const struct mc_server *sv, uint64_t now)
{
	return now >= sv->down_until;
}

/* Whether requests may go to sv now, without ever waiting io_timeout_ms
 * for a server that is down: 1 yes, 0 not now (inside its down window, or
 * its probe is not answered yet), -1 it failed just now (its probe timed
 * out or was refused; the window doubles). A server that is up is ready;
 * one whose window passed is probed first ("version" on a fresh
 * connection, MC_PROBE_WAIT_MS waited at most; a later call looks for the
 * answer), so a stopped server costs each window one short probe instead
 * of io_timeout_ms per request. */
int mc_sv_ready(struct mc_store *ms, struct mc_server *sv, uint64_t now);
/* The store gave up on sv: more than store.memcached.retries failures in a
 * row. A read that needs only such servers fails (-EIO) instead of waiting. */
static inline bool mc_sv_given_up(const struct mc_store *ms, const struct mc_server *sv)
{
	return sv->down && sv->fails > ms->retries;
}

/* ---- mc_server.c ---- */
/* Close our write connection and drop what it had received. */
void mc_sv_close_write(struct mc_server *sv);
/* Free the libmemcached handle (reads and deletes), if any. */
void mc_sv_handle_free(struct mc_server *sv);
/* Build the libmemcached handle with the store's timeouts. 0 or -errno. */
int mc_sv_handle_new(struct mc_store *ms, struct mc_server *sv);
/* Ready the libmemcached handle of a server; 0 or -EIO. */
int mc_sv_prepare(struct mc_store *ms, struct mc_server *sv);
/* The server failed (`what`, because `why`): it is skipped for a down
 * window that doubles up to MC_DOWN_MAX_MS, its handles are rebuilt before
 * the next use, and the first failure of a run is logged. */
void mc_sv_failed(struct mc_store *ms, struct mc_server *sv, const char *what,
		      const char *why);
/* The server answered: end its down window, log a recovery. */
void mc_sv_answered(struct mc_store *ms, struct mc_server *sv);

/* libmemcached answers that mean the server did not (reliably) answer. */
int mc_sv_lm_error(struct mc_store *ms, struct mc_server *sv, const char *what,
		       memcached_return_t rc);
/* Open our own non-blocking write connection (bounded by connect_ms).
 * 0 or -errno. */
int mc_sv_connect_write(struct mc_store *ms, struct mc_server *sv);

#endif
