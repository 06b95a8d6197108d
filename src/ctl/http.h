/* ctl/http: the metrics port's request parsing, as a pure function (the
 * fuzz target and tests call it without a socket). */
#ifndef FM_HTTP_H
#define FM_HTTP_H

#include <stddef.h>

enum http_verdict {
	HTTP_INCOMPLETE,    /* no complete request yet: read more */
	HTTP_METRICS,       /* GET /metrics or GET / : serve the metrics */
	HTTP_HEALTHZ,       /* GET /healthz: 200 "ok" or 503 with the reason */
	HTTP_NOT_FOUND,     /* a well-formed GET of anything else: 404 */
	HTTP_BAD_REQUEST,   /* not a GET request line: 400, then close */
	HTTP_TOO_LONG,      /* max bytes and still no end of headers: close */
};

/* Classify the len bytes (not NUL-terminated; may hold NULs) a metrics
 * client sent so far, given that at most max bytes are buffered. Never
 * reads past in[len - 1]. Thread-safe. */
enum http_verdict http_classify(const char *in, size_t len, size_t max);

#endif
