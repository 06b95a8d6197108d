/* ctl/listen: the daemon's unix listening sockets. */
#ifndef FM_LISTEN_H
#define FM_LISTEN_H

#include <sys/types.h>

/* Serve a unix socket at path, safely against what may already be there.
 *
 * - Two daemons started at once are serialised by an exclusive flock on
 *   PATH.lock, held for the daemon's life (*lock_fd): the loser gets
 *   -EADDRINUSE before it probes or removes anything.
 * - Only a socket is ever replaced (lstat, S_ISSOCK): a regular file, a
 *   directory or a symlink at the path makes us refuse with -EEXIST.
 * - The socket is bound and chmod'ed inside a fresh 0700 directory of ours,
 *   where nobody can plant a symlink, and then renamed over the path. The
 *   rename replaces a stale socket atomically and never follows a symlink.
 *   (A umask around bind would also work, but umask is process-wide and
 *   other threads may create files meanwhile.)
 *
 * Returns the listening fd (non-blocking, close-on-exec) and the lock's fd
 * in *lock_fd, to be closed after the socket is unlinked at exit; or
 * -EADDRINUSE (another daemon), -EEXIST (not a socket at path),
 * -ENAMETOOLONG or another -errno. Not thread-safe against itself. */
int ctl_listen_unix(const char *path, int type, mode_t mode, int *lock_fd);

/* A hint to append to strerror(-rc) for an error of ctl_listen_unix(). */
const char *ctl_listen_strerror(int rc);

#endif
