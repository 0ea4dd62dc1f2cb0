/* settings.h - the settings tables: each module declares its settings (name, type, default,
 * bounds, help, example) in a <module>_settings.c next to its code; config_load() reads every
 * scalar setting of a table through it, and `outrelay settings` prints the example file and the
 * man page's settings from the same tables, so each default is written once, in its table.
 * Tables are constant data; any thread may read them. Never reads files or exits. */
#ifndef OUTRELAY_SETTINGS_H
#define OUTRELAY_SETTINGS_H

#include <stddef.h>
#include <stdio.h>

enum setting_type {
    SETTING_INT,           /* int, min..max */
    SETTING_PORT,          /* int, 1..65535 */
    SETTING_BOOL,          /* int, 0 / 1 */
    SETTING_ENUM,          /* int: the index of the value in choices */
    SETTING_DURATION,      /* int64_t seconds */
    SETTING_SIZE,          /* int64_t bytes */
    SETTING_STRING,        /* char *, any text */
    SETTING_HOSTNAME,      /* char *, a host name */
    SETTING_FILE,          /* char *, a file readable when the configuration is loaded */
    SETTING_STRING_LIST,   /* char **, count at count_offset */
    SETTING_DURATION_LIST, /* int64_t *, count at count_offset */
    SETTING_CUSTOM,        /* read by the section's own code; the table only documents it */
};

#define SETTING_NO_OFFSET ((size_t)-1)

struct setting {
    const char *name;
    enum setting_type type;
    size_t offset;       /* into the section's struct; SETTING_NO_OFFSET for SETTING_CUSTOM */
    size_t count_offset; /* lists: the size_t count beside the array */
    const char *def;     /* the default, written as in the file; NULL: none or derived */
    long min, max;       /* SETTING_INT */
    int zero_off;        /* SETTING_DURATION: 0 is accepted and turns the feature off */
    const char *const *choices; /* SETTING_ENUM, NULL-terminated */
    const char *what;           /* SETTING_ENUM, for messages: "a log level" */
    const char *kind;           /* the man page's word for the value when the type's own
                                 * word says too little ("bytes including CRLF"); optional */
    const char *default_text;   /* the man page's default when def is NULL or derived */
    const char *help;           /* plain text: the man page paragraph and the example comment */
    const char *example;        /* shown commented out in the example file; NULL: def */
    /* SETTING_CUSTOM scalars: text to value(s) in base, 0 / -1; on -1 the loader says the
     * text "is not <what>". NULL: the section's code reads the value itself. */
    int (*parse)(const char *text, void *base);
};

/* One section: a mapping ("limits:") or, with section "", the top-level keys; list and named
 * sections (listen, egress) have a table for the fields of one entry. */
struct settings_table {
    const char *section;
    const char *help; /* what the section is for */
    const struct setting *items;
    size_t n_items;
    int entries; /* 1: the table describes one entry of a list or a named mapping */
};

#define SETTINGS_COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* The tables, each defined next to the code that uses its values. */
extern const struct settings_table config_general_settings; /* config/config_settings.c */
extern const struct settings_table ingress_limits_settings; /* ingress/ingress_settings.c */
extern const struct settings_table ingress_tls_settings;
extern const struct settings_table ingress_listen_settings;
extern const struct settings_table ingress_auth_settings;
extern const struct settings_table ingress_origin_settings;
extern const struct settings_table ingress_platform_settings;
extern const struct settings_table qmgr_delivery_settings; /* qmgr/qmgr_settings.c */
extern const struct settings_table qmgr_dedup_settings;
extern const struct settings_table smtpc_egress_settings;     /* smtpc/smtpc_settings.c */
extern const struct settings_table smtpc_tls_policy_settings; /* smtpc/tls_policy_settings.c */
extern const struct settings_table sts_settings;              /* sts/sts_settings.c */
extern const struct settings_table route_ramp_settings;       /* route/route_settings.c */
/* ramp.groups' fields; read by the loader, described in the ramp table's groups */
extern const struct settings_table route_ramp_group_settings;
extern const struct settings_table route_ramp_autopilot_settings;
extern const struct settings_table route_ramp_gate_settings;
extern const struct settings_table route_cap_settings;
extern const struct settings_table route_provider_settings;
extern const struct settings_table route_shaping_settings;
/* shaping.threshold's fields; read by the loader, described in the shaping table */
extern const struct settings_table route_shaping_threshold_settings;
extern const struct settings_table sign_dkim_settings;       /* sign/sign_settings.c */
extern const struct settings_table check_alignment_settings; /* check/check_settings.c */
extern const struct settings_table config_log_settings;
extern const struct settings_table config_dns_settings;
extern const struct settings_table config_records_settings;
extern const struct settings_table config_metrics_settings;
extern const struct settings_table tlsrpt_settings; /* tlsrpt/tlsrpt_settings.c */
extern const struct settings_table cluster_settings; /* cluster/cluster_settings.c */

/* Every table, in the order of the example file; *n gets the count. */
const struct settings_table *const *settings_tables(size_t *n);
const struct settings_table *settings_find(const char *section);
const struct setting *settings_find_item(const struct settings_table *t, const char *name);

/* Sets every setting of t that has a default into base (the section's struct). Defaults are
 * checked by the unit tests, so a bad one here is a programming error and is skipped. */
void settings_apply_defaults(const struct settings_table *t, void *base);
/* Parses text as setting s would be (defaults, tests). Returns 0 / -1. */
int settings_parse_text(const struct setting *s, const char *text, void *base);

/* The example configuration's block and the man page's block of each table, in order. */
void settings_print_example(FILE *out);
void settings_print_man(FILE *out);
/* `outrelay settings --example | --man`: returns the exit status. */
int settings_command(int argc, char **argv);

#endif
