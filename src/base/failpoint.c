#include "base/failpoint.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "base/log.h"

bool fm_failpoints_armed;

static const char *const fp_names[FM_FP_NR] = {
	[FM_FP_EVICT_PUNCH] = "evict.punch",
	[FM_FP_EVICT_STORE_ALTERNATE] = "evict.store_alternate",
};
static int fp_errno[FM_FP_NR];

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
		e = parse_errno(eq + 1, (size_t)(end - eq - 1));
		if (id < 0 || e < 0) {
			FM_ERR("FLUIDMEM_FAILPOINTS: unknown failpoint or errno in \"%.*s\"", (int)(end - p), p);
			return -EINVAL;
		}
		fp_errno[id] = e;
		fm_failpoints_armed = true;
		FM_WARN("failpoint %s armed: it fails with %s (testing only)", fp_names[id], strerror(e));
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
	return (unsigned)fp < FM_FP_NR ? -fp_errno[fp] : 0;
}
