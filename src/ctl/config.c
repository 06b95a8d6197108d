#include "ctl/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "base/log.h"
#include "cluster/cluster.h"
#include "ctl/layout.h"
#include "ctl/toml.h"

enum opt_type {
	OPT_INT,          /* int64 range checked, stored in a 4- or 8-byte field */
	OPT_UINT,
	OPT_BOOL,
	OPT_MODE,         /* a uint printed in octal */
	OPT_STR,          /* char[]: length min..max, optionally one of `choices` */
	OPT_ENUM,         /* a name from `choices`, stored as its int index */
	OPT_INT_ARRAY,    /* items range checked like OPT_INT, count in a uint32_t */
	OPT_UINT_ARRAY,
};

/* An enum's names, through a function so that log levels use log.c's table. */
struct choices {
	const char *(*name)(int v);   /* v in 0..nr-1 */
	int nr;
};

/* One config key. Defaults, parsing, --set, validation, dump and help all
 * read this row: a new key is one row plus one struct field. */
struct opt {
	const char *key;              /* "table.name" */
	enum opt_type type;
	size_t off, size;             /* the field; arrays: one item */
	size_t n_off, cap;            /* arrays: the uint32_t count field, capacity */
	int64_t min, max;             /* numbers and array items; strings: length */
	const char *def;              /* TOML value syntax, bare strings allowed */
	const struct choices *choices;
	bool int_ok;                  /* OPT_STR: an integer is taken as its decimal text */
	bool auto_ok;                 /* numbers, arrays: "auto" sets the bool at auto_off */
	size_t auto_off;
	const char *help;             /* what it does and its unit */
};

#define MEMBER(f) (((struct fm_config *)0)->f)
#define FIELD(f) .off = offsetof(struct fm_config, f), .size = sizeof(MEMBER(f))
#define STRING(f) FIELD(f), .min = 1, .max = sizeof(MEMBER(f)) - 1
#define AUTO(f) .auto_ok = true, .auto_off = offsetof(struct fm_config, f)
#define ARRAY(f, n)                                                                        \
	.off = offsetof(struct fm_config, f), .size = sizeof(MEMBER(f)[0]),                \
	.n_off = offsetof(struct fm_config, n), .cap = FM_ARRAY_SIZE(MEMBER(f))

_Static_assert(sizeof(uid_t) == sizeof(uint32_t), "allowed_uids are stored as 4-byte uints");

static const char *const policy_names[] = { [FM_POLICY_FIFO] = "fifo",
					     [FM_POLICY_S3FIFO] = "s3fifo" };
/* A new store backend is one more name here. */
static const char *const backend_names[] = { "local", "memcached" };
static const char *const mc_distribution_names[] = { [FM_MC_KETAMA] = "ketama",
						     [FM_MC_MODULA] = "modula" };

static const char *const local_compression_names[] = { [FM_LOCAL_LZ4] = "lz4",
							 [FM_LOCAL_ZSTD] = "zstd",
							 [FM_LOCAL_NONE] = "none" };

static const char *local_compression_name_of(int v)
{
	return local_compression_names[v];
}

static const char *policy_name_of(int v)
{
	return policy_names[v];
}

static const char *backend_name_of(int v)
{
	return backend_names[v];
}

static const char *mc_distribution_name_of(int v)
{
	return mc_distribution_names[v];
}

static const struct choices log_choices = { fm_log_level_name, FM_LOG_LEVEL_NR };
static const struct choices policy_choices = { policy_name_of, FM_ARRAY_SIZE(policy_names) };
static const struct choices backend_choices = { backend_name_of, FM_ARRAY_SIZE(backend_names) };
static const struct choices local_compression_choices = {
	local_compression_name_of, FM_ARRAY_SIZE(local_compression_names)
};
static const struct choices mc_distribution_choices = { mc_distribution_name_of,
							 FM_ARRAY_SIZE(mc_distribution_names) };

/* Rows of one table must be adjacent: fm_config_dump prints one header per
 * run of rows, and a second [header] for the same table would not load. */
static const struct opt opts[] = {
	{ .key = "daemon.log_level", .type = OPT_ENUM, FIELD(log_level), .def = "info",
	  .choices = &log_choices, .help = "log verbosity" },
	{ .key = "daemon.node_id", .type = OPT_STR, STRING(node_id), .def = "1", .int_ok = true,
	  .help = "this daemon's id 0..65535, the high bits of its region ids; \"auto\": "
		  "ZooKeeper allocates it (needs cluster.hosts)" },
	{ .key = "daemon.state_dir", .type = OPT_STR, FIELD(state_dir), .min = 0,
	  .max = sizeof(MEMBER(state_dir)) - 1, .def = "",
	  .help = "directory of the re-adoption state; \"\" = $RUNTIME_DIRECTORY/state or "
		  "/run/fluidmem/state" },
	{ .key = "daemon.readopt_grace_s", .type = OPT_UINT, FIELD(readopt_grace_s), .min = 1,
	  .max = 86400, .def = "60",
	  .help = "seconds a region of a previous run waits to be re-adopted before it is an orphan" },

	{ .key = "dispatcher.cpu", .type = OPT_INT, FIELD(dispatcher_cpu), .min = -1,
	  .max = 1023, .def = "-1", AUTO(dispatcher_cpu_auto),
	  .help = "CPU of the fault dispatcher thread, -1 = unpinned, \"auto\" = by the machine's CPUs" },
	{ .key = "dispatcher.batch", .type = OPT_UINT, FIELD(dispatcher_batch), .min = 1,
	  .max = 1024, .def = "64", .help = "fault events read per wake-up" },
	{ .key = "dispatcher.spin_us", .type = OPT_UINT, FIELD(dispatcher_spin_us), .min = 0,
	  .max = 100000, .def = "50", .help = "microseconds the idle dispatcher polls before sleeping" },

	{ .key = "shards.count", .type = OPT_UINT, FIELD(shard_count), .min = 1,
	  .max = FM_MAX_SHARDS, .def = "2", AUTO(shard_count_auto),
	  .help = "shard threads that own pages; \"auto\" = by the machine's CPUs" },
	{ .key = "shards.cpus", .type = OPT_INT_ARRAY, ARRAY(shard_cpus, shard_cpus_n),
	  .min = -1, .max = 1023, .def = "[]", AUTO(shard_cpus_auto),
	  .help = "CPU of each shard (-1 = unpinned); [] = all unpinned, else one per shard; "
		  "\"auto\" = by the machine's CPUs" },
	{ .key = "shards.ring_slots", .type = OPT_UINT, FIELD(ring_slots), .min = 64,
	  .max = 65536, .def = "1024", .help = "messages per shard ring, a power of two" },
	{ .key = "shards.spin_us", .type = OPT_UINT, FIELD(spin_us), .min = 0, .max = 100000,
	  .def = "50",
	  .help = "microseconds an idle shard polls before it sleeps, while faults keep coming" },

	{ .key = "memory.resident_pages", .type = OPT_UINT, FIELD(resident_pages), .min = 1,
	  .max = 1ll << 40, .def = "16384",
	  .help = "4 KiB pages kept resident across all shards, at least shards.count" },
	{ .key = "memory.evict_batch", .type = OPT_UINT, FIELD(evict_batch), .min = 1,
	  .max = 512, .def = "32", .help = "pages evicted per eviction round" },
	{ .key = "memory.evict_run", .type = OPT_UINT, FIELD(evict_run), .min = 1,
	  .max = 512, .def = "64",
	  .help = "pages one write-protect and punch may span around a victim; 1 = single pages" },
	{ .key = "memory.free_low_pct", .type = OPT_UINT, FIELD(free_low_pct), .min = 0,
	  .max = 50, .def = "2",
	  .help = "evict ahead of faults once fewer than this % of a shard's budget is free; 0 = off" },
	{ .key = "memory.free_high_pct", .type = OPT_UINT, FIELD(free_high_pct), .min = 0,
	  .max = 50, .def = "4", .help = "evicting ahead stops once this % of the budget is free" },
	{ .key = "memory.prefetch_pages", .type = OPT_UINT, FIELD(prefetch_pages), .min = 0,
	  .max = 512, .def = "32",
	  .help = "largest window a sequential or strided fault stream prefetches; 0 = off" },
	{ .key = "memory.fault_batch", .type = OPT_UINT, FIELD(fault_batch), .min = 0,
	  .max = 256, .def = "16",
	  .help = "faults on stored pages queued behind one that a shard fetches with it in one "
		  "batched store read; 0 = off" },
	{ .key = "memory.policy", .type = OPT_ENUM, FIELD(policy), .def = "s3fifo",
	  .choices = &policy_choices, .help = "page replacement policy" },

	{ .key = "register.path", .type = OPT_STR, STRING(register_path),
	  .def = "/run/fluidmem/register.sock", .help = "Unix socket clients register on" },
	{ .key = "register.mode", .type = OPT_MODE, FIELD(register_mode), .min = 0,
	  .max = 0777, .def = "0o660", .help = "file mode of the register socket" },
	{ .key = "register.allowed_uids", .type = OPT_UINT_ARRAY,
	  ARRAY(allowed_uids, allowed_uids_n), .min = 0, .max = UINT32_MAX - 1, .def = "[]",
	  .help = "uids that may register; [] = root and the daemon's own uid" },
	{ .key = "register.max_region_mib", .type = OPT_UINT, FIELD(max_region_mib), .min = 1,
	  .max = 1 << 26, .def = "1048576",
	  .help = "largest region a client may register, MiB (page state costs 10 B per touched 4 KiB)" },
	{ .key = "register.max_regions_per_uid", .type = OPT_UINT, FIELD(max_regions_per_uid),
	  .min = 1, .max = 4095, .def = "1024",
	  .help = "regions one uid may have registered at once (the daemon has 4095 slots)" },
	{ .key = "register.max_mib_per_uid", .type = OPT_UINT, FIELD(max_mib_per_uid), .min = 1,
	  .max = 1ll << 32, .def = "4194304",
	  .help = "MiB one uid may have registered at once, over all its regions" },
	{ .key = "register.max_connections", .type = OPT_UINT, FIELD(reg_max_conns), .min = 1,
	  .max = 65536, .def = "1024",
	  .help = "registration connections held at once; more are answered and closed" },
	{ .key = "register.max_connections_per_uid", .type = OPT_UINT,
	  FIELD(reg_max_conns_per_uid), .min = 1, .max = 65536, .def = "256",
	  .help = "registration connections one uid may hold at once" },

	{ .key = "control.path", .type = OPT_STR, STRING(control_path),
	  .def = "/run/fluidmem/control.sock", .help = "Unix socket of fluidmemctl" },
	{ .key = "control.mode", .type = OPT_MODE, FIELD(control_mode), .min = 0, .max = 0777,
	  .def = "0o600", .help = "file mode of the control socket" },
	{ .key = "control.metrics_listen", .type = OPT_STR, FIELD(metrics_listen), .min = 0,
	  .max = sizeof(MEMBER(metrics_listen)) - 1, .def = "",
	  .help = "loopback HOST:PORT serving Prometheus metrics over HTTP; empty = off" },
	{ .key = "control.max_connections", .type = OPT_UINT, FIELD(ctl_max_conns), .min = 1,
	  .max = 4096, .def = "64", .help = "control connections held at once; more are refused" },
	{ .key = "control.metrics_max_connections", .type = OPT_UINT, FIELD(metrics_max_conns),
	  .min = 1, .max = 4096, .def = "16",
	  .help = "metrics HTTP connections held at once; the oldest idle one makes room" },
	{ .key = "control.metrics_timeout_ms", .type = OPT_UINT, FIELD(metrics_timeout_ms),
	  .min = 10, .max = 600000, .def = "5000",
	  .help = "a metrics HTTP connection that has not sent its request by then is closed" },

	{ .key = "store.backend", .type = OPT_STR, STRING(store_backend), .def = "local",
	  .choices = &backend_choices, .help = "where evicted pages are kept" },
	{ .key = "store.local.max_mib", .type = OPT_UINT, FIELD(local_max_mib), .min = 1,
	  .max = 1 << 20, .def = "4096", .help = "MiB of evicted pages the local store holds in total (split over shards)" },
	{ .key = "store.local.compression", .type = OPT_ENUM, FIELD(local_compression),
	  .def = "lz4", .choices = &local_compression_choices,
	  .help = "how the local store compresses pages: lz4, zstd or none" },
	{ .key = "store.local.path", .type = OPT_STR, FIELD(local_path), .min = 0,
	  .max = sizeof(MEMBER(local_path)) - 1, .def = "",
	  .help = "directory of the durable disk tier (one file per shard); empty = RAM only" },
	{ .key = "store.local.disk_mib", .type = OPT_UINT, FIELD(local_disk_mib), .min = 0,
	  .max = 1ll << 30, .def = "0",
	  .help = "MiB the disk tier's files may take in total (split over shards); 0 = no cap" },
	{ .key = "store.local.segment_mib", .type = OPT_UINT, FIELD(local_segment_mib),
	  .min = 1, .max = 1024, .def = "16",
	  .help = "MiB per disk-tier segment, the unit of compaction (new files only)" },

	{ .key = "store.memcached.servers", .type = OPT_STR, STRING(mc.servers),
	  .def = "127.0.0.1:11211",
	  .help = "comma-separated memcached servers: host:port or /unix/socket/path (at most 32)" },
	{ .key = "store.memcached.distribution", .type = OPT_ENUM, FIELD(mc.distribution),
	  .def = "ketama", .choices = &mc_distribution_choices,
	  .help = "how keys map to servers: ketama (consistent hashing) or modula" },
	{ .key = "store.memcached.replicas", .type = OPT_UINT, FIELD(mc.replicas), .min = 0,
	  .max = 7, .def = "0", .help = "extra copies of each page; must be below the server count" },
	{ .key = "store.memcached.binary_protocol", .type = OPT_BOOL, FIELD(mc.binary),
	  .def = "true", .help = "binary protocol (true) or ASCII (false)" },
	{ .key = "store.memcached.connect_timeout_ms", .type = OPT_UINT,
	  FIELD(mc.connect_timeout_ms), .min = 1, .max = 60000, .def = "500",
	  .help = "milliseconds a connection attempt may take" },
	{ .key = "store.memcached.io_timeout_ms", .type = OPT_UINT, FIELD(mc.io_timeout_ms),
	  .min = 1, .max = 60000, .def = "1000",
	  .help = "milliseconds a request may wait without progress before the server counts as down" },
	{ .key = "store.memcached.batch", .type = OPT_UINT, FIELD(mc.batch), .min = 1, .max = 512,
	  .def = "64", .help = "page writes sent per pipelined flush" },
	{ .key = "store.memcached.retries", .type = OPT_UINT, FIELD(mc.retries), .min = 0,
	  .max = 10, .def = "3",
	  .help = "extra attempts of a read that met an unreachable server, before the page is poisoned" },
	{ .key = "store.memcached.retry_delay_ms", .type = OPT_UINT, FIELD(mc.retry_delay_ms),
	  .min = 1, .max = 10000, .def = "10",
	  .help = "first retry delay and down window of a failed server, doubled each time (capped at 1 s)" },

	{ .key = "cluster.hosts", .type = OPT_STR, FIELD(cluster_hosts), .min = 0,
	  .max = sizeof(MEMBER(cluster_hosts)) - 1, .def = "",
	  .help = "ZooKeeper servers, host:port,host:port; empty = no cluster state (the default)" },
	{ .key = "cluster.orphan_grace_s", .type = OPT_UINT, FIELD(cluster_orphan_grace_s),
	  .min = 1, .max = 7 * 86400, .def = "60",
	  .help = "seconds a node's lease may be gone before its keys and records are collected" },
	{ .key = "cluster.session_timeout_ms", .type = OPT_UINT, FIELD(cluster_session_timeout_ms),
	  .min = 100, .max = 600000, .def = "10000",
	  .help = "ZooKeeper session timeout asked for (the server clamps it to its min..max)" },
	{ .key = "cluster.root", .type = OPT_STR, STRING(cluster_root), .def = "/fluidmem",
	  .help = "znode under which this cluster's state lives" },
	{ .key = "cluster.queue_max", .type = OPT_UINT, FIELD(cluster_queue_max), .min = 1,
	  .max = 1 << 24, .def = "65536",
	  .help = "state changes held while ZooKeeper is unreachable; more are refused and counted" },
};

#define NOPTS FM_ARRAY_SIZE(opts)

static const struct opt *find_opt(const char *key)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (!strcmp(opts[i].key, key))
			return &opts[i];
	return NULL;
}

/* A known table is a strict prefix of some key: "store" and "store.local". */
static bool is_table(const char *path)
{
	size_t n = strlen(path);

	for (size_t i = 0; i < NOPTS; i++)
		if (!strncmp(opts[i].key, path, n) && opts[i].key[n] == '.')
			return true;
	return false;
}

static bool is_signed(enum opt_type t)
{
	return t == OPT_INT || t == OPT_INT_ARRAY;
}

/* Numeric fields are 4 or 8 bytes wide; signedness comes from the row type. */
static int64_t get_num(const void *f, size_t size, bool sign)
{
	uint64_t u64;
	uint32_t u32;

	if (size == sizeof(u64)) {
		memcpy(&u64, f, sizeof(u64));
		return sign || u64 <= INT64_MAX ? (int64_t)u64 : INT64_MAX;
	}
	memcpy(&u32, f, sizeof(u32));
	return sign ? (int64_t)(int32_t)u32 : (int64_t)u32;
}

static void put_num(void *f, size_t size, int64_t v)
{
	uint64_t u64 = (uint64_t)v;
	uint32_t u32 = (uint32_t)v;

	if (size == sizeof(u64))
		memcpy(f, &u64, sizeof(u64));
	else
		memcpy(f, &u32, sizeof(u32));
}

static void fmt_num(const struct opt *o, int64_t v, char buf[static 32])
{
	snprintf(buf, 32, o->type == OPT_MODE && v >= 0 ? "0o%llo" : "%lld", (long long)v);
}

static int check_range(const struct opt *o, int64_t v, char *why, size_t n)
{
	char val[32], lim[32];

	if (v >= o->min && v <= o->max)
		return 0;
	fmt_num(o, v, val);
	fmt_num(o, v < o->min ? o->min : o->max, lim);
	snprintf(why, n, "%s is %s %s", val, v < o->min ? "below the minimum" : "above the maximum",
		 lim);
	return -EINVAL;
}

static int find_choice(const struct choices *ch, const char *s)
{
	for (int i = 0; i < ch->nr; i++)
		if (!strcmp(ch->name(i), s))
			return i;
	return -1;
}

static int bad_choice(const struct choices *ch, const char *s, char *why, size_t n)
{
	char list[128] = "";
	size_t len = 0;

	for (int i = 0; i < ch->nr && len < sizeof(list); i++)
		len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", i ? "|" : "",
					ch->name(i));
	snprintf(why, n, "\"%s\" is not one of %s", s, list);
	return -EINVAL;
}

static int check_string(const struct opt *o, const char *s, size_t len, char *why, size_t n)
{
	if (len < (size_t)o->min || len > (size_t)o->max) {
		snprintf(why, n, "is %zu bytes long, the %s is %lld", len,
			 len < (size_t)o->min ? "minimum" : "maximum",
			 (long long)(len < (size_t)o->min ? o->min : o->max));
		return -EINVAL;
	}
	if (o->choices && find_choice(o->choices, s) < 0)
		return bad_choice(o->choices, s, why, n);
	return 0;
}

static const char *expected(enum opt_type t)
{
	switch (t) {
	case OPT_INT:
	case OPT_UINT:
	case OPT_MODE:
		return "an integer";
	case OPT_BOOL:
		return "a boolean";
	case OPT_STR:
	case OPT_ENUM:
		return "a string";
	case OPT_INT_ARRAY:
	case OPT_UINT_ARRAY:
		return "an array of integers";
	}
	return "?";
}

static int wrong_type(enum opt_type want, enum toml_type got, char *why, size_t n)
{
	snprintf(why, n, "expected %s, got %s %s", expected(want),
		 got == TOML_INT || got == TOML_ARRAY ? "an" : "a", toml_type_name(got));
	return -EINVAL;
}

static int apply_array(struct fm_config *c, const struct opt *o, const struct toml_value *v,
		       char *why, size_t n)
{
	char *f = (char *)c + o->off, inner[160];

	if (v->type != TOML_ARRAY)
		return wrong_type(o->type, v->type, why, n);
	if (v->a.n > o->cap) {
		snprintf(why, n, "has %zu items, the maximum is %zu", v->a.n, o->cap);
		return -EINVAL;
	}
	/* Check every item before storing any: a failed --set changes nothing. */
	for (size_t i = 0; i < v->a.n; i++) {
		const struct toml_value *it = &v->a.items[i];

		if (it->type != TOML_INT)
			wrong_type(OPT_INT, it->type, inner, sizeof(inner));
		else if (!check_range(o, it->i, inner, sizeof(inner)))
			continue;
		snprintf(why, n, "item %zu: %s", i + 1, inner);
		return -EINVAL;
	}
	memset(f, 0, o->size * o->cap);
	for (size_t i = 0; i < v->a.n; i++)
		put_num(f + i * o->size, o->size, v->a.items[i].i);
	put_num((char *)c + o->n_off, sizeof(uint32_t), (int64_t)v->a.n);
	return 0;
}

static int apply_typed(struct fm_config *c, const struct opt *o, const struct toml_value *v,
		       char *why, size_t n);

/* Type- and range-check one value, then store it. */
static int apply(struct fm_config *c, const struct opt *o, const struct toml_value *v, char *why,
		 size_t n)
{
	int rc;

	if (!o->auto_ok)
		return apply_typed(c, o, v, why, n);
	bool *is_auto = (bool *)((char *)c + o->auto_off);

	if (v->type == TOML_STRING) {
		if (v->s.len == 4 && !memcmp(v->s.ptr, "auto", 4)) {
			*is_auto = true;
			return 0;
		}
		snprintf(why, n, "expected %s or \"auto\", got \"%.*s\"", expected(o->type),
			 (int)FM_MIN(v->s.len, (size_t)32), v->s.ptr);
		return -EINVAL;
	}
	rc = apply_typed(c, o, v, why, n);
	if (!rc)
		*is_auto = false;
	return rc;
}

static int apply_typed(struct fm_config *c, const struct opt *o, const struct toml_value *v,
		       char *why, size_t n)
{
	char *f = (char *)c + o->off;
	int rc, idx;

	switch (o->type) {
	case OPT_INT:
	case OPT_UINT:
	case OPT_MODE:
		if (v->type != TOML_INT)
			return wrong_type(o->type, v->type, why, n);
		rc = check_range(o, v->i, why, n);
		if (!rc)
			put_num(f, o->size, v->i);
		return rc;
	case OPT_BOOL:
		if (v->type != TOML_BOOL)
			return wrong_type(o->type, v->type, why, n);
		*(bool *)f = v->b;
		return 0;
	case OPT_STR:
		if (v->type == TOML_INT && o->int_ok) {
			char num[24];
			struct toml_value sv = { .type = TOML_STRING, .line = v->line };

			snprintf(num, sizeof(num), "%lld", (long long)v->i);
			sv.s.ptr = num;
			sv.s.len = strlen(num);
			return apply_typed(c, o, &sv, why, n);
		}
		if (v->type != TOML_STRING)
			return wrong_type(o->type, v->type, why, n);
		rc = check_string(o, v->s.ptr, v->s.len, why, n);
		if (!rc) {
			memset(f, 0, o->size);
			memcpy(f, v->s.ptr, v->s.len);
		}
		return rc;
	case OPT_ENUM:
		if (v->type != TOML_STRING)
			return wrong_type(o->type, v->type, why, n);
		idx = find_choice(o->choices, v->s.ptr);
		if (idx < 0)
			return bad_choice(o->choices, v->s.ptr, why, n);
		put_num(f, o->size, idx);
		return 0;
	case OPT_INT_ARRAY:
	case OPT_UINT_ARRAY:
		return apply_array(c, o, v, why, n);
	}
	return -EINVAL;
}

/* The same checks as apply, on a stored value (a struct may be built in code). */
static int check_stored(const struct fm_config *c, const struct opt *o, char *why, size_t n)
{
	const char *f = (const char *)c + o->off;
	int64_t v, count;
	char inner[160];

	switch (o->type) {
	case OPT_INT:
	case OPT_UINT:
	case OPT_MODE:
		return check_range(o, get_num(f, o->size, is_signed(o->type)), why, n);
	case OPT_BOOL:
		return 0;
	case OPT_STR:
		if (!memchr(f, '\0', o->size)) {
			snprintf(why, n, "is not NUL-terminated");
			return -EINVAL;
		}
		return check_string(o, f, strlen(f), why, n);
	case OPT_ENUM:
		v = get_num(f, o->size, true);
		if (v >= 0 && v < o->choices->nr)
			return 0;
		snprintf(why, n, "%lld is not a valid value", (long long)v);
		return -EINVAL;
	case OPT_INT_ARRAY:
	case OPT_UINT_ARRAY:
		count = get_num((const char *)c + o->n_off, sizeof(uint32_t), false);
		if ((uint64_t)count > o->cap) {
			snprintf(why, n, "has %lld items, the maximum is %zu", (long long)count,
				 o->cap);
			return -EINVAL;
		}
		for (int64_t i = 0; i < count; i++) {
			v = get_num(f + i * (int64_t)o->size, o->size, is_signed(o->type));
			if (check_range(o, v, inner, sizeof(inner))) {
				snprintf(why, n, "item %lld: %s", (long long)i + 1, inner);
				return -EINVAL;
			}
		}
		return 0;
	}
	return -EINVAL;
}

/* Rules beyond one key's range. Returns the key at fault, or NULL. */
/* Servers in a comma-separated list, as kv/memcached will parse it. */
static unsigned count_servers(const char *list)
{
	unsigned count = 0;
	bool item = false;

	for (const char *p = list;; p++) {
		if (*p == ',' || !*p) {
			count += item;
			item = false;
			if (!*p)
				return count;
		} else if (*p != ' ' && *p != '\t') {
			item = true;
		}
	}
}

/* Rules between keys that used to pass --check and then fail at start (or
 * make the daemon useless): each names the key to fix. */
static const char *check_cross_keys(const struct fm_config *c, char *why, size_t n)
{
	if (!strcmp(c->store_backend, "memcached")) {
		unsigned nsv = count_servers(c->mc.servers);

		if (nsv > 32) {
			snprintf(why, n, "names %u servers, at most 32 are served", nsv);
			return "store.memcached.servers";
		}
		if (c->mc.replicas >= nsv) {
			snprintf(why, n, "%u extra copies need at least %u servers, "
				 "store.memcached.servers names %u",
				 c->mc.replicas, c->mc.replicas + 1, nsv);
			return "store.memcached.replicas";
		}
	}
	if (!strcmp(c->store_backend, "local") && c->local_path[0] && c->local_disk_mib &&
	    c->local_disk_mib / c->shard_count < 2ull * c->local_segment_mib) {
		snprintf(why, n, "%llu MiB over %u shards holds fewer than 2 segments of "
			 "store.local.segment_mib = %u MiB per shard",
			 (unsigned long long)c->local_disk_mib, c->shard_count, c->local_segment_mib);
		return "store.local.disk_mib";
	}
	if (!strcmp(c->register_path, c->control_path)) {
		snprintf(why, n, "\"%s\" is register.path too: the two sockets need their own paths",
			 c->control_path);
		return "control.path";
	}
	return NULL;
}

static const char *check_rules(const struct fm_config *c, char *why, size_t n)
{
	const char *key = check_cross_keys(c, why, n);

	if (key)
		return key;
	if (c->shard_cpus_n && c->shard_cpus_n != c->shard_count) {
		snprintf(why, n, "has %u items but shards.count is %u ([] leaves all unpinned)",
			 c->shard_cpus_n, c->shard_count);
		return "shards.cpus";
	}
	/* The rings index slots with a mask. */
	if (c->ring_slots & (c->ring_slots - 1)) {
		snprintf(why, n, "%u is not a power of two", c->ring_slots);
		return "shards.ring_slots";
	}
	/* Each shard gets a share of the budget and must hold at least one page. */
	if (c->resident_pages < c->shard_count) {
		snprintf(why, n, "%llu is below shards.count (%u): every shard needs a page",
			 (unsigned long long)c->resident_pages, c->shard_count);
		return "memory.resident_pages";
	}
	{
		int32_t id;

		if (cluster_parse_node_id(c->node_id, &id) < 0) {
			snprintf(why, n, "\"%s\" is neither \"auto\" nor a number 0..65535",
				 c->node_id);
			return "daemon.node_id";
		}
		/* Only ZooKeeper can hand out an id. */
		if (id == CLUSTER_NODE_AUTO && !c->cluster_hosts[0]) {
			snprintf(why, n, "\"auto\" needs the cluster: set cluster.hosts (ZooKeeper) "
				 "or a number 0..65535");
			return "daemon.node_id";
		}
	}
	if (cluster_check_root(c->cluster_root) < 0) {
		snprintf(why, n, "\"%s\" is not an absolute znode path (\"/fluidmem\", no trailing '/')",
			 c->cluster_root);
		return "cluster.root";
	}
	if (c->cluster_hosts[0] && cluster_check_hosts(c->cluster_hosts) < 0) {
		snprintf(why, n, "\"%.64s\" is not a comma-separated list of host:port",
			 c->cluster_hosts);
		return "cluster.hosts";
	}
	if (c->metrics_listen[0]) {
		struct sockaddr_storage ss;
		socklen_t len;
		int rc = fm_config_metrics_addr(c, &ss, &len);

		if (rc == -EADDRNOTAVAIL) {
			snprintf(why, n, "\"%s\" is not a loopback address (127.0.0.0/8 or [::1])",
				 c->metrics_listen);
			return "control.metrics_listen";
		}
		if (rc < 0) {
			snprintf(why, n, "\"%s\" is not HOST:PORT (e.g. \"127.0.0.1:9464\")",
				 c->metrics_listen);
			return "control.metrics_listen";
		}
	}
	return NULL;
}

int fm_config_metrics_addr(const struct fm_config *c, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[64];
	const char *colon = strrchr(c->metrics_listen, ':');
	char *end;
	unsigned long port;

	if (!c->metrics_listen[0])
		return -ENOENT;
	if (!colon || colon == c->metrics_listen || (size_t)(colon - c->metrics_listen) >= sizeof(host))
		return -EINVAL;
	memcpy(host, c->metrics_listen, (size_t)(colon - c->metrics_listen));
	host[colon - c->metrics_listen] = '\0';
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || *end || colon[1] == '\0' || port == 0 || port > 65535)
		return -EINVAL;
	memset(ss, 0, sizeof(*ss));
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

		host[strlen(host) - 1] = '\0';
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
			return -EINVAL;
		if (!IN6_IS_ADDR_LOOPBACK(&a->sin6_addr))
			return -EADDRNOTAVAIL;
		*len = sizeof(*a);
		return 0;
	}
	struct sockaddr_in *a = (struct sockaddr_in *)ss;

	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)port);
	if (strcmp(host, "localhost") == 0)
		strcpy(host, "127.0.0.1");
	if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
		return -EINVAL;
	if ((ntohl(a->sin_addr.s_addr) >> 24) != 127)
		return -EADDRNOTAVAIL;
	*len = sizeof(*a);
	return 0;
}

/* 0, or -EINVAL with the key at fault in *key and the reason in why. */
static int validate(const struct fm_config *c, const char **key, char *why, size_t n)
{
	for (size_t i = 0; i < NOPTS; i++) {
		if (check_stored(c, &opts[i], why, n)) {
			*key = opts[i].key;
			return -EINVAL;
		}
	}
	*key = check_rules(c, why, n);
	return *key ? -EINVAL : 0;
}

/* Parser context: the struct being filled and where each key was set. */
struct load {
	struct fm_config *c;
	int line[NOPTS];   /* 0 = not set by this input */
};

static int on_table(void *ctx, const char *path, int line, char *why, size_t n)
{
	if (is_table(path))
		return 0;
	snprintf(why, n, "unknown table");
	return -EINVAL;
}

static const char *not_a_key(const char *path)
{
	return is_table(path) ? "is a table, not a key" : "unknown key";
}

/* Shards of a disk tier already in `dir` (its files are shard-<n>.fmkv):
 * an "auto" count must not change under them, or pages stored by one shard
 * would be looked for in another's file. 0: none. */
static unsigned disk_tier_shards(const char *dir)
{
	char path[FM_LOCAL_PATH_MAX + 32];

	for (unsigned u = FM_MAX_SHARDS; dir[0] && u > 0; u--) {
		snprintf(path, sizeof(path), "%s/shard-%u.fmkv", dir, u - 1);
		if (access(path, F_OK) == 0)
			return u;
	}
	return 0;
}

/* The CPUs this process may use, read once: a config is parsed key by key
 * (and fuzzed), and the layout keys cannot change at run time anyway.
 * *quota: the cgroup's cpu.max in whole CPUs when it allows fewer than
 * that (0: none); the plan then uses only the first *quota of them. */
static unsigned usable_cpus(int *cpus, unsigned *quota)
{
	static int cached[FM_LAYOUT_CPUS_MAX];
	static unsigned ncached, qcached;

	if (!ncached) {
		ncached = fm_layout_cpus(cached, FM_LAYOUT_CPUS_MAX);
		qcached = fm_layout_cpu_quota();
		if (qcached >= ncached)
			qcached = 0;
	}
	memcpy(cpus, cached, ncached * sizeof(*cpus));
	*quota = qcached;
	return ncached;
}

/* Plan the "auto" parts of the layout on the CPUs this process may use
 * (ctl/layout.h). Run after each key that feeds it, so a later key or
 * --set sees the plan and the cross-key rules check planned values. */
static void resolve_layout(struct fm_config *c)
{
	int cpus[FM_LAYOUT_CPUS_MAX];
	struct fm_layout l;
	unsigned ncpus, files, quota;
	int count = (int)c->shard_count;

	if (!c->dispatcher_cpu_auto && !c->shard_count_auto && !c->shard_cpus_auto) {
		c->layout_cpus[0] = '\0';
		return;
	}
	ncpus = usable_cpus(cpus, &quota);
	fm_layout_format_cpus(cpus, ncpus, c->layout_cpus, sizeof(c->layout_cpus));
	if (quota) {
		/* A quota is CPU time, not CPUs: a slice allowed 1 CPU's worth
		 * on 16 must not busy-poll on 16. Plan as on `quota` CPUs. */
		size_t used = strlen(c->layout_cpus);

		snprintf(c->layout_cpus + used, sizeof(c->layout_cpus) - used,
			 " (cgroup cpu.max: %u CPU%s)", quota, quota == 1 ? "" : "s");
		ncpus = quota;
	}
	if (c->shard_count_auto) {
		count = FM_LAYOUT_AUTO;
		if (!c->shard_cpus_auto && c->shard_cpus_n)
			count = (int)c->shard_cpus_n;   /* one shard per CPU listed */
		if (!strcmp(c->store_backend, "local") && (files = disk_tier_shards(c->local_path)))
			count = (int)files;
	}
	fm_layout_plan(cpus, ncpus, c->dispatcher_cpu_auto ? FM_LAYOUT_AUTO : c->dispatcher_cpu,
		       count, &l);
	if (c->dispatcher_cpu_auto)
		c->dispatcher_cpu = l.dispatcher_cpu;
	if (c->shard_count_auto)
		c->shard_count = l.shard_count;
	if (c->shard_cpus_auto) {
		_Static_assert(sizeof(l.shard_cpus) == sizeof(c->shard_cpus), "FM_MAX_SHARDS");
		memcpy(c->shard_cpus, l.shard_cpus, sizeof(c->shard_cpus));
		c->shard_cpus_n = l.shards_pinned ? c->shard_count : 0;
	}
}

static bool feeds_layout(const struct opt *o)
{
	return o->auto_ok || o->off == offsetof(struct fm_config, local_path) ||
	       o->off == offsetof(struct fm_config, store_backend);
}

void fm_config_layout_text(const struct fm_config *c, char *buf, size_t len)
{
	char shards[160] = "";
	size_t used = 0;
	bool any_auto = c->dispatcher_cpu_auto || c->shard_count_auto || c->shard_cpus_auto;

	if (!c->shard_cpus_n)
		snprintf(shards, sizeof(shards), "unpinned");
	for (uint32_t i = 0; i < c->shard_cpus_n && used < sizeof(shards); i++) {
		int w = snprintf(shards + used, sizeof(shards) - used, "%s%d", i ? "," : "on CPUs ",
				 c->shard_cpus[i]);
		if (w < 0)
			break;
		used += (size_t)w;
	}
	char disp[32];

	if (c->dispatcher_cpu < 0)
		snprintf(disp, sizeof(disp), "unpinned");
	else
		snprintf(disp, sizeof(disp), "on CPU %d", c->dispatcher_cpu);
	snprintf(buf, len, "%s%s: dispatcher %s, %u shard%s %s", any_auto ? "auto on CPUs " : "fixed",
		 any_auto ? c->layout_cpus : "", disp, c->shard_count, c->shard_count == 1 ? "" : "s",
		 shards);
}

static int on_value(void *ctx, const char *path, const struct toml_value *v, char *why, size_t n)
{
	struct load *l = ctx;
	const struct opt *o = find_opt(path);
	int rc;

	if (!o) {
		snprintf(why, n, "%s", not_a_key(path));
		return -EINVAL;
	}
	rc = apply(l->c, o, v, why, n);
	if (!rc) {
		l->line[o - opts] = v->line;
		if (feeds_layout(o))
			resolve_layout(l->c);
	}
	return rc;
}

static const struct toml_handler handler = { .table = on_table, .value = on_value };

static int load_text(struct fm_config *c, const char *name, const char *text, size_t len,
		     char *err, size_t errlen)
{
	struct load l = { .c = c };
	const char *key;
	char why[256];
	int rc, line;

	rc = toml_parse(name, text, len, &handler, &l, err, errlen);
	if (rc)
		return rc;
	rc = validate(c, &key, why, sizeof(why));
	if (!rc)
		return 0;
	line = l.line[find_opt(key) - opts];
	if (line)
		snprintf(err, errlen, "%s:%d: %s: %s", name, line, key, why);
	else
		snprintf(err, errlen, "%s: %s: %s", name, key, why);
	return rc;
}

int fm_config_load_string(struct fm_config *c, const char *name, const char *text, char *err,
			  size_t errlen)
{
	return load_text(c, name, text, strlen(text), err, errlen);
}

int fm_config_load_buffer(struct fm_config *c, const char *name, const char *text, size_t len,
			  char *err, size_t errlen)
{
	return load_text(c, name, text, len, err, errlen);
}

/* A config is a few KiB; anything this big is the wrong file. */
#define CONFIG_FILE_MAX (1u << 20)

int fm_config_load_file(struct fm_config *c, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	size_t len = 0, cap = 0, got;
	char *buf = NULL, *p;
	int rc = 0;

	if (!f) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	do {
		if (len == cap) {
			cap = cap ? 2 * cap : 4096;
			p = cap > CONFIG_FILE_MAX ? NULL : realloc(buf, cap);
			if (!p) {
				rc = cap > CONFIG_FILE_MAX ? -EFBIG : -ENOMEM;
				snprintf(err, errlen, "%s: %s", path,
					 rc == -EFBIG ? "larger than 1 MiB" : strerror(ENOMEM));
				goto out;
			}
			buf = p;
		}
		got = fread(buf + len, 1, cap - len, f);
		len += got;
	} while (got);
	if (ferror(f)) {
		rc = errno ? -errno : -EIO;
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		goto out;
	}
	rc = load_text(c, path, buf, len, err, errlen);
out:
	free(buf);
	fclose(f);
	return rc;
}

/* A bare --set string as a TOML basic string, so it passes the same checks
 * (control characters, UTF-8) as a quoted one. NULL on ENOMEM. */
static char *quote(const char *s)
{
	char *q = malloc(2 * strlen(s) + 3), *o = q;

	if (!q)
		return NULL;
	*o++ = '"';
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			*o++ = '\\';
		*o++ = *s;
	}
	*o++ = '"';
	*o = '\0';
	return q;
}

int fm_config_set(struct fm_config *c, const char *dotted_key, const char *value, char *err,
		  size_t errlen)
{
	const struct opt *o = find_opt(dotted_key);
	struct load l = { .c = c };
	char *quoted = NULL;
	int rc;

	/* Before parsing the value: "unknown key" is the more useful error. */
	if (!o) {
		snprintf(err, errlen, "--set: %s: %s", dotted_key, not_a_key(dotted_key));
		return -EINVAL;
	}
	if (((o->type == OPT_STR || o->type == OPT_ENUM) && value[0] != '"' && value[0] != '\'') ||
	    (o->auto_ok && !strcmp(value, "auto"))) {
		quoted = quote(value);
		if (!quoted) {
			snprintf(err, errlen, "--set: %s: %s", dotted_key, strerror(ENOMEM));
			return -ENOMEM;
		}
		value = quoted;
	}
	rc = toml_parse_value("--set", dotted_key, value, &handler, &l, err, errlen);
	free(quoted);
	return rc;
}

void fm_config_defaults(struct fm_config *c)
{
	char err[256];

	/* Zeroed first so that string tails and padding compare equal. */
	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < NOPTS; i++)
		if (fm_config_set(c, opts[i].key, opts[i].def, err, sizeof(err)))
			FM_ERR("config: bad built-in default: %s", err);   /* test_config fails */
}

int32_t fm_config_node_id(const struct fm_config *c)
{
	int32_t id = 1;

	if (cluster_parse_node_id(c->node_id, &id) < 0)
		return 1;   /* not validated: the default's id */
	return id;
}

int fm_config_validate(const struct fm_config *c, char *err, size_t errlen)
{
	const char *key;
	char why[256];
	int rc = validate(c, &key, why, sizeof(why));

	if (rc)
		snprintf(err, errlen, "%s: %s", key, why);
	return rc;
}

/* A TOML basic string: escape what the parser would reject or misread. */
static void dump_string(const char *s, FILE *out)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(out, "\\%c", ch);
		else if (ch < 0x20 || ch == 0x7f)
			fprintf(out, "\\u%04x", ch);
		else
			fputc(ch, out);
	}
	fputc('"', out);
}

static void dump_value(const struct fm_config *c, const struct opt *o, FILE *out)
{
	const char *f = (const char *)c + o->off;
	char num[32];
	int64_t v, count;

	/* "auto" stays "auto": the plan is the machine's, not the file's. */
	if (o->auto_ok && *(const bool *)((const char *)c + o->auto_off)) {
		fputs("\"auto\"", out);
		return;
	}
	switch (o->type) {
	case OPT_INT:
	case OPT_UINT:
	case OPT_MODE:
		fmt_num(o, get_num(f, o->size, is_signed(o->type)), num);
		fputs(num, out);
		break;
	case OPT_BOOL:
		fputs(*(const bool *)f ? "true" : "false", out);
		break;
	case OPT_STR:
		dump_string(f, out);
		break;
	case OPT_ENUM:
		v = get_num(f, o->size, true);
		dump_string(v >= 0 && v < o->choices->nr ? o->choices->name((int)v) : "?", out);
		break;
	case OPT_INT_ARRAY:
	case OPT_UINT_ARRAY:
		count = get_num((const char *)c + o->n_off, sizeof(uint32_t), false);
		fputc('[', out);
		for (int64_t i = 0; i < count && (uint64_t)i < o->cap; i++) {
			fmt_num(o, get_num(f + i * (int64_t)o->size, o->size, is_signed(o->type)),
				num);
			fprintf(out, "%s%s", i ? ", " : "", num);
		}
		fputc(']', out);
		break;
	}
}

void fm_config_dump(const struct fm_config *c, FILE *out)
{
	const char *table = "";
	size_t tlen = 0;

	for (size_t i = 0; i < NOPTS; i++) {
		const char *key = opts[i].key, *name = strrchr(key, '.') + 1;
		size_t len = (size_t)(name - 1 - key);

		if (len != tlen || strncmp(key, table, len)) {
			fprintf(out, "%s[%.*s]\n", i ? "\n" : "", (int)len, key);
			table = key;
			tlen = len;
		}
		fprintf(out, "%s = ", name);
		dump_value(c, &opts[i], out);
		fputc('\n', out);
	}
}

void fm_config_help(FILE *out)
{
	static const char *const type_names[] = {
		[OPT_INT] = "int", [OPT_UINT] = "uint", [OPT_BOOL] = "bool", [OPT_MODE] = "mode",
		[OPT_STR] = "string", [OPT_ENUM] = "enum", [OPT_INT_ARRAY] = "int array",
		[OPT_UINT_ARRAY] = "uint array",
	};

	for (size_t i = 0; i < NOPTS; i++) {
		const struct opt *o = &opts[i];
		char lo[32], hi[32];

		fprintf(out, "%s (%s", o->key, type_names[o->type]);
		if (o->choices) {
			for (int j = 0; j < o->choices->nr; j++)
				fprintf(out, "%s%s", j ? "|" : " ", o->choices->name(j));
		} else if (o->type != OPT_BOOL) {
			fmt_num(o, o->min, lo);
			fmt_num(o, o->max, hi);
			fprintf(out, o->type == OPT_STR ? " of %s..%s bytes" : " %s..%s", lo, hi);
			if (o->auto_ok)
				fprintf(out, " or \"auto\"");
		}
		fprintf(out, ", default %s)\n    %s\n", o->def, o->help);
	}
}

/* ---- keys one by one, for a reload (ctl/reload.c) ---- */

const char *fm_config_key(size_t i)
{
	return i < NOPTS ? opts[i].key : NULL;
}

int fm_config_format(const struct fm_config *c, const char *key, char *buf, size_t len)
{
	const struct opt *o = find_opt(key);
	FILE *f;

	if (!o || !len)
		return -ENOENT;
	if (!(f = fmemopen(buf, len, "w")))
		return -errno;
	dump_value(c, o, f);
	fclose(f);
	buf[len - 1] = '\0';
	return 0;
}

int fm_config_copy_key(struct fm_config *dst, const struct fm_config *src, const char *key)
{
	const struct opt *o = find_opt(key);

	if (!o)
		return -ENOENT;
	if (o->type == OPT_INT_ARRAY || o->type == OPT_UINT_ARRAY) {
		memcpy((char *)dst + o->off, (const char *)src + o->off, o->size * o->cap);
		memcpy((char *)dst + o->n_off, (const char *)src + o->n_off, sizeof(uint32_t));
	} else {
		memcpy((char *)dst + o->off, (const char *)src + o->off, o->size);
	}
	if (o->auto_ok)
		memcpy((char *)dst + o->auto_off, (const char *)src + o->auto_off, sizeof(bool));
	return 0;
}
