/* smtpd.h - the ESMTP server platforms submit to. Owns listeners and client sessions; maps
 * each client to an origin (network or AUTH identity); refuses anything ambiguous (bare CR/LF,
 * pipelined data after STARTTLS, oversize lines and messages, loops); answers 250 to DATA only
 * from the spool's commit callback, then hands the message on through the function main gave
 * smtpd_set_spool. Knows nothing of the stages after the spool. Loop thread only; password and
 * DKIM checks run on the workpool. */
#ifndef OUTRELAY_SMTPD_H
#define OUTRELAY_SMTPD_H

#include <event2/event.h>
#include <openssl/ssl.h>
#include <stddef.h>

#include "config/config.h"
#include "ingress/auth.h"
#include "spool/spool.h"

struct strbuf;
struct envelope;

/* Binds every listen address. server_ctx may be NULL (no STARTTLS). users may be NULL. */
int smtpd_start(struct event_base *base, const struct config *cfg, SSL_CTX *server_ctx,
                struct auth_users *users, char *err, size_t errlen);
/* SIGHUP: new sessions use cfg (origins, limits, timeouts); open ones keep their origin and
 * listener. Listeners, the server certificate and the users file need a restart. cfg and the
 * config before stay alive until after smtpd_release(). Returns 0 / -1 with err (unchanged). */
int smtpd_reload(const struct config *cfg, char *err, size_t errlen);
/* What takes a message once the spool holds it (the queue manager, wired by main): owns env
 * from then on and may move data out (the message as stored, kept for the first attempt). */
typedef void (*smtpd_accept_fn)(struct envelope *env, const struct spool_loc *loc,
                                struct strbuf *data);
/* Attach the spool once it is open (listeners may be bound earlier, before dropping root) and
 * who takes committed messages; ingress knows nothing of the stages after the spool. */
void smtpd_set_spool(struct spool *sp, smtpd_accept_fn accept);
/* Stops accepting; open sessions get 421 and are closed. */
void smtpd_stop(void);
/* After the spool and workpool delivered their last callbacks: frees what is left. */
void smtpd_release(void);

/* The header block of a message as a session reads it, pure and callable from any thread (the
 * session uses it; so does fuzz/fuzz_header.c). Feed each message line after data_parse_line,
 * without its CRLF: smtpd_header_line adds a folded continuation to *field or completes the
 * field held there and starts the next; it returns 0 at the empty line that ends the block, 1
 * while headers go on. A completed field counts a Received: in *received and keeps the first
 * Message-ID (unfolded) and the first From: domain (lower case) in env, malloc'd and freed with
 * the envelope. smtpd_header_finish completes the last field when data ends inside the block. */
int smtpd_header_line(struct strbuf *field, const char *line, size_t len, int *received,
                      struct envelope *env);
void smtpd_header_finish(struct strbuf *field, int *received, struct envelope *env);

#endif
