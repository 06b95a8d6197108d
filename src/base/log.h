/* base/log: levelled, format-checked log macros.
 *
 * FM_DEBUG compiles to nothing unless FM_LOG_DEBUG_ON is defined, but its
 * arguments stay type-checked. fm_log_once() is for hot paths: it logs the
 * first occurrence per call site and counts nothing else. */
#ifndef FM_LOG_H
#define FM_LOG_H

#include <stdbool.h>

enum fm_log_level { FM_LOG_ERROR, FM_LOG_WARN, FM_LOG_INFO, FM_LOG_DEBUG, FM_LOG_LEVEL_NR };

extern int fm_log_level;   /* messages above this level are skipped */

void fm_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "error"/"warn"/"info"/"debug" -> level; -1 when unknown. */
int fm_log_level_parse(const char *name);
const char *fm_log_level_name(int level);
/* Prefix each line with this program name (default "fluidmem"). */
void fm_log_set_prog(const char *prog);

#define FM_LOG(level, ...)                                       \
	do {                                                     \
		if ((level) <= fm_log_level)                     \
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

#define fm_log_once(level, ...)                                                   \
	do {                                                                      \
		static bool fm_once_done_;                                        \
		if (!__atomic_exchange_n(&fm_once_done_, true, __ATOMIC_RELAXED)) \
			FM_LOG(level, __VA_ARGS__);                               \
	} while (0)

#endif
