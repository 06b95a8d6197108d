/* bench/ctl_stats: fluidmemd's totals over the control socket. */
#include "ctl_stats.h"

#include <errno.h>
#include <jansson.h>
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

/* Member `key` of object `obj` as an integer: 0, -ENOENT (absent) or
 * -EPROTO (present, not an integer). */
static int get_int(json_t *obj, const char *key, int64_t *out)
{
	json_t *v = json_object_get(obj, key);

	if (!v)
		return -ENOENT;
	if (!json_is_integer(v))
		return -EPROTO;
	*out = json_integer_value(v);
	return 0;
}

static void copy_excerpt(char *err, size_t errlen, const char *s)
{
	if (errlen)
		snprintf(err, errlen, "%.120s", s);
}

/* Send one request line and parse the one reply line into *reply (NULL on
 * error). 0 or -errno as ctl_stats_query. */
static int ctl_request(const char *path, const char *req, json_t **reply, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = CTL_TIMEOUT_S };
	size_t len = 0, cap = 4096;
	char *buf = NULL, *nl = NULL;
	json_t *root = NULL;
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
	root = json_loads(buf, 0, NULL);
	if (!json_is_object(root) || !json_is_true(json_object_get(root, "ok"))) {
		rc = -EPROTO;
		copy_excerpt(err, errlen, buf);
		json_decref(root);
		root = NULL;
	}
out:
	free(buf);
	*reply = root;
	close(fd);
	return rc;
}

int ctl_stats_query(const char *path, struct ctl_totals *out, char *err, size_t errlen)
{
	json_t *reply = NULL, *tot;
	int rc = ctl_request(path, "v1 stats\n", &reply, err, errlen);

	if (rc < 0)
		return rc;
	out->faults = out->evictions = out->resident = out->budget = -1;
	tot = json_object_get(reply, "totals");
	if (!json_is_object(tot) || get_int(tot, "faults", &out->faults) == -EPROTO ||
	    get_int(tot, "evictions", &out->evictions) == -EPROTO ||
	    get_int(tot, "resident", &out->resident) == -EPROTO ||
	    get_int(tot, "budget", &out->budget) == -EPROTO) {
		char *text = json_dumps(reply, JSON_COMPACT);

		rc = -EPROTO;
		copy_excerpt(err, errlen, text ? text : "");
		free(text);
	}
	/* Optional: older daemons lack some. */
	out->store_puts = out->evict_clean = out->evict_zero = -1;
	get_int(tot, "store_puts", &out->store_puts);
	get_int(tot, "evict_clean", &out->evict_clean);
	get_int(tot, "evict_zero", &out->evict_zero);
	json_decref(reply);
	return rc;
}

int ctl_fetch_latency(const char *path, double *p50_us, double *p99_us, int64_t *count)
{
	json_t *reply = NULL, *f, *v;
	int rc = ctl_request(path, "v1 latency\n", &reply, NULL, 0);

	if (rc < 0)
		return rc;
	rc = -ENOENT;
	f = json_object_get(json_object_get(reply, "totals"), "fetch_ns");
	if (json_is_object(f)) {
		if (json_is_number(v = json_object_get(f, "p50_us")))
			*p50_us = json_number_value(v);
		if (json_is_number(v = json_object_get(f, "p99_us")))
			*p99_us = json_number_value(v);
		if (json_is_number(v = json_object_get(f, "count"))) {
			*count = (int64_t)json_number_value(v);
			rc = 0;
		}
	}
	json_decref(reply);
	return rc;
}
