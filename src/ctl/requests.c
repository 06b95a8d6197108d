/* ctl/requests: the control plane's messages to the shards and the
 * dispatcher, and the handling of every reply (region acknowledgements
 * included). Requests wait for their replies with a deadline; a buffer whose
 * request timed out is kept out of reuse until the late replies came in. */
#include "ctl/daemon_priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"

/* Replies a shard owes the control plane. A query is answered between two
 * fault bursts; a shrink or an evict answers after its evictions, which can
 * take seconds for a large budget change under load. */
#define QUERY_TIMEOUT_MS 5000
#define EVICTING_TIMEOUT_MS 120000

_Static_assert(FM_DISPATCH_MAX_SHARDS >= FM_MAX_SHARDS,
	       "a dispatcher snapshot must hold every shard's ring_full");

static struct {
	uint64_t id;
	unsigned remaining;
	int64_t *results;
	uint64_t *details;
} pending;

/* A reply buffer whose request timed out: its shards (or the dispatcher)
 * may still write into it, so it is kept out of reuse until every late reply
 * came in, then freed. The control plane gets a fresh buffer meanwhile. */
struct orphan {
	struct orphan *next;
	uint64_t id;
	unsigned remaining;
	void *buf;
};
static struct orphan *orphans;

/* The dispatcher's one outstanding request (stats or reset). */
static struct {
	uint64_t id;
	bool done;
} disp_pending;


static void orphan_add(uint64_t id, unsigned remaining, void *buf)
{
	struct orphan *o = calloc(1, sizeof(*o));

	if (!o) {
		/* Leak rather than let a late writer scribble on reused memory. */
		FM_WARN("out of memory tracking a timed-out request: leaking its buffer");
		return;
	}
	*o = (struct orphan){ .next = orphans, .id = id, .remaining = remaining, .buf = buf };
	orphans = o;
}

static void orphan_reply(uint64_t id)
{
	for (struct orphan **p = &orphans; *p; p = &(*p)->next) {
		struct orphan *o = *p;

		if (o->id != id)
			continue;
		if (--o->remaining == 0) {
			*p = o->next;
			free(o->buf);
			free(o);
		}
		return;
	}
}

/* Only after every thread that could write into them has been joined. */
void daemon_requests_free(void)
{
	while (orphans) {
		struct orphan *o = orphans;

		orphans = o->next;
		free(o->buf);
		free(o);
	}
}

static void handle_reply(struct daemon *d, const struct fm_msg *m)
{
	if (m->type == FM_MSG_REGION_HOSTILE) {
		daemon_region_hostile(d, m->hostile.region, (int)m->hostile.error);
		return;
	}
	if (m->flags == FM_MSG_REGION_ADD || m->flags == FM_MSG_REGION_DEL ||
	    m->flags == FM_MSG_REGION_FORGET) {
		daemon_region_acked(d, (struct uffd_region *)(uintptr_t)m->done.detail, m->done.result);
		return;
	}
	if (m->shard == FM_DISPATCHER_SENDER) {
		if (m->done.request == disp_pending.id)
			disp_pending.done = true;
		else
			orphan_reply(m->done.request);
		return;
	}
	if (pending.remaining && m->done.request == pending.id && m->shard < d->nshards) {
		pending.results[m->shard] = m->done.result;
		pending.details[m->shard] = m->done.detail;
		pending.remaining--;
		return;
	}
	/* a late reply to a request that timed out: release its buffer */
	orphan_reply(m->done.request);
}

void daemon_drain_replies(struct daemon *d)
{
	uint64_t v;
	struct fm_msg m;

	if (read(d->reply_bell.efd, &v, sizeof(v)) < 0) {
		/* EAGAIN: replies may still be queued; drain anyway */
	}
	for (unsigned i = 0; i < d->nshards; i++)
		while (fm_ring_pop(shard_reply_ring(d->shards[i]), &m))
			handle_reply(d, &m);
	if (d->disp)
		while (fm_ring_pop(dispatcher_reply_ring(d->disp), &m))
			handle_reply(d, &m);
}

/* Replace a snapshot buffer that late replies may still write into. */
static void orphan_buffer(void **buf, size_t size, uint64_t id, unsigned remaining)
{
	void *fresh = calloc(1, size);

	if (!fresh) {
		FM_WARN("out of memory replacing a reply buffer after a timeout");
		return;   /* keep using it: a late write can only race a query */
	}
	orphan_add(id, remaining, *buf);
	*buf = fresh;
}

/* The message daemon_shard_request sends: a and b are the per-shard values
 * its callers pass (daemon_priv.h), put where `type` keeps them. */
static struct fm_msg ctl_msg(uint16_t type, unsigned shard, uint64_t a, uint64_t b, uint64_t id)
{
	struct fm_msg m = { .type = type, .shard = (uint16_t)shard };

	switch (type) {
	case FM_MSG_STATS:
	case FM_MSG_REGION_STATS:
	case FM_MSG_ORPHAN_DROP:
		m.fill.out = (void *)(uintptr_t)a;
		m.fill.request = id;
		break;
	case FM_MSG_SET_BUDGET:
	case FM_MSG_EVICT:
		m.pages.pages = a;
		m.pages.request = id;
		break;
	case FM_MSG_DRAIN:   /* a: ids to look at, FM_DRAIN_* flags in the top half */
		m.pages.pages = a & 0xffffffffu;
		m.flags = (uint32_t)(a >> 32);
		m.pages.request = id;
		break;
	case FM_MSG_RESET:
		m.reset.what = a;
		m.reset.request = id;
		break;
	case FM_MSG_SET_SERVERS:
		m.servers.list = (char *)(uintptr_t)a;
		m.servers.request = id;
		break;
	case FM_MSG_REGION_BUDGET:
		m.region_budget.region = (struct uffd_region *)(uintptr_t)a;
		m.region_budget.pages = b;
		m.region_budget.request = id;
		break;
	default:
		m.any.request = id;
	}
	return m;
}

int daemon_shard_request(struct daemon *d, uint16_t type, const uint64_t *a, const uint64_t *b,
			 int64_t *results, uint64_t *details)
{
	bool evicting = type == FM_MSG_SET_BUDGET || type == FM_MSG_EVICT ||
			type == FM_MSG_REGION_BUDGET || type == FM_MSG_ORPHAN_DROP ||
			type == FM_MSG_DRAIN;
	uint64_t deadline = fm_now_ns() +
			    (uint64_t)(evicting ? EVICTING_TIMEOUT_MS : QUERY_TIMEOUT_MS) * 1000000ull;

	pending.id = ++d->next_request;
	pending.remaining = 0;
	pending.results = results;
	pending.details = details;
	for (unsigned i = 0; i < d->nshards; i++) {
		struct fm_msg m = ctl_msg(type, i, a ? a[i] : 0, b ? b[i] : 0, pending.id);

		results[i] = -ETIMEDOUT;
		details[i] = 0;
		if (type == FM_MSG_STATS)
			m.fill.out = &d->snap[i];
		if (!fm_ring_push(shard_ctl_ring(d->shards[i]), &m)) {
			results[i] = -EBUSY;
			continue;
		}
		pending.remaining++;
		fm_doorbell_ring(shard_doorbell(d->shards[i]));
	}
	while (pending.remaining) {
		uint64_t now = fm_now_ns();
		struct fm_doorbell *bell = &d->reply_bell;

		if (now >= deadline) {
			/* The shards still owe these replies and may write
			 * the snapshot buffers late: never hand those to the
			 * next request. */
			if (type == FM_MSG_STATS)
				orphan_buffer((void **)&d->snap, d->nshards * sizeof(*d->snap),
					      pending.id, pending.remaining);
			else if (type == FM_MSG_REGION_STATS)
				orphan_buffer((void **)&d->region_snap,
					      (size_t)d->nshards * FM_MAX_REGIONS * sizeof(*d->region_snap),
					      pending.id, pending.remaining);
			else
				orphan_add(pending.id, pending.remaining, NULL);
			pending.remaining = 0;
			return -ETIMEDOUT;
		}
		fm_doorbell_wait(bell, (int)((deadline - now) / 1000000ull) + 1);
		daemon_drain_replies(d);
	}
	return 0;
}

int daemon_dispatcher_request(struct daemon *d, uint16_t type, struct dispatch_snapshot *out)
{
	uint64_t deadline = fm_now_ns() + (uint64_t)QUERY_TIMEOUT_MS * 1000000ull;
	struct dispatch_snapshot *buf = NULL;
	int rc;

	if (type == FM_MSG_STATS && !(buf = calloc(1, sizeof(*buf))))
		return -ENOMEM;
	disp_pending.id = ++d->next_request;
	disp_pending.done = false;
	rc = type == FM_MSG_STATS ? dispatcher_request_stats(d->disp, buf, disp_pending.id)
				  : dispatcher_request_reset(d->disp, disp_pending.id);
	if (rc < 0) {
		free(buf);
		return rc;
	}
	while (!disp_pending.done) {
		uint64_t now = fm_now_ns();

		if (now >= deadline) {
			/* The dispatcher still owns buf until it replies. */
			orphan_add(disp_pending.id, 1, buf);
			disp_pending.id = 0;
			return -ETIMEDOUT;
		}
		fm_doorbell_wait(&d->reply_bell, (int)((deadline - now) / 1000000ull) + 1);
		daemon_drain_replies(d);
	}
	if (buf)
		*out = *buf;
	free(buf);
	return 0;
}
