/* Re-adoption (issue 10, daemon side): fluidmemd is killed with SIGKILL and
 * started again on the same state directory and store; a raw client that
 * kept its uffd and memfd sends READOPT with the credential REGISTER gave
 * it, and every page must read back as written (mirror), with no page lost
 * and none zeroed. Also: the refusals, the eviction failpoints that kill the
 * daemon between two steps, a kill during the rebuild itself, orphan
 * collection, and the state file itself. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "base/statebits.h"
#include "cluster/cluster.h"
#include "ctl/statefile.h"
#include "harness.h"
#include "memcached_harness.h"
#include "cluster_daemon.h"
#include "proto/proto.h"

#define PAGE 4096u
#define NPAGES 1024u          /* 4 MiB, 16x the budget below */
#define BUDGET "memory.resident_pages=64"
#define ROUNDS 2

static struct td fmd;
static struct mcd mc;
static bool use_mc;
static char dir[64];

/* ---- the daemon, restartable on the same directory ---- */

/* Start the daemon on dir (its log appended to), without waiting. */
static pid_t spawn_pid(const char *failpoints, const char *const *extra)
{
	static char stoset[160], mcset[200];
	const char *sets[64];
	int n = 0;

	snprintf(fmd.dir, sizeof(fmd.dir), "%s", dir);
	snprintf(fmd.reg, sizeof(fmd.reg), "%s/reg.sock", dir);
	snprintf(fmd.ctl, sizeof(fmd.ctl), "%s/ctl.sock", dir);
	snprintf(fmd.log, sizeof(fmd.log), "%s/fluidmemd.log", dir);
	sets[n++] = BUDGET;
	sets[n++] = "register.allowed_uids=[0, 65534]";
	sets[n++] = "register.mode=0o666";   /* the other-uid refusal */
	if (use_mc) {
		snprintf(mcset, sizeof(mcset), "store.memcached.servers=%s", mc.addr);
		sets[n++] = "store.backend=memcached";
		sets[n++] = mcset;
	} else {
		snprintf(stoset, sizeof(stoset), "store.local.path=\"%s/store\"", dir);
		sets[n++] = stoset;
	}
	for (int i = 0; extra && extra[i] && n < 60; i++)
		sets[n++] = extra[i];
	sets[n] = NULL;
	/* The state dir is dir/state (beside the sockets): kept across restarts. */
	return td_exec_daemon_ex(fmd.reg, fmd.ctl, fmd.log, sets, failpoints, true);
}

/* Wait up to ms for the daemon to answer a ping (it may still be leasing
 * its node id). */
static bool answers_within(int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		char *rep = td_ctl(&fmd, "v1 ping");

		if (rep) {
			free(rep);
			return true;
		}
		if (waitpid(fmd.pid, NULL, WNOHANG) == fmd.pid) {
			fmd.pid = 0;
			td_dump_log(&fmd);
			cr_assert_fail("fluidmemd did not start");
		}
		td_sleep_ms(10);
	}
	return false;
}

static void spawn(const char *failpoints, const char *const *extra)
{
	fmd.pid = spawn_pid(failpoints, extra);
	cr_assert_geq(fmd.pid, 0);
	cr_assert(answers_within(10000), "fluidmemd did not answer");
}

static void crash(void)
{
	kill(fmd.pid, SIGKILL);
	waitpid(fmd.pid, NULL, 0);
	fmd.pid = 0;
}

/* Wait up to ms for the daemon to die by itself (a failpoint). */
static bool died_within(int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		int status;

		if (waitpid(fmd.pid, &status, WNOHANG) == fmd.pid) {
			fmd.pid = 0;
			return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
		}
		td_sleep_ms(10);
	}
	return false;
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/fmreadopt.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	chmod(dir, 0755);   /* the uid-65534 client must reach the socket */
	if (use_mc)
		cr_assert_eq(mcd_start(&mc, 64, false), 0, "cannot start memcached");
}

static void teardown(void)
{
	char cmd[200];

	if (fmd.pid > 0) {
		int status = td_stop(&fmd);   /* removes dir */

		if (status != 0)
			td_dump_log(&fmd);
		cr_expect_eq(status, 0, "fluidmemd exited with %d", status);
	} else if (getenv("FM_TEST_KEEP_LOGS") == NULL) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0) {
			/* a leftover temp dir is harmless */
		}
	}
	if (use_mc)
		mcd_stop(&mc);
}

static void setup_mc(void)
{
	use_mc = true;
	setup();
}

/* ---- a raw client that keeps its uffd and memfd across daemon deaths ---- */

struct raw {
	uint64_t npages;       /* 0: NPAGES */
	int uffd, memfd, sock;
	uint8_t *addr;
	uint64_t id;
	uint8_t cred[FM_CREDENTIAL_LEN];
};

static int reg_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	struct timeval tv = { 30, 0 };

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fmd.reg);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %s",
		     strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static int exchange(struct raw *r, uint16_t type, uint64_t id, uint64_t size, const uint8_t *cred,
		    struct fm_reg_reply *rep)
{
	struct fm_reg_req q = { .magic = FM_PROTO_MAGIC, .version = FM_PROTO_VERSION, .type = type,
				.length = sizeof(q), .page_size = PAGE,
				.addr = (uint64_t)(uintptr_t)r->addr, .size = size, .region_id = id };
	int rc;

	strcpy(q.name, "readopt");
	if (cred)
		memcpy(q.credential, cred, FM_CREDENTIAL_LEN);
	rc = td_reg_exchange(r->sock, &q, sizeof(q), (int[]){ r->uffd, r->memfd }, 2, rep);
	return rc < 0 ? rc : rep->status;
}

static void raw_register(struct raw *r)
{
	struct uffdio_api api = { .api = UFFD_API, .features = FM_UFFD_FEATURES };
	struct fm_reg_reply rep;
	static const uint8_t zero[FM_CREDENTIAL_LEN];
	uint64_t npages = r->npages ? r->npages : NPAGES;
	int rc;

	r->memfd = memfd_create("readopt", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	cr_assert_geq(r->memfd, 0);
	cr_assert_eq(ftruncate(r->memfd, (off_t)npages * PAGE), 0);
	r->addr = mmap(NULL, (size_t)npages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd, 0);
	cr_assert_neq(r->addr, MAP_FAILED);
	r->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	cr_assert_geq(r->uffd, 0);
	cr_assert_eq(ioctl(r->uffd, UFFDIO_API, &api), 0);
	struct uffdio_register reg = {
		.range = { .start = (uint64_t)(uintptr_t)r->addr, .len = npages * PAGE },
		.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
	};
	cr_assert_eq(ioctl(r->uffd, UFFDIO_REGISTER, &reg), 0, "register: %s", strerror(errno));
	r->sock = reg_connect();
	rc = exchange(r, FM_REG_REGISTER, 0, npages * PAGE, NULL, &rep);
	cr_assert_eq(rc, 0, "REGISTER: %d %s", rc, rep.reason);
	r->id = rep.region_id;
	memcpy(r->cred, rep.credential, sizeof(r->cred));
	cr_assert(memcmp(r->cred, zero, sizeof(zero)) != 0, "REGISTER's reply carries no credential");
}

/* READOPT on a new connection (the old one died with the daemon). */
static int raw_readopt(struct raw *r, struct fm_reg_reply *rep)
{
	if (r->sock >= 0)
		close(r->sock);
	r->sock = reg_connect();
	return exchange(r, FM_REG_READOPT, r->id, (r->npages ? r->npages : NPAGES) * PAGE, r->cred,
			rep);
}

/* ---- the mirror: what every page holds after a given round ---- */

enum { P_DATA, P_ZERO, P_UNTOUCHED };

static int kind(uint64_t i)
{
	return i % 11 == 5 ? P_UNTOUCHED : i % 7 == 3 ? P_ZERO : P_DATA;
}

static uint64_t word(uint64_t i, unsigned round, unsigned k)
{
	return (i << 32) ^ ((uint64_t)round << 24) ^ k ^ 0x9e3779b97f4a7c15ull;
}

static void write_page(uint8_t *addr, uint64_t i, unsigned round)
{
	uint64_t *w = (uint64_t *)(addr + i * PAGE);

	if (kind(i) == P_ZERO)
		memset(w, 0, PAGE);
	else if (kind(i) == P_DATA)
		for (unsigned k = 0; k < PAGE / 8; k++)
			w[k] = word(i, round, k);
}

/* Pages that differ from the mirror after `round`. */
static unsigned verify(const uint8_t *addr, unsigned round)
{
	unsigned bad = 0;

	for (uint64_t i = 0; i < NPAGES; i++) {
		const uint64_t *w = (const uint64_t *)(addr + i * PAGE);
		bool ok = true;

		for (unsigned k = 0; k < PAGE / 8 && ok; k++)
			ok = w[k] == (kind(i) == P_DATA ? word(i, round, k) : 0);
		if (!ok && bad++ < 5)
			fprintf(stderr, "page %llu differs from the mirror (word 0 = %016llx)\n",
				(unsigned long long)i, (unsigned long long)w[0]);
	}
	return bad;
}

struct writer {
	uint8_t *addr;
	unsigned rounds;
	pthread_t th;
};

static void *write_rounds(void *arg)
{
	struct writer *w = arg;

	for (unsigned round = 0; round < w->rounds; round++)
		for (uint64_t i = 0; i < NPAGES; i++)
			write_page(w->addr, i, round);
	return NULL;
}

struct reader {
	const uint8_t *addr;
	unsigned round, bad;
	pthread_t th;
};

static void *read_all(void *arg)
{
	struct reader *rd = arg;

	rd->bad = verify(rd->addr, rd->round);
	return NULL;
}

static unsigned region_files(void)
{
	char path[128];
	unsigned n = 0;
	struct dirent *e;
	DIR *d;

	snprintf(path, sizeof(path), "%s/state", dir);
	d = opendir(path);
	if (!d)
		return 0;
	while ((e = readdir(d)) != NULL)
		n += strncmp(e->d_name, "region-", 7) == 0;
	closedir(d);
	return n;
}

/* ---- the tests ---- */

/* The end-to-end property: write, kill -9 with pages evicted, a reader
 * blocks on them while no daemon runs, restart, READOPT: the reader wakes
 * onto the right data and every page matches the mirror. */
static void crash_and_readopt(void)
{
	struct raw r = { .sock = -1 };
	struct writer w;
	struct reader rd;
	struct fm_reg_reply rep;
	int rc;

	spawn(NULL, NULL);
	raw_register(&r);
	w = (struct writer){ .addr = r.addr, .rounds = ROUNDS };
	write_rounds(&w);
	cr_assert_gt(td_stat(&fmd, "evictions"), 0, "nothing was evicted before the crash");
	crash();
	rd = (struct reader){ .addr = r.addr, .round = ROUNDS - 1 };
	cr_assert_eq(pthread_create(&rd.th, NULL, read_all, &rd), 0);
	td_sleep_ms(100);   /* the reader is blocked on an evicted page by now */
	spawn(NULL, NULL);
	rc = raw_readopt(&r, &rep);
	cr_assert_eq(rc, 0, "READOPT: %d %s", rc, rep.reason);
	cr_assert_eq(rep.region_id, r.id);
	pthread_join(rd.th, NULL);
	cr_expect_eq(rd.bad, 0, "%u page(s) differ after the restart", rd.bad);
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	/* A second crash after re-adoption: the re-adopted region's file
	 * still describes it. */
	w.rounds = ROUNDS + 1;
	write_rounds(&w);
	crash();
	spawn(NULL, NULL);
	rc = raw_readopt(&r, &rep);
	cr_assert_eq(rc, 0, "second READOPT: %d %s", rc, rep.reason);
	cr_expect_eq(verify(r.addr, ROUNDS), 0);
	/* Freed normally (the client closes its connection): keys, then file. */
	close(r.sock);
	r.sock = -1;
	for (int i = 0; i < 500 && region_files() > 0; i++)
		td_sleep_ms(10);
	cr_expect_eq(region_files(), 0, "the freed region's state file stayed");
	cr_expect_eq(verify(r.addr, ROUNDS), 0, "the restore on close lost pages");
}

Test(readopt, crash_and_readopt_local, .init = setup, .fini = teardown, .timeout = 120)
{
	crash_and_readopt();
}

Test(readopt, crash_and_readopt_memcached, .init = setup_mc, .fini = teardown, .timeout = 120)
{
	crash_and_readopt();
}

/* The running list in `servers list`, into buf. */
static void running_servers(char *buf, size_t len)
{
	char *rep = td_ctl(&fmd, "v1 servers list"), *p;

	snprintf(buf, len, "?");
	if (rep && (p = strstr(rep, "\"servers\":\""))) {
		p += 11;
		snprintf(buf, len, "%.*s", (int)strcspn(p, "\""), p);
	}
	free(rep);
}

/* With [cluster] on, a re-adopted region has its ZooKeeper record again:
 * here the record was only queued (ZooKeeper down at the registration) when
 * the daemon was killed, so it never reached ZooKeeper; after the restart
 * and READOPT it is there, owned by node 1. The counters too. */
Test(readopt, cluster_record_comes_back, .init = setup_mc, .fini = teardown, .timeout = 180)
{
	struct raw r = { .sock = -1 };
	struct writer w;
	struct fm_reg_reply rep;
	struct zkh z;
	char hosts[120], root[96];
	const char *extra[5];
	int rc;

	cr_assert_eq(zkh_start(&z), 0, "ZooKeeper did not start (java, package zookeeper?)");
	snprintf(hosts, sizeof(hosts), "cluster.hosts=\"%s\"", z.hosts);
	snprintf(root, sizeof(root), "cluster.root=\"/fmreadopt-%d\"", (int)getpid());
	extra[0] = hosts, extra[1] = root, extra[2] = "daemon.node_id=\"1\"", extra[3] = NULL;
	spawn(NULL, extra);
	zkh_kill(&z, SIGKILL);
	raw_register(&r);
	w = (struct writer){ .addr = r.addr, .rounds = ROUNDS };
	write_rounds(&w);
	cr_expect_geq(td_stat(&fmd, "cluster_queue_len"), 1, "the record was not queued");
	crash();
	cr_assert_eq(zkh_restart(&z), 0);
	/* A recorded server list is not used with the cluster on, even with
	 * a region waiting: the config's, until ZooKeeper has one. */
	{
		char path[128], run[512];
		FILE *f;

		snprintf(path, sizeof(path), "%s/state/servers", dir);
		f = fopen(path, "w");
		cr_assert_not_null(f);
		fprintf(f, "fluidmem-servers 1\n127.0.0.1:1\n");
		fclose(f);
		spawn(NULL, extra);
		running_servers(run, sizeof(run));
		cr_expect_str_eq(run, mc.addr);
	}
	cr_expect(!cd_cluster_lists(&fmd, r.id, 1), "the record reached ZooKeeper before the crash");
	rc = raw_readopt(&r, &rep);
	cr_assert_eq(rc, 0, "READOPT: %d %s", rc, rep.reason);
	for (int i = 0; i < 1000 && !cd_cluster_lists(&fmd, r.id, 1); i++)
		td_sleep_ms(10);
	cr_expect(cd_cluster_lists(&fmd, r.id, 1), "no record for the re-adopted region");
	cr_expect_eq(verify(r.addr, ROUNDS - 1), 0);
	cr_expect_eq(td_stat(&fmd, "readopts"), 1);
	/* A second READOPT of the attached region is refused, and counted. */
	{
		struct raw dup = r;

		dup.sock = -1;
		rc = raw_readopt(&dup, &rep);
		cr_expect_neq(rc, 0);
		if (dup.sock >= 0)
			close(dup.sock);
	}
	cr_expect_eq(td_stat(&fmd, "readopt_refusals"), 1);
	close(r.sock);
	r.sock = -1;
	for (int i = 0; i < 1000 && cd_cluster_lists(&fmd, r.id, 1); i++)
		td_sleep_ms(10);
	cr_expect(!cd_cluster_lists(&fmd, r.id, 1), "the freed region's record stayed");
	zkh_stop(&z);   /* the daemon is stopped by teardown: its flush waits 2 s at most */
}

/* Every refusal READOPT documents, then a good one, then a duplicate. */
Test(readopt, refusals, .init = setup, .fini = teardown, .timeout = 60)
{
	struct raw r = { .sock = -1 };
	struct fm_reg_reply rep;
	uint8_t bad[FM_CREDENTIAL_LEN];
	int rc;

	spawn(NULL, NULL);
	raw_register(&r);
	write_rounds(&(struct writer){ .addr = r.addr, .rounds = 1 });
	/* still attached on its first connection */
	{
		struct raw twin = r;

		twin.sock = reg_connect();
		rc = exchange(&twin, FM_REG_READOPT, r.id, (uint64_t)NPAGES * PAGE, r.cred, &rep);
		cr_expect_eq(rc, -EAGAIN, "READOPT of an attached region: %d %s", rc, rep.reason);
		close(twin.sock);
	}
	crash();
	spawn(NULL, NULL);
	r.sock = reg_connect();
	rc = exchange(&r, FM_REG_READOPT, r.id ^ 0x77, (uint64_t)NPAGES * PAGE, r.cred, &rep);
	cr_expect_eq(rc, -ENOENT, "unknown id: %d %s", rc, rep.reason);
	memcpy(bad, r.cred, sizeof(bad));
	bad[3] ^= 1;
	rc = exchange(&r, FM_REG_READOPT, r.id, (uint64_t)NPAGES * PAGE, bad, &rep);
	cr_expect_eq(rc, -EPERM, "bad credential: %d %s", rc, rep.reason);
	rc = exchange(&r, FM_REG_READOPT, r.id, (uint64_t)(NPAGES / 2) * PAGE, r.cred, &rep);
	cr_expect_eq(rc, -EINVAL, "wrong size: %d %s", rc, rep.reason);
	if (geteuid() == 0) {
		/* another uid with the right credential for the owner */
		pid_t pid = fork();

		if (pid == 0) {
			/* no Criterion asserts in here: they would report
			 * from a process Criterion does not know */
			struct sockaddr_un sa = { .sun_family = AF_UNIX };
			struct timeval tv = { 10, 0 };
			int st;

			if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
				_exit(2);
			snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fmd.reg);
			r.sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
			setsockopt(r.sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
			if (connect(r.sock, (struct sockaddr *)&sa, sizeof(sa)) < 0)
				_exit(3);
			st = exchange(&r, FM_REG_READOPT, r.id, (uint64_t)NPAGES * PAGE, r.cred, &rep);
			_exit(st == -EPERM ? 0 : 1);
		}
		int status;
		waitpid(pid, &status, 0);
		cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			  "another uid was not refused with -EPERM (child status %d)", status);
	}
	rc = exchange(&r, FM_REG_READOPT, r.id, (uint64_t)NPAGES * PAGE, r.cred, &rep);
	cr_assert_eq(rc, 0, "READOPT: %d %s", rc, rep.reason);
	cr_expect_eq(verify(r.addr, 0), 0);
	{
		struct raw twin = r;

		twin.sock = reg_connect();
		rc = exchange(&twin, FM_REG_READOPT, r.id, (uint64_t)NPAGES * PAGE, r.cred, &rep);
		cr_expect_eq(rc, -EAGAIN, "second READOPT: %d %s", rc, rep.reason);
		close(twin.sock);
	}
}

/* A failpoint kills the daemon between two steps of an eviction while a
 * writer runs; after the restart and READOPT the writer finishes and every
 * page matches. */
static void kill_at(const char *fp)
{
	struct raw r = { .sock = -1 };
	struct writer w;
	struct fm_reg_reply rep;
	int rc;

	spawn(fp, NULL);
	raw_register(&r);
	w = (struct writer){ .addr = r.addr, .rounds = ROUNDS + 1 };
	cr_assert_eq(pthread_create(&w.th, NULL, write_rounds, &w), 0);
	cr_assert(died_within(60000), "%s never fired (or the daemon died otherwise)", fp);
	spawn(NULL, NULL);
	rc = raw_readopt(&r, &rep);
	cr_assert_eq(rc, 0, "READOPT after %s: %d %s", fp, rc, rep.reason);
	pthread_join(w.th, NULL);
	cr_expect_eq(verify(r.addr, ROUNDS), 0, "pages differ after a kill at %s", fp);
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
}

static const char *const kill_points[] = {
	"evict.after_protect=kill@300", "evict.after_put=kill@7",  "evict.after_mark=kill@300",
	"evict.after_punch=kill@300",   "evict.after_unprotect=kill@300",
};

Test(readopt, failpoint_kills_local, .init = setup, .fini = teardown, .timeout = 300)
{
	for (size_t i = 0; i < sizeof(kill_points) / sizeof(kill_points[0]); i++) {
		kill_at(kill_points[i]);
		crash();
	}
}

Test(readopt, failpoint_kills_memcached, .init = setup_mc, .fini = teardown, .timeout = 300)
{
	for (size_t i = 0; i < sizeof(kill_points) / sizeof(kill_points[0]); i++) {
		kill_at(kill_points[i]);
		crash();
	}
}

/* Killed while rebuilding: the next daemon re-adopts from the same state. */
Test(readopt, kill_during_rebuild, .init = setup, .fini = teardown, .timeout = 120)
{
	struct raw r = { .sock = -1 };
	struct fm_reg_reply rep;
	int rc;

	spawn(NULL, NULL);
	raw_register(&r);
	write_rounds(&(struct writer){ .addr = r.addr, .rounds = ROUNDS });
	crash();
	spawn("readopt.rebuild=kill@1", NULL);
	rc = raw_readopt(&r, &rep);
	cr_expect_neq(rc, 0, "READOPT answered by a daemon that should have died");
	cr_assert(died_within(10000), "readopt.rebuild never fired");
	spawn(NULL, NULL);
	rc = raw_readopt(&r, &rep);
	cr_assert_eq(rc, 0, "READOPT: %d %s", rc, rep.reason);
	cr_expect_eq(verify(r.addr, ROUNDS - 1), 0);
}

/* Pages that differ from the mirror after `round`, counting a SIGBUS (a
 * poisoned page) as a difference instead of dying of it. */
static sigjmp_buf bus_jmp;

static void on_bus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

static unsigned verify_catching_bus(const uint8_t *addr, unsigned round, unsigned *bus)
{
	struct sigaction sa = { .sa_handler = on_bus }, old;
	volatile unsigned bad = 0, nbus = 0;
	volatile uint64_t i = 0;

	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_NODEFER;
	cr_assert_eq(sigaction(SIGBUS, &sa, &old), 0);
	for (; i < NPAGES; i++) {
		const volatile uint64_t *w = (const volatile uint64_t *)(addr + i * PAGE);

		if (sigsetjmp(bus_jmp, 1)) {
			if (nbus++ < 5)
				fprintf(stderr, "page %llu: SIGBUS (poisoned)\n", (unsigned long long)i);
			bad++;
			continue;
		}
		for (unsigned k = 0; k < PAGE / 8; k++)
			if (w[k] != (kind(i) == P_DATA ? word(i, round, k) : 0)) {
				bad++;
				break;
			}
	}
	sigaction(SIGBUS, &old, NULL);
	*bus = nbus;
	return bad;
}

/* The shard that owns a stripe must be the same in every daemon: the local
 * store keeps a shard's pages in that shard's own file. It used to follow
 * the region's table slot, which depends on the order regions arrive: a
 * region registered second (slot 2) and re-adopted alone by the next daemon
 * (slot 1) had every stripe looked up in the other shard's file, and every
 * stored page was poisoned as "lost by the store" (issue 10, crash_storm). */
static void second_region_readopted_alone(void)
{
	struct raw first = { .sock = -1, .npages = FM_STRIPE_PAGES }, r = { .sock = -1 };
	struct fm_reg_reply rep;
	unsigned bad, bus;
	int rc;

	spawn(NULL, NULL);
	raw_register(&first);   /* held, never re-adopted: only shifts r's slot */
	raw_register(&r);
	write_rounds(&(struct writer){ .addr = r.addr, .rounds = ROUNDS });
	cr_assert_gt(td_stat(&fmd, "evictions"), 0, "nothing was evicted before the crash");
	crash();
	spawn(NULL, NULL);
	rc = raw_readopt(&r, &rep);
	cr_assert_eq(rc, 0, "READOPT: %d %s", rc, rep.reason);
	bad = verify_catching_bus(r.addr, ROUNDS - 1, &bus);
	cr_expect_eq(bad, 0, "%u page(s) differ after the restart, %u of them poisoned", bad, bus);
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
}

Test(readopt, second_region_readopted_alone_local, .init = setup, .fini = teardown,
     .timeout = 120)
{
	second_region_readopted_alone();
}

Test(readopt, second_region_readopted_alone_memcached, .init = setup_mc, .fini = teardown,
     .timeout = 120)
{
	second_region_readopted_alone();
}

/* `servers drain` without [cluster] changes the running server list; the
 * config still names the drained server. A restart with a region waiting
 * must keep the drained list (the state directory's `servers` file):
 * with the config's list, ketama looked the pages moved off b up on b
 * again (misses: poisoned) and evicted onto b again. Without waiting
 * regions the config wins. `graceful`: `shutdown --keep-clients` instead
 * of kill -9. With `fp`, the daemon dies in the middle of the
 * drain: the restart reads with both lists and drains b again once the
 * region is re-adopted. */
static bool drain_state_is(const char *state)
{
	char *rep = td_ctl(&fmd, "v1 servers list"), want[48];
	bool is;

	snprintf(want, sizeof(want), "\"state\":\"%s\"", state);
	is = rep && strstr(rep, want);
	free(rep);
	return is;
}

static void drain_and_restart(const char *fp, bool graceful)
{
	struct raw r = { .sock = -1 };
	struct fm_reg_reply rep;
	struct mcd b, c;
	static char list[512];
	const char *extra[] = { list, NULL };
	char *out, run[512];
	unsigned bad, bus;
	long held, left = 0;
	int rc;

	cr_assert_eq(mcd_start(&b, 64, false), 0);
	cr_assert_eq(mcd_start(&c, 64, false), 0);
	snprintf(list, sizeof(list), "store.memcached.servers=\"%s,%s,%s\"", mc.addr, b.addr,
		 c.addr);
	spawn(fp, extra);
	raw_register(&r);
	write_rounds(&(struct writer){ .addr = r.addr, .rounds = ROUNDS });
	held = cd_mc_stat(&b, "curr_items");
	cr_assert_gt(held, 0, "b holds no page before the drain");
	out = td_ctl(&fmd, "v1 servers drain %s", b.addr);
	cr_assert(out && strstr(out, "\"ok\":true"), "%s", out);
	free(out);
	if (fp) {
		cr_assert(died_within(10000), "%s never fired", fp);
		left = cd_mc_stat(&b, "curr_items");
		cr_assert(left > 0 && left < held, "b held %ld keys, %ld after the kill", held,
			  left);
	} else {
		for (int i = 0; i < 3000 && !drain_state_is("done"); i++)
			td_sleep_ms(10);
		cr_assert(drain_state_is("done"), "the drain did not finish");
		cr_assert_eq(cd_mc_stat(&b, "curr_items"), 0, "b still holds keys after the drain");
		if (graceful) {
			int status = -1;

			out = td_ctl(&fmd, "v1 shutdown --keep-clients");
			cr_assert(out && strstr(out, "\"ok\":true"), "%s", out);
			free(out);
			for (int i = 0; i < 3000 && waitpid(fmd.pid, &status, WNOHANG) != fmd.pid; i++)
				td_sleep_ms(10);
			cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d",
				  status);
			fmd.pid = 0;
		} else {
			crash();
		}
	}
	spawn(NULL, extra);   /* the config still names b */
	if (fp)
		cr_expect(drain_state_is("waiting"), "the drain does not wait for the region");
	rc = raw_readopt(&r, &rep);
	cr_assert_eq(rc, 0, "READOPT: %d %s", rc, rep.reason);
	bad = verify_catching_bus(r.addr, ROUNDS - 1, &bus);
	cr_expect_eq(bad, 0, "%u page(s) differ after the restart, %u of them poisoned", bad, bus);
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	for (int i = 0; fp && i < 3000 && !drain_state_is("done"); i++)
		td_sleep_ms(10);
	/* The verify evicted again (a 64-page budget): never onto b. */
	cr_expect_gt(td_stat(&fmd, "evictions"), 0);
	cr_expect_eq(cd_mc_stat(&b, "curr_items"), 0, "the drained server is used again");
	running_servers(run, sizeof(run));
	cr_expect(!strstr(run, b.addr) && strstr(run, c.addr), "the running list: %s", run);
	out = td_ctl(&fmd, "v1 servers list");
	fprintf(stderr, "drain_and_restart(%s): b held %ld keys before its drain, %ld at the "
		"kill; after the restart: %s\n", fp ? fp : "-", held, left, out);
	free(out);
	bad = verify_catching_bus(r.addr, ROUNDS - 1, &bus);
	cr_expect_eq(bad, 0, "%u page(s) differ after the drain", bad);

	/* Freed, so no region waits: the next start takes the config's list. */
	close(r.sock);
	r.sock = -1;
	for (int i = 0; i < 500 && region_files() > 0; i++)
		td_sleep_ms(10);
	cr_expect_eq(region_files(), 0);
	crash();
	spawn(NULL, extra);
	running_servers(run, sizeof(run));
	cr_expect(strstr(run, b.addr), "the config's list did not win: %s", run);
	mcd_stop(&b);
	mcd_stop(&c);
}

Test(readopt, drained_server_stays_drained, .init = setup_mc, .fini = teardown, .timeout = 180)
{
	drain_and_restart(NULL, false);
}

Test(readopt, drained_server_stays_drained_keep_clients, .init = setup_mc, .fini = teardown,
     .timeout = 180)
{
	drain_and_restart(NULL, true);
}

Test(readopt, killed_mid_drain, .init = setup_mc, .fini = teardown, .timeout = 180)
{
	drain_and_restart("drain.after_move=kill@40", false);
}

/* ---- the node id across restarts (issue 10) ---- */

/* Whether the daemon's log (all its runs on dir) holds s. */
static bool log_has(const char *s)
{
	static char buf[1 << 20];
	FILE *f = fopen(fmd.log, "re");
	size_t n;

	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return strstr(buf, s) != NULL;
}

/* The id recorded in dir/state/node, or -1. */
static long node_file(void)
{
	char path[128], buf[32] = "";
	FILE *f;

	snprintf(path, sizeof(path), "%s/state/node", dir);
	f = fopen(path, "re");
	if (!f)
		return -1;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = '\0';
	fclose(f);
	return buf[0] ? strtol(buf, NULL, 10) : -1;
}

/* The [cluster] sets of these tests: node_id "auto", the collector's grace
 * at its minimum, a 4 s session: a dead daemon's lease goes 4 s after the
 * kill (a shorter one risks the first handshake on a loaded machine). */
struct zk_sets {
	char hosts[120], root[96];
	const char *v[7];
};

static const char *const *zk_sets(struct zk_sets *zs, const struct zkh *z, const char *test)
{
	snprintf(zs->hosts, sizeof(zs->hosts), "cluster.hosts=\"%s\"", z->hosts);
	snprintf(zs->root, sizeof(zs->root), "cluster.root=\"/fmreadopt-%d-%s\"", (int)getpid(),
		 test);
	zs->v[0] = zs->hosts, zs->v[1] = zs->root, zs->v[2] = "daemon.node_id=\"auto\"";
	zs->v[3] = "cluster.orphan_grace_s=1", zs->v[4] = "cluster.session_timeout_ms=4000";
	zs->v[5] = NULL;
	return zs->v;
}

/* An "auto" daemon killed with pages in memcached takes the same node id
 * again at the restart, although the old node's records would make the id
 * search skip it. Before the node was kept, the restarted daemon leased
 * another id; once the dead session expired and the grace passed, it
 * collected the old node (itself) as an orphan, deleting the re-adopted
 * region's store keys: every evicted page was poisoned. */
Test(readopt, auto_node_takes_its_node_again, .init = setup_mc, .fini = teardown, .timeout = 180)
{
	struct raw r = { .sock = -1 };
	struct fm_reg_reply rep;
	struct zk_sets zs;
	struct zkh z;
	const char *const *extra;
	unsigned bad, bus;
	int64_t node;
	int rc;

	cr_assert_eq(zkh_start(&z), 0, "ZooKeeper did not start (java, package zookeeper?)");
	extra = zk_sets(&zs, &z, "again");
	spawn(NULL, extra);
	node = td_stat(&fmd, "node_id");
	cr_assert_geq(node, 1);
	cr_expect_eq(node_file(), node, "the leased id is not recorded in the state dir");
	raw_register(&r);
	cr_expect_eq((int64_t)(r.id >> 48), node);
	write_rounds(&(struct writer){ .addr = r.addr, .rounds = ROUNDS });
	cr_assert_gt(td_stat(&fmd, "evictions"), 0, "nothing was evicted before the crash");
	for (int i = 0; i < 1000 && !cd_cluster_lists(&fmd, r.id, (unsigned)node); i++)
		td_sleep_ms(10);
	cr_assert(cd_cluster_lists(&fmd, r.id, (unsigned)node), "no record before the crash");
	crash();
	spawn(NULL, extra);
	cr_expect_eq(td_stat(&fmd, "node_id"), node, "the restarted \"auto\" daemon is another node");
	rc = raw_readopt(&r, &rep);
	cr_assert_eq(rc, 0, "READOPT: %d %s", rc, rep.reason);
	/* Past the dead session's expiry (4 s after the kill) and the grace
	 * (1 s), with scans every 250 ms: a node of the old id without a
	 * lease would be collected by now. */
	td_sleep_ms(8000);
	bad = verify_catching_bus(r.addr, ROUNDS - 1, &bus);
	cr_expect_eq(bad, 0, "%u page(s) differ after the restart, %u of them poisoned", bad, bus);
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	cr_expect_eq(td_stat(&fmd, "cluster_collected"), 0, "a node was collected");
	cr_expect_eq(td_stat(&fmd, "cluster_records_failed"), 0, "the record was refused");
	cr_expect(cd_cluster_lists(&fmd, r.id, (unsigned)node), "no record after READOPT");
	cr_expect_eq(node_file(), node);
	cr_expect(log_has("asking for node"), "the log does not say which node it asked for");
	cr_expect(!log_has("had no state in ZooKeeper"), "a collection was told that did not happen");
	close(r.sock);
	r.sock = -1;
	for (int i = 0; i < 500 && region_files() > 0; i++)
		td_sleep_ms(10);
	cr_expect_eq(verify(r.addr, ROUNDS - 1), 0, "the restore on close lost pages");
	zkh_stop(&z);
}

/* The dead daemon's lease may still be held: by its session until that
 * expires (a lease from another host, or a container with another host
 * name, is never taken over early), here by a live holder in the test.
 * Held past the bound (session timeout + 2 s): the daemon refuses to start
 * as another node, exit 1, naming the node. Released within it: the daemon
 * waits, takes the node, and the region comes back whole. */
Test(readopt, auto_node_waits_for_its_lease, .init = setup_mc, .fini = teardown, .timeout = 240)
{
	struct raw r = { .sock = -1 };
	struct fm_reg_reply rep;
	struct zk_sets zs;
	struct zkh z;
	struct cluster *holder;
	struct cluster_opts o;
	const char *const *extra;
	char root[96];
	unsigned bad, bus;
	int64_t node;
	int rc;

	cr_assert_eq(zkh_start(&z), 0, "ZooKeeper did not start (java, package zookeeper?)");
	extra = zk_sets(&zs, &z, "wait");
	snprintf(root, sizeof(root), "/fmreadopt-%d-wait", (int)getpid());
	spawn(NULL, extra);
	node = td_stat(&fmd, "node_id");
	raw_register(&r);
	write_rounds(&(struct writer){ .addr = r.addr, .rounds = ROUNDS });
	cr_assert_gt(td_stat(&fmd, "evictions"), 0, "nothing was evicted before the crash");
	crash();
	/* This process takes the dead daemon's lease (same host, dead pid:
	 * taken over at once) and holds it alive. */
	o = (struct cluster_opts){ .hosts = z.hosts, .root = root, .node_id = (int32_t)node,
				   .session_timeout_ms = 20000, .orphan_grace_ms = 600000 };
	holder = cluster_create(&o);
	cr_assert(holder, "cannot hold node %" PRId64 ": %s", node, strerror(errno));

	fmd.pid = spawn_pid(NULL, extra);
	cr_assert_gt(fmd.pid, 0);
	rc = td_wait_exit(fmd.pid, 60000);
	fmd.pid = 0;
	cr_expect_eq(rc, 1, "held past the bound: exit %d, not 1", rc);
	{
		char want[96];

		snprintf(want, sizeof(want), "node id %" PRId64 ", which the 1 region(s) awaiting",
			 node);
		cr_expect(log_has(want), "the refusal does not name node %" PRId64, node);
		cr_expect(log_has("is still leased"), "the wait is not logged");
	}
	cr_expect_eq(node_file(), node, "the refusal changed the recorded node");

	fmd.pid = spawn_pid(NULL, extra);
	cr_assert_gt(fmd.pid, 0);
	td_sleep_ms(3000);
	cr_expect(!answers_within(10), "started while its node was held");
	cluster_destroy(holder);   /* the lease goes at once */
	cr_assert(answers_within(30000), "fluidmemd did not start once its node was free");
	cr_expect_eq(td_stat(&fmd, "node_id"), node);
	cr_expect(log_has("is free again after"), "the wait's end is not logged");
	rc = raw_readopt(&r, &rep);
	cr_assert_eq(rc, 0, "READOPT: %d %s", rc, rep.reason);
	bad = verify_catching_bus(r.addr, ROUNDS - 1, &bus);
	cr_expect_eq(bad, 0, "%u page(s) differ after the restart, %u of them poisoned", bad, bus);
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	zkh_stop(&z);
}

/* The node was collected while no daemon held it (here by a leader in the
 * test whose collect step deletes no keys, so the pages survive to be
 * checked): the restarted daemon still takes its node, and says that the
 * waiting regions' stored pages are likely gone. */
Test(readopt, auto_node_collected_while_down_is_told, .init = setup_mc, .fini = teardown,
     .timeout = 180)
{
	struct raw r = { .sock = -1 };
	struct fm_reg_reply rep;
	struct zk_sets zs;
	struct zkh z;
	struct cluster *c;
	struct cluster_opts o;
	struct cluster_stats st = { 0 };
	const char *const *extra;
	char root[96];
	int64_t node;
	int rc;

	cr_assert_eq(zkh_start(&z), 0, "ZooKeeper did not start (java, package zookeeper?)");
	extra = zk_sets(&zs, &z, "collected");
	snprintf(root, sizeof(root), "/fmreadopt-%d-collected", (int)getpid());
	spawn(NULL, extra);
	node = td_stat(&fmd, "node_id");
	raw_register(&r);
	write_rounds(&(struct writer){ .addr = r.addr, .rounds = ROUNDS });
	crash();
	/* Release the dead daemon's lease at once (take it over, leave)... */
	o = (struct cluster_opts){ .hosts = z.hosts, .root = root, .node_id = (int32_t)node,
				   .session_timeout_ms = 20000, .orphan_grace_ms = 600000 };
	c = cluster_create(&o);
	cr_assert(c, "cannot take node %" PRId64 ": %s", node, strerror(errno));
	cluster_destroy(c);
	/* ...and let another node, the leader, collect it. */
	o.node_id = CLUSTER_NODE_AUTO;
	o.orphan_grace_ms = 300;
	c = cluster_create(&o);
	cr_assert(c, "no collector: %s", strerror(errno));
	for (int i = 0; i < 1000 && st.collected == 0; i++) {
		td_sleep_ms(10);
		cluster_get_stats(c, &st);
	}
	cluster_destroy(c);
	cr_assert_eq(st.collected, 1, "node %" PRId64 " was not collected", node);

	spawn(NULL, extra);
	cr_expect_eq(td_stat(&fmd, "node_id"), node);
	cr_expect(log_has("had no state in ZooKeeper"), "the collection is not told");
	rc = raw_readopt(&r, &rep);
	cr_assert_eq(rc, 0, "READOPT: %d %s", rc, rep.reason);
	cr_expect_eq(verify(r.addr, ROUNDS - 1), 0);
	zkh_stop(&z);
}

/* A daemon restarted with another explicit daemon.node_id than its waiting
 * regions were written by is refused (exit 1, both ids and the fix in the
 * log) before it touches anything; with the right id they come back. */
Test(readopt, other_node_id_refused, .init = setup, .fini = teardown, .timeout = 60)
{
	struct raw r = { .sock = -1 };
	struct fm_reg_reply rep;
	int rc;

	spawn(NULL, (const char *const[]){ "daemon.node_id=3", NULL });
	cr_expect_eq(node_file(), 3);
	raw_register(&r);
	cr_expect_eq(r.id >> 48, 3);
	write_rounds(&(struct writer){ .addr = r.addr, .rounds = ROUNDS });
	crash();
	fmd.pid = spawn_pid(NULL, (const char *const[]){ "daemon.node_id=4", NULL });
	cr_assert_gt(fmd.pid, 0);
	rc = td_wait_exit(fmd.pid, 20000);
	fmd.pid = 0;
	cr_expect_eq(rc, 1, "exit %d, not 1", rc);
	cr_expect(log_has("daemon.node_id = 4, but the 1 region(s) awaiting re-adoption"),
		  "the refusal does not name the configured id");
	cr_expect(log_has("were written by node 3"), "the refusal does not name the recorded id");
	cr_expect(log_has("Start with daemon.node_id = 3"), "the refusal does not give the fix");
	cr_expect_eq(node_file(), 3, "the refusal changed the recorded node");
	cr_expect_eq(region_files(), 1, "the refusal touched the region file");
	spawn(NULL, (const char *const[]){ "daemon.node_id=3", NULL });
	rc = raw_readopt(&r, &rep);
	cr_assert_eq(rc, 0, "READOPT: %d %s", rc, rep.reason);
	cr_expect_eq(verify(r.addr, ROUNDS - 1), 0);
	cr_expect_eq(td_stat(&fmd, "poisoned"), 0);
	/* No region waits any more: another id is allowed, and recorded. */
	close(r.sock);
	r.sock = -1;
	for (int i = 0; i < 500 && region_files() > 0; i++)
		td_sleep_ms(10);
	cr_assert_eq(region_files(), 0);
	crash();
	spawn(NULL, (const char *const[]){ "daemon.node_id=5", NULL });
	cr_expect_eq(td_stat(&fmd, "node_id"), 5);
	cr_expect_eq(node_file(), 5, "the new id is not recorded");
}

/* Nobody re-adopts within the grace: pages and file are deleted, and a late
 * READOPT finds nothing. */
Test(readopt, orphan_collected, .init = setup, .fini = teardown, .timeout = 60)
{
	struct raw r = { .sock = -1 };
	struct fm_reg_reply rep;
	int rc;

	spawn(NULL, NULL);
	raw_register(&r);
	write_rounds(&(struct writer){ .addr = r.addr, .rounds = 1 });
	crash();
	spawn(NULL, (const char *const[]){ "daemon.readopt_grace_s=1", NULL });
	cr_expect_eq(region_files(), 1);
	for (int i = 0; i < 1000 && region_files() > 0; i++)
		td_sleep_ms(10);
	cr_expect_eq(region_files(), 0, "the orphan's file stayed");
	cr_expect_eq(td_stat(&fmd, "store_pages"), 0, "the orphan's pages stayed in the store");
	rc = raw_readopt(&r, &rep);
	cr_expect_eq(rc, -ENOENT, "late READOPT: %d %s", rc, rep.reason);
	/* the client's threads would wait for ever: unregister so the test ends */
	struct uffdio_range rg = { (uint64_t)(uintptr_t)r.addr, (uint64_t)NPAGES * PAGE };
	ioctl(r.uffd, UFFDIO_UNREGISTER, &rg);
}

/* ---- the state file, without a daemon ---- */

Test(statefile, create_open_bits_credential)
{
	char tmp[] = "/tmp/fmstate.XXXXXX", cmd[64];
	struct fm_state_dir sd, sd2;
	struct fm_state_map m, m2;
	struct fm_state_hdr h = { .region_id = 0x0001000200000003ull, .addr = 0x7f0000000000ull,
				  .size = 1000 * PAGE, .npages = 1000, .uid = 1000, .pid = 42 };
	uint8_t c1[FM_CREDENTIAL_LEN], c2[FM_CREDENTIAL_LEN];

	cr_assert_not_null(mkdtemp(tmp));
	cr_assert_eq(fm_state_dir_open(&sd, tmp), 0);
	cr_expect_eq(sd.generation, 1);
	cr_expect_eq(fm_state_dir_open(&sd2, tmp), -EBUSY, "two daemons on one directory");
	strcpy(h.name, "vm");
	cr_assert_eq(fm_state_region_create(&sd, &h, &m), 0);
	cr_expect_eq(m.hdr->bitmap_bytes, 2 * (FM_STRIPE_PAGES / 8), "whole stripes");
	fm_state_bit_set(m.bits, 999, true);
	fm_state_bit_set(m.bits, 3, true);
	fm_state_bit_set(m.bits, 3, false);
	fm_state_credential(&sd, h.region_id, 1000, c1);
	fm_state_map_close(&m);
	fm_state_dir_close(&sd);

	/* the next start: new generation, same secret, same bits */
	cr_assert_eq(fm_state_dir_open(&sd, tmp), 0);
	cr_expect_eq(sd.generation, 2);
	fm_state_credential(&sd, h.region_id, 1000, c2);
	cr_expect(fm_state_credential_eq(c1, c2), "the credential changed across restarts");
	fm_state_credential(&sd, h.region_id, 1001, c2);
	cr_expect(!fm_state_credential_eq(c1, c2), "the credential ignores the uid");
	fm_state_credential(&sd, h.region_id + 1, 1000, c2);
	cr_expect(!fm_state_credential_eq(c1, c2), "the credential ignores the id");
	cr_assert_eq(fm_state_region_open(&sd, h.region_id, &m2), 0);
	cr_expect_eq(m2.hdr->npages, 1000);
	cr_expect_str_eq(m2.hdr->name, "vm");
	cr_expect(fm_state_bit(m2.bits, 999));
	cr_expect(!fm_state_bit(m2.bits, 3));
	cr_expect(!fm_state_bit(m2.bits, 998));
	fm_state_map_close(&m2);
	cr_expect_eq(fm_state_region_open(&sd, h.region_id + 1, &m2), -ENOENT);
	cr_expect_eq(fm_state_region_unlink(&sd, h.region_id), 0);
	cr_expect_eq(fm_state_region_open(&sd, h.region_id, &m2), -ENOENT);
	fm_state_dir_close(&sd);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	cr_expect_eq(system(cmd), 0);
}

Test(statefile, torn_or_foreign_files_are_refused)
{
	char tmp[] = "/tmp/fmstate.XXXXXX", path[128], cmd[64];
	struct fm_state_dir sd;
	struct fm_state_map m;
	struct fm_state_hdr h = { .region_id = 7, .addr = 0x10000, .size = 8 * PAGE, .npages = 8 };
	int fd;

	cr_assert_not_null(mkdtemp(tmp));
	cr_assert_eq(fm_state_dir_open(&sd, tmp), 0);
	cr_assert_eq(fm_state_region_create(&sd, &h, &m), 0);
	fm_state_map_close(&m);
	snprintf(path, sizeof(path), "%s/region-%016llx.state", tmp, 7ull);
	fd = open(path, O_WRONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, 100), 0);   /* torn */
	close(fd);
	cr_expect_eq(fm_state_region_open(&sd, 7, &m), -EINVAL);
	fm_state_dir_close(&sd);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	cr_expect_eq(system(cmd), 0);
}

/* The `servers` file: what is written reads back, the oldest list goes
 * beyond FM_STATE_SERVER_LISTS, and anything but such a file is refused. */
static void put_file(const char *dirpath, const char *name, const char *body, size_t len)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dirpath, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, body, len), (ssize_t)len);
	close(fd);
}

Test(statefile, servers_round_trip_and_garbage)
{
	char tmp[] = "/tmp/fmstate.XXXXXX", cmd[64], big[2100];
	struct fm_state_dir sd;
	static struct fm_state_servers s, t;
	static const struct {
		const char *body;
		size_t len;
	} bad[] = {
		{ "", 0 },
		{ "fluidmem-servers 1\n", 19 },                       /* no list */
		{ "fluidmem-servers 2\na:1\n", 23 },                  /* another version */
		{ "fluidmem-servers 1\na:1", 22 },                    /* no last newline */
		{ "fluidmem-servers 1\na:1\n\nb:2\n", 28 },           /* an empty list */
		{ "fluidmem-servers 1\na:1, b:2\n", 28 },             /* a space */
		{ "fluidmem-servers 1\na:1\tb\n", 25 },               /* a control character */
		{ "fluidmem-servers 1\na\0b\n", 23 },                 /* a NUL */
		{ "fluidmem-servers 1\na\nb\nc\nd\ne\n", 29 },        /* five lists */
		{ "\x7f" "ELF\x02\x01\x01\0\0\0\0\0\0\0\0\0", 16 },
	};

	cr_assert_not_null(mkdtemp(tmp));
	cr_assert_eq(fm_state_dir_open(&sd, tmp), 0);
	cr_expect_eq(fm_state_servers_read(&sd, &t), -ENOENT);
	cr_expect_eq(fm_state_servers_push(&s, "a:1,b:2,c:3"), 0);
	cr_expect_eq(fm_state_servers_push(&s, "a:1,b:2,c:3"), 0);
	cr_expect_eq(s.n, 1, "the running list twice is one list");
	cr_expect_eq(fm_state_servers_push(&s, "a:1,c:3"), 0);
	cr_assert_eq(fm_state_servers_write(&sd, &s), 0);
	cr_assert_eq(fm_state_servers_read(&sd, &t), 0);
	cr_expect_eq(t.n, 2);
	cr_expect_str_eq(t.list[0], "a:1,b:2,c:3");
	cr_expect_str_eq(t.list[1], "a:1,c:3");
	/* Beyond FM_STATE_SERVER_LISTS the oldest goes. */
	for (int i = 0; i < 5; i++) {
		char l[32];

		snprintf(l, sizeof(l), "/run/mc%d.sock", i);
		cr_expect_eq(fm_state_servers_push(&s, l), 0);
	}
	cr_expect_eq(s.n, FM_STATE_SERVER_LISTS);
	cr_assert_eq(fm_state_servers_write(&sd, &s), 0);
	cr_assert_eq(fm_state_servers_read(&sd, &t), 0);
	cr_expect_eq(t.n, FM_STATE_SERVER_LISTS);
	cr_expect_str_eq(t.list[0], "/run/mc1.sock");
	cr_expect_str_eq(t.list[FM_STATE_SERVER_LISTS - 1], "/run/mc4.sock");
	/* A list too long is refused and changes nothing. */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	cr_expect_eq(fm_state_servers_push(&s, big), -ENAMETOOLONG);
	cr_expect_eq(s.n, FM_STATE_SERVER_LISTS);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put_file(tmp, "servers", bad[i].body, bad[i].len);
		t.n = 3;
		cr_expect_eq(fm_state_servers_read(&sd, &t), -EINVAL, "case %zu read", i);
		cr_expect_eq(t.n, 0, "case %zu", i);
	}
	/* An overlong line, and a whole file of garbage. */
	snprintf(big, sizeof(big), "fluidmem-servers 1\n");
	memset(big + 19, 'y', sizeof(big) - 21);
	big[sizeof(big) - 2] = '\n';
	put_file(tmp, "servers", big, sizeof(big) - 1);
	cr_expect_eq(fm_state_servers_read(&sd, &t), -EINVAL);
	{
		static char junk[8192];

		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (char)(i * 2654435761u >> 13);
		put_file(tmp, "servers", junk, sizeof(junk));
		cr_expect_eq(fm_state_servers_read(&sd, &t), -EINVAL);
	}
	/* Written again over garbage, and no temporary left behind. */
	cr_assert_eq(fm_state_servers_write(&sd, &s), 0);
	cr_expect_eq(fm_state_servers_read(&sd, &t), 0);
	cr_expect_eq(access(strcat(strcpy(big, tmp), "/.servers.tmp"), F_OK), -1);
	fm_state_dir_close(&sd);
	cr_expect_eq(fm_state_servers_write(&sd, &s), -ENOENT, "no directory, no file");
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	cr_expect_eq(system(cmd), 0);
}

/* The node id file: absent, a round trip across reopen, rewritten, and
 * anything but "<id>\n" (empty, torn, garbage, out of range, trailing
 * bytes) refused rather than read as some id. */
Test(statefile, node_file_round_trip_and_garbage)
{
	static const char *const bad[] = { "", "1", "\n", "12x\n", "-1\n", " 7\n", "7 \n",
					   "65536\n", "99999\n", "7\n7\n", "+7\n", "0x10\n",
					   "123456\n", "007\n", "00\n" };
	char tmp[] = "/tmp/fmstate.XXXXXX", path[128], cmd[64], buf[16] = "";
	struct fm_state_dir sd;
	struct stat st;
	int fd;

	cr_assert_not_null(mkdtemp(tmp));
	cr_assert_eq(fm_state_dir_open(&sd, tmp), 0);
	cr_expect_eq(fm_state_node_read(&sd), -ENOENT, "a new directory has no node");
	cr_assert_eq(fm_state_node_write(&sd, 65535), 0);
	cr_expect_eq(fm_state_node_read(&sd), 65535);
	cr_assert_eq(fm_state_node_write(&sd, 0), 0);
	cr_expect_eq(fm_state_node_read(&sd), 0);
	cr_assert_eq(fm_state_node_write(&sd, 4242), 0);
	fm_state_dir_close(&sd);
	cr_expect_eq(fm_state_node_read(&sd), -ENOENT, "a closed directory has no node");

	/* Across a reopen (the next start), as written: text, mode 0600. */
	cr_assert_eq(fm_state_dir_open(&sd, tmp), 0);
	cr_expect_eq(fm_state_node_read(&sd), 4242);
	snprintf(path, sizeof(path), "%s/" FM_STATE_NODE_FILE, tmp);
	cr_assert_eq(stat(path, &st), 0);
	cr_expect_eq(st.st_mode & 0777, 0600);
	fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0);
	cr_expect_eq(read(fd, buf, sizeof(buf) - 1), 5);
	close(fd);
	cr_expect_str_eq(buf, "4242\n");
	snprintf(path, sizeof(path), "%s/." FM_STATE_NODE_FILE ".tmp", tmp);
	cr_expect_neq(access(path, F_OK), 0, "the temporary stayed");

	snprintf(path, sizeof(path), "%s/" FM_STATE_NODE_FILE, tmp);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fd = open(path, O_WRONLY | O_TRUNC);
		cr_assert_geq(fd, 0);
		cr_assert_eq(write(fd, bad[i], strlen(bad[i])), (ssize_t)strlen(bad[i]));
		close(fd);
		cr_expect_eq(fm_state_node_read(&sd), -EINVAL, "\"%s\" was read as a node id",
			     bad[i]);
	}
	/* A rewrite replaces the garbage. */
	cr_assert_eq(fm_state_node_write(&sd, 9), 0);
	cr_expect_eq(fm_state_node_read(&sd), 9);
	fm_state_dir_close(&sd);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	cr_expect_eq(system(cmd), 0);
}

/* ---- measurements (bench/README.md, "Restart and re-adoption") ----
 * Not a test: skipped unless FM_READOPT_BENCH=1. Prints re-adopt time per
 * GiB, start-up with 100 live regions, and the longest fault a reader saw
 * across a crash restart. */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct prober {
	volatile uint64_t *addr;
	uint64_t npages, max_ns, reads;
	volatile bool stop;
	pthread_t th;
};

static void *probe(void *arg)
{
	struct prober *p = arg;
	uint64_t sum = 0;

	while (!p->stop) {
		for (uint64_t i = 0; i < p->npages && !p->stop; i += 7) {
			uint64_t t0 = now_ns(), dt;

			sum += p->addr[i * (PAGE / 8)];
			dt = now_ns() - t0;
			if (dt > p->max_ns)
				p->max_ns = dt;
			p->reads++;
		}
	}
	return (void *)(uintptr_t)sum;
}

Test(readopt_bench, numbers, .init = setup, .fini = teardown, .timeout = 900)
{
	const char *mib_env = getenv("FM_READOPT_BENCH_MIB");
	uint64_t mib = mib_env ? strtoull(mib_env, NULL, 10) : 1024, npages = mib * 256;
	static char budget[64];
	struct raw r = { .npages = npages, .sock = -1 };
	struct raw small[100];
	struct fm_reg_reply rep;
	struct prober pr;
	uint64_t t0, t1, spawn0, spawn100, readopt100;
	int rc;

	if (!getenv("FM_READOPT_BENCH"))
		cr_skip_test("set FM_READOPT_BENCH=1 to measure (bench/README.md)");
	snprintf(budget, sizeof(budget), "memory.resident_pages=%llu",
		 (unsigned long long)(npages / 4));
	const char *const extra[] = { budget, NULL };

	t0 = now_ns();
	spawn(NULL, extra);
	spawn0 = now_ns() - t0;
	raw_register(&r);
	for (uint64_t i = 0; i < npages; i++)   /* one word: every page holds data */
		((uint64_t *)r.addr)[i * (PAGE / 8)] = i + 1;
	fprintf(stderr, "bench: %llu MiB written, %lld evictions\n", (unsigned long long)mib,
		(long long)td_stat(&fmd, "evictions"));
	crash();
	spawn(NULL, extra);
	t0 = now_ns();
	rc = raw_readopt(&r, &rep);
	t1 = now_ns();
	cr_assert_eq(rc, 0, "READOPT: %d %s", rc, rep.reason);
	fprintf(stderr, "bench: READOPT of %llu MiB (%llu pages, 3/4 stored): %.1f ms, %.1f ms per GiB\n",
		(unsigned long long)mib, (unsigned long long)npages, (t1 - t0) / 1e6,
		(t1 - t0) / 1e6 * 1024.0 / (double)mib);

	/* the longest fault across a crash restart, reader running throughout */
	pr = (struct prober){ .addr = (volatile uint64_t *)r.addr, .npages = npages };
	cr_assert_eq(pthread_create(&pr.th, NULL, probe, &pr), 0);
	td_sleep_ms(1000);
	uint64_t before = pr.max_ns;
	t0 = now_ns();
	crash();
	spawn(NULL, extra);
	rc = raw_readopt(&r, &rep);
	t1 = now_ns();
	cr_assert_eq(rc, 0, "READOPT: %d %s", rc, rep.reason);
	td_sleep_ms(1000);
	pr.stop = true;
	pthread_join(pr.th, NULL);
	fprintf(stderr, "bench: longest read before the crash %.2f ms; across kill -9, restart and "
		"READOPT %.1f ms (kill to READOPT reply: %.1f ms); %llu reads\n",
		before / 1e6, pr.max_ns / 1e6, (t1 - t0) / 1e6, (unsigned long long)pr.reads);
	close(r.sock);
	r.sock = -1;
	munmap(r.addr, npages * PAGE);

	/* start-up with 100 live regions (1 MiB each, half evicted) */
	for (int i = 0; i < 100; i++) {
		small[i] = (struct raw){ .npages = 256, .sock = -1 };
		raw_register(&small[i]);
		for (uint64_t p = 0; p < 256; p++)
			((uint64_t *)small[i].addr)[p * (PAGE / 8)] = p + 1;
	}
	crash();
	t0 = now_ns();
	spawn(NULL, extra);
	spawn100 = now_ns() - t0;
	t0 = now_ns();
	for (int i = 0; i < 100; i++) {
		rc = raw_readopt(&small[i], &rep);
		cr_assert_eq(rc, 0, "READOPT %d: %d %s", i, rc, rep.reason);
	}
	readopt100 = now_ns() - t0;
	fprintf(stderr, "bench: start-up (exec to first control reply) %.1f ms with no region, "
		"%.1f ms with 100 waiting; READOPT of all 100: %.1f ms\n", spawn0 / 1e6,
		spawn100 / 1e6, readopt100 / 1e6);
	for (int i = 0; i < 100; i++)
		close(small[i].sock);
}
