/* fuzz_mc_binary: a memcached server's binary-protocol answers to fluidmemd's
 * pipelined page writes and touches (kv/mc_wire.h). See fuzz_mc.h. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fuzz/fuzz_mc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_mc_one(true, data, size);
}
