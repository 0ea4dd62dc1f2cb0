/* auth_throttle.c - see auth_throttle.h. One entry per address with a failure in the last
 * window; expired entries are dropped at most once a window, so a spray from many addresses
 * costs memory for one window at most. */
#include "ingress/auth_throttle.h"

#include <stdlib.h>

#include "common/hashmap.h"
#include "common/util.h"

struct failures {
    int64_t window_start;
    int count;
};

struct auth_throttle {
    struct hashmap *by_address;
    int64_t last_sweep;
};

struct auth_throttle *auth_throttle_new(void)
{
    struct auth_throttle *t = xcalloc(1, sizeof *t);
    t->by_address = hashmap_new();
    return t;
}

void auth_throttle_free(struct auth_throttle *t)
{
    if (!t) return;
    hashmap_free_values(t->by_address, free);
    free(t);
}

/* Drops a failure entry whose window is over (and frees it). */
static int expired(void *arg, const char *key, void *value)
{
    (void)key;
    int64_t now = *(const int64_t *)arg;
    struct failures *f = value;
    if (now >= f->window_start && now < f->window_start + AUTH_THROTTLE_WINDOW) return 0;
    free(f);
    return 1;
}

/* At most once a window. */
static void sweep(struct auth_throttle *t, int64_t now)
{
    if (now >= t->last_sweep && now < t->last_sweep + AUTH_THROTTLE_WINDOW) return;
    t->last_sweep = now;
    hashmap_remove_if(t->by_address, expired, &now);
}

static struct failures *current(struct auth_throttle *t, const char *address, int64_t now)
{
    struct failures *f = hashmap_get(t->by_address, address);
    if (f && !(now >= f->window_start && now < f->window_start + AUTH_THROTTLE_WINDOW)) {
        f->window_start = now;
        f->count = 0;
    }
    return f;
}

int auth_throttle_failed(struct auth_throttle *t, const char *address, int64_t now)
{
    sweep(t, now);
    struct failures *f = current(t, address, now);
    if (!f) {
        f = xcalloc(1, sizeof *f);
        f->window_start = now;
        hashmap_put(t->by_address, address, f);
    }
    return ++f->count;
}

int auth_throttle_failures(struct auth_throttle *t, const char *address, int64_t now)
{
    struct failures *f = current(t, address, now);
    return f ? f->count : 0;
}
