/* spf_eval.c - test tool: one SPF evaluation through outrelay's libspf2 layer against a given DNS
 * server, bypassing the result cache. Used by tests/integration/spf_rfc7208_suite.py.
 * Usage: spf_eval DNS_SERVER IP SENDER HELO  ->  prints "result<TAB>explanation" on stdout;
 * exit status 0 when evaluated, 2 on usage or setup errors. Logs go to stderr (debug ones too
 * when SPF_EVAL_DEBUG is set). */
#include <stdio.h>
#include <stdlib.h>

#include "check/spf.h"
#include "common/log.h"
#include "dns/dns_sync.h"

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s DNS_SERVER IP SENDER HELO\n", argv[0]);
        return 2;
    }
    log_init("spf_eval", 0, getenv("SPF_EVAL_DEBUG") ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARN);
    char err[256];
    char *servers[] = {argv[1]};
    if (dns_sync_init(servers, 1, NULL, err, sizeof err) < 0 || spf_init(err, sizeof err) < 0) {
        fprintf(stderr, "spf_eval: %s\n", err);
        dns_sync_shutdown();
        return 2;
    }
    struct spf_outcome out;
    spf_evaluate_uncached(argv[2], argv[3], argv[4], &out);
    printf("%s\t%s\n", spf_result_name(out.result), out.explanation);
    spf_shutdown();
    dns_sync_shutdown();
    return 0;
}
