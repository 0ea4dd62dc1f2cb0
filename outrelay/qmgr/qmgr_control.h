/* qmgr_control.h - INTERNAL to qmgr/: operator commands and counts (qmgr_control.c), behind
 * qmgr_control() and qmgr_stats(). Loop thread only. */
#ifndef OUTRELAY_QMGR_CONTROL_H
#define OUTRELAY_QMGR_CONTROL_H

#include "common/strbuf.h"
#include "qmgr/qmgr_message.h"

int qmgr_control_run(struct qmgr *q, const char *command, struct strbuf *out);
void qmgr_count_states(struct qmgr *q, size_t *active, size_t *deferred, size_t *held);

#endif
