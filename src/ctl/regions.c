/* ctl/regions: registration connections (one per client process) and the
 * life cycle of the regions they register: attach through every shard and
 * the dispatcher, detach, release, and the replies the client waits for. */
#include "ctl/daemon_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/failpoint.h"
#include "base/log.h"
#include "ctl/cluster_hooks.h"
#include "ctl/registration.h"
#include "proto/proto.h"

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

static int conn_add_region(struct reg_conn *c, struct uffd_region *r)
{
	if (c->nregions == c->cap) {
		unsigned cap = c->cap ? c->cap * 2 : 4;
		struct uffd_region **v = realloc(c->regions, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		c->regions = v;
		c->cap = cap;
	}
	c->regions[c->nregions++] = r;
	return 0;
}

static void conn_remove_region(struct reg_conn *c, struct uffd_region *r)
{
	for (unsigned i = 0; i < c->nregions; i++) {
		if (c->regions[i] == r) {
			c->regions[i] = c->regions[--c->nregions];
			return;
		}
	}
}

void reg_conn_free(struct daemon *d, struct reg_conn *c)
{
	LIST_REMOVE(c, link);
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
		const struct uffd_region *r = d->regions[i];

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
		const struct uffd_region *r = d->regions[i];

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

/* A region for a checked REGISTER or READOPT: it takes over the request's
 * descriptors (fds[] become -1). NULL when out of memory. */
static struct uffd_region *region_from_request(struct reg_conn *c, const struct fm_reg_req *q,
					       int *fds, const char *name)
{
	struct uffd_region *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
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
	memcpy(r->name, name, sizeof(r->name));
	return r;
}

/* ---- re-adoption (docs/design.md, "Restart and re-adoption") ---- */

static uint64_t wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int region_id_alloc(struct daemon *d, uint64_t *id)
{
	if (ctl_cluster_on(d))
		return ctl_cluster_region_id(d, id);
	/* 32 bits of counter per run; the generation (16 bits) moves on at
	 * every start, so a restarted daemon never reuses a live id. */
	if (d->region_counter == UINT32_MAX)
		return -EOVERFLOW;
	*id = ((uint64_t)d->node_id << 48) | ((uint64_t)(d->sdir.generation & 0xffff) << 32) |
	      ++d->region_counter;
	d->next_region = *id;
	return 0;
}

/* The region file of a new region, created before the region reaches any
 * shard (their evictions write its bits). Without one the region is served
 * all the same, but cannot be re-adopted after a crash. */
static void region_state_create(struct daemon *d, struct uffd_region *r)
{
	struct fm_state_hdr h = {
		.region_id = r->id, .addr = r->base, .size = r->npages * FM_PAGE_SIZE,
		.npages = r->npages, .uid = (uint32_t)r->uid, .pid = (int32_t)r->pid,
		.created_unix_ns = wall_ns(),
	};
	int rc;

	if (!fm_state_dir_on(&d->sdir))
		return;
	memcpy(h.name, r->name, sizeof(h.name));
	rc = fm_state_region_create(&d->sdir, &h, &d->smaps[r->slot]);
	if (rc < 0) {
		fm_log_ratelimited(FM_LOG_WARN, "region %llu: cannot create its state file in %s: "
				   "%s; it cannot be re-adopted after a crash",
				   (unsigned long long)r->id, d->sdir.path, strerror(-rc));
		return;
	}
	r->state_bits = d->smaps[r->slot].bits;
}

/* After every shard let the region go: its copies are deleted (unless kept
 * for a re-adoption), so its file goes too. */
static void region_state_release(struct daemon *d, struct uffd_region *r)
{
	if (!d->smaps || !d->smaps[r->slot].hdr)
		return;
	if (!r->keep_copies)
		fm_state_region_unlink(&d->sdir, r->id);
	fm_state_map_close(&d->smaps[r->slot]);
	r->state_bits = NULL;
}

/* The reply that makes a region live: REGISTER's carries the credential a
 * READOPT must show. */
static void reg_reply_live(struct daemon *d, struct uffd_region *r)
{
	struct fm_reg_reply rep = {
		.magic = FM_PROTO_MAGIC, .version = FM_PROTO_VERSION, .type = FM_REG_REPLY,
		.status = 0, .region_id = r->id,
	};
	int fd = ((struct reg_conn *)r->owner)->fd;

	if (r->state_bits)
		fm_state_credential(&d->sdir, r->id, (uint32_t)r->uid, rep.credential);
	if (fd >= 0 && send(fd, &rep, sizeof(rep), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		FM_DEBUG("reply to a registration client failed: %s", strerror(errno));
}

static bool pending_take(struct daemon *d, uint64_t id)
{
	for (unsigned i = 0; i < d->npending; i++) {
		if (d->pending[i] == id) {
			d->pending[i] = d->pending[--d->npending];
			return true;
		}
	}
	return false;
}

/* READOPT: a client whose daemon died hands back a region it registered,
 * with the credential it was given. The same descriptor checks as REGISTER,
 * then the region file decides: its owner, addr and size must match. The
 * shards rebuild page state from the memfd and the file's bits (adopt). */
static void do_readopt(struct daemon *d, struct reg_conn *c, const struct fm_reg_req *q, int *fds,
		       int nfds)
{
	struct fm_state_map map = { 0 };
	uint8_t cred[FM_CREDENTIAL_LEN];
	struct uffd_region *r;
	char why[160];
	int rc;

	if ((rc = reg_check_fields(q, nfds, (uint64_t)d->cfg.max_region_mib << 20, why,
				   sizeof(why))) < 0) {
		refuse(d, c, rc, why);
		return;
	}
	for (unsigned i = 0; i < FM_MAX_REGIONS; i++) {
		if (d->regions[i] && d->regions[i]->id == q->region_id) {
			refuse(d, c, -EAGAIN, "the region is still attached: retry once it is released");
			return;
		}
	}
	rc = fm_state_region_open(&d->sdir, q->region_id, &map);
	if (rc < 0) {
		snprintf(why, sizeof(why), "no state for region %llu%s%s",
			 (unsigned long long)q->region_id, rc == -ENOENT ? "" : ": ",
			 rc == -ENOENT ? "" : strerror(-rc));
		refuse(d, c, -ENOENT, why);
		return;
	}
	fm_state_credential(&d->sdir, q->region_id, (uint32_t)c->uid, cred);
	if (!fm_state_credential_eq(cred, q->credential) || map.hdr->uid != (uint32_t)c->uid) {
		fm_state_map_close(&map);
		refuse(d, c, -EPERM, "wrong credential or owner for this region");
		return;
	}
	if (map.hdr->addr != q->addr || map.hdr->size != q->size ||
	    map.hdr->npages != q->size / FM_PAGE_SIZE) {
		fm_state_map_close(&map);
		refuse(d, c, -EINVAL, "addr or size differ from the region's registration");
		return;
	}
	if ((rc = uid_quota_check(d, c->uid, q->size, why, sizeof(why))) < 0 ||
	    (rc = overlap_check(d, c->pid, fds[1], q->addr, q->size, why, sizeof(why))) < 0 ||
	    (rc = reg_check_uffd(fds[0], why, sizeof(why))) < 0 ||
	    (rc = reg_check_memfd(fds[1], q->size, why, sizeof(why))) < 0 ||
	    (rc = reg_check_mapping(c->pid, fds[0], fds[1], q->addr, q->size, why, sizeof(why))) < 0) {
		fm_state_map_close(&map);
		refuse(d, c, rc, why);
		return;
	}
	r = region_from_request(c, q, fds, map.hdr->name);
	if (!r) {
		fm_state_map_close(&map);
		refuse(d, c, -ENOMEM, "out of memory");
		return;
	}
	r->id = q->region_id;
	r->adopt = true;
	r->view = mmap(NULL, q->size, PROT_READ, MAP_SHARED, r->memfd, 0);
	if (r->view == MAP_FAILED) {
		snprintf(why, sizeof(why), "cannot map the memfd: %s", strerror(errno));
		r->view = NULL;
		fm_state_map_close(&map);
		region_release(r);
		refuse(d, c, -ENOMEM, why);
		return;
	}
	if ((rc = region_table_publish(r)) < 0 || conn_add_region(c, r) < 0) {
		if (rc == 0)
			region_table_unpublish(r);
		fm_state_map_close(&map);
		region_release(r);
		refuse(d, c, -ENOSPC, "too many regions");
		return;
	}
	map.hdr->pid = (int32_t)c->pid;
	d->smaps[r->slot] = map;
	r->state_bits = map.bits;
	d->regions[r->slot] = r;
	pending_take(d, r->id);
	r->state = UFFD_REGION_ATTACHING;
	r->acks_pending = (int)d->nshards + 1;   /* + the dispatcher */
	r->request = ++d->next_request;
	for (unsigned attempt = 0; dispatcher_attach(d->disp, r) == -EAGAIN;)
		fm_ring_full_wait(&attempt);
	d->readopts++;
	/* Its ZooKeeper record: kept from the previous run, or lost with a
	 * queue the crash dropped; create-or-set brings it back, with this
	 * pid, before the acknowledgement (ctl_cluster_hold_ack). */
	ctl_cluster_region_registered(d, r);
	FM_INFO("region %llu \"%s\": re-adopting %llu pages at 0x%llx from pid %d",
		(unsigned long long)r->id, r->name, (unsigned long long)r->npages,
		(unsigned long long)r->base, (int)r->pid);
}

static void do_register(struct daemon *d, struct reg_conn *c, const struct fm_reg_req *q, int *fds,
			int nfds)
{
	struct uffd_region *r;
	char why[160];
	int rc;

	/* Refused rather than held: a client (QEMU) should fail fast with the
	 * reason, not hang at start; it may retry. */
	if (daemon_store_state(d) == STORE_DOWN) {
		snprintf(why, sizeof(why),
			 "the store (%s) is not reachable yet; fluidmemd retries it, try again later",
			 d->cfg.store_backend);
		refuse(d, c, -EAGAIN, why);
		return;
	}
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
	r = region_from_request(c, q, fds, q->name);
	if (!r) {
		refuse(d, c, -ENOMEM, "out of memory");
		return;
	}
	if (region_id_alloc(d, &r->id) < 0) {
		region_release(r);
		refuse(d, c, -ENOSPC, "no region id left in this lease generation: restart the daemon");
		return;
	}
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
	/* Queued now, applied while the shards attach: the ack waits for it. */
	ctl_cluster_region_registered(d, r);
	region_state_create(d, r);
	r->state = UFFD_REGION_ATTACHING;
	r->acks_pending = (int)d->nshards + 1;   /* + the dispatcher */
	r->request = ++d->next_request;
	for (unsigned attempt = 0; dispatcher_attach(d->disp, r) == -EAGAIN;)
		fm_ring_full_wait(&attempt);
	d->registrations++;
	FM_INFO("region %llu \"%s\": %llu pages at 0x%llx from pid %d", (unsigned long long)r->id,
		r->name, (unsigned long long)r->npages, (unsigned long long)r->base, (int)r->pid);
}

unsigned daemon_free_left_regions(struct daemon *d)
{
	unsigned n = 0;

	for (unsigned i = 0; i < FM_MAX_REGIONS; i++) {
		struct uffd_region *r = d->regions[i];

		if (!r)
			continue;
		if (r->owner)
			conn_remove_region(r->owner, r);
		d->regions[i] = NULL;
		region_state_release(d, r);
		region_table_unpublish(r);
		region_release(r);
		n++;
	}
	return n;
}

/* The dispatcher forgot the region: it was unregistered in the client and
 * nobody names it any more. Free it, and only then answer an UNREGISTER, so
 * the client's next munmap of the range raises no event nobody would read. */
static void region_finish_detach(struct daemon *d, struct uffd_region *r)
{
	struct reg_conn *c = r->owner;
	bool reply = r->reply_on_detach;
	uint64_t id = r->id;

	if (c)
		conn_remove_region(c, r);
	ctl_cluster_region_freed(d, r);
	d->regions[r->slot] = NULL;
	region_state_release(d, r);
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

void daemon_detach_region(struct daemon *d, struct uffd_region *r, bool restore)
{
	if (r->state == UFFD_REGION_DETACHING || r->state == UFFD_REGION_RELEASING)
		return;
	r->restore = restore;
	if (r->state == UFFD_REGION_ATTACHING) {
		r->detach_when_live = true;
		return;
	}
	r->state = UFFD_REGION_DETACHING;
	r->acks_pending = (int)d->nshards;
	r->request = ++d->next_request;
	for (unsigned attempt = 0; dispatcher_detach(d->disp, r, r->restore) == -EAGAIN;)
		fm_ring_full_wait(&attempt);
}

int daemon_wait_region_gone(struct daemon *d, struct uffd_region *r, int timeout_ms)
{
	uint64_t deadline = fm_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	uint32_t slot = r->slot;

	/* r may be freed while we wait: only compare the pointer. */
	while (d->regions[slot] == r) {
		if (fm_now_ns() >= deadline)
			return -ETIMEDOUT;
		fm_doorbell_wait(&d->reply_bell, 10);
		daemon_drain_replies(d);
	}
	return 0;
}

/* The dispatcher cannot read this region's uffd safely (its client made it
 * blocking) or at all. Detach it, handing stored pages back: the client
 * may be alive, and its data is never dropped for its misbehaviour. */
void daemon_region_hostile(struct daemon *d, struct uffd_region *r, int why)
{
	if (r->state != UFFD_REGION_LIVE && r->state != UFFD_REGION_ATTACHING)
		return;
	FM_WARN("region %llu of pid %d: its uffd %s; detaching it", (unsigned long long)r->id,
		(int)r->pid, why == -EPERM ? "was made blocking by its client" : "failed");
	daemon_detach_region(d, r, true);
}

void daemon_region_acked(struct daemon *d, struct uffd_region *r, int64_t result)
{
	if (result < 0 && r->state == UFFD_REGION_ATTACHING && r->attach_error == 0)
		r->attach_error = (int)result;
	if (--r->acks_pending > 0)
		return;
	if (r->state == UFFD_REGION_DETACHING) {
		/* Every shard let go: now the dispatcher unregisters the
		 * range and drops the region. Not after dropping a live
		 * client's stored pages (shutdown --drop): its faults then
		 * wait until it exits rather than read zeros. */
		bool unregister = r->restore || r->reply_on_detach || (r->attach_error && !r->adopt);

		r->state = UFFD_REGION_RELEASING;
		r->acks_pending = 1;
		r->request = ++d->next_request;
		for (unsigned attempt = 0; dispatcher_forget(d->disp, r, unregister) == -EAGAIN;)
			fm_ring_full_wait(&attempt);
		return;
	}
	if (r->state == UFFD_REGION_RELEASING) {
		region_finish_detach(d, r);
		return;
	}
	/* attached */
	r->state = UFFD_REGION_LIVE;
	if (r->attach_error && r->adopt)
		r->keep_copies = true;   /* the next daemon or READOPT may still take it */
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
	if (ctl_cluster_hold_ack(d, r))
		return;   /* until its record is in ZooKeeper (bounded) */
	daemon_region_ack(d, r);
}

void daemon_region_ack(struct daemon *d, struct uffd_region *r)
{
	if (r->state != UFFD_REGION_LIVE || !r->owner || ((struct reg_conn *)r->owner)->closed)
		return;
	reg_reply_live(d, r);
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

void reg_conn_readable(struct daemon *d, struct reg_conn *c, uint32_t events)
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
	else if (q.type == FM_REG_READOPT)
	{
		uint64_t refused = d->refusals;

		do_readopt(d, c, &q, fds, nfds);
		d->readopt_refusals += d->refusals != refused;
	}
	else if (q.type == FM_REG_UNREGISTER) {
		struct uffd_region *r = NULL;

		for (unsigned i = 0; i < c->nregions; i++)
			if (c->regions[i]->id == q.region_id)
				r = c->regions[i];
		if (!r || r->state == UFFD_REGION_DETACHING) {
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

static unsigned reg_conns_of_uid(const struct daemon *d, uid_t uid)
{
	unsigned n = 0;

	const struct reg_conn *c;

	LIST_FOREACH(c, &d->reg_conns, link)
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
	fm_failpoint_delay(FM_FP_REGISTER_BEFORE_CLOSE);
	close(fd);
}

void reg_accept(struct daemon *d)
{
	for (;;) {
		int fd = daemon_accept_one(d, d->reg_fd);
		struct ucred cred = { .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
		struct reg_conn *c;
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP };
		char why[160];

		if (fd < 0)
			return;
		if (!daemon_peer_allowed(d, fd, &cred, false)) {
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
		LIST_INSERT_HEAD(&d->reg_conns, c, link);
		d->nreg_conns++;
		ev.data.u64 = tagged(TAG_REG_CONN, c);
		if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
			reg_conn_free(d, c);
	}
}
