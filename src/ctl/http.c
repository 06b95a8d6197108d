#include "ctl/http.h"

#include <string.h>

/* Match "TARGET" followed by a space, or by '?' (a query string). */
static int target_is(const char *t, size_t tlen, const char *want)
{
	size_t n = strlen(want);

	return tlen >= n + 1 && memcmp(t, want, n) == 0 && (t[n] == ' ' || t[n] == '?');
}

enum http_verdict http_classify(const char *in, size_t len, size_t max)
{
	const char *eol = memchr(in, '\n', len);
	size_t line;

	/* The request line is judged as soon as it is complete, so a client
	 * that trickles headers it will never finish is not served later. */
	if (eol) {
		line = (size_t)(eol - in);
		if (line < 4 || memcmp(in, "GET ", 4) != 0 || !memmem(in, line, " HTTP/", 6))
			return HTTP_BAD_REQUEST;
	} else if (len >= 4 && memcmp(in, "GET ", 4) != 0) {
		return HTTP_BAD_REQUEST;
	}
	if (!memmem(in, len, "\r\n\r\n", 4) && !memmem(in, len, "\n\n", 2))
		return len >= max ? HTTP_TOO_LONG : HTTP_INCOMPLETE;
	line = (size_t)(eol - in);
	if (target_is(in + 4, line - 4, "/metrics") || target_is(in + 4, line - 4, "/"))
		return HTTP_METRICS;
	if (target_is(in + 4, line - 4, "/healthz"))
		return HTTP_HEALTHZ;
	return HTTP_NOT_FOUND;
}
