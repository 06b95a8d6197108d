/* fluidmem-run: run an unmodified program (QEMU) with the preload shim, so
 * its guest RAM and hot-plugged memory are served by fluidmemd. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_version.h"
#include "client/fluidmem.h"
#include "client/preload.h"

/* Set by CMake from the install layout (GNUInstallDirs). */
#ifndef FM_PRELOAD_INSTALL_REL
#define FM_PRELOAD_INSTALL_REL "../lib/fluidmem"
#endif
#ifndef FM_PRELOAD_INSTALL_ABS
#define FM_PRELOAD_INSTALL_ABS "/usr/local/lib/fluidmem"
#endif

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fluidmem-run [OPTIONS] -- COMMAND [ARGS...]\n"
		"\n"
		"Run COMMAND with LD_PRELOAD=" FM_PRELOAD_LIB ": every large memory mapping it\n"
		"makes (QEMU guest RAM: default -m RAM, memory-backend-ram, memory-backend-memfd,\n"
		"and DIMMs hot-plugged later over QMP) is registered with fluidmemd before\n"
		"COMMAND can touch it. Anonymous RAM that QEMU places into a reservation\n"
		"becomes a memfd-backed shared mapping; other anonymous memory is left alone.\n"
		"fluidmemd must be running: it is checked first.\n"
		"\n"
		"Options:\n"
		"  -s, --socket PATH    fluidmemd registration socket\n"
		"                       (default $FLUIDMEM_SOCKET, else " FM_DEFAULT_REGISTER_SOCKET ")\n"
		"  -m, --min-size N     smallest mapping taken over; bytes or K/M/G suffix\n"
		"                       (default $FLUIDMEM_MIN_SIZE, else 64M)\n"
		"  -M, --match LIST     comma-separated substrings: take a memfd whose name\n"
		"                       contains one, and anonymous memory if LIST has \"anon\"\n"
		"                       (default $FLUIDMEM_MATCH, else everything large)\n"
		"  -n, --name NAME      name every region NAME in fluidmemctl regions (default\n"
		"                       $FLUIDMEM_NAME, else QEMU's -name guest=NAME, which is\n"
		"                       the libvirt domain's name, else what QEMU maps)\n"
		"  -d, --debug          the shim reports what it takes and skips on stderr\n"
		"  -p, --preload PATH   shim library (default: " FM_PRELOAD_INSTALL_REL "/" FM_PRELOAD_LIB "\n"
		"                       beside this program, else ../lib/ beside it (build tree),\n"
		"                       else " FM_PRELOAD_INSTALL_ABS ")\n"
		"  -V, --version        print \"fluidmem-run VERSION\" and exit\n"
		"  -h, --help           this text\n"
		"\n"
		"Environment passed to COMMAND (the shim reads these; set them yourself to\n"
		"use LD_PRELOAD without fluidmem-run):\n"
		"  LD_PRELOAD           the shim, before anything already there\n"
		"  FLUIDMEM_SOCKET      registration socket\n"
		"  FLUIDMEM_MIN_SIZE    size threshold\n"
		"  FLUIDMEM_MATCH       name filter\n"
		"  FLUIDMEM_NAME        the regions' name\n"
		"  FLUIDMEM_DEBUG=1     verbose shim\n"
		"  FLUIDMEM_TIMEOUT     seconds to wait for fluidmemd's answer (default 30)\n"
		"  FLUIDMEM_RECONNECT_MIN_MS, FLUIDMEM_RECONNECT_MAX_MS\n"
		"                       backoff when fluidmemd restarts (default 50, 2000)\n"
		"\n"
		"If fluidmemd refuses or cannot be reached when the first mapping is made,\n"
		"COMMAND exits with the reason; a refused later mapping (a hot-plug) fails\n"
		"with ENOMEM and COMMAND keeps running. Do not use QEMU's prealloc=on: it\n"
		"touches every page at start and defeats serving on demand.\n"
		"\n"
		"Example:\n"
		"  fluidmem-run -- qemu-system-x86_64 -m 512M,slots=4,maxmem=4G \\\n"
		"      -object memory-backend-memfd,id=mem0,size=512M -machine memory-backend=mem0 ...\n"
		"\n"
		"Exit status: COMMAND's; 2 bad usage; 3 fluidmemd not reachable; 127 COMMAND\n"
		"or the shim not found.\n");
}

/* Where the shim is, first found wins: installed beside us (bindir ->
 * libdir/fluidmem, relative so a DESTDIR or moved tree works), the build
 * tree (build/bin -> build/lib), then the configured install path. */
static int default_preload(char *out, size_t cap)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	if (n > 0) {
		exe[n] = '\0';
		slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			if ((size_t)snprintf(out, cap, "%s/%s/%s", exe, FM_PRELOAD_INSTALL_REL,
					     FM_PRELOAD_LIB) < cap &&
			    access(out, R_OK) == 0)
				return 0;
			if ((size_t)snprintf(out, cap, "%s/../lib/%s", exe, FM_PRELOAD_LIB) < cap &&
			    access(out, R_OK) == 0)
				return 0;
		}
	}
	if ((size_t)snprintf(out, cap, "%s/%s", FM_PRELOAD_INSTALL_ABS, FM_PRELOAD_LIB) >= cap)
		return -1;
	return 0;
}

/* The VM name in QEMU's "-name guest=NAME,debug-threads=on" (libvirt's
 * form) or "-name NAME[,...]"; a ",," in it is a comma. NULL if none. */
static char *qemu_guest_name(char **argv)
{
	char *out = NULL;

	for (; *argv; argv++) {
		const char *v = argv[1], *start = NULL;
		size_t n = 0;

		if (strcmp(argv[0], "-name") != 0 || !v)
			continue;
		/* Walk the comma-separated options: the first may be bare. */
		for (const char *opt = v; *opt;) {
			const char *end = opt;

			while (*end && !(end[0] == ',' && end[1] != ',')) {
				if (end[0] == ',')
					end++;   /* ",," */
				end++;
			}
			if (strncmp(opt, "guest=", 6) == 0)
				start = opt + 6, n = (size_t)(end - start);
			else if (opt == v && !memchr(opt, '=', (size_t)(end - opt)))
				start = opt, n = (size_t)(end - opt);
			opt = *end ? end + 1 : end;
		}
		if (!start || !n)
			continue;
		free(out);
		out = malloc(n + 1);
		if (!out)
			return NULL;
		{
			size_t k = 0;

			for (size_t i = 0; i < n; i++) {
				out[k++] = start[i];
				if (start[i] == ',' && i + 1 < n && start[i + 1] == ',')
					i++;
			}
			out[k] = '\0';
		}
	}
	return out;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "min-size", required_argument, NULL, 'm' },
		{ "match", required_argument, NULL, 'M' },
		{ "name", required_argument, NULL, 'n' },
		{ "debug", no_argument, NULL, 'd' },
		{ "preload", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sock = getenv("FLUIDMEM_SOCKET"), *min = getenv("FLUIDMEM_MIN_SIZE");
	const char *match = NULL, *name = getenv("FLUIDMEM_NAME"), *old;
	char preload[PATH_MAX], real[PATH_MAX], *ld, *guest = NULL;
	struct fm_client *c;
	uint64_t bytes;
	int opt, debug = 0;

	preload[0] = '\0';
	while ((opt = getopt_long(argc, argv, "+s:m:M:n:dp:hV", opts, NULL)) != -1) {
		switch (opt) {
		case 's': sock = optarg; break;
		case 'm': min = optarg; break;
		case 'M': match = optarg; break;
		case 'n': name = optarg; break;
		case 'd': debug = 1; break;
		case 'p': snprintf(preload, sizeof(preload), "%s", optarg); break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("fluidmem-run %s\n", FM_VERSION); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "fluidmem-run: no command given (try --help)\n");
		return 2;
	}
	if (min && *min && fm_parse_size(min, &bytes) < 0) {
		fprintf(stderr,
			"fluidmem-run: --min-size (or FLUIDMEM_MIN_SIZE) \"%s\" is not a size "
			"(examples: 64M, 1G, 1048576)\n",
			min);
		return 2;
	}
	if (!sock || !*sock)
		sock = FM_DEFAULT_REGISTER_SOCKET;
	if (!name || !*name)
		name = guest = qemu_guest_name(argv + optind + 1);
	if (!preload[0] && default_preload(preload, sizeof(preload)) < 0) {
		fprintf(stderr, "fluidmem-run: cannot find my own location; use --preload\n");
		return 127;
	}
	/* LD_PRELOAD wants a path the program can open from any directory. */
	if (!realpath(preload, real) || access(real, R_OK) < 0) {
		fprintf(stderr, "fluidmem-run: preload library %s: %s\n", preload, strerror(errno));
		return 127;
	}
	c = fm_connect(sock);
	if (!c) {
		fprintf(stderr,
			"fluidmem-run: fluidmemd is not reachable at %s: %s\n"
			"  start it first (fluidmemd --config configs/local.toml) or pass --socket\n",
			sock, strerror(errno));
		return 3;
	}
	fm_disconnect(c);

	old = getenv("LD_PRELOAD");
	if (asprintf(&ld, "%s%s%s", real, old && *old ? ":" : "", old && *old ? old : "") < 0) {
		perror("fluidmem-run");
		return 1;
	}
	if (setenv("LD_PRELOAD", ld, 1) < 0 || setenv("FLUIDMEM_SOCKET", sock, 1) < 0 ||
	    (min && *min && setenv("FLUIDMEM_MIN_SIZE", min, 1) < 0) ||
	    (match && setenv("FLUIDMEM_MATCH", match, 1) < 0) ||
	    (name && *name && setenv("FLUIDMEM_NAME", name, 1) < 0) ||
	    (debug && setenv("FLUIDMEM_DEBUG", "1", 1) < 0)) {
		perror("fluidmem-run: setenv");
		return 1;
	}
	free(ld);
	free(guest);
	execvp(argv[optind], argv + optind);
	fprintf(stderr, "fluidmem-run: cannot run %s: %s\n", argv[optind], strerror(errno));
	return 127;
}
