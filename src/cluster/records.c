/* cluster/records: one znode per region (regions/N/<id>): its encoding,
 * its writes through the queue, and listing every node's. */
#include "cluster/cluster_priv.h"

/* ---- encoding (pure) ---- */

static bool ns_ok(const char *s)
{
	if (!s[0] || strnlen(s, CLUSTER_NS_MAX) == CLUSTER_NS_MAX)
		return false;
	for (; *s; s++)
		if (*s <= ' ' || *s == 0x7f)
			return false;
	return true;
}

static bool name_ok(const char *s)
{
	if (strnlen(s, CLUSTER_NAME_MAX) == CLUSTER_NAME_MAX)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < ' ' || *s == 0x7f)
			return false;
	return true;
}

int cluster_region_encode(const struct cluster_region *r, char *buf, size_t len)
{
	int n;

	if (!ns_ok(r->ns) || !name_ok(r->name))
		return -EINVAL;
	n = snprintf(buf, len, "%d %016" PRIx64 " %u %" PRId32 " %" PRIu64 " %" PRIu64 " %s %s",
		     CLUSTER_RECORD_VERSION, r->id, r->node, r->pid, r->start_time, r->size, r->ns,
		     r->name);
	if (n < 0 || (size_t)n >= len)
		return -EINVAL;
	return n;
}

/* One space-separated field, returned NUL-terminated in f. */
static int field(const char **p, const char *end, char *f, size_t cap)
{
	size_t n = 0;

	while (*p < end && **p != ' ') {
		/* A NUL would end the C string early and hide what follows. */
		if (n + 1 >= cap || **p == '\0')
			return -EINVAL;
		f[n++] = *(*p)++;
	}
	if (n == 0 || *p >= end)
		return -EINVAL;
	(*p)++;   /* the space */
	f[n] = '\0';
	return 0;
}

int cluster_region_decode(const char *buf, size_t len, struct cluster_region *r)
{
	const char *p = buf, *end = buf + len;
	char f[CLUSTER_NS_MAX];
	uint64_t v;
	size_t nl;

	memset(r, 0, sizeof(*r));
	if (field(&p, end, f, sizeof(f)) || cl_num(f, 10, UINT32_MAX, &v) ||
	    v != CLUSTER_RECORD_VERSION)
		return -EINVAL;
	if (field(&p, end, f, sizeof(f)) || strlen(f) != 16 || cl_num(f, 16, UINT64_MAX, &r->id))
		return -EINVAL;
	if (field(&p, end, f, sizeof(f)) || cl_num(f, 10, CLUSTER_NODE_MAX, &v))
		return -EINVAL;
	r->node = (uint16_t)v;
	if (field(&p, end, f, sizeof(f)))
		return -EINVAL;
	if (f[0] == '-' ? cl_num(f + 1, 10, (uint64_t)INT32_MAX + 1, &v) : cl_num(f, 10, INT32_MAX, &v))
		return -EINVAL;
	r->pid = f[0] == '-' ? (int32_t)(-(int64_t)v) : (int32_t)v;
	if (field(&p, end, f, sizeof(f)) || cl_num(f, 10, UINT64_MAX, &r->start_time))
		return -EINVAL;
	if (field(&p, end, f, sizeof(f)) || cl_num(f, 10, UINT64_MAX, &r->size))
		return -EINVAL;
	if (field(&p, end, r->ns, sizeof(r->ns)) || !ns_ok(r->ns))
		return -EINVAL;
	nl = (size_t)(end - p);
	if (nl >= sizeof(r->name) || memchr(p, '\0', nl))
		return -EINVAL;
	memcpy(r->name, p, nl);
	r->name[nl] = '\0';
	return name_ok(r->name) ? 0 : -EINVAL;
}

static int put(struct cluster *c, const struct cluster_region *r, enum op_kind kind, bool block,
	       uint64_t *ticket)
{
	struct cluster_region mine = *r;
	char p[PATH_MAX_ZK], buf[CLUSTER_RECORD_MAX];
	int n;

	if (r->id >> 48 != c->node)
		return -EINVAL;
	mine.node = c->node;
	n = cluster_region_encode(&mine, buf, sizeof(buf));
	if (n < 0)
		return n;
	cl_path(c, p, "regions/%u/%016" PRIx64, c->node, r->id);
	return cl_enqueue(c, kind, p, buf, (size_t)n, block, ticket);
}

int cluster_region_create(struct cluster *c, const struct cluster_region *r)
{
	return put(c, r, OP_CREATE, true, NULL);
}

int cluster_region_update(struct cluster *c, const struct cluster_region *r)
{
	return put(c, r, OP_UPDATE, true, NULL);
}

int cluster_region_create_nowait(struct cluster *c, const struct cluster_region *r,
				 uint64_t *ticket)
{
	return put(c, r, OP_CREATE, false, ticket);
}

static int del(struct cluster *c, uint64_t id, bool block)
{
	char p[PATH_MAX_ZK];

	if (id >> 48 != c->node)
		return -EINVAL;
	cl_path(c, p, "regions/%u/%016" PRIx64, c->node, id);
	return cl_enqueue(c, OP_DELETE, p, NULL, 0, block, NULL);
}

int cluster_region_delete(struct cluster *c, uint64_t id)
{
	return del(c, id, true);
}

int cluster_region_delete_nowait(struct cluster *c, uint64_t id)
{
	return del(c, id, false);
}

static int list_node(zhandle_t *zh, const char *dir, int node, struct cluster_region **out,
		     size_t *n, size_t *cap)
{
	struct String_vector v = { 0, NULL };
	char p[2 * PATH_MAX_ZK], buf[CLUSTER_RECORD_MAX];
	int rc = zoo_get_children(zh, dir, 0, &v);

	if (rc == ZNONODE)
		return 0;
	if (rc != ZOK)
		return -EIO;
	for (int i = 0; i < v.count; i++) {
		int len = sizeof(buf);

		snprintf(p, sizeof(p), "%s/%s", dir, v.data[i]);
		rc = zoo_get(zh, p, 0, buf, &len, NULL);
		if (rc == ZNONODE)
			continue;
		if (rc != ZOK) {
			deallocate_String_vector(&v);
			return -EIO;
		}
		if (*n == *cap) {
			size_t nc = *cap ? *cap * 2 : 16;
			struct cluster_region *g = realloc(*out, nc * sizeof(**out));

			if (!g) {
				deallocate_String_vector(&v);
				return -ENOMEM;
			}
			*out = g;
			*cap = nc;
		}
		if (len > 0 && cluster_region_decode(buf, (size_t)len, &(*out)[*n]) == 0 &&
		    (*out)[*n].node == node)
			(*n)++;
	}
	deallocate_String_vector(&v);
	return 0;
}

int cluster_regions_list(struct cluster *c, int node, struct cluster_region **out, size_t *n)
{
	char p[PATH_MAX_ZK];
	struct String_vector v = { 0, NULL };
	size_t cap = 0;
	zhandle_t *zh = cl_read_begin(c);
	int rc = 0;

	*out = NULL;
	*n = 0;
	if (!zh)
		return -ENOTCONN;
	if (node >= 0) {
		cl_path(c, p, "regions/%d", node);
		rc = list_node(zh, p, node, out, n, &cap);
	} else {
		cl_path(c, p, "regions");
		if (zoo_get_children(zh, p, 0, &v) != ZOK)
			rc = -EIO;
		for (int i = 0; i < v.count && rc == 0; i++) {
			uint64_t id;

			if (cl_num(v.data[i], 10, CLUSTER_NODE_MAX, &id))
				continue;
			cl_path(c, p, "regions/%s", v.data[i]);
			rc = list_node(zh, p, (int)id, out, n, &cap);
		}
		deallocate_String_vector(&v);
	}
	pthread_rwlock_unlock(&c->zh_lock);
	if (rc) {
		free(*out);
		*out = NULL;
		*n = 0;
	}
	return rc;
}
