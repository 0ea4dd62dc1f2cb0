/* cluster_settings.c - the settings table of the cluster section: where Redis is, how to reach
 * it (AUTH, SELECT, TLS), this instance's name and the keys' prefix. Constant data read by
 * config_load() and `outrelay settings`; the values land in struct config (config/config.h),
 * which cluster.c reads at start. Any thread. */
#include <stddef.h>

#include "config/config.h"
#include "config/settings.h"

#define AT(field) offsetof(struct config, field)

static const struct setting cluster_items[] = {
    {.name = "redis",
     .type = SETTING_STRING,
     .offset = AT(cluster_redis),
     .kind = "host:port or unix:/path",
     .default_text = "none: this instance shares nothing",
     .example = "127.0.0.1:6379",
     .help = "The Redis server (7.0 or later) the instances share their state through. Without "
             "it, or while it cannot be reached, each instance keeps its own state; mail always "
             "flows."},
    {.name = "instance",
     .type = SETTING_STRING,
     .offset = AT(cluster_instance),
     .kind = "name",
     .default_text = "hostname",
     .example = "relay-a",
     .help = "This instance's name, unique among the instances sharing the Redis server; it "
             "holds the delivery claims and the heartbeat key."},
    {.name = "user",
     .type = SETTING_STRING,
     .offset = AT(cluster_user),
     .kind = "ACL user",
     .default_text = "none",
     .example = "outrelay",
     .help = "AUTH with this user and the password (Redis ACL); without it, AUTH with the "
             "password only."},
    {.name = "password",
     .type = SETTING_STRING,
     .offset = AT(cluster_password),
     .default_text = "none: no AUTH",
     .example = "secret",
     .help = "the password for AUTH after connecting"},
    {.name = "db",
     .type = SETTING_INT,
     .offset = AT(cluster_db),
     .def = "0",
     .min = 0,
     .max = 65535,
     .help = "the database number (SELECT)"},
    {.name = "tls",
     .type = SETTING_BOOL,
     .offset = AT(cluster_tls),
     .def = "false",
     .help = "talk TLS to Redis; its certificate is verified against tls_ca_file, or the "
             "system's store"},
    {.name = "tls_ca_file",
     .type = SETTING_FILE,
     .offset = AT(cluster_tls_ca_file),
     .default_text = "the system's store",
     .example = "/etc/outrelay/redis-ca.pem",
     .help = "the CA certificates Redis's certificate must chain to"},
    {.name = "tls_cert",
     .type = SETTING_FILE,
     .offset = AT(cluster_tls_cert),
     .default_text = "none",
     .example = "/etc/outrelay/redis-client.pem",
     .help = "a client certificate chain presented to Redis, with tls_key"},
    {.name = "tls_key",
     .type = SETTING_FILE,
     .offset = AT(cluster_tls_key),
     .default_text = "none",
     .example = "/etc/outrelay/redis-client.key",
     .help = "the private key of tls_cert"},
    {.name = "timeout",
     .type = SETTING_DURATION,
     .offset = AT(cluster_timeout),
     .def = "2s",
     .help = "to connect, and for each answer; past it Redis counts as down until a new "
             "connection succeeds"},
    {.name = "key_prefix",
     .type = SETTING_STRING,
     .offset = AT(cluster_key_prefix),
     .def = "outrelay",
     .help = "every key starts with this and a colon; instances share state only when they "
             "use the same prefix"},
    {.name = "claim_ttl",
     .type = SETTING_DURATION,
     .offset = AT(cluster_claim_ttl),
     .def = "5m",
     .help = "how long a claim to deliver a Message-ID to a recipient lives without being "
             "extended: if its instance dies mid-delivery, another copy may go after this"},
};

const struct settings_table cluster_settings = {
    .section = "cluster",
    .help = "Several outrelay instances share their duplicate window through one Redis server. "
            "When Redis cannot be reached, every instance keeps relaying on its own state and "
            "writes what it delivered meanwhile to Redis when it returns.",
    .items = cluster_items,
    .n_items = SETTINGS_COUNT(cluster_items)};
