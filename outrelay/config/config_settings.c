/* config_settings.c - the settings tables of the keys no single stage owns: the top-level
 * names and paths, log, dns, records and metrics. Constant data read by config_load() and
 * `outrelay settings`; the values land in struct config (config.h). Any thread. */
#include <stddef.h>
#include <stdlib.h>

#include "common/util.h"
#include "config/config.h"
#include "config/settings.h"

#define AT(field) offsetof(struct config, field)

static const struct setting general[] = {
    {.name = "hostname",
     .type = SETTING_HOSTNAME,
     .offset = AT(hostname),
     .default_text = "this machine's name",
     .example = "relay.example.com",
     .help = "The name outrelay gives in EHLO, in its Received: headers, and as the reporting "
             "MTA of its bounces; check warns when it has no dot."},
    {.name = "user",
     .type = SETTING_STRING,
     .offset = AT(user),
     .kind = "account name",
     .default_text = "keep the user that started outrelay",
     .example = "outrelay",
     .help = "The account outrelay switches to once its listening sockets are open and its DKIM "
             "keys are read. It must exist."},
    {.name = "spool",
     .type = SETTING_STRING,
     .offset = AT(spool),
     .kind = "path",
     .def = "./var/spool",
     .help = "the durable queue: accepted mail lives here until delivered"},
    {.name = "state",
     .type = SETTING_STRING,
     .offset = AT(state),
     .kind = "path",
     .def = "./var/state",
     .help = "SQLite delivery records, routing counters, ramp overrides, control socket"},
    {.name = "keys",
     .type = SETTING_STRING,
     .offset = AT(keys),
     .kind = "path",
     .def = "./keys",
     .help = "DKIM keys: KEYS/DOMAIN/SELECTOR.rsa.pem or .ed25519.pem (outrelay keygen)"},
    {.name = "control_socket",
     .type = SETTING_STRING,
     .offset = AT(control_socket),
     .kind = "path",
     .default_text = "STATE/control.sock",
     .example = "./var/state/control.sock",
     .help = "the local socket outrelay queue and outrelay ramp talk to"},
    {.name = "deployment_id",
     .type = SETTING_HOSTNAME,
     .offset = AT(deployment_id),
     .default_text = "hostname",
     .example = "relay-eu-1.example.com",
     .help = "Stamped into every relayed message in an X-Outrelay-Loop header; a message that "
             "already carries this deployment's stamp is refused with 554 5.4.6, so a loop "
             "between the platforms and outrelay ends at once."},
};

static const char *const log_outputs[] = {"stderr", "syslog", "journald", "json", NULL};
static const char *const log_levels[] = {"debug", "info", "warning", "error", NULL};

static const struct setting log_items[] = {
    {.name = "to",
     .type = SETTING_ENUM,
     .offset = AT(log_to),
     .def = "stderr",
     .choices = log_outputs,
     .what = "a log output",
     .help = "Where log lines go, each naming its process and stage as outrelay/STAGE[PID]: "
             "stderr writes text lines with a UTC timestamp (none when stderr is the journal: "
             "JOURNAL_STREAM); syslog uses syslog(3), facility mail; journald writes to the "
             "journal's native socket (stderr when it is absent); json writes one "
             "{ts, level, stage, pid, msg} object per line on stderr."},
    {.name = "level",
     .type = SETTING_ENUM,
     .offset = AT(log_level),
     .def = "info",
     .choices = log_levels,
     .what = "a log level",
     .help = "the least important lines still written"},
    {.name = "syslog",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "boolean",
     .default_text = "false",
     .help = "The older spelling of to: syslog."},
};

static const struct setting dns_items[] = {
    {.name = "servers",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .def = "[]",
     .kind = "list of IP or IP:PORT",
     .default_text = "[], the system resolver of /etc/resolv.conf",
     .help = "The recursive resolvers outrelay asks (MX, A/AAAA, SPF, DKIM, DMARC records); "
             "IP@PORT is accepted too. Empty: the system resolver."},
    {.name = "trust_anchor",
     .type = SETTING_FILE,
     .offset = AT(dns_trust_anchor),
     .default_text = "none, no DNSSEC validation",
     .example = "/usr/share/dns/root.ds",
     .help = "DNSSEC trust anchors: DS or DNSKEY records in zone-file format (RFC 4034), for "
             "the root or any zone. With it every answer is validated (RFC 4035): a bogus one "
             "is a temporary failure, never data; the later DANE checks (RFC 7672) need "
             "answers that validated as secure. The resolvers of dns.servers must pass DNSSEC "
             "records through."},
};

static const struct setting records_items[] = {
    {.name = "retention",
     .type = SETTING_DURATION,
     .offset = AT(records_retention),
     .def = "400d",
     .help = "How long every event stays in STATE/records.db; older events are deleted at start "
             "and then hourly."},
};

static int parse_listen_address(const char *text, void *base)
{
    struct config *cfg = base;
    struct sockaddr_any addr;
    if (util_parse_hostport(text, -1, &addr) < 0) return -1;
    free(cfg->metrics_listen);
    cfg->metrics_listen = xstrdup(text);
    return 0;
}

static const struct setting metrics_items[] = {
    {.name = "listen",
     .type = SETTING_CUSTOM,
     .offset = AT(metrics_listen),
     .parse = parse_listen_address,
     .what = "an address:port (e.g. 127.0.0.1:9464)",
     .kind = "address",
     .default_text = "none, no metrics",
     .example = "\"127.0.0.1:9464\"",
     .help = "Serves Prometheus metrics on http://ADDRESS/metrics; contrib/grafana has a "
             "dashboard for them."},
};

const struct settings_table config_general_settings = {
    .section = "", .items = general, .n_items = SETTINGS_COUNT(general)};
const struct settings_table config_log_settings = {
    .section = "log",
    .help = "Where and how much outrelay logs: one line per event, queue ID first.",
    .items = log_items,
    .n_items = SETTINGS_COUNT(log_items)};
const struct settings_table config_dns_settings = {.section = "dns",
                                                   .help = "How outrelay resolves names.",
                                                   .items = dns_items,
                                                   .n_items = SETTINGS_COUNT(dns_items)};
const struct settings_table config_records_settings = {
    .section = "records",
    .help = "The records database, which reports, continuity proofs and duplicate suppression "
            "read.",
    .items = records_items,
    .n_items = SETTINGS_COUNT(records_items)};
const struct settings_table config_metrics_settings = {
    .section = "metrics",
    .help = "The Prometheus endpoint (off unless set).",
    .items = metrics_items,
    .n_items = SETTINGS_COUNT(metrics_items)};
