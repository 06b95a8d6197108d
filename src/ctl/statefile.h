/* ctl/statefile: what a restarted fluidmemd needs to re-adopt live regions
 * (docs/design.md, "Restart and re-adoption"). One directory, daemon.state_dir:
 *   secret        32 random bytes (0600): the key of every region credential
 *   generation    a counter bumped (rename-atomic) at every start: region ids
 *                 never repeat across restarts
 *   lock          flock'd while a daemon uses the directory
 *   node          the node id (daemon.node_id, or the one ZooKeeper leased)
 *                 the region files were written with, "<decimal>\n"
 *                 (rename-atomic, fsync'd): a restarted daemon serves them
 *                 as that node again (ctl/state.c)
 *   servers       memcached only: the running store server list, and the
 *                 older lists a drain still reads (rename-atomic, fsync'd;
 *                 fm_state_servers_*, below)
 *   region-<16 hex id>.state   one per registered region: a 4 KiB header,
 *                 then 1 bit per page, "a copy of this page is in the store"
 * Region files are mapped MAP_SHARED and written in place without fsync:
 * the page cache outlives the daemon (kill -9, OOM), not the kernel; the
 * same process-crash durability as the local store.
 *
 * The bitmap starts page-aligned and one stripe (FM_STRIPE_PAGES bits) is
 * exactly 64 bytes, one cache line: a shard writes only the bytes of the
 * stripes it owns, so shards share no line they write. Control thread only,
 * but for the bit helpers, which the owning shard calls. */
#ifndef FM_STATEFILE_H
#define FM_STATEFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/base.h"
#include "base/statebits.h"   /* the bitmap's bit helpers */
#include "proto/proto.h"

#define FM_STATE_MAGIC 0x54534d46u   /* "FMST" */
#define FM_STATE_VERSION 1
#define FM_STATE_HDR_BYTES 4096u
#define FM_STATE_SECRET_LEN 32
#define FM_STATE_PATH_MAX 256

/* The fixed header at offset 0 of a region file. */
struct fm_state_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t hdr_bytes;        /* FM_STATE_HDR_BYTES: where the bitmap starts */
	uint64_t region_id;
	uint64_t addr;             /* client address of page 0 */
	uint64_t size;             /* bytes */
	uint64_t npages;
	uint64_t bitmap_bytes;     /* whole stripes: 64 bytes per FM_STRIPE_PAGES pages */
	uint32_t uid;              /* owner */
	int32_t pid;               /* client pid at the last (re-)registration */
	uint64_t created_unix_ns;
	char name[FM_REGION_NAME_MAX];
};
_Static_assert(sizeof(struct fm_state_hdr) <= FM_STATE_HDR_BYTES, "header fits its page");

/* The open state directory. */
struct fm_state_dir {
	int dirfd;                 /* -1: no state directory (re-adoption off) */
	int lockfd;
	uint32_t generation;       /* this start's; 16 bits go into region ids */
	uint8_t secret[FM_STATE_SECRET_LEN];
	char path[FM_STATE_PATH_MAX];
};

/* One region file, mapped. */
struct fm_state_map {
	struct fm_state_hdr *hdr;  /* NULL when not mapped */
	uint8_t *bits;             /* hdr + FM_STATE_HDR_BYTES */
	size_t len;
};

/* The directory daemon.state_dir names: "" resolves to
 * $RUNTIME_DIRECTORY/state (systemd) or /run/fluidmem/state. */
void fm_state_dir_default(const char *configured, char *out, size_t cap);
/* Create (mode 0700) and lock the directory, create or read the secret and
 * bump the generation. 0; -EBUSY when another daemon holds it; -errno. On
 * error sd->dirfd is -1. */
int fm_state_dir_open(struct fm_state_dir *sd, const char *path);
/* The node id file (FM_STATE_NODE_FILE): region ids, store keys and
 * ZooKeeper records of the directory's regions belong to that node.
 * read: the id 0..65535; -ENOENT (no file, or no directory); -EINVAL (not
 * exactly one decimal id <= 65535 and a newline: torn or foreign); -errno.
 * write: under a temporary name, fsync, rename, fsync the directory.
 * 0 or -errno. */
#define FM_STATE_NODE_FILE "node"
int32_t fm_state_node_read(const struct fm_state_dir *sd);
/* The node file's n bytes: the id, or -EINVAL (fuzzed: tests/fuzz). */
int32_t fm_state_node_parse(const char *buf, size_t n);
int fm_state_node_write(struct fm_state_dir *sd, uint16_t node);
/* The refusal of a start configured as node `want` (an explicit
 * daemon.node_id) while n regions of node `node` wait in path: its text in
 * err (ctl/state.c logs it; fluidmemd --check prints it). */
void fm_state_node_mismatch(char *err, size_t cap, int32_t want, unsigned n, const char *path,
			    int32_t node, bool cluster);
/* What a start's node check would find in the state directory at path,
 * read only (no lock, no generation bump, no clean-up): -1 with the refusal
 * in err when regions of a node other than `want` wait there (the node
 * file's, or without a valid one the first region id's top 16 bits), else 0
 * (also when the directory is missing or unreadable: a start then runs
 * without one). want < 0 ("auto") is never refused. */
int fm_state_node_check(const char *path, int32_t want, bool cluster, char *err, size_t cap);
void fm_state_dir_close(struct fm_state_dir *sd);
static inline bool fm_state_dir_on(const struct fm_state_dir *sd)
{
	return sd->dirfd >= 0;
}

/* The credential of region `id` owned by `uid`: SipHash-2-4 under the two
 * halves of the secret, 16 bytes. Nothing per region is kept to check it. */
void fm_state_credential(const struct fm_state_dir *sd, uint64_t id, uint32_t uid,
			 uint8_t out[FM_CREDENTIAL_LEN]);
/* Constant-time comparison of two credentials. */
bool fm_state_credential_eq(const uint8_t a[FM_CREDENTIAL_LEN], const uint8_t b[FM_CREDENTIAL_LEN]);

static inline uint64_t fm_state_bitmap_bytes(uint64_t npages)
{
	return ((npages + FM_STRIPE_PAGES - 1) / FM_STRIPE_PAGES) * (FM_STRIPE_PAGES / 8);
}

/* Create region file h->region_id (header from h, bitmap all clear) and map
 * it. Written under a temporary name and renamed: a crash leaves either no
 * file or a whole one. 0 or -errno. */
int fm_state_region_create(struct fm_state_dir *sd, const struct fm_state_hdr *h,
			   struct fm_state_map *out);
/* Map an existing region file and check its header. 0, -ENOENT (no file),
 * -EINVAL (not a valid state file), -errno. */
int fm_state_region_open(struct fm_state_dir *sd, uint64_t id, struct fm_state_map *out);
/* Remove region id's file. 0 or -errno (-ENOENT when there is none). */
int fm_state_region_unlink(struct fm_state_dir *sd, uint64_t id);
void fm_state_map_close(struct fm_state_map *m);

/* Call fn(id, arg) for every region file in the directory. Returns the
 * number of files, or -errno. */
int fm_state_scan(struct fm_state_dir *sd, void (*fn)(uint64_t id, void *arg), void *arg);

/* ---- the store's server lists: file "servers" ----
 * What the shards' store handles were last told (memcached): the running
 * list and, before it, the lists still read for pages not yet moved off
 * their old owners (kv_set_servers keeps them until a drain finishes),
 * oldest first. A line "fluidmem-servers 1", then one list a line, the
 * running one last. Rewritten rename-atomic and fsync'd whenever the list
 * changes (ctl/drain.c): at start, before the shards switch, and when a
 * drain finished (the running list alone). A restart with regions waiting
 * for re-adoption opens the oldest list and replays the rest; the config's
 * store.memcached.servers names what a fresh start uses. */
#define FM_STATE_SERVER_LISTS 4      /* as many as a memcached handle keeps */
#define FM_STATE_SERVERS_MAX 1024    /* bytes of one list, NUL included (FM_MC_SERVERS_MAX) */
#define FM_STATE_SERVERS_FILE_MAX (FM_STATE_SERVER_LISTS * FM_STATE_SERVERS_MAX + 64)

struct fm_state_servers {
	unsigned n;                  /* lists held; 0: none */
	char list[FM_STATE_SERVER_LISTS][FM_STATE_SERVERS_MAX];   /* list[n - 1] runs */
};

/* Make `list` the running one: appended unless it already is, the oldest
 * dropped beyond FM_STATE_SERVER_LISTS. -ENAMETOOLONG (too long, nothing
 * changed) or 0. */
int fm_state_servers_push(struct fm_state_servers *s, const char *list);
/* Write the file (rename-atomic, fsync'd, mode 0600). 0 or -errno. */
int fm_state_servers_write(struct fm_state_dir *sd, const struct fm_state_servers *s);
/* Read it: 0, -ENOENT (none written), -EINVAL (not such a file: no lists,
 * an empty or overlong one, a control character or a space in one, more
 * than FM_STATE_SERVER_LISTS), -errno. On error s->n is 0. */
int fm_state_servers_read(struct fm_state_dir *sd, struct fm_state_servers *s);
/* The same on the file's len bytes (fuzzed: tests/fuzz), and the file's
 * bytes for s: their length (cap when they did not fit). */
int fm_state_servers_parse(const char *buf, size_t len, struct fm_state_servers *s);
size_t fm_state_servers_format(const struct fm_state_servers *s, char *buf, size_t cap);

#endif
