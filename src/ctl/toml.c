#include "ctl/toml.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

enum name_kind { NAME_IMPLICIT, NAME_TABLE, NAME_VALUE };

/* A table or key already defined, to reject redefinitions. [a.b] defines a
 * implicitly: a later [a] is still allowed, `a = 1` is not. */
struct name {
	char *path;
	int line;
	enum name_kind kind;
};

struct parser {
	const char *name;                  /* file name for messages */
	const char *p, *end;
	int line;
	bool single;                       /* toml_parse_value: no line numbers */
	const struct toml_handler *h;
	void *ctx;
	char *err;
	size_t errlen;
	char table[TOML_PATH_MAX];         /* current [table], "" at the top */
	char path[TOML_PATH_MAX];          /* key or table being parsed, for messages */
	struct name *names;
	size_t nnames, capnames;
	/* Scratch for the current value: fixed, so pointers into it stay
	 * valid while an array is being filled. */
	struct toml_value items[TOML_MAX_ITEMS];
	size_t nitems;
	char str[TOML_MAX_STR];
	size_t nstr;
};

/* Format "name:line: path: reason" once; returns rc. */
static int __attribute__((format(printf, 4, 5)))
report(struct parser *P, int rc, int line, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (P->single)
		snprintf(P->err, P->errlen, "%s: %s%s%s", P->name, P->path, P->path[0] ? ": " : "",
			 why);
	else
		snprintf(P->err, P->errlen, "%s:%d: %s%s%s", P->name, line, P->path,
			 P->path[0] ? ": " : "", why);
	return rc;
}

#define fail(P, line, ...) report((P), -EINVAL, (line), __VA_ARGS__)

/* The byte i ahead, or -1 past the end. */
static int at(const struct parser *P, size_t i)
{
	return (size_t)(P->end - P->p) > i ? (unsigned char)P->p[i] : -1;
}

/* How the byte i ahead reads in a message. */
static const char *show(const struct parser *P, size_t i, char buf[static 16])
{
	int c = at(P, i);

	if (c < 0)
		return "end of input";
	if (c == '\n' || (c == '\r' && at(P, i + 1) == '\n'))
		return "end of line";
	if (c > 0x20 && c < 0x7f)
		snprintf(buf, 16, "'%c'", c);
	else
		snprintf(buf, 16, "byte 0x%02x", (unsigned)c);
	return buf;
}

static bool is_ctrl(int c)
{
	return (c < 0x20 && c != '\t') || c == 0x7f;
}

static bool is_bare(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

/* Length of the UTF-8 sequence at s, or 0 when it is malformed, overlong, a
 * surrogate or above U+10FFFF (TOML files must be valid UTF-8). */
static size_t utf8_len(const unsigned char *s, const unsigned char *end)
{
	static const uint32_t min_cp[5] = { 0, 0, 0x80, 0x800, 0x10000 };
	uint32_t cp;
	size_t n;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0)
		n = 2, cp = s[0] & 0x1f;
	else if ((s[0] & 0xf0) == 0xe0)
		n = 3, cp = s[0] & 0x0f;
	else if ((s[0] & 0xf8) == 0xf0)
		n = 4, cp = s[0] & 0x07;
	else
		return 0;
	if ((size_t)(end - s) < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min_cp[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* One character of a string or comment: its byte length, or 0 after
 * reporting why it is not allowed. */
static size_t text_char(struct parser *P, const char *what)
{
	int c = at(P, 0);
	size_t n;

	if (is_ctrl(c)) {
		fail(P, P->line, "control character 0x%02x in %s", (unsigned)c, what);
		return 0;
	}
	n = utf8_len((const unsigned char *)P->p, (const unsigned char *)P->end);
	if (!n)
		fail(P, P->line, "invalid UTF-8 in %s", what);
	return n;
}

static void skip_blank(struct parser *P)
{
	while (at(P, 0) == ' ' || at(P, 0) == '\t')
		P->p++;
}

/* At a newline (LF or CRLF): consume it. */
static bool newline(struct parser *P)
{
	int c = at(P, 0);

	if (c == '\n' || (c == '\r' && at(P, 1) == '\n')) {
		P->p += c == '\r' ? 2 : 1;
		P->line++;
		return true;
	}
	return false;
}

/* From '#' to the end of the line, which is left for the caller. */
static int comment(struct parser *P)
{
	P->p++;
	while (at(P, 0) >= 0 && at(P, 0) != '\n' && !(at(P, 0) == '\r' && at(P, 1) == '\n')) {
		size_t n = text_char(P, "comment");

		if (!n)
			return -EINVAL;
		P->p += n;
	}
	return 0;
}

/* Blanks, comments and newlines (between statements, inside arrays). */
static int skip_space(struct parser *P)
{
	for (;;) {
		skip_blank(P);
		if (at(P, 0) == '#' && comment(P))
			return -EINVAL;
		if (!newline(P))
			return 0;
	}
}

/* The rest of a line after a header or a value: blanks, a comment, then a
 * newline or the end. */
static int end_of_line(struct parser *P, const char *after)
{
	char buf[16];

	skip_blank(P);
	if (at(P, 0) == '#' && comment(P))
		return -EINVAL;
	if (at(P, 0) < 0 || newline(P))
		return 0;
	return fail(P, P->line, "unexpected %s after %s", show(P, 0, buf), after);
}

static int put_bytes(struct parser *P, const char *s, size_t n)
{
	if (P->nstr + n > sizeof(P->str))
		return fail(P, P->line, "strings over %d bytes are not supported",
			    TOML_MAX_STR - 1);
	memcpy(P->str + P->nstr, s, n);
	P->nstr += n;
	return 0;
}

static int hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* \uXXXX or \UXXXXXXXX, P->p just past the 'u' or 'U'. */
static int unicode_escape(struct parser *P, int digits)
{
	uint32_t cp = 0;
	char u[4];
	size_t n;

	for (int i = 0; i < digits; i++) {
		int d = hex_value(at(P, 0));

		if (d < 0)
			return fail(P, P->line, "\\%c needs %d hex digits", digits == 4 ? 'u' : 'U',
				    digits);
		cp = cp << 4 | (uint32_t)d;
		P->p++;
	}
	if (cp == 0)
		return fail(P, P->line, "\\u0000 is not allowed: strings are NUL-terminated");
	if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return fail(P, P->line, "U+%04X is not a Unicode scalar value", cp);
	if (cp < 0x80) {
		u[0] = (char)cp, n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | cp >> 6), n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | cp >> 12), n = 3;
	} else {
		u[0] = (char)(0xf0 | cp >> 18), n = 4;
	}
	for (size_t i = 1; i < n; i++)
		u[i] = (char)(0x80 | ((cp >> (6 * (n - 1 - i))) & 0x3f));
	return put_bytes(P, u, n);
}

static int escape(struct parser *P)
{
	static const char from[] = "btnfr\"\\", to[] = "\b\t\n\f\r\"\\";
	int c = at(P, 1);
	const char *e = c > 0 ? strchr(from, c) : NULL;
	char buf[16];

	if (c == 'u' || c == 'U') {
		P->p += 2;
		return unicode_escape(P, c == 'u' ? 4 : 8);
	}
	if (!e)
		return fail(P, P->line, "invalid escape: backslash followed by %s",
			    show(P, 1, buf));
	P->p += 2;
	return put_bytes(P, &to[e - from], 1);
}

/* "..." or '...': quote is the delimiter; only basic strings have escapes. */
static int parse_string(struct parser *P, struct toml_value *v, char quote)
{
	const char *kind = quote == '"' ? "string" : "literal string";
	size_t start = P->nstr;
	int rc;

	if (at(P, 1) == quote && at(P, 2) == quote)
		return fail(P, P->line, "multi-line strings are not supported");
	P->p++;
	for (;;) {
		int c = at(P, 0);
		size_t n;

		if (c == quote) {
			P->p++;
			break;
		}
		if (c < 0 || c == '\n' || (c == '\r' && at(P, 1) == '\n'))
			return fail(P, P->line, "unterminated %s", kind);
		if (c == '\\' && quote == '"') {
			rc = escape(P);
		} else {
			n = text_char(P, kind);
			if (!n)
				return -EINVAL;
			rc = put_bytes(P, P->p, n);
			P->p += n;
		}
		if (rc)
			return rc;
	}
	rc = put_bytes(P, "", 1);
	if (rc)
		return rc;
	v->type = TOML_STRING;
	v->s.ptr = P->str + start;
	v->s.len = P->nstr - 1 - start;
	return 0;
}

/* Integer token [s, e): decimal with optional sign, or 0x/0o/0b without;
 * `_` only between digits; must fit int64. */
static int parse_integer(struct parser *P, const char *s, const char *e, int64_t *out)
{
	const char *q = s;
	bool neg = false, digit = false;
	uint64_t mag = 0, limit;
	int base = 10;

	if (*q == '+' || *q == '-')
		neg = *q++ == '-';
	if (e - q >= 2 && q[0] == '0' && (q[1] == 'x' || q[1] == 'o' || q[1] == 'b')) {
		if (q != s)
			return fail(P, P->line, "a sign is not allowed on 0x, 0o or 0b integers");
		base = q[1] == 'x' ? 16 : q[1] == 'o' ? 8 : 2;
		q += 2;
	} else if (e - q > 1 && q[0] == '0') {
		return fail(P, P->line, "leading zeros are not allowed (octal is 0o...)");
	}
	limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; q < e; q++) {
		int d = hex_value(*q);

		if (*q == '_') {
			if (!digit)
				return fail(P, P->line, "'_' must be between digits");
			digit = false;
			continue;
		}
		if (d < 0 || d >= base)
			return fail(P, P->line, "invalid digit '%c' in a base-%d integer", *q,
				    base);
		if (mag > (limit - (uint64_t)d) / (uint64_t)base)
			return fail(P, P->line, "%.*s does not fit in a 64-bit integer",
				    (int)FM_MIN(e - s, 40), s);
		mag = mag * (uint64_t)base + (uint64_t)d;
		digit = true;
	}
	if (!digit)
		return fail(P, P->line, "%s",
			    e[-1] == '_' ? "'_' must be between digits" : "missing digits");
	/* Negate in unsigned: -(int64_t)mag overflows for INT64_MIN. */
	*out = neg ? (int64_t)(0 - mag) : (int64_t)mag;
	return 0;
}

static bool has(const char *s, const char *e, char c)
{
	return memchr(s, c, (size_t)(e - s)) != NULL;
}

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* An unsigned token [num, e) that TOML would read as a float. */
static bool looks_float(const char *num, const char *e)
{
	bool hex = e - num > 1 && num[0] == '0' && num[1] == 'x';

	if (e - num == 3 && (!memcmp(num, "inf", 3) || !memcmp(num, "nan", 3)))
		return true;
	return num < e && is_digit(*num) &&
	       (has(num, e, '.') || (!hex && (has(num, e, 'e') || has(num, e, 'E'))));
}

/* true, false or an integer. Other tokens that look like a value get a
 * specific reason: "floats are not supported" beats "invalid digit". */
static int parse_bare(struct parser *P, struct toml_value *v)
{
	const char *s = P->p, *e = s, *num;
	int len, rc;
	char buf[16];

	while (e < P->end && (is_bare(*e) || *e == '+' || *e == '.' || *e == ':'))
		e++;
	len = (int)(e - s);
	if (!len)
		return fail(P, P->line, "expected a value, found %s", show(P, 0, buf));
	num = s + (*s == '+' || *s == '-');

	if ((len == 4 && !memcmp(s, "true", 4)) || (len == 5 && !memcmp(s, "false", 5))) {
		v->type = TOML_BOOL;
		v->b = *s == 't';
	} else if (looks_float(num, e)) {
		return fail(P, P->line, "floats are not supported");
	} else if (num < e && ((*num >= 'a' && *num <= 'z') || (*num >= 'A' && *num <= 'Z'))) {
		return fail(P, P->line, "unquoted string %.*s: strings need quotes",
			    FM_MIN(len, 40), s);
	} else if (num < e && is_digit(*num) && (has(num, e, ':') || has(num, e, '-'))) {
		return fail(P, P->line, "dates and times are not supported");
	} else {
		rc = parse_integer(P, s, e, &v->i);
		if (rc)
			return rc;
		v->type = TOML_INT;
	}
	P->p = e;
	return 0;
}

static int parse_value(struct parser *P, struct toml_value *v, bool in_array);

static int parse_array(struct parser *P, struct toml_value *v)
{
	int line = P->line, rc;
	char buf[16];

	P->p++;
	for (;;) {
		rc = skip_space(P);
		if (rc)
			return rc;
		if (at(P, 0) < 0)
			return fail(P, line, "unterminated array");
		if (at(P, 0) == ']')
			break;
		if (P->nitems == TOML_MAX_ITEMS)
			return fail(P, P->line, "arrays of more than %d items are not supported",
				    TOML_MAX_ITEMS);
		rc = parse_value(P, &P->items[P->nitems], true);
		if (rc)
			return rc;
		P->nitems++;
		rc = skip_space(P);
		if (rc)
			return rc;
		if (at(P, 0) < 0)
			return fail(P, line, "unterminated array");
		if (at(P, 0) == ']')
			break;
		if (at(P, 0) != ',')
			return fail(P, P->line, "expected ',' or ']' in the array, found %s",
				    show(P, 0, buf));
		P->p++;
	}
	P->p++;
	v->type = TOML_ARRAY;
	v->a.items = P->items;
	v->a.n = P->nitems;
	return 0;
}

static int parse_value(struct parser *P, struct toml_value *v, bool in_array)
{
	v->line = P->line;
	switch (at(P, 0)) {
	case '"':
	case '\'':
		return parse_string(P, v, (char)at(P, 0));
	case '[':
		if (in_array)
			return fail(P, P->line, "nested arrays are not supported");
		return parse_array(P, v);
	case '{':
		return fail(P, P->line, "inline tables are not supported");
	}
	return parse_bare(P, v);
}

static struct name *find_name(struct parser *P, const char *path)
{
	for (size_t i = 0; i < P->nnames; i++)
		if (!strcmp(P->names[i].path, path))
			return &P->names[i];
	return NULL;
}

static int add_name(struct parser *P, const char *path, int line, enum name_kind kind)
{
	struct name *n;

	if (P->nnames == P->capnames) {
		size_t cap = P->capnames ? 2 * P->capnames : 32;

		n = realloc(P->names, cap * sizeof(*n));
		if (!n)
			return report(P, -ENOMEM, line, "out of memory");
		P->names = n;
		P->capnames = cap;
	}
	n = &P->names[P->nnames];
	n->path = strdup(path);
	if (!n->path)
		return report(P, -ENOMEM, line, "out of memory");
	n->line = line;
	n->kind = kind;
	P->nnames++;
	return 0;
}

static int define_table(struct parser *P, const char *path, int line)
{
	char prefix[TOML_PATH_MAX];
	struct name *n;
	int rc;

	/* Every parent must be (or become) a table, not a value. */
	for (const char *dot = strchr(path, '.'); dot; dot = strchr(dot + 1, '.')) {
		memcpy(prefix, path, (size_t)(dot - path));
		prefix[dot - path] = '\0';
		n = find_name(P, prefix);
		if (n && n->kind == NAME_VALUE)
			return fail(P, line, "%s is a key (line %d), not a table", prefix, n->line);
		if (!n && (rc = add_name(P, prefix, line, NAME_IMPLICIT)))
			return rc;
	}
	n = find_name(P, path);
	if (n && n->kind == NAME_TABLE)
		return fail(P, line, "duplicate table, first defined on line %d", n->line);
	if (n && n->kind == NAME_VALUE)
		return fail(P, line, "already defined as a key on line %d", n->line);
	if (n) {
		n->kind = NAME_TABLE;
		n->line = line;
		return 0;
	}
	return add_name(P, path, line, NAME_TABLE);
}

static int define_key(struct parser *P, const char *path, int line)
{
	struct name *n = find_name(P, path);

	if (n && n->kind == NAME_VALUE)
		return fail(P, line, "duplicate key, first set on line %d", n->line);
	if (n)
		return fail(P, line, "already defined as a table on line %d", n->line);
	return add_name(P, path, line, NAME_VALUE);
}

/* Append one bare key to path (with a '.' unless path is empty). */
static int parse_key(struct parser *P, char *path)
{
	const char *s = P->p;
	size_t len, plen = strlen(path);
	char buf[16];

	while (is_bare(at(P, 0)))
		P->p++;
	len = (size_t)(P->p - s);
	if (!len && (at(P, 0) == '"' || at(P, 0) == '\''))
		return fail(P, P->line, "quoted keys are not supported");
	if (!len)
		return fail(P, P->line, "expected a key, found %s", show(P, 0, buf));
	if (len > TOML_KEY_MAX)
		return fail(P, P->line, "keys longer than %d bytes are not supported",
			    TOML_KEY_MAX);
	if (plen + !!plen + len >= TOML_PATH_MAX)
		return fail(P, P->line, "dotted paths longer than %d bytes are not supported",
			    TOML_PATH_MAX - 1);
	if (plen)
		path[plen++] = '.';
	memcpy(path + plen, s, len);
	path[plen + len] = '\0';
	return 0;
}

static int parse_header(struct parser *P)
{
	char path[TOML_PATH_MAX] = "", buf[16];
	int line = P->line, rc;

	P->p++;
	if (at(P, 0) == '[')
		return fail(P, line, "arrays of tables ([[...]]) are not supported");
	for (;;) {
		skip_blank(P);
		rc = parse_key(P, path);
		if (rc)
			return rc;
		skip_blank(P);
		if (at(P, 0) == ']')
			break;
		if (at(P, 0) != '.')
			return fail(P, line, "expected '.' or ']' in the table header, found %s",
				    show(P, 0, buf));
		P->p++;
	}
	P->p++;
	memcpy(P->path, path, sizeof(path));
	rc = end_of_line(P, "the table header");
	if (!rc)
		rc = define_table(P, path, line);
	if (!rc && P->h->table) {
		char why[200] = "";

		rc = P->h->table(P->ctx, path, line, why, sizeof(why));
		if (rc)
			return report(P, rc, line, "%s", why[0] ? why : strerror(-rc));
	}
	memcpy(P->table, path, sizeof(path));
	P->path[0] = '\0';
	return rc;
}

static int call_value(struct parser *P, const struct toml_value *v)
{
	char why[200] = "";
	int rc;

	if (!P->h->value)
		return 0;
	rc = P->h->value(P->ctx, P->path, v, why, sizeof(why));
	if (rc)
		return report(P, rc, v->line, "%s", why[0] ? why : strerror(-rc));
	return 0;
}

static int parse_keyval(struct parser *P)
{
	struct toml_value v;
	int line = P->line, rc;
	char buf[16], path[TOML_PATH_MAX];

	memcpy(path, P->table, sizeof(path));
	rc = parse_key(P, path);
	if (rc)
		return rc;
	memcpy(P->path, path, sizeof(path));
	skip_blank(P);
	if (at(P, 0) == '.')
		return fail(P, line, "dotted keys are not supported: use a [table] header");
	if (at(P, 0) != '=')
		return fail(P, line, "expected '=' after the key, found %s", show(P, 0, buf));
	P->p++;
	skip_blank(P);
	rc = define_key(P, P->path, line);
	if (rc)
		return rc;
	P->nitems = P->nstr = 0;
	rc = parse_value(P, &v, false);
	if (!rc)
		rc = end_of_line(P, "the value");
	if (!rc)
		rc = call_value(P, &v);
	P->path[0] = '\0';
	return rc;
}

int toml_parse(const char *name, const char *text, size_t len, const struct toml_handler *h,
	       void *ctx, char *err, size_t errlen)
{
	/* ~13 KiB, on the stack: config parsing runs before any worker exists. */
	struct parser P = {
		.name = name, .p = text, .end = text + len, .line = 1,
		.h = h, .ctx = ctx, .err = err, .errlen = errlen,
	};
	int rc = 0;

	if (errlen)
		err[0] = '\0';
	while (!rc) {
		rc = skip_space(&P);
		if (rc || at(&P, 0) < 0)
			break;
		rc = at(&P, 0) == '[' ? parse_header(&P) : parse_keyval(&P);
	}
	for (size_t i = 0; i < P.nnames; i++)
		free(P.names[i].path);
	free(P.names);
	return rc;
}

int toml_parse_value(const char *name, const char *path, const char *text,
		     const struct toml_handler *h, void *ctx, char *err, size_t errlen)
{
	struct parser P = {
		.name = name, .p = text, .end = text + strlen(text), .line = 1, .single = true,
		.h = h, .ctx = ctx, .err = err, .errlen = errlen,
	};
	struct toml_value v;
	char buf[16];
	int rc;

	if (errlen)
		err[0] = '\0';
	if (strlen(path) >= sizeof(P.path))
		return fail(&P, 1, "key too long");
	strcpy(P.path, path);
	skip_blank(&P);
	rc = parse_value(&P, &v, false);
	if (!rc)
		rc = skip_space(&P);
	if (!rc && at(&P, 0) >= 0)
		rc = fail(&P, P.line, "unexpected %s after the value", show(&P, 0, buf));
	if (!rc)
		rc = call_value(&P, &v);
	return rc;
}

const char *toml_type_name(enum toml_type t)
{
	switch (t) {
	case TOML_INT:
		return "integer";
	case TOML_BOOL:
		return "boolean";
	case TOML_STRING:
		return "string";
	case TOML_ARRAY:
		return "array";
	}
	return "?";
}
