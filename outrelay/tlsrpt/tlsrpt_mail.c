/* tlsrpt_mail.c - the mail that carries one aggregate report (RFC 8460 section 5.3): headers
 * TLS-Report-Domain and TLS-Report-Submitter, the Subject the RFC asks for, a
 * multipart/report; report-type="tlsrpt" body with a short text part and the gzip'd JSON as
 * application/tlsrpt+gzip named per section 5.1. Pure (zlib, OpenSSL's base64); any thread.
 * Called by tlsrpt_send.c and the unit tests. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common/util.h"
#include "tlsrpt/tlsrpt.h"

int tlsrpt_gzip(const char *data, size_t len, unsigned char **out, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    /* windowBits 15 + 16: a gzip wrapper (RFC 1952), what section 5.1 asks for */
    if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    uLong bound = deflateBound(&z, (uLong)len);
    unsigned char *buf = xmalloc(bound);
    z.next_in = (Bytef *)(uintptr_t)data;
    z.avail_in = (uInt)len;
    z.next_out = buf;
    z.avail_out = (uInt)bound;
    int rc = deflate(&z, Z_FINISH);
    *out_len = bound - z.avail_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(buf);
        return -1;
    }
    *out = buf;
    return 0;
}

/* base64 (RFC 2045 section 6.8), lines of 76 characters */
static void tlsrpt_base64(struct strbuf *out, const unsigned char *data, size_t len)
{
    for (size_t off = 0; off < len; off += 57) {
        size_t n = len - off < 57 ? len - off : 57;
        unsigned char line[80];
        int w = EVP_EncodeBlock(line, data + off, (int)n);
        strbuf_append(out, line, (size_t)w);
        strbuf_puts(out, "\r\n");
    }
}

int tlsrpt_mail_build(const struct tlsrpt_mail *m, struct strbuf *out)
{
    unsigned char *gz = NULL;
    size_t gz_len = 0;
    if (tlsrpt_gzip(m->json, strlen(m->json), &gz, &gz_len) < 0) return -1;
    char date[64];
    util_rfc5322_date(m->now, date, sizeof date);
    /* the boundary cannot occur in base64 or in our text part ('=' and '_' do not both) */
    char boundary[96];
    snprintf(boundary, sizeof boundary, "=_tlsrpt_%lld", (long long)m->start);
    strbuf_printf(out, "From: <%s>\r\n", m->from);
    strbuf_puts(out, "To: ");
    for (size_t i = 0; i < m->n_to; i++)
        strbuf_printf(out, "%s<%s>", i ? ",\r\n    " : "", m->to[i]);
    strbuf_puts(out, "\r\n");
    strbuf_printf(out, "Date: %s\r\n", date);
    /* section 5.3: the Subject names the domain, the submitter and the report-id */
    strbuf_printf(out, "Subject: Report Domain: %s\r\n Submitter: %s\r\n Report-ID: <%s>\r\n",
                  m->policy_domain, m->submitter, m->report_id);
    strbuf_printf(out, "Message-ID: <%s>\r\n", m->report_id);
    strbuf_printf(out, "TLS-Report-Domain: %s\r\n", m->policy_domain);
    strbuf_printf(out, "TLS-Report-Submitter: %s\r\n", m->submitter);
    strbuf_puts(out, "Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n");
    strbuf_printf(out,
                  "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n"
                  " boundary=\"%s\"\r\n\r\n",
                  boundary);
    strbuf_printf(out, "This is a multipart message in MIME format.\r\n\r\n--%s\r\n", boundary);
    strbuf_puts(out, "Content-Type: text/plain; charset=us-ascii\r\n"
                     "Content-Transfer-Encoding: 7bit\r\n\r\n");
    strbuf_printf(out,
                  "This is an aggregate TLS report (RFC 8460) from %s\r\n"
                  "for the policy domain %s, covering %s.\r\n\r\n",
                  m->submitter, m->policy_domain, m->range_text);
    strbuf_printf(out, "--%s\r\n", boundary);
    /* section 5.1: sender "!" policy-domain "!" begin "!" end "." extension */
    strbuf_printf(out,
                  "Content-Type: application/tlsrpt+gzip\r\n"
                  "Content-Transfer-Encoding: base64\r\n"
                  "Content-Disposition: attachment;\r\n"
                  " filename=\"%s!%s!%lld!%lld.json.gz\"\r\n\r\n",
                  m->submitter, m->policy_domain, (long long)m->start, (long long)m->end);
    tlsrpt_base64(out, gz, gz_len);
    strbuf_printf(out, "\r\n--%s--\r\n", boundary);
    free(gz);
    return 0;
}
