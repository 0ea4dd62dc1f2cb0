/* transport.c - see transport.h. Walks the MIME tree (boundaries from Content-Type) and copies
 * every entity that has no line over 998 octets byte for byte; only what must change changes:
 *  - header lines are folded at whitespace (RFC 5322 2.2.3); a Subject:, Comments: or
 *    Content-Description: word too long for any line becomes RFC 2047 encoded words; any other
 *    field with no whitespace to fold at is refused (it cannot be shortened without changing it);
 *  - a leaf part in 7bit/8bit/binary (or none) is re-encoded: text quoted-printable, anything
 *    else base64 (RFC 2045); a part already QP or base64 is re-wrapped (soft line breaks, 76-column
 *    base64), which decodes to the same bytes;
 *  - message/rfc822 and message/global are walked into (their own parts are re-encoded; the
 *    embedded message stays a valid message, RFC 2046 5.2.1 forbids encoding it as a whole);
 *  - multipart/signed is left exactly as it is (RFC 1847: any change breaks its signature) and
 *    reported, so the caller can flag it;
 *  - where nothing else works (unknown transfer encodings, other message types, multipart
 *    without a usable boundary, preamble and epilogue) the long lines are wrapped.
 * Allocates only into `out`; recursion is bounded by TRANSPORT_MAX_DEPTH. */
#include "mail/transport.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define TRANSPORT_MAX_DEPTH 32
#define QP_COLUMNS 75  /* encoded characters before a soft line break ("=" makes 76) */
#define B64_COLUMNS 76 /* RFC 2045 6.8 */
#define WORD_MAX 75    /* one RFC 2047 encoded word */

struct ctx {
    struct strbuf *out;
    struct mail_transport_report *r;
    int refused;
};

struct entity_info {
    char type[64], subtype[64];
    int has_type;
    char boundary[201];
    int has_boundary;
    int has_charset;
    char cte[64];
    int has_cte;
    int has_mime_version;
};

enum body_action {
    BODY_COPY,
    BODY_MULTIPART,
    BODY_SIGNED,
    BODY_MESSAGE,
    BODY_QP,
    BODY_BASE64,
    BODY_REWRAP_QP,
    BODY_REWRAP_BASE64,
    BODY_WRAP,
};

/* --- lines ---------------------------------------------------------------------------------- */

/* Length of the line at p without its line end; *next: the start of the next line. Lines end
 * at LF (CRLF from ingress; a lone LF is tolerated so that any input has an answer). */
static size_t line_at(const char *p, const char *end, const char **next)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    const char *stop = lf ? lf : end;
    *next = lf ? lf + 1 : end;
    if (lf && stop > p && stop[-1] == '\r') stop--;
    return (size_t)(stop - p);
}

static size_t count_long_lines(const char *p, const char *end)
{
    size_t n = 0;
    while (p < end) {
        const char *next;
        if (line_at(p, end, &next) > MAIL_LINE_MAX) n++;
        p = next;
    }
    return n;
}

static int is_wsp(char ch)
{
    return ch == ' ' || ch == '\t';
}

static void put(struct ctx *c, const void *p, size_t n)
{
    strbuf_append(c->out, p, n);
}

static void puts_(struct ctx *c, const char *s)
{
    strbuf_puts(c->out, s);
}

/* Length of the UTF-8 character at s (max n bytes), or 0 when it is not well-formed UTF-8
 * (overlong forms and surrogates included). */
static size_t utf8_char(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80) return 1;
    size_t len;
    unsigned min;
    unsigned cp;
    if ((s[0] & 0xe0) == 0xc0) {
        len = 2, min = 0x80, cp = s[0] & 0x1f;
    } else if ((s[0] & 0xf0) == 0xe0) {
        len = 3, min = 0x800, cp = s[0] & 0x0f;
    } else if ((s[0] & 0xf8) == 0xf0) {
        len = 4, min = 0x10000, cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

static int is_utf8(const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_char(s + i, n - i);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

static int has_8bit(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] >= 0x80) return 1;
    return 0;
}

/* --- header fields -------------------------------------------------------------------------- */

/* Whether the line starts a header field: a name of printable characters, then ':' (after
 * optional WSP, RFC 5322 4.5). Returns the offset of the colon + 1, or 0. */
static size_t field_colon(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && (unsigned char)p[i] > 32 && (unsigned char)p[i] < 127 && p[i] != ':')
        i++;
    if (i == 0) return 0;
    while (i < n && is_wsp(p[i]))
        i++;
    if (i >= n || p[i] != ':') return 0;
    return i + 1;
}

static size_t field_name_len(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && (unsigned char)p[i] > 32 && (unsigned char)p[i] < 127 && p[i] != ':')
        i++;
    return i;
}

/* The header section of the entity at [p,end). Returns the end of its fields; *body: where the
 * body starts; *blank: whether an empty line separated them (a line that is neither a field nor
 * a continuation also ends the section, as lenient readers do). */
static const char *header_section(const char *p, const char *end, const char **body, int *blank)
{
    int in_field = 0;
    while (p < end) {
        const char *next;
        size_t n = line_at(p, end, &next);
        if (n == 0) {
            *body = next;
            *blank = 1;
            return p;
        }
        if (in_field && is_wsp(p[0])) {
            p = next;
            continue;
        }
        if (!field_colon(p, n)) break;
        in_field = 1;
        p = next;
    }
    *body = p;
    *blank = 0;
    return p;
}

/* The field at p (inside [p,hend)): returns its end, after the line end of its last line. */
static const char *field_end(const char *p, const char *hend)
{
    const char *next;
    line_at(p, hend, &next);
    while (next < hend && is_wsp(*next))
        line_at(next, hend, &next);
    return next;
}

static int name_is(const char *f, size_t name_len, const char *name)
{
    return name_len == strlen(name) && strncasecmp(f, name, name_len) == 0;
}

/* The value of the field [f,fend) unfolded into buf (NUL-terminated, truncated to size-1). */
static void field_value(const char *f, const char *fend, char *buf, size_t size)
{
    const char *next;
    size_t colon = field_colon(f, line_at(f, fend, &next));
    size_t o = 0;
    for (const char *p = f + colon; p < fend && o + 1 < size; p++)
        if (*p != '\r' && *p != '\n') buf[o++] = *p;
    buf[o] = '\0';
}

static const char *skip_cfws(const char *s)
{
    for (;;) {
        while (is_wsp(*s))
            s++;
        if (*s != '(') return s;
        int depth = 0;
        while (*s) {
            if (*s == '\\' && s[1]) {
                s += 2;
                continue;
            }
            if (*s == '(') depth++;
            if (*s == ')' && --depth == 0) {
                s++;
                break;
            }
            s++;
        }
    }
}

/* An RFC 2045 token, lower-cased into out. Returns the position after it. */
static const char *read_token(const char *s, char *out, size_t size)
{
    size_t o = 0;
    while (*s && (unsigned char)*s > 32 && (unsigned char)*s < 127 &&
           !strchr("()<>@,;:\\\"/[]?=", *s)) {
        if (o + 1 < size) out[o++] = (char)(*s >= 'A' && *s <= 'Z' ? *s + 32 : *s);
        s++;
    }
    out[o] = '\0';
    return s;
}

/* A parameter value: a quoted-string, or (leniently) everything up to ';' or whitespace. */
static const char *read_param_value(const char *s, char *out, size_t size)
{
    size_t o = 0;
    if (*s == '"') {
        for (s++; *s && *s != '"'; s++) {
            if (*s == '\\' && s[1]) s++;
            if (o + 1 < size) out[o++] = *s;
        }
        if (*s == '"') s++;
    } else {
        while (*s && *s != ';' && !is_wsp(*s)) {
            if (o + 1 < size) out[o++] = *s;
            s++;
        }
    }
    out[o] = '\0';
    return s;
}

static void parse_content_type(const char *v, struct entity_info *e)
{
    const char *s = read_token(skip_cfws(v), e->type, sizeof e->type);
    s = skip_cfws(s);
    if (*s == '/') s = read_token(skip_cfws(s + 1), e->subtype, sizeof e->subtype);
    e->has_type = e->type[0] != '\0';
    for (;;) {
        s = strchr(s, ';');
        if (!s) return;
        char name[64], value[256];
        s = read_token(skip_cfws(s + 1), name, sizeof name);
        s = skip_cfws(s);
        if (*s != '=') continue;
        s = read_param_value(skip_cfws(s + 1), value, sizeof value);
        if (strcmp(name, "boundary") == 0 && !e->has_boundary && value[0] &&
            strlen(value) < sizeof e->boundary) {
            memcpy(e->boundary, value, strlen(value) + 1);
            e->has_boundary = 1;
        } else if (strcmp(name, "charset") == 0) {
            e->has_charset = 1;
        }
    }
}

static void parse_header(const char *p, const char *hend, struct entity_info *e)
{
    memset(e, 0, sizeof *e);
    while (p < hend) {
        const char *fend = field_end(p, hend);
        size_t name_len = field_name_len(p, (size_t)(fend - p));
        char value[2048];
        if (name_is(p, name_len, "Content-Type") && !e->has_type) {
            field_value(p, fend, value, sizeof value);
            parse_content_type(value, e);
        } else if (name_is(p, name_len, "Content-Transfer-Encoding") && !e->has_cte) {
            field_value(p, fend, value, sizeof value);
            read_token(skip_cfws(value), e->cte, sizeof e->cte);
            e->has_cte = 1;
        } else if (name_is(p, name_len, "MIME-Version")) {
            e->has_mime_version = 1;
        }
        p = fend;
    }
}

/* Emits one physical header line of n octets, folded before whitespace so that no piece is
 * longer than MAIL_LINE_MAX and none is whitespace only at its start. Returns -1 when there is
 * no whitespace to fold at. The line end is not emitted. */
static int fold_line(struct ctx *c, const char *s, size_t n)
{
    int folded = 0;
    while (n > MAIL_LINE_MAX) {
        size_t first = 0;
        while (first < n && is_wsp(s[first]))
            first++;
        size_t k = MAIL_LINE_MAX;
        while (k > first && !is_wsp(s[k]))
            k--;
        if (k <= first) return -1;
        put(c, s, k);
        puts_(c, "\r\n");
        s += k;
        n -= k;
        folded = 1;
    }
    put(c, s, n);
    if (folded) c->r->header_lines_folded++;
    return 0;
}

/* RFC 2047 "Q" encoded words for the bytes [p,p+n), split between characters into words of at
 * most WORD_MAX octets separated by CRLF SP (the space between encoded words is not part of the
 * decoded text, RFC 2047 6.2). */
static void encode_words(struct strbuf *out, const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    int utf8 = is_utf8(p, n);
    char open[32];
    snprintf(open, sizeof open, "=?%s?Q?", utf8 ? "utf-8" : "unknown-8bit");
    size_t budget = WORD_MAX - strlen(open) - 2, used = 0;
    strbuf_puts(out, open);
    for (size_t i = 0; i < n;) {
        size_t k = utf8 ? utf8_char(s + i, n - i) : 1;
        char enc[16];
        size_t el = 0;
        for (size_t j = 0; j < k; j++) {
            unsigned char ch = s[i + j];
            if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                (ch && strchr("!*+-/", ch)))
                enc[el++] = (char)ch;
            else
                el += (size_t)snprintf(enc + el, sizeof enc - el, "=%02X", ch);
        }
        if (used + el > budget) {
            strbuf_puts(out, "?=\r\n ");
            strbuf_puts(out, open);
            used = 0;
        }
        strbuf_append(out, enc, el);
        used += el;
        i += k;
    }
    strbuf_puts(out, "?=");
}

/* Subject:, Comments: and Content-Description: are unstructured text a reader decodes
 * (RFC 2047 5(1)); only in those may a word be re-encoded. */
static int is_unstructured(const char *f, size_t name_len)
{
    return name_is(f, name_len, "Subject") || name_is(f, name_len, "Comments") ||
           name_is(f, name_len, "Content-Description");
}

/* The field [f,fend) with every word that cannot fit on a line encoded (RFC 2047). Returns
 * whether one was. */
static int encode_long_words(const char *f, const char *fend, size_t colon, struct strbuf *out)
{
    int any = 0;
    const char *p = f + colon, *copied = f;
    while (p < fend) {
        if (is_wsp(*p) || *p == '\r' || *p == '\n') {
            p++;
            continue;
        }
        const char *a = p;
        while (p < fend && !is_wsp(*p) && *p != '\r' && *p != '\n')
            p++;
        size_t len = (size_t)(p - a);
        int after_colon = a == f + colon;
        size_t need = after_colon ? colon + len : 1 + len; /* a folded line: WSP + word */
        if (need <= MAIL_LINE_MAX) continue;
        strbuf_append(out, copied, (size_t)(a - copied));
        if (after_colon) strbuf_puts(out, " ");
        encode_words(out, a, len);
        copied = p;
        any = 1;
    }
    strbuf_append(out, copied, (size_t)(fend - copied));
    return any;
}

/* Emits the field [f,fend) with its long lines folded; -1 (and the reason) when impossible. */
static int emit_field(struct ctx *c, const char *f, const char *fend)
{
    if (!count_long_lines(f, fend)) {
        put(c, f, (size_t)(fend - f));
        return 0;
    }
    size_t name_len = field_name_len(f, (size_t)(fend - f));
    struct strbuf encoded = STRBUF_INIT;
    const char *p = f, *end = fend;
    if (is_unstructured(f, name_len)) {
        const char *next;
        size_t colon = field_colon(f, line_at(f, fend, &next));
        if (encode_long_words(f, fend, colon, &encoded)) {
            c->r->header_fields_encoded++;
            p = encoded.data;
            end = encoded.data + encoded.len;
        }
    }
    int rc = 0;
    while (p < end) {
        const char *next;
        size_t n = line_at(p, end, &next);
        if (fold_line(c, p, n) < 0) {
            snprintf(c->r->text, sizeof c->r->text,
                     "header field %.*s: has a line over %d octets with no whitespace to fold "
                     "at (RFC 5322 2.1.1)",
                     (int)(name_len < 60 ? name_len : 60), f, MAIL_LINE_MAX);
            rc = -1;
            break;
        }
        put(c, p + n, (size_t)(next - p - n)); /* the line end as it was */
        p = next;
    }
    strbuf_free(&encoded);
    return rc;
}

/* --- bodies --------------------------------------------------------------------------------- */

/* The line end that follows the body's last line: whether the body ends in CRLF. */
static int ends_in_crlf(const char *p, const char *end)
{
    return end - p >= 2 && end[-2] == '\r' && end[-1] == '\n';
}

/* Quoted-printable (RFC 2045 6.7): CRLF pairs are the hard line breaks; every other octet is
 * encoded as needed, so the part decodes to exactly the bytes it had. */
static void encode_qp(struct ctx *c, const char *p, const char *end)
{
    while (p < end) {
        const char *le = p;
        while (le < end && !(le[0] == '\r' && le + 1 < end && le[1] == '\n'))
            le++;
        size_t col = 0;
        for (const char *s = p; s < le; s++) {
            unsigned char ch = (unsigned char)*s;
            char enc[4];
            size_t el;
            int last = s + 1 == le;
            if ((ch >= 33 && ch <= 126 && ch != '=') || (is_wsp((char)ch) && !last)) {
                enc[0] = (char)ch;
                el = 1;
            } else {
                el = (size_t)snprintf(enc, sizeof enc, "=%02X", ch);
            }
            if (col + el > QP_COLUMNS) {
                puts_(c, "=\r\n");
                col = 0;
            }
            put(c, enc, el);
            col += el;
        }
        if (le < end) {
            puts_(c, "\r\n");
            p = le + 2;
        } else {
            p = le;
        }
    }
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Base64 (RFC 2045 6.8) in 76-column lines; a final CRLF if the body had one. */
static void encode_base64(struct ctx *c, const char *p, const char *end)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t n = (size_t)(end - p), col = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16;
        if (i + 1 < n) v |= (unsigned)s[i + 1] << 8;
        if (i + 2 < n) v |= s[i + 2];
        char q[4] = {B64[(v >> 18) & 63], B64[(v >> 12) & 63], i + 1 < n ? B64[(v >> 6) & 63] : '=',
                     i + 2 < n ? B64[v & 63] : '='};
        if (col == B64_COLUMNS) {
            puts_(c, "\r\n");
            col = 0;
        }
        put(c, q, 4);
        col += 4;
    }
    if (ends_in_crlf(p, end)) puts_(c, "\r\n");
}

/* A base64 body whose lines are too long: the same characters, whitespace and line ends
 * removed, in 76-column lines (decoders ignore line ends, RFC 2045 6.8). */
static void rewrap_base64(struct ctx *c, const char *p, const char *end)
{
    size_t col = 0;
    for (const char *s = p; s < end; s++) {
        if (is_wsp(*s) || *s == '\r' || *s == '\n') continue;
        if (col == B64_COLUMNS) {
            puts_(c, "\r\n");
            col = 0;
        }
        put(c, s, 1);
        col++;
    }
    if (ends_in_crlf(p, end)) puts_(c, "\r\n");
}

/* A quoted-printable body with long lines: soft line breaks ("=" CRLF, removed by every
 * decoder) inserted, never inside an "=XX" escape. */
static void rewrap_qp(struct ctx *c, const char *p, const char *end)
{
    while (p < end) {
        const char *next;
        size_t n = line_at(p, end, &next);
        const char *s = p;
        while (n > MAIL_LINE_MAX) {
            size_t k = QP_COLUMNS;
            if (s[k - 1] == '=')
                k -= 1;
            else if (s[k - 2] == '=')
                k -= 2;
            put(c, s, k);
            puts_(c, "=\r\n");
            s += k;
            n -= k;
        }
        put(c, s, (size_t)(next - s));
        p = next;
    }
}

/* The last resort: lines over the limit cut every MAIL_LINE_MAX octets (not inside a UTF-8
 * character). Used where no encoding can be applied (see the file comment). */
static void wrap_lines(struct ctx *c, const char *p, const char *end)
{
    while (p < end) {
        const char *next;
        size_t n = line_at(p, end, &next);
        const char *s = p;
        if (n > MAIL_LINE_MAX) {
            c->r->lines_wrapped++;
            c->r->body_lines_over++;
        }
        while (n > MAIL_LINE_MAX) {
            size_t k = MAIL_LINE_MAX;
            while (k > MAIL_LINE_MAX - 3 && ((unsigned char)s[k] & 0xc0) == 0x80)
                k--;
            put(c, s, k);
            puts_(c, "\r\n");
            s += k;
            n -= k;
        }
        put(c, s, (size_t)(next - s));
        p = next;
    }
}

static void entity(struct ctx *c, const char *p, const char *end, int default_rfc822, int top,
                   int depth);

/* Whether the line is a delimiter of `boundary` ("--" boundary [transport padding]); *close:
 * the closing one ("--" boundary "--"). */
static int is_delimiter(const char *s, size_t n, const char *boundary, int *close)
{
    size_t b = strlen(boundary);
    if (n < b + 2 || s[0] != '-' || s[1] != '-' || memcmp(s + 2, boundary, b) != 0) return 0;
    size_t i = b + 2;
    *close = i + 2 <= n && s[i] == '-' && s[i + 1] == '-';
    if (*close) i += 2;
    while (i < n && is_wsp(s[i]))
        i++;
    return i == n;
}

/* A multipart body: preamble, parts, epilogue. Each part is an entity of its own (walked
 * recursively); the CRLF before a delimiter belongs to the delimiter (RFC 2046 5.1.1) and is
 * copied with it. */
static void multipart_body(struct ctx *c, const char *p, const char *end, const char *boundary,
                           int digest, int depth)
{
    const char *seg = p;
    int in_part = 0, found = 0;
    for (const char *ln = p; ln < end && !c->refused;) {
        const char *next;
        size_t n = line_at(ln, end, &next);
        int close;
        if (!is_delimiter(ln, n, boundary, &close)) {
            ln = next;
            continue;
        }
        const char *seg_end = ln;
        if (seg_end - seg >= 2 && seg_end[-2] == '\r' && seg_end[-1] == '\n')
            seg_end -= 2;
        else if (seg_end > seg && seg_end[-1] == '\n')
            seg_end -= 1;
        if (in_part)
            entity(c, seg, seg_end, digest, 0, depth + 1);
        else
            wrap_lines(c, seg, seg_end); /* the preamble: no reader looks at it */
        put(c, seg_end, (size_t)(next - seg_end));
        seg = next;
        in_part = 1;
        found = 1;
        ln = next;
        if (close) {
            wrap_lines(c, seg, end); /* the epilogue */
            return;
        }
    }
    if (c->refused) return;
    if (in_part)
        entity(c, seg, end, digest, 0, depth + 1); /* no closing delimiter */
    else if (!found)
        wrap_lines(c, seg, end);
}

static int cte_is_identity(const struct entity_info *e)
{
    return !e->has_cte || strcmp(e->cte, "7bit") == 0 || strcmp(e->cte, "8bit") == 0 ||
           strcmp(e->cte, "binary") == 0;
}

static enum body_action choose_action(const struct entity_info *e, const char *body,
                                      const char *end, int default_rfc822, int depth)
{
    int is_message = strcmp(e->type, "message") == 0 || (!e->has_type && default_rfc822);
    if (strcmp(e->type, "multipart") == 0) {
        if (!e->has_boundary || depth >= TRANSPORT_MAX_DEPTH) return BODY_WRAP;
        return strcmp(e->subtype, "signed") == 0 ? BODY_SIGNED : BODY_MULTIPART;
    }
    if (!count_long_lines(body, end)) return BODY_COPY;
    if (e->has_cte && strcmp(e->cte, "quoted-printable") == 0) return BODY_REWRAP_QP;
    if (e->has_cte && strcmp(e->cte, "base64") == 0) return BODY_REWRAP_BASE64;
    if (!cte_is_identity(e)) return BODY_WRAP;
    if (is_message) {
        int rfc822 =
            !e->has_type || strcmp(e->subtype, "rfc822") == 0 || strcmp(e->subtype, "global") == 0;
        return rfc822 && depth < TRANSPORT_MAX_DEPTH ? BODY_MESSAGE : BODY_WRAP;
    }
    return !e->has_type || strcmp(e->type, "text") == 0 ? BODY_QP : BODY_BASE64;
}

/* One entity at [p,end): a message (top: the message or an embedded one) or a MIME part. */
static void entity(struct ctx *c, const char *p, const char *end, int default_rfc822, int top,
                   int depth)
{
    if (!count_long_lines(p, end)) {
        put(c, p, (size_t)(end - p));
        return;
    }
    const char *body;
    int blank;
    const char *hend = header_section(p, end, &body, &blank);
    struct entity_info e;
    parse_header(p, hend, &e);
    enum body_action action = choose_action(&e, body, end, default_rfc822, depth);
    const char *new_cte = action == BODY_QP       ? "quoted-printable"
                          : action == BODY_BASE64 ? "base64"
                                                  : NULL;
    int cte_written = 0;
    for (const char *f = p; f < hend;) {
        const char *fend = field_end(f, hend);
        size_t name_len = field_name_len(f, (size_t)(fend - f));
        if (new_cte && name_is(f, name_len, "Content-Transfer-Encoding")) {
            if (!cte_written) strbuf_printf(c->out, "Content-Transfer-Encoding: %s\r\n", new_cte);
            cte_written = 1;
        } else if (emit_field(c, f, fend) < 0) {
            c->refused = 1;
            return;
        }
        f = fend;
    }
    if (new_cte && !cte_written)
        strbuf_printf(c->out, "Content-Transfer-Encoding: %s\r\n", new_cte);
    if (new_cte && top && !e.has_mime_version) puts_(c, "MIME-Version: 1.0\r\n");
    if (action == BODY_QP && !e.has_type && has_8bit(body, (size_t)(end - body)) &&
        is_utf8(body, (size_t)(end - body)))
        puts_(c, "Content-Type: text/plain; charset=utf-8\r\n"); /* what the 8-bit text was */
    if (blank)
        put(c, hend, (size_t)(body - hend));
    else if (body < end && (new_cte || hend > p))
        puts_(c, "\r\n");

    size_t over = action == BODY_MULTIPART || action == BODY_MESSAGE || action == BODY_WRAP
                      ? 0
                      : count_long_lines(body, end);
    switch (action) {
    case BODY_COPY:
        put(c, body, (size_t)(end - body));
        break;
    case BODY_MULTIPART:
        multipart_body(c, body, end, e.boundary, strcmp(e.subtype, "digest") == 0, depth);
        break;
    case BODY_SIGNED:
        c->r->signed_lines_left += over;
        put(c, body, (size_t)(end - body));
        break;
    case BODY_MESSAGE: /* a message of its own: it gets MIME-Version if it needs one */
        entity(c, body, end, 0, 1, depth + 1);
        break;
    case BODY_QP:
        c->r->parts_qp++;
        c->r->body_lines_over += over;
        encode_qp(c, body, end);
        break;
    case BODY_BASE64:
        c->r->parts_base64++;
        c->r->body_lines_over += over;
        encode_base64(c, body, end);
        break;
    case BODY_REWRAP_QP:
        c->r->parts_rewrapped++;
        c->r->body_lines_over += over;
        rewrap_qp(c, body, end);
        break;
    case BODY_REWRAP_BASE64:
        c->r->parts_rewrapped++;
        c->r->body_lines_over += over;
        rewrap_base64(c, body, end);
        break;
    case BODY_WRAP:
        wrap_lines(c, body, end);
        break;
    }
}

/* --- the report ------------------------------------------------------------------------------ */

static void add(char *text, size_t size, const char *fmt, size_t n, const char *extra)
{
    size_t len = strlen(text);
    if (len >= size - 1) return;
    if (len) len += (size_t)snprintf(text + len, size - len, "; ");
    if (len < size) snprintf(text + len, size - len, fmt, n, n == 1 ? "" : "s", extra);
}

static void describe(struct mail_transport_report *r)
{
    char *t = r->text;
    size_t size = sizeof r->text;
    t[0] = '\0';
    if (r->header_lines_folded)
        add(t, size, "%zu header line%s folded%s", r->header_lines_folded, "");
    if (r->header_fields_encoded)
        add(t, size, "%zu header field%s RFC 2047-encoded%s", r->header_fields_encoded, "");
    size_t parts = r->parts_qp + r->parts_base64 + r->parts_rewrapped;
    if (parts) {
        char how[160] = "";
        size_t kinds = 0;
        const char *names[3] = {"quoted-printable", "base64", "re-wrapped"};
        size_t counts[3] = {r->parts_qp, r->parts_base64, r->parts_rewrapped};
        for (int i = 0; i < 3; i++) {
            if (!counts[i]) continue;
            size_t l = strlen(how);
            if (counts[i] > 1)
                snprintf(how + l, sizeof how - l, "%s%zu parts %s", kinds ? ", " : "", counts[i],
                         names[i]);
            else
                snprintf(how + l, sizeof how - l, "%s%s", kinds ? ", " : "", names[i]);
            kinds++;
        }
        size_t over = r->body_lines_over - r->lines_wrapped;
        char tail[200];
        snprintf(tail, sizeof tail, "body %s%s (%zu line%s over %d)",
                 r->parts_qp + r->parts_base64 ? "re-encoded " : "", how, over,
                 over == 1 ? "" : "s", MAIL_LINE_MAX);
        size_t len = strlen(t);
        snprintf(t + len, size - len, "%s%s", len ? "; " : "", tail);
    }
    if (r->lines_wrapped)
        add(t, size, "%zu line%s wrapped (no encoding applies)%s", r->lines_wrapped, "");
    if (r->signed_lines_left)
        add(t, size,
            "multipart/signed left as is (%zu line%s over 998; re-encoding would break its "
            "signature)%s",
            r->signed_lines_left, "");
}

enum mail_transport_verdict mail_transport_safe(const char *data, size_t len, struct strbuf *out,
                                                struct mail_transport_report *report)
{
    memset(report, 0, sizeof *report);
    if (!count_long_lines(data, data + len)) return MAIL_TRANSPORT_UNCHANGED;
    struct strbuf fresh = STRBUF_INIT;
    struct ctx c = {.out = &fresh, .r = report};
    entity(&c, data, data + len, 0, 1, 0);
    if (c.refused) { /* report->text holds the reason */
        strbuf_free(&fresh);
        return MAIL_TRANSPORT_REFUSED;
    }
    describe(report);
    if (fresh.len == len && memcmp(fresh.data, data, len) == 0) {
        strbuf_free(&fresh);
        return MAIL_TRANSPORT_UNCHANGED;
    }
    strbuf_free(out);
    *out = fresh;
    return MAIL_TRANSPORT_CHANGED;
}
