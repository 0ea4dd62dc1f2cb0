/* settings.c - the registry of settings tables, their defaults, and the two documents made
 * from them: the example configuration's sections and the man page's settings paragraphs
 * (`outrelay settings --example | --man`). Reading a table from a file is config_loader.c's
 * job (cfg_take_settings). Never exits; prints only in settings_print_* and the command.
 * Called by config.c (defaults), main.c (the command) and the unit tests; any thread. */
#include "config/settings.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"
#include "common/util.h"

/* The order of the example file and of the man page. */
static const struct settings_table *const all_tables[] = {
    &config_general_settings,   &config_log_settings,       &config_dns_settings,
    &qmgr_delivery_settings,    &ingress_listen_settings,   &ingress_tls_settings,
    &ingress_limits_settings,   &ingress_auth_settings,     &ingress_origin_settings,
    &smtpc_egress_settings,     &smtpc_tls_policy_settings, &sts_settings,
    &route_ramp_settings,       &route_cap_settings,        &sign_dkim_settings,
    &check_alignment_settings,  &qmgr_dedup_settings,       &route_provider_settings,
    &ingress_platform_settings, &route_shaping_settings,    &config_metrics_settings,
    &config_records_settings,   &tlsrpt_settings,
    &cluster_settings,
};

const struct settings_table *const *settings_tables(size_t *n)
{
    *n = sizeof all_tables / sizeof all_tables[0];
    return all_tables;
}

const struct settings_table *settings_find(const char *section)
{
    for (size_t i = 0; i < sizeof all_tables / sizeof all_tables[0]; i++)
        if (!strcmp(all_tables[i]->section, section)) return all_tables[i];
    return NULL;
}

const struct setting *settings_find_item(const struct settings_table *t, const char *name)
{
    for (size_t i = 0; t && i < t->n_items; i++)
        if (!strcmp(t->items[i].name, name)) return &t->items[i];
    return NULL;
}

/* ---------------------------------------------------------------- values from text */

/* "[a, b, c]" (or "a") into its trimmed items; returns how many. */
static size_t split_list(const char *text, char ***items)
{
    char *copy = xstrdup(text), *p = copy, *end;
    size_t n = 0;
    *items = NULL;
    while (*p == ' ' || *p == '[')
        p++;
    end = p + strlen(p);
    while (end > p && (end[-1] == ' ' || end[-1] == ']'))
        *--end = '\0';
    for (char *save = NULL, *tok = strtok_r(p, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        size_t len = strlen(tok);
        while (len > 0 && tok[len - 1] == ' ')
            tok[--len] = '\0';
        *items = xrealloc(*items, (n + 1) * sizeof **items);
        (*items)[n++] = xstrdup(tok);
    }
    free(copy);
    return n;
}

static void free_items(char **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

int settings_parse_text(const struct setting *s, const char *text, void *base)
{
    if (s->type == SETTING_CUSTOM) return s->parse ? s->parse(text, base) : -1;
    /* only now: a custom item's offset is SETTING_NO_OFFSET, which points nowhere */
    char *field = (char *)base + s->offset, *end;
    char **items;
    size_t n;
    long v;
    switch (s->type) {
    case SETTING_INT:
    case SETTING_PORT:
        errno = 0;
        v = strtol(text, &end, 10);
        if (errno || *end || end == text) return -1;
        if (s->type == SETTING_PORT ? v < 1 || v > 65535 : v < s->min || v > s->max) return -1;
        *(int *)field = (int)v;
        return 0;
    case SETTING_BOOL:
        if (strcmp(text, "true") && strcmp(text, "false")) return -1;
        *(int *)field = !strcmp(text, "true");
        return 0;
    case SETTING_ENUM:
        for (int i = 0; s->choices[i]; i++) {
            if (!strcmp(text, s->choices[i])) {
                *(int *)field = i;
                return 0;
            }
        }
        return -1;
    case SETTING_DURATION:
    case SETTING_SIZE: {
        int64_t x;
        int r =
            s->type == SETTING_DURATION ? util_parse_duration(text, &x) : util_parse_size(text, &x);
        if (r < 0 || x < 0 || (x == 0 && !s->zero_off)) return -1;
        *(int64_t *)field = x;
        return 0;
    }
    case SETTING_STRING:
    case SETTING_HOSTNAME:
    case SETTING_FILE:
        free(*(char **)field);
        *(char **)field = xstrdup(text);
        return 0;
    case SETTING_STRING_LIST:
        n = split_list(text, &items);
        free_items(*(char ***)field, *(size_t *)((char *)base + s->count_offset));
        *(char ***)field = items;
        *(size_t *)((char *)base + s->count_offset) = n;
        return 0;
    case SETTING_DURATION_LIST: {
        n = split_list(text, &items);
        int64_t *values = xcalloc(n ? n : 1, sizeof *values);
        int ok = n > 0;
        for (size_t i = 0; ok && i < n; i++)
            ok = util_parse_duration(items[i], &values[i]) == 0 && values[i] > 0;
        free_items(items, n);
        if (!ok) {
            free(values);
            return -1;
        }
        free(*(int64_t **)field);
        *(int64_t **)field = values;
        *(size_t *)((char *)base + s->count_offset) = n;
        return 0;
    }
    case SETTING_CUSTOM:
        break; /* above */
    }
    return -1;
}

void settings_apply_defaults(const struct settings_table *t, void *base)
{
    for (size_t i = 0; i < t->n_items; i++)
        if (t->items[i].def && (t->items[i].type != SETTING_CUSTOM || t->items[i].parse))
            settings_parse_text(&t->items[i], t->items[i].def, base);
}

/* ---------------------------------------------------------------- documents */

/* Words of text, each line starting with prefix and at most width columns long. */
static void print_wrapped(FILE *out, const char *prefix, const char *text, size_t width)
{
    const char *p = text;
    while (*p) {
        size_t room = width > strlen(prefix) ? width - strlen(prefix) : 20, len = strlen(p);
        if (len > room) {
            len = room;
            while (len > 0 && p[len] != ' ')
                len--;
            if (len == 0) len = strcspn(p, " ");
        }
        fprintf(out, "%s%.*s\n", prefix, (int)len, p);
        p += len;
        while (*p == ' ')
            p++;
    }
}

#define EXAMPLE_WIDTH 96
#define COMMENT_COLUMN 30

/* One "key: value" line with its help: after the value when it fits, else above it. */
static void example_item(FILE *out, const struct setting *s, int nested, int off)
{
    const char *value = s->def ? s->def : s->example;
    if (!value) return;
    struct strbuf line = STRBUF_INIT;
    if (off) /* the whole section is commented out */
        strbuf_printf(&line, "#  %s: %s", s->name, value);
    else
        strbuf_printf(&line, "%s%s%s: %s", nested ? "  " : "", s->def ? "" : "#", s->name, value);
    const char *help = s->help ? s->help : "";
    size_t len = line.len;
    size_t column = len < COMMENT_COLUMN ? COMMENT_COLUMN : len + 1;
    if (*help && column + 2 + strlen(help) > EXAMPLE_WIDTH) {
        print_wrapped(out, nested ? "  # " : "# ", help, EXAMPLE_WIDTH);
        help = "";
    }
    if (*help)
        fprintf(out, "%s%*s# %s\n", strbuf_str(&line), (int)(column - len), "", help);
    else
        fprintf(out, "%s\n", strbuf_str(&line));
    strbuf_free(&line);
}

static void example_table(FILE *out, const struct settings_table *t)
{
    int nested = t->section[0] != '\0', any_default = 0;
    for (size_t i = 0; i < t->n_items; i++)
        any_default |= t->items[i].def != NULL;
    if (t->help) print_wrapped(out, "# ", t->help, EXAMPLE_WIDTH);
    if (nested) fprintf(out, "%s%s:\n", any_default ? "" : "#", t->section);
    for (size_t i = 0; i < t->n_items; i++)
        example_item(out, &t->items[i], nested, nested && !any_default);
}

void settings_print_example(FILE *out)
{
    for (size_t i = 0; i < sizeof all_tables / sizeof all_tables[0]; i++) {
        if (all_tables[i]->entries) continue; /* list entries: the example file shows one */
        if (i) fputc('\n', out);
        example_table(out, all_tables[i]);
    }
}

/* Text for troff: '-' as \-, '"' as \(dq, '\' as \e. */
static void man_escape(struct strbuf *sb, const char *text)
{
    for (const char *p = text; *p; p++) {
        if (*p == '-')
            strbuf_puts(sb, "\\-");
        else if (*p == '"')
            strbuf_puts(sb, "\\(dq");
        else if (*p == '\\')
            strbuf_puts(sb, "\\e");
        else
            strbuf_append(sb, p, 1);
    }
}

static const char *type_word(const struct setting *s)
{
    static const char *const words[] = {
        [SETTING_INT] = "number",
        [SETTING_PORT] = "port",
        [SETTING_BOOL] = "boolean",
        [SETTING_ENUM] = NULL,
        [SETTING_DURATION] = "duration",
        [SETTING_SIZE] = "size",
        [SETTING_STRING] = "text",
        [SETTING_HOSTNAME] = "host name",
        [SETTING_FILE] = "readable file",
        [SETTING_STRING_LIST] = "list of names",
        [SETTING_DURATION_LIST] = "list of durations",
        [SETTING_CUSTOM] = "value",
    };
    return s->kind ? s->kind : words[s->type];
}

static void man_item(FILE *out, const struct setting *s)
{
    struct strbuf sb = STRBUF_INIT, kind = STRBUF_INIT;
    if (s->type == SETTING_ENUM && !s->kind)
        for (int i = 0; s->choices[i]; i++)
            strbuf_printf(&kind, "%s%s", i ? " | " : "", s->choices[i]);
    else
        strbuf_puts(&kind, type_word(s));
    const char *def = s->default_text ? s->default_text : s->def;
    strbuf_printf(&sb, "%s%s%s", strbuf_str(&kind), def ? "; default: " : "", def ? def : "");
    struct strbuf escaped = STRBUF_INIT;
    man_escape(&escaped, strbuf_str(&sb));
    fprintf(out, ".TP\n.BR %s \" (%s)\"\n", s->name, strbuf_str(&escaped));
    if (s->help) {
        strbuf_free(&escaped);
        struct strbuf sentence = STRBUF_INIT; /* the example's short notes as a sentence */
        strbuf_puts(&sentence, s->help);
        if (sentence.data[0] >= 'a' && sentence.data[0] <= 'z') sentence.data[0] -= 'a' - 'A';
        if (sentence.len && sentence.data[sentence.len - 1] != '.') strbuf_puts(&sentence, ".");
        man_escape(&escaped, strbuf_str(&sentence));
        strbuf_free(&sentence);
        print_wrapped(out, "", strbuf_str(&escaped), EXAMPLE_WIDTH);
    }
    strbuf_free(&escaped);
    strbuf_free(&kind);
    strbuf_free(&sb);
}

static void man_table(FILE *out, const struct settings_table *t)
{
    int nested = t->section[0] != '\0';
    fprintf(out, ".\\\" settings table \"%s\": written by outrelay settings \\-\\-man\n",
            t->section);
    if (nested) fprintf(out, ".TP\n.B %s\n", t->section);
    if (nested && t->help) {
        struct strbuf escaped = STRBUF_INIT;
        man_escape(&escaped, t->help);
        print_wrapped(out, "", strbuf_str(&escaped), EXAMPLE_WIDTH);
        strbuf_free(&escaped);
    }
    if (nested) fputs(".RS\n", out);
    for (size_t i = 0; i < t->n_items; i++)
        man_item(out, &t->items[i]);
    if (nested) fputs(".RE\n", out);
}

void settings_print_man(FILE *out)
{
    for (size_t i = 0; i < sizeof all_tables / sizeof all_tables[0]; i++)
        man_table(out, all_tables[i]);
}

int settings_command(int argc, char **argv)
{
    static const char usage[] =
        "usage: outrelay settings --example | --man\n"
        "Prints every setting outrelay reads, from the tables the loader uses: --example as\n"
        "the sections of contrib/outrelay.example.yaml, --man as the settings paragraphs of\n"
        "outrelay.yaml(5).\n";
    if (argc == 2 && !strcmp(argv[1], "--example")) {
        settings_print_example(stdout);
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "--man")) {
        settings_print_man(stdout);
        return 0;
    }
    int help = argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
    fputs(usage, help ? stdout : stderr);
    return help ? 0 : 2;
}
