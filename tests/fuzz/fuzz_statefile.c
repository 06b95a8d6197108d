/* The state directory's small files (src/ctl/statefile.c) on arbitrary
 * bytes: `node` and `servers` are read back after a crash, a disk error or
 * an operator's edit, and a restarted daemon trusts what they say. The first
 * byte picks the parser. A servers file that parses must format back to the
 * same bytes, and a node id that parses must print back to them. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/statefile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct fm_state_servers s, again;
static char buf[FM_STATE_SERVERS_FILE_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data + 1;
	size_t n = size ? size - 1 : 0;

	if (size == 0)
		return 0;
	if (data[0] & 1) {
		int32_t id = fm_state_node_parse(in, n);
		char out[16];

		if (id < 0)
			return 0;
		if (id > 65535 || (size_t)snprintf(out, sizeof(out), "%d\n", id) != n ||
		    memcmp(out, in, n))
			abort();   /* only the bytes the daemon writes are an id */
		return 0;
	}
	if (fm_state_servers_parse(in, n, &s) < 0) {
		if (s.n != 0)
			abort();   /* an error leaves no list behind */
		return 0;
	}
	if (s.n == 0 || s.n > FM_STATE_SERVER_LISTS)
		abort();
	if (fm_state_servers_format(&s, buf, sizeof(buf)) != n || memcmp(buf, in, n))
		abort();
	if (fm_state_servers_parse(buf, n, &again) < 0 || again.n != s.n)
		abort();
	for (unsigned i = 0; i < s.n; i++)
		if (strcmp(s.list[i], again.list[i]))
			abort();
	return 0;
}
