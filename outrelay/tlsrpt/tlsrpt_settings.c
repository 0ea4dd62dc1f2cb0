/* tlsrpt_settings.c - the settings table of TLS reporting (tls_reports:, RFC 8460): whether the
 * daily aggregate reports are sent, who they say they are from, and when. Constant data read by
 * config_load() and `outrelay settings`; the values land in struct config, which tlsrpt_send.c
 * reads on the loop thread. Any thread. */
#include <stddef.h>

#include "config/config.h"
#include "config/settings.h"

#define AT(field) offsetof(struct config, field)

static const struct setting tlsrpt_items[] = {
    {.name = "enabled",
     .type = SETTING_BOOL,
     .offset = AT(tlsrpt_enabled),
     .def = "false",
     .example = "true",
     .help = "Once per UTC day, for every policy domain that outrelay had TLS sessions with and "
             "that publishes a _smtp._tls TXT record (RFC 8460 section 3), the previous day's "
             "aggregate report (RFC 8460 section 4) is gzip'd and mailed through the queue to "
             "its rua mailto: addresses, DKIM-signed like all mail; what was sent is kept in "
             "STATE/tlsrpt.db so a restart never sends a day twice."},
    {.name = "organization",
     .type = SETTING_STRING,
     .offset = AT(tlsrpt_organization),
     .default_text = "the hostname",
     .example = "\"Example Inc.\"",
     .help = "the organization-name field of every report"},
    {.name = "contact",
     .type = SETTING_STRING,
     .offset = AT(tlsrpt_contact),
     .default_text = "the from address",
     .example = "tls-reports@example.com",
     .help = "the contact-info field of every report"},
    {.name = "submitter",
     .type = SETTING_HOSTNAME,
     .offset = AT(tlsrpt_submitter),
     .default_text = "the hostname",
     .example = "relay.example.com",
     .help = "the Submitter named in the subject and the TLS-Report-Submitter header (RFC 8460 "
             "section 5.3), and the right part of the report-id"},
    {.name = "from",
     .type = SETTING_STRING,
     .offset = AT(tlsrpt_from),
     .default_text = "tlsrpt-noreply@HOSTNAME",
     .example = "tlsrpt-noreply@example.com",
     .help = "From: and envelope sender of the report mail; its domain needs a DKIM key (keys:) "
             "since every report is signed"},
    {.name = "hour",
     .type = SETTING_INT,
     .offset = AT(tlsrpt_hour),
     .def = "1",
     .min = 0,
     .max = 23,
     .kind = "UTC hour",
     .help = "the reports of a day are sent once this UTC hour of the next day has begun"},
};

const struct settings_table tlsrpt_settings = {
    .section = "tls_reports",
    .help = "SMTP TLS reporting (RFC 8460): daily aggregate reports to receiving domains.",
    .items = tlsrpt_items,
    .n_items = SETTINGS_COUNT(tlsrpt_items)};
