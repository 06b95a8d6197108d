/* client/maps: a /proc/self/maps reader for the preload shim (maps.h). */
#include "client/maps.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* The fields we parse fit well within this; the path after them is skipped. */
#define LINE_KEEP 160

static const char *hex(const char *p, uintptr_t *out)
{
	uintptr_t v = 0;

	for (;; p++) {
		unsigned d;

		if (*p >= '0' && *p <= '9')
			d = (unsigned)(*p - '0');
		else if (*p >= 'a' && *p <= 'f')
			d = (unsigned)(*p - 'a' + 10);
		else
			break;
		v = v * 16 + d;
	}
	*out = v;
	return p;
}

/* "lo-hi perms offset maj:min inode [path]" -> v. False when malformed. */
static bool parse(const char *p, struct fm_vma *v)
{
	uintptr_t x;

	p = hex(p, &v->lo);
	if (*p++ != '-')
		return false;
	p = hex(p, &v->hi);
	if (*p++ != ' ' || strlen(p) < 5 || p[4] != ' ')
		return false;
	memcpy(v->perms, p, 4);
	v->perms[4] = '\0';
	p = hex(p + 5, &x);          /* offset */
	if (*p++ != ' ')
		return false;
	p = hex(p, &x);
	v->dev_major = (unsigned)x;
	if (*p++ != ':')
		return false;
	p = hex(p, &x);
	v->dev_minor = (unsigned)x;
	if (*p++ != ' ')
		return false;
	v->ino = 0;
	for (; *p >= '0' && *p <= '9'; p++)
		v->ino = v->ino * 10 + (unsigned long)(*p - '0');
	return v->hi > v->lo;
}

int fm_maps_walk(fm_vma_fn fn, void *arg)
{
	char buf[4096], line[LINE_KEEP + 1];
	size_t len = 0;
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			struct fm_vma v;

			if (buf[i] != '\n') {
				if (len < LINE_KEEP)
					line[len++] = buf[i];
				continue;
			}
			line[len] = '\0';
			len = 0;
			if (parse(line, &v) && !fn(&v, arg)) {
				close(fd);
				return 0;
			}
		}
	}
	n = n < 0 ? -errno : 0;
	close(fd);
	return (int)n;
}
