/* log.c - owns the log output: stderr (text or JSON lines), syslog(3) and journald's native
 * socket. Every module logs through log_msg(); the formatter below it is pure (log_stage,
 * log_format_line; JSON through common/json.c) so tests/unit/test_log.c can pin the formats.
 * Never blocks on anything but the write; never exits. */
#include "common/log.h"

#include "common/clock.h"
#include "common/json.h"
#include "common/strbuf.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <syslog.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#define LOG_JOURNAL_SOCKET "/run/systemd/journal/socket"

static enum log_to log_output = LOG_TO_STDERR;
static enum log_level log_min_level = LOG_LEVEL_INFO;
static const char *log_ident = "outrelay";
static int log_journal_stream; /* stderr is connected to journald (JOURNAL_STREAM matches) */
static int log_journal_fd = -1;
static pthread_mutex_t log_syslog_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const log_level_names[] = {"debug", "info", "warning", "error"};
static const int log_level_priority[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};

/* The stages a message may name in its "<stage>: " prefix (the folders of outrelay/ and the
 * jobs inside them that already log under their own name). "reload: " and "keys: " lines stay
 * whole under stage main: they come from main.c, and operators grep for "reload: ". */
static const char *const log_stages[] = {"smtpd",   "smtpc",   "queue",   "spool", "sign", "check",
                                         "route",   "records", "control", "dkim",  "spf",  "dmarc",
                                         "deliver", "dns",     "tls",     "auth",  "ramp", "report",
                                         "dsn",     "metrics", "config",  NULL};

const char *log_stage(const char *text, size_t *skip)
{
    size_t n = 0;
    *skip = 0;
    while (n < 16 && ((text[n] >= 'a' && text[n] <= 'z') || (text[n] >= '0' && text[n] <= '9')))
        n++;
    if (n == 0 || text[n] != ':' || text[n + 1] != ' ') return "main";
    for (size_t i = 0; log_stages[i]; i++) {
        if (strlen(log_stages[i]) == n && memcmp(log_stages[i], text, n) == 0) {
            *skip = n + 2;
            return log_stages[i];
        }
    }
    if ((n == 8 && memcmp(text, "outrelay", 8) == 0) ||
        (strlen(log_ident) == n && memcmp(text, log_ident, n) == 0))
        *skip = n + 2;
    return "main";
}

/* The "YYYY-MM-DDTHH:MM:SS" of the last second this thread stamped: gmtime and strftime run
 * once per second and thread, not once per line. */
static __thread int64_t log_stamp_sec = INT64_MIN;
static __thread char log_stamp_base[24];

static void log_stamp(char *stamp, size_t size, int64_t now_us)
{
    int64_t sec = now_us / 1000000;
    long ms = (long)(now_us % 1000000 / 1000);
    if (now_us < 0 || size < 25) { /* not a time of this relay's life: the slow way */
        time_t t = (time_t)sec;
        struct tm tm;
        char base[32];
        gmtime_r(&t, &tm);
        strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(stamp, size, "%s.%03ldZ", base, ms);
        return;
    }
    if (sec != log_stamp_sec) {
        time_t t = (time_t)sec;
        struct tm tm;
        gmtime_r(&t, &tm);
        if (strftime(log_stamp_base, sizeof log_stamp_base, "%Y-%m-%dT%H:%M:%S", &tm) != 19) {
            snprintf(stamp, size, "%s.%03ldZ", log_stamp_base, ms); /* a year beyond 9999 */
            log_stamp_sec = INT64_MIN;
            return;
        }
        log_stamp_sec = sec;
    }
    memcpy(stamp, log_stamp_base, 19);
    stamp[19] = '.';
    stamp[20] = (char)('0' + ms / 100);
    stamp[21] = (char)('0' + ms / 10 % 10);
    stamp[22] = (char)('0' + ms % 10);
    stamp[23] = 'Z';
    stamp[24] = '\0';
}

/* log_format_line for a text of known length (log_text passes its own, log_msg vsnprintf's). */
static void log_format_line_n(struct strbuf *out, int json, int journal, enum log_level level,
                              int64_t now_us, const char *ident, long pid, const char *text,
                              size_t len)
{
    size_t skip;
    const char *stage = log_stage(text, &skip);
    char stamp[48];

    if (skip > len) skip = len;
    if (json) {
        log_stamp(stamp, sizeof stamp, now_us);
        struct json_writer w;
        json_init(&w, out);
        json_object_begin(&w, NULL);
        json_string(&w, "ts", stamp);
        json_string(&w, "level", log_level_names[level]);
        json_string(&w, "stage", stage);
        json_int(&w, "pid", pid);
        json_string(&w, "msg", text + skip);
        json_object_end(&w);
        strbuf_puts(out, "\n");
        return;
    }
    /* one allocation for the whole line: the prefix is well under 128 bytes past the ident */
    strbuf_reserve(out, 128 + strlen(ident) + (len - skip));
    if (journal) {
        strbuf_puts(out, "<");
        strbuf_put_int(out, log_level_priority[level]);
        strbuf_puts(out, ">");
    } else {
        log_stamp(stamp, sizeof stamp, now_us);
        strbuf_puts(out, stamp);
        strbuf_puts(out, " ");
    }
    strbuf_puts(out, ident);
    strbuf_puts(out, "/");
    strbuf_puts(out, stage);
    strbuf_puts(out, "[");
    strbuf_put_int(out, pid);
    strbuf_puts(out, "]: ");
    if (level != LOG_LEVEL_INFO) {
        strbuf_puts(out, log_level_names[level]);
        strbuf_puts(out, ": ");
    }
    /* one event, one line: a newline inside the text must not forge a second one */
    size_t from = out->len;
    strbuf_append(out, text + skip, len - skip);
    for (size_t i = from; i < out->len; i++)
        if (out->data[i] == '\n' || out->data[i] == '\r') out->data[i] = ' ';
    strbuf_puts(out, "\n");
}

void log_format_line(struct strbuf *out, int json, int journal, enum log_level level,
                     int64_t now_us, const char *ident, long pid, const char *text)
{
    log_format_line_n(out, json, journal, level, now_us, ident, pid, text, strlen(text));
}

/* JOURNAL_STREAM="dev:ino" names the stream systemd connected to stdout/stderr. */
static int stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2) return 0;
    if (fstat(STDERR_FILENO, &st) < 0) return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* The pid in every line: getpid() is a system call, so it is read once (outrelay never forks;
 * a child would reset it through pthread_atfork). */
static _Atomic long log_pid;

static void log_pid_reset(void)
{
    log_pid = 0;
}

static long log_current_pid(void)
{
    long pid = log_pid;
    if (pid == 0) {
        pid = (long)getpid();
        log_pid = pid;
    }
    return pid;
}

static void log_register_atfork(void)
{
    pthread_atfork(NULL, NULL, log_pid_reset);
}

void log_init(const char *ident, enum log_to to, enum log_level min_level)
{
    log_ident = ident;
    log_output = to;
    log_min_level = min_level;
    log_journal_stream = stderr_is_journal();
    log_pid = 0;
    static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
    pthread_once(&atfork_once, log_register_atfork);
    if (to == LOG_TO_SYSLOG) openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
    if (to == LOG_TO_JOURNALD && log_journal_fd < 0)
        log_journal_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

static void log_to_syslog(enum log_level level, const char *stage, const char *text)
{
    static char tag[64]; /* openlog keeps the pointer: changed and used only under the lock */
    pthread_mutex_lock(&log_syslog_lock);
    snprintf(tag, sizeof tag, "%s/%s", log_ident, stage);
    openlog(tag, LOG_PID | LOG_NDELAY, LOG_MAIL);
    if (level == LOG_LEVEL_INFO)
        syslog(log_level_priority[level], "%s", text);
    else
        syslog(log_level_priority[level], "%s: %s", log_level_names[level], text);
    pthread_mutex_unlock(&log_syslog_lock);
}

/* journald's native protocol: one datagram of FIELD=value lines; MESSAGE in the binary form
 * (name, newline, 64-bit little-endian length, bytes) so any byte is safe. 0 when sent. */
static int log_to_journald(enum log_level level, const char *stage, const char *text)
{
    static const struct sockaddr_un addr = {AF_UNIX, LOG_JOURNAL_SOCKET};
    char head[256], msg[4200];
    unsigned char size[8];
    int hn, mn;
    if (log_journal_fd < 0) return -1;
    hn = snprintf(head, sizeof head,
                  "PRIORITY=%d\nSYSLOG_FACILITY=%d\nSYSLOG_IDENTIFIER=%s/%s\nSYSLOG_PID=%ld\n"
                  "OUTRELAY_STAGE=%s\nMESSAGE\n",
                  log_level_priority[level], LOG_MAIL >> 3, log_ident, stage, log_current_pid(),
                  stage);
    if (hn < 0 || (size_t)hn >= sizeof head) return -1;
    mn = snprintf(msg, sizeof msg, "%s%s%s", level == LOG_LEVEL_INFO ? "" : log_level_names[level],
                  level == LOG_LEVEL_INFO ? "" : ": ", text);
    if (mn < 0) return -1;
    if ((size_t)mn >= sizeof msg) mn = (int)sizeof msg - 1;
    for (int i = 0; i < 8; i++)
        size[i] = (unsigned char)((uint64_t)mn >> (8 * i));
    struct iovec iov[4] = {{head, (size_t)hn}, {size, 8}, {msg, (size_t)mn}, {"\n", 1}};
    struct msghdr mh = {
        .msg_name = (void *)&addr, .msg_namelen = sizeof addr, .msg_iov = iov, .msg_iovlen = 4};
    return sendmsg(log_journal_fd, &mh, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

/* Lines held for one write (log_hold_start): only the owner thread's, only for stderr. */
#define LOG_HOLD_MAX 65536
static struct strbuf log_held = STRBUF_INIT;
static _Atomic int log_holding; /* read by every thread, set by the owner */
static pthread_t log_hold_owner;
static void (*log_hold_kick)(void *arg);
static void *log_hold_kick_arg;

void log_hold_flush(void)
{
    if (log_held.len == 0) return;
    fwrite(log_held.data, 1, log_held.len, stderr);
    log_held.len = 0;
}

static void log_hold_at_exit(void)
{
    if (log_holding && pthread_equal(pthread_self(), log_hold_owner)) log_hold_flush();
}

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

static void log_hold_once(void)
{
    atexit(log_hold_at_exit);
#if defined(__SANITIZE_ADDRESS__)
    /* a sanitizer report ends the process: the lines before it still go out */
    __sanitizer_set_death_callback(log_hold_at_exit);
#endif
}

void log_hold_start(void (*kick)(void *arg), void *arg)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, log_hold_once);
    log_hold_owner = pthread_self();
    log_hold_kick = kick;
    log_hold_kick_arg = arg;
    log_holding = 1;
}

void log_hold_stop(void)
{
    if (!log_holding || !pthread_equal(pthread_self(), log_hold_owner)) return;
    log_hold_flush();
    log_holding = 0;
    strbuf_free(&log_held);
}

/* Writes one finished text (len bytes, no format) to the configured output. */
static void log_emit(enum log_level level, const char *text, size_t len)
{
    struct strbuf line = STRBUF_INIT;
    if (log_output == LOG_TO_SYSLOG || log_output == LOG_TO_JOURNALD) {
        size_t skip;
        const char *stage = log_stage(text, &skip);
        if (log_output == LOG_TO_SYSLOG) {
            log_to_syslog(level, stage, text + skip);
            return;
        }
        if (log_to_journald(level, stage, text + skip) == 0) return;
        /* no journald listening: the line goes to stderr rather than nowhere */
    }
    if (log_holding && level < LOG_LEVEL_WARN && pthread_equal(pthread_self(), log_hold_owner)) {
        int first = log_held.len == 0;
        log_format_line_n(&log_held, log_output == LOG_TO_JSON, log_journal_stream, level,
                          clock_now_us(), log_ident, log_current_pid(), text, len);
        if (log_held.len >= LOG_HOLD_MAX)
            log_hold_flush();
        else if (first && log_hold_kick)
            log_hold_kick(log_hold_kick_arg);
        return;
    }
    /* a warning or an error leaves at once, after what is held (the order stays) */
    if (log_holding && pthread_equal(pthread_self(), log_hold_owner)) log_hold_flush();
    log_format_line_n(&line, log_output == LOG_TO_JSON, log_journal_stream, level, clock_now_us(),
                      log_ident, log_current_pid(), text, len);
    /* One fwrite per line keeps lines whole across threads (stdio locks the stream; stderr is
     * unbuffered, so the line is one write). */
    fwrite(line.data, 1, line.len, stderr);
    strbuf_free(&line);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    char text[LOG_TEXT_MAX];
    va_list ap;

    if (level < log_min_level) return;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    log_emit(level, text, (size_t)n < sizeof text ? (size_t)n : sizeof text - 1);
}

void log_text(enum log_level level, const char *text, size_t len)
{
    if (level < log_min_level) return;
    if (len >= LOG_TEXT_MAX) {
        /* the same cut as log_msg's: syslog and journald get a NUL-terminated copy */
        char cut[LOG_TEXT_MAX];
        memcpy(cut, text, LOG_TEXT_MAX - 1);
        cut[LOG_TEXT_MAX - 1] = '\0';
        log_emit(level, cut, LOG_TEXT_MAX - 1);
        return;
    }
    log_emit(level, text, len);
}

int log_enabled(enum log_level level)
{
    return level >= log_min_level;
}
