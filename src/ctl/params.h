/* ctl/params: the config mapped onto each module's own parameters. The
 * modules never see struct fm_config; this is the one place that knows
 * which key feeds which parameter. */
#ifndef FM_PARAMS_H
#define FM_PARAMS_H

#include "ctl/config.h"
#include "kv/kv.h"
#include "shard/shard.h"

/* The [store] tables, for kv_open. */
void fm_config_kv_params(const struct fm_config *c, struct kv_params *out);
/* [shards], [memory] and [store], for shard_create(out, idx, ...). */
void fm_config_shard_params(const struct fm_config *c, unsigned idx, struct shard_params *out);

#endif
