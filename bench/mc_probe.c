/* bench/mc_probe: direct memcached gets for fault-storm --memcached. */
#include "mc_probe.h"

#include "base/base.h"

#include <libmemcached/memcached.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mc_probe_run(const char *server, struct mc_probe *pr)
{
	static const char key[] = "fault-storm:probe";
	static char page[FM_PAGE_SIZE];
	const char *keys[1] = { key };
	size_t lens[1] = { sizeof(key) - 1 };
	memcached_result_st result;
	memcached_return_t rc;
	memcached_st *mc = memcached_create(NULL);
	char host[256];
	const char *colon = strrchr(server, ':');

	if (!mc) {
		snprintf(pr->error, sizeof(pr->error), "out of memory");
		return;
	}
	if (server[0] == '/') {
		rc = memcached_server_add_unix_socket(mc, server);
	} else {
		snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - server) : (int)strlen(server),
			 server);
		rc = memcached_server_add(mc, host, colon ? (in_port_t)atoi(colon + 1) : 11211);
	}
	/* The daemon's settings: binary protocol, TCP_NODELAY, and a get is an
	 * mget of one key into a reused result (kv/memcached.c). */
	memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1);
	memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_NO_BLOCK, 1);
	memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
	memset(page, 0x5a, sizeof(page));
	if (rc == MEMCACHED_SUCCESS)
		rc = memcached_set(mc, key, sizeof(key) - 1, page, sizeof(page), 0, 0);
	if (rc != MEMCACHED_SUCCESS || !memcached_result_create(mc, &result)) {
		snprintf(pr->error, sizeof(pr->error), "%s: %s", server, memcached_strerror(mc, rc));
		memcached_free(mc);
		return;
	}
	for (int i = 0; i < MC_PROBE_GETS; i++) {
		uint64_t t0 = fm_now_ns();
		memcached_result_st *res;

		rc = memcached_mget(mc, keys, lens, 1);
		res = rc == MEMCACHED_SUCCESS ? memcached_fetch_result(mc, &result, &rc) : NULL;
		if (res)
			memcpy(page, memcached_result_value(res), sizeof(page));
		while (res && memcached_fetch_result(mc, &result, &rc))
			;
		if (!res) {
			snprintf(pr->error, sizeof(pr->error), "%s: get: %s", server,
				 memcached_strerror(mc, rc));
			break;
		}
		fm_hist_add(&pr->get, fm_now_ns() - t0);
	}
	memcached_delete(mc, key, sizeof(key) - 1, 0);
	memcached_result_free(&result);
	memcached_free(mc);
	pr->ran = pr->get.count > 0;
}
