/* proto: the contract between libfluidmem and fluidmemd, in one neutral
 * header both sides include (the client never includes the daemon's modules).
 *
 * Registration is a SOCK_SEQPACKET unix socket; each message is one packet.
 *
 * REGISTER  client -> daemon: struct fm_reg_req + SCM_RIGHTS [uffd, memfd]
 * UNREGISTER client -> daemon: struct fm_reg_req with region_id
 * READOPT   client -> daemon: struct fm_reg_req with region_id, credential,
 *           addr, size and name as first registered + SCM_RIGHTS [uffd, memfd]
 *           (the same descriptors the client kept since REGISTER)
 * reply     daemon -> client: struct fm_reg_reply (status 0 or -errno, and a
 *           reason for refusals); a REGISTER's reply carries the region's
 *           credential, which the client keeps for READOPT
 *
 * The connection stays open for the client's lifetime: when the client
 * closes it, the daemon frees every region registered on it. When the daemon
 * goes away instead (crash, upgrade), the client keeps its uffd and memfd,
 * its faulting threads stay blocked, and it reconnects and sends READOPT for
 * each region; the restarted daemon checks the credential and serves the
 * region again with its pages intact. READOPT replies:
 *   0        re-adopted: faults are served again
 *   -EAGAIN  the daemon still holds the region from the old connection or is
 *            still starting: retry later
 *   -ENOENT  the daemon has no record of the region (its state is gone):
 *            nothing can bring the stored pages back
 *   -EPERM   wrong credential or owner
 * Bump FM_PROTO_VERSION on any change; the daemon refuses other versions with
 * a reason. */
#ifndef FM_PROTO_H
#define FM_PROTO_H

#include <errno.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "base/base.h"   /* FM_PAGE_SIZE: the only page_size a request may carry */

#define FM_PROTO_MAGIC 0x464d5247u   /* "FMRG" */
#define FM_PROTO_VERSION 2
#define FM_REGION_NAME_MAX 64   /* the name field, NUL included */
#define FM_CREDENTIAL_LEN 16    /* bytes of a region's ownership credential */

/* The uffd features a client asks for on every region's uffd, and exactly
 * the ones the daemon requires of a handed-over uffd. */
#define FM_UFFD_FEATURES                                                                   \
	(UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_EVENT_REMOVE | \
	 UFFD_FEATURE_EVENT_UNMAP)
/* A fork child would get its own uffd for the same memfd: a mapping nobody
 * serves, whose reads fill evicted pages with zeros (README, "What must not
 * share a region's memfd"). Served mappings are MADV_DONTFORK instead. */
_Static_assert(!(FM_UFFD_FEATURES & UFFD_FEATURE_EVENT_FORK), "never ask for fork events");

enum fm_reg_type {
	FM_REG_REGISTER = 1,
	FM_REG_UNREGISTER = 2,
	FM_REG_REPLY = 3,
	FM_REG_READOPT = 4,
};

struct fm_reg_req {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint32_t length;       /* sizeof(struct fm_reg_req) as the sender knows it */
	uint32_t page_size;
	uint64_t addr;         /* where the region is mapped in the client */
	uint64_t size;         /* bytes, a multiple of page_size */
	uint64_t region_id;    /* UNREGISTER and READOPT */
	uint32_t flags;        /* none defined yet; must be 0 */
	uint32_t reserved;
	char name[FM_REGION_NAME_MAX];   /* NUL-terminated */
	uint8_t credential[FM_CREDENTIAL_LEN];   /* READOPT only; zero otherwise */
};
_Static_assert(sizeof(struct fm_reg_req) == 128, "registration request layout is versioned");

struct fm_reg_reply {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	int32_t status;        /* 0 or -errno */
	uint32_t reserved;
	uint64_t region_id;
	uint8_t credential[FM_CREDENTIAL_LEN];   /* REGISTER's reply: keep it for READOPT */
	char reason[160];
};
_Static_assert(sizeof(struct fm_reg_reply) == 200, "registration reply layout is versioned");

#define FM_PROTO_FDS_MAX 8   /* descriptors fm_proto_send_fds attaches at most */

/* Send one packet buf[0..len) on sock with fds[0..nfds) attached
 * (SCM_RIGHTS; nothing attached when nfds is 0), without SIGPIPE. sendmsg's
 * result: -1 with errno set on failure, EINVAL for nfds outside
 * 0..FM_PROTO_FDS_MAX. libfluidmem sends REGISTER and READOPT with it, and
 * tests that speak the raw protocol send what the library never would. */
static inline ssize_t fm_proto_send_fds(int sock, const void *buf, size_t len, const int *fds,
					int nfds)
{
	char cbuf[CMSG_SPACE(sizeof(int) * FM_PROTO_FDS_MAX)];
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds < 0 || nfds > FM_PROTO_FDS_MAX) {
		errno = EINVAL;
		return -1;
	}
	memset(cbuf, 0, sizeof(cbuf));
	if (nfds > 0) {
		struct cmsghdr *cm;

		mh.msg_control = cbuf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	return sendmsg(sock, &mh, MSG_NOSIGNAL);
}

#endif
