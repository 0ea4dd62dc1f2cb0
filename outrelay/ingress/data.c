/* data.c - see data.h. The only way a message ends is CR LF "." CR LF; a line that ends in a
 * bare LF, or carries a bare CR, is reported so the session can refuse the whole message
 * instead of guessing where it ends (the ambiguity SMTP smuggling exploits). At end of data the
 * message is made transport-safe here, before it is durable: the transformation itself is
 * mail/transport.c; this only applies its verdict to the session's data and envelope. */
#include "ingress/data.h"

#include <stdlib.h>
#include <string.h>

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
