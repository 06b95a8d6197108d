/* bench/raw_uffd: the "raw" baseline, the floor fluidmemd is measured
 * against. The same kernel mechanism as the daemon (memfd region registered
 * MISSING|WP, eviction by write-protect + copy + punch-hole + unprotect), but
 * in-process and single-threaded: one handler thread, no dispatcher, ring,
 * shard hop or store round trip. Evicted pages go to a preallocated array
 * indexed by page. The handler thread is pinned only when asked. */
#ifndef FM_BENCH_RAW_UFFD_H
#define FM_BENCH_RAW_UFFD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct raw_uffd;

/* Counters of the handler thread (single writer; read with relaxed loads). */
struct raw_uffd_stats {
	uint64_t faults;        /* MISSING fault events */
	uint64_t wp_faults;     /* write-protect fault events (writers caught in an eviction) */
	uint64_t zeropages;     /* first touches served with UFFDIO_ZEROPAGE */
	uint64_t copies;        /* refaults served with UFFDIO_COPY */
	uint64_t wakes;         /* UFFDIO_WAKE for a page already present */
	uint64_t eexist;        /* installs that found the page present */
	uint64_t eagain;        /* installs retried after reading events */
	uint64_t other_events;  /* non-fault events (none are subscribed to) */
	uint64_t evictions;
};

/* Map a memfd of `pages` pages, register it and start the handler, keeping
 * at most `budget` pages resident. NULL with errno set on failure, and a
 * reason in err (for a missing kernel feature: which one). */
/* cpu: the handler thread's CPU, or -1 to leave it unpinned. */
struct raw_uffd *raw_uffd_create(uint64_t pages, uint64_t budget, int cpu, char *err,
				 size_t errlen);
/* The region the workload uses. */
void *raw_uffd_addr(const struct raw_uffd *r);
/* Wait until the handler has served every event it has read and is about to
 * sleep. Once no thread can fault any more, its counters are then final.
 * False after timeout_ms. */
bool raw_uffd_quiesce(const struct raw_uffd *r, unsigned timeout_ms);
/* Safe from any thread while the handler runs. */
void raw_uffd_get_stats(const struct raw_uffd *r, struct raw_uffd_stats *out);
/* Non-empty once the handler has failed (it then unregisters the region so
 * the workload does not hang: later reads see zeros and fail verification). */
const char *raw_uffd_error(const struct raw_uffd *r);
/* Stop the handler and unmap everything. NULL is a no-op. */
void raw_uffd_destroy(struct raw_uffd *r);

#endif
