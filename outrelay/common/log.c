/* log.c - owns stderr/syslog output. Every module logs through log_msg(). */
#include "common/log.h"

#include "common/clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

static int log_use_syslog;
static enum log_level log_min_level = LOG_LEVEL_INFO;
static const char *log_ident = "outrelay";

void log_init(const char *ident, int use_syslog, enum log_level min_level)
{
    log_ident = ident;
    log_use_syslog = use_syslog;
    log_min_level = min_level;
    if (use_syslog) openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warning", "error"};
    static const int prio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
    char line[4096];
    va_list ap;

    if (level < log_min_level) return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (log_use_syslog) {
        syslog(prio[level], "%s", line);
        return;
    }
    int64_t now_us = clock_now_us();
    time_t sec = (time_t)(now_us / 1000000);
    struct tm tm;
    char stamp[32];
    gmtime_r(&sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    /* One fprintf per line keeps lines whole across threads (stdio locks the stream). */
    if (level == LOG_LEVEL_INFO)
        fprintf(stderr, "%s.%03ldZ %s: %s\n", stamp, (long)(now_us % 1000000 / 1000), log_ident, line);
    else
        fprintf(stderr, "%s.%03ldZ %s: %s: %s\n", stamp, (long)(now_us % 1000000 / 1000), log_ident,
                names[level], line);
}
