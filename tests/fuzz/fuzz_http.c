/* libFuzzer target: the metrics port's HTTP request handling
 * (http_classify, ctl/http.h), as ctl_conn_readable feeds it: the bytes
 * received so far, at every prefix length, against the buffer limit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"
#include "ctl/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy, so ASan sees any read past the end. */
	char *in = malloc(size ? size : 1);
	enum http_verdict last = HTTP_INCOMPLETE;

	if (!in)
		return 0;
	memcpy(in, data, size);
	if (size > CTL_MAX_REQUEST)
		size = CTL_MAX_REQUEST;
	/* The daemon classifies after every read; a verdict, once given,
	 * must not depend on bytes that arrive later. */
	for (size_t len = 0; len <= size; len += 1 + len / 8) {
		enum http_verdict v = http_classify(in, len, CTL_MAX_REQUEST);

		if (v > HTTP_TOO_LONG)
			abort();
		if (last != HTTP_INCOMPLETE && v != last && last != HTTP_TOO_LONG)
			abort();
		if (last == HTTP_INCOMPLETE)
			last = v;
	}
	(void)http_classify(in, size, size);
	free(in);
	return 0;
}
