/* qmgr_route.h - INTERNAL to qmgr/: the delivery step of scheduling (expiry, dedup, provider,
 * route, alignment; qmgr_route.c), which the top hands to the core as its deliver function. */
#ifndef OUTRELAY_QMGR_ROUTE_H
#define OUTRELAY_QMGR_ROUTE_H

#include "qmgr/qmgr_message.h"

void qmgr_route_due(struct message *m, int64_t now);

#endif
