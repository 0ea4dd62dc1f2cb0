/* smtpc_settings.c - the settings table of one egress (egress: NAME: {...}): how the SMTP
 * client reaches the next hop, with which TLS and how many connections. Constant data read by
 * config_load() (which also applies the cross-checks between these keys) and `outrelay
 * settings`; the values land in struct egress_conf (config/config.h). Any thread. */
#include <stddef.h>

#include "config/config.h"
#include "config/settings.h"

#define AT(field) offsetof(struct egress_conf, field)

static const char *const egress_tls_modes[] = {"none", "optional", "required", NULL};

static const struct setting egress_items[] = {
    {.name = "type",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "direct | smarthost",
     .default_text = "required",
     .help = "direct looks up the MX hosts of each recipient domain; smarthost hands every "
             "message to host."},
    {.name = "source",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "list of local IP addresses",
     .help = "Outgoing connections are bound to these addresses; check makes sure each is one "
             "of this host."},
    {.name = "helo",
     .type = SETTING_HOSTNAME,
     .offset = AT(helo),
     .default_text = "hostname",
     .help = "The EHLO name of this egress."},
    {.name = "host",
     .type = SETTING_STRING,
     .offset = AT(host),
     .kind = "host name",
     .help = "The smarthost; smarthost only, and required there."},
    {.name = "port",
     .type = SETTING_PORT,
     .offset = AT(port),
     .def = "25",
     .help = "The smarthost's port; smarthost only (direct egresses use delivery.mx_port)."},
    {.name = "auth",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "{ user, password }",
     .help = "SMTP AUTH at the smarthost, both or neither."},
    {.name = "tls",
     .type = SETTING_ENUM,
     .offset = AT(tls),
     .def = "optional",
     .choices = egress_tls_modes,
     .what = "an egress TLS mode",
     .help = "required: no delivery without STARTTLS."},
    {.name = "tls_ca_file",
     .type = SETTING_FILE,
     .offset = AT(tls_ca_file),
     .help = "Verify the server's certificate against these CAs (turns on tls_verify)."},
    {.name = "tls_verify",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "boolean",
     .default_text = "false, true with tls_ca_file or tls_name",
     .help = "Verify the server's certificate (against the system store without tls_ca_file)."},
    {.name = "tls_cert",
     .type = SETTING_FILE,
     .offset = AT(tls_cert),
     .help = "Our client certificate, for instance for a certificate-based inbound connector; "
             "with tls_key, both or neither."},
    {.name = "tls_key",
     .type = SETTING_FILE,
     .offset = AT(tls_key),
     .help = "The client certificate's private key."},
    {.name = "tls_name",
     .type = SETTING_HOSTNAME,
     .offset = AT(tls_name),
     .default_text = "host, or the MX name",
     .help = "The name the server's certificate must carry (turns on tls_verify)."},
    {.name = "spf_ips",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "list of networks",
     .help = "Where this egress's mail leaves from when outrelay does not bind it (a "
             "smarthost), for the SPF prediction and outrelay dns-advice."},
    {.name = "max_connections",
     .type = SETTING_INT,
     .offset = AT(max_connections),
     .def = "10",
     .min = 1,
     .max = 100000,
     .help = "Concurrent connections per destination."},
    {.name = "max_messages_per_connection",
     .type = SETTING_INT,
     .offset = AT(max_messages_per_connection),
     .def = "100",
     .min = 1,
     .max = 1000000,
     .help = "Messages sent over one connection before it is closed."},
    {.name = "chunking",
     .type = SETTING_BOOL,
     .offset = AT(chunking),
     .def = "true",
     .help = "Send the message with BDAT (RFC 3030) when the server offers CHUNKING: no "
             "dot-stuffing, no scan for the end of data; false: always DATA."},
};

const struct settings_table smtpc_egress_settings = {
    .section = "egress",
    .help = "How mail leaves: a mapping of egress names to their settings. Default: one egress, "
            "legacy: { type: direct }.",
    .items = egress_items,
    .n_items = SETTINGS_COUNT(egress_items),
    .entries = 1};
