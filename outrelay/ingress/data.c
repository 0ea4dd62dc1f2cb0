/* data.c - see data.h. The only way a DATA message ends is CR LF "." CR LF (a BDAT one ends
 * with its LAST chunk); a line that ends in a
 * bare LF, or carries a bare CR, is reported so the session can refuse the whole message
 * instead of guessing where it ends (the ambiguity SMTP smuggling exploits). At end of data the
 * message is made transport-safe here, before it is durable: the transformation itself is
 * mail/transport.c; this only applies its verdict to the session's data and envelope. */
#include "ingress/data.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/util.h"
#include "mail/header_limits.h"
#include "mail/transport.h"

enum data_line data_parse_line(const char *raw, size_t len, const char **content,
                               size_t *content_len)
{
    *content = raw;
    *content_len = 0;
    if (len == 0 || raw[len - 1] != '\n')
        return DATA_LINE_BARE_LF; /* callers only pass complete lines */
    if (len < 2 || raw[len - 2] != '\r') return DATA_LINE_BARE_LF;
    size_t n = len - 2;
    if (memchr(raw, '\r', n)) return DATA_LINE_BARE_CR;
    if (n == 1 && raw[0] == '.') return DATA_LINE_END;
    if (n > 0 && raw[0] == '.') { /* RFC 5321 4.5.2 transparency */
        raw++;
        n--;
    }
    *content = raw;
    *content_len = n;
    return DATA_LINE_TEXT;
}

/* BDAT frames the message by its length, so a bare LF or CR cannot end it early the way it
 * can in DATA; still the rule is DATA's: such a line makes the message refused (550 5.6.0)
 * rather than rewritten to CR LF. What is spooled is what is signed and sent, and a message
 * an origin DKIM-signed with bare LFs would no longer verify once we changed its lines; the
 * session carries on with the next transaction, since nothing about the framing is in doubt. */
enum data_line data_parse_bdat_line(const char *raw, size_t len, const char **content,
                                    size_t *content_len)
{
    *content = raw;
    *content_len = 0;
    if (len < 2 || raw[len - 1] != '\n' || raw[len - 2] != '\r') return DATA_LINE_BARE_LF;
    if (memchr(raw, '\r', len - 2)) return DATA_LINE_BARE_CR;
    *content_len = len - 2;
    return DATA_LINE_TEXT;
}

int data_parse_bdat(const char *args, uint64_t *size, int *last)
{
    uint64_t n = 0;
    const char *p = args;
    if (*p < '0' || *p > '9') return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (UINT64_MAX - 9) / 10) return -1; /* no chunk is that big: a broken client */
        n = n * 10 + (uint64_t)(*p - '0');
    }
    *last = 0;
    if (*p == ' ') {
        p++;
        if (strcasecmp(p, "LAST") != 0) return -1;
        *last = 1;
    } else if (*p) {
        return -1;
    }
    *size = n;
    return 0;
}

const char *data_make_transport_safe(struct strbuf *data, struct envelope *env)
{
    struct mail_transport_report report;
    struct strbuf safe = STRBUF_INIT;
    enum mail_transport_verdict v = mail_transport_safe(data->data, data->len, &safe, &report);
    if (v == MAIL_TRANSPORT_REFUSED) {
        log_warn("%s: not transport-safe: %s", env->queue_id, report.text);
        return "554 5.6.0 A header field has a line over 998 octets with no whitespace to fold "
               "at (RFC 5322 2.1.1); not relayed rather than corrupted";
    }
    if (v == MAIL_TRANSPORT_CHANGED) {
        /* folding and encoded words make fields longer: the signer's limit still holds */
        if (mail_header_check(safe.data, safe.len) != MAIL_HEADER_OK) {
            strbuf_free(&safe);
            log_warn("%s: not transport-safe: a header field is over %d bytes once folded",
                     env->queue_id, MAIL_MAX_HEADER_FIELD);
            return "552 5.6.0 Header field too long to sign once folded (more than 65000 bytes)";
        }
        strbuf_free(data);
        *data = safe;
        env->transformed = 1;
    }
    if (report.text[0]) {
        free(env->transport);
        env->transport = xstrdup(report.text);
        log_info("%s: %s%s", env->queue_id, env->transformed ? "transformed: " : "", report.text);
    }
    return NULL;
}
