/* ctl/config: defaults, every error class with its file:line:key, --set,
 * dump -> load round trips, the shipped configs/local.toml, and a fuzz test
 * that mutates local.toml and must never crash or fail silently. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "base/log.h"
#include "ctl/config.h"
#include "ctl/toml.h"

static char err[512];

/* configs/local.toml, found from this file's path: tests/unit/test_config.c. */
static const char *local_toml(void)
{
	static char path[4096];
	const char *end = strstr(__FILE__, "tests/unit/test_config.c");

	cr_assert(end, "unexpected __FILE__ %s", __FILE__);
	snprintf(path, sizeof(path), "%.*sconfigs/local.toml", (int)(end - __FILE__), __FILE__);
	return path;
}

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	cr_assert(f, "%s: %s", path, strerror(errno));
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n + 1);
	cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* fm_config_dump into a malloc'd string. */
static char *dump(const struct fm_config *c)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	fm_config_dump(c, f);
	fclose(f);
	return text;
}

static void load_ok(struct fm_config *c, const char *text)
{
	fm_config_defaults(c);
	cr_assert_eq(fm_config_load_string(c, "x.toml", text, err, sizeof(err)), 0,
		     "input:\n%s\nerror: %s", text, err);
}

static void load_fails(const char *text, const char *msg)
{
	struct fm_config c;

	fm_config_defaults(&c);
	memset(err, 'X', sizeof(err));
	cr_assert_eq(fm_config_load_string(&c, "x.toml", text, err, sizeof(err)), -EINVAL,
		     "input:\n%s", text);
	cr_assert_str_eq(err, msg, "input:\n%s\ngot:  %s\nwant: %s", text, err, msg);
}

Test(config, defaults_are_documented_values_and_valid)
{
	struct fm_config c;

	fm_config_defaults(&c);
	cr_assert_eq(c.log_level, FM_LOG_INFO);
	cr_assert_str_eq(c.node_id, "1");
	cr_assert_eq(c.dispatcher_cpu, -1);
	cr_assert_eq(c.dispatcher_batch, 64);
	cr_assert_eq(c.shard_count, 2);
	cr_assert_eq(c.shard_cpus_n, 0);
	cr_assert_eq(c.ring_slots, 1024);
	cr_assert_eq(c.spin_us, 50);
	cr_assert_eq(c.dispatcher_spin_us, 50);
	cr_assert_eq(c.resident_pages, 16384);
	cr_assert_eq(c.evict_batch, 32);
	cr_assert_eq(c.fault_batch, 16);
	cr_assert_eq(c.policy, FM_POLICY_S3FIFO);
	cr_assert_str_eq(c.register_path, "/run/fluidmem/register.sock");
	cr_assert_eq(c.register_mode, 0660);
	cr_assert_eq(c.allowed_uids_n, 0);
	cr_assert_str_eq(c.control_path, "/run/fluidmem/control.sock");
	cr_assert_eq(c.control_mode, 0600);
	cr_assert_str_eq(c.store_backend, "local");
	cr_assert_eq(c.local_max_mib, 4096);
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), 0, "%s", err);
}

Test(config, empty_file_is_all_defaults)
{
	struct fm_config def, c;

	fm_config_defaults(&def);
	load_ok(&c, "");
	cr_assert_eq(memcmp(&def, &c, sizeof(c)), 0);
	load_ok(&c, "# nothing but comments\r\n\r\n[daemon]\n[store.local]\n");
	cr_assert_eq(memcmp(&def, &c, sizeof(c)), 0);
}

Test(config, every_key_type)
{
	struct fm_config c;

	load_ok(&c, "[daemon]\n"
		    "log_level = 'debug'\n"
		    "node_id = 65535\n"
		    "[dispatcher]\n"
		    "cpu = 3\n"
		    "batch = 1_024\n"
		    "[shards]\n"
		    "count = 4\n"
		    "cpus = [-1, 2,\n  3, 1023,]\n"
		    "ring_slots = 0x100\n"
		    "spin_us = 0\n"
		    "[memory]\n"
		    "resident_pages = 1099511627776\n"
		    "evict_batch = 512\n"
		    "policy = \"fifo\"\n"
		    "[register]\n"
		    "path = \"/tmp/r \\\"q\\\".sock\"\n"
		    "mode = 0o640\n"
		    "allowed_uids = [0, 1000, 4294967294]\n"
		    "[control]\n"
		    "path = '/tmp/c.sock'\n"
		    "mode = 0\n"
		    "[store]\n"
		    "backend = \"local\"\n"
		    "[store.local]\n"
		    "max_mib = 1048576\n");
	cr_assert_eq(c.log_level, FM_LOG_DEBUG);
	cr_assert_str_eq(c.node_id, "65535");
	cr_assert_eq(c.dispatcher_cpu, 3);
	cr_assert_eq(c.dispatcher_batch, 1024);
	cr_assert_eq(c.shard_count, 4);
	cr_assert_eq(c.shard_cpus_n, 4);
	cr_assert_eq(c.shard_cpus[0], -1);
	cr_assert_eq(c.shard_cpus[1], 2);
	cr_assert_eq(c.shard_cpus[2], 3);
	cr_assert_eq(c.shard_cpus[3], 1023);
	cr_assert_eq(c.ring_slots, 256);
	cr_assert_eq(c.spin_us, 0);
	cr_assert_eq(c.resident_pages, 1ull << 40);
	cr_assert_eq(c.evict_batch, 512);
	cr_assert_eq(c.policy, FM_POLICY_FIFO);
	cr_assert_str_eq(c.register_path, "/tmp/r \"q\".sock");
	cr_assert_eq(c.register_mode, 0640);
	cr_assert_eq(c.allowed_uids_n, 3);
	cr_assert_eq(c.allowed_uids[0], 0);
	cr_assert_eq(c.allowed_uids[1], 1000);
	cr_assert_eq(c.allowed_uids[2], 4294967294u);
	cr_assert_str_eq(c.control_path, "/tmp/c.sock");
	cr_assert_eq(c.control_mode, 0);
	cr_assert_str_eq(c.store_backend, "local");
	cr_assert_eq(c.local_max_mib, 1u << 20);
}

Test(config, log_level_names_come_from_log_c)
{
	struct fm_config c;

	fm_config_defaults(&c);
	for (int i = 0; i < FM_LOG_LEVEL_NR; i++) {
		cr_assert_eq(fm_config_set(&c, "daemon.log_level", fm_log_level_name(i), err,
					   sizeof(err)),
			     0, "%s", err);
		cr_assert_eq(c.log_level, fm_log_level_parse(fm_log_level_name(i)));
	}
}

Test(config, unknown_keys_and_tables)
{
	load_fails("[daemon]\nnode_id = 2\nverbose = true\n", "x.toml:3: daemon.verbose: unknown key");
	load_fails("count = 2\n", "x.toml:1: count: unknown key");
	load_fails("\n[shard]\ncount = 2\n", "x.toml:2: shard: unknown table");
	load_fails("[store.remote]\n", "x.toml:1: store.remote: unknown table");
	load_fails("[store]\nlocal = 1\n", "x.toml:2: store.local: is a table, not a key");
	load_fails("[shards.count]\n", "x.toml:1: shards.count: unknown table");
}

Test(config, wrong_types)
{
	load_fails("[shards]\ncount = \"2\"\n",
		   "x.toml:2: shards.count: expected an integer or \"auto\", got \"2\"");
	load_fails("[shards]\ncount = true\n",
		   "x.toml:2: shards.count: expected an integer, got a boolean");
	load_fails("[daemon]\nlog_level = 3\n",
		   "x.toml:2: daemon.log_level: expected a string, got an integer");
	load_fails("[register]\npath = [\"/a\"]\n",
		   "x.toml:2: register.path: expected a string, got an array");
	load_fails("[shards]\ncpus = 1\n",
		   "x.toml:2: shards.cpus: expected an array of integers, got an integer");
	load_fails("[shards]\ncpus = [0,\n \"1\"]\n",
		   "x.toml:2: shards.cpus: item 2: expected an integer, got a string");
}

Test(config, out_of_range)
{
	load_fails("[shards]\n\n\n\n\n\ncount = 0\n", "x.toml:7: shards.count: 0 is below the minimum 1");
	load_fails("[shards]\ncount = 65\n", "x.toml:2: shards.count: 65 is above the maximum 64");
	load_fails("[shards]\ncount = -1\n", "x.toml:2: shards.count: -1 is below the minimum 1");
	load_fails("[daemon]\nnode_id = 65536\n",
		   "x.toml:2: daemon.node_id: \"65536\" is neither \"auto\" nor a number 0..65535");
	load_fails("[dispatcher]\ncpu = -2\n", "x.toml:2: dispatcher.cpu: -2 is below the minimum -1");
	load_fails("[shards]\nring_slots = 32\n",
		   "x.toml:2: shards.ring_slots: 32 is below the minimum 64");
	load_fails("[memory]\nresident_pages = 1099511627777\n",
		   "x.toml:2: memory.resident_pages: 1099511627777 is above the maximum 1099511627776");
	load_fails("[memory]\nresident_pages = 9223372036854775807\n",
		   "x.toml:2: memory.resident_pages: 9223372036854775807 is above the maximum 1099511627776");
	load_fails("[shards]\ncount = 4294967297\n",
		   "x.toml:2: shards.count: 4294967297 is above the maximum 64");
	load_fails("[register]\nmode = 0o1000\n",
		   "x.toml:2: register.mode: 0o1000 is above the maximum 0o777");
	load_fails("[control]\nmode = -1\n", "x.toml:2: control.mode: -1 is below the minimum 0o0");
	load_fails("[shards]\ncpus = [0, 1024]\n",
		   "x.toml:2: shards.cpus: item 2: 1024 is above the maximum 1023");
	load_fails("[register]\nallowed_uids = [-1]\n",
		   "x.toml:2: register.allowed_uids: item 1: -1 is below the minimum 0");
	load_fails("[register]\nallowed_uids = [4294967295]\n",
		   "x.toml:2: register.allowed_uids: item 1: 4294967295 is above the maximum 4294967294");
	load_fails("[store.local]\nmax_mib = 0\n",
		   "x.toml:2: store.local.max_mib: 0 is below the minimum 1");
}

Test(config, enums_strings_and_array_lengths)
{
	struct fm_config c;
	char text[1024];
	int n;

	load_fails("[daemon]\nlog_level = \"verbose\"\n",
		   "x.toml:2: daemon.log_level: \"verbose\" is not one of error|warn|info|debug");
	load_fails("[memory]\npolicy = \"lru\"\n",
		   "x.toml:2: memory.policy: \"lru\" is not one of fifo|s3fifo");
	load_fails("[store]\nbackend = \"tape\"\n",
		   "x.toml:2: store.backend: \"tape\" is not one of local|memcached");
	load_fails("[register]\npath = \"\"\n",
		   "x.toml:2: register.path: is 0 bytes long, the minimum is 1");

	/* Socket paths must fit sun_path with its NUL: 107 bytes pass, 108 fail. */
	n = snprintf(text, sizeof(text), "[control]\npath = \"/%0106d\"\n", 0);
	cr_assert_lt(n, (int)sizeof(text));
	load_ok(&c, text);
	cr_assert_eq(strlen(c.control_path), 107);
	snprintf(text, sizeof(text), "[control]\npath = \"/%0107d\"\n", 0);
	load_fails(text, "x.toml:2: control.path: is 108 bytes long, the maximum is 107");

	n = snprintf(text, sizeof(text), "[register]\nallowed_uids = [");
	for (int i = 0; i <= FM_MAX_UIDS; i++)
		n += snprintf(text + n, sizeof(text) - (size_t)n, "%d, ", i);
	snprintf(text + n, sizeof(text) - (size_t)n, "]\n");
	load_fails(text, "x.toml:2: register.allowed_uids: has 33 items, the maximum is 32");
}

Test(config, toml_errors_pass_through)
{
	load_fails("[shards]\ncount = 2\ncount = 3\n",
		   "x.toml:3: shards.count: duplicate key, first set on line 2");
	load_fails("[shards]\n[memory]\n[shards]\n",
		   "x.toml:3: shards: duplicate table, first defined on line 1");
	load_fails("[shards]\ncount = 99999999999999999999\n",
		   "x.toml:2: shards.count: 99999999999999999999 does not fit in a 64-bit integer");
	load_fails("[register]\npath = \"/run/x\n",
		   "x.toml:2: register.path: unterminated string");
	load_fails("[shards]\ncpus = [0,\n1,\n", "x.toml:2: shards.cpus: unterminated array");
	load_fails("[daemon]\nlog_level = debug\n",
		   "x.toml:2: daemon.log_level: unquoted string debug: strings need quotes");
}

Test(config, cross_key_rules_name_key_and_line)
{
	struct fm_config c;

	load_fails("[shards]\ncount = 3\ncpus = [0, 1]\n",
		   "x.toml:3: shards.cpus: has 2 items but shards.count is 3 ([] leaves all unpinned)");
	/* cpus set, count left at its default 2: the line is the one that was set. */
	load_fails("[shards]\n\ncpus = [0, 1, 2]\n",
		   "x.toml:3: shards.cpus: has 3 items but shards.count is 2 ([] leaves all unpinned)");
	load_fails("[shards]\nring_slots = 1000\n",
		   "x.toml:2: shards.ring_slots: 1000 is not a power of two");
	/* memory.fault_batch: 0 (off) .. 256 */
	load_fails("[memory]\nfault_batch = 257\n",
		   "x.toml:2: memory.fault_batch: 257 is above the maximum 256");
	load_fails("[memory]\nfault_batch = -1\n",
		   "x.toml:2: memory.fault_batch: -1 is below the minimum 0");
	load_fails("[memory]\nfault_batch = \"all\"\n", "x.toml:2: memory.fault_batch: expected an integer, got a string");
	fm_config_defaults(&c);
	cr_assert_eq(fm_config_load_string(&c, "x.toml", "[memory]\nfault_batch = 0\n", err,
					   sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.fault_batch, 0);
	cr_assert_eq(fm_config_set(&c, "memory.fault_batch", "256", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.fault_batch, 256);
	load_fails("[shards]\ncount = 8\n[memory]\nresident_pages = 4\n",
		   "x.toml:4: memory.resident_pages: 4 is below shards.count (8): every shard needs a page");
	/* The key at fault was set before this file: no line. */
	fm_config_defaults(&c);
	cr_assert_eq(fm_config_set(&c, "shards.cpus", "[0, 1, 2]", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(fm_config_load_string(&c, "x.toml", "[shards]\nspin_us = 1\n", err,
					   sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "x.toml: shards.cpus: has 3 items but shards.count is 2 ([] leaves all unpinned)");
}

Test(config, validate_checks_structs_built_in_code)
{
	struct fm_config c;

	fm_config_defaults(&c);
	c.shard_count = 0;
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "shards.count: 0 is below the minimum 1");

	fm_config_defaults(&c);
	c.policy = 7;
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "memory.policy: 7 is not a valid value");

	fm_config_defaults(&c);
	memset(c.control_path, 'a', sizeof(c.control_path));
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "control.path: is not NUL-terminated");

	fm_config_defaults(&c);
	strcpy(c.store_backend, "tape");
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "store.backend: \"tape\" is not one of local|memcached");

	fm_config_defaults(&c);
	c.allowed_uids_n = FM_MAX_UIDS + 1;
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "register.allowed_uids: has 33 items, the maximum is 32");

	fm_config_defaults(&c);
	c.shard_cpus_n = 2;
	c.shard_cpus[1] = 5000;
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "shards.cpus: item 2: 5000 is above the maximum 1023");

	fm_config_defaults(&c);
	c.resident_pages = UINT64_MAX;
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err,
			 "memory.resident_pages: 9223372036854775807 is above the maximum 1099511627776");

	fm_config_defaults(&c);
	c.shard_count = 4;
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), 0, "%s", err);
	c.ring_slots = 96;
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "shards.ring_slots: 96 is not a power of two");
}

Test(config, set_overrides)
{
	struct fm_config c;

	fm_config_defaults(&c);
	cr_assert_eq(fm_config_set(&c, "shards.count", "4", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.shard_count, 4);
	cr_assert_eq(fm_config_set(&c, "shards.cpus", "[3, 2, 1, 0]", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.shard_cpus_n, 4);
	cr_assert_eq(c.shard_cpus[0], 3);
	cr_assert_eq(c.shard_cpus[3], 0);
	cr_assert_eq(fm_config_set(&c, "register.mode", "0o644", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.register_mode, 0644);
	/* Strings: bare or quoted. */
	cr_assert_eq(fm_config_set(&c, "daemon.log_level", "warn", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.log_level, FM_LOG_WARN);
	cr_assert_eq(fm_config_set(&c, "memory.policy", "\"fifo\"", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.policy, FM_POLICY_FIFO);
	cr_assert_eq(fm_config_set(&c, "register.path", "/tmp/a \"b\" \\c.sock", err, sizeof(err)),
		     0, "%s", err);
	cr_assert_str_eq(c.register_path, "/tmp/a \"b\" \\c.sock");
	cr_assert_eq(fm_config_set(&c, "control.path", "'/tmp/lit.sock'", err, sizeof(err)), 0,
		     "%s", err);
	cr_assert_str_eq(c.control_path, "/tmp/lit.sock");
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), 0, "%s", err);

	/* set does not check cross-key rules: validate does. */
	cr_assert_eq(fm_config_set(&c, "shards.count", "3", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "shards.cpus: has 4 items but shards.count is 3 ([] leaves all unpinned)");
}

Test(config, set_errors)
{
	struct fm_config c, before;

	fm_config_defaults(&c);
	fm_config_defaults(&before);
	cr_assert_eq(fm_config_set(&c, "shards.cnt", "4", err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "--set: shards.cnt: unknown key");
	cr_assert_eq(fm_config_set(&c, "shards", "4", err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "--set: shards: is a table, not a key");
	cr_assert_eq(fm_config_set(&c, "shards.pin", "yes", err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "--set: shards.pin: unknown key");
	cr_assert_eq(fm_config_set(&c, "shards.count", "0", err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "--set: shards.count: 0 is below the minimum 1");
	cr_assert_eq(fm_config_set(&c, "shards.count", "four", err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "--set: shards.count: unquoted string four: strings need quotes");
	cr_assert_eq(fm_config_set(&c, "shards.count", "4 # ok", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(fm_config_set(&c, "shards.count", "2", err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(fm_config_set(&c, "shards.count", "4\n[daemon]", err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "--set: shards.count: unexpected '[' after the value");
	cr_assert_eq(fm_config_set(&c, "daemon.log_level", "loud", err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "--set: daemon.log_level: \"loud\" is not one of error|warn|info|debug");
	cr_assert_eq(fm_config_set(&c, "register.path", "a\nb", err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "--set: register.path: unterminated string");
	cr_assert_eq(fm_config_set(&c, "register.path", "a\tb\x01", err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "--set: register.path: control character 0x01 in string");
	cr_assert_eq(fm_config_set(&c, "register.path", "\xff", err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "--set: register.path: invalid UTF-8 in string");
	/* A rejected array leaves the old value alone. */
	cr_assert_eq(fm_config_set(&c, "shards.cpus", "[1, 2, 5000]", err, sizeof(err)), -EINVAL);
	cr_assert_str_eq(err, "--set: shards.cpus: item 3: 5000 is above the maximum 1023");
	cr_assert_eq(memcmp(&c, &before, sizeof(c)), 0);
}

static void round_trip(const struct fm_config *c)
{
	struct fm_config back;
	char *text = dump(c), *again;

	load_ok(&back, text);
	again = dump(&back);
	cr_assert_str_eq(again, text);
	cr_assert_eq(memcmp(c, &back, sizeof(back)), 0, "dump:\n%s", text);
	free(again);
	free(text);
}

Test(config, dump_round_trips)
{
	struct fm_config c;

	fm_config_defaults(&c);
	round_trip(&c);
	load_ok(&c, "[daemon]\nlog_level = \"error\"\nnode_id = 0\n"
		    "[dispatcher]\ncpu = 1023\n"
		    "[shards]\ncount = 64\ncpus = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 2, 3, 4, 5, 6,"
		    " 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27,"
		    " 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,"
		    " 48, 49, 50, 51, 52, 53, 54, 55]\nring_slots = 65536\nspin_us = 100000\n"
		    "[memory]\nresident_pages = 1099511627776\npolicy = \"fifo\"\n"
		    "[register]\npath = \"/tmp/\\\"q\\\" \\\\ \\t \\u00e9 \\u007f.sock\"\nmode = 0o777\n"
		    "allowed_uids = [0, 4294967294]\n"
		    "[control]\nmode = 0\n");
	round_trip(&c);
}

Test(config, dump_format)
{
	struct fm_config c;
	char *text;

	fm_config_defaults(&c);
	text = dump(&c);
	cr_assert_str_eq(text, "[daemon]\n"
			       "log_level = \"info\"\n"
			       "node_id = \"1\"\n"
			       "state_dir = \"\"\n"
			       "readopt_grace_s = 60\n"
			       "\n"
			       "[dispatcher]\n"
			       "cpu = -1\n"
			       "batch = 64\n"
			       "spin_us = 50\n"
			       "\n"
			       "[shards]\n"
			       "count = 2\n"
			       "cpus = []\n"
			       "ring_slots = 1024\n"
			       "spin_us = 50\n"
			       "\n"
			       "[memory]\n"
			       "resident_pages = 16384\n"
			       "evict_batch = 32\n"
			       "evict_run = 64\n"
			       "free_low_pct = 2\n"
			       "free_high_pct = 4\n"
			       "prefetch_pages = 32\n"
			       "fault_batch = 16\n"
			       "policy = \"s3fifo\"\n"
			       "\n"
			       "[register]\n"
			       "path = \"/run/fluidmem/register.sock\"\n"
			       "mode = 0o660\n"
			       "allowed_uids = []\n"
			       "max_region_mib = 1048576\n"
			       "max_regions_per_uid = 1024\n"
			       "max_mib_per_uid = 4194304\n"
			       "max_connections = 1024\n"
			       "max_connections_per_uid = 256\n"
			       "\n"
			       "[control]\n"
			       "path = \"/run/fluidmem/control.sock\"\n"
			       "mode = 0o600\n"
			       "metrics_listen = \"\"\n"
			       "max_connections = 64\n"
			       "metrics_max_connections = 16\n"
			       "metrics_timeout_ms = 5000\n"
			       "\n"
			       "[store]\n"
			       "backend = \"local\"\n"
			       "\n"
			       "[store.local]\n"
			       "max_mib = 4096\n"
			       "compression = \"lz4\"\n"
			       "path = \"\"\n"
			       "disk_mib = 0\n"
			       "segment_mib = 16\n"
			       "\n"
			       "[store.memcached]\n"
			       "servers = \"127.0.0.1:11211\"\n"
			       "distribution = \"ketama\"\n"
			       "replicas = 0\n"
			       "binary_protocol = true\n"
			       "connect_timeout_ms = 500\n"
			       "io_timeout_ms = 1000\n"
			       "batch = 64\n"
			       "retries = 3\n"
			       "retry_delay_ms = 10\n"
			       "\n"
			       "[cluster]\n"
			       "hosts = \"\"\n"
			       "orphan_grace_s = 60\n"
			       "session_timeout_ms = 10000\n"
			       "root = \"/fluidmem\"\n"
			       "queue_max = 65536\n");
	free(text);
}

Test(config, help_lists_every_key)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	fm_config_help(f);
	fclose(f);
	cr_assert(strstr(text, "shards.count (uint 1..64 or \"auto\", default 2)\n"), "%s", text);
	cr_assert(strstr(text, "register.mode (mode 0o0..0o777, default 0o660)\n"), "%s", text);
	cr_assert(strstr(text, "daemon.log_level (enum error|warn|info|debug, default info)\n"),
		  "%s", text);
	cr_assert(strstr(text, "register.path (string of 1..107 bytes, default "
			       "/run/fluidmem/register.sock)\n"), "%s", text);
	free(text);
}

Test(config, missing_file)
{
	struct fm_config c;

	fm_config_defaults(&c);
	cr_assert_eq(fm_config_load_file(&c, "/nonexistent/fluidmem.toml", err, sizeof(err)),
		     -ENOENT);
	cr_assert_str_eq(err, "/nonexistent/fluidmem.toml: No such file or directory");
	cr_assert_eq(fm_config_load_file(&c, "/", err, sizeof(err)), -EISDIR);
	cr_assert_str_eq(err, "/: Is a directory");
}

/* Collects the dotted key paths of a TOML text, one per line. */
static int collect_key(void *ctx, const char *path, const struct toml_value *v, char *why,
		       size_t n)
{
	fprintf(ctx, "%s\n", path);
	return 0;
}

static char *keys_of(const char *text)
{
	const struct toml_handler h = { .value = collect_key };
	char *keys = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&keys, &len);

	cr_assert_eq(toml_parse("keys", text, strlen(text), &h, f, err, sizeof(err)), 0, "%s", err);
	fclose(f);
	return keys;
}

Test(config, local_toml_loads_and_sets_every_key)
{
	struct fm_config c;
	char *text = read_all(local_toml()), *file_keys, *dumped, *schema_keys;

	fm_config_defaults(&c);
	cr_assert_eq(fm_config_load_file(&c, local_toml(), err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), 0, "%s", err);
	/* The layout is "auto": planned on this machine's CPUs (test_layout.c). */
	cr_assert(c.dispatcher_cpu_auto && c.shard_count_auto && c.shard_cpus_auto);
	cr_assert(c.shard_count >= 1 && c.shard_count <= 16);
	cr_assert(c.shard_cpus_n == 0 || c.shard_cpus_n == c.shard_count);
	cr_assert_neq(c.layout_cpus[0], '\0');
	cr_assert_eq(c.resident_pages, 4096);
	cr_assert_str_eq(c.store_backend, "local");
	cr_assert_str_eq(c.register_path, "/run/fluidmem/register.sock");
	cr_assert_str_eq(c.control_path, "/run/fluidmem/control.sock");

	/* The reference config names every schema key, in schema order. */
	dumped = dump(&c);
	schema_keys = keys_of(dumped);
	file_keys = keys_of(text);
	cr_assert_str_eq(file_keys, schema_keys);
	free(schema_keys);
	free(file_keys);
	free(dumped);
	free(text);
}

/* Deterministic PRNG (splitmix64) so a fuzz failure reproduces. */
static uint64_t rng_state = 0x5eed;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Bytes a TOML parser cares most about, plus UTF-8 and control bytes. */
static const char interesting[] = "[]=\"'#\n\r\\.,_-+0123456789abcdefxobuU {}\t\x01\x7f\xc3\xa9\xff";

static size_t mutate(char *buf, size_t len, size_t cap)
{
	size_t pos = len ? rnd() % len : 0, run = rnd() % 64, n;

	switch (rnd() % 7) {
	case 0: /* overwrite a byte with anything */
		if (len)
			buf[pos] = (char)rnd();
		break;
	case 1: /* overwrite a byte with a syntax byte */
		if (len)
			buf[pos] = interesting[rnd() % (sizeof(interesting) - 1)];
		break;
	case 2: /* insert a syntax byte */
		if (len < cap) {
			memmove(buf + pos + 1, buf + pos, len - pos);
			buf[pos] = interesting[rnd() % (sizeof(interesting) - 1)];
			len++;
		}
		break;
	case 3: /* delete a run */
		n = FM_MIN(run % 16, len - pos);
		memmove(buf + pos, buf + pos + n, len - pos - n);
		len -= n;
		break;
	case 4: /* duplicate a run (duplicate keys and tables) */
		n = FM_MIN(run, len - pos);
		if (len + n <= cap) {
			memmove(buf + pos + n, buf + pos, len - pos);
			len += n;
		}
		break;
	case 5: /* truncate */
		len = pos;
		break;
	case 6: { /* a big number somewhere (overflow, range) */
		char num[32];

		n = (size_t)snprintf(num, sizeof(num), "%llu", (unsigned long long)rnd() >> (rnd() % 64));
		if (len + n <= cap) {
			memmove(buf + pos + n, buf + pos, len - pos);
			memcpy(buf + pos, num, n);
			len += n;
		}
		break;
	}
	}
	return len;
}

static int ignore_value(void *ctx, const char *path, const struct toml_value *v, char *why,
			size_t n)
{
	return 0;
}

Test(config, fuzz_mutated_local_toml, .timeout = 240)
{
	const struct toml_handler h = { .value = ignore_value };
	char *orig = read_all(local_toml());
	size_t olen = strlen(orig), cap = 2 * olen + 64;
	char *buf = malloc(cap + 1);   /* + the NUL for load_string */
	int ok = 0, bad = 0;

	for (int iter = 0; iter < 20000; iter++) {
		size_t len = olen;
		struct fm_config c;
		char *exact;
		int rc;

		memcpy(buf, orig, olen);
		for (int m = 1 + (int)(rnd() % 4); m > 0; m--)
			len = mutate(buf, len, cap);

		/* The raw bytes, NULs included, in a buffer of exactly len bytes so
		 * ASan catches any read past the end. */
		exact = malloc(len ? len : 1);
		memcpy(exact, buf, len);
		memset(err, 0, sizeof(err));
		rc = toml_parse("fuzz", exact, len, &h, NULL, err, sizeof(err));
		cr_assert(rc == 0 || (rc == -EINVAL && !strncmp(err, "fuzz:", 5)),
			  "iter %d: toml rc %d err \"%s\"", iter, rc, err);
		free(exact);

		/* The whole config path, as a C string. */
		buf[len] = '\0';
		fm_config_defaults(&c);
		memset(err, 0, sizeof(err));
		rc = fm_config_load_string(&c, "fuzz", buf, err, sizeof(err));
		cr_assert(rc == 0 || (rc == -EINVAL && !strncmp(err, "fuzz", 4) && strlen(err) > 6),
			  "iter %d: rc %d err \"%s\" input:\n%s", iter, rc, err, buf);
		if (rc == 0)
			cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), 0, "%s", err);
		rc ? bad++ : ok++;
	}
	/* Both outcomes must be common, or the mutations are too weak/strong. */
	cr_assert_gt(ok, 1000, "ok %d bad %d", ok, bad);
	cr_assert_gt(bad, 1000, "ok %d bad %d", ok, bad);
	free(buf);
	free(orig);
}

Test(config, metrics_listen_must_be_loopback)
{
	struct fm_config c;
	struct sockaddr_storage ss;
	socklen_t len;

	fm_config_defaults(&c);
	cr_expect_eq(fm_config_metrics_addr(&c, &ss, &len), -ENOENT);
	load_ok(&c, "[control]\nmetrics_listen = \"127.0.0.1:9464\"\n");
	cr_expect_eq(fm_config_metrics_addr(&c, &ss, &len), 0);
	load_ok(&c, "[control]\nmetrics_listen = \"[::1]:9464\"\n");
	cr_expect_eq(fm_config_metrics_addr(&c, &ss, &len), 0);
	load_ok(&c, "[control]\nmetrics_listen = \"localhost:80\"\n");
	cr_expect_eq(fm_config_metrics_addr(&c, &ss, &len), 0);
	fm_config_defaults(&c);
	cr_expect_eq(fm_config_load_string(&c, "m.toml", "[control]\nmetrics_listen = \"0.0.0.0:9464\"\n",
					   err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "control.metrics_listen") && strstr(err, "loopback"), "%s", err);
	fm_config_defaults(&c);
	cr_expect_eq(fm_config_load_string(&c, "m.toml", "[control]\nmetrics_listen = \"127.0.0.1\"\n",
					   err, sizeof(err)), -EINVAL);
	cr_expect(strstr(err, "HOST:PORT"), "%s", err);
	fm_config_defaults(&c);
	cr_expect_eq(fm_config_load_string(&c, "m.toml", "[control]\nmetrics_listen = \"127.0.0.1:99999\"\n",
					   err, sizeof(err)), -EINVAL);
}

/* [cluster]: daemon.node_id is "auto" (only with cluster.hosts) or an id,
 * as a string or a number; the hosts and root are checked even while the
 * section is off. */
Test(config, cluster_section)
{
	struct fm_config c;

	load_ok(&c, "[daemon]\nnode_id = 7\n[cluster]\nhosts = \"127.0.0.1:2181,zk2:2181\"\n");
	cr_assert_str_eq(c.node_id, "7");
	cr_assert_eq(fm_config_node_id(&c), 7);
	cr_assert_str_eq(c.cluster_hosts, "127.0.0.1:2181,zk2:2181");
	load_ok(&c, "[daemon]\nnode_id = \"65535\"\n");
	cr_assert_eq(fm_config_node_id(&c), 65535);
	load_ok(&c, "[daemon]\nnode_id = \"auto\"\n[cluster]\nhosts = \"zk1:2181\"\n");
	cr_assert_eq(fm_config_node_id(&c), -1);
	fm_config_defaults(&c);
	cr_assert_eq(fm_config_load_string(&c, "t", "[daemon]\nnode_id = \"auto\"\n", err,
					   sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "daemon.node_id") && strstr(err, "cluster.hosts"), "%s", err);
	fm_config_defaults(&c);
	cr_assert_eq(fm_config_load_string(&c, "t", "[daemon]\nnode_id = 65536\n", err,
					   sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "daemon.node_id"), "%s", err);
	fm_config_defaults(&c);
	cr_assert_eq(fm_config_load_string(&c, "t", "[daemon]\nnode_id = \"one\"\n", err,
					   sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "daemon.node_id"), "%s", err);
	fm_config_defaults(&c);
	cr_assert_eq(fm_config_load_string(&c, "t", "[cluster]\nhosts = \"zk1\"\n", err,
					   sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "cluster.hosts"), "%s", err);
	fm_config_defaults(&c);
	cr_assert_eq(fm_config_load_string(&c, "t", "[cluster]\nroot = \"fluidmem/\"\n", err,
					   sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "cluster.root"), "%s", err);
	fm_config_defaults(&c);
	cr_assert_eq(fm_config_set(&c, "daemon.node_id", "12", err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(c.node_id, "12");
}

/* configs/cluster.toml, the sample node, loads and turns the cluster on. */
Test(config, cluster_sample_loads)
{
	struct fm_config c;

	fm_config_defaults(&c);
	cr_assert_eq(fm_config_load_file(&c, FM_SOURCE_DIR "/configs/cluster.toml", err,
					 sizeof(err)), 0, "%s", err);
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(fm_config_node_id(&c), -1);
	cr_expect(c.cluster_hosts[0]);
	cr_expect_str_eq(c.store_backend, "memcached");
}

/* "auto" placement (ctl/layout.h): accepted by the three layout keys only,
 * kept as "auto" in a dump, resolved to values that pass validation. */
Test(config, layout_auto)
{
	struct fm_config c;
	char *text;

	load_ok(&c, "[dispatcher]\ncpu = \"auto\"\n[shards]\ncount = \"auto\"\ncpus = \"auto\"\n");
	cr_assert(c.dispatcher_cpu_auto && c.shard_count_auto && c.shard_cpus_auto);
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), 0, "%s", err);
	cr_assert(c.shard_count >= 1);
	text = dump(&c);
	cr_assert(strstr(text, "cpu = \"auto\"\n"), "%s", text);
	cr_assert(strstr(text, "count = \"auto\"\n"), "%s", text);
	cr_assert(strstr(text, "cpus = \"auto\"\n"), "%s", text);
	/* The dump loads back to the same thing. */
	{
		struct fm_config d;

		load_ok(&d, text);
		cr_assert(d.dispatcher_cpu_auto && d.shard_count_auto && d.shard_cpus_auto);
		cr_assert_eq(d.shard_count, c.shard_count);
		cr_assert_eq(d.dispatcher_cpu, c.dispatcher_cpu);
	}
	free(text);

	/* A fixed count with auto CPUs keeps the count. */
	load_ok(&c, "[shards]\ncount = 5\ncpus = \"auto\"\n");
	cr_assert_eq(c.shard_count, 5);
	cr_assert(c.shard_cpus_n == 0 || c.shard_cpus_n == 5);
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), 0, "%s", err);
	/* An auto count with explicit CPUs: one shard per CPU listed. */
	load_ok(&c, "[shards]\ncount = \"auto\"\ncpus = [0, 0, 0]\n");
	cr_assert_eq(c.shard_count, 3);
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), 0, "%s", err);
	/* A number after "auto" turns auto off, and --set takes a bare auto. */
	cr_assert_eq(fm_config_set(&c, "shards.count", "4", err, sizeof(err)), 0, "%s", err);
	cr_assert(!c.shard_count_auto);
	cr_assert_eq(c.shard_count, 4);
	cr_assert_eq(fm_config_set(&c, "dispatcher.cpu", "auto", err, sizeof(err)), 0, "%s", err);
	cr_assert(c.dispatcher_cpu_auto);
	char line[256];

	fm_config_layout_text(&c, line, sizeof(line));
	cr_assert(strncmp(line, "auto on CPUs ", 13) == 0, "%s", line);
	fm_config_defaults(&c);
	fm_config_layout_text(&c, line, sizeof(line));
	cr_assert_str_eq(line, "fixed: dispatcher unpinned, 2 shards unpinned");
}

Test(config, layout_auto_errors)
{
	load_fails("[dispatcher]\ncpu = \"Auto\"\n",
		   "x.toml:2: dispatcher.cpu: expected an integer or \"auto\", got \"Auto\"");
	load_fails("[dispatcher]\ncpu = \"\"\n",
		   "x.toml:2: dispatcher.cpu: expected an integer or \"auto\", got \"\"");
	load_fails("[dispatcher]\ncpu = -2\n", "x.toml:2: dispatcher.cpu: -2 is below the minimum -1");
	load_fails("[shards]\ncpus = \"all\"\n",
		   "x.toml:2: shards.cpus: expected an array of integers or \"auto\", got \"all\"");
	load_fails("[shards]\ncpus = [\"auto\"]\n",
		   "x.toml:2: shards.cpus: item 1: expected an integer, got a string");
	load_fails("[shards]\ncount = true\n",
		   "x.toml:2: shards.count: expected an integer, got a boolean");
	/* An explicit CPU list that does not match a fixed count. */
	load_fails("[shards]\ncount = 3\ncpus = [1, 1]\n",
		   "x.toml:3: shards.cpus: has 2 items but shards.count is 3 ([] leaves all unpinned)");
	/* Only the layout keys take "auto". */
	load_fails("[memory]\nevict_batch = \"auto\"\n",
		   "x.toml:2: memory.evict_batch: expected an integer, got a string");
}

/* An "auto" count follows a disk tier's existing files (one per shard), so
 * a restart on another cpuset looks for each page in the file it is in. */
Test(config, layout_auto_count_follows_disk_tier)
{
	char dir[] = "/tmp/fmcfg.XXXXXX", path[64], text[256];
	struct fm_config c;

	cr_assert(mkdtemp(dir));
	for (int i = 0; i < 5; i++) {
		snprintf(path, sizeof(path), "%s/shard-%d.fmkv", dir, i);
		FILE *f = fopen(path, "w");

		cr_assert(f);
		fclose(f);
	}
	snprintf(text, sizeof(text),
		 "[shards]\ncount = \"auto\"\ncpus = \"auto\"\n[store.local]\npath = \"%s\"\n", dir);
	load_ok(&c, text);
	cr_assert_eq(c.shard_count, 5);
	cr_assert(c.shard_cpus_n == 0 || c.shard_cpus_n == 5);
	for (int i = 0; i < 5; i++) {
		snprintf(path, sizeof(path), "%s/shard-%d.fmkv", dir, i);
		unlink(path);
	}
	rmdir(dir);
}

/* "auto" honours the cgroup v2 CPU quota (cpu.max) of the daemon's cgroup:
 * a container or slice allowed 1 CPU's worth of time on a bigger machine
 * gets the 1-CPU plan (one unpinned shard), not a busy-polling dispatcher
 * and a shard per CPU it can see. FLUIDMEM_CGROUP_ROOT stands in for
 * /sys/fs/cgroup, with this process's own cgroup path under it. */
Test(config, layout_auto_honours_cgroup_cpu_quota)
{
	char root[] = "/tmp/fmcg.XXXXXX", line[512], cg[512] = "", dir[560], path[600], cmd[640];
	struct fm_config c;
	FILE *f = fopen("/proc/self/cgroup", "r");
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	cr_assert(f);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "0::", 3)) {
			snprintf(cg, sizeof(cg), "%s", line + 3);
			cg[strcspn(cg, "\n")] = '\0';
		}
	fclose(f);
	if (!cg[0] || ncpu < 2)
		cr_skip_test("needs a cgroup v2 entry in /proc/self/cgroup and 2+ CPUs");
	cr_assert(mkdtemp(root));
	snprintf(dir, sizeof(dir), "%s%s", root, cg);
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", dir);
	cr_assert_eq(system(cmd), 0);
	snprintf(path, sizeof(path), "%s/cpu.max", dir);
	f = fopen(path, "w");
	cr_assert(f);
	fputs("100000 100000\n", f);
	fclose(f);
	cr_assert_eq(setenv("FLUIDMEM_CGROUP_ROOT", root, 1), 0);

	load_ok(&c, "[dispatcher]\ncpu = \"auto\"\n[shards]\ncount = \"auto\"\ncpus = \"auto\"\n");
	cr_assert_eq(fm_config_validate(&c, err, sizeof(err)), 0, "%s", err);
	fm_config_layout_text(&c, line, sizeof(line));
	cr_assert_eq(c.shard_count, 1, "%s", line);
	cr_assert_eq(c.dispatcher_cpu, -1, "%s", line);
	cr_assert_eq(c.shard_cpus_n, 0, "%s", line);
	cr_assert(strstr(line, "cpu.max"), "%s", line);

	unsetenv("FLUIDMEM_CGROUP_ROOT");
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	cr_assert_eq(system(cmd), 0);
}
