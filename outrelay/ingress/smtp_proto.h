/* smtp_proto.h - the SMTP syntax moved to mail/smtp_proto.h; this name stays only until the
 * delivery code includes the new path. Owns nothing. */
#ifndef OUTRELAY_INGRESS_SMTP_PROTO_H
#define OUTRELAY_INGRESS_SMTP_PROTO_H

#include "mail/smtp_proto.h"

#endif
