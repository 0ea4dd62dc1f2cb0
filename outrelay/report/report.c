/* report.c - `outrelay report COMMAND [options]`: parses the options and the time window, opens
 * the records (report_core.c), runs one report builder (alignment.c, ramp.c, delivery.c,
 * continuity.c, export.c, html.c, rua) and prints it in the chosen format. Calls the builders;
 * nothing calls back into it. Called by main.c. */
#include "report/report.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/strbuf.h"
#include "common/clock.h"
#include "common/util.h"
#include "config/config.h"
#include "report/report_core.h"
#include "report/rua.h"

static const char report_usage[] =
    "usage: outrelay report COMMAND [options] [-c FILE]\n"
    "Reads the relay's records (<state>/records.db, read-only; fine while the relay runs).\n"
    "Commands:\n"
    "  alignment    per From domain x egress x day: messages, SPF pass/fail/temperror, DKIM\n"
    "               signed/aligned, DMARC predicted pass/fail, actions, top failure reasons\n"
    "  ramp         planned vs actual cloud share per hour and provider, caps hit, shaping\n"
    "               replies (per the configured shaping rules) and operator overrides\n"
    "  delivery     delivered/deferred/bounced/expired per egress x provider, delays p50/p95,\n"
    "               top remote replies\n"
    "  continuity   accepted messages without a final state that are not in the queue (should\n"
    "               be 0); with --message-id or a window, every event of each message\n"
    "  export --format pmta   PowerMTA-style accounting CSV (d, b, t records)\n"
    "  html -o FILE one self-contained HTML page: charts and every table above\n"
    "  tls          per policy domain and policy type (tlsa, sts, no-policy-found): TLS\n"
    "               sessions that succeeded and failed, failures by RFC 8460 result type,\n"
    "               receiving MX and IP and sending IP (--domain: the policy domain)\n"
    "  tlsrpt --domain D --day DAY   the RFC 8460 TLS-RPT aggregate report (JSON) of domain D\n"
    "  import-rua FILE...     store DMARC aggregate reports (XML, .gz, .zip) from receivers\n"
    "  rua          per domain x source IP: what receivers reported next to what outrelay\n"
    "               predicted for that egress address, mismatches marked (--mismatches: only\n"
    "               those); the text alignment report ends with it when reports exist\n"
    "Options:\n"
    "  --since T, --until T   window: 2026-03-01, \"2026-03-01 14:00\", 2026-03-01T14:00:00Z\n"
    "                         (UTC), or relative to now: 90m, 12h, 7d, 2w\n"
    "  --day YYYY-MM-DD       the UTC day: --since DAY --until the next day\n"
    "  --domain D             mail from domain D (From: domain where the records have it,\n"
    "                         else the envelope sender's domain)\n"
    "  --egress E             one egress only\n"
    "  --message-id ID        continuity: the trail of this message (with or without <>)\n"
    "  --csv | --json         CSV (RFC 4180, the main table or --table NAME) or JSON\n"
    "  --table NAME           only this table\n"
    "  -o FILE                write to FILE instead of standard output\n"
    "  --records FILE|DIR     read these records instead of <state>/records.db; again to\n"
    "                         merge several instances' records into one report. A DIR: its\n"
    "                         */records.db, */state/records.db and *.db. Each row carries its\n"
    "                         instance: the name in the file's cluster records, else the\n"
    "                         state directory's (its parent's when called state), else the\n"
    "                         file's name without .db\n"
    "Times are UTC. The provider of a recipient is the one the route stage recorded for it\n"
    "(the provider of its routed record), so reports agree with the routing decisions and\n"
    "caps. Records of an older outrelay are upgraded in place first.\n";

static int report_parse_time(const char *text, int64_t now, int64_t *out_us)
{
    int y, mo, d, h = 0, mi = 0, s = 0, n = 0;
    if (strcmp(text, "now") == 0) {
        *out_us = now * 1000000;
        return 0;
    }
    if (text[0] == '@') {
        char *end;
        long long v = strtoll(text + 1, &end, 10);
        if (*end || end == text + 1) return -1;
        *out_us = (int64_t)v * 1000000;
        return 0;
    }
    if (sscanf(text, "%4d-%2d-%2d%n", &y, &mo, &d, &n) == 3) {
        const char *rest = text + n;
        if (*rest == 'T' || *rest == ' ') {
            int m = 0;
            if (sscanf(rest + 1, "%2d:%2d%n", &h, &mi, &m) != 2) return -1;
            rest += 1 + m;
            if (*rest == ':') {
                if (sscanf(rest + 1, "%2d%n", &s, &m) != 1) return -1;
                rest += 1 + m;
            }
        }
        if (*rest == 'Z') rest++;
        if (*rest || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) return -1;
        struct tm tm = {.tm_year = y - 1900,
                        .tm_mon = mo - 1,
                        .tm_mday = d,
                        .tm_hour = h,
                        .tm_min = mi,
                        .tm_sec = s};
        *out_us = (int64_t)timegm(&tm) * 1000000;
        return 0;
    }
    int64_t secs;
    /* a bare number would be seconds: too easy to mistake for a year, so a unit is required */
    if (!isalpha((unsigned char)text[strlen(text) ? strlen(text) - 1 : 0]) ||
        util_parse_duration(text, &secs) < 0)
        return -1;
    *out_us = (now - secs) * 1000000;
    return 0;
}

/* ---- the command --------------------------------------------------------------------------- */

static int report_render(struct report_ctx *ctx, struct report_doc *doc, FILE *out)
{
    switch (ctx->opt.format) {
    case REPORT_CSV:
        return report_render_csv(doc, &ctx->opt, out, ctx->err, sizeof ctx->err);
    case REPORT_JSON:
        report_render_json(doc, &ctx->opt, out);
        return 0;
    case REPORT_TEXT:
        report_render_text(doc, &ctx->opt, out);
        return 0;
    }
    return 0;
}

/* Receivers' aggregate reports next to our predictions (report/rua.c). */
static int report_rua(struct report_ctx *ctx, FILE *out, int heading)
{
    struct rua_filter f = {.domain = ctx->opt.domain,
                           .egress = ctx->opt.egress,
                           .since = ctx->opt.since_us / 1000000,
                           .until = ctx->opt.until_us / 1000000,
                           .mismatches_only = ctx->opt.mismatches_only};
    struct strbuf text = STRBUF_INIT;
    int fmt = ctx->opt.format == REPORT_CSV    ? RUA_FORMAT_CSV
              : ctx->opt.format == REPORT_JSON ? RUA_FORMAT_JSON
                                               : RUA_FORMAT_TABLE;
    int rc = rua_compare(ctx->cfg->state, &f, &text, fmt, ctx->err, sizeof ctx->err);
    if (rc == 0 && text.len) {
        if (heading)
            fputs("\nDMARC aggregate reports from receivers vs outrelay's predictions\n", out);
        fwrite(text.data, 1, text.len, out);
    }
    strbuf_free(&text);
    return rc;
}

static int report_dispatch(struct report_ctx *ctx, const char *cmd, FILE *out)
{
    if (strcmp(cmd, "rua") == 0) return report_rua(ctx, out, 0);
    if (strcmp(cmd, "export") == 0) return report_export_pmta(ctx, out);
    if (strcmp(cmd, "html") == 0) return report_html_write(ctx, out);
    if (strcmp(cmd, "tlsrpt") == 0) return report_tlsrpt_write(ctx, out);
    struct report_doc doc = {.report = cmd};
    int rc;
    if (strcmp(cmd, "alignment") == 0)
        rc = report_alignment_build(ctx, &doc);
    else if (strcmp(cmd, "ramp") == 0)
        rc = report_ramp_build(ctx, &doc);
    else if (strcmp(cmd, "delivery") == 0)
        rc = report_delivery_build(ctx, &doc);
    else if (strcmp(cmd, "tls") == 0)
        rc = report_tls_build(ctx, &doc);
    else
        rc = report_continuity_build(ctx, &doc,
                                     ctx->opt.message_id != NULL || ctx->opt.window_given);
    if (rc == 0) report_sources_table(ctx, &doc);
    if (rc == 0) rc = report_render(ctx, &doc, out);
    report_doc_free(&doc);
    if (rc == 0 && strcmp(cmd, "alignment") == 0 && ctx->opt.format == REPORT_TEXT && ctx->has_rua)
        rc = report_rua(ctx, out, 1);
    return rc;
}

/* `report import-rua FILE...`: not a report over the records but an import into them. */
static int report_import_rua(const struct config *cfg, int argc, char **argv)
{
    if (argc < 1) {
        fputs("usage: outrelay report import-rua FILE... [-c FILE]\n", stderr);
        return 2;
    }
    struct strbuf out = STRBUF_INIT;
    char err[512] = "";
    int rc = rua_import(cfg->state, (const char *const *)argv, (size_t)argc, &out, err, sizeof err);
    fputs(strbuf_str(&out), stdout);
    if (rc != 0) fprintf(stderr, "outrelay report import-rua: %s\n", err);
    strbuf_free(&out);
    return rc == 0 ? 0 : 1;
}

static int report_is_command(const char *cmd)
{
    static const char *const commands[] = {"alignment", "ramp", "delivery", "continuity", "export",
                                           "html",      "rua",  "tls",      "tlsrpt"};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(cmd, commands[i]) == 0) return 1;
    return 0;
}

int report_run(const struct config *cfg, int argc, char **argv)
{
    enum {
        OPT_SINCE = 256,
        OPT_UNTIL,
        OPT_DOMAIN,
        OPT_EGRESS,
        OPT_CSV,
        OPT_JSON,
        OPT_MSGID,
        OPT_FORMAT,
        OPT_TABLE,
        OPT_MISMATCHES,
        OPT_DAY,
        OPT_RECORDS
    };
    static const struct option opts[] = {{"since", required_argument, NULL, OPT_SINCE},
                                         {"until", required_argument, NULL, OPT_UNTIL},
                                         {"domain", required_argument, NULL, OPT_DOMAIN},
                                         {"egress", required_argument, NULL, OPT_EGRESS},
                                         {"csv", no_argument, NULL, OPT_CSV},
                                         {"json", no_argument, NULL, OPT_JSON},
                                         {"message-id", required_argument, NULL, OPT_MSGID},
                                         {"format", required_argument, NULL, OPT_FORMAT},
                                         {"table", required_argument, NULL, OPT_TABLE},
                                         {"mismatches", no_argument, NULL, OPT_MISMATCHES},
                                         {"day", required_argument, NULL, OPT_DAY},
                                         {"records", required_argument, NULL, OPT_RECORDS},
                                         {"output", required_argument, NULL, 'o'},
                                         {"config", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0, 0, 0, 0}};
    struct report_ctx ctx = {.cfg = cfg};
    int64_t now = clock_now();
    char *domain = NULL;
    int ch, bad = 0, help = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "o:c:h", opts, NULL)) != -1) {
        switch (ch) {
        case OPT_SINCE:
        case OPT_UNTIL:
            if (report_parse_time(optarg, now,
                                  ch == OPT_SINCE ? &ctx.opt.since_us : &ctx.opt.until_us) < 0) {
                fprintf(stderr,
                        "outrelay report: cannot read the time \"%s\" (use 2026-03-01, "
                        "\"2026-03-01 14:00\" or 7d)\n",
                        optarg);
                bad = 1;
            }
            ctx.opt.window_given = 1;
            break;
        case OPT_DAY: {
            int y, mo, d, n = 0;
            if (sscanf(optarg, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || optarg[n] ||
                report_parse_time(optarg, now, &ctx.opt.since_us) < 0) {
                fprintf(stderr, "outrelay report: --day wants YYYY-MM-DD, not \"%s\"\n", optarg);
                bad = 1;
            }
            ctx.opt.until_us = ctx.opt.since_us + 86400LL * 1000000;
            ctx.opt.window_given = 1;
            break;
        }
        case OPT_DOMAIN:
            free(domain);
            domain = xstrdup(optarg);
            for (char *p = domain; *p; p++)
                *p = (char)tolower((unsigned char)*p);
            ctx.opt.domain = domain;
            break;
        case OPT_EGRESS:
            ctx.opt.egress = optarg;
            break;
        case OPT_CSV:
            ctx.opt.format = REPORT_CSV;
            break;
        case OPT_JSON:
            ctx.opt.format = REPORT_JSON;
            break;
        case OPT_MSGID:
            ctx.opt.message_id = optarg;
            break;
        case OPT_FORMAT:
            ctx.opt.export_format = optarg;
            break;
        case OPT_TABLE:
            ctx.opt.table = optarg;
            break;
        case OPT_MISMATCHES:
            ctx.opt.mismatches_only = 1;
            break;
        case OPT_RECORDS:
            if (report_sources_add(&ctx.opt, optarg, ctx.err, sizeof ctx.err) != 0) {
                fprintf(stderr, "outrelay report: %s\n", ctx.err);
                bad = 1;
            }
            break;
        case 'o':
            ctx.opt.output = optarg;
            break;
        case 'c':
            break; /* main.c loaded it */
        case 'h':
            help = 1;
            break;
        default:
            bad = 1;
        }
    }
    const char *cmd = optind < argc ? argv[optind] : NULL;
    if (!help && !bad && cmd && strcmp(cmd, "import-rua") == 0) {
        free(domain);
        report_sources_free(&ctx.opt);
        return report_import_rua(cfg, argc - optind - 1, argv + optind + 1);
    }
    if (help || bad || !cmd || !report_is_command(cmd) || optind + 1 != argc) {
        if (!help && cmd && !report_is_command(cmd))
            fprintf(stderr, "outrelay report: unknown report \"%s\"\n", cmd);
        fputs(report_usage, help ? stdout : stderr);
        free(domain);
        report_sources_free(&ctx.opt);
        return help ? 0 : 2;
    }
    if (strcmp(cmd, "export") == 0 &&
        (!ctx.opt.export_format || strcmp(ctx.opt.export_format, "pmta") != 0)) {
        fprintf(stderr, "outrelay report export: --format pmta is the format there is\n");
        free(domain);
        report_sources_free(&ctx.opt);
        return 2;
    }
    if (strcmp(cmd, "html") == 0 && !ctx.opt.output) {
        fprintf(stderr, "outrelay report html: -o FILE is required\n");
        free(domain);
        report_sources_free(&ctx.opt);
        return 2;
    }
    if (ctx.opt.since_us && ctx.opt.until_us && ctx.opt.until_us <= ctx.opt.since_us) {
        fprintf(stderr, "outrelay report: --until must be after --since\n");
        free(domain);
        report_sources_free(&ctx.opt);
        return 2;
    }
    ctx.opt.progress = isatty(STDERR_FILENO);

    int status = 1;
    FILE *out = stdout;
    if (report_open(&ctx) == 0) {
        if (ctx.opt.output && !(out = fopen(ctx.opt.output, "w")))
            snprintf(ctx.err, sizeof ctx.err, "cannot write %s: %s", ctx.opt.output,
                     strerror(errno));
        else if (report_dispatch(&ctx, cmd, out) == 0)
            status = 0;
        int closed = out == stdout ? fflush(stdout) : out ? fclose(out) : 0;
        if (closed != 0 && status == 0) {
            snprintf(ctx.err, sizeof ctx.err, "cannot write %s: %s",
                     ctx.opt.output ? ctx.opt.output : "standard output", strerror(errno));
            status = 1;
        }
    }
    if (status != 0) fprintf(stderr, "outrelay report %s: %s\n", cmd, ctx.err);
    report_close(&ctx);
    report_sources_free(&ctx.opt);
    free(domain);
    return status;
}
