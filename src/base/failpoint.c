#include "base/failpoint.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "base/log.h"

bool fm_failpoints_armed;

static const char *const fp_names[FM_FP_NR] = {
	[FM_FP_EVICT_PUNCH] = "evict.punch",
	[FM_FP_EVICT_STORE_ALTERNATE] = "evict.store_alternate",
	[FM_FP_EVICT_AFTER_PROTECT] = "evict.after_protect",
	[FM_FP_EVICT_AFTER_PUT] = "evict.after_put",
	[FM_FP_EVICT_AFTER_MARK] = "evict.after_mark",
	[FM_FP_EVICT_AFTER_PUNCH] = "evict.after_punch",
	[FM_FP_EVICT_AFTER_UNPROTECT] = "evict.after_unprotect",
	[FM_FP_READOPT_REBUILD] = "readopt.rebuild",
	[FM_FP_SHARD_DETACH_STALL] = "shard.detach_stall",
	[FM_FP_DRAIN_AFTER_MOVE] = "drain.after_move",
	[FM_FP_SHARD_FAULT_STALL] = "shard.fault_stall",
	[FM_FP_DISPATCH_REMOVE_READ] = "dispatch.remove_read",
	[FM_FP_PREFETCH_BEFORE_INSTALL] = "prefetch.before_install",
	[FM_FP_FAULT_BEFORE_INSTALL] = "fault.before_install",
	[FM_FP_REGISTER_BEFORE_CLOSE] = "register.before_close",
	[FM_FP_FAULT_AFTER_CHECK] = "fault.after_check",
	[FM_FP_PREFETCH_AFTER_CHECK] = "prefetch.after_check",
};
#define FP_KILL 0x10000   /* fp_errno: raise SIGKILL (above every errno) */
static int fp_errno[FM_FP_NR];
static uint64_t fp_at[FM_FP_NR];     /* fire on this hit only; 0 = every hit */
static uint64_t fp_hits[FM_FP_NR];

static const struct {
	const char *name;
	int value;
} errno_names[] = {
	{ "EIO", EIO }, { "EPERM", EPERM }, { "ENOSPC", ENOSPC }, { "ENOMEM", ENOMEM },
	{ "EINVAL", EINVAL }, { "EAGAIN", EAGAIN }, { "ESRCH", ESRCH },
};

static int parse_errno(const char *s, size_t n)
{
	char *end;
	long v;

	for (size_t i = 0; i < FM_ARRAY_SIZE(errno_names); i++)
		if (strlen(errno_names[i].name) == n && strncmp(s, errno_names[i].name, n) == 0)
			return errno_names[i].value;
	v = strtol(s, &end, 10);
	if (end != s + n || v <= 0 || v > 4095)
		return -1;
	return (int)v;
}

int fm_failpoints_parse(const char *spec)
{
	const char *p = spec;

	while (p && *p) {
		const char *comma = strchr(p, ','), *end = comma ? comma : p + strlen(p);
		const char *eq = memchr(p, '=', (size_t)(end - p));
		int id = -1, e;

		if (!eq) {
			FM_ERR("FLUIDMEM_FAILPOINTS: \"%.*s\" is not name=ERRNO", (int)(end - p), p);
			return -EINVAL;
		}
		for (int i = 0; i < FM_FP_NR; i++)
			if (strlen(fp_names[i]) == (size_t)(eq - p) && strncmp(p, fp_names[i], (size_t)(eq - p)) == 0)
				id = i;
		const char *at = memchr(eq + 1, '@', (size_t)(end - eq - 1));
		const char *aend = at ? at : end;
		uint64_t n = 0;

		if (at) {
			char *stop;

			n = strtoull(at + 1, &stop, 10);
			if (stop != end || n == 0)
				id = -1;
		}
		if ((size_t)(aend - eq - 1) == 4 && strncmp(eq + 1, "kill", 4) == 0)
			e = FP_KILL;
		else
			e = parse_errno(eq + 1, (size_t)(aend - eq - 1));
		if (id < 0 || e < 0) {
			FM_ERR("FLUIDMEM_FAILPOINTS: unknown failpoint or errno in \"%.*s\"", (int)(end - p), p);
			return -EINVAL;
		}
		fp_errno[id] = e;
		fp_at[id] = n;
		fp_hits[id] = 0;
		fm_failpoints_armed = true;
		if (id == FM_FP_DISPATCH_REMOVE_READ || id == FM_FP_PREFETCH_BEFORE_INSTALL ||
		    id == FM_FP_FAULT_BEFORE_INSTALL || id == FM_FP_FAULT_AFTER_CHECK ||
		    id == FM_FP_PREFETCH_AFTER_CHECK)
			FM_WARN("failpoint %s armed: it sleeps %d ms on %s hit %llu (testing only)",
				fp_names[id], e, n ? "" : "every", (unsigned long long)n);
		else
			FM_WARN("failpoint %s armed: it %s%s on %s hit %llu (testing only)", fp_names[id],
				e == FP_KILL ? "kills the daemon" : "fails with ",
				e == FP_KILL ? "" : strerror(e), n ? "" : "every", (unsigned long long)n);
		p = comma ? comma + 1 : NULL;
	}
	return 0;
}

int fm_failpoints_init(void)
{
	const char *v = getenv("FLUIDMEM_FAILPOINTS");

	return v ? fm_failpoints_parse(v) : 0;
}

int fm_failpoint_errno(enum fm_failpoint_id fp)
{
	if ((unsigned)fp >= FM_FP_NR || fp_errno[fp] == 0)
		return 0;
	if (fp_at[fp] && __atomic_add_fetch(&fp_hits[fp], 1, __ATOMIC_RELAXED) != fp_at[fp])
		return 0;
	if (fp_errno[fp] == FP_KILL) {
		FM_WARN("failpoint %s: killing the daemon", fp_names[fp]);
		raise(SIGKILL);
	}
	return -fp_errno[fp];
}

void fm_failpoint_sleep(enum fm_failpoint_id fp)
{
	int e = fm_failpoint_errno(fp);

	if (e < 0) {
		struct timespec ts = { -e / 1000, (long)(-e % 1000) * 1000000L };

		nanosleep(&ts, NULL);
	}
}
