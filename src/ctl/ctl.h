/* ctl: fluidmemd's control plane: configuration, the registration socket
 * that clients hand their regions to, the control socket fluidmemctl talks
 * to, and the wiring of shards and dispatcher. It runs on the daemon's main
 * thread and reaches shards only through their rings.
 *
 * Control protocol, version 1 (SOCK_STREAM unix socket, many clients at once):
 *   request: one line "v1 COMMAND [ARGS...]\n", at most CTL_MAX_REQUEST bytes
 *   reply:   one line of JSON: {"v":1,"ok":true,...} or
 *            {"v":1,"ok":false,"error":"..."}
 *   Commands: see ctl_commands[] in commands.c (help lists them). */
#ifndef FM_CTL_H
#define FM_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/strbuf.h"   /* replies are built in a struct strbuf */
#include "ctl/config.h"

#define CTL_MAX_REQUEST 4096
#define CTL_MAX_REPLY_BUFFER (4u << 20)  /* a reader slower than this is cut off */

struct daemon;

/* Build shards, dispatcher and sockets from cfg. NULL + errno; the reason
 * was logged. */
struct daemon *daemon_create(const struct fm_config *cfg);
/* Defaults, the file at path, then sets[] ("KEY=VALUE", applied in order),
 * then validation: what fluidmemd starts with and SIGHUP reloads. 0 or
 * -EINVAL with the reason in err. */
int ctl_config_load(struct fm_config *c, const char *path, char *const *sets, int nsets,
		    char *err, size_t errlen);
/* Remember where d's configuration came from, for SIGHUP and `config`.
 * 0 or -ENOMEM. */
int daemon_set_config_source(struct daemon *d, const char *path, char *const *sets, int nsets);
/* Serve until SIGINT/SIGTERM or a shutdown command; SIGHUP reloads the
 * configuration (what may change at run time). 0 or -errno. */
int daemon_run(struct daemon *d);
/* Detach every region, stop every thread, remove the sockets. NULL no-op. */
void daemon_destroy(struct daemon *d);

/* What the daemon does after a control request. */
enum ctl_next { CTL_CONTINUE, CTL_SHUTDOWN };

/* Execute one control request line (without the newline) and append the
 * JSON reply line. Pure with respect to sockets: tests call it directly on a
 * daemon. CTL_SHUTDOWN after a successful shutdown command. */
enum ctl_next ctl_execute(struct daemon *d, const char *line, struct strbuf *out);

#endif
