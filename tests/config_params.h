/* Tests that build a module from a struct fm_config go through ctl's own
 * mapping (ctl/params.h), so they exercise what the daemon does. */
#ifndef FM_TEST_CONFIG_PARAMS_H
#define FM_TEST_CONFIG_PARAMS_H

#include "ctl/params.h"

/* kv_open on the [store] tables of c; c == NULL passes NULL through. */
static inline struct kv_store *kv_open_cfg(const struct fm_config *c, unsigned shard)
{
	struct kv_params p;

	if (!c)
		return kv_open(NULL, shard);
	fm_config_kv_params(c, &p);
	return kv_open(&p, shard);
}

static inline struct shard *shard_create_cfg(const struct fm_config *c, unsigned idx,
					     uint64_t budget, struct fm_doorbell *reply_bell)
{
	struct shard_params p;

	fm_config_shard_params(c, idx, &p);
	return shard_create(&p, idx, budget, reply_bell);
}

#endif
