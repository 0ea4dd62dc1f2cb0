/* rua_internal.h - what the three parts of the rua import share: the parsed report
 * (rua_xml.c builds it, rua.c stores it) and the file reader (rua_input.c). Not for use
 * outside outrelay/report/rua*.c; the public contract is rua.h. */
#ifndef OUTRELAY_RUA_INTERNAL_H
#define OUTRELAY_RUA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/strbuf.h"

/* One <record>: every string is owned (malloc) and free of control characters. */
struct rua_row {
    char *source_ip; /* normalised by inet_ntop, IPv4-mapped IPv6 shown as IPv4 */
    int64_t count;
    char *disposition; /* none, quarantine, reject (lower case) */
    char *dkim_eval;   /* pass, fail: the DMARC-aligned DKIM result */
    char *spf_eval;    /* pass, fail: the DMARC-aligned SPF result */
    char *header_from; /* lower case */
    char *envelope_from;
    char *dkim_results; /* "d=example.org s=sel1 pass; d=other.net fail" or NULL */
    char *spf_results;  /* "d=example.org scope=mfrom pass" or NULL */
    char *spf_raw;      /* the receiver's own SPF result for the MAIL FROM (first mfrom or
                           unscoped <spf> of auth_results), before alignment; NULL if none */
};

struct rua_report {
    char *org_name;
    char *email;
    char *report_id;
    int64_t date_begin, date_end; /* unix seconds */
    char *domain;                 /* policy_published */
    char *adkim, *aspf, *p, *sp;  /* NULL when absent */
    int pct;                      /* -1 when absent */
    struct rua_row *rows;
    size_t n_rows;
    int64_t messages; /* sum of the rows' counts */
};

/* Reads path (at most RUA_MAX_BYTES) and, when it is gzip or zip, decompresses it (the XML
 * inside at most RUA_MAX_BYTES too). xml gets the document. Returns 0 / -1 with err saying
 * what is wrong (without the file name: the caller prefixes it). */
int rua_read_file(const char *path, struct strbuf *xml, char *err, size_t errlen);

/* Parses and validates one aggregate report; no DTD, no entities, no network. Returns 0 / -1
 * with err filled; on -1 rep holds nothing (already freed). */
int rua_parse(const char *data, size_t len, struct rua_report *rep, char *err, size_t errlen);
void rua_report_free(struct rua_report *rep);

#endif
