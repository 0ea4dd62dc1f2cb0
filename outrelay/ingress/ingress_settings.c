/* ingress_settings.c - the settings tables of the receiving side: listen (one table per
 * listener), tls (the server certificate), limits (SMTP session limits), auth, origins (one
 * table per origin) and platforms (one per platform). Constant data read by config_load() and
 * `outrelay settings`; the values land in struct config, struct listen_conf, struct
 * origin_conf and struct platform_conf (config/config.h), which smtpd reads. Any thread. */
#include <stddef.h>

#include "config/config.h"
#include "config/settings.h"

#define AT(field) offsetof(struct config, field)

static const char *const listen_tls_modes[] = {"none", "optional", "required", "implicit", NULL};

static const struct setting listen_items[] = {
    {.name = "address",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "address",
     .default_text = "required",
     .help = "Where to listen, as IP:PORT or [IPv6]:PORT."},
    {.name = "tls",
     .type = SETTING_ENUM,
     .offset = offsetof(struct listen_conf, tls),
     .def = "optional",
     .choices = listen_tls_modes,
     .what = "a listener TLS mode",
     .help = "optional offers STARTTLS when tls.cert and tls.key are set; required refuses MAIL "
             "FROM before STARTTLS; implicit speaks TLS from the first byte (port 465 style). "
             "required and implicit need a certificate."},
};

static const struct setting tls_items[] = {
    {.name = "cert",
     .type = SETTING_FILE,
     .offset = AT(tls_cert),
     .default_text = "none",
     .example = "/etc/outrelay/tls/cert.pem",
     .help = "The server certificate chain for incoming TLS (PEM); with key, both or neither."},
    {.name = "key",
     .type = SETTING_FILE,
     .offset = AT(tls_key),
     .default_text = "none",
     .example = "/etc/outrelay/tls/key.pem",
     .help = "Its private key (PEM)."},
};

/* "300/min", "20/10s", or 0 for no limit. */
static int parse_connection_rate(const char *text, void *base)
{
    struct config *cfg = base;
    if (text[0] == '0' && !text[1]) {
        cfg->connection_rate_per_client = 0;
        return 0;
    }
    return config_parse_rate(text, &cfg->connection_rate_per_client, &cfg->connection_rate_period);
}

static const struct setting limits_items[] = {
    {.name = "max_message_size",
     .type = SETTING_SIZE,
     .offset = AT(max_message_size),
     .def = "35M",
     .help = "Larger messages are refused (also announced in the SIZE extension)."},
    {.name = "max_recipients",
     .type = SETTING_INT,
     .offset = AT(max_recipients),
     .def = "1000",
     .min = 1,
     .max = 1000000,
     .help = "Recipients per message."},
    {.name = "max_line_length",
     .type = SETTING_INT,
     .offset = AT(max_line_length),
     .def = "4096",
     .min = 1000,
     .max = 1048576,
     .kind = "bytes including CRLF",
     .help = "The longest command or DATA line accepted; RFC 5321 requires at least 1000."},
    {.name = "command_timeout",
     .type = SETTING_DURATION,
     .offset = AT(command_timeout_in),
     .def = "5m",
     .help = "How long a client may take to send a command: idle between commands, and from "
             "the first byte of a command line, or of a TLS handshake, to its end."},
    {.name = "data_timeout",
     .type = SETTING_DURATION,
     .offset = AT(data_timeout),
     .def = "10m",
     .help = "How long a client may be silent during DATA."},
    {.name = "max_received_headers",
     .type = SETTING_INT,
     .offset = AT(max_received_headers),
     .def = "50",
     .min = 1,
     .max = 10000,
     .help = "A message with more Received: headers is a mail loop and is refused."},
    {.name = "max_connections",
     .type = SETTING_INT,
     .offset = AT(max_connections_in),
     .def = "500",
     .min = 1,
     .max = 1000000,
     .help = "Every open SMTP session, origins included."},
    {.name = "reserved_for_origins",
     .type = SETTING_INT,
     .offset = AT(reserved_for_origins),
     .min = 0,
     .max = 1000000,
     .default_text = "a fifth of max_connections",
     .example = "100",
     .help = "Connections only clients inside an origin's networks may use, so strangers holding "
             "idle connections cannot lock the platforms out. Less than max_connections."},
    {.name = "max_connections_per_client",
     .type = SETTING_INT,
     .offset = AT(max_connections_per_client),
     .def = "50",
     .min = 0,
     .max = 1000000,
     .kind = "number, 0 = no limit",
     .help = "Concurrent connections from one address outside every origin's networks (after "
             "Postfix's anvil: origins by network are exempt, as Postfix exempts mynetworks)."},
    {.name = "max_connection_rate_per_client",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .parse = parse_connection_rate,
     .def = "300/min",
     .what = "a rate (connections per period, e.g. 300/min, 20/10s) or 0",
     .kind = "rate or 0",
     .help = "Connection attempts from one such address per period, refused ones included; over "
             "either limit a client gets 421 4.7.0 and is disconnected."},
    {.name = "data_deadline",
     .type = SETTING_DURATION,
     .offset = AT(data_deadline),
     .def = "10m",
     .help = "The whole DATA phase, however slowly the bytes trickle in (data_timeout is per "
             "read); past it the client gets 421 4.4.2 and nothing is stored."},
};

static const struct setting auth_items[] = {
    {.name = "users_file",
     .type = SETTING_FILE,
     .offset = AT(users_file),
     .default_text = "none",
     .example = "/etc/outrelay/users",
     .help = "The passwords of clients that authenticate with SMTP AUTH (offered only after "
             "TLS): one name:hash line per user, where hash is a crypt(3) hash such as openssl "
             "passwd -6 prints; lines starting with # are comments."},
};

const struct settings_table ingress_listen_settings = {
    .section = "listen",
    .help = "Where the platforms hand mail to outrelay: a list of { address, tls } entries, one "
            "listening socket each. Default: one entry, { address: \"127.0.0.1:2525\", tls: "
            "optional }.",
    .items = listen_items,
    .n_items = SETTINGS_COUNT(listen_items),
    .entries = 1};
const struct settings_table ingress_tls_settings = {
    .section = "tls",
    .help = "The server certificate for incoming STARTTLS.",
    .items = tls_items,
    .n_items = SETTINGS_COUNT(tls_items)};
const struct settings_table ingress_limits_settings = {.section = "limits",
                                                       .help = "Limits on incoming SMTP sessions.",
                                                       .items = limits_items,
                                                       .n_items = SETTINGS_COUNT(limits_items)};
const struct settings_table ingress_auth_settings = {.section = "auth",
                                                     .help = "SMTP AUTH for clients.",
                                                     .items = auth_items,
                                                     .n_items = SETTINGS_COUNT(auth_items)};

#define ORIGIN(field) offsetof(struct origin_conf, field)

static const char *const upstream_dkim_modes[] = {"keep", "strip", NULL}; /* strip = 1 */

static const struct setting origin_items[] = {
    {.name = "networks",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "list of networks",
     .help = "Client addresses of this origin."},
    {.name = "users",
     .type = SETTING_STRING_LIST,
     .offset = ORIGIN(users),
     .count_offset = ORIGIN(n_users),
     .help = "AUTH users of this origin; each must be in auth.users_file."},
    {.name = "dkim_upstream",
     .type = SETTING_ENUM,
     .offset = ORIGIN(strip_upstream_dkim),
     .def = "keep",
     .choices = upstream_dkim_modes,
     .what = "an upstream DKIM mode",
     .help = "What to do with DKIM signatures the message arrives with."},
    {.name = "platforms",
     .type = SETTING_STRING_LIST,
     .offset = ORIGIN(platforms),
     .count_offset = ORIGIN(n_platforms),
     .kind = "list of platform names",
     .help = "Adds the outbound ranges of these platforms (from platforms or "
             "policies/platforms.yaml) to the networks. Such ranges are shared by every customer "
             "of the platform: check warns unless the origin is bound to the tenant with domains "
             "and tenant_id or dkim_required."},
    {.name = "certificate",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "{ names: list of host names, ca_file: readable file }",
     .help = "A TLS client certificate the client must present: one for one of names, chaining "
             "to the CAs in ca_file (default: the system store)."},
    {.name = "domains",
     .type = SETTING_STRING_LIST,
     .offset = ORIGIN(domains),
     .count_offset = ORIGIN(n_domains),
     .kind = "list of domain names",
     .help = "The envelope sender and the From: domain must be one of these (or below one); "
             "other mail is refused with 550 5.7.1."},
    {.name = "tenant_id",
     .type = SETTING_STRING,
     .offset = ORIGIN(tenant_id),
     .kind = "text",
     .help = "The X-MS-Exchange-CrossTenant-Id a message from Exchange Online must carry; needs "
             "domains."},
    {.name = "dkim_required",
     .type = SETTING_BOOL,
     .offset = ORIGIN(dkim_required),
     .def = "false",
     .help = "A message must carry a verifying DKIM signature by one of domains; needs domains."},
};

#define PLATFORM(field) offsetof(struct platform_conf, field)

static const struct setting platform_items[] = {
    {.name = "networks",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "list of networks",
     .default_text = "required",
     .help = "The platform's outbound ranges."},
    {.name = "source",
     .type = SETTING_STRING,
     .offset = PLATFORM(source),
     .kind = "text",
     .default_text = "required",
     .help = "Where the ranges come from, for the next reader."},
    {.name = "spf_include",
     .type = SETTING_HOSTNAME,
     .offset = PLATFORM(spf_include),
     .help = "What dns-advice suggests SPF should include for an egress inside those ranges."},
};

const struct settings_table ingress_origin_settings = {
    .section = "origins",
    .help = "Who may relay, and which platform each client is: a mapping of origin names to their "
            "settings. A client belongs to an origin when its address is in the origin's "
            "networks or platforms' ranges, when it authenticates as one of the origin's users, "
            "or when it presents the TLS client certificate the origin asks for. Anyone else may "
            "not relay. Default: one origin, local: { networks: [127.0.0.0/8, ::1/128] }.",
    .items = origin_items,
    .n_items = SETTINGS_COUNT(origin_items),
    .entries = 1};
const struct settings_table ingress_platform_settings = {
    .section = "platforms",
    .help = "Sending platforms by address (policies/platforms.yaml ships the common ones): a "
            "mapping of names to their settings.",
    .items = platform_items,
    .n_items = SETTINGS_COUNT(platform_items),
    .entries = 1};
