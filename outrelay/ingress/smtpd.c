/* smtpd.c - ESMTP server sessions; see smtpd.h. One struct session per client connection.
 * Owns listeners, the session lifecycle, command dispatch, MAIL/RCPT/DATA, message data and
 * STARTTLS; SMTP AUTH lives in smtpd_auth.c. A session waiting for the spool or a password
 * check is "busy": it handles no input, and stops reading past SMTPD_INPUT_PAUSE. A plain
 * socket is read by a sock_reader; the replies an event produced leave in one write when it
 * ends, the bufferevent writing only what the kernel did not take. Loop thread only. */
#include "ingress/smtpd.h"
#include "ingress/smtpd_internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/log.h"
#include "common/strbuf.h"
#include "common/clock.h"
#include "common/util.h"
#include "common/workpool.h"
#include "ingress/auth_throttle.h"
#include "ingress/client_limits.h"
#include "ingress/data.h"
#include "ingress/origin_policy.h"
#include "mail/smtp_proto.h"
#include "mail/header_limits.h"
#include "mail/address.h"
#include "mail/header.h"
#include "records/records.h"
#include "mail/dkim_verify.h"
#include "mail/envelope.h"
#include "tls/tls.h"

#define SMTPD_MAX_COMMAND_LINE 2048 /* RFC 5321 asks for 512; extensions make lines longer */
#define SMTPD_MAX_ERRORS 10
#define SMTPD_LISTEN_BACKLOG 4096 /* per listener; see smtpd_start */
/* accept() failing (out of descriptors): stop accepting for 1 s, doubling up to this. */
#define SMTPD_ACCEPT_BACKOFF_MAX 4
/* Descriptors a session-less relay needs besides its sessions (spool, records, DNS, workers). */
#define SMTPD_FD_OVERHEAD 64

struct listener {
    struct evconnlistener *evl;
    const struct listen_conf *conf;
    struct event *resume_ev; /* re-enables evl after an accept() back-off */
    int backoff;             /* seconds of the current back-off; 0 when accepting normally */
};

static const struct config *smtpd_cfg;
static SSL_CTX *smtpd_tls_ctx;
struct auth_users *smtpd_users;
static struct spool *smtpd_spool;
static smtpd_accept_fn smtpd_accept;
static struct event_base *smtpd_base;
static struct listener *smtpd_listeners;
static size_t smtpd_n_listeners;
static LIST_HEAD(, session) smtpd_sessions = LIST_HEAD_INITIALIZER(smtpd_sessions);
static struct client_limits *smtpd_limits; /* every open session holds a place here */
static uint64_t smtpd_qid_last;
/* Plain sessions with replies not yet written; flush_sessions runs once the event that queued
 * them is over, so a pipelined group's replies leave in one write. */
static LIST_HEAD(, session) smtpd_flushq = LIST_HEAD_INITIALIZER(smtpd_flushq);
static struct event *smtpd_flush_ev;

static void session_output_drained(struct session *s);

/* --- helpers ---------------------------------------------------------------------------- */

/* A plain session keeps EV_WRITE off while its output is empty, so a reply costs no epoll_ctl:
 * it waits in the output for flush_sessions. TLS sessions leave writing to bufferevent_openssl. */
static void queue_flush(struct session *s)
{
    if (s->tls || s->flush_queued || !smtpd_flush_ev) return;
    s->flush_queued = 1;
    LIST_INSERT_HEAD(&smtpd_flushq, s, flush_link);
    event_active(smtpd_flush_ev, EV_TIMEOUT, 0);
}

static void unqueue_flush(struct session *s)
{
    if (!s->flush_queued) return;
    s->flush_queued = 0;
    LIST_REMOVE(s, flush_link);
}

/* A socket bufferevent keeps the start of its output frozen except inside its own write
 * callback; writing it directly means doing the same around evbuffer_write. */
static void smtpd_write_now(struct evbuffer *out, evutil_socket_t fd)
{
    evbuffer_unfreeze(out, 1);
    evbuffer_write(out, fd);
    evbuffer_freeze(out, 1);
}

/* One non-blocking write of everything queued. What the kernel does not take is left to the
 * bufferevent (EV_WRITE on; session_write_cb turns it off again once the output is empty), and
 * so is an error, which then reaches session_event_cb as it did before. */
static void session_flush(struct session *s)
{
    unqueue_flush(s);
    if (s->closed || s->dead || s->tls) return;
    if (bufferevent_get_enabled(s->bev) & EV_WRITE) return; /* the bufferevent is writing */
    struct evbuffer *out = bufferevent_get_output(s->bev);
    if (evbuffer_get_length(out) > 0) smtpd_write_now(out, s->fd);
    if (evbuffer_get_length(out) > 0) {
        bufferevent_enable(s->bev, EV_WRITE);
        return;
    }
    session_output_drained(s);
}

static void flush_sessions(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    struct session *s;
    while ((s = LIST_FIRST(&smtpd_flushq)))
        session_flush(s);
}

void smtpd_reply(struct session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    struct evbuffer *out = bufferevent_get_output(s->bev);
    evbuffer_add_vprintf(out, fmt, ap);
    evbuffer_add(out, "\r\n", 2);
    va_end(ap);
    queue_flush(s);
}

/* Reading the client's input on (with the timeout set_timeouts last gave) and off: the
 * sock_reader on a plain socket, the bufferevent on TLS. */
static void session_read_on(struct session *s)
{
    if (s->reader)
        sock_reader_start(s->reader);
    else
        bufferevent_enable(s->bev, EV_READ);
}

static void session_read_off(struct session *s)
{
    if (s->reader)
        sock_reader_stop(s->reader);
    else
        bufferevent_disable(s->bev, EV_READ);
}

/* Reading again after a pause, unless the other pause still holds or the session is ending. */
static void session_read_resume(struct session *s)
{
    if (s->closed || s->dead || s->state == STATE_CLOSING || s->read_paused || s->input_paused)
        return;
    session_read_on(s);
}

/* Queue a final reply and close once it has been written. */
void smtpd_reply_and_close(struct session *s, const char *text)
{
    smtpd_reply(s, "%s", text);
    s->state = STATE_CLOSING;
    session_read_off(s);
    if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0) smtpd_session_free(s);
}

/* Queue ids: 13 hex digits of microseconds since the epoch, strictly increasing, so they sort
 * by arrival and never repeat within one host. */
static void new_queue_id(char *out, size_t size)
{
    uint64_t now = (uint64_t)clock_now_us();
    if (now <= smtpd_qid_last) now = smtpd_qid_last + 1;
    smtpd_qid_last = now;
    snprintf(out, size, "%013llX", (unsigned long long)now);
}

static void transaction_reset(struct session *s)
{
    if (s->data_deadline_ev) evtimer_del(s->data_deadline_ev);
    envelope_free(s->env);
    s->env = NULL;
    strbuf_free(&s->data);
    strbuf_free(&s->header);
    s->data_bytes = 0;
    s->data_error = NULL;
    s->received_headers = 0;
    s->skip_long_line = 0;
    s->bdat_total = 0;
    s->bdat_long_line = 0;
    strbuf_free(&s->bdat_line);
    if (s->state == STATE_MAIL || s->state == STATE_RCPT || s->state == STATE_DATA ||
        s->state == STATE_BDAT_NEXT)
        s->state = STATE_READY;
}

const struct origin_conf *smtpd_origin_for_user(const char *user)
{
    for (size_t i = 0; i < smtpd_cfg->n_origins; i++) {
        const struct origin_conf *o = &smtpd_cfg->origins[i];
        for (size_t n = 0; n < o->n_users; n++)
            if (strcmp(o->users[n], user) == 0) return o;
    }
    return NULL;
}

static int starttls_offered(const struct session *s)
{
    return smtpd_tls_ctx && !s->tls && s->listen->tls != TLS_NONE;
}

/* --- STARTTLS ----------------------------------------------------------------------------- */

static void session_read_cb(struct bufferevent *bev, void *arg);
static void session_write_cb(struct bufferevent *bev, void *arg);
static void session_event_cb(struct bufferevent *bev, short what, void *arg);

/* The command or data timeout: for reads (each read restarts it) and unfinished writes. */
static void set_timeouts(struct session *s)
{
    int in_data = s->state == STATE_DATA || s->state == STATE_BDAT;
    struct timeval tv = {.tv_sec =
                             in_data ? smtpd_cfg->data_timeout : smtpd_cfg->command_timeout_in};
    bufferevent_set_timeouts(s->bev, &tv, &tv);
    if (s->reader) sock_reader_set_timeout(s->reader, &tv);
}

/* A command line or TLS handshake that a client trickles a byte at a time: 421 and close (a
 * handshake is closed without a reply). A busy session's partial next command waits for us. */
static void command_deadline_cb(evutil_socket_t fd, short what, void *arg);

static void command_deadline_arm(struct session *s)
{
    if (!s->command_deadline_ev)
        s->command_deadline_ev = evtimer_new(smtpd_base, command_deadline_cb, s);
    if (evtimer_pending(s->command_deadline_ev, NULL)) return;
    struct timeval tv = {.tv_sec = smtpd_cfg->command_timeout_in};
    evtimer_add(s->command_deadline_ev, &tv);
}

static void command_deadline_stop(struct session *s)
{
    if (s->command_deadline_ev) evtimer_del(s->command_deadline_ev);
}

static void command_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct session *s = arg;
    if (s->closed || s->dead || s->state == STATE_CLOSING) return;
    if (s->busy || s->upgrading) {
        command_deadline_arm(s);
        return;
    }
    log_warn("smtpd: %s: %s not complete %llds after it began; closing", s->peer_text,
             s->handshaking ? "TLS handshake" : "command line",
             (long long)smtpd_cfg->command_timeout_in);
    if (s->handshaking) {
        smtpd_session_free(s);
        return;
    }
    bufferevent_enable(s->bev, EV_WRITE);
    smtpd_reply_and_close(s, "421 4.4.2 Timeout; closing connection");
}

static int switch_to_tls(struct session *s, int plain_exists)
{
    SSL *ssl = SSL_new(smtpd_tls_ctx);
    if (!ssl) return -1;
    if (plain_exists) {
        /* what the plain reader read past STARTTLS goes with it, unread (see command()) */
        sock_reader_free(s->reader);
        s->reader = NULL;
        bufferevent_free(s->bev); /* the plaintext bev does not own the fd */
    }
    s->bev = bufferevent_openssl_socket_new(smtpd_base, s->fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (!s->bev) return -1;
    bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
    bufferevent_setcb(s->bev, session_read_cb, session_write_cb, session_event_cb, s);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    s->tls = 1;
    s->input_paused = 0; /* the new bufferevent reads from the handshake on */
    set_timeouts(s);
    s->handshaking = 1;
    command_deadline_stop(s); /* a fresh bound for the handshake */
    command_deadline_arm(s);
    return 0;
}

/* --- commands ------------------------------------------------------------------------------- */

static void cmd_ehlo(struct session *s, const char *args, int esmtp)
{
    if (!*args) {
        smtpd_reply(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
        return;
    }
    snprintf(s->helo, sizeof s->helo, "%.*s", (int)strcspn(args, " "), args);
    transaction_reset(s);
    s->state = STATE_READY;
    s->esmtp = esmtp;
    if (!esmtp) {
        smtpd_reply(s, "250 %s", smtpd_cfg->hostname);
        return;
    }
    smtpd_reply(s, "250-%s", smtpd_cfg->hostname);
    smtpd_reply(s, "250-PIPELINING");
    smtpd_reply(s, "250-SIZE %lld", (long long)smtpd_cfg->max_message_size);
    if (starttls_offered(s)) smtpd_reply(s, "250-STARTTLS");
    if (smtpd_auth_offered(s)) smtpd_reply(s, "250-AUTH PLAIN LOGIN");
    smtpd_reply(s, "250-ENHANCEDSTATUSCODES");
    smtpd_reply(s, "250-8BITMIME");
    smtpd_reply(s, "250-CHUNKING");
    smtpd_reply(s, "250-DSN");
    if (s->tls) smtpd_reply(s, "250-REQUIRETLS"); /* RFC 8689: over TLS only */
    smtpd_reply(s, "250 SMTPUTF8");
}

static void cmd_mail(struct session *s, const char *args)
{
    char err[256];
    if (s->state == STATE_GREETING) {
        smtpd_reply(s, "503 5.5.1 Send HELO/EHLO first");
        return;
    }
    if (s->state != STATE_READY) {
        smtpd_reply(s, "503 5.5.1 Nested MAIL command");
        return;
    }
    if (smtp_parse_mail(args, &s->mail, err, sizeof err) < 0) {
        smtpd_reply(s, "%s", err);
        return;
    }
    if (!s->esmtp && (s->mail.size >= 0 || s->mail.smtputf8 || s->mail.body || s->mail.ret ||
                      s->mail.envid[0] || s->mail.requiretls)) {
        smtpd_reply(s, "555 5.5.4 MAIL parameters need EHLO");
        return;
    }
    if (s->mail.requiretls && !s->tls) { /* RFC 8689 */
        smtpd_reply(s, "530 5.7.10 REQUIRETLS needs a TLS session: send STARTTLS first");
        return;
    }
    if (s->mail.size > smtpd_cfg->max_message_size) {
        smtpd_reply(s, "552 5.3.4 Message size exceeds fixed limit of %lld bytes",
                    (long long)smtpd_cfg->max_message_size);
        return;
    }
    s->env = envelope_new();
    new_queue_id(s->env->queue_id, sizeof s->env->queue_id);
    s->env->sender = xstrdup(s->mail.address);
    s->env->envid = s->mail.envid[0] ? xstrdup(s->mail.envid) : NULL;
    s->env->ret_hdrs = s->mail.ret == SMTP_RET_HDRS;
    s->env->body_8bit = s->mail.body == SMTP_BODY_8BITMIME;
    s->env->smtputf8 = s->mail.smtputf8;
    s->env->requiretls = s->mail.requiretls;
    s->state = STATE_MAIL;
    smtpd_reply(s, "250 2.1.0 Ok");
}

/* A message refused before 250 by policy leaves a record with the reason (the sender's
 * platform sees the reply; the operator sees the record). reply: "550 5.7.1 ...". */
static void record_refusal(const struct session *s, const char *recipient, const char *reply)
{
    char enhanced[16] = "";
    const char *text = reply + (strlen(reply) > 4 ? 4 : strlen(reply));
    if (sscanf(text, "%15[0-9.]", enhanced) == 1)
        text += strlen(enhanced) + (text[strlen(enhanced)] == ' ');
    struct record_event ev = {.type = RECORD_REFUSED,
                              .queue_id = s->env ? s->env->queue_id : NULL,
                              .message_id = s->env ? s->env->message_id : NULL,
                              .origin = s->origin ? s->origin->name : NULL,
                              .client_addr = s->peer_text,
                              .sender = s->env ? s->env->sender : NULL,
                              .recipient = recipient,
                              .from_domain = s->env ? s->env->from_domain : NULL,
                              .reply_code = atoi(reply),
                              .enhanced_code = enhanced[0] ? enhanced : NULL,
                              .reply_text = text,
                              .detail = s->cert_subject[0] ? s->cert_subject : NULL};
    records_emit(&ev);
}

static void cmd_rcpt(struct session *s, const char *args)
{
    char err[256];
    struct smtp_rcpt_args r;
    if (s->state == STATE_BDAT_NEXT) {
        smtpd_reply(s, "503 5.5.1 RCPT after BDAT; send BDAT LAST or RSET");
        return;
    }
    if (s->state != STATE_MAIL && s->state != STATE_RCPT) {
        smtpd_reply(s, "503 5.5.1 Need MAIL command");
        return;
    }
    if (smtp_parse_rcpt(args, &r, err, sizeof err) < 0) {
        smtpd_reply(s, "%s", err);
        return;
    }
    if (!s->origin) {
        log_warn("smtpd: %s: relay denied for <%s>: client is no origin", s->peer_text, r.address);
        smtpd_reply(s, "554 5.7.1 <%s>: Relay access denied", r.address);
        return;
    }
    const char *refusal =
        origin_policy_sender_refusal(s->origin, s->env->sender, s->refusal, sizeof s->refusal);
    if (refusal) {
        log_warn("smtpd: %s: %s", s->peer_text, refusal);
        record_refusal(s, r.address, refusal);
        smtpd_reply(s, "%s", refusal);
        return;
    }
    if (!s->mail.smtputf8 && smtp_check_mailbox(r.address, 0) < 0) {
        smtpd_reply(s, "553 5.6.7 Non-ASCII address <%s> needs SMTPUTF8", r.address);
        return;
    }
    if (s->env->n_rcpts >= (size_t)smtpd_cfg->max_recipients) {
        smtpd_reply(s, "452 4.5.3 Too many recipients");
        return;
    }
    envelope_add_rcpt(s->env, r.address, r.orcpt, r.notify);
    s->state = STATE_RCPT;
    smtpd_reply(s, "250 2.1.5 Ok");
}

static void data_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct session *s = arg;
    if (s->closed || s->busy ||
        (s->state != STATE_DATA && s->state != STATE_BDAT && s->state != STATE_BDAT_NEXT))
        return; /* the data is complete */
    log_warn("smtpd: %s: DATA deadline of %llds exceeded after %zu bytes; message from <%s> "
             "dropped",
             s->peer_text, (long long)smtpd_cfg->data_deadline, s->data.len,
             s->env ? s->env->sender : "");
    char reply[512];
    snprintf(reply, sizeof reply, "421 4.4.2 %s Error: DATA deadline exceeded; closing connection",
             smtpd_cfg->hostname);
    transaction_reset(s);
    bufferevent_enable(s->bev, EV_WRITE);
    smtpd_reply_and_close(s, reply);
}

/* The start of the message, DATA or the first BDAT chunk: our Received: field and loop stamp
 * go first, and the deadline for the whole message starts. */
static void data_begin(struct session *s)
{
    struct envelope *env = s->env;
    char date[64];
    const char *version = NULL, *cipher = NULL;
    util_rfc5322_date(clock_now(), date, sizeof date);
    if (s->tls) tls_describe(s->bev, &version, &cipher);
    strbuf_reset(&s->data);
    /* TCP-info is an address literal (RFC 5321 4.4): "[192.0.2.1]", "[IPv6:2001:db8::1]" */
    strbuf_printf(&s->data, "Received: from %s ([%s%s])\r\n\tby %s (outrelay) with %s%s%s id %s",
                  s->helo[0] ? s->helo : "unknown", strchr(s->peer_text, ':') ? "IPv6:" : "",
                  s->peer_text, smtpd_cfg->hostname, s->esmtp ? "ESMTP" : "SMTP", s->tls ? "S" : "",
                  s->auth_user ? "A" : "", env->queue_id);
    if (version) strbuf_printf(&s->data, "\r\n\t(using %s with cipher %s)", version, cipher);
    if (env->n_rcpts == 1) strbuf_printf(&s->data, "\r\n\tfor <%s>", env->rcpts[0].address);
    strbuf_printf(&s->data, "; %s\r\n", date);
    origin_policy_stamp(smtpd_cfg, &s->data);
    s->prefix_len = s->data.len;
    s->data_bytes = 0;
    s->in_headers = 1;
    s->received_headers = 0;
    s->data_error = NULL;
    s->skip_long_line = 0;
    strbuf_reset(&s->header);
    /* data_timeout is per read: only a deadline ends a client that trickles a byte at a time */
    if (!s->data_deadline_ev) s->data_deadline_ev = evtimer_new(smtpd_base, data_deadline_cb, s);
    struct timeval deadline = {.tv_sec = smtpd_cfg->data_deadline};
    evtimer_add(s->data_deadline_ev, &deadline);
}

static void cmd_data(struct session *s)
{
    if (s->state == STATE_BDAT_NEXT) { /* RFC 3030 section 2: not both in one transaction */
        smtpd_reply(s, "503 5.5.1 DATA after BDAT; send BDAT LAST or RSET");
        return;
    }
    if (s->state == STATE_MAIL) {
        smtpd_reply(s, "554 5.5.1 No valid recipients");
        return;
    }
    if (s->state != STATE_RCPT) {
        smtpd_reply(s, "503 5.5.1 Need RCPT command");
        return;
    }
    data_begin(s);
    s->state = STATE_DATA;
    set_timeouts(s);
    smtpd_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/* --- message data ---------------------------------------------------------------------------- */

void smtpd_header_finish(struct strbuf *field, int *received, struct envelope *env)
{
    if (field->len == 0) return;
    struct mail_header_iter it;
    const char *name, *value;
    size_t name_len, value_len;
    mail_header_begin(&it, field->data, field->len);
    if (mail_header_next(&it, &name, &name_len, &value, &value_len)) {
        if (mail_header_name_is(name, name_len, "Received")) {
            (*received)++;
        } else if (mail_header_name_is(name, name_len, "Message-ID") && !env->message_id) {
            env->message_id = mail_header_value_unfold(value, value_len);
        } else if (mail_header_name_is(name, name_len, "From") && !env->from_domain) {
            char *from = mail_header_value_unfold(value, value_len);
            env->from_domain = mail_author_domain(from, NULL); /* NULL: no single author domain */
            free(from);
        }
    }
    strbuf_reset(field);
}

int smtpd_header_line(struct strbuf *field, const char *line, size_t len, int *received,
                      struct envelope *env)
{
    if (len == 0) {
        smtpd_header_finish(field, received, env);
        return 0;
    }
    if (line[0] == ' ' || line[0] == '\t') {
        if (field->len < 8192) strbuf_append(field, line, len);
    } else {
        smtpd_header_finish(field, received, env);
        strbuf_append(field, line, len < 8192 ? len : 8192);
    }
    return 1;
}

static void header_finish(struct session *s)
{
    smtpd_header_finish(&s->header, &s->received_headers, s->env);
}

static void data_line(struct session *s, const char *line, size_t len)
{
    if (s->in_headers)
        s->in_headers = smtpd_header_line(&s->header, line, len, &s->received_headers, s->env);
    s->data_bytes += (int64_t)len + 2;
    if (s->data_bytes > smtpd_cfg->max_message_size) {
        if (!s->data_error) s->data_error = "552 5.3.4 Message too big";
        return;
    }
    if (!s->data_error) {
        strbuf_append(&s->data, line, len);
        strbuf_append(&s->data, "\r\n", 2);
    }
}

static void committed(void *arg, int status, const struct spool_loc *loc, const char *err)
{
    struct session *s = arg;
    s->busy = 0;
    struct envelope *env = s->env;
    s->env = NULL;
    if (status == 0) {
        char cert[400];
        snprintf(cert, sizeof cert, "client certificate %s", s->cert_subject);
        struct record_event ev = {.type = RECORD_RECEIVED,
                                  .queue_id = env->queue_id,
                                  .message_id = env->message_id,
                                  .origin = env->origin,
                                  .client_addr = env->client_addr,
                                  .sender = env->sender,
                                  .size = env->size,
                                  .nrcpt = (int64_t)env->n_rcpts,
                                  .detail = s->cert_subject[0] ? cert : NULL};
        records_emit(&ev);
        if (s->state == STATE_CLOSING) /* a write timeout said 421 meanwhile */
            log_warn("smtpd: %s: %s: queued after the session timed out; the client may send it "
                     "again",
                     s->peer_text, env->queue_id);
        else if (!s->dead)
            smtpd_reply(s, "250 2.0.0 Ok: queued as %s", env->queue_id);
        if (smtpd_accept)
            smtpd_accept(env, loc, &s->data);
        else
            envelope_free(env);
    } else {
        log_error("%s: not stored: %s", env->queue_id, err);
        envelope_free(env);
        if (!s->dead && s->state != STATE_CLOSING)
            smtpd_reply(s, "451 4.3.0 Temporary failure storing the message; try again later");
    }
    strbuf_free(&s->data);
    if (s->dead) {
        smtpd_session_free(s);
        return;
    }
    if (s->state == STATE_CLOSING) return; /* closes once the 421 is written */
    s->state = STATE_READY;
    set_timeouts(s);
    smtpd_session_process(s);
}

/* The header rules of mail/header_limits.c, refused here with a reply the sender sees rather
 * than signed into a signature no receiver verifies: several From: fields (RFC 5322 allows one;
 * 1,000 of them broke libopendkim) or a header field over 65,000 bytes (libopendkim signs
 * those wrongly, and receivers truncate or refuse them). NULL when the header is fine. */
static const char *header_refusal(const struct strbuf *data)
{
    switch (mail_header_check(data->data, data->len)) {
    case MAIL_HEADER_SEVERAL_FROM:
        return "554 5.6.0 Several From: header fields; RFC 5322 allows exactly one";
    case MAIL_HEADER_FIELD_TOO_LONG:
        return "552 5.6.0 Header field too long to sign (more than 65000 bytes)";
    default:
        return NULL;
    }
}

/* The message is refused before anything is stored: the reason is logged, recorded and sent. */
static void data_refuse(struct session *s)
{
    log_warn("smtpd: %s: message from <%s> refused: %s", s->peer_text, s->env->sender,
             s->data_error);
    record_refusal(s, NULL, s->data_error);
    smtpd_reply(s, "%s", s->data_error);
    s->state = STATE_READY;
    transaction_reset(s);
}

/* Every check passed: made transport-safe, then durable; 250 comes from committed(). */
static void data_accept(struct session *s)
{
    s->data_error = data_make_transport_safe(&s->data, s->env);
    if (s->data_error) {
        data_refuse(s);
        return;
    }
    struct envelope *env = s->env;
    env->arrival_us = clock_now_us();
    env->arrival = env->arrival_us / 1000000;
    env->origin = xstrdup(s->origin->name);
    env->client_addr = xstrdup(s->peer_text);
    env->helo = xstrdup(s->helo);
    env->auth_user = s->auth_user ? xstrdup(s->auth_user) : NULL;
    env->size = (int64_t)s->data.len;
    struct strbuf text = STRBUF_INIT;
    envelope_serialize(env, &text);
    s->busy = 1;
    spool_submit_message(smtpd_spool, text.data, text.len, s->data.data, s->data.len, committed, s);
    strbuf_free(&text);
}

/* origins.X.dkim_required: the message as the client sent it must carry a verifying DKIM
 * signature by one of the origin's domains. Verified on a worker (DNS lookups block); the
 * session is busy and its data untouched until dkim_binding_done runs on the loop. */
struct dkim_binding_job {
    struct session *s;
    struct dkim_signature sigs[8];
    size_t n;
};

static void dkim_binding_work(void *arg)
{
    struct dkim_binding_job *j = arg;
    struct session *s = j->s;
    j->n = dkim_verify_message(s->data.data + s->prefix_len, s->data.len - s->prefix_len, j->sigs,
                               sizeof j->sigs / sizeof j->sigs[0]);
}

static void dkim_binding_done(void *arg)
{
    struct dkim_binding_job *j = arg;
    struct session *s = j->s;
    s->busy = 0;
    if (s->dead) {
        free(j);
        smtpd_session_free(s);
        return;
    }
    if (s->state == STATE_CLOSING) { /* a write timeout said 421: the message is not taken */
        free(j);
        transaction_reset(s);
        return;
    }
    size_t n = j->n < 8 ? j->n : 8;
    s->data_error =
        origin_policy_dkim_refusal(s->origin, j->sigs, n, s->refusal, sizeof s->refusal);
    free(j);
    if (s->data_error)
        data_refuse(s);
    else
        data_accept(s);
    if (!s->busy && s->state != STATE_CLOSING) smtpd_session_process(s);
}

static void data_end(struct session *s)
{
    evtimer_del(s->data_deadline_ev);
    header_finish(s);
    set_timeouts(s);
    if (!s->data_error && s->received_headers > smtpd_cfg->max_received_headers)
        s->data_error = "554 5.4.6 Too many Received: headers; mail loop?";
    if (!s->data_error) s->data_error = header_refusal(&s->data);
    if (!s->data_error)
        s->data_error = origin_policy_message_refusal(
            smtpd_cfg, s->origin, s->env->from_domain, s->data.data + s->prefix_len,
            s->data.len - s->prefix_len, s->refusal, sizeof s->refusal);
    if (s->data_error) {
        data_refuse(s);
        return;
    }
    if (s->origin->dkim_required) { /* before any transformation: as the platform signed it */
        struct dkim_binding_job *j = xcalloc(1, sizeof *j);
        j->s = s;
        s->busy = 1;
        workpool_submit(dkim_binding_work, dkim_binding_done, j);
        return;
    }
    data_accept(s);
}

/* Reads DATA lines; returns 0 to continue, 1 when input is exhausted, -1 when closed. */
static int data_input(struct session *s, struct evbuffer *in)
{
    for (;;) {
        size_t eol_len;
        struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
        if (eol.pos < 0) {
            size_t avail = evbuffer_get_length(in);
            if (avail > (size_t)smtpd_cfg->max_line_length) {
                if (!s->data_error) s->data_error = "500 5.5.2 Message line too long";
                s->skip_long_line = 1;
                evbuffer_drain(in, avail - 1); /* keep a possible CR */
            }
            return 1;
        }
        size_t len = (size_t)eol.pos + 1; /* the line with its LF */
        char stack[8192];
        char *raw = len <= sizeof stack ? stack : xmalloc(len);
        evbuffer_remove(in, raw, len);
        if (s->skip_long_line) {
            s->skip_long_line = 0;
            if (raw != stack) free(raw);
            continue;
        }
        const char *line;
        size_t n;
        enum data_line kind = data_parse_line(raw, len, &line, &n);
        if (kind == DATA_LINE_BARE_LF || kind == DATA_LINE_BARE_CR) {
            if (raw != stack) free(raw);
            log_warn("smtpd: %s: bare %s in message data", s->peer_text,
                     kind == DATA_LINE_BARE_LF ? "<LF>" : "<CR>");
            smtpd_reply_and_close(s, kind == DATA_LINE_BARE_LF
                                         ? "521 5.5.2 Bare <LF> received in message data; closing"
                                         : "521 5.5.2 Bare <CR> received in message data; closing");
            return -1;
        }
        if (kind == DATA_LINE_END) {
            if (raw != stack) free(raw);
            data_end(s);
            return 0;
        }
        if (len > (size_t)smtpd_cfg->max_line_length && !s->data_error)
            s->data_error = "500 5.5.2 Message line too long";
        data_line(s, line, n);
        if (raw != stack) free(raw);
    }
}

/* --- BDAT (RFC 3030) ------------------------------------------------------------------------ */

/* BDAT n [LAST]. Once the argument parses, exactly n octets follow whatever the answer: they
 * are read (and dropped when the chunk is refused) before the reply, so that no octet of a
 * message is ever taken as a command. `refusal`: the session refuses every transaction
 * command (TLS first), the chunk is dropped with this reply. */
static void cmd_bdat(struct session *s, const char *args, const char *refusal)
{
    uint64_t size;
    int last;
    if (data_parse_bdat(args, &size, &last) < 0) {
        /* how many octets follow is unknown: whatever comes next could be message text */
        smtpd_reply_and_close(s, "501 5.5.4 Syntax: BDAT chunk-size [LAST]; closing");
        return;
    }
    const char *discard = refusal;
    if (discard) {
    } else if (s->state == STATE_MAIL) {
        discard = "554 5.5.1 No valid recipients";
    } else if (s->state != STATE_RCPT && s->state != STATE_BDAT_NEXT) {
        discard = "503 5.5.1 Need MAIL and RCPT before BDAT";
    } else if (size > (uint64_t)smtpd_cfg->max_message_size ||
               (int64_t)size > smtpd_cfg->max_message_size - s->bdat_total) {
        /* the transaction has failed (RFC 3030 section 2): later chunks get 503 */
        log_warn("smtpd: %s: BDAT from <%s> over the size limit of %lld bytes; message dropped",
                 s->peer_text, s->env->sender, (long long)smtpd_cfg->max_message_size);
        discard = "552 5.3.4 Message size exceeds fixed limit";
        transaction_reset(s);
    }
    if (!discard && s->state == STATE_RCPT) data_begin(s);
    s->bdat_discard = discard;
    s->bdat_left = size;
    s->bdat_last = last;
    s->bdat_resume = discard ? s->state : STATE_BDAT_NEXT;
    if (!discard) s->bdat_total += (int64_t)size;
    s->state = STATE_BDAT;
    set_timeouts(s);
}

/* One complete line of a chunk, with its LF; the DATA rules from data_line() on. */
static void bdat_line(struct session *s, const char *raw, size_t len)
{
    const char *line;
    size_t n;
    enum data_line kind = data_parse_bdat_line(raw, len, &line, &n);
    if (kind != DATA_LINE_TEXT) {
        if (!s->data_error)
            s->data_error = "550 5.6.0 Bare <LF> or <CR> in message data; lines end in <CR><LF> "
                            "(RFC 5322 2.3)";
        return;
    }
    if (len > (size_t)smtpd_cfg->max_line_length && !s->data_error)
        s->data_error = "500 5.5.2 Message line too long";
    data_line(s, line, n);
}

/* Octets of the chunk, in any pieces: split into lines, a line left open carried over to the
 * next piece or chunk (a chunk may end anywhere, between CR and LF too). */
static void bdat_bytes(struct session *s, const char *p, size_t n)
{
    while (n > 0) {
        const char *lf = memchr(p, '\n', n);
        size_t take = lf ? (size_t)(lf - p + 1) : n;
        if (s->bdat_long_line) {
            /* the rest of an overlong line: only its end matters */
        } else if (s->bdat_line.len + take > (size_t)smtpd_cfg->max_line_length + 2) {
            if (!s->data_error) s->data_error = "500 5.5.2 Message line too long";
            s->bdat_long_line = 1;
            strbuf_reset(&s->bdat_line);
        } else if (lf && s->bdat_line.len == 0) {
            bdat_line(s, p, take);
        } else {
            strbuf_append(&s->bdat_line, p, take);
            if (lf) {
                bdat_line(s, s->bdat_line.data, s->bdat_line.len);
                strbuf_reset(&s->bdat_line);
            }
        }
        if (lf) s->bdat_long_line = 0;
        p += take;
        n -= take;
    }
}

/* The chunk is in: the reply to its BDAT, or for the LAST one the end of the message, the
 * same path as DATA's end from here (checks, DKIM binding, transport safety, the spool). */
static void bdat_chunk_done(struct session *s)
{
    if (s->bdat_discard) {
        s->state = s->bdat_resume;
        set_timeouts(s);
        smtpd_reply(s, "%s", s->bdat_discard);
        s->bdat_discard = NULL;
        s->errors++;
        return;
    }
    if (s->data_error) { /* refused now: the client sends no more chunks (RFC 3030 section 2) */
        evtimer_del(s->data_deadline_ev);
        s->state = STATE_BDAT_NEXT;
        set_timeouts(s);
        data_refuse(s);
        return;
    }
    if (!s->bdat_last) {
        s->state = STATE_BDAT_NEXT;
        set_timeouts(s);
        smtpd_reply(s, "250 2.0.0 %lld octets received", (long long)s->bdat_total);
        return;
    }
    if (s->bdat_line.len > 0) { /* the last line has no line end: it gets one, as on the wire */
        strbuf_append(&s->bdat_line, "\r\n", 2);
        bdat_line(s, s->bdat_line.data, s->bdat_line.len);
        strbuf_reset(&s->bdat_line);
    }
    s->state = STATE_BDAT_NEXT; /* committed() or data_refuse() move on from here */
    data_end(s);
}

/* Reads the current chunk; returns 0 to continue, 1 when input is exhausted. */
static int bdat_input(struct session *s, struct evbuffer *in)
{
    while (s->bdat_left > 0) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0) return 1;
        char buf[16384];
        size_t n = sizeof buf;
        if (n > avail) n = avail;
        if (n > s->bdat_left) n = (size_t)s->bdat_left;
        if (s->bdat_discard) {
            evbuffer_drain(in, n);
        } else {
            evbuffer_remove(in, buf, n);
            bdat_bytes(s, buf, n);
        }
        s->bdat_left -= n;
    }
    bdat_chunk_done(s);
    return 0;
}

/* --- command dispatch --------------------------------------------------------------------- */

static void command(struct session *s, char *line)
{
    struct smtp_command cmd;
    if (s->state == STATE_AUTH_PLAIN || s->state == STATE_AUTH_LOGIN_USER ||
        s->state == STATE_AUTH_LOGIN_PASS) {
        smtpd_auth_continue(s, line);
        return;
    }
    if (smtp_parse_command(line, &cmd) < 0) {
        smtpd_reply(s, "500 5.5.2 Invalid characters in command");
        s->errors++;
        return;
    }
    if (s->listen->tls == TLS_REQUIRED && !s->tls && cmd.verb != SMTP_VERB_EHLO &&
        cmd.verb != SMTP_VERB_HELO && cmd.verb != SMTP_VERB_STARTTLS &&
        cmd.verb != SMTP_VERB_QUIT && cmd.verb != SMTP_VERB_NOOP && cmd.verb != SMTP_VERB_RSET) {
        if (cmd.verb == SMTP_VERB_BDAT) /* its octets are read and dropped, never run */
            cmd_bdat(s, cmd.args, "530 5.7.0 Must issue a STARTTLS command first");
        else
            smtpd_reply(s, "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    switch (cmd.verb) {
    case SMTP_VERB_EHLO:
        cmd_ehlo(s, cmd.args, 1);
        break;
    case SMTP_VERB_HELO:
        cmd_ehlo(s, cmd.args, 0);
        break;
    case SMTP_VERB_MAIL:
        cmd_mail(s, cmd.args);
        break;
    case SMTP_VERB_RCPT:
        cmd_rcpt(s, cmd.args);
        break;
    case SMTP_VERB_DATA:
        if (*cmd.args)
            smtpd_reply(s, "501 5.5.4 Syntax: DATA");
        else
            cmd_data(s);
        break;
    case SMTP_VERB_RSET:
        transaction_reset(s);
        smtpd_reply(s, "250 2.0.0 Ok");
        break;
    case SMTP_VERB_NOOP:
        smtpd_reply(s, "250 2.0.0 Ok");
        break;
    case SMTP_VERB_QUIT:
        smtpd_reply_and_close(s, "221 2.0.0 Bye");
        break;
    case SMTP_VERB_VRFY:
        smtpd_reply(s, "252 2.5.2 Cannot VRFY user; send mail and we will try");
        break;
    case SMTP_VERB_HELP:
        smtpd_reply(s, "214 2.0.0 See RFC 5321");
        break;
    case SMTP_VERB_STARTTLS:
        if (!starttls_offered(s) || *cmd.args) {
            smtpd_reply(s, s->tls ? "503 5.5.1 TLS already active"
                                  : "502 5.5.1 STARTTLS not available");
            break;
        }
        if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
            /* Commands pipelined behind STARTTLS would be taken as if sent over TLS. */
            log_warn("smtpd: %s: data pipelined after STARTTLS; disconnecting", s->peer_text);
            smtpd_session_free(s);
            return;
        }
        transaction_reset(s);
        s->state = STATE_GREETING;
        s->helo[0] = '\0';
        s->upgrading = 1;
        smtpd_reply(s, "220 2.0.0 Ready to start TLS");
        break;
    case SMTP_VERB_AUTH:
        smtpd_cmd_auth(s, cmd.args);
        break;
    case SMTP_VERB_BDAT:
        cmd_bdat(s, cmd.args, NULL);
        break;
    case SMTP_VERB_UNKNOWN:
        smtpd_reply(s, "502 5.5.2 Command not recognized");
        s->errors++;
        break;
    }
    if (!s->closed && s->errors >= SMTPD_MAX_ERRORS && s->state != STATE_CLOSING)
        smtpd_reply_and_close(s, "421 4.7.0 Too many errors; closing");
}

/* A client that pipelines commands and never reads the replies would otherwise make us hold
 * every reply in memory until the write timeout; past this many bytes waiting we stop reading
 * and handling its commands until they are written. */
#define SMTPD_OUTPUT_PAUSE (64 * 1024)
/* A busy session (the spool commit, the DKIM check of a dkim_required origin, a failed AUTH's
 * late reply) or one upgrading to TLS handles no input, so whatever its client sends meanwhile
 * would pile up in memory without bound. Past this many bytes held it stops reading until the
 * session is free and has handled them: more than a pipelined group needs; DATA and BDAT
 * chunks are consumed as they are read and never held here. */
#define SMTPD_INPUT_PAUSE (256 * 1024)

/* After input was handled (or could not be): pause reading a busy session that holds too much
 * input, and read again once it is free. Not busy at this point means the loop above ran out
 * of complete lines (or stopped on the output pause, which keeps reading off itself). While
 * paused no read event is pending, so no read timeout runs; reading again restarts it. */
static void input_pause_update(struct session *s)
{
    if (s->closed || s->dead || s->state == STATE_CLOSING) return;
    int waiting = s->busy || s->upgrading;
    if (!s->input_paused) {
        if (waiting && evbuffer_get_length(bufferevent_get_input(s->bev)) > SMTPD_INPUT_PAUSE) {
            s->input_paused = 1;
            session_read_off(s);
        }
        return;
    }
    if (waiting) return;
    s->input_paused = 0;
    session_read_resume(s);
}

static void session_handle_input(struct session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    while (!s->closed && !s->busy && !s->upgrading && s->state != STATE_CLOSING) {
        if (evbuffer_get_length(bufferevent_get_output(s->bev)) > SMTPD_OUTPUT_PAUSE) {
            s->read_paused = 1;
            session_read_off(s);
            return;
        }
        if (s->state == STATE_DATA) {
            int r = data_input(s, in);
            if (r != 0) return;
            continue;
        }
        if (s->state == STATE_BDAT) {
            if (bdat_input(s, in) != 0) return;
            continue;
        }
        size_t eol_len;
        struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
        if (eol.pos < 0) {
            if (evbuffer_get_length(in) > SMTPD_MAX_COMMAND_LINE)
                smtpd_reply_and_close(s, "500 5.5.2 Line too long");
            else if (evbuffer_get_length(in) > 0)
                command_deadline_arm(s); /* the rest of the line must follow in time */
            return;
        }
        command_deadline_stop(s);
        if ((size_t)eol.pos > SMTPD_MAX_COMMAND_LINE) {
            smtpd_reply_and_close(s, "500 5.5.2 Line too long");
            return;
        }
        char line[SMTPD_MAX_COMMAND_LINE + 2];
        size_t len = (size_t)eol.pos;
        evbuffer_remove(in, line, len);
        evbuffer_drain(in, 1);
        line[len] = '\0';
        if (len == 0 || line[len - 1] != '\r') {
            smtpd_reply_and_close(s, "500 5.5.2 Bare <LF> received in command; closing");
            return;
        }
        line[len - 1] = '\0';
        command(s, line);
    }
}

void smtpd_session_process(struct session *s)
{
    session_handle_input(s);
    input_pause_update(s);
}

/* --- connection lifecycle ------------------------------------------------------------------- */

static void session_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    smtpd_session_process(arg);
}

/* Everything queued has been written: a final reply closes, a STARTTLS 220 starts TLS. */
static void session_output_drained(struct session *s)
{
    if (s->state == STATE_CLOSING) {
        smtpd_session_free(s);
        return;
    }
    if (s->upgrading) {
        s->upgrading = 0;
        if (switch_to_tls(s, 1) < 0) {
            log_error("smtpd: %s: cannot start TLS", s->peer_text);
            smtpd_session_free(s);
        }
        return;
    }
    if (s->read_paused && !s->closed && !s->dead) { /* the client read what waited: go on */
        s->read_paused = 0;
        session_read_resume(s);
        smtpd_session_process(s);
    }
}

static void session_write_cb(struct bufferevent *bev, void *arg)
{
    struct session *s = arg;
    if (!s->tls) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) > 0) return;
        bufferevent_disable(bev, EV_WRITE); /* back to writing by flush_sessions */
    }
    session_output_drained(s);
}

/* End of file, an error or a timeout, from the bufferevent (TLS; writing on a plain socket) or
 * the sock_reader (reading a plain socket); or the TLS handshake done. */
static void session_event(struct session *s, short what)
{
    struct bufferevent *bev = s->bev;
    if (what & BEV_EVENT_CONNECTED) { /* TLS handshake done */
        s->handshaking = 0;
        command_deadline_stop(s);
        if (!s->origin) { /* a certificate can prove what the address alone did not */
            SSL *ssl = bufferevent_openssl_get_ssl(bev);
            s->origin = origin_policy_by_certificate(ssl, &s->peer, s->cert_subject,
                                                     sizeof s->cert_subject);
            if (s->cert_subject[0])
                log_info("smtpd: %s: client certificate %s%s%s", s->peer_text, s->cert_subject,
                         s->origin ? ": origin " : " proves no origin",
                         s->origin ? s->origin->name : "");
        }
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        if (s->busy && (what & BEV_EVENT_READING) && s->state != STATE_CLOSING) {
            /* The client waits for the reply to what it sent: the relay is the slow one. A 421
             * now would say "failed" of a message about to be queued, and its retry would be a
             * second copy. Reading goes on (or stays paused); the end of the busy period sets
             * the timeout again. */
            session_read_resume(s);
            return;
        }
        if (s->state == STATE_CLOSING) { /* the final reply was not taken in time either */
            smtpd_session_free(s);
            return;
        }
        log_warn("smtpd: %s: timeout", s->peer_text);
        bufferevent_enable(bev, EV_WRITE);
        smtpd_reply_and_close(s, "421 4.4.2 Timeout; closing connection");
        return;
    }
    if ((what & BEV_EVENT_ERROR) && s->tls) {
        const char *e = tls_error_string(bev);
        log_warn("smtpd: %s: TLS error: %s", s->peer_text, e);
    }
    if (s->busy) { /* the spool or a password check still refers to us */
        s->dead = 1;
        session_read_off(s);
        bufferevent_disable(bev, EV_READ | EV_WRITE);
        return;
    }
    smtpd_session_free(s);
}

static void session_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    session_event(arg, what);
}

/* A plain session's sock_reader: new input, or why reading ended. */
static void session_reader_cb(void *arg, short what)
{
    struct session *s = arg;
    if (what)
        session_event(s, what);
    else
        smtpd_session_process(s);
}

/* Sessions are torn down at once but their memory is released from the loop's top level
 * (bury_sessions), because callers up the stack may still look at s->closed. */
static LIST_HEAD(, session) smtpd_graveyard = LIST_HEAD_INITIALIZER(smtpd_graveyard);
static struct event *smtpd_graveyard_ev;

static void bury_sessions(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    struct session *s;
    while ((s = LIST_FIRST(&smtpd_graveyard))) {
        LIST_REMOVE(s, link);
        free(s);
    }
}

void smtpd_session_free(struct session *s)
{
    if (s->closed) return;
    if (s->busy) {
        s->dead = 1;
        return;
    }
    s->closed = 1;
    unqueue_flush(s);
    LIST_REMOVE(s, link);
    if (s->counted) client_limits_disconnect(smtpd_limits, s->peer_text, s->origin_by_network);
    s->counted = 0;
    if (s->tls) {
        SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
        if (ssl) SSL_shutdown(ssl);
        bufferevent_free(s->bev); /* closes the fd */
    } else {
        sock_reader_free(s->reader);
        s->reader = NULL;
        bufferevent_free(s->bev);
        evutil_closesocket(s->fd);
    }
    transaction_reset(s);
    if (s->data_deadline_ev) event_free(s->data_deadline_ev);
    s->data_deadline_ev = NULL;
    if (s->command_deadline_ev) event_free(s->command_deadline_ev);
    s->command_deadline_ev = NULL;
    free(s->auth_user);
    s->auth_user = NULL;
    s->bev = NULL;
    LIST_INSERT_HEAD(&smtpd_graveyard, s, link);
    event_active(smtpd_graveyard_ev, EV_TIMEOUT, 0);
}

/* Refuses a connection before it has a session: the reply (not on implicit-TLS listeners,
 * where plain text means nothing), then close. The socket is new and empty, so the short
 * write does not block. */
static void refuse_connection(const struct listener *l, evutil_socket_t fd, const char *reply)
{
    if (l->conf->tls != TLS_IMPLICIT) {
        ssize_t w = write(fd, reply, strlen(reply));
        (void)w;
    }
    evutil_closesocket(fd);
}

/* Whether client_limits lets this connection in; if not, says so to the client and, for the
 * 1st, 2nd, 4th... refusal in a period, in the log. Returns 0 when admitted. */
static int admit_connection(const struct listener *l, evutil_socket_t fd, const char *addr,
                            int origin_by_network)
{
    const struct config *c = smtpd_cfg;
    struct client_limits_result r =
        client_limits_connect(smtpd_limits, addr, origin_by_network, clock_now());
    char reply[512];
    switch (r.verdict) {
    case CLIENT_LIMITS_OK:
        return 0;
    case CLIENT_LIMITS_FULL:
        if (r.log_it)
            log_warn("smtpd: %s: connection refused: %d connections open, limit %d (refusal %d "
                     "of all clients in this period)",
                     addr, r.count - 1, c->max_connections_in, r.refused);
        snprintf(reply, sizeof reply, "421 4.3.2 Too many connections; try again later\r\n");
        break;
    case CLIENT_LIMITS_STRANGERS_FULL:
        if (r.log_it)
            log_warn("smtpd: %s: connection refused: %d connections of clients outside the "
                     "origins' networks open, limit %d (the rest is reserved for origins; "
                     "refusal %d of all clients in this period)",
                     addr, r.count - 1, c->max_connections_in - c->reserved_for_origins, r.refused);
        snprintf(reply, sizeof reply, "421 4.3.2 Too many connections; try again later\r\n");
        break;
    case CLIENT_LIMITS_CLIENT_COUNT:
        if (r.log_it)
            log_warn("smtpd: %s: connection refused: too many connections from %s: %d, limit %d "
                     "(refusal %d of this client in this period)",
                     addr, addr, r.count, c->max_connections_per_client, r.refused);
        snprintf(reply, sizeof reply, "421 4.7.0 %s Error: too many connections from %s\r\n",
                 c->hostname, addr);
        break;
    case CLIENT_LIMITS_CLIENT_RATE:
        if (r.log_it)
            log_warn("smtpd: %s: connection refused: connection rate limit exceeded: %d from %s "
                     "in %llds, limit %d (refusal %d of this client in this period)",
                     addr, r.count, addr, (long long)c->connection_rate_period,
                     c->connection_rate_per_client, r.refused);
        snprintf(reply, sizeof reply, "421 4.7.0 %s Error: too many connections from %s\r\n",
                 c->hostname, addr);
        break;
    }
    refuse_connection(l, fd, reply);
    return -1;
}

static void accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *addr,
                      int addrlen, void *arg)
{
    (void)evl;
    struct listener *l = arg;
    struct sockaddr_any peer;
    char peer_text[64];
    l->backoff = 0; /* descriptors are available again */
    memcpy(&peer.ss, addr, (size_t)addrlen);
    peer.len = (socklen_t)addrlen;
    util_format_addr(&peer, 0, peer_text, sizeof peer_text);
    const struct origin_conf *origin = origin_policy_by_address(&peer);
    if (admit_connection(l, fd, peer_text, origin != NULL) < 0) return;

    struct session *s = xcalloc(1, sizeof *s);
    s->fd = fd;
    s->listen = l->conf;
    s->peer = peer;
    memcpy(s->peer_text, peer_text, sizeof s->peer_text);
    s->origin = origin;
    s->origin_by_network = origin != NULL;
    s->counted = 1;
    s->state = STATE_GREETING;
    LIST_INSERT_HEAD(&smtpd_sessions, s, link);
    if (l->conf->tls == TLS_IMPLICIT) {
        if (switch_to_tls(s, 0) < 0) {
            evutil_closesocket(fd);
            LIST_REMOVE(s, link);
            client_limits_disconnect(smtpd_limits, s->peer_text, s->origin_by_network);
            free(s);
            return;
        }
    } else {
        /* the bufferevent writes; reading is the sock_reader's (no EV_READ on the bufferevent) */
        s->bev = bufferevent_socket_new(smtpd_base, fd, 0);
        bufferevent_setcb(s->bev, NULL, session_write_cb, session_event_cb, s);
        /* EV_WRITE (on by default) only while a write is unfinished: see queue_flush */
        bufferevent_disable(s->bev, EV_WRITE);
        s->reader = sock_reader_new(smtpd_base, fd, s->bev, session_reader_cb, s);
        if (!s->reader) {
            log_error("smtpd: %s: cannot watch the connection", s->peer_text);
            bufferevent_free(s->bev);
            evutil_closesocket(fd);
            LIST_REMOVE(s, link);
            client_limits_disconnect(smtpd_limits, s->peer_text, s->origin_by_network);
            free(s);
            return;
        }
        set_timeouts(s);
        session_read_on(s);
    }
    smtpd_reply(s, "220 %s ESMTP outrelay", smtpd_cfg->hostname);
}

static void listener_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct listener *l = arg;
    evconnlistener_enable(l->evl);
}

/* accept() failed for a reason other than "try again" (libevent filters EINTR, EAGAIN and
 * ECONNABORTED). Without this callback libevent logs and retries at once: out of descriptors,
 * the pending connection stays in the backlog and the loop spins at full CPU. So stop
 * accepting on this listener for a while, say so once, and try again; open sessions carry on
 * and, as they end, free descriptors. */
static void accept_error_cb(struct evconnlistener *evl, void *arg)
{
    struct listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    l->backoff = l->backoff ? l->backoff * 2 : 1;
    if (l->backoff > SMTPD_ACCEPT_BACKOFF_MAX) l->backoff = SMTPD_ACCEPT_BACKOFF_MAX;
    evconnlistener_disable(evl);
    log_error("smtpd: accept on %s: %s (%d sessions open); not accepting for %ds",
              l->conf->address_text, evutil_socket_error_to_string(err),
              client_limits_total(smtpd_limits), l->backoff);
    struct timeval tv = {.tv_sec = l->backoff};
    evtimer_add(l->resume_ev, &tv);
}

/* Every session holds a descriptor, so an open files limit below max_connections turns a
 * flood into accept() failures (and the rest of the relay into EMFILE) instead of polite 421s.
 * Say so at start. */
static void check_descriptor_limit(const struct config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY) return;
    if (rl.rlim_cur < (rlim_t)cfg->max_connections_in + SMTPD_FD_OVERHEAD)
        log_warn("smtpd: the open files limit (%llu) is below limits.max_connections (%d) + %d; "
                 "raise it (LimitNOFILE= in the service unit) or lower max_connections",
                 (unsigned long long)rl.rlim_cur, cfg->max_connections_in, SMTPD_FD_OVERHEAD);
}

static struct client_limits_conf limits_conf(const struct config *cfg)
{
    return (struct client_limits_conf){.max_total = cfg->max_connections_in,
                                       .reserved_for_origins = cfg->reserved_for_origins,
                                       .per_client = cfg->max_connections_per_client,
                                       .rate_count = cfg->connection_rate_per_client,
                                       .rate_period = cfg->connection_rate_period};
}

int smtpd_start(struct event_base *base, const struct config *cfg, SSL_CTX *server_ctx,
                struct auth_users *users, char *err, size_t errlen)
{
    smtpd_base = base;
    smtpd_cfg = cfg;
    smtpd_graveyard_ev = event_new(base, -1, 0, bury_sessions, NULL);
    smtpd_flush_ev = event_new(base, -1, 0, flush_sessions, NULL);
    smtpd_tls_ctx = server_ctx;
    if (origin_policy_init(cfg, err, errlen) < 0) return -1;
    smtpd_auth_throttle = auth_throttle_new();
    origin_policy_setup_server_ctx(server_ctx);
    smtpd_users = users;
    struct client_limits_conf lc = limits_conf(cfg);
    smtpd_limits = client_limits_new(&lc);
    check_descriptor_limit(cfg);
    smtpd_listeners = xcalloc(cfg->n_listen, sizeof *smtpd_listeners);
    for (size_t i = 0; i < cfg->n_listen; i++) {
        struct listener *l = &smtpd_listeners[i];
        l->conf = &cfg->listen[i];
        /* A deep accept queue (the kernel caps it at net.core.somaxconn): past a full queue
         * Linux drops the handshake's last ACK of a SYN-cookie connection, and the client,
         * which believes it is connected, waits for a greeting that never comes. A burst is
         * better held until accept_cb can answer it, 421 included. */
        l->evl = evconnlistener_new_bind(
            base, accept_cb, l, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
            SMTPD_LISTEN_BACKLOG, (const struct sockaddr *)&l->conf->addr.ss,
            (int)l->conf->addr.len);
        if (!l->evl) {
            snprintf(err, errlen, "cannot listen on %s: %s", l->conf->address_text,
                     strerror(errno));
            return -1;
        }
        smtpd_n_listeners++;
        l->resume_ev = evtimer_new(base, listener_resume_cb, l);
        evconnlistener_set_error_cb(l->evl, accept_error_cb);
        log_info("smtpd: listening on %s (tls %s)", l->conf->address_text,
                 (const char *[]){"none", "optional", "required", "implicit"}[l->conf->tls]);
    }
    return 0;
}

/* SIGHUP: new sessions get cfg's origins, limits, timeouts and hostname; open sessions keep
 * their origin and listener (pointers into the old config, kept alive by the caller) and read
 * the rest from cfg at their next command. The listening sockets, the server certificate and
 * the users file stay as they were started. Returns -1 with err, changing nothing, when an
 * origin's CA file cannot be read. */
int smtpd_reload(const struct config *cfg, char *err, size_t errlen)
{
    if (origin_policy_reload(cfg, smtpd_tls_ctx, err, errlen) < 0) return -1;
    struct client_limits_conf lc = limits_conf(cfg);
    client_limits_reconfigure(smtpd_limits, &lc);
    smtpd_cfg = cfg;
    return 0;
}

void smtpd_set_spool(struct spool *sp, smtpd_accept_fn accept)
{
    smtpd_accept = accept;
    smtpd_spool = sp;
}

struct event_base *smtpd_event_base(void)
{
    return smtpd_base;
}

void smtpd_stop(void)
{
    origin_policy_shutdown();
    for (size_t i = 0; i < smtpd_n_listeners; i++) {
        evconnlistener_free(smtpd_listeners[i].evl);
        if (smtpd_listeners[i].resume_ev) event_free(smtpd_listeners[i].resume_ev);
    }
    free(smtpd_listeners);
    smtpd_listeners = NULL;
    smtpd_n_listeners = 0;
    struct session *s, *next;
    for (s = LIST_FIRST(&smtpd_sessions); s; s = next) {
        next = LIST_NEXT(s, link);
        if (s->busy) {
            s->dead = 1;
            continue;
        }
        struct evbuffer *out = bufferevent_get_output(s->bev);
        evbuffer_add_printf(out, "421 4.3.2 Service shutting down\r\n");
        if (!s->tls) smtpd_write_now(out, s->fd); /* with what was still queued; no waiting */
        smtpd_session_free(s);
    }
    bury_sessions(-1, 0, NULL);
}

void smtpd_release(void)
{
    struct session *s;
    while ((s = LIST_FIRST(&smtpd_sessions))) { /* busy ones whose answer never came */
        LIST_REMOVE(s, link);
        unqueue_flush(s);
        sock_reader_free(s->reader);
        if (s->bev) bufferevent_free(s->bev);
        transaction_reset(s);
        if (s->data_deadline_ev) event_free(s->data_deadline_ev);
        if (s->command_deadline_ev) event_free(s->command_deadline_ev);
        free(s->auth_user);
        free(s);
    }
    bury_sessions(-1, 0, NULL);
    client_limits_free(smtpd_limits);
    smtpd_limits = NULL;
    auth_throttle_free(smtpd_auth_throttle);
    smtpd_auth_throttle = NULL;
    if (smtpd_graveyard_ev) event_free(smtpd_graveyard_ev);
    smtpd_graveyard_ev = NULL;
    if (smtpd_flush_ev) event_free(smtpd_flush_ev);
    smtpd_flush_ev = NULL;
}
