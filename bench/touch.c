/* touch: the one instrumented program bench/kernel-compare runs in every
 * configuration. It runs fault-storm's workload (bench/workload.c: the same
 * patterns, stamps and per-access timing) on memory it gets either
 *  - "anon": an ordinary anonymous mapping, placed MAP_FIXED into a
 *    PROT_NONE reservation as QEMU places guest RAM. Run plainly, the kernel
 *    serves it (and swaps it under a memory cgroup limit); run under
 *    fluidmem-run, the preload shim puts it on fluidmemd;
 *  - "raw": the in-process raw userfaultfd handler (bench/raw_uffd.c).
 * It prints fault-storm's JSON object plus "refault_hist", the sparse
 * histogram of faulting refault latencies as [low_ns, count] pairs, from
 * which bench/kernel-compare-plot draws the CDFs. */
#include "base/hist.h"
#include "raw_uffd.h"
#include "storm.h"
#include "storm_report.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: touch --mem anon|raw [--pages N] [--threads T] [--passes K]\n"
		   "             [--pattern seq|random|zipf] [--budget PAGES (raw)] [--write-ratio R]\n"
		   "             [--seed N] [--content random|text|noise] [--verify]\n"
		   "Run fault-storm's workload on anonymous memory or on the raw handler and\n"
		   "print one JSON object (see bench/README.md, issue 11).\n");
}

static void *map_anon(uint64_t pages)
{
	size_t len = pages * 4096;
	void *res, *p;

	/* The reservation first, then the RAM placed into it: what the shim
	 * takes, and for the kernel an ordinary private anonymous mapping. */
	res = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED)
		return NULL;
	p = mmap(res, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void raw_done(void *arg)
{
	raw_uffd_quiesce(arg, 1000);
}

int main(int argc, char **argv)
{
	struct storm_opts o = {
		.pages = 16384, .threads = 1, .passes = 4, .pattern = STORM_RANDOM, .zipf_s = 0.99,
		.write_ratio = 0.5, .seed = 1, .fault_threshold_us = 3.0, .budget = 4096,
		.raw_cpu = -1, .json = true, .quiet = true,
	};
	struct run_report rep;
	struct raw_uffd *raw = NULL;
	const char *mem = NULL;
	char err[256] = "";
	void *base;
	int rc;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--verify")) {
			o.verify = true;
			continue;
		}
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		}
		if (!v) {
			usage(stderr);
			return 2;
		}
		i++;
		if (!strcmp(a, "--mem"))
			mem = v;
		else if (!strcmp(a, "--pages"))
			o.pages = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--threads"))
			o.threads = (unsigned)strtoul(v, NULL, 0);
		else if (!strcmp(a, "--passes"))
			o.passes = (unsigned)strtoul(v, NULL, 0);
		else if (!strcmp(a, "--budget"))
			o.budget = strtoll(v, NULL, 0);
		else if (!strcmp(a, "--write-ratio"))
			o.write_ratio = strtod(v, NULL);
		else if (!strcmp(a, "--seed"))
			o.seed = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--content") && (!strcmp(v, "random") || !strcmp(v, "text") ||
						     !strcmp(v, "noise"))) {
			o.text = !strcmp(v, "text");
			o.noise = !strcmp(v, "noise");
		}
		else if (!strcmp(a, "--pattern")) {
			int p = storm_pattern_parse(v);

			if (p < 0) {
				usage(stderr);
				return 2;
			}
			o.pattern = (enum storm_pattern)p;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (!mem || (strcmp(mem, "anon") && strcmp(mem, "raw")) || o.pages == 0 || o.threads == 0 ||
	    o.threads > STORM_MAX_THREADS || o.passes == 0 || o.passes > STORM_MAX_PASSES ||
	    o.budget <= 0) {
		usage(stderr);
		return 2;
	}
	memset(&rep, 0, sizeof(rep));
	rep.budget = rep.evictions = rep.handler_faults = -1;
	rep.store_puts = rep.evict_clean = rep.evict_zero = -1;
	rep.fetch_p50_us = rep.fetch_p99_us = -1;
	if (!strcmp(mem, "raw")) {
		raw = raw_uffd_create(o.pages, (uint64_t)o.budget, -1, err, sizeof(err));
		if (!raw) {
			fprintf(stderr, "touch: raw handler: %s\n", err);
			return 4;
		}
		base = raw_uffd_addr(raw);
		rep.mode = "raw";
		rep.raw = true;
		rep.budget = o.budget;
	} else {
		base = map_anon(o.pages);
		if (!base) {
			fprintf(stderr, "touch: mmap of %" PRIu64 " pages: %s\n", o.pages, strerror(errno));
			return 4;
		}
		rep.mode = "anon";
	}
	rep.evictions_source = raw ? "raw handler" : "not counted by the program";
	rc = storm_run(&o, base, &rep.res, raw ? raw_done : NULL, raw);
	if (raw) {
		struct raw_uffd_stats st;

		raw_uffd_get_stats(raw, &st);
		rep.raw_st = st;
		rep.evictions = (int64_t)st.evictions;
		rep.handler_faults = (int64_t)st.faults;
		if (*raw_uffd_error(raw))
			snprintf(rep.error, sizeof(rep.error), "%s", raw_uffd_error(raw));
		raw_uffd_destroy(raw);
	} else {
		munmap(base, o.pages * 4096);
	}
	if (rc < 0) {
		fprintf(stderr, "touch: running the workload: %s\n", strerror(-rc));
		return 4;
	}
	rep.ran = true;
	printf("{");
	report_json_run(stdout, &o, &rep);
	printf(",\"refault_hist\":[");
	for (unsigned i = 0, n = 0; i < FM_HIST_BUCKETS; i++) {
		if (!rep.res.refault.bucket[i])
			continue;
		printf("%s[%" PRIu64 ",%" PRIu64 "]", n++ ? "," : "", fm_hist_bucket_low(i),
		       rep.res.refault.bucket[i]);
	}
	printf("]}\n");
	rc = rep.res.verify_errors ? 1 : *rep.error ? 4 : 0;
	storm_result_free(&rep.res);
	return rc;
}
