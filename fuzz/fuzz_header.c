/* fuzz_header.c - the DATA path of ingress: a message cut at every LF as smtpd cuts it, each
 * line through data_parse_line (ingress/data.c), the header block through smtpd_header_line
 * and smtpd_header_finish (ingress/smtpd.c: folding, Received:, Message-ID:, From:). Asserts
 * that unstuffed content stays inside its line and holds no CR, and that the Message-ID and
 * From: domain kept in the envelope are proper C strings (no CR/LF; a domain is lower case
 * without '@', unless it is a [literal]). */
#include <assert.h>
#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include "common/strbuf.h"
#include "ingress/data.h"
#include "ingress/smtpd.h"
#include "mail/envelope.h"

static void check_envelope(const struct envelope *env)
{
    if (env->message_id) {
        size_t n = strlen(env->message_id); /* an unterminated value reads past its block */
        assert(!memchr(env->message_id, '\r', n) && !memchr(env->message_id, '\n', n));
        assert(n == 0 || (env->message_id[n - 1] != ' ' && env->message_id[n - 1] != '\t'));
    }
    if (env->from_domain) {
        size_t n = strlen(env->from_domain);
        assert(n > 0);
        if (env->from_domain[0] == '[') { /* a domain literal is kept as written */
            assert(n >= 2 && env->from_domain[n - 1] == ']');
            return;
        }
        for (const char *p = env->from_domain; *p; p++)
            assert(!isupper((unsigned char)*p) && *p != '@');
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *raw = (const char *)data, *end = raw + size;
    struct envelope *env = envelope_new();
    struct strbuf field = STRBUF_INIT;
    int received = 0, in_headers = 1, lines = 0;
    while (raw < end) {
        const char *lf = memchr(raw, '\n', (size_t)(end - raw));
        if (!lf) break; /* smtpd waits for the rest of the line */
        size_t len = (size_t)(lf - raw) + 1;
        const char *content;
        size_t n;
        enum data_line kind = data_parse_line(raw, len, &content, &n);
        if (kind != DATA_LINE_TEXT) {
            assert(kind == DATA_LINE_END || kind == DATA_LINE_BARE_LF || kind == DATA_LINE_BARE_CR);
            if (kind == DATA_LINE_END) assert(len == 3 && raw[0] == '.');
            break; /* the message ends, or the session refuses it */
        }
        assert(content >= raw && content + n + 2 <= raw + len);
        assert(!memchr(content, '\r', n));
        if (in_headers) in_headers = smtpd_header_line(&field, content, n, &received, env);
        assert(received <= ++lines);
        raw = lf + 1;
    }
    smtpd_header_finish(&field, &received, env);
    check_envelope(env);
    strbuf_free(&field);
    envelope_free(env);
    return 0;
}
