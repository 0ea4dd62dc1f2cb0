/* config_auth.c - the authentication sections of the configuration: dkim (which headers are
 * signed; table in sign/sign_settings.c), alignment (what to do with mail whose DMARC is
 * predicted to fail; check/check_settings.c), the cloud platforms' ranges and what origins
 * may rely on them, and the policy files, which may hold alignment, providers, caps, shaping,
 * ramp pins and platforms. Called from load_root() in config.c; also answers
 * config_alignment_action(). Never exits, never prints. */
#include "config/config_loader.h"

#include <ctype.h>
#include <errno.h>
#include <libfyaml.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/strbuf.h"

/* ---------------------------------------------------------------- dkim and alignment */

/* The action names, in the order of enum alignment_action (check/check_settings.c). */
static const char *const *alignment_actions(void)
{
    return settings_find_item(&check_alignment_settings, "default")->choices;
}

/* dkim: { headers, oversign } through sign/sign_settings.c; from must be signed. */
void cfg_load_dkim(struct loader *ld, const struct at *at)
{
    struct config *cfg = ld->cfg;
    struct at v[2];
    if (cfg_take_settings(ld, at, &sign_dkim_settings, cfg, NULL, v) < 0) return;
    int has_from = 0;
    for (size_t i = 0; i < cfg->n_dkim_headers; i++)
        has_from |= !strcasecmp(cfg->dkim_headers[i], "from");
    if (v[0].node && !v[0].bad && !has_from)
        cfg_error_at(ld, v[0].where, "%s: must include \"from\" (RFC 6376 5.4)", v[0].label);
}

/* alignment: { default: ACTION, domains: { DOMAIN: ACTION } } */
void cfg_load_alignment(struct loader *ld, const struct at *at)
{
    struct config *cfg = ld->cfg;
    struct at v[2];
    if (cfg_take_settings(ld, at, &check_alignment_settings, cfg, NULL, v) < 0) return;
    if (!v[1].node || cfg_is_null(v[1].node)) return;
    if (!fy_node_is_mapping(v[1].node)) {
        cfg_error_at(ld, v[1].where, "%s: expected \"domain: action\" lines, found %s", v[1].label,
                     cfg_kind_name(v[1].node));
        return;
    }
    void *it = NULL;
    struct fy_node_pair *pair;
    while ((pair = fy_node_mapping_iterate(v[1].node, &it))) {
        struct fy_node *key = fy_node_pair_key(pair);
        struct pos kpos = cfg_node_pos(ld, key, v[1].where);
        const char *domain = key && fy_node_is_scalar(key) ? fy_node_get_scalar0(key) : NULL;
        if (!domain || !cfg_valid_hostname(domain)) {
            cfg_error_at(ld, kpos, "%s: \"%s\" is not a domain name", v[1].label,
                         domain ? domain : "");
            continue;
        }
        struct at val = {.node = fy_node_pair_value(pair), .where = kpos};
        val.where = cfg_node_pos(ld, val.node, kpos);
        cfg_label_set(&val, "%s.%s", v[1].label, domain);
        int a = cfg_get_choice(ld, &val, "an alignment action", alignment_actions());
        if (a < 0) continue;
        for (size_t i = 0; i < cfg->n_alignment_rules; i++)
            if (!strcasecmp(cfg->alignment_rules[i].domain, domain))
                cfg_error_at(ld, kpos, "%s: %s already has a rule at %s:%d", v[1].label, domain,
                             cfg->alignment_rules[i].file, cfg->alignment_rules[i].line);
        cfg->alignment_rules = xrealloc(cfg->alignment_rules, (cfg->n_alignment_rules + 1) *
                                                                  sizeof *cfg->alignment_rules);
        struct alignment_rule *r = &cfg->alignment_rules[cfg->n_alignment_rules++];
        r->domain = xstrdup(domain);
        for (char *p = r->domain; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        r->action = (enum alignment_action)a;
        r->file = xstrdup(ld->file);
        r->line = kpos.line;
    }
}

/* ---------------------------------------------------------------- policy files */

/* A policy file named with a relative path is relative to the file that names it (so a
 * configuration and its policies can move together); when it is not there, to the directory
 * outrelay runs in. */
static char *policy_path(const struct loader *ld, const char *written)
{
    const char *slash = strrchr(ld->file, '/');
    if (written[0] == '/' || !slash) return xstrdup(written);
    struct strbuf sb = STRBUF_INIT;
    strbuf_printf(&sb, "%.*s/%s", (int)(slash - ld->file), ld->file, written);
    if (access(strbuf_str(&sb), F_OK) < 0) {
        strbuf_free(&sb);
        return xstrdup(written);
    }
    return strbuf_detach(&sb, NULL);
}

/* A policy file holds sections that may also be written in the main file (alignment now; ramp
 * and shaping policies later). Its errors carry its own name and positions. */
static void load_policy_file(struct loader *parent, const struct at *at, const char *written)
{
    static const char *const keys[] = {"alignment", "providers", "caps", "shaping",
                                       "ramp",      "platforms", NULL};
    struct fy_diag *diag = NULL;
    char *path = policy_path(parent, written);
    struct loader ld = {.file = path, .cfg = parent->cfg, .root = parent->root};
    ld.sort_within = at->where;
    if (access(path, R_OK) < 0) {
        cfg_error_at(parent, at->where, "%s: cannot read policy file %s: %s", at->label, written,
                     strerror(errno));
        free(path);
        return;
    }
    struct fy_document *doc = cfg_parse_file(&ld, &diag);
    if (doc) {
        cfg_index_marks(&ld, doc);
        struct fy_node *root = fy_document_root(doc);
        struct at top = {.node = root, .where = {1, 1}};
        struct at v[6];
        if (!cfg_is_null(root) && cfg_take_mapping(&ld, &top, keys, v) == 0) {
            if (v[0].node) cfg_load_alignment(&ld, &v[0]);
            if (v[1].node) cfg_load_providers(&ld, &v[1]);
            if (v[2].node) cfg_load_caps(&ld, &v[2]);
            if (v[3].node) cfg_load_shaping(&ld, &v[3]);
            if (v[5].node) cfg_load_platforms(&ld, &v[5]);
            if (v[4].node) {
                static const char *const ramp_keys[] = {"pins", NULL};
                struct at r[1];
                if (cfg_take_mapping(&ld, &v[4], ramp_keys, r) == 0 && r[0].node)
                    cfg_load_pins(&ld, &r[0]);
            }
        }
        fy_document_destroy(doc);
    }
    if (diag) fy_diag_destroy(diag);
    free(ld.marks);
    for (size_t i = 0; i < ld.n_errors; i++) /* keep the policy file's own positions */
        cfg_add_text(parent, (struct pos){at->where.line, at->where.col}, ld.errors[i].text);
    free(ld.errors);
    free(path);
}

void cfg_load_policies(struct loader *ld, const struct at *at)
{
    struct config *cfg = ld->cfg;
    if (cfg_get_string_list(ld, at, &cfg->policy_files, &cfg->n_policy_files) < 0) return;
    struct at *items;
    size_t n;
    if (cfg_take_list(ld, at, &items, &n) < 0) return;
    for (size_t i = 0; i < cfg->n_policy_files && i < n; i++)
        load_policy_file(ld, &items[i], cfg->policy_files[i]);
    free(items);
}

/* ---------------------------------------------------------------- lookup */

enum alignment_action config_alignment_action(const struct config *cfg, const char *from_domain)
{
    const struct alignment_rule *best = NULL;
    size_t flen = from_domain ? strlen(from_domain) : 0;
    for (size_t i = 0; i < cfg->n_alignment_rules; i++) {
        const struct alignment_rule *r = &cfg->alignment_rules[i];
        size_t rlen = strlen(r->domain);
        int match = flen == rlen  ? !strcasecmp(from_domain, r->domain)
                    : flen > rlen ? from_domain[flen - rlen - 1] == '.' &&
                                        !strcasecmp(from_domain + flen - rlen, r->domain)
                                  : 0;
        if (match && (!best || rlen > strlen(best->domain))) best = r;
    }
    return best ? best->action : cfg->alignment_default;
}

const char *config_alignment_action_name(enum alignment_action a)
{
    return alignment_actions()[a];
}

/* ---------------------------------------------------------------- platforms */

void cfg_load_platforms(struct loader *ld, const struct at *at)
{
    struct config *cfg = ld->cfg;
    struct at *items;
    size_t n;
    if (cfg_take_named(ld, at, "platform", &items, &n) < 0) return;
    for (size_t i = 0; i < n; i++) {
        if (config_find_platform(cfg, items[i].name)) {
            cfg_error_at(ld, items[i].where, "%s: platform \"%s\" is defined twice", items[i].label,
                         items[i].name);
            continue;
        }
        struct at v[3];
        struct platform_conf one = {0};
        settings_apply_defaults(&ingress_platform_settings, &one);
        if (cfg_take_settings(ld, &items[i], &ingress_platform_settings, &one, NULL, v) < 0)
            continue;
        cfg->platforms = xrealloc(cfg->platforms, (cfg->n_platforms + 1) * sizeof *cfg->platforms);
        struct platform_conf *p = &cfg->platforms[cfg->n_platforms++];
        *p = one;
        p->name = xstrdup(items[i].name);
        if (v[0].node) cfg_get_prefix_list(ld, &v[0], &p->networks, &p->n_networks);
        if (p->n_networks == 0)
            cfg_error_at(ld, items[i].where, "%s: networks is missing", items[i].label);
        if (!p->source)
            cfg_error_at(ld, items[i].where,
                         "%s: source is missing (where the ranges come from, for the next reader)",
                         items[i].label);
    }
    free(items);
}

void cfg_check_origins(struct loader *ld)
{
    struct config *cfg = ld->cfg;
    for (size_t i = 0; i < cfg->n_origins; i++) {
        struct origin_conf *o = &cfg->origins[i];
        struct pos at = {o->line, o->col};
        for (size_t k = 0; k < o->n_platforms; k++) {
            const struct platform_conf *p = config_find_platform(cfg, o->platforms[k]);
            if (!p) {
                cfg_error_at(ld, at,
                             "origins.%s: platform \"%s\" is not defined (policies/platforms.yaml "
                             "in policies, or a platforms section)",
                             o->name, o->platforms[k]);
                continue;
            }
            o->networks =
                xrealloc(o->networks, (o->n_networks + p->n_networks) * sizeof *o->networks);
            memcpy(o->networks + o->n_networks, p->networks, p->n_networks * sizeof *p->networks);
            o->n_networks += p->n_networks;
        }
        /* A provider's ranges serve every tenant, and its connector certificate is the same
         * for all of them (mail.protection.outlook.com): only a tenant binding (the domains
         * with the tenant id or a DKIM signature only the tenant can make) keeps the others
         * out. */
        int bound = o->n_domains && (o->tenant_id || o->dkim_required);
        if (o->n_platforms && !bound)
            cfg_warn_at(ld, at,
                        "origins.%s admits the shared ranges of %s%s without a tenant binding: "
                        "every customer of that provider could relay through you%s (add domains "
                        "with tenant_id or dkim_required)",
                        o->name, o->platforms[0], o->n_platforms > 1 ? " and others" : "",
                        o->requires_certificate ? ", the certificate proves the provider, not "
                                                  "the tenant"
                                                : "");
    }
}
