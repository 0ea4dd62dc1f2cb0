/* address.c - the RFC 5322 address-list parser (address.h). A small tokenizer (atoms with
 * encoded words kept whole, quoted strings, domain literals, specials; comments and folding
 * skipped) under a recursive-descent reading of address-list / mailbox / group / angle-addr.
 * Never reads past the terminating NUL; bounded output, nothing allocated but the result of
 * mail_author_domain(). */
#include "mail/address.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"

enum tok_kind { TOK_END, TOK_ATOM, TOK_QUOTED, TOK_LITERAL, TOK_SPECIAL, TOK_ERROR };

struct tok {
    enum tok_kind kind;
    char text[256]; /* atom / quoted content / literal with brackets; truncated when longer */
    int truncated;  /* text lost bytes: fine in a display name, an error in an address */
    char special;   /* for TOK_SPECIAL */
};

struct lexer {
    const char *p;
    const char *why;
};

/* atext of RFC 5322 3.2.3, plus '.' so a dot-atom (or obs-local-part) is one token. */
static int is_atom_char(unsigned char c)
{
    return c >= 0x80 || isalnum(c) || strchr("!#$%&'*+-/=?^_`{|}~.", c) != NULL;
}

/* An atom token may be an RFC 2047 encoded word, kept whole with whatever it encloses; RFC 2047
 * section 5 keeps encoded words out of an addr-spec, so a local part or domain must be atext. */
static int is_atext_only(const char *s)
{
    for (; *s; s++)
        if (!is_atom_char((unsigned char)*s)) return 0;
    return 1;
}

static void skip_cfws(struct lexer *lx)
{
    for (;;) {
        unsigned char c = (unsigned char)*lx->p;
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            lx->p++;
        } else if (c == '(') { /* comment, possibly nested, with quoted-pairs */
            int depth = 0;
            do {
                if (*lx->p == '\\' && lx->p[1]) {
                    lx->p += 2; /* quoted-pair: "\)" does not close */
                    continue;
                }
                if (*lx->p == '(') depth++;
                else if (*lx->p == ')') depth--;
                lx->p++;
            } while (depth > 0 && *lx->p);
            if (depth > 0 && !lx->why) lx->why = "unterminated comment";
        } else {
            return;
        }
    }
}

static void put(struct tok *t, size_t *n, char c)
{
    if (*n + 1 < sizeof t->text)
        t->text[(*n)++] = c;
    else
        t->truncated = 1;
}

static struct tok next_token(struct lexer *lx)
{
    struct tok t = {.kind = TOK_END};
    size_t n = 0;
    skip_cfws(lx);
    const char *p = lx->p;
    if (!*p) return t;
    if (p[0] == '=' && p[1] == '?') { /* RFC 2047 encoded word: one atom up to "?=" */
        const char *end = strstr(p + 2, "?=");
        int questions = 0;
        for (const char *q = p + 2; end && q < end; q++) {
            if (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n') end = NULL;
            else if (*q == '?') questions++;
        }
        if (end && questions >= 2) {
            t.kind = TOK_ATOM;
            for (const char *q = p; q < end + 2; q++)
                put(&t, &n, *q);
            t.text[n] = '\0';
            lx->p = end + 2;
            return t;
        }
    }
    if (*p == '"') {
        t.kind = TOK_QUOTED;
        for (p++; *p && *p != '"'; p++) {
            if (*p == '\\' && p[1]) p++;
            if (*p == '\r' || *p == '\n') continue; /* folding inside the quotes */
            put(&t, &n, *p);
        }
        if (*p != '"') {
            t.kind = TOK_ERROR;
            lx->why = "unterminated quoted string";
            return t;
        }
        t.text[n] = '\0';
        lx->p = p + 1;
        return t;
    }
    if (*p == '[') {
        t.kind = TOK_LITERAL;
        for (; *p && *p != ']'; p++) {
            if (*p == '\\' && p[1]) p++;
            if (*p == '\r' || *p == '\n' || *p == ' ' || *p == '\t') continue;
            put(&t, &n, *p);
        }
        if (*p != ']') {
            t.kind = TOK_ERROR;
            lx->why = "unterminated domain literal";
            return t;
        }
        put(&t, &n, ']');
        t.text[n] = '\0';
        lx->p = p + 1;
        return t;
    }
    if (is_atom_char((unsigned char)*p)) {
        t.kind = TOK_ATOM;
        for (; *p && is_atom_char((unsigned char)*p); p++)
            put(&t, &n, *p);
        t.text[n] = '\0';
        lx->p = p;
        return t;
    }
    if (strchr("<>@,;:", *p)) {
        t.kind = TOK_SPECIAL;
        t.special = *p;
        lx->p = p + 1;
        return t;
    }
    t.kind = TOK_ERROR;
    lx->why = "unexpected character";
    return t;
}

static struct tok peek_token(struct lexer *lx)
{
    struct lexer copy = *lx;
    return next_token(&copy);
}

static int is_special(const struct tok *t, char c)
{
    return t->kind == TOK_SPECIAL && t->special == c;
}

/* domain = dot-atom / domain-literal (obs-domain folds into the dot-atom token). */
static int read_domain(struct lexer *lx, char *out, size_t size)
{
    struct tok t = next_token(lx);
    if (t.truncated) { /* longer than any domain may be (RFC 1035: 255 octets) */
        lx->why = "domain too long";
        return -1;
    }
    if (t.kind == TOK_LITERAL) {
        snprintf(out, size, "%s", t.text);
        return 0;
    }
    if (t.kind != TOK_ATOM || t.text[0] == '.' || strstr(t.text, "..")) {
        lx->why = "no domain after '@'";
        return -1;
    }
    if (!is_atext_only(t.text)) { /* "a@=?x?q?b@c?=": an encoded word is no domain */
        lx->why = "special character in a domain";
        return -1;
    }
    size_t n = strlen(t.text);
    if (n && t.text[n - 1] == '.') t.text[--n] = '\0';
    if (n == 0) {
        lx->why = "empty domain";
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        t.text[i] = (char)tolower((unsigned char)t.text[i]);
    snprintf(out, size, "%s", t.text);
    return 0;
}

/* addr-spec = local-part "@" domain, where local-part is the words read so far. */
static int read_addr_spec(struct lexer *lx, struct mail_address *a)
{
    struct tok t = next_token(lx);
    size_t n = 0;
    a->local[0] = '\0';
    while (t.kind == TOK_ATOM || t.kind == TOK_QUOTED) { /* obs-local-part: word *("." word) */
        if (t.truncated) {
            lx->why = "local part too long";
            return -1;
        }
        if (t.kind == TOK_ATOM && !is_atext_only(t.text)) {
            lx->why = "special character in a local part";
            return -1;
        }
        n += (size_t)snprintf(a->local + n, n < sizeof a->local ? sizeof a->local - n : 0, "%s",
                              t.text);
        if (n >= sizeof a->local) n = sizeof a->local - 1;
        struct tok u = peek_token(lx);
        if (u.kind != TOK_ATOM && u.kind != TOK_QUOTED) break;
        t = next_token(lx);
    }
    if (n == 0) {
        lx->why = "empty local part";
        return -1;
    }
    t = next_token(lx);
    if (!is_special(&t, '@')) {
        lx->why = "address without '@'";
        return -1;
    }
    return read_domain(lx, a->domain, sizeof a->domain);
}

/* angle-addr = "<" [obs-route] addr-spec ">", after the "<". */
static int read_angle_addr(struct lexer *lx, struct mail_address *a)
{
    struct tok t = peek_token(lx);
    if (is_special(&t, '@') || is_special(&t, ',')) { /* obs-route: @a,@b: */
        for (;;) {
            t = next_token(lx);
            if (is_special(&t, ':')) break;
            if (t.kind == TOK_ERROR) return -1; /* the lexer stays put: looping would not end */
            if (t.kind == TOK_END || is_special(&t, '>')) {
                lx->why = "unterminated route";
                return -1;
            }
        }
    }
    if (read_addr_spec(lx, a) < 0) return -1;
    t = next_token(lx);
    if (!is_special(&t, '>')) {
        lx->why = "missing '>'";
        return -1;
    }
    return 0;
}

struct sink {
    struct mail_address *out;
    size_t max, n;
};

static void keep(struct sink *s, const struct mail_address *a)
{
    if (s->n < s->max) s->out[s->n] = *a;
    s->n++;
}

/* mailbox = name-addr / addr-spec, or a group when a ':' follows the phrase. in_group: ';'
 * ends the list. Returns 1 when a ';' closed the group, 0 otherwise, -1 on error. */
static int read_mailbox_or_group(struct lexer *lx, struct sink *s, int in_group)
{
    /* Look ahead over the phrase: words until '<', ':', '@', ',', ';' or the end. */
    struct lexer start = *lx;
    struct tok t;
    int words = 0;
    for (;;) {
        t = peek_token(lx);
        if (t.kind != TOK_ATOM && t.kind != TOK_QUOTED) break;
        next_token(lx);
        words++;
    }
    if (t.kind == TOK_ERROR) return -1;
    struct mail_address a;
    if (is_special(&t, '<')) {
        next_token(lx);
        if (read_angle_addr(lx, &a) < 0) return -1;
        keep(s, &a);
        return 0;
    }
    if (is_special(&t, ':') && words > 0 && !in_group) {
        next_token(lx);
        for (;;) { /* group-list, possibly empty, ends with ';' */
            t = peek_token(lx);
            if (is_special(&t, ';')) {
                next_token(lx);
                return 0;
            }
            if (is_special(&t, ',')) {
                next_token(lx);
                continue;
            }
            if (t.kind == TOK_END) {
                lx->why = "group without ';'";
                return -1;
            }
            if (read_mailbox_or_group(lx, s, 1) < 0) return -1;
        }
    }
    if (is_special(&t, '@') && words > 0) {
        *lx = start;
        if (read_addr_spec(lx, &a) < 0) return -1;
        keep(s, &a);
        return 0;
    }
    lx->why = words ? "display name without an address" : "no address";
    return -1;
}

int mail_parse_address_list(const char *value, struct mail_address *out, size_t max,
                            const char **why)
{
    struct lexer lx = {.p = value ? value : "", .why = NULL};
    struct sink s = {.out = out, .max = max, .n = 0};
    for (;;) {
        struct tok t = peek_token(&lx);
        if (t.kind == TOK_END) break;
        if (is_special(&t, ',')) { /* obs-addr-list allows empty elements */
            next_token(&lx);
            continue;
        }
        if (read_mailbox_or_group(&lx, &s, 0) < 0) goto bad;
        t = next_token(&lx);
        if (t.kind == TOK_END) break;
        if (!is_special(&t, ',')) {
            if (!lx.why) lx.why = "text after an address";
            goto bad;
        }
    }
    if (lx.why) goto bad; /* e.g. an unterminated comment at the end */
    return (int)s.n;
bad:
    if (why) *why = lx.why ? lx.why : "not an address list";
    return -1;
}

char *mail_author_domain(const char *from_value, const char **why)
{
    struct mail_address a[16];
    int n = mail_parse_address_list(from_value, a, 16, why);
    if (n < 0) return NULL;
    if (n == 0) {
        if (why) *why = "From: holds no mailbox";
        return NULL;
    }
    size_t kept = (size_t)n < 16 ? (size_t)n : 16;
    for (size_t i = 1; i < kept; i++) {
        if (strcmp(a[i].domain, a[0].domain) != 0) {
            if (why) *why = "From: holds mailboxes in several domains (RFC 7489 6.6.1)";
            return NULL;
        }
    }
    return xstrdup(a[0].domain);
}
