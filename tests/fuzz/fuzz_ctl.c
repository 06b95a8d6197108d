/* fuzz_ctl: control requests through command dispatch (ctl_execute), on a
 * real daemon: one shard, the local store, no region, sockets in a private
 * directory (unlinked once it runs). It is built once (LLVMFuzzerInitialize)
 * and never served:
 * ctl_execute is called directly, so `shutdown` only answers (the caller
 * would stop; here nothing does) and every command that talks to shards
 * does so over the real rings.
 *
 * Input: what a control client sends on one connection: lines split at
 * '\n', a trailing '\r' dropped, each line up to its first NUL, the way
 * ctl_conn.c's ctl_conn_readable hands them over. A line longer than
 * CTL_MAX_REQUEST ends the input (the daemon cuts such a client off).
 *
 * Checked beyond memory safety: each request gets exactly one reply line,
 * which is strict JSON (RFC 8259 over bytes; see fuzz_json.h) and starts
 * with {"v":1,"ok":. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "ctl/config.h"
#include "ctl/ctl.h"
#include "fuzz/fuzz_json.h"

#define MAX_LINES 16   /* requests per input: sequences, without slow inputs */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct daemon *daemon_;
static char dir[] = "/tmp/fuzz_ctl.XXXXXX";
static char reg_path[FM_SOCK_PATH_MAX], ctl_path[FM_SOCK_PATH_MAX];   /* TOML strings */
static bool strict_utf8;   /* replies must be valid UTF-8 too (FUZZ_CTL_UTF8=0: not checked) */

static void set(struct fm_config *c, const char *key, const char *value)
{
	char err[256];

	if (fm_config_set(c, key, value, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_ctl: %s\n", err);
		abort();
	}
}

static void cleanup(void)
{
	daemon_destroy(daemon_);
	daemon_ = NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct fm_config cfg;
	char err[256];
	sigset_t sigs;

	if (!mkdtemp(dir)) {
		perror("fuzz_ctl: mkdtemp");
		abort();
	}
	snprintf(reg_path, sizeof(reg_path), "\"%s/register.sock\"", dir);
	snprintf(ctl_path, sizeof(ctl_path), "\"%s/control.sock\"", dir);
	strict_utf8 = !getenv("FUZZ_CTL_UTF8") || strcmp(getenv("FUZZ_CTL_UTF8"), "0") != 0;
	fm_config_defaults(&cfg);
	set(&cfg, "register.path", reg_path);
	set(&cfg, "control.path", ctl_path);
	set(&cfg, "daemon.log_level", "error");
	set(&cfg, "shards.count", "1");
	set(&cfg, "shards.ring_slots", "64");
	/* Two CPUs are shared: nobody spins waiting for work. */
	set(&cfg, "shards.spin_us", "0");
	set(&cfg, "dispatcher.spin_us", "0");
	set(&cfg, "memory.resident_pages", "64");
	set(&cfg, "store.local.max_mib", "1");
	if (fm_config_validate(&cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_ctl: %s\n", err);
		abort();
	}
	fm_log_level = cfg.log_level;
	daemon_ = daemon_create(&cfg);
	if (!daemon_) {
		fprintf(stderr, "fuzz_ctl: daemon_create: %s\n", strerror(errno));
		rmdir(dir);
		abort();
	}
	/* Nobody connects: the listening sockets work unlinked, and a crash
	 * leaves nothing behind in /tmp. */
	snprintf(reg_path, sizeof(reg_path), "%s/register.sock", dir);
	snprintf(ctl_path, sizeof(ctl_path), "%s/control.sock", dir);
	unlink(reg_path);
	unlink(ctl_path);
	rmdir(dir);
	/* daemon_create blocks them for its signalfd; let ^C stop the fuzzer. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
	atexit(cleanup);
	return 0;
}

static void check_reply(const char *req, const struct strbuf *out)
{
	static const char head[] = "{\"v\":1,\"ok\":";
	const char *why = NULL;
	const char *nl = out->s ? memchr(out->s, '\n', out->len) : NULL;

	if (out->oom || !out->s || !nl || nl != out->s + out->len - 1)
		why = "not exactly one reply line";
	else if (strncmp(out->s, head, strlen(head)))
		why = "the reply does not start with {\"v\":1,\"ok\":";
	else if (memchr(out->s, '\0', out->len))
		why = "a NUL byte in the reply";
	else
		fuzz_json_valid(out->s, out->len - 1, strict_utf8, &why);
	if (why) {
		fprintf(stderr, "fuzz_ctl: %s\nrequest: \"%s\"\nreply (%zu bytes): %.*s\n", why, req,
			out->len, (int)(out->len > 4096 ? 4096 : out->len), out->s ? out->s : "");
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	char line[CTL_MAX_REQUEST + 1];

	for (int n = 0; p < end && n < MAX_LINES; n++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = (size_t)((nl ? nl : end) - p);
		struct strbuf out = { 0 };

		if (len > CTL_MAX_REQUEST)
			break;
		memcpy(line, p, len);
		line[len] = '\0';
		if (len && line[len - 1] == '\r')
			line[len - 1] = '\0';
		p = nl ? nl + 1 : end;
		ctl_execute(daemon_, line, &out);
		check_reply(line, &out);
		sb_free(&out);
		/* `log-level debug` would flood stderr and slow every run. */
		fm_log_level = FM_LOG_ERROR;
	}
	return 0;
}
