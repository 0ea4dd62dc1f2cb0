/* tlsrpt.h - SMTP TLS reporting (RFC 8460): the TLS sessions of a time window read from the
 * records (one `attempt` row that negotiated TLS or recorded why it failed is one session),
 * grouped per policy domain and policy type; the aggregate report's JSON (section 4); the
 * `_smtp._tls` TXT record's parser (section 3). Used by `outrelay report tls|tlsrpt`
 * (report/tls.c) and by the daily sender (tlsrpt_send.c). Pure over a database handle; any
 * thread, one caller per handle. */
#ifndef OUTRELAY_TLSRPT_H
#define OUTRELAY_TLSRPT_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "common/strbuf.h"

/* One group of sessions: same policy, same outcome, same sending and receiving addresses. */
struct tlsrpt_row {
    char *policy_domain; /* the published policy's domain, else the recipient domain */
    char *policy_type;   /* "tlsa", "sts" or "no-policy-found" (RFC 8460 section 4.3) */
    char *policy_string; /* the policy as recorded (lines), NULL for no-policy-found */
    char *result_type;   /* NULL: TLS was negotiated; else the RFC 8460 result type */
    char *sending_ip, *receiving_mx, *receiving_ip; /* "" when not recorded */
    int64_t sessions;
};

struct tlsrpt_rows {
    struct tlsrpt_row *v;
    size_t n, cap;
};

/* Fills out (sorted by policy domain, type, string, outcome) with the sessions whose attempt
 * row lies in [since_us, until_us) (0: open), only those of policy_domain when it is not NULL.
 * Returns 0 / -1 with err. */
int tlsrpt_collect(sqlite3 *db, int64_t since_us, int64_t until_us, const char *policy_domain,
                   struct tlsrpt_rows *out, char *err, size_t errlen);
void tlsrpt_rows_free(struct tlsrpt_rows *rows);

/* What the report says about its submitter. */
struct tlsrpt_meta {
    const char *organization; /* organization-name */
    const char *contact;      /* contact-info */
    const char *report_id;    /* report-id */
    int64_t start, end;       /* the covered range, unix seconds, [start, end) */
};

/* The report-id of policy_domain's report for meta->start (section 4.4 leaves its form to the
 * submitter; ours is unique per day, domain and submitter):
 * "2026-03-01T00:00:00Z_<domain>@<submitter>". */
void tlsrpt_report_id(const struct tlsrpt_meta *meta, const char *policy_domain,
                      const char *submitter, char *out, size_t size);

/* Appends the RFC 8460 section 4 JSON of policy_domain's rows to out. Returns the number of
 * sessions it reports (0: there is nothing to report). */
int64_t tlsrpt_json(const struct tlsrpt_rows *rows, const char *policy_domain,
                    const struct tlsrpt_meta *meta, struct strbuf *out);

/* The report mail (tlsrpt_mail.c, RFC 8460 section 5.3). */
struct tlsrpt_mail {
    const char *from;      /* address */
    const char *const *to; /* the rua addresses */
    size_t n_to;
    const char *policy_domain; /* TLS-Report-Domain */
    const char *submitter;     /* TLS-Report-Submitter */
    const char *report_id;
    const char *json;       /* the report (tlsrpt_json) */
    int64_t start, end;     /* the range, unix seconds (the file name's timestamps) */
    const char *range_text; /* "2026-03-01 (UTC)" for the text part */
    int64_t now;            /* Date: */
};
/* Appends the whole message (CRLF lines) to out. Returns 0 / -1 (gzip failed). */
int tlsrpt_mail_build(const struct tlsrpt_mail *m, struct strbuf *out);
/* data gzip'd (RFC 1952) into *out (malloc'd). Returns 0 / -1. */
int tlsrpt_gzip(const char *data, size_t len, unsigned char **out, size_t *out_len);

/* Parses a `_smtp._tls` TXT record (RFC 8460 section 3): "v=TLSRPTv1; rua=URI[,URI]...".
 * Fills rua[0..*n) with the mailto: addresses (the part after "mailto:", percent-decoded,
 * without "?..." headers) and counts other URIs (https:) in *n_other. Returns 0, or -1 when
 * the record is not a TLSRPTv1 record with at least one rua. The caller frees rua[i]. */
int tlsrpt_parse_record(const char *txt, char **rua, size_t max, size_t *n, size_t *n_other);

#endif
