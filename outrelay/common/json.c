/* json.c - the JSON writer; see json.h. Owns no memory: it appends to the caller's strbuf. */
#include "common/json.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no surrogates, at most
 * U+10FFFF), or 0 when s does not start one. */
static size_t utf8_sequence(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c >= 0xc2 && c <= 0xdf) return (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 && (s[3] & 0xc0) == 0x80 ? 4 : 0;
    }
    return 0;
}

void json_escape(struct strbuf *out, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    strbuf_puts(out, "\"");
    while (*p) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            strbuf_append(out, esc, 2);
            p++;
        } else if (c < 0x20 || c == 0x7f) {
            const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
            if (named)
                strbuf_puts(out, named);
            else
                strbuf_printf(out, "\\u%04x", c);
            p++;
        } else if (c < 0x80) {
            strbuf_append(out, p, 1);
            p++;
        } else {
            size_t n = utf8_sequence(p);
            if (n) {
                strbuf_append(out, p, n);
                p += n;
            } else {
                strbuf_puts(out, "\\ufffd");
                p++;
            }
        }
    }
    strbuf_puts(out, "\"");
}

/* The comma and the member name before a value. */
static void json_item(struct json_writer *w, const char *key)
{
    if (w->depth > 0) {
        if (w->has_items[w->depth - 1]) strbuf_puts(w->out, ",");
        w->has_items[w->depth - 1] = 1;
    }
    if (key) {
        json_escape(w->out, key);
        strbuf_puts(w->out, ":");
    }
}

static void json_open(struct json_writer *w, const char *key, const char *bracket)
{
    json_item(w, key);
    if (w->depth >= JSON_MAX_DEPTH) abort();
    w->has_items[w->depth++] = 0;
    strbuf_puts(w->out, bracket);
}

static void json_close(struct json_writer *w, const char *bracket)
{
    if (w->depth <= 0) abort();
    w->depth--;
    strbuf_puts(w->out, bracket);
}

void json_init(struct json_writer *w, struct strbuf *out)
{
    w->out = out;
    w->depth = 0;
}

void json_object_begin(struct json_writer *w, const char *key)
{
    json_open(w, key, "{");
}

void json_object_end(struct json_writer *w)
{
    json_close(w, "}");
}

void json_array_begin(struct json_writer *w, const char *key)
{
    json_open(w, key, "[");
}

void json_array_end(struct json_writer *w)
{
    json_close(w, "]");
}

void json_string(struct json_writer *w, const char *key, const char *value)
{
    json_item(w, key);
    if (value)
        json_escape(w->out, value);
    else
        strbuf_puts(w->out, "null");
}

void json_int(struct json_writer *w, const char *key, int64_t value)
{
    json_item(w, key);
    strbuf_printf(w->out, "%" PRId64, value);
}

void json_double(struct json_writer *w, const char *key, double value)
{
    json_item(w, key);
    if (isfinite(value))
        strbuf_printf(w->out, "%.15g", value); /* 15 digits: 12.3, not 12.300000000000001 */
    else
        strbuf_puts(w->out, "null");
}

void json_bool(struct json_writer *w, const char *key, int value)
{
    json_item(w, key);
    strbuf_puts(w->out, value ? "true" : "false");
}

void json_null(struct json_writer *w, const char *key)
{
    json_item(w, key);
    strbuf_puts(w->out, "null");
}
