/* test_config_reload.c - unit tests for outrelay/config/config_reload.c: two identical configs
 * need no restart; a changed listen address, spool, user, TLS certificate, DNS server list or
 * log level is named; origins, egresses, ramp, caps and limits are not (a reload applies them). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config_reload.h"

static char *restart_names(const struct config *a, const struct config *b, int *n)
{
    struct strbuf sb = STRBUF_INIT;
    *n = config_restart_needed(a, b, &sb);
    return strbuf_detach(&sb, NULL);
}

static void test_same_needs_nothing(void **state)
{
    (void)state;
    struct config *a = config_defaults(), *b = config_defaults();
    int n;
    char *names = restart_names(a, b, &n);
    assert_int_equal(n, 0);
    assert_string_equal(names, "");
    free(names);
    config_free(a);
    config_free(b);
}

static void test_bound_settings_named(void **state)
{
    (void)state;
    struct config *a = config_defaults(), *b = config_defaults();
    free(b->listen[0].address_text);
    b->listen[0].address_text = strdup("127.0.0.1:2526");
    free(b->spool);
    b->spool = strdup("/elsewhere/spool");
    b->user = strdup("outrelay");
    b->log_level = a->log_level + 1;
    int n;
    char *names = restart_names(a, b, &n);
    assert_int_equal(n, 4);
    assert_string_equal(names, "listen, spool, user, log");
    free(names);
    config_free(a);
    config_free(b);
}

static void test_reloadable_settings_not_named(void **state)
{
    (void)state;
    struct config *a = config_defaults(), *b = config_defaults();
    b->max_recipients = a->max_recipients + 1;
    b->max_lifetime = a->max_lifetime + 60;
    b->ramp.interpolate = !a->ramp.interpolate;
    int n;
    char *names = restart_names(a, b, &n);
    assert_int_equal(n, 0);
    free(names);
    config_free(a);
    config_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_needs_nothing),
        cmocka_unit_test(test_bound_settings_named),
        cmocka_unit_test(test_reloadable_settings_not_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
