/* route.c - the route stage's public face (route.h): startup and shutdown, the decision for
 * one recipient (pins, then the ramp, then caps and shaping with spill to the other egress),
 * counting, receivers' feedback and the operator's commands. Owns the one route_world; the
 * arithmetic is in ramp.c, the windows and rules in limits.c, route.db in state.c, the
 * status and plan texts in control.c. Loop thread only. */
#include "route/route.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/clock.h"
#include "common/util.h"
#include "route/route_internal.h"

/* How often counts reach route.db at most (seconds of real time): a crash loses at most this
 * much counting. */
#define ROUTE_FLUSH_INTERVAL 5

struct route_world route_world;

int route_init(const struct config *cfg, const char *state_dir, char *err, size_t errlen)
{
    struct route_world *w = &route_world;
    if (w->cfg) route_shutdown();
    memset(w, 0, sizeof *w);
    w->cfg = cfg;
    w->state_dir = xstrdup(state_dir);
    w->last_flush = clock_now();
    limits_build(w);
    if (route_db_open(w, err, errlen) < 0 || route_db_load(w, err, errlen) < 0) {
        route_shutdown();
        return -1;
    }
    limits_expire(w, clock_now());
    if (w->override.mode != RAMP_SCHEDULE)
        log_info("route: ramp override %s %.2f%% (since %lld) still in force",
                 ramp_mode_name(w->override.mode), w->override.percent,
                 (long long)w->override.since);
    return 0;
}

/* SIGHUP: route with cfg from now on (ramp, pins, providers, caps, shaping). The counters are
 * written to route.db and read back for the new egresses and providers, by name, as at start;
 * so are active suspensions and throttles of rules that still exist, and the operator's ramp
 * override. Replies counted toward a rule's threshold but not yet acting are forgotten. The
 * world is on cfg even when -1 (route.db could not be read back; err says why). */
int route_reload(const struct config *cfg, char *err, size_t errlen)
{
    struct route_world *w = &route_world;
    if (!w->cfg) return 0;
    route_db_flush_counters(w);
    w->last_flush = clock_now();
    limits_free(w);
    w->cfg = cfg;
    limits_build(w);
    if (route_db_load(w, err, errlen) < 0) return -1;
    limits_expire(w, clock_now());
    return 0;
}

void route_flush(void)
{
    struct route_world *w = &route_world;
    if (!w->cfg) return;
    route_db_flush_counters(w);
    w->last_flush = clock_now();
}

void route_shutdown(void)
{
    struct route_world *w = &route_world;
    if (!w->cfg) return;
    if (w->db) route_db_flush_counters(w);
    route_db_close(w);
    limits_free(w);
    free(w->state_dir);
    memset(w, 0, sizeof *w);
}

/* Longest suffix wins, so "mx.microsoft" and "mail.protection.outlook.com" can sit beside
 * broader groupings. */
const char *route_provider(const char *const *mx_hosts, size_t n_hosts)
{
    const struct config *cfg = route_world.cfg;
    for (size_t h = 0; cfg && h < n_hosts; h++) {
        const char *host = mx_hosts[h];
        size_t hlen = host ? strlen(host) : 0;
        while (hlen && host[hlen - 1] == '.')
            hlen--;
        const char *best = NULL;
        size_t best_len = 0;
        for (size_t p = 0; p < cfg->n_providers; p++) {
            for (size_t s = 0; s < cfg->providers[p].n_mx_suffixes; s++) {
                const char *sfx = cfg->providers[p].mx_suffixes[s];
                size_t slen = strlen(sfx);
                if (slen > hlen || slen <= best_len) continue;
                if (strncasecmp(host + hlen - slen, sfx, slen)) continue;
                if (slen < hlen && host[hlen - slen - 1] != '.') continue;
                best = cfg->providers[p].name;
                best_len = slen;
            }
        }
        if (best) return best;
    }
    return "other";
}

double route_share(int64_t now)
{
    const struct config *cfg = route_world.cfg;
    return cfg ? ramp_share_at(&cfg->ramp, &route_world.override, now) : 0.0;
}

uint32_t route_bucket(const char *key)
{
    return ramp_bucket(key);
}

static int pin_live(const struct ramp_pin *pin, int64_t now)
{
    return !pin->until || now < pin->until;
}

static const struct ramp_pin *find_domain_pin(const struct ramp_conf *r, const char *domain,
                                              int64_t now)
{
    const struct ramp_pin *best = NULL;
    size_t dlen = strlen(domain);
    for (size_t i = 0; i < r->n_pin_domains; i++) {
        const struct ramp_pin *p = &r->pin_domains[i];
        size_t plen = strlen(p->name);
        int match = dlen == plen  ? !strcasecmp(domain, p->name)
                    : dlen > plen ? domain[dlen - plen - 1] == '.' &&
                                        !strcasecmp(domain + dlen - plen, p->name)
                                  : 0;
        if (match && pin_live(p, now) && (!best || plen > strlen(best->name))) best = p;
    }
    return best;
}

static const struct ramp_pin *find_pin(const struct ramp_pin *pins, size_t n, const char *name,
                                       int64_t now)
{
    for (size_t i = 0; name && i < n; i++)
        if (!strcmp(pins[i].name, name) && pin_live(&pins[i], now)) return &pins[i];
    return NULL;
}

/* The ramp egress that is not e (ramp.from for an egress outside the ramp). */
static const struct egress_conf *other_egress(const struct config *cfg, const struct egress_conf *e)
{
    const struct egress_conf *from = config_find_egress(cfg, cfg->ramp.from);
    const struct egress_conf *to = config_find_egress(cfg, cfg->ramp.to);
    if (e == to) return from;
    if (e == from) return to;
    return from;
}

static void describe_pin(char *out, size_t size, const char *kind, const struct ramp_pin *pin)
{
    char until[32] = "";
    if (pin->until) ramp_format_time(pin->until, until, sizeof until);
    snprintf(out, size, "pinned: %s %s -> %s%s%s", kind, pin->name, pin->egress,
             pin->until ? " until " : "", until);
}

/* Reasons are for logs and records: cut rather than fail when long. */
static void __attribute__((format(printf, 2, 3)))
set_reason(struct route_decision *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->reason, sizeof out->reason, fmt, ap);
    va_end(ap);
}

void route_decide(const struct envelope *env, size_t rcpt, const char *provider, int64_t now,
                  struct route_decision *out)
{
    struct route_world *w = &route_world;
    const struct config *cfg = w->cfg;
    memset(out, 0, sizeof *out);
    if (!cfg || !cfg->n_egress) {
        snprintf(out->reason, sizeof out->reason, "no egress configured");
        out->retry_at = now + 60;
        return;
    }
    const struct ramp_conf *r = &cfg->ramp;
    const char *address = rcpt < env->n_rcpts ? env->rcpts[rcpt].address : "";
    const char *at = address ? strrchr(address, '@') : NULL;
    const char *domain = at ? at + 1 : "";
    const struct ramp_pin *pin = NULL;
    const struct egress_conf *planned = NULL;
    char pin_reason[sizeof out->reason] = "";

    out->share = ramp_share_at(r, &w->override, now);
    if ((pin = find_pin(r->pin_origins, r->n_pin_origins, env->origin, now)))
        describe_pin(pin_reason, sizeof pin_reason, "origin", pin);
    else if ((pin = find_domain_pin(r, domain, now)))
        describe_pin(pin_reason, sizeof pin_reason, "domain", pin);
    else if ((pin = find_pin(r->pin_providers, r->n_pin_providers, provider, now)))
        describe_pin(pin_reason, sizeof pin_reason, "provider", pin);
    if (pin) {
        planned = config_find_egress(cfg, pin->egress);
        snprintf(out->reason, sizeof out->reason, "%s", pin_reason);
    }
    if (!planned) {
        char key[512];
        const struct egress_conf *to = config_find_egress(cfg, r->to);
        ramp_key(r, env, rcpt, key, sizeof key);
        uint32_t bucket = ramp_bucket(key);
        planned = to && ramp_goes_to(bucket, out->share) ? to : config_find_egress(cfg, r->from);
        if (!planned) planned = &cfg->egress[0];
        snprintf(out->reason, sizeof out->reason, "ramp %.2f%%: bucket %u -> %s", out->share,
                 bucket, planned->name);
    }
    out->planned = planned;

    limits_expire(w, now);
    char why[200];
    int64_t blocked =
        limits_blocked_until(w, limits_pair(w, planned, provider), now, why, sizeof why);
    if (!blocked) {
        out->egress = planned;
        return;
    }
    const struct egress_conf *other = other_egress(cfg, planned);
    char other_why[200] = "";
    int64_t other_blocked = 0;
    if (other && other != planned) {
        other_blocked = limits_blocked_until(w, limits_pair(w, other, provider), now, other_why,
                                             sizeof other_why);
        if (!other_blocked) {
            out->egress = other;
            out->spilled = 1;
            set_reason(out, "spilled to %s: %s", other->name, why);
            return;
        }
    }
    out->retry_at = other_blocked && other_blocked < blocked ? other_blocked : blocked;
    set_reason(out, "waiting: %s%s%s", why, other_why[0] ? "; " : "", other_why);
}

void route_count(const struct egress_conf *egress, const char *provider, int64_t now)
{
    struct route_world *w = &route_world;
    struct route_pair *p = limits_pair(w, egress, provider);
    if (!p) return;
    limits_count(w, p, now);
    if (clock_now() - w->last_flush >= ROUTE_FLUSH_INTERVAL) route_flush();
}

void route_connection_limits(const struct egress_conf *egress, const char *provider, int64_t now,
                             int *max_connections, int *max_per_connection)
{
    struct route_world *w = &route_world;
    struct route_pair *p = limits_pair(w, egress, provider);
    *max_connections = 0;
    *max_per_connection = 0;
    if (!p) return;
    if (p->cap) {
        *max_connections = p->cap->connections;
        *max_per_connection = p->cap->per_connection;
    }
    limits_expire(w, now);
    for (size_t i = 0; i < w->n_shaping_states; i++) {
        const struct route_shaping *s = &w->shaping[i];
        int c = s->rule->connections;
        if (s->pair != p || !s->active || !c) continue;
        if (!*max_connections || c < *max_connections) *max_connections = c;
    }
}

int route_feedback(const struct egress_conf *egress, const char *provider, int code,
                   const char *enhanced, const char *text, int64_t now)
{
    struct route_world *w = &route_world;
    struct route_pair *p = limits_pair(w, egress, provider);
    if (!p) return 0;
    return limits_feedback(w, p, code, enhanced, text, now);
}

static void set_override(struct route_world *w, enum ramp_mode mode, double percent, int64_t now,
                         struct strbuf *out)
{
    double before = ramp_share_at(&w->cfg->ramp, &w->override, now);
    w->override = (struct ramp_override){mode, percent, now};
    route_db_save_override(w);
    double after = ramp_share_at(&w->cfg->ramp, &w->override, now);
    log_info("route: ramp %s, share=%.2f%%, was=%.2f%%", ramp_mode_name(mode), after, before);
    if (mode == RAMP_SCHEDULE)
        strbuf_printf(out, "ramp follows the schedule again: share %.2f%% (was %.2f%%)\n", after,
                      before);
    else
        strbuf_printf(out, "ramp %s: share %.2f%% until resume (was %.2f%%)\n",
                      ramp_mode_name(mode), after, before);
}

int route_control(const char *command, struct strbuf *out)
{
    struct route_world *w = &route_world;
    int64_t now = clock_now();
    char verb[32] = "", arg[64] = "", extra[8] = "";
    if (!w->cfg) {
        strbuf_puts(out, "the route stage is not running\n");
        return -1;
    }
    int n = command ? sscanf(command, "%31s %63s %7s", verb, arg, extra) : 0;
    if (n >= 1 && !strcmp(verb, "status") && n == 1) {
        limits_expire(w, now);
        route_status_report(w, now, out);
        return 0;
    }
    if (n >= 1 && !strcmp(verb, "plan") && n == 1) return route_plan_report(w, now, out);
    if (n >= 1 &&
        (!strcmp(verb, "pause") || !strcmp(verb, "resume") || !strcmp(verb, "rollback") ||
         !strcmp(verb, "set")) &&
        !w->cfg->ramp.to) {
        strbuf_puts(out, "the ramp has no ramp.to egress: there is nothing to move\n");
        return -1;
    }
    if (n == 1 && !strcmp(verb, "pause")) {
        set_override(w, RAMP_PAUSE, ramp_share_at(&w->cfg->ramp, &w->override, now), now, out);
        return 0;
    }
    if (n == 1 && !strcmp(verb, "resume")) {
        set_override(w, RAMP_SCHEDULE, 0, now, out);
        return 0;
    }
    if (n == 1 && !strcmp(verb, "rollback")) {
        set_override(w, RAMP_ROLLBACK, ramp_rollback_percent(&w->cfg->ramp, now), now, out);
        return 0;
    }
    if (n == 2 && !strcmp(verb, "set")) {
        char *end;
        size_t len = strlen(arg);
        if (len && arg[len - 1] == '%') arg[--len] = '\0';
        double p = strtod(arg, &end);
        if (!len || *end || !isdigit((unsigned char)arg[0]) || !isfinite(p) || p < 0 || p > 100) {
            strbuf_printf(out, "\"%s\" is not a percentage from 0 to 100\n", arg);
            return -1;
        }
        set_override(w, RAMP_SET, p, now, out);
        return 0;
    }
    strbuf_printf(out,
                  "unknown ramp command \"%s\" (expected: status, set PERCENT, pause, "
                  "resume, rollback, plan)\n",
                  command ? command : "");
    return -1;
}
