/* check_settings.c - the settings table of alignment: what to do with a message whose DMARC is
 * predicted to fail on the egress chosen for it. Constant data read by config_load()
 * (config/config_auth.c reads the per-domain rules and answers config_alignment_action()) and
 * `outrelay settings`; the values land in struct config. Any thread. */
#include <stddef.h>

#include "config/config.h"
#include "config/settings.h"

/* In the order of enum alignment_action. */
static const char *const alignment_actions[] = {"send", "reroute", "hold", "bounce", NULL};

static const struct setting alignment_items[] = {
    {.name = "default",
     .type = SETTING_ENUM,
     .offset = offsetof(struct config, alignment_default),
     .def = "send",
     .choices = alignment_actions,
     .what = "an alignment action",
     .help = "send delivers and flags it in the records; reroute uses another egress whose SPF "
             "passes (and DMARC with it), else sends and flags; hold keeps it in the queue "
             "(outrelay queue release ID sends it as is); bounce returns it to the sender with a "
             "DSN explaining the failure."},
    {.name = "domains",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "mapping of From: domain to action",
     .example = "{ example.com: reroute, payroll.example.com: hold }",
     .help = "A rule matches the From: domain and its subdomains; the most specific wins."},
};

const struct settings_table check_alignment_settings = {
    .section = "alignment",
    .help = "What to do when, before sending, DMARC is predicted to fail on the egress chosen. "
            "Policy files may hold alignment rules too.",
    .items = alignment_items,
    .n_items = SETTINGS_COUNT(alignment_items)};
