/* smtpc_job.h - what the SMTP client takes: a job (one message, one egress, one destination, the
 * recipients due now) and a destination (where jobs wait for a connection, with its concurrency
 * and idle connections), and what it gives back (a result per recipient, what the attempt looked
 * like). The job's owner (the queue manager) allocates and frees both and reaches the client
 * through smtpc.h; the client never names its owner. Loop thread only. */
#ifndef OUTRELAY_SMTPC_JOB_H
#define OUTRELAY_SMTPC_JOB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "common/strbuf.h"
#include "config/config.h"
#include "mail/envelope.h"

struct smtpc_conn;

/* The outcome for one recipient of a job. code 0 = no reply (connection-level trouble). */
struct rcpt_result {
    int code;
    char enhanced[16];
    char text[480];
};

struct job {
    TAILQ_ENTRY(job) link;
    void *msg; /* the owner's message, opaque to the client */
    struct dest *dest;
    size_t *rcpts; /* indexes into msg->env->rcpts */
    size_t n_rcpts;
    struct rcpt_result *results; /* one per rcpts[] entry */
    int64_t not_before;          /* deferred recipients wait at least until then (back-off) */
};
TAILQ_HEAD(job_list, job);

struct dest {
    void *owner; /* the owner's state, opaque to the client */
    char *key;   /* "egress/domain" */
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
    const char *tls_policy;        /* the TLS policy's level: none, may, encrypt, verify */
    const char *tls_policy_source; /* who decided it: table, egress */
    const char *tls_failure;       /* why TLS failed, an RFC 8460 result type, or NULL */
    const char *tls_policy_domain; /* the domain of the published policy that applied, or NULL */
    const char *tls_policy_string; /* that policy as text, or NULL */
    int64_t started_us;
    int reply_code; /* the receiver's last telling reply (for shaping rules), or 0 */
    const char *reply_enhanced;
    const char *reply_text;
};

/* smtpc_job.c: the next job waiting for d (taken off its list), or NULL. */
struct job *smtpc_dest_take_job(struct dest *d);
/* Fills every result of the job with the same reply. */
void smtpc_job_fail_all(struct job *job, int code, const char *enhanced, const char *text);
/* Frees a job and what it holds (not its message or destination): the owner's way to drop one,
 * and the client's at shutdown, when the jobs out on connections are not handed back. */
void smtpc_job_free(struct job *job);

#endif
