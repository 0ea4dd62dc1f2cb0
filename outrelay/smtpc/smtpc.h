/* smtpc.h - the SMTP client: takes jobs (one message, one egress, one destination, the
 * recipients due now; see the job contract in smtpc_job.h) from its owner's destinations,
 * delivers them over SMTP with the TLS each connection's policy asks for (tls_policy.h), and
 * gives every job back with one outcome per recipient (struct smtpc_owner's job_done). Owns its
 * connections; never decides when a recipient is retried, bounced or done (the owner does), and
 * never names its owner: it reaches it only through the callbacks given to smtpc_init(). Called
 * by the queue manager; loop thread only, except smtpc_reply_add_line. */
#ifndef OUTRELAY_SMTPC_H
#define OUTRELAY_SMTPC_H

#include <stddef.h>

#include <event2/event.h>

#include "common/strbuf.h"
#include "config/config.h"
#include "smtpc/smtpc_job.h"
#include "mail/envelope.h"

/* What the client calls back in the owner of the jobs and destinations, from the loop thread.
 * The owner keeps the struct alive until smtpc_shutdown(). */
struct smtpc_owner {
    /* The job is back with every results[] entry filled; info (the client's, valid during the
     * call) says what the attempt looked like. The owner frees the job. */
    void (*job_done)(struct job *job, const struct attempt_info *info);
    /* The job's message as it goes out into out (emptied first; the caller's buffer): CRLF
     * lines, not dot-stuffed. Returns 0 / -1 (unreadable). */
    int (*message_data)(struct job *job, struct strbuf *out);
    /* The job's envelope, owned by the owner, valid while the job is out. */
    const struct envelope *(*message_envelope)(const struct job *job);
    /* A connection of d has closed (once per smtpc_open). */
    void (*connection_closed)(struct dest *d);
    /* A connection of d reached a transaction: the destination works, any back-off ends. */
    void (*working)(struct dest *d);
    /* A connection that reached a transaction has closed (before connection_closed). */
    void (*working_closed)(struct dest *d);
    /* A connection of d failed before any transaction with `why` (code 0 or 4xx: temporary,
     * 5xx: permanent for every job); why and info are the client's, valid during the call. */
    void (*failed)(struct dest *d, const struct rcpt_result *why, const struct attempt_info *info);
};

/* Starts the client on base with cfg's egresses, handing jobs back to owner; -1 with err when
 * an egress's TLS files cannot be loaded. */
int smtpc_init(struct event_base *base, const struct config *cfg, const struct smtpc_owner *owner,
               char *err, size_t errlen);
/* SIGHUP: new connections use cfg; open ones finish with the egress and TLS policy they started
 * with. -1 with err (nothing changed) when an egress's TLS files cannot be loaded. The caller
 * keeps the old config alive until after smtpc_shutdown(). */
int smtpc_reload(const struct config *cfg, char *err, size_t errlen);
/* Opens a new connection for d (d->connections already counted by the caller); it takes jobs
 * with smtpc_dest_take_job until d has none or its per-connection limit is reached. */
void smtpc_open(struct dest *d);
/* Wakes an idle connection of d to take the next job; returns 0 if there was none. */
int smtpc_wake_idle(struct dest *d);
/* Closes every connection; their jobs are not handed back (the queue is going away). */
void smtpc_shutdown(void);

/* A remote server's reply, read one line at a time (without CRLF) the way a connection reads
 * it: *reply collects the lines' texts joined by one space (cut at 8 KiB), *reply_code
 * the code of the lines so far, 0 before the first (the caller sets it to 0 and empties *reply
 * for a new reply, and when it drops a connection in the middle of one).
 * *text points at this line's text, inside line. Returns 1 when more lines follow, 0 when the
 * reply is complete, -1 when the line is no reply line, changes the code or follows 8 KiB of
 * text (a reply that never ends). Pure; any thread
 * (the connection uses it; so does fuzz/fuzz_reply.c). */
int smtpc_reply_add_line(struct strbuf *reply, int *reply_code, const char *line,
                         const char **text);

#endif
