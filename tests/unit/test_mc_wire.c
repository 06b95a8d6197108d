/* kv/mc_wire: the parser of memcached's answers to pipelined page writes,
 * without a server: results per request, bodies skipped across receives,
 * and verdicts that do not depend on how the stream was split (a finding of
 * tests/fuzz/fuzz_mc_ascii.c). */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "kv/mc_wire.h"

#define MAXQ 16

struct job {
	struct mc_rx rx;
	uint8_t touch[MAXQ], done[MAXQ];
	int res[MAXQ];
	int answers;
};

static void on_answer(void *ctx, uint32_t q, int res)
{
	struct job *j = ctx;

	cr_assert_lt(q, j->rx.nreq);
	j->res[q] = res;
	j->answers++;
}

static void job_init(struct job *j, bool binary, uint32_t nreq, const char *touches)
{
	memset(j, 0, sizeof(*j));
	j->rx.name = "test";
	j->rx.binary = binary;
	j->rx.nreq = nreq;
	j->rx.req_touch = j->touch;
	j->rx.req_done = j->done;
	for (uint32_t q = 0; touches && touches[q]; q++)
		j->touch[q] = touches[q] == 't';
}

/* Receive len bytes in pieces of `piece`, parsing after each like job_recv.
 * Returns the first error, or 0. */
static int feed(struct job *j, const void *data, size_t len, size_t piece)
{
	const uint8_t *p = data;

	while (len && j->rx.nresp < j->rx.nreq) {
		size_t n = piece < len ? piece : len;
		int rc;

		cr_assert_leq(n, MC_RBUF - j->rx.rlen, "no room for the next receive");
		memcpy(j->rx.rbuf + j->rx.rlen, p, n);
		j->rx.rlen += n;
		p += n;
		len -= n;
		rc = mc_rx_parse(&j->rx, on_answer, j);
		if (rc)
			return rc;
	}
	return 0;
}

/* A binary response header: magic, opcode, status, body length, opaque. */
static size_t bin_answer(uint8_t *out, uint8_t op, uint16_t status, uint32_t q, const char *body)
{
	uint32_t blen = body ? (uint32_t)strlen(body) : 0;

	memset(out, 0, 24);
	out[0] = 0x81;
	out[1] = op;
	out[6] = (uint8_t)(status >> 8);
	out[7] = (uint8_t)status;
	out[8] = (uint8_t)(blen >> 24);
	out[9] = (uint8_t)(blen >> 16);
	out[10] = (uint8_t)(blen >> 8);
	out[11] = (uint8_t)blen;
	memcpy(out + 12, &q, sizeof(q));   /* echoed as sent: host order */
	if (blen)
		memcpy(out + 24, body, blen);
	return 24 + blen;
}

Test(mc_wire, binary_answers_in_any_order_with_bodies)
{
	uint8_t buf[512];
	size_t len = 0;
	struct job j;

	for (size_t piece = 1; piece <= sizeof(buf); piece = piece * 3 + 1) {
		job_init(&j, true, 4, "sstt");
		len = 0;
		len += bin_answer(buf + len, 0x1c, 0x0001, 3, "Not found");
		len += bin_answer(buf + len, 0x01, 0x0082, 1, "Out of memory");
		len += bin_answer(buf + len, 0x01, 0x0005, 0, "Too large.");
		len += bin_answer(buf + len, 0x1c, 0x0000, 2, NULL);
		cr_assert_eq(feed(&j, buf, len, piece), 0, "piece %zu", piece);
		cr_assert_eq(j.answers, 4);
		cr_expect_eq(j.res[0], -EIO);
		cr_expect_eq(j.res[1], -ENOSPC);
		cr_expect_eq(j.res[2], 0);
		cr_expect_eq(j.res[3], -ENOENT);
		cr_expect_eq(j.rx.rlen, 0, "a body was not skipped");
		cr_expect_eq(j.rx.skip, 0);
	}
}

Test(mc_wire, binary_answer_to_no_request_or_twice_is_eproto)
{
	uint8_t buf[64];
	struct job j;

	job_init(&j, true, 2, "ss");
	cr_expect_eq(feed(&j, buf, bin_answer(buf, 0x01, 0, 2, NULL), 64), -EPROTO);
	job_init(&j, true, 2, "ss");
	cr_expect_eq(feed(&j, buf, bin_answer(buf, 0x1c, 0, 0, NULL), 64), -EPROTO, "wrong opcode");
	job_init(&j, true, 2, "ss");
	bin_answer(buf, 0x01, 0, 1, NULL);
	bin_answer(buf + 24, 0x01, 0, 1, NULL);
	cr_expect_eq(feed(&j, buf, 48, 64), -EPROTO, "the same answer twice");
}

Test(mc_wire, ascii_answers_in_order)
{
	static const char stream[] = "STORED\r\nNOT_FOUND\r\nSERVER_ERROR out of memory storing "
				     "object\r\nTOUCHED\r\nNOT_STORED\r\n";
	struct job j;

	for (size_t piece = 1; piece <= sizeof(stream); piece++) {
		job_init(&j, false, 5, "ststs");
		cr_assert_eq(feed(&j, stream, strlen(stream), piece), 0, "piece %zu", piece);
		cr_assert_eq(j.answers, 5);
		cr_expect_eq(j.res[0], 0);
		cr_expect_eq(j.res[1], -ENOENT);
		cr_expect_eq(j.res[2], -ENOSPC);
		cr_expect_eq(j.res[3], 0);
		cr_expect_eq(j.res[4], -EIO);
	}
}

/* Regression: a line longer than MC_LINE_MAX was an error when it came in
 * two receives and a plain refusal when it came in one. */
Test(mc_wire, ascii_long_line_rejected_however_split)
{
	char line[MC_LINE_MAX + 16];
	struct job j;

	/* MC_LINE_MAX bytes before the newline: the longest line accepted. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "SERVER_ERROR ", 13);
	line[MC_LINE_MAX - 1] = '\r';
	line[MC_LINE_MAX] = '\n';
	for (size_t piece = 1; piece <= MC_LINE_MAX + 1; piece += MC_LINE_MAX / 4) {
		job_init(&j, false, 1, "s");
		cr_expect_eq(feed(&j, line, MC_LINE_MAX + 1, piece), 0, "piece %zu", piece);
		cr_expect_eq(j.answers, 1);
		cr_expect_eq(j.res[0], -EIO);
	}
	/* One byte more: out of step, whether split or whole. */
	line[MC_LINE_MAX - 1] = 'x';
	line[MC_LINE_MAX] = '\r';
	line[MC_LINE_MAX + 1] = '\n';
	for (size_t piece = 1; piece <= MC_LINE_MAX + 2; piece += MC_LINE_MAX / 4) {
		job_init(&j, false, 1, "s");
		cr_expect_eq(feed(&j, line, MC_LINE_MAX + 2, piece), -EPROTO, "piece %zu", piece);
		cr_expect_eq(j.answers, 0);
	}
	job_init(&j, false, 1, "s");
	cr_expect_eq(feed(&j, line, MC_LINE_MAX + 2, MC_LINE_MAX + 2), -EPROTO, "in one receive");
}
