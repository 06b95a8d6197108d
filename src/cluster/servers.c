/* cluster/servers: the store's server list in a watched znode. */
#include "cluster/cluster_priv.h"

/* ---- servers ---- */

void cl_read_servers(struct cluster *c)
{
	char p[PATH_MAX_ZK];
	char *buf = malloc(SERVERS_MAX);
	int len = SERVERS_MAX - 1, rc;

	if (!buf)
		return;
	cl_path(c, p, "servers");
	for (;;) {
		rc = zoo_get(c->zh, p, 1, buf, &len, NULL);
		if (rc != ZNONODE)
			break;
		/* No list yet: watch for its creation. If it was created
		 * between the two calls, exists finds it (and its watch now
		 * waits for a change): read it, or that creation is missed. */
		rc = zoo_exists(c->zh, p, 1, NULL);
		if (rc != ZOK) {
			free(buf);
			return;
		}
		len = SERVERS_MAX - 1;
	}
	if (rc != ZOK || len < 0) {
		free(buf);
		return;
	}
	buf[len] = '\0';
	if (c->servers_seen && !strcmp(c->servers_seen, buf)) {
		free(buf);
		return;
	}
	free(c->servers_seen);
	c->servers_seen = buf;
	if (c->o.servers_changed)
		c->o.servers_changed(c->o.arg, buf);
}

static int servers_set(struct cluster *c, const char *servers, bool block)
{
	char p[PATH_MAX_ZK];
	size_t n = strlen(servers);

	if (n >= SERVERS_MAX)
		return -EINVAL;
	cl_path(c, p, "servers");
	return cl_enqueue(c, OP_SERVERS, p, servers, n, block, NULL);
}

int cluster_servers_set(struct cluster *c, const char *servers)
{
	return servers_set(c, servers, true);
}

int cluster_servers_set_nowait(struct cluster *c, const char *servers)
{
	return servers_set(c, servers, false);
}

int cluster_servers_get(struct cluster *c, char *buf, size_t len)
{
	char p[PATH_MAX_ZK];
	zhandle_t *zh = cl_read_begin(c);
	char *tmp;
	int got = SERVERS_MAX - 1, rc;

	if (!zh)
		return -ENOTCONN;
	tmp = malloc(SERVERS_MAX);
	if (!tmp) {
		pthread_rwlock_unlock(&c->zh_lock);
		return -ENOMEM;
	}
	cl_path(c, p, "servers");
	rc = zoo_get(zh, p, 0, tmp, &got, NULL);
	pthread_rwlock_unlock(&c->zh_lock);
	if (rc == ZNONODE || (rc == ZOK && got < 0))
		rc = -ENOENT;
	else if (rc != ZOK)
		rc = -EIO;
	else if ((size_t)got >= len)
		rc = -ENOBUFS;
	else {
		memcpy(buf, tmp, (size_t)got);
		buf[got] = '\0';
	}
	free(tmp);
	return rc;
}

/* ---- drains ---- */

int cluster_drained_set_nowait(struct cluster *c, const char *servers)
{
	char p[PATH_MAX_ZK];
	size_t n = strlen(servers);

	if (n >= SERVERS_MAX)
		return -EINVAL;
	cl_path(c, p, "drained/%u", c->node);
	return cl_enqueue(c, OP_SERVERS, p, servers, n, false, NULL);
}

int cluster_drained_get(struct cluster *c, const char *servers, unsigned *live, unsigned *done,
			char *pending, size_t len)
{
	char p[PATH_MAX_ZK];
	struct String_vector v = { 0 };
	zhandle_t *zh = cl_read_begin(c);
	char *tmp;
	size_t o = 0;
	int rc;

	*live = *done = 0;
	if (len)
		pending[0] = '\0';
	if (!zh)
		return -ENOTCONN;
	tmp = malloc(SERVERS_MAX);
	if (!tmp) {
		pthread_rwlock_unlock(&c->zh_lock);
		return -ENOMEM;
	}
	cl_path(c, p, "nodes");
	rc = zoo_get_children(zh, p, 0, &v);
	for (int32_t i = 0; rc == ZOK && i < v.count; i++) {
		int got = SERVERS_MAX - 1, r;

		(*live)++;
		cl_path(c, p, "drained/%s", v.data[i]);
		r = zoo_get(zh, p, 0, tmp, &got, NULL);
		if (r == ZOK && got >= 0) {
			tmp[got] = '\0';
			if (!strcmp(tmp, servers)) {
				(*done)++;
				continue;
			}
		} else if (r != ZNONODE) {
			rc = r;
			break;
		}
		if (o + strlen(v.data[i]) + 2 <= len)
			o += (size_t)snprintf(pending + o, len - o, "%s%s", o ? "," : "", v.data[i]);
	}
	pthread_rwlock_unlock(&c->zh_lock);
	deallocate_String_vector(&v);
	free(tmp);
	return rc == ZOK ? 0 : -EIO;
}
