/* cluster/checks: the [cluster] section's values, checked without a
 * server (ctl/config.c). Pure. */
#include "cluster/cluster_priv.h"

int cl_num(const char *f, int base, uint64_t max, uint64_t *v)
{
	char *e;

	if (f[0] == '-' || f[0] == '+' || f[0] == ' ')
		return -EINVAL;
	errno = 0;
	*v = strtoull(f, &e, base);
	return errno || *e || *v > max ? -EINVAL : 0;
}

int cluster_parse_node_id(const char *s, int32_t *id)
{
	uint64_t v;

	if (!strcmp(s, "auto")) {
		*id = CLUSTER_NODE_AUTO;
		return 0;
	}
	if (!s[0] || strlen(s) > 5 || cl_num(s, 10, CLUSTER_NODE_MAX, &v))
		return -EINVAL;
	*id = (int32_t)v;
	return 0;
}

int cluster_check_hosts(const char *hosts)
{
	const char *p = hosts;

	if (!hosts[0])
		return -EINVAL;
	while (*p) {
		const char *comma = strchr(p, ','), *e = comma ? comma : p + strlen(p);
		const char *colon = memrchr(p, ':', (size_t)(e - p));
		char port[8];
		uint64_t v;

		if (!colon || colon == p || e - colon - 1 <= 0 || e - colon - 1 >= (long)sizeof(port))
			return -EINVAL;
		for (const char *q = p; q < colon; q++)
			if (*q <= ' ')
				return -EINVAL;
		memcpy(port, colon + 1, (size_t)(e - colon - 1));
		port[e - colon - 1] = '\0';
		if (cl_num(port, 10, 65535, &v) || v == 0)
			return -EINVAL;
		if (!comma)
			break;
		p = comma + 1;
		if (!*p)
			return -EINVAL;
	}
	return 0;
}

int cluster_check_root(const char *root)
{
	size_t n = strlen(root);

	if (n < 2 || root[0] != '/' || root[n - 1] == '/' || strstr(root, "//") ||
	    n > PATH_MAX_ZK - 64)
		return -EINVAL;
	return 0;
}
