#include "kv/dlog.h"

#include "base/base.h"
#include "base/log.h"
#include "kv/crc32c.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define DLOG_SB 4096u
#define DLOG_SB_MAGIC "FMKVLOG1"
#define DLOG_LIVE 0x4556494cu /* "LIVE" */
#define DLOG_DEAD 0x44414544u /* "DEAD" */
#define DLOG_NONE UINT32_MAX
/* The scan and compaction read this much of a segment per pread. */
#define DLOG_WIN (256u << 10)

struct dlog_hdr {
	uint32_t magic; /* not under hcrc: a delete rewrites only this */
	uint32_t hcrc;  /* crc32c of the rest of the header */
	uint64_t region;
	uint64_t page;
	uint64_t seq;
	uint32_t dcrc; /* crc32c of the data, seeded with hcrc: data is bound to its key */
	uint16_t len;
	uint8_t enc;
	uint8_t version;
};
_Static_assert(sizeof(struct dlog_hdr) == DLOG_HDR, "record header layout is on disk");

struct dlog_sb {
	char magic[8];
	uint32_t version;
	uint32_t seg_bytes;
	uint32_t crc; /* of the fields above */
};

struct dlog_seg {
	uint32_t tail; /* bytes appended; 0 and not active: free */
	uint32_t live; /* bytes of records the index points at */
};

struct dlog_bad {
	struct dlog_hdr h;
	uint64_t loc;
	uint32_t rs;
};

struct dlog {
	int fd;
	uint32_t seg_bytes;
	uint32_t act; /* active segment, DLOG_NONE before the first append */
	struct dlog_seg *segs;
	uint32_t nsegs, segs_cap;
	uint32_t *free; /* stack of free segment numbers */
	uint32_t nfree;
	uint32_t max_segs;
	bool compacting;
	struct dlog_bad *bad; /* the open scan's records with bad data */
	uint32_t nbad, bad_cap;
	uint64_t seq; /* next sequence number */
	uint64_t live_bytes, live_records;
	uint64_t appended, moved, compactions, corrupt;
	struct dlog_owner own;
	uint8_t *win; /* DLOG_WIN bytes */
	uint8_t *batch; /* DLOG_BATCH_BYTES, allocated by the first batch */
	uint8_t rec[DLOG_REC_MAX] __attribute__((aligned(64)));
	/* Compaction's copy: an append may compact while its record waits in rec. */
	uint8_t mv[DLOG_REC_MAX] __attribute__((aligned(64)));
};

static inline uint64_t seg_base(const struct dlog *d, uint32_t s)
{
	return DLOG_SB + (uint64_t)s * d->seg_bytes;
}

static inline uint32_t seg_of(const struct dlog *d, uint64_t loc)
{
	return (uint32_t)((loc - DLOG_SB) / d->seg_bytes);
}

static uint32_t hdr_crc(const struct dlog_hdr *h)
{
	return kv_crc32c(0, (const uint8_t *)h + 8, DLOG_HDR - 8);
}

/* Seeded with the key and sequence number: data is bound to its record. */
static uint32_t data_crc(const struct dlog_hdr *h, const void *data)
{
	return kv_crc32c(kv_crc32c(0, &h->region, 24), data, h->len);
}

/* A header whose size and CRC hold; its magic says LIVE or DEAD. */
static bool hdr_ok(const struct dlog_hdr *h)
{
	return (h->magic == DLOG_LIVE || h->magic == DLOG_DEAD) && h->len >= 1 &&
	       h->len <= 4096 && h->version == 1 && hdr_crc(h) == h->hcrc;
}

static int io_err(ssize_t n)
{
	if (n >= 0)
		return -EIO; /* short write: treat as the file system refusing */
	if (errno == ENOSPC || errno == EDQUOT || errno == EFBIG)
		return -ENOSPC;
	return -EIO;
}

static int pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
	ssize_t w = pwrite(fd, buf, n, (off_t)off);

	if (w == (ssize_t)n)
		return 0;
	if (w >= 0) { /* a short write on a regular file: the disk is full */
		errno = ENOSPC;
		return -ENOSPC;
	}
	return io_err(w);
}

static int segs_reserve(struct dlog *d, uint32_t n)
{
	if (n <= d->segs_cap)
		return 0;
	uint32_t ncap = d->segs_cap ? d->segs_cap : 16;
	while (ncap < n)
		ncap *= 2;
	struct dlog_seg *ns = realloc(d->segs, ncap * sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	d->segs = ns;
	uint32_t *nf = realloc(d->free, ncap * sizeof(*nf));
	if (!nf)
		return -ENOMEM;
	d->free = nf;
	d->segs_cap = ncap;
	return 0;
}

/* Segments a new active segment may come from: free ones plus the room
 * left under the cap. */
static uint64_t segs_avail(const struct dlog *d)
{
	return d->nfree + (uint64_t)(d->max_segs - d->nsegs);
}

static int take_segment(struct dlog *d, uint64_t reserve)
{
	uint32_t s;

	if (segs_avail(d) <= reserve)
		return -ENOSPC;
	if (d->nfree) {
		s = d->free[--d->nfree];
	} else {
		int rc = segs_reserve(d, d->nsegs + 1);

		if (rc)
			return rc == -ENOMEM ? -ENOSPC : rc;
		s = d->nsegs++;
		d->segs[s] = (struct dlog_seg){ 0, 0 };
	}
	d->act = s;
	return 0;
}

static void free_segment(struct dlog *d, uint32_t s)
{
	/* The punched range reads back as zeros, so a later scan finds no stale
	 * record in it; where punching is not supported, zero it by hand. */
	if (fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)seg_base(d, s),
		      d->seg_bytes) != 0) {
		static const uint8_t zero[DLOG_ALIGN];

		for (uint32_t o = 0; o < d->segs[s].tail; o += DLOG_ALIGN)
			if (pwrite(d->fd, zero, 4, (off_t)(seg_base(d, s) + o)) != 4)
				break; /* the magic alone is enough to make a record invisible */
	}
	d->segs[s] = (struct dlog_seg){ 0, 0 };
	d->free[d->nfree++] = s;
}

static int append_raw(struct dlog *d, const void *rec, uint32_t rs, uint64_t *loc);

/* Walk the records of segment s; fn sees each header-valid record. The
 * window holds at least one whole record past off, so data is contiguous. */
typedef int walk_fn(struct dlog *d, const struct dlog_hdr *h, const uint8_t *rec, uint64_t loc,
		    uint32_t rs);

static int seg_walk(struct dlog *d, uint32_t s, uint32_t end, walk_fn *fn, uint32_t *last_end)
{
	uint64_t base = seg_base(d, s);
	uint32_t wstart = 0, wlen = 0, off = 0;

	*last_end = 0;
	while (off + DLOG_HDR <= end) {
		if (off + DLOG_REC_MAX > wstart + wlen && wstart + wlen < end) {
			uint32_t want = FM_MIN(DLOG_WIN, end - off);
			ssize_t n = pread(d->fd, d->win, want, (off_t)(base + off));

			if (n < (ssize_t)DLOG_HDR)
				break; /* past the end of the file */
			wstart = off;
			wlen = (uint32_t)n;
		}
		if (off + DLOG_HDR > wstart + wlen)
			break;
		struct dlog_hdr h;
		const uint8_t *p = d->win + (off - wstart);

		memcpy(&h, p, sizeof(h));
		uint32_t rs = hdr_ok(&h) ? dlog_rec_size(h.len) : 0;
		if (!rs || off + rs > end || off + rs > wstart + wlen) {
			off += DLOG_ALIGN; /* resynchronise on the next boundary */
			continue;
		}
		if (fn) {
			int rc = fn(d, &h, p, base + off, rs);

			if (rc)
				return rc;
		}
		off += rs;
		*last_end = off;
	}
	return 0;
}

static int scan_found(struct dlog *d, const struct dlog_hdr *h, uint64_t loc, uint32_t rs)
{
	/* Counted live first: the owner kills the loser of a duplicate. */
	d->segs[seg_of(d, loc)].live += rs;
	d->live_bytes += rs;
	d->live_records++;
	return d->own.found(d->own.arg, d, (struct kv_key){ h->region, h->page }, loc, h->seq, h->len,
			    h->enc);
}

static int scan_one(struct dlog *d, const struct dlog_hdr *h, const uint8_t *rec, uint64_t loc,
		    uint32_t rs)
{
	if (h->seq >= d->seq)
		d->seq = h->seq + 1;
	if (h->magic != DLOG_LIVE)
		return 0;
	if (data_crc(h, rec + DLOG_HDR) != h->dcrc) {
		/* Decided after the scan: see dlog_open. */
		if (d->nbad == d->bad_cap) {
			uint32_t ncap = d->bad_cap ? d->bad_cap * 2 : 16;
			struct dlog_bad *nb = realloc(d->bad, ncap * sizeof(*nb));

			if (!nb)
				return -ENOMEM;
			d->bad = nb;
			d->bad_cap = ncap;
		}
		d->bad[d->nbad++] = (struct dlog_bad){ *h, loc, rs };
		return 0;
	}
	return scan_found(d, h, loc, rs);
}

/* A record whose header holds but whose data does not is either the append
 * the crash interrupted (a pwrite cut short by the kill), or damage. The
 * interrupted append has the largest sequence number in the file (appends
 * are sequential and every later record would carry a larger one); its put
 * never returned, so it is dropped and the key keeps its older copy. Any
 * other such record is damage to a page that was stored: it is indexed, so
 * its get answers -EIO (a newer copy elsewhere still wins by seq). */
static int scan_settle_bad(struct dlog *d)
{
	static const uint32_t dead = DLOG_DEAD;
	int rc = 0;

	for (uint32_t i = 0; i < d->nbad && !rc; i++) {
		struct dlog_bad *b = &d->bad[i];

		if (b->h.seq + 1 == d->seq) {
			if (pwrite(d->fd, &dead, sizeof(dead), (off_t)b->loc) != sizeof(dead))
				fm_log_once(FM_LOG_WARN, "kv/dlog: cannot drop a torn record");
			continue;
		}
		d->corrupt++;
		rc = scan_found(d, &b->h, b->loc, b->rs);
	}
	free(d->bad);
	d->bad = NULL;
	d->nbad = d->bad_cap = 0;
	return rc;
}

static int compact_one_rec(struct dlog *d, const struct dlog_hdr *h, const uint8_t *rec,
			   uint64_t loc, uint32_t rs)
{
	struct kv_key key = { h->region, h->page };
	uint64_t nloc;
	int rc;

	if (h->magic != DLOG_LIVE || !d->own.live(d->own.arg, key, loc))
		return 0;
	/* Verbatim, same sequence number: if we die before the punch, the two
	 * copies are identical and the open keeps either. */
	memcpy(d->mv, rec, rs);
	rc = append_raw(d, d->mv, rs, &nloc);
	if (rc)
		return rc;
	d->moved += rs;
	d->own.moved(d->own.arg, key, loc, nloc);
	dlog_kill(d, loc, h->len);
	return 0;
}

/* Compact the non-active segment with the fewest live bytes if at most
 * half of it is live. 0 when one was freed, -EAGAIN when none qualifies. */
static int compact_one(struct dlog *d)
{
	uint32_t best = DLOG_NONE, last;
	int rc;

	for (uint32_t s = 0; s < d->nsegs; s++) {
		if (s == d->act || d->segs[s].tail == 0)
			continue;
		if (best == DLOG_NONE || d->segs[s].live < d->segs[best].live)
			best = s;
	}
	if (best == DLOG_NONE || d->segs[best].live > d->seg_bytes / 2)
		return -EAGAIN;
	d->compacting = true;
	rc = seg_walk(d, best, d->segs[best].tail, compact_one_rec, &last);
	d->compacting = false;
	if (rc)
		return rc;
	free_segment(d, best);
	d->compactions++;
	return 0;
}

/* Keep the file within 2 x live + 3 segments: while the segments in use
 * pass 2 x live + 2, the emptiest one is at most half live (pigeonhole),
 * and compacting it frees a segment for at most half a segment's copies. */
static bool over_bound(const struct dlog *d)
{
	uint64_t used = (uint64_t)(d->nsegs - d->nfree) * d->seg_bytes;

	return used > 2 * d->live_bytes + 2ull * d->seg_bytes;
}

static int roll(struct dlog *d)
{
	if (d->compacting)
		return take_segment(d, 0);
	if (d->act != DLOG_NONE && d->segs[d->act].tail == 0)
		d->free[d->nfree++] = d->act; /* taken, never written */
	d->act = DLOG_NONE;
	while (over_bound(d) && compact_one(d) == 0)
		;
	if (d->act != DLOG_NONE) /* compaction left room in a fresh segment */
		return 0;
	/* One segment stays in reserve for compaction under a cap. */
	if (segs_avail(d) <= 1 && d->max_segs != UINT32_MAX && compact_one(d) == 0 &&
	    d->act != DLOG_NONE)
		return 0;
	return take_segment(d, d->max_segs == UINT32_MAX ? 0 : 1);
}

/* An active segment with room for rs more bytes. */
static int room_for(struct dlog *d, uint32_t rs)
{
	int rc;

	if (d->act == DLOG_NONE || d->segs[d->act].tail + rs > d->seg_bytes) {
		rc = roll(d);
		if (rc)
			return rc;
		if (d->segs[d->act].tail + rs > d->seg_bytes) { /* compaction filled it */
			rc = take_segment(d, d->compacting ? 0 : 1);
			if (rc)
				return rc;
		}
	}
	return 0;
}

static int append_raw(struct dlog *d, const void *rec, uint32_t rs, uint64_t *loc)
{
	int rc = room_for(d, rs);

	if (rc)
		return rc;
	struct dlog_seg *sg = &d->segs[d->act];
	uint64_t at = seg_base(d, d->act) + sg->tail;

	rc = pwrite_all(d->fd, rec, rs, at);
	if (rc) {
		/* Tail unchanged: the next append overwrites the partial bytes.
		 * Until then, a zero magic hides them from a scan after a crash
		 * (the blocks it lands in exist: the write got that far). */
		static const uint32_t zero;

		if (pwrite(d->fd, &zero, sizeof(zero), (off_t)at) != sizeof(zero))
			fm_log_once(FM_LOG_WARN, "kv/dlog: cannot hide a partial record");
		return rc;
	}
	sg->tail += rs;
	sg->live += rs;
	d->live_bytes += rs;
	d->live_records++;
	d->appended += rs;
	*loc = at;
	return 0;
}

/* Build key's record with sequence number seq at out; returns its size. */
static uint32_t rec_build(uint8_t *out, struct kv_key key, uint64_t seq, uint8_t enc,
			  const void *data, uint32_t len)
{
	struct dlog_hdr h = { .magic = DLOG_LIVE, .region = key.region, .page = key.page,
			      .seq = seq, .len = (uint16_t)len, .enc = enc, .version = 1 };
	uint32_t rs = dlog_rec_size(len);

	/* dcrc is inside the header CRC's range: compute it first. */
	h.dcrc = data_crc(&h, data);
	h.hcrc = hdr_crc(&h);
	memcpy(out, &h, sizeof(h));
	memcpy(out + DLOG_HDR, data, len);
	memset(out + DLOG_HDR + len, 0, rs - DLOG_HDR - len);
	return rs;
}

int dlog_append(struct dlog *d, struct kv_key key, uint8_t enc, const void *data, uint32_t len,
		uint64_t *loc)
{
	int rc;

	if (len < 1 || len > 4096)
		return -EINVAL;
	rc = append_raw(d, d->rec, rec_build(d->rec, key, d->seq, enc, data, len), loc);
	if (rc == 0)
		d->seq++;
	return rc;
}

int dlog_append_many(struct dlog *d, const struct dlog_item *it, size_t n, uint64_t *locs)
{
	uint32_t off = 0, m = 0;
	uint64_t at;
	int rc;

	if (n == 0 || it[0].len < 1 || it[0].len > 4096)
		return -EINVAL;
	if (n == 1)
		goto one;
	if (!d->batch) {
		d->batch = aligned_alloc(64, DLOG_BATCH_BYTES);
		if (!d->batch)
			goto one;
	}
	rc = room_for(d, dlog_rec_size(it[0].len));
	if (rc)
		return rc;
	struct dlog_seg *sg = &d->segs[d->act];
	at = seg_base(d, d->act) + sg->tail;
	while (m < n) {
		uint32_t rs = dlog_rec_size(it[m].len);

		if (it[m].len < 1 || it[m].len > 4096 || sg->tail + off + rs > d->seg_bytes ||
		    off + rs > DLOG_BATCH_BYTES)
			break;
		rec_build(d->batch + off, it[m].key, d->seq + m, it[m].enc, it[m].data, it[m].len);
		locs[m++] = at + off;
		off += rs;
	}
	if (m == 1)
		goto one;
	rc = pwrite_all(d->fd, d->batch, off, at);
	if (rc) {
		/* Hide whatever got written (as append_raw does for one record),
		 * then let the first record try alone: a full file system may
		 * still take it, and the caller learns its own result. */
		static const uint32_t zero;

		for (uint32_t k = 0, o = 0; k < m; o += dlog_rec_size(it[k].len), k++)
			if (pwrite(d->fd, &zero, sizeof(zero), (off_t)(at + o)) != sizeof(zero))
				break; /* past what was written: nothing there to hide */
		goto one;
	}
	sg->tail += off;
	sg->live += off;
	d->live_bytes += off;
	d->live_records += m;
	d->appended += off;
	d->seq += m;
	return (int)m;
one:
	rc = dlog_append(d, it[0].key, it[0].enc, it[0].data, it[0].len, &locs[0]);
	return rc ? rc : 1;
}

int dlog_read(struct dlog *d, uint64_t loc, struct kv_key key, uint32_t len, const uint8_t **data,
	      uint8_t *enc)
{
	uint32_t rs = dlog_rec_size(len);
	ssize_t n = pread(d->fd, d->rec, rs, (off_t)loc);
	struct dlog_hdr h;

	if (n != (ssize_t)rs)
		goto bad;
	memcpy(&h, d->rec, sizeof(h));
	if (h.magic != DLOG_LIVE || !hdr_ok(&h) || h.region != key.region || h.page != key.page ||
	    h.len != len ||
	    data_crc(&h, d->rec + DLOG_HDR) != h.dcrc)
		goto bad;
	*data = d->rec + DLOG_HDR;
	*enc = h.enc;
	return 0;
bad:
	d->corrupt++;
	return -EIO;
}

uint64_t dlog_seq_at(struct dlog *d, uint64_t loc)
{
	struct dlog_hdr h;

	if (pread(d->fd, &h, sizeof(h), (off_t)loc) != (ssize_t)sizeof(h) || !hdr_ok(&h))
		return 0;
	return h.seq;
}

void dlog_kill(struct dlog *d, uint64_t loc, uint32_t len)
{
	static const uint32_t dead = DLOG_DEAD;
	uint32_t rs = dlog_rec_size(len);
	struct dlog_seg *sg = &d->segs[seg_of(d, loc)];

	/* If this write fails the record may come back after a restart; the
	 * owner only trusts it if nothing newer was put (seq order). */
	if (pwrite(d->fd, &dead, sizeof(dead), (off_t)loc) != sizeof(dead))
		fm_log_once(FM_LOG_WARN, "kv/dlog: marking a record dead failed: %s",
			    strerror(errno));
	sg->live -= rs;
	d->live_bytes -= rs;
	d->live_records--;
}

static int sb_load_or_init(struct dlog *d, uint64_t seg_bytes)
{
	struct dlog_sb sb;
	struct stat st;

	if (fstat(d->fd, &st) != 0)
		return -errno;
	if (st.st_size >= (off_t)sizeof(sb)) {
		if (pread(d->fd, &sb, sizeof(sb), 0) != (ssize_t)sizeof(sb))
			return -EIO;
		if (memcmp(sb.magic, DLOG_SB_MAGIC, 8) != 0 || sb.version != 1 ||
		    sb.crc != kv_crc32c(0, &sb, offsetof(struct dlog_sb, crc)) ||
		    sb.seg_bytes < (1u << 16) || sb.seg_bytes % DLOG_ALIGN) {
			FM_ERR("kv/dlog: not a store file, or its superblock is damaged");
			return -EINVAL;
		}
		d->seg_bytes = sb.seg_bytes;
		d->nsegs = (uint32_t)(st.st_size <= DLOG_SB ? 0
				      : (st.st_size - DLOG_SB + sb.seg_bytes - 1) / sb.seg_bytes);
		return 0;
	}
	/* New (or created but never initialised before a crash). */
	memset(&sb, 0, sizeof(sb));
	memcpy(sb.magic, DLOG_SB_MAGIC, 8);
	sb.version = 1;
	sb.seg_bytes = (uint32_t)seg_bytes;
	sb.crc = kv_crc32c(0, &sb, offsetof(struct dlog_sb, crc));
	if (pwrite_all(d->fd, &sb, sizeof(sb), 0) != 0)
		return -ENOSPC;
	d->seg_bytes = sb.seg_bytes;
	d->nsegs = 0;
	return 0;
}

struct dlog *dlog_open(const char *dir, unsigned shard, uint64_t seg_bytes, uint64_t cap_bytes,
		       const struct dlog_owner *owner)
{
	char path[PATH_MAX];
	struct dlog *d;
	int rc;

	if (seg_bytes < (1u << 16) || seg_bytes > (1u << 30) || seg_bytes % DLOG_ALIGN) {
		errno = EINVAL;
		return NULL;
	}
	if (snprintf(path, sizeof(path), "%s/shard-%u.fmkv", dir, shard) >= (int)sizeof(path)) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return NULL;
	d = aligned_alloc(64, sizeof(*d));
	if (!d)
		return NULL;
	memset(d, 0, sizeof(*d));
	d->fd = -1;
	d->own = *owner;
	d->act = DLOG_NONE;
	d->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (d->fd < 0) {
		rc = -errno;
		goto fail;
	}
	/* Two daemons on one file would interleave appends: refuse the second. */
	if (flock(d->fd, LOCK_EX | LOCK_NB) != 0) {
		rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
		FM_ERR("kv/dlog: %s is in use by another process", path);
		goto fail;
	}
	d->win = malloc(DLOG_WIN);
	if (!d->win) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = sb_load_or_init(d, seg_bytes);
	if (rc)
		goto fail;
	d->max_segs = cap_bytes ? (uint32_t)FM_MIN(cap_bytes / d->seg_bytes, UINT32_MAX - 1)
				: UINT32_MAX;
	if (cap_bytes && d->max_segs < 2) {
		FM_ERR("kv/dlog: a cap of %llu bytes holds fewer than 2 segments of %u",
		       (unsigned long long)cap_bytes, d->seg_bytes);
		rc = -EINVAL;
		goto fail;
	}
	rc = segs_reserve(d, FM_MAX(d->nsegs, 1));
	if (rc)
		goto fail;
	d->seq = 1;
	for (uint32_t s = 0; s < d->nsegs; s++) {
		uint32_t end;

		d->segs[s] = (struct dlog_seg){ 0, 0 };
		rc = seg_walk(d, s, d->seg_bytes, scan_one, &end);
		if (rc)
			goto fail;
		/* Never append after a torn tail: new records go to a fresh
		 * segment, and this one is compacted like any other. */
		d->segs[s].tail = end;
	}
	rc = scan_settle_bad(d);
	if (rc)
		goto fail;
	for (uint32_t s = d->nsegs; s-- > 0;)
		if (d->segs[s].tail == 0)
			d->free[d->nfree++] = s;
	if (d->max_segs != UINT32_MAX && d->nsegs > d->max_segs)
		d->max_segs = d->nsegs; /* reopened with a smaller cap: keep what is there */
	return d;
fail:
	dlog_close(d);
	errno = -rc;
	return NULL;
}

void dlog_close(struct dlog *d)
{
	if (!d)
		return;
	if (d->fd >= 0)
		close(d->fd); /* drops the lock */
	free(d->win);
	free(d->batch);
	free(d->bad);
	free(d->segs);
	free(d->free);
	free(d);
}

void dlog_get_info(struct dlog *d, struct dlog_info *out)
{
	struct stat st;

	memset(out, 0, sizeof(*out));
	if (fstat(d->fd, &st) == 0) {
		out->file_bytes = (uint64_t)st.st_blocks * 512;
		out->apparent_bytes = (uint64_t)st.st_size;
	}
	out->seg_bytes = d->seg_bytes;
	out->segs = d->nsegs;
	out->segs_free = d->nfree;
	out->max_segs = d->max_segs;
	out->live_bytes = d->live_bytes;
	out->live_records = d->live_records;
	out->appended_bytes = d->appended;
	out->moved_bytes = d->moved;
	out->compactions = d->compactions;
	out->corrupt = d->corrupt;
}
