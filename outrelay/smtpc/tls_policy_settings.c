/* tls_policy_settings.c - the settings table of one entry of tls_policy: (recipient domain ->
 * level and names), the administrator's TLS policy per destination domain. Constant data read
 * by config_load() (config/config.c reads the entries) and `outrelay settings`; the values land
 * in struct tls_policy_rule and are applied by tls_policy_for() (tls_policy.c). Any thread. */
#include <stddef.h>

#include "config/config.h"
#include "config/settings.h"

#define AT(field) offsetof(struct tls_policy_rule, field)

/* In the order of enum tls_policy_rule_level. */
static const char *const tls_policy_levels[] = {"none", "may", "encrypt", "verify", NULL};

static const struct setting tls_policy_items[] = {
    {.name = "level",
     .type = SETTING_ENUM,
     .offset = AT(level),
     .choices = tls_policy_levels,
     .what = "a TLS policy level",
     .kind = "none | may | encrypt | verify",
     .default_text = "required",
     .help = "What connections to the domain's MX hosts do: none never sends STARTTLS; may uses it "
             "when offered and sends in plaintext when "
             "it fails; encrypt requires TLS without checking the certificate; verify requires "
             "TLS and a certificate that verifies and carries one of names. Under encrypt and "
             "verify a failure keeps the mail queued, never sent in plaintext. \"DOMAIN: "
             "LEVEL\" is short for { level: LEVEL }."},
    {.name = "names",
     .type = SETTING_STRING_LIST,
     .offset = AT(names),
     .count_offset = AT(n_names),
     .kind = "list of host names",
     .default_text = "the MX host name",
     .example = "[mx1.example.org, mx2.example.org]",
     .help = "verify only: the names the server's certificate may carry (at most 4)."},
};

const struct settings_table smtpc_tls_policy_settings = {
    .section = "tls_policy",
    .help = "The TLS policy per recipient domain, over the egress's tls setting: a mapping of "
            "domains (example.com exactly, .example.org for its subdomains; the most specific "
            "wins) to a level, e.g. { example.com: encrypt, .example.org: { level: verify, "
            "names: [mx.example.org] } }. Direct delivery only; a smarthost keeps its egress's "
            "settings.",
    .items = tls_policy_items,
    .n_items = SETTINGS_COUNT(tls_policy_items),
    .entries = 1};
