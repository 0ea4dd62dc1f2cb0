/* smtpc_transaction.c - one job on an open SMTP client connection: MAIL, RCPT and DATA
 * (pipelined when offered), the dot-stuffed message or BDAT chunks (RFC 3030, when offered), a
 * reply per command, RSET after a refused transaction. Fills the job's per-recipient results and
 * hands the job back to its owner (smtpc_owner->job_done); tells the session (smtpc.c, its only
 * caller) when the connection is free for the next job. Never closes a working connection except
 * when the data is unreadable. Uses only the connection core and smtpc_job.c. Loop thread only. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/clock.h"
#include "common/util.h"
#include "smtpc/smtpc_internal.h"
#include "mail/smtp_proto.h"

/* Chunks of a BDAT message when the server pipelines: the chunks go out back to back, so a
 * big message is a few commands of bounded size rather than one the server must take whole
 * before it can answer. Without PIPELINING the message is one BDAT LAST. */
#define SMTPC_BDAT_CHUNK (1024 * 1024)

/* The message from the spool into data; -1 when it cannot be read (the connection is closed
 * then). */
static int read_body(struct smtpc_conn *c, struct strbuf *data)
{
    const struct envelope *env = smtpc_owner->message_envelope(c->job);
    if (smtpc_owner->message_data(c->job, data) < 0) {
        log_error("%s: cannot read the message from the spool", env->queue_id);
        smtpc_set_error(c, 0, "4.3.0", "message data unreadable from the spool");
        strbuf_free(data);
        smtpc_conn_close(c);
        return -1;
    }
    return 0;
}

/* Sends the message as BDAT chunks (RFC 3030): the octets as they are, no dot-stuffing; a
 * reply is expected per chunk, the last one's as the message's. -1 as read_body. */
static int send_bdat(struct smtpc_conn *c)
{
    struct strbuf data = STRBUF_INIT;
    if (read_body(c, &data) < 0) return -1;
    if (data.len && data.data[data.len - 1] != '\n') strbuf_append(&data, "\r\n", 2);
    size_t chunk = c->ext_pipelining ? SMTPC_BDAT_CHUNK : data.len;
    size_t n_chunks = data.len == 0 ? 1 : (data.len + chunk - 1) / chunk;
    c->n_expects = c->expect_i + n_chunks;
    c->expects = xrealloc(c->expects, c->n_expects * sizeof *c->expects);
    struct evbuffer *out = smtpc_output(c);
    size_t off = 0;
    for (size_t i = 0; i < n_chunks; i++) {
        size_t n = data.len - off < chunk ? data.len - off : chunk;
        int last = i + 1 == n_chunks;
        evbuffer_add_printf(out, "BDAT %zu%s\r\n", n, last ? " LAST" : "");
        evbuffer_add(out, data.data + off, n);
        off += n;
        c->expects[c->expect_i + i] = last ? EXPECT_BODY : EXPECT_BDAT;
    }
    strbuf_free(&data);
    c->got_354 = 1; /* the message is on its way, as after DATA's 354 */
    c->state = C_DATA_BODY;
    return 0;
}

/* Sends the message after DATA's 354; -1 as read_body. */
static int send_body(struct smtpc_conn *c)
{
    struct strbuf data = STRBUF_INIT;
    if (read_body(c, &data) < 0) return -1;
    struct evbuffer *out = smtpc_output(c);
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
    return 0;
}

/* " KEY=" + value as RFC 3461 xtext (ENVID, ORCPT). */
static void append_xtext(struct strbuf *cmd, const char *key, const char *value)
{
    char x[1600];
    smtp_xtext_encode(value, x, sizeof x);
    strbuf_printf(cmd, "%s%s", key, x);
}

/* REQUIRETLS (RFC 8689): the message goes only over TLS whose certificate
 * verified (for the policy's names, or the MX name when the policy does not verify, see
 * start_tls in smtpc.c) to a server that offers REQUIRETLS, which is then passed on. Else the
 * recipients fail for good with 5.7.30 and the queue sends the sender a DSN with
 * the header only, itself marked REQUIRETLS (qmgr_rcpt.c). Nothing of the message has been
 * sent then: the check is before MAIL. A refusal with other addresses or MX hosts left sends
 * QUIT and carries the job on to them (RFC 8689 section 4.2.1; smtpc_conn_ready offers it
 * first there); it bounces when the last one refuses, and is deferred when one of them could
 * not be reached. The rules bind messages with a return path only
 * (RFC 8689): such a DSN (null sender) goes in any case, with REQUIRETLS passed on where
 * the connection meets them.
 *
 * "TLS-Required: No" (RFC 8689) asks a relay to ignore the recipient domain's own
 * TLS policies (DANE, MTA-STS); it does not touch this relay's policy. The header is passed on
 * unchanged and, for now, changes nothing here: the tls_policy: table and the egress's tls
 * setting are the administrator's, not the recipient's, and stay in force; the DANE and MTA-STS
 * rules to be added to tls_policy_for() are where it would apply. With REQUIRETLS on MAIL FROM
 * the header is ignored, as the RFC says.
 *
 * For direct delivery the MX host itself must be trustworthy (RFC 8689 section 4.2.1): it came
 * from a DNSSEC-validated MX answer, or the domain's MTA-STS policy lists it; a smarthost is
 * the administrator's choice and needs no such proof. Returns NULL, or the reason. */
static const char *requiretls_refusal(const struct smtpc_conn *c, char *buf, size_t size)
{
    int direct = c->egress->type == EGRESS_DIRECT && c->dest->domain[0];
    int mx_trusted =
        !direct || c->mx_secure ||
        (c->sts && c->sts->mode != STS_MODE_NONE && sts_policy_allows(c->sts, c->mx_name));
    const char *why = !c->tls              ? "the connection is not TLS"
                      : !c->tls_verified   ? "its certificate did not verify"
                      : !c->ext_requiretls ? "it does not offer REQUIRETLS"
                      : !mx_trusted        ? "the MX host was found neither through DNSSEC nor in "
                                             "an MTA-STS policy"
                                           : NULL;
    if (!why) return NULL;
    if (buf) snprintf(buf, size, "REQUIRETLS: %s[%s]: %s; not sent", c->mx_name, c->addr_text, why);
    return why;
}

static void send_command(struct smtpc_conn *c, size_t i)
{
    const struct envelope *env = smtpc_owner->message_envelope(c->job);
    switch (c->expects[i]) {
    case EXPECT_MAIL: {
        struct strbuf cmd = STRBUF_INIT;
        strbuf_printf(&cmd, "MAIL FROM:<%s>", env->sender);
        if (c->ext_size) strbuf_printf(&cmd, " SIZE=%lld", (long long)env->size);
        if (env->body_8bit && c->ext_8bitmime) strbuf_puts(&cmd, " BODY=8BITMIME");
        if (env->smtputf8 && c->ext_smtputf8) strbuf_puts(&cmd, " SMTPUTF8");
        if (env->requiretls && (env->sender[0] || requiretls_refusal(c, NULL, 0) == NULL))
            strbuf_puts(&cmd, " REQUIRETLS"); /* see requiretls_refusal */
        if (c->ext_dsn) {
            if (env->ret_hdrs) strbuf_puts(&cmd, " RET=HDRS");
            if (env->envid) append_xtext(&cmd, " ENVID=", env->envid);
        }
        smtpc_send_line(c, "%s", strbuf_str(&cmd));
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
        if (c->ext_dsn && r->orcpt) append_xtext(&cmd, " ORCPT=", r->orcpt);
        smtpc_send_line(c, "%s", strbuf_str(&cmd));
        strbuf_free(&cmd);
        break;
    }
    case EXPECT_DATA:
        smtpc_send_line(c, "DATA");
        break;
    case EXPECT_RSET:
        smtpc_send_line(c, "RSET");
        break;
    case EXPECT_BDAT: /* sent by send_bdat with their octets */
    case EXPECT_BODY:
        break;
    }
}

/* Hands the job back to the queue with its results. */
static void job_done(struct smtpc_conn *c)
{
    struct job *j = c->job;
    struct attempt_info info;
    smtpc_fill_info(c, &info);
    c->job = NULL;
    smtpc_owner->job_done(j, &info);
}

/* The job cannot be offered to this server at all: every recipient gets the same permanent
 * answer, and the connection goes on with the next job. */
static enum transaction_next refuse_job(struct smtpc_conn *c, int code, const char *enhanced,
                                        const char *text)
{
    smtpc_job_fail_all(c->job, code, enhanced, text);
    job_done(c);
    return TRANSACTION_READY;
}

enum transaction_next smtpc_start_transaction(struct smtpc_conn *c)
{
    struct job *j = c->job;
    const struct envelope *env = smtpc_owner->message_envelope(j);
    c->job_started_us = clock_now_us();
    c->fb_code = 0;
    if (env->smtputf8 && !c->ext_smtputf8)
        return refuse_job(c, 553, "5.6.7",
                          "the message needs SMTPUTF8, which the receiving server does not offer");
    char why[400];
    if (env->requiretls && env->sender[0] && requiretls_refusal(c, why, sizeof why)) {
        if (smtpc_more_candidates(c)) {
            /* RFC 8689 section 4.2.1: QUIT, and on to the other MX hosts with this message */
            log_warn("%s: %s; trying the next MX host", env->queue_id, why);
            if (!c->pinned_why[0]) snprintf(c->pinned_why, sizeof c->pinned_why, "%s", why);
            c->pinned = j;
            c->job = NULL;
            smtpc_send_quit(c);
            return TRANSACTION_GOES_ON;
        }
        log_warn("%s: %s", env->queue_id, why);
        /* candidates left untried (SMTPC_MAX_ADDRESSES) are the next attempt's */
        int untried = c->addr_i < c->n_addrs || c->host_i < c->n_hosts;
        if (!c->pinned_why[0] && !untried) return refuse_job(c, 550, "5.7.30", why);
        char both[sizeof why + sizeof c->pinned_why + 8];
        if (c->pinned_why[0])
            snprintf(both, sizeof both, "%s; %s", c->pinned_why, why);
        else
            snprintf(both, sizeof both, "%s", why);
        if (c->pinned_temp || untried) /* another MX host may take it later */
            return refuse_job(c, 0, c->last_error_enh[0] ? c->last_error_enh : "4.7.30", both);
        return refuse_job(c, 550, "5.7.30", both);
    }
    if (c->ext_size > 0 && env->size > c->ext_size)
        return refuse_job(c, 552, "5.3.4", "message size exceeds the receiver's fixed limit");
    /* with BDAT the chunks follow the RCPT replies (send_bdat): no octet goes out for a
     * transaction without a recipient, and the round trips are DATA's */
    c->bdat = c->ext_chunking && c->egress->chunking;
    c->bdat_failed = 0;
    c->n_expects = j->n_rcpts + (c->bdat ? 1 : 2);
    c->expects = xrealloc(c->expects, c->n_expects * sizeof *c->expects);
    c->expects[0] = EXPECT_MAIL;
    for (size_t i = 0; i < j->n_rcpts; i++)
        c->expects[1 + i] = EXPECT_RCPT;
    if (!c->bdat) c->expects[j->n_rcpts + 1] = EXPECT_DATA;
    c->expect_i = 0;
    c->rcpt_i = 0;
    c->accepted = 0;
    c->got_354 = 0;
    c->state = C_TRANSACTION;
    smtpc_set_timeout(c, smtpc_cfg->command_timeout);
    if (c->ext_pipelining) {
        for (size_t i = 0; i < c->n_expects; i++)
            send_command(c, i);
        c->sent_i = c->n_expects;
    } else {
        send_command(c, 0);
        c->sent_i = 1;
    }
    return TRANSACTION_GOES_ON;
}

/* The job got its answers from this server: it counts against the connection's limit. */
static void finish_job(struct smtpc_conn *c)
{
    c->messages++;
    job_done(c);
}

static void store_result(struct rcpt_result *r, int code, const char *text)
{
    r->code = code;
    size_t skip = smtp_enhanced_code(text, r->enhanced, sizeof r->enhanced);
    snprintf(r->text, sizeof r->text, "%s", text + skip);
}

/* The reply for every recipient still waiting for one (accepted at RCPT). */
static void store_open_results(struct job *j, int code, const char *text)
{
    for (size_t i = 0; i < j->n_rcpts; i++)
        if (j->results[i].code == 0) store_result(&j->results[i], code, text);
}

/* The server's transaction is refused or undefined: RSET before the next job. */
static enum transaction_next send_rset(struct smtpc_conn *c)
{
    c->n_expects = 1;
    c->expects[0] = EXPECT_RSET;
    c->expect_i = 0;
    c->state = C_TRANSACTION;
    smtpc_send_line(c, "RSET");
    return TRANSACTION_GOES_ON;
}

/* The next reply to read is for `what` (a command sent after the pipelined batch). */
static void expect_one_more(struct smtpc_conn *c, enum expect what)
{
    c->n_expects = c->expect_i + 1;
    c->expects = xrealloc(c->expects, c->n_expects * sizeof *c->expects);
    c->expects[c->expect_i] = what;
}

/* One complete reply during a transaction. */
enum transaction_next smtpc_transaction_reply(struct smtpc_conn *c, int code, const char *text)
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
            if (send_body(c) < 0) return TRANSACTION_GOES_ON; /* closed */
            expect_one_more(c, EXPECT_BODY);
            smtpc_set_timeout(c, smtpc_cfg->command_timeout * 2);
            return TRANSACTION_GOES_ON;
        }
        if (code == 354) { /* no recipient left but the server wants data: send nothing */
            evbuffer_add(smtpc_output(c), ".\r\n", 3);
            expect_one_more(c, EXPECT_RSET); /* swallow the reply to the empty message */
            return TRANSACTION_GOES_ON;
        }
        store_open_results(j, code, text);
        finish_job(c);
        if (code >= 400 && code < 500 && c->accepted == 0) return TRANSACTION_READY;
        if (code >= 300) return send_rset(c); /* the server refused the transaction */
        return TRANSACTION_READY;
    case EXPECT_BDAT:
        /* a refused chunk fails the message; the server still answers (and drops) the chunks
         * already sent, RFC 3030 section 2 */
        if (code < 200 || code >= 300) {
            c->bdat_failed = 1;
            store_open_results(j, code, text);
        }
        return TRANSACTION_GOES_ON;
    case EXPECT_BODY:
        store_open_results(j, code, text);
        finish_job(c);
        /* after a refused chunk the server's transaction is undefined */
        if (c->bdat && (c->bdat_failed || code >= 300)) return send_rset(c);
        return TRANSACTION_READY;
    case EXPECT_RSET:
        if (c->job) {
            store_open_results(j, 451, "4.3.0 no recipient accepted");
            finish_job(c);
        }
        if (code != 250) {
            smtpc_set_error(c, 0, "4.4.2", "RSET failed");
            smtpc_send_quit(c);
            return TRANSACTION_GOES_ON;
        }
        return TRANSACTION_READY;
    }
    if (c->bdat && c->expect_i == c->n_expects) { /* the last RCPT reply is in */
        if (c->accepted == 0) {
            finish_job(c);
            return send_rset(c);
        }
        if (send_bdat(c) < 0) return TRANSACTION_GOES_ON; /* closed */
        smtpc_set_timeout(c, smtpc_cfg->command_timeout * 2);
        return TRANSACTION_GOES_ON;
    }
    if (!c->ext_pipelining && c->sent_i < c->n_expects) {
        /* MAIL refused: skip to the end without RCPTs */
        if (c->expects[0] == EXPECT_MAIL && c->expect_i == 1 && (code < 200 || code >= 300)) {
            finish_job(c);
            return TRANSACTION_READY;
        }
        if (c->expects[c->sent_i] == EXPECT_DATA && c->accepted == 0) {
            finish_job(c);
            return send_rset(c);
        }
        send_command(c, c->sent_i++);
    }
    return TRANSACTION_GOES_ON;
}
