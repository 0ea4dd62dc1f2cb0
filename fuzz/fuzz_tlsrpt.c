/* fuzz_tlsrpt.c - the TLS-RPT record parser (tlsrpt_parse_record, tlsrpt/tlsrpt_report.c) on a
 * `_smtp._tls` TXT record as any DNS server might send it. Every address it accepts becomes
 * the RCPT TO and To: of a report mail, so each must be an RFC 5321 mailbox: asserts that it
 * passes smtp_check_mailbox and holds no control character (a space only inside a quoted local
 * part, which RFC 5321 allows). */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mail/smtp_proto.h"
#include "tlsrpt/tlsrpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *txt = malloc(size + 1);
    memcpy(txt, data, size);
    txt[size] = '\0';
    char *rua[8];
    size_t n = 0, other = 0;
    if (tlsrpt_parse_record(txt, rua, 8, &n, &other) == 0) {
        assert(n + other > 0 && n <= 8);
        for (size_t i = 0; i < n; i++) {
            assert(smtp_check_mailbox(rua[i], 0) == 0);
            for (const char *c = rua[i]; *c; c++)
                assert((unsigned char)*c >= ' ' && *c != 0x7f && (*c != ' ' || rua[i][0] == '"'));
            free(rua[i]);
        }
    } else {
        assert(n == 0);
    }
    free(txt);
    return 0;
}
