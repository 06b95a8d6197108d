/* kv/dlog: the local store's durable tier, a log of self-describing
 * records in one file per shard. Single-threaded, like the handle that owns
 * it; the index lives in the owner (local.c), which answers is_live and
 * learns of moves through the callbacks given to dlog_open.
 *
 * Layout: a 4 KiB superblock, then segments of seg_bytes. A record is a
 * 40-byte header (magic, header CRC, key, sequence number, data CRC, data
 * length, encoding) and its data, padded to 64 bytes; records never span
 * segments. Records are appended to one active segment at a time; a delete
 * overwrites only the 4-byte magic (LIVE -> DEAD), which is atomic for a
 * process crash. Compaction copies a segment's live records verbatim (same
 * sequence number) to the active segment and punches the segment out.
 * docs/local-store.md gives the crash-consistency argument. */
#ifndef FM_KV_DLOG_H
#define FM_KV_DLOG_H

#include <stdbool.h>
#include <stdint.h>

#include "kv/kv.h"

#define DLOG_HDR 40u
#define DLOG_ALIGN 64u
#define DLOG_REC_MAX (((DLOG_HDR + 4096u) + DLOG_ALIGN - 1) / DLOG_ALIGN * DLOG_ALIGN)

static inline uint32_t dlog_rec_size(uint32_t len)
{
	return (DLOG_HDR + len + DLOG_ALIGN - 1) / DLOG_ALIGN * DLOG_ALIGN;
}

/* What the owner's index answers: does key's current copy sit at loc? */
typedef bool dlog_live_fn(void *arg, struct kv_key key, uint64_t loc);
/* Compaction moved key's current copy from old to new. */
typedef void dlog_moved_fn(void *arg, struct kv_key key, uint64_t old_loc, uint64_t new_loc);
/* Open scan: a LIVE record of key at loc, sequence seq, len data bytes
 * with encoding enc. The owner keeps the newer of two copies of one key
 * (the larger seq) and calls dlog_kill(d, ...) on the other (d: the log
 * being opened, not yet returned by dlog_open). Returns 0, or a
 * negative errno that aborts the open. */
struct dlog;
typedef int dlog_found_fn(void *arg, struct dlog *d, struct kv_key key, uint64_t loc, uint64_t seq, uint32_t len,
			  uint8_t enc);

struct dlog_owner {
	dlog_live_fn *live;
	dlog_moved_fn *moved;
	dlog_found_fn *found;
	void *arg;
};

struct dlog_info {
	uint64_t seg_bytes, segs, segs_free, max_segs;
	uint64_t live_bytes;     /* records the index points at, padded size */
	uint64_t live_records;
	uint64_t file_bytes;     /* allocated on disk (st_blocks) */
	uint64_t apparent_bytes; /* the file's length */
	uint64_t appended_bytes; /* every record written, moves included */
	uint64_t moved_bytes;    /* written by compaction */
	uint64_t compactions;
	uint64_t corrupt;        /* reads that failed a check */
};

struct dlog;
/* Open (create) dir/shard-<shard>.fmkv, take an exclusive lock on it and
 * scan it, calling owner->found for every LIVE record. seg_bytes applies
 * to a new file only (an existing one keeps its own); cap_bytes bounds the
 * file (0: only the file system bounds it). NULL with errno: EBUSY another
 * process holds it, EINVAL bad superblock or sizes, or the open's errno. */
struct dlog *dlog_open(const char *dir, unsigned shard, uint64_t seg_bytes, uint64_t cap_bytes,
		       const struct dlog_owner *owner);
void dlog_close(struct dlog *d);
/* Append key's record; *loc is where it went. It is durable against a
 * process crash when this returns 0 (in the page cache; no fsync).
 * -ENOSPC: the cap or the file system is full; nothing changed. -EIO. */
int dlog_append(struct dlog *d, struct kv_key key, uint8_t enc, const void *data, uint32_t len,
		uint64_t *loc);
/* One record of a batch. */
struct dlog_item {
	struct kv_key key;
	const void *data;
	uint32_t len;
	uint8_t enc;
};
/* Bytes of records one batch writes at most (64 raw pages). */
#define DLOG_BATCH_BYTES (64u * DLOG_REC_MAX)
/* Append the first records of it[0..n) with one pwrite: as many as fit in
 * the active segment and DLOG_BATCH_BYTES, at least one (a new segment is
 * taken first when even it[0] does not fit). Returns how many were
 * appended, locs[k] for each, all durable like dlog_append; or a negative
 * errno, like dlog_append's, for it[0], when nothing was appended. The
 * caller indexes what was appended before calling again: a compaction
 * started by the next call asks the index which records are live. */
int dlog_append_many(struct dlog *d, const struct dlog_item *it, size_t n, uint64_t *locs);
/* Read the record at loc with one pread and check it: magic LIVE, header
 * CRC, key, len and data CRC. On success *data points at len bytes valid
 * until the next dlog call. -EIO when any check fails (counted corrupt). */
int dlog_read(struct dlog *d, uint64_t loc, struct kv_key key, uint32_t len, const uint8_t **data,
	      uint8_t *enc);
/* The record at loc (len data bytes) is no longer the key's copy: mark it
 * DEAD on disk and stop counting it live. */
void dlog_kill(struct dlog *d, uint64_t loc, uint32_t len);
/* The sequence number stored at loc, for the open scan's duplicate
 * resolution; 0 if unreadable. */
uint64_t dlog_seq_at(struct dlog *d, uint64_t loc);
void dlog_get_info(struct dlog *d, struct dlog_info *out);

#endif
