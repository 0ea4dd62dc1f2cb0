/* test_data.c - unit tests for outrelay/ingress/data.c: ordinary CRLF lines, dot-unstuffing and
 * the end-of-data line, and the SMTP smuggling shapes (".\n", bare CR, ".\r\r\n", "\n.\r\n").
 * Streams are cut at every LF exactly as smtpd does, and no smuggled end may ever be read as
 * DATA_LINE_END: the first line that is not plain text must be a BARE_LF or BARE_CR. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ingress/data.h"

/* Parses one line given as a string literal (may hold NULs, so the length is explicit). */
static enum data_line parse(const char *raw, size_t len, const char **content, size_t *n)
{
    return data_parse_line(raw, len, content, n);
}
#define PARSE(lit, c, n) parse(lit, sizeof lit - 1, c, n)

static void assert_text(const char *raw, size_t len, const char *want, size_t want_len)
{
    const char *c = NULL;
    size_t n = 99;
    enum data_line kind = parse(raw, len, &c, &n);
    if (kind != DATA_LINE_TEXT) fail_msg("line of %zu bytes: kind %d, expected TEXT", len, kind);
    assert_int_equal(n, want_len);
    assert_memory_equal(c, want, want_len);
}
#define ASSERT_TEXT(lit, want) assert_text(lit, sizeof lit - 1, want, sizeof want - 1)

static void test_plain_lines(void **state)
{
    (void)state;
    ASSERT_TEXT("Subject: hello\r\n", "Subject: hello");
    ASSERT_TEXT("\r\n", "");
    ASSERT_TEXT(" .\r\n", " .");
    ASSERT_TEXT("x.\r\n", "x.");
    ASSERT_TEXT("tab\there\r\n", "tab\there");
    ASSERT_TEXT("caf\xc3\xa9\r\n", "caf\xc3\xa9");
    ASSERT_TEXT("nul\0inside\r\n", "nul\0inside"); /* binary-ish bytes pass through */

    /* the content points into the raw line: no copy, no CRLF */
    static const char raw[] = "abc\r\n";
    const char *c;
    size_t n;
    assert_int_equal(data_parse_line(raw, 5, &c, &n), DATA_LINE_TEXT);
    assert_ptr_equal(c, raw);
    assert_int_equal(n, 3);
}

static void test_dot_unstuffing_and_end(void **state)
{
    (void)state;
    ASSERT_TEXT("..x\r\n", ".x");
    ASSERT_TEXT("..\r\n", ".");
    ASSERT_TEXT("...\r\n", "..");
    ASSERT_TEXT(".x\r\n", "x"); /* RFC 5321 4.5.2: the first dot always goes */
    ASSERT_TEXT(". \r\n", " ");

    const char *c;
    size_t n = 7;
    assert_int_equal(PARSE(".\r\n", &c, &n), DATA_LINE_END);
    assert_int_equal(n, 0);
}

static void test_bare_lf(void **state)
{
    (void)state;
    const char *c;
    size_t n;
    assert_int_equal(PARSE(".\n", &c, &n), DATA_LINE_BARE_LF);
    assert_int_equal(n, 0);
    assert_int_equal(PARSE("\n", &c, &n), DATA_LINE_BARE_LF);
    assert_int_equal(PARSE("text\n", &c, &n), DATA_LINE_BARE_LF);
    assert_int_equal(PARSE("..\n", &c, &n), DATA_LINE_BARE_LF);
    /* a line that does not end in LF at all is never complete, let alone an end */
    assert_int_equal(PARSE(".\r", &c, &n), DATA_LINE_BARE_LF);
    assert_int_equal(PARSE(".", &c, &n), DATA_LINE_BARE_LF);
    assert_int_equal(data_parse_line("", 0, &c, &n), DATA_LINE_BARE_LF);
}

static void test_bare_cr(void **state)
{
    (void)state;
    const char *c;
    size_t n;
    assert_int_equal(PARSE(".\r\r\n", &c, &n), DATA_LINE_BARE_CR);
    assert_int_equal(n, 0);
    assert_int_equal(PARSE("\r.\r\r\n", &c, &n), DATA_LINE_BARE_CR);
    assert_int_equal(PARSE("\r.\r\n", &c, &n), DATA_LINE_BARE_CR);
    assert_int_equal(PARSE("a\rb\r\n", &c, &n), DATA_LINE_BARE_CR);
    assert_int_equal(PARSE("\r\r\n", &c, &n), DATA_LINE_BARE_CR);
    assert_int_equal(PARSE("x\r.\r\n", &c, &n), DATA_LINE_BARE_CR);
    assert_int_equal(PARSE("..\r\r\n", &c, &n), DATA_LINE_BARE_CR);
    /* CR then LF with a CR before it: the CR before the LF is fine, the earlier one is not */
    assert_int_equal(PARSE("ab\r\r\n", &c, &n), DATA_LINE_BARE_CR);
}

/* Feeds a byte stream line by line, cut after every LF as smtpd does (a trailing piece without
 * LF is passed too: the session would wait for more, but it must not be an end either).
 * Returns the first kind that is not TEXT, or TEXT if the stream is all text. */
static enum data_line feed(const char *stream, size_t len, size_t *text_lines)
{
    size_t pos = 0;
    *text_lines = 0;
    while (pos < len) {
        const char *lf = memchr(stream + pos, '\n', len - pos);
        size_t line_len = lf ? (size_t)(lf - (stream + pos)) + 1 : len - pos;
        const char *c;
        size_t n;
        enum data_line kind = data_parse_line(stream + pos, line_len, &c, &n);
        if (kind != DATA_LINE_TEXT) return kind;
        (*text_lines)++;
        pos += line_len;
    }
    return DATA_LINE_TEXT;
}
#define FEED(lit, lines) feed(lit, sizeof lit - 1, lines)

static void test_smuggling_streams_never_end(void **state)
{
    (void)state;
    /* Each stream is message text followed by a smuggled end and a second transaction. A
     * receiver that accepts any of these ends would deliver the "MAIL FROM" as a new message. */
    static const struct {
        const char *stream;
        size_t len;
        enum data_line first_bad;
    } cases[] = {
#define CASE(lit, kind) {lit, sizeof lit - 1, kind}
        CASE("Subject: x\r\n\r\nbody\n.\nMAIL FROM:<evil@x>\r\n", DATA_LINE_BARE_LF),
        CASE("Subject: x\r\n\r\nbody\r\n.\nMAIL FROM:<evil@x>\r\n", DATA_LINE_BARE_LF),
        CASE("Subject: x\r\n\r\nbody\n.\r\nMAIL FROM:<evil@x>\r\n", DATA_LINE_BARE_LF),
        CASE("Subject: x\r\n\r\nbody\r.\r\nMAIL FROM:<evil@x>\r\n", DATA_LINE_BARE_CR),
        CASE("Subject: x\r\n\r\nbody\r\n.\r\r\nMAIL FROM:<evil@x>\r\n", DATA_LINE_BARE_CR),
        CASE("Subject: x\r\n\r\nbody\r.\rMAIL FROM:<evil@x>\r\n", DATA_LINE_BARE_CR),
        CASE("Subject: x\r\n\r\nbody\r\n\r.\r\nMAIL FROM:<evil@x>\r\n", DATA_LINE_BARE_CR),
        CASE("Subject: x\r\n\r\nbody\r\n.\r\rMAIL FROM:<evil@x>\r\n", DATA_LINE_BARE_CR),
        CASE("Subject: x\r\n\r\nbody\n\r\n.\r\nMAIL FROM:<evil@x>\r\n", DATA_LINE_BARE_LF),
        CASE("Subject: x\r\n\r\n\n.\n", DATA_LINE_BARE_LF),
        CASE("Subject: x\r\n\r\nbody\r\n.\r", DATA_LINE_BARE_LF), /* incomplete: no end yet */
#undef CASE
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t lines;
        enum data_line kind = feed(cases[i].stream, cases[i].len, &lines);
        if (kind != cases[i].first_bad)
            fail_msg("stream %zu: first non-text line is %d after %zu lines, expected %d", i, kind,
                     lines, cases[i].first_bad);
    }
}

static void test_clean_stream_ends(void **state)
{
    (void)state;
    static const char stream[] = "From: a@example.org\r\n"
                                 "\r\n"
                                 "..leading dot\r\n"
                                 ".\r\n"
                                 "MAIL FROM:<next@example.org>\r\n";
    const char *want[] = {"From: a@example.org", "", ".leading dot"};
    size_t pos = 0, i = 0;
    for (;;) {
        const char *lf = memchr(stream + pos, '\n', sizeof stream - 1 - pos);
        assert_non_null(lf);
        size_t len = (size_t)(lf - (stream + pos)) + 1;
        const char *c;
        size_t n;
        enum data_line kind = data_parse_line(stream + pos, len, &c, &n);
        pos += len;
        if (kind == DATA_LINE_END) break;
        assert_int_equal(kind, DATA_LINE_TEXT);
        assert_true(i < 3);
        assert_int_equal(n, strlen(want[i]));
        assert_memory_equal(c, want[i], n);
        i++;
    }
    assert_int_equal(i, 3);
    /* the end is exactly where the next command starts */
    assert_string_equal(stream + pos, "MAIL FROM:<next@example.org>\r\n");
}

/* BDAT's argument: a size, then LAST or nothing; anything else is refused (the caller closes). */
static void test_bdat_argument(void **state)
{
    (void)state;
    uint64_t size = 7;
    int last = 7;
    assert_int_equal(data_parse_bdat("0 LAST", &size, &last), 0);
    assert_true(size == 0 && last == 1);
    assert_int_equal(data_parse_bdat("1234", &size, &last), 0);
    assert_true(size == 1234 && last == 0);
    assert_int_equal(data_parse_bdat("12 last", &size, &last), 0);
    assert_true(size == 12 && last == 1);
    assert_int_equal(data_parse_bdat("1844674407370955161", &size, &last), 0);
    assert_true(size == 1844674407370955161ULL);
    const char *bad[] = {"",         "LAST", " 12", "12  LAST", "12 LAST ",
                         "12 LASTX", "-1",   "12x", "1 2",      "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(data_parse_bdat(bad[i], &size, &last), -1);
}

/* A BDAT line keeps its dots and knows no end-of-data line; bare LF and bare CR as in DATA. */
static void test_bdat_lines(void **state)
{
    (void)state;
    const char *c;
    size_t n;
    assert_int_equal(data_parse_bdat_line(".\r\n", 3, &c, &n), DATA_LINE_TEXT);
    assert_int_equal(n, 1);
    assert_memory_equal(c, ".", 1);
    assert_int_equal(data_parse_bdat_line("..x\r\n", 5, &c, &n), DATA_LINE_TEXT);
    assert_int_equal(n, 3);
    assert_memory_equal(c, "..x", 3);
    assert_int_equal(data_parse_bdat_line("\r\n", 2, &c, &n), DATA_LINE_TEXT);
    assert_int_equal(n, 0);
    assert_int_equal(data_parse_bdat_line("a\n", 2, &c, &n), DATA_LINE_BARE_LF);
    assert_int_equal(data_parse_bdat_line("\n", 1, &c, &n), DATA_LINE_BARE_LF);
    assert_int_equal(data_parse_bdat_line("a\rb\r\n", 5, &c, &n), DATA_LINE_BARE_CR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_lines),
        cmocka_unit_test(test_dot_unstuffing_and_end),
        cmocka_unit_test(test_bare_lf),
        cmocka_unit_test(test_bare_cr),
        cmocka_unit_test(test_smuggling_streams_never_end),
        cmocka_unit_test(test_clean_stream_ends),
        cmocka_unit_test(test_bdat_argument),
        cmocka_unit_test(test_bdat_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
