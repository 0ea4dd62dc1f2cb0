/* fuzz_command.c - the SMTP command parser (mail/smtp_proto.c) on one client command line,
 * as smtpd passes it: without CRLF, cut at the first NUL. Feeds smtp_parse_command, then
 * smtp_parse_mail and smtp_parse_rcpt on its arguments, and xtext decoding. Asserts that
 * results stay inside their buffers, that every refusal is a 5xx reply, that an accepted
 * address passes smtp_check_mailbox, and that xtext decoding undoes xtext encoding. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mail/smtp_proto.h"

static void check_refusal(const char *reply)
{
    assert(strlen(reply) < 256);
    assert(reply[0] == '5' && reply[3] == ' ');
}

static void check_mail(const char *args)
{
    struct smtp_mail_args mail;
    char reply[256] = "";
    if (smtp_parse_mail(args, &mail, reply, sizeof reply) < 0) {
        check_refusal(reply);
        return;
    }
    assert(strlen(mail.address) <= SMTP_MAX_PATH);
    assert(strlen(mail.envid) < sizeof mail.envid);
    assert(mail.size >= -1);
    if (mail.address[0]) assert(smtp_check_mailbox(mail.address, mail.smtputf8) == 0);
}

static void check_rcpt(const char *args)
{
    struct smtp_rcpt_args rcpt;
    char reply[256] = "";
    if (smtp_parse_rcpt(args, &rcpt, reply, sizeof reply) < 0) {
        check_refusal(reply);
        return;
    }
    assert(rcpt.address[0] && strlen(rcpt.address) <= SMTP_MAX_PATH);
    assert(smtp_check_mailbox(rcpt.address, 1) == 0);
    assert(rcpt.orcpt[0] == '\0' || strchr(rcpt.orcpt, ';'));
    if (rcpt.notify & SMTP_NOTIFY_NEVER) assert(rcpt.notify == SMTP_NOTIFY_NEVER);
}

/* Whatever smtp_xtext_encode writes in full, smtp_xtext_decode gives back unchanged. */
static void check_xtext(const char *s)
{
    size_t len = strlen(s);
    size_t size = len * 3 + 2; /* the encoder stops 4 bytes short of the end */
    char *enc = malloc(size), *dec = malloc(len + 1);
    smtp_xtext_encode(s, enc, size);
    assert(smtp_xtext_decode(enc, strlen(enc), dec, len + 1) == 0);
    assert(strcmp(dec, s) == 0);
    free(enc);
    free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = malloc(size + 1);
    memcpy(line, data, size);
    line[size] = '\0';
    struct smtp_command cmd;
    if (smtp_parse_command(line, &cmd) == 0) {
        assert(cmd.args >= line && cmd.args <= line + strlen(line));
        /* both path parsers see every argument, whatever the verb, for coverage */
        check_mail(cmd.args);
        check_rcpt(cmd.args);
        if (cmd.verb == SMTP_VERB_MAIL && strlen(cmd.args) >= 5) check_mail(cmd.args + 5);
    }
    smtp_check_mailbox(line, 0);
    smtp_check_mailbox(line, 1);
    char out[128];
    if (smtp_xtext_decode(line, strlen(line), out, sizeof out) == 0) assert(strlen(out) < sizeof out);
    check_xtext(line);
    free(line);
    return 0;
}
