/* cluster/queue: the writes (records, the server list) in one ordered FIFO
 * that the worker applies once a session is up; every write is idempotent
 * so a replay after a lost reply is harmless (cluster.h, "ZooKeeper down"). */
#include "cluster/cluster_priv.h"

/* ---- the write queue ---- */

/* Apply one write, idempotently. ZOK when done (or dropped on a
 * non-retryable error, counted); a connection error to retry later. */
int cl_apply(struct cluster *c, const struct op *op)
{
	int rc;

	switch (op->kind) {
	case OP_DELETE:
		rc = zoo_delete(c->zh, op->path, -1);
		if (rc == ZNONODE)
			rc = ZOK;
		break;
	case OP_CREATE:
		rc = zoo_create(c->zh, op->path, op->data, (int)op->len, &ZOO_OPEN_ACL_UNSAFE,
				ZOO_PERSISTENT, NULL, 0);
		if (rc == ZNODEEXISTS)
			rc = zoo_set(c->zh, op->path, op->data, (int)op->len, -1);
		break;
	default:
		rc = zoo_set(c->zh, op->path, op->data, (int)op->len, -1);
		if (rc == ZNONODE)
			rc = zoo_create(c->zh, op->path, op->data, (int)op->len, &ZOO_OPEN_ACL_UNSAFE,
					ZOO_PERSISTENT, NULL, 0);
		break;
	}
	if (rc == ZNONODE && op->kind != OP_DELETE) {
		/* Only a collection deletes our node dir: the leader took us for
		 * an orphan and deleted our keys. Remaking it would hide that. */
		FM_ERR("cluster: %s: our records were collected; this node is lost", op->path);
		atomic_store(&c->state, CLUSTER_LOST);
		c->st.write_errors++;
		return ZOK;
	}
	if (rc == ZCONNECTIONLOSS || rc == ZOPERATIONTIMEOUT || rc == ZSESSIONEXPIRED ||
	    rc == ZINVALIDSTATE || rc == ZCLOSING || rc == ZSESSIONMOVED)
		return rc;
	if (rc != ZOK) {
		FM_WARN("cluster: write to %s dropped: %s", op->path, zerror(rc));
		c->st.write_errors++;
	}
	return ZOK;
}

int cl_enqueue(struct cluster *c, enum op_kind kind, const char *path, const char *data,
		   size_t len, bool block, uint64_t *ticket)
{
	struct op *op;
	uint64_t seq, end;
	int rc;

	if (atomic_load(&c->state) == CLUSTER_LOST)
		return -ESTALE;
	pthread_mutex_lock(&c->mu);
	if (c->qlen >= c->o.queue_max) {
		c->st.queue_full++;
		pthread_mutex_unlock(&c->mu);
		return -ENOSPC;
	}
	pthread_mutex_unlock(&c->mu);
	op = malloc(sizeof(*op) + len + 1);
	if (!op)
		return -ENOMEM;
	op->next = NULL;
	op->kind = kind;
	snprintf(op->path, sizeof(op->path), "%s", path);
	op->len = len;
	if (len)
		memcpy(op->data, data, len);
	op->data[len] = '\0';

	pthread_mutex_lock(&c->mu);
	op->seq = seq = ++c->next_seq;
	if (c->tail)
		c->tail->next = op;
	else
		c->head = op;
	c->tail = op;
	c->qlen++;
	pthread_cond_broadcast(&c->wake);
	if (ticket)
		*ticket = seq;
	/* Wait for the reply only while a session is up: a down ZooKeeper
	 * must not stall the control thread. */
	end = cl_now_ms() + (block ? c->o.sync_wait_ms : 0);
	while (c->applied_seq < seq && atomic_load(&c->state) == CLUSTER_CONNECTED &&
	       !c->stop) {
		struct timespec ts;
		uint64_t left = end > cl_now_ms() ? end - cl_now_ms() : 0;

		if (!left)
			break;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += (time_t)(left / 1000);
		ts.tv_nsec += (long)(left % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&c->done, &c->mu, &ts);
	}
	rc = c->applied_seq >= seq ? 0 : 1;
	/* A write nobody waited for counts only when the session was down. */
	if (rc && (block || atomic_load(&c->state) != CLUSTER_CONNECTED))
		c->st.queued++;
	pthread_mutex_unlock(&c->mu);
	return rc;
}

bool cluster_applied(struct cluster *c, uint64_t ticket)
{
	bool done;

	pthread_mutex_lock(&c->mu);
	done = c->applied_seq >= ticket;
	pthread_mutex_unlock(&c->mu);
	return done;
}

int cluster_event_fd(const struct cluster *c)
{
	return c->event_fd;
}

int cluster_flush(struct cluster *c, uint32_t ms)
{
	uint64_t end = cl_now_ms() + ms;
	int rc;

	pthread_mutex_lock(&c->mu);
	while (c->head && atomic_load(&c->state) == CLUSTER_CONNECTED && cl_now_ms() < end) {
		pthread_mutex_unlock(&c->mu);
		cl_sleep_ms(5);
		pthread_mutex_lock(&c->mu);
	}
	rc = c->head ? -ETIMEDOUT : 0;
	pthread_mutex_unlock(&c->mu);
	return rc;
}
