/*
 * log: stderr logging with journald priority prefixes. Owns the log level and
 * whether stderr is the journal; nothing else. Safe to call from pool threads
 * (one fprintf per line, stderr is unbuffered and locks per call).
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static struct {
    enum log_level level;
    bool journal;
} logger = {LOG_LVL_INFO, false};

static const char *const level_names[] = {
    [LOG_LVL_ERROR] = "error", [LOG_LVL_WARNING] = "warning", [LOG_LVL_NOTICE] = "notice",
    [LOG_LVL_INFO] = "info",   [LOG_LVL_DEBUG] = "debug",
};

/* systemd sets JOURNAL_STREAM=dev:inode for the stream stderr is connected to;
 * comparing it with fstat(2) is how sd-journal itself decides. */
static bool stderr_is_journal(void) {
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
        return false;
    if (fstat(2, &st) != 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(enum log_level level) {
    logger.level = level;
    logger.journal = stderr_is_journal();
}

void log_set_level(enum log_level level) {
    logger.level = level;
}

int log_level_parse(const char *name, enum log_level *out) {
    for (int l = LOG_LVL_ERROR; l <= LOG_LVL_DEBUG; l++) {
        if (strcmp(name, level_names[l]) == 0) {
            *out = (enum log_level)l;
            return 0;
        }
    }
    if (strcmp(name, "warn") == 0) {
        *out = LOG_LVL_WARNING;
        return 0;
    }
    return -EINVAL;
}

__attribute__((format(printf, 3, 0))) static void
log_vline(enum log_level level, const char *suffix, const char *fmt, va_list ap) {
    char line[1024];
    int n;

    if (level > logger.level)
        return;
    if (logger.journal)
        n = snprintf(line, sizeof(line), "<%d>", (int)level);
    else
        n = snprintf(line, sizeof(line), "%s: ", level_names[level]);
    if (n < 0)
        return;
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    /* One fputs per line so lines from pool threads never interleave. */
    fprintf(stderr, "%s%s\n", line, suffix ? suffix : "");
}

void log_msg(enum log_level level, const char *fmt, ...) {
    va_list ap;

    va_start(ap, fmt);
    log_vline(level, NULL, fmt, ap);
    va_end(ap);
}

bool log_ratelimit_ok(struct log_ratelimit *rl, uint64_t now_ns, uint64_t interval_ns,
                      unsigned *suppressed) {
    if (rl->last_ns != 0 && now_ns - rl->last_ns < interval_ns) {
        rl->suppressed++;
        return false;
    }
    rl->last_ns = now_ns;
    if (suppressed)
        *suppressed = rl->suppressed;
    rl->suppressed = 0;
    return true;
}
