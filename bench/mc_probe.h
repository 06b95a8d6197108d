/* bench/mc_probe: fault-storm --memcached, the same 4 KiB get the daemon
 * makes (libmemcached, binary protocol, TCP_NODELAY, an mget of one key into
 * a reused result), timed from the client's side. */
#ifndef FM_BENCH_MC_PROBE_H
#define FM_BENCH_MC_PROBE_H

#include "base/hist.h"

#include <stdbool.h>

#define MC_PROBE_GETS 4000       /* direct memcached gets timed by --memcached */

struct mc_probe {
	bool ran;                /* at least one get was timed */
	struct fm_hist get;      /* latency of each get, ns */
	char error[200];         /* non-empty: what failed (set-up or a get) */
};

/* Store one page under a probe key on `server` (host:port, or a unix socket
 * path starting with '/'), time MC_PROBE_GETS gets of it into pr->get, then
 * delete it. *pr must start zeroed. Errors go to pr->error; a failed get
 * ends the probe with the gets timed so far. */
void mc_probe_run(const char *server, struct mc_probe *pr);

#endif
