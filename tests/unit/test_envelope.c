/* test_envelope.c - unit tests for outrelay/mail/envelope.c: serialise -> parse gives back every
 * field, including values with '%', tabs, CR/LF and UTF-8, the null sender, and many recipients
 * with ORCPT/NOTIFY; the text form never has a line break inside a value; garbage, truncated or
 * duplicated input is refused with NULL (and without leaks). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/strbuf.h"
#include "common/util.h"
#include "mail/smtp_proto.h"
#include "mail/envelope.h"

static void assert_same_string(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        assert_ptr_equal(a, b);
    else
        assert_string_equal(a, b);
}

static void assert_same_envelope(const struct envelope *a, const struct envelope *b)
{
    assert_string_equal(a->queue_id, b->queue_id);
    assert_int_equal(a->arrival, b->arrival);
    assert_same_string(a->origin, b->origin);
    assert_same_string(a->client_addr, b->client_addr);
    assert_same_string(a->helo, b->helo);
    assert_same_string(a->auth_user, b->auth_user);
    assert_same_string(a->sender, b->sender);
    assert_same_string(a->envid, b->envid);
    assert_int_equal(a->ret_hdrs, b->ret_hdrs);
    assert_int_equal(a->body_8bit, b->body_8bit);
    assert_int_equal(a->smtputf8, b->smtputf8);
    assert_int_equal(a->requiretls, b->requiretls);
    assert_same_string(a->message_id, b->message_id);
    assert_same_string(a->from_domain, b->from_domain);
    assert_int_equal(a->size, b->size);
    assert_int_equal(a->n_rcpts, b->n_rcpts);
    for (size_t i = 0; i < a->n_rcpts; i++) {
        assert_string_equal(a->rcpts[i].address, b->rcpts[i].address);
        assert_same_string(a->rcpts[i].orcpt, b->rcpts[i].orcpt);
        assert_int_equal(a->rcpts[i].notify, b->rcpts[i].notify);
    }
}

/* Serialises env, checks the text is "key value\n" lines, parses it back and compares. */
static void round_trip(const struct envelope *env)
{
    struct strbuf text = STRBUF_INIT;
    envelope_serialize(env, &text);
    assert_true(text.len > 0);
    assert_int_equal(text.data[text.len - 1], '\n');
    assert_null(memchr(text.data, '\r', text.len));
    assert_null(memchr(text.data, '\0', text.len));
    for (const char *line = text.data; line < text.data + text.len;) {
        const char *nl = memchr(line, '\n', (size_t)(text.data + text.len - line));
        assert_non_null(nl);
        const char *sp = memchr(line, ' ', (size_t)(nl - line));
        assert_non_null(sp);
        assert_true(sp > line);
        line = nl + 1;
    }
    struct envelope *back = envelope_parse(text.data, text.len);
    if (!back) fail_msg("envelope_parse refused its own output:\n%s", text.data);
    assert_same_envelope(env, back);
    envelope_free(back);
    strbuf_free(&text);
}

static void test_round_trip_every_field(void **state)
{
    (void)state;
    struct envelope *env = envelope_new();
    snprintf(env->queue_id, sizeof env->queue_id, "%s", "7F3A2B1C0D9E8F7A6B5");
    env->arrival = 1795990000;
    env->origin = xstrdup("marketing");
    env->client_addr = xstrdup("2001:db8::25");
    env->helo = xstrdup("client.example.org");
    env->auth_user = xstrdup("alice@example.org");
    env->sender = xstrdup("bounces+123@example.org");
    env->envid = xstrdup("ENV-42");
    env->ret_hdrs = 1;
    env->body_8bit = 1;
    env->smtputf8 = 1;
    env->requiretls = 1;
    env->message_id = xstrdup("<abc.123@example.org>");
    env->from_domain = xstrdup("example.org");
    env->size = INT64_C(123456789012);
    envelope_add_rcpt(env, "bob@example.net", "rfc822;bob@example.net",
                      SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE);
    envelope_add_rcpt(env, "carol@example.com", NULL, 0);
    round_trip(env);
    envelope_free(env);
}

static void test_round_trip_each_flag_alone(void **state)
{
    (void)state;
    for (int bit = 0; bit < 4; bit++) {
        struct envelope *env = envelope_new();
        snprintf(env->queue_id, sizeof env->queue_id, "Q%d", bit);
        env->sender = xstrdup("a@example.org");
        env->ret_hdrs = bit == 0;
        env->body_8bit = bit == 1;
        env->smtputf8 = bit == 2;
        env->requiretls = bit == 3;
        envelope_add_rcpt(env, "b@example.org", NULL, 0);
        round_trip(env);
        envelope_free(env);
    }
}

static void test_round_trip_awkward_values(void **state)
{
    (void)state;
    static const char *awkward[] = {
        "100%",
        "%25 already escaped",
        "%",
        "%%",
        "a%0Ab",
        "tab\there",
        "\t",
        "line\nbreak",
        "crlf\r\ninside",
        "\n",
        "\r",
        "trailing %",
        "trailing %4",
        "sp ace",
        " leading space",
        "j\xc3\xb6rg@b\xc3\xbc"
        "cher.example",
        "\xe2\x82\xac \xf0\x9f\x93\xa7",
        "\x01\x7f\xff",
        "",
    };
    for (size_t i = 0; i < sizeof awkward / sizeof awkward[0]; i++) {
        const char *v = awkward[i];
        struct envelope *env = envelope_new();
        snprintf(env->queue_id, sizeof env->queue_id, "Q%zu", i);
        env->arrival = -1;
        env->origin = xstrdup(v);
        env->client_addr = xstrdup(v);
        env->helo = xstrdup(v);
        env->auth_user = xstrdup(v);
        env->sender = xstrdup(v);
        env->envid = xstrdup(v);
        env->message_id = xstrdup(v);
        env->from_domain = xstrdup(v);
        env->size = 0;
        /* orcpt "" means absent, so give it a prefix */
        char orcpt[128];
        snprintf(orcpt, sizeof orcpt, "rfc822;%s", v);
        envelope_add_rcpt(env, v[0] ? v : "x", orcpt, SMTP_NOTIFY_DELAY);
        envelope_add_rcpt(env, "plain@example.org", v[0] ? v : NULL, 0);
        round_trip(env);
        envelope_free(env);
    }
}

static void test_null_sender_and_absent_fields(void **state)
{
    (void)state;
    struct envelope *env = envelope_new();
    snprintf(env->queue_id, sizeof env->queue_id, "%s", "NULLSENDER");
    env->origin = xstrdup("dsn");
    env->sender = xstrdup("");
    envelope_add_rcpt(env, "postmaster@example.org", "", SMTP_NOTIFY_NEVER);
    assert_null(env->rcpts[0].orcpt); /* "" is stored as absent */
    round_trip(env);

    struct strbuf text = STRBUF_INIT;
    envelope_serialize(env, &text);
    struct envelope *back = envelope_parse(text.data, text.len);
    assert_non_null(back);
    assert_string_equal(back->sender, "");
    assert_null(back->auth_user);
    assert_null(back->envid);
    assert_null(back->helo);
    assert_null(back->client_addr);
    assert_null(back->message_id);
    assert_null(back->from_domain);
    envelope_free(back);
    strbuf_free(&text);

    /* a NULL sender is written as the null sender */
    free(env->sender);
    env->sender = NULL;
    envelope_serialize(env, &text);
    back = envelope_parse(text.data, text.len);
    assert_non_null(back);
    assert_string_equal(back->sender, "");
    envelope_free(back);
    strbuf_free(&text);
    envelope_free(env);
}

static void test_many_recipients(void **state)
{
    (void)state;
    struct envelope *env = envelope_new();
    snprintf(env->queue_id, sizeof env->queue_id, "%s", "MANY");
    env->sender = xstrdup("list@example.org");
    const int n = 1000;
    for (int i = 0; i < n; i++) {
        char addr[64], orcpt[96];
        snprintf(addr, sizeof addr, "user%d@host%d.example", i, i % 7);
        snprintf(orcpt, sizeof orcpt, "rfc822;User%%%d\t@host%d.example", i, i % 7);
        static const int notify[] = {0, SMTP_NOTIFY_NEVER, SMTP_NOTIFY_SUCCESS,
                                     SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY,
                                     SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY};
        envelope_add_rcpt(env, addr, i % 3 ? orcpt : NULL, notify[i % 5]);
    }
    round_trip(env);

    struct strbuf text = STRBUF_INIT;
    envelope_serialize(env, &text);
    struct envelope *back = envelope_parse(text.data, text.len);
    assert_non_null(back);
    assert_int_equal(back->n_rcpts, n);
    assert_string_equal(back->rcpts[999].address, "user999@host5.example");
    assert_string_equal(back->rcpts[998].orcpt, "rfc822;User%998\t@host4.example");
    assert_null(back->rcpts[999].orcpt);
    assert_int_equal(back->rcpts[4].notify,
                     SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY);
    envelope_free(back);
    strbuf_free(&text);
    envelope_free(env);
}

static void test_unknown_keys_ignored(void **state)
{
    (void)state;
    static const char text[] = "queue_id Q1\n"
                               "future_key some value\n"
                               "sender a@example.org\n"
                               "rcpt 0\tb@example.org\t\n";
    struct envelope *env = envelope_parse(text, sizeof text - 1);
    assert_non_null(env);
    assert_string_equal(env->queue_id, "Q1");
    assert_int_equal(env->n_rcpts, 1);
    assert_null(env->rcpts[0].orcpt);
    envelope_free(env);
}

/* A spool written before REQUIRETLS existed has no such key: the message does not ask for it. */
static void test_requiretls_absent_in_old_spools(void **state)
{
    (void)state;
    static const char old[] = "queue_id Q2\n"
                              "sender a@example.org\n"
                              "flags 001\n"
                              "rcpt 0\tb@example.org\t\n";
    struct envelope *env = envelope_parse(old, sizeof old - 1);
    assert_non_null(env);
    assert_int_equal(env->requiretls, 0);
    assert_int_equal(env->smtputf8, 1);
    struct strbuf text = STRBUF_INIT;
    envelope_serialize(env, &text);
    assert_null(strstr(text.data, "requiretls")); /* written only when set */
    env->requiretls = 1;
    strbuf_reset(&text);
    envelope_serialize(env, &text);
    assert_non_null(strstr(text.data, "\nrequiretls 1\n"));
    strbuf_free(&text);
    envelope_free(env);
}

static void test_garbage_refused(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        size_t len;
    } bad[] = {
#define BAD(lit) {lit, sizeof lit - 1}
        BAD(""),
        BAD("\n"),
        BAD("garbage"),
        BAD("garbage\n"),
        BAD("\x00\x01\x02\xff\n"),
        /* missing queue_id / sender / recipients */
        BAD("sender a@example.org\nrcpt 0\tb@example.org\t\n"),
        BAD("queue_id Q\nrcpt 0\tb@example.org\t\n"),
        BAD("queue_id Q\nsender a@example.org\n"),
        BAD("queue_id \nsender a@example.org\nrcpt 0\tb@example.org\t\n"),
        /* last line without its newline */
        BAD("queue_id Q\nsender a@example.org\nrcpt 0\tb@example.org\t"),
        /* a recipient without its tab-separated fields */
        BAD("queue_id Q\nsender a@example.org\nrcpt b@example.org\n"),
        BAD("queue_id Q\nsender a@example.org\nrcpt 0\tb@example.org\n"),
        /* a line with no space */
        BAD("queue_id Q\nsender a@example.org\nrcpt 0\tb@example.org\t\nflags\n"),
        /* broken escapes */
        BAD("queue_id Q\nsender a%zz@example.org\nrcpt 0\tb@example.org\t\n"),
        BAD("queue_id Q\nsender a%00@example.org\nrcpt 0\tb@example.org\t\n"),
        BAD("queue_id Q\nsender a@example.org%4\nrcpt 0\tb@example.org\t\n"),
        BAD("queue_id Q\nsender a@example.org\nrcpt 0\tb%@example.org\t\n"),
        /* the same field twice */
        BAD("queue_id Q\nsender a@example.org\nsender c@example.org\nrcpt 0\tb@example.org\t\n"),
        BAD("queue_id Q\nhelo x\nhelo y\nsender a@example.org\nrcpt 0\tb@example.org\t\n"),
        BAD("queue_id Q\nqueue_id R\nsender a@example.org\nrcpt 0\tb@example.org\t\n"),
        /* a queue id longer than any we make */
        BAD("queue_id 0123456789012345678901234\nsender a@example.org\nrcpt 0\tb@example.org\t\n"),
#undef BAD
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct envelope *env = envelope_parse(bad[i].text, bad[i].len);
        if (env) {
            envelope_free(env);
            fail_msg("garbage envelope %zu was accepted", i);
        }
    }
    /* every truncated copy of a good envelope is refused (the recipients come last) */
    struct envelope *env = envelope_new();
    snprintf(env->queue_id, sizeof env->queue_id, "%s", "TRUNC");
    env->sender = xstrdup("a@example.org");
    env->helo = xstrdup("h");
    envelope_add_rcpt(env, "b@example.org", "rfc822;b@example.org", 2);
    struct strbuf text = STRBUF_INIT;
    envelope_serialize(env, &text);
    for (size_t cut = 0; cut < text.len; cut++) {
        struct envelope *back = envelope_parse(text.data, cut);
        if (back) {
            envelope_free(back);
            fail_msg("envelope cut to %zu of %zu bytes was accepted", cut, text.len);
        }
    }
    strbuf_free(&text);
    envelope_free(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_field),
        cmocka_unit_test(test_round_trip_each_flag_alone),
        cmocka_unit_test(test_round_trip_awkward_values),
        cmocka_unit_test(test_null_sender_and_absent_fields),
        cmocka_unit_test(test_many_recipients),
        cmocka_unit_test(test_unknown_keys_ignored),
        cmocka_unit_test(test_requiretls_absent_in_old_spools),
        cmocka_unit_test(test_garbage_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
