#include "ctl/layout.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

void fm_layout_plan(const int *cpus, unsigned n, int dispatcher_cpu, int count,
		    struct fm_layout *out)
{
	int rest[FM_LAYOUT_CPUS_MAX];
	unsigned nrest = 0;

	memset(out, 0, sizeof(*out));
	if (n == 0) {   /* callers never pass it; plan as for one CPU */
		static const int cpu0 = 0;

		cpus = &cpu0;
		n = 1;
	}
	if (n > FM_LAYOUT_CPUS_MAX)
		n = FM_LAYOUT_CPUS_MAX;
	/* Measured (bench/README.md "Placement", bench/placement): on 2 CPUs
	 * the dispatcher alone on one CPU and both shards on the other beat
	 * every unpinned layout, loaded or not: the dispatcher busy-polls, and a
	 * shard that shares its CPU with it delays the next fault's hand-off.
	 * One CPU has nothing to separate. */
	bool pin = n >= 2;

	if (dispatcher_cpu == FM_LAYOUT_AUTO)
		dispatcher_cpu = pin ? cpus[0] : -1;
	out->dispatcher_cpu = dispatcher_cpu;
	for (unsigned i = 0; i < n; i++)
		if (cpus[i] != dispatcher_cpu)
			rest[nrest++] = cpus[i];
	if (nrest == 0)   /* one CPU, and the dispatcher pinned to it */
		rest[nrest++] = cpus[0];
	if (count == FM_LAYOUT_AUTO) {
		/* One shard per remaining CPU, but at least 2: two shards on
		 * one CPU served 1.5x the refaults of one (one evicts while the
		 * other serves). */
		if (n == 1)
			count = 1;
		else
			count = (int)FM_MAX(2u, FM_MIN(nrest, (unsigned)FM_LAYOUT_AUTO_SHARDS_CAP));
	}
	if (count < 1)
		count = 1;
	if (count > FM_LAYOUT_SHARDS_MAX)
		count = FM_LAYOUT_SHARDS_MAX;
	out->shard_count = (unsigned)count;
	out->shards_pinned = pin;
	for (unsigned i = 0; i < out->shard_count; i++)
		out->shard_cpus[i] = pin ? rest[i % nrest] : -1;
}

unsigned fm_layout_cpus(int *cpus, unsigned cap)
{
	cpu_set_t set;
	unsigned n = 0;

	CPU_ZERO(&set);
	if (cap == 0)
		return 0;
	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		for (int c = 0; c < CPU_SETSIZE && c < FM_LAYOUT_CPUS_MAX && n < cap; c++)
			if (CPU_ISSET(c, &set))
				cpus[n++] = c;
	if (n == 0)
		cpus[n++] = 0;
	return n;
}

/* The start of a small file (a cgroup or proc file) into buf[0..cap),
 * NUL-terminated: false when it cannot be opened. */
static bool read_small(const char *file, char *buf, size_t cap)
{
	FILE *f = fopen(file, "re");
	size_t got;

	if (!f)
		return false;
	got = fread(buf, 1, cap - 1, f);
	fclose(f);
	buf[got] = '\0';
	return true;
}

/* A decimal number of microseconds at *p (digits only), advancing *p. */
static bool parse_us(const char **p, uint64_t *v)
{
	char *end;

	if (**p < '0' || **p > '9')
		return false;
	errno = 0;
	unsigned long long x = strtoull(*p, &end, 10);

	if (errno || (*end && *end != ' ' && *end != '\n'))
		return false;
	*v = x;
	*p = end;
	return true;
}

/* Whole CPUs one cpu.max file allows: "QUOTA PERIOD" (microseconds) gives
 * QUOTA/PERIOD rounded up; "max PERIOD" and anything unreadable or
 * malformed give 0 (no limit from this level). */
static unsigned cpu_max_file(const char *file)
{
	char text[64];
	uint64_t quota, period = 100000;   /* the kernel's default period */
	const char *p = text;

	if (!read_small(file, text, sizeof(text)) || !parse_us(&p, &quota) || quota == 0)
		return 0;
	if (*p == ' ') {
		p++;
		if (!parse_us(&p, &period))
			return 0;
	}
	if (period == 0 || (*p && strcmp(p, "\n")))
		return 0;
	uint64_t cpus = quota / period + (quota % period != 0);

	return cpus > FM_LAYOUT_CPUS_MAX ? FM_LAYOUT_CPUS_MAX : (unsigned)cpus;
}

unsigned fm_layout_cpu_quota_at(const char *root, const char *path)
{
	char dir[PATH_MAX], file[PATH_MAX + 16];
	unsigned best = 0;

	if (!root || !path || path[0] != '/' ||
	    snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
		return 0;
	/* The cgroup itself, then each ancestor, ending with the mount's root
	 * (in a container's cgroup namespace that is the container's cgroup). */
	for (;;) {
		size_t len = strlen(dir);

		while (len > 1 && dir[len - 1] == '/')
			dir[--len] = '\0';
		if (snprintf(file, sizeof(file), "%s%s/cpu.max", root, len == 1 ? "" : dir) <
		    (int)sizeof(file)) {
			unsigned cpus = cpu_max_file(file);

			if (cpus && (!best || cpus < best))
				best = cpus;
		}
		if (len == 1)
			break;
		char *slash = strrchr(dir, '/');

		if (slash == dir)
			slash[1] = '\0';   /* "/a" -> "/" */
		else
			slash[0] = '\0';   /* "/a/b" -> "/a" */
	}
	return best;
}

bool fm_layout_cgroup_path(const char *proc_cgroup, char *path, unsigned len)
{
	for (const char *l = proc_cgroup; l && *l;) {
		size_t n = strcspn(l, "\n");

		if (strncmp(l, "0::", 3) != 0) {
			l = l[n] ? l + n + 1 : NULL;
			continue;
		}
		n = strcspn(l + 3, "\n");

		if (len == 0 || n >= len || l[3] != '/')
			return false;
		memcpy(path, l + 3, n);
		path[n] = '\0';
		return true;
	}
	return false;
}

unsigned fm_layout_cpu_quota(void)
{
	const char *root = getenv("FLUIDMEM_CGROUP_ROOT");   /* tests only */
	char text[4096], path[PATH_MAX];

	if (!read_small("/proc/self/cgroup", text, sizeof(text)) ||
	    !fm_layout_cgroup_path(text, path, sizeof(path)))
		return 0;
	return fm_layout_cpu_quota_at(root && root[0] ? root : "/sys/fs/cgroup", path);
}

void fm_layout_format_cpus(const int *cpus, unsigned n, char *buf, unsigned len)
{
	size_t used = 0;

	if (len == 0)
		return;
	buf[0] = '\0';
	for (unsigned i = 0; i < n && used < len;) {
		unsigned j = i;

		while (j + 1 < n && cpus[j + 1] == cpus[j] + 1)
			j++;
		int w = j > i ? snprintf(buf + used, len - used, "%s%d-%d", i ? "," : "", cpus[i], cpus[j])
			      : snprintf(buf + used, len - used, "%s%d", i ? "," : "", cpus[i]);
		if (w < 0)
			break;
		used += (size_t)w;
		i = j + 1;
	}
}
