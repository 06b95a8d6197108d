/* Failpoints: named steps that tests can make fail, for error paths no
 * client can provoke (a hole punch the kernel refuses, a crash between two
 * eviction steps).
 *
 * They are set only through the daemon's environment, read once at start:
 *   FLUIDMEM_FAILPOINTS="name=ACTION[@N][,name=ACTION[@N]...]"
 * where ACTION is an errno as a number (5) or a name (EIO, EPERM, ENOSPC),
 * or "kill": the daemon raises SIGKILL there, as a crash would (the restart
 * tests). "@N" fires on the N-th hit only (counted over every thread);
 * without it, on every hit. A kill-only point ignores errno actions. A set
 * failpoint is logged loudly at start; an unknown name is an error, so a
 * typo cannot make a test pass vacuously. With nothing set, a check is one
 * predictable branch on a global.
 *
 * The names, with the code that consults them:
 *   evict.punch          shard eviction: the memfd hole punch fails
 *   evict.after_protect  (kill) eviction: a victim was write-protected
 *   evict.after_put      (kill) eviction: the store accepted a batch
 *   evict.after_mark     (kill) eviction: a page's state bit was written
 *   evict.after_punch    (kill) eviction: a page was punched, still protected
 *   evict.after_unprotect (kill) eviction: a page's eviction is complete
 *   readopt.rebuild      (kill) re-adoption: a shard starts rebuilding a region
 *   drain.after_move     (kill) `servers drain`: a page was moved to its new owner
 *   evict.store_alternate the store refuses every second page of each eviction
 *                        run (pages in the middle of runs)
 *   shard.detach_stall   a shard takes 6 s to acknowledge a region's detach
 *                        (past the 5 s shutdown deadline)
 *   shard.fault_stall    a shard sleeps 20 ms before serving a fault on a
 *                        stored page, so the faults behind it pile up in its
 *                        ring (memory.fault_batch tests); any errno arms it
 *
 * Delay points (fm_failpoint_delay) read the number as milliseconds to
 * sleep there, e.g. "prefetch.before_install=200" (names are accepted too,
 * as their errno value, but mean nothing useful):
 *   dispatch.remove_read the dispatcher read a REMOVE or UNMAP (and counted
 *                        it for its shard: shard_discard_pending), before routing it
 *   prefetch.before_install a prefetch window read its stored pages, before
 *                        installing them
 *   fault.before_install a fault fetched its stored page, or a fault batch
 *                        read its stored pages, before installing them
 *   fault.after_check    a fault's (or a batch's) install found no discard
 *                        pending (shard_discard_pending), before its UFFDIO_COPY
 *   prefetch.after_check the same for one prefetch install
 *   register.before_close a refused registration connection got its reason
 *                        and was drained, before the daemon closes it (a
 *                        request landing then resets the client's socket) */
#ifndef FM_FAILPOINT_H
#define FM_FAILPOINT_H

#include <stdbool.h>

enum fm_failpoint_id {
	FM_FP_EVICT_PUNCH,
	FM_FP_EVICT_AFTER_PROTECT,
	FM_FP_EVICT_AFTER_PUT,
	FM_FP_EVICT_AFTER_MARK,
	FM_FP_EVICT_AFTER_PUNCH,
	FM_FP_EVICT_AFTER_UNPROTECT,
	FM_FP_READOPT_REBUILD,
	FM_FP_EVICT_STORE_ALTERNATE,
	FM_FP_SHARD_DETACH_STALL,
	FM_FP_DRAIN_AFTER_MOVE,
	FM_FP_SHARD_FAULT_STALL,
	FM_FP_DISPATCH_REMOVE_READ,
	FM_FP_PREFETCH_BEFORE_INSTALL,
	FM_FP_FAULT_BEFORE_INSTALL,
	FM_FP_REGISTER_BEFORE_CLOSE,
	FM_FP_FAULT_AFTER_CHECK,
	FM_FP_PREFETCH_AFTER_CHECK,
	FM_FP_NR
};

extern bool fm_failpoints_armed;

/* Parse FLUIDMEM_FAILPOINTS. 0, or -EINVAL with the reason logged. Call
 * once, before any thread starts. */
int fm_failpoints_init(void);
/* Parse a specification (the variable's syntax): 0 or -EINVAL. */
int fm_failpoints_parse(const char *spec);
/* The injected -errno for fp, or 0 when it is not set or not due (@N); a
 * kill action does not return. Thread-safe: the table is written only
 * before threads start, the hit counters atomically. */
int fm_failpoint_errno(enum fm_failpoint_id fp);

static inline int fm_failpoint(enum fm_failpoint_id fp)
{
	return __builtin_expect(fm_failpoints_armed, 0) ? fm_failpoint_errno(fp) : 0;
}

/* A delay point: sleep the set number of milliseconds when it is due. */
void fm_failpoint_sleep(enum fm_failpoint_id fp);

static inline void fm_failpoint_delay(enum fm_failpoint_id fp)
{
	if (__builtin_expect(fm_failpoints_armed, 0))
		fm_failpoint_sleep(fp);
}

#endif
