/* ctl/json_out: control replies built as jansson values and appended to a
 * strbuf as one compact line. Not a public header. */
#ifndef FM_CTL_JSON_OUT_H
#define FM_CTL_JSON_OUT_H

#include <jansson.h>
#include <stdint.h>

#include "base/strbuf.h"

/* A JSON string from bytes that may not be UTF-8 (a client's region name,
 * an unknown command echoed back): every byte that is not part of
 * well-formed UTF-8 becomes U+FFFD, so the reply stays valid JSON. NULL
 * only when out of memory. */
json_t *cj_str(const char *s);
/* An unsigned counter; values above INT64_MAX (jansson's integer range)
 * are clamped to it. */
json_t *cj_u64(uint64_t v);
/* A real rounded to `decimals` places (0.1 µs is noise, 17 digits is not
 * readable). */
json_t *cj_real(double v, int decimals);
/* The reply head every command starts with: {"v":1,"ok":true}. */
json_t *cj_ok(void);
/* Append obj as one compact line plus '\n', then drop the reference. Out of
 * memory at any point (obj NULL included) sets out->oom, which the caller
 * checks once, as with every strbuf. */
void cj_reply(struct strbuf *out, json_t *obj);
/* {"v":1,"ok":false,"error":MSG} as one line. */
void cj_fail(struct strbuf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
