/* ctl/toml: a strict subset of TOML 1.0, enough for fluidmemd's config.
 *
 * Accepted: # comments, [table] and [a.b] headers, `key = value` with bare
 * keys, basic strings "..." (escapes \b \t \n \f \r \" \\ \uXXXX
 * \UXXXXXXXX), literal strings '...', integers (decimal with sign and `_`,
 * 0x, 0o, 0b; must fit int64), true/false, and arrays of those scalars
 * (multi-line, comments inside, trailing comma). LF or CRLF line endings.
 * Rejected with a message: floats, dates, inline tables, arrays of tables,
 * multi-line strings, quoted or dotted keys, nested arrays, \u0000,
 * control characters, invalid UTF-8, duplicate keys and tables.
 *
 * Event API: the parser calls back once per [table] header and once per key,
 * in file order, with the full dotted path ("shards.count"). A value and
 * everything it points to lives in parser storage and is valid only during
 * the callback. Nothing is allocated that outlives a call.
 *
 * Errors: -EINVAL (syntax, or a callback's -errno passed through) and
 * "name:line: path: reason" in err; the path is left out when no key was
 * being parsed. Parsing stops at the first error.
 *
 * Thread-safety: no shared state; calls may run concurrently. */
#ifndef FM_TOML_H
#define FM_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOML_KEY_MAX 64      /* bytes in one bare key */
#define TOML_PATH_MAX 256    /* bytes in a dotted path, NUL included */
#define TOML_MAX_ITEMS 256   /* items in one array */
#define TOML_MAX_STR 4096    /* string bytes in one value, a NUL per string included */

enum toml_type { TOML_INT, TOML_BOOL, TOML_STRING, TOML_ARRAY };

struct toml_value {
	enum toml_type type;
	int line;                      /* where the value starts (its key's line) */
	union {
		int64_t i;
		bool b;
		struct {
			const char *ptr;       /* NUL-terminated, never holds a NUL */
			size_t len;
		} s;
		struct {
			const struct toml_value *items;   /* scalars only */
			size_t n;
		} a;
	};
};

/* Either callback may be NULL. Return 0 to go on, or -errno with a reason in
 * why: the parser stops and reports "name:line: path: why". */
struct toml_handler {
	/* An explicit [path] header on `line`. */
	int (*table)(void *ctx, const char *path, int line, char *why, size_t whylen);
	/* `key = value`; path is "table.key", or "key" before any header. */
	int (*value)(void *ctx, const char *path, const struct toml_value *v, char *why,
		     size_t whylen);
};

/* Parse len bytes of text (which need not be NUL-terminated; a NUL byte is
 * an error). name is the file name used in messages. Returns 0, -EINVAL,
 * -ENOMEM or a callback's error. */
int toml_parse(const char *name, const char *text, size_t len, const struct toml_handler *h,
	       void *ctx, char *err, size_t errlen);

/* Parse text as one value (e.g. a command-line override) and hand it to
 * h->value as `path`. Surrounding blanks are allowed, anything else after the
 * value is an error. Messages read "name: path: reason" (no line). */
int toml_parse_value(const char *name, const char *path, const char *text,
		     const struct toml_handler *h, void *ctx, char *err, size_t errlen);

/* "integer", "boolean", "string", "array". */
const char *toml_type_name(enum toml_type t);

#endif
