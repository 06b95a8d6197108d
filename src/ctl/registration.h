/* ctl/registration: what fluidmemd accepts as a registration, as functions
 * without a socket, so tests and the fuzz target call them directly.
 *
 * Every check writes a reason for the client into why (at most whylen bytes,
 * always NUL-terminated) and returns 0 or -errno; the errno is what the
 * client's reply carries. None of them keeps state; all are thread-safe. */
#ifndef FM_REGISTRATION_H
#define FM_REGISTRATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/proto.h"

/* Decode one received packet: the len bytes recvmsg returned (len may be
 * larger than a request when the sender sent more), its msg_flags and the
 * number of descriptors that came with it. On success *out holds the
 * request, already checked for magic, version, length and type. Errors:
 * -EPROTO (malformed), -EPROTONOSUPPORT (other version). */
int reg_decode(const void *buf, size_t len, int msg_flags, int nfds, struct fm_reg_req *out,
	       char *why, size_t whylen);

/* The fields of a REGISTER request: two descriptors, page size, a page
 * aligned range that does not wrap, a NUL-terminated name, no flags, and at
 * most max_bytes. -EPROTO, -EINVAL or -E2BIG. */
int reg_check_fields(const struct fm_reg_req *q, int nfds, uint64_t max_bytes, char *why,
		     size_t whylen);

/* Features of a uffd from the text of /proc/self/fdinfo/FD (its
 * "API:\t%llx:%x:%llx" line: api, features, ioctls). 0 or -ENOENT. */
int reg_uffd_features_parse(const char *fdinfo, uint64_t *features);

/* fd is a userfaultfd whose API handshake asked for every feature in
 * FM_UFFD_FEATURES and none the daemon cannot serve: EVENT_FORK
 * (a fork would hand the daemon the child's uffd, and the child would share
 * the memfd unserved) and WP_ASYNC (it makes write-protect faults resolve
 * by themselves, which breaks eviction's write-protect window).
 * -EBADF or -EINVAL. */
int reg_check_uffd(int fd, char *why, size_t whylen);

/* fd is a memfd on shmem (not hugetlb, not a regular or tmpfs file), not
 * sealed against writes (evictions punch holes), sealed against shrinking
 * and against further seals (this adds F_SEAL_SHRINK | F_SEAL_SEAL when the
 * memfd allows it) and, once sealed, at least size bytes long: the daemon
 * reads victims through its own mapping, and a file that could shrink
 * would turn that read into a SIGBUS that kills the daemon. -EBADF or
 * -EPERM. */
int reg_check_memfd(int fd, uint64_t size, char *why, size_t whylen);

/* Whether the maps text (the format of /proc/PID/maps) maps the file
 * dev:ino MAP_SHARED over all of [addr, addr + size), with file offset 0 at
 * addr. true or false. */
bool reg_maps_cover(const char *maps, dev_t dev, ino_t ino, uint64_t addr, uint64_t size);

/* The client's side of a registration: process pid maps memfd at
 * [addr, addr + size) (reg_maps_cover over /proc/PID/maps), and uffd has
 * that whole range registered for write-protect (an un-protect of the range
 * succeeds; nothing is protected before the region is live). -EINVAL, or
 * -EACCES when the maps cannot be read. */
int reg_check_mapping(pid_t pid, int uffd, int memfd, uint64_t addr, uint64_t size, char *why,
		      size_t whylen);

#endif
