/* orgdomain.c - see orgdomain.h. The only code that loads the public suffix list; never
 * touches the network. */
#include "mail/orgdomain.h"

#include <ctype.h>
#include <libpsl.h>
#include <stdio.h>
#include <string.h>

static psl_ctx_t *orgdomain_psl;

int orgdomain_init(const char *path, char *err, size_t errlen)
{
    if (orgdomain_psl) return 0;
    orgdomain_psl = psl_load_file(path ? path : ORGDOMAIN_PSL_FILE);
    if (!orgdomain_psl) {
        snprintf(err, errlen, "cannot load the public suffix list %s",
                 path ? path : ORGDOMAIN_PSL_FILE);
        return -1;
    }
    return 0;
}

void orgdomain_shutdown(void)
{
    if (orgdomain_psl) psl_free(orgdomain_psl);
    orgdomain_psl = NULL;
}

void orgdomain_of(const char *domain, char *out, size_t size)
{
    char lower[256];
    size_t n = strlen(domain);
    if (n >= sizeof lower) n = sizeof lower - 1;
    for (size_t i = 0; i < n; i++)
        lower[i] = (char)tolower((unsigned char)domain[i]);
    lower[n] = '\0';
    if (n && lower[n - 1] == '.') lower[--n] = '\0';
    const char *reg = orgdomain_psl ? psl_registrable_domain(orgdomain_psl, lower) : NULL;
    snprintf(out, size, "%s", reg ? reg : lower);
}
