/* ctl/toml: every accepted form yields the right events and lines; every
 * rejected form fails with its exact message and line. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ctl/toml.h"

/* Records events as text, one per line: "[path]@line" or "path=value@line",
 * so a test states the whole event stream in one string. */
struct log {
	char text[8192];
	size_t len;
	int fail_at;   /* > 0: the value callback fails on this event number */
	int fail_rc;
	int events;
};

static void emit(struct log *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void emit(struct log *l, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	l->len += (size_t)vsnprintf(l->text + l->len, sizeof(l->text) - l->len, fmt, ap);
	va_end(ap);
	cr_assert_lt(l->len, sizeof(l->text));
}

static void emit_scalar(struct log *l, const struct toml_value *v)
{
	switch (v->type) {
	case TOML_INT:
		emit(l, "%lld", (long long)v->i);
		break;
	case TOML_BOOL:
		emit(l, "%s", v->b ? "true" : "false");
		break;
	case TOML_STRING:
		cr_assert_eq(strlen(v->s.ptr), v->s.len);
		emit(l, "\"");
		for (size_t i = 0; i < v->s.len; i++) {
			unsigned char c = (unsigned char)v->s.ptr[i];

			if (c >= 0x20 && c < 0x7f)
				emit(l, "%c", c);
			else
				emit(l, "\\x%02x", c);
		}
		emit(l, "\"");
		break;
	case TOML_ARRAY:
		cr_assert_fail("nested array");
	}
}

static int on_table(void *ctx, const char *path, int line, char *why, size_t n)
{
	emit(ctx, "[%s]@%d\n", path, line);
	return 0;
}

static int on_value(void *ctx, const char *path, const struct toml_value *v, char *why, size_t n)
{
	struct log *l = ctx;

	if (++l->events == l->fail_at) {
		if (l->fail_rc == -EINVAL)
			snprintf(why, n, "rejected by the callback");
		return l->fail_rc;
	}
	emit(l, "%s=", path);
	if (v->type != TOML_ARRAY) {
		emit_scalar(l, v);
	} else {
		emit(l, "[");
		for (size_t i = 0; i < v->a.n; i++) {
			emit(l, "%s", i ? "," : "");
			emit_scalar(l, &v->a.items[i]);
			emit(l, "@%d", v->a.items[i].line);
		}
		emit(l, "]");
	}
	emit(l, "@%d\n", v->line);
	return 0;
}

static const struct toml_handler handler = { .table = on_table, .value = on_value };

static struct log lg;
static char err[512];

static int parse(const char *text)
{
	memset(&lg, 0, sizeof(lg));
	memset(err, 'X', sizeof(err));
	return toml_parse("t.toml", text, strlen(text), &handler, &lg, err, sizeof(err));
}

static void parses_to(const char *text, const char *events)
{
	int rc = parse(text);

	cr_assert_eq(rc, 0, "input:\n%s\nerror: %s", text, err);
	cr_assert_str_eq(err, "");
	cr_assert_str_eq(lg.text, events, "input:\n%s\ngot:\n%s\nwant:\n%s", text, lg.text, events);
}

static void fails_with(const char *text, const char *msg)
{
	int rc = parse(text);

	cr_assert_eq(rc, -EINVAL, "input:\n%s\nrc %d, events:\n%s", text, rc, lg.text);
	cr_assert_str_eq(err, msg, "input:\n%s\ngot:  %s\nwant: %s", text, err, msg);
}

Test(toml, empty_and_comment_only_input)
{
	parses_to("", "");
	parses_to("\n\n   \n\t\n", "");
	parses_to("# only a comment", "");
	parses_to("# a\n  # b \xc3\xa9 utf-8\n\n", "");
}

Test(toml, tables_keys_and_lines)
{
	parses_to("top = 1\n"
		  "\n"
		  "[a]   # comment\n"
		  "x = 2\n"
		  "[ a . b ]\n"
		  "y-z_0 = 3 # trailing\n"
		  "[c]\n",
		  "top=1@1\n[a]@3\na.x=2@4\n[a.b]@5\na.b.y-z_0=3@6\n[c]@7\n");
}

Test(toml, implicit_parent_table_may_be_defined_later)
{
	parses_to("[a.b]\nx = 1\n[a]\ny = 2\n", "[a.b]@1\na.b.x=1@2\n[a]@3\na.y=2@4\n");
}

Test(toml, integers)
{
	parses_to("a = 0\nb = -0\nc = +17\nd = 1_000_000\ne = -42\n"
		  "f = 0xDEAD_beef\ng = 0o755\nh = 0b1010_1010\ni = 0x0\n",
		  "a=0@1\nb=0@2\nc=17@3\nd=1000000@4\ne=-42@5\n"
		  "f=3735928559@6\ng=493@7\nh=170@8\ni=0@9\n");
	parses_to("max = 9223372036854775807\nmin = -9223372036854775808\n"
		  "hex = 0x7fffffffffffffff\n",
		  "max=9223372036854775807@1\nmin=-9223372036854775808@2\n"
		  "hex=9223372036854775807@3\n");
}

Test(toml, booleans)
{
	parses_to("t = true\nf = false\n", "t=true@1\nf=false@2\n");
}

Test(toml, basic_strings_and_escapes)
{
	parses_to("e = \"\"\n", "e=\"\"@1\n");
	parses_to("s = \"a \\\"q\\\" \\\\ b\"\n", "s=\"a \"q\" \\ b\"@1\n");
	parses_to("s = \"\\n\\t\\r\\b\\f\"\n", "s=\"\\x0a\\x09\\x0d\\x08\\x0c\"@1\n");
	/* \u and \U encode UTF-8; raw UTF-8 and tabs pass through. */
	parses_to("s = \"\\u00e9\\u20AC\\U0001F600\"\n",
		  "s=\"\\xc3\\xa9\\xe2\\x82\\xac\\xf0\\x9f\\x98\\x80\"@1\n");
	parses_to("s = \"\xc3\xa9\tx # not a comment\"\n", "s=\"\\xc3\\xa9\\x09x # not a comment\"@1\n");
}

Test(toml, literal_strings_keep_backslashes)
{
	parses_to("p = 'C:\\dir\\n \"q\"'\ne = ''\n", "p=\"C:\\dir\\n \"q\"\"@1\ne=\"\"@2\n");
}

Test(toml, arrays)
{
	parses_to("a = []\nb = [ ]\nc = [1]\nd = [1, -2, 0x3,]\n",
		  "a=[]@1\nb=[]@2\nc=[1@3]@3\nd=[1@4,-2@4,3@4]@4\n");
	parses_to("s = [\"x\", 'y', \"\"]\nm = [1, true, \"z\"]\n",
		  "s=[\"x\"@1,\"y\"@1,\"\"@1]@1\nm=[1@2,true@2,\"z\"@2]@2\n");
	parses_to("cpus = [  # pinned\n"
		  "  0,\n"
		  "\n"
		  "  # the second shard\n"
		  "  1 ,\n"
		  "]\n"
		  "next = 5\n",
		  "cpus=[0@2,1@5]@1\nnext=5@7\n");
}

Test(toml, crlf_line_endings_match_lf)
{
	const char *lf = "# c\n[a]\nx = 1 # t\ns = \"v\"\narr = [\n 1,\n 2,\n]\n\n[b.c]\ny = 'w'\n";
	static char crlf[256], events[sizeof(lg.text)];
	size_t o = 0;

	parses_to(lf, "[a]@2\na.x=1@3\na.s=\"v\"@4\na.arr=[1@6,2@7]@5\n[b.c]@10\nb.c.y=\"w\"@11\n");
	snprintf(events, sizeof(events), "%s", lg.text);
	for (const char *p = lf; *p; p++) {
		if (*p == '\n')
			crlf[o++] = '\r';
		crlf[o++] = *p;
	}
	crlf[o] = '\0';
	parses_to(crlf, events);
	/* No newline at the end of the file is fine too. */
	parses_to("a = 1\r\nb = 2", "a=1@1\nb=2@2\n");
}

Test(toml, duplicates_and_redefinitions)
{
	fails_with("a = 1\nb = 2\na = 3\n", "t.toml:3: a: duplicate key, first set on line 1");
	fails_with("[t]\nx = 1\n\n[t]\n", "t.toml:4: t: duplicate table, first defined on line 1");
	fails_with("[t.u]\n[t]\n[t.u]\n", "t.toml:3: t.u: duplicate table, first defined on line 1");
	fails_with("[t]\nu = 1\n[t.u]\n", "t.toml:3: t.u: already defined as a key on line 2");
	fails_with("[t]\nu = 1\n[t.u.v]\n", "t.toml:3: t.u.v: t.u is a key (line 2), not a table");
	fails_with("[t.u]\n[t]\nu = 2\n", "t.toml:3: t.u: already defined as a table on line 1");
	/* The same key name in two tables is not a duplicate. */
	parses_to("[a]\nx = 1\n[b]\nx = 1\n", "[a]@1\na.x=1@2\n[b]@3\nb.x=1@4\n");
}

Test(toml, integer_errors)
{
	fails_with("\n\nn = 9223372036854775808\n",
		   "t.toml:3: n: 9223372036854775808 does not fit in a 64-bit integer");
	fails_with("n = -9223372036854775809\n",
		   "t.toml:1: n: -9223372036854775809 does not fit in a 64-bit integer");
	fails_with("n = 0x8000000000000000\n",
		   "t.toml:1: n: 0x8000000000000000 does not fit in a 64-bit integer");
	fails_with("n = 99999999999999999999999\n",
		   "t.toml:1: n: 99999999999999999999999 does not fit in a 64-bit integer");
	fails_with("n = 0755\n", "t.toml:1: n: leading zeros are not allowed (octal is 0o...)");
	fails_with("n = 1__0\n", "t.toml:1: n: '_' must be between digits");
	fails_with("n = 10_\n", "t.toml:1: n: '_' must be between digits");
	fails_with("n = _10\n", "t.toml:1: n: '_' must be between digits");
	fails_with("n = 0x_1\n", "t.toml:1: n: '_' must be between digits");
	fails_with("n = -0x10\n", "t.toml:1: n: a sign is not allowed on 0x, 0o or 0b integers");
	fails_with("n = 0o8\n", "t.toml:1: n: invalid digit '8' in a base-8 integer");
	fails_with("n = 0b102\n", "t.toml:1: n: invalid digit '2' in a base-2 integer");
	fails_with("n = 0xfg\n", "t.toml:1: n: invalid digit 'g' in a base-16 integer");
	fails_with("n = 12a\n", "t.toml:1: n: invalid digit 'a' in a base-10 integer");
	fails_with("n = 0x\n", "t.toml:1: n: missing digits");
	fails_with("n = -\n", "t.toml:1: n: missing digits");
}

Test(toml, unsupported_values_say_so)
{
	fails_with("f = 1.5\n", "t.toml:1: f: floats are not supported");
	fails_with("f = 1e6\n", "t.toml:1: f: floats are not supported");
	fails_with("f = -inf\n", "t.toml:1: f: floats are not supported");
	fails_with("f = nan\n", "t.toml:1: f: floats are not supported");
	fails_with("d = 1979-05-27\n", "t.toml:1: d: dates and times are not supported");
	fails_with("d = 07:32:00\n", "t.toml:1: d: dates and times are not supported");
	fails_with("t = {a = 1}\n", "t.toml:1: t: inline tables are not supported");
	fails_with("s = \"\"\"x\"\"\"\n", "t.toml:1: s: multi-line strings are not supported");
	fails_with("s = '''x'''\n", "t.toml:1: s: multi-line strings are not supported");
	fails_with("a = [[1], [2]]\n", "t.toml:1: a: nested arrays are not supported");
	fails_with("[[t]]\n", "t.toml:1: arrays of tables ([[...]]) are not supported");
	fails_with("a.b = 1\n", "t.toml:1: a: dotted keys are not supported: use a [table] header");
	fails_with("\"a\" = 1\n", "t.toml:1: quoted keys are not supported");
	fails_with("[\"a\"]\n", "t.toml:1: quoted keys are not supported");
	fails_with("level = info\n", "t.toml:1: level: unquoted string info: strings need quotes");
	fails_with("b = True\n", "t.toml:1: b: unquoted string True: strings need quotes");
}

Test(toml, string_errors)
{
	fails_with("a = 1\ns = \"abc\nt = 2\n", "t.toml:2: s: unterminated string");
	fails_with("s = \"abc", "t.toml:1: s: unterminated string");
	fails_with("s = 'abc\r\n", "t.toml:1: s: unterminated literal string");
	fails_with("s = \"a\\\"\n", "t.toml:1: s: unterminated string");
}

Test(toml, string_escape_errors)
{
	fails_with("s = \"\\x41\"\n", "t.toml:1: s: invalid escape: backslash followed by 'x'");
	fails_with("s = \"\\", "t.toml:1: s: invalid escape: backslash followed by end of input");
	fails_with("s = \"\\\n\"\n", "t.toml:1: s: invalid escape: backslash followed by end of line");
	fails_with("s = \"\\u12\"\n", "t.toml:1: s: \\u needs 4 hex digits");
	fails_with("s = \"\\U0001F60\"\n", "t.toml:1: s: \\U needs 8 hex digits");
	fails_with("s = \"\\ud800\"\n", "t.toml:1: s: U+D800 is not a Unicode scalar value");
	fails_with("s = \"\\U00110000\"\n", "t.toml:1: s: U+110000 is not a Unicode scalar value");
	fails_with("s = \"\\u0000\"\n",
		   "t.toml:1: s: \\u0000 is not allowed: strings are NUL-terminated");
}

Test(toml, control_characters_and_bad_utf8)
{
	fails_with("s = \"a\x01\"\n", "t.toml:1: s: control character 0x01 in string");
	fails_with("s = 'a\x7f'\n", "t.toml:1: s: control character 0x7f in literal string");
	fails_with("s = \"a\rb\"\n", "t.toml:1: s: control character 0x0d in string");
	fails_with("a = 1\n# bell \x07\n", "t.toml:2: control character 0x07 in comment");
	fails_with("a = 1 # cr\rx\n", "t.toml:1: a: control character 0x0d in comment");
	fails_with("s = \"\xc3\"\n", "t.toml:1: s: invalid UTF-8 in string");
	fails_with("s = '\xc0\xaf'\n", "t.toml:1: s: invalid UTF-8 in literal string");       /* overlong */
	fails_with("s = \"\xed\xa0\x80\"\n", "t.toml:1: s: invalid UTF-8 in string");     /* surrogate */
	fails_with("# \xff\n", "t.toml:1: invalid UTF-8 in comment");
	fails_with("a = 1\rb = 2\n", "t.toml:1: a: unexpected byte 0x0d after the value");
}

Test(toml, nul_byte_is_an_error)
{
	static const char text[] = "a = 1\nb = \"x\0y\"\n";
	int rc;

	memset(&lg, 0, sizeof(lg));
	rc = toml_parse("t.toml", text, sizeof(text) - 1, &handler, &lg, err, sizeof(err));
	cr_assert_eq(rc, -EINVAL);
	cr_assert_str_eq(err, "t.toml:2: b: control character 0x00 in string");
	rc = toml_parse("t.toml", "a = 1\0", 6, &handler, &lg, err, sizeof(err));
	cr_assert_eq(rc, -EINVAL);
	cr_assert_str_eq(err, "t.toml:1: a: unexpected byte 0x00 after the value");
}

Test(toml, array_errors)
{
	fails_with("a = 1\nb = [1, 2,\n 3\n", "t.toml:2: b: unterminated array");
	fails_with("b = [", "t.toml:1: b: unterminated array");
	fails_with("b = [1,\n 2\n[t]\n", "t.toml:3: b: expected ',' or ']' in the array, found '['");
	fails_with("b = [1 2]\n", "t.toml:1: b: expected ',' or ']' in the array, found '2'");
	fails_with("b = [1,,2]\n", "t.toml:1: b: expected a value, found ','");
	fails_with("b = [,]\n", "t.toml:1: b: expected a value, found ','");
	fails_with("b = [\n1,\n\"x\n]\n", "t.toml:3: b: unterminated string");
}

Test(toml, syntax_errors)
{
	fails_with("a\n", "t.toml:1: a: expected '=' after the key, found end of line");
	fails_with("a 1\n", "t.toml:1: a: expected '=' after the key, found '1'");
	fails_with("a =\n", "t.toml:1: a: expected a value, found end of line");
	fails_with("a = ", "t.toml:1: a: expected a value, found end of input");
	fails_with("a = 1 2\n", "t.toml:1: a: unexpected '2' after the value");
	fails_with("a = \"x\" y\n", "t.toml:1: a: unexpected 'y' after the value");
	fails_with("= 1\n", "t.toml:1: expected a key, found '='");
	fails_with("\xc3\xa9 = 1\n", "t.toml:1: expected a key, found byte 0xc3");
	fails_with("[a\n", "t.toml:1: expected '.' or ']' in the table header, found end of line");
	fails_with("[]\n", "t.toml:1: expected a key, found ']'");
	fails_with("[a..b]\n", "t.toml:1: expected a key, found '.'");
	fails_with("[a.]\n", "t.toml:1: expected a key, found ']'");
	fails_with("[a] x = 1\n", "t.toml:1: a: unexpected 'x' after the table header");
}

Test(toml, limits)
{
	char text[TOML_MAX_STR * 2], msg[128];
	int n;

	/* A key of TOML_KEY_MAX bytes is fine, one more is not. */
	memset(text, 'k', TOML_KEY_MAX);
	strcpy(text + TOML_KEY_MAX, " = 1\n");
	cr_assert_eq(parse(text), 0, "%s", err);
	memset(text, 'k', TOML_KEY_MAX + 1);
	strcpy(text + TOML_KEY_MAX + 1, " = 1\n");
	snprintf(msg, sizeof(msg), "t.toml:1: keys longer than %d bytes are not supported",
		 TOML_KEY_MAX);
	fails_with(text, msg);

	/* TOML_MAX_ITEMS items are fine, one more is not. */
	n = snprintf(text, sizeof(text), "a = [");
	for (int i = 0; i < TOML_MAX_ITEMS; i++)
		n += snprintf(text + n, sizeof(text) - (size_t)n, "%d,", i);
	strcpy(text + n, "]");
	cr_assert_eq(parse(text), 0, "%s", err);
	strcpy(text + n, "1]");
	snprintf(msg, sizeof(msg), "t.toml:1: a: arrays of more than %d items are not supported",
		 TOML_MAX_ITEMS);
	fails_with(text, msg);

	/* All strings of one value share TOML_MAX_STR bytes, NULs included. */
	snprintf(msg, sizeof(msg), "t.toml:1: s: strings over %d bytes are not supported",
		 TOML_MAX_STR - 1);
	n = snprintf(text, sizeof(text), "s = \"");
	memset(text + n, 'x', TOML_MAX_STR - 1);
	strcpy(text + n + TOML_MAX_STR - 1, "\"");
	cr_assert_eq(parse(text), 0, "%s", err);
	strcpy(text + n + TOML_MAX_STR - 1, "x\"");
	fails_with(text, msg);

	n = snprintf(text, sizeof(text), "s = [\"");
	memset(text + n, 'x', TOML_MAX_STR - 2);
	n += TOML_MAX_STR - 2;
	strcpy(text + n, "\", \"\"]");
	cr_assert_eq(parse(text), 0, "%s", err);
	strcpy(text + n, "\", \"\", \"\"]");
	fails_with(text, msg);
}

Test(toml, callback_errors_carry_path_and_line)
{
	memset(&lg, 0, sizeof(lg));
	lg.fail_at = 2;
	lg.fail_rc = -EINVAL;
	cr_assert_eq(toml_parse("t.toml", "[s]\na = 1\nb = [\n2]\n", 19, &handler, &lg, err,
				sizeof(err)),
		     -EINVAL);
	cr_assert_str_eq(err, "t.toml:3: s.b: rejected by the callback");

	/* A callback's own errno passes through, with strerror when no reason. */
	memset(&lg, 0, sizeof(lg));
	lg.fail_at = 1;
	lg.fail_rc = -ENOMEM;
	cr_assert_eq(toml_parse("t.toml", "a = 1\n", 6, &handler, &lg, err, sizeof(err)), -ENOMEM);
	cr_assert_str_eq(err, "t.toml:1: a: Cannot allocate memory");
}

static int reject_table(void *ctx, const char *path, int line, char *why, size_t n)
{
	snprintf(why, n, "no such table (line %d)", line);
	return -EINVAL;
}

Test(toml, table_callback_errors)
{
	const struct toml_handler h = { .table = reject_table };

	cr_assert_eq(toml_parse("t.toml", "\n[x.y]\n", 7, &h, NULL, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "t.toml:2: x.y: no such table (line 2)");
}

Test(toml, null_handlers_and_tiny_error_buffer)
{
	const struct toml_handler none = { 0 };
	char small[8];

	cr_assert_eq(toml_parse("t.toml", "[a]\nx = [1]\n", 12, &none, NULL, small, sizeof(small)), 0);
	cr_assert_eq(toml_parse("t.toml", "x = ?\n", 6, &none, NULL, small, sizeof(small)), -EINVAL);
	cr_assert_str_eq(small, "t.toml:");
	cr_assert_eq(toml_parse("t.toml", "x = ?\n", 6, &none, NULL, NULL, 0), -EINVAL);
}

static int value(const char *text)
{
	memset(&lg, 0, sizeof(lg));
	return toml_parse_value("--set", "k.v", text, &handler, &lg, err, sizeof(err));
}

Test(toml, single_values)
{
	cr_assert_eq(value("42"), 0, "%s", err);
	cr_assert_str_eq(lg.text, "k.v=42@1\n");
	cr_assert_eq(value("  \"a b\"  "), 0, "%s", err);
	cr_assert_str_eq(lg.text, "k.v=\"a b\"@1\n");
	cr_assert_eq(value("[1,\n 2]\n"), 0, "%s", err);
	cr_assert_str_eq(lg.text, "k.v=[1@1,2@2]@1\n");
	cr_assert_eq(value("0o644 # comment"), 0, "%s", err);
	cr_assert_str_eq(lg.text, "k.v=420@1\n");

	/* Errors name the key but no line. */
	cr_assert_eq(value("4 5"), -EINVAL);
	cr_assert_str_eq(err, "--set: k.v: unexpected '5' after the value");
	cr_assert_eq(value(""), -EINVAL);
	cr_assert_str_eq(err, "--set: k.v: expected a value, found end of input");
	cr_assert_eq(value("[1,\n2"), -EINVAL);
	cr_assert_str_eq(err, "--set: k.v: unterminated array");
	cr_assert_eq(value("1\nb = 2"), -EINVAL);
	cr_assert_str_eq(err, "--set: k.v: unexpected 'b' after the value");
}

Test(toml, type_names)
{
	cr_assert_str_eq(toml_type_name(TOML_INT), "integer");
	cr_assert_str_eq(toml_type_name(TOML_BOOL), "boolean");
	cr_assert_str_eq(toml_type_name(TOML_STRING), "string");
	cr_assert_str_eq(toml_type_name(TOML_ARRAY), "array");
}
