/* ctl/ctl_conn: control connections (fluidmemctl's line protocol) and
 * metrics scrapes over HTTP, served from the daemon's epoll loop. */
#include "ctl/daemon_priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "ctl/json_out.h"
#include "ctl/http.h"

void ctl_conn_free(struct daemon *d, struct ctl_conn *c)
{
	LIST_REMOVE(c, link);
	if (c->http && c->accepted_ns == 0)
		d->nmetrics_doomed--;
	if (c->http)
		d->nmetrics_conns--;
	else
		d->nctl_conns--;
	epoll_ctl(d->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	sb_free(&c->out);
	free(c);
}

void ctl_conn_flush(struct daemon *d, struct ctl_conn *c)
{
	while (c->out_off < c->out.len) {
		ssize_t n = send(c->fd, c->out.s + c->out_off, c->out.len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EAGAIN) {
				struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT,
							  .data.u64 = tagged(TAG_CTL_CONN, c) };
				epoll_ctl(d->epfd, EPOLL_CTL_MOD, c->fd, &ev);
				return;
			}
			ctl_conn_free(d, c);
			return;
		}
		c->out_off += (size_t)n;
	}
	c->out.len = c->out_off = 0;
	if (c->closing) {
		ctl_conn_free(d, c);
		return;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tagged(TAG_CTL_CONN, c) };
	epoll_ctl(d->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* One HTTP/1.0-style exchange: GET /metrics or /healthz, then close. */
static void http_request(struct daemon *d, struct ctl_conn *c, enum http_verdict v)
{
	struct strbuf body = { 0 };
	const char *status = "200 OK", *ctype = "text/plain; version=0.0.4; charset=utf-8";

	if (v == HTTP_BAD_REQUEST) {
		status = "400 Bad Request";
		ctype = "text/plain";
		sb_printf(&body, "fluidmemd serves GET /metrics and GET /healthz\n");
	} else if (v == HTTP_HEALTHZ) {
		ctype = "text/plain";
		if (ctl_health_text(d, &body) < 0)
			status = "503 Service Unavailable";
	} else if (v != HTTP_METRICS) {
		status = "404 Not Found";
		ctype = "text/plain";
		sb_printf(&body, "fluidmemd serves GET /metrics and GET /healthz\n");
	} else if (ctl_metrics_text(d, &body) < 0 || body.oom) {
		sb_free(&body);
		status = "503 Service Unavailable";
		ctype = "text/plain";
		sb_printf(&body, "a shard did not answer\n");
	}
	sb_printf(&c->out, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			   "Connection: close\r\n\r\n%s",
		  status, ctype, body.len, body.s ? body.s : "");
	sb_free(&body);
	c->closing = true;
}

void ctl_conn_readable(struct daemon *d, struct ctl_conn *c)
{
	ssize_t n = recv(c->fd, c->in + c->in_len, CTL_MAX_REQUEST - c->in_len, MSG_DONTWAIT);
	char *nl;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		ctl_conn_free(d, c);
		return;
	}
	c->in_len += (size_t)n;
	c->in[c->in_len] = '\0';
	if (c->http) {
		enum http_verdict v = c->closing ? HTTP_INCOMPLETE
						 : http_classify(c->in, c->in_len, CTL_MAX_REQUEST);

		if (v == HTTP_INCOMPLETE)
			return;
		if (v == HTTP_TOO_LONG) {
			ctl_conn_free(d, c);   /* no request fits: not a scraper */
			return;
		}
		http_request(d, c, v);
		if (c->out.len > c->out_off)
			ctl_conn_flush(d, c);
		return;
	}
	while ((nl = memchr(c->in, '\n', c->in_len)) != NULL) {
		size_t used = (size_t)(nl - c->in) + 1;

		*nl = '\0';
		if (nl > c->in && nl[-1] == '\r')
			nl[-1] = '\0';
		if (ctl_execute(d, c->in, &c->out) == CTL_SHUTDOWN)
			d->stopping = true;
		memmove(c->in, c->in + used, c->in_len - used);
		c->in_len -= used;
		c->in[c->in_len] = '\0';
	}
	if (c->in_len == CTL_MAX_REQUEST) {
		cj_fail(&c->out, "request longer than %d bytes", CTL_MAX_REQUEST);
		c->closing = true;
	}
	if (c->out.len - c->out_off > CTL_MAX_REPLY_BUFFER || c->out.oom) {
		/* A reader this slow would make us buffer without bound. */
		FM_WARN("control client is not reading its replies; cut off");
		ctl_conn_free(d, c);
		return;
	}
	if (c->out.len > c->out_off)
		ctl_conn_flush(d, c);
}

/* The oldest metrics connection not yet doomed, or NULL. */
static struct ctl_conn *oldest_metrics_conn(struct daemon *d)
{
	struct ctl_conn *old = NULL, *c;

	LIST_FOREACH(c, &d->ctl_conns, link)
		if (c->http && c->accepted_ns && (!old || c->accepted_ns < old->accepted_ns))
			old = c;
	return old;
}

/* Cut off metrics connections whose request is late: an idle or
 * half-sent request must not hold a descriptor. */
void ctl_sweep_metrics_conns(struct daemon *d, uint64_t now)
{
	uint64_t limit = (uint64_t)d->cfg.metrics_timeout_ms * 1000000ull;
	struct ctl_conn *c = LIST_FIRST(&d->ctl_conns), *next;

	for (; c; c = next) {
		next = LIST_NEXT(c, link);
		if (c->http && (c->accepted_ns == 0 || now - c->accepted_ns >= limit))
			ctl_conn_free(d, c);
	}
}

void ctl_accept(struct daemon *d, bool http)
{
	for (;;) {
		int fd = daemon_accept_one(d, http ? d->metrics_fd : d->ctl_fd);
		struct ucred cred;
		struct ctl_conn *c;
		struct epoll_event ev = { .events = EPOLLIN };

		if (fd < 0)
			return;
		/* Metrics are read-only and bound to loopback; the control
		 * socket can stop us, so its peer is checked. */
		if (!http && (!daemon_peer_allowed(d, fd, &cred, true) || d->nctl_conns >= d->cfg.ctl_max_conns)) {
			static const char denied[] =
				"{\"v\":1,\"ok\":false,\"error\":\"permission denied\"}\n";
			static const char busy[] =
				"{\"v\":1,\"ok\":false,\"error\":\"too many control connections\"}\n";
			bool is_busy = d->nctl_conns >= d->cfg.ctl_max_conns;

			d->conns_refused++;
			fm_log_ratelimited(FM_LOG_WARN, "control connection refused: %s",
					   is_busy ? "control.max_connections reached" : "permission denied");
			if (send(fd, is_busy ? busy : denied, (is_busy ? sizeof(busy) : sizeof(denied)) - 1,
				 MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
				/* the peer is refused either way */
			}
			close(fd);
			continue;
		}
		/* A scraper sends one request and goes; when the limit is
		 * reached the oldest connection is the one most likely idle. */
		if (http && d->nmetrics_conns - d->nmetrics_doomed >= d->cfg.metrics_max_conns) {
			struct ctl_conn *old = oldest_metrics_conn(d);

			/* Freed by the sweep after this epoll batch: the batch
			 * may still hold an event for it. */
			d->conns_refused++;
			if (old) {
				old->accepted_ns = 0;
				d->nmetrics_doomed++;
			}
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->http = http;
		c->accepted_ns = fm_now_ns();
		LIST_INSERT_HEAD(&d->ctl_conns, c, link);
		if (http)
			d->nmetrics_conns++;
		else
			d->nctl_conns++;
		ev.data.u64 = tagged(TAG_CTL_CONN, c);
		if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
			ctl_conn_free(d, c);
	}
}
