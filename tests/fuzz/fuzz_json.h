/* A strict JSON (RFC 8259) validator for fuzz targets that check the
 * daemon's replies: one value, nothing after it, strings without raw
 * control characters, numbers in JSON syntax (no nan, inf, leading zeros or
 * bare dots). Bytes >= 0x80 inside strings are checked as UTF-8 only when
 * utf8 is set. Header-only; every function is static. */
#ifndef FM_FUZZ_JSON_H
#define FM_FUZZ_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FUZZ_JSON_DEPTH 64

struct fuzz_json {
	const uint8_t *p, *end;
	bool utf8;
	const char *why;     /* the first error, for the crash message */
};

static bool fj_fail(struct fuzz_json *j, const char *why)
{
	if (!j->why)
		j->why = why;
	return false;
}

static int fj_peek(const struct fuzz_json *j)
{
	return j->p < j->end ? *j->p : -1;
}

static void fj_ws(struct fuzz_json *j)
{
	while (fj_peek(j) == ' ' || fj_peek(j) == '\t' || fj_peek(j) == '\n' || fj_peek(j) == '\r')
		j->p++;
}

static bool fj_lit(struct fuzz_json *j, const char *lit)
{
	for (; *lit; lit++, j->p++)
		if (fj_peek(j) != (uint8_t)*lit)
			return fj_fail(j, "bad literal");
	return true;
}

static bool fj_digits(struct fuzz_json *j)
{
	if (fj_peek(j) < '0' || fj_peek(j) > '9')
		return fj_fail(j, "number: digit expected");
	while (fj_peek(j) >= '0' && fj_peek(j) <= '9')
		j->p++;
	return true;
}

static bool fj_number(struct fuzz_json *j)
{
	if (fj_peek(j) == '-')
		j->p++;
	if (fj_peek(j) == '0') {
		j->p++;
		if (fj_peek(j) >= '0' && fj_peek(j) <= '9')
			return fj_fail(j, "number: leading zero");
	} else if (!fj_digits(j)) {
		return false;
	}
	if (fj_peek(j) == '.') {
		j->p++;
		if (!fj_digits(j))
			return false;
	}
	if (fj_peek(j) == 'e' || fj_peek(j) == 'E') {
		j->p++;
		if (fj_peek(j) == '+' || fj_peek(j) == '-')
			j->p++;
		if (!fj_digits(j))
			return false;
	}
	return true;
}

/* One UTF-8 sequence: shortest form, no surrogates, at most U+10FFFF. */
static bool fj_utf8(struct fuzz_json *j)
{
	uint8_t c = *j->p;
	uint32_t cp, min;
	int n;

	if (c >= 0xc2 && c <= 0xdf)
		n = 1, cp = c & 0x1f, min = 0x80;
	else if (c >= 0xe0 && c <= 0xef)
		n = 2, cp = c & 0x0f, min = 0x800;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 3, cp = c & 0x07, min = 0x10000;
	else
		return fj_fail(j, "string: invalid UTF-8 lead byte");
	j->p++;
	for (int i = 0; i < n; i++, j->p++) {
		if (fj_peek(j) < 0 || (fj_peek(j) & 0xc0) != 0x80)
			return fj_fail(j, "string: truncated UTF-8 sequence");
		cp = cp << 6 | (*j->p & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return fj_fail(j, "string: overlong UTF-8, surrogate or beyond U+10FFFF");
	return true;
}

static bool fj_string(struct fuzz_json *j)
{
	j->p++;   /* the opening quote */
	for (;;) {
		int c = fj_peek(j);

		if (c < 0)
			return fj_fail(j, "string: unterminated");
		if (c == '"') {
			j->p++;
			return true;
		}
		if (c < 0x20)
			return fj_fail(j, "string: raw control character");
		if (c == '\\') {
			j->p++;
			c = fj_peek(j);
			if (c == 'u') {
				j->p++;
				for (int i = 0; i < 4; i++, j->p++) {
					c = fj_peek(j);
					if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
					      (c >= 'A' && c <= 'F')))
						return fj_fail(j, "string: bad \\u escape");
				}
				continue;
			}
			if (c < 0 || !strchr("\"\\/bfnrt", c))
				return fj_fail(j, "string: bad escape");
			j->p++;
			continue;
		}
		if (c >= 0x80 && j->utf8) {
			if (!fj_utf8(j))
				return false;
			continue;
		}
		j->p++;
	}
}

static bool fj_value(struct fuzz_json *j, int depth);

static bool fj_members(struct fuzz_json *j, int depth, bool object)
{
	int close = object ? '}' : ']';

	j->p++;
	fj_ws(j);
	if (fj_peek(j) == close) {
		j->p++;
		return true;
	}
	for (;;) {
		if (object) {
			fj_ws(j);
			if (fj_peek(j) != '"')
				return fj_fail(j, "object: key expected");
			if (!fj_string(j))
				return false;
			fj_ws(j);
			if (fj_peek(j) != ':')
				return fj_fail(j, "object: ':' expected");
			j->p++;
		}
		if (!fj_value(j, depth + 1))
			return false;
		fj_ws(j);
		if (fj_peek(j) == close) {
			j->p++;
			return true;
		}
		if (fj_peek(j) != ',')
			return fj_fail(j, "',' or a closing bracket expected");
		j->p++;
	}
}

static bool fj_value(struct fuzz_json *j, int depth)
{
	if (depth > FUZZ_JSON_DEPTH)
		return fj_fail(j, "nested too deep");
	fj_ws(j);
	switch (fj_peek(j)) {
	case '{':
		return fj_members(j, depth, true);
	case '[':
		return fj_members(j, depth, false);
	case '"':
		return fj_string(j);
	case 't':
		return fj_lit(j, "true");
	case 'f':
		return fj_lit(j, "false");
	case 'n':
		return fj_lit(j, "null");
	default:
		return fj_number(j);
	}
}

/* true when [s, s+len) is exactly one JSON value (blanks around it allowed);
 * else false with the reason in *why. */
static bool fuzz_json_valid(const char *s, size_t len, bool utf8, const char **why)
{
	struct fuzz_json j = { (const uint8_t *)s, (const uint8_t *)s + len, utf8, NULL };
	bool ok = fj_value(&j, 0);

	fj_ws(&j);
	if (ok && j.p != j.end)
		ok = fj_fail(&j, "bytes after the value");
	*why = j.why;
	return ok;
}

#endif
