/* ramp.c - the ramp's arithmetic: the share at an instant (schedule, interpolation, the
 * operator's override), the routing key of a recipient and its bucket; for route groups the
 * weights at an instant and the weighted rendezvous choice among any number of egresses.
 * Pure functions, no state and no I/O, so every instance and every restart computes the same
 * answers.
 * Called by route.c and control.c (and the unit tests). */
#include <ctype.h>
#include <math.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "route/route_internal.h"

static const char *const mode_names[] = {"schedule", "set", "pause", "rollback"};

const char *ramp_mode_name(enum ramp_mode mode)
{
    return mode_names[mode];
}

int ramp_mode_parse(const char *name, enum ramp_mode *mode)
{
    for (int i = 0; i < 4; i++)
        if (name && !strcmp(name, mode_names[i])) {
            *mode = (enum ramp_mode)i;
            return 0;
        }
    return -1;
}

long ramp_current_step(const struct ramp_conf *ramp, int64_t now)
{
    long current = -1;
    for (size_t i = 0; i < ramp->n_schedule && ramp->schedule[i].at <= now; i++)
        current = (long)i;
    return current;
}

double ramp_schedule_share(const struct ramp_conf *ramp, int64_t now)
{
    long i = ramp_current_step(ramp, now);
    if (i < 0) return 0.0;
    const struct ramp_step *a = &ramp->schedule[i];
    if (!ramp->interpolate || (size_t)i + 1 >= ramp->n_schedule) return a->percent;
    const struct ramp_step *b = &ramp->schedule[i + 1];
    double f = (double)(now - a->at) / (double)(b->at - a->at);
    return a->percent + (b->percent - a->percent) * f;
}

double ramp_rollback_percent(const struct ramp_conf *ramp, int64_t now)
{
    long i = ramp_current_step(ramp, now);
    return i >= 1 ? ramp->schedule[i - 1].percent : 0.0;
}

double ramp_share_at(const struct ramp_conf *ramp, const struct ramp_override *o, int64_t now)
{
    if (!ramp->to) return 0.0; /* nowhere to move mail to */
    if (o && o->mode != RAMP_SCHEDULE) return o->percent;
    if (o && o->piloted) /* the autopilot's step, not the date */
        return o->pilot_step >= 0 && (size_t)o->pilot_step < ramp->n_schedule
                   ? ramp->schedule[o->pilot_step].percent
                   : 0.0;
    return ramp_schedule_share(ramp, now);
}

static void append_lower(char *out, size_t size, size_t *len, const char *s)
{
    for (; s && *s && *len + 1 < size; s++)
        out[(*len)++] = (char)tolower((unsigned char)*s);
    out[*len] = '\0';
}

static void append_raw(char *out, size_t size, size_t *len, const char *s)
{
    for (; s && *s && *len + 1 < size; s++)
        out[(*len)++] = *s;
    out[*len] = '\0';
}

static const char *domain_of(const char *address)
{
    const char *at = address ? strrchr(address, '@') : NULL;
    return at ? at + 1 : "";
}

/* Addresses keep their local part as written (it may be case-sensitive, RFC 5321 2.4);
 * the domain is lower-cased. */
static void append_address(char *out, size_t size, size_t *len, const char *address)
{
    const char *at = address ? strrchr(address, '@') : NULL;
    if (!at) {
        append_raw(out, size, len, address);
        return;
    }
    for (const char *p = address; p < at && *len + 1 < size; p++)
        out[(*len)++] = *p;
    out[*len] = '\0';
    append_raw(out, size, len, "@");
    append_lower(out, size, len, at + 1);
}

void ramp_key(const struct ramp_conf *ramp, const struct envelope *env, size_t rcpt, char *out,
              size_t size)
{
    ramp_key_parts(ramp->key, ramp->n_key, env, rcpt, out, size);
}

void ramp_key_parts(char *const *key, size_t n_key, const struct envelope *env, size_t rcpt,
                    char *out, size_t size)
{
    size_t len = 0;
    const char *address = rcpt < env->n_rcpts ? env->rcpts[rcpt].address : "";
    if (!size) return;
    out[0] = '\0';
    for (size_t i = 0; i < n_key; i++) {
        const char *part = key[i];
        if (i) append_raw(out, size, &len, "|");
        if (!strcmp(part, "from_domain"))
            append_lower(out, size, &len,
                         env->from_domain && *env->from_domain ? env->from_domain
                                                               : domain_of(env->sender));
        else if (!strcmp(part, "rcpt_domain"))
            append_lower(out, size, &len, domain_of(address));
        else if (!strcmp(part, "sender"))
            append_address(out, size, &len, env->sender);
        else if (!strcmp(part, "rcpt"))
            append_address(out, size, &len, address);
        else if (!strcmp(part, "message_id"))
            append_raw(out, size, &len, env->message_id);
    }
}

uint32_t ramp_bucket(const char *key)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    uint64_t v = 0;
    SHA256((const unsigned char *)key, strlen(key), digest);
    for (int i = 0; i < 8; i++)
        v = v << 8 | digest[i];
    return (uint32_t)(v % 10000);
}

int ramp_goes_to(uint32_t bucket, double share)
{
    return (double)bucket < share * 100.0;
}

void ramp_format_time(int64_t t, char *buf, size_t size)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (!gmtime_r(&tt, &tm) || !strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, size, "%lld", (long long)t);
}

/* ---- route groups: weights over any number of egresses */

void ramp_group_schedule_weights(const struct route_group *g, int64_t now, double *weights)
{
    long i = -1;
    for (size_t k = 0; k < g->n_schedule && g->schedule[k].at <= now; k++)
        i = (long)k;
    for (size_t e = 0; e < g->n_egress; e++)
        weights[e] = 0.0;
    if (i < 0) { /* before the first step: everything on the first egress */
        if (g->n_egress) weights[0] = 1.0;
        return;
    }
    const struct route_group_step *a = &g->schedule[i];
    if (!g->interpolate || (size_t)i + 1 >= g->n_schedule) {
        memcpy(weights, a->weights, g->n_egress * sizeof *weights);
        return;
    }
    const struct route_group_step *b = &g->schedule[i + 1];
    double f = (double)(now - a->at) / (double)(b->at - a->at);
    for (size_t e = 0; e < g->n_egress; e++)
        weights[e] = a->weights[e] + (b->weights[e] - a->weights[e]) * f;
}

void ramp_group_step_weights(const struct route_group *g, long step, double *weights)
{
    if (step >= 0 && (size_t)step < g->n_schedule) {
        memcpy(weights, g->schedule[step].weights, g->n_egress * sizeof *weights);
        return;
    }
    for (size_t e = 0; e < g->n_egress; e++)
        weights[e] = e == 0 ? 1.0 : 0.0;
}

void ramp_group_rollback_weights(const struct route_group *g, int64_t now, double *weights)
{
    long i = -1;
    for (size_t k = 0; k < g->n_schedule && g->schedule[k].at <= now; k++)
        i = (long)k;
    if (i >= 1) {
        memcpy(weights, g->schedule[i - 1].weights, g->n_egress * sizeof *weights);
        return;
    }
    for (size_t e = 0; e < g->n_egress; e++)
        weights[e] = e == 0 ? 1.0 : 0.0;
}

void ramp_group_weights(const struct route_group *g, const struct group_override *o, int64_t now,
                        double *weights)
{
    if (o && o->mode != RAMP_SCHEDULE && o->weights) {
        memcpy(weights, o->weights, g->n_egress * sizeof *weights);
        return;
    }
    if (o && o->piloted) { /* the autopilot's step, not the date */
        ramp_group_step_weights(g, o->pilot_step, weights);
        return;
    }
    ramp_group_schedule_weights(g, now, weights);
}

/* A uniform number in (0, 1) from SHA-256 (FIPS 180-4) of key NUL egress: the top 53 bits of the
 * digest, with half a step added so that neither 0 nor 1 comes out. */
static double rendezvous_uniform(const char *key, const char *egress)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    size_t klen = strlen(key), elen = strlen(egress);
    unsigned char buf[klen + 1 + elen + 1];
    uint64_t v = 0;
    memcpy(buf, key, klen + 1);
    memcpy(buf + klen + 1, egress, elen);
    SHA256(buf, klen + 1 + elen, digest);
    for (int i = 0; i < 8; i++)
        v = v << 8 | digest[i];
    return ((double)(v >> 11) + 0.5) / 9007199254740992.0; /* 2^53 */
}

/* Weighted rendezvous hashing (highest random weight, Thaler and Ravishankar 1998, with the
 * weighting of Schindelhauer and Schomaker 2005): egress e scores w_e / -ln(u_e), u_e uniform
 * in (0, 1) from the key and e's name. -ln(u_e) / w_e is exponential with rate w_e, so the
 * smallest of them, i.e. the best score, falls on e with probability w_e / sum(w). Raising
 * one w_e (others fixed) raises only e's score: a key can only move to e. A weight of 0 scores
 * 0 and is never chosen unless every weight is 0. */
double ramp_rendezvous_score(const char *key, const char *egress, double weight)
{
    if (!(weight > 0)) return 0.0;
    return weight / -log(rendezvous_uniform(key, egress));
}

size_t ramp_group_order(const struct route_group *g, const double *weights, const char *key,
                        size_t *order)
{
    double score[g->n_egress ? g->n_egress : 1];
    for (size_t e = 0; e < g->n_egress; e++) {
        score[e] = ramp_rendezvous_score(key, g->egress[e], weights[e]);
        order[e] = e;
    }
    /* insertion sort, best first; ties (only 0 scores in practice) keep the configured order */
    for (size_t i = 1; i < g->n_egress; i++) {
        size_t x = order[i], j = i;
        while (j > 0 && score[order[j - 1]] < score[x]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = x;
    }
    return g->n_egress;
}
