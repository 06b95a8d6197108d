/* The region table: slot -> region, published with RCU so the dispatcher and
 * the control plane read it without locks. Only the control plane writes. */
#include "uffd/uffd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <urcu.h>



static struct region *table[FM_MAX_REGIONS];
static uint32_t next_slot;

int region_table_publish(struct region *r)
{
	for (uint32_t i = 0; i < FM_MAX_REGIONS; i++) {
		uint32_t slot = (next_slot + i) % FM_MAX_REGIONS;

		/* Slot 0 stays unused so a zeroed message never names a region. */
		if (slot == 0 || table[slot])
			continue;
		r->slot = slot;
		rcu_assign_pointer(table[slot], r);
		next_slot = slot + 1;
		return 0;
	}
	return -ENOSPC;
}

struct region *region_table_lookup(uint32_t slot)
{
	if (slot >= FM_MAX_REGIONS)
		return NULL;
	return rcu_dereference(table[slot]);
}

void region_table_unpublish(struct region *r)
{
	if (r->slot < FM_MAX_REGIONS && table[r->slot] == r)
		rcu_assign_pointer(table[r->slot], NULL);
}

unsigned region_table_count(void)
{
	unsigned n = 0;

	for (uint32_t i = 0; i < FM_MAX_REGIONS; i++)
		n += rcu_dereference(table[i]) != NULL;
	return n;
}

void region_release(struct region *r)
{
	if (!r)
		return;
	if (r->view && r->view != MAP_FAILED)
		munmap(r->view, r->npages << FM_PAGE_SHIFT);
	if (r->uffd >= 0)
		close(r->uffd);
	if (r->memfd >= 0)
		close(r->memfd);
	free(r);
}
