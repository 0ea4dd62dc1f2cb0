/* smtp_proto.h - RFC 5321 syntax, the one copy: command lines, MAIL/RCPT paths and parameters,
 * mailboxes, xtext, reply lines. Called by ingress (smtpd), check (the MAIL FROM domain SPF
 * evaluates) and deliver (smtpc). No I/O, no allocation, no stage code; safe from any thread.
 * Unit-tested in tests/unit/test_smtp_proto.c. */
#ifndef OUTRELAY_MAIL_SMTP_PROTO_H
#define OUTRELAY_MAIL_SMTP_PROTO_H

#include <stddef.h>
#include <stdint.h>

enum smtp_verb {
    SMTP_VERB_UNKNOWN,
    SMTP_VERB_HELO,
    SMTP_VERB_EHLO,
    SMTP_VERB_MAIL,
    SMTP_VERB_RCPT,
    SMTP_VERB_DATA,
    SMTP_VERB_RSET,
    SMTP_VERB_NOOP,
    SMTP_VERB_QUIT,
    SMTP_VERB_VRFY,
    SMTP_VERB_STARTTLS,
    SMTP_VERB_AUTH,
    SMTP_VERB_HELP,
    SMTP_VERB_BDAT,
};

struct smtp_command {
    enum smtp_verb verb;
    const char *args; /* points into the line; "" when absent */
};

/* line: one command without its CRLF, NUL-terminated. Returns 0, or -1 when the line holds
 * characters no command may contain (NUL, bare CR, bare LF, other controls except TAB). */
int smtp_parse_command(const char *line, struct smtp_command *cmd);

#define SMTP_MAX_LOCAL 64
#define SMTP_MAX_DOMAIN 255
#define SMTP_MAX_PATH 256

enum smtp_body { SMTP_BODY_7BIT, SMTP_BODY_8BITMIME, SMTP_BODY_BINARYMIME };
enum smtp_ret { SMTP_RET_UNSET, SMTP_RET_FULL, SMTP_RET_HDRS };
enum smtp_notify {
    SMTP_NOTIFY_NEVER = 1,
    SMTP_NOTIFY_SUCCESS = 2,
    SMTP_NOTIFY_FAILURE = 4,
    SMTP_NOTIFY_DELAY = 8
};

struct smtp_mail_args {
    char address[SMTP_MAX_PATH + 1]; /* "" for the null sender */
    int64_t size;                    /* SIZE=, -1 when absent */
    enum smtp_body body;
    int smtputf8;
    int requiretls; /* REQUIRETLS (RFC 8689) */
    enum smtp_ret ret;
    char envid[101]; /* xtext-decoded ENVID, "" when absent */
};

struct smtp_rcpt_args {
    char address[SMTP_MAX_PATH + 1];
    int notify;      /* bit set of smtp_notify, 0 when absent */
    char orcpt[520]; /* "rfc822;addr" decoded, "" when absent */
};

/* Parse the argument of MAIL ("FROM:<a@b> SIZE=1 ...") / RCPT ("TO:<a@b> NOTIFY=..").
 * Return 0, or -1 with an SMTP reply ("501 5.1.7 ...") in reply. */
int smtp_parse_mail(const char *args, struct smtp_mail_args *out, char *reply, size_t size);
int smtp_parse_rcpt(const char *args, struct smtp_rcpt_args *out, char *reply, size_t size);

/* Checks one mailbox "local@domain" (no angle brackets). utf8 allows non-ASCII (SMTPUTF8).
 * Returns 0 / -1. */
int smtp_check_mailbox(const char *mailbox, int utf8);
/* The domain part of an address (after the last '@'), or "" */
const char *smtp_address_domain(const char *address);

/* RFC 3461 xtext decoding. Returns 0 / -1 (bad encoding or too long). */
int smtp_xtext_decode(const char *in, size_t inlen, char *out, size_t size);
/* xtext encoding for ORCPT/ENVID on the way out. */
void smtp_xtext_encode(const char *in, char *out, size_t size);

/* One reply line "250-PIPELINING" / "250 ok": code, whether more lines follow, the text
 * after the separator. Returns 0, or -1 when the line is not a reply. */
int smtp_parse_reply_line(const char *line, int *code, int *more, const char **text);
/* Extracts "x.y.z" from the start of a reply text when present; returns chars consumed. */
size_t smtp_enhanced_code(const char *text, char *out, size_t size);

#endif
