/* The body of fuzz_mc_binary.c and fuzz_mc_ascii.c: a memcached server's
 * answers to one pipelined job, fed to kv/mc_wire's parser the way
 * memcached.c's job_recv does (receive into the buffer's free room, parse,
 * stop at the last answer or a protocol error).
 *
 * Input: byte 0 = requests in the job - 1; byte 1 = which are TOUCHes (bit
 * q % 8); byte 2 = bytes per receive (0: as many as fit); the rest is what
 * the server sends.
 *
 * Checked beyond memory safety: each request is answered at most once, with
 * a result its kind allows, ASCII answers in order; the buffer always has
 * room while answers are missing; and the answers do not depend on how the
 * stream was split into receives (the same stream is fed a second time in
 * receives as large as fit). */
#ifndef FM_FUZZ_MC_H
#define FM_FUZZ_MC_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/mc_wire.h"

#define FUZZ_MC_MAX_REQ 256

struct fuzz_mc_run {
	struct mc_rx rx;
	uint32_t nanswers;
	uint32_t q[FUZZ_MC_MAX_REQ];
	int res[FUZZ_MC_MAX_REQ];
	int rc;
};

static void fuzz_mc_fail(const char *what)
{
	fprintf(stderr, "fuzz_mc: %s\n", what);
	abort();
}

static void fuzz_mc_answer(void *ctx, uint32_t q, int res)
{
	struct fuzz_mc_run *r = ctx;
	bool touch;

	if (q >= r->rx.nreq || r->rx.req_done[q] || r->nanswers >= r->rx.nreq)
		fuzz_mc_fail("an answer to no request, or a second one");
	if (!r->rx.binary && q != r->nanswers)
		fuzz_mc_fail("an ASCII answer out of order");
	touch = r->rx.req_touch[q];
	if (res != 0 && res != -EIO && res != (touch ? -ENOENT : -ENOSPC))
		fuzz_mc_fail("a result this request cannot have");
	r->q[r->nanswers] = q;
	r->res[r->nanswers] = res;
	r->nanswers++;
}

/* Feed stream to a fresh job of nreq requests, chunk bytes per receive. */
static void fuzz_mc_feed(struct fuzz_mc_run *r, bool binary, uint32_t nreq, uint8_t touch_bits,
			 size_t chunk, const uint8_t *stream, size_t len)
{
	memset(r, 0, sizeof(*r));
	r->rx.name = "fuzz";
	r->rx.binary = binary;
	r->rx.nreq = nreq;
	/* Exactly nreq bytes each, so ASan sees any index past the job. */
	r->rx.req_touch = malloc(nreq);
	r->rx.req_done = calloc(nreq, 1);
	if (!r->rx.req_touch || !r->rx.req_done)
		abort();
	for (uint32_t q = 0; q < nreq; q++)
		r->rx.req_touch[q] = (touch_bits >> (q % 8)) & 1;

	while (len && r->rx.nresp < nreq) {
		size_t room = MC_RBUF - r->rx.rlen, n = chunk < room ? chunk : room;

		if (room == 0)
			fuzz_mc_fail("the receive buffer is full while answers are missing");
		n = n < len ? n : len;
		memcpy(r->rx.rbuf + r->rx.rlen, stream, n);
		r->rx.rlen += n;
		stream += n;
		len -= n;
		r->rc = mc_rx_parse(&r->rx, fuzz_mc_answer, r);
		if (r->rx.nresp != r->nanswers || r->rx.nresp > nreq || r->rx.rlen > MC_RBUF)
			fuzz_mc_fail("the answer count or the buffer length is off");
		if (r->rc < 0) {
			if (r->rc != -EPROTO)
				fuzz_mc_fail("an error other than -EPROTO");
			break;
		}
		if (r->rx.nresp < nreq &&
		    r->rx.rlen > (binary ? 23 : MC_LINE_MAX))
			fuzz_mc_fail("a tail longer than an incomplete answer");
	}
}

static int fuzz_mc_one(bool binary, const uint8_t *data, size_t size)
{
	static struct fuzz_mc_run a, b;   /* 4 KiB buffers each: not on the stack */
	uint32_t nreq;
	size_t chunk;

	if (size < 3)
		return 0;
	nreq = 1u + data[0];
	chunk = data[2] ? data[2] : MC_RBUF;
	fuzz_mc_feed(&a, binary, nreq, data[1], chunk, data + 3, size - 3);
	fuzz_mc_feed(&b, binary, nreq, data[1], MC_RBUF, data + 3, size - 3);
	if (a.nanswers != b.nanswers || (a.rc < 0) != (b.rc < 0) ||
	    memcmp(a.q, b.q, a.nanswers * sizeof(a.q[0])) ||
	    memcmp(a.res, b.res, a.nanswers * sizeof(a.res[0])))
		fuzz_mc_fail("the answers depend on how the stream was split into receives");
	free(a.rx.req_touch);
	free(a.rx.req_done);
	free(b.rx.req_touch);
	free(b.rx.req_done);
	return 0;
}

#endif
