/* kv/mc_wire: memcached.c's pipelined page writes on the wire: the request
 * headers it sends and the parser of the answers, over a receive buffer: no
 * socket, no store. memcached.c owns one
 * per server connection; tests/fuzz/fuzz_mc_{binary,ascii}.c feed it
 * arbitrary server bytes. Internal to kv/. */
#ifndef FM_KV_MC_WIRE_H
#define FM_KV_MC_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv/kv.h"   /* KV_MEMCACHED_KEY_LEN */

#define MC_RBUF 4096            /* answers are 24 bytes (binary) or a line */
#define MC_LINE_MAX 512         /* longest ASCII answer line we accept */
#define MC_HDR_MAX 80           /* one request's header bytes; ASCII needs 52 */

/* memcached binary protocol (protocol_binary.h in memcached's tree). */
#define BIN_REQ 0x80
#define BIN_RES 0x81
#define BIN_OP_SET 0x01
#define BIN_OP_TOUCH 0x1c
#define MC_BIN_OP_VERSION 0x0b
#define BIN_HDR 24
#define BIN_EXTRAS_SET 8
#define BIN_EXTRAS_TOUCH 4
#define BIN_ST_OK 0x0000
#define BIN_ST_ENOENT 0x0001
#define BIN_ST_ENOMEM 0x0082

_Static_assert(BIN_HDR + BIN_EXTRAS_SET + KV_MEMCACHED_KEY_LEN <= MC_HDR_MAX, "header room");

/* What follows an ASCII SET's page. */
extern const char mc_crlf[2];

/* Write into h the header of request q: a SET of one FM_PAGE_SIZE page
 * (touch false) or a TOUCH with exptime 0 (touch true) of `key`
 * (KV_MEMCACHED_KEY_LEN characters). Returns its length (<= MC_HDR_MAX). A
 * binary request carries q as its opaque, echoed in the answer; an ASCII
 * SET is followed on the wire by the page and mc_crlf, a binary one by the
 * page. */
size_t mc_req_header(uint8_t h[MC_HDR_MAX], bool binary, bool touch, uint32_t q, const char *key);

/* The answers one job (a flush of SETs and TOUCHes) waits for on one
 * connection. Binary answers carry the request index as opaque and may come
 * in any order; ASCII answers come in request order. */
struct mc_rx {
	const char *name;         /* the server, for messages */
	bool binary;              /* binary protocol, else ASCII */
	uint32_t nreq, nresp;     /* requests of the job, answers parsed so far */
	uint8_t *req_touch;       /* [nreq]: request is a TOUCH (else a SET) */
	uint8_t *req_done;        /* [nreq]: request answered */
	uint8_t rbuf[MC_RBUF];    /* received, not parsed yet */
	size_t rlen;
	size_t skip;              /* binary: body bytes still to drop */
};

/* Called once per answer: request q (< nreq, not answered before) got res:
 * 0, -ENOSPC (a SET refused for lack of memory), -ENOENT (a TOUCH of a
 * missing key) or -EIO (any other refusal). */
typedef void mc_rx_answer_fn(void *ctx, uint32_t q, int res);

/* Parse the complete answers in rx->rbuf[0..rlen), calling answer for each,
 * marking it done and counting it in nresp; stops once nresp == nreq. The
 * unparsed tail moves to the front of rbuf: while answers are missing it is
 * shorter than one (binary: < 24 bytes; ASCII: at most MC_LINE_MAX), so
 * the buffer always has room for the next receive. The answers do not
 * depend on how the stream was split into receives.
 * Returns 0, or -EPROTO on bytes that are not an answer to this job: an
 * answer to no request or a second one, a wrong opcode, an ASCII line that
 * is not a storage or touch answer or has more than MC_LINE_MAX bytes before
 * its newline. rx is then out of step: close the connection.
 * Not thread-safe. */
int mc_rx_parse(struct mc_rx *rx, mc_rx_answer_fn *answer, void *ctx);

#endif
