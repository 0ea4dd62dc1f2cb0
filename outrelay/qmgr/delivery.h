/* delivery.h - what the queue manager (qmgr/) and the SMTP client (smtpc) share: a job (one
 * message, one egress, one destination, the recipients due now) and a destination (where jobs
 * wait for a connection, with its concurrency and idle connections). qmgr_dest.c owns both;
 * smtpc takes jobs from a destination and reports each job's outcome. Loop thread only. */
#ifndef OUTRELAY_DELIVERY_H
#define OUTRELAY_DELIVERY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "common/strbuf.h"
#include "config/config.h"
#include "mail/envelope.h"

struct message;
struct qmgr;
struct smtpc_conn;

/* The outcome for one recipient of a job. code 0 = no reply (connection-level trouble). */
struct rcpt_result {
    int code;
    char enhanced[16];
    char text[480];
};

struct job {
    TAILQ_ENTRY(job) link;
    struct message *msg;
    struct dest *dest;
    size_t *rcpts; /* indexes into msg->env->rcpts */
    size_t n_rcpts;
    struct rcpt_result *results; /* one per rcpts[] entry */
    int64_t not_before;          /* deferred recipients wait at least until then (back-off) */
};
TAILQ_HEAD(job_list, job);

struct dest {
    struct qmgr *qmgr; /* the queue manager that owns it */
    char *key;         /* "egress/domain" */
    const struct egress_conf *egress;
    char *domain;           /* recipient domain; "" for a smarthost */
    const char *provider;   /* of the first domain routed here (route_provider) */
    int max_per_connection; /* from caps/throttles; 0 = the egress's own limit */
    struct job_list jobs;
    size_t n_jobs;
    int connections; /* open or opening */
    int working;     /* of those, how many reached a transaction (greeting, TLS, AUTH passed) */
    LIST_HEAD(, smtpc_conn) idle;
    /* Back-off after failures before any transaction (refused, 421 greeting, TLS, MX
     * SERVFAIL): no new connection before retry_at; jobs that arrive meanwhile are deferred at
     * once with `failure`; one probe connection at a time until a connection works again. */
    int failures;               /* in a row */
    int64_t retry_at;           /* 0: not backing off */
    struct rcpt_result failure; /* the reply that started the back-off */
    struct event *retry_ev;     /* kicks the destination when the back-off ends */
};

/* What an attempt looked like, for records. */
struct attempt_info {
    const char *remote_mx;
    const char *remote_addr;
    const char *source_addr;
    const char *tls_version;
    const char *tls_cipher;
    int64_t started_us;
    int reply_code; /* the receiver's last telling reply (for shaping rules), or 0 */
    const char *reply_enhanced;
    const char *reply_text;
};

/* qmgr/, for smtpc */
struct job *queue_dest_take_job(struct dest *d);
/* Every results[] entry is filled. The job is freed by the queue. */
void queue_job_done(struct job *job, const struct attempt_info *info);
/* Message data (CRLF lines, not dot-stuffed). Returns 0 / -1. */
int queue_message_data(struct message *msg, struct strbuf *out);
const struct envelope *queue_message_envelope(const struct message *msg);
/* A connection has closed (smtpc calls it once per smtpc_open). */
void queue_dest_connection_closed(struct dest *d);
/* A connection of d reached a transaction: the destination works, any back-off ends. */
void queue_dest_working(struct dest *d);
/* A connection that reached a transaction has closed (smtpc calls it before
 * queue_dest_connection_closed). */
void queue_dest_working_closed(struct dest *d);
/* A connection of d failed before any transaction with `why` (code 0 or 4xx: temporary, 5xx:
 * permanent for every job). Starts or lengthens the back-off; jobs waiting for d get `why`
 * unless another connection of d is working. */
void queue_dest_failed(struct dest *d, const struct rcpt_result *why,
                       const struct attempt_info *info);

/* Fills every result of the job with the same reply. */
void delivery_fail_all(struct job *job, int code, const char *enhanced, const char *text);

#endif
