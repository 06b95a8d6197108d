/* fluidmemctl's progress display for long commands (fluidmemctl_progress.c). */
#ifndef FM_CTL_FLUIDMEMCTL_PROGRESS_H
#define FM_CTL_FLUIDMEMCTL_PROGRESS_H

#include <stdbool.h>

/* Send `line` on fd and return the reply, as request() does. For a shrinking
 * `resize PAGES`, `evict N`, `detach ID --force` and `shutdown` (not --drop),
 * when stderr is a tty or `forced` (--progress), show "evicted N/M pages" on
 * stderr meanwhile, polled over a second connection to sock_path, then a
 * summary line. argv[0..argc) is the command and its arguments. */
char *fmctl_request_progress(int fd, const char *line, const char *sock_path, bool forced, int argc,
			     char **argv, char *(*request)(int fd, const char *line));

/* After `servers drain`'s reply (reply, malloc'd, consumed): wait for the
 * drain to end on this node and, with the cluster, on every live node,
 * showing progress when stderr is a tty or `forced`. Returns the reply to
 * print (malloc'd): the final `servers list`, or a failure. */
char *fmctl_drain_wait(const char *sock_path, bool forced, char *reply);

#endif
