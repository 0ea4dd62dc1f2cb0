/* advice.h - `outrelay dns-advice`: for every domain we hold DKIM keys for, what DNS must
 * publish for the configured egresses (DKIM TXT per key, SPF mechanisms covering every egress,
 * a DMARC record) compared with what is published now. Blocking DNS (dns_sync); CLI only. */
#ifndef OUTRELAY_ADVICE_H
#define OUTRELAY_ADVICE_H

#include "common/strbuf.h"
#include "config/config.h"
#include "sign/dkim.h"

/* Returns the number of problems found (0 = DNS is ready for every egress). */
int advice_report(const struct config *cfg, const struct dkim_keystore *keys, struct strbuf *out);

#endif
