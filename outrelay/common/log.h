/* log.h - the one logging call of outrelay.
 * One line per event, Postfix style: "outrelay/<stage>[pid]: QUEUEID: key=value, ...", to stderr
 * (with a UTC timestamp, none when stderr is the journal), syslog (facility mail), journald
 * (native protocol, with OUTRELAY_STAGE) or stderr as JSON lines {ts, level, stage, pid, msg}.
 * The stage comes from the message's own "smtpd: " / "spool: " prefix (see log_stage()).
 * Thread-safe; never blocks on anything but the write. */
#ifndef OUTRELAY_LOG_H
#define OUTRELAY_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "common/strbuf.h"

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };
/* The same numbers as config's log.to (struct config.log_to). */
enum log_to { LOG_TO_STDERR, LOG_TO_SYSLOG, LOG_TO_JOURNALD, LOG_TO_JSON };

/* Called once before the threads start; again only from the same single thread. */
void log_init(const char *ident, enum log_to to, enum log_level min_level);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The longest text a line carries; longer ones are cut (log_msg and log_text alike). */
#define LOG_TEXT_MAX 4096
/* log_msg without the format: text is already the line's message (NUL-terminated, len =
 * strlen(text)), e.g. records' event lines, built once by their own code. */
void log_text(enum log_level level, const char *text, size_t len);
/* Whether a line of this level would be written: callers that build a costly text ask first. */
int log_enabled(enum log_level level);

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

/* Holding lines for one write: from log_hold_start on, info and debug lines of the calling
 * thread (the event loop's) gather in memory instead of one write(2) each; the first held line
 * calls kick(arg), which arranges for log_hold_flush() to run once the loop turn's callbacks are
 * over (main.c: an event made active). Held lines also leave when 64 KiB gather, before any
 * warning or error line of that thread, at exit() and before a sanitizer report. Other threads
 * write at once. Only stderr output (text or JSON) is held. log_hold_stop flushes and ends it. */
void log_hold_start(void (*kick)(void *arg), void *arg);
void log_hold_flush(void);
void log_hold_stop(void);

/* ---- the formatter, pure (exported for tests/unit/test_log.c) ---- */

/* The stage a message belongs to: its leading "<stage>: " when that names a known stage (smtpd,
 * smtpc, queue, spool, sign, check, route, records, control, ...), "main" for "outrelay: " and
 * for messages without one. *skip gets the length of the prefix the line drops. */
const char *log_stage(const char *text, size_t *skip);

/* Appends one line for stderr, ending in "\n":
 *   text:  "2026-12-06T04:50:00.123Z outrelay/smtpd[42]: warning: ..." (no timestamp and a "<4>"
 *          priority prefix instead when journal is set: stderr is the journal, which stamps it);
 *          a newline or CR inside text becomes a space
 *   json:  {"ts":"2026-12-06T04:50:00.123Z","level":"warning","stage":"smtpd","pid":42,"msg":"..."}
 * The level is written for everything but info ("warning: ", "error: ", "debug: "). */
void log_format_line(struct strbuf *out, int json, int journal, enum log_level level,
                     int64_t now_us, const char *ident, long pid, const char *text);

#endif
