/* client/maps: walk this process's /proc/self/maps without allocating, so
 * the preload shim can ask what backs an address range from inside mmap. */
#ifndef FM_CLIENT_MAPS_H
#define FM_CLIENT_MAPS_H

#include <stdbool.h>
#include <stdint.h>

struct fm_vma {
	uintptr_t lo, hi;        /* [lo, hi) */
	char perms[5];           /* "rw-p", "---p", ... */
	unsigned dev_major, dev_minor;
	unsigned long ino;       /* 0 for anonymous memory */
};

/* Called for each mapping in address order; return false to stop. */
typedef bool (*fm_vma_fn)(const struct fm_vma *v, void *arg);

/* Call fn for every mapping of this process. 0, or -errno when the maps
 * file cannot be read (then fn may have seen a prefix). Lock-free, no
 * allocation; the view is the kernel's at read time, so a concurrent
 * mmap in another thread may or may not show. */
int fm_maps_walk(fm_vma_fn fn, void *arg);

#endif
