/* libfluidmem: put a process's memory on fluidmemd.
 *
 *   struct fm_client *c = fm_connect(NULL);          // FLUIDMEM_SOCKET or the default
 *   struct fm_region *r = fm_region_create(c, 1 << 30, "heap");
 *   char *p = fm_region_addr(r);                     // served page by page from now on
 *   ...
 *   fm_region_destroy(r);
 *   fm_disconnect(c);
 *
 * A region is a memfd mapped MAP_SHARED and registered on a userfaultfd in
 * MISSING|WP mode. Both descriptors are handed to the daemon, and
 * fm_region_create returns only once the daemon has acknowledged, so nothing
 * is touched before it is served. If the daemon dies, faulting threads wait
 * rather than read zeros.
 *
 * Restarts: a thread of libfluidmem (started with the first region, all
 * signals blocked) watches the connection. When the daemon goes away it
 * reconnects, waiting $FLUIDMEM_RECONNECT_MIN_MS doubling up to
 * $FLUIDMEM_RECONNECT_MAX_MS between tries (never giving up), and has the
 * new daemon re-adopt every region with the credential its REGISTER reply
 * carried and the same uffd and memfd. Meanwhile faults on evicted pages
 * stay blocked. A region the new daemon has no record of is lost: it is
 * never registered afresh (that would read zeros), and fm_region_status
 * says so. Each change of state is one line on stderr.
 *
 * Errors: constructors return NULL and set errno; other calls return 0 or
 * -errno. fm_client_error() gives the daemon's reason for the last refusal.
 * A client handle may be used by one thread at a time. */
#ifndef FLUIDMEM_H
#define FLUIDMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FM_DEFAULT_REGISTER_SOCKET "/run/fluidmem/register.sock"
/* Every exchange with the daemon (connect, register, unregister) waits at
 * most this long; $FLUIDMEM_TIMEOUT (whole seconds, 1..FM_MAX_TIMEOUT_S)
 * overrides it. A registration of a large region takes the daemon seconds
 * (its page state), so the bound is generous, but finite: a daemon that
 * stops answering must fail the caller's mmap, not hang it. */
#define FM_DEFAULT_TIMEOUT_S 30
#define FM_MAX_TIMEOUT_S 3600
/* Reconnection backoff after the daemon went away, in milliseconds:
 * $FLUIDMEM_RECONNECT_MIN_MS (1..FM_MAX_RECONNECT_MS) doubling up to
 * $FLUIDMEM_RECONNECT_MAX_MS (0..FM_MAX_RECONNECT_MS; 0 never reconnects,
 * the behaviour before re-adoption existed). Malformed values: EINVAL. */
#define FM_DEFAULT_RECONNECT_MIN_MS 50
#define FM_DEFAULT_RECONNECT_MAX_MS 2000
#define FM_MAX_RECONNECT_MS 600000

struct fm_client;
struct fm_region;

/* Connect to the registration socket: `path`, else $FLUIDMEM_SOCKET, else
 * FM_DEFAULT_REGISTER_SOCKET. errno: ENOENT/ECONNREFUSED (no daemon),
 * EACCES, ENOMEM, ETIMEDOUT, EINVAL (a malformed $FLUIDMEM_TIMEOUT or
 * $FLUIDMEM_RECONNECT_*_MS). */
struct fm_client *fm_connect(const char *path);
/* Destroy every region still open on this client and close it. NULL is a
 * no-op. */
void fm_disconnect(struct fm_client *c);
/* In a forked child: free the handle it inherited without a word to the
 * daemon (the connection and the regions are the parent's, and stay
 * served). Only local descriptors and memory are released; the regions'
 * mappings are the caller's business (they are MADV_DONTFORK, so a child
 * has none). Async-signal-unsafe (free): call it from a pthread_atfork
 * child handler or later. NULL is a no-op. */
void fm_client_forget(struct fm_client *c);

/* Create a region of `size` bytes (rounded up to the page size). errno:
 * EINVAL (size 0), EPERM/EPROTO/ENOSPC when the daemon refuses (see
 * fm_client_error), ENOSYS when userfaultfd is unavailable, ETIMEDOUT when
 * the daemon did not answer in time (nothing stays registered: a late
 * acceptance is undone before the next request), ENOTCONN while the daemon
 * is restarting and the connection is being re-established. The mapping is
 * MADV_DONTFORK: a fork child does not inherit it. */
struct fm_region *fm_region_create(struct fm_client *c, size_t size, const char *name);
/* Register memory the caller already mapped: `addr` (page aligned) maps
 * `size` bytes of `memfd` from offset 0, MAP_SHARED. fluidmem takes a
 * duplicate of memfd; the caller keeps its own. This is how the preload shim
 * hands over QEMU's guest RAM. The memfd must not be able to shrink: it is
 * sealed with F_SEAL_SHRINK here, so it must have been created with
 * MFD_ALLOW_SEALING (or carry that seal already), else the daemon refuses
 * (EPERM). Pages already present in the memfd are served as they are but
 * never evicted. The mapping is made MADV_DONTFORK: an unregistered mapping of
 * a served memfd (a fork child's) would read evicted pages as zeros and put
 * those zeros into the memfd. Same errors as fm_region_create, plus EBADF
 * for a bad memfd and ENOMEM when [addr, addr+size) is not mapped. */
struct fm_region *fm_region_register(struct fm_client *c, void *addr, size_t size, int memfd,
				     const char *name);

/* Tell the daemon to free the region and its stored pages, then unmap it
 * (regions from fm_region_register are unregistered but stay mapped: the
 * caller owns that mapping). The memory must not be used afterwards unless
 * the caller mapped it. NULL is a no-op. */
int fm_region_destroy(struct fm_region *r);

/* Discard [offset, offset+len) (page aligned): its memory and stored copies
 * are freed and it reads as zeros next time. Race-free: the memfd hole is
 * punched here, in the client, before the daemon hears of it. 0 or -errno
 * (EINVAL for an unaligned or out-of-range span). */
int fm_region_discard(struct fm_region *r, size_t offset, size_t len);

void *fm_region_addr(const struct fm_region *r);
size_t fm_region_size(const struct fm_region *r);
uint64_t fm_region_id(const struct fm_region *r);

/* Whether the daemon serves r: 0 yes; -EAGAIN the daemon went away and r
 * waits for re-adoption (its faults block); -ENOENT the restarted daemon
 * had no record of it, -EPERM it refused the credential, another -errno
 * another refusal: r is lost for good, and threads touching its evicted
 * pages stay blocked; -ENODEV the stopped daemon had handed every page back
 * and unregistered r (a plain `fluidmemctl shutdown`): r is ordinary
 * memory now. Thread-safe. */
int fm_region_status(const struct fm_region *r);

/* The daemon's reason for the last refusal, or a local description. */
const char *fm_client_error(const struct fm_client *c);

#ifdef __cplusplus
}
#endif
#endif
