/* ctl/listen: unix listening sockets that are safe against what already
 * sits at their path (see listen.h). */
#include "ctl/listen.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl/config.h"


static int make_dirs(const char *path)
{
	char dir[FM_SOCK_PATH_MAX];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	for (char *p = dir + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(dir, 0755);
			*p = '/';
		}
	}
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int ctl_listen_unix(const char *path, int type, mode_t mode, int *lock_fd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char lock[FM_SOCK_PATH_MAX + 8], tmpdir[FM_SOCK_PATH_MAX + 16], *slash;
	struct stat st;
	int fd = -1, lfd, probe, rc;

	*lock_fd = -1;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	if ((rc = make_dirs(path)) < 0)
		return rc;
	snprintf(lock, sizeof(lock), "%s.lock", path);
	lfd = open(lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (lfd < 0)
		return -errno;
	if (flock(lfd, LOCK_EX | LOCK_NB) < 0) {
		rc = errno == EWOULDBLOCK ? -EADDRINUSE : -errno;
		close(lfd);
		return rc;
	}
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			rc = -EEXIST;
			goto fail;
		}
		/* A daemon that predates the lock file still answers. */
		strcpy(sa.sun_path, path);
		probe = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
		if (probe >= 0) {
			rc = connect(probe, (struct sockaddr *)&sa, sizeof(sa));
			close(probe);
			if (rc == 0) {
				rc = -EADDRINUSE;
				goto fail;
			}
		}
	} else if (errno != ENOENT) {
		rc = -errno;
		goto fail;
	}
	snprintf(tmpdir, sizeof(tmpdir), "%s", path);
	slash = strrchr(tmpdir, '/');
	if (slash)
		snprintf(slash + 1, sizeof(tmpdir) - (size_t)(slash + 1 - tmpdir), ".fluidmemd.XXXXXX");
	else
		snprintf(tmpdir, sizeof(tmpdir), ".fluidmemd.XXXXXX");
	if (strlen(tmpdir) + 3 > sizeof(sa.sun_path)) {
		rc = -ENAMETOOLONG;
		goto fail;
	}
	if (!mkdtemp(tmpdir)) {
		rc = -errno;
		goto fail;
	}
	memcpy(sa.sun_path, tmpdir, strlen(tmpdir));
	memcpy(sa.sun_path + strlen(tmpdir), "/s", 3);
	fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(sa.sun_path, mode) < 0 || listen(fd, 128) < 0 || rename(sa.sun_path, path) < 0) {
		rc = -errno;
		unlink(sa.sun_path);
		rmdir(tmpdir);
		goto fail;
	}
	rmdir(tmpdir);
	*lock_fd = lfd;
	return fd;
fail:
	if (fd >= 0)
		close(fd);
	close(lfd);
	return rc;
}

const char *ctl_listen_strerror(int rc)
{
	switch (rc) {
	case -EADDRINUSE:
		return " (another fluidmemd serves it)";
	case -EEXIST:
		return " (something that is not a socket is there; it was left alone)";
	default:
		return "";
	}
}
