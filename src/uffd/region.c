/* The control plane's region table: slot -> region, control thread only.
 *
 * It used to be RCU-published for the dispatcher. That let a uffd event that
 * shared an epoll batch with REGION_DEL look its region up and route it after
 * the shards had let go of it (a use-after-free). The dispatcher now owns its
 * own table, changed only through its command ring, so nothing here is read
 * by another thread and liburcu is no longer needed. */
#include "uffd/uffd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>



static struct uffd_region *table[FM_MAX_REGIONS];
static uint32_t next_slot;

int region_table_publish(struct uffd_region *r)
{
	for (uint32_t i = 0; i < FM_MAX_REGIONS; i++) {
		uint32_t slot = (next_slot + i) % FM_MAX_REGIONS;

		/* Slot 0 stays unused so a zeroed message never names a region. */
		if (slot == 0 || table[slot])
			continue;
		r->slot = slot;
		table[slot] = r;
		next_slot = slot + 1;
		return 0;
	}
	return -ENOSPC;
}

struct uffd_region *region_table_lookup(uint32_t slot)
{
	if (slot >= FM_MAX_REGIONS)
		return NULL;
	return table[slot];
}

void region_table_unpublish(struct uffd_region *r)
{
	if (r->slot < FM_MAX_REGIONS && table[r->slot] == r)
		table[r->slot] = NULL;
}

unsigned region_table_count(void)
{
	unsigned n = 0;

	for (uint32_t i = 0; i < FM_MAX_REGIONS; i++)
		n += table[i] != NULL;
	return n;
}

void region_release(struct uffd_region *r)
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
