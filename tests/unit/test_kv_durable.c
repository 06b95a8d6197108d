/* kv/local durability: a child process puts (single and batched) and
 * deletes pages and is killed with SIGKILL at random moments; the parent
 * reopens the store.
 * Every page whose put returned 0 (and was not deleted) reads back
 * identical, every deleted page stays deleted, and the one operation in
 * flight at the kill ends either way, never as wrong data. */
#include "config_params.h"
#include "kv_pages.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define K 1500
#define ROUNDS 30

#define BATCH 16

enum { OP_NONE, OP_PUT, OP_DEL, OP_MPUT };

/* Shared with the child; written before and after each operation. */
struct journal {
	uint64_t committed[K]; /* seed of the key's page, 0 absent */
	uint64_t key, seed;    /* the operation in flight */
	uint64_t bkey[BATCH], bseed[BATCH]; /* OP_MPUT in flight (keys may repeat) */
	unsigned bn;
	int op;
	uint64_t ops;
};

static struct kv_key key_of(uint64_t i)
{
	return (struct kv_key){ 7 + i % 2, i };
}

static void child(struct journal *j, const char *dir, uint64_t rs)
{
	struct fm_config c = kvp_cfg(1, FM_LOCAL_LZ4, dir);
	struct kv_store *kv = kv_open_cfg(&c, 0);

	if (!kv)
		_exit(2);
	for (;;) {
		uint64_t k = kvp_rng(&rs) % K;
		bool put = kvp_rng(&rs) % 10 < 7;
		uint64_t seed = kvp_rng(&rs) | 1;
		int rc;

		if (put && kvp_rng(&rs) % 4 == 0) { /* a batch, like an eviction's */
			static uint64_t buf[BATCH][FM_PAGE_SIZE / 8];
			struct kv_key keys[BATCH];
			const void *pages[BATCH];
			int res[BATCH];

			j->bn = 2 + (unsigned)(kvp_rng(&rs) % (BATCH - 1));
			for (unsigned b = 0; b < j->bn; b++) {
				j->bkey[b] = kvp_rng(&rs) % K;
				j->bseed[b] = kvp_rng(&rs) | 1;
				keys[b] = key_of(j->bkey[b]);
				kvp_fill(buf[b], j->bseed[b]);
				pages[b] = buf[b];
			}
			__atomic_store_n(&j->op, OP_MPUT, __ATOMIC_SEQ_CST);
			if (kv_mput(kv, keys, pages, res, j->bn) != 0)
				_exit(5);
			for (unsigned b = 0; b < j->bn; b++)
				j->committed[j->bkey[b]] = j->bseed[b];
			__atomic_store_n(&j->op, OP_NONE, __ATOMIC_SEQ_CST);
			__atomic_add_fetch(&j->ops, 1, __ATOMIC_SEQ_CST);
			continue;
		}
		j->key = k;
		j->seed = seed;
		__atomic_store_n(&j->op, put ? OP_PUT : OP_DEL, __ATOMIC_SEQ_CST);
		rc = put ? kvp_put(kv, key_of(k), seed) : kv_del(kv, key_of(k));
		if (put && rc != 0)
			_exit(3);
		if (!put && rc != 0 && rc != -ENOENT)
			_exit(4);
		j->committed[k] = put ? seed : 0;
		__atomic_store_n(&j->op, OP_NONE, __ATOMIC_SEQ_CST);
		__atomic_add_fetch(&j->ops, 1, __ATOMIC_SEQ_CST);
	}
}

static void verify(struct journal *j, const char *dir, unsigned round)
{
	struct fm_config c = kvp_cfg(1, FM_LOCAL_LZ4, dir);
	struct kv_store *kv = kvp_open(&c);
	static uint8_t page[FM_PAGE_SIZE];
	struct kv_stats s;

	for (uint64_t k = 0; k < K; k++) {
		uint64_t want = j->committed[k];
		int rc;

		if (j->op == OP_MPUT) {
			/* In flight: each key of the batch has its old page or one
			 * of the batch's pages for it. */
			bool in = false, ok = want && kvp_check(kv, key_of(k), want) == 0;

			for (unsigned b = 0; b < j->bn; b++) {
				if (j->bkey[b] != k)
					continue;
				in = true;
				if (!ok && kvp_check(kv, key_of(k), j->bseed[b]) == 0) {
					j->committed[k] = j->bseed[b];
					ok = true;
				}
			}
			if (in && !want && !ok) {
				rc = kv_get(kv, key_of(k), page);
				cr_assert_eq(rc, -ENOENT, "round %u: batched key %llu reads %d", round,
					     (unsigned long long)k, rc);
				continue;
			}
			if (in) {
				cr_assert(ok, "round %u: batched key %llu lost its page", round,
					  (unsigned long long)k);
				continue;
			}
		}
		if (j->op != OP_NONE && j->op != OP_MPUT && j->key == k) {
			/* In flight: the old state or the new one. */
			uint64_t alt = j->op == OP_PUT ? j->seed : 0;

			if (want && kvp_check(kv, key_of(k), want) == 0)
				continue;
			if (alt && kvp_check(kv, key_of(k), alt) == 0) {
				j->committed[k] = alt;
				continue;
			}
			rc = kv_get(kv, key_of(k), page);
			cr_assert_eq(rc, -ENOENT, "round %u: in-flight key %llu reads %d", round,
				     (unsigned long long)k, rc);
			j->committed[k] = 0;
			continue;
		}
		if (want) {
			rc = kvp_check(kv, key_of(k), want);
			cr_assert_eq(rc, 0, "round %u: key %llu (put returned 0): %d", round,
				     (unsigned long long)k, rc);
		} else {
			rc = kv_get(kv, key_of(k), page);
			cr_assert_eq(rc, -ENOENT, "round %u: deleted key %llu reads %d", round,
				     (unsigned long long)k, rc);
		}
	}
	j->op = OP_NONE;
	kv_get_stats(kv, &s);
	cr_assert_eq(s.corrupt, 0);
	kv_close(kv);
}

Test(kv_durable, kill9_at_random_moments_loses_nothing, .timeout = 120)
{
	struct journal *j = mmap(NULL, sizeof(*j), PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t rs = (uint64_t)time(NULL), total = 0;
	char dir[64];

	cr_assert_neq(j, MAP_FAILED);
	kvp_tmpdir(dir);
	cr_log_info("seed %llu", (unsigned long long)rs);
	for (unsigned round = 0; round < ROUNDS; round++) {
		uint64_t start = j->ops, want = 300 + kvp_rng(&rs) % 3000;
		int st;
		pid_t pid = fork();

		cr_assert_geq(pid, 0);
		if (pid == 0)
			child(j, dir, rs + round);
		/* Let it run a random number of operations, then a random few
		 * microseconds more, so the kill lands anywhere in an op. */
		while (__atomic_load_n(&j->ops, __ATOMIC_SEQ_CST) - start < want) {
			if (waitpid(pid, &st, WNOHANG) == pid)
				cr_assert_fail("child exited %d", WEXITSTATUS(st));
			usleep(200);
		}
		usleep((useconds_t)(kvp_rng(&rs) % 300));
		kill(pid, SIGKILL);
		cr_assert_eq(waitpid(pid, &st, 0), pid);
		cr_assert(WIFSIGNALED(st), "child exited %d", WEXITSTATUS(st));
		total += j->ops - start;
		verify(j, dir, round);
	}
	cr_log_info("%llu operations over %d kills", (unsigned long long)total, ROUNDS);
	kvp_rmdir(dir);
	munmap(j, sizeof(*j));
}

/* Zero [size - from, size - to) of the file, keeping its length: what a
 * pwrite cut short leaves where the file already extended past it (a reused
 * segment reads back as zeros). */
static void zero_tail(const char *path, uint64_t from, uint64_t to)
{
	static const uint8_t zero[4096];
	int fd = open(path, O_RDWR);
	struct stat st;

	cr_assert_geq(fd, 0);
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_eq(pwrite(fd, zero, from - to, st.st_size - (off_t)from), (ssize_t)(from - to));
	close(fd);
}

static uint64_t random_seed_after(uint64_t s)
{
	while (kvp_kind_of(s) != KVP_RANDOM)
		s++;
	return s;
}

/* The interrupted append, made deterministic. A random page is kept raw,
 * so the last record is its 40-byte header and 4096 data bytes padded to
 * 4160: its data is [size - 4120, size - 24). */
Test(kv_durable, torn_last_record_is_dropped)
{
	char dir[64], path[128];
	struct fm_config c;
	struct kv_store *kv;
	struct kv_stats s;
	static uint8_t page[FM_PAGE_SIZE];
	uint64_t last = random_seed_after(5000), over = random_seed_after(last + 1);
	int rc;

	kvp_tmpdir(dir);
	snprintf(path, sizeof(path), "%s/shard-0.fmkv", dir);
	c = kvp_cfg(1, FM_LOCAL_LZ4, dir);
	kv = kvp_open(&c);
	for (uint64_t i = 0; i < 199; i++)
		cr_assert_eq(kvp_put(kv, key_of(i), i + 1), 0);
	cr_assert_eq(kvp_put(kv, key_of(199), last), 0);
	kv_close(kv);
	/* The second half of its data never reached the file. */
	zero_tail(path, 2048, 24);
	kv = kvp_open(&c);
	for (uint64_t i = 0; i < 199; i++)
		cr_assert_eq(kvp_check(kv, key_of(i), i + 1), 0, "page %llu", (unsigned long long)i);
	cr_assert_eq(kv_get(kv, key_of(199), page), -ENOENT, "the torn put is dropped");
	kv_get_stats(kv, &s);
	cr_assert_eq(s.corrupt, 0);

	/* A torn overwrite: a crash in the middle of the append also came
	 * before the old copy was marked DEAD, so it is still there. Undo that
	 * mark by hand (the put completed here), tear the new record: the key
	 * reads its old page. */
	cr_assert_eq(kvp_put(kv, key_of(5), over), 0);
	kv_close(kv);
	{
		int fd = open(path, O_RDWR);
		static const uint32_t live = 0x4556494cu;
		off_t o;
		uint8_t h[40];
		uint64_t page_no;
		uint32_t magic;

		cr_assert_geq(fd, 0);
		for (o = 4096;; o += 64) { /* key 5's first record, now DEAD */
			cr_assert_eq(pread(fd, h, 40, o), 40);
			memcpy(&magic, h, 4);
			memcpy(&page_no, h + 16, 8);
			if (magic == 0x44414544u && page_no == 5)
				break;
		}
		cr_assert_eq(pwrite(fd, &live, 4, o), 4);
		close(fd);
	}
	zero_tail(path, 2048, 24);
	kv = kvp_open(&c);
	rc = kvp_check(kv, key_of(5), 6);
	cr_assert_eq(rc, 0, "torn overwrite: the old page must stay, got %d", rc);
	kv_close(kv);
	kvp_rmdir(dir);
}
