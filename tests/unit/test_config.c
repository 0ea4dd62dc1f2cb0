/* test_config.c - unit tests for outrelay/config/config.c.
 * Writes YAML snippets (and the TLS and users files they name) into a fresh temporary
 * directory, loads them and checks the values, the defaults, the shipped example file and
 * the exact "file:line:col: message" of every kind of mistake. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"

static char tmpdir[64];

static char *tmp_path(const char *name)
{
    char *path = malloc(strlen(tmpdir) + strlen(name) + 2);
    assert_non_null(path);
    sprintf(path, "%s/%s", tmpdir, name);
    return path;
}

/* Writes text to tmpdir/name; returns the path (caller frees). */
static char *write_file(const char *name, const char *text)
{
    char *path = tmp_path(name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Replaces every "@DIR@" in text by the temporary directory. */
static char *with_dir(const char *text)
{
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, "@DIR@")); p += 5)
        n++;
    char *out = malloc(strlen(text) + n * strlen(tmpdir) + 1), *o = out;
    assert_non_null(out);
    for (const char *p = text; *p;) {
        if (!strncmp(p, "@DIR@", 5)) {
            o = stpcpy(o, tmpdir);
            p += 5;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    return out;
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_config.XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    free(write_file("cert.pem", "-----BEGIN CERTIFICATE-----\n"));
    free(write_file("key.pem", "-----BEGIN PRIVATE KEY-----\n"));
    free(write_file("users", "# AUTH users\n"
                             "m365-connector:$6$salt$hash\n"
                             "\n"
                             "zimbra:$6$salt$otherhash\n"));
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    (void)state;
    nftw(tmpdir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static struct config *load_text(const char *yaml, struct config_errors *errs, char **pathp)
{
    char *text = with_dir(yaml);
    char *path = write_file("outrelay.yaml", text);
    free(text);
    struct config *cfg = config_load(path, errs);
    if (!cfg)
        for (size_t i = 0; i < errs->n; i++)
            print_message("  error: %s\n", errs->items[i]);
    if (pathp)
        *pathp = path;
    else
        free(path);
    return cfg;
}

static struct config *load_ok(const char *yaml)
{
    struct config_errors errs;
    struct config *cfg = load_text(yaml, &errs, NULL);
    assert_non_null(cfg);
    assert_int_equal(errs.n, 0);
    return cfg;
}

/* True when some error starts with "PATH:LINE:COL: " and contains phrase. */
static int has_error(const struct config_errors *errs, const char *path, int line, int col,
                     const char *phrase)
{
    char prefix[512];
    snprintf(prefix, sizeof prefix, "%s:%d:%d: ", path, line, col);
    for (size_t i = 0; i < errs->n; i++)
        if (!strncmp(errs->items[i], prefix, strlen(prefix)) &&
            strstr(errs->items[i] + strlen(prefix), phrase))
            return 1;
    return 0;
}

static void expect_error(const char *yaml, int line, int col, const char *phrase)
{
    struct config_errors errs;
    char *path;
    struct config *cfg = load_text(yaml, &errs, &path);
    if (cfg || !has_error(&errs, path, line, col, phrase)) {
        print_message("expected %d:%d: ...%s... for:\n%s\n", line, col, phrase, yaml);
        for (size_t i = 0; i < errs.n; i++)
            print_message("  got: %s\n", errs.items[i]);
        config_free(cfg);
        config_errors_free(&errs);
        free(path);
        fail();
    }
    config_errors_free(&errs);
    free(path);
}

static int64_t utc(const char *date)
{
    struct tm tm = {0};
    assert_non_null(strptime(date, "%Y-%m-%d", &tm));
    return (int64_t)timegm(&tm);
}

static const char *addr_text(const struct sockaddr_any *a)
{
    static char buf[80];
    return util_format_addr(a, 1, buf, sizeof buf);
}

/* ---------------------------------------------------------------- defaults */

static void check_default_values(const struct config *cfg)
{
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    assert_string_equal(cfg->hostname, host[0] ? host : "localhost");
    assert_null(cfg->user);
    assert_string_equal(cfg->spool, "./var/spool");
    assert_string_equal(cfg->state, "./var/state");
    assert_string_equal(cfg->keys, "./keys");
    assert_string_equal(cfg->control_socket, "./var/state/control.sock");
    assert_int_equal(cfg->log_to, 0);
    assert_int_equal(cfg->log_level, 1);
    assert_int_equal(cfg->n_dns_servers, 0);
    assert_int_equal(cfg->mx_port, 25);
    static const int64_t retry[] = {300, 600, 1800, 3600, 7200, 14400};
    assert_int_equal(cfg->n_retry, 6);
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(cfg->retry[i], retry[i]);
    assert_int_equal(cfg->max_lifetime, 5 * 86400);
    assert_int_equal(cfg->connect_timeout, 30);
    assert_int_equal(cfg->command_timeout, 300);
    assert_int_equal(cfg->n_listen, 1);
    assert_string_equal(cfg->listen[0].address_text, "127.0.0.1:2525");
    assert_string_equal(addr_text(&cfg->listen[0].addr), "127.0.0.1:2525");
    assert_int_equal(cfg->listen[0].tls, TLS_OPTIONAL);
    assert_null(cfg->tls_cert);
    assert_null(cfg->tls_key);
    assert_int_equal(cfg->max_message_size, 35 * 1048576);
    assert_int_equal(cfg->max_recipients, 1000);
    assert_int_equal(cfg->max_line_length, 4096);
    assert_int_equal(cfg->command_timeout_in, 300);
    assert_int_equal(cfg->data_timeout, 600);
    assert_int_equal(cfg->max_received_headers, 50);
    assert_int_equal(cfg->max_connections_in, 500);
    assert_int_equal(cfg->reserved_for_origins, 100);
    assert_int_equal(cfg->max_connections_per_client, 50);
    assert_int_equal(cfg->connection_rate_per_client, 300);
    assert_int_equal(cfg->connection_rate_period, 60);
    assert_int_equal(cfg->data_deadline, 600);
    assert_null(cfg->users_file);

    assert_int_equal(cfg->n_origins, 1);
    const struct origin_conf *local = config_find_origin(cfg, "local");
    assert_non_null(local);
    assert_int_equal(local->n_networks, 2);
    assert_int_equal(local->networks[0].family, AF_INET);
    assert_int_equal(local->networks[0].bits, 8);
    assert_int_equal(local->networks[0].addr[0], 127);
    assert_int_equal(local->networks[1].family, AF_INET6);
    assert_int_equal(local->networks[1].bits, 128);
    assert_int_equal(local->n_users, 0);

    assert_int_equal(cfg->n_egress, 1);
    const struct egress_conf *legacy = config_find_egress(cfg, "legacy");
    assert_non_null(legacy);
    assert_int_equal(legacy->type, EGRESS_DIRECT);
    assert_int_equal(legacy->n_sources, 0);
    assert_string_equal(legacy->helo, cfg->hostname);
    assert_int_equal(legacy->tls, TLS_OPTIONAL);
    assert_int_equal(legacy->tls_verify, 0);
    assert_int_equal(legacy->max_connections, 10);
    assert_int_equal(legacy->max_messages_per_connection, 100);

    assert_string_equal(cfg->ramp.from, "legacy");
    assert_null(cfg->ramp.to);
    assert_int_equal(cfg->ramp.n_key, 2);
    assert_string_equal(cfg->ramp.key[0], "from_domain");
    assert_string_equal(cfg->ramp.key[1], "rcpt_domain");
    assert_int_equal(cfg->ramp.n_schedule, 0);
    assert_int_equal(cfg->ramp.interpolate, 0);
}

static void test_defaults(void **state)
{
    (void)state;
    struct config *cfg = config_defaults();
    assert_string_equal(cfg->file, "(defaults)");
    check_default_values(cfg);
    assert_null(config_find_egress(cfg, "cloud"));
    assert_null(config_find_origin(cfg, "zimbra"));
    config_free(cfg);
}

static void test_empty_file_means_defaults(void **state)
{
    (void)state;
    struct config *cfg = load_ok("");
    check_default_values(cfg);
    config_free(cfg);
    cfg = load_ok("# nothing but a comment\n\n");
    check_default_values(cfg);
    config_free(cfg);
}

/* contrib/outrelay.example.yaml must load as shipped and configure exactly the defaults. */
static void test_example_file(void **state)
{
    (void)state;
    const char *src = getenv("OUTRELAY_SRC");
    if (!src) skip();
    char path[4096];
    snprintf(path, sizeof path, "%s/contrib/outrelay.example.yaml", src);
    struct config_errors errs;
    struct config *cfg = config_load(path, &errs);
    for (size_t i = 0; !cfg && i < errs.n; i++)
        print_message("  error: %s\n", errs.items[i]);
    assert_non_null(cfg);
    check_default_values(cfg);
    config_free(cfg);
}

/* ---------------------------------------------------------------- a complete file */

static const char full_config[] = "hostname: relay.example.com\n"
                                  "user: root\n"
                                  "spool: @DIR@/spool\n"
                                  "state: @DIR@/state\n"
                                  "keys: @DIR@/keys\n"
                                  "log: { syslog: true, level: warning }\n"
                                  "dns:\n"
                                  "  servers: [\"127.0.0.1:5353\", \"::1@53\"]\n"
                                  "delivery:\n"
                                  "  mx_port: 2025\n"
                                  "  retry: [5m, 10m, 30m, 1h, 2h, 4h]\n"
                                  "  max_lifetime: 5d\n"
                                  "  connect_timeout: 10s\n"
                                  "  command_timeout: 2m\n"
                                  "listen:\n"
                                  "  - address: \"127.0.0.1:2525\"\n"
                                  "    tls: optional\n"
                                  "  - address: \"[::1]:4650\"\n"
                                  "    tls: implicit\n"
                                  "tls:\n"
                                  "  cert: @DIR@/cert.pem\n"
                                  "  key: @DIR@/key.pem\n"
                                  "limits:\n"
                                  "  max_message_size: 50M\n"
                                  "  max_recipients: 200\n"
                                  "  max_line_length: 2000\n"
                                  "  command_timeout: 1m\n"
                                  "  data_timeout: 3m\n"
                                  "  max_received_headers: 30\n"
                                  "  max_connections: 100\n"
                                  "  reserved_for_origins: 30\n"
                                  "  max_connections_per_client: 5\n"
                                  "  max_connection_rate_per_client: 20/10s\n"
                                  "  data_deadline: 2m\n"
                                  "auth:\n"
                                  "  users_file: @DIR@/users\n"
                                  "origins:                           # who may relay\n"
                                  "  zimbra:\n"
                                  "    networks: [\"10.0.1.0/24\"]\n"
                                  "  cloud:\n"
                                  "    networks: [\"40.92.0.0/15\"]\n"
                                  "    users: [\"m365-connector\"]\n"
                                  "egress:\n"
                                  "  legacy:\n"
                                  "    type: direct\n"
                                  "    source: [\"192.0.2.10\"]\n"
                                  "    helo: mail-old.example.com\n"
                                  "  cloud:\n"
                                  "    type: smarthost\n"
                                  "    host: example-com.mail.protection.outlook.com\n"
                                  "    port: 25\n"
                                  "    tls: required\n"
                                  "    tls_ca_file: @DIR@/cert.pem\n"
                                  "    auth: { user: relay, password: secret }\n"
                                  "    spf_ips: [\"40.92.0.0/15\"]\n"
                                  "    max_connections: 4\n"
                                  "    max_messages_per_connection: 50\n"
                                  "ramp:\n"
                                  "  from: legacy\n"
                                  "  to: cloud\n"
                                  "  key: [from_domain, rcpt_domain]\n"
                                  "  interpolate: true\n"
                                  "  schedule:\n"
                                  "    - { at: \"2026-12-01T00:00:00Z\", percent: 5 }\n"
                                  "    - { at: \"2026-12-04T00:00:00+00:00\", percent: 25 }\n"
                                  "    - { at: \"2026-12-08\", percent: 12.5 }\n";

static void test_full_contract(void **state)
{
    (void)state;
    struct config *cfg = load_ok(full_config);
    char *dir = with_dir("@DIR@");

    assert_string_equal(cfg->hostname, "relay.example.com");
    assert_string_equal(cfg->user, "root");
    assert_string_equal(cfg->control_socket + strlen(dir), "/state/control.sock");
    assert_int_equal(cfg->log_to, 1);
    assert_int_equal(cfg->log_level, 2);
    assert_int_equal(cfg->n_dns_servers, 2);
    assert_string_equal(cfg->dns_servers[0], "127.0.0.1:5353");
    assert_string_equal(cfg->dns_servers[1], "::1@53");
    assert_int_equal(cfg->mx_port, 2025);
    assert_int_equal(cfg->n_retry, 6);
    assert_int_equal(cfg->retry[5], 4 * 3600);
    assert_int_equal(cfg->max_lifetime, 5 * 86400);
    assert_int_equal(cfg->connect_timeout, 10);
    assert_int_equal(cfg->command_timeout, 120);

    assert_int_equal(cfg->n_listen, 2);
    assert_int_equal(cfg->listen[0].tls, TLS_OPTIONAL);
    assert_string_equal(addr_text(&cfg->listen[1].addr), "[::1]:4650");
    assert_int_equal(cfg->listen[1].tls, TLS_IMPLICIT);
    assert_string_equal(cfg->tls_cert + strlen(dir), "/cert.pem");
    assert_string_equal(cfg->tls_key + strlen(dir), "/key.pem");

    assert_int_equal(cfg->max_message_size, 50 * 1048576);
    assert_int_equal(cfg->max_recipients, 200);
    assert_int_equal(cfg->max_line_length, 2000);
    assert_int_equal(cfg->command_timeout_in, 60);
    assert_int_equal(cfg->data_timeout, 180);
    assert_int_equal(cfg->max_received_headers, 30);
    assert_int_equal(cfg->max_connections_in, 100);
    assert_int_equal(cfg->reserved_for_origins, 30);
    assert_int_equal(cfg->max_connections_per_client, 5);
    assert_int_equal(cfg->connection_rate_per_client, 20);
    assert_int_equal(cfg->connection_rate_period, 10);
    assert_int_equal(cfg->data_deadline, 120);
    assert_string_equal(cfg->users_file + strlen(dir), "/users");

    assert_int_equal(cfg->n_origins, 2);
    assert_null(config_find_origin(cfg, "local"));
    const struct origin_conf *cloud_in = config_find_origin(cfg, "cloud");
    assert_non_null(cloud_in);
    assert_int_equal(cloud_in->n_networks, 1);
    assert_int_equal(cloud_in->networks[0].bits, 15);
    assert_int_equal(cloud_in->n_users, 1);
    assert_string_equal(cloud_in->users[0], "m365-connector");
    assert_int_equal(config_find_origin(cfg, "zimbra")->networks[0].addr[0], 10);

    assert_int_equal(cfg->n_egress, 2);
    const struct egress_conf *legacy = config_find_egress(cfg, "legacy");
    assert_int_equal(legacy->type, EGRESS_DIRECT);
    assert_int_equal(legacy->n_sources, 1);
    assert_string_equal(addr_text(&legacy->sources[0]), "192.0.2.10:0");
    assert_string_equal(legacy->helo, "mail-old.example.com");
    const struct egress_conf *cloud = config_find_egress(cfg, "cloud");
    assert_int_equal(cloud->type, EGRESS_SMARTHOST);
    assert_string_equal(cloud->host, "example-com.mail.protection.outlook.com");
    assert_int_equal(cloud->port, 25);
    assert_int_equal(cloud->tls, TLS_REQUIRED);
    assert_int_equal(cloud->tls_verify, 1);
    assert_string_equal(cloud->auth_user, "relay");
    assert_string_equal(cloud->auth_password, "secret");
    assert_string_equal(cloud->helo, "relay.example.com");
    assert_int_equal(cloud->n_spf_ips, 1);
    assert_int_equal(cloud->max_connections, 4);
    assert_int_equal(cloud->max_messages_per_connection, 50);

    assert_string_equal(cfg->ramp.from, "legacy");
    assert_string_equal(cfg->ramp.to, "cloud");
    assert_int_equal(cfg->ramp.interpolate, 1);
    assert_int_equal(cfg->ramp.n_schedule, 3);
    assert_int_equal(cfg->ramp.schedule[0].at, utc("2026-12-01"));
    assert_int_equal(cfg->ramp.schedule[0].at, 1796083200);
    assert_int_equal(cfg->ramp.schedule[1].at, utc("2026-12-04"));
    assert_int_equal(cfg->ramp.schedule[2].at, utc("2026-12-08"));
    assert_true(cfg->ramp.schedule[1].percent == 25.0);
    assert_true(cfg->ramp.schedule[2].percent == 12.5);
    free(dir);
    config_free(cfg);
}

/* Sections that are given replace the defaults; the rest keep them. */
static void test_partial_file_keeps_other_defaults(void **state)
{
    (void)state;
    struct config *cfg = load_ok("state: /srv/outrelay\n"
                                 "delivery: { retry: [1m] }\n"
                                 "egress:\n"
                                 "  out: { type: direct }\n"
                                 "ramp: { from: out }\n");
    assert_string_equal(cfg->control_socket, "/srv/outrelay/control.sock");
    assert_int_equal(cfg->n_retry, 1);
    assert_int_equal(cfg->retry[0], 60);
    assert_int_equal(cfg->max_lifetime, 5 * 86400);
    assert_int_equal(cfg->n_egress, 1);
    assert_null(config_find_egress(cfg, "legacy"));
    assert_string_equal(config_find_egress(cfg, "out")->helo, cfg->hostname);
    assert_non_null(config_find_origin(cfg, "local"));
    assert_int_equal(cfg->ramp.n_key, 2);
    config_free(cfg);
}

/* ---------------------------------------------------------------- mistakes */

struct broken {
    const char *yaml;
    int line, col;
    const char *phrase;
};

static const struct broken broken_configs[] = {
    /* 1 unknown top-level key */
    {"hostname: relay.example.com\nspol: ./var\n", 2, 1, "\"spol\" is not a known key"},
    /* 2 unknown key inside a named egress, with the list of known keys */
    {"egress:\n  legacy: { type: direct }\n  cloud:\n    type: smarthost\n    host: x\n"
     "    sorce: [1.2.3.4]\nramp: { from: legacy }\n",
     6, 5, "egress \"cloud\": \"sorce\" is not a known key (expected one of: type, source, helo"},
    /* 3 ramp.to names an egress that does not exist */
    {"ramp:\n  from: legacy\n  to: cloud2\n", 3, 7, "ramp.to: egress \"cloud2\" is not defined"},
    /* 4 unreadable certificate */
    {"tls:\n  cert: /nonexistent/x.pem\n  key: @DIR@/key.pem\n", 2, 9,
     "tls.cert: cannot read /nonexistent/x.pem: No such file or directory"},
    /* 5 listen address with a port out of range */
    {"listen:\n  - address: \"127.0.0.1:99999\"\n", 2, 14,
     "listen[0].address: \"127.0.0.1:99999\" is not an address:port"},
    /* 6 a mapping where a list belongs */
    {"listen:\n  address: 127.0.0.1:25\n", 2, 3, "listen: expected a list"},
    /* 7 a list where a single value belongs */
    {"hostname: [a, b]\n", 1, 11, "hostname: expected a single value, found a list"},
    /* 8 bad duration */
    {"delivery:\n  max_lifetime: 5 days\n", 2, 17, "\"5 days\" is not a duration"},
    /* 9 bad size */
    {"limits:\n  max_message_size: 35X\n", 2, 21, "\"35X\" is not a size"},
    /* 10 bad integer */
    {"limits:\n  max_recipients: lots\n", 2, 19, "\"lots\" is not a whole number"},
    /* 11 line length below the RFC 5321 minimum */
    {"limits:\n  max_line_length: 512\n", 2, 20, "from 1000 to"},
    /* 12 bad network prefix */
    {"origins:\n  zimbra:\n    networks: [\"10.0.1.0/33\"]\n", 3, 16,
     "origin \"zimbra\": networks[0]: \"10.0.1.0/33\" is not a network"},
    /* 13 listener TLS mode */
    {"listen:\n  - address: 127.0.0.1:2525\n    tls: maybe\n", 3, 10,
     "\"maybe\" is not a listener TLS mode"},
    /* 14 required TLS without certificate */
    {"listen:\n  - address: 127.0.0.1:2525\n    tls: required\n", 3, 10,
     "needs a server certificate"},
    /* 15 account that does not exist */
    {"user: no-such-user-here\n", 1, 7, "is not an account on this system"},
    /* 16 origin with neither networks nor users */
    {"origins:\n  empty: {}\n", 2, 3, "has neither networks, platforms, users nor certificate"},
    /* 17 origin users without a users file */
    {"origins:\n  cloud:\n    users: [m365-connector]\n", 3, 12, "need auth.users_file"},
    /* 18 origin user missing from the users file */
    {"auth: { users_file: @DIR@/users }\norigins:\n  cloud:\n    users: [bob]\n", 4, 13,
     "\"bob\" is not in the users file"},
    /* 19 egress type missing */
    {"egress:\n  legacy:\n    helo: a.example\nramp: { from: legacy }\n", 2, 3,
     "egress \"legacy\": type is missing"},
    /* 20 egress type unknown */
    {"egress:\n  legacy: { type: carrier-pigeon }\nramp: { from: legacy }\n", 2, 19,
     "\"carrier-pigeon\" is not an egress type"},
    /* 21 smarthost without host */
    {"egress:\n  legacy: { type: direct }\n  cloud:\n    type: smarthost\n"
     "ramp: { from: legacy }\n",
     3, 3, "egress \"cloud\": host is missing"},
    /* 22 host on a direct egress */
    {"egress:\n  legacy:\n    type: direct\n    port: 587\nramp: { from: legacy }\n", 4, 11,
     "port: only for smarthost"},
    /* 23 ramp.from names an undefined egress */
    {"ramp:\n  from: old\n", 2, 9, "ramp.from: egress \"old\" is not defined"},
    /* 24 egress defined in the file but no ramp.from */
    {"egress:\n  out: { type: direct }\n", 2, 3, "ramp.from is missing"},
    /* 25 unknown ramp key part */
    {"ramp:\n  from: legacy\n  key: [from_domain, subject]\n", 3, 22,
     "ramp.key[1]: \"subject\" is not a routing key part"},
    /* 26 schedule time not ISO-8601 UTC */
    {"egress:\n  a: { type: direct }\n  b: { type: direct }\nramp:\n  from: a\n  to: b\n"
     "  schedule:\n    - { at: \"2026-12-01 09:00\", percent: 5 }\n",
     8, 13, "is not a UTC date and time"},
    /* 27 percent out of range */
    {"egress:\n  a: { type: direct }\n  b: { type: direct }\nramp:\n  from: a\n  to: b\n"
     "  schedule:\n    - { at: 2026-12-01, percent: 101 }\n",
     8, 34, "\"101\" is not a percentage from 0 to 100"},
    /* 28 schedule not in time order */
    {"egress:\n  a: { type: direct }\n  b: { type: direct }\nramp:\n  from: a\n  to: b\n"
     "  schedule:\n    - { at: 2026-12-04, percent: 5 }\n    - { at: 2026-12-01, percent: 25 }\n",
     9, 13, "is not later than the step before it"},
    /* 29 duplicate key, reported by the YAML parser itself */
    {"hostname: a.example\nspool: /a\nspool: /b\n", 3, 1, "duplicate key"},
    /* 30 YAML syntax error */
    {"hostname: \"relay.example.com\nspool: /a\n", 1, 11, "double-quoted scalar"},
    /* 31 wrong boolean */
    {"log:\n  syslog: perhaps\n", 2, 11, "\"perhaps\" is not true or false"},
    /* 32 unknown log level */
    {"log: { level: chatty }\n", 1, 15, "\"chatty\" is not a log level"},
    /* 33 unreadable users file */
    {"auth:\n  users_file: /nonexistent/users\n", 2, 15,
     "auth.users_file: cannot read /nonexistent/users: No such file or directory"},
    /* 34 bad egress source address */
    {"egress:\n  legacy: { type: direct, source: [192.0.2.300] }\nramp: { from: legacy }\n", 2, 36,
     "\"192.0.2.300\" is not an IP address"},
    /* 35 unreadable CA file */
    {"egress:\n  legacy: { type: direct, tls_ca_file: /nonexistent/ca.pem }\n"
     "ramp: { from: legacy }\n",
     2, 40, "cannot read /nonexistent/ca.pem"},
    /* 36 egress tls mode that only listeners have */
    {"egress:\n  legacy: { type: direct, tls: implicit }\nramp: { from: legacy }\n", 2, 32,
     "\"implicit\" is not an egress TLS mode"},
    /* 37 a root that is not a mapping */
    {"- hostname\n", 1, 1, "must be a mapping"},
    /* 38 empty value for a single-value key */
    {"spool:\nstate: /x\n", 1, 1, "spool: expected a single value, found nothing"},
    /* 39 key given without value on a list-item mapping */
    {"listen:\n  - tls: none\n", 2, 5, "listen[0]: address is missing"},
    /* 40 a second YAML document would be ignored */
    {"hostname: a.example\n---\nhostname: b.example\n", 2, 1, "a second YAML document"},
    /* 41 bad DNS server */
    {"dns:\n  servers: [\"127.0.0.1:0\"]\n", 2, 13, "is not a DNS server address"},
    /* 42 a reserve that leaves strangers (AUTH-only origins too) no connection */
    {"limits:\n  max_connections: 10\n  reserved_for_origins: 10\n", 3, 25,
     "limits.reserved_for_origins: 10 leaves clients outside the origins' networks no "
     "connection; it must be less than limits.max_connections (10)"},
    /* 43 a connection rate that is not a rate */
    {"limits:\n  max_connection_rate_per_client: 300\n", 2, 35,
     "limits.max_connection_rate_per_client: \"300\" is not a rate (connections per period"},
    /* 44 a negative per-client limit */
    {"limits:\n  max_connections_per_client: -1\n", 2, 31, "from 0 to 1000000"},
    /* 45 a DATA deadline that is not a duration */
    {"limits:\n  data_deadline: soon\n", 2, 18, "\"soon\" is not a duration"},
    /* 46 a log output outrelay does not have */
    {"log:\n  to: file\n", 2, 7, "log.to: \"file\" is not a log output"},
    /* 47 the older syslog: true against another log.to */
    {"log:\n  to: json\n  syslog: true\n", 3, 11, "true contradicts log.to"},
};

static void test_broken_configs(void **state)
{
    (void)state;
    size_t n = sizeof broken_configs / sizeof broken_configs[0];
    assert_true(n >= 15);
    for (size_t i = 0; i < n; i++)
        expect_error(broken_configs[i].yaml, broken_configs[i].line, broken_configs[i].col,
                     broken_configs[i].phrase);
}

/* log.to names the output; the older syslog: true still means syslog, alone or with to: syslog */
static void test_log_outputs(void **state)
{
    (void)state;
    static const struct {
        const char *yaml;
        int to;
    } cases[] = {{"log: { to: stderr }\n", 0},
                 {"log: { to: syslog }\n", 1},
                 {"log: { to: journald }\n", 2},
                 {"log: { to: json }\n", 3},
                 {"log: { syslog: true }\n", 1},
                 {"log: { syslog: false }\n", 0},
                 {"log: { to: syslog, syslog: true }\n", 1},
                 {"log: { to: json, syslog: false }\n", 3}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config *cfg = load_ok(cases[i].yaml);
        if (cfg->log_to != cases[i].to) fail_msg("%s: log_to %d", cases[i].yaml, cfg->log_to);
        config_free(cfg);
    }
}

static void test_missing_file(void **state)
{
    (void)state;
    struct config_errors errs;
    char *path = tmp_path("does-not-exist.yaml");
    assert_null(config_load(path, &errs));
    assert_int_equal(errs.n, 1);
    assert_non_null(strstr(errs.items[0], "does-not-exist.yaml: cannot read"));
    assert_non_null(strstr(errs.items[0], "No such file or directory"));
    config_errors_free(&errs);
    free(path);
}

/* Every mistake in one file is reported, in the order of the file. */
static void test_all_errors_reported(void **state)
{
    (void)state;
    struct config_errors errs;
    char *path;
    struct config *cfg = load_text("hostname: relay.example.com\n" /* 1 */
                                   "delivery:\n"                   /* 2 */
                                   "  mx_port: 0\n"                /* 3 */
                                   "  retry: [5m, soon, 1h]\n"     /* 4 */
                                   "listen:\n"                     /* 5 */
                                   "  - address: localhost:25\n"   /* 6 */
                                   "    tls: required\n"           /* 7 */
                                   "egress:\n"                     /* 8 */
                                   "  legacy:\n"                   /* 9 */
                                   "    type: direct\n"            /* 10 */
                                   "    sorce: [192.0.2.10]\n"     /* 11 */
                                   "ramp:\n"                       /* 12 */
                                   "  from: legacy\n"              /* 13 */
                                   "  to: cloud2\n"                /* 14 */
                                   "colour: blue\n",               /* 15 */
                                   &errs, &path);
    assert_null(cfg);
    assert_int_equal(errs.n, 7);
    assert_true(has_error(&errs, path, 3, 12, "delivery.mx_port"));
    assert_true(has_error(&errs, path, 4, 15, "\"soon\" is not a duration"));
    assert_true(has_error(&errs, path, 6, 14, "\"localhost:25\" is not an address:port"));
    assert_true(has_error(&errs, path, 7, 10, "needs a server certificate"));
    assert_true(has_error(&errs, path, 11, 5, "\"sorce\" is not a known key"));
    assert_true(has_error(&errs, path, 14, 7, "egress \"cloud2\" is not defined"));
    assert_true(has_error(&errs, path, 15, 1, "\"colour\" is not a known key"));
    /* sorted by position */
    assert_non_null(strstr(errs.items[0], ":3:12: "));
    assert_non_null(strstr(errs.items[6], ":15:1: "));
    config_errors_free(&errs);
    free(path);
}

/* A malformed users file is reported with the users file's own line numbers. */
static void test_users_file_lines(void **state)
{
    (void)state;
    char *users = write_file("bad-users", "# comment\n"
                                          "alice:$6$x$y\n"
                                          "bob\n"
                                          ":$6$x$y\n"
                                          "alice:$6$x$z\n");
    struct config_errors errs;
    char *path;
    char prefix[512];
    struct config *cfg = load_text("auth:\n  users_file: @DIR@/bad-users\n"
                                   "origins:\n  cloud: { users: [alice] }\n",
                                   &errs, &path);
    assert_null(cfg);
    assert_int_equal(errs.n, 3);
    snprintf(prefix, sizeof prefix, "%s:3:1: ", users);
    assert_memory_equal(errs.items[0], prefix, strlen(prefix));
    assert_non_null(strstr(errs.items[0], "no ':'"));
    snprintf(prefix, sizeof prefix, "%s:4:1: ", users);
    assert_memory_equal(errs.items[1], prefix, strlen(prefix));
    snprintf(prefix, sizeof prefix, "%s:5:1: ", users);
    assert_memory_equal(errs.items[2], prefix, strlen(prefix));
    assert_non_null(strstr(errs.items[2], "listed twice"));
    config_errors_free(&errs);
    free(path);
    free(users);
}

/* Things that look odd but are allowed. */
static void test_allowed_oddities(void **state)
{
    (void)state;
    /* a percentage that goes down again is allowed */
    struct config *cfg =
        load_ok("egress:\n  a: { type: direct }\n  b: { type: smarthost, host: 192.0.2.1 }\n"
                "ramp:\n  from: a\n  to: b\n  schedule:\n"
                "    - { at: 2026-12-01, percent: 50 }\n"
                "    - { at: 2026-12-02, percent: 10% }\n"
                "policies: []\n");
    assert_int_equal(cfg->ramp.n_schedule, 2);
    assert_true(cfg->ramp.schedule[1].percent == 10.0);
    assert_int_equal(config_find_egress(cfg, "b")->port, 25);
    config_free(cfg);
    /* per-client limits off; the reserve follows max_connections unless given */
    cfg = load_ok("limits:\n  max_connections: 50\n  max_connections_per_client: 0\n"
                  "  max_connection_rate_per_client: 0\n");
    assert_int_equal(cfg->reserved_for_origins, 10);
    assert_int_equal(cfg->max_connections_per_client, 0);
    assert_int_equal(cfg->connection_rate_per_client, 0);
    config_free(cfg);
}

/* Anchors and aliases are refused where they stand, before anything is expanded: a
 * 300-byte "billion laughs" (nine levels of nine aliases) used to be resolved into 9^9 nodes
 * (gigabytes, minutes under the sanitizers). The alarm turns a regression into a failure
 * rather than a stuck run; the RSS bound shows nothing was expanded. */
static void test_anchors_and_aliases_refused(void **state)
{
    (void)state;
    expect_error("origins:\n  a: &nets { networks: [10.0.0.0/8] }\n  b: *nets\n", 2, 6,
                 "anchor \"&nets\": aliases are not supported in outrelay configuration");
    expect_error("origins:\n  a: &nets { networks: [10.0.0.0/8] }\n  b: *nets\n", 3, 6,
                 "alias \"*nets\": aliases are not supported in outrelay configuration");
    expect_error("hostname: relay.example.com\nspool: &s /var/spool\n", 2, 8,
                 "anchor \"&s\": aliases are not supported");
    /* a merge key is not special: "<<" is just an unknown key */
    expect_error("<<: { hostname: relay.example.com }\n", 1, 1, "\"<<\" is not a known key");

    const char *src = getenv("OUTRELAY_SRC");
    if (!src) skip();
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/configs/alias-bomb.yaml", src);
    struct config_errors errs;
    alarm(30);
    struct config *cfg = config_load(path, &errs);
    alarm(0);
    assert_null(cfg);
    assert_int_equal(errs.n, 11); /* ten anchors and aliases, then one line with the rest */
    char prefix[4200];
    snprintf(prefix, sizeof prefix, "%s:3:4: anchor \"&a\": aliases are not supported", path);
    assert_memory_equal(errs.items[0], prefix, strlen(prefix));
    snprintf(prefix, sizeof prefix, "%s:4:32: 71 more anchors and aliases", path);
    assert_memory_equal(errs.items[10], prefix, strlen(prefix));
    config_errors_free(&errs);
    struct rusage ru;
    assert_int_equal(getrusage(RUSAGE_SELF, &ru), 0);
    assert_true(ru.ru_maxrss < 512 * 1024); /* KiB: nothing was expanded */
}

/* check's host-dependent findings: a short hostname warns (with its position), an egress source
 * that is not on this host is an error at its position, one that is (loopback) passes. */
static void test_check_hostname_and_sources(void **state)
{
    (void)state;
    struct config_errors errs = {0};
    char *path;
    struct config *cfg = load_text("hostname: relay\n"
                                   "egress:\n"
                                   "  legacy:\n"
                                   "    type: direct\n"
                                   "    source: [\"127.0.0.1\", \"192.0.2.77\"]\n"
                                   "ramp: { from: legacy }\n",
                                   &errs, &path);
    assert_non_null(cfg);
    char prefix[600];
    snprintf(prefix, sizeof prefix, "%s:1:11: warning: hostname: \"relay\"", path);
    int warned = 0;
    for (size_t i = 0; i < cfg->n_warnings; i++)
        if (!strncmp(cfg->warnings[i], prefix, strlen(prefix)) &&
            strstr(cfg->warnings[i], "fully qualified"))
            warned = 1;
    assert_true(warned);
    assert_int_equal(config_check_sources(cfg, &errs), 1);
    assert_true(has_error(&errs, path, 5, 27, "192.0.2.77 is not an address of this host"));
    config_errors_free(&errs);
    config_free(cfg);

    cfg = load_ok("hostname: relay.example.com\n"
                  "egress: { legacy: { type: direct, source: [\"127.0.0.1\"] } }\n"
                  "ramp: { from: legacy }\n");
    for (size_t i = 0; i < cfg->n_warnings; i++)
        assert_null(strstr(cfg->warnings[i], "fully qualified"));
    assert_int_equal(config_check_sources(cfg, &errs), 0);
    config_free(cfg);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_empty_file_means_defaults),
        cmocka_unit_test(test_example_file),
        cmocka_unit_test(test_full_contract),
        cmocka_unit_test(test_partial_file_keeps_other_defaults),
        cmocka_unit_test(test_broken_configs),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_all_errors_reported),
        cmocka_unit_test(test_users_file_lines),
        cmocka_unit_test(test_allowed_oddities),
        cmocka_unit_test(test_anchors_and_aliases_refused),
        cmocka_unit_test(test_check_hostname_and_sources),
        cmocka_unit_test(test_log_outputs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
