/* config.c - reads outrelay's YAML file with libfyaml into struct config (see config.h).
 * Owns the embedded defaults, every validation rule and the wording of every configuration
 * error ("file:line:col: what is wrong", all of them, sorted by position). Reads the files the
 * configuration names (TLS files, users file) only to check them; never keeps them open.
 * Library code: never exits, never prints; callers (outrelay check, startup) print the errors. */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libfyaml.h>
#include <math.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/strbuf.h"

/* ---------------------------------------------------------------- errors and positions */

struct pos {
    int line, col; /* 1-based; line 0 = unknown */
};

/* A node and where it starts in the file; see index_marks(). */
struct node_mark {
    struct fy_node *node;
    struct pos pos;
};

struct pending_error {
    struct pos sort; /* where in the configuration file the problem belongs */
    size_t seq;
    char *text;
};

/* A provider name used before every policy file is read; checked once all are (see
 * check_provider_refs()). */
struct provider_ref {
    char *text_prefix; /* "file:line:col: label" */
    char *name;
    struct pos sort;
};

struct loader {
    const char *file;
    struct loader *root;                /* the main file's loader (itself for the main file) */
    struct pos sort_within;             /* policy files: where their errors sort in the main file */
    struct provider_ref *provider_refs; /* root only */
    size_t n_provider_refs;
    struct config *cfg;
    struct pending_error *errors;
    size_t n_errors;
    char **users; /* names from auth.users_file, when it could be read */
    size_t n_users;
    int users_loaded;
    int users_file_given;    /* auth.users_file is set, readable or not */
    int tls_given;           /* tls.cert and tls.key are both set, readable or not */
    struct node_mark *marks; /* see index_marks() */
    size_t n_marks;
};

/* One node being looked at: the value, where to point at it, and its name for messages. */
struct at {
    struct fy_node *node;
    struct pos where;
    char label[256];
    int named;        /* label is 'egress "cloud"': children join with ": " instead of "." */
    const char *name; /* for named entries: "cloud" (owned by the YAML document) */
};

static void add_text(struct loader *ld, struct pos sort, char *text)
{
    ld->errors = xrealloc(ld->errors, (ld->n_errors + 1) * sizeof *ld->errors);
    ld->errors[ld->n_errors] = (struct pending_error){sort, ld->n_errors, text};
    ld->n_errors++;
}

static void __attribute__((format(printf, 3, 4)))
error_at(struct loader *ld, struct pos p, const char *fmt, ...)
{
    struct strbuf sb = STRBUF_INIT;
    va_list ap;
    if (p.line > 0)
        strbuf_printf(&sb, "%s:%d:%d: ", ld->file, p.line, p.col);
    else
        strbuf_printf(&sb, "%s: ", ld->file);
    va_start(ap, fmt);
    strbuf_vprintf(&sb, fmt, ap);
    va_end(ap);
    add_text(ld, p, strbuf_detach(&sb, NULL));
}

/* "listen[0].address: " or "" at the top level. */
#define LABEL_FMT "%s%s"
#define LABEL_ARGS(at) (at)->label, (at)->label[0] ? ": " : ""

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
static void index_marks(struct loader *ld, struct fy_document *doc)
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

static struct pos node_pos(const struct loader *ld, struct fy_node *n, struct pos fallback)
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
        if (pair) p = node_pos(ld, fy_node_pair_key(pair), fallback);
    } else if (fy_node_is_sequence(n)) {
        struct fy_node *first = fy_node_sequence_iterate(n, &it);
        if (first) p = node_pos(ld, first, fallback);
    }
    /* A quoted scalar's mark is after the quote; point at the quote, as an editor would. */
    enum fy_node_style style = fy_node_get_style(n);
    if (p.col > 1 && fy_node_is_scalar(n) &&
        (style == FYNS_SINGLE_QUOTED || style == FYNS_DOUBLE_QUOTED))
        p.col--;
    return p.line > 0 ? p : fallback;
}

static int is_null(struct fy_node *n)
{
    if (!n || fy_node_is_null(n)) return 1;
    if (!fy_node_is_scalar(n) || fy_node_get_style(n) != FYNS_PLAIN) return 0;
    const char *s = fy_node_get_scalar0(n);
    return !s || !*s || !strcmp(s, "~") || !strcasecmp(s, "null");
}

static const char *kind_name(struct fy_node *n)
{
    if (is_null(n)) return "nothing";
    if (fy_node_is_mapping(n)) return "a mapping";
    if (fy_node_is_sequence(n)) return "a list";
    return "a single value";
}

/* Labels are cut at 255 bytes; only a pathological file gets there. */
static void __attribute__((format(printf, 2, 3))) label_set(struct at *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(at->label, sizeof at->label, fmt, ap);
    va_end(ap);
}

static void label_child(struct at *child, const struct at *parent, const char *name)
{
    if (!parent->label[0])
        label_set(child, "%s", name);
    else
        label_set(child, "%s%s%s", parent->label, parent->named ? ": " : ".", name);
}

/* ---------------------------------------------------------------- scalar values */

/* The text of a scalar; reports and returns NULL for lists, mappings and empty values. */
static const char *scalar_text(struct loader *ld, const struct at *at)
{
    if (is_null(at->node) || !fy_node_is_scalar(at->node)) {
        error_at(ld, at->where, LABEL_FMT "expected a single value, found %s", LABEL_ARGS(at),
                 kind_name(at->node));
        return NULL;
    }
    const char *s = fy_node_get_scalar0(at->node);
    if (!s || !*s) {
        error_at(ld, at->where, LABEL_FMT "is empty", LABEL_ARGS(at));
        return NULL;
    }
    return s;
}

static int get_string(struct loader *ld, const struct at *at, char **dst)
{
    const char *s = scalar_text(ld, at);
    if (!s) return -1;
    free(*dst);
    *dst = xstrdup(s);
    return 0;
}

static int valid_hostname(const char *s)
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

static int get_hostname(struct loader *ld, const struct at *at, char **dst)
{
    const char *s = scalar_text(ld, at);
    if (!s) return -1;
    if (!valid_hostname(s)) {
        error_at(ld, at->where, LABEL_FMT "\"%s\" is not a valid host name", LABEL_ARGS(at), s);
        return -1;
    }
    free(*dst);
    *dst = xstrdup(s);
    return 0;
}

static int get_int(struct loader *ld, const struct at *at, long min, long max, int *dst)
{
    const char *s = scalar_text(ld, at);
    char *end;
    if (!s) return -1;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || !isdigit((unsigned char)s[s[0] == '-' || s[0] == '+']) || v < min ||
        v > max) {
        error_at(ld, at->where, LABEL_FMT "\"%s\" is not a whole number from %ld to %ld",
                 LABEL_ARGS(at), s, min, max);
        return -1;
    }
    *dst = (int)v;
    return 0;
}

static int get_port(struct loader *ld, const struct at *at, int *dst)
{
    return get_int(ld, at, 1, 65535, dst);
}

static int get_duration(struct loader *ld, const struct at *at, int64_t *dst)
{
    const char *s = scalar_text(ld, at);
    int64_t v;
    if (!s) return -1;
    if (util_parse_duration(s, &v) < 0 || v <= 0) {
        error_at(ld, at->where,
                 LABEL_FMT "\"%s\" is not a duration (a number with s, m, h, d or w, e.g. 30s, "
                           "5m, 2h, 5d)",
                 LABEL_ARGS(at), s);
        return -1;
    }
    *dst = v;
    return 0;
}

static int get_size(struct loader *ld, const struct at *at, int64_t *dst)
{
    const char *s = scalar_text(ld, at);
    int64_t v;
    if (!s) return -1;
    if (util_parse_size(s, &v) < 0 || v <= 0) {
        error_at(ld, at->where,
                 LABEL_FMT "\"%s\" is not a size (bytes, or a number with k, M or G, e.g. 35M)",
                 LABEL_ARGS(at), s);
        return -1;
    }
    *dst = v;
    return 0;
}

static int get_bool(struct loader *ld, const struct at *at, int *dst)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    const char *s = scalar_text(ld, at);
    if (!s) return -1;
    for (size_t i = 0; i < 3; i++) {
        if (!strcasecmp(s, yes[i]) || !strcasecmp(s, no[i])) {
            *dst = !strcasecmp(s, yes[i]);
            return 0;
        }
    }
    error_at(ld, at->where, LABEL_FMT "\"%s\" is not true or false", LABEL_ARGS(at), s);
    return -1;
}

/* One of names[] (NULL-terminated); returns its index or -1. */
static int get_choice(struct loader *ld, const struct at *at, const char *what,
                      const char *const *names)
{
    const char *s = scalar_text(ld, at);
    if (!s) return -1;
    for (int i = 0; names[i]; i++)
        if (!strcmp(s, names[i])) return i;
    struct strbuf list = STRBUF_INIT;
    for (int i = 0; names[i]; i++)
        strbuf_printf(&list, "%s%s", i ? ", " : "", names[i]);
    error_at(ld, at->where, LABEL_FMT "\"%s\" is not %s (expected one of: %s)", LABEL_ARGS(at), s,
             what, strbuf_str(&list));
    strbuf_free(&list);
    return -1;
}

/* A file the server will read later: it must exist, be a file and be readable now. */
static int get_readable_file(struct loader *ld, const struct at *at, char **dst)
{
    const char *s = scalar_text(ld, at);
    struct stat st;
    if (!s) return -1;
    int fd = open(s, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        error_at(ld, at->where, LABEL_FMT "cannot read %s: %s", LABEL_ARGS(at), s, strerror(errno));
        return -1;
    }
    int is_dir = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
    close(fd);
    if (is_dir) {
        error_at(ld, at->where, LABEL_FMT "%s is a directory, not a file", LABEL_ARGS(at), s);
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
static int take_mapping(struct loader *ld, const struct at *at, const char *const *names,
                        struct at *out)
{
    size_t n = 0;
    while (names[n])
        n++;
    for (size_t i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].where = at->where;
        label_child(&out[i], at, names[i]);
    }
    if (is_null(at->node)) return 0;
    if (!fy_node_is_mapping(at->node)) {
        error_at(ld, at->where, LABEL_FMT "expected a mapping (\"name: value\" lines), found %s",
                 LABEL_ARGS(at), kind_name(at->node));
        return -1;
    }
    void *it = NULL;
    struct fy_node_pair *pair;
    while ((pair = fy_node_mapping_iterate(at->node, &it))) {
        struct fy_node *key = fy_node_pair_key(pair);
        struct pos kpos = node_pos(ld, key, at->where);
        const char *name = key && fy_node_is_scalar(key) ? fy_node_get_scalar0(key) : NULL;
        if (!name || !*name) {
            error_at(ld, kpos, LABEL_FMT "a key must be a plain name, found %s", LABEL_ARGS(at),
                     kind_name(key));
            continue;
        }
        size_t i = 0;
        while (i < n && strcmp(names[i], name))
            i++;
        if (i == n) {
            struct strbuf list = STRBUF_INIT;
            for (size_t j = 0; j < n; j++)
                strbuf_printf(&list, "%s%s", j ? ", " : "", names[j]);
            error_at(ld, kpos, LABEL_FMT "\"%s\" is not a known key (expected one of: %s)",
                     LABEL_ARGS(at), name, strbuf_str(&list));
            strbuf_free(&list);
            continue;
        }
        out[i].node = fy_node_pair_value(pair);
        out[i].where = node_pos(ld, out[i].node, kpos);
        /* "key:" with nothing after it has no token of its own: point at the key. */
        if (is_null(out[i].node)) out[i].where = kpos;
    }
    return 0;
}

/* The items of a list, each with its label "name[i]"; *items is NULL when empty.
 * A missing or empty value is an empty list. Returns -1 (reported) when it is not a list. */
static int take_list(struct loader *ld, const struct at *at, struct at **items, size_t *n)
{
    *items = NULL;
    *n = 0;
    if (is_null(at->node)) return 0;
    if (!fy_node_is_sequence(at->node)) {
        error_at(ld, at->where,
                 LABEL_FMT "expected a list ([a, b] or lines starting with \"- \"), found %s",
                 LABEL_ARGS(at), kind_name(at->node));
        return -1;
    }
    size_t count = (size_t)fy_node_sequence_item_count(at->node);
    *items = xcalloc(count, sizeof **items);
    void *it = NULL;
    struct fy_node *item;
    while ((item = fy_node_sequence_iterate(at->node, &it)) && *n < count) {
        struct at *a = &(*items)[*n];
        a->node = item;
        a->where = node_pos(ld, item, at->where);
        label_set(a, "%s[%zu]", at->label, *n);
        (*n)++;
    }
    return 0;
}

/* Entries of a "NAME: {...}" mapping (origins, egress), each labelled 'what "NAME"'. */
static int take_named(struct loader *ld, const struct at *at, const char *what, struct at **items,
                      size_t *n)
{
    *items = NULL;
    *n = 0;
    if (is_null(at->node)) return 0;
    if (!fy_node_is_mapping(at->node)) {
        error_at(ld, at->where, "%s: expected a mapping of names (\"NAME:\" lines), found %s",
                 at->label, kind_name(at->node));
        return -1;
    }
    size_t count = (size_t)fy_node_mapping_item_count(at->node);
    *items = xcalloc(count, sizeof **items);
    void *it = NULL;
    struct fy_node_pair *pair;
    while ((pair = fy_node_mapping_iterate(at->node, &it)) && *n < count) {
        struct fy_node *key = fy_node_pair_key(pair);
        struct pos kpos = node_pos(ld, key, at->where);
        const char *name = key && fy_node_is_scalar(key) ? fy_node_get_scalar0(key) : "";
        int ok = name && *name;
        for (const char *p = name; ok && *p; p++)
            ok = isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.';
        if (!ok) {
            error_at(ld, kpos, "%s: \"%s\" is not a usable %s name (letters, digits, -, _, .)",
                     at->label, name ? name : "", what);
            continue;
        }
        struct at *a = &(*items)[(*n)++];
        a->node = fy_node_pair_value(pair);
        a->where = kpos; /* "missing" errors point at the name */
        a->named = 1;
        a->name = name;
        label_set(a, "%s \"%s\"", what, name);
    }
    return 0;
}

static int get_string_list(struct loader *ld, const struct at *at, char ***dst, size_t *n_dst)
{
    struct at *items;
    size_t n;
    if (take_list(ld, at, &items, &n) < 0) return -1;
    for (size_t i = 0; i < *n_dst; i++)
        free((*dst)[i]);
    free(*dst);
    *dst = xcalloc(n, sizeof **dst);
    *n_dst = 0;
    for (size_t i = 0; i < n; i++)
        if (get_string(ld, &items[i], &(*dst)[*n_dst]) == 0) (*n_dst)++;
    free(items);
    return 0;
}

static int get_prefix_list(struct loader *ld, const struct at *at, struct net_prefix **dst,
                           size_t *n_dst)
{
    struct at *items;
    size_t n;
    if (take_list(ld, at, &items, &n) < 0) return -1;
    free(*dst);
    *dst = xcalloc(n, sizeof **dst);
    *n_dst = 0;
    for (size_t i = 0; i < n; i++) {
        const char *s = scalar_text(ld, &items[i]);
        if (!s) continue;
        if (util_parse_prefix(s, &(*dst)[*n_dst]) < 0)
            error_at(ld, items[i].where,
                     "%s: \"%s\" is not a network (an address or address/bits, e.g. "
                     "10.0.1.0/24 or 2001:db8::/32)",
                     items[i].label, s);
        else
            (*n_dst)++;
    }
    free(items);
    return 0;
}

/* ---------------------------------------------------------------- defaults */

static const char *const tls_listen_modes[] = {"none", "optional", "required", "implicit", NULL};
static const char *const tls_egress_modes[] = {"none", "optional", "required", NULL};
static const char *const ramp_key_parts[] = {"from_domain", "rcpt_domain", "sender",
                                             "rcpt",        "message_id",  NULL};

static void egress_init(struct egress_conf *e, const char *name, enum egress_type type)
{
    memset(e, 0, sizeof *e);
    e->name = xstrdup(name);
    e->type = type;
    e->port = 25;
    e->tls = TLS_OPTIONAL;
    e->max_connections = 10;
    e->max_messages_per_connection = 100;
}

static struct config *defaults_build(void)
{
    static const int64_t retry[] = {300, 600, 1800, 3600, 7200, 14400};
    struct config *cfg = xcalloc(1, sizeof *cfg);
    char host[256] = "";

    cfg->file = xstrdup("(defaults)");
    if (gethostname(host, sizeof host - 1) < 0 || !host[0])
        snprintf(host, sizeof host, "localhost");
    cfg->hostname = xstrdup(host);
    cfg->spool = xstrdup("./var/spool");
    cfg->state = xstrdup("./var/state");
    cfg->keys = xstrdup("./keys");
    cfg->log_level = 1;
    cfg->dedup_enabled = 1;
    cfg->dedup_window = 86400;

    cfg->mx_port = 25;
    cfg->n_retry = sizeof retry / sizeof retry[0];
    cfg->retry = xmalloc(sizeof retry);
    memcpy(cfg->retry, retry, sizeof retry);
    cfg->max_lifetime = 5 * 86400;
    cfg->connect_timeout = 30;
    cfg->command_timeout = 300;

    cfg->n_listen = 1;
    cfg->listen = xcalloc(1, sizeof *cfg->listen);
    cfg->listen[0].address_text = xstrdup("127.0.0.1:2525");
    util_parse_hostport("127.0.0.1:2525", -1, &cfg->listen[0].addr);
    cfg->listen[0].tls = TLS_OPTIONAL;

    cfg->max_message_size = 35 * 1048576;
    cfg->max_recipients = 1000;
    cfg->max_line_length = 4096;
    cfg->command_timeout_in = 300;
    cfg->data_timeout = 600;
    cfg->max_received_headers = 50;
    cfg->max_connections_in = 500;

    cfg->n_origins = 1;
    cfg->origins = xcalloc(1, sizeof *cfg->origins);
    cfg->origins[0].name = xstrdup("local");
    cfg->origins[0].n_networks = 2;
    cfg->origins[0].networks = xcalloc(2, sizeof *cfg->origins[0].networks);
    util_parse_prefix("127.0.0.0/8", &cfg->origins[0].networks[0]);
    util_parse_prefix("::1/128", &cfg->origins[0].networks[1]);

    cfg->n_egress = 1;
    cfg->egress = xcalloc(1, sizeof *cfg->egress);
    egress_init(&cfg->egress[0], "legacy", EGRESS_DIRECT);

    cfg->ramp.from = xstrdup("legacy");
    cfg->ramp.n_key = 2;
    cfg->ramp.key = xcalloc(2, sizeof *cfg->ramp.key);
    cfg->ramp.key[0] = xstrdup("from_domain");
    cfg->ramp.key[1] = xstrdup("rcpt_domain");
    return cfg;
}

/* Values that derive from others once everything is read. */
static void finalize(struct config *cfg)
{
    if (!cfg->control_socket) {
        struct strbuf sb = STRBUF_INIT;
        strbuf_printf(&sb, "%s/control.sock", cfg->state);
        cfg->control_socket = strbuf_detach(&sb, NULL);
    }
    for (size_t i = 0; i < cfg->n_egress; i++) {
        if (!cfg->egress[i].helo) cfg->egress[i].helo = xstrdup(cfg->hostname);
        if (cfg->egress[i].tls_ca_file) cfg->egress[i].tls_verify = 1;
    }
}

struct config *config_defaults(void)
{
    struct config *cfg = defaults_build();
    finalize(cfg);
    return cfg;
}

/* ---------------------------------------------------------------- sections */

static void load_log(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {"syslog", "level", NULL};
    static const char *const levels[] = {"debug", "info", "warning", "error", NULL};
    struct at v[2];
    if (take_mapping(ld, at, keys, v) < 0) return;
    if (v[0].node) get_bool(ld, &v[0], &ld->cfg->log_syslog);
    if (v[1].node) {
        int level = get_choice(ld, &v[1], "a log level", levels);
        if (level >= 0) ld->cfg->log_level = level;
    }
}

/* metrics: { listen: "127.0.0.1:9464" } - the Prometheus endpoint (off when absent) */
static void load_metrics(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {"listen", NULL};
    struct at v[1];
    if (take_mapping(ld, at, keys, v) < 0 || !v[0].node) return;
    const char *s = scalar_text(ld, &v[0]);
    struct sockaddr_any a;
    if (!s) return;
    if (util_parse_hostport(s, -1, &a) < 0) {
        error_at(ld, v[0].where, LABEL_FMT "\"%s\" is not an address:port (e.g. 127.0.0.1:9464)",
                 LABEL_ARGS(&v[0]), s);
        return;
    }
    free(ld->cfg->metrics_listen);
    ld->cfg->metrics_listen = xstrdup(s);
}

/* dedup: { enabled: true, window: 24h } - duplicate suppression across the two platforms */
static void load_dedup(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {"enabled", "window", NULL};
    struct at v[2];
    if (take_mapping(ld, at, keys, v) < 0) return;
    if (v[0].node) get_bool(ld, &v[0], &ld->cfg->dedup_enabled);
    if (v[1].node) get_duration(ld, &v[1], &ld->cfg->dedup_window);
}

static void load_dns(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {"servers", NULL};
    struct at v[1];
    struct config *cfg = ld->cfg;
    if (take_mapping(ld, at, keys, v) < 0 || !v[0].node) return;
    struct at *items;
    size_t n;
    if (take_list(ld, &v[0], &items, &n) < 0) return;
    cfg->dns_servers = xcalloc(n, sizeof *cfg->dns_servers);
    for (size_t i = 0; i < n; i++) {
        const char *s = scalar_text(ld, &items[i]);
        if (!s) continue;
        /* Accept unbound's "address@port" spelling beside "address:port". */
        char *text = xstrdup(s), *at_sign = strrchr(text, '@');
        struct sockaddr_any addr;
        int ok;
        if (at_sign) {
            char *end;
            *at_sign = '\0';
            long port = strtol(at_sign + 1, &end, 10);
            ok = isdigit((unsigned char)at_sign[1]) && !*end && port > 0 && port <= 65535 &&
                 util_parse_ip(text, &addr) == 0;
        } else {
            ok = util_parse_hostport(text, 53, &addr) == 0 && util_addr_port(&addr) > 0;
        }
        free(text);
        if (!ok) {
            error_at(ld, items[i].where,
                     "%s: \"%s\" is not a DNS server address (e.g. 127.0.0.1, 127.0.0.1:5353 or "
                     "[::1]:53)",
                     items[i].label, s);
            continue;
        }
        cfg->dns_servers[cfg->n_dns_servers++] = xstrdup(s);
    }
    free(items);
}

static void load_delivery(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {"mx_port",         "retry",           "max_lifetime",
                                       "connect_timeout", "command_timeout", NULL};
    struct at v[5];
    struct config *cfg = ld->cfg;
    if (take_mapping(ld, at, keys, v) < 0) return;
    if (v[0].node) get_port(ld, &v[0], &cfg->mx_port);
    if (v[1].node) {
        struct at *items;
        size_t n;
        if (take_list(ld, &v[1], &items, &n) == 0) {
            if (n == 0) error_at(ld, v[1].where, "%s: needs at least one interval", v[1].label);
            int64_t *retry = xcalloc(n, sizeof *retry);
            size_t good = 0;
            for (size_t i = 0; i < n; i++)
                if (get_duration(ld, &items[i], &retry[good]) == 0) good++;
            free(cfg->retry);
            cfg->retry = retry;
            cfg->n_retry = good;
            free(items);
        }
    }
    if (v[2].node) get_duration(ld, &v[2], &cfg->max_lifetime);
    if (v[3].node) get_duration(ld, &v[3], &cfg->connect_timeout);
    if (v[4].node) get_duration(ld, &v[4], &cfg->command_timeout);
}

static void load_limits(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {
        "max_message_size", "max_recipients",       "max_line_length", "command_timeout",
        "data_timeout",     "max_received_headers", "max_connections", NULL};
    struct at v[7];
    struct config *cfg = ld->cfg;
    if (take_mapping(ld, at, keys, v) < 0) return;
    if (v[0].node) get_size(ld, &v[0], &cfg->max_message_size);
    if (v[1].node) get_int(ld, &v[1], 1, 1000000, &cfg->max_recipients);
    if (v[2].node) /* RFC 5321 4.5.3.1.6: at least 1000 octets including CRLF */
        get_int(ld, &v[2], 1000, 1048576, &cfg->max_line_length);
    if (v[3].node) get_duration(ld, &v[3], &cfg->command_timeout_in);
    if (v[4].node) get_duration(ld, &v[4], &cfg->data_timeout);
    if (v[5].node) get_int(ld, &v[5], 1, 10000, &cfg->max_received_headers);
    if (v[6].node) get_int(ld, &v[6], 1, 1000000, &cfg->max_connections_in);
}

static void load_tls(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {"cert", "key", NULL};
    struct at v[2];
    if (take_mapping(ld, at, keys, v) < 0) return;
    if (v[0].node) get_readable_file(ld, &v[0], &ld->cfg->tls_cert);
    if (v[1].node) get_readable_file(ld, &v[1], &ld->cfg->tls_key);
    if (!v[0].node != !v[1].node)
        error_at(ld, at->where, "tls: cert and key must be given together (%s is missing)",
                 v[0].node ? "key" : "cert");
    /* Listeners check this, not whether the files were readable (already reported). */
    ld->tls_given = v[0].node && v[1].node;
}

/* auth.users_file: "name:crypt-hash" lines; '#' starts a comment line. The names are kept
 * for the origins check; the ingress reads the hashes itself. */
static void read_users_file(struct loader *ld, const struct at *at, const char *path)
{
    FILE *f = fopen(path, "re");
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t len;
    if (!f) {
        error_at(ld, at->where, "%s: cannot read %s: %s", at->label, path, strerror(errno));
        return;
    }
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        const char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p || *p == '#') continue;
        const char *colon = strchr(p, ':');
        const char *problem = NULL;
        if (!colon)
            problem = "expected \"name:crypt-hash\", found no ':'";
        else if (colon == p)
            problem = "the user name before ':' is empty";
        else if (!colon[1])
            problem = "the password hash after ':' is empty";
        for (const char *q = p; !problem && q < colon; q++)
            if (isspace((unsigned char)*q)) problem = "the user name contains white space";
        struct strbuf sb = STRBUF_INIT;
        char *name = problem ? NULL : xstrndup(p, (size_t)(colon - p));
        for (size_t i = 0; name && i < ld->n_users; i++)
            if (!strcmp(ld->users[i], name)) problem = "this user is listed twice";
        if (problem) {
            strbuf_printf(&sb, "%s:%zu:1: %s", path, lineno, problem);
            add_text(ld, at->where, strbuf_detach(&sb, NULL));
            free(name);
            continue;
        }
        ld->users = xrealloc(ld->users, (ld->n_users + 1) * sizeof *ld->users);
        ld->users[ld->n_users++] = name;
    }
    free(line);
    fclose(f);
    ld->users_loaded = 1;
}

static void load_auth(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {"users_file", NULL};
    struct at v[1];
    if (take_mapping(ld, at, keys, v) < 0 || !v[0].node) return;
    ld->users_file_given = 1;
    if (get_readable_file(ld, &v[0], &ld->cfg->users_file) == 0)
        read_users_file(ld, &v[0], ld->cfg->users_file);
}

static void load_listen(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {"address", "tls", NULL};
    struct config *cfg = ld->cfg;
    struct at *items;
    size_t n;
    if (take_list(ld, at, &items, &n) < 0) return;
    for (size_t i = 0; i < cfg->n_listen; i++)
        free(cfg->listen[i].address_text);
    free(cfg->listen);
    cfg->listen = xcalloc(n, sizeof *cfg->listen);
    cfg->n_listen = 0;
    if (n == 0) error_at(ld, at->where, "listen: no listener is defined, so no mail could come in");
    for (size_t i = 0; i < n; i++) {
        struct at v[2];
        struct listen_conf *l = &cfg->listen[cfg->n_listen];
        if (take_mapping(ld, &items[i], keys, v) < 0) continue;
        l->tls = TLS_OPTIONAL;
        if (!v[0].node) {
            error_at(ld, items[i].where, "%s: address is missing (e.g. address: 127.0.0.1:2525)",
                     items[i].label);
        } else if (get_string(ld, &v[0], &l->address_text) == 0) {
            if (util_parse_hostport(l->address_text, -1, &l->addr) < 0 ||
                util_addr_port(&l->addr) == 0)
                error_at(ld, v[0].where,
                         "%s: \"%s\" is not an address:port (e.g. 127.0.0.1:2525 or "
                         "[::1]:2525)",
                         v[0].label, l->address_text);
        }
        if (v[1].node) {
            int mode = get_choice(ld, &v[1], "a listener TLS mode", tls_listen_modes);
            if (mode >= 0) l->tls = (enum tls_mode)mode;
            if ((mode == TLS_REQUIRED || mode == TLS_IMPLICIT) && !ld->tls_given)
                error_at(ld, v[1].where,
                         "%s: \"%s\" needs a server certificate, but tls.cert and tls.key are "
                         "not both set",
                         v[1].label, tls_listen_modes[mode]);
        }
        cfg->n_listen++;
    }
    free(items);
}

static int list_has_items(struct fy_node *n)
{
    return n && fy_node_is_sequence(n) && fy_node_sequence_item_count(n) > 0;
}

static void free_origin(struct origin_conf *o)
{
    free(o->name);
    free(o->networks);
    for (size_t i = 0; i < o->n_users; i++)
        free(o->users[i]);
    free(o->users);
}

static void load_origins(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {"networks", "users", "dkim_upstream", NULL};
    static const char *const upstream_modes[] = {"keep", "strip", NULL};
    struct config *cfg = ld->cfg;
    struct at *items;
    size_t n;
    if (take_named(ld, at, "origin", &items, &n) < 0) return;
    for (size_t i = 0; i < cfg->n_origins; i++)
        free_origin(&cfg->origins[i]);
    free(cfg->origins);
    cfg->origins = xcalloc(n, sizeof *cfg->origins);
    cfg->n_origins = 0;
    if (n == 0) error_at(ld, at->where, "origins: no origin is defined, so no client could relay");
    for (size_t i = 0; i < n; i++) {
        struct origin_conf *o = &cfg->origins[cfg->n_origins++];
        struct at v[3];
        o->name = xstrdup(items[i].name);
        if (take_mapping(ld, &items[i], keys, v) < 0) continue;
        if (v[2].node) {
            int m = get_choice(ld, &v[2], "an upstream DKIM mode", upstream_modes);
            if (m >= 0) o->strip_upstream_dkim = m == 1;
        }
        if (v[0].node) get_prefix_list(ld, &v[0], &o->networks, &o->n_networks);
        if (v[1].node && get_string_list(ld, &v[1], &o->users, &o->n_users) == 0) {
            if (o->n_users && !ld->users_file_given)
                error_at(ld, v[1].where,
                         "%s: AUTH users need auth.users_file (the file with their password "
                         "hashes)",
                         v[1].label);
            struct at *u;
            size_t nu;
            take_list(ld, &v[1], &u, &nu);
            for (size_t j = 0; ld->users_loaded && j < nu; j++) {
                const char *name =
                    fy_node_is_scalar(u[j].node) ? fy_node_get_scalar0(u[j].node) : NULL;
                size_t k = 0;
                while (name && k < ld->n_users && strcmp(ld->users[k], name))
                    k++;
                if (name && *name && k == ld->n_users)
                    error_at(ld, u[j].where, "%s: \"%s\" is not in the users file %s", u[j].label,
                             name, cfg->users_file);
            }
            free(u);
        }
        if (!list_has_items(v[0].node) && !list_has_items(v[1].node))
            error_at(ld, items[i].where,
                     "%s: has neither networks nor users, so no client could match it",
                     items[i].label);
    }
    free(items);
}

static void free_egress(struct egress_conf *e)
{
    free(e->name);
    free(e->sources);
    free(e->helo);
    free(e->host);
    free(e->auth_user);
    free(e->auth_password);
    free(e->spf_ips);
    free(e->tls_ca_file);
}

enum {
    EG_TYPE,
    EG_SOURCE,
    EG_HELO,
    EG_HOST,
    EG_PORT,
    EG_AUTH,
    EG_TLS,
    EG_TLS_CA_FILE,
    EG_TLS_VERIFY,
    EG_SPF_IPS,
    EG_MAX_CONNECTIONS,
    EG_MAX_MESSAGES,
    EG_COUNT
};

static void load_one_egress(struct loader *ld, const struct at *item, struct egress_conf *e)
{
    static const char *const keys[] = {"type",
                                       "source",
                                       "helo",
                                       "host",
                                       "port",
                                       "auth",
                                       "tls",
                                       "tls_ca_file",
                                       "tls_verify",
                                       "spf_ips",
                                       "max_connections",
                                       "max_messages_per_connection",
                                       NULL};
    static const char *const types[] = {"direct", "smarthost", NULL};
    struct at v[EG_COUNT];
    if (take_mapping(ld, item, keys, v) < 0) return;
    int type = -1;
    if (!v[EG_TYPE].node)
        error_at(ld, item->where, "%s: type is missing (direct or smarthost)", item->label);
    else if ((type = get_choice(ld, &v[EG_TYPE], "an egress type", types)) >= 0)
        e->type = (enum egress_type)type;

    if (v[EG_SOURCE].node) {
        struct at *items;
        size_t n;
        if (take_list(ld, &v[EG_SOURCE], &items, &n) == 0) {
            e->sources = xcalloc(n, sizeof *e->sources);
            for (size_t i = 0; i < n; i++) {
                const char *s = scalar_text(ld, &items[i]);
                if (s && util_parse_ip(s, &e->sources[e->n_sources]) == 0)
                    e->n_sources++;
                else if (s)
                    error_at(ld, items[i].where,
                             "%s: \"%s\" is not an IP address of this host (e.g. 192.0.2.10)",
                             items[i].label, s);
            }
            free(items);
        }
    }
    if (v[EG_HELO].node) get_hostname(ld, &v[EG_HELO], &e->helo);
    if (v[EG_HOST].node) get_string(ld, &v[EG_HOST], &e->host);
    if (v[EG_PORT].node) get_port(ld, &v[EG_PORT], &e->port);
    if (v[EG_AUTH].node) {
        static const char *const auth_keys[] = {"user", "password", NULL};
        struct at a[2];
        if (take_mapping(ld, &v[EG_AUTH], auth_keys, a) == 0) {
            if (a[0].node) get_string(ld, &a[0], &e->auth_user);
            if (a[1].node) get_string(ld, &a[1], &e->auth_password);
            if (!a[0].node || !a[1].node)
                error_at(ld, v[EG_AUTH].where, "%s: user and password must both be given",
                         v[EG_AUTH].label);
        }
    }
    if (v[EG_TLS].node) {
        int mode = get_choice(ld, &v[EG_TLS], "an egress TLS mode", tls_egress_modes);
        if (mode >= 0) e->tls = (enum tls_mode)mode;
    }
    if (v[EG_TLS_CA_FILE].node) get_readable_file(ld, &v[EG_TLS_CA_FILE], &e->tls_ca_file);
    if (v[EG_TLS_VERIFY].node && get_bool(ld, &v[EG_TLS_VERIFY], &e->tls_verify) == 0 &&
        !e->tls_verify && v[EG_TLS_CA_FILE].node)
        error_at(ld, v[EG_TLS_VERIFY].where,
                 "%s: false contradicts tls_ca_file (a CA file is only used to verify)",
                 v[EG_TLS_VERIFY].label);
    if (v[EG_SPF_IPS].node) get_prefix_list(ld, &v[EG_SPF_IPS], &e->spf_ips, &e->n_spf_ips);
    if (v[EG_MAX_CONNECTIONS].node)
        get_int(ld, &v[EG_MAX_CONNECTIONS], 1, 100000, &e->max_connections);
    if (v[EG_MAX_MESSAGES].node)
        get_int(ld, &v[EG_MAX_MESSAGES], 1, 1000000, &e->max_messages_per_connection);

    if (type == EGRESS_SMARTHOST && !v[EG_HOST].node)
        error_at(ld, item->where, "%s: host is missing (a smarthost egress needs one)",
                 item->label);
    if (type == EGRESS_DIRECT) {
        static const int smarthost_only[] = {EG_HOST, EG_PORT, EG_AUTH};
        for (size_t i = 0; i < 3; i++) {
            const struct at *s = &v[smarthost_only[i]];
            if (s->node)
                error_at(ld, s->where,
                         "%s: only for smarthost egress (this one is type direct; direct "
                         "delivery uses the MX hosts and delivery.mx_port)",
                         s->label);
        }
    }
}

static void load_egress(struct loader *ld, const struct at *at)
{
    struct config *cfg = ld->cfg;
    struct at *items;
    size_t n;
    if (take_named(ld, at, "egress", &items, &n) < 0) return;
    for (size_t i = 0; i < cfg->n_egress; i++)
        free_egress(&cfg->egress[i]);
    free(cfg->egress);
    cfg->egress = xcalloc(n, sizeof *cfg->egress);
    cfg->n_egress = 0;
    if (n == 0) error_at(ld, at->where, "egress: no egress is defined, so mail could not leave");
    for (size_t i = 0; i < n; i++) {
        struct egress_conf *e = &cfg->egress[cfg->n_egress++];
        char *name = xstrdup(items[i].name);
        egress_init(e, name, EGRESS_DIRECT);
        free(name);
        load_one_egress(ld, &items[i], e);
    }
    free(items);
}

/* A digit run of exactly n characters. */
static int take_digits(const char **p, int n, int *out)
{
    *out = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (!isdigit((unsigned char)**p)) return -1;
        *out = *out * 10 + (**p - '0');
    }
    return 0;
}

/* "2026-12-01T00:00:00Z", "2026-12-01T00:00:00+00:00" or "2026-12-01" (midnight UTC). */
static int parse_utc_time(const char *s, int64_t *out)
{
    struct tm tm = {0}, check;
    int y, mo, d, h = 0, mi = 0, se = 0;
    const char *p = s;
    if (take_digits(&p, 4, &y) || *p++ != '-' || take_digits(&p, 2, &mo) || *p++ != '-' ||
        take_digits(&p, 2, &d))
        return -1;
    if (*p) {
        if (*p != 'T' && *p != 't' && *p != ' ') return -1;
        p++;
        if (take_digits(&p, 2, &h) || *p++ != ':' || take_digits(&p, 2, &mi) || *p++ != ':' ||
            take_digits(&p, 2, &se))
            return -1;
        if (strcmp(p, "Z") && strcmp(p, "z") && strcmp(p, "+00:00") && strcmp(p, "-00:00"))
            return -1;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 59) return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    time_t t = timegm(&tm);
    if (!gmtime_r(&t, &check) || check.tm_mday != d) /* 2026-02-30 rolls over */
        return -1;
    *out = (int64_t)t;
    return 0;
}

/* "5", "12.5" or "12.5%". */
static int parse_percent(const char *s, double *out)
{
    char *end;
    if (!isdigit((unsigned char)*s) || strpbrk(s, "xXeE")) return -1;
    double v = strtod(s, &end);
    if (*end == '%') end++;
    if (*end || !isfinite(v) || v < 0 || v > 100) return -1;
    *out = v;
    return 0;
}

static int egress_defined(const struct config *cfg, const char *name)
{
    return config_find_egress(cfg, name) != NULL;
}

static void egress_names(const struct config *cfg, struct strbuf *list)
{
    for (size_t i = 0; i < cfg->n_egress; i++)
        strbuf_printf(list, "%s%s", i ? ", " : "", cfg->egress[i].name);
    if (!cfg->n_egress) strbuf_puts(list, "none");
}

static void report_undefined_egress(struct loader *ld, const struct at *at, const char *name)
{
    struct strbuf list = STRBUF_INIT;
    egress_names(ld->cfg, &list);
    error_at(ld, at->where, "%s: egress \"%s\" is not defined (defined: %s)", at->label, name,
             strbuf_str(&list));
    strbuf_free(&list);
}

static void load_pins(struct loader *ld, const struct at *at);

static void load_schedule(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {"at", "percent", NULL};
    struct ramp_conf *r = &ld->cfg->ramp;
    struct at *items;
    size_t n;
    if (take_list(ld, at, &items, &n) < 0) return;
    r->schedule = xcalloc(n, sizeof *r->schedule);
    for (size_t i = 0; i < n; i++) {
        struct at v[2];
        struct ramp_step step = {0, 0};
        int ok = 1;
        if (take_mapping(ld, &items[i], keys, v) < 0) continue;
        if (!v[0].node || !v[1].node) {
            error_at(ld, items[i].where,
                     "%s: needs both at and percent (e.g. { at: "
                     "\"2026-12-01T00:00:00Z\", percent: 5 })",
                     items[i].label);
            ok = 0;
        }
        const char *s = v[0].node ? scalar_text(ld, &v[0]) : NULL;
        if (v[0].node && !s) {
            ok = 0;
        } else if (s && parse_utc_time(s, &step.at) < 0) {
            error_at(ld, v[0].where,
                     "%s: \"%s\" is not a UTC date and time (use 2026-12-01T00:00:00Z, "
                     "2026-12-01T00:00:00+00:00 or 2026-12-01)",
                     v[0].label, s);
            ok = 0;
        } else if (s && r->n_schedule && step.at <= r->schedule[r->n_schedule - 1].at) {
            error_at(ld, v[0].where,
                     "%s: %s is not later than the step before it (steps must be in time "
                     "order)",
                     v[0].label, s);
            ok = 0;
        }
        s = v[1].node ? scalar_text(ld, &v[1]) : NULL;
        if (v[1].node && !s)
            ok = 0;
        else if (s && parse_percent(s, &step.percent) < 0) {
            error_at(ld, v[1].where, "%s: \"%s\" is not a percentage from 0 to 100", v[1].label, s);
            ok = 0;
        }
        if (ok) r->schedule[r->n_schedule++] = step;
    }
    free(items);
}

static void load_ramp(struct loader *ld, const struct at *at, const struct at *egress_at)
{
    static const char *const keys[] = {"from",        "to",   "key", "schedule",
                                       "interpolate", "pins", NULL};
    struct ramp_conf *r = &ld->cfg->ramp;
    struct at v[6];
    if (at->node && take_mapping(ld, at, keys, v) < 0) return;
    if (!at->node) memset(v, 0, sizeof v);
    if (v[0].node) {
        if (get_string(ld, &v[0], &r->from) == 0 && !egress_defined(ld->cfg, r->from))
            report_undefined_egress(ld, &v[0], r->from);
    } else if (egress_at->node && ld->cfg->n_egress) {
        /* The file defines its own egresses: the default "legacy" may not exist. */
        const struct at *where = at->node ? at : egress_at;
        struct strbuf names = STRBUF_INIT;
        egress_names(ld->cfg, &names);
        error_at(ld, where->where,
                 "ramp.from is missing: name the egress that carries mail before the "
                 "migration (defined: %s)",
                 strbuf_str(&names));
        strbuf_free(&names);
    }
    if (v[1].node && get_string(ld, &v[1], &r->to) == 0) {
        if (!egress_defined(ld->cfg, r->to))
            report_undefined_egress(ld, &v[1], r->to);
        else if (r->from && !strcmp(r->from, r->to))
            error_at(ld, v[1].where, "%s: \"%s\" is the same egress as ramp.from", v[1].label,
                     r->to);
    }
    if (v[2].node) {
        struct at *items;
        size_t n;
        if (take_list(ld, &v[2], &items, &n) == 0) {
            for (size_t i = 0; i < r->n_key; i++)
                free(r->key[i]);
            free(r->key);
            r->key = xcalloc(n, sizeof *r->key);
            r->n_key = 0;
            if (n == 0)
                error_at(ld, v[2].where, "%s: needs at least one part (e.g. [from_domain])",
                         v[2].label);
            for (size_t i = 0; i < n; i++) {
                int part = get_choice(ld, &items[i], "a routing key part", ramp_key_parts);
                size_t j = 0;
                while (part >= 0 && j < r->n_key && strcmp(r->key[j], ramp_key_parts[part]))
                    j++;
                if (part >= 0 && j < r->n_key)
                    error_at(ld, items[i].where, "%s: \"%s\" is listed twice", items[i].label,
                             ramp_key_parts[part]);
                else if (part >= 0)
                    r->key[r->n_key++] = xstrdup(ramp_key_parts[part]);
            }
            free(items);
        }
    }
    if (v[3].node) {
        load_schedule(ld, &v[3]);
        if (r->n_schedule && !v[1].node)
            error_at(ld, v[3].where, "%s: a schedule needs ramp.to (the egress mail moves to)",
                     v[3].label);
    }
    if (v[4].node) get_bool(ld, &v[4], &r->interpolate);
    if (v[5].node) load_pins(ld, &v[5]);
}

/* ---------------------------------------------------------------- providers, caps, shaping */

/* A policy file named with a relative path is relative to the file that names it (so a
 * configuration and its policies can move together); when it is not there, to the directory
 * outrelay runs in. */
static char *policy_path(const struct loader *ld, const char *written)
{
    const char *slash = strrchr(ld->file, '/');
    if (written[0] == '/' || !slash) return xstrdup(written);
    struct strbuf sb = STRBUF_INIT;
    strbuf_printf(&sb, "%.*s/%s", (int)(slash - ld->file), ld->file, written);
    if (access(strbuf_str(&sb), F_OK) < 0) {
        strbuf_free(&sb);
        return xstrdup(written);
    }
    return strbuf_detach(&sb, NULL);
}

/* Providers may be defined in a policy file read after the one that names them: remember the
 * name and check it once everything is read. */
static void provider_ref(struct loader *ld, const struct at *at, const char *name)
{
    struct loader *root = ld->root ? ld->root : ld;
    struct strbuf sb = STRBUF_INIT;
    if (at->where.line > 0)
        strbuf_printf(&sb, "%s:%d:%d: " LABEL_FMT, ld->file, at->where.line, at->where.col,
                      LABEL_ARGS(at));
    else
        strbuf_printf(&sb, "%s: " LABEL_FMT, ld->file, LABEL_ARGS(at));
    root->provider_refs =
        xrealloc(root->provider_refs, (root->n_provider_refs + 1) * sizeof *root->provider_refs);
    struct provider_ref *r = &root->provider_refs[root->n_provider_refs++];
    r->text_prefix = strbuf_detach(&sb, NULL);
    r->name = xstrdup(name);
    r->sort = root == ld ? at->where : ld->sort_within;
}

static void check_provider_refs(struct loader *ld)
{
    for (size_t i = 0; i < ld->n_provider_refs; i++) {
        struct provider_ref *r = &ld->provider_refs[i];
        if (strcmp(r->name, "other") && !config_find_provider(ld->cfg, r->name)) {
            struct strbuf sb = STRBUF_INIT;
            strbuf_printf(&sb, "%sprovider \"%s\" is not defined (defined: ", r->text_prefix,
                          r->name);
            for (size_t j = 0; j < ld->cfg->n_providers; j++)
                strbuf_printf(&sb, "%s, ", ld->cfg->providers[j].name);
            strbuf_puts(&sb, "other)");
            add_text(ld, r->sort, strbuf_detach(&sb, NULL));
        }
        free(r->text_prefix);
        free(r->name);
    }
    free(ld->provider_refs);
    ld->provider_refs = NULL;
    ld->n_provider_refs = 0;
}

static void free_provider(struct provider_conf *p)
{
    free(p->name);
    for (size_t i = 0; i < p->n_mx_suffixes; i++)
        free(p->mx_suffixes[i]);
    free(p->mx_suffixes);
    free(p->source);
}

/* providers: { NAME: { mx_suffixes: [...], source: "..." } } */
static void load_providers(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {"mx_suffixes", "source", NULL};
    struct config *cfg = ld->cfg;
    struct at *items;
    size_t n;
    if (take_named(ld, at, "provider", &items, &n) < 0) return;
    for (size_t i = 0; i < n; i++) {
        struct at v[2];
        if (!strcmp(items[i].name, "other") || config_find_provider(cfg, items[i].name)) {
            error_at(ld, items[i].where,
                     "%s: is already defined (\"other\" is reserved for destinations no "
                     "provider claims)",
                     items[i].label);
            continue;
        }
        if (take_mapping(ld, &items[i], keys, v) < 0) continue;
        struct provider_conf p = {.name = xstrdup(items[i].name)};
        if (v[0].node) {
            struct at *sfx;
            size_t ns;
            if (take_list(ld, &v[0], &sfx, &ns) == 0) {
                p.mx_suffixes = xcalloc(ns, sizeof *p.mx_suffixes);
                for (size_t j = 0; j < ns; j++) {
                    const char *s = scalar_text(ld, &sfx[j]);
                    if (!s) continue;
                    while (*s == '.')
                        s++;
                    char *copy = xstrdup(s);
                    size_t len = strlen(copy);
                    while (len && copy[len - 1] == '.')
                        copy[--len] = '\0';
                    for (char *c = copy; *c; c++)
                        *c = (char)tolower((unsigned char)*c);
                    if (!valid_hostname(copy)) {
                        error_at(ld, sfx[j].where, "%s: \"%s\" is not a host name suffix",
                                 sfx[j].label, s);
                        free(copy);
                        continue;
                    }
                    p.mx_suffixes[p.n_mx_suffixes++] = copy;
                }
                free(sfx);
            }
        }
        if (!p.n_mx_suffixes)
            error_at(ld, items[i].where,
                     "%s: mx_suffixes is missing or empty (e.g. mx_suffixes: [google.com])",
                     items[i].label);
        if (v[1].node) get_string(ld, &v[1], &p.source);
        cfg->providers = xrealloc(cfg->providers, (cfg->n_providers + 1) * sizeof *cfg->providers);
        cfg->providers[cfg->n_providers++] = p;
    }
    free(items);
}

/* An egress name that must exist already (egresses are only defined in the main file, which
 * is read before any policy file). */
static int check_egress_ref(struct loader *ld, const struct at *at, char **dst)
{
    if (get_string(ld, at, dst) < 0) return -1;
    if (egress_defined(ld->cfg, *dst)) return 0;
    report_undefined_egress(ld, at, *dst);
    return -1;
}

/* caps: [ { egress, provider, per_minute, per_hour, per_day, connections, per_connection } ] */
static void load_caps(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {"egress",  "provider",    "per_minute",     "per_hour",
                                       "per_day", "connections", "per_connection", NULL};
    struct config *cfg = ld->cfg;
    struct at *items;
    size_t n;
    if (take_list(ld, at, &items, &n) < 0) return;
    for (size_t i = 0; i < n; i++) {
        struct at v[7];
        if (take_mapping(ld, &items[i], keys, v) < 0) continue;
        struct cap_conf c = {0};
        int ok = 1, limits = 0;
        if (!v[0].node || !v[1].node) {
            error_at(ld, items[i].where,
                     "%s: needs egress and provider (e.g. { egress: cloud, provider: "
                     "microsoft-consumer, per_hour: 500 })",
                     items[i].label);
            ok = 0;
        }
        if (v[0].node && check_egress_ref(ld, &v[0], &c.egress) < 0) ok = 0;
        if (v[1].node) {
            if (get_string(ld, &v[1], &c.provider) < 0)
                ok = 0;
            else
                provider_ref(ld, &v[1], c.provider);
        }
        int *fields[] = {&c.per_minute, &c.per_hour, &c.per_day, &c.connections, &c.per_connection};
        for (size_t k = 0; k < 5; k++) {
            if (!v[2 + k].node) continue;
            limits++;
            if (get_int(ld, &v[2 + k], 1, 100000000, fields[k]) < 0) ok = 0;
        }
        if (!limits && ok) {
            error_at(ld, items[i].where,
                     "%s: sets no limit (per_minute, per_hour, per_day, connections or "
                     "per_connection)",
                     items[i].label);
            ok = 0;
        }
        for (size_t k = 0; ok && k < cfg->n_caps; k++)
            if (!strcmp(cfg->caps[k].egress, c.egress) &&
                !strcmp(cfg->caps[k].provider, c.provider)) {
                error_at(ld, items[i].where, "%s: egress %s x provider %s already has caps",
                         items[i].label, c.egress, c.provider);
                ok = 0;
            }
        if (!ok) {
            free(c.egress);
            free(c.provider);
            continue;
        }
        cfg->caps = xrealloc(cfg->caps, (cfg->n_caps + 1) * sizeof *cfg->caps);
        cfg->caps[cfg->n_caps++] = c;
    }
    free(items);
}

int config_parse_rate(const char *text, int *count, int64_t *period)
{
    static const struct {
        const char *name;
        int64_t seconds;
    } units[] = {{"s", 1},       {"sec", 1},  {"second", 1},  {"m", 60},    {"min", 60},
                 {"minute", 60}, {"h", 3600}, {"hour", 3600}, {"d", 86400}, {"day", 86400}};
    char *end;
    if (!text || !isdigit((unsigned char)*text)) return -1;
    errno = 0;
    long n = strtol(text, &end, 10);
    if (errno || n < 1 || n > 100000000 || *end != '/' || !end[1]) return -1;
    const char *unit = end + 1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (!strcmp(unit, units[i].name)) {
            *count = (int)n;
            *period = units[i].seconds;
            return 0;
        }
    }
    int64_t d;
    if (util_parse_duration(unit, &d) < 0 || d <= 0) return -1;
    *count = (int)n;
    *period = d;
    return 0;
}

static const char *const shaping_actions[] = {"suspend", "throttle", "reroute", NULL};

const char *config_shaping_action_name(enum shaping_action a)
{
    return shaping_actions[a];
}

static void free_shaping_rule(struct shaping_rule *r)
{
    free(r->name);
    for (size_t i = 0; i < r->n_enhanced; i++)
        free(r->enhanced[i]);
    free(r->enhanced);
    if (r->text) regfree(&r->text_re);
    free(r->text);
    for (size_t i = 0; i < r->n_providers; i++)
        free(r->providers[i]);
    free(r->providers);
    for (size_t i = 0; i < r->n_egress; i++)
        free(r->egress[i]);
    free(r->egress);
    free(r->source);
    free(r->file);
}

/* A single value or a list of them. */
static void get_one_or_list(struct loader *ld, const struct at *at, char ***dst, size_t *n)
{
    if (fy_node_is_sequence(at->node)) {
        get_string_list(ld, at, dst, n);
        return;
    }
    char *one = NULL;
    if (get_string(ld, at, &one) < 0) return;
    *dst = xcalloc(1, sizeof **dst);
    (*dst)[0] = one;
    *n = 1;
}

static int valid_enhanced_code(const char *s)
{
    /* class "." subject "." detail, RFC 3463: 2|4|5 . 1-3 digits . 1-3 digits */
    int cls, a, b, used = 0;
    if (sscanf(s, "%1d.%3d.%3d%n", &cls, &a, &b, &used) != 3 || s[used]) return 0;
    return (cls == 2 || cls == 4 || cls == 5) && a >= 0 && b >= 0;
}

static void load_match(struct loader *ld, const struct at *at, struct shaping_rule *r, int *ok)
{
    static const char *const keys[] = {"code", "enhanced", "text", NULL};
    struct at v[3];
    if (take_mapping(ld, at, keys, v) < 0) {
        *ok = 0;
        return;
    }
    if (v[0].node && get_int(ld, &v[0], 200, 599, &r->code) < 0) *ok = 0;
    if (v[1].node) {
        get_one_or_list(ld, &v[1], &r->enhanced, &r->n_enhanced);
        for (size_t i = 0; i < r->n_enhanced; i++)
            if (!valid_enhanced_code(r->enhanced[i])) {
                error_at(ld, v[1].where,
                         "%s: \"%s\" is not an enhanced status code (e.g. 4.7.650, RFC 3463)",
                         v[1].label, r->enhanced[i]);
                *ok = 0;
            }
    }
    if (v[2].node && get_string(ld, &v[2], &r->text) == 0) {
        int rc = regcomp(&r->text_re, r->text, REG_EXTENDED | REG_ICASE | REG_NOSUB);
        if (rc != 0) {
            char msg[200];
            regerror(rc, &r->text_re, msg, sizeof msg);
            error_at(ld, v[2].where, "%s: \"%s\" is not a POSIX extended regular expression: %s",
                     v[2].label, r->text, msg);
            free(r->text);
            r->text = NULL;
            *ok = 0;
        }
    }
    if (!v[0].node && !v[1].node && !v[2].node) {
        error_at(ld, at->where, "%s: matches every reply; give code, enhanced or text", at->label);
        *ok = 0;
    }
}

enum {
    SH_NAME,
    SH_MATCH,
    SH_PROVIDERS,
    SH_EGRESS,
    SH_THRESHOLD,
    SH_ACTION,
    SH_RATE,
    SH_CONNECTIONS,
    SH_DURATION,
    SH_RECOVER,
    SH_SOURCE,
    SH_COUNT
};

static void load_one_rule(struct loader *ld, const struct at *item, struct shaping_rule *r, int *ok)
{
    static const char *const keys[] = {"name",      "match",   "providers", "egress",
                                       "threshold", "action",  "rate",      "connections",
                                       "duration",  "recover", "source",    NULL};
    struct config *cfg = ld->cfg;
    struct at v[SH_COUNT];
    if (take_mapping(ld, item, keys, v) < 0) {
        *ok = 0;
        return;
    }
    static const char *const required[] = {"name",   "match", NULL, NULL,      NULL,
                                           "action", NULL,    NULL, "duration"};
    for (size_t k = 0; k < sizeof required / sizeof required[0]; k++)
        if (required[k] && !v[k].node) {
            error_at(ld, item->where, "%s: %s is missing", item->label, required[k]);
            *ok = 0;
        }
    if (v[SH_NAME].node && get_string(ld, &v[SH_NAME], &r->name) == 0) {
        for (size_t k = 0; k < cfg->n_shaping; k++)
            if (!strcmp(cfg->shaping[k].name, r->name)) {
                error_at(ld, v[SH_NAME].where, "%s: a rule named \"%s\" is already at %s:%d",
                         v[SH_NAME].label, r->name, cfg->shaping[k].file, cfg->shaping[k].line);
                *ok = 0;
            }
    } else {
        *ok = 0;
    }
    if (v[SH_MATCH].node) load_match(ld, &v[SH_MATCH], r, ok);
    if (v[SH_PROVIDERS].node) {
        struct at *p;
        size_t np;
        get_string_list(ld, &v[SH_PROVIDERS], &r->providers, &r->n_providers);
        if (take_list(ld, &v[SH_PROVIDERS], &p, &np) == 0) {
            for (size_t k = 0; k < np; k++)
                if (fy_node_is_scalar(p[k].node) && !is_null(p[k].node))
                    provider_ref(ld, &p[k], fy_node_get_scalar0(p[k].node));
            free(p);
        }
    }
    if (v[SH_EGRESS].node) {
        struct at *e;
        size_t ne;
        get_string_list(ld, &v[SH_EGRESS], &r->egress, &r->n_egress);
        if (take_list(ld, &v[SH_EGRESS], &e, &ne) == 0) {
            for (size_t k = 0; k < ne; k++) {
                const char *name = fy_node_is_scalar(e[k].node) && !is_null(e[k].node)
                                       ? fy_node_get_scalar0(e[k].node)
                                       : NULL;
                if (name && !egress_defined(cfg, name)) {
                    report_undefined_egress(ld, &e[k], name);
                    *ok = 0;
                }
            }
            free(e);
        }
    }
    r->hits = 1;
    r->window = 3600;
    if (v[SH_THRESHOLD].node) {
        static const char *const tkeys[] = {"hits", "window", NULL};
        struct at t[2];
        if (take_mapping(ld, &v[SH_THRESHOLD], tkeys, t) == 0) {
            if (t[0].node && get_int(ld, &t[0], 1, 10000, &r->hits) < 0) *ok = 0;
            if (t[1].node && get_duration(ld, &t[1], &r->window) < 0) *ok = 0;
        }
    }
    int action =
        v[SH_ACTION].node ? get_choice(ld, &v[SH_ACTION], "a shaping action", shaping_actions) : -1;
    if (action >= 0)
        r->action = (enum shaping_action)action;
    else
        *ok = 0;
    if (v[SH_RATE].node) {
        const char *s = scalar_text(ld, &v[SH_RATE]);
        if (s && config_parse_rate(s, &r->rate_count, &r->rate_period) < 0) {
            error_at(ld, v[SH_RATE].where,
                     "%s: \"%s\" is not a rate (messages per period, e.g. 1/min, 10/h, "
                     "500/day)",
                     v[SH_RATE].label, s);
            *ok = 0;
        } else if (!s) {
            *ok = 0;
        }
    }
    if (v[SH_CONNECTIONS].node && get_int(ld, &v[SH_CONNECTIONS], 1, 100000, &r->connections) < 0)
        *ok = 0;
    if (action == SHAPING_THROTTLE && !v[SH_RATE].node && !v[SH_CONNECTIONS].node) {
        error_at(ld, v[SH_ACTION].where,
                 "%s: throttle needs rate and/or connections (e.g. rate: 1/min, connections: 1)",
                 v[SH_ACTION].label);
        *ok = 0;
    }
    if (v[SH_DURATION].node && get_duration(ld, &v[SH_DURATION], &r->duration) < 0) *ok = 0;
    if (v[SH_RECOVER].node) {
        static const char *const rkeys[] = {"quiet", "step", NULL};
        struct at rc[2];
        if (take_mapping(ld, &v[SH_RECOVER], rkeys, rc) == 0) {
            if (!rc[0].node || !rc[1].node) {
                error_at(ld, v[SH_RECOVER].where,
                         "%s: needs quiet and step (e.g. { quiet: 30m, step: 2 })",
                         v[SH_RECOVER].label);
                *ok = 0;
            }
            if (rc[0].node && get_duration(ld, &rc[0], &r->recover_quiet) < 0) *ok = 0;
            const char *s = rc[1].node ? scalar_text(ld, &rc[1]) : NULL;
            char *end = NULL;
            double step = s ? strtod(s, &end) : 0;
            if (s && (!isdigit((unsigned char)*s) || *end || !isfinite(step) || step <= 1.0 ||
                      step > 100.0)) {
                error_at(ld, rc[1].where,
                         "%s: \"%s\" is not a step (a number above 1 and at most 100 that "
                         "multiplies the rate)",
                         rc[1].label, s);
                *ok = 0;
            } else if (s) {
                r->recover_step = step;
            } else if (rc[1].node) {
                *ok = 0;
            }
        }
    }
    if (v[SH_SOURCE].node && get_string(ld, &v[SH_SOURCE], &r->source) < 0) *ok = 0;
}

/* shaping: [ { name, match: {code, enhanced, text}, providers, egress, threshold: {hits,
 * window}, action, rate, connections, duration, recover: {quiet, step}, source } ] */
static void load_shaping(struct loader *ld, const struct at *at)
{
    struct config *cfg = ld->cfg;
    struct at *items;
    size_t n;
    if (take_list(ld, at, &items, &n) < 0) return;
    for (size_t i = 0; i < n; i++) {
        struct shaping_rule r = {0};
        int ok = 1;
        load_one_rule(ld, &items[i], &r, &ok);
        if (!ok) {
            free_shaping_rule(&r);
            continue;
        }
        r.file = xstrdup(ld->file);
        r.line = items[i].where.line;
        cfg->shaping = xrealloc(cfg->shaping, (cfg->n_shaping + 1) * sizeof *cfg->shaping);
        cfg->shaping[cfg->n_shaping++] = r;
    }
    free(items);
}

static void free_pins(struct ramp_pin *pins, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(pins[i].name);
        free(pins[i].egress);
    }
    free(pins);
}

/* One kind of pin: { NAME: EGRESS } or { NAME: { egress: EGRESS, until: TIME } }. */
static void load_pin_kind(struct loader *ld, const struct at *at, int kind, struct ramp_pin **pins,
                          size_t *n_pins)
{
    static const char *const keys[] = {"egress", "until", NULL};
    if (is_null(at->node)) return;
    if (!fy_node_is_mapping(at->node)) {
        error_at(ld, at->where, "%s: expected \"name: egress\" lines, found %s", at->label,
                 kind_name(at->node));
        return;
    }
    void *it = NULL;
    struct fy_node_pair *pair;
    while ((pair = fy_node_mapping_iterate(at->node, &it))) {
        struct fy_node *key = fy_node_pair_key(pair);
        struct pos kpos = node_pos(ld, key, at->where);
        const char *name = key && fy_node_is_scalar(key) ? fy_node_get_scalar0(key) : NULL;
        struct at val = {.node = fy_node_pair_value(pair), .where = kpos};
        val.where = node_pos(ld, val.node, kpos);
        label_set(&val, "%s.%s", at->label, name ? name : "?");
        if (!name || !*name) {
            error_at(ld, kpos, "%s: a pin needs a name", at->label);
            continue;
        }
        struct ramp_pin pin = {0};
        int ok = 1;
        if (kind == 0 && !config_find_origin(ld->cfg, name)) {
            error_at(ld, kpos, "%s: origin \"%s\" is not defined", at->label, name);
            ok = 0;
        } else if (kind == 1 && !valid_hostname(name)) {
            error_at(ld, kpos, "%s: \"%s\" is not a domain name", at->label, name);
            ok = 0;
        } else if (kind == 2) {
            struct at ref = {.where = kpos};
            label_set(&ref, "%s", at->label);
            provider_ref(ld, &ref, name);
        }
        if (fy_node_is_mapping(val.node)) {
            struct at v[2];
            if (take_mapping(ld, &val, keys, v) < 0) {
                ok = 0;
            } else {
                if (!v[0].node) {
                    error_at(ld, val.where, "%s: egress is missing", val.label);
                    ok = 0;
                } else if (check_egress_ref(ld, &v[0], &pin.egress) < 0) {
                    ok = 0;
                }
                const char *s = v[1].node ? scalar_text(ld, &v[1]) : NULL;
                if (v[1].node && (!s || parse_utc_time(s, &pin.until) < 0)) {
                    if (s)
                        error_at(ld, v[1].where,
                                 "%s: \"%s\" is not a UTC date and time (use "
                                 "2026-12-01T00:00:00Z or 2026-12-01)",
                                 v[1].label, s);
                    ok = 0;
                }
            }
        } else if (check_egress_ref(ld, &val, &pin.egress) < 0) {
            ok = 0;
        }
        for (size_t i = 0; ok && i < *n_pins; i++)
            if (!strcasecmp((*pins)[i].name, name)) {
                error_at(ld, kpos, "%s: \"%s\" is pinned twice", at->label, name);
                ok = 0;
            }
        if (!ok) {
            free(pin.egress);
            continue;
        }
        pin.name = xstrdup(name);
        if (kind == 1)
            for (char *c = pin.name; *c; c++)
                *c = (char)tolower((unsigned char)*c);
        *pins = xrealloc(*pins, (*n_pins + 1) * sizeof **pins);
        (*pins)[(*n_pins)++] = pin;
    }
}

/* ramp.pins: { origins: {...}, domains: {...}, providers: {...} } */
static void load_pins(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {"origins", "domains", "providers", NULL};
    struct ramp_conf *r = &ld->cfg->ramp;
    struct at v[3];
    if (take_mapping(ld, at, keys, v) < 0) return;
    if (v[0].node) load_pin_kind(ld, &v[0], 0, &r->pin_origins, &r->n_pin_origins);
    if (v[1].node) load_pin_kind(ld, &v[1], 1, &r->pin_domains, &r->n_pin_domains);
    if (v[2].node) load_pin_kind(ld, &v[2], 2, &r->pin_providers, &r->n_pin_providers);
}

static const char *const alignment_actions[] = {"send", "reroute", "hold", "bounce", NULL};

static void load_dkim(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {"headers", "oversign", NULL};
    struct config *cfg = ld->cfg;
    struct at v[2];
    if (take_mapping(ld, at, keys, v) < 0) return;
    if (v[0].node) {
        for (size_t i = 0; i < cfg->n_dkim_headers; i++)
            free(cfg->dkim_headers[i]);
        free(cfg->dkim_headers);
        cfg->dkim_headers = NULL;
        cfg->n_dkim_headers = 0;
        if (get_string_list(ld, &v[0], &cfg->dkim_headers, &cfg->n_dkim_headers) == 0) {
            int has_from = 0;
            for (size_t i = 0; i < cfg->n_dkim_headers; i++)
                has_from |= !strcasecmp(cfg->dkim_headers[i], "from");
            if (!has_from)
                error_at(ld, v[0].where, "%s: must include \"from\" (RFC 6376 5.4)", v[0].label);
        }
    }
    if (v[1].node) {
        for (size_t i = 0; i < cfg->n_dkim_oversign; i++)
            free(cfg->dkim_oversign[i]);
        free(cfg->dkim_oversign);
        cfg->dkim_oversign = NULL;
        cfg->n_dkim_oversign = 0;
        get_string_list(ld, &v[1], &cfg->dkim_oversign, &cfg->n_dkim_oversign);
    }
}

/* alignment: { default: ACTION, domains: { DOMAIN: ACTION } } */
static void load_alignment(struct loader *ld, const struct at *at)
{
    static const char *const keys[] = {"default", "domains", NULL};
    struct config *cfg = ld->cfg;
    struct at v[2];
    if (take_mapping(ld, at, keys, v) < 0) return;
    if (v[0].node) {
        int a = get_choice(ld, &v[0], "an alignment action", alignment_actions);
        if (a >= 0) cfg->alignment_default = (enum alignment_action)a;
    }
    if (!v[1].node || is_null(v[1].node)) return;
    if (!fy_node_is_mapping(v[1].node)) {
        error_at(ld, v[1].where, "%s: expected \"domain: action\" lines, found %s", v[1].label,
                 kind_name(v[1].node));
        return;
    }
    void *it = NULL;
    struct fy_node_pair *pair;
    while ((pair = fy_node_mapping_iterate(v[1].node, &it))) {
        struct fy_node *key = fy_node_pair_key(pair);
        struct pos kpos = node_pos(ld, key, v[1].where);
        const char *domain = key && fy_node_is_scalar(key) ? fy_node_get_scalar0(key) : NULL;
        if (!domain || !valid_hostname(domain)) {
            error_at(ld, kpos, "%s: \"%s\" is not a domain name", v[1].label, domain ? domain : "");
            continue;
        }
        struct at val = {.node = fy_node_pair_value(pair), .where = kpos};
        val.where = node_pos(ld, val.node, kpos);
        label_set(&val, "%s.%s", v[1].label, domain);
        int a = get_choice(ld, &val, "an alignment action", alignment_actions);
        if (a < 0) continue;
        for (size_t i = 0; i < cfg->n_alignment_rules; i++)
            if (!strcasecmp(cfg->alignment_rules[i].domain, domain))
                error_at(ld, kpos, "%s: %s already has a rule at %s:%d", v[1].label, domain,
                         cfg->alignment_rules[i].file, cfg->alignment_rules[i].line);
        cfg->alignment_rules = xrealloc(cfg->alignment_rules, (cfg->n_alignment_rules + 1) *
                                                                  sizeof *cfg->alignment_rules);
        struct alignment_rule *r = &cfg->alignment_rules[cfg->n_alignment_rules++];
        r->domain = xstrdup(domain);
        for (char *p = r->domain; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        r->action = (enum alignment_action)a;
        r->file = xstrdup(ld->file);
        r->line = kpos.line;
    }
}

static struct fy_document *parse_file(struct loader *ld, struct fy_diag **diagp);

/* A policy file holds sections that may also be written in the main file (alignment now; ramp
 * and shaping policies later). Its errors carry its own name and positions. */
static void load_policy_file(struct loader *parent, const struct at *at, const char *written)
{
    static const char *const keys[] = {"alignment", "providers", "caps", "shaping", "ramp", NULL};
    struct fy_diag *diag = NULL;
    char *path = policy_path(parent, written);
    struct loader ld = {.file = path, .cfg = parent->cfg, .root = parent->root};
    ld.sort_within = at->where;
    if (access(path, R_OK) < 0) {
        error_at(parent, at->where, "%s: cannot read policy file %s: %s", at->label, written,
                 strerror(errno));
        free(path);
        return;
    }
    struct fy_document *doc = parse_file(&ld, &diag);
    if (doc) {
        index_marks(&ld, doc);
        struct fy_node *root = fy_document_root(doc);
        struct at top = {.node = root, .where = {1, 1}};
        struct at v[5];
        if (!is_null(root) && take_mapping(&ld, &top, keys, v) == 0) {
            if (v[0].node) load_alignment(&ld, &v[0]);
            if (v[1].node) load_providers(&ld, &v[1]);
            if (v[2].node) load_caps(&ld, &v[2]);
            if (v[3].node) load_shaping(&ld, &v[3]);
            if (v[4].node) {
                static const char *const ramp_keys[] = {"pins", NULL};
                struct at r[1];
                if (take_mapping(&ld, &v[4], ramp_keys, r) == 0 && r[0].node) load_pins(&ld, &r[0]);
            }
        }
        fy_document_destroy(doc);
    }
    if (diag) fy_diag_destroy(diag);
    free(ld.marks);
    for (size_t i = 0; i < ld.n_errors; i++) /* keep the policy file's own positions */
        add_text(parent, (struct pos){at->where.line, at->where.col}, ld.errors[i].text);
    free(ld.errors);
    free(path);
}

static void load_policies(struct loader *ld, const struct at *at)
{
    struct config *cfg = ld->cfg;
    if (get_string_list(ld, at, &cfg->policy_files, &cfg->n_policy_files) < 0) return;
    struct at *items;
    size_t n;
    if (take_list(ld, at, &items, &n) < 0) return;
    for (size_t i = 0; i < cfg->n_policy_files && i < n; i++)
        load_policy_file(ld, &items[i], cfg->policy_files[i]);
    free(items);
}

/* ---------------------------------------------------------------- the whole file */

enum {
    K_HOSTNAME,
    K_USER,
    K_SPOOL,
    K_STATE,
    K_KEYS,
    K_CONTROL_SOCKET,
    K_LOG,
    K_DNS,
    K_DELIVERY,
    K_LISTEN,
    K_TLS,
    K_LIMITS,
    K_AUTH,
    K_ORIGINS,
    K_EGRESS,
    K_RAMP,
    K_POLICIES,
    K_DKIM,
    K_ALIGNMENT,
    K_PROVIDERS,
    K_CAPS,
    K_SHAPING,
    K_METRICS,
    K_DEDUP,
    K_COUNT
};

static void load_root(struct loader *ld, struct fy_node *root)
{
    static const char *const keys[] = {
        "hostname", "user",   "spool",     "state",     "keys", "control_socket", "log",    "dns",
        "delivery", "listen", "tls",       "limits",    "auth", "origins",        "egress", "ramp",
        "policies", "dkim",   "alignment", "providers", "caps", "shaping",        "metrics",
        "dedup",    NULL};
    struct config *cfg = ld->cfg;
    struct at top = {.node = root, .where = {1, 1}};
    struct at v[K_COUNT];

    top.where = node_pos(ld, root, top.where);
    if (!is_null(root) && !fy_node_is_mapping(root)) {
        error_at(ld, top.where,
                 "the configuration must be a mapping of settings (\"name: value\" lines), "
                 "found %s",
                 kind_name(root));
        return;
    }
    take_mapping(ld, &top, keys, v);
    /* Order matters: tls before listen, auth before origins, egress before ramp. */
    if (v[K_HOSTNAME].node) get_hostname(ld, &v[K_HOSTNAME], &cfg->hostname);
    if (v[K_USER].node && get_string(ld, &v[K_USER], &cfg->user) == 0 && !getpwnam(cfg->user))
        error_at(ld, v[K_USER].where, "user: \"%s\" is not an account on this system", cfg->user);
    if (v[K_SPOOL].node) get_string(ld, &v[K_SPOOL], &cfg->spool);
    if (v[K_STATE].node) get_string(ld, &v[K_STATE], &cfg->state);
    if (v[K_KEYS].node) get_string(ld, &v[K_KEYS], &cfg->keys);
    if (v[K_CONTROL_SOCKET].node) get_string(ld, &v[K_CONTROL_SOCKET], &cfg->control_socket);
    if (v[K_LOG].node) load_log(ld, &v[K_LOG]);
    if (v[K_DNS].node) load_dns(ld, &v[K_DNS]);
    if (v[K_DELIVERY].node) load_delivery(ld, &v[K_DELIVERY]);
    if (v[K_TLS].node) load_tls(ld, &v[K_TLS]);
    if (v[K_LISTEN].node) load_listen(ld, &v[K_LISTEN]);
    if (v[K_LIMITS].node) load_limits(ld, &v[K_LIMITS]);
    if (v[K_AUTH].node) load_auth(ld, &v[K_AUTH]);
    if (v[K_ORIGINS].node) load_origins(ld, &v[K_ORIGINS]);
    if (v[K_EGRESS].node) load_egress(ld, &v[K_EGRESS]);
    if (v[K_RAMP].node || v[K_EGRESS].node) load_ramp(ld, &v[K_RAMP], &v[K_EGRESS]);
    if (v[K_DKIM].node) load_dkim(ld, &v[K_DKIM]);
    if (v[K_ALIGNMENT].node) load_alignment(ld, &v[K_ALIGNMENT]);
    if (v[K_PROVIDERS].node) load_providers(ld, &v[K_PROVIDERS]);
    if (v[K_CAPS].node) load_caps(ld, &v[K_CAPS]);
    if (v[K_SHAPING].node) load_shaping(ld, &v[K_SHAPING]);
    if (v[K_METRICS].node) load_metrics(ld, &v[K_METRICS]);
    if (v[K_DEDUP].node) load_dedup(ld, &v[K_DEDUP]);
    if (v[K_POLICIES].node) load_policies(ld, &v[K_POLICIES]);
    check_provider_refs(ld);
}

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
                error_at(ld, p,
                         "a second YAML document starts here; outrelay reads one document, so "
                         "remove this \"---\" line or what follows it");
            }
            fy_parser_event_free(parser, e);
            if (documents == 2) break;
        }
    }
    fy_parser_destroy(parser);
}

static struct fy_document *parse_file(struct loader *ld, struct fy_diag **diagp)
{
    struct fy_diag_cfg dcfg;
    fy_diag_cfg_default(&dcfg);
    dcfg.fp = NULL; /* nothing reaches stderr: errors are collected */
    dcfg.output_fn = no_output;
    dcfg.colorize = false;
    struct fy_diag *diag = fy_diag_create(&dcfg);
    if (!diag) {
        error_at(ld, (struct pos){0, 0}, "cannot set up the YAML parser");
        return NULL;
    }
    fy_diag_set_collect_errors(diag, true);
    struct fy_parse_cfg pcfg = {.flags = FYPCF_QUIET | FYPCF_COLLECT_DIAG | FYPCF_RESOLVE_DOCUMENT,
                                .diag = diag};
    struct fy_document *doc = fy_document_build_from_file(&pcfg, ld->file);
    void *it = NULL;
    struct fy_diag_error *e;
    while ((e = fy_diag_errors_iterate(diag, &it))) {
        if (e->type < FYET_ERROR) continue;
        /* Collected errors are already 1-based. */
        error_at(ld, (struct pos){e->line > 0 ? e->line : 1, e->column > 0 ? e->column : 1}, "%s",
                 syntax_message(e->msg ? e->msg : "YAML syntax error"));
    }
    if (doc && ld->n_errors) {
        fy_document_destroy(doc);
        doc = NULL;
    }
    if (doc) report_second_document(ld, &pcfg);
    *diagp = diag;
    return doc;
}

static int compare_errors(const void *a, const void *b)
{
    const struct pending_error *x = a, *y = b;
    if (x->sort.line != y->sort.line) return x->sort.line < y->sort.line ? -1 : 1;
    if (x->sort.col != y->sort.col) return x->sort.col < y->sort.col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

struct config *config_load(const char *path, struct config_errors *errs)
{
    struct loader ld = {.file = path};
    struct fy_diag *diag = NULL;
    struct stat st;
    ld.root = &ld;

    errs->items = NULL;
    errs->n = 0;
    ld.cfg = defaults_build();
    free(ld.cfg->file);
    ld.cfg->file = xstrdup(path);

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0 || S_ISDIR(st.st_mode)) {
        error_at(&ld, (struct pos){0, 0}, "cannot read the configuration: %s",
                 fd < 0 ? strerror(errno) : "it is a directory");
    } else {
        struct fy_document *doc = parse_file(&ld, &diag);
        /* An empty file (or one with only comments) has no document: all defaults. */
        if (doc) {
            index_marks(&ld, doc);
            load_root(&ld, fy_document_root(doc));
            fy_document_destroy(doc);
        }
    }
    if (fd >= 0) close(fd);
    if (diag) fy_diag_destroy(diag);
    for (size_t i = 0; i < ld.n_users; i++)
        free(ld.users[i]);
    free(ld.users);
    free(ld.marks);

    if (ld.n_errors == 0) {
        finalize(ld.cfg);
        return ld.cfg;
    }
    qsort(ld.errors, ld.n_errors, sizeof *ld.errors, compare_errors);
    errs->items = xcalloc(ld.n_errors, sizeof *errs->items);
    for (size_t i = 0; i < ld.n_errors; i++)
        errs->items[i] = ld.errors[i].text;
    errs->n = ld.n_errors;
    free(ld.errors);
    config_free(ld.cfg);
    return NULL;
}

/* ---------------------------------------------------------------- lookup and freeing */

enum alignment_action config_alignment_action(const struct config *cfg, const char *from_domain)
{
    const struct alignment_rule *best = NULL;
    size_t flen = from_domain ? strlen(from_domain) : 0;
    for (size_t i = 0; i < cfg->n_alignment_rules; i++) {
        const struct alignment_rule *r = &cfg->alignment_rules[i];
        size_t rlen = strlen(r->domain);
        int match = flen == rlen  ? !strcasecmp(from_domain, r->domain)
                    : flen > rlen ? from_domain[flen - rlen - 1] == '.' &&
                                        !strcasecmp(from_domain + flen - rlen, r->domain)
                                  : 0;
        if (match && (!best || rlen > strlen(best->domain))) best = r;
    }
    return best ? best->action : cfg->alignment_default;
}

const char *config_alignment_action_name(enum alignment_action a)
{
    return alignment_actions[a];
}

const struct egress_conf *config_find_egress(const struct config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_egress; i++)
        if (cfg->egress[i].name && !strcmp(cfg->egress[i].name, name)) return &cfg->egress[i];
    return NULL;
}

const struct origin_conf *config_find_origin(const struct config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_origins; i++)
        if (cfg->origins[i].name && !strcmp(cfg->origins[i].name, name)) return &cfg->origins[i];
    return NULL;
}

const struct provider_conf *config_find_provider(const struct config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_providers; i++)
        if (!strcmp(cfg->providers[i].name, name)) return &cfg->providers[i];
    return NULL;
}

void config_free(struct config *cfg)
{
    if (!cfg) return;
    free(cfg->file);
    free(cfg->hostname);
    free(cfg->user);
    free(cfg->spool);
    free(cfg->state);
    free(cfg->keys);
    free(cfg->control_socket);
    for (size_t i = 0; i < cfg->n_dns_servers; i++)
        free(cfg->dns_servers[i]);
    free(cfg->dns_servers);
    free(cfg->retry);
    for (size_t i = 0; i < cfg->n_listen; i++)
        free(cfg->listen[i].address_text);
    free(cfg->listen);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->users_file);
    for (size_t i = 0; i < cfg->n_origins; i++)
        free_origin(&cfg->origins[i]);
    free(cfg->origins);
    for (size_t i = 0; i < cfg->n_egress; i++)
        free_egress(&cfg->egress[i]);
    free(cfg->egress);
    free(cfg->ramp.from);
    free(cfg->ramp.to);
    for (size_t i = 0; i < cfg->ramp.n_key; i++)
        free(cfg->ramp.key[i]);
    free(cfg->ramp.key);
    free(cfg->ramp.schedule);
    free_pins(cfg->ramp.pin_origins, cfg->ramp.n_pin_origins);
    free_pins(cfg->ramp.pin_domains, cfg->ramp.n_pin_domains);
    free_pins(cfg->ramp.pin_providers, cfg->ramp.n_pin_providers);
    for (size_t i = 0; i < cfg->n_providers; i++)
        free_provider(&cfg->providers[i]);
    free(cfg->providers);
    for (size_t i = 0; i < cfg->n_caps; i++) {
        free(cfg->caps[i].egress);
        free(cfg->caps[i].provider);
    }
    free(cfg->caps);
    for (size_t i = 0; i < cfg->n_shaping; i++)
        free_shaping_rule(&cfg->shaping[i]);
    free(cfg->shaping);
    for (size_t i = 0; i < cfg->n_dkim_headers; i++)
        free(cfg->dkim_headers[i]);
    free(cfg->dkim_headers);
    for (size_t i = 0; i < cfg->n_dkim_oversign; i++)
        free(cfg->dkim_oversign[i]);
    free(cfg->dkim_oversign);
    for (size_t i = 0; i < cfg->n_alignment_rules; i++) {
        free(cfg->alignment_rules[i].domain);
        free(cfg->alignment_rules[i].file);
    }
    free(cfg->alignment_rules);
    for (size_t i = 0; i < cfg->n_policy_files; i++)
        free(cfg->policy_files[i]);
    free(cfg->policy_files);
    free(cfg->metrics_listen);
    free(cfg);
}

void config_errors_free(struct config_errors *errs)
{
    if (!errs) return;
    for (size_t i = 0; i < errs->n; i++)
        free(errs->items[i]);
    free(errs->items);
    errs->items = NULL;
    errs->n = 0;
}
