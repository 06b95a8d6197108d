/* A store that is not up yet (issue 13): fluidmemd starts when memcached
 * does not answer, shows the store down, refuses registrations with the
 * reason, and once memcached starts (2 s later, as a slow unit would) the
 * state turns up and a verified storm over 8x the budget succeeds. */
#include <criterion/criterion.h>
#include <sys/mman.h>

#include "client/fluidmem.h"
#include "harness.h"
#include "memcached_harness.h"
#include "mirror.h"

static bool state_is(const struct td *t, const char *want)
{
	char *rep = td_ctl(t, "v1 stats");
	char pat[64];
	bool ok;

	snprintf(pat, sizeof(pat), "\"store_state\":\"%s\"", want);
	ok = rep && strstr(rep, pat);
	free(rep);
	return ok;
}

Test(store_late, daemon_waits_for_memcached_then_serves, .timeout = 180)
{
	static char servers[200];
	const char *sets[] = { "store.backend=memcached", servers, "memory.resident_pages=256",
			       "store.memcached.retry_delay_ms=50", NULL };
	struct td fmd;
	struct mcd m = { .mib = 64 };
	struct fm_client *c;
	struct fm_region *r;
	struct storm st;
	uint64_t errors;
	int status;

	/* An address nobody serves yet; memcached takes it later. */
	snprintf(m.dir, sizeof(m.dir), "/tmp/fmmc.XXXXXX");
	cr_assert_not_null(mkdtemp(m.dir));
	m.port = lb_free_port();
	snprintf(m.addr, sizeof(m.addr), "127.0.0.1:%u", m.port);
	snprintf(servers, sizeof(servers), "store.memcached.servers=%s", m.addr);

	cr_assert_eq(td_start(&fmd, sets), 0, "fluidmemd exited: memcached not up yet");
	cr_expect(state_is(&fmd, "down"), "the store should show down");
	c = fm_connect(fmd.reg);
	cr_assert_not_null(c);
	r = fm_region_create(c, 64 * 4096u, "too-early");
	cr_expect_null(r, "a registration was accepted with the store down");
	cr_expect(strstr(fm_client_error(c), "not reachable yet") != NULL, "reason: %s",
		  fm_client_error(c));
	fm_disconnect(c);

	td_sleep_ms(2000);
	cr_assert_eq(mcd_spawn(&m), 0, "cannot start memcached (scripts/test installs it)");
	for (int i = 0; i < 200 && !state_is(&fmd, "up"); i++)
		td_sleep_ms(50);
	cr_assert(state_is(&fmd, "up"), "the store never showed up");

	r = td_region(&fmd, &c, 2048, "late-store");
	storm_start(&st, fm_region_addr(r), 2048, 2, 20000);
	errors = storm_finish(&st);
	cr_expect_eq(errors, 0, "%lu pages differ from the mirror", (unsigned long)errors);
	cr_expect_gt(td_stat(&fmd, "store_puts"), 0, "nothing reached memcached");
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	fm_region_destroy(r);
	fm_disconnect(c);
	status = td_stop(&fmd);
	if (status)
		td_dump_log(&fmd);
	cr_expect_eq(status, 0);
	mcd_stop(&m);
}
