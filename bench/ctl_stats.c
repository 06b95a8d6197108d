/* bench/ctl_stats: fluidmemd's totals over the control socket. */
#include "ctl_stats.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define CTL_REPLY_MAX (1u << 20)
#define CTL_TIMEOUT_S 2

/* End of the JSON value (object, array, string or scalar) starting at p. */
static const char *skip_value(const char *p)
{
	int depth = 0;
	bool in_str = false;

	for (; *p; p++) {
		if (in_str) {
			if (*p == '\\' && p[1])
				p++;
			else if (*p == '"')
				in_str = false;
			if (!in_str && depth == 0)
				return p + 1;
			continue;
		}
		switch (*p) {
		case '"':
			in_str = true;
			break;
		case '{':
		case '[':
			depth++;
			break;
		case '}':
		case ']':
			if (depth == 0)
				return p;   /* end of the enclosing object */
			if (--depth == 0)
				return p + 1;
			break;
		case ',':
			if (depth == 0)
				return p;
			break;
		default:
			break;
		}
	}
	return p;
}

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

/* Value of member `key` of the object at p ('{'), or NULL. Only the object's
 * own members are looked at, so "totals" inside "shards" cannot match. */
static const char *member(const char *p, const char *key)
{
	size_t klen = strlen(key);

	if (*p != '{')
		return NULL;
	p = skip_ws(p + 1);
	while (*p == '"') {
		const char *name = p + 1, *end = name;
		bool match;

		while (*end && *end != '"') {
			if (*end == '\\' && end[1])
				end++;
			end++;
		}
		if (!*end)
			return NULL;
		match = (size_t)(end - name) == klen && memcmp(name, key, klen) == 0;
		p = skip_ws(end + 1);
		if (*p != ':')
			return NULL;
		p = skip_ws(p + 1);
		if (match)
			return p;
		p = skip_ws(skip_value(p));
		if (*p != ',')
			return NULL;
		p = skip_ws(p + 1);
	}
	return NULL;
}

/* The start of totals-style member `obj`.`key`: 0, -ENOENT or -EPROTO. */
static int lookup(const char *json, const char *obj, const char *key, const char **v)
{
	const char *o = member(skip_ws(json), obj);

	if (!o)
		return -ENOENT;
	if (*o != '{')
		return -EPROTO;
	*v = member(o, key);
	return *v ? 0 : -ENOENT;
}

int ctl_json_int(const char *json, const char *obj, const char *key, int64_t *out)
{
	const char *v;
	char *end;
	long long n;
	int rc = lookup(json, obj, key, &v);

	if (rc < 0)
		return rc;
	errno = 0;
	n = strtoll(v, &end, 10);
	if (end == v || errno)
		return -EPROTO;
	*out = n;
	return 0;
}

int ctl_json_double(const char *json, const char *obj, const char *key, double *out)
{
	const char *v;
	char *end;
	double d;
	int rc = lookup(json, obj, key, &v);

	if (rc < 0)
		return rc;
	errno = 0;
	d = strtod(v, &end);
	if (end == v || errno)
		return -EPROTO;
	*out = d;
	return 0;
}

static void copy_excerpt(char *err, size_t errlen, const char *s)
{
	if (errlen)
		snprintf(err, errlen, "%.120s", s);
}

/* Send one request line, read one reply line into *reply (malloc'd; also on
 * -EPROTO, else NULL). 0 or -errno as ctl_stats_query. */
static int ctl_request(const char *path, const char *req, char **reply, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = CTL_TIMEOUT_S };
	size_t len = 0, cap = 4096;
	char *buf = NULL, *nl = NULL;
	const char *ok;
	int fd, rc = 0;

	if (errlen)
		err[0] = '\0';
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    send(fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req)) {
		rc = -errno;
		goto out;
	}
	while (!nl) {
		ssize_t n;

		if (!buf || cap - len < 2) {
			char *nb;

			if (buf)
				cap *= 2;
			if (cap > CTL_REPLY_MAX) {
				rc = -EMSGSIZE;
				goto out;
			}
			nb = realloc(buf, cap);
			if (!nb) {
				rc = -ENOMEM;
				goto out;
			}
			buf = nb;
		}
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
			goto out;
		}
		if (n == 0) {
			rc = -EPROTO;
			buf[len] = '\0';
			copy_excerpt(err, errlen, len ? buf : "(connection closed without a reply)");
			goto out;
		}
		buf[len + (size_t)n] = '\0';
		nl = strchr(buf + len, '\n');
		len += (size_t)n;
	}
	*nl = '\0';
	ok = member(skip_ws(buf), "ok");
	if (!ok || strncmp(ok, "true", 4) != 0) {
		rc = -EPROTO;
		copy_excerpt(err, errlen, buf);
	}
out:
	if (rc < 0 && rc != -EPROTO) {
		free(buf);
		buf = NULL;
	}
	*reply = buf;
	close(fd);
	return rc;
}

int ctl_stats_query(const char *path, struct ctl_totals *out, char *err, size_t errlen)
{
	char *buf = NULL;
	int rc = ctl_request(path, "v1 stats\n", &buf, err, errlen);

	if (rc < 0)
		goto out;
	out->faults = out->evictions = out->resident = out->budget = -1;
	if (ctl_json_int(buf, "totals", "faults", &out->faults) == -EPROTO ||
	    ctl_json_int(buf, "totals", "evictions", &out->evictions) == -EPROTO ||
	    ctl_json_int(buf, "totals", "resident", &out->resident) == -EPROTO ||
	    ctl_json_int(buf, "totals", "budget", &out->budget) == -EPROTO ||
	    !member(skip_ws(buf), "totals")) {
		rc = -EPROTO;
		copy_excerpt(err, errlen, buf);
	}
	/* Optional: older daemons lack some. */
	out->store_puts = out->evict_clean = out->evict_zero = -1;
	ctl_json_int(buf, "totals", "store_puts", &out->store_puts);
	ctl_json_int(buf, "totals", "evict_clean", &out->evict_clean);
	ctl_json_int(buf, "totals", "evict_zero", &out->evict_zero);
out:
	free(buf);
	return rc;
}

int ctl_fetch_latency(const char *path, double *p50_us, double *p99_us, int64_t *count)
{
	char *buf = NULL;
	const char *t, *f, *v;
	int rc = ctl_request(path, "v1 latency\n", &buf, NULL, 0);

	if (rc < 0)
		goto out;
	rc = -ENOENT;
	t = member(skip_ws(buf), "totals");
	f = t && *t == '{' ? member(t, "fetch_ns") : NULL;
	if (!f || *f != '{')
		goto out;
	if ((v = member(f, "p50_us")))
		*p50_us = strtod(v, NULL);
	if ((v = member(f, "p99_us")))
		*p99_us = strtod(v, NULL);
	if ((v = member(f, "count")))
		*count = strtoll(v, NULL, 10);
	rc = v ? 0 : -ENOENT;
out:
	free(buf);
	return rc;
}
