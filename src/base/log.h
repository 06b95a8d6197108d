/* base/log: levelled, format-checked log macros.
 *
 * FM_DEBUG compiles to nothing unless FM_LOG_DEBUG_ON is defined, but its
 * arguments stay type-checked. fm_log_ratelimited() is for hot paths and for
 * anything a client can trigger at will: each call site logs at most
 * FM_LOG_BURST lines per FM_LOG_INTERVAL_MS, then says how many it dropped
 * ("(N similar lines suppressed)") before its next line. */
#ifndef FM_LOG_H
#define FM_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum fm_log_level { FM_LOG_ERROR, FM_LOG_WARN, FM_LOG_INFO, FM_LOG_DEBUG, FM_LOG_LEVEL_NR };

/* Messages above this level are skipped. Only ever accessed with atomic
 * builtins (the control thread changes it while every other thread reads
 * it); a plain int, not _Atomic, so __atomic_* work with gcc and clang. */
extern int fm_log_level;

static inline int fm_log_get_level(void)
{
	return __atomic_load_n(&fm_log_level, __ATOMIC_RELAXED);
}

static inline void fm_log_set_level(int level)
{
	__atomic_store_n(&fm_log_level, level, __ATOMIC_RELAXED);
}

void fm_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "error"/"warn"/"info"/"debug" -> level; -1 when unknown. */
int fm_log_level_parse(const char *name);
const char *fm_log_level_name(int level);
/* Prefix each line with this program name (default "fluidmem"). */
void fm_log_set_prog(const char *prog);
/* Lines go to stderr. When stderr is the journal ($JOURNAL_STREAM names its
 * device:inode, as systemd sets it) each line starts with the syslog
 * priority "<N>" (error 3, warn 4, info 6, debug 7) and no time, which the
 * journal adds; otherwise with an ISO 8601 local time, date and UTC offset
 * included. The choice is made at the first line. */
bool fm_log_stderr_is_journal(void);
/* Decide again at the next line (tests, after redirecting stderr). */
void fm_log_reset_sink(void);

#define FM_LOG(level, ...)                                       \
	do {                                                     \
		if ((level) <= fm_log_get_level())               \
			fm_log_write((level), __VA_ARGS__);      \
	} while (0)
#define FM_ERR(...) FM_LOG(FM_LOG_ERROR, __VA_ARGS__)
#define FM_WARN(...) FM_LOG(FM_LOG_WARN, __VA_ARGS__)
#define FM_INFO(...) FM_LOG(FM_LOG_INFO, __VA_ARGS__)
#ifdef FM_LOG_DEBUG_ON
#define FM_DEBUG(...) FM_LOG(FM_LOG_DEBUG, __VA_ARGS__)
#else
#define FM_DEBUG(...)                                            \
	do {                                                     \
		if (0)                                           \
			fm_log_write(FM_LOG_DEBUG, __VA_ARGS__); \
	} while (0)
#endif

/* Rate limit of one call site (zero-initialised static). Lock-free: at a
 * window's edge two threads may both start a new window, which only costs
 * a line or two more. */
struct fm_ratelimit {
	uint64_t window_ns;     /* start of the current window */
	uint32_t used;          /* lines allowed in this window */
	uint32_t dropped;       /* lines dropped since the last one allowed */
};
#define FM_LOG_BURST 5
#define FM_LOG_INTERVAL_MS 10000

/* true when the call site may log now; *dropped receives how many lines it
 * dropped since its last allowed line (to report them). Thread-safe. */
bool fm_ratelimit_ok(struct fm_ratelimit *rl, unsigned burst, unsigned interval_ms,
		     uint32_t *dropped);

#define fm_log_ratelimited(level, ...)                                                      \
	do {                                                                                \
		static struct fm_ratelimit fm_rl_;                                          \
		uint32_t fm_dropped_;                                                       \
		if ((level) <= fm_log_get_level() &&                                        \
		    fm_ratelimit_ok(&fm_rl_, FM_LOG_BURST, FM_LOG_INTERVAL_MS, &fm_dropped_)) { \
			if (fm_dropped_)                                                    \
				fm_log_write((level), "(%u similar lines suppressed)",      \
					     fm_dropped_);                                  \
			fm_log_write((level), __VA_ARGS__);                                 \
		}                                                                           \
	} while (0)
/* The old name: it used to log once per process lifetime, which hid every
 * later failure; it now rate-limits. */
#define fm_log_once(level, ...) fm_log_ratelimited(level, __VA_ARGS__)

#endif
