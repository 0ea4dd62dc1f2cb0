/* sts_settings.c - the settings table of mta_sts: (MTA-STS, RFC 8461, for direct delivery).
 * Constant data read by config_load() (config/config.c) and `outrelay settings`; the values
 * land in struct config (mta_sts_*) and are used by sts.c and the TLS policy (smtpc/). Any
 * thread. */
#include <stddef.h>

#include "config/config.h"
#include "config/settings.h"

#define AT(field) offsetof(struct config, field)

static const struct setting sts_items[] = {
    {.name = "enabled",
     .type = SETTING_BOOL,
     .offset = AT(mta_sts_enabled),
     .def = "true",
     .help = "Honour the MTA-STS policies recipient domains publish (RFC 8461): the "
             "_mta-sts TXT record, the policy fetched from https://mta-sts.DOMAIN/.well-known/"
             "mta-sts.txt and cached for its max_age in STATE/mta-sts/. Under mode enforce only "
             "the MX hosts the policy lists are used, over TLS with a certificate for the MX "
             "name that verifies; otherwise the mail stays queued (4.7.5). Under testing a "
             "failure is recorded and the mail goes as without a policy. DANE wins over "
             "MTA-STS, MTA-STS over tls_policy:."},
    {.name = "ca_file",
     .type = SETTING_FILE,
     .offset = AT(mta_sts_ca_file),
     .default_text = "none, the system's trusted CAs",
     .example = "/etc/ssl/certs/ca-certificates.crt",
     .help = "The CAs (PEM) that the policy host's and the MX hosts' certificates must chain "
             "to, instead of the system's store."},
    {.name = "max_policy_bytes",
     .type = SETTING_SIZE,
     .offset = AT(mta_sts_max_policy_bytes),
     .def = "64K",
     .help = "A policy file larger than this is not read (a fetch error)."},
    {.name = "fetch_timeout",
     .type = SETTING_DURATION,
     .offset = AT(mta_sts_fetch_timeout),
     .def = "10s",
     .help = "How long fetching one policy may take, connection included. Fetches run on the "
             "worker pool, never on the event loop."},
    {.name = "port",
     .type = SETTING_PORT,
     .offset = AT(mta_sts_port),
     .def = "443",
     .help = "The HTTPS port policies are fetched from: 443, as RFC 8461 says; another only "
             "for tests."},
};

const struct settings_table sts_settings = {
    .section = "mta_sts",
    .help = "MTA-STS (RFC 8461): the TLS policies recipient domains publish over HTTPS.",
    .items = sts_items,
    .n_items = SETTINGS_COUNT(sts_items)};
