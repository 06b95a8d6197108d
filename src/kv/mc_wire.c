/* kv/mc_wire: request headers and the answer parser of memcached.c's
 * pipelined page writes (see mc_wire.h). */
#include "kv/mc_wire.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "base/log.h"

const char mc_crlf[2] = { '\r', '\n' };

size_t mc_req_header(uint8_t h[MC_HDR_MAX], bool binary, bool touch, uint32_t q, const char *key)
{
	if (touch && binary) {
		uint32_t body = BIN_EXTRAS_TOUCH + KV_MEMCACHED_KEY_LEN;

		memset(h, 0, BIN_HDR + BIN_EXTRAS_TOUCH);
		h[0] = BIN_REQ;
		h[1] = BIN_OP_TOUCH;
		h[3] = KV_MEMCACHED_KEY_LEN;
		h[4] = BIN_EXTRAS_TOUCH;
		h[11] = (uint8_t)body;
		memcpy(h + 12, &q, sizeof(q));
		memcpy(h + BIN_HDR + BIN_EXTRAS_TOUCH, key, KV_MEMCACHED_KEY_LEN);
		return BIN_HDR + BIN_EXTRAS_TOUCH + KV_MEMCACHED_KEY_LEN;
	}
	if (touch)
		return (size_t)snprintf((char *)h, MC_HDR_MAX, "touch %s 0\r\n", key);
	if (binary) {
		uint32_t body = BIN_EXTRAS_SET + KV_MEMCACHED_KEY_LEN + FM_PAGE_SIZE;

		memset(h, 0, BIN_HDR + BIN_EXTRAS_SET);
		h[0] = BIN_REQ;
		h[1] = BIN_OP_SET;
		h[2] = 0;
		h[3] = KV_MEMCACHED_KEY_LEN;
		h[4] = BIN_EXTRAS_SET;
		h[8] = (uint8_t)(body >> 24);
		h[9] = (uint8_t)(body >> 16);
		h[10] = (uint8_t)(body >> 8);
		h[11] = (uint8_t)body;
		memcpy(h + 12, &q, sizeof(q)); /* opaque: echoed back as sent */
		/* extras: flags 0, expiry 0 (never) */
		memcpy(h + BIN_HDR + BIN_EXTRAS_SET, key, KV_MEMCACHED_KEY_LEN);
		return BIN_HDR + BIN_EXTRAS_SET + KV_MEMCACHED_KEY_LEN;
	}
	return (size_t)snprintf((char *)h, MC_HDR_MAX, "set %s 0 0 %u\r\n", key, FM_PAGE_SIZE);
}

int mc_rx_parse(struct mc_rx *rx, mc_rx_answer_fn *answer, void *ctx)
{
	size_t pos = 0;

	for (;;) {
		if (rx->skip) {
			size_t n = FM_MIN(rx->skip, rx->rlen - pos);

			pos += n;
			rx->skip -= n;
			if (rx->skip)
				break;
		}
		if (rx->nresp == rx->nreq)
			break;
		if (rx->binary) {
			const uint8_t *h = rx->rbuf + pos;
			uint32_t q, body;
			uint16_t status;
			int res;

			if (rx->rlen - pos < BIN_HDR)
				break;
			memcpy(&q, h + 12, sizeof(q));
			status = (uint16_t)(h[6] << 8 | h[7]);
			body = (uint32_t)h[8] << 24 | (uint32_t)h[9] << 16 | (uint32_t)h[10] << 8 | h[11];
			if (h[0] != BIN_RES || q >= rx->nreq || rx->req_done[q] ||
			    h[1] != (rx->req_touch[q] ? BIN_OP_TOUCH : BIN_OP_SET))
				return -EPROTO;
			res = status == BIN_ST_OK ? 0 : -EIO;
			if (status == BIN_ST_ENOMEM && !rx->req_touch[q])
				res = -ENOSPC;
			else if (status == BIN_ST_ENOENT && rx->req_touch[q])
				res = -ENOENT;
			else if (res)
				fm_log_once(FM_LOG_ERROR, "kv/memcached: %s refused a %s with status "
					    "0x%04x", rx->name, rx->req_touch[q] ? "touch" : "page write",
					    status);
			answer(ctx, q, res);
			rx->req_done[q] = 1;
			rx->nresp++;
			pos += BIN_HDR;
			rx->skip = body;
		} else {
			const char *line = (const char *)rx->rbuf + pos;
			const char *nl = memchr(line, '\n', rx->rlen - pos);
			size_t len;
			int res;

			if (!nl) {
				if (rx->rlen - pos > MC_LINE_MAX)
					return -EPROTO;
				break;
			}
			len = (size_t)(nl - line) + 1;
			/* The same limit as on a line still waiting for its
			 * newline, or the verdict would depend on how TCP
			 * split the stream (found by fuzz_mc_ascii). */
			if (len - 1 > MC_LINE_MAX)
				return -EPROTO;
			if (rx->req_touch[rx->nresp]) {
				if (len >= 9 && !memcmp(line, "TOUCHED\r\n", 9))
					res = 0;
				else if (len >= 11 && !memcmp(line, "NOT_FOUND\r\n", 11))
					res = -ENOENT;
				else if (len >= 5 && (!memcmp(line, "ERROR", 5) ||
						      !memcmp(line, "SERVER_ERROR", FM_MIN(len, 12)) ||
						      !memcmp(line, "CLIENT_ERROR", FM_MIN(len, 12))))
					res = -EIO;
				else
					return -EPROTO;
			} else if (len >= 8 && !memcmp(line, "STORED\r\n", 8)) {
				res = 0;
			} else if (len >= 12 && !memcmp(line, "SERVER_ERROR", 12)) {
				res = memmem(line, len, "out of memory", 13) ? -ENOSPC : -EIO;
			} else if ((len >= 10 && !memcmp(line, "NOT_STORED", 10)) ||
				   (len >= 12 && !memcmp(line, "CLIENT_ERROR", 12)) ||
				   (len >= 5 && !memcmp(line, "ERROR", 5))) {
				res = -EIO;
			} else {
				return -EPROTO;
			}
			if (res == -EIO)
				fm_log_once(FM_LOG_ERROR, "kv/memcached: %s refused a request: %.*s",
					    rx->name, (int)(len > 2 ? len - 2 : len), line);
			answer(ctx, rx->nresp, res);
			rx->req_done[rx->nresp] = 1;
			rx->nresp++;
			pos += len;
		}
	}
	memmove(rx->rbuf, rx->rbuf + pos, rx->rlen - pos);
	rx->rlen -= pos;
	return 0;
}
