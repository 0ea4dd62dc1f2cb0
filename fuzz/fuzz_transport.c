/* fuzz_transport.c - mail_transport_safe (mail/transport.c), which walks the MIME tree of every
 * message a client sends and rewrites what is too long, on arbitrary input made CRLF-only as the
 * ingress delivers it. Asserts: a verdict; a changed message has no line over 998 octets outside
 * multipart/signed; running it again on its own output changes nothing (idempotent). */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "common/strbuf.h"
#include "mail/transport.h"

/* The longest line of data (CRLF line ends). */
static size_t longest_line(const char *data, size_t len)
{
    size_t longest = 0, cur = 0;
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\r' && i + 1 < len && data[i + 1] == '\n') {
            if (cur > longest) longest = cur;
            cur = 0;
            i++;
        } else {
            cur++;
        }
    }
    return cur > longest ? cur : longest;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* ingress hands over CRLF lines only (bare CR and LF are refused before): make it so */
    struct strbuf in = STRBUF_INIT, out = STRBUF_INIT, again = STRBUF_INIT;
    for (size_t i = 0; i < size; i++) {
        if (data[i] == '\n' || data[i] == '\r') {
            strbuf_append(&in, "\r\n", 2);
            if (data[i] == '\r' && i + 1 < size && data[i + 1] == '\n') i++;
        } else {
            strbuf_append(&in, &data[i], 1);
        }
    }
    struct mail_transport_report rep;
    enum mail_transport_verdict v = mail_transport_safe(in.data ? in.data : "", in.len, &out, &rep);
    assert(v == MAIL_TRANSPORT_UNCHANGED || v == MAIL_TRANSPORT_CHANGED ||
           v == MAIL_TRANSPORT_REFUSED);
    assert(memchr(rep.text, '\0', sizeof rep.text));
    if (v == MAIL_TRANSPORT_CHANGED) {
        if (rep.signed_lines_left == 0) assert(longest_line(out.data, out.len) <= MAIL_LINE_MAX);
        struct mail_transport_report rep2;
        enum mail_transport_verdict v2 = mail_transport_safe(out.data, out.len, &again, &rep2);
        assert(v2 != MAIL_TRANSPORT_REFUSED);
        if (rep.signed_lines_left == 0) assert(v2 == MAIL_TRANSPORT_UNCHANGED);
    }
    strbuf_free(&in);
    strbuf_free(&out);
    strbuf_free(&again);
    return 0;
}
