/* client/preload: what the LD_PRELOAD shim (preload.c) and fluidmem-run
 * share: the environment it reads and the size syntax.
 *
 *   FLUIDMEM_SOCKET    registration socket (libfluidmem's default otherwise)
 *   FLUIDMEM_MIN_SIZE  smallest mapping taken over, bytes with an optional
 *                      K/M/G/T suffix (powers of 1024); default 64M
 *   FLUIDMEM_MATCH     comma-separated substrings: a memfd mapping is taken
 *                      when its name contains one, anonymous memory when the
 *                      list has "anon"; unset or empty takes both
 *   FLUIDMEM_DEBUG     1: say on stderr what is taken over and what is not
 *   FLUIDMEM_TIMEOUT   seconds (1..3600) to wait for the daemon; default 30
 *                      (FM_DEFAULT_TIMEOUT_S, read by libfluidmem)
 *   FLUIDMEM_RECONNECT_MIN_MS, FLUIDMEM_RECONNECT_MAX_MS
 *                      backoff when the daemon restarts (fluidmem.h) */
#ifndef FM_CLIENT_PRELOAD_H
#define FM_CLIENT_PRELOAD_H

#include <errno.h>
#include <stdint.h>

#define FM_PRELOAD_LIB "libfluidmem-preload.so"
#define FM_PRELOAD_DEFAULT_MIN_SIZE (64ull << 20)

/* "64M", "1g", "4096", "512MiB" -> bytes. 0 or -EINVAL (empty, zero,
 * junk, overflow). No allocation: the shim calls it early. */
static inline int fm_parse_size(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	unsigned shift = 0;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	switch (*s | 0x20) {
	case 'k': shift = 10; s++; break;
	case 'm': shift = 20; s++; break;
	case 'g': shift = 30; s++; break;
	case 't': shift = 40; s++; break;
	default: break;
	}
	if (shift && (s[0] | 0x20) == 'i' && (s[1] | 0x20) == 'b')
		s += 2;
	else if ((*s | 0x20) == 'b')
		s++;
	if (*s != '\0' || v == 0 || (shift && v > (UINT64_MAX >> shift)))
		return -EINVAL;
	*out = v << shift;
	return 0;
}

#endif
