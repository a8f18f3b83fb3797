/*
 * log: one line per event on stderr, OpenBSD style. When stderr is the
 * journal (JOURNAL_STREAM matches it) each line starts with a "<N>" priority
 * prefix that journald understands; otherwise with a short level tag. Repeated
 * messages are rate-limited by their callers with log_ratelimit.
 */
#ifndef WMD_LOG_H
#define WMD_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level {
    LOG_LVL_ERROR = 3,
    LOG_LVL_WARNING = 4,
    LOG_LVL_NOTICE = 5,
    LOG_LVL_INFO = 6,
    LOG_LVL_DEBUG = 7
};

/* Called once at start-up from main; detects the journal. */
void log_init(enum log_level level);
void log_set_level(enum log_level level);
/* Parse "debug".."error"; returns 0 or -EINVAL. */
int log_level_parse(const char *name, enum log_level *out);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warnx(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LVL_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

/* A token bucket for one repeating message: returns true when the message may
 * be logged now (at most burst, then one per interval_ns). Embedded by its
 * user; zero-initialised is valid. */
struct log_ratelimit {
    uint64_t last_ns;
    unsigned suppressed;
};
bool log_ratelimit_ok(struct log_ratelimit *rl, uint64_t now_ns, uint64_t interval_ns,
                      unsigned *suppressed);

#endif
