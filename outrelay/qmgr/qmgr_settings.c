/* qmgr_settings.c - the settings tables of the queue manager: delivery (retries, lifetime, and the
 * SMTP client's port and timeouts, which share the section) and dedup. Constant data read by
 * config_load() and `outrelay settings`; the values land in struct config (config/config.h),
 * which the queue and the SMTP client read. Any thread. */
#include <stddef.h>

#include "config/config.h"
#include "config/settings.h"

#define AT(field) offsetof(struct config, field)

static const struct setting delivery_items[] = {
    {.name = "mx_port",
     .type = SETTING_PORT,
     .offset = AT(mx_port),
     .def = "25",
     .help = "port of the recipients' MX hosts (tests use a high port)"},
    {.name = "retry",
     .type = SETTING_DURATION_LIST,
     .offset = AT(retry),
     .count_offset = AT(n_retry),
     .def = "[5m, 10m, 30m, 1h, 2h, 4h]",
     .help = "waits between attempts; the last one repeats"},
    {.name = "max_lifetime",
     .type = SETTING_DURATION,
     .offset = AT(max_lifetime),
     .def = "5d",
     .help = "give up and bounce after this long in the queue"},
    {.name = "delay_warning",
     .type = SETTING_DURATION,
     .offset = AT(delay_warning),
     .def = "4h",
     .zero_off = 1,
     .help = "once a message has waited this long with recipients not yet delivered, its sender "
             "gets one delay warning (RFC 3464 DSN, Action: delayed); 0 sends none"},
    {.name = "connect_timeout",
     .type = SETTING_DURATION,
     .offset = AT(connect_timeout),
     .def = "30s",
     .help = "to connect to the remote server"},
    {.name = "command_timeout",
     .type = SETTING_DURATION,
     .offset = AT(command_timeout),
     .def = "5m",
     .help = "per SMTP reply from the remote server"},
};

static const struct setting dedup_items[] = {
    {.name = "enabled",
     .type = SETTING_BOOL,
     .offset = AT(dedup_enabled),
     .def = "true",
     .help = "A Message-ID and recipient already delivered within the window is not sent again; "
             "it is recorded as a suppressed duplicate."},
    {.name = "window",
     .type = SETTING_DURATION,
     .offset = AT(dedup_window),
     .def = "24h",
     .help = "how long a delivery keeps its duplicates away"},
};

const struct settings_table qmgr_delivery_settings = {.section = "delivery",
                                                      .help =
                                                          "Retries and timeouts of outgoing SMTP.",
                                                      .items = delivery_items,
                                                      .n_items = SETTINGS_COUNT(delivery_items)};
const struct settings_table qmgr_dedup_settings = {
    .section = "dedup",
    .help = "The same message may reach outrelay from both platforms during the coexistence "
            "(journaling, forwarding).",
    .items = dedup_items,
    .n_items = SETTINGS_COUNT(dedup_items)};
