/* route_fixture.h - the set-up the route stage's unit tests share (test_route.c,
 * test_route_groups.c, test_route_autopilot.c, test_cluster_caps.c): a temporary directory per
 * test with the injected clock at the test's start, a configuration written from text and
 * loaded, the route stage started on a state directory inside it, and the tear-down that stops
 * the stage, hands the clock back and removes the directory. Included once by each. */
#ifndef OUTRELAY_TEST_ROUTE_FIXTURE_H
#define OUTRELAY_TEST_ROUTE_FIXTURE_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

#include "config/config.h"
#include "injected_clock.h"
#include "route/route.h"

static char tmpdir[64];

static inline int route_fixture_remove(const char *path, const struct stat *st, int flag,
                                       struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* A fresh /tmp/NAME.XXXXXX and the clock at t0. */
static inline void route_fixture_setup(const char *name, int64_t t0)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/%s.XXXXXX", name);
    assert_non_null(mkdtemp(tmpdir));
    set_clock(t0);
}

static inline void route_fixture_teardown(void)
{
    route_shutdown();
    clock_set_source(NULL);
    nftw(tmpdir, route_fixture_remove, 16, FTW_DEPTH | FTW_PHYS);
}

/* The configuration in text, or NULL with its errors printed. */
static inline struct config *load_text(const char *text)
{
    char path[128];
    snprintf(path, sizeof path, "%s/outrelay.yaml", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    struct config_errors errs;
    struct config *cfg = config_load(path, &errs);
    for (size_t i = 0; !cfg && i < errs.n; i++)
        print_message("  error: %s\n", errs.items[i]);
    if (!cfg) config_errors_free(&errs);
    return cfg;
}

/* The route stage on <tmpdir>/state. */
static inline void start(const struct config *cfg)
{
    char dir[128], err[256] = "";
    snprintf(dir, sizeof dir, "%s/state", tmpdir);
    int rc = route_init(cfg, dir, err, sizeof err);
    if (rc) print_message("route_init: %s\n", err);
    assert_int_equal(rc, 0);
}

#endif
