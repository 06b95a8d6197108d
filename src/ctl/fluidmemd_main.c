/* fluidmemd: the fluidmem dataplane daemon. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef FM_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "fm_version.h"
#include "base/failpoint.h"
#include "base/log.h"
#include "ctl/config.h"
#include "ctl/ctl.h"
#include "ctl/shardcount.h"
#include "ctl/statefile.h"
#include "kv/kv.h"
#include "shard/shard.h"
#include "uffd/uffd.h"

/* Under systemd (Type=notify, fluidmemd.service) say READY=1 once
 * daemon_create has bound the registration and control sockets: from then
 * on a client's connect succeeds, so units ordered After=fluidmemd (libvirt,
 * VMs) never race the sockets. Outside systemd ($NOTIFY_SOCKET unset) this
 * does nothing. Without libsystemd at build time the unit is Type=simple. */
static void notify_ready(void)
{
#ifdef FM_HAVE_SYSTEMD
	int rc = sd_notifyf(0, "READY=1\nSTATUS=serving, version %s\nMAINPID=%ld", FM_VERSION,
			    (long)getpid());

	if (rc < 0)
		FM_WARN("sd_notify: %s", strerror(-rc));
#endif
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fluidmemd --config FILE [--set KEY=VALUE]... [--check]\n"
		"\n"
		"Serve memory page by page through userfaultfd: clients register regions on\n"
		"the registration socket; fluidmemd keeps a bounded number of their pages\n"
		"resident and the rest in the configured store.\n"
		"\n"
		"  -c, --config FILE   TOML configuration (every key: configs/local.toml)\n"
		"  -s, --set KEY=VAL   override one key, e.g. --set memory.resident_pages=1024\n"
		"                      (applied after the file, in order; TOML value syntax)\n"
		"      --check         validate the configuration (and the shard count of an\n"
		"                      existing local store, and an explicit daemon.node_id\n"
		"                      against regions waiting in daemon.state_dir), print\n"
		"                      it, and exit (2 when a start would refuse it)\n"
		"  -V, --version       print \"fluidmemd VERSION\" and exit\n"
		"  -h, --help          this text\n"
		"\n"
		"Exit status: 0 clean stop, 1 runtime failure, 2 bad configuration or usage.\n"
		"Stop it with SIGINT/SIGTERM or `fluidmemctl shutdown`; SIGHUP reloads the\n"
		"configuration (what may change at run time: see fluidmemd(8)).\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' }, { "set", required_argument, NULL, 's' },
		{ "check", no_argument, NULL, 'C' },        { "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },      { NULL, 0, NULL, 0 },
	};
	const char *config = NULL;
	char *sets[64];
	int nsets = 0, check = 0, opt, rc;
	struct fm_config cfg;
	char err[1024];
	struct daemon *d;

	fm_log_set_prog("fluidmemd");
	while ((opt = getopt_long(argc, argv, "c:s:hV", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config = optarg;
			break;
		case 's':
			if (nsets == (int)(sizeof(sets) / sizeof(sets[0]))) {
				fprintf(stderr, "fluidmemd: too many --set options\n");
				return 2;
			}
			sets[nsets++] = optarg;
			break;
		case 'C':
			check = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("fluidmemd %s\n", FM_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "fluidmemd: unexpected argument \"%s\"\n", argv[optind]);
		return 2;
	}
	if (!config) {
		fprintf(stderr, "fluidmemd: --config FILE is required (see configs/local.toml)\n");
		return 2;
	}
	if (ctl_config_load(&cfg, config, (char *const *)sets, nsets, err, sizeof(err)) < 0) {
		fprintf(stderr, "fluidmemd: %s\n", err);
		return 2;
	}
	fm_log_set_level(cfg.log_level);
	char layout[256];

	fm_config_layout_text(&cfg, layout, sizeof(layout));
	if (check) {
		char sdir[FM_STATE_PATH_MAX];

		/* What a start would refuse, before touching anything: a
		 * shards.count other than the local store's (a start exits 2),
		 * an explicit node_id other than the node whose regions wait in
		 * the state directory (a start exits 1 from daemon_create). */
		fm_state_dir_default(cfg.state_dir, sdir, sizeof(sdir));
		if (fm_shard_count_check(cfg.store_backend, cfg.local_path, cfg.shard_count, err,
					 sizeof(err)) < 0 ||
		    fm_state_node_check(sdir, fm_config_node_id(&cfg), cfg.cluster_hosts[0] != '\0',
					err, sizeof(err)) < 0) {
			fprintf(stderr, "fluidmemd: %s: %s\n", config, err);
			return 2;
		}
		printf("# %s: valid\n# layout: %s\n", config, layout);
		fm_config_dump(&cfg, stdout);
		return 0;
	}
	if (fm_failpoints_init() < 0)
		return 2;
	if (uffd_probe_and_report() < 0) {
		FM_ERR("this kernel cannot run fluidmem (see above)");
		return 1;
	}
	FM_INFO("effective configuration (%s):", config);
	fm_config_dump(&cfg, stderr);
	FM_INFO("layout: %s", layout);
	FM_INFO("metadata: %zu bytes per tracked page%s", shard_bytes_per_page(),
		strcmp(cfg.store_backend, "local") ? " (+8.25 where a page was stored: clean-page hashes)"
						   : "");
	/* Before any shard opens its store file: a changed count loses pages. */
	if (fm_shard_count_check(cfg.store_backend, cfg.local_path, cfg.shard_count, err,
				 sizeof(err)) < 0) {
		FM_ERR("%s", err);
		return 2;
	}
	d = daemon_create(&cfg);
	if (!d) {
		FM_ERR("cannot start: %s", strerror(errno));
		return 1;
	}
	rc = fm_shard_count_record(cfg.store_backend, cfg.local_path, cfg.shard_count);
	if (rc < 0)
		FM_WARN("cannot record the shard count in %s/" FM_SHARD_COUNT_FILE ": %s "
			"(a later start with another shards.count is still refused by the "
			"store's files)", cfg.local_path, strerror(-rc));
	if (daemon_set_config_source(d, config, sets, nsets) < 0) {
		FM_ERR("cannot start: out of memory");
		daemon_destroy(d);
		return 1;
	}
	notify_ready();
	rc = daemon_run(d);
	daemon_destroy(d);
	FM_INFO("stopped");
	return rc < 0 ? 1 : 0;
}
