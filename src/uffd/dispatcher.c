/* The dispatcher: one thread reads every region's uffd and routes each event
 * to the shard that owns the page. It never drops a fault: when a shard's
 * ring is full the message is parked, in order, and retried. The parked
 * queue is bounded in practice because every fault blocks its thread until
 * served, so there can be no more faults outstanding than client threads. */
#include "uffd/uffd.h"
#include "uffd/uffd_compat.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <urcu.h>

#include "base/log.h"
#include "shard/shard.h"

#define EPOLL_BATCH 64
#define CMD_EPOLL_TAG UINT64_MAX   /* epoll data of the command eventfd */
#define IDLE_WAIT_MS 1000

struct parked {
	struct fm_msg *v;
	size_t head, n, cap;   /* a growable FIFO */
};

struct dispatcher {
	struct shard **shards;
	unsigned nshards;
	int cpu;
	unsigned batch;
	uint64_t spin_ns;            /* poll this long after the last event */
	int epfd;
	int cmd_efd;
	struct fm_ring cmd;          /* control plane -> dispatcher */
	struct parked *parked;       /* per shard */
	size_t parked_total;
	bool *kick;                  /* shards that got messages this turn */
	uint64_t *ring_full;         /* per shard: times its ring was full */
	struct uffd_msg *msgs;
	struct dispatch_stats st;
	pthread_t thread;
	bool started;
	volatile bool stop;
	bool reset_requested;        /* set by the control plane, done by the thread */
};

static int parked_push(struct parked *p, const struct fm_msg *m)
{
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 256;
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
	if (p->n == 0 && fm_ring_push(shard_data_ring(d->shards[shard]), m))
		return;
	if (p->n == 0) {
		d->st.ring_full++;
		d->ring_full[shard]++;
	}
	while (parked_push(p, m) < 0) {
		fm_log_once(FM_LOG_ERROR, "dispatcher: out of memory parking a fault; retrying");
		usleep(1000);
	}
	d->parked_total++;
	if (d->parked_total > d->st.parked_max)
		d->st.parked_max = d->parked_total;
}

static void flush_parked(struct dispatcher *d)
{
	for (unsigned i = 0; i < d->nshards; i++) {
		struct parked *p = &d->parked[i];
		struct fm_ring *ring = shard_data_ring(d->shards[i]);

		while (p->n > 0 && fm_ring_push(ring, &p->v[p->head])) {
			p->head = (p->head + 1) % p->cap;
			p->n--;
			d->parked_total--;
			d->kick[i] = true;
		}
	}
}

static void route_range(struct dispatcher *d, struct region *r, uint16_t type, uint64_t start,
			uint64_t end)
{
	uint64_t first, last;
	struct fm_msg m = { .type = type, .a = (uint64_t)(uintptr_t)r };

	if (end <= r->base || start >= r->base + (r->npages << FM_PAGE_SHIFT))
		return;
	if (start < r->base)
		start = r->base;
	first = (start - r->base) >> FM_PAGE_SHIFT;
	last = (end - r->base + FM_PAGE_SIZE - 1) >> FM_PAGE_SHIFT;
	if (last > r->npages)
		last = r->npages;
	m.b = first;
	m.cookie = last - first;
	/* A range inside one stripe (a balloon page) goes to its owner only;
	 * larger ones go to every shard, which skips pages it does not own. */
	if ((first >> FM_STRIPE_SHIFT) == ((last - 1) >> FM_STRIPE_SHIFT)) {
		route(d, region_shard_of(r, first, d->nshards), &m);
		return;
	}
	for (unsigned i = 0; i < d->nshards; i++)
		route(d, i, &m);
}

static void read_region(struct dispatcher *d, struct region *r)
{
	ssize_t n = read(r->uffd, d->msgs, d->batch * sizeof(struct uffd_msg));
	uint64_t now = fm_now_ns();

	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR) {
			d->st.read_errors++;
			fm_log_once(FM_LOG_ERROR, "dispatcher: reading uffd of region %llu: %s",
				    (unsigned long long)r->id, strerror(errno));
			/* Stop polling it; the control plane tears it down. */
			epoll_ctl(d->epfd, EPOLL_CTL_DEL, r->uffd, NULL);
		}
		return;
	}
	for (size_t i = 0; i < (size_t)n / sizeof(struct uffd_msg); i++) {
		const struct uffd_msg *u = &d->msgs[i];

		d->st.events++;
		switch (u->event) {
		case UFFD_EVENT_PAGEFAULT: {
			uint64_t addr = u->arg.pagefault.address & ~(uint64_t)(FM_PAGE_SIZE - 1);
			struct fm_msg m = { .type = FM_MSG_FAULT, .a = (uint64_t)(uintptr_t)r, .cookie = now };

			if (addr < r->base || addr >= r->base + (r->npages << FM_PAGE_SHIFT)) {
				d->st.stray_faults++;
				fm_log_once(FM_LOG_ERROR, "dispatcher: fault at 0x%llx outside region %llu",
					    (unsigned long long)addr, (unsigned long long)r->id);
				break;
			}
			m.b = (addr - r->base) >> FM_PAGE_SHIFT;
			if (u->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE)
				m.flags |= FM_FAULT_WRITE;
			if (u->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)
				m.flags |= FM_FAULT_WP;
			d->st.fault_events++;
			route(d, region_shard_of(r, m.b, d->nshards), &m);
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
}

static void handle_commands(struct dispatcher *d)
{
	uint64_t v;
	struct fm_msg c;

	if (read(d->cmd_efd, &v, sizeof(v)) < 0) {
		/* EAGAIN: nothing new; the ring is checked anyway */
	}
	while (fm_ring_pop(&d->cmd, &c)) {
		struct region *r = (struct region *)(uintptr_t)c.a;
		struct fm_msg m = { .type = c.type, .flags = c.flags, .a = c.a, .cookie = c.cookie };
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = r->slot };

		if (c.type == FM_MSG_REGION_ADD) {
			/* Shards learn of the region before its first fault. */
			for (unsigned i = 0; i < d->nshards; i++)
				route(d, i, &m);
			if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, r->uffd, &ev) < 0)
				FM_ERR("dispatcher: cannot poll region %llu: %s",
				       (unsigned long long)r->id, strerror(errno));
		} else if (c.type == FM_MSG_REGION_DEL) {
			/* Same thread as read_region: no event of r is in
			 * flight, and REGION_DEL queues behind its last fault. */
			epoll_ctl(d->epfd, EPOLL_CTL_DEL, r->uffd, NULL);
			for (unsigned i = 0; i < d->nshards; i++)
				route(d, i, &m);
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
	rcu_register_thread();
	uint64_t last_event = 0;

	while (!d->stop) {
		/* Poll for spin_ns after the last event: the next fault of a storm
		 * is then seen without a wake-up, which measured as the largest
		 * single cost of the extra hop (bench/README.md). The poll does
		 * not yield: a yielding dispatcher lost the first-touch gain, and
		 * the window is bounded so an idle daemon sleeps. */
		bool spin = d->parked_total || (last_event && fm_now_ns() - last_event < d->spin_ns);
		int n = epoll_wait(d->epfd, evs, EPOLL_BATCH, spin ? 0 : IDLE_WAIT_MS);

		if (n > 0)
			last_event = fm_now_ns();
		/* Counters are single-writer: the thread clears its own. */
		if (__atomic_exchange_n(&d->reset_requested, false, __ATOMIC_ACQUIRE)) {
			memset(&d->st, 0, sizeof(d->st));
			memset(d->ring_full, 0, d->nshards * sizeof(*d->ring_full));
		}
		else if (spin && !d->parked_total)
			__builtin_ia32_pause();

		rcu_read_lock();
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 == CMD_EPOLL_TAG) {
				handle_commands(d);
				continue;
			}
			struct region *r = region_table_lookup((uint32_t)evs[i].data.u64);
			if (r)
				read_region(d, r);
		}
		rcu_read_unlock();
		if (d->parked_total) {
			flush_parked(d);
			if (d->parked_total)
				sched_yield();   /* let a shard on this core drain */
		}
		for (unsigned i = 0; i < d->nshards; i++) {
			if (d->kick[i]) {
				d->kick[i] = false;
				fm_doorbell_ring(shard_doorbell(d->shards[i]));
			}
		}
	}
	rcu_unregister_thread();
	return NULL;
}

struct dispatcher *dispatcher_create(struct shard **shards, unsigned nshards, int cpu,
				     unsigned batch, unsigned spin_us)
{
	struct dispatcher *d = calloc(1, sizeof(*d));
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = CMD_EPOLL_TAG };
	int rc = -ENOMEM;

	if (!d)
		return NULL;
	d->epfd = d->cmd_efd = -1;
	d->shards = shards;
	d->nshards = nshards;
	d->cpu = cpu;
	d->batch = batch ? batch : 64;
	d->spin_ns = (uint64_t)spin_us * 1000;
	d->parked = calloc(nshards, sizeof(*d->parked));
	d->kick = calloc(nshards, sizeof(*d->kick));
	d->ring_full = calloc(nshards, sizeof(*d->ring_full));
	d->msgs = calloc(d->batch, sizeof(*d->msgs));
	if (!d->parked || !d->kick || !d->msgs || !d->ring_full)
		goto fail;
	if ((rc = fm_ring_init(&d->cmd, 256)) < 0)
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

static int command(struct dispatcher *d, uint16_t type, struct region *r, uint32_t flags)
{
	struct fm_msg m = { .type = type, .flags = flags, .a = (uint64_t)(uintptr_t)r,
			    .cookie = r->request };
	uint64_t one = 1;

	if (!fm_ring_push(&d->cmd, &m))
		return -EAGAIN;
	if (write(d->cmd_efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	return 0;
}

int dispatcher_attach(struct dispatcher *d, struct region *r)
{
	return command(d, FM_MSG_REGION_ADD, r, 0);
}

int dispatcher_detach(struct dispatcher *d, struct region *r, bool restore)
{
	return command(d, FM_MSG_REGION_DEL, r, restore ? FM_DEL_RESTORE : 0);
}

void dispatcher_get_stats(const struct dispatcher *d, struct dispatch_stats *out)
{
	memcpy(out, &d->st, sizeof(*out));
}

uint64_t dispatcher_ring_full(const struct dispatcher *d, unsigned shard)
{
	return shard < d->nshards ? __atomic_load_n(&d->ring_full[shard], __ATOMIC_RELAXED) : 0;
}

void dispatcher_reset_stats(struct dispatcher *d)
{
	uint64_t one = 1;

	__atomic_store_n(&d->reset_requested, true, __ATOMIC_RELEASE);
	/* Wake it so the reset is done before our reply goes out. */
	if (write(d->cmd_efd, &one, sizeof(one)) < 0) {
		/* EAGAIN: a wake is already pending */
	}
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
	if (d->parked)
		for (unsigned i = 0; i < d->nshards; i++)
			free(d->parked[i].v);
	free(d->parked);
	free(d->kick);
	free(d->ring_full);
	free(d->msgs);
	free(d);
}
