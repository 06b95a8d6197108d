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

#include <linux/userfaultfd.h>
#include <stdint.h>

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

#endif
