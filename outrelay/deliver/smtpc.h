/* smtpc.h - the SMTP client lives behind deliver/delivery.h (smtpc_init, smtpc_open,
 * smtpc_wake_idle, smtpc_shutdown); this header only exists to name the module. */
#ifndef OUTRELAY_SMTPC_H
#define OUTRELAY_SMTPC_H
#include "deliver/delivery.h"
#endif
