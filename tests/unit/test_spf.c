/* test_spf.c - unit tests for outrelay/check/spf.c without DNS: libspf2 runs against a small
 * in-memory table installed with spf_set_resolver(). Covers result names, the wording of each
 * result, the null sender (HELO) rule, IPv4-mapped clients, libspf2's fatal-error path, TTL
 * bounds and the result cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/types.h>
#include <netinet/in.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <spf2/spf.h>

#include "check/spf.h"
#include "common/util.h"
#include "dns/dns_sync.h"

struct fake_record {
    const char *name;
    int rrtype;
    enum dns_status status;
    unsigned ttl;
    const char *text; /* TXT text, or an address for A */
};

static const struct fake_record fake_zone[] = {
    {"example.com", DNS_TYPE_TXT, DNS_OK, 600, "v=spf1 ip4:192.0.2.1 -all"},
    {"soft.example.com", DNS_TYPE_TXT, DNS_OK, 5, "v=spf1 ip4:192.0.2.1 ~all"},
    {"neutral.example.com", DNS_TYPE_TXT, DNS_OK, 86400, "v=spf1 ?all"},
    {"twice.example.com", DNS_TYPE_TXT, DNS_OK, 300, "v=spf1 -all"},
    {"twice.example.com", DNS_TYPE_TXT, DNS_OK, 300, "v=spf1 +all"},
    {"nospf.example.com", DNS_TYPE_TXT, DNS_OK, 300, "google-site-verification=abc"},
    {"broken.example.com", DNS_TYPE_TXT, DNS_TEMPFAIL, 0, NULL},
    {"mail.example.net", DNS_TYPE_TXT, DNS_OK, 300, "v=spf1 a -all"},
    {"mail.example.net", DNS_TYPE_A, DNS_OK, 300, "198.51.100.25"},
};

static _Atomic int queries; /* the threads test calls the resolver concurrently */
static _Thread_local char last_query[256];

/* Answers from fake_zone: every matching record; NXDOMAIN when the name is unknown. */
static int fake_query(const char *name, int rrtype, struct dns_answer *a)
{
    memset(a, 0, sizeof *a);
    queries++;
    snprintf(last_query, sizeof last_query, "%s", name);
    if (util_strcaseeq(name, "fatal.example.com"))
        SPF_error("simulated libspf2 fatal error"); /* as libspf2 does on internal failures */
    int known = 0;
    for (size_t i = 0; i < sizeof fake_zone / sizeof fake_zone[0]; i++) {
        const struct fake_record *r = &fake_zone[i];
        if (!util_strcaseeq(r->name, name)) continue;
        known = 1;
        if (r->rrtype != rrtype) continue;
        if (r->status != DNS_OK) {
            a->status = r->status;
            a->error = "SERVFAIL";
            return 0;
        }
        if (a->n == 0 || r->ttl < a->ttl) a->ttl = r->ttl;
        if (rrtype == DNS_TYPE_TXT) {
            a->txt = xrealloc(a->txt, (a->n + 1) * sizeof *a->txt);
            a->txt[a->n++] = xstrdup(r->text);
        } else if (rrtype == DNS_TYPE_A) {
            a->addrs = xrealloc(a->addrs, (a->n + 1) * sizeof *a->addrs);
            assert_int_equal(util_parse_ip(r->text, &a->addrs[a->n]), 0);
            a->n++;
        }
    }
    a->status = a->n ? DNS_OK : known ? DNS_NODATA : DNS_NXDOMAIN;
    return 0;
}

static int setup(void **state)
{
    (void)state;
    char err[256];
    spf_set_resolver(fake_query, dns_sync_free);
    assert_int_equal(spf_init(err, sizeof err), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    spf_shutdown();
    spf_set_resolver(NULL, NULL);
    return 0;
}

static int reset(void **state)
{
    (void)state;
    spf_cache_flush();
    queries = 0;
    last_query[0] = '\0';
    return 0;
}

static void test_result_names(void **state)
{
    (void)state;
    assert_string_equal(spf_result_name(SPF_NONE), "none");
    assert_string_equal(spf_result_name(SPF_NEUTRAL), "neutral");
    assert_string_equal(spf_result_name(SPF_PASS), "pass");
    assert_string_equal(spf_result_name(SPF_FAIL), "fail");
    assert_string_equal(spf_result_name(SPF_SOFTFAIL), "softfail");
    assert_string_equal(spf_result_name(SPF_TEMPERROR), "temperror");
    assert_string_equal(spf_result_name(SPF_PERMERROR), "permerror");
}

static void test_pass_and_fail_in_words(void **state)
{
    (void)state;
    struct spf_outcome out;
    spf_evaluate_uncached("192.0.2.1", "bounce@example.com", "relay.example.org", &out);
    assert_int_equal(out.result, SPF_PASS);
    assert_string_equal(out.domain, "example.com");
    assert_string_equal(out.explanation, "SPF record of example.com authorises 192.0.2.1 (pass)");
    assert_int_equal(out.ttl, 600);

    spf_evaluate_uncached("203.0.113.7", "bounce@example.com", "relay.example.org", &out);
    assert_int_equal(out.result, SPF_FAIL);
    assert_string_equal(out.explanation,
                        "SPF record of example.com does not authorise 203.0.113.7 (fail)");
}

static void test_other_results_in_words(void **state)
{
    (void)state;
    struct spf_outcome out;
    spf_evaluate_uncached("203.0.113.7", "a@soft.example.com", "relay.example.org", &out);
    assert_int_equal(out.result, SPF_SOFTFAIL);
    assert_non_null(strstr(out.explanation, "(softfail)"));

    spf_evaluate_uncached("203.0.113.7", "a@neutral.example.com", "relay.example.org", &out);
    assert_int_equal(out.result, SPF_NEUTRAL);
    assert_non_null(strstr(out.explanation, "(neutral)"));

    spf_evaluate_uncached("203.0.113.7", "a@nospf.example.com", "relay.example.org", &out);
    assert_int_equal(out.result, SPF_NONE);
    assert_string_equal(out.explanation, "nospf.example.com publishes no SPF record (none)");

    spf_evaluate_uncached("203.0.113.7", "a@nowhere.example.com", "relay.example.org", &out);
    assert_int_equal(out.result, SPF_NONE);

    spf_evaluate_uncached("203.0.113.7", "a@broken.example.com", "relay.example.org", &out);
    assert_int_equal(out.result, SPF_TEMPERROR);
    assert_non_null(
        strstr(out.explanation, "DNS error while evaluating SPF of broken.example.com"));
    assert_non_null(strstr(out.explanation, "(temperror)"));
    assert_int_equal(out.ttl, 60);

    spf_evaluate_uncached("203.0.113.7", "a@twice.example.com", "relay.example.org", &out);
    assert_int_equal(out.result, SPF_PERMERROR);
    assert_non_null(strstr(out.explanation, "twice.example.com"));
    assert_non_null(strstr(out.explanation, "(permerror)"));

    spf_evaluate_uncached("not-an-address", "a@example.com", "relay.example.org", &out);
    assert_int_equal(out.result, SPF_PERMERROR);
}

static void test_null_sender_uses_helo(void **state)
{
    (void)state;
    struct spf_outcome out;
    spf_evaluate_uncached("198.51.100.25", "", "mail.example.net", &out);
    assert_string_equal(out.domain, "mail.example.net");
    assert_int_equal(out.result, SPF_PASS);
    spf_evaluate_uncached("192.0.2.1", "", "mail.example.net", &out);
    assert_int_equal(out.result, SPF_FAIL);
    assert_string_equal(out.explanation,
                        "SPF record of mail.example.net does not authorise 192.0.2.1 (fail)");

    /* a sender without a domain part counts as the null sender */
    spf_evaluate_uncached("198.51.100.25", "user@", "mail.example.net", &out);
    assert_string_equal(out.domain, "mail.example.net");
    assert_int_equal(out.result, SPF_PASS);

    /* no sender and no HELO: nothing to check, no DNS */
    queries = 0;
    spf_evaluate_uncached("192.0.2.1", "", "", &out);
    assert_int_equal(out.result, SPF_NONE);
    assert_int_equal(queries, 0);
}

static void test_ipv4_mapped_client_is_ipv4(void **state)
{
    (void)state;
    struct spf_outcome out;
    spf_evaluate_uncached("::ffff:192.0.2.1", "a@example.com", "relay.example.org", &out);
    assert_int_equal(out.result, SPF_PASS);
    spf_evaluate_uncached("2001:db8::1", "a@example.com", "relay.example.org", &out);
    assert_int_equal(out.result, SPF_FAIL);
}

static void test_loopback_free_ride(void **state)
{
    (void)state;
    /* libspf2's query_mailfrom passes loopback clients without looking at DNS; outrelay asks
     * about its own egress addresses, which are 127.0.0.x in test worlds, so spf.c evaluates
     * them against the record like any other address. */
    struct spf_outcome out;
    queries = 0;
    spf_evaluate_uncached("127.0.0.2", "a@example.com", "relay.example.org", &out);
    assert_int_equal(out.result, SPF_FAIL);
    assert_true(queries > 0);
    assert_string_equal(out.explanation,
                        "SPF record of example.com does not authorise 127.0.0.2 (fail)");
}

static void test_fatal_library_error_is_permerror(void **state)
{
    (void)state;
    /* libspf2's error handler may not return (it would abort); spf.c jumps back out of the
     * query, reports permerror with the message, and the process carries on. */
    struct spf_outcome out;
    spf_evaluate_uncached("192.0.2.1", "a@fatal.example.com", "relay.example.org", &out);
    assert_int_equal(out.result, SPF_PERMERROR);
    assert_non_null(strstr(out.explanation, "simulated libspf2 fatal error"));
    spf_evaluate_uncached("192.0.2.1", "a@example.com", "relay.example.org", &out);
    assert_int_equal(out.result, SPF_PASS);
}

static void test_ttl_bounds(void **state)
{
    (void)state;
    struct spf_outcome out;
    spf_evaluate_uncached("192.0.2.1", "a@soft.example.com", "h.example.org", &out);
    assert_int_equal(out.ttl, 60); /* record TTL 5 */
    spf_evaluate_uncached("192.0.2.1", "a@neutral.example.com", "h.example.org", &out);
    assert_int_equal(out.ttl, 3600); /* record TTL 86400 */
}

static void test_cache_returns_the_same_answer(void **state)
{
    (void)state;
    struct spf_outcome first, second;
    spf_evaluate("203.0.113.7", "bounce@example.com", "relay.example.org", &first);
    int after_first = queries;
    assert_true(after_first > 0);
    spf_evaluate("203.0.113.7", "other@EXAMPLE.com", "relay.example.org", &second);
    assert_int_equal(queries, after_first); /* no DNS the second time */
    assert_int_equal(second.result, first.result);
    assert_string_equal(second.domain, first.domain);
    assert_string_equal(second.explanation, first.explanation);
    assert_true(second.ttl <= first.ttl && second.ttl > 0);

    /* another address is another entry */
    spf_evaluate("192.0.2.1", "bounce@example.com", "relay.example.org", &second);
    assert_true(queries > after_first);
    assert_int_equal(second.result, SPF_PASS);

    /* a flush forgets */
    int before = queries;
    spf_cache_flush();
    spf_evaluate("203.0.113.7", "bounce@example.com", "relay.example.org", &second);
    assert_true(queries > before);
    assert_int_equal(second.result, SPF_FAIL);
}

static void test_null_sender_cache_key_is_helo(void **state)
{
    (void)state;
    struct spf_outcome out;
    spf_evaluate("198.51.100.25", "", "mail.example.net", &out);
    assert_int_equal(out.result, SPF_PASS);
    assert_string_equal(last_query, "mail.example.net");
    int n = queries;
    spf_evaluate("198.51.100.25", "", "MAIL.example.net", &out);
    assert_int_equal(queries, n);
    assert_int_equal(out.result, SPF_PASS);
}

static void *evaluate_many(void *arg)
{
    (void)arg;
    for (int i = 0; i < 40; i++) {
        struct spf_outcome out;
        const char *ip = i % 2 ? "192.0.2.1" : "203.0.113.7";
        if (i % 3)
            spf_evaluate(ip, "x@example.com", "relay.example.org", &out);
        else
            spf_evaluate_uncached(ip, "x@example.com", "relay.example.org", &out);
        if (out.result != (i % 2 ? SPF_PASS : SPF_FAIL)) return (void *)1;
    }
    return NULL;
}

static void test_threads_share_the_server(void **state)
{
    (void)state;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, evaluate_many, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *ret = NULL;
        assert_int_equal(pthread_join(t[i], &ret), 0);
        assert_null(ret);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_result_names, reset),
        cmocka_unit_test_setup(test_pass_and_fail_in_words, reset),
        cmocka_unit_test_setup(test_other_results_in_words, reset),
        cmocka_unit_test_setup(test_null_sender_uses_helo, reset),
        cmocka_unit_test_setup(test_ipv4_mapped_client_is_ipv4, reset),
        cmocka_unit_test_setup(test_loopback_free_ride, reset),
        cmocka_unit_test_setup(test_fatal_library_error_is_permerror, reset),
        cmocka_unit_test_setup(test_ttl_bounds, reset),
        cmocka_unit_test_setup(test_cache_returns_the_same_answer, reset),
        cmocka_unit_test_setup(test_null_sender_cache_key_is_helo, reset),
        cmocka_unit_test_setup(test_threads_share_the_server, reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
