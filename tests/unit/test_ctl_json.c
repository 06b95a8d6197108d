/* Control replies are JSON text, so they must be UTF-8 whatever bytes a
 * client sent (fuzz_ctl found raw 0xff echoed in "unknown command"). They
 * are jansson dumps; cj_str is what keeps a client's bytes valid. */
#include <criterion/criterion.h>
#include <string.h>

#include "ctl/json_out.h"

#define FFFD "\xef\xbf\xbd"

static char *quoted(const char *in)
{
	static char buf[512];
	struct strbuf b = { 0 };

	cj_reply(&b, json_pack("[o]", cj_str(in)));
	cr_assert(!b.oom, "no reply for \"%s\"", in);
	/* strip the [ ] and the newline */
	snprintf(buf, sizeof(buf), "%.*s", (int)b.len - 3, b.s + 1);
	sb_free(&b);
	return buf;
}

Test(ctl_json, invalid_utf8_becomes_replacement_characters)
{
	cr_assert_str_eq(quoted("a\xff" "b"), "\"a" FFFD "b\"");
	cr_assert_str_eq(quoted("\xc3"), "\"" FFFD "\"", "a sequence cut short by the end");
	cr_assert_str_eq(quoted("\xc0\xaf"), "\"" FFFD FFFD "\"", "an overlong '/'");
	cr_assert_str_eq(quoted("\xed\xa0\x80"), "\"" FFFD FFFD FFFD "\"", "a surrogate");
	cr_assert_str_eq(quoted("\xf4\x90\x80\x80"), "\"" FFFD FFFD FFFD FFFD "\"", "above U+10FFFF");
}

Test(ctl_json, valid_utf8_and_escapes_pass)
{
	cr_assert_str_eq(quoted("h\xc3\xa9" "llo \xe2\x82\xac \xf0\x9f\x98\x80"),
			 "\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\"");
	cr_assert_str_eq(quoted("q\"b\\n\n\t\x01"), "\"q\\\"b\\\\n\\n\\t\\u0001\"");
}

Test(ctl_json, numbers_are_short_and_clamped)
{
	struct strbuf b = { 0 };

	cj_reply(&b, json_pack("[o,o,o]", cj_real(0.1234567, 4), cj_u64(UINT64_MAX), cj_real(1.0 / 0.0, 1)));
	cr_assert_str_eq(b.s, "[0.1235,9223372036854775807,0.0]\n");
	sb_free(&b);
	cj_fail(&b, "no region %d", 7);
	cr_assert_str_eq(b.s, "{\"v\":1,\"ok\":false,\"error\":\"no region 7\"}\n");
	sb_free(&b);
}
