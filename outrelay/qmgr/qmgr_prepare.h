/* qmgr_prepare.h - INTERNAL to qmgr/: the prepare stages (sign, check) and the alignment decision
 * (qmgr_prepare.c). Loop thread only. */
#ifndef OUTRELAY_QMGR_PREPARE_H
#define OUTRELAY_QMGR_PREPARE_H

#include "qmgr/qmgr_message.h"

const struct qmgr_stage *qmgr_prepare_stages(size_t *n);
/* The alignment decision for recipients routed to egress e: returns the egress to use (e, or
 * another one whose DMARC would pass), or NULL when the message was held (*stop set) or the
 * recipient bounced. provider (the recipient domain's) goes with the prediction to the route
 * stage's autopilot. */
const struct egress_conf *qmgr_apply_alignment(struct message *m, size_t rcpt, const char *provider,
                                               const struct egress_conf *e, int *stop);

#endif
