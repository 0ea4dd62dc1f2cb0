/* tlsrpt_send.c - the daily TLS-RPT aggregate reports (RFC 8460): once the configured UTC hour
 * of a day has begun, every policy domain with TLS sessions on the previous day is looked up
 * (`_smtp._tls` TXT); a domain that asks for reports by mailto: gets the day's report, gzip'd,
 * through our own queue (qmgr_inject: spooled, DKIM-signed, delivered like any mail). Each
 * settled (day, domain) is kept in <state>/tlsrpt.db, so a restart never sends a day twice.
 * Wired by main.c (start, reload, stop, close); loop thread only. */
#include <event2/event.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/util.h"
#include "config/config.h"
#include "dns/dns.h"
#include "mail/envelope.h"
#include "qmgr/qmgr.h"
#include "tlsrpt/tlsrpt.h"
#include "tlsrpt/tlsrpt_send.h"

#define TLSRPT_TICK_S 10
#define TLSRPT_MAX_RUA 16

struct tlsrpt_lookup {
    struct tlsrpt_lookup *next;
    struct dns_query *q;
    int64_t day;
    char domain[256];
};

static struct {
    struct event_base *base;
    const struct config *cfg;
    struct event *timer;
    sqlite3 *sent;                 /* <state>/tlsrpt.db */
    int64_t settled_day;           /* every domain of this day is settled */
    struct tlsrpt_lookup *lookups; /* TXT lookups in flight */
    int in_flight;                 /* reports being spooled */
} T;

/* ---- what was sent --------------------------------------------------------------------------- */

static int tlsrpt_sent_open(void)
{
    if (T.sent) return 0;
    char path[1024];
    snprintf(path, sizeof path, "%s/tlsrpt.db", T.cfg->state);
    if (sqlite3_open(path, &T.sent) != SQLITE_OK ||
        sqlite3_exec(T.sent,
                     "CREATE TABLE IF NOT EXISTS sent (day TEXT NOT NULL, domain TEXT NOT NULL, "
                     "queue_id TEXT, rua TEXT, note TEXT, ts INTEGER, PRIMARY KEY (day, domain))",
                     NULL, NULL, NULL) != SQLITE_OK) {
        log_error("tlsrpt: cannot open %s: %s", path,
                  T.sent ? sqlite3_errmsg(T.sent) : "no memory");
        sqlite3_close(T.sent);
        T.sent = NULL;
        return -1;
    }
    sqlite3_busy_timeout(T.sent, 2000);
    return 0;
}

static void tlsrpt_day_text(int64_t day, char *buf, size_t size)
{
    time_t t = (time_t)day;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%d", &tm);
}

static int tlsrpt_was_sent(int64_t day, const char *domain)
{
    char d[16];
    tlsrpt_day_text(day, d, sizeof d);
    sqlite3_stmt *st = NULL;
    int found = 1; /* on a read error: do not send (a duplicate is worse than a gap) */
    if (sqlite3_prepare_v2(T.sent, "SELECT 1 FROM sent WHERE day = ?1 AND domain = ?2", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, d, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, domain, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(st);
        found = rc == SQLITE_ROW || rc != SQLITE_DONE;
    }
    sqlite3_finalize(st);
    return found;
}

static void tlsrpt_mark(int64_t day, const char *domain, const char *queue_id, const char *rua,
                        const char *note)
{
    if (!T.sent) return;
    char d[16];
    tlsrpt_day_text(day, d, sizeof d);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(T.sent,
                           "INSERT OR REPLACE INTO sent (day, domain, queue_id, rua, note, ts) "
                           "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, d, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, domain, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, queue_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, rua, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 5, note, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 6, clock_now());
        if (sqlite3_step(st) != SQLITE_DONE)
            log_error("tlsrpt: cannot remember the report of %s for %s: %s", domain, d,
                      sqlite3_errmsg(T.sent));
    }
    sqlite3_finalize(st);
}

/* ---- the day's sessions -----------------------------------------------------------------------
 */

static int tlsrpt_rows_of(int64_t day, const char *domain, struct tlsrpt_rows *rows)
{
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/records.db", T.cfg->state);
    sqlite3 *db = NULL;
    int rc = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 2000);
        rc = tlsrpt_collect(db, day * 1000000, (day + 86400) * 1000000, domain, rows, err,
                            sizeof err);
        if (rc < 0) log_error("tlsrpt: %s", err);
    } else {
        log_error("tlsrpt: cannot read %s", path);
    }
    sqlite3_close(db);
    return rc;
}

/* ---- sending one report ---------------------------------------------------------------------- */

struct tlsrpt_spooled {
    int64_t day;
    char domain[256];
    char *rua;
};

static void tlsrpt_spooled_cb(void *arg, int status, const char *queue_id, const char *err)
{
    struct tlsrpt_spooled *s = arg;
    T.in_flight--;
    if (status == 0) {
        tlsrpt_mark(s->day, s->domain, queue_id, s->rua, "queued");
        log_info("%s: tlsrpt: aggregate report of %s queued for %s", queue_id, s->domain, s->rua);
    } else {
        log_error("tlsrpt: the report of %s was not stored (tried again later): %s", s->domain,
                  err);
    }
    free(s->rua);
    free(s);
}

void tlsrpt_who(const struct config *cfg, struct tlsrpt_who *who)
{
    snprintf(who->from_buf, sizeof who->from_buf, "tlsrpt-noreply@%s", cfg->hostname);
    who->from = cfg->tlsrpt_from ? cfg->tlsrpt_from : who->from_buf;
    who->organization = cfg->tlsrpt_organization ? cfg->tlsrpt_organization : cfg->hostname;
    who->contact = cfg->tlsrpt_contact ? cfg->tlsrpt_contact : who->from;
    who->submitter = cfg->tlsrpt_submitter ? cfg->tlsrpt_submitter : cfg->hostname;
}

static void tlsrpt_send(int64_t day, const char *domain, char *const *rua, size_t n)
{
    struct tlsrpt_rows rows = {0};
    if (tlsrpt_rows_of(day, domain, &rows) < 0) return;
    char id[600], range[64];
    struct tlsrpt_who who;
    tlsrpt_who(T.cfg, &who);
    const char *from = who.from;
    struct tlsrpt_meta meta = {
        .organization = who.organization, .contact = who.contact, .start = day, .end = day + 86400};
    tlsrpt_report_id(&meta, domain, who.submitter, id, sizeof id);
    meta.report_id = id;
    struct strbuf json = STRBUF_INIT, mail = STRBUF_INIT, to = STRBUF_INIT;
    int64_t sessions = tlsrpt_json(&rows, domain, &meta, &json);
    tlsrpt_rows_free(&rows);
    tlsrpt_day_text(day, range, sizeof range);
    strbuf_puts(&to, "");
    for (size_t i = 0; i < n; i++)
        strbuf_printf(&to, "%s%s", i ? "," : "", rua[i]);
    strbuf_puts(&json, "\n");
    strcat(range, " (UTC)");
    struct tlsrpt_mail m = {.from = from,
                            .to = (const char *const *)rua,
                            .n_to = n,
                            .policy_domain = domain,
                            .submitter = who.submitter,
                            .report_id = id,
                            .json = json.data,
                            .start = day,
                            .end = day + 86400,
                            .range_text = range,
                            .now = clock_now()};
    if (sessions == 0 || tlsrpt_mail_build(&m, &mail) < 0) {
        tlsrpt_mark(day, domain, NULL, to.data, sessions ? "gzip failed" : "no sessions");
    } else {
        struct envelope *env = envelope_new();
        env->origin = xstrdup("tlsrpt");
        env->client_addr = xstrdup("localhost");
        env->helo = xstrdup(T.cfg->hostname);
        env->sender = xstrdup(from);
        const char *at = strrchr(from, '@');
        env->from_domain = xstrdup(at ? at + 1 : T.cfg->hostname);
        for (char *p = env->from_domain; *p; p++)
            *p = (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
        char msgid[700];
        snprintf(msgid, sizeof msgid, "<%s>", id);
        env->message_id = xstrdup(msgid);
        for (size_t i = 0; i < n; i++)
            envelope_add_rcpt(env, rua[i], NULL, 0);
        struct tlsrpt_spooled *s = xcalloc(1, sizeof *s);
        s->day = day;
        snprintf(s->domain, sizeof s->domain, "%s", domain);
        s->rua = strbuf_detach(&to, NULL);
        T.in_flight++;
        qmgr_inject(env, mail.data, mail.len, tlsrpt_spooled_cb, s);
    }
    strbuf_free(&json);
    strbuf_free(&mail);
    strbuf_free(&to);
}

/* ---- the _smtp._tls lookup ------------------------------------------------------------------- */

static void tlsrpt_unlink(struct tlsrpt_lookup *l)
{
    for (struct tlsrpt_lookup **p = &T.lookups; *p; p = &(*p)->next)
        if (*p == l) {
            *p = l->next;
            return;
        }
}

static void tlsrpt_txt_cb(void *arg, const struct dns_answer *a)
{
    struct tlsrpt_lookup *l = arg;
    tlsrpt_unlink(l);
    if (a->status == DNS_TEMPFAIL) {
        log_warn("tlsrpt: _smtp._tls.%s: %s (tried again)", l->domain,
                 a->error ? a->error : "temporary failure");
        free(l);
        return;
    }
    /* section 3: records that do not begin with the version are discarded; more than one
     * TLSRPTv1 record means none */
    const char *record = NULL;
    int found = 0;
    for (size_t i = 0; a->status == DNS_OK && i < a->n; i++)
        if (strncmp(a->txt[i], "v=TLSRPTv1", 10) == 0 &&
            (a->txt[i][10] == ';' || a->txt[i][10] == ' ' || a->txt[i][10] == '\0')) {
            record = a->txt[i];
            found++;
        }
    char *rua[TLSRPT_MAX_RUA];
    size_t n = 0, other = 0;
    if (found != 1) {
        tlsrpt_mark(l->day, l->domain, NULL, NULL,
                    found ? "several TLSRPTv1 records" : "no _smtp._tls record");
    } else if (tlsrpt_parse_record(record, rua, TLSRPT_MAX_RUA, &n, &other) < 0) {
        log_warn("tlsrpt: _smtp._tls.%s: not a usable TLSRPTv1 record: %s", l->domain, record);
        tlsrpt_mark(l->day, l->domain, NULL, NULL, "unusable _smtp._tls record");
    } else if (n == 0) {
        log_info("tlsrpt: _smtp._tls.%s asks only for https: reports, which outrelay does not "
                 "send",
                 l->domain);
        tlsrpt_mark(l->day, l->domain, NULL, NULL, "https: rua only");
    } else {
        tlsrpt_send(l->day, l->domain, rua, n);
        for (size_t i = 0; i < n; i++)
            free(rua[i]);
    }
    free(l);
}

static void tlsrpt_lookup(int64_t day, const char *domain)
{
    struct tlsrpt_lookup *l = xcalloc(1, sizeof *l);
    l->day = day;
    snprintf(l->domain, sizeof l->domain, "%s", domain);
    char name[300];
    snprintf(name, sizeof name, "_smtp._tls.%s", domain);
    l->next = T.lookups;
    T.lookups = l;
    l->q = dns_query(name, DNS_TYPE_TXT, tlsrpt_txt_cb, l);
    if (!l->q) { /* could not even be asked: try again on the next tick */
        tlsrpt_unlink(l);
        free(l);
    }
}

/* ---- the timer ------------------------------------------------------------------------------- */

void tlsrpt_tick(void)
{
    if (!T.cfg || !T.cfg->tlsrpt_enabled || T.lookups || T.in_flight) return;
    int64_t now = clock_now();
    int64_t today = now - now % 86400;
    if (now < today + (int64_t)T.cfg->tlsrpt_hour * 3600) return;
    int64_t day = today - 86400;
    if (day == T.settled_day) return;
    if (tlsrpt_sent_open() < 0) return;
    struct tlsrpt_rows rows = {0};
    if (tlsrpt_rows_of(day, NULL, &rows) < 0) return;
    int started = 0;
    for (size_t i = 0; i < rows.n; i++) {
        const char *d = rows.v[i].policy_domain;
        if (i > 0 && strcmp(d, rows.v[i - 1].policy_domain) == 0) continue;
        if (!*d || strchr(d, '[') || strlen(d) > 250 || tlsrpt_was_sent(day, d)) continue;
        tlsrpt_lookup(day, d);
        started++;
    }
    tlsrpt_rows_free(&rows);
    if (!started) {
        char d[16];
        tlsrpt_day_text(day, d, sizeof d);
        log_info("tlsrpt: every report of %s is settled", d);
        T.settled_day = day;
    }
}

static void tlsrpt_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    tlsrpt_tick();
}

void tlsrpt_start(struct event_base *base, const struct config *cfg)
{
    T.base = base;
    T.cfg = cfg;
    T.timer = event_new(base, -1, EV_PERSIST, tlsrpt_timer_cb, NULL);
    struct timeval tv = {TLSRPT_TICK_S, 0};
    event_add(T.timer, &tv);
}

void tlsrpt_reload(const struct config *cfg)
{
    T.cfg = cfg;
}

void tlsrpt_stop(void)
{
    if (T.timer) event_free(T.timer);
    T.timer = NULL;
    while (T.lookups) {
        struct tlsrpt_lookup *l = T.lookups;
        T.lookups = l->next;
        dns_cancel(l->q);
        free(l);
    }
}

void tlsrpt_close(void)
{
    sqlite3_close(T.sent);
    T.sent = NULL;
    T.cfg = NULL;
}
