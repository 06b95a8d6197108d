/* base/procstat: see procstat.h. */
#include "base/procstat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t fm_pid_start_time(pid_t pid)
{
	char path[64], buf[1024];
	uint64_t st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (fgets(buf, sizeof(buf), f)) {
		/* The name in parentheses may hold spaces: count fields from the
		 * last ')', after which field 3 starts; starttime is field 22. */
		char *p = strrchr(buf, ')');

		for (int i = 3; p && i <= 22; i++)
			p = strchr(p + 1, ' ');
		if (p)
			st = strtoull(p + 1, NULL, 10);
	}
	fclose(f);
	return st;
}

int64_t fm_proc_value(pid_t pid, const char *file, const char *field)
{
	char path[96], line[256], name[64];
	unsigned long long v;
	int64_t rc = -1;
	FILE *f;

	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	else
		snprintf(path, sizeof(path), "/proc/self/%s", file);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%63[^:]: %llu", name, &v) == 2 && strcmp(name, field) == 0) {
			rc = (int64_t)v;
			break;
		}
	fclose(f);
	return rc;
}
