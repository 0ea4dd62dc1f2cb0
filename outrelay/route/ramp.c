/* ramp.c - the ramp's arithmetic: the share at an instant (schedule, interpolation, the
 * operator's override), the routing key of a recipient and its bucket. Pure functions, no
 * state and no I/O, so every instance and every restart computes the same answers.
 * Called by route.c and control.c (and the unit tests). */
#include <ctype.h>
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
    size_t len = 0;
    const char *address = rcpt < env->n_rcpts ? env->rcpts[rcpt].address : "";
    if (!size) return;
    out[0] = '\0';
    for (size_t i = 0; i < ramp->n_key; i++) {
        const char *part = ramp->key[i];
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
