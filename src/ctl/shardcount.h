/* ctl/shardcount: the shard count the local store's files were written with
 * (docs/design.md, "Stripe ownership survives the restart"). A stripe's
 * pages live in shard-N.fmkv of the shard owning it, (stripe + rot(id)) %
 * shards.count: a daemon restarted with another count would look every
 * stored page up in the wrong file and poison it. The count is kept in
 * <store.local.path>/shard-count, next to the files it describes (the
 * state_dir's regions keep their pages there too, nowhere else). */
#ifndef FM_CTL_SHARDCOUNT_H
#define FM_CTL_SHARDCOUNT_H

#include <stddef.h>
#include <stdint.h>

#define FM_SHARD_COUNT_FILE "shard-count"

/* The count the store under dir was written with: its shard-count file, or,
 * for a store older than that file, one more than the highest shard-N.fmkv.
 * 0 when dir holds neither (a new store); -errno when unreadable/corrupt. */
int64_t fm_shard_count_recorded(const char *dir);

/* 0 when a daemon with `count` shards may open the store under dir (or the
 * config has no local store path); -1 with a message in err (naming both
 * counts and the two ways out) when its files were written with another. */
int fm_shard_count_check(const char *backend, const char *dir, uint32_t count, char *err,
			 size_t cap);

/* Records `count` for dir (write, fsync, rename, fsync the directory), so
 * the check holds after a crash. No-op without a local store path. */
int fm_shard_count_record(const char *backend, const char *dir, uint32_t count);

#endif
