/* config.h - the one place outrelay's YAML configuration (libfyaml) becomes C structs.
 * config_load() reads and validates a file; config_defaults() gives the embedded defaults
 * (the same values as contrib/outrelay.example.yaml, with spool and state under ./var).
 * Every mistake is reported as "file:line:col: what is wrong" through the error list, all of
 * them, not just the first. The struct is immutable after load; any thread may read it. */
#ifndef OUTRELAY_CONFIG_H
#define OUTRELAY_CONFIG_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

enum tls_mode { TLS_NONE, TLS_OPTIONAL, TLS_REQUIRED, TLS_IMPLICIT };
enum egress_type { EGRESS_DIRECT, EGRESS_SMARTHOST };

struct listen_conf {
    char *address_text;       /* as written */
    struct sockaddr_any addr; /* parsed */
    enum tls_mode tls;        /* listen: none|optional|required|implicit (default optional) */
};

struct origin_conf {
    char *name;
    int strip_upstream_dkim;     /* dkim_upstream: strip (default keep, RFC 6376 4.2) */
    struct net_prefix *networks; /* networks, then the ranges of the platforms named */
    size_t n_networks;
    char **platforms; /* platforms: names from a platforms section (policies/platforms.yaml) */
    size_t n_platforms;
    char **users; /* AUTH identities that map to this origin */
    size_t n_users;
    /* certificate: the client must present, during STARTTLS, a certificate that chains to
     * cert_ca_file (NULL: the system store) and carries one of cert_names (RFC 6125 matching) */
    int requires_certificate;
    char **cert_names;
    size_t n_cert_names;
    char *cert_ca_file;
    /* tenant binding: envelope sender and From: domains must be in domains (or below them);
     * tenant_id: X-MS-Exchange-CrossTenant-Id must equal it; dkim_required: a verifying DKIM
     * signature by one of domains must be on the message. Refused with 550 5.7.1. */
    char **domains;
    size_t n_domains;
    char *tenant_id;
    int dkim_required;
    int line, col; /* where the origin is defined, for later messages about it */
};

/* A cloud platform's outbound ranges (platforms: in policies/platforms.yaml). */
struct platform_conf {
    char *name;
    char *source;
    char *spf_include; /* what SPF should include for mail the platform sends */
    struct net_prefix *networks;
    size_t n_networks;
};

struct egress_conf {
    char *name;
    enum egress_type type;
    /* direct */
    struct sockaddr_any *sources; /* bound source addresses (port 0); may be empty */
    size_t n_sources;
    struct config_where {
        int line, col;
    } * source_where; /* where each source is written, for config_check_sources() */
    char *helo;       /* EHLO name; default: top-level hostname */
    /* smarthost */
    char *host;      /* IP literal or hostname */
    int port;        /* default 25 */
    char *auth_user; /* optional AUTH PLAIN/LOGIN credentials */
    char *auth_password;
    struct net_prefix *spf_ips; /* where a smarthost sends from (for SPF checks) */
    size_t n_spf_ips;
    /* both */
    enum tls_mode tls;               /* egress: none | optional (default) | required */
    char *tls_ca_file;               /* verify the peer certificate against this CA file */
    int tls_verify;                  /* 1 when tls_ca_file is set or tls_verify: true */
    char *tls_cert;                  /* client certificate chain presented on STARTTLS (e.g.
                                      * for a certificate-based inbound connector) */
    char *tls_key;                   /* its private key */
    char *tls_name;                  /* name the peer certificate must carry (tls_verify);
                                      * default: the smarthost host or the MX name */
    int max_connections;             /* per destination; default 10 */
    int max_messages_per_connection; /* default 100 */
    int chunking;                    /* BDAT (RFC 3030) when the server offers CHUNKING */
};

/* tls_policy: the administrator's TLS policy for a recipient domain (like Postfix's
 * smtp_tls_policy_maps); read by smtpc/tls_policy.c. Levels in the order of the table's
 * choices (smtpc/tls_policy_settings.c). */
enum tls_policy_rule_level {
    TLS_RULE_NONE,    /* never STARTTLS */
    TLS_RULE_MAY,     /* STARTTLS when offered, plaintext when it fails */
    TLS_RULE_ENCRYPT, /* TLS required, the certificate is not checked */
    TLS_RULE_VERIFY,  /* TLS required, the certificate must verify and carry one of names */
};

struct tls_policy_rule {
    char *domain; /* lower case; "example.com" exactly, ".example.org" its subdomains */
    int level;    /* enum tls_policy_rule_level */
    char **names; /* verify: the names accepted; none = the MX host name */
    size_t n_names;
    char *file; /* where the rule is written, for messages */
    int line;
};

struct ramp_step {
    int64_t at;     /* unix seconds */
    double percent; /* 0..100 */
};

/* ramp.pins: one origin, recipient domain or provider fixed to one egress, until a time. */
struct ramp_pin {
    char *name;    /* origin name, recipient domain (lower case) or provider name */
    char *egress;  /* egress name */
    int64_t until; /* unix seconds; 0 = until the pin is removed from the configuration */
};

/* ramp.groups: one route group, a ramp of its own over any number of egresses. */
struct route_group_step {
    int64_t at;      /* unix seconds */
    double *weights; /* one per egress of the group, >= 0, in the group's egress order */
};

/* ramp.groups[].autopilot: the group moves from one schedule step to the next by itself while
 * the egresses gaining traffic stay healthy (route/autopilot.c). */
struct autopilot_conf {
    int enabled;
    int64_t window;     /* seconds of replies the gates look at */
    int64_t step_after; /* least time on a step before the next (and never before its at) */
    /* gates: amber (hold) above these */
    int max_deferral_rate; /* percent of transactions answered 4xx */
    int max_shaping;       /* shaping actions started on the gaining egresses */
    int min_replies;       /* fewer replies than this in the window: too little to judge */
    int min_dmarc_pass;    /* percent of messages whose DMARC is predicted to pass there */
    /* red (one step back) */
    int max_bounce_rate; /* percent of transactions answered 5xx */
};

struct route_group {
    char *name; /* unique; "default" is the ramp's own (from/to) group */
    /* match: every kind given must match, any entry within a kind; none given = every message */
    char **origins; /* origin names */
    size_t n_origins;
    char **sender_domains; /* From: domain, else envelope sender domain; ".parent" = subdomains */
    size_t n_sender_domains;
    char **rcpt_domains; /* recipient domain; "example.com" exactly, ".example.com" below it */
    size_t n_rcpt_domains;
    char **egress; /* egress names, at least one, none twice */
    size_t n_egress;
    struct route_group_step *schedule;
    size_t n_schedule;
    int interpolate;
    char **key; /* routing key parts, as ramp.key */
    size_t n_key;
    char **spill; /* egress names tried in this order when the choice may not send; none = the
                   * group's other egresses by descending rendezvous score for the key */
    size_t n_spill;
    struct autopilot_conf autopilot;
};

struct ramp_conf {
    char *from; /* egress name; required when egress is non-empty */
    char *to;   /* egress name; optional */
    char **key; /* routing key parts: from_domain, rcpt_domain, sender, rcpt, message_id */
    size_t n_key;
    struct ramp_step *schedule;
    size_t n_schedule;
    int interpolate; /* linear interpolation between steps */
    /* ramp.pins (main file and policy files); checked in this order: origin, domain, provider */
    struct ramp_pin *pin_origins;
    size_t n_pin_origins;
    struct ramp_pin *pin_domains; /* a domain pin matches the domain and its subdomains */
    size_t n_pin_domains;
    struct ramp_pin *pin_providers;
    size_t n_pin_providers;
    /* ramp.groups, tried in order before the default group (from/to above) */
    struct route_group *groups;
    size_t n_groups;
    struct autopilot_conf autopilot; /* the default group's: steps are the schedule's percents */
};

/* providers: destinations grouped by the suffix of their MX host names. The name "other"
 * stands for every destination no provider claims; it needs no definition. */
struct provider_conf {
    char *name;
    char **mx_suffixes; /* lower case, no leading or trailing dot */
    size_t n_mx_suffixes;
    char *source; /* where the grouping comes from (text); may be NULL */
};

/* caps: limits per egress x provider; 0 = no limit. */
struct cap_conf {
    char *egress;
    char *provider;
    int per_minute, per_hour, per_day; /* messages per UTC calendar minute / hour / day */
    int connections;                   /* concurrent connections */
    int per_connection;                /* messages per connection */
};

enum shaping_action { SHAPING_SUSPEND, SHAPING_THROTTLE, SHAPING_REROUTE };

/* shaping: what to do when receivers answer in a certain way. */
struct shaping_rule {
    char *name;
    int code;        /* match.code; 0 = any */
    char **enhanced; /* match.enhanced: any of these; none = any */
    size_t n_enhanced;
    char *text;       /* match.text as written (POSIX extended regex); NULL = any */
    regex_t text_re;  /* compiled, case-insensitive; valid when text != NULL */
    char **providers; /* none = every provider */
    size_t n_providers;
    char **egress; /* none = every egress */
    size_t n_egress;
    int reputation; /* the receiver says the sender's reputation: a red autopilot signal */
    int hits;       /* threshold.hits (default 1) ... */
    int64_t window; /* ... within threshold.window seconds (default 1h) */
    enum shaping_action action;
    int rate_count;        /* throttle: rate_count messages per rate_period seconds; */
    int64_t rate_period;   /*   0 = no rate limit */
    int connections;       /* throttle: concurrent connections; 0 = no limit */
    int64_t duration;      /* seconds the action lasts */
    int64_t recover_quiet; /* recover.quiet seconds; 0 = lift at once after duration */
    double recover_step;   /* recover.step: rate multiplier per quiet period (> 1) */
    char *source;          /* where the reply text and the reaction come from */
    char *file;            /* where the rule was written, for messages */
    int line;
};

/* What to do with a message whose DMARC is predicted to fail on the egress chosen for it. */
enum alignment_action {
    ALIGN_SEND,    /* deliver and flag it in the records (default) */
    ALIGN_REROUTE, /* use an egress whose SPF passes, when there is one; else send and flag */
    ALIGN_HOLD,    /* keep it held in the queue until `outrelay queue release` */
    ALIGN_BOUNCE,  /* return it to the sender with a DSN saying why */
};

struct alignment_rule {
    char *domain; /* From domain, lower case; matches the domain and its subdomains */
    enum alignment_action action;
    char *file; /* where the rule was written, for messages */
    int line;
};

struct config {
    char *file;           /* path it was read from, or "(defaults)" */
    char *hostname;       /* default: gethostname() */
    char *user;           /* drop privileges to this user; NULL: stay */
    char *spool;          /* default ./var/spool */
    char *state;          /* default ./var/state */
    char *keys;           /* default ./keys */
    char *control_socket; /* default <state>/control.sock */
    int log_to;           /* log.to: 0 stderr (default), 1 syslog, 2 journald, 3 json: enum
                             log_to in common/log.h; the older log.syslog: true is 1 */
    int log_level;        /* log.level: 0 debug, 1 info (default), 2 warning, 3 error;
                             the same numbers as enum log_level in common/log.h */

    char **dns_servers; /* "127.0.0.1:5353" or "127.0.0.1@5353"; empty: system resolver */
    size_t n_dns_servers;
    char *dns_trust_anchor; /* dns.trust_anchor: DS/DNSKEY lines; NULL: no DNSSEC validation */

    /* mta_sts: (sts/sts_settings.c): MTA-STS, RFC 8461, for direct delivery */
    int mta_sts_enabled;              /* default true */
    char *mta_sts_ca_file;            /* CAs for the policy host and the MX; NULL: system */
    int64_t mta_sts_max_policy_bytes; /* default 64K */
    int64_t mta_sts_fetch_timeout;    /* default 10s */
    int mta_sts_port;                 /* default 443 (tests only: another) */

    int mx_port;    /* delivery.mx_port, default 25 */
    int64_t *retry; /* delivery.retry in seconds; default 5m,10m,30m,1h,2h,4h */
    size_t n_retry;
    int64_t max_lifetime;    /* delivery.max_lifetime, default 5d */
    int64_t delay_warning;   /* delivery.delay_warning, default 4h; 0: no delay warnings */
    int64_t connect_timeout; /* delivery.connect_timeout, default 30s */
    int64_t command_timeout; /* delivery.command_timeout, default 5m (per SMTP reply) */

    struct listen_conf *listen;
    size_t n_listen;

    char *tls_cert; /* tls.cert / tls.key: server certificate for STARTTLS */
    char *tls_key;

    /* smtpd limits (section "limits:") */
    int64_t max_message_size;   /* default 35M */
    int max_recipients;         /* default 1000 */
    int max_line_length;        /* default 4096 (bytes incl. CRLF; RFC 5321 minimum is 1000) */
    int64_t command_timeout_in; /* default 5m */
    int64_t data_timeout;       /* default 10m */
    int max_received_headers;   /* default 50 */
    int max_connections_in;     /* default 500 */
    /* Per-client limits after Postfix's anvil; clients in an origin's networks are exempt. */
    int reserved_for_origins;       /* connections strangers may not take; default a fifth
                                       of max_connections (100 of 500) */
    int max_connections_per_client; /* concurrent, per client address; 0 = none; default 50 */
    int connection_rate_per_client; /* connections per rate period per address; 0 = none */
    int64_t connection_rate_period; /* seconds; default 300 per 60 */
    int64_t data_deadline;          /* the whole DATA phase; default 10m */

    char *users_file; /* auth.users_file: "user:crypt-hash" lines */

    struct origin_conf *origins;
    size_t n_origins;
    struct platform_conf *platforms;
    size_t n_platforms;
    char *deployment_id; /* stamped in X-Outrelay-Loop; default: hostname */
    char **warnings;     /* "file:line:col: warning: ..." for check and serve to print */
    size_t n_warnings;

    struct egress_conf *egress;
    size_t n_egress;
    struct tls_policy_rule *tls_policy_rules; /* tls_policy:, in file order */
    size_t n_tls_policy_rules;

    struct ramp_conf ramp;

    /* dkim: signing settings (keys themselves live under `keys`) */
    char **dkim_headers; /* NULL: the built-in list */
    size_t n_dkim_headers;
    char **dkim_oversign; /* default {"from"} */
    size_t n_dkim_oversign;

    /* alignment: actions on a predicted DMARC failure, from the main file and policy files */
    enum alignment_action alignment_default;
    struct alignment_rule *alignment_rules;
    size_t n_alignment_rules;
    char *metrics_listen; /* metrics.listen: Prometheus endpoint address, NULL = off */
    int dedup_enabled;    /* dedup.enabled (default on): a Message-ID + recipient already
                             delivered within dedup_window is not sent again */
    int64_t dedup_window; /* dedup.window, default 24h */
    /* tls_reports: daily RFC 8460 aggregate reports (tlsrpt/tlsrpt_settings.c) */
    int tlsrpt_enabled;        /* tls_reports.enabled, default off */
    char *tlsrpt_organization; /* organization-name; NULL: the hostname */
    char *tlsrpt_contact;      /* contact-info; NULL: the From address */
    char *tlsrpt_submitter;    /* the Submitter of the subject; NULL: the hostname */
    char *tlsrpt_from;         /* From: and envelope sender; NULL: tlsrpt-noreply@<hostname> */
    int tlsrpt_hour;           /* tls_reports.hour: the UTC hour after which yesterday is sent */
    /* cluster: several instances share state through Redis (cluster/cluster_settings.c) */
    char *cluster_redis;       /* "host:port" or "unix:/path"; NULL: no cluster */
    char *cluster_instance;    /* this instance's name; default: hostname */
    char *cluster_user;        /* AUTH user (Redis 6 ACL), or NULL */
    char *cluster_password;    /* AUTH password, or NULL */
    int cluster_db;            /* SELECT this database */
    int cluster_tls;           /* TLS to Redis */
    char *cluster_tls_ca_file; /* verify Redis's certificate against it; NULL: system store */
    char *cluster_tls_cert;    /* client certificate presented to Redis, with cluster_tls_key */
    char *cluster_tls_key;
    int64_t cluster_timeout;   /* connect and per command */
    char *cluster_key_prefix;  /* every key starts with it and ':' */
    int64_t cluster_claim_ttl; /* a delivery claim lives this long unless extended */
    int64_t records_retention; /* records.retention: seconds events are kept (default 400d;
                                  0 = forever) */
    char **policy_files;
    size_t n_policy_files;

    /* providers, caps and shaping rules: from the main file and policy files, in order */
    struct provider_conf *providers;
    size_t n_providers;
    struct cap_conf *caps;
    size_t n_caps;
    struct shaping_rule *shaping;
    size_t n_shaping;
};

/* The action for a From domain: the most specific rule (domain or parent domain), else the
 * default. */
enum alignment_action config_alignment_action(const struct config *cfg, const char *from_domain);
const char *config_alignment_action_name(enum alignment_action a);

/* One collected validation error, already formatted "file:line:col: message". */
struct config_errors {
    char **items;
    size_t n;
};

/* Returns a config or NULL; on NULL, errs holds at least one message. Warnings are not errors. */
struct config *config_load(const char *path, struct config_errors *errs);
/* The embedded defaults, no file. Never fails. */
struct config *config_defaults(void);
void config_free(struct config *cfg);
void config_errors_free(struct config_errors *errs);
/* For `check`: every egress source address must be one this host can bind (a throw-away socket,
 * port 0); an address that is not here would only fail at delivery. Adds "file:line:col: ..."
 * to errs (free with config_errors_free) and returns how many it added. */
size_t config_check_sources(const struct config *cfg, struct config_errors *errs);

const struct egress_conf *config_find_egress(const struct config *cfg, const char *name);
const struct origin_conf *config_find_origin(const struct config *cfg, const char *name);
const struct platform_conf *config_find_platform(const struct config *cfg, const char *name);
const struct provider_conf *config_find_provider(const struct config *cfg, const char *name);
/* "1/min", "10/h", "500/day", "3/30s": messages per period. Returns 0 / -1. */
int config_parse_rate(const char *text, int *count, int64_t *period);
const char *config_shaping_action_name(enum shaping_action a);
/* Whether a receiver's reply (code, enhanced code, text; NULLs allowed) matches a shaping rule's
 * match section. The rule's egress/provider scope is the caller's business. */
int config_shaping_matches(const struct shaping_rule *r, int code, const char *enhanced,
                           const char *text);

#endif
