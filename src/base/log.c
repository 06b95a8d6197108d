#include "base/log.h"
#include "base/base.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int fm_log_level = FM_LOG_INFO;
static const char *log_prog = "fluidmem";
static const char *const level_names[FM_LOG_LEVEL_NR] = { "error", "warn", "info", "debug" };

void fm_log_set_prog(const char *prog)
{
	log_prog = prog;
}

const char *fm_log_level_name(int level)
{
	if (level < 0 || level >= FM_LOG_LEVEL_NR)
		return "?";
	return level_names[level];
}

int fm_log_level_parse(const char *name)
{
	for (int i = 0; i < FM_LOG_LEVEL_NR; i++)
		if (strcmp(name, level_names[i]) == 0)
			return i;
	return -1;
}

/* syslog priorities (sd-daemon.h's SD_ERR..SD_DEBUG) of our levels. */
static const int journal_priority[FM_LOG_LEVEL_NR] = { 3, 4, 6, 7 };

bool fm_log_stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	/* systemd sets JOURNAL_STREAM=DEV:INO for a unit whose stderr is the
	 * journal; a child that redirected its stderr must not believe it. */
	return js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
	       (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* 0 unknown, 1 journal, 2 plain: decided at the first line. */
static int log_mode;

void fm_log_reset_sink(void)
{
	__atomic_store_n(&log_mode, 0, __ATOMIC_RELAXED);
}

void fm_log_write(int level, const char *fmt, ...)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	int n, mode = __atomic_load_n(&log_mode, __ATOMIC_RELAXED);
	va_list ap;

	if (!mode) {
		mode = fm_log_stderr_is_journal() ? 1 : 2;
		__atomic_store_n(&log_mode, mode, __ATOMIC_RELAXED);
	}
	if (mode == 1) {
		/* The journal stamps lines itself and reads <N> as the priority. */
		n = snprintf(line, sizeof(line), "<%d>%s %s: ",
			     journal_priority[level >= 0 && level < FM_LOG_LEVEL_NR ? level : 0],
			     log_prog, fm_log_level_name(level));
	} else {
		long off;

		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		off = tm.tm_gmtoff / 60;
		/* ISO 8601 with the date and the UTC offset: logs outlive a day. */
		n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ld%c%02ld:%02ld %s %s: ",
			     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			     tm.tm_sec, ts.tv_nsec / 1000000, off < 0 ? '-' : '+',
			     (off < 0 ? -off : off) / 60, (off < 0 ? -off : off) % 60, log_prog,
			     fm_log_level_name(level));
	}
	va_start(ap, fmt);
	if (n > 0 && (size_t)n < sizeof(line))
		n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line) - 1)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* One write() per line so lines from threads do not interleave. */
	fwrite(line, 1, (size_t)n, stderr);
}

bool fm_ratelimit_ok(struct fm_ratelimit *rl, unsigned burst, unsigned interval_ms,
		     uint32_t *dropped)
{
	uint64_t now = fm_now_ns();
	uint64_t start = __atomic_load_n(&rl->window_ns, __ATOMIC_RELAXED);

	*dropped = 0;
	if (start == 0 || now - start >= (uint64_t)interval_ms * 1000000ull) {
		if (__atomic_compare_exchange_n(&rl->window_ns, &start, now, false,
						__ATOMIC_RELAXED, __ATOMIC_RELAXED))
			__atomic_store_n(&rl->used, 0, __ATOMIC_RELAXED);
	}
	if (__atomic_fetch_add(&rl->used, 1, __ATOMIC_RELAXED) < burst) {
		*dropped = __atomic_exchange_n(&rl->dropped, 0, __ATOMIC_RELAXED);
		return true;
	}
	__atomic_fetch_add(&rl->dropped, 1, __ATOMIC_RELAXED);
	return false;
}

int fm_pin_self(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return 0;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return -pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int fm_page_is_zero(const void *page)
{
	const uint64_t *w = page;

	for (size_t i = 0; i < FM_PAGE_SIZE / 8; i += 8) {
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7])
			return 0;
	}
	return 1;
}
