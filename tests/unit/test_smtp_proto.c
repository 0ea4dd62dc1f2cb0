/* test_smtp_proto.c - unit tests for outrelay/mail/smtp_proto.c: command lines (verbs, args,
 * control characters refused), MAIL/RCPT paths and ESMTP parameters with their 501/553/555
 * replies, mailbox and domain syntax limits, xtext both ways, reply lines and enhanced codes.
 * Every refusal is checked as well as every acceptance: the parser must never guess. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "mail/smtp_proto.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static int parse_mail(const char *args, struct smtp_mail_args *out, char *reply, size_t size)
{
    reply[0] = '\0';
    return smtp_parse_mail(args, out, reply, size);
}

static int parse_rcpt(const char *args, struct smtp_rcpt_args *out, char *reply, size_t size)
{
    reply[0] = '\0';
    return smtp_parse_rcpt(args, out, reply, size);
}

/* MAIL args must be refused with a reply starting with prefix ("501 5.5.4"). */
static void assert_mail_refused(const char *args, const char *prefix)
{
    struct smtp_mail_args m;
    char reply[256];
    if (parse_mail(args, &m, reply, sizeof reply) == 0) fail_msg("MAIL %s was accepted", args);
    if (strncmp(reply, prefix, strlen(prefix)) != 0)
        fail_msg("MAIL %s: reply \"%s\", expected \"%s...\"", args, reply, prefix);
}

static void assert_rcpt_refused(const char *args, const char *prefix)
{
    struct smtp_rcpt_args r;
    char reply[256];
    if (parse_rcpt(args, &r, reply, sizeof reply) == 0) fail_msg("RCPT %s was accepted", args);
    if (strncmp(reply, prefix, strlen(prefix)) != 0)
        fail_msg("RCPT %s: reply \"%s\", expected \"%s...\"", args, reply, prefix);
}

static void assert_mail_ok(const char *args, struct smtp_mail_args *m)
{
    char reply[256];
    if (parse_mail(args, m, reply, sizeof reply) != 0) fail_msg("MAIL %s refused: %s", args, reply);
}

static void assert_rcpt_ok(const char *args, struct smtp_rcpt_args *r)
{
    char reply[256];
    if (parse_rcpt(args, r, reply, sizeof reply) != 0) fail_msg("RCPT %s refused: %s", args, reply);
}

/* A string of n copies of c. */
static void fill(char *buf, char c, size_t n)
{
    memset(buf, c, n);
    buf[n] = '\0';
}

/* ---- command lines ------------------------------------------------------------------------ */

static void test_command_verbs_case_insensitive(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        enum smtp_verb verb;
    } cases[] = {
        {"HELO x", SMTP_VERB_HELO},
        {"ehlo x", SMTP_VERB_EHLO},
        {"Mail FROM:<>", SMTP_VERB_MAIL},
        {"rCpT TO:<a@b>", SMTP_VERB_RCPT},
        {"DATA", SMTP_VERB_DATA},
        {"rset", SMTP_VERB_RSET},
        {"NoOp", SMTP_VERB_NOOP},
        {"quit", SMTP_VERB_QUIT},
        {"VRFY a", SMTP_VERB_VRFY},
        {"StartTLS", SMTP_VERB_STARTTLS},
        {"auth PLAIN", SMTP_VERB_AUTH},
        {"help", SMTP_VERB_HELP},
        {"BDAT 10 LAST", SMTP_VERB_BDAT},
        {"EXPN list", SMTP_VERB_UNKNOWN},
        {"MAILX FROM:<>", SMTP_VERB_UNKNOWN},
        {"MAI", SMTP_VERB_UNKNOWN},
        {"", SMTP_VERB_UNKNOWN},
        {" MAIL FROM:<>", SMTP_VERB_UNKNOWN},
        {"DATA\tx", SMTP_VERB_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct smtp_command cmd;
        assert_int_equal(smtp_parse_command(cases[i].line, &cmd), 0);
        if (cmd.verb != cases[i].verb)
            fail_msg("\"%s\": verb %d, expected %d", cases[i].line, cmd.verb, cases[i].verb);
    }
}

static void test_command_args(void **state)
{
    (void)state;
    struct smtp_command cmd;
    assert_int_equal(smtp_parse_command("MAIL FROM:<a@b.example> SIZE=10", &cmd), 0);
    assert_int_equal(cmd.verb, SMTP_VERB_MAIL);
    assert_string_equal(cmd.args, "FROM:<a@b.example> SIZE=10");

    assert_int_equal(smtp_parse_command("EHLO    client.example   ", &cmd), 0);
    assert_int_equal(cmd.verb, SMTP_VERB_EHLO);
    assert_string_equal(cmd.args, "client.example   ");

    assert_int_equal(smtp_parse_command("QUIT", &cmd), 0);
    assert_int_equal(cmd.verb, SMTP_VERB_QUIT);
    assert_string_equal(cmd.args, "");

    assert_int_equal(smtp_parse_command("NOOP ", &cmd), 0);
    assert_int_equal(cmd.verb, SMTP_VERB_NOOP);
    assert_string_equal(cmd.args, "");

    /* a tab is allowed inside the arguments */
    assert_int_equal(smtp_parse_command("HELO a\tb", &cmd), 0);
    assert_string_equal(cmd.args, "a\tb");
}

static void test_command_control_characters_refused(void **state)
{
    (void)state;
    static const char *bad[] = {
        "MAIL FROM:<a@b>\r",   /* bare CR at the end */
        "MAIL\rFROM:<a@b>",    /* bare CR inside */
        "RCPT TO:<a@b>\rDATA", /* a second command hidden after a CR */
        "NOOP\n",              /* bare LF */
        "HELO a\x01",          /* other C0 controls */
        "HELO \x1b[1m",
        "HELO a\x7f", /* DEL */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct smtp_command cmd;
        if (smtp_parse_command(bad[i], &cmd) != -1)
            fail_msg("command %zu with a control character was accepted", i);
    }
    /* A NUL inside the line ends the string the parser sees; what follows is not a command.
     * The session refuses NULs before this point; here only the visible part is parsed. */
    static const char with_nul[] = "NOOP\0\r";
    struct smtp_command cmd;
    assert_int_equal(smtp_parse_command(with_nul, &cmd), 0);
    assert_int_equal(cmd.verb, SMTP_VERB_NOOP);
    assert_string_equal(cmd.args, "");
}

/* ---- MAIL FROM ---------------------------------------------------------------------------- */

static void test_mail_basic(void **state)
{
    (void)state;
    struct smtp_mail_args m;
    assert_mail_ok("FROM:<alice@example.org>", &m);
    assert_string_equal(m.address, "alice@example.org");
    assert_int_equal(m.size, -1);
    assert_int_equal(m.body, SMTP_BODY_7BIT);
    assert_int_equal(m.smtputf8, 0);
    assert_int_equal(m.ret, SMTP_RET_UNSET);
    assert_string_equal(m.envid, "");

    assert_mail_ok("from:<Alice.B+tag@Sub.Example.ORG>", &m);
    assert_string_equal(m.address, "Alice.B+tag@Sub.Example.ORG");

    /* the space after the colon that many clients send */
    assert_mail_ok("FROM: <alice@example.org>", &m);
    assert_string_equal(m.address, "alice@example.org");
}

static void test_mail_null_sender(void **state)
{
    (void)state;
    struct smtp_mail_args m;
    assert_mail_ok("FROM:<>", &m);
    assert_string_equal(m.address, "");
    assert_mail_ok("FROM:<> SIZE=100 BODY=8BITMIME", &m);
    assert_string_equal(m.address, "");
    assert_int_equal(m.size, 100);
    assert_int_equal(m.body, SMTP_BODY_8BITMIME);
    /* a null recipient is never valid */
    assert_rcpt_refused("TO:<>", "501 5.1.3");
}

static void test_mail_source_route_stripped(void **state)
{
    (void)state;
    struct smtp_mail_args m;
    assert_mail_ok("FROM:<@relay.example:alice@example.org>", &m);
    assert_string_equal(m.address, "alice@example.org");
    assert_mail_ok("FROM:<@one.example,@two.example:alice@example.org>", &m);
    assert_string_equal(m.address, "alice@example.org");

    struct smtp_rcpt_args r;
    assert_rcpt_ok("TO:<@hop.example:bob@example.net>", &r);
    assert_string_equal(r.address, "bob@example.net");

    /* a route without a mailbox, a route with no colon, a route with a bad domain */
    assert_mail_refused("FROM:<@relay.example:>", "501 5.1.7");
    assert_mail_refused("FROM:<@relay.example>", "501 5.1.7");
    assert_rcpt_refused("TO:<@relay.example,bob@example.net>", "501 5.1.3");
    assert_rcpt_refused("TO:<@:bob@example.net>", "501 5.1.3");
    assert_rcpt_refused("TO:<@bad..example:bob@example.net>", "501 5.1.3");
    assert_rcpt_refused("TO:<@a b:bob@example.net>", "501 5.1.3");
}

static void test_mail_quoted_local_part(void **state)
{
    (void)state;
    struct smtp_mail_args m;
    assert_mail_ok("FROM:<\"john doe\"@example.org>", &m);
    assert_string_equal(m.address, "\"john doe\"@example.org");
    /* '>' and '@' inside quotes do not end the path or split the mailbox */
    assert_mail_ok("FROM:<\"a>b@c\"@example.org> SIZE=5", &m);
    assert_string_equal(m.address, "\"a>b@c\"@example.org");
    assert_int_equal(m.size, 5);
    assert_mail_ok("FROM:<\"quote\\\"inside\"@example.org>", &m);
    assert_string_equal(m.address, "\"quote\\\"inside\"@example.org");

    assert_mail_refused("FROM:<\"unterminated@example.org>", "501 5.1.7");
    assert_mail_refused("FROM:<\"a\"b\"@example.org>", "501 5.1.7");
    assert_mail_refused("FROM:<\"tab\x01\"@example.org>", "501 5.1.7");
    assert_mail_refused("FROM:<\"ends in backslash\\\"@example.org>", "501 5.1.7");
    assert_int_equal(smtp_check_mailbox("\"\"@example.org", 0), 0);
    assert_int_equal(smtp_check_mailbox("\"a\\\x7f\"@example.org", 0), -1);
}

static void test_mail_syntax_errors(void **state)
{
    (void)state;
    assert_mail_refused("TO:<a@example.org>", "501 5.5.4");
    assert_mail_refused("FROM", "501 5.5.4");
    assert_mail_refused("", "501 5.5.4");
    assert_mail_refused("FROM:a@example.org", "501 5.1.7");
    assert_mail_refused("FROM:<a@example.org", "501 5.1.7");
    assert_mail_refused("FROM:<a@example.org>x", "501 5.5.4");
    assert_mail_refused("FROM:<a@example.org>SIZE=1", "501 5.5.4");
    assert_mail_refused("FROM:<a>", "501 5.1.7");
    assert_mail_refused("FROM:<@example.org>", "501 5.1.7");
    assert_mail_refused("FROM:<a@>", "501 5.1.7");
    assert_mail_refused("FROM:<a b@example.org>", "501 5.1.7");
    assert_mail_refused("FROM:<.a@example.org>", "501 5.1.7");
    assert_mail_refused("FROM:<a.@example.org>", "501 5.1.7");
    assert_mail_refused("FROM:<a..b@example.org>", "501 5.1.7");
    assert_mail_refused("FROM:<a(b)@example.org>", "501 5.1.7");
    assert_rcpt_refused("FROM:<a@example.org>", "501 5.5.4");
    assert_rcpt_refused("TO:bob@example.net", "501 5.1.3");
    assert_rcpt_refused("TO:<bob@example.net", "501 5.1.3");
    assert_rcpt_refused("TO:<bob>", "501 5.1.3");
}

static void test_mail_parameters(void **state)
{
    (void)state;
    struct smtp_mail_args m;
    assert_mail_ok("FROM:<a@example.org> SIZE=12345 BODY=8BITMIME RET=HDRS ENVID=abc+2Bdef", &m);
    assert_int_equal(m.size, 12345);
    assert_int_equal(m.body, SMTP_BODY_8BITMIME);
    assert_int_equal(m.ret, SMTP_RET_HDRS);
    assert_string_equal(m.envid, "abc+def");
    assert_int_equal(m.smtputf8, 0);

    assert_mail_ok("FROM:<a@example.org> size=0 body=7bit ret=full smtputf8 auth=<>", &m);
    assert_int_equal(m.size, 0);
    assert_int_equal(m.body, SMTP_BODY_7BIT);
    assert_int_equal(m.ret, SMTP_RET_FULL);
    assert_int_equal(m.smtputf8, 1);

    assert_mail_ok("FROM:<a@example.org>   SIZE=1   ", &m);
    assert_int_equal(m.size, 1);
    assert_mail_ok("FROM:<a@example.org> SIZE=999999999999999999", &m);
    assert_int_equal(m.size, 999999999999999999LL);

    char envid[200];
    fill(envid, 'e', 100);
    char args[300];
    snprintf(args, sizeof args, "FROM:<a@example.org> ENVID=%s", envid);
    assert_mail_ok(args, &m);
    assert_string_equal(m.envid, envid);
}

static void test_mail_bad_parameters(void **state)
{
    (void)state;
    /* known keywords with bad values: 501 */
    static const char *bad_value[] = {
        "FROM:<a@example.org> SIZE=abc",
        "FROM:<a@example.org> SIZE=-1",
        "FROM:<a@example.org> SIZE=+5",
        "FROM:<a@example.org> SIZE=1x",
        "FROM:<a@example.org> SIZE=9999999999999999999",
        "FROM:<a@example.org> SIZE=",
        "FROM:<a@example.org> SIZE",
        "FROM:<a@example.org> BODY=BINARY",
        "FROM:<a@example.org> BODY=",
        "FROM:<a@example.org> BODY",
        "FROM:<a@example.org> RET=ALL",
        "FROM:<a@example.org> RET",
        "FROM:<a@example.org> ENVID=a+2",
        "FROM:<a@example.org> ENVID=a+zz",
        "FROM:<a@example.org> ENVID=a+2b",
        "FROM:<a@example.org> ENVID=a=b",
        "FROM:<a@example.org> ENVID",
        "FROM:<a@example.org> SMTPUTF8=yes",
        "FROM:<a@example.org> REQUIRETLS=yes",
        "FROM:<a@example.org> =x",
    };
    for (size_t i = 0; i < sizeof bad_value / sizeof bad_value[0]; i++)
        assert_mail_refused(bad_value[i], "501 5.5.4");

    char args[400], envid[200];
    fill(envid, 'e', 101);
    snprintf(args, sizeof args, "FROM:<a@example.org> ENVID=%s", envid);
    assert_mail_refused(args, "501 5.5.4");

    /* unknown keywords: 555 */
    assert_mail_refused("FROM:<a@example.org> FOO=bar", "555 5.5.4");
    assert_mail_refused("FROM:<a@example.org> NOTIFY=NEVER", "555 5.5.4");
    assert_mail_refused("FROM:<a@example.org> SMTPUTF8X", "555 5.5.4");
    assert_mail_refused("FROM:<a@example.org> REQUIRETLSX", "555 5.5.4");
    struct smtp_mail_args rt;
    assert_mail_ok("FROM:<a@example.org> requiretls SIZE=10", &rt);
    assert_int_equal(rt.requiretls, 1);
    assert_mail_ok("FROM:<a@example.org> SIZE=10", &rt);
    assert_int_equal(rt.requiretls, 0);
    assert_mail_refused("FROM:<a@example.org> ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ=1", "501 5.5.4");
}

static void test_mail_lengths(void **state)
{
    (void)state;
    char local[100], domain[300], args[700];
    struct smtp_mail_args m;

    fill(local, 'l', SMTP_MAX_LOCAL);
    snprintf(args, sizeof args, "FROM:<%s@example.org>", local);
    assert_mail_ok(args, &m);
    fill(local, 'l', SMTP_MAX_LOCAL + 1);
    snprintf(args, sizeof args, "FROM:<%s@example.org>", local);
    assert_mail_refused(args, "501 5.1.7");

    /* a 63-octet label is fine, 64 is not */
    fill(domain, 'd', 63);
    snprintf(args, sizeof args, "FROM:<a@%s.example>", domain);
    assert_mail_ok(args, &m);
    fill(domain, 'd', 64);
    snprintf(args, sizeof args, "FROM:<a@%s.example>", domain);
    assert_mail_refused(args, "501 5.1.7");

    /* a path of exactly SMTP_MAX_PATH octets passes, one more does not */
    char longdom[300] = "";
    while (strlen(longdom) + 2 + 60 < SMTP_MAX_PATH - 2) {
        char label[64];
        fill(label, 'x', 60);
        strcat(longdom, label);
        strcat(longdom, ".");
    }
    size_t room = SMTP_MAX_PATH - 2 - strlen(longdom); /* "a@" + longdom + tail */
    char tail[100];
    fill(tail, 'y', room);
    strcpy(domain, longdom);
    strcat(domain, tail);
    snprintf(args, sizeof args, "FROM:<a@%s>", domain);
    assert_int_equal(strlen(domain) + 2, SMTP_MAX_PATH);
    assert_mail_ok(args, &m);
    assert_int_equal(strlen(m.address), SMTP_MAX_PATH);
    snprintf(args, sizeof args, "FROM:<ab@%s>", domain);
    assert_mail_refused(args, "501 5.1.7");
    snprintf(args, sizeof args, "TO:<ab@%s>", domain);
    assert_rcpt_refused(args, "501 5.1.3");

    /* an overlong domain alone, checked as a mailbox */
    char mailbox[400];
    snprintf(mailbox, sizeof mailbox, "a@%sz", domain); /* 255 octets of domain: ok */
    assert_int_equal(strlen(mailbox) - 2, SMTP_MAX_DOMAIN);
    assert_int_equal(smtp_check_mailbox(mailbox, 0), 0);
    snprintf(mailbox, sizeof mailbox, "a@%szz", domain);
    assert_int_equal(smtp_check_mailbox(mailbox, 0), -1);
}

static void test_mail_non_ascii_needs_smtputf8(void **state)
{
    (void)state;
    struct smtp_mail_args m;
    assert_mail_ok("FROM:<j\xc3\xb6rg@b\xc3\xbc"
                   "cher.example> SMTPUTF8",
                   &m);
    assert_string_equal(m.address, "j\xc3\xb6rg@b\xc3\xbc"
                                   "cher.example");
    assert_int_equal(m.smtputf8, 1);
    assert_mail_ok("FROM:<\"j\xc3\xb6rg x\"@example.org> BODY=8BITMIME SMTPUTF8", &m);

    assert_mail_refused("FROM:<j\xc3\xb6rg@example.org>", "553 5.6.7");
    assert_mail_refused("FROM:<a@b\xc3\xbc"
                        "cher.example> BODY=8BITMIME",
                        "553 5.6.7");
    /* " SMTPUTF8" inside a quoted local part is not the parameter */
    assert_mail_refused("FROM:<\" SMTPUTF8\xc3\xb6\"@example.org>", "553 5.6.7");
    /* nor is a longer keyword that starts with it */
    assert_mail_refused("FROM:<j\xc3\xb6rg@example.org> SMTPUTF8X", "5");

    assert_int_equal(smtp_check_mailbox("j\xc3\xb6rg@example.org", 0), -1);
    assert_int_equal(smtp_check_mailbox("j\xc3\xb6rg@example.org", 1), 0);
    assert_int_equal(smtp_check_mailbox("a@\xc3\xbc.example", 0), -1);
    assert_int_equal(smtp_check_mailbox("a@\xc3\xbc.example", 1), 0);

    /* RCPT parses UTF-8 either way; the session decides with smtp_check_mailbox */
    struct smtp_rcpt_args r;
    assert_rcpt_ok("TO:<j\xc3\xb6rg@example.org>", &r);
    assert_string_equal(r.address, "j\xc3\xb6rg@example.org");
}

static void test_address_literals(void **state)
{
    (void)state;
    struct smtp_rcpt_args r;
    assert_rcpt_ok("TO:<postmaster@[192.0.2.1]>", &r);
    assert_string_equal(r.address, "postmaster@[192.0.2.1]");
    assert_string_equal(smtp_address_domain(r.address), "[192.0.2.1]");
    assert_rcpt_ok("TO:<a@[IPv6:::1]>", &r);
    assert_string_equal(r.address, "a@[IPv6:::1]");
    assert_rcpt_ok("TO:<a@[IPv6:2001:db8::1]>", &r);

    static const char *bad[] = {
        "a@[]",          "a@[1.2.3]",    "a@[1.2.3.4.5]",    "a@[256.1.1.1]", "a@[1.2.3.4",
        "a@1.2.3.4]",    "a@[::1]",      "a@[IPv6:1.2.3.4]", "a@[IPv6:::1",   "a@[IPv6:zz::1]",
        "a@[x:1.2.3.4]", "a@[1.2.3.4]x", "a@[ 1.2.3.4]",     "a@[IPv6:]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (smtp_check_mailbox(bad[i], 1) != -1) fail_msg("%s accepted", bad[i]);
    assert_int_equal(smtp_check_mailbox("a@[1.2.3.4]", 0), 0);
}

static void test_bad_domains(void **state)
{
    (void)state;
    static const char *bad[] = {
        "a@a..b",         "a@-a.com",       "a@a-.com", "a@a.com-",
        "a@example.org.", "a@.example.org", "a@.",      "a@a_b c.com",
        "a@exa!mple.org", "a@exa@mple",     "a@",       "a@a.-b.com",
        "noat",           "a@a/b.com",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (smtp_check_mailbox(bad[i], 1) != -1) fail_msg("%s accepted", bad[i]);
    static const char *good[] = {
        "a@a.b",       "a@x-y.example",  "a@localhost",
        "a@0.example", "a@a--b.example", "\"a@b\"@example.org",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (smtp_check_mailbox(good[i], 0) != 0) fail_msg("%s refused", good[i]);

    assert_mail_refused("FROM:<a@a..b>", "501 5.1.7");
    assert_mail_refused("FROM:<a@-a.com>", "501 5.1.7");
    assert_rcpt_refused("TO:<a@example.org.>", "501 5.1.3");

    assert_string_equal(smtp_address_domain("a@example.org"), "example.org");
    assert_string_equal(smtp_address_domain("\"x@y\"@example.org"), "example.org");
    assert_string_equal(smtp_address_domain("noat"), "");
}

/* ---- RCPT TO ------------------------------------------------------------------------------ */

static void test_rcpt_parameters(void **state)
{
    (void)state;
    struct smtp_rcpt_args r;
    assert_rcpt_ok("TO:<bob@example.net>", &r);
    assert_string_equal(r.address, "bob@example.net");
    assert_int_equal(r.notify, 0);
    assert_string_equal(r.orcpt, "");

    assert_rcpt_ok("to:<bob@example.net> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;bob+2B1@"
                   "example.net",
                   &r);
    assert_int_equal(r.notify, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY);
    assert_string_equal(r.orcpt, "rfc822;bob+1@example.net");

    assert_rcpt_ok("TO:<bob@example.net> notify=never", &r);
    assert_int_equal(r.notify, SMTP_NOTIFY_NEVER);

    assert_rcpt_ok("TO:<bob@example.net> ORCPT=rfc822;+22x+20y+22@example.net", &r);
    assert_string_equal(r.orcpt, "rfc822;\"x y\"@example.net");
}

static void test_rcpt_bad_parameters(void **state)
{
    (void)state;
    static const char *bad[] = {
        "TO:<b@example.net> NOTIFY=NEVER,SUCCESS",
        "TO:<b@example.net> NOTIFY=SOMETIMES",
        "TO:<b@example.net> NOTIFY=",
        "TO:<b@example.net> NOTIFY",
        "TO:<b@example.net> NOTIFY=,",
        "TO:<b@example.net> NOTIFY=SUCCESS,",
        "TO:<b@example.net> NOTIFY=,FAILURE",
        "TO:<b@example.net> NOTIFY=SUCCESS,,FAILURE",
        "TO:<b@example.net> ORCPT=b@example.net", /* no addr-type */
        "TO:<b@example.net> ORCPT=rfc822;b+4",
        "TO:<b@example.net> ORCPT=rfc822;b+4g",
        "TO:<b@example.net> ORCPT=rfc822;b=c",
        "TO:<b@example.net> ORCPT",
        "TO:<b@example.net>junk",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_rcpt_refused(bad[i], "501 5.5.4");
    assert_rcpt_refused("TO:<b@example.net> SIZE=10", "555 5.5.4");
    assert_rcpt_refused("TO:<b@example.net> FOO", "555 5.5.4");

    char args[1400], list[200] = "";
    for (int i = 0; i < 10; i++)
        strcat(list, i ? ",SUCCESS" : "SUCCESS");
    snprintf(args, sizeof args, "TO:<b@example.net> NOTIFY=%s", list);
    assert_rcpt_refused(args, "501 5.5.4"); /* longer than any sane list */

    char orcpt[1200];
    fill(orcpt, 'o', 600);
    snprintf(args, sizeof args, "TO:<b@example.net> ORCPT=rfc822;%s", orcpt);
    assert_rcpt_refused(args, "501 5.5.4");
}

/* ---- xtext -------------------------------------------------------------------------------- */

static void test_xtext_round_trip(void **state)
{
    (void)state;
    char all[256], enc[1024], dec[300];
    for (int i = 1; i < 256; i++)
        all[i - 1] = (char)i;
    all[255] = '\0';
    smtp_xtext_encode(all, enc, sizeof enc);
    for (const char *p = enc; *p; p++) {
        unsigned char c = (unsigned char)*p;
        assert_true(c >= 33 && c <= 126 && c != '=');
    }
    assert_int_equal(smtp_xtext_decode(enc, strlen(enc), dec, sizeof dec), 0);
    assert_memory_equal(dec, all, 256);

    smtp_xtext_encode("rfc822;a+b=c d@example.org", enc, sizeof enc);
    assert_string_equal(enc, "rfc822;a+2Bb+3Dc+20d@example.org");
    assert_int_equal(smtp_xtext_decode(enc, strlen(enc), dec, sizeof dec), 0);
    assert_string_equal(dec, "rfc822;a+b=c d@example.org");

    smtp_xtext_encode("", enc, sizeof enc);
    assert_string_equal(enc, "");
    assert_int_equal(smtp_xtext_decode("", 0, dec, sizeof dec), 0);
    assert_string_equal(dec, "");

    /* decode honours inlen, not the NUL */
    assert_int_equal(smtp_xtext_decode("abc+41 rest", 6, dec, sizeof dec), 0);
    assert_string_equal(dec, "abcA");

    /* encoding into a small buffer truncates at a character boundary, never overflows */
    char small[6];
    smtp_xtext_encode("a+b+c", small, sizeof small);
    assert_string_equal(small, "a+2B");
}

static void test_xtext_bad_encodings(void **state)
{
    (void)state;
    char dec[16];
    static const char *bad[] = {
        "+",   "a+",  "a+4",   "+4g",      "+g4",  "+2b", /* hex must be upper case */
        "a=b", "a b", "a\x7f", "\xc3\xa9", "a\tb", "+00",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (smtp_xtext_decode(bad[i], strlen(bad[i]), dec, sizeof dec) != -1)
            fail_msg("xtext \"%s\" accepted", bad[i]);
    /* too long for the output: 15 characters fit (plus NUL), 16 do not */
    assert_int_equal(smtp_xtext_decode("aaaaaaaaaaaaaaa", 15, dec, sizeof dec), 0);
    assert_int_equal(smtp_xtext_decode("aaaaaaaaaaaaaaaa", 16, dec, sizeof dec), -1);
    assert_int_equal(smtp_xtext_decode("aaaaaaaaaaaaaa+41", 17, dec, sizeof dec), 0);
    assert_string_equal(dec, "aaaaaaaaaaaaaaA");
}

/* ---- replies ------------------------------------------------------------------------------ */

static void test_reply_lines(void **state)
{
    (void)state;
    int code = 0, more = 0;
    const char *text = NULL;
    assert_int_equal(smtp_parse_reply_line("250-PIPELINING", &code, &more, &text), 0);
    assert_int_equal(code, 250);
    assert_int_equal(more, 1);
    assert_string_equal(text, "PIPELINING");

    assert_int_equal(smtp_parse_reply_line("250 2.0.0 Ok: queued", &code, &more, &text), 0);
    assert_int_equal(code, 250);
    assert_int_equal(more, 0);
    assert_string_equal(text, "2.0.0 Ok: queued");

    assert_int_equal(smtp_parse_reply_line("354", &code, &more, &text), 0);
    assert_int_equal(code, 354);
    assert_int_equal(more, 0);
    assert_string_equal(text, "");

    assert_int_equal(smtp_parse_reply_line("550-", &code, &more, &text), 0);
    assert_int_equal(code, 550);
    assert_int_equal(more, 1);
    assert_string_equal(text, "");

    static const char *garbage[] = {
        "",       "2",   "25",   "25x",    "2500", "250x", "abc ok", "150 ok",
        "650 ok", "050", " 250", "250\tx", "-250", "2 50", "+OK",    "25 0",
    };
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++)
        if (smtp_parse_reply_line(garbage[i], &code, &more, &text) != -1)
            fail_msg("reply line \"%s\" accepted", garbage[i]);
}

static void test_enhanced_codes(void **state)
{
    (void)state;
    char out[16];
    assert_int_equal(smtp_enhanced_code("2.0.0 Ok", out, sizeof out), 6);
    assert_string_equal(out, "2.0.0");
    assert_int_equal(smtp_enhanced_code("5.7.1", out, sizeof out), 5);
    assert_string_equal(out, "5.7.1");
    assert_int_equal(smtp_enhanced_code("4.123.456 later", out, sizeof out), 10);
    assert_string_equal(out, "4.123.456");

    static const char *none[] = {
        "",       "Ok",       "2.0.0Ok",  "6.0.0 x",  "1.0.0 x", "2.0 x",  "2..0 x",
        "2.0. x", "2.1234.0", "2.0.1234", "25.0.0 x", "2-0-0 x", "x2.0.0",
    };
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        strcpy(out, "junk");
        if (smtp_enhanced_code(none[i], out, sizeof out) != 0)
            fail_msg("\"%s\" read as an enhanced code", none[i]);
        assert_string_equal(out, "");
    }
    /* the output buffer must hold the whole code */
    char tiny[5];
    assert_int_equal(smtp_enhanced_code("2.0.0 Ok", tiny, sizeof tiny), 0);
    assert_string_equal(tiny, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_command_verbs_case_insensitive),
        cmocka_unit_test(test_command_args),
        cmocka_unit_test(test_command_control_characters_refused),
        cmocka_unit_test(test_mail_basic),
        cmocka_unit_test(test_mail_null_sender),
        cmocka_unit_test(test_mail_source_route_stripped),
        cmocka_unit_test(test_mail_quoted_local_part),
        cmocka_unit_test(test_mail_syntax_errors),
        cmocka_unit_test(test_mail_parameters),
        cmocka_unit_test(test_mail_bad_parameters),
        cmocka_unit_test(test_mail_lengths),
        cmocka_unit_test(test_mail_non_ascii_needs_smtputf8),
        cmocka_unit_test(test_address_literals),
        cmocka_unit_test(test_bad_domains),
        cmocka_unit_test(test_rcpt_parameters),
        cmocka_unit_test(test_rcpt_bad_parameters),
        cmocka_unit_test(test_xtext_round_trip),
        cmocka_unit_test(test_xtext_bad_encodings),
        cmocka_unit_test(test_reply_lines),
        cmocka_unit_test(test_enhanced_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
