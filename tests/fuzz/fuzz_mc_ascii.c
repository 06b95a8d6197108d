/* fuzz_mc_ascii: a memcached server's ASCII answers to fluidmemd's
 * pipelined page writes and touches (kv/mc_wire.h). See fuzz_mc.h. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fuzz/fuzz_mc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_mc_one(false, data, size);
}
