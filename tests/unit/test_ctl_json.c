/* Control replies are JSON text, so they must be UTF-8 whatever bytes a
 * client sent (fuzz_ctl found raw 0xff echoed in "unknown command"). */
#include <criterion/criterion.h>
#include <string.h>

#include "ctl/ctl.h"

static char *quoted(const char *in)
{
	static char buf[512];
	struct strbuf b = { 0 };

	sb_json_str(&b, in);
	cr_assert(!b.oom);
	snprintf(buf, sizeof(buf), "%s", b.s);
	sb_free(&b);
	return buf;
}

Test(ctl_json, invalid_utf8_becomes_replacement_characters)
{
	cr_assert_str_eq(quoted("a\xff" "b"), "\"a\\ufffdb\"");
	cr_assert_str_eq(quoted("\xc3"), "\"\\ufffd\"", "a sequence cut short by the end");
	cr_assert_str_eq(quoted("\xc0\xaf"), "\"\\ufffd\\ufffd\"", "an overlong '/'");
	cr_assert_str_eq(quoted("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"", "a surrogate");
	cr_assert_str_eq(quoted("\xf4\x90\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"", "above U+10FFFF");
}

Test(ctl_json, valid_utf8_and_escapes_pass)
{
	cr_assert_str_eq(quoted("h\xc3\xa9" "llo \xe2\x82\xac \xf0\x9f\x98\x80"),
			 "\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\"");
	cr_assert_str_eq(quoted("q\"b\\n\n\t\x01\x7f"), "\"q\\\"b\\\\n\\n\\t\\u0001\\u007f\"");
}
