/* kv: the generic store layer. It picks a backend, checks arguments, counts
 * every request in one place and supplies batch loops for backends that
 * have no native batching. */
#include "kv/kv.h"

#include "base/base.h"
#include "base/log.h"

#include <errno.h>
#include <string.h>

/* A new backend is one row here plus its kv_ops in its own file. */
static const struct kv_ops *const kv_backends[] = {
	&kv_local_ops,
	&kv_memcached_ops,
};

struct kv_store *kv_open(const struct kv_params *p, unsigned shard)
{
	const char *name;
	struct kv_store *kv;

	if (!p) {
		errno = EINVAL;
		return NULL;
	}
	name = p->backend;
	/* A name filling the whole array has no terminator; never read past it. */
	if (strnlen(name, sizeof(p->backend)) == sizeof(p->backend)) {
		errno = EINVAL;
		return NULL;
	}
	for (size_t i = 0; i < FM_ARRAY_SIZE(kv_backends); i++) {
		const struct kv_ops *ops = kv_backends[i];

		if (strcmp(name, ops->name) != 0)
			continue;
		kv = ops->open(p, shard);
		if (!kv)
			return NULL;
		kv->ops = ops;
		return kv;
	}
	FM_ERR("kv: unknown store backend \"%s\"", name);
	errno = EINVAL;
	return NULL;
}

void kv_close(struct kv_store *kv)
{
	if (kv)
		kv->ops->close(kv);
}

/* The only places that touch the request counters. */
static inline void count_get(struct kv_store *kv, int rc)
{
	kv->stats.gets++;
	if (rc == -ENOENT)
		kv->stats.get_misses++;
	else if (rc)
		kv->stats.errors++;
}

static inline void count_put(struct kv_store *kv, int rc)
{
	kv->stats.puts++;
	if (rc == -ENOSPC)
		kv->stats.put_full++;
	else if (rc)
		kv->stats.errors++;
}

static inline void count_del(struct kv_store *kv, int rc)
{
	kv->stats.dels++;
	if (rc && rc != -ENOENT)
		kv->stats.errors++;
}

static inline int do_get(struct kv_store *kv, struct kv_key key, void *page_out)
{
	int rc = kv->ops->get(kv, key, page_out);

	count_get(kv, rc);
	return rc;
}

static inline int do_put(struct kv_store *kv, struct kv_key key, const void *page)
{
	int rc = kv->ops->put(kv, key, page);

	count_put(kv, rc);
	return rc;
}

int kv_get(struct kv_store *kv, struct kv_key key, void *page_out)
{
	if (unlikely(!kv || !page_out))
		return -EINVAL;
	return do_get(kv, key, page_out);
}

int kv_get_checked(struct kv_store *kv, struct kv_key key, void *page_out, kv_check_fn *check,
		   void *arg)
{
	int rc;

	if (unlikely(!kv || !page_out || !check))
		return -EINVAL;
	if (kv->ops->get_checked) {
		rc = kv->ops->get_checked(kv, key, page_out, check, arg);
	} else {
		rc = kv->ops->get(kv, key, page_out);
		if (rc == 0 && !check(page_out, arg)) {
			kv->stats.stale++;
			rc = -ENOENT;
		}
	}
	count_get(kv, rc);
	return rc;
}

int kv_get_try(struct kv_store *kv, struct kv_key key, void *page_out, kv_check_fn *check,
	       void *arg)
{
	int rc;

	if (unlikely(!kv || !page_out))
		return -EINVAL;
	if (!kv->ops->get_try)
		return check ? kv_get_checked(kv, key, page_out, check, arg)
			     : kv_get(kv, key, page_out);
	rc = kv->ops->get_try(kv, key, page_out, check, arg);
	if (rc == -EAGAIN)
		kv->stats.retries++;
	else
		count_get(kv, rc);
	return rc;
}

int kv_put(struct kv_store *kv, struct kv_key key, const void *page)
{
	if (unlikely(!kv || !page))
		return -EINVAL;
	return do_put(kv, key, page);
}

int kv_del(struct kv_store *kv, struct kv_key key)
{
	int rc;

	if (unlikely(!kv))
		return -EINVAL;
	rc = kv->ops->del(kv, key);
	count_del(kv, rc);
	return rc;
}

static int first_failure(const int *results, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (results[i])
			return results[i];
	return 0;
}

static bool all_pages_set(const void *const *pages, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!pages[i])
			return false;
	return true;
}

int kv_mget(struct kv_store *kv, const struct kv_key *keys, void *const *pages, int *results,
	    size_t n)
{
	if (unlikely(!kv || (n && (!keys || !pages || !results))))
		return -EINVAL;
	/* A batch with a NULL page takes the loop, so backends never see one. */
	if (kv->ops->mget && all_pages_set((const void *const *)pages, n)) {
		kv->ops->mget(kv, keys, pages, results, n);
		for (size_t i = 0; i < n; i++)
			count_get(kv, results[i]);
	} else {
		for (size_t i = 0; i < n; i++)
			results[i] = pages[i] ? do_get(kv, keys[i], pages[i]) : -EINVAL;
	}
	return first_failure(results, n);
}

int kv_mput(struct kv_store *kv, const struct kv_key *keys, const void *const *pages,
	    int *results, size_t n)
{
	if (unlikely(!kv || (n && (!keys || !pages || !results))))
		return -EINVAL;
	if (kv->ops->mput && all_pages_set(pages, n)) {
		kv->ops->mput(kv, keys, pages, results, n);
		for (size_t i = 0; i < n; i++)
			count_put(kv, results[i]);
	} else {
		for (size_t i = 0; i < n; i++)
			results[i] = pages[i] ? do_put(kv, keys[i], pages[i]) : -EINVAL;
	}
	return first_failure(results, n);
}

int kv_mtouch(struct kv_store *kv, const struct kv_key *keys, int *results, size_t n)
{
	if (unlikely(!kv || (n && (!keys || !results))))
		return -EINVAL;
	if (kv->ops->mtouch) {
		kv->ops->mtouch(kv, keys, results, n);
		for (size_t i = 0; i < n; i++) {
			kv->stats.touches++;
			if (results[i] && results[i] != -ENOENT)
				kv->stats.errors++;
		}
	} else {
		for (size_t i = 0; i < n; i++)
			results[i] = -ENOENT;
	}
	return first_failure(results, n);
}

const char *kv_name(const struct kv_store *kv)
{
	return kv ? kv->ops->name : "none";
}

bool kv_keeps_after_get(const struct kv_store *kv)
{
	return kv && kv->ops->keeps_after_get;
}

void kv_get_stats(const struct kv_store *kv, struct kv_stats *out)
{
	if (!out)
		return;
	if (kv)
		*out = kv->stats;
	else
		memset(out, 0, sizeof(*out));
	if (kv && kv->ops->stats)
		kv->ops->stats(kv, out);
}

int64_t kv_foreach_key(struct kv_store *kv, kv_key_fn *fn, void *arg)
{
	if (!kv || !fn)
		return -EINVAL;
	return kv->ops->foreach_key ? kv->ops->foreach_key(kv, fn, arg) : -EOPNOTSUPP;
}

int64_t kv_region_delete(struct kv_store *kv, uint64_t region)
{
	if (!kv)
		return -EINVAL;
	return kv->ops->region_delete ? kv->ops->region_delete(kv, region) : -EOPNOTSUPP;
}

int kv_set_servers(struct kv_store *kv, const char *servers)
{
	if (!kv || !servers)
		return -EINVAL;
	return kv->ops->set_servers ? kv->ops->set_servers(kv, servers) : -EOPNOTSUPP;
}

int kv_rehome(struct kv_store *kv, struct kv_key key, kv_check_fn *check, void *arg, void *buf)
{
	if (!kv || !buf)
		return -EINVAL;
	return kv->ops->rehome ? kv->ops->rehome(kv, key, check, arg, buf) : 1;
}

void kv_forget_previous(struct kv_store *kv)
{
	if (kv && kv->ops->forget_previous)
		kv->ops->forget_previous(kv);
}
