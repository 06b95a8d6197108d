/* kv/local tiers: compression, the disk tier, corruption, a full disk,
 * space reuse and the restart interface (kv_foreach_key, kv_region_delete).
 *
 * Each property is checked against a mirror of seeds: the store must answer
 * like a plain map, whatever tier a page sits in, and a damaged record must
 * never be returned as a page. */
#include "base/procstat.h"
#include "config_params.h"
#include "kv_pages.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define NKEYS 3000
#define REGIONS 3

static struct kv_key key_of(size_t i)
{
	return (struct kv_key){ 100 + i % REGIONS, i / REGIONS };
}

/* Random put/overwrite/get/del against the mirror, then a full check. */
static void churn(struct kv_store *kv, uint64_t *mirror, size_t nkeys, unsigned ops,
		  uint64_t *rs)
{
	for (unsigned n = 0; n < ops; n++) {
		size_t i = kvp_rng(rs) % nkeys;
		unsigned op = kvp_rng(rs) % 10;
		int rc;

		if (op < 6) {
			uint64_t seed = kvp_rng(rs) | 1;

			cr_assert_eq(kvp_put(kv, key_of(i), seed), 0, "put %zu", i);
			mirror[i] = seed;
		} else if (op < 8) {
			rc = kv_del(kv, key_of(i));
			cr_assert_eq(rc, mirror[i] ? 0 : -ENOENT);
			mirror[i] = 0;
		} else if (mirror[i]) {
			cr_assert_eq(kvp_check(kv, key_of(i), mirror[i]), 0, "get %zu", i);
		} else {
			static uint8_t page[FM_PAGE_SIZE];

			cr_assert_eq(kv_get(kv, key_of(i), page), -ENOENT);
		}
	}
}

static uint64_t check_mirror(struct kv_store *kv, const uint64_t *mirror, size_t nkeys)
{
	static uint8_t page[FM_PAGE_SIZE];
	uint64_t held = 0;

	for (size_t i = 0; i < nkeys; i++) {
		if (mirror[i]) {
			cr_assert_eq(kvp_check(kv, key_of(i), mirror[i]), 0, "key %zu", i);
			held++;
		} else {
			cr_assert_eq(kv_get(kv, key_of(i), page), -ENOENT, "key %zu", i);
		}
	}
	return held;
}

static void round_trip(int compression)
{
	static uint64_t mirror[NKEYS];
	uint64_t rs = 0x1234 + (uint64_t)compression;
	struct fm_config c = kvp_cfg(64, compression, NULL);
	struct kv_store *kv = kvp_open(&c);
	struct kv_stats s;
	uint64_t raw_want = 0;

	memset(mirror, 0, sizeof(mirror));
	churn(kv, mirror, NKEYS, 40000, &rs);
	uint64_t held = check_mirror(kv, mirror, NKEYS);
	for (size_t i = 0; i < NKEYS; i++)
		raw_want += mirror[i] && kvp_kind_of(mirror[i]) == KVP_RANDOM;
	kv_get_stats(kv, &s);
	cr_assert_eq(s.pages, held);
	cr_assert_eq(s.ram_pages, held);
	cr_assert_eq(s.bytes_stored, held * FM_PAGE_SIZE);
	if (compression == FM_LOCAL_NONE) {
		cr_assert_eq(s.raw_pages, held);
		cr_assert_eq(s.blob_bytes, held * FM_PAGE_SIZE);
	} else {
		/* Random pages stay raw; the other three kinds compress well. */
		cr_assert_eq(s.raw_pages, raw_want, "raw %llu want %llu",
			     (unsigned long long)s.raw_pages, (unsigned long long)raw_want);
		cr_assert_lt(s.blob_bytes, held * FM_PAGE_SIZE * 2 / 3);
		cr_assert_lt(s.ram_live_bytes, held * FM_PAGE_SIZE * 3 / 4);
	}
	cr_assert_geq(s.ram_held_bytes, s.ram_live_bytes);
	cr_assert_geq(s.ram_live_bytes, s.blob_bytes);
	kv_close(kv);
}

Test(kv_tiers, round_trip_lz4) { round_trip(FM_LOCAL_LZ4); }
Test(kv_tiers, round_trip_zstd) { round_trip(FM_LOCAL_ZSTD); }
Test(kv_tiers, round_trip_none) { round_trip(FM_LOCAL_NONE); }

/* RAM only: the cap bounds the RAM the tier holds, not the page count. */
Test(kv_tiers, ram_cap_counts_compressed_bytes)
{
	struct fm_config c = kvp_cfg(1, FM_LOCAL_LZ4, NULL);
	struct kv_store *kv = kvp_open(&c);
	struct kv_stats s;
	uint64_t n = 0, seed = 0;

	/* Text pages only: find seeds of that kind. */
	for (;; seed++) {
		if (kvp_kind_of(seed) != KVP_TEXT)
			continue;
		if (kvp_put(kv, (struct kv_key){ 1, n }, seed) != 0)
			break;
		n++;
	}
	kv_get_stats(kv, &s);
	cr_assert_gt(n, 256 * 3 / 2, "1 MiB held only %llu text pages", (unsigned long long)n);
	cr_assert_leq(s.ram_held_bytes, 1u << 20);
	cr_assert_eq(s.put_full, 1);
	kv_close(kv);
}

/* A RAM tier of 1 MiB under 8x as many pages: most are read from disk. */
Test(kv_tiers, ram_overflows_into_disk, .timeout = 60)
{
	static uint64_t mirror[NKEYS];
	char dir[64];
	uint64_t rs = 77;
	struct fm_config c;
	struct kv_store *kv;
	struct kv_stats s;

	kvp_tmpdir(dir);
	c = kvp_cfg(1, FM_LOCAL_LZ4, dir);
	kv = kvp_open(&c);
	memset(mirror, 0, sizeof(mirror));
	churn(kv, mirror, NKEYS, 30000, &rs);
	uint64_t held = check_mirror(kv, mirror, NKEYS);
	kv_get_stats(kv, &s);
	cr_assert_eq(s.pages, held);
	cr_assert_eq(s.disk_pages, held, "every page is on disk (write-through)");
	cr_assert_lt(s.ram_pages, held / 2, "ram %llu of %llu", (unsigned long long)s.ram_pages,
		     (unsigned long long)held);
	cr_assert_gt(s.ram_pages, 0);
	cr_assert_leq(s.ram_held_bytes, 1u << 20);
	cr_assert_eq(s.corrupt, 0);
	kv_close(kv);

	/* A clean reopen finds every page, from disk alone. */
	kv = kvp_open(&c);
	cr_assert_eq(check_mirror(kv, mirror, NKEYS), held);
	kv_get_stats(kv, &s);
	cr_assert_eq(s.ram_pages, 0);
	churn(kv, mirror, NKEYS, 5000, &rs);
	check_mirror(kv, mirror, NKEYS);
	kv_close(kv);
	kvp_rmdir(dir);
}

/* Records in the file: walk the 64-byte boundaries for LIVE headers. */
struct rec_at {
	off_t off;
	uint64_t region, page;
	uint16_t len;
};

static size_t find_records(const char *dir, struct rec_at *out, size_t max)
{
	char p[128];
	struct stat st;
	size_t n = 0;
	int fd;

	snprintf(p, sizeof(p), "%s/shard-0.fmkv", dir);
	fd = open(p, O_RDONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(fstat(fd, &st), 0);
	for (off_t o = 4096; o + 40 <= st.st_size && n < max; o += 64) {
		uint8_t h[40];
		uint32_t magic;

		cr_assert_eq(pread(fd, h, 40, o), 40);
		memcpy(&magic, h, 4);
		if (magic != 0x4556494cu)
			continue;
		memcpy(&out[n].region, h + 8, 8);
		memcpy(&out[n].page, h + 16, 8);
		memcpy(&out[n].len, h + 36, 2);
		out[n].off = o;
		n++;
	}
	close(fd);
	return n;
}

static void flip_byte(const char *dir, off_t off)
{
	char p[128];
	uint8_t b;
	int fd;

	snprintf(p, sizeof(p), "%s/shard-0.fmkv", dir);
	fd = open(p, O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &b, 1, off), 1);
	b ^= 0x20;
	cr_assert_eq(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

Test(kv_tiers, corrupt_record_is_never_returned, .timeout = 60)
{
	enum { N = 600 };
	static struct rec_at recs[N + 8];
	char dir[64];
	struct fm_config c;
	struct kv_store *kv;
	struct kv_stats s;
	static uint8_t page[FM_PAGE_SIZE];

	kvp_tmpdir(dir);
	c = kvp_cfg(1, FM_LOCAL_LZ4, dir);
	kv = kvp_open(&c);
	for (uint64_t i = 0; i < N; i++)
		cr_assert_eq(kvp_put(kv, (struct kv_key){ 5, i }, 1000 + i), 0);
	/* Early pages have lost their RAM copy: flip a data byte under the
	 * open store, and the next get reads the damaged record. */
	size_t n = find_records(dir, recs, N + 8);
	cr_assert_eq(n, N);
	cr_assert_eq(recs[0].page, 0);
	flip_byte(dir, recs[0].off + 40 + recs[0].len / 2);
	cr_assert_eq(kv_get(kv, (struct kv_key){ 5, 0 }, page), -EIO);
	kv_get_stats(kv, &s);
	cr_assert_eq(s.corrupt, 1);
	cr_assert_eq(s.errors, 1);
	kv_close(kv);

	/* After a restart: a damaged data byte is -EIO, a damaged header makes
	 * the key unknown (-ENOENT); every other page is intact. */
	flip_byte(dir, recs[1].off + 40 + recs[1].len - 1);
	flip_byte(dir, recs[2].off + 17); /* the page number */
	flip_byte(dir, recs[3].off + 36); /* the length */
	kv = kvp_open(&c);
	cr_assert_eq(kv_get(kv, (struct kv_key){ 5, 0 }, page), -EIO);
	cr_assert_eq(kv_get(kv, (struct kv_key){ 5, recs[1].page }, page), -EIO);
	cr_assert_eq(kv_get(kv, (struct kv_key){ 5, recs[2].page }, page), -ENOENT);
	cr_assert_eq(kv_get(kv, (struct kv_key){ 5, recs[3].page }, page), -ENOENT);
	for (uint64_t i = 4; i < N; i++)
		cr_assert_eq(kvp_check(kv, (struct kv_key){ 5, recs[i].page }, 1000 + recs[i].page),
			     0, "page %llu", (unsigned long long)recs[i].page);
	/* A damaged page is replaced by the next put of its key. */
	cr_assert_eq(kvp_put(kv, (struct kv_key){ 5, 0 }, 42), 0);
	cr_assert_eq(kvp_check(kv, (struct kv_key){ 5, 0 }, 42), 0);
	kv_close(kv);
	kvp_rmdir(dir);
}

/* The disk cap: 4 segments of 1 MiB, one kept for compaction. A refused
 * put changes nothing; deletes make room again. */
Test(kv_tiers, disk_full_refuses_and_loses_nothing, .timeout = 60)
{
	enum { MAXK = 2000 };
	static uint64_t mirror[MAXK];
	char dir[64];
	struct fm_config c;
	struct kv_store *kv;
	struct kv_stats s;
	uint64_t n = 0, seed;
	int rc;

	kvp_tmpdir(dir);
	c = kvp_cfg(1, FM_LOCAL_LZ4, dir);
	c.local_disk_mib = 4;
	kv = kvp_open(&c);
	memset(mirror, 0, sizeof(mirror));
	/* Random pages: 4160 bytes on disk each, about 250 per segment. */
	for (seed = 1;; seed++) { /* seed 0 means absent in the mirror */
		if (kvp_kind_of(seed) != KVP_RANDOM)
			continue;
		rc = kvp_put(kv, key_of(n), seed);
		if (rc)
			break;
		mirror[n++] = seed;
		cr_assert_lt(n, MAXK);
	}
	cr_assert_eq(rc, -ENOSPC);
	cr_assert_gt(n, 2 * 240);
	cr_assert_leq(n, 3 * 253);
	/* An overwrite refused keeps the old page. */
	for (seed++; kvp_kind_of(seed) != KVP_RANDOM; seed++)
		;
	cr_assert_eq(kvp_put(kv, key_of(0), seed), -ENOSPC);
	cr_assert_eq(check_mirror(kv, mirror, MAXK), n);
	cr_assert_leq(kvp_file_size(dir), 4096 + (4u << 20));
	kv_get_stats(kv, &s);
	cr_assert_eq(s.put_full, 2);
	/* Delete two thirds: compaction makes room, puts succeed again. */
	for (uint64_t i = 0; i < n; i++)
		if (i % 3) {
			cr_assert_eq(kv_del(kv, key_of(i)), 0);
			mirror[i] = 0;
		}
	for (uint64_t i = 0; i < n; i++)
		if (i % 3 == 1) {
			cr_assert_eq(kvp_put(kv, key_of(i), i + 7), 0, "put %llu after deletes",
				     (unsigned long long)i);
			mirror[i] = i + 7;
		}
	check_mirror(kv, mirror, MAXK);
	kv_get_stats(kv, &s);
	cr_assert_gt(s.compactions, 0);
	kv_close(kv);
	kv = kvp_open(&c);
	check_mirror(kv, mirror, MAXK);
	kv_close(kv);
	kvp_rmdir(dir);
}

/* Stated bound (docs/local-store.md): allocated file bytes <= 2 x live
 * record bytes + 3 segments, after any number of overwrites and deletes. */
Test(kv_tiers, space_reused_within_bound, .timeout = 60)
{
	enum { K = 2000, OPS = 60000 };
	static uint64_t mirror[K];
	char dir[64];
	uint64_t rs = 5, worst = 0;
	struct fm_config c;
	struct kv_store *kv;
	struct kv_local_info in;

	kvp_tmpdir(dir);
	c = kvp_cfg(1, FM_LOCAL_LZ4, dir);
	kv = kvp_open(&c);
	memset(mirror, 0, sizeof(mirror));
	for (unsigned r = 0; r < OPS / 5000; r++) {
		churn(kv, mirror, K, 5000, &rs);
		cr_assert_eq(kv_local_info(kv, &in), 0);
		uint64_t bound = 2 * in.disk_live_bytes + 3 * in.disk_seg_bytes + 4096;
		cr_assert_leq(in.disk_file_bytes, bound, "file %llu > bound %llu (live %llu)",
			      (unsigned long long)in.disk_file_bytes, (unsigned long long)bound,
			      (unsigned long long)in.disk_live_bytes);
		cr_assert_leq(in.disk_apparent_bytes, bound + 2 * in.disk_seg_bytes);
		if (in.disk_file_bytes * 100 / (in.disk_live_bytes + 1) > worst)
			worst = in.disk_file_bytes * 100 / (in.disk_live_bytes + 1);
	}
	cr_assert_gt(in.disk_compactions, 0);
	cr_log_info("file/live worst %llu%%, write amplification %.2f",
		    (unsigned long long)worst,
		    (double)in.disk_appended_bytes /
			    (double)(in.disk_appended_bytes - in.disk_moved_bytes));
	check_mirror(kv, mirror, K);
	kv_close(kv);
	kv = kvp_open(&c);
	check_mirror(kv, mirror, K);
	kv_close(kv);
	kvp_rmdir(dir);
}

struct count_arg {
	uint64_t per_region[REGIONS];
	uint64_t other;
};

static void count_key(void *arg, struct kv_key key)
{
	struct count_arg *a = arg;

	if (key.region >= 100 && key.region < 100 + REGIONS)
		a->per_region[key.region - 100]++;
	else
		a->other++;
}

static void region_ops(const char *dir)
{
	static uint64_t mirror[NKEYS];
	uint64_t rs = 9;
	struct fm_config c = kvp_cfg(dir ? 1 : 64, FM_LOCAL_LZ4, dir);
	struct kv_store *kv = kvp_open(&c);
	struct count_arg a = { 0 };
	uint64_t want[REGIONS] = { 0 };

	memset(mirror, 0, sizeof(mirror));
	churn(kv, mirror, NKEYS, 8000, &rs);
	for (size_t i = 0; i < NKEYS; i++)
		want[i % REGIONS] += mirror[i] != 0;
	cr_assert_eq(kv_foreach_key(kv, count_key, &a),
		     (int64_t)(want[0] + want[1] + want[2]));
	for (int r = 0; r < REGIONS; r++)
		cr_assert_eq(a.per_region[r], want[r]);
	cr_assert_eq(a.other, 0);
	cr_assert_eq(kv_region_delete(kv, 101), (int64_t)want[1]);
	cr_assert_eq(kv_region_delete(kv, 101), 0);
	for (size_t i = 1; i < NKEYS; i += REGIONS)
		mirror[i] = 0;
	check_mirror(kv, mirror, NKEYS);
	kv_close(kv);
	if (!dir)
		return;
	kv = kvp_open(&c); /* the region delete is durable */
	check_mirror(kv, mirror, NKEYS);
	memset(&a, 0, sizeof(a));
	cr_assert_eq(kv_foreach_key(kv, count_key, &a), (int64_t)(want[0] + want[2]));
	kv_close(kv);
}

Test(kv_tiers, region_enumerate_and_delete_ram) { region_ops(NULL); }

Test(kv_tiers, region_enumerate_and_delete_disk, .timeout = 60)
{
	char dir[64];

	kvp_tmpdir(dir);
	region_ops(dir);
	kvp_rmdir(dir);
}

Test(kv_tiers, one_process_per_file_and_any_codec_reads_back)
{
	char dir[64];
	struct fm_config c;
	struct kv_store *kv, *kv2;

	kvp_tmpdir(dir);
	c = kvp_cfg(1, FM_LOCAL_ZSTD, dir);
	kv = kvp_open(&c);
	for (uint64_t i = 0; i < 100; i++)
		cr_assert_eq(kvp_put(kv, (struct kv_key){ 1, i }, i + 1), 0);
	errno = 0;
	kv2 = kv_open_cfg(&c, 0); /* flock is per open file: a second open is refused */
	cr_assert_null(kv2);
	cr_assert_eq(errno, EBUSY);
	kv_close(kv);
	/* Reopened with another setting: old pages decode by their own tag. */
	c.local_compression = FM_LOCAL_LZ4;
	kv = kvp_open(&c);
	for (uint64_t i = 0; i < 100; i++)
		cr_assert_eq(kvp_check(kv, (struct kv_key){ 1, i }, i + 1), 0);
	kv_close(kv);
	kvp_rmdir(dir);
}

Test(kv_tiers, memcached_has_no_enumeration)
{
	cr_assert_eq(kv_foreach_key(NULL, count_key, NULL), -EINVAL);
	cr_assert_eq(kv_region_delete(NULL, 1), -EINVAL);
}

/* The file system refuses (here RLIMIT_FSIZE: a short write, then EFBIG,
 * like a full disk): the put answers -ENOSPC, earlier pages stay readable,
 * and the partial record never shows up, not even after a reopen. */
Test(kv_tiers, file_system_full_refuses_and_loses_nothing, .timeout = 60)
{
	enum { MAXK = 2000 };
	static uint64_t mirror[MAXK];
	char dir[64];
	struct fm_config c;
	struct kv_store *kv;
	struct rlimit lim = { .rlim_cur = 4096 + (2u << 20) + 1000, .rlim_max = RLIM_INFINITY };
	uint64_t n = 0, seed;
	int rc;

	signal(SIGXFSZ, SIG_IGN);
	kvp_tmpdir(dir);
	c = kvp_cfg(1, FM_LOCAL_LZ4, dir);
	kv = kvp_open(&c);
	memset(mirror, 0, sizeof(mirror));
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	for (seed = 1;; seed++) {
		rc = kvp_put(kv, key_of(n), seed);
		if (rc)
			break;
		mirror[n++] = seed;
		cr_assert_lt(n, MAXK);
	}
	cr_assert_eq(rc, -ENOSPC);
	cr_assert_eq(kvp_put(kv, key_of(0), seed + 1), -ENOSPC, "an overwrite is refused too");
	cr_assert_eq(kvp_put(kv, key_of(n), seed + 2), -ENOSPC);
	cr_assert_eq(check_mirror(kv, mirror, MAXK), n);
	kv_close(kv);
	lim.rlim_cur = RLIM_INFINITY;
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	kv = kvp_open(&c);
	cr_assert_eq(check_mirror(kv, mirror, MAXK), n);
	struct kv_stats s;
	kv_get_stats(kv, &s);
	cr_assert_eq(s.corrupt, 0);
	cr_assert_eq(kvp_put(kv, key_of(n), 5), 0, "room again");
	kv_close(kv);
	kvp_rmdir(dir);
}

/* This process's counter FIELD of /proc/self/FILE. */
static uint64_t self_value(const char *file, const char *field)
{
	int64_t v = fm_proc_value(0, file, field);

	cr_assert_geq(v, 0, "/proc/self/%s: no %s", file, field);
	return (uint64_t)v;
}

static uint64_t rss_kib(void)
{
	return self_value("status", "VmRSS");
}

/* The RAM tier gives memory back: a chunk whose last page leaves is
 * unmapped. Two regions stored one after the other: deleting the second
 * empties its chunks (held and RSS fall), deleting everything leaves no
 * chunk; new puts map chunks again and read back. */
Test(kv_tiers, ram_given_back_when_the_tier_shrinks, .timeout = 60)
{
	enum { N = 6000 };
	struct fm_config c = kvp_cfg(64, FM_LOCAL_LZ4, NULL);
	struct kv_store *kv = kvp_open(&c);
	struct kv_local_info full, half, none;
	uint64_t rss_full, rss_half;

	for (uint64_t r = 1; r <= 2; r++)
		for (uint64_t i = 0; i < N; i++)
			cr_assert_eq(kvp_put(kv, (struct kv_key){ r, i }, r * N + i + 1), 0);
	cr_assert_eq(kv_local_info(kv, &full), 0);
	rss_full = rss_kib();
	cr_assert_eq(kv_region_delete(kv, 2), N);
	cr_assert_eq(kv_local_info(kv, &half), 0);
	rss_half = rss_kib();
	cr_log_info("held %llu -> %llu KiB, chunks %llu -> %llu, RSS %llu -> %llu KiB",
		    (unsigned long long)full.ram_held_bytes >> 10,
		    (unsigned long long)half.ram_held_bytes >> 10, (unsigned long long)full.chunks,
		    (unsigned long long)half.chunks, (unsigned long long)rss_full,
		    (unsigned long long)rss_half);
	cr_assert_gt(half.chunks_released, 0);
	/* Region 2's chunks held only region 2; a class's last chunk may hold both. */
	cr_assert_lt(half.ram_held_bytes, full.ram_held_bytes * 6 / 10 + (16u << 21) / 8);
	cr_assert_lt(half.chunks, full.chunks);
	cr_assert_lt(rss_half + (full.ram_held_bytes - half.ram_held_bytes) / 1024 / 2, rss_full,
		     "RSS did not fall with held");
	for (uint64_t i = 0; i < N; i++)
		cr_assert_eq(kvp_check(kv, (struct kv_key){ 1, i }, N + i + 1), 0);
	cr_assert_eq(kv_region_delete(kv, 1), N);
	cr_assert_eq(kv_local_info(kv, &none), 0);
	cr_assert_eq(none.chunks, 0);
	cr_assert_eq(none.ram_held_bytes, 0);
	cr_assert_eq(none.ram_live_bytes, 0);
	for (uint64_t i = 0; i < N; i++)
		cr_assert_eq(kvp_put(kv, (struct kv_key){ 3, i }, i + 7), 0);
	for (uint64_t i = 0; i < N; i++)
		cr_assert_eq(kvp_check(kv, (struct kv_key){ 3, i }, i + 7), 0);
	kv_close(kv);
}

/* With a full RAM tier, memory moves between size classes once a class
 * empties a chunk: text pages fill the tier, are deleted, and random pages
 * (another class) fit again. Before chunks were unmapped, the first class
 * kept its chunks and the second found no room. */
Test(kv_tiers, ram_moves_between_classes, .timeout = 60)
{
	struct fm_config c = kvp_cfg(4, FM_LOCAL_LZ4, NULL);
	struct kv_store *kv = kvp_open(&c);
	uint64_t n = 0, m = 0, seed;

	for (seed = 1;; seed++) {
		if (kvp_kind_of(seed) != KVP_TEXT)
			continue;
		if (kvp_put(kv, (struct kv_key){ 1, n }, seed) != 0)
			break;
		n++;
	}
	cr_assert_gt(n, 1024);
	cr_assert_eq(kv_region_delete(kv, 1), (int64_t)n);
	for (seed = 1;; seed++) {
		if (kvp_kind_of(seed) != KVP_RANDOM)
			continue;
		if (kvp_put(kv, (struct kv_key){ 2, m }, seed) != 0)
			break;
		m++;
	}
	cr_assert_geq(m, 1000, "only %llu raw pages fit in 4 MiB", (unsigned long long)m);
	kv_close(kv);
}

static uint64_t write_syscalls(void)
{
	return self_value("io", "syscw");
}

/* kv_mput with the disk tier: one write for a batch of new pages (not
 * one per page), the in-order semantics of a repeated key, overwrites
 * killing their old records, and everything back after a reopen. */
Test(kv_tiers, mput_is_one_write_per_batch, .timeout = 60)
{
	enum { B = 32, ROUNDS = 200 };
	static uint64_t mirror[NKEYS];
	static uint64_t buf[B][FM_PAGE_SIZE / 8];
	char dir[64];
	uint64_t rs = 3, w0, writes;
	struct fm_config c;
	struct kv_store *kv;
	struct kv_key keys[B];
	const void *pages[B];
	int res[B];

	kvp_tmpdir(dir);
	c = kvp_cfg(1, FM_LOCAL_LZ4, dir);
	kv = kvp_open(&c);
	memset(mirror, 0, sizeof(mirror));
	/* New keys only: count the writes. */
	w0 = write_syscalls();
	for (uint64_t b = 0; b < B; b++) {
		keys[b] = key_of(b);
		mirror[b] = b + 1;
		kvp_fill(buf[b], mirror[b]);
		pages[b] = buf[b];
	}
	cr_assert_eq(kv_mput(kv, keys, pages, res, B), 0);
	writes = write_syscalls() - w0;
	cr_assert_leq(writes, 2, "%llu writes for one batch", (unsigned long long)writes);
	/* Random batches: repeats, overwrites, segment ends, compaction. */
	for (unsigned r = 0; r < ROUNDS; r++) {
		unsigned n = 1 + (unsigned)(kvp_rng(&rs) % B);
		uint64_t want[B];
		size_t idx[B];

		for (unsigned b = 0; b < n; b++) {
			idx[b] = kvp_rng(&rs) % (NKEYS / 4);
			keys[b] = key_of(idx[b]);
			want[b] = kvp_rng(&rs) | 1;
			kvp_fill(buf[b], want[b]);
		}
		cr_assert_eq(kv_mput(kv, keys, pages, res, n), 0);
		for (unsigned b = 0; b < n; b++) {
			cr_assert_eq(res[b], 0);
			mirror[idx[b]] = want[b]; /* in order: the last one wins */
		}
		if (kvp_rng(&rs) % 8 == 0) {
			cr_assert_eq(kv_del(kv, keys[0]), 0);
			mirror[idx[0]] = 0;
		}
	}
	uint64_t held = check_mirror(kv, mirror, NKEYS);
	struct kv_stats s;
	kv_get_stats(kv, &s);
	cr_assert_eq(s.pages, held);
	cr_assert_gt(s.compactions, 0);
	kv_close(kv);
	kv = kvp_open(&c);
	cr_assert_eq(check_mirror(kv, mirror, NKEYS), held);
	kv_close(kv);
	kvp_rmdir(dir);
}
