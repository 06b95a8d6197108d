/* client/say: one line on stderr, "who[pid]: ...", in one write(2) of a
 * stack buffer: no stdio, no allocation, so libfluidmem's watcher and the
 * preload shim can log from inside any host process (QEMU), even from
 * within its mmap. Longer lines are cut. */
#ifndef FM_CLIENT_SAY_H
#define FM_CLIENT_SAY_H

__attribute__((visibility("hidden"), format(printf, 2, 3)))
void fmc_say(const char *who, const char *fmt, ...);

#endif
