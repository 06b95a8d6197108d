#include "ctl/params.h"

#include <string.h>

void fm_config_kv_params(const struct fm_config *c, struct kv_params *out)
{
	memset(out, 0, sizeof(*out));
	_Static_assert(sizeof(out->backend) == sizeof(c->store_backend), "store.backend");
	memcpy(out->backend, c->store_backend, sizeof(out->backend));

	out->local.max_mib = c->local_max_mib;
	out->local.compression = c->local_compression;
	_Static_assert(sizeof(out->local.path) == sizeof(c->local_path), "store.local.path");
	memcpy(out->local.path, c->local_path, sizeof(out->local.path));
	out->local.disk_mib = c->local_disk_mib;
	out->local.segment_mib = c->local_segment_mib;
	out->local.shard_count = c->shard_count;

	out->mc = c->mc;
}

void fm_config_shard_params(const struct fm_config *c, unsigned idx, struct shard_params *out)
{
	memset(out, 0, sizeof(*out));
	out->shard_count = c->shard_count;
	out->ring_slots = c->ring_slots;
	out->spin_us = c->spin_us;
	out->cpu = c->shard_cpus_n && idx < c->shard_cpus_n ? c->shard_cpus[idx] : -1;
	out->evict_batch = c->evict_batch;
	out->evict_run = c->evict_run;
	out->free_low_pct = c->free_low_pct;
	out->free_high_pct = FM_MAX(c->free_high_pct, c->free_low_pct);
	out->prefetch_pages = c->prefetch_pages;
	out->fault_batch = c->fault_batch;
	out->policy = c->policy;
	fm_config_kv_params(c, &out->kv);
}
