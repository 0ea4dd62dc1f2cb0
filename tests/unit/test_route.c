/* test_route.c - unit tests for outrelay/route/route.c, limits.c, state.c and control.c, and
 * for the providers/caps/shaping/pins sections of the configuration: pins, caps with spill
 * and wait, shaping from threshold to suspension to lifting (with an injected clock), state
 * kept across route_shutdown/route_init, status and plan texts, and configuration errors
 * with their positions. Each test works in a fresh temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "injected_clock.h"
#include "route_fixture.h"
#include "config/config.h"
#include "route/route.h"
#include "mail/envelope.h"

#define T0 1796083200 /* 2026-12-01T00:00:00Z */

static char *tmp_path(const char *name)
{
    char *path = malloc(strlen(tmpdir) + strlen(name) + 2);
    assert_non_null(path);
    sprintf(path, "%s/%s", tmpdir, name);
    return path;
}

static char *write_file(const char *name, const char *text)
{
    char *path = tmp_path(name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static int setup(void **state)
{
    (void)state;
    route_fixture_setup("test_route", T0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    route_fixture_teardown();
    return 0;
}

static const char base_config[] =
    "egress:\n"
    "  legacy: { type: direct }\n"
    "  cloud: { type: smarthost, host: 192.0.2.1 }\n"
    "origins:\n"
    "  local: { networks: [127.0.0.0/8] }\n"
    "  zimbra: { networks: [10.0.0.0/8] }\n"
    "providers:\n"
    "  microsoft-consumer: { mx_suffixes: [olc.protection.outlook.com], source: test }\n"
    "  google: { mx_suffixes: [google.com, googlemail.com] }\n";

/* Loads base_config + extra; fails the test on errors. */
static struct config *load_config(const char *extra)
{
    char *text = malloc(strlen(base_config) + strlen(extra) + 1);
    assert_non_null(text);
    strcpy(text, base_config);
    strcat(text, extra);
    char *path = write_file("outrelay.yaml", text);
    struct config_errors errs;
    struct config *cfg = config_load(path, &errs);
    for (size_t i = 0; !cfg && i < errs.n; i++)
        print_message("  error: %s\n", errs.items[i]);
    assert_non_null(cfg);
    free(text);
    free(path);
    return cfg;
}

static char *state_dir(void)
{
    return tmp_path("state");
}

static struct envelope *message(const char *origin, const char *from_domain, const char *rcpt)
{
    struct envelope *env = envelope_new();
    env->origin = strdup(origin);
    env->sender = strdup("alice@sender.example");
    env->from_domain = from_domain ? strdup(from_domain) : NULL;
    envelope_add_rcpt(env, rcpt, NULL, 0);
    return env;
}

static const char *decide(const char *origin, const char *rcpt, const char *provider, int64_t now,
                          struct route_decision *d)
{
    struct envelope *env = message(origin, "example.org", rcpt);
    route_decide(env, 0, provider, now, d);
    envelope_free(env);
    return d->egress ? d->egress->name : NULL;
}

/* ---------------------------------------------------------------- providers and pins */

static void test_provider_by_mx(void **state)
{
    (void)state;
    struct config *cfg = load_config("ramp: { from: legacy }\n");
    start(cfg);
    const char *ms[] = {"contoso-com.olc.protection.outlook.com."};
    const char *g[] = {"mx.unknown.example", "alt1.ASPMX.L.GOOGLE.COM"};
    const char *not_google[] = {"notgoogle.com"};
    assert_string_equal(route_provider(ms, 1), "microsoft-consumer");
    assert_string_equal(route_provider(g, 2), "google");
    assert_string_equal(route_provider(not_google, 1), "other");
    assert_string_equal(route_provider(NULL, 0), "other");
    route_shutdown();
    config_free(cfg);
}

static void test_pins(void **state)
{
    (void)state;
    struct config *cfg = load_config("ramp:\n"
                                     "  from: legacy\n"
                                     "  to: cloud\n"
                                     "  schedule: [{ at: 2026-12-01, percent: 100 }]\n"
                                     "  pins:\n"
                                     "    origins: { zimbra: legacy }\n"
                                     "    domains:\n"
                                     "      partner.example: legacy\n"
                                     "      old.example: { egress: legacy, until: 2026-12-02 }\n"
                                     "    providers: { microsoft-consumer: legacy }\n");
    struct route_decision d;
    start(cfg);
    /* the ramp at 100 %: everything goes to cloud unless pinned */
    assert_string_equal(decide("local", "bob@x.example", "google", T0 + 10, &d), "cloud");
    assert_string_equal(decide("zimbra", "bob@x.example", "google", T0 + 10, &d), "legacy");
    assert_non_null(strstr(d.reason, "origin zimbra"));
    assert_string_equal(decide("local", "bob@partner.example", "google", T0 + 10, &d), "legacy");
    assert_string_equal(decide("local", "bob@mail.PARTNER.example", "google", T0 + 10, &d),
                        "legacy");
    assert_string_equal(decide("local", "bob@notpartner.example", "google", T0 + 10, &d), "cloud");
    assert_string_equal(decide("local", "bob@microsoft.example", "microsoft-consumer", T0 + 10, &d),
                        "legacy");
    assert_ptr_equal(d.planned, d.egress);
    assert_int_equal(d.spilled, 0);
    /* a pin with `until` ends then */
    assert_string_equal(decide("local", "bob@old.example", "google", T0 + 10, &d), "legacy");
    assert_string_equal(decide("local", "bob@old.example", "google", T0 + 86400, &d), "cloud");
    route_shutdown();
    config_free(cfg);
}

/* ---------------------------------------------------------------- caps */

static const char ramp_all_cloud[] = "ramp:\n"
                                     "  from: legacy\n"
                                     "  to: cloud\n"
                                     "  schedule: [{ at: 2026-12-01, percent: 100 }]\n";

static void test_caps_spill_and_wait(void **state)
{
    (void)state;
    char extra[1024];
    snprintf(extra, sizeof extra,
             "%scaps:\n"
             "  - { egress: cloud, provider: google, per_hour: 3, connections: 2, "
             "per_connection: 10 }\n"
             "  - { egress: legacy, provider: google, per_day: 2 }\n",
             ramp_all_cloud);
    struct config *cfg = load_config(extra);
    struct route_decision d;
    int64_t now = T0 + 3600 * 5 + 10; /* 05:00:10 */
    start(cfg);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(decide("local", "bob@x.example", "google", now, &d), "cloud");
        route_count(d.egress, "google", now);
    }
    /* cloud x google is full for this hour: spill to legacy */
    assert_string_equal(decide("local", "bob@x.example", "google", now, &d), "legacy");
    assert_int_equal(d.spilled, 1);
    assert_string_equal(d.planned->name, "cloud");
    assert_non_null(strstr(d.reason, "cap 3/hour"));
    route_count(d.egress, "google", now);
    route_count(d.egress, "google", now);
    /* both full: wait until the hour ends (legacy's day cap opens later) */
    assert_null(decide("local", "bob@x.example", "google", now, &d));
    assert_int_equal(d.retry_at, T0 + 3600 * 6);
    assert_non_null(strstr(d.reason, "waiting"));
    /* other providers are not affected */
    assert_string_equal(decide("local", "bob@x.example", "other", now, &d), "cloud");
    /* the next hour opens cloud again */
    assert_string_equal(decide("local", "bob@x.example", "google", T0 + 3600 * 6, &d), "cloud");
    int conns, per;
    route_connection_limits(config_find_egress(cfg, "cloud"), "google", now, &conns, &per);
    assert_int_equal(conns, 2);
    assert_int_equal(per, 10);
    route_connection_limits(config_find_egress(cfg, "legacy"), "google", now, &conns, &per);
    assert_int_equal(conns, 0);
    assert_int_equal(per, 0);

    /* counters survive a restart within the same window */
    route_shutdown();
    set_clock(now + 60);
    start(cfg);
    assert_string_equal(decide("local", "bob@x.example", "google", now + 60, &d) ? "x" : "null",
                        "null");
    struct strbuf out = STRBUF_INIT;
    assert_int_equal(route_control("status", &out), 0);
    assert_non_null(strstr(strbuf_str(&out), "3/3!"));
    assert_non_null(strstr(strbuf_str(&out), "2/2!"));
    strbuf_free(&out);
    route_shutdown();
    config_free(cfg);
}

/* ---------------------------------------------------------------- shaping */

static void test_shaping_suspend_spill_lift(void **state)
{
    (void)state;
    char extra[2048];
    snprintf(extra, sizeof extra,
             "%sshaping:\n"
             "  - name: reputation\n"
             "    match: { code: 451, enhanced: [4.7.650, 4.7.651], text: \"rate limited due "
             "to IP reputation\" }\n"
             "    providers: [microsoft-consumer]\n"
             "    threshold: { hits: 2, window: 1h }\n"
             "    action: suspend\n"
             "    duration: 30m\n"
             "    source: test\n",
             ramp_all_cloud);
    struct config *cfg = load_config(extra);
    const struct egress_conf *cloud = config_find_egress(cfg, "cloud");
    struct route_decision d;
    const char *text = "The mail server [127.0.0.3] has been temporarily rate limited due to IP "
                       "reputation. (S775)";
    int64_t now = T0 + 1000;
    start(cfg);
    /* a different provider or code does not count */
    assert_int_equal(route_feedback(cloud, "google", 451, "4.7.650", text, now), 0);
    assert_int_equal(route_feedback(cloud, "microsoft-consumer", 250, "2.0.0", "ok", now), 0);
    assert_int_equal(route_feedback(cloud, "microsoft-consumer", 451, "4.7.500", text, now), 0);
    /* the first hit is below the threshold; hits outside the window do not add up */
    assert_int_equal(route_feedback(cloud, "microsoft-consumer", 451, "4.7.650", text, now), 0);
    assert_int_equal(route_feedback(cloud, "microsoft-consumer", 451, "4.7.651", text, now + 3601),
                     0);
    assert_string_equal(
        decide("local", "bob@hotmail.example", "microsoft-consumer", now + 3602, &d), "cloud");
    /* the second within the hour suspends cloud x microsoft-consumer */
    now += 3700;
    assert_int_equal(route_feedback(cloud, "microsoft-consumer", 451, "4.7.650", text, now), 1);
    assert_string_equal(decide("local", "bob@hotmail.example", "microsoft-consumer", now, &d),
                        "legacy");
    assert_int_equal(d.spilled, 1);
    assert_non_null(strstr(d.reason, "suspended by shaping rule reputation"));
    assert_string_equal(decide("local", "bob@gmail.example", "google", now, &d), "cloud");

    /* it survives a restart and shows in status */
    route_shutdown();
    set_clock(now + 60); /* the restart judges the persisted suspension at the injected time */
    start(cfg);
    assert_string_equal(decide("local", "bob@hotmail.example", "microsoft-consumer", now + 60, &d),
                        "legacy");
    struct strbuf out = STRBUF_INIT;
    assert_int_equal(route_control("status", &out), 0);
    assert_non_null(strstr(strbuf_str(&out), "reputation"));
    assert_non_null(strstr(strbuf_str(&out), "cloud x microsoft-consumer: suspend"));
    assert_non_null(strstr(strbuf_str(&out), "ends in 29m 00s"));
    strbuf_free(&out);

    /* with legacy unusable too, the mail waits for the suspension to end */
    /* ...and after the duration it is lifted */
    assert_string_equal(
        decide("local", "bob@hotmail.example", "microsoft-consumer", now + 30 * 60, &d), "cloud");
    assert_int_equal(d.spilled, 0);
    route_shutdown();
    set_clock(now + 31 * 60);
    start(cfg); /* lifted entries are gone from route.db */
    assert_string_equal(
        decide("local", "bob@hotmail.example", "microsoft-consumer", now + 31 * 60, &d), "cloud");
    route_shutdown();
    config_free(cfg);
}

static void test_shaping_throttle_and_recovery(void **state)
{
    (void)state;
    char extra[2048];
    snprintf(extra, sizeof extra,
             "%scaps:\n"
             "  - { egress: legacy, provider: microsoft-consumer, per_minute: 1 }\n"
             "shaping:\n"
             "  - name: busy\n"
             "    match: { code: 451, text: \"server busy\" }\n"
             "    egress: [cloud]\n"
             "    action: throttle\n"
             "    rate: 2/min\n"
             "    connections: 1\n"
             "    duration: 10m\n"
             "    recover: { quiet: 5m, step: 4 }\n",
             ramp_all_cloud);
    struct config *cfg = load_config(extra);
    const struct egress_conf *cloud = config_find_egress(cfg, "cloud");
    const struct egress_conf *legacy = config_find_egress(cfg, "legacy");
    struct route_decision d;
    int64_t now = T0 + 600; /* 00:10:00 */
    int conns, per;
    start(cfg);
    /* egress: [cloud] - legacy is not shaped by this rule */
    assert_int_equal(
        route_feedback(legacy, "microsoft-consumer", 451, "4.7.500", "Server busy", now), 0);
    assert_int_equal(
        route_feedback(cloud, "microsoft-consumer", 451, "4.7.500", "Server busy", now), 1);
    route_connection_limits(cloud, "microsoft-consumer", now, &conns, &per);
    assert_int_equal(conns, 1);
    for (int i = 0; i < 2; i++) {
        assert_string_equal(decide("local", "a@b.example", "microsoft-consumer", now, &d), "cloud");
        route_count(d.egress, "microsoft-consumer", now);
    }
    /* the rate is used up: spill to legacy (1/min), then wait for the next minute */
    assert_string_equal(decide("local", "a@b.example", "microsoft-consumer", now, &d), "legacy");
    route_count(d.egress, "microsoft-consumer", now);
    assert_null(decide("local", "a@b.example", "microsoft-consumer", now, &d));
    assert_int_equal(d.retry_at, now + 60);
    /* after the duration: recovering at 2/min, x4 after each quiet 5 minutes; lifted once the
     * rate passes 60/min (no per_minute cap on cloud) */
    int64_t end = now + 600;
    for (int i = 0; i < 2; i++)
        route_count(cloud, "microsoft-consumer", end + 1);
    assert_string_equal(decide("local", "a@b.example", "microsoft-consumer", end + 1, &d),
                        "legacy");
    assert_string_equal(decide("local", "a@b.example", "microsoft-consumer", end + 300, &d),
                        "cloud"); /* 8/min now */
    /* 2 * 4^3 = 128/min > 60: lifted, connection limit gone */
    route_connection_limits(cloud, "microsoft-consumer", end + 900, &conns, &per);
    assert_int_equal(conns, 0);
    route_shutdown();
    config_free(cfg);
}

/* ---------------------------------------------------------------- plan */

static void test_plan(void **state)
{
    (void)state;
    char extra[1024];
    snprintf(extra, sizeof extra,
             "ramp:\n"
             "  from: legacy\n"
             "  to: cloud\n"
             "  schedule:\n"
             "    - { at: 2026-12-01, percent: 10 }\n"
             "    - { at: 2026-12-03, percent: 50 }\n"
             "caps:\n"
             "  - { egress: cloud, provider: google, per_day: 100 }\n");
    struct config *cfg = load_config(extra);
    char *dir = state_dir();
    mkdir(dir, 0750);
    char *db_path = tmp_path("state/records.db");
    sqlite3 *db;
    assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TABLE events (id INTEGER PRIMARY KEY, ts_us INTEGER, "
                                  "event TEXT, egress TEXT, remote_mx TEXT);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    /* 7 days x 300 google + 70 others, all in the last week */
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    for (int i = 0; i < 2170; i++) {
        char sql[256];
        snprintf(sql, sizeof sql,
                 "INSERT INTO events (ts_us, event, egress, remote_mx) VALUES (%lld, "
                 "'delivered', 'legacy', '%s')",
                 (long long)(T0 - 86400 * 7 + 100 + i * 100) * 1000000,
                 i < 2100 ? "aspmx.l.google.com" : "mx.other.example");
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    }
    sqlite3_exec(db,
                 "INSERT INTO events (ts_us, event, egress, remote_mx) VALUES (1, 'deferred', "
                 "'legacy', 'aspmx.l.google.com')",
                 NULL, NULL, NULL);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(db);
    start(cfg);
    set_clock(T0);
    struct strbuf out = STRBUF_INIT;
    assert_int_equal(route_control("plan", &out), 0);
    const char *text = strbuf_str(&out);
    assert_non_null(strstr(text, "google                      300.0"));
    /* day 1: 10 % of 300 = 30 via cloud; from day 3: 150 > cap 100 */
    assert_non_null(
        strstr(text, "  2026-12-01   10.0%  legacy     google                        270"));
    assert_non_null(
        strstr(text, "10.0%  cloud      google                         30       100\n"));
    assert_non_null(strstr(text, "cloud      google                        150       100 !"));
    assert_non_null(strstr(text, "exceed a per_day cap"));
    strbuf_free(&out);
    free(db_path);
    free(dir);
    route_shutdown();
    config_free(cfg);
}

/* ---------------------------------------------------------------- configuration errors */

static int has_error(const struct config_errors *errs, const char *file, int line, int col,
                     const char *phrase)
{
    char prefix[512];
    snprintf(prefix, sizeof prefix, "%s:%d:%d: ", file, line, col);
    for (size_t i = 0; i < errs->n; i++)
        if (!strncmp(errs->items[i], prefix, strlen(prefix)) && strstr(errs->items[i], phrase))
            return 1;
    return 0;
}

static void print_errors(const struct config_errors *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        print_message("  %s\n", errs->items[i]);
}

static void test_config_errors(void **state)
{
    (void)state;
    char *policy =
        write_file("shaping.yaml", "shaping:\n"                                           /* 1 */
                                   "  - name: bad-regex\n"                                /* 2 */
                                   "    match: { code: 451, text: \"(unclosed\" }\n"      /* 3 */
                                   "    action: suspend\n"                                /* 4 */
                                   "    duration: 1h\n"                                   /* 5 */
                                   "  - name: bad-rate\n"                                 /* 6 */
                                   "    match: { enhanced: 4.7.x }\n"                     /* 7 */
                                   "    providers: [nosuch]\n"                            /* 8 */
                                   "    action: throttle\n"                               /* 9 */
                                   "    rate: fast\n"                                     /* 10 */
                                   "    duration: 1h\n"                                   /* 11 */
                                   "  - name: no-rate\n"                                  /* 12 */
                                   "    match: { code: 421 }\n"                           /* 13 */
                                   "    action: throttle\n"                               /* 14 */
                                   "    duration: soon\n"                                 /* 15 */
                                   "    recover: { quiet: 5m, step: 1 }\n"                /* 16 */
                                   "caps:\n"                                              /* 17 */
                                   "  - { egress: cloud, provider: yahoo, per_day: 5 }\n" /* 18 */
                                   "providers:\n"                                         /* 19 */
                                   "  google: { mx_suffixes: [google.com] }\n");          /* 20 */
    char text[2048];
    snprintf(text, sizeof text,
             "egress:\n"                                               /* 1 */
             "  legacy: { type: direct }\n"                            /* 2 */
             "  cloud: { type: smarthost, host: 192.0.2.1 }\n"         /* 3 */
             "ramp:\n"                                                 /* 4 */
             "  from: legacy\n"                                        /* 5 */
             "  pins:\n"                                               /* 6 */
             "    origins: { nobody: legacy }\n"                       /* 7 */
             "    domains: { a.example: { egress: nowhere } }\n"       /* 8 */
             "caps:\n"                                                 /* 9 */
             "  - { egress: cloud2, provider: google, per_hour: 5 }\n" /* 10 */
             "  - { egress: cloud, provider: google, per_hour: -1 }\n" /* 11 */
             "  - { egress: cloud, provider: google }\n"               /* 12 */
             "policies: [%s]\n",                                       /* 13 */
             policy);
    char *path = write_file("broken.yaml", text);
    struct config_errors errs;
    assert_null(config_load(path, &errs));
    print_errors(&errs);
    assert_true(has_error(&errs, path, 7, 16, "origin \"nobody\" is not defined"));
    assert_true(has_error(&errs, path, 8, 37, "egress \"nowhere\" is not defined"));
    assert_true(has_error(&errs, path, 10, 15, "egress \"cloud2\" is not defined"));
    assert_true(has_error(&errs, path, 11, 50, "\"-1\" is not a whole number"));
    assert_true(has_error(&errs, path, 12, 5, "sets no limit"));
    assert_true(has_error(&errs, policy, 3, 31, "is not a POSIX extended regular expression"));
    assert_true(has_error(&errs, policy, 7, 24, "\"4.7.x\" is not an enhanced status code"));
    assert_true(has_error(&errs, policy, 8, 17, "provider \"nosuch\" is not defined"));
    assert_true(has_error(&errs, policy, 10, 11, "\"fast\" is not a rate"));
    assert_true(has_error(&errs, policy, 14, 13, "throttle needs rate"));
    assert_true(has_error(&errs, policy, 15, 15, "\"soon\" is not a duration"));
    assert_true(has_error(&errs, policy, 16, 33, "\"1\" is not a step"));
    assert_true(has_error(&errs, policy, 18, 32, "provider \"yahoo\" is not defined"));
    assert_int_equal(errs.n, 13);
    config_errors_free(&errs);
    free(path);
    free(policy);
}

/* Whether text names a web page as host/path: some '/' right after a host name that has a dot
 * inside it ("smtp.codes/exchangeonline", "github.com/KumoCorp/..."). */
static int names_public_page(const char *text)
{
    for (const char *slash = strchr(text, '/'); slash; slash = strchr(slash + 1, '/')) {
        const char *p = slash;
        int dot = 0;
        while (p > text && (isalnum((unsigned char)p[-1]) || p[-1] == '.' || p[-1] == '-')) {
            p--;
            if (*p == '.' && p > text && p + 1 < slash && isalnum((unsigned char)p[-1]) &&
                isalnum((unsigned char)p[1]))
                dot = 1;
        }
        if (dot) return 1;
    }
    return 0;
}

/* The shipped policy files load and say where each rule comes from. */
static void test_shipped_policies(void **state)
{
    (void)state;
    const char *src = getenv("OUTRELAY_SRC");
    if (!src) skip();
    char text[1024];
    snprintf(text, sizeof text,
             "policies: [%s/policies/providers.yaml, %s/policies/shaping.yaml]\n", src, src);
    char *path = write_file("shipped.yaml", text);
    struct config_errors errs;
    struct config *cfg = config_load(path, &errs);
    print_errors(&errs);
    assert_non_null(cfg);
    assert_non_null(config_find_provider(cfg, "microsoft-consumer"));
    assert_non_null(config_find_provider(cfg, "microsoft-tenant-dane"));
    assert_non_null(config_find_provider(cfg, "gmx-webde"));
    assert_true(cfg->n_shaping >= 6);
    /* Shipped files cite public sources only: every rule names the page its reply text comes
     * from (a host name with a path), and nothing points at notes a user does not have. */
    for (size_t i = 0; i < cfg->n_providers; i++) {
        const char *s = cfg->providers[i].source;
        assert_non_null(s);
        assert_true(s[0] != '\0');
        assert_null(strstr(s, "ANCHORS"));
        assert_null(strstr(s, "LIBRARIES.md"));
        assert_null(strstr(s, "DESIGN.md"));
    }
    for (size_t i = 0; i < cfg->n_shaping; i++) {
        const char *s = cfg->shaping[i].source;
        assert_non_null(s);
        assert_true(strncmp(s, "reply: ", 7) == 0);
        assert_true(names_public_page(s));
        assert_null(strstr(s, "ANCHORS"));
        assert_null(strstr(s, "LIBRARIES.md"));
        assert_null(strstr(s, "DESIGN.md"));
        assert_null(strstr(s, "[K"));
    }
    start(cfg);
    const struct egress_conf *legacy = config_find_egress(cfg, "legacy");
    const char *hosts[] = {"example-com.mail.protection.outlook.com"};
    const char *provider = route_provider(hosts, 1);
    assert_string_equal(provider, "microsoft-tenant");
    const char *busy = "Server busy. Please try again later from [192.0.2.10]. (S77714)";
    assert_int_equal(route_feedback(legacy, provider, 451, "4.7.500", busy, T0), 0);
    assert_int_equal(route_feedback(legacy, provider, 451, "4.7.500", busy, T0 + 1), 0);
    assert_int_equal(route_feedback(legacy, provider, 451, "4.7.500", busy, T0 + 2), 1);
    const char *consumer[] = {"hotmail-com.olc.protection.outlook.com"};
    assert_int_equal(route_feedback(legacy, route_provider(consumer, 1), 550, "5.7.1",
                                    "Unfortunately, messages from [192.0.2.10] weren't sent. "
                                    "Please contact your Internet service provider since part "
                                    "of their network is on our block list (S3150).",
                                    T0),
                     1);
    route_shutdown();
    config_free(cfg);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_provider_by_mx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_caps_spill_and_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shaping_suspend_spill_lift, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shaping_throttle_and_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shipped_policies, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
