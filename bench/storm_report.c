/* bench/storm_report: fault-storm's human summary and JSON object. */
#include "storm_report.h"

#include "base/base.h"

#include <inttypes.h>
#include <stdio.h>

static double us(uint64_t ns)
{
	return (double)ns / 1000.0;
}

static double q_us(const struct fm_hist *h, double q)
{
	return us(fm_hist_quantile(h, q));
}

static double per_s(uint64_t n, double s)
{
	return s > 0 ? (double)n / s : 0;
}

/* Faults per second after the first pass: with --pattern seq and a region
 * larger than the budget these are all refaults. */
static double steady_faults_per_s(const struct storm_opts *o, const struct storm_result *s)
{
	uint64_t n = 0;
	double wall = 0;

	for (unsigned p = 1; p < o->passes; p++) {
		n += s->pass[p].faults;
		wall += s->pass[p].wall_s;
	}
	return per_s(n, wall);
}

static void summary_hist(FILE *f, const char *name, const struct fm_hist *h, double wall)
{
	fprintf(f, "  %-12s %9" PRIu64 "  (%8.0f/s)   p50 %7.1f  p99 %7.1f  p99.9 %7.1f  max %8.1f us\n",
		name, h->count, per_s(h->count, wall), q_us(h, 0.5), q_us(h, 0.99), q_us(h, 0.999),
		us(h->max));
}

void report_summary(FILE *f, const struct storm_opts *o, const struct run_report *r)
{
	const struct storm_result *s = &r->res;

	if (!r->ran) {
		fprintf(f, "fault-storm [%s]: did not run: %s\n", r->mode, r->error);
		return;
	}
	fprintf(f, "fault-storm [%s]: pattern %s", r->mode, storm_pattern_name(o->pattern));
	if (o->pattern == STORM_ZIPF)
		fprintf(f, " (s=%.2f)", o->zipf_s);
	fprintf(f, ", %" PRIu64 " pages (%.1f MiB), %u threads, %u passes, write ratio %.2f, budget ",
		o->pages, (double)(o->pages * FM_PAGE_SIZE) / (1 << 20), o->threads, o->passes,
		o->write_ratio);
	if (r->budget >= 0)
		fprintf(f, "%" PRId64 " pages\n", r->budget);
	else
		fprintf(f, "unknown\n");
	fprintf(f, "  accesses     %9" PRIu64 "  in %.3f s (%.0f/s): %" PRIu64 " reads, %" PRIu64
		   " writes; a fault is an access > %.1f us\n",
		s->accesses, s->wall_s, per_s(s->accesses, s->wall_s), s->reads, s->writes,
		o->fault_threshold_us);
	summary_hist(f, "faults", &s->all, s->wall_s);
	summary_hist(f, "first touch", &s->first, s->wall_s);
	summary_hist(f, "refault", &s->refault, s->wall_s);
	for (unsigned p = 0; p < o->passes && o->passes <= 10; p++)
		fprintf(f, "  pass %-7u %9" PRIu64 "  (%8.0f/s)   %" PRIu64 " first touches, %.3f s\n",
			p + 1, s->pass[p].faults, per_s(s->pass[p].faults, s->pass[p].wall_s),
			s->pass[p].first, s->pass[p].wall_s);
	if (o->passes > 1)
		fprintf(f, "  after pass 1: %.0f faults/s\n", steady_faults_per_s(o, s));
	if (r->evictions >= 0)
		fprintf(f, "  evictions    %9" PRId64 "  (%s)\n", r->evictions, r->evictions_source);
	else
		fprintf(f, "  evictions    unknown (%s)\n", r->evictions_source);
	if (r->raw)
		fprintf(f,
			"  handler      raw, cpu %d: %" PRIu64 " MISSING (%" PRIu64 " zeropage, %" PRIu64
			" copy, %" PRIu64 " wake), %" PRIu64 " WP, %" PRIu64 " EEXIST, %" PRIu64 " EAGAIN\n",
			o->raw_cpu, r->raw_st.faults, r->raw_st.zeropages, r->raw_st.copies,
			r->raw_st.wakes, r->raw_st.wp_faults, r->raw_st.eexist, r->raw_st.eagain);
	else if (r->handler_faults >= 0)
		fprintf(f, "  daemon       %" PRId64 " faults counted by fluidmemd\n", r->handler_faults);
	if (!r->raw && r->store_puts >= 0 && r->evictions > 0)
		fprintf(f, "  store        %" PRId64 " page writes (%.3f per eviction), %" PRId64
			   " clean and %" PRId64 " zero evictions without a write\n",
			r->store_puts, (double)r->store_puts / (double)r->evictions, r->evict_clean,
			r->evict_zero);
	if (!r->raw && r->fetch_p50_us >= 0)
		fprintf(f, "  store get    p50 %7.1f  p99 %7.1f us (fluidmemd's own timing)\n",
			r->fetch_p50_us, r->fetch_p99_us);
	if (o->verify)
		fprintf(f, "  verify       %" PRIu64 " errors (final check of every page took %.3f s)\n",
			s->verify_errors, s->final_check_s);
	else
		fprintf(f, "  verify       off (%" PRIu64 " errors)\n", s->verify_errors);
	fprintf(f, "  wall         %.3f s\n", s->wall_s);
	if (*r->error)
		fprintf(f, "  ERROR        %s\n", r->error);
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

void report_json_run(FILE *f, const struct storm_opts *o, const struct run_report *r)
{
	const struct storm_result *s = &r->res;

	fprintf(f, "\"mode\":");
	json_str(f, r->mode);
	if (!r->ran) {
		fprintf(f, ",\"error\":");
		json_str(f, r->error);
		return;
	}
	fprintf(f, ",\"pattern\":\"%s\",\"zipf_s\":%g,\"pages\":%" PRIu64
		   ",\"threads\":%u,\"passes\":%u,\"write_ratio\":%g,\"seed\":%" PRIu64
		   ",\"verify\":%s,\"fault_threshold_us\":%g,\"budget\":%" PRId64,
		storm_pattern_name(o->pattern), o->zipf_s, o->pages, o->threads, o->passes,
		o->write_ratio, o->seed, o->verify ? "true" : "false", o->fault_threshold_us,
		r->budget);
	fprintf(f, ",\"content\":\"%s\"", o->text ? "text" : o->noise ? "noise" : "random");
	fprintf(f, ",\"accesses\":%" PRIu64 ",\"reads\":%" PRIu64 ",\"writes\":%" PRIu64
		   ",\"accesses_per_s\":%.1f",
		s->accesses, s->reads, s->writes, per_s(s->accesses, s->wall_s));
	fprintf(f, ",\"faults\":%" PRIu64 ",\"faults_per_s\":%.1f,\"p50_us\":%.2f,\"p99_us\":%.2f"
		   ",\"p999_us\":%.2f,\"max_us\":%.2f,\"mean_us\":%.2f",
		s->all.count, per_s(s->all.count, s->wall_s), q_us(&s->all, 0.5), q_us(&s->all, 0.99),
		q_us(&s->all, 0.999), us(s->all.max),
		s->all.count ? us(s->all.sum) / (double)s->all.count : 0.0);
	fprintf(f, ",\"first_touch_faults\":%" PRIu64 ",\"first_touch_p50_us\":%.2f"
		   ",\"first_touch_p99_us\":%.2f,\"first_touch_p999_us\":%.2f",
		s->first.count, q_us(&s->first, 0.5), q_us(&s->first, 0.99), q_us(&s->first, 0.999));
	fprintf(f, ",\"refaults\":%" PRIu64 ",\"refaults_per_s\":%.1f,\"refault_p50_us\":%.2f"
		   ",\"refault_p99_us\":%.2f,\"refault_p999_us\":%.2f",
		s->refault.count, per_s(s->refault.count, s->wall_s), q_us(&s->refault, 0.5),
		q_us(&s->refault, 0.99), q_us(&s->refault, 0.999));
	fprintf(f, ",\"steady_faults_per_s\":%.1f,\"per_pass\":[", steady_faults_per_s(o, s));
	for (unsigned p = 0; p < o->passes; p++)
		fprintf(f, "%s{\"wall_s\":%.6f,\"faults\":%" PRIu64 ",\"first_touch_faults\":%" PRIu64 "}",
			p ? "," : "", s->pass[p].wall_s, s->pass[p].faults, s->pass[p].first);
	fprintf(f, "]");
	fprintf(f, ",\"evictions\":%" PRId64 ",\"evictions_source\":", r->evictions);
	json_str(f, r->evictions_source ? r->evictions_source : "");
	fprintf(f, ",\"handler_faults\":%" PRId64 ",\"verify_errors\":%" PRIu64
		   ",\"wall_s\":%.6f,\"final_check_s\":%.6f,\"timer\":\"%s\"",
		r->handler_faults, s->verify_errors, s->wall_s, s->final_check_s, TIMER_NAME);
	if (!r->raw)
		fprintf(f, ",\"store_puts\":%" PRId64 ",\"evict_clean\":%" PRId64
			   ",\"evict_zero\":%" PRId64 ",\"writes_per_eviction\":%.4f"
			   ",\"daemon_fetch_p50_us\":%.2f,\"daemon_fetch_p99_us\":%.2f",
			r->store_puts, r->evict_clean, r->evict_zero,
			r->store_puts >= 0 && r->evictions > 0
				? (double)r->store_puts / (double)r->evictions : -1.0,
			r->fetch_p50_us, r->fetch_p99_us);
	if (r->raw)
		fprintf(f, ",\"handler\":{\"cpu\":%d,\"faults\":%" PRIu64 ",\"wp_faults\":%" PRIu64
			   ",\"zeropages\":%" PRIu64 ",\"copies\":%" PRIu64 ",\"wakes\":%" PRIu64
			   ",\"eexist\":%" PRIu64 ",\"eagain\":%" PRIu64 ",\"other_events\":%" PRIu64
			   ",\"evictions\":%" PRIu64 "}",
			o->raw_cpu, r->raw_st.faults, r->raw_st.wp_faults, r->raw_st.zeropages, r->raw_st.copies,
			r->raw_st.wakes, r->raw_st.eexist, r->raw_st.eagain, r->raw_st.other_events,
			r->raw_st.evictions);
	if (*r->error) {
		fprintf(f, ",\"error\":");
		json_str(f, r->error);
	}
}

void report_probe_summary(FILE *f, const char *server, const struct mc_probe *pr)
{
	fprintf(f, "memcached direct get (%s, %" PRIu64 " gets): p50 %.1f  p99 %.1f us\n", server,
		pr->get.count, q_us(&pr->get, 0.5), q_us(&pr->get, 0.99));
}

void report_probe_json(FILE *f, const struct mc_probe *pr)
{
	if (pr->ran) {
		fprintf(f, ",\"store_get_p50_us\":%.2f,\"store_get_p99_us\":%.2f"
			   ",\"store_get_samples\":%" PRIu64,
			q_us(&pr->get, 0.5), q_us(&pr->get, 0.99), pr->get.count);
	} else {
		fprintf(f, ",\"store_get_error\":");
		json_str(f, pr->error);
	}
}
