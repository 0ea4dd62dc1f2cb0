/* data.c - see data.h. The only way a message ends is CR LF "." CR LF; a line that ends in a
 * bare LF, or carries a bare CR, is reported so the session can refuse the whole message
 * instead of guessing where it ends (the ambiguity SMTP smuggling exploits). */
#include "ingress/data.h"

#include <string.h>

enum data_line data_parse_line(const char *raw, size_t len, const char **content,
                               size_t *content_len)
{
    *content = raw;
    *content_len = 0;
    if (len == 0 || raw[len - 1] != '\n')
        return DATA_LINE_BARE_LF; /* callers only pass complete lines */
    if (len < 2 || raw[len - 2] != '\r') return DATA_LINE_BARE_LF;
    size_t n = len - 2;
    if (memchr(raw, '\r', n)) return DATA_LINE_BARE_CR;
    if (n == 1 && raw[0] == '.') return DATA_LINE_END;
    if (n > 0 && raw[0] == '.') { /* RFC 5321 4.5.2 transparency */
        raw++;
        n--;
    }
    *content = raw;
    *content_len = n;
    return DATA_LINE_TEXT;
}
