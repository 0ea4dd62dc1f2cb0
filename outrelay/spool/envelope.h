/* envelope.h - the envelope moved to mail/envelope.h (it is pure data every stage reads); this
 * name stays only until the delivery code includes the new path. Owns nothing. */
#ifndef OUTRELAY_SPOOL_ENVELOPE_H
#define OUTRELAY_SPOOL_ENVELOPE_H

#include "mail/envelope.h"

#endif
