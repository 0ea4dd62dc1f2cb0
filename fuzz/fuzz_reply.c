/* fuzz_reply.c - the SMTP client's reply reader (smtpc/smtpc.c): what a remote server sends,
 * cut into CRLF lines, through smtpc_reply_add_line until a reply is complete or malformed, then
 * smtp_enhanced_code on the text as the client does for its shaping feedback. Asserts that a
 * reply's lines all carry its first line's code (200-599), that its text stays near the 8 KiB
 * cap, and that the enhanced code found is "x.y.z" at the start of the text. */
#include <assert.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"
#include "smtpc/smtpc.h"
#include "mail/smtp_proto.h"

static void check_complete(struct strbuf *reply, int code)
{
    assert(code >= 200 && code <= 599);
    char *full = strbuf_detach(reply, NULL);
    size_t len = strlen(full);
    assert(len <= 8192); /* text past the cap is cut, and no line follows it */
    char enhanced[16], text[256];
    size_t skip = smtp_enhanced_code(full, enhanced, sizeof enhanced);
    assert(skip <= len);
    if (skip) {
        assert(enhanced[0] == full[0] && enhanced[1] == '.' && strlen(enhanced) <= 9);
        assert(strncmp(full, enhanced, strlen(enhanced)) == 0);
    } else {
        assert(enhanced[0] == '\0');
    }
    snprintf(text, sizeof text, "%s", full + skip);
    free(full);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the client reads with EVBUFFER_EOL_CRLF: lines end in LF, an optional CR before it goes */
    char *copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = '\0';
    struct strbuf reply = STRBUF_INIT;
    int code = 0, first_code = 0; /* first_code: the code of the reply's first line */
    char *p = copy;
    char *lf;
    while ((lf = strchr(p, '\n'))) {
        *lf = '\0';
        if (lf > p && lf[-1] == '\r') lf[-1] = '\0';
        const char *text;
        int line_code, line_more;
        const char *line_text;
        if (!first_code && smtp_parse_reply_line(p, &line_code, &line_more, &line_text) == 0)
            first_code = line_code;
        int more = smtpc_reply_add_line(&reply, &code, p, &text);
        p = lf + 1;
        if (more < 0) break; /* the connection is dropped */
        assert(text >= copy && text < p);
        assert(code == first_code); /* every line of a reply carries the same code */
        if (more) continue;
        check_complete(&reply, code);
        code = first_code = 0;
    }
    strbuf_free(&reply);
    free(copy);
    return 0;
}
