/* rua.h - DMARC aggregate reports (RFC 7489 "rua"): import receivers' XML reports (plain, gzip
 * or zip) into <state>/records.db, and compare what receivers observed per domain x source IP
 * with what outrelay predicted for that egress IP ("checked" events). Called by the
 * `outrelay report import-rua` and alignment report commands; single-threaded CLI use only
 * (the XML parse swaps libxml2's process-wide entity loader for its duration). */
#ifndef OUTRELAY_RUA_H
#define OUTRELAY_RUA_H

#include <stddef.h>
#include <stdint.h>

#include "common/strbuf.h"

/* Largest input file and largest decompressed report accepted (zip/gzip bombs stop here). */
#define RUA_MAX_BYTES (50u * 1024u * 1024u)

/* Imports each file in its own transaction: the whole file is read, decompressed, parsed and
 * validated before anything is stored, so a refused file stores nothing. A report already in
 * the database (same org_name and report_id) is skipped, not duplicated.
 * out gets one line per file, in order:
 *   "imported FILE: <org> report <id> for <domain> (<begin>..<end> UTC): N records, M messages"
 *   "skipped FILE: <org> report <id> is already imported"
 *   "refused FILE: <why>"
 * Progress goes to stderr when it is a terminal and several files are given.
 * Returns 0 when every file was imported or skipped; 1 when at least one was refused (the
 * others were still imported; err holds "N of M files refused"); -1 when nothing could be
 * done (state directory / database unusable; err says why). */
int rua_import(const char *state_dir, const char *const *files, size_t n, struct strbuf *out,
               char *err, size_t errlen);

enum rua_format { RUA_FORMAT_TABLE = 0, RUA_FORMAT_CSV = 1, RUA_FORMAT_JSON = 2 };

/* Which rows rua_compare shows; a zeroed struct (or NULL) shows everything. */
struct rua_filter {
    const char *domain;    /* header From domain, case-insensitive; NULL = all */
    const char *source_ip; /* NULL = all */
    const char *egress;    /* only IPs outrelay used on this egress; NULL = all */
    int64_t since, until;  /* unix seconds, 0 = open: reports overlapping [since, until), and
                              predictions made in it */
    int mismatches_only;   /* only rows whose observation contradicts the prediction */
};

/* Per header-From domain x source IP: what receivers reported (messages, DKIM/SPF
 * pass/fail as evaluated for DMARC, dispositions, DMARC pass) next to outrelay's "checked"
 * predictions for that source address and domain (SPF and DMARC pass/fail, egress names).
 * The mismatch column says "spf", "dmarc", "spf,dmarc" when receivers saw something else
 * than predicted, "unpredicted" when outrelay never sent that domain from that IP, "" when
 * they agree. format is enum rua_format; JSON is {"rows": [...]}, CSV has a header line.
 * Returns 0 / -1 with err filled (no records.db, SQLite error). */
int rua_compare(const char *state_dir, const struct rua_filter *filter, struct strbuf *out,
                int format, char *err, size_t errlen);

#endif
