/* smtpc.c - outbound SMTP connections for one destination each: MX lookup (direct egress) or
 * smarthost, bound source address, EHLO, STARTTLS (opportunistic or required, optionally
 * verified), AUTH for smarthosts, pipelined transactions, several messages per connection.
 * Reports every job's per-recipient outcome to the queue (queue_job_done). Loop thread only. */
#include "deliver/smtpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "deliver/queue.h"
#include "dns/dns.h"
#include "ingress/smtp_proto.h"
#include "tls/tls.h"

#define SMTPC_IDLE_SECONDS 2
#define SMTPC_MAX_REPLY 8192

enum conn_state {
    C_RESOLVE_MX,
    C_RESOLVE_HOST,
    C_CONNECTING,
    C_GREETING,
    C_EHLO,
    C_HELO,
    C_STARTTLS,
    C_TLS_HANDSHAKE,
    C_AUTH,
    C_AUTH_LOGIN_USER, /* AUTH LOGIN sent, waiting for the username prompt */
    C_AUTH_LOGIN_PASS, /* username sent, waiting for the password prompt */
    C_IDLE,
    C_TRANSACTION,
    C_DATA_BODY,
    C_QUIT,
};

struct mx_host {
    char name[256];
    int preference;
};

enum expect { EXPECT_MAIL, EXPECT_RCPT, EXPECT_DATA, EXPECT_BODY, EXPECT_RSET };

struct smtpc_conn {
    LIST_ENTRY(smtpc_conn) idle_link;
    LIST_ENTRY(smtpc_conn) all_link;
    struct dest *dest;
    const struct egress_conf *egress;
    enum conn_state state;
    struct bufferevent *bev;
    evutil_socket_t fd;
    struct dns_query *dnsq;
    struct event *idle_timer;

    /* candidates */
    struct mx_host *hosts;
    size_t n_hosts, host_i;
    struct sockaddr_any *addrs;
    size_t n_addrs, addr_i;
    int aaaa_done;
    int any_tempfail;
    int no_tls; /* retrying this address in plaintext after a failed optional handshake */

    /* current server */
    char mx_name[256];
    char addr_text[64];
    char source_text[64];
    int tls;
    int ext_pipelining, ext_starttls, ext_8bitmime, ext_smtputf8, ext_dsn, ext_auth_plain,
        ext_auth_login;
    int64_t ext_size;
    int messages;
    char last_error[480];
    int last_error_code;
    char last_error_enh[16];

    /* reply being read */
    struct strbuf reply;
    int reply_code;

    /* transaction */
    struct job *job;
    int64_t job_started_us;
    enum expect *expects;
    size_t n_expects, expect_i, sent_i; /* replies read / commands sent (non-pipelined) */
    int rcpt_i;
    int accepted;
    int got_354;
    int closed;
    /* the receiver's last telling reply, for the shaping rules */
    int fb_code;
    char fb_enhanced[16];
    char fb_text[256];
};

static struct event_base *smtpc_base;
static const struct config *smtpc_cfg;
static SSL_CTX *smtpc_tls_plain, *smtpc_tls_verify_ctx;
static LIST_HEAD(, smtpc_conn) smtpc_all = LIST_HEAD_INITIALIZER(smtpc_all);

static void conn_next_address(struct smtpc_conn *c);
static void conn_close(struct smtpc_conn *c);
static void conn_ready(struct smtpc_conn *c);
static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);

/* --- failures -------------------------------------------------------------------------------- */

static void set_error(struct smtpc_conn *c, int code, const char *enh, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_error(struct smtpc_conn *c, int code, const char *enh, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->last_error, sizeof c->last_error, fmt, ap);
    va_end(ap);
    c->last_error_code = code;
    snprintf(c->last_error_enh, sizeof c->last_error_enh, "%s", enh);
}

static void fill_info(struct smtpc_conn *c, struct attempt_info *info)
{
    memset(info, 0, sizeof *info);
    info->remote_mx = c->mx_name[0] ? c->mx_name : NULL;
    info->remote_addr = c->addr_text[0] ? c->addr_text : NULL;
    info->source_addr = c->source_text[0] ? c->source_text : NULL;
    if (c->tls && c->bev) tls_describe(c->bev, &info->tls_version, &info->tls_cipher);
    info->started_us = c->job_started_us;
    if (c->fb_code) {
        info->reply_code = c->fb_code;
        info->reply_enhanced = c->fb_enhanced;
        info->reply_text = c->fb_text;
    }
}

/* The current job ends without a (complete) answer: recipients without a final reply keep
 * the connection's error, which is temporary unless we know better. */
static void job_abort(struct smtpc_conn *c)
{
    if (!c->job) return;
    struct job *j = c->job;
    for (size_t i = 0; i < j->n_rcpts; i++) {
        if (j->results[i].code == 0 || (j->results[i].code >= 200 && j->results[i].code < 300)) {
            /* accepted at RCPT but the data never got its final reply: try again */
            j->results[i].code = 0;
            snprintf(j->results[i].enhanced, sizeof j->results[i].enhanced, "%s",
                     c->last_error_enh[0] ? c->last_error_enh : "4.4.2");
            snprintf(j->results[i].text, sizeof j->results[i].text, "%s",
                     c->last_error[0] ? c->last_error : "lost connection");
        }
    }
    struct attempt_info info;
    fill_info(c, &info);
    c->job = NULL;
    queue_job_done(j, &info);
}

/* Nothing could be connected to: every job waiting for this destination gets the error when
 * no other connection is working on it; a permanent error bounces them. */
static void fail_destination(struct smtpc_conn *c)
{
    struct dest *d = c->dest;
    if (d->connections > 1 && c->last_error_code < 500) return;
    struct job *j;
    struct attempt_info info;
    fill_info(c, &info);
    while ((j = queue_dest_take_job(d))) {
        delivery_fail_all(j, c->last_error_code, c->last_error_enh[0] ? c->last_error_enh : "4.4.1",
                          c->last_error);
        queue_job_done(j, &info);
    }
}

/* --- connection teardown --------------------------------------------------------------------- */

static void conn_drop_socket(struct smtpc_conn *c)
{
    if (c->bev) {
        if (c->tls) {
            SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
            if (ssl) SSL_shutdown(ssl);
            bufferevent_free(c->bev); /* owns the fd */
        } else {
            bufferevent_free(c->bev);
            if (c->fd >= 0) evutil_closesocket(c->fd);
        }
    } else if (c->fd >= 0) {
        evutil_closesocket(c->fd);
    }
    c->bev = NULL;
    c->fd = -1;
    c->tls = 0;
}

/* Closed connections wait here until the loop is back at the top (or shutdown). */
static LIST_HEAD(, smtpc_conn) smtpc_graveyard = LIST_HEAD_INITIALIZER(smtpc_graveyard);
static struct event *smtpc_graveyard_ev;

static void bury_all(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    struct smtpc_conn *c;
    while ((c = LIST_FIRST(&smtpc_graveyard))) {
        LIST_REMOVE(c, all_link);
        free(c->hosts);
        free(c->addrs);
        free(c->expects);
        strbuf_free(&c->reply);
        free(c);
    }
}

/* Tears the connection down now; the struct itself is freed from the event loop later, so
 * callers up the stack may still look at c->closed. */
static void conn_close(struct smtpc_conn *c)
{
    if (c->closed) return;
    c->closed = 1;
    job_abort(c);
    if (c->state == C_IDLE) LIST_REMOVE(c, idle_link);
    LIST_REMOVE(c, all_link);
    if (c->dnsq) dns_cancel(c->dnsq);
    c->dnsq = NULL;
    if (c->idle_timer) event_free(c->idle_timer);
    c->idle_timer = NULL;
    conn_drop_socket(c);
    LIST_INSERT_HEAD(&smtpc_graveyard, c, all_link);
    event_active(smtpc_graveyard_ev, EV_TIMEOUT, 0);
    queue_dest_connection_closed(c->dest);
}

/* --- writing --------------------------------------------------------------------------------- */

static void send_line(struct smtpc_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void send_line(struct smtpc_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_vprintf(out, fmt, ap);
    evbuffer_add(out, "\r\n", 2);
    va_end(ap);
}

static void set_timeout(struct smtpc_conn *c, int64_t seconds)
{
    struct timeval tv = {.tv_sec = seconds};
    bufferevent_set_timeouts(c->bev, &tv, &tv);
}

/* --- MX and address resolution --------------------------------------------------------------- */

static int by_preference(const void *a, const void *b)
{
    const struct mx_host *x = a, *y = b;
    return x->preference - y->preference;
}

static void host_resolved(void *arg, const struct dns_answer *a);

static void resolve_next_host(struct smtpc_conn *c)
{
    if (c->host_i >= c->n_hosts) {
        if (!c->last_error[0]) {
            if (c->any_tempfail)
                set_error(c, 0, "4.4.3",
                          "cannot resolve any mail exchanger of %s (DNS temporary failure)",
                          c->dest->domain);
            else
                set_error(c, 550, "5.4.4", "no address for any mail exchanger of %s",
                          c->dest->domain[0] ? c->dest->domain : c->egress->host);
        }
        fail_destination(c);
        conn_close(c);
        return;
    }
    c->state = C_RESOLVE_HOST;
    snprintf(c->mx_name, sizeof c->mx_name, "%s", c->hosts[c->host_i].name);
    free(c->addrs);
    c->addrs = NULL;
    c->n_addrs = c->addr_i = 0;
    c->aaaa_done = 0;
    struct sockaddr_any lit;
    if (util_parse_ip(c->mx_name, &lit) == 0) { /* smarthost given as an address */
        c->addrs = xmalloc(sizeof *c->addrs);
        c->addrs[0] = lit;
        c->n_addrs = 1;
        c->host_i++;
        conn_next_address(c);
        return;
    }
    c->dnsq = dns_query(c->mx_name, DNS_TYPE_A, host_resolved, c);
}

static int source_family_ok(const struct smtpc_conn *c, int family)
{
    if (c->egress->n_sources == 0) return 1;
    for (size_t i = 0; i < c->egress->n_sources; i++)
        if (c->egress->sources[i].ss.ss_family == family) return 1;
    return 0;
}

static void host_resolved(void *arg, const struct dns_answer *a)
{
    struct smtpc_conn *c = arg;
    c->dnsq = NULL;
    if (a->status == DNS_TEMPFAIL) c->any_tempfail = 1;
    for (size_t i = 0; i < a->n && a->status == DNS_OK; i++) {
        if (!source_family_ok(c, a->addrs[i].ss.ss_family)) continue;
        c->addrs = xrealloc(c->addrs, (c->n_addrs + 1) * sizeof *c->addrs);
        c->addrs[c->n_addrs++] = a->addrs[i];
    }
    if (!c->aaaa_done) {
        c->aaaa_done = 1;
        c->dnsq = dns_query(c->mx_name, DNS_TYPE_AAAA, host_resolved, c);
        return;
    }
    c->host_i++;
    if (c->n_addrs == 0) {
        resolve_next_host(c);
        return;
    }
    conn_next_address(c);
}

static void mx_resolved(void *arg, const struct dns_answer *a)
{
    struct smtpc_conn *c = arg;
    c->dnsq = NULL;
    const char *domain = c->dest->domain;
    if (a->status == DNS_TEMPFAIL) {
        set_error(c, 0, "4.4.3", "MX lookup for %s failed: %s", domain,
                  a->error ? a->error : "temporary DNS failure");
        fail_destination(c);
        conn_close(c);
        return;
    }
    if (a->status == DNS_NXDOMAIN) {
        set_error(c, 550, "5.1.2", "Host or domain name not found: %s (NXDOMAIN)", domain);
        fail_destination(c);
        conn_close(c);
        return;
    }
    if (a->status == DNS_NODATA) { /* implicit MX (RFC 5321 5.1) */
        c->hosts = xcalloc(1, sizeof *c->hosts);
        snprintf(c->hosts[0].name, sizeof c->hosts[0].name, "%s", domain);
        c->n_hosts = 1;
    } else {
        if (a->n == 1 && a->mx[0].host[0] == '\0') {
            set_error(c, 556, "5.1.10", "Domain %s does not accept mail (null MX)", domain);
            fail_destination(c);
            conn_close(c);
            return;
        }
        c->hosts = xcalloc(a->n, sizeof *c->hosts);
        for (size_t i = 0; i < a->n; i++) {
            if (a->mx[i].host[0] == '\0') continue;
            c->hosts[c->n_hosts].preference = a->mx[i].preference;
            snprintf(c->hosts[c->n_hosts].name, sizeof c->hosts[0].name, "%s", a->mx[i].host);
            c->n_hosts++;
        }
        /* spread load over equal preferences, then sort stably by preference */
        for (size_t i = c->n_hosts; i > 1; i--) {
            size_t j = (size_t)random() % i;
            struct mx_host t = c->hosts[i - 1];
            c->hosts[i - 1] = c->hosts[j];
            c->hosts[j] = t;
        }
        qsort(c->hosts, c->n_hosts, sizeof *c->hosts, by_preference);
    }
    c->host_i = 0;
    resolve_next_host(c);
}

/* --- connecting ------------------------------------------------------------------------------- */

static const struct sockaddr_any *pick_source(struct smtpc_conn *c, int family)
{
    for (size_t i = 0; i < c->egress->n_sources; i++)
        if (c->egress->sources[i].ss.ss_family == family) return &c->egress->sources[i];
    return NULL;
}

static void conn_next_address(struct smtpc_conn *c)
{
    conn_drop_socket(c);
    if (c->addr_i >= c->n_addrs) {
        resolve_next_host(c);
        return;
    }
    struct sockaddr_any target = c->addrs[c->addr_i++];
    int port = c->egress->type == EGRESS_SMARTHOST ? c->egress->port : smtpc_cfg->mx_port;
    util_addr_set_port(&target, port);
    util_format_addr(&target, 1, c->addr_text, sizeof c->addr_text);
    c->state = C_CONNECTING;
    c->fd = socket(target.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        set_error(c, 0, "4.4.1", "socket: %s", strerror(errno));
        conn_next_address(c);
        return;
    }
    const struct sockaddr_any *src = pick_source(c, target.ss.ss_family);
    c->source_text[0] = '\0';
    if (src) {
        util_format_addr(src, 0, c->source_text, sizeof c->source_text);
        if (bind(c->fd, (const struct sockaddr *)&src->ss, src->len) < 0) {
            set_error(c, 0, "4.4.1", "cannot bind source address %s of egress %s: %s",
                      c->source_text, c->egress->name, strerror(errno));
            log_error("smtpc: %s", c->last_error);
            conn_next_address(c);
            return;
        }
    }
    evutil_make_socket_nonblocking(c->fd);
    c->bev = bufferevent_socket_new(smtpc_base, c->fd, 0);
    bufferevent_setcb(c->bev, conn_read_cb, NULL, conn_event_cb, c);
    set_timeout(c, smtpc_cfg->connect_timeout);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->tls = 0;
    c->ext_pipelining = c->ext_starttls = c->ext_8bitmime = c->ext_smtputf8 = c->ext_dsn = 0;
    c->ext_auth_plain = c->ext_auth_login = 0;
    c->ext_size = 0;
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&target.ss, (int)target.len) < 0) {
        set_error(c, 0, "4.4.1", "connect to %s[%s]: %s", c->mx_name, c->addr_text,
                  strerror(errno));
        conn_next_address(c);
    }
}

/* --- transaction -------------------------------------------------------------------------------
 */

static void send_body(struct smtpc_conn *c)
{
    struct strbuf data = STRBUF_INIT;
    const struct envelope *env = queue_message_envelope(c->job->msg);
    if (queue_message_data(c->job->msg, &data) < 0) {
        log_error("%s: cannot read the message from the spool", env->queue_id);
        set_error(c, 0, "4.3.0", "message data unreadable from the spool");
        strbuf_free(&data);
        conn_close(c);
        return;
    }
    struct evbuffer *out = bufferevent_get_output(c->bev);
    const char *p = data.data, *end = data.data + data.len;
    /* dot-stuffing: every line that starts with "." gets one more */
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p + 1) : (size_t)(end - p);
        if (*p == '.') evbuffer_add(out, ".", 1);
        evbuffer_add(out, p, n);
        p += n;
    }
    if (data.len && data.data[data.len - 1] != '\n') evbuffer_add(out, "\r\n", 2);
    evbuffer_add(out, ".\r\n", 3);
    strbuf_free(&data);
    c->state = C_DATA_BODY;
}

static void send_command(struct smtpc_conn *c, size_t i)
{
    const struct envelope *env = queue_message_envelope(c->job->msg);
    switch (c->expects[i]) {
    case EXPECT_MAIL: {
        struct strbuf cmd = STRBUF_INIT;
        strbuf_printf(&cmd, "MAIL FROM:<%s>", env->sender);
        if (c->ext_size) strbuf_printf(&cmd, " SIZE=%lld", (long long)env->size);
        if (env->body_8bit && c->ext_8bitmime) strbuf_puts(&cmd, " BODY=8BITMIME");
        if (env->smtputf8 && c->ext_smtputf8) strbuf_puts(&cmd, " SMTPUTF8");
        if (c->ext_dsn) {
            if (env->ret_hdrs) strbuf_puts(&cmd, " RET=HDRS");
            if (env->envid) {
                char x[400];
                smtp_xtext_encode(env->envid, x, sizeof x);
                strbuf_printf(&cmd, " ENVID=%s", x);
            }
        }
        send_line(c, "%s", strbuf_str(&cmd));
        strbuf_free(&cmd);
        break;
    }
    case EXPECT_RCPT: {
        size_t k = 0;
        for (size_t e = 0; e < i; e++)
            k += c->expects[e] == EXPECT_RCPT;
        const struct envelope_rcpt *r = &env->rcpts[c->job->rcpts[k]];
        struct strbuf cmd = STRBUF_INIT;
        strbuf_printf(&cmd, "RCPT TO:<%s>", r->address);
        if (c->ext_dsn && r->notify) {
            strbuf_puts(&cmd, " NOTIFY=");
            if (r->notify & SMTP_NOTIFY_NEVER)
                strbuf_puts(&cmd, "NEVER");
            else
                strbuf_printf(&cmd, "%s%s%s", r->notify & SMTP_NOTIFY_SUCCESS ? "SUCCESS," : "",
                              r->notify & SMTP_NOTIFY_FAILURE ? "FAILURE," : "",
                              r->notify & SMTP_NOTIFY_DELAY ? "DELAY," : "");
            if (cmd.data[cmd.len - 1] == ',') cmd.data[--cmd.len] = '\0';
        }
        if (c->ext_dsn && r->orcpt) {
            char x[1600];
            smtp_xtext_encode(r->orcpt, x, sizeof x);
            strbuf_printf(&cmd, " ORCPT=%s", x);
        }
        send_line(c, "%s", strbuf_str(&cmd));
        strbuf_free(&cmd);
        break;
    }
    case EXPECT_DATA:
        send_line(c, "DATA");
        break;
    case EXPECT_RSET:
        send_line(c, "RSET");
        break;
    case EXPECT_BODY:
        break;
    }
}

static void start_transaction(struct smtpc_conn *c)
{
    struct job *j = c->job;
    const struct envelope *env = queue_message_envelope(j->msg);
    c->job_started_us = util_now_us();
    c->fb_code = 0;
    if (env->smtputf8 && !c->ext_smtputf8) {
        delivery_fail_all(j, 553, "5.6.7",
                          "the message needs SMTPUTF8, which the receiving server does not offer");
        struct attempt_info info;
        fill_info(c, &info);
        c->job = NULL;
        queue_job_done(j, &info);
        conn_ready(c);
        return;
    }
    if (c->ext_size > 0 && env->size > c->ext_size) {
        delivery_fail_all(j, 552, "5.3.4", "message size exceeds the receiver's fixed limit");
        struct attempt_info info;
        fill_info(c, &info);
        c->job = NULL;
        queue_job_done(j, &info);
        conn_ready(c);
        return;
    }
    c->n_expects = j->n_rcpts + 2;
    c->expects = xrealloc(c->expects, c->n_expects * sizeof *c->expects);
    c->expects[0] = EXPECT_MAIL;
    for (size_t i = 0; i < j->n_rcpts; i++)
        c->expects[1 + i] = EXPECT_RCPT;
    c->expects[j->n_rcpts + 1] = EXPECT_DATA;
    c->expect_i = 0;
    c->rcpt_i = 0;
    c->accepted = 0;
    c->got_354 = 0;
    c->state = C_TRANSACTION;
    set_timeout(c, smtpc_cfg->command_timeout);
    if (c->ext_pipelining) {
        for (size_t i = 0; i < c->n_expects; i++)
            send_command(c, i);
        c->sent_i = c->n_expects;
    } else {
        send_command(c, 0);
        c->sent_i = 1;
    }
}

static void finish_job(struct smtpc_conn *c)
{
    struct job *j = c->job;
    struct attempt_info info;
    fill_info(c, &info);
    c->job = NULL;
    c->messages++;
    queue_job_done(j, &info);
}

static void store_result(struct rcpt_result *r, int code, const char *text)
{
    r->code = code;
    size_t skip = smtp_enhanced_code(text, r->enhanced, sizeof r->enhanced);
    snprintf(r->text, sizeof r->text, "%s", text + skip);
}

/* The next reply to read is for `what` (a command sent after the pipelined batch). */
static void expect_one_more(struct smtpc_conn *c, enum expect what)
{
    c->n_expects = c->expect_i + 1;
    c->expects = xrealloc(c->expects, c->n_expects * sizeof *c->expects);
    c->expects[c->expect_i] = what;
}

/* One complete reply during a transaction. */
static void transaction_reply(struct smtpc_conn *c, int code, const char *text)
{
    struct job *j = c->job;
    enum expect what = c->expects[c->expect_i++];
    switch (what) {
    case EXPECT_MAIL:
        if (code < 200 || code >= 300)
            for (size_t i = 0; i < j->n_rcpts; i++)
                store_result(&j->results[i], code, text);
        break;
    case EXPECT_RCPT: {
        struct rcpt_result *r = &j->results[c->rcpt_i++];
        if (r->code == 0) { /* not already failed by MAIL */
            if (code >= 200 && code < 300) {
                c->accepted++;
                r->code = 0; /* final answer comes after the data */
                r->enhanced[0] = '\0';
            } else {
                store_result(r, code, text);
            }
        }
        break;
    }
    case EXPECT_DATA:
        if (code == 354 && c->accepted > 0) {
            c->got_354 = 1;
            send_body(c);
            expect_one_more(c, EXPECT_BODY);
            set_timeout(c, smtpc_cfg->command_timeout * 2);
            return;
        }
        if (code == 354) { /* no recipient left but the server wants data: send nothing */
            evbuffer_add(bufferevent_get_output(c->bev), ".\r\n", 3);
            expect_one_more(c, EXPECT_RSET); /* swallow the reply to the empty message */
            return;
        }
        for (size_t i = 0; i < j->n_rcpts; i++)
            if (j->results[i].code == 0) store_result(&j->results[i], code, text);
        finish_job(c);
        if (code >= 400 && code < 500 && c->accepted == 0) {
            conn_ready(c);
            return;
        }
        if (code >= 300) {
            /* the server refused the transaction: reset before the next one */
            c->n_expects = 1;
            c->expects[0] = EXPECT_RSET;
            c->expect_i = 0;
            c->state = C_TRANSACTION;
            send_line(c, "RSET");
            return;
        }
        conn_ready(c);
        return;
    case EXPECT_BODY:
        for (size_t i = 0; i < j->n_rcpts; i++)
            if (j->results[i].code == 0) store_result(&j->results[i], code, text);
        finish_job(c);
        conn_ready(c);
        return;
    case EXPECT_RSET:
        if (c->job) {
            for (size_t i = 0; i < j->n_rcpts; i++)
                if (j->results[i].code == 0)
                    store_result(&j->results[i], 451, "4.3.0 no recipient accepted");
            finish_job(c);
        }
        if (code != 250) {
            set_error(c, 0, "4.4.2", "RSET failed");
            c->state = C_QUIT;
            send_line(c, "QUIT");
            return;
        }
        conn_ready(c);
        return;
    }
    if (!c->ext_pipelining && c->sent_i < c->n_expects) {
        /* MAIL refused: skip to the end without RCPTs */
        if (c->expects[0] == EXPECT_MAIL && c->expect_i == 1 && (code < 200 || code >= 300)) {
            finish_job(c);
            conn_ready(c);
            return;
        }
        if (c->expects[c->sent_i] == EXPECT_DATA && c->accepted == 0) {
            finish_job(c);
            c->n_expects = 1;
            c->expects[0] = EXPECT_RSET;
            c->expect_i = 0;
            send_line(c, "RSET");
            return;
        }
        send_command(c, c->sent_i++);
    }
}

/* --- session (before transactions) ---------------------------------------------------------------
 */

static void parse_ehlo_line(struct smtpc_conn *c, const char *kw)
{
    if (strcasecmp(kw, "PIPELINING") == 0)
        c->ext_pipelining = 1;
    else if (strcasecmp(kw, "STARTTLS") == 0)
        c->ext_starttls = 1;
    else if (strcasecmp(kw, "8BITMIME") == 0)
        c->ext_8bitmime = 1;
    else if (strcasecmp(kw, "SMTPUTF8") == 0)
        c->ext_smtputf8 = 1;
    else if (strcasecmp(kw, "DSN") == 0)
        c->ext_dsn = 1;
    else if (strncasecmp(kw, "SIZE", 4) == 0 && (kw[4] == ' ' || kw[4] == '\0'))
        c->ext_size = kw[4] ? atoll(kw + 5) : 0;
    else if (strncasecmp(kw, "AUTH", 4) == 0 && (kw[4] == ' ' || kw[4] == '=')) {
        c->ext_auth_plain = strcasestr(kw, " PLAIN") != NULL || strcasestr(kw, "=PLAIN");
        c->ext_auth_login = strcasestr(kw, " LOGIN") != NULL || strcasestr(kw, "=LOGIN");
    }
}

static const char *helo_name(const struct smtpc_conn *c)
{
    return c->egress->helo ? c->egress->helo : smtpc_cfg->hostname;
}

static void start_tls(struct smtpc_conn *c)
{
    SSL_CTX *ctx =
        c->egress->tls_verify && smtpc_tls_verify_ctx ? smtpc_tls_verify_ctx : smtpc_tls_plain;
    SSL *ssl = SSL_new(ctx);
    SSL_set_tlsext_host_name(ssl, c->mx_name);
    if (c->egress->tls_verify) {
        SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
        SSL_set1_host(ssl, c->mx_name);
    }
    bufferevent_free(c->bev); /* the plaintext bev does not own the fd */
    c->bev = bufferevent_openssl_socket_new(smtpc_base, c->fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    bufferevent_setcb(c->bev, conn_read_cb, NULL, conn_event_cb, c);
    set_timeout(c, smtpc_cfg->connect_timeout);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->tls = 1;
    c->state = C_TLS_HANDSHAKE;
}

static void after_ehlo(struct smtpc_conn *c)
{
    const struct egress_conf *e = c->egress;
    if (!c->tls && e->tls != TLS_NONE && !c->no_tls) {
        if (c->ext_starttls) {
            c->state = C_STARTTLS;
            send_line(c, "STARTTLS");
            return;
        }
        if (e->tls == TLS_REQUIRED) {
            set_error(c, 0, "4.7.4",
                      "TLS is required for egress %s but %s[%s] does not offer STARTTLS", e->name,
                      c->mx_name, c->addr_text);
            log_warn("smtpc: %s", c->last_error);
            c->state = C_QUIT;
            send_line(c, "QUIT");
            conn_next_address(c);
            return;
        }
    }
    if (e->type == EGRESS_SMARTHOST && e->auth_user) {
        if (!c->ext_auth_plain && !c->ext_auth_login) {
            set_error(c, 0, "4.7.0", "smarthost %s[%s] offers no AUTH PLAIN/LOGIN", c->mx_name,
                      c->addr_text);
            conn_next_address(c);
            return;
        }
        if (!c->ext_auth_plain) { /* LOGIN only: username and password in two steps */
            c->state = C_AUTH_LOGIN_USER;
            send_line(c, "AUTH LOGIN");
            return;
        }
        struct strbuf raw = STRBUF_INIT;
        strbuf_append(&raw, "", 1);
        strbuf_puts(&raw, e->auth_user);
        strbuf_append(&raw, "", 1);
        strbuf_puts(&raw, e->auth_password ? e->auth_password : "");
        char *b64 = xmalloc(raw.len * 2 + 8);
        EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)raw.data, (int)raw.len);
        c->state = C_AUTH;
        send_line(c, "AUTH PLAIN %s", b64);
        explicit_bzero(raw.data, raw.len);
        strbuf_free(&raw);
        free(b64);
        return;
    }
    conn_ready(c);
}

static void idle_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct smtpc_conn *c = arg;
    LIST_REMOVE(c, idle_link);
    c->state = C_QUIT;
    send_line(c, "QUIT");
    set_timeout(c, 10);
}

/* Ready for a transaction: take the next job, or wait idle a little, or leave. */
static void conn_ready(struct smtpc_conn *c)
{
    int limit =
        c->egress->max_messages_per_connection > 0 ? c->egress->max_messages_per_connection : 100;
    if (c->dest->max_per_connection > 0 && c->dest->max_per_connection < limit)
        limit = c->dest->max_per_connection; /* a cap or throttle of the route stage */
    if (c->messages < limit) {
        c->job = queue_dest_take_job(c->dest);
        if (c->job) {
            start_transaction(c);
            return;
        }
        c->state = C_IDLE;
        LIST_INSERT_HEAD(&c->dest->idle, c, idle_link);
        if (!c->idle_timer) c->idle_timer = evtimer_new(smtpc_base, idle_timeout, c);
        struct timeval tv = {SMTPC_IDLE_SECONDS, 0};
        evtimer_add(c->idle_timer, &tv);
        set_timeout(c, smtpc_cfg->command_timeout);
        return;
    }
    c->state = C_QUIT;
    send_line(c, "QUIT");
    set_timeout(c, 10);
}

int smtpc_wake_idle(struct dest *d)
{
    struct smtpc_conn *c = LIST_FIRST(&d->idle);
    if (!c) return 0;
    LIST_REMOVE(c, idle_link);
    evtimer_del(c->idle_timer);
    c->state = C_TRANSACTION;
    c->job = queue_dest_take_job(d);
    if (!c->job) {
        conn_ready(c);
        return 0;
    }
    start_transaction(c);
    return 1;
}

/* A complete reply outside a transaction. */
static void session_reply(struct smtpc_conn *c, int code, const char *text)
{
    switch (c->state) {
    case C_GREETING:
        if (code != 220) {
            set_error(c, code >= 500 ? 0 : 0, "4.4.2", "%s[%s] greeted with %d %s", c->mx_name,
                      c->addr_text, code, text);
            conn_next_address(c);
            return;
        }
        c->state = C_EHLO;
        send_line(c, "EHLO %s", helo_name(c));
        return;
    case C_EHLO:
        if (code != 250) {
            c->state = C_HELO;
            send_line(c, "HELO %s", helo_name(c));
            return;
        }
        after_ehlo(c);
        return;
    case C_HELO:
        if (code != 250) {
            set_error(c, 0, "4.4.2", "%s[%s] refused HELO: %d %s", c->mx_name, c->addr_text, code,
                      text);
            conn_next_address(c);
            return;
        }
        after_ehlo(c);
        return;
    case C_STARTTLS:
        if (code != 220) {
            if (c->egress->tls == TLS_REQUIRED) {
                set_error(c, 0, "4.7.4", "%s[%s] refused STARTTLS: %d %s", c->mx_name, c->addr_text,
                          code, text);
                conn_next_address(c);
                return;
            }
            conn_ready(c);
            return;
        }
        if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
            set_error(c, 0, "4.7.0", "%s[%s] sent data after its STARTTLS reply", c->mx_name,
                      c->addr_text);
            conn_next_address(c);
            return;
        }
        start_tls(c);
        return;
    case C_AUTH_LOGIN_USER:
    case C_AUTH_LOGIN_PASS:
        if (code == 334) {
            const char *v = c->state == C_AUTH_LOGIN_USER
                                ? c->egress->auth_user
                                : (c->egress->auth_password ? c->egress->auth_password : "");
            size_t len = strlen(v);
            char *b64 = xmalloc(len * 2 + 8);
            EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)v, (int)len);
            c->state = c->state == C_AUTH_LOGIN_USER ? C_AUTH_LOGIN_PASS : C_AUTH;
            send_line(c, "%s", b64);
            explicit_bzero(b64, strlen(b64));
            free(b64);
            return;
        }
        /* anything else ends the exchange like a final AUTH reply */
        __attribute__((fallthrough));
    case C_AUTH:
        if (code != 235) {
            set_error(c, 0, "4.7.0", "smarthost %s[%s] refused our credentials: %d %s", c->mx_name,
                      c->addr_text, code, text);
            log_error("smtpc: %s", c->last_error);
            fail_destination(c);
            conn_close(c);
            return;
        }
        conn_ready(c);
        return;
    case C_IDLE: /* e.g. a 421 while idle */
        conn_close(c);
        return;
    case C_QUIT:
        conn_close(c);
        return;
    default:
        return;
    }
}

/* --- input
 * ---------------------------------------------------------------------------------------- */

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    struct smtpc_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        size_t eol_len;
        char *line = evbuffer_readln(in, &eol_len, EVBUFFER_EOL_CRLF);
        if (!line) {
            if (evbuffer_get_length(in) > SMTPC_MAX_REPLY) {
                set_error(c, 0, "4.4.2", "%s[%s] sent an overlong line", c->mx_name, c->addr_text);
                if (c->state <= C_AUTH_LOGIN_PASS)
                    conn_next_address(c);
                else
                    conn_close(c);
            }
            return;
        }
        int code, more;
        const char *text;
        if (smtp_parse_reply_line(line, &code, &more, &text) < 0 ||
            (c->reply.len && code != c->reply_code)) {
            set_error(c, 0, "4.4.2", "%s[%s] sent a malformed reply: %.100s", c->mx_name,
                      c->addr_text, line);
            free(line);
            if (c->state <= C_AUTH_LOGIN_PASS)
                conn_next_address(c);
            else
                conn_close(c);
            return;
        }
        if (c->state == C_EHLO && c->reply.len) /* extension lines after the first */
            parse_ehlo_line(c, text);
        if (c->reply.len) strbuf_puts(&c->reply, " ");
        if (c->reply.len < SMTPC_MAX_REPLY) strbuf_puts(&c->reply, text);
        c->reply_code = code;
        free(line);
        if (more) continue;
        char *full = strbuf_detach(&c->reply, NULL);
        c->reply_code = 0;
        if (code >= 400 || c->state == C_DATA_BODY) {
            size_t skip = smtp_enhanced_code(full, c->fb_enhanced, sizeof c->fb_enhanced);
            c->fb_code = code;
            snprintf(c->fb_text, sizeof c->fb_text, "%s", full + skip);
        }
        struct bufferevent *before_bev = c->bev;
        if (c->state == C_TRANSACTION || c->state == C_DATA_BODY)
            transaction_reply(c, code, full);
        else
            session_reply(c, code, full);
        free(full);
        /* the connection may be closed, moved to another address or upgraded to TLS: then
         * this bufferevent's input is no longer ours to read */
        if (c->closed || c->bev != before_bev) return;
    }
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct smtpc_conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        if (c->state == C_CONNECTING) {
            c->state = C_GREETING;
            set_timeout(c, smtpc_cfg->command_timeout);
            return;
        }
        if (c->state == C_TLS_HANDSHAKE) {
            SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
            if (c->egress->tls_verify && SSL_get_verify_result(ssl) != X509_V_OK) {
                set_error(c, 0, "4.7.5", "certificate of %s[%s] did not verify: %s", c->mx_name,
                          c->addr_text, X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
                log_warn("smtpc: %s", c->last_error);
                conn_next_address(c);
                return;
            }
            c->state = C_EHLO;
            set_timeout(c, smtpc_cfg->command_timeout);
            send_line(c, "EHLO %s", helo_name(c));
            c->ext_pipelining = c->ext_starttls = c->ext_8bitmime = c->ext_smtputf8 = 0;
            c->ext_dsn = c->ext_auth_plain = c->ext_auth_login = 0;
            return;
        }
        return;
    }
    const char *why = (what & BEV_EVENT_TIMEOUT) ? "timeout"
                      : (what & BEV_EVENT_EOF)   ? "connection closed by the server"
                                                 : NULL;
    char sys[200];
    if (!why) {
        if (c->tls)
            snprintf(sys, sizeof sys, "TLS: %s", tls_error_string(c->bev));
        else
            snprintf(sys, sizeof sys, "%s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        why = sys;
    }
    switch (c->state) {
    case C_CONNECTING:
        set_error(c, 0, "4.4.1", "connect to %s[%s]: %s", c->mx_name, c->addr_text, why);
        conn_next_address(c);
        return;
    case C_TLS_HANDSHAKE:
        set_error(c, 0, "4.7.5", "TLS handshake with %s[%s] failed: %s", c->mx_name, c->addr_text,
                  why);
        log_warn("smtpc: %s", c->last_error);
        if (c->egress->tls != TLS_REQUIRED) {
            /* opportunistic TLS must not block mail: same address again, in plaintext */
            c->no_tls = 1;
            c->addr_i--;
        }
        conn_next_address(c);
        return;
    case C_GREETING:
    case C_EHLO:
    case C_HELO:
    case C_STARTTLS:
    case C_AUTH:
    case C_AUTH_LOGIN_USER:
    case C_AUTH_LOGIN_PASS:
        set_error(c, 0, "4.4.2", "lost connection with %s[%s] during the greeting: %s", c->mx_name,
                  c->addr_text, why);
        conn_next_address(c);
        return;
    case C_QUIT:
    case C_IDLE:
        conn_close(c);
        return;
    default:
        set_error(c, 0, "4.4.2", "lost connection with %s[%s] during the transaction: %s",
                  c->mx_name, c->addr_text, why);
        conn_close(c);
        return;
    }
}

void smtpc_open(struct dest *d)
{
    struct smtpc_conn *c = xcalloc(1, sizeof *c);
    c->dest = d;
    c->egress = d->egress;
    c->fd = -1;
    LIST_INSERT_HEAD(&smtpc_all, c, all_link);
    if (d->egress->type == EGRESS_SMARTHOST) {
        c->hosts = xcalloc(1, sizeof *c->hosts);
        snprintf(c->hosts[0].name, sizeof c->hosts[0].name, "%s", d->egress->host);
        c->n_hosts = 1;
        resolve_next_host(c);
        return;
    }
    c->state = C_RESOLVE_MX;
    c->dnsq = dns_query(d->domain, DNS_TYPE_MX, mx_resolved, c);
}

int smtpc_init(struct event_base *base, const struct config *cfg, char *err, size_t errlen)
{
    smtpc_base = base;
    smtpc_cfg = cfg;
    smtpc_graveyard_ev = event_new(base, -1, 0, bury_all, NULL);
    smtpc_tls_plain = tls_client_context(NULL, err, errlen);
    if (!smtpc_tls_plain) return -1;
    /* one verifying context per CA file would be better; egresses rarely differ */
    for (size_t i = 0; i < cfg->n_egress; i++) {
        if (cfg->egress[i].tls_ca_file && !smtpc_tls_verify_ctx) {
            smtpc_tls_verify_ctx = tls_client_context(cfg->egress[i].tls_ca_file, err, errlen);
            if (!smtpc_tls_verify_ctx) return -1;
        }
    }
    if (!smtpc_tls_verify_ctx) {
        smtpc_tls_verify_ctx = tls_client_context(NULL, err, errlen);
        if (smtpc_tls_verify_ctx) SSL_CTX_set_default_verify_paths(smtpc_tls_verify_ctx);
    }
    return 0;
}

void smtpc_shutdown(void)
{
    struct smtpc_conn *c;
    while ((c = LIST_FIRST(&smtpc_all))) {
        c->job = NULL; /* the queue is going away; the spool keeps the messages */
        conn_close(c);
    }
    bury_all(-1, 0, NULL);
    if (smtpc_graveyard_ev) event_free(smtpc_graveyard_ev);
    smtpc_graveyard_ev = NULL;
    if (smtpc_tls_plain) SSL_CTX_free(smtpc_tls_plain);
    if (smtpc_tls_verify_ctx) SSL_CTX_free(smtpc_tls_verify_ctx);
    smtpc_tls_plain = smtpc_tls_verify_ctx = NULL;
}
