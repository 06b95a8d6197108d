/* The dispatcher: one thread reads every region's uffd and routes each event
 * to the shard that owns the page. It never drops a fault of a live region:
 * when a shard's ring is full the message is parked, in order, and retried.
 * The parked queue is bounded in practice because every fault blocks its
 * thread until served, so there can be no more faults outstanding than
 * client threads.
 *
 * Region table. The dispatcher owns slot -> region for itself; only the
 * commands on its ring change it, on this thread, so an event is matched
 * against the table as it is at that moment. Epoll data carries slot and
 * generation: an event of a region that was forgotten earlier in the same
 * epoll batch (EPOLL_CTL_DEL does not take it out of a batch already
 * returned) names an old generation and is skipped, even if the slot was
 * reused. A region's messages stop being routed at REGION_DEL, which queues
 * behind its last routed message on every shard ring, so no shard ever sees
 * a region pointer after it acknowledged REGION_DEL. */
#include "uffd/uffd.h"
#include "uffd/route.h"
#include "uffd/uffd_compat.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base/failpoint.h"
#include "base/log.h"
#include "uffd/peek.h"

#define EPOLL_BATCH 64
#define DEFAULT_BATCH 64           /* events read per wake-up when the config says 0 */
#define CMD_SLOTS 256              /* control plane -> dispatcher commands */
#define REPLY_SLOTS 256            /* dispatcher -> control plane replies */
#define CMD_EPOLL_TAG UINT64_MAX   /* epoll data of the command eventfd */
#define IDLE_WAIT_MS 1000
#define DISPATCH_CLOCK_POLLS 16     /* empty busy-polls per clock read */
/* Bound on the messages read from one uffd in one go when it must be read
 * to empty (edge-triggered or final drain): a client that raises events as
 * fast as we read them cannot keep the dispatcher from everyone else. */
#define DRAIN_MAX_MSGS 65536
#define UNREGISTER_TRIES 3
#define PARKED_FIRST_CAP 256       /* messages a parked queue holds at first; doubles */
#define OOM_RETRY_US 1000          /* out of memory parking: wait, then retry */

enum dslot_state { DS_FREE, DS_LIVE, DS_DRAINING };

/* The dispatcher's own view of one region slot. */
struct dslot {
	struct uffd_region *r;
	uint32_t gen;        /* bumped when the slot is freed */
	uint8_t state;       /* enum dslot_state */
	bool polled;         /* the uffd is in the epoll set */
	bool hostile;        /* reported to the control plane; polled edge-triggered */
};

struct parked {
	struct fm_msg *v;
	size_t head, n, cap;   /* a growable FIFO */
};

struct dispatcher {
	struct dispatch_target *targets;   /* per shard: its data ring and doorbell */
	unsigned nshards;
	int cpu;
	unsigned batch;
	uint64_t spin_ns;            /* poll this long after the last event */
	int epfd;
	struct peek peek;            /* this thread's no-syscall look at epfd */
	int cmd_efd;
	struct fm_ring cmd;          /* control plane -> dispatcher */
	struct fm_ring reply;        /* dispatcher -> control plane */
	struct parked reply_parked;  /* replies waiting for room on `reply` */
	struct fm_doorbell *reply_bell;
	struct dslot *slots;         /* FM_MAX_REGIONS; this thread only */
	struct parked *parked;       /* per shard */
	size_t parked_total;
	bool *kick;                  /* shards that got messages this turn */
	uint64_t *ring_full;         /* per shard: times its ring was full */
	struct uffd_msg *msgs;
	struct dispatch_stats st;
	pthread_t thread;
	bool started;
	volatile bool stop;
};

static int parked_push(struct parked *p, const struct fm_msg *m)
{
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : PARKED_FIRST_CAP;
		struct fm_msg *v = malloc(cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		for (size_t i = 0; i < p->n; i++)
			v[i] = p->v[(p->head + i) % p->cap];
		free(p->v);
		p->v = v;
		p->head = 0;
		p->cap = cap;
	}
	p->v[(p->head + p->n) % p->cap] = *m;
	p->n++;
	return 0;
}

static void route(struct dispatcher *d, unsigned shard, const struct fm_msg *m)
{
	struct parked *p = &d->parked[shard];

	d->kick[shard] = true;
	/* Order per shard matters (REGION_ADD before faults, REMOVE between
	 * them), so once anything is parked everything behind it parks too. */
	if (p->n == 0 && fm_ring_push(d->targets[shard].ring, m))
		return;
	if (p->n == 0) {
		d->st.ring_full++;
		d->ring_full[shard]++;
	}
	while (parked_push(p, m) < 0) {
		fm_log_once(FM_LOG_ERROR, "dispatcher: out of memory parking a fault; retrying");
		usleep(OOM_RETRY_US);
	}
	d->parked_total++;
	if (d->parked_total > d->st.parked_max)
		d->st.parked_max = d->parked_total;
}

static void flush_parked(struct dispatcher *d)
{
	for (unsigned i = 0; i < d->nshards; i++) {
		struct parked *p = &d->parked[i];
		struct fm_ring *ring = d->targets[i].ring;

		while (p->n > 0 && fm_ring_push(ring, &p->v[p->head])) {
			p->head = (p->head + 1) % p->cap;
			p->n--;
			d->parked_total--;
			d->kick[i] = true;
		}
	}
}


static inline uint64_t slot_tag(uint32_t slot, uint32_t gen)
{
	return (uint64_t)gen << 32 | slot;
}

/* Replies never block the dispatcher: the control thread may itself be
 * waiting for room on our command ring, so a full reply ring parks. */
static void disp_send(struct dispatcher *d, const struct fm_msg *m)
{
	if (d->reply_parked.n == 0 && fm_ring_push(&d->reply, m)) {
		fm_doorbell_ring(d->reply_bell);
		return;
	}
	while (parked_push(&d->reply_parked, m) < 0) {
		fm_log_once(FM_LOG_ERROR, "dispatcher: out of memory parking a reply; retrying");
		usleep(OOM_RETRY_US);
	}
}

/* DONE for the request `what` (enum fm_msg_type) with id `request`. */
static void disp_done(struct dispatcher *d, uint32_t what, int64_t result, uint64_t detail,
		      uint64_t request)
{
	struct fm_msg m = { .type = FM_MSG_DONE, .shard = FM_DISPATCHER_SENDER, .flags = what,
			    .done = { .result = result, .detail = detail, .request = request } };

	disp_send(d, &m);
}

static void flush_replies(struct dispatcher *d)
{
	struct parked *p = &d->reply_parked;
	bool any = false;

	while (p->n > 0 && fm_ring_push(&d->reply, &p->v[p->head])) {
		p->head = (p->head + 1) % p->cap;
		p->n--;
		any = true;
	}
	if (any)
		fm_doorbell_ring(d->reply_bell);
}

/* Tell the control plane to detach a region whose uffd we cannot read
 * safely, once, and stop level-triggered polling, which would report the
 * condition on every turn. Edge-triggered, each new event still wakes us, so
 * the region keeps being read (faults served, REMOVE/UNMAP completed) until
 * it is released. */
static void report_hostile(struct dispatcher *d, struct dslot *s, uint32_t slot, int why)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.u64 = slot_tag(slot, s->gen) };

	if (s->hostile)
		return;
	s->hostile = true;
	d->st.hostile_regions++;
	if (s->polled && epoll_ctl(d->epfd, EPOLL_CTL_MOD, s->r->uffd, &ev) < 0 &&
	    epoll_ctl(d->epfd, EPOLL_CTL_DEL, s->r->uffd, NULL) == 0)
		s->polled = false;
	FM_WARN("region %llu of pid %d: %s; detaching it", (unsigned long long)s->r->id,
		(int)s->r->pid,
		why == -EPERM || why == -EINVAL ? "its client made the uffd blocking"
						: "its uffd cannot be read");
	struct fm_msg m = { .type = FM_MSG_REGION_HOSTILE, .shard = FM_DISPATCHER_SENDER,
			    .hostile = { .error = why, .region = s->r } };
	disp_send(d, &m);
}

static void route_range(struct dispatcher *d, struct uffd_region *r, uint16_t type, uint64_t start,
			uint64_t end)
{
	struct uffd_route rt;
	struct fm_msg m = { .type = type, .range.region = r };

	if (!uffd_route_range(r, d->nshards, start, end, &rt))
		return;
	m.range.first = rt.first;
	m.range.count = rt.count;
	if (rt.owner >= 0) {
		route(d, (unsigned)rt.owner, &m);
		return;
	}
	for (unsigned i = 0; i < d->nshards; i++)
		route(d, i, &m);
}

/* One message of a region. A detaching region's faults and ranges are read
 * but not routed: the shards are letting go of it. Its faulting threads are
 * woken by the restore's copies or, at the latest, by the unregister in
 * forget(); its REMOVE/UNMAP senders by this very read. */
static void handle_msg(struct dispatcher *d, struct dslot *s, const struct uffd_msg *u, uint64_t now)
{
	struct uffd_region *r = s->r;

	d->st.events++;
	if (u->event == UFFD_EVENT_FORK) {
		/* The kernel installed a new uffd (the child's) in our table. We
		 * serve no child: closing it releases its context, which
		 * unregisters the child's ranges. Keeping it would leak a
		 * descriptor per fork for good. */
		d->st.fork_events++;
		close((int)u->arg.fork.ufd);
		return;
	}
	if (s->state == DS_DRAINING) {
		d->st.detach_drops++;
		return;
	}
	switch (u->event) {
	case UFFD_EVENT_PAGEFAULT: {
		uint64_t addr = u->arg.pagefault.address & ~(uint64_t)(FM_PAGE_SIZE - 1);
		struct fm_msg m = { .type = FM_MSG_FAULT, .fault = { .region = r, .read_ns = now } };

		if (addr < r->base || addr >= r->base + (r->npages << FM_PAGE_SHIFT)) {
			d->st.stray_faults++;
			fm_log_once(FM_LOG_ERROR, "dispatcher: fault at 0x%llx outside region %llu",
				    (unsigned long long)addr, (unsigned long long)r->id);
			break;
		}
		m.fault.page = (addr - r->base) >> FM_PAGE_SHIFT;
		if (u->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE)
			m.flags |= FM_FAULT_WRITE;
		if (u->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)
			m.flags |= FM_FAULT_WP;
		d->st.fault_events++;
		route(d, region_shard_of(r, m.fault.page, d->nshards), &m);
		break;
	}
	case UFFD_EVENT_REMOVE:
		d->st.remove_events++;
		route_range(d, r, FM_MSG_REMOVE, u->arg.remove.start, u->arg.remove.end);
		break;
	case UFFD_EVENT_UNMAP:
		d->st.unmap_events++;
		route_range(d, r, FM_MSG_UNMAP, u->arg.remove.start, u->arg.remove.end);
		break;
	default:
		d->st.other_events++;
		fm_log_once(FM_LOG_WARN, "dispatcher: ignoring uffd event %u", u->event);
	}
}

/* The REMOVEs and UNMAPs in the batch just read: count each, for every
 * shard it will be routed to, before anything of the batch is routed.
 * Reading the event let the client's madvise go on, so the pages may be
 * gone from the client any moment now, while a shard learns of it only when
 * it pops the message (which may wait behind others, or be parked here). A
 * shard checks its count against the discards it handled right before each
 * install of stored data (uffd_discard_pending), so from here on it installs
 * no old data until it has handled them (docs/design.md, "Prefetch",
 * Discards). Only this thread writes the counts. */
static void note_discards(struct dispatcher *d, struct dslot *s, size_t k)
{
	bool any = false;

	if (s->state == DS_DRAINING)
		return;   /* read, not routed (handle_msg) */
	for (size_t i = 0; i < k; i++) {
		const struct uffd_msg *u = &d->msgs[i];
		struct uffd_route rt;

		if ((u->event != UFFD_EVENT_REMOVE && u->event != UFFD_EVENT_UNMAP) ||
		    !uffd_route_range(s->r, d->nshards, u->arg.remove.start, u->arg.remove.end, &rt))
			continue;
		for (unsigned sh = 0; sh < d->nshards; sh++)
			if ((rt.owner < 0 || (unsigned)rt.owner == sh) && d->targets[sh].discards)
				__atomic_add_fetch(d->targets[sh].discards, 1, __ATOMIC_SEQ_CST);
		any = true;
	}
	if (any)
		fm_failpoint_delay(FM_FP_DISPATCH_REMOVE_READ);
}

/* Read a region's uffd: one batch, or until empty (at most DRAIN_MAX_MSGS)
 * when `to_empty` or the region is polled edge-triggered. Never blocks
 * (uffd_read_nowait), whatever the client did to the file's flags. */
static void read_region(struct dispatcher *d, uint32_t slot, bool to_empty)
{
	struct dslot *s = &d->slots[slot];
	size_t total = 0;

	to_empty = to_empty || s->hostile;
	for (;;) {
		ssize_t n = uffd_read_nowait(s->r->uffd, d->msgs, d->batch);
		uint64_t now = fm_now_ns();
		size_t k;

		if (n == -EAGAIN || n == -EINTR)
			return;
		if (n < 0) {
			d->st.read_errors++;
			report_hostile(d, s, slot, (int)n);
			return;
		}
		k = (size_t)n / sizeof(struct uffd_msg);
		note_discards(d, s, k);
		for (size_t i = 0; i < k; i++)
			handle_msg(d, s, &d->msgs[i], now);
		total += k;
		if (!to_empty || k < d->batch || total >= DRAIN_MAX_MSGS)
			return;
	}
}

/* REGION_FORGET: the shards have let go. Unregister the range in the
 * client's mm (which wakes every fault still waiting there and stops new
 * events), read what was queued before that, and drop the region. Reading
 * before and after the unregister matters: a REMOVE queued earlier holds
 * its sender (and every copy into that mm) until it is read. */
static int forget(struct dispatcher *d, uint32_t slot, bool unregister)
{
	struct dslot *s = &d->slots[slot];
	struct uffd_region *r = s->r;
	int rc = unregister ? -EAGAIN : 0;

	for (unsigned i = 0; i < UNREGISTER_TRIES && rc == -EAGAIN; i++) {
		read_region(d, slot, true);
		rc = uffd_unregister(r->uffd, r->base, r->npages << FM_PAGE_SHIFT);
	}
	read_region(d, slot, true);
	/* UFFDIO_UNREGISTER wakes the range before it write-locks each VMA,
	 * so a fault that holds its VMA's read lock (per-VMA lock faults do
	 * not take mmap_lock) queues after that wake and would sleep for
	 * good. Unregister waits for that lock, so such a fault is queued by
	 * now: wake the range once more (seen on 6.18, ~1 in 30 hang-ups).
	 * Wake also when unregister failed: a range another uffd of the
	 * client took over is refused (EINVAL) but our waiters must go. */
	if (unregister)
		uffd_wake(r->uffd, r->base, r->npages << FM_PAGE_SHIFT);
	/* ESRCH/EAGAIN: the client's mm is gone (nothing left to unregister). */
	if (rc < 0 && rc != -ESRCH && rc != -EAGAIN) {
		d->st.unregister_errors++;
		fm_log_once(FM_LOG_WARN, "dispatcher: cannot unregister region %llu: %s",
			    (unsigned long long)r->id, strerror(-rc));
	}
	if (s->polled)
		epoll_ctl(d->epfd, EPOLL_CTL_DEL, r->uffd, NULL);
	s->r = NULL;
	s->state = DS_FREE;
	s->polled = s->hostile = false;
	s->gen++;
	return rc;
}

static void handle_commands(struct dispatcher *d)
{
	uint64_t v;
	struct fm_msg c;

	if (read(d->cmd_efd, &v, sizeof(v)) < 0) {
		/* EAGAIN: nothing new; the ring is checked anyway */
	}
	while (fm_ring_pop(&d->cmd, &c)) {
		bool about_region = c.type == FM_MSG_REGION_ADD || c.type == FM_MSG_REGION_DEL ||
				    c.type == FM_MSG_REGION_FORGET;
		struct uffd_region *r = about_region ? c.region.region : NULL;
		struct fm_msg m = { .type = c.type, .flags = c.flags, .region = c.region };
		struct dslot *s = r ? &d->slots[r->slot] : NULL;

		switch (c.type) {
		case FM_MSG_REGION_ADD: {
			struct epoll_event ev = { .events = EPOLLIN,
						  .data.u64 = slot_tag(r->slot, s->gen) };
			int rc = 0;

			if (s->state != DS_FREE) {
				rc = -EEXIST;
			} else {
				s->r = r;
				s->state = DS_LIVE;
				s->hostile = false;
				/* A region we cannot poll would go live and
				 * never be read: refuse it instead. */
				if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, r->uffd, &ev) < 0) {
					rc = -errno;
					d->st.epoll_errors++;
					FM_ERR("dispatcher: cannot poll region %llu: %s",
					       (unsigned long long)r->id, strerror(errno));
				} else {
					s->polled = true;
				}
			}
			/* Shards learn of the region before its first fault. */
			for (unsigned i = 0; i < d->nshards; i++)
				route(d, i, &m);
			disp_done(d, FM_MSG_REGION_ADD, rc, (uint64_t)(uintptr_t)r, c.region.request);
			break;
		}
		case FM_MSG_REGION_DEL:
			/* Same thread as read_region: nothing of r is routed
			 * after this, and REGION_DEL queues behind its last
			 * routed message on every shard ring. */
			if (s->r == r)
				s->state = DS_DRAINING;
			for (unsigned i = 0; i < d->nshards; i++)
				route(d, i, &m);
			break;
		case FM_MSG_REGION_FORGET:
			disp_done(d, FM_MSG_REGION_FORGET,
				  s->r == r ? forget(d, r->slot, c.flags & FM_FORGET_UNREGISTER) : -ENOENT,
				  (uint64_t)(uintptr_t)r, c.region.request);
			break;
		case FM_MSG_STATS: {
			struct dispatch_snapshot *out = c.fill.out;

			out->st = d->st;
			for (unsigned i = 0; i < d->nshards && i < FM_DISPATCH_MAX_SHARDS; i++)
				out->ring_full[i] = d->ring_full[i];
			disp_done(d, FM_MSG_STATS, 0, 0, c.fill.request);
			break;
		}
		case FM_MSG_RESET:
			memset(&d->st, 0, sizeof(d->st));
			memset(d->ring_full, 0, d->nshards * sizeof(*d->ring_full));
			disp_done(d, FM_MSG_RESET, 0, 0, c.reset.request);
			break;
		default:
			fm_log_once(FM_LOG_ERROR, "dispatcher: unexpected command %u", c.type);
		}
	}
}

static void *dispatcher_main(void *arg)
{
	struct dispatcher *d = arg;
	struct epoll_event evs[EPOLL_BATCH];

	pthread_setname_np(pthread_self(), "fm-dispatch");
	if (fm_pin_self(d->cpu) < 0)
		FM_WARN("dispatcher: cannot pin to cpu %d", d->cpu);
	uint64_t last_event = 0, clock_ns = 0;
	unsigned polls = 0;
	bool had_events = true;
	int rc = d->spin_ns ? peek_init(&d->peek, d->epfd) : -EINVAL;

	if (rc < 0 && d->spin_ns)
		FM_INFO("dispatcher: no io_uring peek (%s): busy-polls with epoll_wait", strerror(-rc));
	while (!d->stop) {
		/* Poll for spin_ns after the last event: the next fault of a storm
		 * is then seen without a wake-up, which measured as the largest
		 * single cost of the extra hop (bench/README.md). The poll does
		 * not yield: a yielding dispatcher lost the first-touch gain, and
		 * the window is bounded so an idle daemon sleeps. An empty poll
		 * after an empty epoll_wait is a load from the peek ring, not a
		 * system call (uffd/peek.h). */
		/* The clock is read every DISPATCH_CLOCK_POLLS empty polls, not
		 * on each: reading it was 20% of the daemon's samples in a storm
		 * (bench/README.md, "Against kernel swap and zram"); the window
		 * overruns by a few hundred ns at most. */
		if (last_event && polls++ % DISPATCH_CLOCK_POLLS == 0)
			clock_ns = fm_now_ns();
		bool spin = d->parked_total || d->reply_parked.n ||
			    (last_event && clock_ns - last_event < d->spin_ns);
		int n;

		if (spin && !had_events && !d->parked_total && !d->reply_parked.n &&
		    !peek_news(&d->peek)) {
			fm_cpu_relax();
			continue;
		}
		peek_consume(&d->peek);
		n = epoll_wait(d->epfd, evs, EPOLL_BATCH, spin ? 0 : IDLE_WAIT_MS);
		had_events = n != 0;   /* an error polls again too */
		if (n > 0) {
			last_event = clock_ns = fm_now_ns();
			polls = 1;
		}
		else if (spin && !d->parked_total)
			fm_cpu_relax();

		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;
			uint32_t slot = (uint32_t)tag;
			struct dslot *s;

			if (tag == CMD_EPOLL_TAG) {
				handle_commands(d);
				continue;
			}
			if (slot >= FM_MAX_REGIONS)
				continue;
			s = &d->slots[slot];
			/* Forgotten earlier in this batch (or reused since). */
			if (s->state == DS_FREE || s->gen != (uint32_t)(tag >> 32))
				continue;
			/* userfaultfd_poll says EPOLLERR for a uffd its client
			 * made blocking. We can still read it without blocking,
			 * but the client broke the contract: detach it. */
			if (evs[i].events & (EPOLLERR | EPOLLHUP))
				report_hostile(d, s, slot, -EPERM);
			read_region(d, slot, false);
		}
		if (d->parked_total) {
			flush_parked(d);
			if (d->parked_total)
				sched_yield();   /* let a shard on this core drain */
		}
		if (d->reply_parked.n)
			flush_replies(d);
		for (unsigned i = 0; i < d->nshards; i++) {
			if (d->kick[i]) {
				d->kick[i] = false;
				fm_doorbell_ring(d->targets[i].bell);
			}
		}
	}
	peek_destroy(&d->peek);
	return NULL;
}

struct dispatcher *dispatcher_create(const struct dispatch_target *targets, unsigned nshards, int cpu,
				     unsigned batch, unsigned spin_us, struct fm_doorbell *reply_bell)
{
	struct dispatcher *d = calloc(1, sizeof(*d));
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = CMD_EPOLL_TAG };
	int rc = -ENOMEM;

	if (!d)
		return NULL;
	d->epfd = d->cmd_efd = -1;
	d->peek.ring_fd = -1;
	d->nshards = nshards;
	d->cpu = cpu;
	d->batch = batch ? batch : DEFAULT_BATCH;
	d->spin_ns = (uint64_t)spin_us * 1000;
	d->reply_bell = reply_bell;
	if (nshards > FM_DISPATCH_MAX_SHARDS) {
		rc = -EINVAL;
		goto fail;
	}
	d->slots = calloc(FM_MAX_REGIONS, sizeof(*d->slots));
	d->targets = calloc(nshards ? nshards : 1, sizeof(*d->targets));
	if (d->targets)
		memcpy(d->targets, targets, nshards * sizeof(*d->targets));
	d->parked = calloc(nshards, sizeof(*d->parked));
	d->kick = calloc(nshards, sizeof(*d->kick));
	d->ring_full = calloc(nshards, sizeof(*d->ring_full));
	d->msgs = calloc(d->batch, sizeof(*d->msgs));
	if (!d->parked || !d->kick || !d->msgs || !d->ring_full || !d->slots || !d->targets)
		goto fail;
	if ((rc = fm_ring_init(&d->cmd, CMD_SLOTS)) < 0 || (rc = fm_ring_init(&d->reply, REPLY_SLOTS)) < 0)
		goto fail;
	d->epfd = epoll_create1(EPOLL_CLOEXEC);
	d->cmd_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->epfd < 0 || d->cmd_efd < 0 || epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->cmd_efd, &ev) < 0) {
		rc = -errno;
		goto fail;
	}
	return d;
fail:
	dispatcher_destroy(d);
	errno = -rc;
	return NULL;
}

int dispatcher_start(struct dispatcher *d)
{
	int rc = pthread_create(&d->thread, NULL, dispatcher_main, d);

	if (rc)
		return -rc;
	d->started = true;
	return 0;
}

static int command(struct dispatcher *d, const struct fm_msg *m)
{
	uint64_t one = 1;

	if (!fm_ring_push(&d->cmd, m))
		return -EAGAIN;
	if (write(d->cmd_efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	return 0;
}

static int region_command(struct dispatcher *d, uint16_t type, struct uffd_region *r, uint32_t flags)
{
	struct fm_msg m = { .type = type, .flags = flags,
			    .region = { .region = r, .request = r->request } };

	return command(d, &m);
}

int dispatcher_attach(struct dispatcher *d, struct uffd_region *r)
{
	return region_command(d, FM_MSG_REGION_ADD, r, 0);
}

int dispatcher_detach(struct dispatcher *d, struct uffd_region *r, bool restore)
{
	return region_command(d, FM_MSG_REGION_DEL, r, restore ? FM_DEL_RESTORE : 0);
}

int dispatcher_forget(struct dispatcher *d, struct uffd_region *r, bool unregister)
{
	return region_command(d, FM_MSG_REGION_FORGET, r, unregister ? FM_FORGET_UNREGISTER : 0);
}

struct fm_ring *dispatcher_reply_ring(struct dispatcher *d)
{
	return &d->reply;
}

int dispatcher_request_stats(struct dispatcher *d, struct dispatch_snapshot *out, uint64_t request)
{
	struct fm_msg m = { .type = FM_MSG_STATS, .fill = { .out = out, .request = request } };

	return command(d, &m);
}

int dispatcher_request_reset(struct dispatcher *d, uint64_t request)
{
	struct fm_msg m = { .type = FM_MSG_RESET,
			    .reset = { .what = FM_RESET_COUNTERS, .request = request } };

	return command(d, &m);
}

void dispatcher_destroy(struct dispatcher *d)
{
	if (!d)
		return;
	if (d->started) {
		uint64_t one = 1;

		d->stop = true;
		if (write(d->cmd_efd, &one, sizeof(one)) < 0) {
			/* the thread also wakes on its idle timeout */
		}
		pthread_join(d->thread, NULL);
	}
	if (d->epfd >= 0)
		close(d->epfd);
	if (d->cmd_efd >= 0)
		close(d->cmd_efd);
	fm_ring_destroy(&d->cmd);
	fm_ring_destroy(&d->reply);
	free(d->reply_parked.v);
	free(d->slots);
	if (d->parked)
		for (unsigned i = 0; i < d->nshards; i++)
			free(d->parked[i].v);
	free(d->parked);
	free(d->kick);
	free(d->ring_full);
	free(d->msgs);
	free(d->targets);
	free(d);
}
