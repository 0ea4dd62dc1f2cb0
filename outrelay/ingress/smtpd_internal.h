/* smtpd_internal.h - INTERNAL to ingress/: what the ESMTP server's files share (smtpd.c,
 * smtpd_auth.c). Nothing outside ingress/ includes it; the API is smtpd.h. smtpd.c owns every
 * struct session (accept allocates it, smtpd_session_free tears it down, the event loop frees it
 * later) and the users pointer set by smtpd_start. Loop thread only. */
#ifndef OUTRELAY_SMTPD_INTERNAL_H
#define OUTRELAY_SMTPD_INTERNAL_H

#include <stdint.h>
#include <sys/queue.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#include "common/sock_reader.h"
#include "common/strbuf.h"
#include "common/util.h"
#include "config/config.h"
#include "ingress/auth.h"
#include "mail/smtp_proto.h"
#include "mail/envelope.h"

enum session_state {
    STATE_GREETING,  /* before HELO/EHLO */
    STATE_READY,     /* after HELO/EHLO, no transaction */
    STATE_MAIL,      /* after MAIL FROM */
    STATE_RCPT,      /* at least one RCPT accepted */
    STATE_DATA,      /* reading message data */
    STATE_BDAT,      /* reading the octets of a BDAT chunk (RFC 3030) */
    STATE_BDAT_NEXT, /* a BDAT chunk taken, LAST not yet: BDAT, RSET, QUIT, NOOP go on */
    STATE_AUTH_PLAIN,
    STATE_AUTH_LOGIN_USER,
    STATE_AUTH_LOGIN_PASS,
    STATE_CLOSING, /* final reply queued; close when written */
};

struct session {
    LIST_ENTRY(session) link;
    /* TLS sessions read and write through it; plain ones only write (reader reads) */
    struct bufferevent *bev;
    /* plain sessions: reads the socket into bev's input, one readv per readiness */
    struct sock_reader *reader;
    evutil_socket_t fd;
    const struct listen_conf *listen;
    struct sockaddr_any peer;
    char peer_text[64];
    const struct origin_conf *origin;
    enum session_state state;
    int esmtp;
    int tls;
    int busy;      /* waiting for the spool or a password check */
    int dead;      /* connection gone while busy: free when the answer arrives */
    int upgrading; /* STARTTLS 220 queued; switch to TLS when written */
    int closed;    /* torn down; memory released later */
    int counted;   /* holds a place in client_limits until it is torn down */
    /* in an origin's networks at connect: exempt from the per-client limits */
    int origin_by_network;
    /* plain sessions: replies wait in the output until the event that made them ends, then go
     * out in one write (smtpd.c, flush_sessions) */
    int flush_queued;
    LIST_ENTRY(session) flush_link;
    /* more than SMTPD_OUTPUT_PAUSE bytes of replies were waiting for a client that does not read:
     * commands are neither read nor handled until they are written (session_output_drained) */
    int read_paused;
    /* busy (or upgrading) with more than SMTPD_INPUT_PAUSE bytes of input not yet handled: not
     * read until it is handled (smtpd_session_process, input_pause_update); the rest waits in
     * the kernel's socket buffer and TCP flow control slows the client */
    int input_paused;
    /* ends a DATA phase that outlasts limits.data_deadline */
    struct event *data_deadline_ev;
    /* ends a command line, or a TLS handshake (handshaking), not complete limits.command_timeout
     * after it began: the read timeout restarts with every byte; made at the first need */
    struct event *command_deadline_ev;
    int handshaking;
    int errors;
    int auth_failures;
    char helo[256];
    char *auth_user;
    char auth_login_user[256];
    /* transaction */
    struct envelope *env;
    struct smtp_mail_args mail;
    struct strbuf data;
    int64_t data_bytes;
    int in_headers;
    int received_headers;
    int skip_long_line;
    const char *data_error; /* first reason to refuse the message being read */
    char refusal[512];      /* text of an origin policy refusal (data_error may point here) */
    size_t prefix_len;      /* bytes of s->data we wrote (Received:, loop stamp) */
    char cert_subject[256]; /* the client certificate's subject, "" without one */
    const char *late_reply; /* a failed AUTH's reply, sent after the throttle's delay */
    struct strbuf header;   /* current (possibly folded) header field, for Message-ID/From */
    /* BDAT (RFC 3030): the chunk being read, and the line it may end inside */
    uint64_t bdat_left;             /* octets of the current chunk still to read */
    int64_t bdat_total;             /* octets of every chunk of this transaction */
    int bdat_last;                  /* the current chunk is the LAST */
    const char *bdat_discard;       /* the chunk is read and dropped, then this is the reply */
    enum session_state bdat_resume; /* the state once the chunk is read */
    int bdat_long_line;             /* the partial line went over max_line_length: drop to its LF */
    struct strbuf bdat_line;        /* a line not yet complete at the end of a chunk */
};

/* Users for SMTP AUTH; NULL when AUTH is not offered. Set by smtpd_start (smtpd.c). */
extern struct auth_users *smtpd_users;
/* Failed AUTH per client address (smtpd_auth.c; created and freed by smtpd.c). */
extern struct auth_throttle *smtpd_auth_throttle;
/* The event loop smtpd runs on (smtpd.c). */
struct event_base *smtpd_event_base(void);

/* smtpd.c */
void smtpd_reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Queue a final reply and close once it has been written. */
void smtpd_reply_and_close(struct session *s, const char *text);
/* Reads and handles input until the session is busy, closing or out of complete lines; then
 * stops reading a busy session holding too much input, or reads again once it is free. */
void smtpd_session_process(struct session *s);
/* Tears the session down (or marks it dead while busy); memory is released later. */
void smtpd_session_free(struct session *s);
/* The origin an AUTH identity maps to, or NULL. */
const struct origin_conf *smtpd_origin_for_user(const char *user);

/* smtpd_auth.c */
/* AUTH is advertised and accepted only over TLS, with a users file, before authenticating. */
int smtpd_auth_offered(const struct session *s);
/* The AUTH command. */
void smtpd_cmd_auth(struct session *s, const char *args);
/* A client line while in STATE_AUTH_PLAIN / STATE_AUTH_LOGIN_USER / STATE_AUTH_LOGIN_PASS. */
void smtpd_auth_continue(struct session *s, const char *line);

#endif
