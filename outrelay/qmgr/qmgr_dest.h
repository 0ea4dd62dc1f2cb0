/* qmgr_dest.h - INTERNAL to qmgr/: destinations and jobs, the queue's side of the SMTP client
 * (qmgr_dest.c). Loop thread only. */
#ifndef OUTRELAY_QMGR_DEST_H
#define OUTRELAY_QMGR_DEST_H

#include "qmgr/qmgr_message.h"
#include "smtpc/smtpc.h"

/* Queues a job for recipients idx[0..n) of m to the destination of egress e and domain. */
void qmgr_dest_enqueue(struct message *m, const struct egress_conf *e, const char *domain,
                       const char *provider, const size_t *idx, size_t n);
/* A job for recipients idx[0..n) of m to d, not yet queued there: the recipients are in flight
 * and m counts the job; job_done (qmgr_dest_owner) frees it. */
struct job *qmgr_job_new(struct dest *d, struct message *m, const size_t *idx, size_t n);
void qmgr_dests_reload(struct qmgr *q);
void qmgr_dests_free(struct qmgr *q);

/* The callbacks through which the SMTP client hands jobs back (for smtpc_init). */
const struct smtpc_owner *qmgr_dest_owner(void);

#endif
