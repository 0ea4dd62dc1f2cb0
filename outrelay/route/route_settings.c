/* route_settings.c - the settings tables of routing: ramp (which egress, by what key, on what
 * schedule, with which pins; its route groups), caps per egress x provider, providers by MX
 * host and shaping rules. Constant data read by config_load() (config/config_route.c keeps the
 * cross-checks: egress and provider names, time order, rates) and `outrelay settings`; the values
 * land in struct config, struct cap_conf, struct provider_conf and struct shaping_rule. Any thread.
 */
#include <stddef.h>

#include "config/config.h"
#include "config/settings.h"

#define AT(field) offsetof(struct config, field)

static const struct setting ramp_items[] = {
    {.name = "from",
     .type = SETTING_STRING,
     .offset = AT(ramp.from),
     .kind = "egress name",
     .def = "legacy",
     .help = "The egress that carries mail before the migration; required when egress is set."},
    {.name = "to",
     .type = SETTING_STRING,
     .offset = AT(ramp.to),
     .kind = "egress name",
     .default_text = "none, so all mail uses from",
     .example = "cloud",
     .help = "The egress mail moves to."},
    {.name = "key",
     .type = SETTING_STRING_LIST,
     .offset = AT(ramp.key),
     .count_offset = AT(ramp.n_key),
     .kind = "list of from_domain, rcpt_domain, sender, rcpt, message_id",
     .def = "[from_domain, rcpt_domain]",
     .help = "The parts of a message that make its routing key."},
    {.name = "schedule",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "list of { at: time, percent: 0..100 }",
     .example = "[{ at: \"2026-12-01T00:00:00Z\", percent: 5 }, { at: \"2026-12-08T00:00:00Z\", "
                "percent: 100 }]",
     .help = "The share of to over time, in UTC, each step later than the one before."},
    {.name = "interpolate",
     .type = SETTING_BOOL,
     .offset = AT(ramp.interpolate),
     .def = "false",
     .help = "true: grow the share linearly between the steps instead of in steps."},
    {.name = "pins",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "{ origins, domains, providers }, each NAME: EGRESS or NAME: { egress, until }",
     .example = "{ origins: { zimbra: legacy }, providers: { microsoft-consumer: legacy } }",
     .help = "Fixed egresses for origins, recipient domains (and their subdomains) and providers, "
             "until a UTC time or for good; policy files may hold pins too."},
    {.name = "groups",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "list of { name, match: { origins, sender_domains, rcpt_domains }, egress: [names], "
             "schedule: [{ at: time, weights: { EGRESS: weight } }], interpolate, key, spill }",
     .default_text = "none: every message is in the default group (from, to and schedule above)",
     .example = "[{ name: subsidiary, match: { sender_domains: [.sub.example.com] }, egress: "
                "[legacy, cloud, google], schedule: [{ at: \"2026-12-01T00:00:00Z\", weights: { "
                "legacy: 80, cloud: 10, google: 10 } }] }]",
     .help =
         "Route groups, each a ramp of its own over any number of egresses; a message's "
         "recipient takes the first group whose match holds (every kind given must match: "
         "origin name, sender domain, which is the From: header's domain or else the "
         "envelope sender's, and recipient domain; example.com matches exactly, "
         ".example.com its subdomains), else the default group. A group's weights are "
         "relative (any non-negative numbers), steps at UTC times, straight lines between "
         "them with interpolate: true; before the first step all mail takes the group's first "
         "egress. Keys go to egresses by weighted rendezvous hashing, so raising one "
         "egress's weight only moves keys to it. spill lists the egresses to try when the "
         "choice is capped or suspended (default: the group's others, best score first). "
         "Pins apply before any group. With autopilot: { enabled: true } the group moves "
         "from one step to the next by itself, never before the next step's at and never "
         "sooner than step_after (default 1d) on a step, only while its gates hold over the "
         "last window (default 1h, at most 1d) of replies on the egresses the current step moved "
         "traffic to: at most max_deferral_rate percent of transactions answered 4xx (default 5: "
         "receivers defer a new IP more than that when they distrust it), no more than "
         "max_shaping shaping actions started (default 0: any suspension or throttle means "
         "the receiver already pushes back), at least min_replies replies (default 100: "
         "fewer cannot tell 5 % from 0 %), at least min_dmarc_pass percent of the messages "
         "checked for those egresses predicted to pass DMARC (default 98: a gaining egress "
         "whose SPF or DKIM does not align sends mail receivers quarantine or reject, and "
         "more traffic would only make that worse). A gate that fails holds the step; a shaping "
         "rule "
         "marked reputation (Microsoft's 4.7.650/651) starting, or more than "
         "max_bounce_rate percent answered 5xx (default 3: twice what a clean list bounces), "
         "is red and steps back one step. The operator's pause and set freeze it until "
         "resume. rua mismatches and queue age are not gates yet."},
    {.name = "autopilot",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "{ enabled, window, step_after, gates: { max_deferral_rate, max_shaping, "
             "min_replies, max_bounce_rate, min_dmarc_pass } }",
     .default_text = "{ enabled: false }",
     .example = "{ enabled: true, step_after: 2d, gates: { min_replies: 500 } }",
     .help = "The default group's autopilot, as a route group's (see groups): it moves from one "
             "schedule step's percent to the next, never before the step's at, and the gates "
             "watch to; interpolate is then ignored. Needs to and a schedule."},
};

#define GROUP(field) offsetof(struct route_group, field)

/* One entry of ramp.groups: read by config_route.c; described in the ramp table's groups. */
static const struct setting group_items[] = {
    {.name = "name", .type = SETTING_STRING, .offset = GROUP(name), .help = "The group's name."},
    {.name = "match",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .help = "{ origins, sender_domains, rcpt_domains }."},
    {.name = "egress",
     .type = SETTING_STRING_LIST,
     .offset = GROUP(egress),
     .count_offset = GROUP(n_egress),
     .help = "The group's egresses."},
    {.name = "schedule",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .help = "[{ at, weights: { EGRESS: weight } }]."},
    {.name = "interpolate",
     .type = SETTING_BOOL,
     .offset = GROUP(interpolate),
     .def = "false",
     .help = "Straight lines between the steps."},
    {.name = "key",
     .type = SETTING_STRING_LIST,
     .offset = GROUP(key),
     .count_offset = GROUP(n_key),
     .def = "[from_domain, rcpt_domain]",
     .help = "The routing key parts, as ramp.key."},
    {.name = "spill",
     .type = SETTING_STRING_LIST,
     .offset = GROUP(spill),
     .count_offset = GROUP(n_spill),
     .help = "The spill order."},
    {.name = "autopilot",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .help = "{ enabled, window, step_after, gates: { max_deferral_rate, max_shaping, "
             "min_replies, max_bounce_rate, min_dmarc_pass } }."},
};

#define PILOT(field) offsetof(struct autopilot_conf, field)

/* ramp.groups[].autopilot: read into struct autopilot_conf; described in the ramp table's
 * groups. */
static const struct setting autopilot_items[] = {
    {.name = "enabled", .type = SETTING_BOOL, .offset = PILOT(enabled), .def = "false"},
    {.name = "window", .type = SETTING_DURATION, .offset = PILOT(window), .def = "1h"},
    {.name = "step_after", .type = SETTING_DURATION, .offset = PILOT(step_after), .def = "1d"},
    {.name = "gates", .type = SETTING_CUSTOM, .offset = SETTING_NO_OFFSET},
};

static const struct setting gate_items[] = {
    {.name = "max_deferral_rate",
     .type = SETTING_INT,
     .offset = PILOT(max_deferral_rate),
     .def = "5",
     .min = 0,
     .max = 100},
    {.name = "max_shaping",
     .type = SETTING_INT,
     .offset = PILOT(max_shaping),
     .def = "0",
     .min = 0,
     .max = 100000},
    {.name = "min_replies",
     .type = SETTING_INT,
     .offset = PILOT(min_replies),
     .def = "100",
     .min = 0,
     .max = 100000000},
    {.name = "max_bounce_rate",
     .type = SETTING_INT,
     .offset = PILOT(max_bounce_rate),
     .def = "3",
     .min = 0,
     .max = 100},
    {.name = "min_dmarc_pass",
     .type = SETTING_INT,
     .offset = PILOT(min_dmarc_pass),
     .def = "98",
     .min = 0,
     .max = 100},
};

#define CAP(field) offsetof(struct cap_conf, field)
#define CAP_LIMIT(key, field, what)                                                                \
    {                                                                                              \
        .name = key, .type = SETTING_INT, .offset = CAP(field), .min = 1, .max = 100000000,        \
        .help = what                                                                               \
    }

static const struct setting cap_items[] = {
    {.name = "egress",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "egress name",
     .default_text = "required",
     .help = "The egress the limits apply to."},
    {.name = "provider",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "provider name or other",
     .default_text = "required",
     .help = "The provider the limits apply to; other stands for destinations no provider "
             "claims."},
    CAP_LIMIT("per_minute", per_minute, "Messages per UTC calendar minute."),
    CAP_LIMIT("per_hour", per_hour, "Messages per UTC calendar hour."),
    CAP_LIMIT("per_day", per_day, "Messages per UTC calendar day."),
    CAP_LIMIT("connections", connections, "Concurrent connections."),
    CAP_LIMIT("per_connection", per_connection, "Messages per connection."),
};

static const struct setting provider_items[] = {
    {.name = "mx_suffixes",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "list of host name suffixes",
     .default_text = "required",
     .help = "A recipient whose MX host ends in one of these belongs to the provider."},
    {.name = "source",
     .type = SETTING_STRING,
     .offset = offsetof(struct provider_conf, source),
     .kind = "text",
     .help = "Where the grouping comes from, for the next reader."},
};

#define RULE(field) offsetof(struct shaping_rule, field)

static const char *const shaping_actions[] = {"suspend", "throttle", "reroute", NULL};

static const struct setting shaping_items[] = {
    {.name = "name",
     .type = SETTING_STRING,
     .offset = RULE(name),
     .kind = "text, unique",
     .default_text = "required",
     .help = "How records and logs name the rule."},
    {.name = "match",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "{ code, enhanced, text }",
     .default_text = "required",
     .help = "The reply code, the enhanced status code (one or a list) and a POSIX extended "
             "regular expression the reply text must match, without regard to case."},
    {.name = "providers",
     .type = SETTING_STRING_LIST,
     .offset = RULE(providers),
     .count_offset = RULE(n_providers),
     .default_text = "all",
     .help = "The providers where the rule counts."},
    {.name = "egress",
     .type = SETTING_STRING_LIST,
     .offset = RULE(egress),
     .count_offset = RULE(n_egress),
     .default_text = "all",
     .help = "The egresses where the rule counts."},
    {.name = "threshold",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "{ hits: 1..10000, window: duration }",
     .default_text = "{ hits: 1, window: 1h }",
     .help = "How many matching replies within the window start the action."},
    {.name = "action",
     .type = SETTING_ENUM,
     .offset = RULE(action),
     .choices = shaping_actions,
     .what = "a shaping action",
     .default_text = "required",
     .help = "suspend sends nothing on that egress and provider (mail spills to the other ramp "
             "egress or waits); throttle sends at most rate messages over at most connections "
             "connections; reroute sends the affected traffic through the other ramp egress."},
    {.name = "rate",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "rate",
     .help = "Throttle: messages per period (1/min, 10/h, 500/day)."},
    {.name = "connections",
     .type = SETTING_INT,
     .offset = RULE(connections),
     .min = 1,
     .max = 100000,
     .help = "Throttle: concurrent connections."},
    {.name = "duration",
     .type = SETTING_DURATION,
     .offset = RULE(duration),
     .default_text = "required",
     .help = "How long the action holds."},
    {.name = "recover",
     .type = SETTING_CUSTOM,
     .offset = SETTING_NO_OFFSET,
     .kind = "{ quiet: duration, step: number }",
     .help = "Instead of ending at once, throttle at the rate (1/min after suspend or reroute) "
             "and multiply it by step after every quiet period without a matching reply."},
    {.name = "source",
     .type = SETTING_STRING,
     .offset = RULE(source),
     .kind = "text",
     .help = "Where the reply text and the reaction come from."},
    {.name = "reputation",
     .type = SETTING_BOOL,
     .offset = RULE(reputation),
     .def = "false",
     .help = "true when the reply speaks of the sender's reputation (Microsoft's 4.7.650/651): "
             "the rule starting on an egress that a route group's autopilot is moving traffic to "
             "steps that group back one step."},
};

/* shaping.threshold: read into struct shaping_rule; not a section of its own in the documents. */
static const struct setting threshold_items[] = {
    {.name = "hits",
     .type = SETTING_INT,
     .offset = RULE(hits),
     .def = "1",
     .min = 1,
     .max = 10000,
     .help = "Matching replies that start the action."},
    {.name = "window",
     .type = SETTING_DURATION,
     .offset = RULE(window),
     .def = "1h",
     .help = "Within this long."},
};

const struct settings_table route_ramp_settings = {
    .section = "ramp",
    .help = "Moving mail from one egress to another over time. Each message's key (made of the "
            "parts listed in key) decides, stably, whether it is in the share that already goes "
            "to to. Route groups (groups) give chosen senders or recipients a ramp of their own "
            "over any number of egresses.",
    .items = ramp_items,
    .n_items = SETTINGS_COUNT(ramp_items)};
const struct settings_table route_ramp_group_settings = {.section = "ramp.groups",
                                                         .items = group_items,
                                                         .n_items = SETTINGS_COUNT(group_items),
                                                         .entries = 1};
const struct settings_table route_ramp_autopilot_settings = {.section = "ramp.groups.autopilot",
                                                             .items = autopilot_items,
                                                             .n_items =
                                                                 SETTINGS_COUNT(autopilot_items),
                                                             .entries = 1};
const struct settings_table route_ramp_gate_settings = {.section = "ramp.groups.autopilot.gates",
                                                        .items = gate_items,
                                                        .n_items = SETTINGS_COUNT(gate_items),
                                                        .entries = 1};
const struct settings_table route_cap_settings = {
    .section = "caps",
    .help = "A list of limits per egress and provider; at least one limit must be set. Mail over "
            "a cap spills to the other ramp egress (in a route group: along its spill order) when "
            "one may send, else it waits.",
    .items = cap_items,
    .n_items = SETTINGS_COUNT(cap_items),
    .entries = 1};
const struct settings_table route_provider_settings = {
    .section = "providers",
    .help = "Mailbox providers by MX host: a mapping of names to their settings; caps, shaping, "
            "pins and reports use the name. other is reserved.",
    .items = provider_items,
    .n_items = SETTINGS_COUNT(provider_items),
    .entries = 1};
const struct settings_table route_shaping_settings = {
    .section = "shaping",
    .help = "A list of reactions to receivers' replies.",
    .items = shaping_items,
    .n_items = SETTINGS_COUNT(shaping_items),
    .entries = 1};
const struct settings_table route_shaping_threshold_settings = {.section = "shaping.threshold",
                                                                .items = threshold_items,
                                                                .n_items =
                                                                    SETTINGS_COUNT(threshold_items),
                                                                .entries = 1};
