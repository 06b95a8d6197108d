#include "kv/crc32c.h"

#include <stdbool.h>
#include <string.h>

#define CRC32C_POLY 0x82f63b78u /* reflected Castagnoli */

static uint32_t crc_table[256];
static int crc_mode; /* 0 unknown, 1 table, 2 hardware */

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1)));
		crc_table[i] = c;
	}
	__builtin_cpu_init();
	__atomic_store_n(&crc_mode, __builtin_cpu_supports("sse4.2") ? 2 : 1, __ATOMIC_RELEASE);
}

static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t n)
{
	while (n--)
		c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
	return c;
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t n)
{
	uint64_t c64 = c;

	for (; n >= 8; n -= 8, p += 8) {
		uint64_t w;

		memcpy(&w, p, 8);
		c64 = __builtin_ia32_crc32di(c64, w);
	}
	c = (uint32_t)c64;
	while (n--)
		c = __builtin_ia32_crc32qi(c, *p++);
	return c;
}

uint32_t kv_crc32c(uint32_t crc, const void *data, size_t len)
{
	int mode = __atomic_load_n(&crc_mode, __ATOMIC_ACQUIRE);

	if (!mode) {
		crc_init(); /* idempotent: racing first callers compute the same table */
		mode = __atomic_load_n(&crc_mode, __ATOMIC_ACQUIRE);
	}
	crc = ~crc;
	crc = mode == 2 ? crc_hw(crc, data, len) : crc_sw(crc, data, len);
	return ~crc;
}
