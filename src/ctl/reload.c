/* ctl/reload: where the configuration comes from (file + --set), and
 * SIGHUP, which reads it again and applies what may change at run time.
 *
 * What can change: keys the control thread reads afresh each time (limits,
 * allowed uids, the log level), and the resident budget, which goes to the
 * shards as SET_BUDGET messages like `fluidmemctl resize`. Everything else
 * is fixed when shards, sockets and stores are built; a reload that changes
 * such a key logs that it needs a restart and applies the rest. */
#include "ctl/daemon_priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

/* The keys a reload may change, and how each is applied (NULL: d->cfg
 * holds it and is read where it is used). */
static int apply_log_level(struct daemon *d, const struct fm_config *c)
{
	fm_log_set_level(c->log_level);
	return 0;
}

static int apply_budget(struct daemon *d, const struct fm_config *c)
{
	uint64_t resident;
	bool within;

	return daemon_set_budget(d, c->resident_pages, &resident, &within);
}

static const struct {
	const char *key;
	int (*apply)(struct daemon *d, const struct fm_config *c);
} reloadable[] = {
	{ "daemon.log_level", apply_log_level },
	{ "memory.resident_pages", apply_budget },
	{ "register.allowed_uids", NULL },   /* new connections; held ones keep their verdict */
	{ "register.max_region_mib", NULL },
	{ "register.max_regions_per_uid", NULL },
	{ "register.max_mib_per_uid", NULL },
	{ "register.max_connections", NULL },
	{ "register.max_connections_per_uid", NULL },
	{ "control.max_connections", NULL },
	{ "control.metrics_max_connections", NULL },
	{ "control.metrics_timeout_ms", NULL },
};

int ctl_config_load(struct fm_config *c, const char *path, char *const *sets, int nsets,
		    char *err, size_t errlen)
{
	fm_config_defaults(c);
	if (fm_config_load_file(c, path, err, errlen) < 0)
		return -EINVAL;
	for (int i = 0; i < nsets; i++) {
		char key[128];
		const char *eq = strchr(sets[i], '=');

		if (!eq || eq == sets[i] || (size_t)(eq - sets[i]) >= sizeof(key)) {
			snprintf(err, errlen, "--set wants KEY=VALUE, got \"%s\"", sets[i]);
			return -EINVAL;
		}
		memcpy(key, sets[i], (size_t)(eq - sets[i]));
		key[eq - sets[i]] = '\0';
		if (fm_config_set(c, key, eq + 1, err, errlen) < 0)
			return -EINVAL;
	}
	if (fm_config_validate(c, err, errlen) < 0) {
		/* name the file: the key alone does not say which one */
		char why[512];

		snprintf(why, sizeof(why), "%s", err);
		snprintf(err, errlen, "%s: %s", path, why);
		return -EINVAL;
	}
	return 0;
}

int daemon_set_config_source(struct daemon *d, const char *path, char *const *sets, int nsets)
{
	if (!(d->config_path = strdup(path)))
		return -ENOMEM;
	if (nsets && !(d->sets = calloc((size_t)nsets, sizeof(*d->sets))))
		return -ENOMEM;
	for (d->nsets = 0; d->nsets < nsets; d->nsets++)
		if (!(d->sets[d->nsets] = strdup(sets[d->nsets])))
			return -ENOMEM;
	return 0;
}

void daemon_free_config_source(struct daemon *d)
{
	for (int i = 0; i < d->nsets; i++)
		free(d->sets[i]);
	free(d->sets);
	free(d->config_path);
	d->sets = NULL;
	d->config_path = NULL;
	d->nsets = 0;
}

static int find_reloadable(const char *key)
{
	for (size_t i = 0; i < FM_ARRAY_SIZE(reloadable); i++)
		if (strcmp(reloadable[i].key, key) == 0)
			return (int)i;
	return -1;
}

int daemon_reload(struct daemon *d)
{
	/* A value as TOML: strings escape control bytes to 6 each. */
	enum { VALUE_MAX = 8192 };
	struct fm_config *next = malloc(sizeof(*next));
	char err[512], *was = malloc(VALUE_MAX), *now = malloc(VALUE_MAX);
	unsigned applied = 0, refused = 0;
	const char *key;

	if (!d->config_path || !next || !was || !now ||
	    ctl_config_load(next, d->config_path, d->sets, d->nsets, err, sizeof(err)) < 0) {
		d->reload_failures++;
		FM_ERR("reload: %s; the running configuration stays as it was",
		       !d->config_path ? "no configuration file to read again"
		       : next && was && now ? err : "out of memory");
		free(next);
		free(was);
		free(now);
		return -EINVAL;
	}
	for (size_t i = 0; (key = fm_config_key(i)); i++) {
		int k;

		if (fm_config_format(&d->cfg, key, was, VALUE_MAX) < 0 ||
		    fm_config_format(next, key, now, VALUE_MAX) < 0 || strcmp(was, now) == 0)
			continue;
		if ((k = find_reloadable(key)) < 0) {
			refused++;
			FM_WARN("reload: %s cannot change at run time (%s -> %s): restart fluidmemd to "
				"apply it; the rest is applied",
				key, was, now);
			continue;
		}
		if (reloadable[k].apply && reloadable[k].apply(d, next) < 0) {
			refused++;
			FM_ERR("reload: %s: could not apply %s (a shard did not answer); it stays %s", key,
			       now, was);
			continue;
		}
		fm_config_copy_key(&d->cfg, next, key);
		applied++;
		FM_INFO("reload: %s = %s (was %s)", key, now, was);
	}
	d->reloads++;
	FM_INFO("reload of %s: %u key(s) changed, %u refused", d->config_path, applied, refused);
	free(next);
	free(was);
	free(now);
	return 0;
}
