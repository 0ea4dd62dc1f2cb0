/* test_dsn.c - unit tests for outrelay/qmgr/dsn.c: builds DSNs and parses them back (by hand
 * and, when /usr/bin/python3 exists, with Python's email package as an independent reader).
 * Checks MIME structure, RFC 3464 fields, CRLF-only line ends, the 998-octet limit, header
 * injection through remote replies and the choice of original vs. headers only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/strbuf.h"
#include "common/util.h"
#include "qmgr/dsn.h"

static const char test_original[] = "Received: from client.example.org\r\n"
                                    "From: Sender <s@example.org>\r\n"
                                    "To: a@example.net, b@example.com\r\n"
                                    "Subject: quarterly numbers\r\n"
                                    "Message-ID: <orig.1@example.org>\r\n"
                                    "\r\n"
                                    "Hello,\r\n"
                                    "the numbers are attached.\r\n";

static const struct dsn_recipient test_rcpts[2] = {
    {.address = "a@example.net",
     .orcpt = "rfc822;a@example.net",
     .action = "failed",
     .status = "5.1.1",
     .remote_mta = "mx1.example.net",
     .diagnostic = "550 5.1.1 <a@example.net>: no such user",
     .last_attempt = 1796000000},
    {.address = "b@example.com", .action = "failed", .status = "5.4.4"},
};

static struct dsn_request test_request(void)
{
    struct dsn_request req = {
        .reporting_mta = "relay.example.com",
        .queue_id = "7F3A2B1C0D",
        .envid = "ENV-42",
        .sender = "s@example.org",
        .arrival = 1795990000,
        .recipients = test_rcpts,
        .n_recipients = 2,
        .original = test_original,
        .original_len = sizeof test_original - 1,
    };
    return req;
}

/* ---- a small MIME reader for the tests ---------------------------------------------------- */

/* Every LF has a CR before it, every CR an LF after it, no line passes 998 octets. */
static void assert_lines_ok(const struct strbuf *msg)
{
    size_t line_len = 0;
    for (size_t i = 0; i < msg->len; i++) {
        char c = msg->data[i];
        if (c == '\r') {
            assert_true(i + 1 < msg->len && msg->data[i + 1] == '\n');
        } else if (c == '\n') {
            assert_true(i > 0 && msg->data[i - 1] == '\r');
            assert_true(line_len - 1 <= 998); /* line_len counted the CR */
            line_len = 0;
            continue;
        }
        line_len++;
    }
    assert_int_equal(line_len, 0); /* ends with CRLF */
}

/* The unfolded value of the first field called name in the header section [hdr, hdr+len), or
 * NULL. Caller frees. */
static char *field_value(const char *hdr, size_t len, const char *name)
{
    size_t nlen = strlen(name);
    for (size_t pos = 0; pos < len;) {
        const char *eol = memmem(hdr + pos, len - pos, "\r\n", 2);
        size_t line_end = eol ? (size_t)(eol - hdr) : len;
        if (line_end == pos) return NULL; /* end of header section */
        if (line_end - pos > nlen && strncasecmp(hdr + pos, name, nlen) == 0 &&
            hdr[pos + nlen] == ':') {
            struct strbuf v = STRBUF_INIT;
            size_t start = pos + nlen + 1;
            for (;;) {
                strbuf_append(&v, hdr + start, line_end - start);
                size_t next = line_end + 2;
                if (next >= len || (hdr[next] != ' ' && hdr[next] != '\t')) break;
                const char *e2 = memmem(hdr + next, len - next, "\r\n", 2);
                start = next;
                line_end = e2 ? (size_t)(e2 - hdr) : len;
            }
            char *s = strbuf_detach(&v, NULL);
            char *p = s;
            while (*p == ' ' || *p == '\t')
                p++;
            memmove(s, p, strlen(p) + 1);
            return s;
        }
        pos = line_end + 2;
    }
    return NULL;
}

struct mime_part {
    const char *start; /* headers */
    size_t len;
    const char *body;
    size_t body_len;
};

/* Splits the multipart body of msg on boundary; returns the number of parts (max 8). */
static size_t split_parts(const struct strbuf *msg, const char *boundary, struct mime_part *parts)
{
    char delim[128];
    snprintf(delim, sizeof delim, "\r\n--%s", boundary);
    size_t dlen = strlen(delim), n = 0;
    const char *end = msg->data + msg->len;
    const char *p = memmem(msg->data, msg->len, delim, dlen);
    assert_non_null(p);
    while (p != NULL && n < 8) {
        p += dlen;
        if (p + 2 <= end && p[0] == '-' && p[1] == '-') break; /* closing delimiter */
        assert_true(p[0] == '\r' && p[1] == '\n');
        p += 2;
        const char *next = memmem(p, (size_t)(end - p), delim, dlen);
        assert_non_null(next);
        parts[n].start = p;
        parts[n].len = (size_t)(next - p);
        const char *sep = memmem(p, parts[n].len, "\r\n\r\n", 4);
        assert_non_null(sep);
        parts[n].body = sep + 4;
        parts[n].body_len = (size_t)(next - parts[n].body);
        n++;
        p = next;
    }
    return n;
}

/* The boundary parameter of the top-level Content-Type. Caller frees. */
static char *top_boundary(const struct strbuf *msg)
{
    char *ctype = field_value(msg->data, msg->len, "Content-Type");
    assert_non_null(ctype);
    assert_non_null(strstr(ctype, "multipart/report"));
    assert_non_null(strstr(ctype, "report-type=delivery-status"));
    const char *b = strstr(ctype, "boundary=\"");
    assert_non_null(b);
    b += strlen("boundary=\"");
    const char *q = strchr(b, '"');
    assert_non_null(q);
    char *boundary = xstrndup(b, (size_t)(q - b));
    free(ctype);
    return boundary;
}

static void assert_field(const struct mime_part *block_hdr, size_t len, const char *name,
                         const char *expected)
{
    char *v = field_value(block_hdr->start, len, name);
    if (expected == NULL) {
        assert_null(v);
        return;
    }
    assert_non_null(v);
    assert_string_equal(v, expected);
    free(v);
}

/* Splits a delivery-status body into its blocks (per-message, then one per recipient). */
static size_t split_blocks(const struct mime_part *part, struct mime_part *blocks, size_t max)
{
    size_t n = 0;
    const char *p = part->body, *end = part->body + part->body_len;
    while (p < end && n < max) {
        const char *sep = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        const char *stop = sep ? sep + 2 : end;
        blocks[n].start = p;
        blocks[n].len = (size_t)(stop - p);
        n++;
        p = sep ? sep + 4 : end;
    }
    return n;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_dsn_two_recipients(void **state)
{
    (void)state;
    struct dsn_request req = test_request();
    struct strbuf msg = STRBUF_INIT;
    dsn_build(&req, &msg);
    assert_lines_ok(&msg);

    char *v;
    assert_non_null(v = field_value(msg.data, msg.len, "From"));
    assert_string_equal(v, "Mail Delivery System <MAILER-DAEMON@relay.example.com>");
    free(v);
    assert_non_null(v = field_value(msg.data, msg.len, "To"));
    assert_string_equal(v, "<s@example.org>");
    free(v);
    assert_non_null(v = field_value(msg.data, msg.len, "Subject"));
    assert_string_equal(v, "Undelivered Mail Returned to Sender");
    free(v);
    assert_non_null(v = field_value(msg.data, msg.len, "Auto-Submitted"));
    assert_string_equal(v, "auto-replied");
    free(v);
    assert_non_null(v = field_value(msg.data, msg.len, "MIME-Version"));
    assert_string_equal(v, "1.0");
    free(v);
    assert_non_null(v = field_value(msg.data, msg.len, "Date"));
    assert_true(strlen(v) > 20 && strstr(v, "+0000") != NULL);
    free(v);
    assert_non_null(v = field_value(msg.data, msg.len, "Message-ID"));
    assert_true(v[0] == '<' && strstr(v, "@relay.example.com>") != NULL);
    free(v);

    char *boundary = top_boundary(&msg);
    assert_null(memmem(test_original, sizeof test_original - 1, boundary, strlen(boundary)));
    struct mime_part parts[8];
    assert_int_equal(split_parts(&msg, boundary, parts), 3);

    /* 1: people */
    assert_non_null(v = field_value(parts[0].start, parts[0].len, "Content-Type"));
    assert_non_null(strstr(v, "text/plain"));
    free(v);
    assert_non_null(memmem(parts[0].body, parts[0].body_len, "<a@example.net>", 15));
    assert_non_null(memmem(parts[0].body, parts[0].body_len, "<b@example.com>", 15));
    assert_non_null(memmem(parts[0].body, parts[0].body_len, "no such user", 12));

    /* 2: programs */
    assert_non_null(v = field_value(parts[1].start, parts[1].len, "Content-Type"));
    assert_string_equal(v, "message/delivery-status");
    free(v);
    struct mime_part blocks[8];
    assert_int_equal(split_blocks(&parts[1], blocks, 8), 3);
    assert_field(&blocks[0], blocks[0].len, "Reporting-MTA", "dns; relay.example.com");
    assert_field(&blocks[0], blocks[0].len, "Original-Envelope-Id", "ENV-42");
    assert_non_null(v = field_value(blocks[0].start, blocks[0].len, "Arrival-Date"));
    free(v);
    assert_field(&blocks[0], blocks[0].len, "X-Postfix-Queue-ID", NULL);

    assert_field(&blocks[1], blocks[1].len, "Final-Recipient", "rfc822; a@example.net");
    assert_field(&blocks[1], blocks[1].len, "Original-Recipient", "rfc822;a@example.net");
    assert_field(&blocks[1], blocks[1].len, "Action", "failed");
    assert_field(&blocks[1], blocks[1].len, "Status", "5.1.1");
    assert_field(&blocks[1], blocks[1].len, "Remote-MTA", "dns; mx1.example.net");
    assert_field(&blocks[1], blocks[1].len, "Diagnostic-Code",
                 "smtp; 550 5.1.1 <a@example.net>: no such user");
    assert_non_null(v = field_value(blocks[1].start, blocks[1].len, "Last-Attempt-Date"));
    free(v);

    assert_field(&blocks[2], blocks[2].len, "Final-Recipient", "rfc822; b@example.com");
    assert_field(&blocks[2], blocks[2].len, "Original-Recipient", NULL);
    assert_field(&blocks[2], blocks[2].len, "Action", "failed");
    assert_field(&blocks[2], blocks[2].len, "Status", "5.4.4");
    assert_field(&blocks[2], blocks[2].len, "Remote-MTA", NULL);
    assert_field(&blocks[2], blocks[2].len, "Diagnostic-Code", NULL);
    assert_field(&blocks[2], blocks[2].len, "Last-Attempt-Date", NULL);

    /* 3: the whole original, byte for byte */
    assert_non_null(v = field_value(parts[2].start, parts[2].len, "Content-Type"));
    assert_string_equal(v, "message/rfc822");
    free(v);
    assert_int_equal(parts[2].body_len, sizeof test_original - 1);
    assert_memory_equal(parts[2].body, test_original, sizeof test_original - 1);

    free(boundary);
    strbuf_free(&msg);
}

static void assert_headers_only(const struct strbuf *msg, const char *subject_line)
{
    assert_lines_ok(msg);
    char *boundary = top_boundary(msg);
    struct mime_part parts[8];
    assert_int_equal(split_parts(msg, boundary, parts), 3);
    char *v = field_value(parts[2].start, parts[2].len, "Content-Type");
    assert_non_null(v);
    assert_string_equal(v, "text/rfc822-headers");
    free(v);
    assert_non_null(memmem(parts[2].body, parts[2].body_len, subject_line, strlen(subject_line)));
    assert_null(memmem(parts[2].body, parts[2].body_len, "\r\n\r\n", 4));
    assert_null(memmem(parts[2].body, parts[2].body_len, "attached", 8));
    assert_null(memmem(parts[2].body, parts[2].body_len, "yyyy", 4));
    assert_null(memmem(msg->data, msg->len, "message/rfc822", 14));
    free(boundary);
}

static void test_dsn_headers_only(void **state)
{
    (void)state;
    struct dsn_request req = test_request();
    req.headers_only = 1;
    struct strbuf msg = STRBUF_INIT;
    dsn_build(&req, &msg);
    assert_headers_only(&msg, "Subject: quarterly numbers\r\n");
    /* Exactly the header section, each line CRLF-terminated. */
    char *boundary = top_boundary(&msg);
    struct mime_part parts[8];
    split_parts(&msg, boundary, parts);
    const char *hdr_end = strstr(test_original, "\r\n\r\n") + 2;
    size_t hdr_len = (size_t)(hdr_end - test_original);
    assert_int_equal(parts[2].body_len, hdr_len);
    assert_memory_equal(parts[2].body, test_original, hdr_len);
    free(boundary);
    strbuf_free(&msg);
}

static void test_dsn_large_original_sends_headers(void **state)
{
    (void)state;
    struct strbuf big = STRBUF_INIT;
    strbuf_puts(&big, test_original);
    while (big.len <= 64 * 1024)
        strbuf_puts(&big, "more numbers are attached, line after line after line.\r\n");
    struct dsn_request req = test_request();
    req.original = big.data;
    req.original_len = big.len;
    struct strbuf msg = STRBUF_INIT;
    dsn_build(&req, &msg);
    assert_headers_only(&msg, "Subject: quarterly numbers\r\n");
    assert_true(msg.len < 8192);
    strbuf_free(&msg);
    strbuf_free(&big);
}

static void test_dsn_delayed_subject(void **state)
{
    (void)state;
    struct dsn_recipient rcpts[2] = {
        {.address = "a@example.net", .action = "delayed", .status = "4.4.1"},
        {.address = "b@example.com", .action = "delayed", .status = "4.7.650"},
    };
    struct dsn_request req = test_request();
    req.recipients = rcpts;
    struct strbuf msg = STRBUF_INIT;
    dsn_build(&req, &msg);
    char *v = field_value(msg.data, msg.len, "Subject");
    assert_string_equal(v, "Delayed Mail (still being retried)");
    free(v);
    assert_non_null(strstr(msg.data, "\r\nAction: delayed\r\n"));

    rcpts[1].action = "failed";
    strbuf_reset(&msg);
    dsn_build(&req, &msg);
    v = field_value(msg.data, msg.len, "Subject");
    assert_string_equal(v, "Undelivered Mail Returned to Sender");
    free(v);
    strbuf_free(&msg);
}

/* A delay warning as the queue builds it: every recipient "delayed" with a 4.x.x status, the
 * last reply, Will-Retry-Until (RFC 3464 2.3.9) and the header section only; a failed recipient
 * never carries Will-Retry-Until. */
static void test_dsn_delay_warning_fields(void **state)
{
    (void)state;
    struct dsn_recipient rcpts[2] = {
        {.address = "a@example.net",
         .orcpt = "rfc822;a@example.net",
         .action = "delayed",
         .status = "4.3.0",
         .remote_mta = "mx1.example.net",
         .diagnostic = "451 4.3.0 come back later",
         .will_retry_until = 1796422000},
        {.address = "b@example.com", .action = "delayed", .will_retry_until = 1796422000},
    };
    struct dsn_request req = test_request();
    req.recipients = rcpts;
    req.headers_only = 1;
    struct strbuf msg = STRBUF_INIT;
    dsn_build(&req, &msg);
    assert_headers_only(&msg, "Subject: quarterly numbers\r\n");
    char *v = field_value(msg.data, msg.len, "Subject");
    assert_string_equal(v, "Delayed Mail (still being retried)");
    free(v);
    v = field_value(msg.data, msg.len, "To");
    assert_string_equal(v, "<s@example.org>");
    free(v);
    v = field_value(msg.data, msg.len, "Auto-Submitted");
    assert_string_equal(v, "auto-replied");
    free(v);

    char *boundary = top_boundary(&msg);
    struct mime_part parts[8], blocks[8];
    assert_int_equal(split_parts(&msg, boundary, parts), 3);
    assert_non_null(memmem(parts[0].body, parts[0].body_len, "not yet been delivered", 22));
    assert_non_null(memmem(parts[0].body, parts[0].body_len, "come back later", 15));
    assert_int_equal(split_blocks(&parts[1], blocks, 8), 3);
    assert_field(&blocks[0], blocks[0].len, "Reporting-MTA", "dns; relay.example.com");
    assert_field(&blocks[0], blocks[0].len, "Original-Envelope-Id", "ENV-42");
    char date[64];
    util_rfc5322_date(1795990000, date, sizeof date);
    assert_field(&blocks[0], blocks[0].len, "Arrival-Date", date);

    util_rfc5322_date(1796422000, date, sizeof date);
    assert_field(&blocks[1], blocks[1].len, "Final-Recipient", "rfc822; a@example.net");
    assert_field(&blocks[1], blocks[1].len, "Original-Recipient", "rfc822;a@example.net");
    assert_field(&blocks[1], blocks[1].len, "Action", "delayed");
    assert_field(&blocks[1], blocks[1].len, "Status", "4.3.0");
    assert_field(&blocks[1], blocks[1].len, "Remote-MTA", "dns; mx1.example.net");
    assert_field(&blocks[1], blocks[1].len, "Diagnostic-Code", "smtp; 451 4.3.0 come back later");
    assert_field(&blocks[1], blocks[1].len, "Will-Retry-Until", date);
    assert_field(&blocks[1], blocks[1].len, "Last-Attempt-Date", NULL);

    /* no status known: the generic temporary one */
    assert_field(&blocks[2], blocks[2].len, "Action", "delayed");
    assert_field(&blocks[2], blocks[2].len, "Status", "4.0.0");
    assert_field(&blocks[2], blocks[2].len, "Will-Retry-Until", date);
    free(boundary);

    /* Will-Retry-Until belongs to delayed recipients only */
    rcpts[1].action = "failed";
    rcpts[1].status = "5.1.1";
    strbuf_reset(&msg);
    dsn_build(&req, &msg);
    boundary = top_boundary(&msg);
    assert_int_equal(split_parts(&msg, boundary, parts), 3);
    assert_int_equal(split_blocks(&parts[1], blocks, 8), 3);
    assert_field(&blocks[1], blocks[1].len, "Will-Retry-Until", date);
    assert_field(&blocks[2], blocks[2].len, "Will-Retry-Until", NULL);
    free(boundary);
    strbuf_free(&msg);
}

static void test_dsn_hostile_input(void **state)
{
    (void)state;
    struct strbuf diag = STRBUF_INIT, original = STRBUF_INIT;
    strbuf_puts(&diag, "550 5.7.1 rejected\r\nBcc: victim@example.net\r\n\r\nInjected body\n");
    for (int i = 0; i < 3000; i++)
        strbuf_puts(&diag, "x");
    for (int i = 0; i < 200; i++)
        strbuf_puts(&diag, " word");
    /* Bare LF line ends and one line too long for SMTP: must be repaired, not copied. */
    strbuf_puts(&original, "Subject: bare\nFrom: s@example.org\nX-Long: ");
    for (int i = 0; i < 1500; i++)
        strbuf_puts(&original, "z");
    strbuf_puts(&original, "\n\n");
    for (int i = 0; i < 2000; i++)
        strbuf_puts(&original, "y");
    strbuf_puts(&original, "\nend\r");

    struct dsn_recipient rcpts[1] = {{.address = "a@example.net\r\nBcc: x@example.net",
                                      .action = "failed",
                                      .status = "5.7.1",
                                      .remote_mta = "mx.example.net",
                                      .diagnostic = diag.data}};
    struct dsn_request req = test_request();
    req.recipients = rcpts;
    req.n_recipients = 1;
    req.original = original.data;
    req.original_len = original.len;
    req.sender = "s@example.org\r\nBcc: y@example.net";
    struct strbuf msg = STRBUF_INIT;
    dsn_build(&req, &msg);
    assert_lines_ok(&msg);
    assert_null(strstr(msg.data, "\r\nBcc:"));
    assert_null(strstr(msg.data, "\r\nInjected body"));
    assert_headers_only(&msg, "Subject: bare\r\nFrom: s@example.org\r\n");
    /* the 2000-octet line forced headers only; bare LF became CRLF */

    char *boundary = top_boundary(&msg);
    struct mime_part parts[8], blocks[4];
    split_parts(&msg, boundary, parts);
    assert_int_equal(split_blocks(&parts[1], blocks, 4), 2);
    char *v = field_value(blocks[1].start, blocks[1].len, "Diagnostic-Code");
    assert_non_null(v);
    assert_true(
        strncmp(v, "smtp; 550 5.7.1 rejected Bcc: victim@example.net Injected body x", 64) == 0);
    assert_true(strlen(v) > 4000);
    free(v);
    free(boundary);
    strbuf_free(&msg);
    strbuf_free(&diag);
    strbuf_free(&original);
}

static void test_dsn_boundary_and_ids_unique(void **state)
{
    (void)state;
    /* An original that already contains text looking like our boundaries. */
    struct strbuf original = STRBUF_INIT;
    strbuf_puts(&original, "Subject: tricky\r\n\r\n");
    strbuf_puts(&original, "--=_outrelay_dsn_\r\n=_outrelay_dsn_0000000000000000_0\r\n");
    struct dsn_request req = test_request();
    req.original = original.data;
    req.original_len = original.len;
    struct strbuf a = STRBUF_INIT, b = STRBUF_INIT;
    dsn_build(&req, &a);
    dsn_build(&req, &b);
    char *ba = top_boundary(&a), *bb = top_boundary(&b);
    assert_string_not_equal(ba, bb);
    assert_null(memmem(original.data, original.len, ba, strlen(ba)));
    char *ma = field_value(a.data, a.len, "Message-ID");
    char *mb = field_value(b.data, b.len, "Message-ID");
    assert_string_not_equal(ma, mb);
    struct mime_part parts[8];
    assert_int_equal(split_parts(&a, ba, parts), 3);
    assert_memory_equal(parts[2].body, original.data, original.len);
    free(ma);
    free(mb);
    free(ba);
    free(bb);
    strbuf_free(&a);
    strbuf_free(&b);
    strbuf_free(&original);
}

static void test_dsn_without_original(void **state)
{
    (void)state;
    struct dsn_request req = test_request();
    req.original = NULL;
    req.original_len = 0;
    req.envid = NULL;
    struct strbuf msg = STRBUF_INIT;
    dsn_build(&req, &msg);
    assert_lines_ok(&msg);
    char *boundary = top_boundary(&msg);
    struct mime_part parts[8];
    assert_int_equal(split_parts(&msg, boundary, parts), 2);
    assert_null(strstr(msg.data, "Original-Envelope-Id"));
    free(boundary);
    strbuf_free(&msg);
}

/* Python's email package as an independent reader: content types, report-type and the number
 * of recipient blocks in the delivery-status part. */
static const char python_check[] =
    "import sys, email\n"
    "m = email.message_from_binary_file(sys.stdin.buffer)\n"
    "assert m.get_content_type() == 'multipart/report', m.get_content_type()\n"
    "assert m.get_param('report-type') == 'delivery-status'\n"
    "assert not m.defects, m.defects\n"
    "parts = m.get_payload()\n"
    "types = [p.get_content_type() for p in parts]\n"
    "ds = [p for p in parts if p.get_content_type() == 'message/delivery-status'][0]\n"
    "blocks = ds.get_payload()\n"
    "rcpts = [b['Final-Recipient'] for b in blocks[1:]]\n"
    "assert blocks[0]['Reporting-MTA'] == 'dns; relay.example.com'\n"
    "print(len(blocks) - 1, ','.join(types), ' '.join(rcpts), sep='|')\n";

static void run_python(const struct strbuf *msg, const char *expected)
{
    char dir[] = "/tmp/test_dsn.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char script[64], input[64], cmd[256];
    snprintf(script, sizeof script, "%s/check.py", dir);
    snprintf(input, sizeof input, "%s/dsn.eml", dir);
    FILE *f = fopen(script, "w");
    assert_non_null(f);
    fputs(python_check, f);
    fclose(f);
    f = fopen(input, "wb");
    assert_non_null(f);
    fwrite(msg->data, 1, msg->len, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s < %s", script, input);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[512] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    unlink(script);
    unlink(input);
    rmdir(dir);
    assert_int_equal(status, 0);
    assert_string_equal(out, expected);
}

static void test_dsn_python_parses_it(void **state)
{
    (void)state;
    if (access("/usr/bin/python3", X_OK) != 0) skip();
    struct dsn_request req = test_request();
    struct strbuf msg = STRBUF_INIT;
    dsn_build(&req, &msg);
    run_python(&msg, "2|text/plain,message/delivery-status,message/rfc822|"
                     "rfc822; a@example.net rfc822; b@example.com\n");
    strbuf_reset(&msg);
    req.headers_only = 1;
    dsn_build(&req, &msg);
    run_python(&msg, "2|text/plain,message/delivery-status,text/rfc822-headers|"
                     "rfc822; a@example.net rfc822; b@example.com\n");
    strbuf_free(&msg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dsn_two_recipients),
        cmocka_unit_test(test_dsn_headers_only),
        cmocka_unit_test(test_dsn_large_original_sends_headers),
        cmocka_unit_test(test_dsn_delayed_subject),
        cmocka_unit_test(test_dsn_delay_warning_fields),
        cmocka_unit_test(test_dsn_hostile_input),
        cmocka_unit_test(test_dsn_boundary_and_ids_unique),
        cmocka_unit_test(test_dsn_without_original),
        cmocka_unit_test(test_dsn_python_parses_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
