/* fuzz_config: fluidmemd's configuration as the daemon reads it: a TOML
 * file against the schema (ctl/toml.c, ctl/config.c), then --set overrides,
 * then the cross-key rules.
 *
 * Input: leading lines "--set KEY=VALUE\n" are overrides (split at the first
 * '=' like fluidmemd_main.c), the rest is the file. Nothing is written and
 * nothing is started.
 *
 * Beyond "no crash": every error comes with a message; a config that passes
 * validation round-trips through fm_config_dump unchanged; the TOML parser hands its
 * callbacks well-formed values (checked on a second pass that accepts every
 * key, so syntax the schema would reject early is parsed too). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/config.h"
#include "ctl/toml.h"

#define MAX_SETS 16
#define SET_PREFIX "--set "

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fm_config_defaults parses every default (~40% of a run): do it once. */
static struct fm_config defaults;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fm_config_defaults(&defaults);
	return 0;
}

static void check_error(int rc, const char *err)
{
	if (rc >= 0 || !err[0] || !memchr(err, '\0', 512)) {
		fprintf(stderr, "fuzz_config: rc %d with message \"%.512s\"\n", rc, err);
		abort();
	}
}

static char *dump(const struct fm_config *c, size_t *len)
{
	char *text = NULL;
	FILE *f = open_memstream(&text, len);

	if (!f)
		abort();
	fm_config_dump(c, f);
	fclose(f);
	return text;
}

/* A config that passed validation loads back from its dump unchanged. */
static void check_round_trip(const struct fm_config *c)
{
	struct fm_config back;
	char err[512], *text, *again;
	size_t len, len2;
	int rc;

	text = dump(c, &len);
	back = defaults;
	rc = fm_config_load_buffer(&back, "dump", text, len, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "fuzz_config: the dump does not load: %s\n%s", err, text);
		abort();
	}
	again = dump(&back, &len2);
	if (memcmp(&back, c, sizeof(back)) || len != len2 || memcmp(text, again, len)) {
		fprintf(stderr, "fuzz_config: dump -> load changed the config\n%s---\n%s", text,
			again);
		abort();
	}
	free(text);
	free(again);
}

/* The TOML layer's promises to its callbacks. */
static void check_value(const struct toml_value *v, bool in_array)
{
	switch (v->type) {
	case TOML_INT:
	case TOML_BOOL:
		break;
	case TOML_STRING:
		if (!v->s.ptr || strlen(v->s.ptr) != v->s.len || v->s.len >= TOML_MAX_STR)
			abort();
		break;
	case TOML_ARRAY:
		if (in_array || v->a.n > TOML_MAX_ITEMS || (v->a.n && !v->a.items))
			abort();
		for (size_t i = 0; i < v->a.n; i++)
			check_value(&v->a.items[i], true);
		break;
	default:
		abort();
	}
}

static int any_table(void *ctx, const char *path, int line, char *why, size_t n)
{
	if (!path[0] || strlen(path) >= TOML_PATH_MAX || line < 1)
		abort();
	return 0;
}

static int any_value(void *ctx, const char *path, const struct toml_value *v, char *why, size_t n)
{
	if (!path[0] || strlen(path) >= TOML_PATH_MAX || v->line < 1)
		abort();
	check_value(v, false);
	return 0;
}

static const struct toml_handler any_key = { .table = any_table, .value = any_value };

/* One "--set KEY=VALUE" the way fluidmemd_main.c splits it. */
static int apply_set(struct fm_config *c, const char *arg, char *err, size_t errlen)
{
	const char *eq = strchr(arg, '=');
	char key[128];

	if (!eq || eq == arg || (size_t)(eq - arg) >= sizeof(key))
		return 1;   /* the daemon refuses it before the config sees it */
	memcpy(key, arg, (size_t)(eq - arg));
	key[eq - arg] = '\0';
	return fm_config_set(c, key, eq + 1, err, errlen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	char *sets[MAX_SETS], err[512];
	struct fm_config c;
	int nsets = 0, rc;

	while (nsets < MAX_SETS && (size_t)(end - p) >= strlen(SET_PREFIX) &&
	       !memcmp(p, SET_PREFIX, strlen(SET_PREFIX))) {
		const char *arg = p + strlen(SET_PREFIX);
		const char *nl = memchr(arg, '\n', (size_t)(end - arg));
		size_t len = (size_t)((nl ? nl : end) - arg);

		/* An argv string ends at its first NUL. */
		sets[nsets++] = strndup(arg, len);
		p = nl ? nl + 1 : end;
	}

	err[0] = '\0';
	rc = toml_parse("any.toml", p, (size_t)(end - p), &any_key, NULL, err, sizeof(err));
	if (rc)
		check_error(rc, err);

	c = defaults;
	rc = fm_config_load_buffer(&c, "fuzz.toml", p, (size_t)(end - p), err, sizeof(err));
	if (rc) {
		check_error(rc, err);
		/* fluidmemd stops here; go on from the defaults to reach --set. */
		c = defaults;
	}
	for (int i = 0; i < nsets; i++) {
		rc = apply_set(&c, sets[i], err, sizeof(err));
		if (rc < 0)
			check_error(rc, err);
	}
	rc = fm_config_validate(&c, err, sizeof(err));
	if (rc)
		check_error(rc, err);
	else
		check_round_trip(&c);   /* whatever the path, a valid config */
	for (int i = 0; i < nsets; i++)
		free(sets[i]);
	return 0;
}
