/* config_route.c - the route sections of the configuration: ramp (from, to, key, schedule,
 * pins), providers, caps and shaping rules, with their rates and UTC times. Their keys, types,
 * bounds and defaults are the tables of route/route_settings.c; here are the checks across
 * keys and sections (egress and provider names, key parts, time order). The main file and
 * policy files both reach them (load_root() in config.c, load_policy_file() in
 * config_auth.c); provider names are checked once every file is read (cfg_check_provider_refs()).
 * Never exits, never prints. */
#include "config/config_loader.h"

#include <ctype.h>
#include <errno.h>
#include <libfyaml.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/strbuf.h"

/* ---------------------------------------------------------------- ramp */

static const char *const ramp_key_parts[] = {"from_domain", "rcpt_domain", "sender",
                                             "rcpt",        "message_id",  NULL};

/* ramp.key (or a group's key), already read as a list of names into key: each a known part,
 * none twice. The parts that pass are kept, in order. */
static void check_key_parts(struct loader *ld, const struct at *at, char **key, size_t *n_key)
{
    struct at *items;
    size_t n, kept = 0;
    if (cfg_take_list(ld, at, &items, &n) < 0) return;
    if (n == 0)
        cfg_error_at(ld, at->where, "%s: needs at least one part (e.g. [from_domain])", at->label);
    for (size_t i = 0; i < *n_key; i++)
        free(key[i]);
    *n_key = 0;
    for (size_t i = 0; i < n; i++) {
        const char *text = fy_node_is_scalar(items[i].node) && !cfg_is_null(items[i].node)
                               ? fy_node_get_scalar0(items[i].node)
                               : NULL;
        if (!text || !*text) continue; /* reported when the list was read */
        int part = cfg_get_choice(ld, &items[i], "a routing key part", ramp_key_parts);
        size_t j = 0;
        while (part >= 0 && j < kept && strcmp(key[j], ramp_key_parts[part]))
            j++;
        if (part >= 0 && j < kept)
            cfg_error_at(ld, items[i].where, "%s: \"%s\" is listed twice", items[i].label,
                         ramp_key_parts[part]);
        else if (part >= 0)
            key[kept++] = xstrdup(ramp_key_parts[part]);
    }
    *n_key = kept;
    free(items);
}

/* A digit run of exactly n characters. */
static int take_digits(const char **p, int n, int *out)
{
    *out = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (!isdigit((unsigned char)**p)) return -1;
        *out = *out * 10 + (**p - '0');
    }
    return 0;
}

/* "2026-12-01T00:00:00Z", "2026-12-01T00:00:00+00:00" or "2026-12-01" (midnight UTC). */
static int parse_utc_time(const char *s, int64_t *out)
{
    struct tm tm = {0}, check;
    int y, mo, d, h = 0, mi = 0, se = 0;
    const char *p = s;
    if (take_digits(&p, 4, &y) || *p++ != '-' || take_digits(&p, 2, &mo) || *p++ != '-' ||
        take_digits(&p, 2, &d))
        return -1;
    if (*p) {
        if (*p != 'T' && *p != 't' && *p != ' ') return -1;
        p++;
        if (take_digits(&p, 2, &h) || *p++ != ':' || take_digits(&p, 2, &mi) || *p++ != ':' ||
            take_digits(&p, 2, &se))
            return -1;
        if (strcmp(p, "Z") && strcmp(p, "z") && strcmp(p, "+00:00") && strcmp(p, "-00:00"))
            return -1;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 59) return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    time_t t = timegm(&tm);
    if (!gmtime_r(&t, &check) || check.tm_mday != d) /* 2026-02-30 rolls over */
        return -1;
    *out = (int64_t)t;
    return 0;
}

/* "5", "12.5" or "12.5%". */
static int parse_percent(const char *s, double *out)
{
    char *end;
    if (!isdigit((unsigned char)*s) || strpbrk(s, "xXeE")) return -1;
    double v = strtod(s, &end);
    if (*end == '%') end++;
    if (*end || !isfinite(v) || v < 0 || v > 100) return -1;
    *out = v;
    return 0;
}

static int egress_defined(const struct config *cfg, const char *name)
{
    return config_find_egress(cfg, name) != NULL;
}

static void egress_names(const struct config *cfg, struct strbuf *list)
{
    for (size_t i = 0; i < cfg->n_egress; i++)
        strbuf_printf(list, "%s%s", i ? ", " : "", cfg->egress[i].name);
    if (!cfg->n_egress) strbuf_puts(list, "none");
}

static void report_undefined_egress(struct loader *ld, const struct at *at, const char *name)
{
    struct strbuf list = STRBUF_INIT;
    egress_names(ld->cfg, &list);
    cfg_error_at(ld, at->where, "%s: egress \"%s\" is not defined (defined: %s)", at->label, name,
                 strbuf_str(&list));
    strbuf_free(&list);
}

static void load_schedule(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {"at", "percent", NULL};
    struct ramp_conf *r = &ld->cfg->ramp;
    struct at *items;
    size_t n;
    if (cfg_take_list(ld, at, &items, &n) < 0) return;
    r->schedule = xcalloc(n, sizeof *r->schedule);
    for (size_t i = 0; i < n; i++) {
        struct at v[2];
        struct ramp_step step = {0, 0};
        int ok = 1;
        if (cfg_take_mapping(ld, &items[i], keys, v) < 0) continue;
        if (!v[0].node || !v[1].node) {
            cfg_error_at(ld, items[i].where,
                         "%s: needs both at and percent (e.g. { at: "
                         "\"2026-12-01T00:00:00Z\", percent: 5 })",
                         items[i].label);
            ok = 0;
        }
        const char *s = v[0].node ? cfg_scalar_text(ld, &v[0]) : NULL;
        if (v[0].node && !s) {
            ok = 0;
        } else if (s && parse_utc_time(s, &step.at) < 0) {
            cfg_error_at(ld, v[0].where,
                         "%s: \"%s\" is not a UTC date and time (use 2026-12-01T00:00:00Z, "
                         "2026-12-01T00:00:00+00:00 or 2026-12-01)",
                         v[0].label, s);
            ok = 0;
        } else if (s && r->n_schedule && step.at <= r->schedule[r->n_schedule - 1].at) {
            cfg_error_at(ld, v[0].where,
                         "%s: %s is not later than the step before it (steps must be in time "
                         "order)",
                         v[0].label, s);
            ok = 0;
        }
        s = v[1].node ? cfg_scalar_text(ld, &v[1]) : NULL;
        if (v[1].node && !s)
            ok = 0;
        else if (s && parse_percent(s, &step.percent) < 0) {
            cfg_error_at(ld, v[1].where, "%s: \"%s\" is not a percentage from 0 to 100", v[1].label,
                         s);
            ok = 0;
        }
        if (ok) r->schedule[r->n_schedule++] = step;
    }
    free(items);
}

/* ---------------------------------------------------------------- ramp.groups */

void cfg_free_route_group(struct route_group *g)
{
    char **lists[] = {g->origins, g->sender_domains, g->rcpt_domains, g->egress, g->key, g->spill};
    size_t counts[] = {g->n_origins, g->n_sender_domains, g->n_rcpt_domains, g->n_egress,
                       g->n_key,     g->n_spill};
    for (size_t l = 0; l < sizeof counts / sizeof counts[0]; l++) {
        for (size_t i = 0; i < counts[l]; i++)
            free(lists[l][i]);
        free(lists[l]);
    }
    for (size_t i = 0; i < g->n_schedule; i++)
        free(g->schedule[i].weights);
    free(g->schedule);
    free(g->name);
}

/* The index of an egress in the group, -1 when it is not one of them. */
static long group_egress_index(const struct route_group *g, const char *name)
{
    for (size_t i = 0; name && i < g->n_egress; i++)
        if (!strcmp(g->egress[i], name)) return (long)i;
    return -1;
}

/* "example.com" or ".example.com", lower-cased in place. */
static void load_domain_list(struct loader *ld, const struct at *at, char ***dst, size_t *n,
                             int *ok)
{
    if (cfg_get_string_list(ld, at, dst, n) < 0) {
        *ok = 0;
        return;
    }
    for (size_t i = 0; i < *n; i++) {
        char *d = (*dst)[i];
        for (char *c = d; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        if (!cfg_valid_hostname(d[0] == '.' ? d + 1 : d)) {
            cfg_error_at(ld, at->where,
                         "%s: \"%s\" is not a domain (example.com exactly, .example.com its "
                         "subdomains)",
                         at->label, d);
            *ok = 0;
        }
    }
}

/* match: { origins, sender_domains, rcpt_domains } */
static void load_group_match(struct loader *ld, const struct at *at, struct route_group *g, int *ok)
{
    static const char *const keys[] = {"origins", "sender_domains", "rcpt_domains", NULL};
    struct at v[3];
    if (cfg_take_mapping(ld, at, keys, v) < 0) {
        *ok = 0;
        return;
    }
    if (v[0].node) {
        if (cfg_get_string_list(ld, &v[0], &g->origins, &g->n_origins) < 0) *ok = 0;
        for (size_t i = 0; i < g->n_origins; i++)
            if (!config_find_origin(ld->cfg, g->origins[i])) {
                cfg_error_at(ld, v[0].where, "%s: origin \"%s\" is not defined", v[0].label,
                             g->origins[i]);
                *ok = 0;
            }
    }
    if (v[1].node) load_domain_list(ld, &v[1], &g->sender_domains, &g->n_sender_domains, ok);
    if (v[2].node) load_domain_list(ld, &v[2], &g->rcpt_domains, &g->n_rcpt_domains, ok);
}

/* schedule: [{ at: TIME, weights: { EGRESS: weight, ... } }]; an egress left out weighs 0. */
static void load_group_schedule(struct loader *ld, const struct at *at, struct route_group *g,
                                int *ok)
{
    static const char *const keys[] = {"at", "weights", NULL};
    struct at *items;
    size_t n;
    if (cfg_take_list(ld, at, &items, &n) < 0) {
        *ok = 0;
        return;
    }
    g->schedule = xcalloc(n ? n : 1, sizeof *g->schedule);
    for (size_t i = 0; i < n; i++) {
        struct at v[2];
        struct route_group_step step = {0, xcalloc(g->n_egress ? g->n_egress : 1, sizeof(double))};
        int step_ok = 1;
        double sum = 0;
        if (cfg_take_mapping(ld, &items[i], keys, v) < 0 || !v[0].node || !v[1].node) {
            if (!v[0].node || !v[1].node)
                cfg_error_at(ld, items[i].where,
                             "%s: needs at and weights (e.g. { at: \"2026-12-01T00:00:00Z\", "
                             "weights: { legacy: 90, cloud: 10 } })",
                             items[i].label);
            free(step.weights);
            *ok = 0;
            continue;
        }
        const char *s = cfg_scalar_text(ld, &v[0]);
        if (!s || parse_utc_time(s, &step.at) < 0) {
            if (s)
                cfg_error_at(ld, v[0].where,
                             "%s: \"%s\" is not a UTC date and time (use 2026-12-01T00:00:00Z "
                             "or 2026-12-01)",
                             v[0].label, s);
            step_ok = 0;
        } else if (g->n_schedule && step.at <= g->schedule[g->n_schedule - 1].at) {
            cfg_error_at(ld, v[0].where,
                         "%s: %s is not later than the step before it (steps must be in time "
                         "order)",
                         v[0].label, s);
            step_ok = 0;
        }
        if (!fy_node_is_mapping(v[1].node)) {
            cfg_error_at(ld, v[1].where, "%s: expected \"egress: weight\" lines, found %s",
                         v[1].label, cfg_kind_name(v[1].node));
            step_ok = 0;
        } else {
            void *it = NULL;
            struct cfg_pair pair;
            while (cfg_mapping_next(ld, &v[1], &it, &pair)) {
                struct at val = {.node = pair.value, .where = pair.where};
                val.where = cfg_node_pos(ld, val.node, pair.where);
                cfg_label_set(&val, "%s.%s", v[1].label, pair.name ? pair.name : "?");
                long e = group_egress_index(g, pair.name);
                const char *w = cfg_scalar_text(ld, &val);
                char *end = NULL;
                double weight = w ? strtod(w, &end) : -1;
                if (e < 0) {
                    cfg_error_at(ld, pair.where,
                                 "%s: \"%s\" is not one of the group's egresses (list it in "
                                 "egress)",
                                 v[1].label, pair.name ? pair.name : "?");
                    step_ok = 0;
                } else if (!w || !isdigit((unsigned char)*w) || *end || !isfinite(weight) ||
                           weight > 1e6) {
                    if (w)
                        cfg_error_at(ld, val.where,
                                     "%s: \"%s\" is not a weight (a number from 0 to 1000000)",
                                     val.label, w);
                    step_ok = 0;
                } else {
                    step.weights[e] = weight;
                    sum += weight;
                }
            }
            if (step_ok && sum <= 0) {
                cfg_error_at(ld, v[1].where, "%s: at least one weight must be above 0", v[1].label);
                step_ok = 0;
            }
        }
        if (!step_ok) {
            free(step.weights);
            *ok = 0;
            continue;
        }
        g->schedule[g->n_schedule++] = step;
    }
    free(items);
}

enum {
    GR_NAME,
    GR_MATCH,
    GR_EGRESS,
    GR_SCHEDULE,
    GR_INTERPOLATE,
    GR_KEY,
    GR_SPILL,
    GR_AUTOPILOT,
    GR_COUNT
};

/* autopilot: { enabled, window, step_after, gates: { ... } } into a (defaults applied), for a
 * schedule of n_schedule steps. */
static void load_autopilot(struct loader *ld, const struct at *at, struct autopilot_conf *a,
                           size_t n_schedule, int *ok)
{
    struct at v[4], gates[5];
    if (cfg_take_settings(ld, at, &route_ramp_autopilot_settings, a, NULL, v) < 0) {
        *ok = 0;
        return;
    }
    for (size_t k = 0; k < 4; k++)
        if (v[k].bad) *ok = 0;
    if (v[3].node) {
        if (cfg_take_settings(ld, &v[3], &route_ramp_gate_settings, a, NULL, gates) < 0) {
            *ok = 0;
            return;
        }
        for (size_t k = 0; k < 5; k++)
            if (gates[k].bad) *ok = 0;
    }
    if (a->window <= 0 || a->window > 86400) {
        cfg_error_at(ld, at->where, "%s: window must be longer than 0 and at most 1d", at->label);
        *ok = 0;
    }
    if (a->enabled && n_schedule < 1) {
        cfg_error_at(ld, at->where, "%s: the autopilot needs a schedule to move along", at->label);
        *ok = 0;
    }
}

static void load_one_group(struct loader *ld, const struct at *item, struct route_group *g, int *ok)
{
    struct ramp_conf *r = &ld->cfg->ramp;
    struct at v[GR_COUNT];
    settings_apply_defaults(&route_ramp_group_settings, g);
    settings_apply_defaults(&route_ramp_autopilot_settings, &g->autopilot);
    settings_apply_defaults(&route_ramp_gate_settings, &g->autopilot);
    if (cfg_take_settings(ld, item, &route_ramp_group_settings, g, NULL, v) < 0) {
        *ok = 0;
        return;
    }
    for (size_t k = 0; k < GR_COUNT; k++)
        if (v[k].bad) *ok = 0;
    if (!v[GR_NAME].node || !v[GR_EGRESS].node) {
        cfg_error_at(ld, item->where,
                     "%s: needs name and egress (e.g. { name: subsidiary, match: { "
                     "sender_domains: [sub.example.com] }, egress: [legacy, cloud] })",
                     item->label);
        *ok = 0;
        return;
    }
    if (g->name && (!strcmp(g->name, "default") || !*g->name || strchr(g->name, ' '))) {
        cfg_error_at(ld, v[GR_NAME].where,
                     "%s: \"%s\" cannot name a group (\"default\" is the ramp's own from/to "
                     "group; no spaces)",
                     v[GR_NAME].label, g->name);
        *ok = 0;
    }
    for (size_t k = 0; g->name && k < r->n_groups; k++)
        if (!strcmp(r->groups[k].name, g->name)) {
            cfg_error_at(ld, v[GR_NAME].where, "%s: a group named \"%s\" is defined already",
                         v[GR_NAME].label, g->name);
            *ok = 0;
        }
    if (!g->n_egress) {
        cfg_error_at(ld, v[GR_EGRESS].where, "%s: needs at least one egress", v[GR_EGRESS].label);
        *ok = 0;
    }
    int egress_ok = !v[GR_EGRESS].bad;
    for (size_t i = 0; i < g->n_egress; i++) {
        if (!egress_defined(ld->cfg, g->egress[i])) {
            report_undefined_egress(ld, &v[GR_EGRESS], g->egress[i]);
            egress_ok = 0;
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(g->egress[i], g->egress[j])) {
                cfg_error_at(ld, v[GR_EGRESS].where, "%s: \"%s\" is listed twice",
                             v[GR_EGRESS].label, g->egress[i]);
                egress_ok = 0;
            }
    }
    if (!egress_ok) *ok = 0;
    if (v[GR_MATCH].node) load_group_match(ld, &v[GR_MATCH], g, ok);
    /* the weights name the group's egresses: read them once those are known */
    if (v[GR_SCHEDULE].node && egress_ok) load_group_schedule(ld, &v[GR_SCHEDULE], g, ok);
    if (v[GR_KEY].node && !v[GR_KEY].bad) check_key_parts(ld, &v[GR_KEY], g->key, &g->n_key);
    if (v[GR_AUTOPILOT].node)
        load_autopilot(ld, &v[GR_AUTOPILOT], &g->autopilot, g->n_schedule, ok);
    for (size_t i = 0; i < g->n_spill; i++)
        if (group_egress_index(g, g->spill[i]) < 0) {
            cfg_error_at(ld, v[GR_SPILL].where,
                         "%s: \"%s\" is not one of the group's egresses (list it in egress)",
                         v[GR_SPILL].label, g->spill[i]);
            *ok = 0;
        }
}

/* ramp.groups: [ { name, match, egress, schedule, interpolate, key, spill } ] */
static void load_groups(struct loader *ld, const struct at *at)
{
    struct ramp_conf *r = &ld->cfg->ramp;
    struct at *items;
    size_t n;
    if (cfg_take_list(ld, at, &items, &n) < 0) return;
    for (size_t i = 0; i < n; i++) {
        struct route_group g = {0};
        int ok = 1;
        load_one_group(ld, &items[i], &g, &ok);
        if (!ok) {
            cfg_free_route_group(&g);
            continue;
        }
        r->groups = xrealloc(r->groups, (r->n_groups + 1) * sizeof *r->groups);
        r->groups[r->n_groups++] = g;
    }
    free(items);
}

void cfg_load_ramp(struct loader *ld, const struct at *at, const struct at *egress_at)
{
    struct ramp_conf *r = &ld->cfg->ramp;
    struct at v[8];
    settings_apply_defaults(&route_ramp_autopilot_settings, &r->autopilot);
    settings_apply_defaults(&route_ramp_gate_settings, &r->autopilot);
    if (at->node && cfg_take_settings(ld, at, &route_ramp_settings, ld->cfg, NULL, v) < 0) return;
    if (!at->node) memset(v, 0, sizeof v);
    if (v[0].node) {
        if (!v[0].bad && !egress_defined(ld->cfg, r->from))
            report_undefined_egress(ld, &v[0], r->from);
    } else if (egress_at->node && ld->cfg->n_egress) {
        /* The file defines its own egresses: the default "legacy" may not exist. */
        const struct at *where = at->node ? at : egress_at;
        struct strbuf names = STRBUF_INIT;
        egress_names(ld->cfg, &names);
        cfg_error_at(ld, where->where,
                     "ramp.from is missing: name the egress that carries mail before the "
                     "migration (defined: %s)",
                     strbuf_str(&names));
        strbuf_free(&names);
    }
    if (v[1].node && !v[1].bad) {
        if (!egress_defined(ld->cfg, r->to))
            report_undefined_egress(ld, &v[1], r->to);
        else if (r->from && !strcmp(r->from, r->to))
            cfg_error_at(ld, v[1].where, "%s: \"%s\" is the same egress as ramp.from", v[1].label,
                         r->to);
    }
    if (v[2].node && !v[2].bad) check_key_parts(ld, &v[2], r->key, &r->n_key);
    if (v[3].node) {
        load_schedule(ld, &v[3]);
        if (r->n_schedule && !v[1].node)
            cfg_error_at(ld, v[3].where, "%s: a schedule needs ramp.to (the egress mail moves to)",
                         v[3].label);
    }
    if (v[5].node) cfg_load_pins(ld, &v[5]);
    if (v[6].node) load_groups(ld, &v[6]);
    if (v[7].node) {
        int ok = 1;
        load_autopilot(ld, &v[7], &r->autopilot, r->n_schedule, &ok);
        if (ok && r->autopilot.enabled && !r->to)
            cfg_error_at(ld, v[7].where, "%s: the autopilot needs ramp.to to move mail to",
                         v[7].label);
    }
}

/* ---------------------------------------------------------- providers, caps, shaping, pins */

/* Providers may be defined in a policy file read after the one that names them: remember the
 * name and check it once everything is read. */
static void provider_ref(struct loader *ld, const struct at *at, const char *name)
{
    struct loader *root = ld->root ? ld->root : ld;
    struct strbuf sb = STRBUF_INIT;
    if (at->where.line > 0)
        strbuf_printf(&sb, "%s:%d:%d: " LABEL_FMT, ld->file, at->where.line, at->where.col,
                      LABEL_ARGS(at));
    else
        strbuf_printf(&sb, "%s: " LABEL_FMT, ld->file, LABEL_ARGS(at));
    root->provider_refs =
        xrealloc(root->provider_refs, (root->n_provider_refs + 1) * sizeof *root->provider_refs);
    struct provider_ref *r = &root->provider_refs[root->n_provider_refs++];
    r->text_prefix = strbuf_detach(&sb, NULL);
    r->name = xstrdup(name);
    r->sort = root == ld ? at->where : ld->sort_within;
}

void cfg_check_provider_refs(struct loader *ld)
{
    for (size_t i = 0; i < ld->n_provider_refs; i++) {
        struct provider_ref *r = &ld->provider_refs[i];
        if (strcmp(r->name, "other") && !config_find_provider(ld->cfg, r->name)) {
            struct strbuf sb = STRBUF_INIT;
            strbuf_printf(&sb, "%sprovider \"%s\" is not defined (defined: ", r->text_prefix,
                          r->name);
            for (size_t j = 0; j < ld->cfg->n_providers; j++)
                strbuf_printf(&sb, "%s, ", ld->cfg->providers[j].name);
            strbuf_puts(&sb, "other)");
            cfg_add_text(ld, r->sort, strbuf_detach(&sb, NULL));
        }
        free(r->text_prefix);
        free(r->name);
    }
    free(ld->provider_refs);
    ld->provider_refs = NULL;
    ld->n_provider_refs = 0;
}

void cfg_free_provider(struct provider_conf *p)
{
    free(p->name);
    for (size_t i = 0; i < p->n_mx_suffixes; i++)
        free(p->mx_suffixes[i]);
    free(p->mx_suffixes);
    free(p->source);
}

/* providers: { NAME: { mx_suffixes: [...], source: "..." } } */
void cfg_load_providers(struct loader *ld, const struct at *at)
{
    struct config *cfg = ld->cfg;
    struct at *items;
    size_t n;
    if (cfg_take_named(ld, at, "provider", &items, &n) < 0) return;
    for (size_t i = 0; i < n; i++) {
        struct at v[2];
        if (!strcmp(items[i].name, "other") || config_find_provider(cfg, items[i].name)) {
            cfg_error_at(ld, items[i].where,
                         "%s: is already defined (\"other\" is reserved for destinations no "
                         "provider claims)",
                         items[i].label);
            continue;
        }
        struct provider_conf p = {0};
        settings_apply_defaults(&route_provider_settings, &p);
        if (cfg_take_settings(ld, &items[i], &route_provider_settings, &p, NULL, v) < 0) continue;
        p.name = xstrdup(items[i].name);
        if (v[0].node) {
            struct at *sfx;
            size_t ns;
            if (cfg_take_list(ld, &v[0], &sfx, &ns) == 0) {
                p.mx_suffixes = xcalloc(ns, sizeof *p.mx_suffixes);
                for (size_t j = 0; j < ns; j++) {
                    const char *s = cfg_scalar_text(ld, &sfx[j]);
                    if (!s) continue;
                    while (*s == '.')
                        s++;
                    char *copy = xstrdup(s);
                    size_t len = strlen(copy);
                    while (len && copy[len - 1] == '.')
                        copy[--len] = '\0';
                    for (char *c = copy; *c; c++)
                        *c = (char)tolower((unsigned char)*c);
                    if (!cfg_valid_hostname(copy)) {
                        cfg_error_at(ld, sfx[j].where, "%s: \"%s\" is not a host name suffix",
                                     sfx[j].label, s);
                        free(copy);
                        continue;
                    }
                    p.mx_suffixes[p.n_mx_suffixes++] = copy;
                }
                free(sfx);
            }
        }
        if (!p.n_mx_suffixes)
            cfg_error_at(ld, items[i].where,
                         "%s: mx_suffixes is missing or empty (e.g. mx_suffixes: [google.com])",
                         items[i].label);
        cfg->providers = xrealloc(cfg->providers, (cfg->n_providers + 1) * sizeof *cfg->providers);
        cfg->providers[cfg->n_providers++] = p;
    }
    free(items);
}

/* An egress name that must exist already (egresses are only defined in the main file, which
 * is read before any policy file). */
static int check_egress_ref(struct loader *ld, const struct at *at, char **dst)
{
    if (cfg_get_string(ld, at, dst) < 0) return -1;
    if (egress_defined(ld->cfg, *dst)) return 0;
    report_undefined_egress(ld, at, *dst);
    return -1;
}

/* caps: [ { egress, provider, per_minute, per_hour, per_day, connections, per_connection } ] */
void cfg_load_caps(struct loader *ld, const struct at *at)
{
    struct config *cfg = ld->cfg;
    struct at *items;
    size_t n;
    if (cfg_take_list(ld, at, &items, &n) < 0) return;
    for (size_t i = 0; i < n; i++) {
        struct at v[7];
        struct cap_conf c = {0};
        settings_apply_defaults(&route_cap_settings, &c);
        if (cfg_take_settings(ld, &items[i], &route_cap_settings, &c, NULL, v) < 0) continue;
        int ok = 1, limits = 0;
        if (!v[0].node || !v[1].node) {
            cfg_error_at(ld, items[i].where,
                         "%s: needs egress and provider (e.g. { egress: cloud, provider: "
                         "microsoft-consumer, per_hour: 500 })",
                         items[i].label);
            ok = 0;
        }
        if (v[0].node && check_egress_ref(ld, &v[0], &c.egress) < 0) ok = 0;
        if (v[1].node) {
            if (cfg_get_string(ld, &v[1], &c.provider) < 0)
                ok = 0;
            else
                provider_ref(ld, &v[1], c.provider);
        }
        for (size_t k = 2; k < route_cap_settings.n_items; k++) { /* the limits */
            if (!v[k].node) continue;
            limits++;
            if (v[k].bad) ok = 0;
        }
        if (!limits && ok) {
            cfg_error_at(ld, items[i].where,
                         "%s: sets no limit (per_minute, per_hour, per_day, connections or "
                         "per_connection)",
                         items[i].label);
            ok = 0;
        }
        for (size_t k = 0; ok && k < cfg->n_caps; k++)
            if (!strcmp(cfg->caps[k].egress, c.egress) &&
                !strcmp(cfg->caps[k].provider, c.provider)) {
                cfg_error_at(ld, items[i].where, "%s: egress %s x provider %s already has caps",
                             items[i].label, c.egress, c.provider);
                ok = 0;
            }
        if (!ok) {
            free(c.egress);
            free(c.provider);
            continue;
        }
        cfg->caps = xrealloc(cfg->caps, (cfg->n_caps + 1) * sizeof *cfg->caps);
        cfg->caps[cfg->n_caps++] = c;
    }
    free(items);
}

int config_parse_rate(const char *text, int *count, int64_t *period)
{
    static const struct {
        const char *name;
        int64_t seconds;
    } units[] = {{"s", 1},       {"sec", 1},  {"second", 1},  {"m", 60},    {"min", 60},
                 {"minute", 60}, {"h", 3600}, {"hour", 3600}, {"d", 86400}, {"day", 86400}};
    char *end;
    if (!text || !isdigit((unsigned char)*text)) return -1;
    errno = 0;
    long n = strtol(text, &end, 10);
    if (errno || n < 1 || n > 100000000 || *end != '/' || !end[1]) return -1;
    const char *unit = end + 1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (!strcmp(unit, units[i].name)) {
            *count = (int)n;
            *period = units[i].seconds;
            return 0;
        }
    }
    int64_t d;
    if (util_parse_duration(unit, &d) < 0 || d <= 0) return -1;
    *count = (int)n;
    *period = d;
    return 0;
}

int config_shaping_matches(const struct shaping_rule *r, int code, const char *enhanced,
                           const char *text)
{
    if (r->code && r->code != code) return 0;
    if (r->n_enhanced) {
        size_t i = 0;
        while (i < r->n_enhanced && !(enhanced && !strcasecmp(enhanced, r->enhanced[i])))
            i++;
        if (i == r->n_enhanced) return 0;
    }
    return !r->text || regexec(&r->text_re, text ? text : "", 0, NULL, 0) == 0;
}

const char *config_shaping_action_name(enum shaping_action a)
{
    return settings_find_item(&route_shaping_settings, "action")->choices[a];
}

void cfg_free_shaping_rule(struct shaping_rule *r)
{
    free(r->name);
    for (size_t i = 0; i < r->n_enhanced; i++)
        free(r->enhanced[i]);
    free(r->enhanced);
    if (r->text) regfree(&r->text_re);
    free(r->text);
    for (size_t i = 0; i < r->n_providers; i++)
        free(r->providers[i]);
    free(r->providers);
    for (size_t i = 0; i < r->n_egress; i++)
        free(r->egress[i]);
    free(r->egress);
    free(r->source);
    free(r->file);
}

/* A single value or a list of them. */
static void get_one_or_list(struct loader *ld, const struct at *at, char ***dst, size_t *n)
{
    if (fy_node_is_sequence(at->node)) {
        cfg_get_string_list(ld, at, dst, n);
        return;
    }
    char *one = NULL;
    if (cfg_get_string(ld, at, &one) < 0) return;
    *dst = xcalloc(1, sizeof **dst);
    (*dst)[0] = one;
    *n = 1;
}

static int valid_enhanced_code(const char *s)
{
    /* class "." subject "." detail, RFC 3463: 2|4|5 . 1-3 digits . 1-3 digits */
    int cls, a, b, used = 0;
    if (sscanf(s, "%1d.%3d.%3d%n", &cls, &a, &b, &used) != 3 || s[used]) return 0;
    return (cls == 2 || cls == 4 || cls == 5) && a >= 0 && b >= 0;
}

static void load_match(struct loader *ld, const struct at *at, struct shaping_rule *r, int *ok)
{
    static const char *const keys[] = {"code", "enhanced", "text", NULL};
    struct at v[3];
    if (cfg_take_mapping(ld, at, keys, v) < 0) {
        *ok = 0;
        return;
    }
    if (v[0].node && cfg_get_int(ld, &v[0], 200, 599, &r->code) < 0) *ok = 0;
    if (v[1].node) {
        get_one_or_list(ld, &v[1], &r->enhanced, &r->n_enhanced);
        for (size_t i = 0; i < r->n_enhanced; i++)
            if (!valid_enhanced_code(r->enhanced[i])) {
                cfg_error_at(ld, v[1].where,
                             "%s: \"%s\" is not an enhanced status code (e.g. 4.7.650, RFC 3463)",
                             v[1].label, r->enhanced[i]);
                *ok = 0;
            }
    }
    if (v[2].node && cfg_get_string(ld, &v[2], &r->text) == 0) {
        int rc = regcomp(&r->text_re, r->text, REG_EXTENDED | REG_ICASE | REG_NOSUB);
        if (rc != 0) {
            char msg[200];
            regerror(rc, &r->text_re, msg, sizeof msg);
            cfg_error_at(ld, v[2].where,
                         "%s: \"%s\" is not a POSIX extended regular expression: %s", v[2].label,
                         r->text, msg);
            free(r->text);
            r->text = NULL;
            *ok = 0;
        }
    }
    if (!v[0].node && !v[1].node && !v[2].node) {
        cfg_error_at(ld, at->where, "%s: matches every reply; give code, enhanced or text",
                     at->label);
        *ok = 0;
    }
}

enum {
    SH_NAME,
    SH_MATCH,
    SH_PROVIDERS,
    SH_EGRESS,
    SH_THRESHOLD,
    SH_ACTION,
    SH_RATE,
    SH_CONNECTIONS,
    SH_DURATION,
    SH_RECOVER,
    SH_SOURCE,
    SH_REPUTATION,
    SH_COUNT
};

static void load_one_rule(struct loader *ld, const struct at *item, struct shaping_rule *r, int *ok)
{
    struct config *cfg = ld->cfg;
    struct at v[SH_COUNT];
    settings_apply_defaults(&route_shaping_settings, r);
    settings_apply_defaults(&route_shaping_threshold_settings, r);
    if (cfg_take_settings(ld, item, &route_shaping_settings, r, NULL, v) < 0) {
        *ok = 0;
        return;
    }
    for (size_t k = 0; k < SH_COUNT; k++)
        if (v[k].bad) *ok = 0;
    static const char *const required[] = {"name",   "match", NULL, NULL,      NULL,
                                           "action", NULL,    NULL, "duration"};
    for (size_t k = 0; k < sizeof required / sizeof required[0]; k++)
        if (required[k] && !v[k].node) {
            cfg_error_at(ld, item->where, "%s: %s is missing", item->label, required[k]);
            *ok = 0;
        }
    if (v[SH_NAME].node && !v[SH_NAME].bad) {
        for (size_t k = 0; k < cfg->n_shaping; k++)
            if (!strcmp(cfg->shaping[k].name, r->name)) {
                cfg_error_at(ld, v[SH_NAME].where, "%s: a rule named \"%s\" is already at %s:%d",
                             v[SH_NAME].label, r->name, cfg->shaping[k].file, cfg->shaping[k].line);
                *ok = 0;
            }
    } else {
        *ok = 0;
    }
    if (v[SH_MATCH].node) load_match(ld, &v[SH_MATCH], r, ok);
    if (v[SH_PROVIDERS].node) {
        struct at *p;
        size_t np;
        if (cfg_take_list(ld, &v[SH_PROVIDERS], &p, &np) == 0) {
            for (size_t k = 0; k < np; k++)
                if (fy_node_is_scalar(p[k].node) && !cfg_is_null(p[k].node))
                    provider_ref(ld, &p[k], fy_node_get_scalar0(p[k].node));
            free(p);
        }
    }
    if (v[SH_EGRESS].node) {
        struct at *e;
        size_t ne;
        if (cfg_take_list(ld, &v[SH_EGRESS], &e, &ne) == 0) {
            for (size_t k = 0; k < ne; k++) {
                const char *name = fy_node_is_scalar(e[k].node) && !cfg_is_null(e[k].node)
                                       ? fy_node_get_scalar0(e[k].node)
                                       : NULL;
                if (name && !egress_defined(cfg, name)) {
                    report_undefined_egress(ld, &e[k], name);
                    *ok = 0;
                }
            }
            free(e);
        }
    }
    if (v[SH_THRESHOLD].node) {
        struct at t[2];
        if (cfg_take_settings(ld, &v[SH_THRESHOLD], &route_shaping_threshold_settings, r, NULL,
                              t) == 0 &&
            (t[0].bad || t[1].bad))
            *ok = 0;
    }
    int action = v[SH_ACTION].node && !v[SH_ACTION].bad ? (int)r->action : -1;
    if (action < 0) *ok = 0;
    if (v[SH_RATE].node) {
        const char *s = cfg_scalar_text(ld, &v[SH_RATE]);
        if (s && config_parse_rate(s, &r->rate_count, &r->rate_period) < 0) {
            cfg_error_at(ld, v[SH_RATE].where,
                         "%s: \"%s\" is not a rate (messages per period, e.g. 1/min, 10/h, "
                         "500/day)",
                         v[SH_RATE].label, s);
            *ok = 0;
        } else if (!s) {
            *ok = 0;
        }
    }
    if (action == SHAPING_THROTTLE && !v[SH_RATE].node && !v[SH_CONNECTIONS].node) {
        cfg_error_at(
            ld, v[SH_ACTION].where,
            "%s: throttle needs rate and/or connections (e.g. rate: 1/min, connections: 1)",
            v[SH_ACTION].label);
        *ok = 0;
    }
    if (v[SH_RECOVER].node) {
        static const char *const rkeys[] = {"quiet", "step", NULL};
        struct at rc[2];
        if (cfg_take_mapping(ld, &v[SH_RECOVER], rkeys, rc) == 0) {
            if (!rc[0].node || !rc[1].node) {
                cfg_error_at(ld, v[SH_RECOVER].where,
                             "%s: needs quiet and step (e.g. { quiet: 30m, step: 2 })",
                             v[SH_RECOVER].label);
                *ok = 0;
            }
            if (rc[0].node && cfg_get_duration(ld, &rc[0], &r->recover_quiet) < 0) *ok = 0;
            const char *s = rc[1].node ? cfg_scalar_text(ld, &rc[1]) : NULL;
            char *end = NULL;
            double step = s ? strtod(s, &end) : 0;
            if (s && (!isdigit((unsigned char)*s) || *end || !isfinite(step) || step <= 1.0 ||
                      step > 100.0)) {
                cfg_error_at(ld, rc[1].where,
                             "%s: \"%s\" is not a step (a number above 1 and at most 100 that "
                             "multiplies the rate)",
                             rc[1].label, s);
                *ok = 0;
            } else if (s) {
                r->recover_step = step;
            } else if (rc[1].node) {
                *ok = 0;
            }
        }
    }
}

/* shaping: [ { name, match: {code, enhanced, text}, providers, egress, threshold: {hits,
 * window}, action, rate, connections, duration, recover: {quiet, step}, source } ] */
void cfg_load_shaping(struct loader *ld, const struct at *at)
{
    struct config *cfg = ld->cfg;
    struct at *items;
    size_t n;
    if (cfg_take_list(ld, at, &items, &n) < 0) return;
    for (size_t i = 0; i < n; i++) {
        struct shaping_rule r = {0};
        int ok = 1;
        load_one_rule(ld, &items[i], &r, &ok);
        if (!ok) {
            cfg_free_shaping_rule(&r);
            continue;
        }
        r.file = xstrdup(ld->file);
        r.line = items[i].where.line;
        cfg->shaping = xrealloc(cfg->shaping, (cfg->n_shaping + 1) * sizeof *cfg->shaping);
        cfg->shaping[cfg->n_shaping++] = r;
    }
    free(items);
}

void cfg_free_pins(struct ramp_pin *pins, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(pins[i].name);
        free(pins[i].egress);
    }
    free(pins);
}

/* One kind of pin: { NAME: EGRESS } or { NAME: { egress: EGRESS, until: TIME } }. */
static void load_pin_kind(struct loader *ld, const struct at *at, int kind, struct ramp_pin **pins,
                          size_t *n_pins)
{
    static const char *const keys[] = {"egress", "until", NULL};
    if (cfg_is_null(at->node)) return;
    if (!fy_node_is_mapping(at->node)) {
        cfg_error_at(ld, at->where, "%s: expected \"name: egress\" lines, found %s", at->label,
                     cfg_kind_name(at->node));
        return;
    }
    void *it = NULL;
    struct cfg_pair pair;
    while (cfg_mapping_next(ld, at, &it, &pair)) {
        const char *name = pair.name;
        struct pos kpos = pair.where;
        struct at val = {.node = pair.value, .where = kpos};
        val.where = cfg_node_pos(ld, val.node, kpos);
        cfg_label_set(&val, "%s.%s", at->label, name ? name : "?");
        if (!name || !*name) {
            cfg_error_at(ld, kpos, "%s: a pin needs a name", at->label);
            continue;
        }
        struct ramp_pin pin = {0};
        int ok = 1;
        if (kind == 0 && !config_find_origin(ld->cfg, name)) {
            cfg_error_at(ld, kpos, "%s: origin \"%s\" is not defined", at->label, name);
            ok = 0;
        } else if (kind == 1 && !cfg_valid_hostname(name)) {
            cfg_error_at(ld, kpos, "%s: \"%s\" is not a domain name", at->label, name);
            ok = 0;
        } else if (kind == 2) {
            struct at ref = {.where = kpos};
            cfg_label_set(&ref, "%s", at->label);
            provider_ref(ld, &ref, name);
        }
        if (fy_node_is_mapping(val.node)) {
            struct at v[2];
            if (cfg_take_mapping(ld, &val, keys, v) < 0) {
                ok = 0;
            } else {
                if (!v[0].node) {
                    cfg_error_at(ld, val.where, "%s: egress is missing", val.label);
                    ok = 0;
                } else if (check_egress_ref(ld, &v[0], &pin.egress) < 0) {
                    ok = 0;
                }
                const char *s = v[1].node ? cfg_scalar_text(ld, &v[1]) : NULL;
                if (v[1].node && (!s || parse_utc_time(s, &pin.until) < 0)) {
                    if (s)
                        cfg_error_at(ld, v[1].where,
                                     "%s: \"%s\" is not a UTC date and time (use "
                                     "2026-12-01T00:00:00Z or 2026-12-01)",
                                     v[1].label, s);
                    ok = 0;
                }
            }
        } else if (check_egress_ref(ld, &val, &pin.egress) < 0) {
            ok = 0;
        }
        for (size_t i = 0; ok && i < *n_pins; i++)
            if (!strcasecmp((*pins)[i].name, name)) {
                cfg_error_at(ld, kpos, "%s: \"%s\" is pinned twice", at->label, name);
                ok = 0;
            }
        if (!ok) {
            free(pin.egress);
            continue;
        }
        pin.name = xstrdup(name);
        if (kind == 1)
            for (char *c = pin.name; *c; c++)
                *c = (char)tolower((unsigned char)*c);
        *pins = xrealloc(*pins, (*n_pins + 1) * sizeof **pins);
        (*pins)[(*n_pins)++] = pin;
    }
}

/* ramp.pins: { origins: {...}, domains: {...}, providers: {...} } */
void cfg_load_pins(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {"origins", "domains", "providers", NULL};
    struct ramp_conf *r = &ld->cfg->ramp;
    struct at v[3];
    if (cfg_take_mapping(ld, at, keys, v) < 0) return;
    if (v[0].node) load_pin_kind(ld, &v[0], 0, &r->pin_origins, &r->n_pin_origins);
    if (v[1].node) load_pin_kind(ld, &v[1], 1, &r->pin_domains, &r->n_pin_domains);
    if (v[2].node) load_pin_kind(ld, &v[2], 2, &r->pin_providers, &r->n_pin_providers);
}
