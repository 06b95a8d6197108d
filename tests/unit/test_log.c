/* Log lines as an operator reads them (issue 13): ISO 8601 times with the
 * date, syslog priorities when stderr is the journal, and rate limits that
 * say how much they dropped. */
#include <criterion/criterion.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"

static char path[64];

/* Point stderr at a fresh file; returns its fd's stat. */
static struct stat capture(void)
{
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "/tmp/fmlog.XXXXXX");
	fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	fflush(stderr);
	dup2(fd, 2);
	close(fd);
	fstat(2, &st);
	fm_log_reset_sink();
	fm_log_set_level(FM_LOG_DEBUG);
	return st;
}

static char *captured(void)
{
	static char buf[8192];
	FILE *f;
	size_t n;

	fflush(stderr);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	unlink(path);
	return buf;
}

static bool matches(const char *s, const char *re)
{
	regex_t r;
	bool ok;

	cr_assert_eq(regcomp(&r, re, REG_EXTENDED | REG_NEWLINE), 0);
	ok = regexec(&r, s, 0, NULL, 0) == 0;
	regfree(&r);
	return ok;
}

Test(log, plain_lines_carry_an_iso8601_time_with_the_date)
{
	char *out, date[16];
	time_t now = time(NULL);

	unsetenv("JOURNAL_STREAM");
	capture();
	fm_log_set_prog("fmtest");
	FM_WARN("hello %d", 42);
	out = captured();
	cr_expect(matches(out, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}"
			       "[+-][0-9]{2}:[0-9]{2} fmtest warn: hello 42$"),
		  "got: %s", out);
	strftime(date, sizeof(date), "%Y-%m-%d", localtime(&now));
	cr_expect(strncmp(out, date, 10) == 0 || now / 86400 != time(NULL) / 86400, "got: %s", out);
}

Test(log, journal_lines_carry_priorities)
{
	struct stat st = capture();
	char js[64];
	char *out;

	snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", js, 1);
	fm_log_reset_sink();
	fm_log_set_prog("fmtest");
	cr_assert(fm_log_stderr_is_journal());
	FM_ERR("e");
	FM_WARN("w");
	FM_INFO("i");
	fm_log_write(FM_LOG_DEBUG, "d");
	out = captured();
	cr_expect_str_eq(out, "<3>fmtest error: e\n<4>fmtest warn: w\n<6>fmtest info: i\n"
			      "<7>fmtest debug: d\n");
}

Test(log, another_stream_is_not_the_journal)
{
	struct stat st = capture();
	char js[64];

	/* The variable is inherited by children whose stderr went elsewhere. */
	snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino + 1);
	setenv("JOURNAL_STREAM", js, 1);
	fm_log_reset_sink();
	cr_expect(!fm_log_stderr_is_journal());
	FM_INFO("x");
	cr_expect(matches(captured(), "^[0-9]{4}-"));
}

static void chatty(int i)
{
	fm_log_ratelimited(FM_LOG_WARN, "the same complaint, %d", i);
}

Test(log, repeated_lines_are_limited_and_counted)
{
	struct fm_ratelimit rl = { 0 };
	uint32_t dropped;
	unsigned allowed = 0;
	const char *p;
	char *out;
	int lines = 0;

	unsetenv("JOURNAL_STREAM");
	capture();
	for (int i = 0; i < 50; i++)
		chatty(i);
	out = captured();
	for (p = out; (p = strchr(p, '\n')); p++)
		lines++;
	cr_expect_eq(lines, FM_LOG_BURST, "%d lines:\n%s", lines, out);

	/* The next window's first line reports what the last one dropped. */
	for (int i = 0; i < 12; i++)
		allowed += fm_ratelimit_ok(&rl, 5, 50, &dropped);
	cr_expect_eq(allowed, 5);
	usleep(60 * 1000);
	cr_expect(fm_ratelimit_ok(&rl, 5, 50, &dropped));
	cr_expect_eq(dropped, 7);
}
