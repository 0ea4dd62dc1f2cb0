/* smtpc.h - the SMTP client: takes jobs (one message, one egress, one destination, the
 * recipients due now; see the job contract in delivery.h) from the queue's destinations,
 * delivers them over SMTP with the TLS each connection's policy asks for (tls_policy.h), and
 * gives every job back with one outcome per recipient (queue_job_done). Owns its connections;
 * never decides when a recipient is retried, bounced or done (the queue does). Called by the
 * queue manager; loop thread only, except smtpc_reply_add_line. */
#ifndef OUTRELAY_SMTPC_H
#define OUTRELAY_SMTPC_H

#include <stddef.h>

#include <event2/event.h>

#include "common/strbuf.h"
#include "config/config.h"
#include "qmgr/delivery.h"

/* Starts the client on base with cfg's egresses; -1 with err when an egress's TLS files cannot
 * be loaded. */
int smtpc_init(struct event_base *base, const struct config *cfg, char *err, size_t errlen);
/* SIGHUP: new connections use cfg; open ones finish with the egress and TLS policy they started
 * with. -1 with err (nothing changed) when an egress's TLS files cannot be loaded. The caller
 * keeps the old config alive until after smtpc_shutdown(). */
int smtpc_reload(const struct config *cfg, char *err, size_t errlen);
/* Opens a new connection for d (d->connections already counted by the caller); it takes jobs
 * with queue_dest_take_job until d has none or its per-connection limit is reached. */
void smtpc_open(struct dest *d);
/* Wakes an idle connection of d to take the next job; returns 0 if there was none. */
int smtpc_wake_idle(struct dest *d);
/* Closes every connection; their jobs are not handed back (the queue is going away). */
void smtpc_shutdown(void);

/* A remote server's reply, read one line at a time (without CRLF) the way a connection reads
 * it: *reply collects the lines' texts joined by one space (about 8 KiB at most), *reply_code
 * the code of the lines so far, 0 before the first (the caller sets it to 0 and empties *reply
 * for a new reply, and when it drops a connection in the middle of one).
 * *text points at this line's text, inside line. Returns 1 when more lines follow, 0 when the
 * reply is complete, -1 when the line is no reply line or changes the code. Pure; any thread
 * (the connection uses it; so does fuzz/fuzz_reply.c). */
int smtpc_reply_add_line(struct strbuf *reply, int *reply_code, const char *line,
                         const char **text);

#endif
