/* base/procstat: what /proc says about a process: for telling a live
 * process from a later one that reused its pid, and its counters (RSS,
 * write syscalls) for tests and benchmarks. */
#ifndef FM_PROCSTAT_H
#define FM_PROCSTAT_H

#include <stdint.h>
#include <sys/types.h>

/* The start time of pid in clock ticks since boot (field 22 of
 * /proc/PID/stat), or 0 when the process is gone or unreadable. A pid with
 * another start time is another process. */
uint64_t fm_pid_start_time(pid_t pid);

/* The number after "field:" in /proc/PID/FILE (pid 0: this process), e.g.
 * ("status", "VmRSS") in KiB or ("io", "syscw"); -1 when the file or the
 * field cannot be read. */
int64_t fm_proc_value(pid_t pid, const char *file, const char *field);

#endif
