/* kv-bench: put/get latency, compression ratio, RAM held, write
 * amplification and file size of the local store's tiers, and of LMDB as
 * the alternative disk engine (when built with liblmdb). One thread, like a
 * shard. See bench/README.md, "The local store".
 *
 *   kv-bench [--engine local|lmdb] [--compression lz4|zstd|none]
 *            [--content random|text|zero|mixed|files:DIR|files:FILE] [--pages N]
 *            [--path DIR] [--ram-mib M] [--churn OPS] [--batch B]
 *            [--shrink PCT]
 *
 * --batch B: the load phase puts B pages per kv_mput (as an eviction batch
 * does) and reports the latency per page and the write syscalls per page.
 * --shrink PCT: after the gets, delete the first PCT % of the pages (the
 * oldest, like pages faulted back in a FIFO order) and report the RAM the
 * tier holds and the process's RSS before and after.
 */
#include "base/base.h"
#include "base/procstat.h"
#include "kv/codec.h"
#include "kv/kv.h"
#include "kv_content.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef FM_HAVE_LMDB
#include <lmdb.h>
#endif

static uint8_t *corpus; /* files:DIR: the pages, in file order */
static uint64_t corpus_pages, corpus_max;

static int add_file(const char *p, const struct stat *st, int type, struct FTW *f)
{
	(void)f;
	if (type != FTW_F || !S_ISREG(st->st_mode) || corpus_pages >= corpus_max)
		return corpus_pages >= corpus_max;
	int fd = open(p, O_RDONLY);
	if (fd < 0)
		return 0;
	for (;;) {
		uint8_t *dst = corpus + corpus_pages * FM_PAGE_SIZE;
		ssize_t n = read(fd, dst, FM_PAGE_SIZE);
		if (n <= 0 || corpus_pages >= corpus_max)
			break;
		memset(dst + n, 0, FM_PAGE_SIZE - (size_t)n); /* a file's last page */
		if (++corpus_pages >= corpus_max)
			break;
	}
	close(fd);
	return 0;
}

static const char *content = "mixed";

static void page_of(uint64_t i, uint64_t version, void *page)
{
	if (corpus) {
		memcpy(page, corpus + (i % corpus_pages) * FM_PAGE_SIZE, FM_PAGE_SIZE);
		memcpy(page, &version, 8);
		return;
	}
	uint64_t seed = fm_mix64(i * 1000003 + version) | 1;
	if (!strcmp(content, "zero")) { /* one word set, so every page differs */
		memset(page, 0, FM_PAGE_SIZE);
		memcpy(page, &seed, 8);
		return;
	}
	if (!strcmp(content, "random"))
		while (kvp_kind_of(seed) != KVP_RANDOM)
			seed++;
	else if (!strcmp(content, "text"))
		while (kvp_kind_of(seed) != KVP_TEXT)
			seed++;
	kvp_fill(page, seed);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

static void report(const char *what, uint32_t *ns, uint64_t n)
{
	double sum = 0;

	for (uint64_t i = 0; i < n; i++)
		sum += ns[i];
	qsort(ns, n, sizeof(*ns), cmp_u32);
	printf("%-6s n=%llu mean=%.2fus p50=%.2fus p99=%.2fus p99.9=%.2fus\n", what,
	       (unsigned long long)n, sum / n / 1e3, ns[n / 2] / 1e3, ns[n * 99 / 100] / 1e3,
	       ns[n * 999 / 1000] / 1e3);
}

/* This process's counters: /proc/self/io's bytes written and write
 * syscalls, /proc/self/status's RSS (KiB); 0 when unreadable. */
static uint64_t self_value(const char *file, const char *field)
{
	int64_t v = fm_proc_value(0, file, field);

	return v < 0 ? 0 : (uint64_t)v;
}

static uint64_t wchar(void)
{
	return self_value("io", "wchar");
}

static uint64_t syscw(void)
{
	return self_value("io", "syscw");
}

static uint64_t rss_kib(void)
{
	return self_value("status", "VmRSS");
}

struct engine {
	int (*put)(void *h, uint64_t i, const void *page);
	int (*get)(void *h, uint64_t i, void *page);
	int (*del)(void *h, uint64_t i);
	void *h;
};

static int l_put(void *h, uint64_t i, const void *p) { return kv_put(h, (struct kv_key){ 1, i }, p); }
static int l_get(void *h, uint64_t i, void *p) { return kv_get(h, (struct kv_key){ 1, i }, p); }
static int l_del(void *h, uint64_t i) { return kv_del(h, (struct kv_key){ 1, i }); }

#ifdef FM_HAVE_LMDB
/* LMDB with the same durability as the log: a transaction per page,
 * no fsync (MDB_NOSYNC), the page lz4-compressed like the log's. */
struct lm {
	MDB_env *env;
	MDB_dbi dbi;
	struct kv_codec *codec;
	uint8_t blob[KV_CODEC_MAX + 1];
};

static int m_put(void *h, uint64_t i, const void *page)
{
	struct lm *m = h;
	MDB_txn *t;
	uint8_t enc;
	uint32_t len = kv_codec_encode(m->codec, page, m->blob + 1, 256, &enc);
	MDB_val k = { sizeof(i), &i }, v = { len + 1, m->blob };
	int rc;

	m->blob[0] = enc;
	if (mdb_txn_begin(m->env, NULL, 0, &t))
		return -EIO;
	rc = mdb_put(t, m->dbi, &k, &v, 0);
	if (rc) {
		mdb_txn_abort(t);
		return rc == MDB_MAP_FULL ? -ENOSPC : -EIO;
	}
	return mdb_txn_commit(t) ? -EIO : 0;
}

static int m_get(void *h, uint64_t i, void *page)
{
	struct lm *m = h;
	MDB_txn *t;
	MDB_val k = { sizeof(i), &i }, v;
	int rc;

	if (mdb_txn_begin(m->env, NULL, MDB_RDONLY, &t))
		return -EIO;
	rc = mdb_get(t, m->dbi, &k, &v);
	if (rc == 0)
		rc = kv_codec_decode(m->codec, ((uint8_t *)v.mv_data)[0], (uint8_t *)v.mv_data + 1,
				     (uint32_t)v.mv_size - 1, page);
	else
		rc = -ENOENT;
	mdb_txn_abort(t);
	return rc;
}

static int m_del(void *h, uint64_t i)
{
	struct lm *m = h;
	MDB_txn *t;
	MDB_val k = { sizeof(i), &i };

	if (mdb_txn_begin(m->env, NULL, 0, &t))
		return -EIO;
	if (mdb_del(t, m->dbi, &k, NULL)) {
		mdb_txn_abort(t);
		return -ENOENT;
	}
	return mdb_txn_commit(t) ? -EIO : 0;
}
#endif

static const char usage[] =
	"usage: kv-bench [--engine local|lmdb] [--compression lz4|zstd|none]\n"
	"                [--content random|text|zero|mixed|files:DIR|files:FILE] [--pages N]\n"
	"                [--path DIR] [--ram-mib M] [--churn OPS] [--batch B] [--shrink PCT]\n"
	"Put/get latency, compression ratio, RAM held, write amplification and file size\n"
	"of the local store's tiers (and of LMDB when built with it), on one thread.\n"
	"  --path DIR     use the disk tier there (default: RAM tier only)\n"
	"  --ram-mib M    the RAM tier's cap (default 4096)\n"
	"  --churn OPS    overwrite/delete OPS random pages, then report space reuse\n"
	"  --batch B      put B pages per kv_mput, as an eviction batch does\n"
	"  --shrink PCT   delete the oldest PCT % of pages; report RAM before and after\n"
	"bench/README.md, \"The local store\", has the figures and the commands.\n";

int main(int argc, char **argv)
{
	const char *engine = "local", *comp = "lz4", *path = NULL;
	uint64_t pages = 50000, ram_mib = 4096, churn = 0, batch = 1, shrink = 0;
	static const struct option lo[] = {
		{ "engine", 1, 0, 'e' }, { "compression", 1, 0, 'c' }, { "content", 1, 0, 'k' },
		{ "pages", 1, 0, 'n' },  { "path", 1, 0, 'p' },        { "ram-mib", 1, 0, 'r' },
		{ "churn", 1, 0, 'o' },  { "batch", 1, 0, 'b' },        { "shrink", 1, 0, 's' },
		{ "help", 0, 0, 'H' },   { 0, 0, 0, 0 }
	};
	int o;

	while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (o) {
		case 'e': engine = optarg; break;
		case 'c': comp = optarg; break;
		case 'k': content = optarg; break;
		case 'n': pages = strtoull(optarg, NULL, 0); break;
		case 'p': path = optarg; break;
		case 'r': ram_mib = strtoull(optarg, NULL, 0); break;
		case 'o': churn = strtoull(optarg, NULL, 0); break;
		case 'b': batch = strtoull(optarg, NULL, 0); break;
		case 's': shrink = strtoull(optarg, NULL, 0); break;
		case 'H': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (!strncmp(content, "files:", 6)) {
		corpus_max = pages;
		corpus = malloc(pages * FM_PAGE_SIZE);
		if (!corpus || nftw(content + 6, add_file, 16, FTW_PHYS) < 0 || !corpus_pages) {
			fprintf(stderr, "cannot read %s\n", content + 6);
			return 1;
		}
	}

	struct engine e;
	struct kv_params kp;
	struct kv_store *kv = NULL;
	memset(&kp, 0, sizeof(kp));
	uint64_t rss0 = rss_kib();
	if (!strcmp(engine, "local")) {
		snprintf(kp.backend, sizeof(kp.backend), "local");
		kp.local.max_mib = ram_mib;
		kp.local.compression = !strcmp(comp, "zstd") ? FM_LOCAL_ZSTD
					: !strcmp(comp, "none") ? FM_LOCAL_NONE : FM_LOCAL_LZ4;
		kp.local.segment_mib = 16;
		if (path)
			snprintf(kp.local.path, sizeof(kp.local.path), "%s", path);
		kv = kv_open(&kp, 0);
		if (!kv) {
			perror("kv_open");
			return 1;
		}
		e = (struct engine){ l_put, l_get, l_del, kv };
	} else {
#ifdef FM_HAVE_LMDB
		static struct lm m;
		MDB_txn *t;
		if (!path || mdb_env_create(&m.env) ||
		    mdb_env_set_mapsize(m.env, (size_t)64 << 30) ||
		    mdb_env_open(m.env, path, MDB_NOSYNC | MDB_NOSUBDIR, 0600) ||
		    mdb_txn_begin(m.env, NULL, 0, &t) || mdb_dbi_open(t, NULL, 0, &m.dbi) ||
		    mdb_txn_commit(t)) {
			fprintf(stderr, "lmdb: needs --path FILE\n");
			return 1;
		}
		m.codec = kv_codec_create(!strcmp(comp, "none") ? KV_ENC_RAW : KV_ENC_LZ4);
		e = (struct engine){ m_put, m_get, m_del, &m };
#else
		fprintf(stderr, "built without liblmdb\n");
		return 1;
#endif
	}

	uint32_t *ns = malloc(pages * sizeof(*ns));
	static uint8_t page[FM_PAGE_SIZE], got[FM_PAGE_SIZE];
	uint64_t w0 = wchar(), c0 = syscw();
	if (batch > 1 && kv) {
		/* kv_mput of batch pages; each page is charged the batch's mean. */
		uint8_t *bp = malloc(batch * FM_PAGE_SIZE);
		struct kv_key *keys = malloc(batch * sizeof(*keys));
		const void **pp = malloc(batch * sizeof(*pp));
		int *res = malloc(batch * sizeof(*res));
		for (uint64_t i = 0; i < pages; i += batch) {
			uint64_t n = pages - i < batch ? pages - i : batch;
			for (uint64_t k = 0; k < n; k++) {
				page_of(i + k, 1, bp + k * FM_PAGE_SIZE);
				keys[k] = (struct kv_key){ 1, i + k };
				pp[k] = bp + k * FM_PAGE_SIZE;
			}
			uint64_t t0 = fm_now_ns();
			if (kv_mput(kv, keys, pp, res, n)) {
				fprintf(stderr, "mput at %llu failed\n", (unsigned long long)i);
				return 1;
			}
			uint32_t per = (uint32_t)((fm_now_ns() - t0) / n);
			for (uint64_t k = 0; k < n; k++)
				ns[i + k] = per;
		}
		free(bp);
		free(keys);
		free(pp);
		free(res);
	} else {
		for (uint64_t i = 0; i < pages; i++) {
			page_of(i, 1, page);
			uint64_t t0 = fm_now_ns();
			if (e.put(e.h, i, page)) {
				fprintf(stderr, "put %llu failed\n", (unsigned long long)i);
				return 1;
			}
			ns[i] = (uint32_t)(fm_now_ns() - t0);
		}
	}
	uint64_t w1 = wchar(), c1 = syscw();
	report("put", ns, pages);
	printf("write_syscalls_per_put=%.3f\n", (double)(c1 - c0) / (double)pages);
	uint64_t rs = 42;
	for (uint64_t n = 0; n < pages; n++) {
		uint64_t i = kvp_rng(&rs) % pages;
		page_of(i, 1, page);
		uint64_t t0 = fm_now_ns();
		int rc = e.get(e.h, i, got);
		ns[n] = (uint32_t)(fm_now_ns() - t0);
		if (rc || memcmp(got, page, FM_PAGE_SIZE)) {
			fprintf(stderr, "get %llu: %d or wrong data\n", (unsigned long long)i, rc);
			return 1;
		}
	}
	report("get", ns, pages);
	printf("write_bytes_per_page=%.0f rss_growth_mib=%.1f\n",
	       (double)(w1 - w0) / (double)pages, (double)(rss_kib() - rss0) / 1024);
	if (kv) {
		struct kv_stats s;
		struct kv_local_info in;
		kv_get_stats(kv, &s);
		kv_local_info(kv, &in);
		printf("pages=%llu raw_pages=%llu ratio=%.2f ram_held_mib=%.1f ram_frag=%.1f%% "
		       "meta_bytes_per_page=%.1f disk_file_mib=%.1f disk_live_mib=%.1f\n",
		       (unsigned long long)s.pages, (unsigned long long)s.raw_pages,
		       (double)s.pages * FM_PAGE_SIZE / (double)s.blob_bytes,
		       s.ram_held_bytes / 1048576.0,
		       s.ram_held_bytes ? 100.0 * (double)(s.ram_held_bytes - in.ram_blob_bytes) /
						  (double)s.ram_held_bytes
					: 0.0,
		       (double)in.meta_bytes / (double)s.pages, s.disk_file_bytes / 1048576.0,
		       s.disk_live_bytes / 1048576.0);
	}
	if (shrink && kv) {
		struct kv_local_info a, b;
		uint64_t r0 = rss_kib(), n = pages * shrink / 100;
		kv_local_info(kv, &a);
		for (uint64_t i = 0; i < n; i++)
			e.del(e.h, i);
		kv_local_info(kv, &b);
		printf("shrink %llu%%: ram_held_mib %.1f -> %.1f, chunks %llu -> %llu (released %llu), "
		       "rss_mib %.1f -> %.1f\n",
		       (unsigned long long)shrink, a.ram_held_bytes / 1048576.0,
		       b.ram_held_bytes / 1048576.0, (unsigned long long)a.chunks,
		       (unsigned long long)b.chunks, (unsigned long long)b.chunks_released,
		       r0 / 1024.0, rss_kib() / 1024.0);
	}
	if (churn) {
		/* Overwrites and delete+put pairs over the same keys. */
		uint64_t w2 = wchar(), payload = 0, worst = 0;
		for (uint64_t n = 0; n < churn; n++) {
			uint64_t i = kvp_rng(&rs) % pages;
			if (kvp_rng(&rs) % 4 == 0)
				e.del(e.h, i);
			page_of(i, n + 2, page);
			if (e.put(e.h, i, page)) {
				fprintf(stderr, "churn put failed\n");
				return 1;
			}
			payload += FM_PAGE_SIZE;
			if (kv && n % 10000 == 0) {
				struct kv_local_info in;
				kv_local_info(kv, &in);
				uint64_t r = in.disk_file_bytes * 1000 / (in.disk_live_bytes + 1);
				worst = r > worst ? r : worst;
			}
		}
		printf("churn=%llu write_bytes_per_put=%.0f\n", (unsigned long long)churn,
		       (double)(wchar() - w2) / (double)churn);
		if (kv) {
			struct kv_local_info in;
			kv_local_info(kv, &in);
			printf("after churn: file_mib=%.1f apparent_mib=%.1f live_mib=%.1f "
			       "file/live=%.2f (worst sampled %.2f) compactions=%llu "
			       "write_amp(compaction)=%.2f\n",
			       in.disk_file_bytes / 1048576.0, in.disk_apparent_bytes / 1048576.0,
			       in.disk_live_bytes / 1048576.0,
			       (double)in.disk_file_bytes / (double)in.disk_live_bytes, worst / 1000.0,
			       (unsigned long long)in.disk_compactions,
			       (double)in.disk_appended_bytes /
				       (double)(in.disk_appended_bytes - in.disk_moved_bytes));
		} else if (path) {
			struct stat st;
			if (stat(path, &st) == 0)
				printf("after churn: lmdb file_mib=%.1f\n",
				       (double)st.st_blocks * 512 / 1048576.0);
		}
		(void)payload;
	}
	kv_close(kv);
	return 0;
}
