#include "ctl/shardcount.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"

static int applies(const char *backend, const char *dir)
{
	return !strcmp(backend, "local") && dir[0];
}

int64_t fm_shard_count_recorded(const char *dir)
{
	char path[PATH_MAX], buf[32];
	int fd;

	if (snprintf(path, sizeof(path), "%s/" FM_SHARD_COUNT_FILE, dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		int err = errno;
		char *end;

		close(fd);
		if (n < 0)
			return -err;
		buf[n] = 0;
		errno = 0;
		unsigned long v = strtoul(buf, &end, 10);
		if (errno || end == buf || (*end && *end != '\n') || v == 0 || v > UINT32_MAX)
			return -EBADMSG;
		return (int64_t)v;
	}
	if (errno != ENOENT)
		return -errno;
	/* No record: a store from before it, or none. Its files say how many
	 * shards wrote it (every shard creates its file when it opens). */
	DIR *dp = opendir(dir);
	int64_t most = 0;

	if (!dp)
		return errno == ENOENT ? 0 : -errno;
	for (struct dirent *e; (e = readdir(dp));) {
		unsigned shard;
		int used = 0;

		if (!strncmp(e->d_name, "shard-", 6) && isdigit((unsigned char)e->d_name[6]) &&
		    sscanf(e->d_name, "shard-%u.fmkv%n", &shard, &used) == 1 &&
		    (size_t)used == strlen(e->d_name) && (int64_t)shard + 1 > most)
			most = (int64_t)shard + 1;
	}
	closedir(dp);
	return most;
}

int fm_shard_count_check(const char *backend, const char *dir, uint32_t count, char *err,
			 size_t cap)
{
	if (!applies(backend, dir))
		return 0;
	int64_t was = fm_shard_count_recorded(dir);

	if (was < 0) {
		snprintf(err, cap, "cannot read the shard count of the local store under %s "
			 "(%s/" FM_SHARD_COUNT_FILE "): %s", dir, dir, strerror((int)-was));
		return -1;
	}
	if (was == 0 || was == count)
		return 0;
	snprintf(err, cap,
		 "shards.count is %u but the local store under %s was written with %" PRId64
		 " shards: its pages would be looked up in the wrong shard's file and lost. "
		 "Set shards.count = %" PRId64 " (or --set shards.count=%" PRId64 "), or, to "
		 "drop every stored page, stop the clients and remove %s and daemon.state_dir",
		 count, dir, was, was, was, dir);
	return -1;
}

int fm_shard_count_record(const char *backend, const char *dir, uint32_t count)
{
	char path[PATH_MAX], tmp[PATH_MAX], buf[16];
	int fd, dfd, rc = 0, len;

	if (!applies(backend, dir))
		return 0;
	if (snprintf(path, sizeof(path), "%s/" FM_SHARD_COUNT_FILE, dir) >= (int)sizeof(path) ||
	    snprintf(tmp, sizeof(tmp), "%s/" FM_SHARD_COUNT_FILE ".tmp", dir) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	if (access(path, F_OK) == 0 && fm_shard_count_recorded(dir) == count)
		return 0;   /* already there: no write at every start */
	len = snprintf(buf, sizeof(buf), "%u\n", count);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, buf, (size_t)len) != len || fsync(fd) < 0)
		rc = errno ? -errno : -EIO;
	close(fd);
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0) {
		unlink(tmp);
		return rc;
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		if (fsync(dfd) < 0)
			rc = -errno;
		close(dfd);
	}
	return rc;
}
