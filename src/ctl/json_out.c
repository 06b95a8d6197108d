/* ctl/json_out: jansson values for control replies. */
#include "ctl/json_out.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs,
 * no surrogates, nothing above U+10FFFF), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t n;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)   /* also stops at the NUL */
			return 0;
	return n;
}

json_t *cj_str(const char *s)
{
	static const char repl[] = "\xef\xbf\xbd";   /* U+FFFD */
	const unsigned char *p = (const unsigned char *)s;
	size_t len = strlen(s), o = 0;
	json_t *j;
	char *buf;

	/* The common case: already valid, no copy. */
	for (size_t n; *p && (n = utf8_len(p)); p += n)
		;
	if (!*p)
		return json_stringn(s, len);
	/* Each bad byte grows to 3. */
	buf = malloc(len * 3 + 1);
	if (!buf)
		return NULL;
	for (p = (const unsigned char *)s; *p;) {
		size_t n = utf8_len(p);

		if (n == 0) {
			memcpy(buf + o, repl, 3);
			o += 3;
			p++;
		} else {
			memcpy(buf + o, p, n);
			o += n;
			p += n;
		}
	}
	j = json_stringn(buf, o);
	free(buf);
	return j;
}

json_t *cj_u64(uint64_t v)
{
	return json_integer(v > INT64_MAX ? INT64_MAX : (json_int_t)v);
}

json_t *cj_real(double v, int decimals)
{
	double scale = pow(10.0, decimals);

	if (!isfinite(v))
		return json_real(0.0);
	return json_real(round(v * scale) / scale);
}

json_t *cj_ok(void)
{
	return json_pack("{s:i,s:b}", "v", 1, "ok", 1);
}

void cj_reply(struct strbuf *out, json_t *obj)
{
	/* Rounded reals print short with %.17g only when they are exact, so
	 * ask for fewer digits: 15 keep every value we round to 4 places. */
	char *s = obj ? json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;

	if (!s)
		out->oom = true;
	else
		sb_printf(out, "%s\n", s);
	free(s);
	json_decref(obj);
}

void cj_fail(struct strbuf *out, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cj_reply(out, json_pack("{s:i,s:b,s:o}", "v", 1, "ok", 0, "error", cj_str(msg)));
}
