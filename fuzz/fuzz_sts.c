/* fuzz_sts.c - the MTA-STS parsers (sts/sts_parse.c) on what a policy host or a DNS server
 * sends: the input as a policy file (sts_parse_policy) and, split at NUL bytes, as TXT records
 * (sts_parse_txt). Asserts that an accepted policy has a mode, a max_age within 0..31557600,
 * mx patterns unless its mode is none (and that each matches a host made from it), a policy
 * string shorter than twice the input; and that an accepted TXT id is 1-32 alphanumerics. */
#include <assert.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sts/sts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[200];
    struct mta_sts_policy *p = sts_parse_policy((const char *)data, size, err, sizeof err);
    if (p) {
        assert(p->max_age >= 0 && p->max_age <= STS_MAX_AGE_LIMIT);
        assert(p->mode == STS_MODE_NONE || p->n_mx > 0);
        assert(strlen(p->text) <= 2 * size + 1);
        for (size_t i = 0; i < p->n_mx; i++) {
            char host[300];
            const char *m = p->mx[i];
            snprintf(host, sizeof host, "%s%s", strncmp(m, "*.", 2) ? "" : "x",
                     strncmp(m, "*.", 2) ? m : m + 1);
            assert(sts_mx_matches(m, host));
        }
        sts_policy_release(p);
    }
    /* TXT records: the input cut at NUL bytes, at most 8 of them */
    char *copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = '\0';
    char *recs[8];
    size_t n = 0;
    for (char *s = copy; n < 8 && s <= copy + size; s += strlen(s) + 1)
        recs[n++] = s;
    char id[33];
    if (sts_parse_txt(recs, n, id) == 0) {
        size_t len = strlen(id);
        assert(len >= 1 && len <= 32);
        for (size_t i = 0; i < len; i++)
            assert(isalnum((unsigned char)id[i]));
    }
    free(copy);
    return 0;
}
