/* base/strbuf: a growable string. An allocation failure is sticky: every
 * later append is a no-op and `oom` stays set, so a builder checks once at
 * the end instead of after every append. */
#ifndef FM_STRBUF_H
#define FM_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

struct strbuf {
	char *s;          /* NUL-terminated once anything was appended */
	size_t len, cap;
	bool oom;
};

void sb_printf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Free and zero; the buffer may be reused. */
void sb_free(struct strbuf *b);

#endif
