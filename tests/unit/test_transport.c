/* test_transport.c - unit tests for outrelay/mail/transport.c over a corpus of messages with
 * lines of 998 and 999 octets and more: long header lines with and without whitespace, long body
 * lines in text/plain 7bit and 8bit UTF-8, a base64 part on one line, multipart/alternative with
 * one long part, an already quoted-printable part, message/rfc822, multipart/signed, CRLF rules.
 * Every changed message must have no line over 998 octets, CRLF line ends only, and decode to
 * the bytes it had. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"
#include "mail/transport.h"

/* --- helpers -------------------------------------------------------------------------------- */

static char *repeat(const char *unit, size_t times)
{
    size_t n = strlen(unit);
    char *s = malloc(n * times + 1);
    for (size_t i = 0; i < times; i++)
        memcpy(s + i * n, unit, n);
    s[n * times] = '\0';
    return s;
}

/* Every line ends in CRLF, no CR or LF elsewhere, none longer than 998 octets. */
static void assert_transport_safe(const struct strbuf *m)
{
    size_t col = 0;
    for (size_t i = 0; i < m->len; i++) {
        if (m->data[i] == '\r') {
            assert_true(i + 1 < m->len && m->data[i + 1] == '\n');
            assert_true(col <= MAIL_LINE_MAX);
            col = 0;
            i++;
            continue;
        }
        assert_true(m->data[i] != '\n');
        col++;
    }
    assert_true(col == 0); /* ends in CRLF */
}

/* The body of [m, m+len): after the first empty line. */
static const char *body_of(const char *m)
{
    const char *b = strstr(m, "\r\n\r\n");
    return b ? b + 4 : m + strlen(m);
}

/* The unfolded value of the first field `name` ("Subject"), CRLFs removed. */
static char *field(const char *m, const char *name)
{
    size_t n = strlen(name);
    const char *p = m;
    while (p && *p && !(strncasecmp(p, name, n) == 0 && p[n] == ':')) {
        if (p[0] == '\r' && p[1] == '\n') return NULL; /* end of the header section */
        p = strstr(p, "\r\n");
        if (p) p += 2;
    }
    if (!p || !*p) return NULL;
    p += n + 1;
    struct strbuf v = STRBUF_INIT;
    for (;;) {
        const char *e = strstr(p, "\r\n");
        strbuf_append(&v, p, (size_t)(e - p));
        p = e + 2;
        if (*p != ' ' && *p != '\t') break;
    }
    size_t len;
    return strbuf_detach(&v, &len);
}

static int hex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void qp_decode(const char *s, size_t n, struct strbuf *out)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=' && i + 2 < n && s[i + 1] == '\r' && s[i + 2] == '\n') {
            i += 2;
        } else if (s[i] == '=' && i + 2 < n && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
            char ch = (char)(hex(s[i + 1]) * 16 + hex(s[i + 2]));
            strbuf_append(out, &ch, 1);
            i += 2;
        } else {
            strbuf_append(out, s + i, 1);
        }
    }
}

static void b64_decode(const char *s, size_t n, struct strbuf *out)
{
    static const char *alphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned v = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *a = s[i] ? strchr(alphabet, s[i]) : NULL;
        if (!a) continue;
        v = (v << 6) | (unsigned)(a - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            char ch = (char)((v >> bits) & 0xff);
            strbuf_append(out, &ch, 1);
        }
    }
}

/* RFC 2047 Q words as transport.c writes them, for a Subject: made of one encoded word run. */
static void words_decode(const char *v, struct strbuf *out)
{
    const char *p = v;
    while ((p = strstr(p, "=?"))) {
        const char *q = strstr(p + 2, "?Q?");
        assert_non_null(q);
        const char *e = strstr(q + 3, "?=");
        assert_non_null(e);
        assert_true(e + 2 - p <= 75);
        qp_decode(q + 3, (size_t)(e - q - 3), out);
        p = e + 2;
    }
}

static enum mail_transport_verdict run(const char *msg, struct strbuf *out,
                                       struct mail_transport_report *r)
{
    strbuf_reset(out);
    enum mail_transport_verdict v = mail_transport_safe(msg, strlen(msg), out, r);
    if (v == MAIL_TRANSPORT_CHANGED) assert_transport_safe(out);
    return v;
}

/* --- the corpus ----------------------------------------------------------------------------- */

static void test_998_and_999(void **state)
{
    (void)state;
    struct strbuf out = STRBUF_INIT, m = STRBUF_INIT, dec = STRBUF_INIT;
    struct mail_transport_report r;
    char *l998 = repeat("a", 998), *l999 = repeat("a", 999);

    strbuf_printf(&m, "From: a@example.org\r\nSubject: %s\r\n\r\n%s\r\nend\r\n", l998 + 9, l998);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_UNCHANGED);
    assert_string_equal(r.text, "");

    strbuf_reset(&m);
    strbuf_printf(&m, "From: a@example.org\r\n\r\n%s\r\nend\r\n", l999);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_CHANGED);
    assert_string_equal(r.text, "body re-encoded quoted-printable (1 line over 998)");
    assert_int_equal(r.body_lines_over, 1);
    char *cte = field(out.data, "Content-Transfer-Encoding");
    assert_string_equal(cte, " quoted-printable");
    free(cte);
    char *mv = field(out.data, "MIME-Version");
    assert_string_equal(mv, " 1.0");
    free(mv);
    const char *b = body_of(out.data);
    qp_decode(b, out.len - (size_t)(b - out.data), &dec);
    assert_string_equal(dec.data, body_of(m.data));
    free(l998);
    free(l999);
    strbuf_free(&out);
    strbuf_free(&m);
    strbuf_free(&dec);
}

static void test_header_with_whitespace(void **state)
{
    (void)state;
    struct strbuf out = STRBUF_INIT, m = STRBUF_INIT;
    struct mail_transport_report r;
    char *words = repeat("word ", 500); /* 2500 octets */
    strbuf_printf(&m, "From: a@example.org\r\nTo: %sb@example.net\r\nSubject: %send\r\n\r\nhi\r\n",
                  words, words);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_CHANGED);
    assert_int_equal(r.header_lines_folded, 2);
    assert_int_equal(r.header_fields_encoded, 0);
    assert_string_equal(r.text, "2 header lines folded");
    char *before = field(m.data, "Subject"), *after = field(out.data, "Subject");
    assert_string_equal(before, after); /* folding is undone by unfolding (RFC 5322 2.2.3) */
    free(before);
    free(after);
    before = field(m.data, "To");
    after = field(out.data, "To");
    assert_string_equal(before, after);
    assert_string_equal(body_of(out.data), "hi\r\n");
    free(before);
    free(after);
    free(words);
    strbuf_free(&out);
    strbuf_free(&m);
}

static void test_header_without_whitespace(void **state)
{
    (void)state;
    struct strbuf out = STRBUF_INIT, m = STRBUF_INIT, dec = STRBUF_INIT;
    struct mail_transport_report r;
    /* unstructured: re-encoded as RFC 2047 words, UTF-8 characters kept whole */
    char *word = repeat("\xc3\xa9x", 700); /* 2100 octets, no whitespace */
    strbuf_printf(&m, "From: a@example.org\r\nSubject: Re: %s\r\n\r\nhi\r\n", word);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_CHANGED);
    assert_int_equal(r.header_fields_encoded, 1);
    assert_non_null(strstr(r.text, "1 header field RFC 2047-encoded"));
    char *subject = field(out.data, "Subject");
    assert_memory_equal(subject, " Re: =?utf-8?Q?", 15);
    words_decode(subject, &dec);
    assert_string_equal(dec.data, word);
    free(subject);

    /* right after the colon, no space: one is added before the first encoded word */
    strbuf_reset(&m);
    strbuf_reset(&dec);
    strbuf_printf(&m, "Subject:%s\r\n\r\nhi\r\n", word);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_CHANGED);
    assert_memory_equal(out.data, "Subject: =?utf-8?Q?", 19);
    subject = field(out.data, "Subject");
    words_decode(subject, &dec);
    assert_string_equal(dec.data, word);
    free(subject);

    /* structured or unknown fields: refused, naming the field */
    strbuf_reset(&m);
    strbuf_printf(&m, "From: a@example.org\r\nX-Token: %s\r\n\r\nhi\r\n", word);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_REFUSED);
    assert_non_null(strstr(r.text, "X-Token"));
    strbuf_reset(&m);
    strbuf_printf(&m, "From: a@example.org\r\nReferences: <%s@example.org>\r\n\r\nhi\r\n", word);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_REFUSED);
    assert_non_null(strstr(r.text, "References"));
    free(word);
    strbuf_free(&out);
    strbuf_free(&m);
    strbuf_free(&dec);
}

static void test_text_7bit_and_8bit(void **state)
{
    (void)state;
    struct strbuf out = STRBUF_INIT, m = STRBUF_INIT, dec = STRBUF_INIT;
    struct mail_transport_report r;
    char *ascii = repeat("The quick brown fox. ", 100); /* 2100 octets, trailing space */
    char *utf8 = repeat("\xc3\xa9t\xc3\xa9 ", 300);     /* 2100 octets of UTF-8 */
    strbuf_printf(&m,
                  "From: a@example.org\r\nMIME-Version: 1.0\r\n"
                  "Content-Type: text/plain; charset=us-ascii\r\n"
                  "Content-Transfer-Encoding: 7bit\r\n\r\nshort\r\n%s\r\n\r\n.\r\n%s\r\n",
                  ascii, ascii);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_CHANGED);
    assert_int_equal(r.parts_qp, 1);
    assert_string_equal(r.text, "body re-encoded quoted-printable (2 lines over 998)");
    assert_null(strstr(out.data, "7bit"));
    assert_null(strstr(out.data, "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii"
                                 "\r\nContent-Transfer-Encoding: quoted-printable\r\nMIME"));
    const char *b = body_of(out.data);
    qp_decode(b, out.len - (size_t)(b - out.data), &dec);
    assert_string_equal(dec.data, body_of(m.data));
    assert_non_null(strstr(b, "=20\r\n")); /* trailing space encoded (RFC 2045 6.7 rule 3) */

    strbuf_reset(&m);
    strbuf_reset(&dec);
    strbuf_printf(&m,
                  "From: a@example.org\r\nMIME-Version: 1.0\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Transfer-Encoding: 8bit\r\n\r\n%s\r\n",
                  utf8);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_CHANGED);
    char *cte = field(out.data, "Content-Transfer-Encoding");
    assert_string_equal(cte, " quoted-printable");
    free(cte);
    b = body_of(out.data);
    for (const char *p = b; *p; p++)
        assert_true((unsigned char)*p < 0x80); /* 7bit now */
    qp_decode(b, out.len - (size_t)(b - out.data), &dec);
    assert_string_equal(dec.data, body_of(m.data));

    /* no Content-Type at all and 8-bit UTF-8: says what the text was */
    strbuf_reset(&m);
    strbuf_reset(&dec);
    strbuf_printf(&m, "From: a@example.org\r\n\r\n%s\r\n", utf8);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_CHANGED);
    char *ct = field(out.data, "Content-Type");
    assert_string_equal(ct, " text/plain; charset=utf-8");
    free(ct);
    free(ascii);
    free(utf8);
    strbuf_free(&out);
    strbuf_free(&m);
    strbuf_free(&dec);
}

static void test_base64_bad_wrapping(void **state)
{
    (void)state;
    struct strbuf out = STRBUF_INIT, m = STRBUF_INIT, a = STRBUF_INIT, b = STRBUF_INIT;
    struct mail_transport_report r;
    char *one_line = repeat("QUJDREVGR0hJSktM", 200); /* 3200 characters of base64 */
    strbuf_printf(&m,
                  "From: a@example.org\r\nMIME-Version: 1.0\r\n"
                  "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                  "%s\r\nQUJD\r\n",
                  one_line);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_CHANGED);
    assert_int_equal(r.parts_rewrapped, 1);
    assert_string_equal(r.text, "body re-wrapped (1 line over 998)");
    const char *body = body_of(out.data);
    assert_int_equal(strstr(body, "\r\n") - body, 76);
    b64_decode(body_of(m.data), strlen(body_of(m.data)), &a);
    b64_decode(body, strlen(body), &b);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);

    /* a non-text part in 7bit with a long line becomes base64 */
    char *bin = repeat("\x01\x02zz", 400);
    strbuf_reset(&m);
    strbuf_reset(&b);
    strbuf_printf(&m, "From: a@example.org\r\nContent-Type: application/octet-stream\r\n\r\n%s\r\n",
                  bin);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_CHANGED);
    assert_string_equal(r.text, "body re-encoded base64 (1 line over 998)");
    body = body_of(out.data);
    b64_decode(body, strlen(body), &b);
    assert_string_equal(b.data, body_of(m.data));
    free(bin);
    free(one_line);
    strbuf_free(&out);
    strbuf_free(&m);
    strbuf_free(&a);
    strbuf_free(&b);
}

static void test_multipart_alternative(void **state)
{
    (void)state;
    struct strbuf out = STRBUF_INIT, m = STRBUF_INIT, dec = STRBUF_INIT;
    struct mail_transport_report r;
    char *html = repeat("<td>cell</td>", 200); /* 2600 octets */
    const char *plain_part = "--b1\r\nContent-Type: text/plain\r\n\r\nshort text\r\n";
    strbuf_printf(
        &m,
        "From: a@example.org\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n"
        "preamble\r\n%s--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 7bit\r\n\r\n<html>%s</html>\r\n--b1--\r\nepilogue\r\n",
        plain_part, html);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_CHANGED);
    assert_int_equal(r.parts_qp, 1);
    assert_int_equal(r.parts_base64, 0);
    /* the top header and the text/plain part are byte for byte the same */
    assert_memory_equal(out.data, m.data,
                        (size_t)(strstr(m.data, "--b1\r\nContent-Type: text/html") - m.data));
    assert_non_null(strstr(out.data, "\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
                                     "Content-Transfer-Encoding: quoted-printable\r\n\r\n<html>"));
    assert_non_null(strstr(out.data, "</html>\r\n--b1--\r\nepilogue\r\n"));
    const char *start = strstr(out.data, "<html>"), *end = strstr(out.data, "\r\n--b1--");
    qp_decode(start, (size_t)(end - start), &dec);
    assert_int_equal(dec.len, strlen(html) + 13);
    assert_memory_equal(dec.data + 6, html, strlen(html));
    free(html);
    strbuf_free(&out);
    strbuf_free(&m);
    strbuf_free(&dec);
}

static void test_already_quoted_printable(void **state)
{
    (void)state;
    struct strbuf out = STRBUF_INIT, m = STRBUF_INIT, a = STRBUF_INIT, b = STRBUF_INIT;
    struct mail_transport_report r;
    /* "=C3=A9" escapes at every offset modulo 75, so some fall on a wrapping point */
    char *qp = repeat("ab=C3=A9cd", 150); /* 1500 octets on one line */
    strbuf_printf(&m,
                  "From: a@example.org\r\nMIME-Version: 1.0\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Transfer-Encoding: quoted-printable\r\n\r\n%s\r\nsecond=\r\n line\r\n",
                  qp);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_CHANGED);
    assert_int_equal(r.parts_rewrapped, 1);
    assert_int_equal(r.parts_qp, 0);
    char *cte = field(out.data, "Content-Transfer-Encoding");
    assert_string_equal(cte, " quoted-printable");
    free(cte);
    qp_decode(body_of(m.data), strlen(body_of(m.data)), &a);
    qp_decode(body_of(out.data), strlen(body_of(out.data)), &b);
    assert_string_equal(a.data, b.data);
    free(qp);
    strbuf_free(&out);
    strbuf_free(&m);
    strbuf_free(&a);
    strbuf_free(&b);
}

static void test_crlf_handling(void **state)
{
    (void)state;
    struct strbuf out = STRBUF_INIT, m = STRBUF_INIT, dec = STRBUF_INIT;
    struct mail_transport_report r;
    /* empty lines, a lone "." line, a trailing tab, and a CR and an LF alone inside a line (not
     * from ingress, which refuses them, but the function must still keep them) */
    char *l = repeat("x", 1200);
    strbuf_printf(&m, "From: a@example.org\r\n\r\n\r\n%s\ta\rb\nc\t\r\n\r\n.\r\n\r\n", l);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_CHANGED);
    const char *b = body_of(out.data);
    assert_non_null(strstr(b, "=0D"));
    assert_non_null(strstr(b, "=0A"));
    assert_non_null(strstr(b, "=09\r\n"));
    qp_decode(b, out.len - (size_t)(b - out.data), &dec);
    assert_string_equal(dec.data, body_of(m.data));
    free(l);
    strbuf_free(&out);
    strbuf_free(&m);
    strbuf_free(&dec);
}

static void test_message_rfc822_and_signed(void **state)
{
    (void)state;
    struct strbuf out = STRBUF_INIT, m = STRBUF_INIT;
    struct mail_transport_report r;
    char *l = repeat("y", 1500);
    strbuf_printf(&m,
                  "From: a@example.org\r\nMIME-Version: 1.0\r\n"
                  "Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
                  "--outer\r\nContent-Type: message/rfc822\r\n\r\n"
                  "From: c@example.com\r\nSubject: inner\r\n\r\n%s\r\n"
                  "--outer--\r\n",
                  l);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_CHANGED);
    /* the part stays message/rfc822 in 7bit; the embedded message's body is re-encoded */
    assert_non_null(strstr(out.data, "--outer\r\nContent-Type: message/rfc822\r\n\r\n"
                                     "From: c@example.com\r\nSubject: inner\r\n"
                                     "Content-Transfer-Encoding: quoted-printable\r\n"
                                     "MIME-Version: 1.0\r\n\r\nyyy"));
    assert_int_equal(r.parts_qp, 1);

    /* multipart/signed: left exactly as it is, and said so */
    strbuf_reset(&m);
    strbuf_printf(&m,
                  "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; "
                  "protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=s\r\n\r\n"
                  "--s\r\nContent-Type: text/plain\r\n\r\n%s\r\n--s\r\n"
                  "Content-Type: application/pkcs7-signature\r\n"
                  "Content-Transfer-Encoding: base64\r\n\r\nMIIB\r\n--s--\r\n",
                  l);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_UNCHANGED);
    assert_int_equal(r.signed_lines_left, 1);
    assert_non_null(strstr(r.text, "multipart/signed left as is (1 line over 998"));

    /* an unknown transfer encoding: nothing but wrapping works */
    strbuf_reset(&m);
    strbuf_printf(&m, "From: a@example.org\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n%s\r\n",
                  l);
    assert_int_equal(run(m.data, &out, &r), MAIL_TRANSPORT_CHANGED);
    assert_int_equal(r.lines_wrapped, 1);
    assert_string_equal(r.text, "1 line wrapped (no encoding applies)");
    free(l);
    strbuf_free(&out);
    strbuf_free(&m);
}

/* Random messages of random structure (seeded, so a failure repeats): whatever comes in, a
 * changed message has no line over 998 octets, and making it safe again changes nothing. */
static void test_random_messages(void **state)
{
    (void)state;
    static const char *const types[] = {"text/plain; charset=utf-8",
                                        "text/html",
                                        "application/pdf",
                                        "message/rfc822",
                                        "multipart/mixed; boundary=\"r\"",
                                        "multipart/digest; boundary=r",
                                        "image/png",
                                        "multipart/alternative; boundary=\"r\"",
                                        NULL};
    static const char *const ctes[] = {"7bit", "8bit", "base64", "quoted-printable", "x-uue", NULL};
    unsigned seed = 12345;
    int changed = 0;
    struct strbuf m = STRBUF_INIT, out = STRBUF_INIT, again = STRBUF_INIT;
    for (int iter = 0; iter < 400; iter++) {
        strbuf_reset(&m);
        int parts = 1 + (int)((seed = seed * 1103515245 + 12345) >> 16) % 4;
        strbuf_puts(&m, "From: a@example.org\r\n");
        for (int p = 0; p < parts; p++) {
            seed = seed * 1103515245 + 12345;
            const char *t = types[(seed >> 16) % 9];
            const char *e = ctes[(seed >> 8) % 6];
            if (p > 0) strbuf_puts(&m, "--r\r\n");
            if (t) strbuf_printf(&m, "Content-Type: %s\r\n", t);
            if (e) strbuf_printf(&m, "Content-Transfer-Encoding: %s\r\n", e);
            if ((seed >> 4) % 3 == 0) strbuf_puts(&m, "Subject: a b\r\n");
            strbuf_puts(&m, "\r\n");
            for (int l = 0; l < 3; l++) {
                seed = seed * 1103515245 + 12345;
                size_t len = (seed >> 16) % 2500;
                for (size_t i = 0; i < len; i++) {
                    seed = seed * 1103515245 + 12345;
                    unsigned r = (seed >> 16) % 100;
                    char ch = r < 10   ? ' '
                              : r < 12 ? '='
                              : r < 14 ? (char)(0x80 + r)
                                       : (char)('a' + r % 26);
                    strbuf_append(&m, &ch, 1);
                }
                strbuf_puts(&m, "\r\n");
            }
        }
        if (parts > 1) strbuf_puts(&m, "--r--\r\n");
        struct mail_transport_report r;
        strbuf_reset(&out);
        enum mail_transport_verdict v = mail_transport_safe(m.data, m.len, &out, &r);
        if (v != MAIL_TRANSPORT_CHANGED || r.signed_lines_left) continue;
        changed++;
        assert_transport_safe(&out);
        strbuf_reset(&again);
        assert_int_equal(mail_transport_safe(out.data, out.len, &again, &r),
                         MAIL_TRANSPORT_UNCHANGED);
    }
    assert_true(changed > 200); /* the corpus mostly needs changing */
    strbuf_free(&m);
    strbuf_free(&out);
    strbuf_free(&again);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_998_and_999),
        cmocka_unit_test(test_header_with_whitespace),
        cmocka_unit_test(test_header_without_whitespace),
        cmocka_unit_test(test_text_7bit_and_8bit),
        cmocka_unit_test(test_base64_bad_wrapping),
        cmocka_unit_test(test_multipart_alternative),
        cmocka_unit_test(test_already_quoted_printable),
        cmocka_unit_test(test_crlf_handling),
        cmocka_unit_test(test_message_rfc822_and_signed),
        cmocka_unit_test(test_random_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
