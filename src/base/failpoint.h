/* Failpoints: named steps that tests can make fail, for error paths no
 * client can provoke (a hole punch the kernel refuses, a crash between two
 * eviction steps).
 *
 * They are set only through the daemon's environment, read once at start:
 *   FLUIDMEM_FAILPOINTS="name=ERRNO[,name=ERRNO...]"
 * where ERRNO is a number (5) or a name (EIO, EPERM, ENOSPC). A set
 * failpoint is logged loudly at start; an unknown name is an error, so a
 * typo cannot make a test pass vacuously. With nothing set, a check is one
 * predictable branch on a global.
 *
 * The names, with the code that consults them:
 *   evict.punch   shard eviction: the memfd hole punch fails
 *   evict.store_alternate  shard eviction: the store refuses every second
 *                 page of each eviction run (pages in the middle of runs) */
#ifndef FM_FAILPOINT_H
#define FM_FAILPOINT_H

#include <stdbool.h>

enum fm_failpoint_id { FM_FP_EVICT_PUNCH, FM_FP_EVICT_STORE_ALTERNATE, FM_FP_NR };

extern bool fm_failpoints_armed;

/* Parse FLUIDMEM_FAILPOINTS. 0, or -EINVAL with the reason logged. Call
 * once, before any thread starts. */
int fm_failpoints_init(void);
/* Parse a specification (the variable's syntax): 0 or -EINVAL. */
int fm_failpoints_parse(const char *spec);
/* The injected -errno for fp, or 0 when it is not set. Thread-safe: the
 * table is written only before threads start. */
int fm_failpoint_errno(enum fm_failpoint_id fp);

static inline int fm_failpoint(enum fm_failpoint_id fp)
{
	return __builtin_expect(fm_failpoints_armed, 0) ? fm_failpoint_errno(fp) : 0;
}

#endif
