/* config_loader.h - INTERNAL to outrelay/config/: only config*.c include it; everyone else uses
 * config.h. Shares the loader between config.c (entry point and core sections), config_auth.c
 * and config_route.c: struct loader (one per file read), struct at (a node, where it is and
 * its name in messages), error collection, the typed getters and mapping/list helpers of
 * config_loader.c, and the section readers the files call across. */
#ifndef OUTRELAY_CONFIG_LOADER_H
#define OUTRELAY_CONFIG_LOADER_H

#include <libfyaml.h>

#include "config/config.h"
#include "config/settings.h"

/* ---------------------------------------------------------------- errors and positions */

struct pos {
    int line, col; /* 1-based; line 0 = unknown */
};

/* A node and where it starts in the file; see cfg_index_marks(). */
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
 * cfg_check_provider_refs()). */
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
    struct node_mark *marks; /* see cfg_index_marks() */
    size_t n_marks;
};

/* One node being looked at: the value, where to point at it, and its name for messages. */
struct at {
    struct fy_node *node;
    struct pos where;
    char label[256];
    int named;        /* label is 'egress "cloud"': children join with ": " instead of "." */
    const char *name; /* for named entries: "cloud" (owned by the YAML document) */
    int bad;          /* cfg_take_settings(): present, but its value was refused (reported) */
};

/* "listen[0].address: " or "" at the top level. */
#define LABEL_FMT "%s%s"
#define LABEL_ARGS(at) (at)->label, (at)->label[0] ? ": " : ""

/* Errors: collected, never printed; config_load() sorts them by position. */
/* A warning (kept in cfg->warnings, printed by check and serve; not an error). */
void cfg_warn_at(struct loader *ld, struct pos p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void cfg_load_platforms(struct loader *ld, const struct at *at);
/* After everything is loaded: platform names resolved into origin networks, warnings. */
void cfg_check_origins(struct loader *ld);
void cfg_add_text(struct loader *ld, struct pos sort, char *text);
void __attribute__((format(printf, 3, 4)))
cfg_error_at(struct loader *ld, struct pos p, const char *fmt, ...);

/* Reading a file and the positions of its nodes. */
struct fy_document *cfg_parse_file(struct loader *ld, struct fy_diag **diagp);
void cfg_index_marks(struct loader *ld, struct fy_document *doc);
struct pos cfg_node_pos(const struct loader *ld, struct fy_node *n, struct pos fallback);
int cfg_is_null(struct fy_node *n);
const char *cfg_kind_name(struct fy_node *n);
void __attribute__((format(printf, 2, 3))) cfg_label_set(struct at *at, const char *fmt, ...);

/* Scalar values: each reports what is wrong and returns -1 (NULL for cfg_scalar_text). */
const char *cfg_scalar_text(struct loader *ld, const struct at *at);
int cfg_get_string(struct loader *ld, const struct at *at, char **dst);
int cfg_valid_hostname(const char *s);
int cfg_get_hostname(struct loader *ld, const struct at *at, char **dst);
int cfg_get_int(struct loader *ld, const struct at *at, long min, long max, int *dst);
int cfg_get_port(struct loader *ld, const struct at *at, int *dst);
int cfg_get_duration(struct loader *ld, const struct at *at, int64_t *dst);
int cfg_get_size(struct loader *ld, const struct at *at, int64_t *dst);
int cfg_get_bool(struct loader *ld, const struct at *at, int *dst);
int cfg_get_choice(struct loader *ld, const struct at *at, const char *what,
                   const char *const *names);
int cfg_get_readable_file(struct loader *ld, const struct at *at, char **dst);

/* Collections. */
int cfg_take_mapping(struct loader *ld, const struct at *at, const char *const *names,
                     struct at *out);
int cfg_take_list(struct loader *ld, const struct at *at, struct at **items, size_t *n);
/* One key/value pair of a mapping, in file order: cfg_mapping_next() fills p and returns 1, or
 * returns 0 after the last. name is NULL when the key is not a scalar; where is the key's place.
 * *it starts NULL. The pair's nodes belong to the document. */
struct cfg_pair {
    struct fy_node *key, *value;
    const char *name;
    struct pos where;
};
int cfg_mapping_next(struct loader *ld, const struct at *at, void **it, struct cfg_pair *p);
int cfg_take_named(struct loader *ld, const struct at *at, const char *what, struct at **items,
                   size_t *n);
int cfg_get_string_list(struct loader *ld, const struct at *at, char ***dst, size_t *n_dst);
int cfg_get_prefix_list(struct loader *ld, const struct at *at, struct net_prefix **dst,
                        size_t *n_dst);

/* Settings tables. cfg_get_setting() reads one value of s into base (the section's struct)
 * with its type and bounds; SETTING_CUSTOM without a parser is left to the caller. 0 / -1
 * (reported). cfg_take_settings() splits a mapping like cfg_take_mapping() with the names of
 * t's items followed by extra (NULL-terminated; may be NULL), reads every item present (v[i].bad
 * when its value was refused), and leaves v[] (t's items, then extra's) for the section's own
 * checks. */
int cfg_get_setting(struct loader *ld, const struct at *at, const struct setting *s, void *base);
int cfg_take_settings_n(struct loader *ld, const struct at *at, const struct settings_table *t,
                        void *base, const char *const *extra, struct at *v, size_t n_v);
/* v must be an array (not a pointer): its length is passed along, and a table grown past the
 * caller's array is a clear error at load instead of a write past its end. */
#define cfg_take_settings(ld, at, t, base, extra, v)                                               \
    cfg_take_settings_n(                                                                           \
        ld, at, t, base, extra, v,                                                                 \
        sizeof(v) / sizeof((v)[0]) +                                                               \
            0 * sizeof(                                                                            \
                    char[__builtin_types_compatible_p(__typeof__(v), __typeof__(&(v)[0])) ? -1     \
                                                                                          : 1]))

/* config_auth.c: dkim, alignment, policy files. */
void cfg_load_dkim(struct loader *ld, const struct at *at);
void cfg_load_alignment(struct loader *ld, const struct at *at);
void cfg_load_policies(struct loader *ld, const struct at *at);

/* config_route.c: ramp, providers, caps, shaping, pins; their parts for config_free(). */
void cfg_load_ramp(struct loader *ld, const struct at *at, const struct at *egress_at);
void cfg_load_pins(struct loader *ld, const struct at *at);
void cfg_load_providers(struct loader *ld, const struct at *at);
void cfg_load_caps(struct loader *ld, const struct at *at);
void cfg_load_shaping(struct loader *ld, const struct at *at);
void cfg_check_provider_refs(struct loader *ld);
void cfg_free_provider(struct provider_conf *p);
void cfg_free_shaping_rule(struct shaping_rule *r);
void cfg_free_pins(struct ramp_pin *pins, size_t n);
void cfg_free_route_group(struct route_group *g);

#endif
