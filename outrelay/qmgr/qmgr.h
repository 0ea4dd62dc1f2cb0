/* qmgr.h - the queue manager: every message in the spool with its per-recipient state. A message
 * enters from ingress (qmgr_accept) or recovery, goes through the prepare stages (sign, check),
 * then its due recipients are routed and handed to smtpc as jobs (smtpc/smtpc_job.h); outcomes
 * become spool marks first, then records, DSNs and retries. Called by main (life cycle), ingress
 * (intake) and control (operator commands, counts). Loop thread only. */
#ifndef OUTRELAY_QMGR_H
#define OUTRELAY_QMGR_H

#include <event2/event.h>
#include <stddef.h>

#include "common/strbuf.h"
#include "config/config.h"
#include "mail/envelope.h"
#include "spool/spool.h"

int qmgr_init(struct event_base *base, const struct config *cfg, struct spool *sp, char *err,
              size_t errlen);
/* SIGHUP: the queue, its destinations and the SMTP client use cfg from now on (retry, lifetime,
 * egresses, alignment actions, dedup window, providers). Destinations and queued recipients are
 * matched to the new egresses by name; a destination whose egress was removed keeps the old one
 * for the jobs already waiting there (route_decide sends nothing new to it). Returns -1 with err
 * and changes nothing when the new egresses' TLS files cannot be loaded. cfg and every config
 * used before must stay alive until qmgr_shutdown(): messages, jobs and connections hold
 * pointers into them. Loop thread only. */
int qmgr_reload(const struct config *cfg, char *err, size_t errlen);
/* A message outrelay makes itself (TLS-RPT reports, tlsrpt/): gives env a queue id, writes env
 * (taken) and data (copied, CRLF lines) to the spool; once durable the message enters the queue
 * like accepted mail (signed, routed, delivered, recorded). done (may be NULL) is called with
 * status 0 and the queue id once it is durable, -1 and err when it was not stored. Loop thread,
 * after qmgr_init. */
void qmgr_inject(struct envelope *env, const char *data, size_t len,
                 void (*done)(void *arg, int status, const char *queue_id, const char *err),
                 void *arg);
/* Rebuilds the queue from the spool, in the background: reads the spool now (returns the number
 * of messages found, or -1 on an unreadable spool; mail may be accepted once it returns), then
 * brings the messages back into the queue on the event loop a slice at a time, each scheduled as
 * it comes (the prepare window keeps new mail moving), and calls done(arg, recovered, finished)
 * after the last; finished is 0 when the spool was closed first. retry (may be NULL) is asked
 * for every message kept: it fills env->n_rcpts entries (zeroed before) with each open
 * recipient's attempts so far and the time its next try was due (main: from records.db); a
 * recipient left at zero is due now, as new mail. */
struct records_retry;
typedef void (*qmgr_retry_fn)(void *arg, const struct envelope *env, struct records_retry *retry);
int qmgr_recover(void (*done)(void *arg, int recovered, int finished), qmgr_retry_fn retry,
                 void *arg, char *err, size_t errlen);
/* A message that is now durable. Takes ownership of env; data (may be NULL) is moved out
 * and kept for the first delivery attempt. */
void qmgr_accept(struct envelope *env, const struct spool_loc *loc, struct strbuf *data);
/* Operator commands: "list", "show ID", "hold ID", "release ID", "flush", "delete ID".
 * Writes the answer to out; returns 0 / -1 (then out holds the reason). */
int qmgr_control(const char *command, struct strbuf *out);
/* Number of messages in the queue. */
size_t qmgr_size(void);
/* Messages by state: being worked on (signing, checking, delivering, or due), waiting for a
 * retry, held by the operator or a policy. */
void qmgr_stats(size_t *active, size_t *deferred, size_t *held);
/* Stops scheduling and closes outbound connections (their messages stay in the spool); the
 * queue still takes late spool callbacks until qmgr_shutdown(). */
void qmgr_stop(void);
/* Frees everything. */
void qmgr_shutdown(void);

#endif
