/* header.c - see header.h. Allocates only the copies mail_header_value_unfold returns; never
 * reads past len. */
#include "mail/header.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"

void mail_header_begin(struct mail_header_iter *it, const char *data, size_t len)
{
    it->p = data;
    it->end = data + len;
}

/* The end of the line at p (at its CR or LF, or at end). */
static const char *line_end(const char *p, const char *end)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    const char *e = lf ? lf : end;
    if (e > p && e[-1] == '\r') e--;
    return e;
}

static const char *next_line(const char *p, const char *end)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    return lf ? lf + 1 : end;
}

int mail_header_next(struct mail_header_iter *it, const char **name, size_t *name_len,
                     const char **value, size_t *value_len)
{
    while (it->p < it->end) {
        const char *start = it->p;
        const char *e = line_end(start, it->end);
        if (e == start) { /* the empty line ends the header section */
            it->p = it->end;
            return 0;
        }
        const char *colon = memchr(start, ':', (size_t)(e - start));
        const char *last = e;
        it->p = next_line(start, it->end);
        while (it->p < it->end && (*it->p == ' ' || *it->p == '\t')) { /* continuation */
            last = line_end(it->p, it->end);
            it->p = next_line(it->p, it->end);
        }
        if (!colon || colon == start || start[0] == ' ' || start[0] == '\t') continue;
        const char *n_end = colon;
        while (n_end > start && (n_end[-1] == ' ' || n_end[-1] == '\t')) /* obsolete "Name :" */
            n_end--;
        *name = start;
        *name_len = (size_t)(n_end - start);
        *value = colon + 1;
        *value_len = (size_t)(last - (colon + 1));
        return 1;
    }
    return 0;
}

int mail_header_name_is(const char *name, size_t name_len, const char *want)
{
    return strlen(want) == name_len && strncasecmp(name, want, name_len) == 0;
}

/* Narrows [*p, *end) to the value without surrounding white space. */
static void trim(const char **p, const char **end)
{
    while (*p < *end && isspace((unsigned char)**p))
        (*p)++;
    while (*end > *p && isspace((unsigned char)(*end)[-1]))
        (*end)--;
}

int mail_header_value_is(const char *value, size_t value_len, const char *want, int nocase)
{
    const char *p = value, *end = value + value_len;
    trim(&p, &end);
    const char *w = want;
    for (; p < end; p++) {
        if (*p == '\r' || *p == '\n') continue; /* unfold */
        if (!*w) return 0;
        if (nocase ? tolower((unsigned char)*p) != tolower((unsigned char)*w) : *p != *w) return 0;
        w++;
    }
    return *w == '\0';
}

char *mail_header_value_unfold(const char *value, size_t value_len)
{
    /* unfold first, then trim: a fold (or a lone CR or LF) inside white space must not leave
     * white space at either end */
    value_len = strnlen(value, value_len); /* the copy is a C string: it ends at a NUL */
    char *out = xmalloc(value_len + 1), *o = out;
    for (const char *p = value; p < value + value_len; p++)
        if (*p != '\r' && *p != '\n') *o++ = *p;
    const char *start = out, *end = o;
    trim(&start, &end);
    size_t n = (size_t)(end - start);
    memmove(out, start, n);
    out[n] = '\0';
    return out;
}
