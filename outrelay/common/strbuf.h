/* strbuf.h - the growable byte/string buffer used everywhere in outrelay.
 * Always NUL-terminated after len bytes; may hold NULs inside. Owner frees with strbuf_free().
 * Allocation failure aborts (outrelay cannot do anything useful without memory). */
#ifndef OUTRELAY_STRBUF_H
#define OUTRELAY_STRBUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct strbuf {
    char *data;
    size_t len;
    size_t cap;
};

#define STRBUF_INIT                                                                                \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

void strbuf_reserve(struct strbuf *sb, size_t extra);
void strbuf_append(struct strbuf *sb, const void *data, size_t len);
void strbuf_puts(struct strbuf *sb, const char *s);
void strbuf_printf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void strbuf_vprintf(struct strbuf *sb, const char *fmt, va_list ap);
/* Appends n in decimal, as "%lld" would, without printf (log lines, records' event lines). */
void strbuf_put_int(struct strbuf *sb, int64_t n);
void strbuf_reset(struct strbuf *sb);
/* Returns the data (caller now owns it, free()) and leaves sb empty. */
char *strbuf_detach(struct strbuf *sb, size_t *len);
void strbuf_free(struct strbuf *sb);
/* A C string: "" for an empty buffer, never NULL. */
const char *strbuf_str(const struct strbuf *sb);

#endif
