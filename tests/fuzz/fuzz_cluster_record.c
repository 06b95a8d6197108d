/* The region record decoder (src/cluster) on arbitrary bytes: records are
 * read back from ZooKeeper, where any process with access may have written
 * anything. A record that decodes must encode back to the same bytes, and
 * what it encodes must decode to the same record. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cluster_region r, again;
	char buf[CLUSTER_RECORD_MAX];
	int n;

	if (cluster_region_decode((const char *)data, size, &r) < 0)
		return 0;
	n = cluster_region_encode(&r, buf, sizeof(buf));
	if (n < 0)
		abort();   /* a decoded record is always encodable */
	if (cluster_region_decode(buf, (size_t)n, &again) < 0 || memcmp(&r, &again, sizeof(r)))
		abort();
	return 0;
}
