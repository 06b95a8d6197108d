/* Helpers for the local store's tests: configs, a checked get, and a
 * private directory for the disk tier. Page contents: kv_content.h. */
#ifndef FM_TEST_KV_PAGES_H
#define FM_TEST_KV_PAGES_H

#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_params.h"
#include "base/base.h"
#include "ctl/config.h"
#include "kv/kv.h"
#include "kv_content.h"

static inline struct fm_config kvp_cfg(uint64_t max_mib, int compression, const char *path)
{
	struct fm_config c;

	memset(&c, 0, sizeof(c));
	snprintf(c.store_backend, sizeof(c.store_backend), "local");
	c.local_max_mib = max_mib;
	c.local_compression = compression;
	if (path)
		snprintf(c.local_path, sizeof(c.local_path), "%s", path);
	c.local_segment_mib = 1;
	return c;
}

static inline struct kv_store *kvp_open(const struct fm_config *c)
{
	struct kv_store *kv = kv_open_cfg(c, 0);

	cr_assert_not_null(kv, "kv_open: errno %d", errno);
	return kv;
}

/* 0 when key reads back as seed's page, else the get's error or 1. */
static inline int kvp_check(struct kv_store *kv, struct kv_key key, uint64_t seed)
{
	static uint64_t got[FM_PAGE_SIZE / 8], want[FM_PAGE_SIZE / 8];
	int rc = kv_get(kv, key, got);

	if (rc)
		return rc;
	kvp_fill(want, seed);
	return memcmp(got, want, FM_PAGE_SIZE) ? 1 : 0;
}

static inline int kvp_put(struct kv_store *kv, struct kv_key key, uint64_t seed)
{
	static uint64_t buf[FM_PAGE_SIZE / 8];

	kvp_fill(buf, seed);
	return kv_put(kv, key, buf);
}

static inline void kvp_tmpdir(char out[64])
{
	snprintf(out, 64, "/tmp/fm-kvtest-XXXXXX");
	cr_assert_not_null(mkdtemp(out));
}

static inline void kvp_rmdir(const char *dir)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

static inline uint64_t kvp_file_size(const char *dir)
{
	char p[128];
	FILE *f;
	long n;

	snprintf(p, sizeof(p), "%s/shard-0.fmkv", dir);
	f = fopen(p, "rb");
	if (!f)
		return 0;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fclose(f);
	return (uint64_t)n;
}

#endif
