/* records.c - owns <state>/records.db (SQLite, WAL) and the Postfix-style event log lines.
 * records_emit() may be called from any thread: it logs one line, copies the event into an
 * in-memory queue and returns; it never touches the disk. One writer thread (started by
 * records_open) drains the queue in batched transactions. Called by every stage of the mail
 * path; only main() opens and closes. SQLite errors are logged, never fatal. */
#include "records/records.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/dirs.h"
#include "common/log.h"
#include "common/private_file.h"
#include "common/strbuf.h"
#include "common/clock.h"
#include "common/util.h"
#include "records/records_internal.h"

/* Rows per transaction: big enough to amortise the commit, small enough that a flush waiting
 * behind a burst is answered quickly and a failed commit loses little. */
#define RECORDS_BATCH_MAX 1000
/* Group commit: after a commit the writer lets rows gather this long before the next one (unless
 * a batch is full, a flush waits or the records close). A quiet relay's row is still committed
 * at once; under load one transaction carries hundreds of rows instead of a few, and each row
 * no longer pays for writing the same table and index pages to the WAL again. Bounds how far
 * records.db lags the log lines (the spool is the durable truth; see records_barrier). */
#define RECORDS_COMMIT_INTERVAL_US (50 * 1000)
/* Beyond this many uncommitted rows (disk stuck?) new rows are dropped, not buffered. */
#define RECORDS_QUEUE_MAX 1000000

/* One queued row: the event with every string copied into the same allocation. */
struct record_node {
    struct record_node *next;
    uint64_t seq;
    int64_t ts_us;
    struct record_event ev;
    char strings[];
};

static pthread_mutex_t records_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t records_work = PTHREAD_COND_INITIALIZER;      /* writer waits on it */
static pthread_cond_t records_committed = PTHREAD_COND_INITIALIZER; /* flushers wait on it */

/* All of these are protected by records_lock. */
static int records_running;  /* writer started and accepting rows */
static int records_stopping; /* writer must drain and exit */
static struct record_node *records_head, *records_tail;
static size_t records_queued;
static uint64_t records_enqueued_seq; /* seq of the last queued row */
static uint64_t records_done_seq;     /* seq of the last row the writer finished with */
static uint64_t records_dropped;
static int records_flush_waiters; /* records_flush calls waiting: no gathering then */

/* Owned by the writer thread while it runs, by open/close otherwise. */
static sqlite3 *records_db;
static sqlite3_stmt *records_insert;
static sqlite3_stmt *records_begin;
static sqlite3_stmt *records_commit;
static sqlite3_stmt *records_rollback;
static pthread_t records_thread;

/* Columns in the order of the INSERT's parameters (after ts_us). */
static const char records_insert_sql[] =
    "INSERT INTO events (ts_us, event, queue_id, message_id, origin, client_addr, sender, "
    "recipient, egress, source_addr, remote_mx, remote_addr, reply_code, enhanced_code, "
    "reply_text, tls_version, tls_cipher, size, delay_ms, attempt_ms, detail, from_domain, "
    "spf_result, spf_domain, dkim, dmarc_policy, dmarc_result, action, ramp_percent, provider, "
    "nrcpt, route_reason, dsn_queue_id, next_attempt_s, dkim_aligned, rule, until_ts, "
    "tls_policy, tls_policy_source, tls_failure, tls_policy_domain, tls_policy_string, "
    "route_group, planned_egress) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, "
    "?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34, ?35, ?36, "
    "?37, ?38, ?39, ?40, ?41, ?42, ?43, ?44)";

/* ---- the log line ---------------------------------------------------------------------- */

static int records_is_set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* Appends the n bytes at s with control characters replaced, so a remote reply cannot split
 * the line. */
static void records_put_clean_n(struct strbuf *sb, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        const unsigned char *run = p;
        while (p < end && *p >= 0x20 && *p != 0x7f)
            p++;
        strbuf_append(sb, run, (size_t)(p - run));
        if (p < end) {
            strbuf_append(sb, "?", 1);
            p++;
        }
    }
}

static void records_put_clean(struct strbuf *sb, const char *s)
{
    records_put_clean_n(sb, s, strlen(s));
}

static void records_put_sep(struct strbuf *sb, int *first)
{
    strbuf_puts(sb, *first ? " " : ", ");
    *first = 0;
}

/* key=value, or key=(value) when open is "(" (texts with spaces of their own). */
static void records_put_wrapped(struct strbuf *sb, int *first, const char *key, const char *value,
                                const char *open, const char *close)
{
    if (!records_is_set(value)) return;
    records_put_sep(sb, first);
    strbuf_puts(sb, key);
    strbuf_puts(sb, "=");
    strbuf_puts(sb, open);
    records_put_clean(sb, value);
    strbuf_puts(sb, close);
}

static void records_put_field(struct strbuf *sb, int *first, const char *key, const char *value)
{
    records_put_wrapped(sb, first, key, value, "", "");
}

static void records_put_text(struct strbuf *sb, int *first, const char *key, const char *value)
{
    records_put_wrapped(sb, first, key, value, "(", ")");
}

/* Addresses in angle brackets; the null sender is "<>", so "" still counts as set. */
static void records_put_address(struct strbuf *sb, int *first, const char *key, const char *value)
{
    if (value == NULL) return;
    records_put_sep(sb, first);
    strbuf_puts(sb, key);
    strbuf_puts(sb, "=<");
    records_put_clean(sb, value);
    strbuf_puts(sb, ">");
}

static void records_put_seconds(struct strbuf *sb, int *first, const char *key, int64_t ms)
{
    if (ms == 0) return;
    char text[64];
    int n = snprintf(text, sizeof text, "%s=%.2f", key, (double)ms / 1000.0);
    records_put_sep(sb, first);
    if (n > 0) strbuf_append(sb, text, (size_t)n < sizeof text ? (size_t)n : sizeof text - 1);
}

/* relay=mx1.example.net[192.0.2.1]:25 - remote_addr may carry the port ("192.0.2.1:25",
 * "[2001:db8::1]:25") or not ("192.0.2.1", "2001:db8::1"). */
static void records_put_relay(struct strbuf *sb, int *first, const struct record_event *ev)
{
    const char *addr = ev->remote_addr;
    if (!records_is_set(ev->remote_mx) && !records_is_set(addr)) return;
    records_put_sep(sb, first);
    strbuf_puts(sb, "relay=");
    records_put_clean(sb, records_is_set(ev->remote_mx) ? ev->remote_mx : "unknown");
    if (!records_is_set(addr)) return;
    const char *host = addr, *port = NULL;
    size_t host_len = strlen(addr);
    const char *colon = strrchr(addr, ':');
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (close != NULL) {
            host = addr + 1;
            host_len = (size_t)(close - host);
            if (close[1] == ':') port = close + 2;
        }
    } else if (colon != NULL && strchr(addr, ':') == colon) {
        host_len = (size_t)(colon - addr); /* exactly one colon: IPv4 with a port */
        port = colon + 1;
    }
    strbuf_puts(sb, "[");
    records_put_clean_n(sb, host, strnlen(host, host_len));
    strbuf_puts(sb, "]");
    if (records_is_set(port)) {
        strbuf_puts(sb, ":");
        records_put_clean(sb, port);
    }
}

/* "250 2.0.0 Ok queued as X": code, enhanced code unless the text already starts with it,
 * then the text, appended cleaned. Nothing when there was no reply (records_has_reply). */
static int records_has_reply(const struct record_event *ev)
{
    return ev->reply_code != 0 || records_is_set(ev->enhanced_code) ||
           records_is_set(ev->reply_text);
}

static void records_put_reply(struct strbuf *sb, const struct record_event *ev)
{
    size_t start = sb->len;
    if (ev->reply_code != 0) strbuf_put_int(sb, ev->reply_code);
    if (records_is_set(ev->enhanced_code) &&
        !(records_is_set(ev->reply_text) &&
          strncmp(ev->reply_text, ev->enhanced_code, strlen(ev->enhanced_code)) == 0)) {
        if (sb->len > start) strbuf_puts(sb, " ");
        records_put_clean(sb, ev->enhanced_code);
    }
    if (records_is_set(ev->reply_text)) {
        if (sb->len > start) strbuf_puts(sb, " ");
        records_put_clean(sb, ev->reply_text);
    }
}

/* The Postfix status= word for events that end (or postpone) a delivery, else NULL. */
static const char *records_status_word(enum record_type type)
{
    switch (type) {
    case RECORD_DELIVERED:
        return "sent";
    case RECORD_DEFERRED:
    case RECORD_BOUNCED:
    case RECORD_EXPIRED:
        return records_type_name(type);
    default:
        return NULL;
    }
}

static void records_log(const struct record_event *ev)
{
    if (!log_enabled(LOG_LEVEL_INFO)) return; /* nobody reads it: no line built */
    struct strbuf line = STRBUF_INIT;
    int first = 1;

    strbuf_reserve(&line, 512); /* most lines fit: one allocation */
    records_put_clean(&line, records_is_set(ev->queue_id) ? ev->queue_id : "NOQUEUE");
    strbuf_puts(&line, ": ");
    records_put_clean(&line, records_type_name(ev->type));

    records_put_address(&line, &first, "to", ev->recipient);
    records_put_address(&line, &first, "from", ev->sender);
    records_put_field(&line, &first, "origin", ev->origin);
    records_put_field(&line, &first, "client", ev->client_addr);
    if (ev->nrcpt != 0) {
        records_put_sep(&line, &first);
        strbuf_puts(&line, "nrcpt=");
        strbuf_put_int(&line, ev->nrcpt);
    }
    if (records_is_set(ev->message_id)) {
        records_put_sep(&line, &first);
        strbuf_puts(&line, "message-id=");
        int bracketed = ev->message_id[0] == '<';
        strbuf_puts(&line, bracketed ? "" : "<");
        records_put_clean(&line, ev->message_id);
        strbuf_puts(&line, bracketed ? "" : ">");
    }
    records_put_field(&line, &first, "egress", ev->egress);
    records_put_field(&line, &first, "provider", ev->provider);
    records_put_text(&line, &first, "reason", ev->route_reason);
    records_put_field(&line, &first, "dsn_queue_id", ev->dsn_queue_id);
    records_put_field(&line, &first, "rule", ev->rule);
    records_put_field(&line, &first, "source", ev->source_addr);
    records_put_relay(&line, &first, ev);
    if (ev->size != 0) {
        records_put_sep(&line, &first);
        strbuf_puts(&line, "size=");
        strbuf_put_int(&line, ev->size);
    }
    records_put_seconds(&line, &first, "delay", ev->delay_ms);
    records_put_seconds(&line, &first, "duration", ev->attempt_ms);
    records_put_field(&line, &first, "tls", ev->tls_version);
    records_put_field(&line, &first, "cipher", ev->tls_cipher);
    records_put_field(&line, &first, "tls_policy", ev->tls_policy);
    records_put_field(&line, &first, "tls_policy_source", ev->tls_policy_source);
    records_put_field(&line, &first, "tls_failure", ev->tls_failure);
    records_put_field(&line, &first, "tls_policy_domain", ev->tls_policy_domain);
    records_put_field(&line, &first, "group", ev->route_group);
    records_put_field(&line, &first, "dsn", ev->enhanced_code);
    records_put_field(&line, &first, "from_domain", ev->from_domain);
    records_put_field(&line, &first, "spf", ev->spf_result);
    records_put_field(&line, &first, "spf_domain", ev->spf_domain);
    records_put_field(&line, &first, "dmarc", ev->dmarc_result);
    records_put_field(&line, &first, "policy", ev->dmarc_policy);
    records_put_field(&line, &first, "action", ev->action);
    records_put_text(&line, &first, "dkim", ev->dkim);

    const char *status = records_status_word(ev->type);
    int has_reply = records_has_reply(ev);
    if (status != NULL) {
        /* Postfix form: the reason in parentheses after status=; the reply wins, the detail
         * stands alone when both are known. */
        if (has_reply) records_put_text(&line, &first, "detail", ev->detail);
        records_put_sep(&line, &first);
        strbuf_puts(&line, "status=");
        strbuf_puts(&line, status);
        if (has_reply) {
            strbuf_puts(&line, " (");
            records_put_reply(&line, ev);
            strbuf_puts(&line, ")");
        } else if (records_is_set(ev->detail)) {
            strbuf_puts(&line, " (");
            records_put_clean(&line, ev->detail);
            strbuf_puts(&line, ")");
        }
    } else {
        if (has_reply) {
            records_put_sep(&line, &first);
            strbuf_puts(&line, "reply=(");
            records_put_reply(&line, ev);
            strbuf_puts(&line, ")");
        }
        records_put_text(&line, &first, "detail", ev->detail);
    }
    log_text(LOG_LEVEL_INFO, strbuf_str(&line), line.len);
    strbuf_free(&line);
}

/* ---- the queue ------------------------------------------------------------------------- */

static size_t records_string_size(const char *s)
{
    return s != NULL ? strlen(s) + 1 : 0;
}

/* Copies s into *pool and returns the copy (NULL stays NULL). */
static const char *records_copy_string(const char *s, char **pool)
{
    if (s == NULL) return NULL;
    size_t n = strlen(s) + 1;
    char *copy = *pool;
    memcpy(copy, s, n);
    *pool += n;
    return copy;
}

/* The string members of struct record_event, so copying and sizing cannot drift apart. */
#define RECORDS_FOR_EACH_STRING(X)                                                                 \
    X(queue_id)                                                                                    \
    X(message_id)                                                                                  \
    X(origin)                                                                                      \
    X(client_addr)                                                                                 \
    X(sender)                                                                                      \
    X(recipient)                                                                                   \
    X(egress)                                                                                      \
    X(source_addr)                                                                                 \
    X(remote_mx)                                                                                   \
    X(remote_addr)                                                                                 \
    X(enhanced_code)                                                                               \
    X(reply_text)                                                                                  \
    X(tls_version)                                                                                 \
    X(tls_cipher)                                                                                  \
    X(tls_policy)                                                                                  \
    X(tls_policy_source)                                                                           \
    X(tls_failure)                                                                                 \
    X(tls_policy_domain)                                                                           \
    X(tls_policy_string)                                                                           \
    X(route_group)                                                                                 \
    X(planned_egress)                                                                              \
    X(detail)                                                                                      \
    X(from_domain)                                                                                 \
    X(spf_result)                                                                                  \
    X(spf_domain)                                                                                  \
    X(dkim)                                                                                        \
    X(dmarc_policy)                                                                                \
    X(dmarc_result)                                                                                \
    X(action)                                                                                      \
    X(provider)                                                                                    \
    X(route_reason)                                                                                \
    X(dsn_queue_id)                                                                                \
    X(rule)

static struct record_node *records_node_new(const struct record_event *ev)
{
    size_t total = 0;
#define RECORDS_SIZE(field) total += records_string_size(ev->field);
    RECORDS_FOR_EACH_STRING(RECORDS_SIZE)
#undef RECORDS_SIZE
    struct record_node *node = xmalloc(sizeof *node + total);
    char *pool = node->strings;
    node->next = NULL;
    node->ev = *ev;
#define RECORDS_COPY(field) node->ev.field = records_copy_string(ev->field, &pool);
    RECORDS_FOR_EACH_STRING(RECORDS_COPY)
#undef RECORDS_COPY
    return node;
}

static void (*records_observer)(const struct record_event *ev);

void records_set_observer(void (*observer)(const struct record_event *ev))
{
    records_observer = observer;
}

static void records_enqueue(const struct record_event *ev, int64_t ts_us);

/* An event without a known type is a caller's bug: said once per call, never stored. */
static int records_type_known(const struct record_event *ev)
{
    if (records_type_name(ev->type) != NULL) return 1;
    log_error("records: event of unknown type %d for %s not recorded", (int)ev->type,
              records_is_set(ev->queue_id) ? ev->queue_id : "NOQUEUE");
    return 0;
}

void records_emit(const struct record_event *ev)
{
    if (ev == NULL || !records_type_known(ev)) return;
    if (records_observer) records_observer(ev);
    records_log(ev);
    records_enqueue(ev, clock_now_us());
}

void records_emit_at(const struct record_event *ev, int64_t ts_us)
{
    if (ev == NULL || !records_type_known(ev)) return;
    records_log(ev);
    records_enqueue(ev, ts_us);
}

static void records_enqueue(const struct record_event *ev, int64_t now)
{
    pthread_mutex_lock(&records_lock);
    if (!records_running || records_stopping) {
        pthread_mutex_unlock(&records_lock);
        return;
    }
    if (records_queued >= RECORDS_QUEUE_MAX) {
        /* Log the first drop and then every 10000th, not each one. */
        if (records_dropped++ % 10000 == 0)
            log_error("records: queue full (%zu rows waiting for the database), %llu rows "
                      "dropped so far",
                      records_queued, (unsigned long long)records_dropped);
        pthread_mutex_unlock(&records_lock);
        return;
    }
    pthread_mutex_unlock(&records_lock);

    /* Copy outside the lock; only the link-in is serialised. */
    struct record_node *node = records_node_new(ev);
    node->ts_us = now;

    pthread_mutex_lock(&records_lock);
    if (!records_running || records_stopping) {
        pthread_mutex_unlock(&records_lock);
        free(node);
        return;
    }
    node->seq = ++records_enqueued_seq;
    if (records_tail != NULL)
        records_tail->next = node;
    else
        records_head = node;
    records_tail = node;
    records_queued++;
    if (records_queued == 1 || records_queued == RECORDS_BATCH_MAX)
        pthread_cond_signal(&records_work);
    pthread_mutex_unlock(&records_lock);
}

uint64_t records_barrier(void)
{
    pthread_mutex_lock(&records_lock);
    uint64_t seq = records_enqueued_seq;
    pthread_mutex_unlock(&records_lock);
    return seq;
}

int records_barrier_passed(uint64_t token)
{
    pthread_mutex_lock(&records_lock);
    int passed = !records_running || records_done_seq >= token;
    pthread_mutex_unlock(&records_lock);
    return passed;
}

void records_flush(void)
{
    pthread_mutex_lock(&records_lock);
    uint64_t target = records_enqueued_seq;
    records_flush_waiters++;
    pthread_cond_signal(&records_work); /* a writer gathering rows commits now */
    while (records_running && records_done_seq < target)
        pthread_cond_wait(&records_committed, &records_lock);
    records_flush_waiters--;
    pthread_mutex_unlock(&records_lock);
}

/* ---- the writer ------------------------------------------------------------------------ */

static void records_log_sqlite(const char *what)
{
    log_error("records: %s: %s (sqlite %d)", what, sqlite3_errmsg(records_db),
              sqlite3_extended_errcode(records_db));
}

static void records_bind_text(int index, const char *value)
{
    if (value == NULL)
        sqlite3_bind_null(records_insert, index);
    else
        sqlite3_bind_text(records_insert, index, value, -1, SQLITE_STATIC);
}

static void records_bind_int(int index, int64_t value)
{
    if (value == 0)
        sqlite3_bind_null(records_insert, index);
    else
        sqlite3_bind_int64(records_insert, index, value);
}

static int records_last_rc; /* of the last records_step (writer thread) */

static int records_step(sqlite3_stmt *stmt, const char *what)
{
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    records_last_rc = rc;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        records_log_sqlite(what);
        return -1;
    }
    return 0;
}

static int records_insert_one(const struct record_node *node)
{
    const struct record_event *ev = &node->ev;
    sqlite3_bind_int64(records_insert, 1, node->ts_us);
    records_bind_text(2, records_type_name(ev->type));
    records_bind_text(3, ev->queue_id);
    records_bind_text(4, ev->message_id);
    records_bind_text(5, ev->origin);
    records_bind_text(6, ev->client_addr);
    records_bind_text(7, ev->sender);
    records_bind_text(8, ev->recipient);
    records_bind_text(9, ev->egress);
    records_bind_text(10, ev->source_addr);
    records_bind_text(11, ev->remote_mx);
    records_bind_text(12, ev->remote_addr);
    records_bind_int(13, ev->reply_code);
    records_bind_text(14, ev->enhanced_code);
    records_bind_text(15, ev->reply_text);
    records_bind_text(16, ev->tls_version);
    records_bind_text(17, ev->tls_cipher);
    records_bind_int(18, ev->size);
    records_bind_int(19, ev->delay_ms);
    records_bind_int(20, ev->attempt_ms);
    records_bind_text(21, ev->detail);
    records_bind_text(22, ev->from_domain);
    records_bind_text(23, ev->spf_result);
    records_bind_text(24, ev->spf_domain);
    records_bind_text(25, ev->dkim);
    records_bind_text(26, ev->dmarc_policy);
    records_bind_text(27, ev->dmarc_result);
    records_bind_text(28, ev->action);
    records_bind_text(30, ev->provider);
    if (ev->ramp_percent >= 0 && ev->type == RECORD_ROUTED)
        sqlite3_bind_double(records_insert, 29, ev->ramp_percent);
    else
        sqlite3_bind_null(records_insert, 29);
    records_bind_int(31, ev->nrcpt);
    records_bind_text(32, ev->route_reason);
    records_bind_text(33, ev->dsn_queue_id);
    records_bind_int(34, ev->next_attempt_s);
    if (ev->type == RECORD_CHECKED) /* 0 is a fact here: no aligned signature */
        sqlite3_bind_int(records_insert, 35, ev->dkim_aligned != 0);
    else
        sqlite3_bind_null(records_insert, 35);
    records_bind_text(36, ev->rule);
    records_bind_int(37, ev->until);
    records_bind_text(38, ev->tls_policy);
    records_bind_text(39, ev->tls_policy_source);
    records_bind_text(40, ev->tls_failure);
    records_bind_text(41, ev->tls_policy_domain);
    records_bind_text(42, ev->tls_policy_string);
    records_bind_text(43, ev->route_group);
    records_bind_text(44, ev->planned_egress);
    int rc = records_step(records_insert, "insert");
    sqlite3_clear_bindings(records_insert);
    return rc;
}

/* A failure of the database rather than of one row: the transaction is gone or cannot commit. */
static int records_failure_is_transient(int rc)
{
    int primary = rc & 0xff;
    return primary == SQLITE_FULL || primary == SQLITE_IOERR || primary == SQLITE_BUSY ||
           primary == SQLITE_LOCKED || primary == SQLITE_CANTOPEN || primary == SQLITE_NOMEM ||
           sqlite3_get_autocommit(records_db);
}

static _Atomic uint64_t records_commits;

uint64_t records_commit_count(void)
{
    return records_commits;
}

/* Writes up to RECORDS_BATCH_MAX rows from the front of list in one transaction. On commit the
 * rows are freed, *rest is what is left and *last_seq the seq of the last row: returns 0. When
 * the transaction fails (disk full, I/O error) nothing is freed and -1 is returned: the rows are
 * written again later, so a full disk delays records instead of losing them. */
static int records_write_batch(struct record_node *list, struct record_node **rest,
                               uint64_t *last_seq)
{
    int count = 0, failed = 0;
    if (records_step(records_begin, "begin") != 0) return -1;
    struct record_node *node = list, *last = NULL;
    for (; node != NULL && count < RECORDS_BATCH_MAX; node = node->next, count++) {
        last = node;
        if (records_insert_one(node) == 0) continue;
        if (records_failure_is_transient(records_last_rc)) {
            if (!sqlite3_get_autocommit(records_db)) records_step(records_rollback, "rollback");
            return -1;
        }
        failed++; /* this row only */
    }
    if (records_step(records_commit, "commit") != 0) {
        if (!sqlite3_get_autocommit(records_db)) records_step(records_rollback, "rollback");
        return -1;
    }
    records_commits++;
    if (failed > 0) log_error("records: %d of %d rows could not be inserted", failed, count);
    *last_seq = last->seq;
    *rest = node;
    while (list != node) {
        struct record_node *next = list->next;
        free(list);
        list = next;
    }
    return 0;
}

/* After a failed transaction: waits a second (or until told to stop). Returns 1 when the rows
 * must be given up (stopping, and still failing after a few tries). */
static int records_wait_after_failure(int failures)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_mutex_lock(&records_lock);
    int stopping = records_stopping;
    if (!stopping) pthread_cond_timedwait(&records_work, &records_lock, &ts);
    pthread_mutex_unlock(&records_lock);
    if (stopping) {
        struct timespec pause = {0, 300 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    return stopping && failures >= 5;
}

/* ---- retention ----------------------------------------------------------------------- */

static _Atomic int64_t records_retention_s; /* 0: keep everything; set again by a reload */
static int64_t records_last_prune_us;

void records_set_retention(int64_t seconds)
{
    records_retention_s = seconds > 0 ? seconds : 0;
}

/* Deletes rows older than the retention, a bounded chunk per transaction so the relay's own
 * writes are never held up for long. Writer thread only; at start and then hourly. */
static void records_prune(void)
{
    int64_t now = clock_now_us();
    if (!records_retention_s || !records_db || now - records_last_prune_us < 3600LL * 1000000)
        return;
    records_last_prune_us = now;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(records_db,
                           "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts_us < ?1 "
                           "ORDER BY ts_us LIMIT 20000)",
                           -1, &st, NULL) != SQLITE_OK) {
        log_error("records: retention: %s", sqlite3_errmsg(records_db));
        return;
    }
    sqlite3_bind_int64(st, 1, now - records_retention_s * 1000000);
    long total = 0;
    for (;;) {
        int rc = sqlite3_step(st);
        int n = sqlite3_changes(records_db);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            log_error("records: retention: %s", sqlite3_errmsg(records_db));
            break;
        }
        total += n;
        if (n == 0) break;
    }
    sqlite3_finalize(st);
    if (total)
        log_info("records: %ld event%s older than %lld days removed", total, total == 1 ? "" : "s",
                 (long long)(records_retention_s / 86400));
}

static int64_t records_monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* With records_lock held and rows queued: waits until RECORDS_COMMIT_INTERVAL_US after the last
 * commit, or less when a batch is full, a flush waits or the records close. */
static void records_gather(int64_t last_commit_us)
{
    for (;;) {
        if (records_stopping || records_flush_waiters > 0 || records_queued >= RECORDS_BATCH_MAX)
            return;
        int64_t due = last_commit_us + RECORDS_COMMIT_INTERVAL_US;
        if (due <= records_monotonic_us()) return;
        /* on the monotonic clock: a step of the wall clock neither stalls nor skips the wait */
        struct timespec ts = {.tv_sec = due / 1000000, .tv_nsec = due % 1000000 * 1000};
        pthread_cond_clockwait(&records_work, &records_lock, CLOCK_MONOTONIC, &ts);
    }
}

static void *records_writer_main(void *arg)
{
    (void)arg;
    int64_t last_commit_us = 0;
    records_last_prune_us = 0;
    records_prune();
    pthread_mutex_lock(&records_lock);
    for (;;) {
        while (records_head == NULL && !records_stopping)
            pthread_cond_wait(&records_work, &records_lock);
        if (records_head == NULL) break; /* stopping and drained */
        records_gather(last_commit_us);
        struct record_node *list = records_head;
        records_head = records_tail = NULL;
        records_queued = 0;
        pthread_mutex_unlock(&records_lock);

        records_prune();
        int failures = 0;
        while (list != NULL) {
            uint64_t last_seq = 0;
            struct record_node *rest = NULL;
            if (records_write_batch(list, &rest, &last_seq) != 0) {
                if (failures++ == 0)
                    log_error("records: rows not committed; kept in memory and tried again "
                              "every second");
                if (!records_wait_after_failure(failures)) continue;
                size_t lost = 0;
                for (; list != NULL; lost++) {
                    struct record_node *next = list->next;
                    last_seq = list->seq;
                    free(list);
                    list = next;
                }
                log_error("records: %zu rows lost at shutdown (the database still fails); "
                          "the spool segments kept for them replay what they prove at the next "
                          "start",
                          lost);
            } else {
                list = rest;
                if (failures) log_info("records: rows committed again");
                failures = 0;
            }
            last_commit_us = records_monotonic_us();
            pthread_mutex_lock(&records_lock);
            records_done_seq = last_seq;
            pthread_cond_broadcast(&records_committed);
            pthread_mutex_unlock(&records_lock);
        }
        pthread_mutex_lock(&records_lock);
    }
    pthread_mutex_unlock(&records_lock);
    return NULL;
}

/* ---- open and close -------------------------------------------------------------------- */

/* mkdir -p; existing directories are fine. */
static void records_finalize_all(void)
{
    sqlite3_finalize(records_insert);
    sqlite3_finalize(records_begin);
    sqlite3_finalize(records_commit);
    sqlite3_finalize(records_rollback);
    records_insert = records_begin = records_commit = records_rollback = NULL;
    if (records_db != NULL && sqlite3_close(records_db) != SQLITE_OK)
        log_error("records: close: %s", sqlite3_errmsg(records_db));
    records_db = NULL;
}

static int records_prepare(const char *sql, sqlite3_stmt **stmt, char *err, size_t errlen)
{
    if (sqlite3_prepare_v3(records_db, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "records: cannot prepare statement: %s", sqlite3_errmsg(records_db));
        return -1;
    }
    return 0;
}

static int records_open_db(const char *path, char *err, size_t errlen)
{
    /* senders, recipients, Message-IDs: owner-only, and SQLite gives -wal/-shm the same mode */
    if (private_file_prepare_sqlite(path, err, errlen) < 0) return -1;
    if (sqlite3_open_v2(path, &records_db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        snprintf(err, errlen, "records: cannot open %s: %s", path,
                 records_db != NULL ? sqlite3_errmsg(records_db) : "out of memory");
        return -1;
    }
    /* Report readers (CLI, HTTP) may hold the database briefly; wait rather than fail. */
    sqlite3_busy_timeout(records_db, 5000);
    if (records_sql_exec(records_db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", err,
                         errlen) != 0 ||
        records_schema_apply(records_db, err, errlen) != 0)
        return -1;
    if (records_prepare(records_insert_sql, &records_insert, err, errlen) != 0 ||
        records_prepare("BEGIN", &records_begin, err, errlen) != 0 ||
        records_prepare("COMMIT", &records_commit, err, errlen) != 0 ||
        records_prepare("ROLLBACK", &records_rollback, err, errlen) != 0)
        return -1;
    return 0;
}

int records_open(const char *state_dir, char *err, size_t errlen)
{
    pthread_mutex_lock(&records_lock);
    int already = records_running;
    pthread_mutex_unlock(&records_lock);
    if (already) {
        snprintf(err, errlen, "records: already open");
        return -1;
    }
    if (state_dir == NULL || state_dir[0] == '\0') {
        snprintf(err, errlen, "records: no state directory");
        return -1;
    }
    if (dirs_make(state_dir, 0750, 0750, err, errlen) != 0) return -1;

    struct strbuf path = STRBUF_INIT;
    strbuf_printf(&path, "%s/records.db", state_dir);
    int rc = records_open_db(strbuf_str(&path), err, errlen);
    strbuf_free(&path);
    if (rc != 0) {
        records_finalize_all();
        return -1;
    }

    pthread_mutex_lock(&records_lock);
    records_stopping = 0;
    records_dropped = 0;
    records_done_seq = records_enqueued_seq;
    records_running = 1;
    pthread_mutex_unlock(&records_lock);
    int perr = pthread_create(&records_thread, NULL, records_writer_main, NULL);
    if (perr != 0) {
        pthread_mutex_lock(&records_lock);
        records_running = 0;
        pthread_mutex_unlock(&records_lock);
        records_finalize_all();
        snprintf(err, errlen, "records: cannot start writer thread: %s", strerror(perr));
        return -1;
    }
    return 0;
}

void records_close(void)
{
    pthread_mutex_lock(&records_lock);
    if (!records_running || records_stopping) {
        pthread_mutex_unlock(&records_lock);
        return;
    }
    /* The writer drains everything queued before it exits: closing is the last flush. */
    records_stopping = 1;
    pthread_cond_signal(&records_work);
    pthread_mutex_unlock(&records_lock);

    pthread_join(records_thread, NULL);
    records_finalize_all();

    pthread_mutex_lock(&records_lock);
    records_running = 0;
    records_stopping = 0;
    pthread_cond_broadcast(&records_committed);
    pthread_mutex_unlock(&records_lock);
}

int records_recent_deliveries(const char *state_dir, int64_t since_us,
                              void (*fn)(void *arg, const char *message_id, const char *recipient,
                                         int64_t ts_us),
                              void *arg)
{
    struct strbuf path = STRBUF_INIT;
    strbuf_printf(&path, "%s/records.db", state_dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_open_v2(path.data, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db,
                           "SELECT message_id, recipient, MAX(ts_us) FROM events "
                           "WHERE event='delivered' AND ts_us >= ?1 AND message_id IS NOT NULL "
                           "GROUP BY message_id, recipient",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        sqlite3_bind_int64(st, 1, since_us);
        while (sqlite3_step(st) == SQLITE_ROW)
            fn(arg, (const char *)sqlite3_column_text(st, 0),
               (const char *)sqlite3_column_text(st, 1), sqlite3_column_int64(st, 2));
        rc = 0;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    strbuf_free(&path);
    return rc;
}
