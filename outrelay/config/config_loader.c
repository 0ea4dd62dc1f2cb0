/* config_loader.c - the libfyaml machinery under config_load(); internal to outrelay/config/.
 * Owns parsing a file into a document, the line:col of every node, collecting errors as
 * "file:line:col: what is wrong", and the typed getters and mapping/list helpers that word a
 * wrong value the same way in every section. Knows no section; never exits, never prints.
 * Used by config.c, config_auth.c and config_route.c through config_loader.h. */
#include "config/config_loader.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libfyaml.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/strbuf.h"

/* ---------------------------------------------------------------- errors and positions */

void cfg_add_text(struct loader *ld, struct pos sort, char *text)
{
    ld->errors = xrealloc(ld->errors, (ld->n_errors + 1) * sizeof *ld->errors);
    ld->errors[ld->n_errors] = (struct pending_error){sort, ld->n_errors, text};
    ld->n_errors++;
}

/* "file:line:col: <kind>message" (or "file: ..." without a position). */
static char *format_at(const struct loader *ld, struct pos p, const char *kind, const char *fmt,
                       va_list ap)
{
    struct strbuf sb = STRBUF_INIT;
    if (p.line > 0)
        strbuf_printf(&sb, "%s:%d:%d: %s", ld->file, p.line, p.col, kind);
    else
        strbuf_printf(&sb, "%s: %s", ld->file, kind);
    strbuf_vprintf(&sb, fmt, ap);
    return strbuf_detach(&sb, NULL);
}

void __attribute__((format(printf, 3, 4)))
cfg_error_at(struct loader *ld, struct pos p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = format_at(ld, p, "", fmt, ap);
    va_end(ap);
    cfg_add_text(ld, p, text);
}

void __attribute__((format(printf, 3, 4)))
cfg_warn_at(struct loader *ld, struct pos p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = format_at(ld, p, "warning: ", fmt, ap);
    va_end(ap);
    struct config *cfg = ld->cfg;
    cfg->warnings = xrealloc(cfg->warnings, (cfg->n_warnings + 1) * sizeof *cfg->warnings);
    cfg->warnings[cfg->n_warnings++] = text;
}

static struct pos token_pos(struct fy_token *tok)
{
    struct pos p = {0, 0};
    const struct fy_mark *m = tok ? fy_token_start_mark(tok) : NULL;
    if (m) {
        p.line = m->line + 1;
        p.col = m->column + 1;
    }
    return p;
}

/* Where each node starts. libfyaml 0.7 has no public start mark for a node, but a document
 * iterator replays the document as events, in the same depth-first order as the tree, and
 * events carry marks: pairing the two gives every node (brackets and dashes included) its
 * position. */
static void collect_nodes(struct fy_node *n, struct fy_node ***list, size_t *len, size_t *cap)
{
    if (*len == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *list = xrealloc(*list, *cap * sizeof **list);
    }
    (*list)[(*len)++] = n;
    void *it = NULL;
    if (n && fy_node_is_mapping(n)) {
        struct fy_node_pair *pair;
        while ((pair = fy_node_mapping_iterate(n, &it))) {
            collect_nodes(fy_node_pair_key(pair), list, len, cap);
            collect_nodes(fy_node_pair_value(pair), list, len, cap);
        }
    } else if (n && fy_node_is_sequence(n)) {
        struct fy_node *item;
        while ((item = fy_node_sequence_iterate(n, &it)))
            collect_nodes(item, list, len, cap);
    }
}

static int compare_marks(const void *a, const void *b)
{
    const struct node_mark *x = a, *y = b;
    return (uintptr_t)x->node < (uintptr_t)y->node ? -1 : (uintptr_t)x->node > (uintptr_t)y->node;
}

static int event_matches(const struct fy_event *e, struct fy_node *n)
{
    if (e->type == FYET_MAPPING_START) return n && fy_node_is_mapping(n);
    if (e->type == FYET_SEQUENCE_START) return n && fy_node_is_sequence(n);
    return (e->type == FYET_SCALAR || e->type == FYET_ALIAS) && (!n || fy_node_is_scalar(n));
}

/* Fills ld->marks (sorted by node) or leaves it empty when the two orders disagree. */
void cfg_index_marks(struct loader *ld, struct fy_document *doc)
{
    struct fy_node **nodes = NULL;
    size_t n = 0, cap = 0, i = 0;
    struct fy_document_iterator *it = fy_document_iterator_create();
    struct fy_event *e;
    int ok = it != NULL;

    collect_nodes(fy_document_root(doc), &nodes, &n, &cap);
    ld->marks = xcalloc(n, sizeof *ld->marks);
    if (ok && (e = fy_document_iterator_stream_start(it))) fy_document_iterator_event_free(it, e);
    if (ok && (e = fy_document_iterator_document_start(it, doc)))
        fy_document_iterator_event_free(it, e);
    while (ok && (e = fy_document_iterator_body_next(it))) {
        if (e->type != FYET_MAPPING_END && e->type != FYET_SEQUENCE_END) {
            const struct fy_mark *m = fy_event_start_mark(e);
            ok = i < n && event_matches(e, nodes[i]);
            if (ok) {
                ld->marks[i].node = nodes[i];
                if (m) ld->marks[i].pos = (struct pos){m->line + 1, m->column + 1};
                i++;
            }
        }
        fy_document_iterator_event_free(it, e);
    }
    if (it) fy_document_iterator_destroy(it);
    ld->n_marks = ok && i == n ? n : 0;
    qsort(ld->marks, ld->n_marks, sizeof *ld->marks, compare_marks);
    free(nodes);
}

struct pos cfg_node_pos(const struct loader *ld, struct fy_node *n, struct pos fallback)
{
    struct node_mark key = {n, {0, 0}}, *found = NULL;
    void *it = NULL;
    struct pos p = {0, 0};
    if (!n) return fallback;
    if (ld->n_marks) found = bsearch(&key, ld->marks, ld->n_marks, sizeof key, compare_marks);
    if (found) {
        p = found->pos;
    } else if (fy_node_is_scalar(n)) {
        p = token_pos(fy_node_get_scalar_token(n));
    } else if (fy_node_is_mapping(n)) {
        struct fy_node_pair *pair = fy_node_mapping_iterate(n, &it);
        if (pair) p = cfg_node_pos(ld, fy_node_pair_key(pair), fallback);
    } else if (fy_node_is_sequence(n)) {
        struct fy_node *first = fy_node_sequence_iterate(n, &it);
        if (first) p = cfg_node_pos(ld, first, fallback);
    }
    /* A quoted scalar's mark is after the quote; point at the quote, as an editor would. */
    enum fy_node_style style = fy_node_get_style(n);
    if (p.col > 1 && fy_node_is_scalar(n) &&
        (style == FYNS_SINGLE_QUOTED || style == FYNS_DOUBLE_QUOTED))
        p.col--;
    return p.line > 0 ? p : fallback;
}

int cfg_is_null(struct fy_node *n)
{
    if (!n || fy_node_is_null(n)) return 1;
    if (!fy_node_is_scalar(n) || fy_node_get_style(n) != FYNS_PLAIN) return 0;
    const char *s = fy_node_get_scalar0(n);
    return !s || !*s || !strcmp(s, "~") || !strcasecmp(s, "null");
}

const char *cfg_kind_name(struct fy_node *n)
{
    if (cfg_is_null(n)) return "nothing";
    if (fy_node_is_mapping(n)) return "a mapping";
    if (fy_node_is_sequence(n)) return "a list";
    return "a single value";
}

/* Labels are cut at 255 bytes; only a pathological file gets there. */
void __attribute__((format(printf, 2, 3))) cfg_label_set(struct at *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(at->label, sizeof at->label, fmt, ap);
    va_end(ap);
}

static void cfg_label_child(struct at *child, const struct at *parent, const char *name)
{
    if (!parent->label[0])
        cfg_label_set(child, "%s", name);
    else
        cfg_label_set(child, "%s%s%s", parent->label, parent->named ? ": " : ".", name);
}

/* ---------------------------------------------------------------- scalar values */

/* The text of a scalar; reports and returns NULL for lists, mappings and empty values. */
const char *cfg_scalar_text(struct loader *ld, const struct at *at)
{
    if (cfg_is_null(at->node) || !fy_node_is_scalar(at->node)) {
        cfg_error_at(ld, at->where, LABEL_FMT "expected a single value, found %s", LABEL_ARGS(at),
                     cfg_kind_name(at->node));
        return NULL;
    }
    const char *s = fy_node_get_scalar0(at->node);
    if (!s || !*s) {
        cfg_error_at(ld, at->where, LABEL_FMT "is empty", LABEL_ARGS(at));
        return NULL;
    }
    return s;
}

int cfg_get_string(struct loader *ld, const struct at *at, char **dst)
{
    const char *s = cfg_scalar_text(ld, at);
    if (!s) return -1;
    free(*dst);
    *dst = xstrdup(s);
    return 0;
}

int cfg_valid_hostname(const char *s)
{
    size_t len = strlen(s), label = 0;
    if (len == 0 || len > 253) return 0;
    for (const char *p = s; *p; p++) {
        if (*p == '.') {
            if (label == 0) return 0;
            label = 0;
        } else if (isalnum((unsigned char)*p) || *p == '-' || *p == '_') {
            if (++label > 63) return 0;
        } else {
            return 0;
        }
    }
    return 1;
}

int cfg_get_hostname(struct loader *ld, const struct at *at, char **dst)
{
    const char *s = cfg_scalar_text(ld, at);
    if (!s) return -1;
    if (!cfg_valid_hostname(s)) {
        cfg_error_at(ld, at->where, LABEL_FMT "\"%s\" is not a valid host name", LABEL_ARGS(at), s);
        return -1;
    }
    free(*dst);
    *dst = xstrdup(s);
    return 0;
}

int cfg_get_int(struct loader *ld, const struct at *at, long min, long max, int *dst)
{
    const char *s = cfg_scalar_text(ld, at);
    char *end;
    if (!s) return -1;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || !isdigit((unsigned char)s[s[0] == '-' || s[0] == '+']) || v < min ||
        v > max) {
        cfg_error_at(ld, at->where, LABEL_FMT "\"%s\" is not a whole number from %ld to %ld",
                     LABEL_ARGS(at), s, min, max);
        return -1;
    }
    *dst = (int)v;
    return 0;
}

int cfg_get_port(struct loader *ld, const struct at *at, int *dst)
{
    return cfg_get_int(ld, at, 1, 65535, dst);
}

int cfg_get_duration(struct loader *ld, const struct at *at, int64_t *dst)
{
    const char *s = cfg_scalar_text(ld, at);
    int64_t v;
    if (!s) return -1;
    if (util_parse_duration(s, &v) < 0 || v <= 0) {
        cfg_error_at(ld, at->where,
                     LABEL_FMT "\"%s\" is not a duration (a number with s, m, h, d or w, e.g. 30s, "
                               "5m, 2h, 5d)",
                     LABEL_ARGS(at), s);
        return -1;
    }
    *dst = v;
    return 0;
}

int cfg_get_size(struct loader *ld, const struct at *at, int64_t *dst)
{
    const char *s = cfg_scalar_text(ld, at);
    int64_t v;
    if (!s) return -1;
    if (util_parse_size(s, &v) < 0 || v <= 0) {
        cfg_error_at(ld, at->where,
                     LABEL_FMT "\"%s\" is not a size (bytes, or a number with k, M or G, e.g. 35M)",
                     LABEL_ARGS(at), s);
        return -1;
    }
    *dst = v;
    return 0;
}

int cfg_get_bool(struct loader *ld, const struct at *at, int *dst)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    const char *s = cfg_scalar_text(ld, at);
    if (!s) return -1;
    for (size_t i = 0; i < 3; i++) {
        if (!strcasecmp(s, yes[i]) || !strcasecmp(s, no[i])) {
            *dst = !strcasecmp(s, yes[i]);
            return 0;
        }
    }
    cfg_error_at(ld, at->where, LABEL_FMT "\"%s\" is not true or false", LABEL_ARGS(at), s);
    return -1;
}

/* One of names[] (NULL-terminated); returns its index or -1. */
int cfg_get_choice(struct loader *ld, const struct at *at, const char *what,
                   const char *const *names)
{
    const char *s = cfg_scalar_text(ld, at);
    if (!s) return -1;
    for (int i = 0; names[i]; i++)
        if (!strcmp(s, names[i])) return i;
    struct strbuf list = STRBUF_INIT;
    for (int i = 0; names[i]; i++)
        strbuf_printf(&list, "%s%s", i ? ", " : "", names[i]);
    cfg_error_at(ld, at->where, LABEL_FMT "\"%s\" is not %s (expected one of: %s)", LABEL_ARGS(at),
                 s, what, strbuf_str(&list));
    strbuf_free(&list);
    return -1;
}

/* A file the server will read later: it must exist, be a file and be readable now. */
int cfg_get_readable_file(struct loader *ld, const struct at *at, char **dst)
{
    const char *s = cfg_scalar_text(ld, at);
    struct stat st;
    if (!s) return -1;
    int fd = open(s, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        cfg_error_at(ld, at->where, LABEL_FMT "cannot read %s: %s", LABEL_ARGS(at), s,
                     strerror(errno));
        return -1;
    }
    int is_dir = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
    close(fd);
    if (is_dir) {
        cfg_error_at(ld, at->where, LABEL_FMT "%s is a directory, not a file", LABEL_ARGS(at), s);
        return -1;
    }
    free(*dst);
    *dst = xstrdup(s);
    return 0;
}

/* ---------------------------------------------------------------- collections */

/* Splits a mapping into the values of the known keys (out[i] for names[i]; node NULL when
 * absent) and reports every unknown key. A missing or empty value counts as an empty mapping.
 * Returns -1 when the node is not a mapping at all. */
int cfg_take_mapping(struct loader *ld, const struct at *at, const char *const *names,
                     struct at *out)
{
    size_t n = 0;
    while (names[n])
        n++;
    for (size_t i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].where = at->where;
        cfg_label_child(&out[i], at, names[i]);
    }
    if (cfg_is_null(at->node)) return 0;
    if (!fy_node_is_mapping(at->node)) {
        cfg_error_at(ld, at->where,
                     LABEL_FMT "expected a mapping (\"name: value\" lines), found %s",
                     LABEL_ARGS(at), cfg_kind_name(at->node));
        return -1;
    }
    void *it = NULL;
    struct cfg_pair pair;
    while (cfg_mapping_next(ld, at, &it, &pair)) {
        const char *name = pair.name;
        struct pos kpos = pair.where;
        if (!name || !*name) {
            cfg_error_at(ld, kpos, LABEL_FMT "a key must be a plain name, found %s", LABEL_ARGS(at),
                         cfg_kind_name(pair.key));
            continue;
        }
        size_t i = 0;
        while (i < n && strcmp(names[i], name))
            i++;
        if (i == n) {
            struct strbuf list = STRBUF_INIT;
            for (size_t j = 0; j < n; j++)
                strbuf_printf(&list, "%s%s", j ? ", " : "", names[j]);
            cfg_error_at(ld, kpos, LABEL_FMT "\"%s\" is not a known key (expected one of: %s)",
                         LABEL_ARGS(at), name, strbuf_str(&list));
            strbuf_free(&list);
            continue;
        }
        out[i].node = pair.value;
        out[i].where = cfg_node_pos(ld, out[i].node, kpos);
        /* "key:" with nothing after it has no token of its own: point at the key. */
        if (cfg_is_null(out[i].node)) out[i].where = kpos;
    }
    return 0;
}

/* The items of a list, each with its label "name[i]"; *items is NULL when empty.
 * A missing or empty value is an empty list. Returns -1 (reported) when it is not a list. */
int cfg_take_list(struct loader *ld, const struct at *at, struct at **items, size_t *n)
{
    *items = NULL;
    *n = 0;
    if (cfg_is_null(at->node)) return 0;
    if (!fy_node_is_sequence(at->node)) {
        cfg_error_at(ld, at->where,
                     LABEL_FMT "expected a list ([a, b] or lines starting with \"- \"), found %s",
                     LABEL_ARGS(at), cfg_kind_name(at->node));
        return -1;
    }
    size_t count = (size_t)fy_node_sequence_item_count(at->node);
    *items = xcalloc(count, sizeof **items);
    void *it = NULL;
    struct fy_node *item;
    while ((item = fy_node_sequence_iterate(at->node, &it)) && *n < count) {
        struct at *a = &(*items)[*n];
        a->node = item;
        a->where = cfg_node_pos(ld, item, at->where);
        cfg_label_set(a, "%s[%zu]", at->label, *n);
        (*n)++;
    }
    return 0;
}

int cfg_mapping_next(struct loader *ld, const struct at *at, void **it, struct cfg_pair *p)
{
    struct fy_node_pair *pair = fy_node_mapping_iterate(at->node, it);
    if (!pair) return 0;
    p->key = fy_node_pair_key(pair);
    p->where = cfg_node_pos(ld, p->key, at->where);
    p->name = p->key && fy_node_is_scalar(p->key) ? fy_node_get_scalar0(p->key) : NULL;
    p->value = fy_node_pair_value(pair);
    return 1;
}

/* Entries of a "NAME: {...}" mapping (origins, egress), each labelled 'what "NAME"'. */
int cfg_take_named(struct loader *ld, const struct at *at, const char *what, struct at **items,
                   size_t *n)
{
    *items = NULL;
    *n = 0;
    if (cfg_is_null(at->node)) return 0;
    if (!fy_node_is_mapping(at->node)) {
        cfg_error_at(ld, at->where, "%s: expected a mapping of names (\"NAME:\" lines), found %s",
                     at->label, cfg_kind_name(at->node));
        return -1;
    }
    size_t count = (size_t)fy_node_mapping_item_count(at->node);
    *items = xcalloc(count, sizeof **items);
    void *it = NULL;
    struct cfg_pair pair;
    while (*n < count && cfg_mapping_next(ld, at, &it, &pair)) {
        const char *name = pair.name ? pair.name : "";
        struct pos kpos = pair.where;
        int ok = *name != '\0';
        for (const char *p = name; ok && *p; p++)
            ok = isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.';
        if (!ok) {
            cfg_error_at(ld, kpos, "%s: \"%s\" is not a usable %s name (letters, digits, -, _, .)",
                         at->label, name ? name : "", what);
            continue;
        }
        struct at *a = &(*items)[(*n)++];
        a->node = pair.value;
        a->where = kpos; /* "missing" errors point at the name */
        a->named = 1;
        a->name = name;
        cfg_label_set(a, "%s \"%s\"", what, name);
    }
    return 0;
}

int cfg_get_string_list(struct loader *ld, const struct at *at, char ***dst, size_t *n_dst)
{
    struct at *items;
    size_t n;
    if (cfg_take_list(ld, at, &items, &n) < 0) return -1;
    for (size_t i = 0; i < *n_dst; i++)
        free((*dst)[i]);
    free(*dst);
    *dst = xcalloc(n, sizeof **dst);
    *n_dst = 0;
    for (size_t i = 0; i < n; i++)
        if (cfg_get_string(ld, &items[i], &(*dst)[*n_dst]) == 0) (*n_dst)++;
    free(items);
    return 0;
}

int cfg_get_prefix_list(struct loader *ld, const struct at *at, struct net_prefix **dst,
                        size_t *n_dst)
{
    struct at *items;
    size_t n;
    if (cfg_take_list(ld, at, &items, &n) < 0) return -1;
    free(*dst);
    *dst = xcalloc(n, sizeof **dst);
    *n_dst = 0;
    for (size_t i = 0; i < n; i++) {
        const char *s = cfg_scalar_text(ld, &items[i]);
        if (!s) continue;
        if (util_parse_prefix(s, &(*dst)[*n_dst]) < 0)
            cfg_error_at(ld, items[i].where,
                         "%s: \"%s\" is not a network (an address or address/bits, e.g. "
                         "10.0.1.0/24 or 2001:db8::/32)",
                         items[i].label, s);
        else
            (*n_dst)++;
    }
    free(items);
    return 0;
}

/* ---------------------------------------------------------------- settings tables */

/* delivery.retry style: a non-empty list of durations. */
static int get_duration_list(struct loader *ld, const struct at *at, int64_t **dst, size_t *n_dst)
{
    struct at *items;
    size_t n;
    if (cfg_take_list(ld, at, &items, &n) < 0) return -1;
    if (n == 0) cfg_error_at(ld, at->where, "%s: needs at least one interval", at->label);
    int64_t *values = xcalloc(n ? n : 1, sizeof *values);
    size_t good = 0;
    for (size_t i = 0; i < n; i++)
        if (cfg_get_duration(ld, &items[i], &values[good]) == 0) good++;
    free(items);
    free(*dst);
    *dst = values;
    *n_dst = good;
    return good == n && n > 0 ? 0 : -1;
}

/* A custom item: its own parser, or nothing to read (documented only). */
static int get_custom_setting(struct loader *ld, const struct at *at, const struct setting *s,
                              void *base)
{
    if (!s->parse) return 0;
    const char *text = cfg_scalar_text(ld, at);
    if (!text) return -1;
    if (s->parse(text, base) == 0) return 0;
    cfg_error_at(ld, at->where, LABEL_FMT "\"%s\" is not %s", LABEL_ARGS(at), text, s->what);
    return -1;
}

int cfg_get_setting(struct loader *ld, const struct at *at, const struct setting *s, void *base)
{
    /* before any address is made: a custom item's offsets are SETTING_NO_OFFSET */
    if (s->type == SETTING_CUSTOM) return get_custom_setting(ld, at, s, base);
    void *field = (char *)base + s->offset;
    int choice;
    switch (s->type) {
    case SETTING_INT:
        return cfg_get_int(ld, at, s->min, s->max, field);
    case SETTING_PORT:
        return cfg_get_port(ld, at, field);
    case SETTING_BOOL:
        return cfg_get_bool(ld, at, field);
    case SETTING_ENUM:
        if ((choice = cfg_get_choice(ld, at, s->what, s->choices)) < 0) return -1;
        *(int *)field = choice;
        return 0;
    case SETTING_DURATION:
        if (s->zero_off) { /* 0 (with or without a unit) turns the feature off */
            int64_t zero;
            const char *text = cfg_scalar_text(ld, at);
            if (!text) return -1;
            if (util_parse_duration(text, &zero) == 0 && zero == 0) {
                *(int64_t *)field = 0;
                return 0;
            }
        }
        return cfg_get_duration(ld, at, field);
    case SETTING_SIZE:
        return cfg_get_size(ld, at, field);
    case SETTING_STRING:
        return cfg_get_string(ld, at, field);
    case SETTING_HOSTNAME:
        return cfg_get_hostname(ld, at, field);
    case SETTING_FILE:
        return cfg_get_readable_file(ld, at, field);
    case SETTING_STRING_LIST:
        return cfg_get_string_list(ld, at, field, (size_t *)((char *)base + s->count_offset));
    case SETTING_DURATION_LIST:
        return get_duration_list(ld, at, field, (size_t *)((char *)base + s->count_offset));
    case SETTING_CUSTOM:
        break; /* above */
    }
    return -1;
}

int cfg_take_settings_n(struct loader *ld, const struct at *at, const struct settings_table *t,
                        void *base, const char *const *extra, struct at *v, size_t n_v)
{
    size_t n_extra = 0;
    while (extra && extra[n_extra])
        n_extra++;
    if (n_v < t->n_items + n_extra) {
        /* a programming error, caught by any test that loads the section */
        cfg_error_at(ld, at->where,
                     "internal error: section %s has %zu settings, its loader reads %zu",
                     t->section, t->n_items + n_extra, n_v);
        return -1;
    }
    const char **names = xcalloc(t->n_items + n_extra + 1, sizeof *names);
    for (size_t i = 0; i < t->n_items; i++)
        names[i] = t->items[i].name;
    for (size_t i = 0; i < n_extra; i++)
        names[t->n_items + i] = extra[i];
    int r = cfg_take_mapping(ld, at, names, v);
    free(names);
    for (size_t i = 0; r == 0 && i < t->n_items; i++)
        if (v[i].node && cfg_get_setting(ld, &v[i], &t->items[i], base) < 0) v[i].bad = 1;
    return r;
}

/* ---------------------------------------------------------------- parsing a file */

/* libfyaml's own wording, made clearer where it is terse. */
static const char *syntax_message(const char *msg)
{
    if (!strcmp(msg, "duplicate key"))
        return "duplicate key: this key is already given earlier in the same mapping";
    return msg;
}

static void no_output(struct fy_diag *diag, void *user, const char *buf, size_t len)
{
    (void)diag;
    (void)user;
    (void)buf;
    (void)len;
}

/* fy_document_build_from_file() reads the first document only; a second one ("---") would
 * be ignored without a word, so it is an error. The file parsed fine once: only events are
 * looked at here. */
static void report_second_document(struct loader *ld, const struct fy_parse_cfg *pcfg)
{
    struct fy_parser *parser = fy_parser_create(pcfg);
    struct fy_event *e;
    int documents = 0;
    if (!parser) return;
    if (fy_parser_set_input_file(parser, ld->file) == 0) {
        while ((e = fy_parser_parse(parser))) {
            if (e->type == FYET_DOCUMENT_START && ++documents == 2) {
                const struct fy_mark *m = fy_event_start_mark(e);
                struct pos p = {m ? m->line + 1 : 1, m ? m->column + 1 : 1};
                cfg_error_at(ld, p,
                             "a second YAML document starts here; outrelay reads one document, so "
                             "remove this \"---\" line or what follows it");
            }
            fy_parser_event_free(parser, e);
            if (documents == 2) break;
        }
    }
    fy_parser_destroy(parser);
}

/* The first this many anchors and aliases get an error each; the rest one line with a count. */
#define CFG_MAX_ALIAS_ERRORS 10

/* sigil: '&' for an anchor, '*' for an alias. libfyaml's mark is on the name; the error points
 * at the sigil before it. */
static void refuse_one_alias(struct loader *ld, const struct fy_mark *m, char sigil,
                             struct fy_token *name, size_t *count)
{
    if (++*count > CFG_MAX_ALIAS_ERRORS) return;
    struct pos p = {m ? m->line + 1 : 1, m && m->column > 0 ? m->column : 1};
    size_t len = 0;
    const char *text = name ? fy_token_get_text(name, &len) : NULL;
    cfg_error_at(ld, p,
                 "%s \"%c%.*s\": aliases are not supported in outrelay configuration%s; "
                 "write the value out in full",
                 sigil == '*' ? "alias" : "anchor", sigil, text ? (int)len : 0, text ? text : "",
                 sigil == '*' ? "" : ", so anchors are refused too");
}

/* Anchors and aliases are refused, never resolved: resolving copies the anchored node at every
 * alias, so nine levels of nine aliases (a 300-byte file) expand to 9^9 nodes and gigabytes of
 * memory. outrelay's settings have no use for them. The document was built unresolved; its
 * events are replayed here (cheap: an alias is one event) and every anchor and alias is an
 * error where it stands. */
static void refuse_anchors_and_aliases(struct loader *ld, struct fy_document *doc)
{
    struct fy_document_iterator *it = fy_document_iterator_create();
    struct fy_event *e;
    size_t count = 0;
    struct pos first_extra = {0, 0};
    if (!it) return;
    if ((e = fy_document_iterator_stream_start(it))) fy_document_iterator_event_free(it, e);
    if ((e = fy_document_iterator_document_start(it, doc))) fy_document_iterator_event_free(it, e);
    while ((e = fy_document_iterator_body_next(it))) {
        struct fy_token *anchor = NULL;
        if (e->type == FYET_SCALAR) anchor = e->scalar.anchor;
        if (e->type == FYET_SEQUENCE_START) anchor = e->sequence_start.anchor;
        if (e->type == FYET_MAPPING_START) anchor = e->mapping_start.anchor;
        const struct fy_mark *m = NULL;
        if (e->type == FYET_ALIAS) {
            m = fy_event_start_mark(e);
            refuse_one_alias(ld, m, '*', e->alias.anchor, &count);
        } else if (anchor) {
            m = fy_token_start_mark(anchor);
            refuse_one_alias(ld, m, '&', anchor, &count);
        }
        if (m && count == CFG_MAX_ALIAS_ERRORS + 1)
            first_extra = (struct pos){m->line + 1, m->column > 0 ? m->column : 1};
        fy_document_iterator_event_free(it, e);
    }
    fy_document_iterator_destroy(it);
    if (count > CFG_MAX_ALIAS_ERRORS)
        cfg_error_at(ld, first_extra,
                     "%zu more anchors and aliases from here on (aliases are not supported in "
                     "outrelay configuration)",
                     count - CFG_MAX_ALIAS_ERRORS);
}

/* YAML is Unicode, and libfyaml 0.8 (Debian 12) never returns from a directive line holding
 * bytes that are not UTF-8 ("%H\xc1": outrelay check hung): such a file is refused before it
 * is parsed, pointing at its first bad byte. Returns 0 / -1. */
static int refuse_non_utf8(struct loader *ld)
{
    FILE *f = fopen(ld->file, "re");
    if (!f) return 0; /* the parser says why it cannot be read */
    struct pos at = {1, 1}, start = at;
    int c, need = 0;
    int lo = 0x80, hi = 0xbf; /* allowed range of the next continuation byte */
    while ((c = getc(f)) != EOF) {
        if (need) {
            if (c < lo || c > hi) break;
            lo = 0x80, hi = 0xbf;
            if (--need == 0) at.col++;
            continue;
        }
        start = at;
        if (c == '\n') {
            at.line++, at.col = 1;
        } else if (c < 0x80) {
            at.col++;
        } else if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) { /* no overlong forms, no surrogates */
            need = 2, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        } else if (c >= 0xf0 && c <= 0xf4) { /* nothing above U+10FFFF */
            need = 3, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        } else {
            break;
        }
    }
    fclose(f);
    if (c == EOF && !need) return 0;
    cfg_error_at(ld, start, "this is not UTF-8 text; YAML files are UTF-8, so save it as UTF-8");
    return -1;
}

struct fy_document *cfg_parse_file(struct loader *ld, struct fy_diag **diagp)
{
    if (refuse_non_utf8(ld) < 0) return NULL;
    struct fy_diag_cfg dcfg;
    fy_diag_cfg_default(&dcfg);
    dcfg.fp = NULL; /* nothing reaches stderr: errors are collected */
    dcfg.output_fn = no_output;
    dcfg.colorize = false;
    struct fy_diag *diag = fy_diag_create(&dcfg);
    if (!diag) {
        cfg_error_at(ld, (struct pos){0, 0}, "cannot set up the YAML parser");
        return NULL;
    }
    fy_diag_set_collect_errors(diag, true);
    /* No FYPCF_RESOLVE_DOCUMENT: aliases stay unexpanded so they can be refused cheaply. */
    struct fy_parse_cfg pcfg = {.flags = FYPCF_QUIET | FYPCF_COLLECT_DIAG, .diag = diag};
    struct fy_document *doc = fy_document_build_from_file(&pcfg, ld->file);
    void *it = NULL;
    struct fy_diag_error *e;
    while ((e = fy_diag_errors_iterate(diag, &it))) {
        if (e->type < FYET_ERROR) continue;
        /* Collected errors are already 1-based. */
        cfg_error_at(ld, (struct pos){e->line > 0 ? e->line : 1, e->column > 0 ? e->column : 1},
                     "%s", syntax_message(e->msg ? e->msg : "YAML syntax error"));
    }
    if (doc && !ld->n_errors) refuse_anchors_and_aliases(ld, doc);
    if (doc && ld->n_errors) {
        fy_document_destroy(doc);
        doc = NULL;
    }
    if (doc) report_second_document(ld, &pcfg);
    *diagp = diag;
    return doc;
}
