/* cluster/orphans: ZooKeeper's leader recipe, and the leader's collection
 * of nodes whose lease has been gone longer than the grace. */
#include "cluster/cluster_priv.h"

/* ---- the election (ZooKeeper's leader recipe) ---- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Join if needed, then lead if ours is the lowest sequence, else watch the
 * one just below ours (no herd when the leader goes). Worker only. */
int cl_elect(struct cluster *c)
{
	char p[PATH_MAX_ZK], pred[PATH_MAX_ZK];
	struct String_vector v = { 0, NULL };
	const char *mine;
	int rc, idx = -1;

	for (;;) {
		if (!c->my_elect[0]) {
			char data[8];

			cl_path(c, p, "election/n-");
			snprintf(data, sizeof(data), "%u", c->node);
			rc = zoo_create(c->zh, p, data, (int)strlen(data), &ZOO_OPEN_ACL_UNSAFE,
					ZOO_EPHEMERAL_SEQUENTIAL, c->my_elect, sizeof(c->my_elect));
			if (rc != ZOK) {
				c->my_elect[0] = '\0';
				return rc;
			}
		}
		mine = strrchr(c->my_elect, '/') + 1;
		cl_path(c, p, "election");
		rc = zoo_get_children(c->zh, p, 0, &v);
		if (rc != ZOK)
			return rc;
		qsort(v.data, (size_t)v.count, sizeof(char *), cmp_str);
		idx = -1;
		for (int i = 0; i < v.count; i++)
			if (!strcmp(v.data[i], mine))
				idx = i;
		if (idx < 0) {
			/* Ours is gone (a session lost meanwhile): join again. */
			c->my_elect[0] = '\0';
			deallocate_String_vector(&v);
			continue;
		}
		if (idx == 0) {
			deallocate_String_vector(&v);
			if (!c->leader) {
				FM_INFO("cluster: node %u is the leader", c->node);
				c->n_missing = 0;   /* grace is timed from now: never early */
			}
			c->leader = true;
			return ZOK;
		}
		cl_path(c, pred, "election/%s", v.data[idx - 1]);
		deallocate_String_vector(&v);
		c->leader = false;
		rc = zoo_exists(c->zh, pred, 1, NULL);
		if (rc == ZOK)
			return ZOK;
		if (rc != ZNONODE)
			return rc;
		/* The predecessor left between the listing and the watch. */
	}
}

/* ---- orphan collection (leader only) ---- */

static int delete_records(struct cluster *c, uint16_t node)
{
	char p[PATH_MAX_ZK], q[2 * PATH_MAX_ZK];
	struct String_vector v = { 0, NULL };
	int rc;

	cl_path(c, p, "regions/%u", node);
	rc = zoo_get_children(c->zh, p, 0, &v);
	if (rc == ZNONODE)
		return ZOK;
	if (rc != ZOK)
		return rc;
	for (int i = 0; i < v.count && rc == ZOK; i++) {
		snprintf(q, sizeof(q), "%s/%s", p, v.data[i]);
		rc = zoo_delete(c->zh, q, -1);
		if (rc == ZNONODE)
			rc = ZOK;
	}
	deallocate_String_vector(&v);
	if (rc == ZOK) {
		rc = zoo_delete(c->zh, p, -1);
		if (rc == ZNONODE)
			rc = ZOK;
	}
	return rc;
}

static void collect(struct cluster *c, uint16_t node)
{
	char lp[PATH_MAX_ZK], data[32];
	int rc;

	/* Hold the orphan's lease while collecting: its owner, restarting
	 * now, is refused instead of adopting records being deleted. */
	cl_path(c, lp, "nodes/%u", node);
	snprintf(data, sizeof(data), "collector %u", c->node);
	rc = zoo_create(c->zh, lp, data, (int)strlen(data), &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL,
			NULL, 0);
	if (rc != ZOK)
		return;   /* it came back (or the session is down): not an orphan now */
	FM_INFO("cluster: collecting node %u (lease gone longer than %u ms)", node,
		c->o.orphan_grace_ms);
	if (c->o.collect && c->o.collect(c->o.arg, node) < 0) {
		c->st.collect_failed++;
		zoo_delete(c->zh, lp, -1);
		return;
	}
	rc = delete_records(c, node);
	zoo_delete(c->zh, lp, -1);
	if (rc == ZOK) {
		c->st.collected++;
		for (size_t i = 0; i < c->n_missing; i++)
			if (c->missing[i].node == node)
				c->missing[i] = c->missing[--c->n_missing];
	}
}

static bool in_list(const struct String_vector *v, const char *s)
{
	for (int i = 0; i < v->count; i++)
		if (!strcmp(v->data[i], s))
			return true;
	return false;
}

/* Time every node dir without a lease; collect those past the grace.
 * Timing restarts with each new leader: never early, at worst late. */
void cl_scan_orphans(struct cluster *c)
{
	char p[PATH_MAX_ZK];
	struct String_vector dirs = { 0, NULL }, leases = { 0, NULL };
	uint64_t now = cl_now_ms();
	size_t keep = 0;

	cl_path(c, p, "regions");
	if (zoo_get_children(c->zh, p, 0, &dirs) != ZOK)
		return;
	cl_path(c, p, "nodes");
	if (zoo_get_children(c->zh, p, 0, &leases) != ZOK) {
		deallocate_String_vector(&dirs);
		return;
	}
	/* Forget nodes that came back or whose dir is gone. */
	for (size_t i = 0; i < c->n_missing; i++) {
		char id[8];

		snprintf(id, sizeof(id), "%u", c->missing[i].node);
		if (in_list(&dirs, id) && !in_list(&leases, id))
			c->missing[keep++] = c->missing[i];
	}
	c->n_missing = keep;
	for (int i = 0; i < dirs.count; i++) {
		uint64_t v;
		size_t j;

		if (cl_num(dirs.data[i], 10, CLUSTER_NODE_MAX, &v) || in_list(&leases, dirs.data[i]))
			continue;
		for (j = 0; j < c->n_missing && c->missing[j].node != v; j++)
			;
		if (j == c->n_missing) {
			struct missing *m = realloc(c->missing, (c->n_missing + 1) * sizeof(*m));

			if (!m)
				break;
			c->missing = m;
			m[c->n_missing++] = (struct missing){ (uint16_t)v, now };
			continue;
		}
		if (now - c->missing[j].since_ms >= c->o.orphan_grace_ms)
			collect(c, (uint16_t)v);
	}
	deallocate_String_vector(&dirs);
	deallocate_String_vector(&leases);
}
