/* `fluidmemctl servers drain` without the cluster: one fluidmemd, real
 * memcached servers. A verifying fault-storm runs while a server is
 * drained: 0 verify errors, the drained server holds none of the daemon's
 * keys afterwards (memcached's curr_items), and stopping it loses nothing.
 * The refusals: an unknown server, the last one. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cluster_daemon.h"

/* The drain's state in `servers list`, into buf. */
static void drain_state(const struct td *t, char *buf, size_t len)
{
	char *rep = td_ctl(t, "v1 servers list"), *p;

	snprintf(buf, len, "?");
	if (rep && (p = strstr(rep, "\"state\":\""))) {
		p += 9;
		snprintf(buf, len, "%.*s", (int)strcspn(p, "\""), p);
	}
	free(rep);
}

Test(drain, server_drained_mid_storm, .timeout = 180)
{
	struct mcd a, b, c;
	struct td t;
	char servers[512], cmd[512], out[8192] = { 0 }, st[32], *rep;
	const char *sets[6];
	FILE *storm;
	int status;
	long items;

	cr_assert_eq(mcd_start(&a, 128, false), 0);
	cr_assert_eq(mcd_start(&b, 128, false), 0);
	cr_assert_eq(mcd_start(&c, 128, false), 0);
	snprintf(servers, sizeof(servers), "store.memcached.servers=\"%s,%s,%s\"", a.addr, b.addr,
		 c.addr);
	sets[0] = "store.backend=\"memcached\"";
	sets[1] = servers;
	sets[2] = "memory.resident_pages=512";
	sets[3] = NULL;
	cr_assert_eq(td_start(&t, sets), 0);

	/* Refusals first: nothing changes. */
	rep = td_ctl(&t, "v1 servers drain 127.0.0.1:1");
	cr_expect(rep && strstr(rep, "\"ok\":false") && strstr(rep, "not in the server list"), "%s",
		  rep);
	free(rep);

	storm = cd_storm_start(&t, 8);
	cr_assert_not_null(storm);
	/* Into the first pass: b holds some thousand pages. */
	for (int i = 0; i < 3000 && td_stat(&t, "evictions") < 4096; i++)
		td_sleep_ms(10);
	items = cd_mc_stat(&b, "curr_items");
	cr_expect(items > 0, "b holds no page before the drain (%ld)", items);
	cr_expect_eq(td_stat(&t, "regions"), 1, "the storm ended too early");
	rep = td_ctl(&t, "v1 servers drain %s", b.addr);
	cr_expect(rep && strstr(rep, "\"ok\":true"), "%s", rep);
	free(rep);
	/* A second drain while one runs is refused. */
	drain_state(&t, st, sizeof(st));
	if (!strcmp(st, "running")) {
		rep = td_ctl(&t, "v1 servers drain %s", c.addr);
		cr_expect(rep && strstr(rep, "under way"), "%s", rep);
		free(rep);
	}
	for (int i = 0; i < 6000; i++) {
		drain_state(&t, st, sizeof(st));
		if (strcmp(st, "running"))
			break;
		td_sleep_ms(10);
	}
	cr_expect_str_eq(st, "done");
	rep = td_ctl(&t, "v1 servers list");
	fprintf(stderr, "server_drained_mid_storm: %s (b held %ld items before)\n", rep, items);
	free(rep);
	cr_expect_eq(cd_mc_stat(&b, "curr_items"), 0, "the drained server still holds keys");
	/* Stopped while the storm goes on: nothing may be lost. */
	mcd_stop(&b);
	cr_expect_eq(td_stat(&t, "regions"), 1, "the storm ended before the drain did");

	cd_storm_finish(storm, out, sizeof(out));
	cr_expect_eq(td_stat(&t, "poisoned"), 0);
	cr_expect_eq(td_stat(&t, "drains"), 1);
	cr_expect_eq(td_stat(&t, "drains_failed"), 0);
	cr_expect_gt(td_stat(&t, "drain_moved"), 0);

	/* Now a,c; drain c with fluidmemctl, which waits for the end and
	 * shows progress; then a is the last. */
	snprintf(cmd, sizeof(cmd),
		 FM_BUILD_DIR "/bin/fluidmemctl --socket %s --progress --json servers drain %s 2>&1",
		 t.ctl, c.addr);
	storm = popen(cmd, "r");
	cr_assert_not_null(storm);
	status = cd_pclose_read(storm, out, sizeof(out));
	cr_expect_eq(WEXITSTATUS(status), 0, "%s", out);
	cr_expect(strstr(out, "servers drain: ended in") && strstr(out, "\"state\":\"done\""), "%s",
		  out);
	drain_state(&t, st, sizeof(st));
	cr_expect_str_eq(st, "done");
	cr_expect_eq(cd_mc_stat(&c, "curr_items"), 0, "c still holds keys");
	rep = td_ctl(&t, "v1 servers drain %s", a.addr);
	cr_expect(rep && strstr(rep, "\"ok\":false") && strstr(rep, "last server"), "%s", rep);
	free(rep);
	td_expect_stop(&t);
	mcd_stop(&a);
	mcd_stop(&c);
}
