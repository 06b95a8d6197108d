#include "ctl/layout.h"

#include <sched.h>
#include <stdio.h>
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
