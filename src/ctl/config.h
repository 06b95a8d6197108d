/* ctl/config: fluidmemd's configuration, read from one TOML file against a
 * table-driven schema (config.c). Every key is documented in
 * configs/local.toml. An unknown key, a wrong type or an out-of-range value is
 * an error that names file:line:key. */
#ifndef FM_CONFIG_H
#define FM_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>

/* The enums and sizes of module options live with their module; ctl maps the
 * config onto each module's parameters (ctl/params.h). */
#include "kv/kv.h"           /* enum fm_local_compression, fm_mc_distribution */
#include "shard/policy.h"    /* enum fm_policy_kind */

#define FM_MAX_SHARDS 64
#define FM_MAX_UIDS 32
#define FM_SOCK_PATH_MAX 108   /* sizeof(sun_path) */

#define FM_ZK_HOSTS_MAX 256      /* bytes of cluster.hosts, NUL included */

struct fm_config {
	/* [daemon] */
	int log_level;                     /* enum fm_log_level; key "log_level" = "info" */
	char node_id[8];                   /* "0".."65535", or "auto" (cluster on): fm_config_node_id */
	char state_dir[256];               /* re-adoption state; "" = the default (statefile.h) */
	uint32_t readopt_grace_s;          /* then a previous run's region is an orphan */
	/* [dispatcher] */
	int dispatcher_cpu;                /* -1 = unpinned; resolved when _auto */
	bool dispatcher_cpu_auto;          /* "auto": ctl/layout.h plans it */
	uint32_t dispatcher_batch;         /* events read per wake-up */
	uint32_t dispatcher_spin_us;       /* poll this long before sleeping */
	/* [shards] */
	uint32_t shard_count;              /* resolved when _auto */
	bool shard_count_auto;
	int shard_cpus[FM_MAX_SHARDS];     /* -1 = unpinned; resolved when _auto */
	uint32_t shard_cpus_n;             /* 0 = all unpinned, else == shard_count */
	bool shard_cpus_auto;
	char layout_cpus[96];              /* the usable CPUs an "auto" was planned on ("0-3"),
					    * and the cgroup's CPU quota if it allows fewer */
	uint32_t ring_slots;               /* power of two */
	uint32_t spin_us;                  /* busy-poll before sleeping */
	/* [memory] */
	uint64_t resident_pages;           /* budget across all shards */
	uint32_t evict_batch;
	uint32_t evict_run;                /* pages one write-protect + punch may span */
	uint32_t free_low_pct;             /* evict ahead below this much free budget */
	uint32_t free_high_pct;            /* ... until this much is free */
	uint32_t prefetch_pages;           /* largest prefetch window; 0 = off */
	uint32_t fault_batch;              /* queued stored-page faults fetched with one; 0 = off */
	int policy;                        /* enum fm_policy_kind; "s3fifo" | "fifo" */
	/* [register] */
	char register_path[FM_SOCK_PATH_MAX];
	uint32_t register_mode;
	uid_t allowed_uids[FM_MAX_UIDS];   /* empty: root and the daemon's own uid */
	uint32_t allowed_uids_n;
	uint32_t max_region_mib;           /* larger registrations are refused */
	uint32_t max_regions_per_uid;      /* quota: live regions per uid */
	uint64_t max_mib_per_uid;          /* quota: registered MiB per uid */
	uint32_t reg_max_conns;            /* registration connections held at once */
	uint32_t reg_max_conns_per_uid;
	/* [control] */
	char control_path[FM_SOCK_PATH_MAX];
	uint32_t control_mode;
	char metrics_listen[64];           /* "127.0.0.1:9464", "" = off */
	uint32_t ctl_max_conns;            /* control connections held at once */
	uint32_t metrics_max_conns;        /* metrics HTTP connections held at once */
	uint32_t metrics_timeout_ms;       /* a request not complete by then is cut off */
	/* [store] */
	char store_backend[16];            /* "local" | "memcached" */
	/* [store.local] */
	uint64_t local_max_mib;            /* RAM tier, all shards */
	int local_compression;             /* enum fm_local_compression */
	char local_path[FM_LOCAL_PATH_MAX]; /* disk tier directory; "" = RAM only */
	uint64_t local_disk_mib;           /* disk tier cap, all shards; 0 = the file system's */
	uint32_t local_segment_mib;        /* disk tier segment size (new files) */
	/* [store.memcached] (src/kv/memcached.c; documented in configs/memcached.toml):
	 * the backend's own parameters, as kv_open takes them */
	struct kv_mc_params mc;
	/* [cluster] (src/cluster; off while hosts is "") */
	char cluster_hosts[FM_ZK_HOSTS_MAX]; /* "host:port,..." */
	uint32_t cluster_orphan_grace_s;   /* a lease gone this long: the node's keys are collected */
	uint32_t cluster_session_timeout_ms;
	char cluster_root[128];            /* znode path of this cluster */
	uint32_t cluster_queue_max;        /* writes held while ZooKeeper is unreachable */
};

/* Fill every field with its documented default. */
void fm_config_defaults(struct fm_config *c);

/* Parse a file (or a string; `name` is used in messages) over the current
 * values, then validate. On error returns -EINVAL (or -errno for I/O) and
 * writes "file:line: key: reason" into err. The struct may be partly
 * updated on error; callers discard it. */
int fm_config_load_file(struct fm_config *c, const char *path, char *err, size_t errlen);
int fm_config_load_string(struct fm_config *c, const char *name, const char *text, char *err,
			  size_t errlen);
/* The same on len bytes that need not be NUL-terminated (a NUL byte is an
 * error, as in a file): for text that did not come from a file. */
int fm_config_load_buffer(struct fm_config *c, const char *name, const char *text, size_t len,
			  char *err, size_t errlen);

/* Set one key from the command line: "shards.count", "32" (TOML value
 * syntax: strings quoted or bare, arrays in brackets). Same errors, with
 * "--set" as the file name. Does not validate cross-key rules. */
int fm_config_set(struct fm_config *c, const char *dotted_key, const char *value, char *err,
		  size_t errlen);

/* Cross-key rules (shard cpus count, power-of-two ring, budget >= shards).
 * 0 or -EINVAL with a message. */
int fm_config_validate(const struct fm_config *c, char *err, size_t errlen);

/* The loopback address control.metrics_listen names. 0, -ENOENT (empty:
 * metrics over HTTP are off), -EINVAL (not HOST:PORT) or -EADDRNOTAVAIL
 * (not a loopback address). */
struct sockaddr_storage;
int fm_config_metrics_addr(const struct fm_config *c, struct sockaddr_storage *ss,
			   socklen_t *len);

/* daemon.node_id as a number, or CLUSTER_NODE_AUTO (-1) for "auto" (only
 * valid with cluster.hosts set; fm_config_validate checks both). */
int32_t fm_config_node_id(const struct fm_config *c);

/* One line saying where the dispatcher and the shards run and whether
 * "auto" chose it, e.g. "auto on CPUs 0-1: dispatcher unpinned, 2 shards
 * unpinned" (log, --check, stats). */
void fm_config_layout_text(const struct fm_config *c, char *buf, size_t len);

/* Write the effective config as TOML that fm_config_load_file accepts. */
void fm_config_dump(const struct fm_config *c, FILE *out);

/* Print every key with its type, range, default and meaning (for --help). */
void fm_config_help(FILE *out);

/* The i-th key ("table.name"), NULL past the last: for walking every key. */
const char *fm_config_key(size_t i);
/* One key's value in TOML syntax, as fm_config_dump prints it, cut to len.
 * 0, -ENOENT (no such key) or -errno. */
int fm_config_format(const struct fm_config *c, const char *key, char *buf, size_t len);
/* Copy one key's value from src to dst. 0 or -ENOENT. */
int fm_config_copy_key(struct fm_config *dst, const struct fm_config *src, const char *key);

#endif
