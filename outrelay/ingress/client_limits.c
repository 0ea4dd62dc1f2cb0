/* client_limits.c - connection counting per client address; see client_limits.h. Keeps one
 * entry per stranger address that has a connection open or attempted one in the current
 * period; idle entries are dropped once a period, so a flood from many addresses costs memory
 * for at most one period. Origins are counted only in the totals. */
#include "ingress/client_limits.h"

#include <stdlib.h>
#include <string.h>

#include "common/hashmap.h"
#include "common/util.h"

/* Without a rate limit, refusals are still counted (for log_it) per this many seconds. */
#define CLIENT_LIMITS_DEFAULT_PERIOD 60

struct client_entry {
    int open;             /* connections open now */
    int64_t window_start; /* the current period began here */
    int attempts;         /* connection attempts in the current period */
    int refused;          /* refusals in the current period */
};

struct client_limits {
    struct client_limits_conf conf;
    int64_t period;
    struct hashmap *clients; /* address -> struct client_entry */
    int total, strangers;
    int64_t overall_window_start; /* refusals for FULL / STRANGERS_FULL, over all clients */
    int overall_refused;
    int64_t last_sweep;
};

struct client_limits *client_limits_new(const struct client_limits_conf *conf)
{
    struct client_limits *cl = xcalloc(1, sizeof *cl);
    cl->conf = *conf;
    cl->period = conf->rate_count > 0 && conf->rate_period > 0 ? conf->rate_period
                                                               : CLIENT_LIMITS_DEFAULT_PERIOD;
    cl->clients = hashmap_new();
    return cl;
}

/* SIGHUP: new limits; open connections and the attempts of the current period are kept and
 * counted against them. */
void client_limits_reconfigure(struct client_limits *cl, const struct client_limits_conf *conf)
{
    cl->conf = *conf;
    cl->period = conf->rate_count > 0 && conf->rate_period > 0 ? conf->rate_period
                                                               : CLIENT_LIMITS_DEFAULT_PERIOD;
}

void client_limits_free(struct client_limits *cl)
{
    if (!cl) return;
    hashmap_free_values(cl->clients, free);
    free(cl);
}

struct sweep {
    int64_t now, period;
};

/* Drops (and frees) an entry with nothing open whose period has ended. */
static int idle(void *arg, const char *key, void *value)
{
    (void)key;
    const struct sweep *sw = arg;
    struct client_entry *e = value;
    if (e->open > 0 || sw->now < e->window_start + sw->period) return 0;
    free(e);
    return 1;
}

/* Drops idle entries; at most once a period. */
static void sweep(struct client_limits *cl, int64_t now)
{
    if (now >= cl->last_sweep && now < cl->last_sweep + cl->period) return;
    cl->last_sweep = now;
    struct sweep sw = {.now = now, .period = cl->period};
    hashmap_remove_if(cl->clients, idle, &sw);
}

/* Starts a new period when the current one is over (or the clock stepped back). */
static void roll_window(int64_t *start, int *counters[], size_t n, int64_t now, int64_t period)
{
    if (now >= *start && now < *start + period) return;
    *start = now;
    for (size_t i = 0; i < n; i++)
        *counters[i] = 0;
}

static int is_power_of_two(int n)
{
    return n > 0 && (n & (n - 1)) == 0;
}

static struct client_limits_result
refuse_overall(struct client_limits *cl, enum client_limits_verdict verdict, int count, int64_t now)
{
    int *counters[] = {&cl->overall_refused};
    roll_window(&cl->overall_window_start, counters, 1, now, cl->period);
    cl->overall_refused++;
    return (struct client_limits_result){.verdict = verdict,
                                         .count = count,
                                         .refused = cl->overall_refused,
                                         .log_it = is_power_of_two(cl->overall_refused)};
}

struct client_limits_result client_limits_connect(struct client_limits *cl, const char *address,
                                                  int is_origin, int64_t now)
{
    const struct client_limits_conf *c = &cl->conf;
    if (is_origin) {
        if (cl->total >= c->max_total)
            return refuse_overall(cl, CLIENT_LIMITS_FULL, cl->total + 1, now);
        cl->total++;
        return (struct client_limits_result){.verdict = CLIENT_LIMITS_OK, .count = cl->total};
    }
    sweep(cl, now);
    struct client_entry *e = hashmap_get(cl->clients, address);
    if (!e) {
        e = xcalloc(1, sizeof *e);
        e->window_start = now;
        hashmap_put(cl->clients, address, e);
    }
    int *counters[] = {&e->attempts, &e->refused};
    roll_window(&e->window_start, counters, 2, now, cl->period);
    e->attempts++;

    enum client_limits_verdict v = CLIENT_LIMITS_OK;
    int count = 0;
    if (cl->total >= c->max_total)
        return refuse_overall(cl, CLIENT_LIMITS_FULL, cl->total + 1, now);
    if (cl->strangers >= c->max_total - c->reserved_for_origins)
        return refuse_overall(cl, CLIENT_LIMITS_STRANGERS_FULL, cl->strangers + 1, now);
    if (c->per_client > 0 && e->open >= c->per_client) {
        v = CLIENT_LIMITS_CLIENT_COUNT;
        count = e->open + 1;
    } else if (c->rate_count > 0 && e->attempts > c->rate_count) {
        v = CLIENT_LIMITS_CLIENT_RATE;
        count = e->attempts;
    }
    if (v != CLIENT_LIMITS_OK) {
        e->refused++;
        return (struct client_limits_result){.verdict = v,
                                             .count = count,
                                             .refused = e->refused,
                                             .log_it = is_power_of_two(e->refused)};
    }
    e->open++;
    cl->total++;
    cl->strangers++;
    return (struct client_limits_result){.verdict = CLIENT_LIMITS_OK, .count = e->open};
}

void client_limits_disconnect(struct client_limits *cl, const char *address, int is_origin)
{
    if (cl->total > 0) cl->total--;
    if (is_origin) return;
    if (cl->strangers > 0) cl->strangers--;
    struct client_entry *e = hashmap_get(cl->clients, address);
    if (e && e->open > 0) e->open--;
}

int client_limits_total(const struct client_limits *cl)
{
    return cl->total;
}

int client_limits_strangers(const struct client_limits *cl)
{
    return cl->strangers;
}
