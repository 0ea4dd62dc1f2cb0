/* tlsrpt_report.c - the TLS sessions of a window, read from <state>/records.db, and the RFC 8460
 * aggregate report's JSON built from them (section 4.4 field names); the `_smtp._tls` TXT
 * parser (section 3). Called by report/tls.c (`outrelay report tls|tlsrpt`) and tlsrpt_send.c
 * (the daily reports). Pure: a database handle in, strings out; any thread. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/json.h"
#include "common/strbuf.h"
#include "common/util.h"
#include "mail/smtp_proto.h"
#include "tlsrpt/tlsrpt.h"

/* A session is an attempt row that negotiated TLS (tls_version) or says why it could not
 * (tls_failure); an attempt under policy none, or one that never reached the server, is no
 * TLS session. The attempt row has no recipient: its domain is that of the first recipient row
 * the same attempt wrote (same message and receiving address, at or after it). Addresses are
 * recorded as "ip:port" or "[ipv6]:port"; the report names the IP alone. */
#define TLSRPT_IP(col)                                                                             \
    "CASE WHEN " col " LIKE '[%]:%' THEN substr(" col ", 2, instr(" col ", ']') - 2) WHEN "        \
    "length(" col ") - length(replace(" col ", ':', '')) = 1 THEN substr(" col ", 1, instr(" col   \
    ", ':') - 1) ELSE coalesce(" col ", '') END"
static const char tlsrpt_sql[] =
    "SELECT pd, ptype, pstring, outcome, sip, mx, rip, count(*) FROM (SELECT "
    "coalesce(a.tls_policy_domain, (SELECT lower(substr(r.recipient, instr(r.recipient, '@') + "
    "1)) FROM events r WHERE r.queue_id = a.queue_id AND r.recipient IS NOT NULL AND r.event IN "
    "('delivered', 'deferred', 'bounced', 'expired') AND r.ts_us >= a.ts_us AND "
    "coalesce(r.remote_addr, '') = coalesce(a.remote_addr, '') ORDER BY r.ts_us LIMIT 1)) AS pd, "
    "CASE a.tls_policy_source WHEN 'dane' THEN 'tlsa' WHEN 'mta-sts' THEN 'sts' ELSE "
    "'no-policy-found' END AS ptype, CASE WHEN a.tls_policy_source IN ('dane', 'mta-sts') THEN "
    "a.tls_policy_string END AS pstring, CASE WHEN a.tls_version IS NOT NULL THEN NULL ELSE "
    "a.tls_failure END AS outcome, " TLSRPT_IP(
        "a.source_addr") " AS sip, coalesce(a.remote_mx, '') "
                         "AS mx, " TLSRPT_IP(
                             "a.remote_addr") " AS rip FROM events a WHERE a.event = 'attempt' AND "
                                              "(a.tls_version IS NOT NULL OR a.tls_failure IS NOT "
                                              "NULL) AND (?1 = 0 OR a.ts_us >= ?1) AND "
                                              "(?2 = 0 OR a.ts_us < ?2)) WHERE pd IS NOT NULL AND "
                                              "(?3 IS NULL OR pd = ?3) GROUP BY 1, 2, 3, "
                                              "4, 5, 6, 7 ORDER BY 1, 2, 3, 4 IS NOT NULL, 4, 5, "
                                              "6, 7";

static char *tlsrpt_col(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    return s ? xstrdup((const char *)s) : NULL;
}

int tlsrpt_collect(sqlite3 *db, int64_t since_us, int64_t until_us, const char *policy_domain,
                   struct tlsrpt_rows *out, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, tlsrpt_sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "records: %s", sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_bind_int64(st, 1, since_us);
    sqlite3_bind_int64(st, 2, until_us);
    if (policy_domain)
        sqlite3_bind_text(st, 3, policy_domain, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 3);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 16;
            out->v = xrealloc(out->v, out->cap * sizeof *out->v);
        }
        struct tlsrpt_row *r = &out->v[out->n++];
        r->policy_domain = tlsrpt_col(st, 0);
        r->policy_type = tlsrpt_col(st, 1);
        r->policy_string = tlsrpt_col(st, 2);
        r->result_type = tlsrpt_col(st, 3);
        r->sending_ip = tlsrpt_col(st, 4);
        r->receiving_mx = tlsrpt_col(st, 5);
        r->receiving_ip = tlsrpt_col(st, 6);
        r->sessions = sqlite3_column_int64(st, 7);
    }
    if (rc != SQLITE_DONE) snprintf(err, errlen, "records: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

void tlsrpt_rows_free(struct tlsrpt_rows *rows)
{
    for (size_t i = 0; i < rows->n; i++) {
        struct tlsrpt_row *r = &rows->v[i];
        free(r->policy_domain);
        free(r->policy_type);
        free(r->policy_string);
        free(r->result_type);
        free(r->sending_ip);
        free(r->receiving_mx);
        free(r->receiving_ip);
    }
    free(rows->v);
    *rows = (struct tlsrpt_rows){0};
}

/* ---- the aggregate report (RFC 8460 section 4.4) -------------------------------------------- */

static int tlsrpt_same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void tlsrpt_time(int64_t t, char *buf, size_t size)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void tlsrpt_report_id(const struct tlsrpt_meta *meta, const char *policy_domain,
                      const char *submitter, char *out, size_t size)
{
    char start[32];
    tlsrpt_time(meta->start, start, sizeof start);
    snprintf(out, size, "%s_%s@%s", start, policy_domain, submitter);
}

/* One element of "policies": rows [from, to) share domain, type and policy string. */
static void tlsrpt_policy(struct json_writer *w, const struct tlsrpt_rows *rows, size_t from,
                          size_t to)
{
    const struct tlsrpt_row *first = &rows->v[from];
    int64_t ok = 0, failed = 0;
    for (size_t i = from; i < to; i++)
        if (rows->v[i].result_type)
            failed += rows->v[i].sessions;
        else
            ok += rows->v[i].sessions;
    json_object_begin(w, NULL);
    json_object_begin(w, "policy");
    json_string(w, "policy-type", first->policy_type);
    if (first->policy_string) {
        /* section 4.4: one string per line of the published policy (TXT record or policy file) */
        json_array_begin(w, "policy-string");
        const char *p = first->policy_string;
        while (*p) {
            size_t len = strcspn(p, "\r\n");
            if (len) {
                char *line = xmalloc(len + 1);
                memcpy(line, p, len);
                line[len] = '\0';
                json_string(w, NULL, line);
                free(line);
            }
            p += len;
            while (*p == '\r' || *p == '\n')
                p++;
        }
        json_array_end(w);
    }
    json_string(w, "policy-domain", first->policy_domain);
    if (first->policy_string && !strcmp(first->policy_type, "sts")) {
        /* section 4.4: for an MTA-STS policy, its mx patterns (RFC 8461 "mx:" lines) */
        json_array_begin(w, "mx-host");
        for (const char *p = first->policy_string; *p;) {
            size_t len = strcspn(p, "\r\n");
            if (len > 3 && !strncasecmp(p, "mx:", 3)) {
                const char *v = p + 3;
                size_t n = len - 3;
                while (n && (*v == ' ' || *v == '\t'))
                    v++, n--;
                while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
                    n--;
                char *mx = xmalloc(n + 1);
                memcpy(mx, v, n);
                mx[n] = '\0';
                if (n) json_string(w, NULL, mx);
                free(mx);
            }
            p += len;
            while (*p == '\r' || *p == '\n')
                p++;
        }
        json_array_end(w);
    }
    json_object_end(w);
    json_object_begin(w, "summary");
    json_int(w, "total-successful-session-count", ok);
    json_int(w, "total-failure-session-count", failed);
    json_object_end(w);
    if (failed) {
        json_array_begin(w, "failure-details");
        for (size_t i = from; i < to; i++) {
            const struct tlsrpt_row *r = &rows->v[i];
            if (!r->result_type) continue;
            json_object_begin(w, NULL);
            json_string(w, "result-type", r->result_type);
            if (r->sending_ip[0]) json_string(w, "sending-mta-ip", r->sending_ip);
            if (r->receiving_mx[0]) json_string(w, "receiving-mx-hostname", r->receiving_mx);
            if (r->receiving_ip[0]) json_string(w, "receiving-ip", r->receiving_ip);
            json_int(w, "failed-session-count", r->sessions);
            json_object_end(w);
        }
        json_array_end(w);
    }
    json_object_end(w);
}

int64_t tlsrpt_json(const struct tlsrpt_rows *rows, const char *policy_domain,
                    const struct tlsrpt_meta *meta, struct strbuf *out)
{
    char start[32], end[32];
    tlsrpt_time(meta->start, start, sizeof start);
    /* the range is inclusive in the RFC's example: the last second of the day */
    tlsrpt_time(meta->end - 1, end, sizeof end);
    struct json_writer w;
    json_init(&w, out);
    json_object_begin(&w, NULL);
    json_string(&w, "organization-name", meta->organization);
    json_object_begin(&w, "date-range");
    json_string(&w, "start-datetime", start);
    json_string(&w, "end-datetime", end);
    json_object_end(&w);
    json_string(&w, "contact-info", meta->contact);
    json_string(&w, "report-id", meta->report_id);
    json_array_begin(&w, "policies");
    int64_t total = 0;
    for (size_t i = 0; i < rows->n;) {
        const struct tlsrpt_row *r = &rows->v[i];
        size_t j = i + 1;
        while (j < rows->n && strcmp(rows->v[j].policy_domain, r->policy_domain) == 0 &&
               strcmp(rows->v[j].policy_type, r->policy_type) == 0 &&
               tlsrpt_same(rows->v[j].policy_string, r->policy_string))
            j++;
        if (strcmp(r->policy_domain, policy_domain) == 0) {
            tlsrpt_policy(&w, rows, i, j);
            for (size_t k = i; k < j; k++)
                total += rows->v[k].sessions;
        }
        i = j;
    }
    json_array_end(&w);
    json_object_end(&w);
    return total;
}

/* ---- the _smtp._tls record (RFC 8460 section 3) --------------------------------------------- */

static char *tlsrpt_trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t len = strlen(s);
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        s[--len] = '\0';
    return s;
}

static int tlsrpt_hex(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* "mailto:a%40b?subject=x" -> "a@b"; NULL when the address is empty or malformed. */
static char *tlsrpt_mailto(const char *uri)
{
    const char *p = uri + strlen("mailto:");
    size_t len = strcspn(p, "?");
    char *addr = xmalloc(len + 1), *o = addr;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '%') {
            int hi = i + 2 < len ? tlsrpt_hex((unsigned char)p[i + 1]) : -1;
            int lo = hi >= 0 ? tlsrpt_hex((unsigned char)p[i + 2]) : -1;
            if (lo < 0 || hi < 0) {
                free(addr);
                return NULL;
            }
            *o++ = (char)(hi * 16 + lo);
            i += 2;
        } else {
            *o++ = p[i];
        }
    }
    *o = '\0';
    /* what a DNS answer names becomes our RCPT TO and To: header: it must be an RFC 5321
     * mailbox and nothing more (a decoded CR, LF or NUL would inject commands or headers) */
    if ((size_t)(o - addr) != strlen(addr) || smtp_check_mailbox(addr, 0) != 0) {
        free(addr);
        return NULL;
    }
    return addr;
}

int tlsrpt_parse_record(const char *txt, char **rua, size_t max, size_t *n, size_t *n_other)
{
    *n = 0;
    *n_other = 0;
    char *copy = xstrdup(txt), *save = NULL;
    int field = 0, have_rua = 0, rc = 0;
    for (char *tok = strtok_r(copy, ";", &save); tok && rc == 0;
         tok = strtok_r(NULL, ";", &save), field++) {
        char *f = tlsrpt_trim(tok);
        if (field == 0) {
            /* the version must come first, exactly */
            if (strcmp(f, "v=TLSRPTv1") != 0) rc = -1;
            continue;
        }
        if (!*f) continue; /* a trailing ";" */
        char *eq = strchr(f, '=');
        if (!eq) {
            rc = -1;
            break;
        }
        *eq = '\0';
        char *name = tlsrpt_trim(f), *value = tlsrpt_trim(eq + 1);
        if (strcmp(name, "rua") != 0) continue; /* extension fields are ignored */
        if (have_rua) {
            rc = -1; /* one rua field */
            break;
        }
        have_rua = 1;
        char *usave = NULL;
        for (char *u = strtok_r(value, ",", &usave); u; u = strtok_r(NULL, ",", &usave)) {
            u = tlsrpt_trim(u);
            if (strncasecmp(u, "mailto:", 7) == 0) {
                char *addr = tlsrpt_mailto(u);
                if (addr && *n < max)
                    rua[(*n)++] = addr;
                else
                    free(addr);
            } else if (strncasecmp(u, "https:", 6) == 0) {
                (*n_other)++;
            }
        }
    }
    free(copy);
    if (rc == 0 && (field == 0 || !have_rua || *n + *n_other == 0)) rc = -1;
    if (rc != 0) {
        for (size_t i = 0; i < *n; i++)
            free(rua[i]);
        *n = 0;
    }
    return rc;
}
