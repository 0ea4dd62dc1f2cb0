/* json.h - the one JSON writer: every `--json` answer of the control socket (queue, ramp) is
 * built with it, into a strbuf. Strings are escaped per RFC 8259 section 7 (quote, backslash,
 * control characters as \uXXXX; bytes that are not UTF-8 become U+FFFD so the output always
 * parses). Writes only; never parses. Any thread, one writer per thread. */
#ifndef OUTRELAY_JSON_H
#define OUTRELAY_JSON_H

#include <stdint.h>

#include "common/strbuf.h"

#define JSON_MAX_DEPTH 32

/* Tracks where commas go. key is the member name inside an object, NULL inside an array or at
 * the top. The caller nests begin/end calls correctly; deeper than JSON_MAX_DEPTH aborts. */
struct json_writer {
    struct strbuf *out;
    int depth;
    unsigned char has_items[JSON_MAX_DEPTH];
};

void json_init(struct json_writer *w, struct strbuf *out);
void json_object_begin(struct json_writer *w, const char *key);
void json_object_end(struct json_writer *w);
void json_array_begin(struct json_writer *w, const char *key);
void json_array_end(struct json_writer *w);
/* value NULL writes null */
void json_string(struct json_writer *w, const char *key, const char *value);
void json_int(struct json_writer *w, const char *key, int64_t value);
/* 15 significant digits; non-finite values (NaN, infinity) write null: JSON has no such
 * numbers */
void json_double(struct json_writer *w, const char *key, double value);
void json_bool(struct json_writer *w, const char *key, int value);
void json_null(struct json_writer *w, const char *key);

/* Appends s as a quoted JSON string. */
void json_escape(struct strbuf *out, const char *s);

#endif
