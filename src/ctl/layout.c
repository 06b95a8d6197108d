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

/* QUOTA/PERIOD rounded up to whole CPUs, capped; period > 0. */
static unsigned whole_cpus(uint64_t quota, uint64_t period)
{
	uint64_t cpus = quota / period + (quota % period != 0);

	return cpus > FM_LAYOUT_CPUS_MAX ? FM_LAYOUT_CPUS_MAX : (unsigned)cpus;
}

/* Whole CPUs the cgroup v2 directory `dir` allows by its cpu.max: "QUOTA
 * PERIOD" (microseconds) gives QUOTA/PERIOD rounded up; "max PERIOD" and
 * anything unreadable or malformed give 0 (no limit from this level). */
static unsigned cpu_max_level(const char *dir)
{
	char file[PATH_MAX + 16], text[64];
	uint64_t quota, period = 100000;   /* the kernel's default period */
	const char *p = text;

	if (snprintf(file, sizeof(file), "%s/cpu.max", dir) >= (int)sizeof(file) ||
	    !read_small(file, text, sizeof(text)) || !parse_us(&p, &quota) || quota == 0)
		return 0;
	if (*p == ' ') {
		p++;
		if (!parse_us(&p, &period))
			return 0;
	}
	if (period == 0 || (*p && strcmp(p, "\n")))
		return 0;
	return whole_cpus(quota, period);
}

/* One number alone in the cgroup v1 file dir/name; false when unreadable,
 * negative ("-1": no quota) or malformed. */
static bool cfs_file(const char *dir, const char *name, uint64_t *v)
{
	char file[PATH_MAX + 32], text[64];
	const char *p = text;

	return snprintf(file, sizeof(file), "%s/%s", dir, name) < (int)sizeof(file) &&
	       read_small(file, text, sizeof(text)) && parse_us(&p, v) && (!*p || !strcmp(p, "\n"));
}

/* The same for the cgroup v1 `cpu` controller's directory `dir`: its
 * cpu.cfs_quota_us over cpu.cfs_period_us; "-1", 0, a missing or malformed
 * file of the two give 0. */
static unsigned cfs_level(const char *dir)
{
	uint64_t quota, period;

	if (!cfs_file(dir, "cpu.cfs_quota_us", &quota) || quota == 0 ||
	    !cfs_file(dir, "cpu.cfs_period_us", &period) || period == 0)
		return 0;
	return whole_cpus(quota, period);
}

/* The smallest non-zero level(dir) of the cgroup `path` under the mount
 * `root` and of each ancestor, ending with the mount's root (in a
 * container's cgroup namespace that is the container's cgroup). */
static unsigned walk_up(const char *root, const char *path, unsigned (*level)(const char *dir))
{
	char dir[PATH_MAX], at[2 * PATH_MAX];
	unsigned best = 0;

	if (!root || !path || path[0] != '/' ||
	    snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
		return 0;
	for (;;) {
		size_t len = strlen(dir);

		while (len > 1 && dir[len - 1] == '/')
			dir[--len] = '\0';
		if (snprintf(at, sizeof(at), "%s%s", root, len == 1 ? "" : dir) < (int)sizeof(at)) {
			unsigned cpus = level(at);

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

unsigned fm_layout_cpu_quota_at(const char *root, const char *path)
{
	return walk_up(root, path, cpu_max_level);
}

unsigned fm_layout_cpu_quota_v1_at(const char *root, const char *path)
{
	return walk_up(root, path, cfs_level);
}

/* Whether the comma-separated list[0..n) holds the word `word`. */
static bool has_word(const char *list, size_t n, const char *word)
{
	size_t wl = strlen(word);

	for (size_t i = 0; i < n;) {
		size_t k = i;

		while (k < n && list[k] != ',')
			k++;
		if (k - i == wl && !memcmp(list + i, word, wl))
			return true;
		i = k + 1;
	}
	return false;
}

bool fm_layout_cgroup_path(const char *proc_cgroup, char *path, unsigned len)
{
	return fm_layout_cgroup_v1_path(proc_cgroup, NULL, path, len);
}

bool fm_layout_cgroup_v1_path(const char *proc_cgroup, const char *controller, char *path,
			      unsigned len)
{
	for (const char *l = proc_cgroup; l && *l;) {
		size_t n = strcspn(l, "\n");
		const char *c1 = memchr(l, ':', n);
		const char *c2 = c1 ? memchr(c1 + 1, ':', n - (size_t)(c1 + 1 - l)) : NULL;
		bool match = c2 && (controller ? has_word(c1 + 1, (size_t)(c2 - c1 - 1), controller)
					       : !strncmp(l, "0::", 3));

		if (!match) {
			l = l[n] ? l + n + 1 : NULL;
			continue;
		}
		n -= (size_t)(c2 + 1 - l);
		if (len == 0 || n >= len || c2[1] != '/')
			return false;
		memcpy(path, c2 + 1, n);
		path[n] = '\0';
		return true;
	}
	return false;
}

/* Field s[0..n) of mountinfo into out[0..len), its octal escapes ("\040"
 * for a space) decoded: false when it does not fit. */
static bool mount_field(const char *s, size_t n, char *out, unsigned len)
{
	unsigned o = 0;

	for (size_t i = 0; i < n; i++) {
		char ch = s[i];

		if (ch == '\\' && i + 3 < n && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
		    s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
			ch = (char)((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
			i += 3;
		}
		if (o + 1 >= len)
			return false;
		out[o++] = ch;
	}
	if (len == 0)
		return false;
	out[o] = '\0';
	return true;
}

bool fm_layout_cgroup_mount(const char *mountinfo, const char *controller, char *mnt,
			    unsigned mlen, char *mroot, unsigned rlen)
{
	for (const char *l = mountinfo; l && *l;) {
		size_t n = strcspn(l, "\n");
		const char *next = l[n] ? l + n + 1 : NULL;
		/* ID PARENT MAJ:MIN ROOT MOUNT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER */
		const char *f[5], *sep = NULL;
		size_t fl[5];
		unsigned nf = 0;

		for (size_t i = 0; i < n && nf < 5;) {
			size_t k = i;

			while (k < n && l[k] != ' ')
				k++;
			f[nf] = l + i;
			fl[nf++] = k - i;
			i = k + 1;
		}
		for (size_t i = 0; i + 3 <= n; i++)
			if (!memcmp(l + i, " - ", 3)) {
				sep = l + i + 3;
				break;
			}
		if (nf == 5 && sep) {
			size_t rest = n - (size_t)(sep - l), tl = strcspn(sep, " \n");
			const char *src = tl < rest ? memchr(sep + tl + 1, ' ', rest - tl - 1) : NULL;
			const char *super = src ? src + 1 : NULL;
			size_t sl = super ? n - (size_t)(super - l) : 0;
			bool match = controller ? tl == 6 && !memcmp(sep, "cgroup", 6) && super &&
							  has_word(super, sl, controller)
						: tl == 7 && !memcmp(sep, "cgroup2", 7);

			if (match)
				return mount_field(f[4], fl[4], mnt, mlen) &&
				       mount_field(f[3], fl[3], mroot, rlen);
		}
		l = next;
	}
	return false;
}

/* All of a /proc file (mountinfo can be long), malloc'd; NULL on failure. */
static char *read_all(const char *file)
{
	FILE *f = fopen(file, "re");
	size_t cap = 16384, used = 0;
	char *buf = f ? malloc(cap) : NULL;

	while (buf) {
		used += fread(buf + used, 1, cap - 1 - used, f);
		if (used < cap - 1 || cap >= (4u << 20))
			break;
		char *more = realloc(buf, cap * 2);

		if (!more) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = more;
		cap *= 2;
	}
	if (f)
		fclose(f);
	if (buf)
		buf[used] = '\0';
	return buf;
}

/* The quota of one hierarchy: the cgroup from /proc/self/cgroup (the v2 line
 * when controller is NULL, else the v1 line naming it), found under its
 * mount from mountinfo (under `fake` instead when set), read by `at`. */
static unsigned hierarchy_quota(const char *proc_cgroup, const char *mountinfo, const char *fake,
				const char *controller,
				unsigned (*at)(const char *root, const char *path))
{
	char path[PATH_MAX], mnt[PATH_MAX], mroot[PATH_MAX];
	const char *rel;
	size_t rl;

	if (!fm_layout_cgroup_v1_path(proc_cgroup, controller, path, sizeof(path)))
		return 0;
	if (fake)
		return at(fake, path);
	if (!mountinfo || !fm_layout_cgroup_mount(mountinfo, controller, mnt, sizeof(mnt), mroot,
						  sizeof(mroot)))
		return !controller && !mountinfo ? at("/sys/fs/cgroup", path) : 0;
	/* A mount of a subtree (a container's cgroup bind-mounted without a
	 * cgroup namespace) shows the process's path with the subtree in front. */
	rel = path;
	rl = strlen(mroot);
	if (strcmp(mroot, "/") && !strncmp(path, mroot, rl) && (path[rl] == '/' || !path[rl]))
		rel = path[rl] ? path + rl : "/";
	return at(mnt, rel);
}

unsigned fm_layout_cpu_quota(const char **file)
{
	const char *fake = getenv("FLUIDMEM_CGROUP_ROOT");   /* tests only */
	char *text, *mountinfo;
	unsigned v2, v1;

	if (file)
		*file = NULL;
	/* Whole, however long: a cut-off file could lose the line that names
	 * the quota's cgroup, read as "no quota". */
	text = read_all("/proc/self/cgroup");
	if (!text)
		return 0;
	if (fake && !fake[0])
		fake = NULL;
	mountinfo = fake ? NULL : read_all("/proc/self/mountinfo");
	v2 = hierarchy_quota(text, mountinfo, fake, NULL, fm_layout_cpu_quota_at);
	v1 = hierarchy_quota(text, mountinfo, fake, "cpu", fm_layout_cpu_quota_v1_at);
	free(mountinfo);
	free(text);
	if (v1 && (!v2 || v1 < v2)) {
		if (file)
			*file = "cpu.cfs_quota_us";
		return v1;
	}
	if (v2 && file)
		*file = "cpu.max";
	return v2;
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
