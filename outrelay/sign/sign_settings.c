/* sign_settings.c - the settings table of DKIM signing (dkim:): which headers are signed and
 * which are oversigned. Constant data read by config_load() (config/config_auth.c checks that
 * from is signed) and `outrelay settings`; the lists land in struct config and reach
 * dkim_setup() through main.c. The keys themselves live under `keys`. Any thread. */
#include <stddef.h>

#include "config/config.h"
#include "config/settings.h"

#define AT(field) offsetof(struct config, field)

static const struct setting dkim_items[] = {
    {.name = "headers",
     .type = SETTING_STRING_LIST,
     .offset = AT(dkim_headers),
     .count_offset = AT(n_dkim_headers),
     .kind = "list of header names",
     .def = "[from, reply-to, subject, date, to, cc, message-id, in-reply-to, references, "
            "mime-version, content-type, content-transfer-encoding, list-id, list-unsubscribe, "
            "list-unsubscribe-post]",
     .help = "The headers signed; from must be one of them (RFC 6376 5.4)."},
    {.name = "oversign",
     .type = SETTING_STRING_LIST,
     .offset = AT(dkim_oversign),
     .count_offset = AT(n_dkim_oversign),
     .kind = "list of header names",
     .def = "[from]",
     .help = "signed once more than they occur, so nobody can add another one later"},
};

const struct settings_table sign_dkim_settings = {
    .section = "dkim",
    .help = "DKIM signing. Keys live under keys (make them with outrelay keygen DOMAIN SELECTOR, "
            "then publish the record it prints; outrelay dns-advice checks what DNS holds). Every "
            "message is signed with the keys of its From: domain, or of its organisational "
            "domain; RSA and Ed25519 together when both exist. Upstream signatures are kept "
            "unless an origin says dkim_upstream: strip.",
    .items = dkim_items,
    .n_items = SETTINGS_COUNT(dkim_items)};
