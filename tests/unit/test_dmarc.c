/* test_dmarc.c - unit tests for the DNS-free parts of outrelay/check/dmarc.c: DKIM key record
 * parsing and the key check, strict/relaxed identifier alignment (with the suffix list), and the
 * verdict/reason computation (dmarc_decide). DNS lookups and libopendmarc are covered by
 * tests/integration/dmarc_matrix.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "check/dmarc.h"
#include "mail/orgdomain.h"

static int setup_psl(void **state)
{
    (void)state;
    char err[256];
    return orgdomain_init(NULL, err, sizeof err);
}

static int teardown_psl(void **state)
{
    (void)state;
    orgdomain_shutdown();
    return 0;
}

/* ---- key records ---- */

static void test_key_record_plain(void **state)
{
    (void)state;
    struct dmarc_key_record r;
    assert_int_equal(dmarc_parse_key_record("v=DKIM1; k=ed25519; p=AbC+/=", &r, NULL), 0);
    assert_string_equal(r.key_type, "ed25519");
    assert_string_equal(r.public_b64, "AbC+/=");
}

static void test_key_record_defaults_and_whitespace(void **state)
{
    (void)state;
    struct dmarc_key_record r;
    /* No v=, no k= (rsa), whitespace around '=' and inside p=, trailing ';'. */
    assert_int_equal(dmarc_parse_key_record("  h=sha256 ; p = MIIB Ij\tAN Bg \r\n kq ;", &r, NULL), 0);
    assert_string_equal(r.key_type, "rsa");
    assert_string_equal(r.public_b64, "MIIBIjANBgkq");
}

static void test_key_record_revoked(void **state)
{
    (void)state;
    struct dmarc_key_record r;
    assert_int_equal(dmarc_parse_key_record("v=DKIM1; p=", &r, NULL), 0);
    assert_string_equal(r.public_b64, "");
    assert_int_equal(dmarc_parse_key_record("v=DKIM1; k=rsa; p= ;", &r, NULL), 0);
    assert_string_equal(r.public_b64, "");
}

static void test_key_record_invalid(void **state)
{
    (void)state;
    struct dmarc_key_record r;
    assert_int_equal(dmarc_parse_key_record("v=DKIM2; p=AAAA", &r, NULL), -1);        /* version */
    assert_int_equal(dmarc_parse_key_record("k=rsa; v=DKIM1; p=AAAA", &r, NULL), -1); /* v not first */
    assert_int_equal(dmarc_parse_key_record("v=DKIM1; k=rsa", &r, NULL), -1);         /* no p= */
    assert_int_equal(dmarc_parse_key_record("v=DKIM1; p=AA; p=BB", &r, NULL), -1);    /* twice */
    assert_int_equal(dmarc_parse_key_record("v=spf1 -all", &r, NULL), -1);
    assert_int_equal(dmarc_parse_key_record("", &r, NULL), -1);
    assert_int_equal(dmarc_parse_key_record("p=AAAA; garbage", &r, NULL), -1);
    assert_int_equal(dmarc_parse_key_record("=x; p=AAAA", &r, NULL), -1);
    char huge[3000];
    memcpy(huge, "p=", 2);
    memset(huge + 2, 'A', sizeof huge - 3);
    huge[sizeof huge - 1] = '\0';
    assert_int_equal(dmarc_parse_key_record(huge, &r, NULL), -1);
}

/* Every tag a verifier acts on (RFC 6376 3.6.1), and the syntax it refuses. */
static void test_key_record_tags(void **state)
{
    (void)state;
    struct dmarc_key_record r;
    const char *why = NULL;
    assert_int_equal(dmarc_parse_key_record("v=DKIM1; h=sha1 : sha256; s=email; t=y:s; n=hi there;"
                                            " xfuture=1; p=AAAA",
                                            &r, &why),
                     0);
    assert_string_equal(r.hashes, "sha1:sha256");
    assert_string_equal(r.services, "email");
    assert_int_equal(r.testing, 1);
    assert_int_equal(r.strict_identity, 1);
    assert_int_equal(dmarc_parse_key_record("v=DKIM1; k=rsa; k=rsa; p=AAAA", &r, &why), -1);
    assert_non_null(strstr(why, "twice"));
    assert_int_equal(dmarc_parse_key_record("v=DKIM1; 9x=1; p=AAAA", &r, &why), -1);
    assert_int_equal(dmarc_parse_key_record("v=DKIM1; p=AA\x01" "AA", &r, &why), -1);
    assert_int_equal(dmarc_parse_key_record("v=DKIM1; t=; p=AAAA", &r, &why), 0);
    assert_int_equal(r.testing, 0);
}

static void test_key_check_tags(void **state)
{
    (void)state;
    char detail[300];
    const char *name = "s1._domainkey.example.org";
    char *sha1[] = {"v=DKIM1; h=sha1; k=rsa; p=MIIBIjAN"};
    assert_int_equal(dmarc_key_check(sha1, 1, name, "rsa-sha256", "MIIBIjAN", NULL, "example.org",
                                     detail, sizeof detail),
                     0);
    assert_non_null(strstr(detail, "allows only h=sha1"));
    char *both[] = {"v=DKIM1; h=sha1:sha256; p=MIIBIjAN"};
    assert_int_equal(dmarc_key_check(both, 1, name, "rsa-sha256", "MIIBIjAN", NULL, "example.org",
                                     detail, sizeof detail),
                     1);
    char *service[] = {"v=DKIM1; s=tlsrpt; p=MIIBIjAN"};
    assert_int_equal(dmarc_key_check(service, 1, name, "rsa-sha256", "MIIBIjAN", NULL,
                                     "example.org", detail, sizeof detail),
                     0);
    assert_non_null(strstr(detail, "not email"));
    char *any[] = {"v=DKIM1; s=*; p=MIIBIjAN"};
    assert_int_equal(dmarc_key_check(any, 1, name, "rsa-sha256", "MIIBIjAN", NULL, "example.org",
                                     detail, sizeof detail),
                     1);
    char *strict[] = {"v=DKIM1; t=s; p=MIIBIjAN"};
    assert_int_equal(dmarc_key_check(strict, 1, name, "rsa-sha256", "MIIBIjAN", "mail.example.org",
                                     "example.org", detail, sizeof detail),
                     0);
    assert_non_null(strstr(detail, "t=s"));
    assert_int_equal(dmarc_key_check(strict, 1, name, "rsa-sha256", "MIIBIjAN", "example.org",
                                     "example.org", detail, sizeof detail),
                     1);
    char *testing[] = {"v=DKIM1; t=y; p=MIIBIjAN"};
    assert_int_equal(dmarc_key_check(testing, 1, name, "rsa-sha256", "MIIBIjAN", NULL,
                                     "example.org", detail, sizeof detail),
                     1);
    assert_non_null(strstr(detail, "testing"));
    char *broken[] = {"v=DKIM1; p=MIIBIjAN; p=MIIBIjAN"};
    assert_int_equal(dmarc_key_check(broken, 1, name, "rsa-sha256", "MIIBIjAN", NULL,
                                     "example.org", detail, sizeof detail),
                     0);
    assert_non_null(strstr(detail, "invalid"));
}

static void test_key_check(void **state)
{
    (void)state;
    char detail[160];
    const char *name = "s1._domainkey.example.org";
    char *match[] = {"v=DKIM1; k=rsa; p=MIIB IjAN"};
    assert_int_equal(
        dmarc_key_check(match, 1, name, "rsa-sha256", "MIIBIjAN", NULL, "example.org", detail, sizeof detail), 1);
    /* Our own key may carry whitespace too (copied from a wrapped file). */
    assert_int_equal(
        dmarc_key_check(match, 1, name, "rsa-sha256", "MIIB\nIjAN", NULL, "example.org", detail, sizeof detail), 1);

    char *other[] = {"v=DKIM1; p=MIIBzzzz"};
    assert_int_equal(
        dmarc_key_check(other, 1, name, "rsa-sha256", "MIIBIjAN", NULL, "example.org", detail, sizeof detail), 0);
    assert_string_equal(detail, "key published at s1._domainkey.example.org differs from ours");

    char *revoked[] = {"v=DKIM1; p="};
    assert_int_equal(
        dmarc_key_check(revoked, 1, name, "rsa-sha256", "MIIBIjAN", NULL, "example.org", detail, sizeof detail), 0);
    assert_string_equal(detail, "key at s1._domainkey.example.org is revoked (empty p=)");

    char *ed[] = {"v=DKIM1; k=ed25519; p=MIIBIjAN"};
    assert_int_equal(dmarc_key_check(ed, 1, name, "rsa-sha256", "MIIBIjAN", NULL, "example.org", detail, sizeof detail),
                     0);
    assert_string_equal(detail, "key at s1._domainkey.example.org is k=ed25519, we sign with "
                                "rsa-sha256");
    assert_int_equal(
        dmarc_key_check(ed, 1, name, "ed25519-sha256", "MIIBIjAN", NULL, "example.org", detail, sizeof detail), 1);

    char *junk[] = {"hello world", "v=spf1 -all"};
    assert_int_equal(dmarc_key_check(junk, 2, name, "rsa-sha256", "X", NULL, "example.org", detail, sizeof detail), 0);
    assert_string_equal(detail, "no usable DKIM key record at s1._domainkey.example.org");

    /* Several records (key rollover): ours among them counts. */
    char *two[] = {"v=DKIM1; p=OLDKEY", "junk", "v=DKIM1; p=NEWKEY"};
    assert_int_equal(dmarc_key_check(two, 3, name, "rsa-sha256", "NEWKEY", NULL, "example.org", detail, sizeof detail),
                     1);
}

/* ---- alignment ---- */

static void test_alignment_strict(void **state)
{
    (void)state;
    assert_int_equal(dmarc_domains_aligned("example.org", "example.org", 's'), 1);
    assert_int_equal(dmarc_domains_aligned("Example.ORG", "example.org.", 's'), 1);
    assert_int_equal(dmarc_domains_aligned("mail.example.org", "example.org", 's'), 0);
    assert_int_equal(dmarc_domains_aligned("example.org", "sub.example.org", 's'), 0);
    assert_int_equal(dmarc_domains_aligned("", "example.org", 's'), 0);
}

static void test_alignment_relaxed(void **state)
{
    (void)state;
    assert_int_equal(dmarc_domains_aligned("mail.example.org", "example.org", 'r'), 1);
    assert_int_equal(dmarc_domains_aligned("a.example.org", "b.c.EXAMPLE.org", 'r'), 1);
    assert_int_equal(dmarc_domains_aligned("other.net", "example.org", 'r'), 0);
    /* The suffix list matters: co.uk is a public suffix, so these are different owners. */
    assert_int_equal(dmarc_domains_aligned("a.example.co.uk", "b.example.co.uk", 'r'), 1);
    assert_int_equal(dmarc_domains_aligned("example.co.uk", "other.co.uk", 'r'), 0);
    assert_int_equal(dmarc_domains_aligned("", "example.org", 'r'), 0);
    assert_int_equal(dmarc_domains_aligned("example.org", "", 0), 0);
}

/* ---- verdict ---- */

static void base_prediction(struct dmarc_prediction *p, const char *from, const char *record_at)
{
    memset(p, 0, sizeof *p);
    snprintf(p->from_domain, sizeof p->from_domain, "%s", from);
    snprintf(p->record_domain, sizeof p->record_domain, "%s", record_at);
    p->p = 'r';
    p->pct = 100;
    p->adkim = p->aspf = 'r';
}

static void add_sig(struct dmarc_prediction *p, const char *d, int key_matches, int aligned,
                    const char *detail)
{
    struct dmarc_dkim_outcome *o = &p->dkim[p->n_dkim++];
    snprintf(o->domain, sizeof o->domain, "%s", d);
    snprintf(o->selector, sizeof o->selector, "s1");
    o->key_matches = key_matches;
    o->aligned = aligned;
    snprintf(o->detail, sizeof o->detail, "%s", detail);
}

static void test_decide_fail_reason(void **state)
{
    (void)state;
    struct dmarc_prediction p;
    base_prediction(&p, "example.com", "example.com");
    p.spf = SPF_PASS;
    snprintf(p.spf_domain, sizeof p.spf_domain, "bounce.other.net");
    add_sig(&p, "other.net", 1, 0, "our key is published at s1._domainkey.other.net");
    dmarc_decide(&p, DMARC_RECORD_FOUND, NULL);
    assert_int_equal(p.verdict, DMARC_VERDICT_FAIL);
    assert_int_equal(p.policy_to_apply, 'r');
    assert_int_equal(p.dkim_aligned_pass, 0);
    assert_int_equal(p.applied_subdomain_policy, 0);
    assert_string_equal(p.reason, "DMARC would fail for example.com: SPF passes for "
                                  "bounce.other.net (not aligned), DKIM d=other.net (not "
                                  "aligned); policy reject");
}

static void test_decide_pass(void **state)
{
    (void)state;
    struct dmarc_prediction p;
    base_prediction(&p, "example.com", "example.com");
    p.spf = SPF_PASS;
    p.spf_aligned = 1;
    snprintf(p.spf_domain, sizeof p.spf_domain, "bounce.example.com");
    dmarc_decide(&p, DMARC_RECORD_FOUND, NULL);
    assert_int_equal(p.verdict, DMARC_VERDICT_PASS);
    assert_int_equal(p.policy_to_apply, 0);
    assert_string_equal(
        p.reason, "DMARC passes for example.com: SPF passes for bounce.example.com (aligned)");

    base_prediction(&p, "example.com", "example.com");
    p.spf = SPF_FAIL;
    snprintf(p.spf_domain, sizeof p.spf_domain, "example.com");
    p.spf_aligned = 1;
    add_sig(&p, "other.net", 1, 0, "");
    add_sig(&p, "example.com", 1, 1, "");
    dmarc_decide(&p, DMARC_RECORD_FOUND, NULL);
    assert_int_equal(p.verdict, DMARC_VERDICT_PASS);
    assert_int_equal(p.dkim_aligned_pass, 1);
    assert_string_equal(
        p.reason, "DMARC passes for example.com: DKIM d=example.com s=s1 (aligned, key published)");
}

static void test_decide_aligned_key_problems(void **state)
{
    (void)state;
    struct dmarc_prediction p;
    /* Aligned signature whose key is not published: fails, and says why. */
    base_prediction(&p, "example.com", "example.com");
    p.spf = SPF_SOFTFAIL;
    p.spf_aligned = 1;
    snprintf(p.spf_domain, sizeof p.spf_domain, "example.com");
    add_sig(&p, "example.com", 0, 1, "no key published at s1._domainkey.example.com");
    dmarc_decide(&p, DMARC_RECORD_FOUND, NULL);
    assert_int_equal(p.verdict, DMARC_VERDICT_FAIL);
    assert_string_equal(p.reason, "DMARC would fail for example.com: SPF softfails for "
                                  "example.com (aligned), DKIM d=example.com (aligned, but no "
                                  "key published at s1._domainkey.example.com); policy reject");

    /* ... and a temporary DNS failure on that key could change the answer. */
    base_prediction(&p, "example.com", "example.com");
    p.spf = SPF_FAIL;
    add_sig(&p, "example.com", -1, 1, "temporary DNS failure looking up s1._domainkey.x");
    dmarc_decide(&p, DMARC_RECORD_FOUND, NULL);
    assert_int_equal(p.verdict, DMARC_VERDICT_TEMPERROR);
    assert_int_equal(p.policy_to_apply, 0);

    /* An unaligned signature's key trouble cannot change anything. */
    base_prediction(&p, "example.com", "example.com");
    p.spf = SPF_FAIL;
    add_sig(&p, "other.net", -1, 0, "temporary DNS failure");
    dmarc_decide(&p, DMARC_RECORD_FOUND, NULL);
    assert_int_equal(p.verdict, DMARC_VERDICT_FAIL);
}

static void test_decide_spf_temperror(void **state)
{
    (void)state;
    struct dmarc_prediction p;
    base_prediction(&p, "example.com", "example.com");
    p.spf = SPF_TEMPERROR;
    p.spf_aligned = 1;
    snprintf(p.spf_domain, sizeof p.spf_domain, "example.com");
    dmarc_decide(&p, DMARC_RECORD_FOUND, NULL);
    assert_int_equal(p.verdict, DMARC_VERDICT_TEMPERROR);

    p.spf_aligned = 0;
    dmarc_decide(&p, DMARC_RECORD_FOUND, NULL);
    assert_int_equal(p.verdict, DMARC_VERDICT_FAIL);
    assert_non_null(strstr(p.reason, "no DKIM signature"));
}

static void test_decide_subdomain_policy(void **state)
{
    (void)state;
    struct dmarc_prediction p;
    /* Record found at the organisational domain, sp set: sp applies. */
    base_prediction(&p, "sub.example.org", "example.org");
    p.sp = 'q';
    p.spf = SPF_FAIL;
    dmarc_decide(&p, DMARC_RECORD_FOUND, NULL);
    assert_int_equal(p.verdict, DMARC_VERDICT_FAIL);
    assert_int_equal(p.applied_subdomain_policy, 1);
    assert_int_equal(p.policy_to_apply, 'q');
    assert_non_null(strstr(p.reason, "; subdomain policy quarantine"));

    /* No sp: p applies. */
    p.sp = 0;
    dmarc_decide(&p, DMARC_RECORD_FOUND, NULL);
    assert_int_equal(p.applied_subdomain_policy, 0);
    assert_int_equal(p.policy_to_apply, 'r');

    /* Record at the From domain itself: its p applies even with sp set. */
    base_prediction(&p, "sub.example.org", "sub.example.org");
    p.p = 'n';
    p.sp = 'r';
    p.pct = 20;
    dmarc_decide(&p, DMARC_RECORD_FOUND, NULL);
    assert_int_equal(p.applied_subdomain_policy, 0);
    assert_int_equal(p.policy_to_apply, 'n');
    assert_non_null(strstr(p.reason, "; policy none (pct=20)"));
}

static void test_decide_no_record_and_tempfail(void **state)
{
    (void)state;
    struct dmarc_prediction p;
    base_prediction(&p, "example.com", "");
    p.p = 0;
    p.spf = SPF_FAIL; /* would fail, but there is nothing to fail */
    dmarc_decide(&p, DMARC_RECORD_NONE, "no record at _dmarc.example.com");
    assert_int_equal(p.verdict, DMARC_VERDICT_NO_POLICY);
    assert_int_equal(p.policy_to_apply, 0);
    assert_string_equal(p.reason,
                        "no DMARC policy for example.com: no record at _dmarc.example.com");

    p.spf = SPF_PASS;
    p.spf_aligned = 1;
    dmarc_decide(&p, DMARC_RECORD_TEMPFAIL, "temporary DNS failure looking up _dmarc.example.com");
    assert_int_equal(p.verdict, DMARC_VERDICT_TEMPERROR);
    assert_string_equal(p.reason, "DMARC for example.com cannot be predicted now: temporary DNS "
                                  "failure looking up _dmarc.example.com");
    assert_string_equal(dmarc_verdict_name(p.verdict), "temperror");
    assert_string_equal(dmarc_verdict_name(DMARC_VERDICT_NO_POLICY), "none");
}

static void test_decide_reason_truncates(void **state)
{
    (void)state;
    struct dmarc_prediction p;
    base_prediction(&p, "example.com", "example.com");
    p.spf = SPF_FAIL;
    char longname[250];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    for (int i = 0; i < 8; i++)
        add_sig(&p, longname, 0, 0, "");
    dmarc_decide(&p, DMARC_RECORD_FOUND, NULL);
    assert_int_equal(p.verdict, DMARC_VERDICT_FAIL);
    assert_int_equal(strlen(p.reason), sizeof p.reason - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_record_plain),
        cmocka_unit_test(test_key_record_defaults_and_whitespace),
        cmocka_unit_test(test_key_record_revoked),
        cmocka_unit_test(test_key_record_invalid),
        cmocka_unit_test(test_key_check),
        cmocka_unit_test(test_key_record_tags),
        cmocka_unit_test(test_key_check_tags),
        cmocka_unit_test(test_alignment_strict),
        cmocka_unit_test(test_alignment_relaxed),
        cmocka_unit_test(test_decide_fail_reason),
        cmocka_unit_test(test_decide_pass),
        cmocka_unit_test(test_decide_aligned_key_problems),
        cmocka_unit_test(test_decide_spf_temperror),
        cmocka_unit_test(test_decide_subdomain_policy),
        cmocka_unit_test(test_decide_no_record_and_tempfail),
        cmocka_unit_test(test_decide_reason_truncates),
    };
    return cmocka_run_group_tests(tests, setup_psl, teardown_psl);
}
