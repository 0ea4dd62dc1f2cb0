/* qmgr_compact.h - INTERNAL to qmgr/: moving messages out of the oldest spool segment
 * (qmgr_compact.c), run from the top's slow timer. Loop thread only. */
#ifndef OUTRELAY_QMGR_COMPACT_H
#define OUTRELAY_QMGR_COMPACT_H

#include "qmgr/qmgr_message.h"

void qmgr_compact(struct qmgr *q, int64_t now);

#endif
