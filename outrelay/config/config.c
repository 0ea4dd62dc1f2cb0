/* config.c - config_load(): reads outrelay's YAML file into struct config (see config.h).
 * Owns the embedded defaults, the top-level keys, the core sections (paths, log, dns, delivery,
 * listen, tls, limits, auth and its users file, origins, egress, metrics, dedup), the sorted
 * error list, lookup and freeing; config_auth.c and config_route.c read the other sections.
 * Reads the files the configuration names (TLS files, users file) only to check them; never
 * keeps them open. Library code: never exits, never prints; callers print the errors. */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libfyaml.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/strbuf.h"
#include "config/config_loader.h"
#include "config/settings.h"

/* ---------------------------------------------------------------- defaults */

static void egress_init(struct egress_conf *e, const char *name, enum egress_type type)
{
    memset(e, 0, sizeof *e);
    e->name = xstrdup(name);
    e->type = type;
    settings_apply_defaults(&smtpc_egress_settings, e);
}

static struct config *defaults_build(void)
{
    struct config *cfg = xcalloc(1, sizeof *cfg);
    char host[256] = "";

    cfg->file = xstrdup("(defaults)");
    if (gethostname(host, sizeof host - 1) < 0 || !host[0])
        snprintf(host, sizeof host, "localhost");
    cfg->hostname = xstrdup(host);
    /* Every scalar default is in the settings tables; the config-wide ones apply to cfg. */
    size_t n_tables;
    const struct settings_table *const *tables = settings_tables(&n_tables);
    for (size_t i = 0; i < n_tables; i++)
        if (!tables[i]->entries) settings_apply_defaults(tables[i], cfg);
    cfg->reserved_for_origins = -1; /* not set: finalize() makes it a fifth of max_connections */

    cfg->n_listen = 1;
    cfg->listen = xcalloc(1, sizeof *cfg->listen);
    cfg->listen[0].address_text = xstrdup("127.0.0.1:2525");
    util_parse_hostport("127.0.0.1:2525", -1, &cfg->listen[0].addr);
    settings_apply_defaults(&ingress_listen_settings, &cfg->listen[0]);

    cfg->n_origins = 1;
    cfg->origins = xcalloc(1, sizeof *cfg->origins);
    settings_apply_defaults(&ingress_origin_settings, &cfg->origins[0]);
    cfg->origins[0].name = xstrdup("local");
    cfg->origins[0].n_networks = 2;
    cfg->origins[0].networks = xcalloc(2, sizeof *cfg->origins[0].networks);
    util_parse_prefix("127.0.0.0/8", &cfg->origins[0].networks[0]);
    util_parse_prefix("::1/128", &cfg->origins[0].networks[1]);

    cfg->n_egress = 1;
    cfg->egress = xcalloc(1, sizeof *cfg->egress);
    egress_init(&cfg->egress[0], "legacy", EGRESS_DIRECT);

    return cfg;
}

/* Values that derive from others once everything is read. */
static void finalize(struct config *cfg)
{
    if (!cfg->control_socket) {
        struct strbuf sb = STRBUF_INIT;
        strbuf_printf(&sb, "%s/control.sock", cfg->state);
        cfg->control_socket = strbuf_detach(&sb, NULL);
    }
    if (cfg->reserved_for_origins < 0) cfg->reserved_for_origins = cfg->max_connections_in / 5;
    if (!cfg->deployment_id) cfg->deployment_id = xstrdup(cfg->hostname);
    if (cfg->cluster_redis && !cfg->cluster_instance)
        cfg->cluster_instance = xstrdup(cfg->hostname);
    for (size_t i = 0; i < cfg->n_egress; i++) {
        if (!cfg->egress[i].helo) cfg->egress[i].helo = xstrdup(cfg->hostname);
        if (cfg->egress[i].tls_ca_file) cfg->egress[i].tls_verify = 1;
    }
}

struct config *config_defaults(void)
{
    struct config *cfg = defaults_build();
    finalize(cfg);
    return cfg;
}

/* ---------------------------------------------------------------- sections */

/* log: { to: stderr|syslog|journald|json, level: ... }; `syslog: true` (older) is to: syslog */
static void load_log(struct loader *ld, const struct at *at)
{
    /* the table's outputs are in the order of enum log_to in common/log.h */
    struct at v[3];
    int syslog_flag = 0;
    if (cfg_take_settings(ld, at, &config_log_settings, ld->cfg, NULL, v) < 0) return;
    if (v[2].node && cfg_get_bool(ld, &v[2], &syslog_flag) == 0 && syslog_flag) {
        if (v[0].node && ld->cfg->log_to != 1)
            cfg_error_at(ld, v[2].where, LABEL_FMT "true contradicts log.to (say to: syslog)",
                         LABEL_ARGS(&v[2]));
        else
            ld->cfg->log_to = 1;
    }
}

/* metrics: { listen: "127.0.0.1:9464" } - the Prometheus endpoint (off when absent) */
static void load_metrics(struct loader *ld, const struct at *at)
{
    struct at v[1];
    cfg_take_settings(ld, at, &config_metrics_settings, ld->cfg, NULL, v);
}

/* dedup: { enabled: true, window: 24h } - duplicate suppression across the two platforms */
/* records: { retention: 400d } - how long events stay in records.db ("0" keeps them forever) */
static void load_records(struct loader *ld, const struct at *at)
{
    struct at v[1];
    cfg_take_settings(ld, at, &config_records_settings, ld->cfg, NULL, v);
}

/* tls_reports: { enabled, organization, contact, submitter, from, hour } - TLS-RPT */
static void load_tls_reports(struct loader *ld, const struct at *at)
{
    struct at v[6];
    cfg_take_settings(ld, at, &tlsrpt_settings, ld->cfg, NULL, v);
}

static void load_dedup(struct loader *ld, const struct at *at)
{
    struct at v[2];
    cfg_take_settings(ld, at, &qmgr_dedup_settings, ld->cfg, NULL, v);
}

/* cluster: { redis: host:port, instance: NAME, ... } - state shared with other instances */
static void load_cluster(struct loader *ld, const struct at *at)
{
    struct at v[12];
    cfg_take_settings(ld, at, &cluster_settings, ld->cfg, NULL, v);
    struct config *cfg = ld->cfg;
    if (!cfg->cluster_redis) return; /* without redis: nothing is shared */
    struct sockaddr_any a;
    if (strncmp(cfg->cluster_redis, "unix:/", 6) != 0 &&
        util_parse_hostport(cfg->cluster_redis, 6379, &a) < 0)
        cfg_error_at(ld, v[0].node ? v[0].where : at->where,
                     "cluster.redis: \"%s\" is not host:port (an address) or unix:/path",
                     cfg->cluster_redis);
    if (!cfg->cluster_tls_cert != !cfg->cluster_tls_key)
        cfg_error_at(ld, at->where, "cluster: tls_cert and tls_key go together");
    if (cfg->cluster_user && !cfg->cluster_password)
        cfg_error_at(ld, at->where, "cluster: user needs a password");
}

static void load_dns(struct loader *ld, const struct at *at)
{
    struct at v[2]; /* servers, trust_anchor (read by the table) */
    struct config *cfg = ld->cfg;
    if (cfg_take_settings(ld, at, &config_dns_settings, cfg, NULL, v) < 0 || !v[0].node) return;
    struct at *items;
    size_t n;
    if (cfg_take_list(ld, &v[0], &items, &n) < 0) return;
    cfg->dns_servers = xcalloc(n, sizeof *cfg->dns_servers);
    for (size_t i = 0; i < n; i++) {
        const char *s = cfg_scalar_text(ld, &items[i]);
        if (!s) continue;
        /* Accept unbound's "address@port" spelling beside "address:port". */
        char *text = xstrdup(s), *at_sign = strrchr(text, '@');
        struct sockaddr_any addr;
        int ok;
        if (at_sign) {
            char *end;
            *at_sign = '\0';
            long port = strtol(at_sign + 1, &end, 10);
            ok = isdigit((unsigned char)at_sign[1]) && !*end && port > 0 && port <= 65535 &&
                 util_parse_ip(text, &addr) == 0;
        } else {
            ok = util_parse_hostport(text, 53, &addr) == 0 && util_addr_port(&addr) > 0;
        }
        free(text);
        if (!ok) {
            cfg_error_at(
                ld, items[i].where,
                "%s: \"%s\" is not a DNS server address (e.g. 127.0.0.1, 127.0.0.1:5353 or "
                "[::1]:53)",
                items[i].label, s);
            continue;
        }
        cfg->dns_servers[cfg->n_dns_servers++] = xstrdup(s);
    }
    free(items);
}

/* mta_sts: { enabled: true, ca_file: ... } - MTA-STS (RFC 8461), read by its table */
static void load_mta_sts(struct loader *ld, const struct at *at)
{
    struct at v[5];
    cfg_take_settings(ld, at, &sts_settings, ld->cfg, NULL, v);
}

static void load_delivery(struct loader *ld, const struct at *at)
{
    struct at v[6];
    cfg_take_settings(ld, at, &qmgr_delivery_settings, ld->cfg, NULL, v);
}

static void load_limits(struct loader *ld, const struct at *at)
{
    enum { L_RESERVED = 7, L_N = 11 }; /* positions in ingress_limits_settings */
    struct at v[L_N];
    struct config *cfg = ld->cfg;
    if (cfg_take_settings(ld, at, &ingress_limits_settings, cfg, NULL, v) < 0) return;
    if (v[L_RESERVED].node && cfg->reserved_for_origins >= cfg->max_connections_in)
        /* strangers include AUTH-only origins: they must keep at least one connection */
        cfg_error_at(ld, v[L_RESERVED].where,
                     "%s: %d leaves clients outside the origins' networks no connection; it must "
                     "be less than limits.max_connections (%d)",
                     v[L_RESERVED].label, cfg->reserved_for_origins, cfg->max_connections_in);
}

static void load_tls(struct loader *ld, const struct at *at)
{
    struct at v[2];
    if (cfg_take_settings(ld, at, &ingress_tls_settings, ld->cfg, NULL, v) < 0) return;
    if (!v[0].node != !v[1].node)
        cfg_error_at(ld, at->where, "tls: cert and key must be given together (%s is missing)",
                     v[0].node ? "key" : "cert");
    /* Listeners check this, not whether the files were readable (already reported). */
    ld->tls_given = v[0].node && v[1].node;
}

/* auth.users_file: "name:crypt-hash" lines; '#' starts a comment line. The names are kept
 * for the origins check; the ingress reads the hashes itself. */
static void read_users_file(struct loader *ld, const struct at *at, const char *path)
{
    FILE *f = fopen(path, "re");
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t len;
    if (!f) {
        cfg_error_at(ld, at->where, "%s: cannot read %s: %s", at->label, path, strerror(errno));
        return;
    }
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        const char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p || *p == '#') continue;
        const char *colon = strchr(p, ':');
        const char *problem = NULL;
        if (!colon)
            problem = "expected \"name:crypt-hash\", found no ':'";
        else if (colon == p)
            problem = "the user name before ':' is empty";
        else if (!colon[1])
            problem = "the password hash after ':' is empty";
        for (const char *q = p; !problem && q < colon; q++)
            if (isspace((unsigned char)*q)) problem = "the user name contains white space";
        struct strbuf sb = STRBUF_INIT;
        char *name = problem ? NULL : xstrndup(p, (size_t)(colon - p));
        for (size_t i = 0; name && i < ld->n_users; i++)
            if (!strcmp(ld->users[i], name)) problem = "this user is listed twice";
        if (problem) {
            strbuf_printf(&sb, "%s:%zu:1: %s", path, lineno, problem);
            cfg_add_text(ld, at->where, strbuf_detach(&sb, NULL));
            free(name);
            continue;
        }
        ld->users = xrealloc(ld->users, (ld->n_users + 1) * sizeof *ld->users);
        ld->users[ld->n_users++] = name;
    }
    free(line);
    fclose(f);
    ld->users_loaded = 1;
}

static void load_auth(struct loader *ld, const struct at *at)
{
    struct at v[1];
    if (cfg_take_settings(ld, at, &ingress_auth_settings, ld->cfg, NULL, v) < 0 || !v[0].node)
        return;
    ld->users_file_given = 1;
    if (ld->cfg->users_file) read_users_file(ld, &v[0], ld->cfg->users_file);
}

static void load_listen(struct loader *ld, const struct at *at)
{
    struct config *cfg = ld->cfg;
    struct at *items;
    size_t n;
    if (cfg_take_list(ld, at, &items, &n) < 0) return;
    for (size_t i = 0; i < cfg->n_listen; i++)
        free(cfg->listen[i].address_text);
    free(cfg->listen);
    cfg->listen = xcalloc(n, sizeof *cfg->listen);
    cfg->n_listen = 0;
    if (n == 0)
        cfg_error_at(ld, at->where, "listen: no listener is defined, so no mail could come in");
    for (size_t i = 0; i < n; i++) {
        struct at v[2];
        struct listen_conf *l = &cfg->listen[cfg->n_listen];
        settings_apply_defaults(&ingress_listen_settings, l);
        if (cfg_take_settings(ld, &items[i], &ingress_listen_settings, l, NULL, v) < 0) continue;
        if (!v[0].node) {
            cfg_error_at(ld, items[i].where,
                         "%s: address is missing (e.g. address: 127.0.0.1:2525)", items[i].label);
        } else if (cfg_get_string(ld, &v[0], &l->address_text) == 0) {
            if (util_parse_hostport(l->address_text, -1, &l->addr) < 0 ||
                util_addr_port(&l->addr) == 0)
                cfg_error_at(ld, v[0].where,
                             "%s: \"%s\" is not an address:port (e.g. 127.0.0.1:2525 or "
                             "[::1]:2525)",
                             v[0].label, l->address_text);
        }
        if (v[1].node && (l->tls == TLS_REQUIRED || l->tls == TLS_IMPLICIT) && !ld->tls_given)
            cfg_error_at(ld, v[1].where,
                         "%s: \"%s\" needs a server certificate, but tls.cert and tls.key are "
                         "not both set",
                         v[1].label, fy_node_get_scalar0(v[1].node));
        cfg->n_listen++;
    }
    free(items);
}

static int list_has_items(struct fy_node *n)
{
    return n && fy_node_is_sequence(n) && fy_node_sequence_item_count(n) > 0;
}

static void free_list(char **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

static void free_origin(struct origin_conf *o)
{
    free(o->name);
    free(o->networks);
    free_list(o->platforms, o->n_platforms);
    free_list(o->users, o->n_users);
    free_list(o->cert_names, o->n_cert_names);
    free(o->cert_ca_file);
    free_list(o->domains, o->n_domains);
    free(o->tenant_id);
}

/* certificate: {names: [...], ca_file: FILE} */
static void load_origin_certificate(struct loader *ld, const struct at *at, struct origin_conf *o)
{
    static const char *const keys[] = {"names", "ca_file", NULL};
    struct at v[2];
    if (cfg_take_mapping(ld, at, keys, v) < 0) return;
    o->requires_certificate = 1;
    if (v[0].node) cfg_get_string_list(ld, &v[0], &o->cert_names, &o->n_cert_names);
    if (o->n_cert_names == 0)
        cfg_error_at(ld, at->where,
                     "%s: names is missing (the names the client's certificate must carry, e.g. "
                     "[mail.protection.outlook.com])",
                     at->label);
    if (v[1].node) cfg_get_readable_file(ld, &v[1], &o->cert_ca_file);
}

/* domains: [example.com, ...] as read, each a domain name, stored lower case */
static void check_origin_domains(struct loader *ld, const struct at *at, struct origin_conf *o)
{
    for (size_t i = 0; i < o->n_domains; i++) {
        for (char *p = o->domains[i]; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        if (!cfg_valid_hostname(o->domains[i]))
            cfg_error_at(ld, at->where, "%s: \"%s\" is not a domain name", at->label,
                         o->domains[i]);
    }
}

static void load_origins(struct loader *ld, const struct at *at)
{
    struct config *cfg = ld->cfg;
    struct at *items;
    size_t n;
    if (cfg_take_named(ld, at, "origin", &items, &n) < 0) return;
    for (size_t i = 0; i < cfg->n_origins; i++)
        free_origin(&cfg->origins[i]);
    free(cfg->origins);
    cfg->origins = xcalloc(n, sizeof *cfg->origins);
    cfg->n_origins = 0;
    if (n == 0)
        cfg_error_at(ld, at->where, "origins: no origin is defined, so no client could relay");
    for (size_t i = 0; i < n; i++) {
        struct origin_conf *o = &cfg->origins[cfg->n_origins++];
        struct at v[8];
        o->name = xstrdup(items[i].name);
        o->line = items[i].where.line;
        o->col = items[i].where.col;
        settings_apply_defaults(&ingress_origin_settings, o);
        if (cfg_take_settings(ld, &items[i], &ingress_origin_settings, o, NULL, v) < 0) continue;
        if (v[4].node) load_origin_certificate(ld, &v[4], o);
        if (v[5].node && !v[5].bad) check_origin_domains(ld, &v[5], o);
        if ((o->tenant_id || o->dkim_required) && o->n_domains == 0)
            cfg_error_at(ld, items[i].where,
                         "%s: tenant_id and dkim_required bind the origin to its domains; list "
                         "them in domains",
                         items[i].label);
        if (v[0].node) cfg_get_prefix_list(ld, &v[0], &o->networks, &o->n_networks);
        if (v[1].node && !v[1].bad) {
            if (o->n_users && !ld->users_file_given)
                cfg_error_at(ld, v[1].where,
                             "%s: AUTH users need auth.users_file (the file with their password "
                             "hashes)",
                             v[1].label);
            struct at *u;
            size_t nu;
            cfg_take_list(ld, &v[1], &u, &nu);
            for (size_t j = 0; ld->users_loaded && j < nu; j++) {
                const char *name =
                    fy_node_is_scalar(u[j].node) ? fy_node_get_scalar0(u[j].node) : NULL;
                size_t k = 0;
                while (name && k < ld->n_users && strcmp(ld->users[k], name))
                    k++;
                if (name && *name && k == ld->n_users)
                    cfg_error_at(ld, u[j].where, "%s: \"%s\" is not in the users file %s",
                                 u[j].label, name, cfg->users_file);
            }
            free(u);
        }
        if (!list_has_items(v[0].node) && !list_has_items(v[1].node) &&
            !list_has_items(v[3].node) && !o->requires_certificate)
            cfg_error_at(ld, items[i].where,
                         "%s: has neither networks, platforms, users nor certificate, so no "
                         "client could match it",
                         items[i].label);
    }
    free(items);
}

static void free_egress(struct egress_conf *e)
{
    free(e->name);
    free(e->sources);
    free(e->source_where);
    free(e->helo);
    free(e->host);
    free(e->auth_user);
    free(e->auth_password);
    free(e->spf_ips);
    free(e->tls_ca_file);
    free(e->tls_cert);
    free(e->tls_key);
    free(e->tls_name);
}

enum {
    EG_TYPE,
    EG_SOURCE,
    EG_HELO,
    EG_HOST,
    EG_PORT,
    EG_AUTH,
    EG_TLS,
    EG_TLS_CA_FILE,
    EG_TLS_VERIFY,
    EG_TLS_CERT,
    EG_TLS_KEY,
    EG_TLS_NAME,
    EG_SPF_IPS,
    EG_MAX_CONNECTIONS,
    EG_MAX_MESSAGES,
    EG_CHUNKING,
    EG_COUNT
};

static void load_one_egress(struct loader *ld, const struct at *item, struct egress_conf *e)
{
    static const char *const types[] = {"direct", "smarthost", NULL};
    struct at v[EG_COUNT];
    if (cfg_take_settings(ld, item, &smtpc_egress_settings, e, NULL, v) < 0) return;
    int type = -1;
    if (!v[EG_TYPE].node)
        cfg_error_at(ld, item->where, "%s: type is missing (direct or smarthost)", item->label);
    else if ((type = cfg_get_choice(ld, &v[EG_TYPE], "an egress type", types)) >= 0)
        e->type = (enum egress_type)type;

    if (v[EG_SOURCE].node) {
        struct at *items;
        size_t n;
        if (cfg_take_list(ld, &v[EG_SOURCE], &items, &n) == 0) {
            e->sources = xcalloc(n, sizeof *e->sources);
            e->source_where = xcalloc(n, sizeof *e->source_where);
            for (size_t i = 0; i < n; i++) {
                const char *s = cfg_scalar_text(ld, &items[i]);
                if (s && util_parse_ip(s, &e->sources[e->n_sources]) == 0)
                    e->source_where[e->n_sources++] =
                        (struct config_where){items[i].where.line, items[i].where.col};
                else if (s)
                    cfg_error_at(ld, items[i].where,
                                 "%s: \"%s\" is not an IP address of this host (e.g. 192.0.2.10)",
                                 items[i].label, s);
            }
            free(items);
        }
    }
    if (v[EG_AUTH].node) {
        static const char *const auth_keys[] = {"user", "password", NULL};
        struct at a[2];
        if (cfg_take_mapping(ld, &v[EG_AUTH], auth_keys, a) == 0) {
            if (a[0].node) cfg_get_string(ld, &a[0], &e->auth_user);
            if (a[1].node) cfg_get_string(ld, &a[1], &e->auth_password);
            if (!a[0].node || !a[1].node)
                cfg_error_at(ld, v[EG_AUTH].where, "%s: user and password must both be given",
                             v[EG_AUTH].label);
        }
    }
    if (v[EG_TLS_VERIFY].node && cfg_get_bool(ld, &v[EG_TLS_VERIFY], &e->tls_verify) == 0 &&
        !e->tls_verify && v[EG_TLS_CA_FILE].node)
        cfg_error_at(ld, v[EG_TLS_VERIFY].where,
                     "%s: false contradicts tls_ca_file (a CA file is only used to verify)",
                     v[EG_TLS_VERIFY].label);
    if (!v[EG_TLS_CERT].node != !v[EG_TLS_KEY].node)
        cfg_error_at(ld, item->where, "%s: tls_cert and tls_key must both be given", item->label);
    if (v[EG_TLS_NAME].node && !e->tls_verify && !v[EG_TLS_CA_FILE].node && !v[EG_TLS_VERIFY].node)
        e->tls_verify = 1; /* a name to check only means something when verifying */
    if (v[EG_SPF_IPS].node) cfg_get_prefix_list(ld, &v[EG_SPF_IPS], &e->spf_ips, &e->n_spf_ips);

    if (type == EGRESS_SMARTHOST && !v[EG_HOST].node)
        cfg_error_at(ld, item->where, "%s: host is missing (a smarthost egress needs one)",
                     item->label);
    if (type == EGRESS_DIRECT) {
        static const int smarthost_only[] = {EG_HOST, EG_PORT, EG_AUTH};
        for (size_t i = 0; i < 3; i++) {
            const struct at *s = &v[smarthost_only[i]];
            if (s->node)
                cfg_error_at(ld, s->where,
                             "%s: only for smarthost egress (this one is type direct; direct "
                             "delivery uses the MX hosts and delivery.mx_port)",
                             s->label);
        }
    }
}

static void load_egress(struct loader *ld, const struct at *at)
{
    struct config *cfg = ld->cfg;
    struct at *items;
    size_t n;
    if (cfg_take_named(ld, at, "egress", &items, &n) < 0) return;
    for (size_t i = 0; i < cfg->n_egress; i++)
        free_egress(&cfg->egress[i]);
    free(cfg->egress);
    cfg->egress = xcalloc(n, sizeof *cfg->egress);
    cfg->n_egress = 0;
    if (n == 0)
        cfg_error_at(ld, at->where, "egress: no egress is defined, so mail could not leave");
    for (size_t i = 0; i < n; i++) {
        struct egress_conf *e = &cfg->egress[cfg->n_egress++];
        char *name = xstrdup(items[i].name);
        egress_init(e, name, EGRESS_DIRECT);
        free(name);
        load_one_egress(ld, &items[i], e);
    }
    free(items);
}

/* tls_policy: { DOMAIN: LEVEL | { level: LEVEL, names: [...] } } through
 * smtpc/tls_policy_settings.c. */
static void load_tls_policy(struct loader *ld, const struct at *at)
{
    struct config *cfg = ld->cfg;
    const struct setting *level_item = settings_find_item(&smtpc_tls_policy_settings, "level");
    if (cfg_is_null(at->node)) return;
    if (!fy_node_is_mapping(at->node)) {
        cfg_error_at(ld, at->where, "%s: expected \"domain: level\" lines, found %s", at->label,
                     cfg_kind_name(at->node));
        return;
    }
    void *it = NULL;
    struct cfg_pair pair;
    while (cfg_mapping_next(ld, at, &it, &pair)) {
        const char *domain = pair.name;
        const char *bare = domain && domain[0] == '.' ? domain + 1 : domain;
        if (!bare || !cfg_valid_hostname(bare)) {
            cfg_error_at(ld, pair.where,
                         "%s: \"%s\" is not a domain (example.com, or .example.com for its "
                         "subdomains)",
                         at->label, domain ? domain : "");
            continue;
        }
        struct at val = {.node = pair.value};
        val.where = cfg_node_pos(ld, val.node, pair.where);
        cfg_label_set(&val, "%s \"%s\"", at->label, domain);
        val.named = 1;
        struct tls_policy_rule r = {.level = -1};
        if (val.node && fy_node_is_mapping(val.node)) {
            struct at v[2];
            if (cfg_take_settings(ld, &val, &smtpc_tls_policy_settings, &r, NULL, v) < 0 ||
                v[0].bad || v[1].bad) {
                free_list(r.names, r.n_names);
                continue;
            }
            if (!v[0].node) {
                cfg_error_at(ld, val.where, "%s: level is missing (none, may, encrypt or verify)",
                             val.label);
                free_list(r.names, r.n_names);
                continue;
            }
            if (r.n_names && r.level != TLS_RULE_VERIFY)
                cfg_error_at(ld, v[1].where, "%s: names only mean something with level verify",
                             v[1].label);
            if (r.n_names > 4) cfg_error_at(ld, v[1].where, "%s: at most 4 names", v[1].label);
        } else if (cfg_get_setting(ld, &val, level_item, &r) < 0) {
            continue;
        }
        for (size_t i = 0; i < cfg->n_tls_policy_rules; i++)
            if (!strcasecmp(cfg->tls_policy_rules[i].domain, domain))
                cfg_error_at(ld, pair.where, "%s: %s already has a policy at line %d", at->label,
                             domain, cfg->tls_policy_rules[i].line);
        r.domain = xstrdup(domain);
        for (char *p = r.domain; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        r.file = xstrdup(ld->file);
        r.line = pair.where.line;
        cfg->tls_policy_rules = xrealloc(cfg->tls_policy_rules, (cfg->n_tls_policy_rules + 1) *
                                                                    sizeof *cfg->tls_policy_rules);
        cfg->tls_policy_rules[cfg->n_tls_policy_rules++] = r;
    }
}

/* ---------------------------------------------------------------- the whole file */

/* The top level: the general settings table, then these sections. */
enum {
    K_HOSTNAME,
    K_USER,
    K_SPOOL,
    K_STATE,
    K_KEYS,
    K_CONTROL_SOCKET,
    K_DEPLOYMENT_ID,
    K_LOG,
    K_DNS,
    K_DELIVERY,
    K_LISTEN,
    K_TLS,
    K_LIMITS,
    K_AUTH,
    K_ORIGINS,
    K_EGRESS,
    K_RAMP,
    K_POLICIES,
    K_DKIM,
    K_ALIGNMENT,
    K_PROVIDERS,
    K_CAPS,
    K_SHAPING,
    K_METRICS,
    K_DEDUP,
    K_RECORDS,
    K_PLATFORMS,
    K_TLS_POLICY,
    K_MTA_STS,
    K_TLS_REPORTS,
    K_CLUSTER,
    K_COUNT
};

static void load_root(struct loader *ld, struct fy_node *root)
{
    static const char *const section_keys[] = {
        "log",       "dns",       "delivery",   "listen",  "tls",         "limits",
        "auth",      "origins",   "egress",     "ramp",    "policies",    "dkim",
        "alignment", "providers", "caps",       "shaping", "metrics",     "dedup",
        "records",   "platforms", "tls_policy", "mta_sts", "tls_reports", "cluster", NULL};
    struct config *cfg = ld->cfg;
    struct at top = {.node = root, .where = {1, 1}};
    struct at v[K_COUNT];

    top.where = cfg_node_pos(ld, root, top.where);
    if (!cfg_is_null(root) && !fy_node_is_mapping(root)) {
        cfg_error_at(ld, top.where,
                     "the configuration must be a mapping of settings (\"name: value\" lines), "
                     "found %s",
                     cfg_kind_name(root));
        return;
    }
    cfg_take_settings(ld, &top, &config_general_settings, cfg, section_keys, v);
    /* Order matters: tls before listen, auth before origins, egress before ramp. */
    if (cfg->hostname && !strchr(cfg->hostname, '.'))
        cfg_warn_at(ld, v[K_HOSTNAME].node ? v[K_HOSTNAME].where : (struct pos){0, 0},
                    "hostname: \"%s\"%s is not a fully qualified domain name; it is our EHLO "
                    "name and the reporting MTA of bounces, and receivers distrust a name "
                    "without a dot (set hostname: to a name like relay.example.com)",
                    cfg->hostname, v[K_HOSTNAME].node ? "" : " (this machine's name, the default)");
    if (v[K_USER].node && cfg->user && !getpwnam(cfg->user))
        cfg_error_at(ld, v[K_USER].where, "user: \"%s\" is not an account on this system",
                     cfg->user);
    if (v[K_LOG].node) load_log(ld, &v[K_LOG]);
    if (v[K_DNS].node) load_dns(ld, &v[K_DNS]);
    if (v[K_DELIVERY].node) load_delivery(ld, &v[K_DELIVERY]);
    if (v[K_TLS].node) load_tls(ld, &v[K_TLS]);
    if (v[K_LISTEN].node) load_listen(ld, &v[K_LISTEN]);
    if (v[K_LIMITS].node) load_limits(ld, &v[K_LIMITS]);
    if (v[K_AUTH].node) load_auth(ld, &v[K_AUTH]);
    if (v[K_ORIGINS].node) load_origins(ld, &v[K_ORIGINS]);
    if (v[K_EGRESS].node) load_egress(ld, &v[K_EGRESS]);
    if (v[K_TLS_POLICY].node) load_tls_policy(ld, &v[K_TLS_POLICY]);
    if (v[K_MTA_STS].node) load_mta_sts(ld, &v[K_MTA_STS]);
    if (v[K_RAMP].node || v[K_EGRESS].node) cfg_load_ramp(ld, &v[K_RAMP], &v[K_EGRESS]);
    if (v[K_DKIM].node) cfg_load_dkim(ld, &v[K_DKIM]);
    if (v[K_ALIGNMENT].node) cfg_load_alignment(ld, &v[K_ALIGNMENT]);
    if (v[K_PROVIDERS].node) cfg_load_providers(ld, &v[K_PROVIDERS]);
    if (v[K_CAPS].node) cfg_load_caps(ld, &v[K_CAPS]);
    if (v[K_SHAPING].node) cfg_load_shaping(ld, &v[K_SHAPING]);
    if (v[K_METRICS].node) load_metrics(ld, &v[K_METRICS]);
    if (v[K_DEDUP].node) load_dedup(ld, &v[K_DEDUP]);
    if (v[K_RECORDS].node) load_records(ld, &v[K_RECORDS]);
    if (v[K_TLS_REPORTS].node) load_tls_reports(ld, &v[K_TLS_REPORTS]);
    if (v[K_CLUSTER].node) load_cluster(ld, &v[K_CLUSTER]);
    if (v[K_PLATFORMS].node) cfg_load_platforms(ld, &v[K_PLATFORMS]);
    if (v[K_POLICIES].node) cfg_load_policies(ld, &v[K_POLICIES]);
    cfg_check_provider_refs(ld);
    cfg_check_origins(ld);
}

static int compare_errors(const void *a, const void *b)
{
    const struct pending_error *x = a, *y = b;
    if (x->sort.line != y->sort.line) return x->sort.line < y->sort.line ? -1 : 1;
    if (x->sort.col != y->sort.col) return x->sort.col < y->sort.col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

struct config *config_load(const char *path, struct config_errors *errs)
{
    struct loader ld = {.file = path};
    struct fy_diag *diag = NULL;
    struct stat st;
    ld.root = &ld;

    errs->items = NULL;
    errs->n = 0;
    ld.cfg = defaults_build();
    free(ld.cfg->file);
    ld.cfg->file = xstrdup(path);

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0 || S_ISDIR(st.st_mode)) {
        cfg_error_at(&ld, (struct pos){0, 0}, "cannot read the configuration: %s",
                     fd < 0 ? strerror(errno) : "it is a directory");
    } else {
        struct fy_document *doc = cfg_parse_file(&ld, &diag);
        /* An empty file (or one with only comments) has no document: all defaults. */
        if (doc) {
            cfg_index_marks(&ld, doc);
            load_root(&ld, fy_document_root(doc));
            fy_document_destroy(doc);
        }
    }
    if (fd >= 0) close(fd);
    if (diag) fy_diag_destroy(diag);
    for (size_t i = 0; i < ld.n_users; i++)
        free(ld.users[i]);
    free(ld.users);
    free(ld.marks);

    if (ld.n_errors == 0) {
        finalize(ld.cfg);
        return ld.cfg;
    }
    qsort(ld.errors, ld.n_errors, sizeof *ld.errors, compare_errors);
    errs->items = xcalloc(ld.n_errors, sizeof *errs->items);
    for (size_t i = 0; i < ld.n_errors; i++)
        errs->items[i] = ld.errors[i].text;
    errs->n = ld.n_errors;
    free(ld.errors);
    config_free(ld.cfg);
    return NULL;
}

/* ---------------------------------------------------------------- lookup and freeing */

const struct egress_conf *config_find_egress(const struct config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_egress; i++)
        if (cfg->egress[i].name && !strcmp(cfg->egress[i].name, name)) return &cfg->egress[i];
    return NULL;
}

const struct origin_conf *config_find_origin(const struct config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_origins; i++)
        if (cfg->origins[i].name && !strcmp(cfg->origins[i].name, name)) return &cfg->origins[i];
    return NULL;
}

const struct platform_conf *config_find_platform(const struct config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_platforms; i++)
        if (!strcmp(cfg->platforms[i].name, name)) return &cfg->platforms[i];
    return NULL;
}

const struct provider_conf *config_find_provider(const struct config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_providers; i++)
        if (!strcmp(cfg->providers[i].name, name)) return &cfg->providers[i];
    return NULL;
}

void config_free(struct config *cfg)
{
    if (!cfg) return;
    free(cfg->file);
    free(cfg->hostname);
    free(cfg->user);
    free(cfg->spool);
    free(cfg->state);
    free(cfg->keys);
    free(cfg->control_socket);
    for (size_t i = 0; i < cfg->n_dns_servers; i++)
        free(cfg->dns_servers[i]);
    free(cfg->dns_servers);
    free(cfg->dns_trust_anchor);
    free(cfg->mta_sts_ca_file);
    free(cfg->retry);
    for (size_t i = 0; i < cfg->n_listen; i++)
        free(cfg->listen[i].address_text);
    free(cfg->listen);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->users_file);
    for (size_t i = 0; i < cfg->n_origins; i++)
        free_origin(&cfg->origins[i]);
    free(cfg->origins);
    for (size_t i = 0; i < cfg->n_platforms; i++) {
        free(cfg->platforms[i].name);
        free(cfg->platforms[i].source);
        free(cfg->platforms[i].spf_include);
        free(cfg->platforms[i].networks);
    }
    free(cfg->platforms);
    free(cfg->deployment_id);
    free_list(cfg->warnings, cfg->n_warnings);
    for (size_t i = 0; i < cfg->n_egress; i++)
        free_egress(&cfg->egress[i]);
    free(cfg->egress);
    for (size_t i = 0; i < cfg->n_tls_policy_rules; i++) {
        free(cfg->tls_policy_rules[i].domain);
        free_list(cfg->tls_policy_rules[i].names, cfg->tls_policy_rules[i].n_names);
        free(cfg->tls_policy_rules[i].file);
    }
    free(cfg->tls_policy_rules);
    free(cfg->ramp.from);
    free(cfg->ramp.to);
    for (size_t i = 0; i < cfg->ramp.n_key; i++)
        free(cfg->ramp.key[i]);
    free(cfg->ramp.key);
    free(cfg->ramp.schedule);
    cfg_free_pins(cfg->ramp.pin_origins, cfg->ramp.n_pin_origins);
    cfg_free_pins(cfg->ramp.pin_domains, cfg->ramp.n_pin_domains);
    cfg_free_pins(cfg->ramp.pin_providers, cfg->ramp.n_pin_providers);
    for (size_t i = 0; i < cfg->ramp.n_groups; i++)
        cfg_free_route_group(&cfg->ramp.groups[i]);
    free(cfg->ramp.groups);
    for (size_t i = 0; i < cfg->n_providers; i++)
        cfg_free_provider(&cfg->providers[i]);
    free(cfg->providers);
    for (size_t i = 0; i < cfg->n_caps; i++) {
        free(cfg->caps[i].egress);
        free(cfg->caps[i].provider);
    }
    free(cfg->caps);
    for (size_t i = 0; i < cfg->n_shaping; i++)
        cfg_free_shaping_rule(&cfg->shaping[i]);
    free(cfg->shaping);
    for (size_t i = 0; i < cfg->n_dkim_headers; i++)
        free(cfg->dkim_headers[i]);
    free(cfg->dkim_headers);
    for (size_t i = 0; i < cfg->n_dkim_oversign; i++)
        free(cfg->dkim_oversign[i]);
    free(cfg->dkim_oversign);
    for (size_t i = 0; i < cfg->n_alignment_rules; i++) {
        free(cfg->alignment_rules[i].domain);
        free(cfg->alignment_rules[i].file);
    }
    free(cfg->alignment_rules);
    for (size_t i = 0; i < cfg->n_policy_files; i++)
        free(cfg->policy_files[i]);
    free(cfg->policy_files);
    free(cfg->metrics_listen);
    free(cfg->tlsrpt_organization);
    free(cfg->tlsrpt_contact);
    free(cfg->tlsrpt_submitter);
    free(cfg->tlsrpt_from);
    free(cfg->cluster_redis);
    free(cfg->cluster_instance);
    free(cfg->cluster_user);
    free(cfg->cluster_password);
    free(cfg->cluster_tls_ca_file);
    free(cfg->cluster_tls_cert);
    free(cfg->cluster_tls_key);
    free(cfg->cluster_key_prefix);
    free(cfg);
}

size_t config_check_sources(const struct config *cfg, struct config_errors *errs)
{
    size_t added = 0;
    for (size_t i = 0; i < cfg->n_egress; i++) {
        const struct egress_conf *e = &cfg->egress[i];
        for (size_t j = 0; j < e->n_sources; j++) {
            const struct sockaddr_any a = e->sources[j]; /* port 0: util_parse_ip() */
            char ip[64];
            util_format_addr(&a, 0, ip, sizeof ip);
            int fd = socket(a.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
            int saved = 0;
            if (fd < 0 || bind(fd, (struct sockaddr *)&a.ss, a.len) < 0) saved = errno;
            if (fd >= 0) close(fd);
            if (!saved) continue;
            struct strbuf sb = STRBUF_INIT;
            const struct config_where *w = e->source_where ? &e->source_where[j] : NULL;
            if (w && w->line > 0)
                strbuf_printf(&sb, "%s:%d:%d: ", cfg->file, w->line, w->col);
            else
                strbuf_printf(&sb, "%s: ", cfg->file);
            strbuf_printf(&sb,
                          "egress \"%s\": source[%zu]: %s is not an address of this host (%s); "
                          "delivery from it would fail - configure the address on an interface "
                          "or remove it",
                          e->name, j, ip, strerror(saved));
            errs->items = xrealloc(errs->items, (errs->n + 1) * sizeof *errs->items);
            errs->items[errs->n++] = strbuf_detach(&sb, NULL);
            added++;
        }
    }
    return added;
}

void config_errors_free(struct config_errors *errs)
{
    if (!errs) return;
    for (size_t i = 0; i < errs->n; i++)
        free(errs->items[i]);
    free(errs->items);
    errs->items = NULL;
    errs->n = 0;
}
