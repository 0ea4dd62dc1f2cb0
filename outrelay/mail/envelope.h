/* envelope.h - the envelope of one accepted message (who sent it, from where, to whom) and its
 * text form inside the spool. Pure data + (de)serialisation; never does I/O, so it sits below
 * the stages; any thread. Created by ingress, stored by spool, read by route, delivery and
 * records. */
#ifndef OUTRELAY_MAIL_ENVELOPE_H
#define OUTRELAY_MAIL_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "common/strbuf.h"

struct envelope_rcpt {
    char *address;
    char *orcpt; /* "rfc822;a@b" or NULL */
    int notify;  /* smtp_notify bits, 0 = default */
};

struct envelope {
    char queue_id[20];
    int64_t arrival;    /* unix seconds */
    int64_t arrival_us; /* the same in microseconds (0 in spools written before it existed) */
    char *origin;       /* origin name; "dsn" for our own notifications */
    char *client_addr;  /* "127.0.0.1" */
    char *helo;
    char *auth_user; /* NULL when not authenticated */
    char *sender;    /* "" for the null sender */
    char *envid;     /* NULL when absent */
    int ret_hdrs;    /* RET=HDRS */
    int body_8bit;   /* BODY=8BITMIME */
    int smtputf8;
    /* MAIL FROM REQUIRETLS (RFC 8689): delivered only over verified TLS to a server that
     * offers REQUIRETLS, else bounced with 5.7.30 */
    int requiretls;
    char *message_id;  /* Message-ID header value, or NULL */
    char *from_domain; /* domain of the From: header, or NULL */
    int64_t size;      /* bytes of the stored message */
    int transformed;   /* ingress changed the data to make it transport-safe (long lines,
                        * ingress/data.c): what is spooled, signed and sent is not what arrived */
    char *transport;   /* what was changed, or why long lines were left; NULL: nothing */
    struct envelope_rcpt *rcpts;
    size_t n_rcpts;
};

struct envelope *envelope_new(void);
void envelope_add_rcpt(struct envelope *env, const char *address, const char *orcpt, int notify);
void envelope_free(struct envelope *env);
/* Text form: "key value\n" lines; values are escaped so they never contain a newline. */
void envelope_serialize(const struct envelope *env, struct strbuf *out);
/* Returns NULL when the text is not a valid envelope. */
struct envelope *envelope_parse(const char *text, size_t len);

#endif
