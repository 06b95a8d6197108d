/* fluidmemd's control plane: wiring, the registration socket and the control
 * socket, all served from one epoll loop on the main thread. */
#include "ctl/daemon_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/log.h"
#include "ctl/http.h"
#include "ctl/listen.h"
#include "ctl/params.h"
#include "proto/proto.h"
#include "ctl/registration.h"

#define TAG_REG_LISTEN 1
#define TAG_CTL_LISTEN 2
#define TAG_SIGNAL 3
#define TAG_REPLIES 4
#define TAG_REG_CONN 5
#define TAG_CTL_CONN 6
#define TAG_METRICS_LISTEN 7
#define TAG_BITS 3
/* Replies a shard owes the control plane. A query is answered between two
 * fault bursts; a shrink or an evict answers after its evictions, which can
 * take seconds for a large budget change under load. */
#define QUERY_TIMEOUT_MS 5000
#define EVICTING_TIMEOUT_MS 120000
/* A listener that meets EMFILE/ENFILE sleeps this long instead of waking
 * the level-triggered loop again at once. */
#define ACCEPT_PAUSE_MS 100


/* epoll data: a tag in the low bits, the object pointer above them. */
static inline uint64_t tagged(int tag, void *p)
{
	return (uint64_t)(uintptr_t)p | (uint64_t)tag;
}

/* Intrusive doubly linked lists of connections. */
#define LIST_PUSH(head, x)                 \
	do {                               \
		(x)->prev = NULL;          \
		(x)->next = (head);        \
		if (head)                  \
			(head)->prev = (x); \
		(head) = (x);              \
	} while (0)
#define LIST_DEL(head, x)                              \
	do {                                           \
		if ((x)->prev)                         \
			(x)->prev->next = (x)->next;   \
		else                                   \
			(head) = (x)->next;            \
		if ((x)->next)                         \
			(x)->next->prev = (x)->prev;   \
	} while (0)

/* ---- strbuf ---- */

void sb_printf(struct strbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	for (;;) {
		size_t room = b->cap - b->len;

		va_start(ap, fmt);
		n = vsnprintf(b->s ? b->s + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 256;
		while (cap - b->len <= (size_t)n)
			cap *= 2;
		char *s = realloc(b->s, cap);
		if (!s) {
			b->oom = true;
			return;
		}
		b->s = s;
		b->cap = cap;
	}
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs,
 * no surrogates, nothing above U+10FFFF), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t n;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)   /* also stops at the NUL */
			return 0;
	return n;
}

/* Replies must be JSON text, which is UTF-8: a client's bytes (a region
 * name, an unknown command echoed back) that are not valid UTF-8 become
 * U+FFFD, one per offending byte, rather than reaching a parser raw. */
void sb_json_str(struct strbuf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	sb_printf(b, "\"");
	while (*p) {
		unsigned char c = *p;
		size_t n = utf8_len(p);

		if (n == 0)
			sb_printf(b, "\\ufffd");
		else if (n > 1)
			sb_printf(b, "%.*s", (int)n, (const char *)p);
		else if (c == '"' || c == '\\')
			sb_printf(b, "\\%c", c);
		else if (c == '\n')
			sb_printf(b, "\\n");
		else if (c == '\t')
			sb_printf(b, "\\t");
		else if (c < 0x20 || c == 0x7f)
			sb_printf(b, "\\u%04x", c);
		else
			sb_printf(b, "%c", c);
		p += n ? n : 1;
	}
	sb_printf(b, "\"");
}

void sb_free(struct strbuf *b)
{
	free(b->s);
	memset(b, 0, sizeof(*b));
}

/* ---- shard requests and replies ---- */

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

static void region_acked(struct daemon *d, struct region *r, int64_t result);
static void region_hostile(struct daemon *d, struct region *r, int why);

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
static void orphans_free(void)
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
		region_hostile(d, (struct region *)(uintptr_t)m->b, (int)(int64_t)m->a);
		return;
	}
	if (m->flags == FM_MSG_REGION_ADD || m->flags == FM_MSG_REGION_DEL ||
	    m->flags == FM_MSG_REGION_FORGET) {
		region_acked(d, (struct region *)(uintptr_t)m->b, (int64_t)m->a);
		return;
	}
	if (m->shard == FM_DISPATCHER_SENDER) {
		if (m->cookie == disp_pending.id)
			disp_pending.done = true;
		else
			orphan_reply(m->cookie);
		return;
	}
	if (pending.remaining && m->cookie == pending.id && m->shard < d->nshards) {
		pending.results[m->shard] = (int64_t)m->a;
		pending.details[m->shard] = m->b;
		pending.remaining--;
		return;
	}
	/* a late reply to a request that timed out: release its buffer */
	orphan_reply(m->cookie);
}

static void drain_replies(struct daemon *d)
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

int daemon_shard_request(struct daemon *d, uint16_t type, const uint64_t *a, const uint64_t *b,
			 int64_t *results, uint64_t *details)
{
	bool evicting = type == FM_MSG_SET_BUDGET || type == FM_MSG_EVICT ||
			type == FM_MSG_REGION_BUDGET;
	uint64_t deadline = fm_now_ns() +
			    (uint64_t)(evicting ? EVICTING_TIMEOUT_MS : QUERY_TIMEOUT_MS) * 1000000ull;

	pending.id = ++d->next_request;
	pending.remaining = 0;
	pending.results = results;
	pending.details = details;
	for (unsigned i = 0; i < d->nshards; i++) {
		struct fm_msg m = { .type = type, .shard = (uint16_t)i, .a = a ? a[i] : 0,
				    .b = b ? b[i] : 0, .cookie = pending.id };

		results[i] = -ETIMEDOUT;
		details[i] = 0;
		if (type == FM_MSG_STATS)
			m.a = (uint64_t)(uintptr_t)&d->snap[i];
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
		drain_replies(d);
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
		drain_replies(d);
	}
	if (buf)
		*out = *buf;
	free(buf);
	return 0;
}

/* ---- registration ---- */

static bool uid_allowed(const struct daemon *d, uid_t uid)
{
	if (d->cfg.allowed_uids_n == 0)
		return uid == 0 || uid == geteuid();
	for (uint32_t i = 0; i < d->cfg.allowed_uids_n; i++)
		if (d->cfg.allowed_uids[i] == uid)
			return true;
	return false;
}

static void reg_reply(int fd, int status, uint64_t id, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void reg_reply(int fd, int status, uint64_t id, const char *fmt, ...)
{
	struct fm_reg_reply rep = {
		.magic = FM_PROTO_MAGIC, .version = FM_PROTO_VERSION, .type = FM_REG_REPLY,
		.status = status, .region_id = id,
	};
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(rep.reason, sizeof(rep.reason), fmt, ap);
		va_end(ap);
	}
	if (fd >= 0 && send(fd, &rep, sizeof(rep), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		FM_DEBUG("reply to a registration client failed: %s", strerror(errno));
}

static int conn_add_region(struct reg_conn *c, struct region *r)
{
	if (c->nregions == c->cap) {
		unsigned cap = c->cap ? c->cap * 2 : 4;
		struct region **v = realloc(c->regions, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		c->regions = v;
		c->cap = cap;
	}
	c->regions[c->nregions++] = r;
	return 0;
}

static void conn_remove_region(struct reg_conn *c, struct region *r)
{
	for (unsigned i = 0; i < c->nregions; i++) {
		if (c->regions[i] == r) {
			c->regions[i] = c->regions[--c->nregions];
			return;
		}
	}
}

static void reg_conn_free(struct daemon *d, struct reg_conn *c)
{
	LIST_DEL(d->reg_conns, c);
	d->nreg_conns--;
	if (c->fd >= 0)
		close(c->fd);
	free(c->regions);
	free(c);
}

static void refuse(struct daemon *d, struct reg_conn *c, int status, const char *reason)
{
	d->refusals++;
	/* A client can make us refuse at will: bound what it makes us write. */
	fm_log_ratelimited(FM_LOG_WARN, "refused a registration from pid %d uid %d: %s",
			   (int)c->pid, (int)c->uid, reason);
	reg_reply(c->fd, status, 0, "%s", reason);
}

/* Quotas per uid over every live region: a slot scan (4096) is cheap next
 * to what a registration costs anyway, and is never out of step. */
static int uid_quota_check(const struct daemon *d, uid_t uid, uint64_t bytes, char *why,
			   size_t whylen)
{
	uint64_t n = 0, total = 0;

	for (unsigned i = 0; i < FM_MAX_REGIONS; i++) {
		const struct region *r = d->regions[i];

		if (r && r->uid == uid) {
			n++;
			total += r->npages * FM_PAGE_SIZE;
		}
	}
	if (n >= d->cfg.max_regions_per_uid) {
		snprintf(why, whylen,
			 "uid %d has %llu regions registered: register.max_regions_per_uid is %u",
			 (int)uid, (unsigned long long)n, d->cfg.max_regions_per_uid);
		return -EDQUOT;
	}
	if (total + bytes > d->cfg.max_mib_per_uid << 20) {
		snprintf(why, whylen,
			 "uid %d has %llu MiB registered; %llu MiB more is over "
			 "register.max_mib_per_uid (%llu)",
			 (int)uid, (unsigned long long)(total >> 20), (unsigned long long)(bytes >> 20),
			 (unsigned long long)d->cfg.max_mib_per_uid);
		return -EDQUOT;
	}
	return 0;
}

/* The pages of one memfd in one process are served by one region: a second
 * registration over them would fight the first over the same pages (and
 * the mapping check's un-protect would open an eviction's write-protect
 * window). A region left over a range that was unmapped meanwhile has
 * another memfd and does not count. */
static int overlap_check(const struct daemon *d, pid_t pid, int memfd, uint64_t addr,
			 uint64_t size, char *why, size_t whylen)
{
	struct stat st, rst;

	if (fstat(memfd, &st) < 0)
		return 0;   /* reg_check_memfd says why */
	for (unsigned i = 0; i < FM_MAX_REGIONS; i++) {
		const struct region *r = d->regions[i];

		if (r && r->pid == pid && addr < r->base + r->npages * FM_PAGE_SIZE &&
		    r->base < addr + size && fstat(r->memfd, &rst) == 0 && rst.st_ino == st.st_ino &&
		    rst.st_dev == st.st_dev) {
			snprintf(why, whylen, "the range overlaps region %llu of this process",
				 (unsigned long long)r->id);
			return -EEXIST;
		}
	}
	return 0;
}

static void do_register(struct daemon *d, struct reg_conn *c, const struct fm_reg_req *q, int *fds,
			int nfds)
{
	struct region *r;
	char why[160];
	int rc;

	if ((rc = reg_check_fields(q, nfds, (uint64_t)d->cfg.max_region_mib << 20, why,
				   sizeof(why))) < 0 ||
	    (rc = uid_quota_check(d, c->uid, q->size, why, sizeof(why))) < 0 ||
	    (rc = overlap_check(d, c->pid, fds[1], q->addr, q->size, why, sizeof(why))) < 0 ||
	    (rc = reg_check_uffd(fds[0], why, sizeof(why))) < 0 ||
	    (rc = reg_check_memfd(fds[1], q->size, why, sizeof(why))) < 0 ||
	    (rc = reg_check_mapping(c->pid, fds[0], fds[1], q->addr, q->size, why, sizeof(why))) < 0) {
		refuse(d, c, rc, why);
		return;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		refuse(d, c, -ENOMEM, "out of memory");
		return;
	}
	r->uffd = fds[0];
	r->memfd = fds[1];
	fds[0] = fds[1] = -1;   /* the region owns them now */
	/* The dispatcher reads without blocking; the flag is shared with the
	 * client's descriptor, which never reads. */
	fcntl(r->uffd, F_SETFL, fcntl(r->uffd, F_GETFL) | O_NONBLOCK);
	r->base = q->addr;
	r->npages = q->size / FM_PAGE_SIZE;
	r->pid = c->pid;
	r->uid = c->uid;
	r->owner = c;
	r->created_ns = fm_now_ns();
	memcpy(r->name, q->name, sizeof(r->name));
	r->id = ((uint64_t)d->cfg.node_id << 48) | ++d->next_region;
	/* Read-only: we only ever read victims, and never through a hole. */
	r->view = mmap(NULL, q->size, PROT_READ, MAP_SHARED, r->memfd, 0);
	if (r->view == MAP_FAILED) {
		snprintf(why, sizeof(why), "cannot map the memfd: %s", strerror(errno));
		r->view = NULL;
		region_release(r);
		refuse(d, c, -ENOMEM, why);
		return;
	}
	if ((rc = region_table_publish(r)) < 0 || conn_add_region(c, r) < 0) {
		if (rc == 0)
			region_table_unpublish(r);
		region_release(r);
		refuse(d, c, -ENOSPC, "too many regions");
		return;
	}
	d->regions[r->slot] = r;
	r->state = REGION_ATTACHING;
	r->acks_pending = (int)d->nshards + 1;   /* + the dispatcher */
	r->request = ++d->next_request;
	while (dispatcher_attach(d->disp, r) == -EAGAIN)
		usleep(100);
	d->registrations++;
	FM_INFO("region %llu \"%s\": %llu pages at 0x%llx from pid %d", (unsigned long long)r->id,
		r->name, (unsigned long long)r->npages, (unsigned long long)r->base, (int)r->pid);
}

/* The dispatcher forgot the region: it was unregistered in the client and
 * nobody names it any more. Free it, and only then answer an UNREGISTER, so
 * the client's next munmap of the range raises no event nobody would read. */
static void region_finish_detach(struct daemon *d, struct region *r)
{
	struct reg_conn *c = r->owner;
	bool reply = r->reply_on_detach;
	uint64_t id = r->id;

	if (c)
		conn_remove_region(c, r);
	d->regions[r->slot] = NULL;
	region_table_unpublish(r);
	region_release(r);
	FM_INFO("region %llu freed", (unsigned long long)id);
	if (c) {
		if (reply)
			reg_reply(c->fd, 0, id, NULL);
		if (c->closed && c->nregions == 0)
			reg_conn_free(d, c);
	}
}

void daemon_detach_region(struct daemon *d, struct region *r, bool restore)
{
	if (r->state == REGION_DETACHING || r->state == REGION_RELEASING)
		return;
	r->restore = restore;
	if (r->state == REGION_ATTACHING) {
		r->detach_when_live = true;
		return;
	}
	r->state = REGION_DETACHING;
	r->acks_pending = (int)d->nshards;
	r->request = ++d->next_request;
	while (dispatcher_detach(d->disp, r, r->restore) == -EAGAIN)
		usleep(100);
}

int daemon_wait_region_gone(struct daemon *d, struct region *r, int timeout_ms)
{
	uint64_t deadline = fm_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	uint32_t slot = r->slot;

	/* r may be freed while we wait: only compare the pointer. */
	while (d->regions[slot] == r) {
		if (fm_now_ns() >= deadline)
			return -ETIMEDOUT;
		fm_doorbell_wait(&d->reply_bell, 10);
		drain_replies(d);
	}
	return 0;
}

/* The dispatcher cannot read this region's uffd safely (its client made it
 * blocking) or at all. Detach it, handing stored pages back: the client
 * may be alive, and its data is never dropped for its misbehaviour. */
static void region_hostile(struct daemon *d, struct region *r, int why)
{
	if (r->state != REGION_LIVE && r->state != REGION_ATTACHING)
		return;
	FM_WARN("region %llu of pid %d: its uffd %s; detaching it", (unsigned long long)r->id,
		(int)r->pid, why == -EPERM ? "was made blocking by its client" : "failed");
	daemon_detach_region(d, r, true);
}

static void region_acked(struct daemon *d, struct region *r, int64_t result)
{
	if (result < 0 && r->state == REGION_ATTACHING && r->attach_error == 0)
		r->attach_error = (int)result;
	if (--r->acks_pending > 0)
		return;
	if (r->state == REGION_DETACHING) {
		/* Every shard let go: now the dispatcher unregisters the
		 * range and drops the region. Not after dropping a live
		 * client's stored pages (shutdown --drop): its faults then
		 * wait until it exits rather than read zeros. */
		bool unregister = r->restore || r->reply_on_detach || r->attach_error;

		r->state = REGION_RELEASING;
		r->acks_pending = 1;
		r->request = ++d->next_request;
		while (dispatcher_forget(d->disp, r, unregister) == -EAGAIN)
			usleep(100);
		return;
	}
	if (r->state == REGION_RELEASING) {
		region_finish_detach(d, r);
		return;
	}
	/* attached */
	r->state = REGION_LIVE;
	if (r->attach_error) {
		if (r->owner)
			reg_reply(((struct reg_conn *)r->owner)->fd, r->attach_error, 0,
				  "the daemon could not take the region: %s", strerror(-r->attach_error));
		daemon_detach_region(d, r, false);
		return;
	}
	if (r->detach_when_live || !r->owner || ((struct reg_conn *)r->owner)->closed) {
		daemon_detach_region(d, r, r->restore || !r->detach_when_live);
		return;
	}
	reg_reply(((struct reg_conn *)r->owner)->fd, 0, r->id, NULL);
}

/* A closed registration socket does not mean a dead client: one that closes
 * it while alive (or hands it to nobody) still maps the memory and may be
 * faulting on it right now. So its regions are detached with restore: stored
 * pages are copied back and the range unregistered, waking every waiting
 * fault onto its own data. For a client that exited, the first copy meets
 * ESRCH and the restore ends there. */
static void reg_conn_closed(struct daemon *d, struct reg_conn *c)
{
	epoll_ctl(d->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	c->closed = true;
	if (c->nregions == 0) {
		reg_conn_free(d, c);
		return;
	}
	FM_INFO("client pid %d left; freeing its %u region(s)", (int)c->pid, c->nregions);
	for (unsigned i = 0; i < c->nregions; i++)
		daemon_detach_region(d, c->regions[i], true);
}

static void reg_conn_readable(struct daemon *d, struct reg_conn *c, uint32_t events)
{
	union {
		struct fm_reg_req q;
		char raw[sizeof(struct fm_reg_req) + 1];
	} buf;
	struct fm_reg_req q;
	char why[160];
	int rc;
	char cbuf[CMSG_SPACE(sizeof(int) * 8)];
	struct iovec iov = { &buf, sizeof(buf) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	int fds[8], nfds = 0;
	ssize_t n;

	memset(&buf, 0, sizeof(buf));
	n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	/* On SEQPACKET, 0 is both an empty packet and end-of-file: only a
	 * hang-up (or a 0 with nothing left and the peer gone) closes. */
	if (n < 0 || (n == 0 && (events & (EPOLLHUP | EPOLLRDHUP)) && !(mh.msg_flags & MSG_CTRUNC) &&
		      mh.msg_controllen == 0)) {
		reg_conn_closed(d, c);
		return;
	}
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (int i = 0; i < k && nfds < 8; i++)
				memcpy(&fds[nfds++], CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
		}
	}
	if (c->denied) {
		snprintf(why, sizeof(why), "uid %d may not register memory here", (int)c->uid);
		refuse(d, c, -EPERM, why);
	} else if (n == 0 && nfds == 0) {
		refuse(d, c, -EPROTO, "empty request");
	} else if ((rc = reg_decode(&buf, (size_t)n, mh.msg_flags, nfds, &q, why, sizeof(why))) < 0)
		refuse(d, c, rc, why);
	else if (q.type == FM_REG_REGISTER)
		do_register(d, c, &q, fds, nfds);
	else if (q.type == FM_REG_UNREGISTER) {
		struct region *r = NULL;

		for (unsigned i = 0; i < c->nregions; i++)
			if (c->regions[i]->id == q.region_id)
				r = c->regions[i];
		if (!r || r->state == REGION_DETACHING) {
			refuse(d, c, -ENOENT, "no such region on this connection");
		} else {
			r->reply_on_detach = true;
			daemon_detach_region(d, r, false);
		}
	} else {
		refuse(d, c, -EPROTO, "unknown request type");
	}
	for (int i = 0; i < nfds; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/* Registration admits register.allowed_uids (default: root and our uid);
 * the control socket admits only root and our own uid: it can stop us. */
static bool peer_allowed(struct daemon *d, int fd, struct ucred *cred, bool control)
{
	socklen_t len = sizeof(*cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) < 0)
		return false;
	if (control)
		return cred->uid == 0 || cred->uid == geteuid();
	return uid_allowed(d, cred->uid);
}

/* A listener that hit EMFILE/ENFILE stays readable: with level-triggered
 * epoll it would wake us at once, forever. Take all listeners out of the
 * loop for ACCEPT_PAUSE_MS instead; the backlog waits in the kernel. */
static void pause_listeners(struct daemon *d, int err)
{
	int fds[] = { d->reg_fd, d->ctl_fd, d->metrics_fd };

	d->accept_paused++;
	d->paused_until_ns = fm_now_ns() + ACCEPT_PAUSE_MS * 1000000ull;
	fm_log_ratelimited(FM_LOG_WARN, "out of descriptors (%s): not accepting for %d ms",
			   strerror(err), ACCEPT_PAUSE_MS);
	for (size_t i = 0; i < FM_ARRAY_SIZE(fds); i++) {
		struct epoll_event ev = { .events = 0 };

		if (fds[i] >= 0)
			epoll_ctl(d->epfd, EPOLL_CTL_MOD, fds[i], &ev);
	}
}

static void resume_listeners(struct daemon *d)
{
	struct {
		int fd, tag;
	} l[] = { { d->reg_fd, TAG_REG_LISTEN }, { d->ctl_fd, TAG_CTL_LISTEN },
		  { d->metrics_fd, TAG_METRICS_LISTEN } };

	d->paused_until_ns = 0;
	for (size_t i = 0; i < FM_ARRAY_SIZE(l); i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)l[i].tag };

		if (l[i].fd >= 0)
			epoll_ctl(d->epfd, EPOLL_CTL_MOD, l[i].fd, &ev);
	}
}

/* accept4, or -1 when the loop should stop accepting for now. */
static int accept_one(struct daemon *d, int lfd)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM))
		pause_listeners(d, errno);
	return fd;
}

static unsigned reg_conns_of_uid(const struct daemon *d, uid_t uid)
{
	unsigned n = 0;

	for (const struct reg_conn *c = d->reg_conns; c; c = c->next)
		n += c->uid == uid;
	return n;
}

/* Answer a connection we will not keep, and close it. The client reads the
 * reason after its send fails (libfluidmem looks for it), so no refused
 * peer holds a descriptor of ours. */
static void reg_turn_away(struct daemon *d, int fd, const struct ucred *cred, int status,
			  const char *reason)
{
	d->conns_refused++;
	d->refusals++;
	fm_log_ratelimited(FM_LOG_WARN, "registration connection from pid %d uid %d closed: %s",
			   (int)cred->pid, (int)cred->uid, reason);
	reg_reply(fd, status, 0, "%s", reason);
	/* A request the peer sent before we accepted must not be left
	 * unread: closing over it resets the connection, and the peer would
	 * lose the reason queued for it. A later send fails with EPIPE, and
	 * libfluidmem then reads the reason. */
	for (int i = 0; i < 8; i++) {
		char buf[sizeof(struct fm_reg_req)], cbuf[CMSG_SPACE(sizeof(int) * 8)];
		struct iovec iov = { buf, sizeof(buf) };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
				     .msg_controllen = sizeof(cbuf) };

		if (recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) < 0)
			break;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
				size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				for (size_t j = 0; j < k; j++) {
					int rfd;
					memcpy(&rfd, CMSG_DATA(cm) + j * sizeof(int), sizeof(int));
					close(rfd);
				}
			}
		}
	}
	close(fd);
}

static void reg_accept(struct daemon *d)
{
	for (;;) {
		int fd = accept_one(d, d->reg_fd);
		struct ucred cred = { .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
		struct reg_conn *c;
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP };
		char why[160];

		if (fd < 0)
			return;
		if (!peer_allowed(d, fd, &cred, false)) {
			snprintf(why, sizeof(why), "uid %d may not register memory here", (int)cred.uid);
			reg_turn_away(d, fd, &cred, -EPERM, why);
			continue;
		}
		if (d->nreg_conns >= d->cfg.reg_max_conns) {
			snprintf(why, sizeof(why), "the daemon holds %u registration connections "
				 "(register.max_connections)", d->nreg_conns);
			reg_turn_away(d, fd, &cred, -EMFILE, why);
			continue;
		}
		if (reg_conns_of_uid(d, cred.uid) >= d->cfg.reg_max_conns_per_uid) {
			snprintf(why, sizeof(why), "uid %d holds %u registration connections "
				 "(register.max_connections_per_uid)", (int)cred.uid,
				 d->cfg.reg_max_conns_per_uid);
			reg_turn_away(d, fd, &cred, -EMFILE, why);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->pid = cred.pid;
		c->uid = cred.uid;
		LIST_PUSH(d->reg_conns, c);
		d->nreg_conns++;
		ev.data.u64 = tagged(TAG_REG_CONN, c);
		if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
			reg_conn_free(d, c);
	}
}

/* ---- control connections ---- */

static void ctl_conn_free(struct daemon *d, struct ctl_conn *c)
{
	LIST_DEL(d->ctl_conns, c);
	if (c->http && c->accepted_ns == 0)
		d->nmetrics_doomed--;
	if (c->http)
		d->nmetrics_conns--;
	else
		d->nctl_conns--;
	epoll_ctl(d->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	sb_free(&c->out);
	free(c);
}

static void ctl_conn_flush(struct daemon *d, struct ctl_conn *c)
{
	while (c->out_off < c->out.len) {
		ssize_t n = send(c->fd, c->out.s + c->out_off, c->out.len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EAGAIN) {
				struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT,
							  .data.u64 = tagged(TAG_CTL_CONN, c) };
				epoll_ctl(d->epfd, EPOLL_CTL_MOD, c->fd, &ev);
				return;
			}
			ctl_conn_free(d, c);
			return;
		}
		c->out_off += (size_t)n;
	}
	c->out.len = c->out_off = 0;
	if (c->closing) {
		ctl_conn_free(d, c);
		return;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tagged(TAG_CTL_CONN, c) };
	epoll_ctl(d->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* One HTTP/1.0-style exchange: GET /metrics, then close. */
static void http_request(struct daemon *d, struct ctl_conn *c, enum http_verdict v)
{
	struct strbuf body = { 0 };
	const char *status = "200 OK", *ctype = "text/plain; version=0.0.4; charset=utf-8";

	if (v == HTTP_BAD_REQUEST) {
		status = "400 Bad Request";
		ctype = "text/plain";
		sb_printf(&body, "fluidmemd serves GET /metrics\n");
	} else if (v != HTTP_METRICS) {
		status = "404 Not Found";
		ctype = "text/plain";
		sb_printf(&body, "fluidmemd serves GET /metrics\n");
	} else if (ctl_metrics_text(d, &body) < 0 || body.oom) {
		sb_free(&body);
		status = "503 Service Unavailable";
		ctype = "text/plain";
		sb_printf(&body, "a shard did not answer\n");
	}
	sb_printf(&c->out, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			   "Connection: close\r\n\r\n%s",
		  status, ctype, body.len, body.s ? body.s : "");
	sb_free(&body);
	c->closing = true;
}

static void ctl_conn_readable(struct daemon *d, struct ctl_conn *c)
{
	ssize_t n = recv(c->fd, c->in + c->in_len, CTL_MAX_REQUEST - c->in_len, MSG_DONTWAIT);
	char *nl;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		ctl_conn_free(d, c);
		return;
	}
	c->in_len += (size_t)n;
	c->in[c->in_len] = '\0';
	if (c->http) {
		enum http_verdict v = c->closing ? HTTP_INCOMPLETE
						 : http_classify(c->in, c->in_len, CTL_MAX_REQUEST);

		if (v == HTTP_INCOMPLETE)
			return;
		if (v == HTTP_TOO_LONG) {
			ctl_conn_free(d, c);   /* no request fits: not a scraper */
			return;
		}
		http_request(d, c, v);
		if (c->out.len > c->out_off)
			ctl_conn_flush(d, c);
		return;
	}
	while ((nl = memchr(c->in, '\n', c->in_len)) != NULL) {
		size_t used = (size_t)(nl - c->in) + 1;

		*nl = '\0';
		if (nl > c->in && nl[-1] == '\r')
			nl[-1] = '\0';
		if (ctl_execute(d, c->in, &c->out))
			d->stopping = true;
		memmove(c->in, c->in + used, c->in_len - used);
		c->in_len -= used;
		c->in[c->in_len] = '\0';
	}
	if (c->in_len == CTL_MAX_REQUEST) {
		sb_printf(&c->out, "{\"v\":1,\"ok\":false,\"error\":\"request longer than %d bytes\"}\n",
			  CTL_MAX_REQUEST);
		c->closing = true;
	}
	if (c->out.len - c->out_off > CTL_MAX_REPLY_BUFFER || c->out.oom) {
		/* A reader this slow would make us buffer without bound. */
		FM_WARN("control client is not reading its replies; cut off");
		ctl_conn_free(d, c);
		return;
	}
	if (c->out.len > c->out_off)
		ctl_conn_flush(d, c);
}

/* The oldest metrics connection not yet doomed, or NULL. */
static struct ctl_conn *oldest_metrics_conn(struct daemon *d)
{
	struct ctl_conn *old = NULL;

	for (struct ctl_conn *c = d->ctl_conns; c; c = c->next)
		if (c->http && c->accepted_ns && (!old || c->accepted_ns < old->accepted_ns))
			old = c;
	return old;
}

/* Cut off metrics connections whose request is late: an idle or
 * half-sent request must not hold a descriptor. */
static void sweep_metrics_conns(struct daemon *d, uint64_t now)
{
	uint64_t limit = (uint64_t)d->cfg.metrics_timeout_ms * 1000000ull;
	struct ctl_conn *c = d->ctl_conns, *next;

	for (; c; c = next) {
		next = c->next;
		if (c->http && (c->accepted_ns == 0 || now - c->accepted_ns >= limit))
			ctl_conn_free(d, c);
	}
}

static void ctl_accept(struct daemon *d, bool http)
{
	for (;;) {
		int fd = accept_one(d, http ? d->metrics_fd : d->ctl_fd);
		struct ucred cred;
		struct ctl_conn *c;
		struct epoll_event ev = { .events = EPOLLIN };

		if (fd < 0)
			return;
		/* Metrics are read-only and bound to loopback; the control
		 * socket can stop us, so its peer is checked. */
		if (!http && (!peer_allowed(d, fd, &cred, true) || d->nctl_conns >= d->cfg.ctl_max_conns)) {
			static const char denied[] =
				"{\"v\":1,\"ok\":false,\"error\":\"permission denied\"}\n";
			static const char busy[] =
				"{\"v\":1,\"ok\":false,\"error\":\"too many control connections\"}\n";
			bool is_busy = d->nctl_conns >= d->cfg.ctl_max_conns;

			d->conns_refused++;
			fm_log_ratelimited(FM_LOG_WARN, "control connection refused: %s",
					   is_busy ? "control.max_connections reached" : "permission denied");
			if (send(fd, is_busy ? busy : denied, (is_busy ? sizeof(busy) : sizeof(denied)) - 1,
				 MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
				/* the peer is refused either way */
			}
			close(fd);
			continue;
		}
		/* A scraper sends one request and goes; when the limit is
		 * reached the oldest connection is the one most likely idle. */
		if (http && d->nmetrics_conns - d->nmetrics_doomed >= d->cfg.metrics_max_conns) {
			struct ctl_conn *old = oldest_metrics_conn(d);

			/* Freed by the sweep after this epoll batch: the batch
			 * may still hold an event for it. */
			d->conns_refused++;
			if (old) {
				old->accepted_ns = 0;
				d->nmetrics_doomed++;
			}
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->http = http;
		c->accepted_ns = fm_now_ns();
		LIST_PUSH(d->ctl_conns, c);
		if (http)
			d->nmetrics_conns++;
		else
			d->nctl_conns++;
		ev.data.u64 = tagged(TAG_CTL_CONN, c);
		if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
			ctl_conn_free(d, c);
	}
}

/* ---- lifecycle ---- */

struct daemon *daemon_create(const struct fm_config *cfg)
{
	struct daemon *d = calloc(1, sizeof(*d));
	sigset_t sigs;
	int rc;

	if (!d)
		return NULL;
	d->cfg = *cfg;
	d->epfd = d->reg_fd = d->ctl_fd = d->sig_fd = d->metrics_fd = -1;
	d->reg_lock_fd = d->ctl_lock_fd = -1;
	d->reply_bell.efd = -1;
	d->nshards = cfg->shard_count;
	d->started_ns = fm_now_ns();
	if ((rc = fm_doorbell_init(&d->reply_bell)) < 0)
		goto fail;
	d->reply_bell.sleeping = 1;   /* the control plane always wants the wake */
	d->snap = calloc(d->nshards, sizeof(*d->snap));
	d->region_snap = calloc((size_t)d->nshards * FM_MAX_REGIONS, sizeof(*d->region_snap));
	d->restore_on_shutdown = true;
	if (!d->snap || !d->region_snap) {
		rc = -ENOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < d->nshards; i++) {
		/* Spread the budget; the first shards take the remainder. */
		uint64_t budget = cfg->resident_pages / d->nshards +
				  (i < cfg->resident_pages % d->nshards ? 1 : 0);

		struct shard_params sp;

		fm_config_shard_params(cfg, i, &sp);
		d->shards[i] = shard_create(&sp, i, budget, &d->reply_bell);
		if (!d->shards[i]) {
			rc = -errno;
			FM_ERR("cannot create shard %u: %s", i, strerror(errno));
			goto fail;
		}
	}
	struct dispatch_target targets[FM_MAX_SHARDS];

	for (unsigned i = 0; i < d->nshards; i++)
		targets[i] = (struct dispatch_target){ shard_data_ring(d->shards[i]),
						       shard_doorbell(d->shards[i]) };
	d->disp = dispatcher_create(targets, d->nshards, cfg->dispatcher_cpu, cfg->dispatcher_batch,
				   cfg->dispatcher_spin_us, &d->reply_bell);
	if (!d->disp) {
		rc = -errno;
		goto fail;
	}
	d->reg_fd = ctl_listen_unix(cfg->register_path, SOCK_SEQPACKET, cfg->register_mode, &d->reg_lock_fd);
	if (d->reg_fd < 0) {
		rc = d->reg_fd;
		if (rc == -EADDRINUSE)
			FM_ERR("another fluidmemd serves %s", cfg->register_path);
		else
			FM_ERR("cannot listen on %s: %s%s", cfg->register_path, strerror(-rc),
			       ctl_listen_strerror(rc));
		goto fail;
	}
	d->ctl_fd = ctl_listen_unix(cfg->control_path, SOCK_STREAM, cfg->control_mode, &d->ctl_lock_fd);
	if (d->ctl_fd < 0) {
		rc = d->ctl_fd;
		if (rc == -EADDRINUSE)
			FM_ERR("another fluidmemd serves %s", cfg->control_path);
		else
			FM_ERR("cannot listen on %s: %s%s", cfg->control_path, strerror(-rc),
			       ctl_listen_strerror(rc));
		goto fail;
	}
	if (cfg->metrics_listen[0]) {
		struct sockaddr_storage ss;
		socklen_t len;
		int one = 1;

		rc = fm_config_metrics_addr(cfg, &ss, &len);
		if (rc == 0) {
			d->metrics_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
			setsockopt(d->metrics_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			if (d->metrics_fd < 0 || bind(d->metrics_fd, (struct sockaddr *)&ss, len) < 0 ||
			    listen(d->metrics_fd, 16) < 0)
				rc = -errno;
		}
		if (rc < 0) {
			FM_ERR("cannot serve metrics on %s: %s", cfg->metrics_listen, strerror(-rc));
			goto fail;
		}
	}
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	/* Block before any thread starts so only the signalfd sees them. */
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	d->sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	d->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (d->sig_fd < 0 || d->epfd < 0) {
		rc = -errno;
		goto fail;
	}
	struct {
		int fd, tag;
	} watch[] = { { d->reg_fd, TAG_REG_LISTEN }, { d->ctl_fd, TAG_CTL_LISTEN },
		      { d->sig_fd, TAG_SIGNAL }, { d->reply_bell.efd, TAG_REPLIES },
		      { d->metrics_fd, TAG_METRICS_LISTEN } };
	for (size_t i = 0; i < FM_ARRAY_SIZE(watch); i++) {
		if (watch[i].fd < 0)
			continue;
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)watch[i].tag };
		if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, watch[i].fd, &ev) < 0) {
			rc = -errno;
			goto fail;
		}
	}
	for (unsigned i = 0; i < d->nshards; i++) {
		if ((rc = shard_start(d->shards[i])) < 0)
			goto fail;
	}
	if ((rc = dispatcher_start(d->disp)) < 0)
		goto fail;
	return d;
fail:
	daemon_destroy(d);
	errno = -rc;
	return NULL;
}

int daemon_run(struct daemon *d)
{
	struct epoll_event evs[64];

	FM_INFO("serving: register %s, control %s, %u shard(s), budget %llu pages, store %s%s%s",
		d->cfg.register_path, d->cfg.control_path, d->nshards,
		(unsigned long long)d->cfg.resident_pages, d->cfg.store_backend,
		d->metrics_fd >= 0 ? ", metrics on http://" : "",
		d->metrics_fd >= 0 ? d->cfg.metrics_listen : "");
	while (!d->stopping) {
		int n = epoll_wait(d->epfd, evs, 64,
				   d->paused_until_ns ? ACCEPT_PAUSE_MS / 2 : d->nmetrics_conns ? 100 : 1000);
		uint64_t now;

		if (n < 0 && errno != EINTR)
			return -errno;
		for (int i = 0; i < n && !d->stopping; i++) {
			uint64_t data = evs[i].data.u64;
			int tag = (int)(data & ((1u << TAG_BITS) - 1));
			void *p = (void *)(uintptr_t)(data & ~(uint64_t)((1u << TAG_BITS) - 1));

			switch (tag) {
			case TAG_REG_LISTEN:
				reg_accept(d);
				break;
			case TAG_CTL_LISTEN:
				ctl_accept(d, false);
				break;
			case TAG_METRICS_LISTEN:
				ctl_accept(d, true);
				break;
			case TAG_SIGNAL: {
				struct signalfd_siginfo si;
				if (read(d->sig_fd, &si, sizeof(si)) == sizeof(si))
					FM_INFO("signal %u: shutting down", si.ssi_signo);
				d->stopping = true;
				break;
			}
			case TAG_REPLIES:
				drain_replies(d);
				break;
			case TAG_REG_CONN:
				reg_conn_readable(d, p, evs[i].events);
				break;
			case TAG_CTL_CONN:
				if (evs[i].events & EPOLLOUT)
					ctl_conn_flush(d, p);
				else
					ctl_conn_readable(d, p);
				break;
			}
		}
		/* Only between batches: a batch may hold events of the
		 * connections these free. */
		now = fm_now_ns();
		if (d->paused_until_ns && now >= d->paused_until_ns)
			resume_listeners(d);
		if (d->nmetrics_doomed || now - d->last_sweep_ns >= 100000000ull) {
			d->last_sweep_ns = now;
			sweep_metrics_conns(d, now);
		}
	}
	return 0;
}

void daemon_destroy(struct daemon *d)
{
	if (!d)
		return;
	/* Detach every region so stored pages are freed, then stop threads. */
	if (d->disp) {
		uint64_t deadline = fm_now_ns() + 5000000000ull;
		unsigned live = 0;

		for (unsigned i = 0; i < FM_MAX_REGIONS; i++) {
			if (d->regions[i]) {
				live++;
				struct region *r = d->regions[i];
				bool alive = r->owner && !((struct reg_conn *)r->owner)->closed;

				r->detach_when_live = true;
				r->restore = alive && d->restore_on_shutdown;
				daemon_detach_region(d, r, r->restore);
			}
		}
		if (live)
			FM_INFO("shutdown: detaching %u region(s); %s", live,
				d->restore_on_shutdown
					? "live clients get their pages back and keep running unserved"
					: "their clients' next faults will wait (never read zeros) until they exit");
		while (fm_now_ns() < deadline) {
			bool any = false;
			for (unsigned i = 0; i < FM_MAX_REGIONS && !any; i++)
				any = d->regions[i] != NULL;
			if (!any)
				break;
			fm_doorbell_wait(&d->reply_bell, 100);
			drain_replies(d);
		}
	}
	for (unsigned i = 0; i < d->nshards; i++) {
		if (d->shards[i]) {
			struct fm_msg m = { .type = FM_MSG_STOP };
			while (!fm_ring_push(shard_ctl_ring(d->shards[i]), &m))
				usleep(100);
			fm_doorbell_ring(shard_doorbell(d->shards[i]));
		}
	}
	/* The dispatcher goes first: it rings shard doorbells. */
	dispatcher_destroy(d->disp);
	for (unsigned i = 0; i < d->nshards; i++) {
		/* a shard that never started has no thread to stop */
		shard_destroy(d->shards[i]);
	}
	/* Connections still open at shutdown: control replies already went
	 * out; registration clients see their socket close. */
	while (d->ctl_conns)
		ctl_conn_free(d, d->ctl_conns);
	while (d->reg_conns)
		reg_conn_free(d, d->reg_conns);
	if (d->reg_fd >= 0) {
		close(d->reg_fd);
		unlink(d->cfg.register_path);
	}
	if (d->ctl_fd >= 0) {
		close(d->ctl_fd);
		unlink(d->cfg.control_path);
	}
	/* The locks go last: the paths are ours until then. */
	if (d->reg_lock_fd >= 0)
		close(d->reg_lock_fd);
	if (d->ctl_lock_fd >= 0)
		close(d->ctl_lock_fd);
	if (d->sig_fd >= 0)
		close(d->sig_fd);
	if (d->metrics_fd >= 0)
		close(d->metrics_fd);
	if (d->epfd >= 0)
		close(d->epfd);
	fm_doorbell_destroy(&d->reply_bell);
	free(d->snap);
	free(d->region_snap);
	orphans_free();   /* every writer is joined */
	free(d);
}
