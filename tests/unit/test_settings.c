/* test_settings.c - unit tests for outrelay/config/settings.c and the table-driven reading in
 * config_loader.c: every table's defaults parse and are what config_defaults() holds; a file
 * value is checked for type and bounds with "file:line:col: ..."; unknown keys are refused;
 * durations and sizes parse; the sections made of lists of objects (ramp, caps, providers,
 * shaping, origins, dkim, alignment) take their defaults, bounds and keys from their tables;
 * the generated documents name every setting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "config/settings.h"

static char path[64];

/* Loads text as a configuration; returns the config or NULL with errs filled. */
static struct config *load_text(const char *text, struct config_errors *errs)
{
    snprintf(path, sizeof path, "/tmp/test_settings.XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct config *cfg = config_load(path, errs);
    unlink(path);
    return cfg;
}

/* errs holds exactly one error, "<path>:<where>: <message>". */
static void expect_one_error(const struct config_errors *errs, const char *where,
                             const char *message)
{
    char want[512];
    snprintf(want, sizeof want, "%s:%s: %s", path, where, message);
    assert_int_equal(errs->n, 1);
    assert_string_equal(errs->items[0], want);
}

static void test_every_default_parses(void **state)
{
    (void)state;
    size_t n;
    const struct settings_table *const *tables = settings_tables(&n);
    assert_true(n >= 10);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < tables[i]->n_items; j++) {
            const struct setting *s = &tables[i]->items[j];
            assert_non_null(s->help);
            if (!s->def || (s->type == SETTING_CUSTOM && !s->parse)) continue;
            /* a scratch struct big enough for any section's */
            void *scratch = calloc(1, sizeof(struct config) + sizeof(struct egress_conf));
            if (settings_parse_text(s, s->def, scratch) != 0)
                fail_msg("%s.%s: default \"%s\" does not parse", tables[i]->section, s->name,
                         s->def);
            if (s->type == SETTING_STRING_LIST) {
                char **items = *(char ***)((char *)scratch + s->offset);
                size_t count = *(size_t *)((char *)scratch + s->count_offset);
                for (size_t k = 0; k < count; k++)
                    free(items[k]);
            }
            if (s->type == SETTING_STRING_LIST || s->type == SETTING_DURATION_LIST ||
                s->type == SETTING_STRING)
                free(*(void **)((char *)scratch + s->offset));
            free(scratch);
        }
    }
}

static void test_defaults_come_from_tables(void **state)
{
    (void)state;
    struct config *cfg = config_defaults();
    assert_int_equal(cfg->max_recipients, 1000);
    assert_int_equal(cfg->max_message_size, 35 * 1048576);
    assert_int_equal(cfg->command_timeout, 300);
    assert_int_equal(cfg->connect_timeout, 30);
    assert_int_equal(cfg->n_retry, 6);
    assert_int_equal(cfg->retry[0], 300);
    assert_int_equal(cfg->retry[5], 14400);
    assert_int_equal(cfg->connection_rate_per_client, 300);
    assert_int_equal(cfg->connection_rate_period, 60);
    assert_int_equal(cfg->reserved_for_origins, 100); /* derived: a fifth of 500 */
    assert_int_equal(cfg->log_level, 1);
    assert_int_equal(cfg->listen[0].tls, TLS_OPTIONAL);
    assert_string_equal(cfg->spool, "./var/spool");
    assert_int_equal(cfg->egress[0].max_connections, 10);
    assert_int_equal(cfg->egress[0].max_messages_per_connection, 100);
    assert_int_equal(cfg->egress[0].port, 25);
    config_free(cfg);

    /* an egress written in a file gets the table's defaults too */
    struct config_errors errs = {0};
    cfg = load_text("egress:\n  cloud:\n    type: smarthost\n    host: mx.example.net\n"
                    "ramp:\n  from: cloud\n",
                    &errs);
    assert_non_null(cfg);
    assert_int_equal(cfg->egress[0].max_messages_per_connection, 100);
    assert_int_equal(cfg->egress[0].tls, TLS_OPTIONAL);
    config_free(cfg);
}

static void test_bounds_with_position(void **state)
{
    (void)state;
    struct config_errors errs = {0};
    assert_null(load_text("limits:\n  max_recipients: 0\n", &errs));
    expect_one_error(&errs, "2:19",
                     "limits.max_recipients: \"0\" is not a whole number from 1 to "
                     "1000000");
    config_errors_free(&errs);
    assert_null(load_text("egress:\n  e:\n    type: direct\n    max_connections: 100001\n"
                          "ramp:\n  from: e\n",
                          &errs));
    expect_one_error(&errs, "4:22",
                     "egress \"e\": max_connections: \"100001\" is not a whole "
                     "number from 1 to 100000");
    config_errors_free(&errs);
}

static void test_wrong_type_and_unknown_key(void **state)
{
    (void)state;
    struct config_errors errs = {0};
    assert_null(load_text("dedup:\n  window: [1h]\n", &errs));
    expect_one_error(&errs, "2:11", "dedup.window: expected a single value, found a list");
    config_errors_free(&errs);
    assert_null(load_text("dedup:\n  enabled: maybe\n", &errs));
    expect_one_error(&errs, "2:12", "dedup.enabled: \"maybe\" is not true or false");
    config_errors_free(&errs);
    assert_null(load_text("records:\n  keep: 1d\n", &errs));
    expect_one_error(&errs, "2:3",
                     "records: \"keep\" is not a known key (expected one of: retention)");
    config_errors_free(&errs);
    assert_null(load_text("metrics:\n  listen: nowhere\n", &errs));
    expect_one_error(&errs, "2:11",
                     "metrics.listen: \"nowhere\" is not an address:port (e.g. 127.0.0.1:9464)");
    config_errors_free(&errs);
}

static void test_durations_and_sizes(void **state)
{
    (void)state;
    struct config_errors errs = {0};
    struct config *cfg = load_text("delivery:\n  retry: [30s, 2h, 1d]\n  max_lifetime: 1w\n"
                                   "limits:\n  max_message_size: 10k\n"
                                   "  max_connection_rate_per_client: 20/10s\n",
                                   &errs);
    assert_non_null(cfg);
    assert_int_equal(cfg->n_retry, 3);
    assert_int_equal(cfg->retry[1], 7200);
    assert_int_equal(cfg->retry[2], 86400);
    assert_int_equal(cfg->max_lifetime, 7 * 86400);
    assert_int_equal(cfg->max_message_size, 10 * 1024);
    assert_int_equal(cfg->connection_rate_per_client, 20);
    assert_int_equal(cfg->connection_rate_period, 10);
    config_free(cfg);
    assert_null(load_text("limits:\n  max_message_size: 35X\n", &errs));
    expect_one_error(&errs, "2:21",
                     "limits.max_message_size: \"35X\" is not a size (bytes, or a "
                     "number with k, M or G, e.g. 35M)");
    config_errors_free(&errs);
    assert_null(load_text("delivery:\n  retry: []\n", &errs));
    expect_one_error(&errs, "2:10", "delivery.retry: needs at least one interval");
    config_errors_free(&errs);
    /* 0 turns the delay warning off; other durations refuse it */
    cfg = config_defaults();
    assert_int_equal(cfg->delay_warning, 4 * 3600);
    config_free(cfg);
    cfg = load_text("delivery:\n  delay_warning: 0\n", &errs);
    assert_non_null(cfg);
    assert_int_equal(cfg->delay_warning, 0);
    config_free(cfg);
    cfg = load_text("delivery:\n  delay_warning: 30m\n", &errs);
    assert_non_null(cfg);
    assert_int_equal(cfg->delay_warning, 1800);
    config_free(cfg);
    assert_null(load_text("delivery:\n  max_lifetime: 0\n", &errs));
    assert_int_equal(errs.n, 1);
    config_errors_free(&errs);
}

/* The sections with lists of objects: their tables give the defaults, bounds and keys. */
static void test_section_tables(void **state)
{
    (void)state;
    struct config *cfg = config_defaults();
    assert_string_equal(cfg->ramp.from, "legacy");
    assert_int_equal(cfg->ramp.n_key, 2);
    assert_string_equal(cfg->ramp.key[1], "rcpt_domain");
    assert_int_equal(cfg->n_dkim_headers, 15);
    assert_string_equal(cfg->dkim_headers[0], "from");
    assert_int_equal(cfg->n_dkim_oversign, 1);
    assert_int_equal(cfg->alignment_default, ALIGN_SEND);
    assert_int_equal(cfg->origins[0].strip_upstream_dkim, 0);
    assert_string_equal(config_alignment_action_name(ALIGN_HOLD), "hold");
    assert_string_equal(config_shaping_action_name(SHAPING_THROTTLE), "throttle");
    config_free(cfg);

    static const char egress[] = "egress:\n  e:\n    type: direct\nramp:\n  from: e\n";
    char text[1024];
    struct config_errors errs = {0};
    snprintf(text, sizeof text,
             "%sshaping:\n  - { name: r, match: { code: 421 }, action: suspend, duration: 1h }\n"
             "origins:\n  o:\n    networks: [10.0.0.0/8]\n    dkim_upstream: strip\n",
             egress);
    cfg = load_text(text, &errs);
    assert_non_null(cfg);
    assert_int_equal(cfg->shaping[0].hits, 1);
    assert_int_equal(cfg->shaping[0].window, 3600);
    assert_int_equal(cfg->shaping[0].duration, 3600);
    assert_int_equal(cfg->origins[0].strip_upstream_dkim, 1);
    config_free(cfg);

    snprintf(text, sizeof text, "%scaps:\n  - { egress: e, provider: other, per_hour: 0 }\n",
             egress);
    assert_null(load_text(text, &errs));
    expect_one_error(&errs, "7:45",
                     "caps[0].per_hour: \"0\" is not a whole number from 1 to 100000000");
    config_errors_free(&errs);

    snprintf(text, sizeof text,
             "%sshaping:\n  - { name: r, match: { code: 421 }, action: suspend, duration: 1h,\n"
             "      threshold: { hits: 0 } }\n",
             egress);
    assert_null(load_text(text, &errs));
    expect_one_error(&errs, "8:26",
                     "shaping[0].threshold.hits: \"0\" is not a whole number from 1 to 10000");
    config_errors_free(&errs);

    snprintf(text, sizeof text, "%sproviders:\n  p: { mx_suffixes: [p.example], url: x }\n",
             egress);
    assert_null(load_text(text, &errs));
    expect_one_error(&errs, "7:34",
                     "provider \"p\": \"url\" is not a known key (expected one of: "
                     "mx_suffixes, source)");
    config_errors_free(&errs);

    assert_null(load_text("alignment:\n  default: drop\n", &errs));
    expect_one_error(
        &errs, "2:12",
        "alignment.default: \"drop\" is not an alignment action (expected one of: send, "
        "reroute, hold, bounce)");
    config_errors_free(&errs);
}

/* Both documents name every setting of every table. */
static void test_documents_name_every_setting(void **state)
{
    (void)state;
    char *example = NULL, *man = NULL;
    size_t len;
    FILE *f = open_memstream(&example, &len);
    settings_print_example(f);
    fclose(f);
    f = open_memstream(&man, &len);
    settings_print_man(f);
    fclose(f);
    size_t n;
    const struct settings_table *const *tables = settings_tables(&n);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < tables[i]->n_items; j++) {
            char want[128];
            snprintf(want, sizeof want, ".BR %s \"", tables[i]->items[j].name);
            if (!strstr(man, want)) fail_msg("the man page lacks %s", want);
            snprintf(want, sizeof want, "%s: ", tables[i]->items[j].name);
            const struct setting *s = &tables[i]->items[j];
            if (!tables[i]->entries && (s->def || s->example) && !strstr(example, want))
                fail_msg("the example lacks %s", want);
        }
    }
    free(example);
    free(man);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_default_parses),
        cmocka_unit_test(test_defaults_come_from_tables),
        cmocka_unit_test(test_bounds_with_position),
        cmocka_unit_test(test_wrong_type_and_unknown_key),
        cmocka_unit_test(test_durations_and_sizes),
        cmocka_unit_test(test_section_tables),
        cmocka_unit_test(test_documents_name_every_setting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
