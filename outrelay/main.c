/* main.c - the outrelay command line: serve, check, queue. Builds the mail path in order
 * (config, listeners, privileges, spool, records, queue, ingress) and tears it down in reverse.
 * Everything else lives in the stage modules. */
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <getopt.h>
#include <grp.h>
#include <openssl/ssl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/dirs.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "common/util.h"
#include "common/workpool.h"
#include "config/config.h"
#include "config/config_reload.h"
#include "control/control.h"
#include "control/metrics.h"
#include "qmgr/qmgr.h"
#include "dns/dns.h"
#include "ingress/auth.h"
#include "ingress/smtpd.h"
#include "check/advice.h"
#include "cluster/cluster.h"
#include "check/dmarc.h"
#include "mail/orgdomain.h"
#include "check/spf.h"
#include "dns/dns_sync.h"
#include "records/records.h"
#include "report/report.h"
#include "route/route.h"
#include "sign/dkim.h"
#include "sign/signer.h"
#include "config/settings.h"
#include "mail/envelope.h"
#include "spool/spool.h"
#include "tls/tls.h"
#include "tlsrpt/tlsrpt_send.h"

static void usage_main(FILE *f)
{
    fprintf(f, "usage: outrelay COMMAND [options]\n\n"
               "commands:\n"
               "  serve -c FILE          run the relay in the foreground\n"
               "  check -c FILE          validate a configuration file\n"
               "  queue list|show ID|shape|hold|release|flush|delete SELECTOR [--json] [-c FILE]\n"
               "                         inspect and act on the running relay's queue\n"
               "  ramp status|set|pause|resume|rollback [GROUP] ...|plan [--json] [-c FILE]\n"
               "                         the running relay's ramps (default and route groups)\n"
               "  cluster status [--json] [-c FILE]\n"
               "                         this instance, the shared Redis up or down, instances\n"
               "                         seen\n"
               "  keygen DOMAIN SELECTOR [--rsa BITS | --ed25519] [-c FILE]\n"
               "                         make a DKIM key under keys/ and print its DNS record\n"
               "  dns-advice [-c FILE]   the DKIM, SPF and DMARC records each signing domain\n"
               "                         needs for the configured egresses, and what is wrong\n"
               "                         with what is published now\n"
               "  report alignment|ramp|delivery|continuity|export|html|rua|import-rua\n"
               "         [options] [-c FILE]\n"
               "                         review the records: alignment, ramp, delivery,\n"
               "                         continuity; CSV/JSON, PowerMTA export, HTML page;\n"
               "                         DMARC aggregate reports next to our predictions\n"
               "  settings --example|--man\n"
               "                         every setting with its default, as the example file\n"
               "                         or the man page's paragraphs\n"
               "  --version              print the version\n"
               "  --help                 this text; COMMAND --help for each command\n\n"
               "Without -c, the embedded defaults are used (see contrib/outrelay.example.yaml).\n");
}

/* The configuration; errors on stderr. Its warnings are left to the caller (load_config). */
static struct config *load_config_quiet(const char *path)
{
    if (!path) return config_defaults();
    struct config_errors errs = {0};
    struct config *cfg = config_load(path, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "%s\n", errs.items[i]);
    config_errors_free(&errs);
    return cfg;
}

static struct config *load_config(const char *path)
{
    struct config *cfg = load_config_quiet(path);
    for (size_t i = 0; cfg && i < cfg->n_warnings; i++)
        fprintf(stderr, "%s\n", cfg->warnings[i]);
    return cfg;
}

/* serve: the warnings go to the configured log, so a JSON or syslog log stays one format;
 * "FILE:L:C: warning: TEXT" becomes "outrelay/config[pid]: warning: FILE:L:C: TEXT". */
static void log_config_warnings(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_warnings; i++) {
        const char *w = cfg->warnings[i], *mark = strstr(w, "warning: ");
        if (mark)
            log_warn("config: %.*s%s", (int)(mark - w), w, mark + strlen("warning: "));
        else
            log_warn("config: %s", w);
    }
}

struct reload_ctx {
    struct config **cfg;         /* the config in force (serve owns the variable) */
    const char *path;            /* the file to read again; NULL: the embedded defaults */
    struct dkim_keystore **keys; /* the store in use (serve owns the variable) */
    struct config **retired;     /* configs a reload replaced, freed at shutdown: sessions,
                                    queued mail and connections still point into them */
    size_t n_retired;
};

/* The DKIM key store of cfg. A key that cannot be used is reported (as "PREFIX: keys: ..." on
 * stderr, or in the log when prefix is NULL) and left out; keys_refused counts them. NULL when
 * the key directory itself cannot be read. */
static int keys_refused;

static struct dkim_keystore *load_keys(const struct config *cfg, const char *prefix)
{
    char **errors = NULL;
    size_t n = 0;
    struct dkim_keystore *ks = dkim_keystore_load(cfg->keys, &errors, &n);
    for (size_t i = 0; i < n; i++) {
        if (prefix)
            fprintf(stderr, "%s: keys: %s\n", prefix, errors[i]);
        else
            log_error("keys: %s (key not used)", errors[i]);
        free(errors[i]);
    }
    free(errors);
    keys_refused += (int)n;
    if (!ks && prefix)
        fprintf(stderr, "%s: keys: cannot read the key directory %s\n", prefix, cfg->keys);
    return ks;
}

/* Parses "-c FILE" / "--config FILE" / "-h" for a subcommand. Returns 0, 1 (help), -1. */
static int parse_common(int argc, char **argv, const char **config_path, int *optind_out,
                        int permute)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'}, {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, permute ? "c:h" : "+c:h", opts, NULL)) != -1) {
        if (ch == 'c')
            *config_path = optarg;
        else if (ch == 'h')
            return 1;
        else
            return -1;
    }
    *optind_out = optind;
    return 0;
}

/* --- check -------------------------------------------------------------------------------- */

static int cmd_check(int argc, char **argv)
{
    const char *path = NULL;
    int rest;
    int r = parse_common(argc, argv, &path, &rest, 0);
    if (r != 0 || !path) {
        fprintf(r == 1 ? stdout : stderr,
                "usage: outrelay check -c FILE\n"
                "Validates the configuration and everything it refers to (certificates, users\n"
                "file, egresses). Prints every mistake as FILE:LINE:COLUMN: what is wrong, and\n"
                "exits 1 when there is any.\n");
        return r == 1 ? 0 : 2;
    }
    struct config *cfg = load_config(path);
    if (!cfg) return 1;
    int status = 0;
    struct config_errors here = {0};
    if (config_check_sources(cfg, &here) > 0) status = 1;
    for (size_t i = 0; i < here.n; i++)
        fprintf(stderr, "%s\n", here.items[i]);
    config_errors_free(&here);
    if (cfg->tls_cert && cfg->tls_key) {
        char err[512];
        SSL_CTX *ctx = tls_server_context(cfg->tls_cert, cfg->tls_key, err, sizeof err);
        if (!ctx) {
            fprintf(stderr, "%s: tls: %s\n", path, err);
            status = 1;
        } else {
            SSL_CTX_free(ctx);
        }
    }
    struct dkim_keystore *ks = load_keys(cfg, path);
    if (!ks || keys_refused) status = 1;
    if (status == 0)
        printf("%s: configuration ok (%zu DKIM key%s)\n", path, ks->n_keys,
               ks->n_keys == 1 ? "" : "s");
    dkim_keystore_free(ks);
    config_free(cfg);
    return status;
}

/* --- queue ---------------------------------------------------------------------------------- */

static int control_command(const char *verb, int argc, char **argv, const char *usage);

static int cmd_ramp(int argc, char **argv)
{
    return control_command(
        "ramp", argc, argv,
        "usage: outrelay ramp [-c FILE] status | set [GROUP] PERCENT|EGRESS=WEIGHT,... |\n"
        "       pause [GROUP] | resume [GROUP] | rollback [GROUP] | plan [--json]\n"
        "Talks to the running relay over its control socket; without GROUP a command steers\n"
        "the default group (ramp.from -> ramp.to), with a group of ramp.groups that group alone:\n"
        "  status       schedule, current and next step, effective share, every route group's\n"
        "               weights, observed share per provider, caps used, active suspensions\n"
        "               and throttles\n"
        "  set PERCENT  pin the cloud share at PERCENT until `resume`\n"
        "  set EGRESS=WEIGHT,...\n"
        "               pin the group's weights (an egress left out weighs 0) until `resume`\n"
        "  pause        freeze the share or weights where they are until `resume`\n"
        "  resume       follow the schedule again\n"
        "  rollback     pin the previous schedule step until `resume`\n"
        "  plan         expected messages per day per egress and provider for the next 7 days\n"
        "               (from the last 7 days of records), flagging days over a cap\n"
        "  --json       the answer as one JSON document\n");
}

static int cmd_queue(int argc, char **argv)
{
    static const char *usage =
        "usage: outrelay queue [-c FILE] COMMAND [SELECTOR] [--json]\n"
        "Talks to the running relay over its control socket:\n"
        "  list [SELECTOR]     messages with their pending recipients and last replies\n"
        "                      ('!' = held)\n"
        "  show ID             one message: envelope, every recipient's state\n"
        "  shape [--by domain|sender|egress]\n"
        "                      pending recipients per domain (sender domain, egress) and age\n"
        "                      in minutes, like Postfix's qshape; totals first\n"
        "  hold SELECTOR       keep messages in the queue until released\n"
        "  release SELECTOR    send held messages now\n"
        "  flush [SELECTOR]    retry deferred messages now (all without a selector)\n"
        "  delete SELECTOR     remove messages without a bounce\n"
        "SELECTOR: a queue ID, --domain D (a recipient domain), --sender S (an envelope sender,\n"
        "or @domain), --egress E, or ALL. Bulk commands answer how many messages and\n"
        "recipients they touched. --json: the answer as one JSON document.\n";
    return control_command("queue", argc, argv, usage);
}

static int control_command(const char *verb, int argc, char **argv, const char *usage);

static int cmd_cluster(int argc, char **argv)
{
    static const char *usage =
        "usage: outrelay cluster [-c FILE] status [--json]\n"
        "Asks the running relay for its cluster state: this instance's name, the shared Redis\n"
        "and whether it answers (or since when it does not), how many instances it last saw,\n"
        "errors, and the deliveries made while Redis was down that are not written to it yet.\n";
    return control_command("cluster", argc, argv, usage);
}

static int control_command(const char *verb, int argc, char **argv, const char *usage)
{
    /* -c/--config and -h are ours; every other word (--json, --domain D, ...) goes to the
     * daemon, which owns the commands' syntax */
    const char *path = NULL;
    int words = 0, help = 0;
    struct strbuf req = STRBUF_INIT;
    strbuf_puts(&req, verb);
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc)
            path = argv[++i];
        else if (!strncmp(argv[i], "--config=", 9))
            path = argv[i] + 9;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            help = 1;
        else if (strchr(argv[i], ' ') || strchr(argv[i], '\n') || !argv[i][0])
            help = 2; /* one word per argument: the request is words separated by spaces */
        else {
            strbuf_printf(&req, " %s", argv[i]);
            words++;
        }
    }
    if (help || !words) {
        fputs(usage, help == 1 ? stdout : stderr);
        strbuf_free(&req);
        return help == 1 ? 0 : 2;
    }
    struct config *cfg = load_config(path);
    if (!cfg) {
        strbuf_free(&req);
        return 1;
    }
    struct strbuf out = STRBUF_INIT;
    char err[512];
    int status = control_request(cfg->control_socket, req.data, &out, err, sizeof err);
    if (status < 0)
        fprintf(stderr, "outrelay: %s\n", err);
    else
        fputs(strbuf_str(&out), status == 0 ? stdout : stderr);
    strbuf_free(&out);
    strbuf_free(&req);
    config_free(cfg);
    return status == 0 ? 0 : 1;
}

/* --- serve ----------------------------------------------------------------------------------- */

static struct event_base *serve_base;

/* SIGHUP, first part: the configuration file is read again. A file with mistakes is refused
 * (each logged as file:line:col) and the running configuration stays. Otherwise each stage takes
 * the new one through its *_reload(), in the order of the mail path; settings bound at start are
 * logged as needing a restart and keep their running values. The replaced config is retired,
 * not freed. Loop thread (an event callback). */
static void reload_config(struct reload_ctx *r)
{
    if (!r->path) return; /* running on the embedded defaults: no file to read */
    struct config_errors errs = {0};
    struct config *fresh = config_load(r->path, &errs);
    for (size_t i = 0; i < errs.n; i++)
        log_error("reload: %s", errs.items[i]);
    config_errors_free(&errs);
    if (!fresh) {
        log_error("reload: %s refused; the configuration loaded before stays in force", r->path);
        return;
    }
    for (size_t i = 0; i < fresh->n_warnings; i++)
        log_warn("reload: %s", fresh->warnings[i]);
    struct config *old = *r->cfg;
    char err[512];
    /* smtpd and queue build what can fail (CA stores, TLS client contexts) before they change
     * anything; the stages after them cannot fail */
    if (smtpd_reload(fresh, err, sizeof err) < 0) {
        log_error("reload: %s; the configuration loaded before stays in force", err);
        config_free(fresh);
        return;
    }
    if (qmgr_reload(fresh, err, sizeof err) < 0) {
        log_error("reload: %s; the configuration loaded before stays in force", err);
        char again[512];
        if (smtpd_reload(old, again, sizeof again) == 0) {
            config_free(fresh);
        } else { /* ingress stays on fresh: it must live on */
            log_error("reload: ingress keeps the new configuration: %s", again);
            r->retired = xrealloc(r->retired, (r->n_retired + 1) * sizeof *r->retired);
            r->retired[r->n_retired++] = fresh;
        }
        return;
    }
    if (route_reload(fresh, err, sizeof err) < 0)
        log_error("reload: route: %s (counters and suspensions start from zero)", err);
    records_set_retention(fresh->records_retention);
    tlsrpt_reload(fresh);
    r->retired = xrealloc(r->retired, (r->n_retired + 1) * sizeof *r->retired);
    r->retired[r->n_retired++] = old;
    *r->cfg = fresh;
    struct strbuf restart = STRBUF_INIT;
    if (config_restart_needed(old, fresh, &restart))
        log_warn("reload: changed settings that need a restart (the running values stay until "
                 "then): %s",
                 strbuf_str(&restart));
    strbuf_free(&restart);
    log_info("reload: configuration %s in force: %zu origin%s, %zu egress%s, ramp %s -> %s",
             r->path, fresh->n_origins, fresh->n_origins == 1 ? "" : "s", fresh->n_egress,
             fresh->n_egress == 1 ? "" : "es", fresh->ramp.from ? fresh->ramp.from : "-",
             fresh->ramp.to ? fresh->ramp.to : "-");
}

/* SIGHUP: the configuration (above), then the DKIM key store of the config in force (new
 * selectors, rotated keys); a key store that cannot be read keeps the current one. */
static void on_reload(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    struct reload_ctx *r = arg;
    reload_config(r);
    const struct config *cfg = *r->cfg;
    struct dkim_keystore *fresh = load_keys(cfg, NULL);
    if (!fresh) {
        log_error("reload: cannot read the key directory %s; keeping the keys loaded before",
                  cfg->keys);
        return;
    }
    signer_replace_keys(fresh, *r->keys);
    *r->keys = fresh;
    log_info("reload: %zu DKIM key%s loaded from %s", fresh->n_keys, fresh->n_keys == 1 ? "" : "s",
             cfg->keys);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    (void)arg;
    log_info("outrelay: signal %d, shutting down", (int)sig);
    event_base_loopexit(serve_base, NULL);
}

static int ensure_dir(const char *path, uid_t uid, gid_t gid, char *err, size_t errlen)
{
    if (dirs_make(path, 0755, 0700, err, errlen) < 0) return -1;
    if (chown(path, uid, gid) < 0) {
        snprintf(err, errlen, "%s: cannot change owner: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Spool recovery witness: every message the spool still holds brings back the records a crash
 * lost (records/replay.c). Messages whose segments are already deleted need nothing: a segment
 * is deleted only once the records emitted before its release are committed
 * (spool_set_release_barrier), unless the records stayed stuck for the barrier's bounded wait.
 * The same read gives each open recipient its attempts and due time, which the queue asks for
 * (replay_retry) right after the witness saw the message: a restart keeps the backoff. */
struct replay_ctx {
    struct records_replay *rp;
    int failed;
    struct spool *sp;
    int done; /* recovery_done ran */
    /* the message the witness saw last, and its recipients' earlier tries */
    char queue_id[sizeof((struct envelope *)0)->queue_id];
    struct records_retry *retry;
    size_t n_retry;
};

static void replay_witness(void *arg, const struct spool_recovered *msg)
{
    struct replay_ctx *c = arg;
    c->queue_id[0] = '\0';
    if (!c->rp || c->failed) return;
    struct envelope *env = envelope_parse(msg->envelope, msg->envelope_len);
    if (!env) return; /* the queue reports it */
    char *final = xcalloc(env->n_rcpts + 1, 1);
    int held, deleted;
    size_t open = spool_recovered_state(msg, env->n_rcpts, final, &held, &deleted);
    if (open > 0 && !deleted && c->n_retry < env->n_rcpts) {
        free(c->retry);
        c->n_retry = env->n_rcpts;
        c->retry = xcalloc(c->n_retry, sizeof *c->retry);
    }
    struct records_retry *retry = open > 0 && !deleted ? c->retry : NULL;
    if (records_replay_message(c->rp, env, final, deleted, retry) < 0)
        c->failed = 1;
    else if (retry)
        snprintf(c->queue_id, sizeof c->queue_id, "%s", env->queue_id);
    free(final);
    envelope_free(env);
}

/* The queue rebuilds a message the witness has just read: its recipients' earlier tries. */
static void replay_retry(void *arg, const struct envelope *env, struct records_retry *retry)
{
    struct replay_ctx *c = arg;
    if (!c->queue_id[0] || strcmp(c->queue_id, env->queue_id) != 0 || env->n_rcpts > c->n_retry)
        return; /* not read (records.db unreadable): due now */
    memcpy(retry, c->retry, env->n_rcpts * sizeof *retry);
}

/* The queue's recovery ended (in the background, or cut short by the spool's close): the replay
 * is over. */
static void recovery_done(void *arg, int recovered, int finished)
{
    struct replay_ctx *c = arg;
    c->done = 1;
    spool_set_recovery_witness(c->sp, NULL, NULL);
    long replayed_messages, replayed_rows;
    records_replay_close(c->rp, &replayed_messages, &replayed_rows);
    c->rp = NULL;
    free(c->retry);
    c->retry = NULL;
    c->n_retry = 0;
    c->queue_id[0] = '\0';
    if (replayed_rows > 0)
        log_info("records: %ld event%s of %ld message%s replayed from the spool (lost with the "
                 "previous run)",
                 replayed_rows, replayed_rows == 1 ? "" : "s", replayed_messages,
                 replayed_messages == 1 ? "" : "s");
    if (c->failed) log_error("records: the replay from the spool stopped on a read error");
    if (!finished)
        log_info("outrelay: stopped while recovering: %d message%s back in the queue, the rest "
                 "stay in the spool for the next start",
                 recovered, recovered == 1 ? "" : "s");
    else if (recovered > 0)
        log_info("outrelay: recovered %d message%s from the spool", recovered,
                 recovered == 1 ? "" : "s");
}

static int drop_privileges(const struct config *cfg, char *err, size_t errlen)
{
    if (!cfg->user) return 0;
    struct passwd *pw = getpwnam(cfg->user);
    if (!pw) {
        snprintf(err, errlen, "user %s does not exist", cfg->user);
        return -1;
    }
    char why[512];
    if (ensure_dir(cfg->spool, pw->pw_uid, pw->pw_gid, why, sizeof why) < 0 ||
        ensure_dir(cfg->state, pw->pw_uid, pw->pw_gid, why, sizeof why) < 0) {
        snprintf(err, errlen, "cannot prepare spool/state for %s: %s", cfg->user, why);
        return -1;
    }
    if (getuid() != 0 && geteuid() != 0) {
        if (geteuid() == pw->pw_uid) return 0;
        snprintf(err, errlen, "must start as root to switch to user %s", cfg->user);
        return -1;
    }
    if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
        snprintf(err, errlen, "cannot switch to user %s: %s", cfg->user, strerror(errno));
        return -1;
    }
    log_info("outrelay: running as %s", cfg->user);
    return 0;
}

/* The sign and check stages: key store, DKIM library, public suffix list, blocking resolver for
 * the workers, SPF and DMARC. Everything here is set up before the workers start. */
static int auth_stages_start(const struct config *cfg, struct dkim_keystore **keys, char *err,
                             size_t errlen)
{
    if (!*keys) {
        snprintf(err, errlen, "cannot read the key directory %s", cfg->keys);
        return -1;
    }
    const char *anchor = cfg->dns_trust_anchor;
    if (orgdomain_init(NULL, err, errlen) < 0 ||
        dns_sync_init(cfg->dns_servers, cfg->n_dns_servers, anchor, err, errlen) < 0 ||
        dkim_setup(cfg, err, errlen) < 0 || spf_init(err, errlen) < 0 ||
        dmarc_init(err, errlen) < 0)
        return -1;
    signer_init(*keys);
    for (size_t i = 0; i < (*keys)->n_keys; i++)
        log_info("dkim: key %s/%s (%s, %d bits) loaded", (*keys)->keys[i].domain,
                 (*keys)->keys[i].selector,
                 (*keys)->keys[i].algorithm == DKIM_ALG_RSA_SHA256 ? "rsa" : "ed25519",
                 (*keys)->keys[i].bits);
    return 0;
}

static void auth_stages_stop(void)
{
    signer_shutdown();
    dmarc_shutdown();
    spf_shutdown();
    dkim_shutdown();
    dns_sync_shutdown();
    orgdomain_shutdown();
}

static void serve_log_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    log_hold_flush();
}

static void serve_log_kick(void *arg)
{
    event_active(arg, EV_TIMEOUT, 0);
}

static int cmd_serve(int argc, char **argv)
{
    const char *path = NULL;
    int rest;
    int r = parse_common(argc, argv, &path, &rest, 0);
    if (r != 0) {
        fprintf(r == 1 ? stdout : stderr,
                "usage: outrelay serve [-c FILE]\n"
                "Runs the relay in the foreground, logging one line per event to stderr (or\n"
                "syslog). SIGTERM/SIGINT stop it; accepted mail stays in the spool. SIGHUP\n"
                "reads the configuration file and the DKIM key store again without dropping a\n"
                "session or a message; a file with mistakes is refused (logged) and the running\n"
                "configuration stays. Listen addresses, spool, state, user, control socket, TLS\n"
                "certificate, users file, DNS servers, logging, metrics, cluster and DKIM header\n"
                "lists need a restart.\n"
                "Without -c it runs on the embedded defaults.\n");
        return r == 1 ? 0 : 2;
    }
    struct config *cfg = load_config_quiet(path);
    if (!cfg) return 1;
    log_init("outrelay", (enum log_to)cfg->log_to, (enum log_level)cfg->log_level);
    log_config_warnings(cfg);
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    serve_base = event_base_new();
    /* the loop's log lines of one turn leave in one write, once its callbacks are over */
    struct event *log_flush_ev = event_new(serve_base, -1, 0, serve_log_flush, NULL);
    if (log_flush_ev) log_hold_start(serve_log_kick, log_flush_ev);
    char err[512] = "";
    int status = 1;
    SSL_CTX *server_ctx = NULL;
    struct auth_users *users = NULL;
    struct spool *sp = NULL;
    struct event *sigterm = NULL, *sigint = NULL, *sighup = NULL;
    int queue_started = 0, tlsrpt_started = 0, records_started = 0, control_started = 0,
        auth_started = 0;
    int metrics_started = 0;
    int route_started = 0;
    struct dkim_keystore *keys = NULL;
    struct reload_ctx reload = {&cfg, path, &keys, NULL, 0};

    if (cfg->tls_cert && cfg->tls_key &&
        !(server_ctx = tls_server_context(cfg->tls_cert, cfg->tls_key, err, sizeof err)))
        goto out;
    if (cfg->users_file && !(users = auth_load(cfg->users_file, err, sizeof err))) goto out;
    /* Bind while still privileged (port 25), then drop. */
    if (smtpd_start(serve_base, cfg, server_ctx, users, err, sizeof err) < 0) goto out;
    /* keys are readable by root only (0600): read them before giving up root */
    keys = load_keys(cfg, NULL);
    if (drop_privileges(cfg, err, sizeof err) < 0) goto out;
    if (dirs_make(cfg->state, 0755, 0700, err, sizeof err) < 0) goto out;
    records_set_retention(cfg->records_retention);
    if (records_open(cfg->state, err, sizeof err) < 0) goto out;
    records_started = 1;
    if (route_init(cfg, cfg->state, err, sizeof err) < 0) goto out;
    route_started = 1;
    if (dns_init(serve_base, cfg->dns_servers, cfg->n_dns_servers, cfg->dns_trust_anchor, err,
                 sizeof err) < 0)
        goto out;
    if (auth_stages_start(cfg, &keys, err, sizeof err) < 0) goto out;
    auth_started = 1;
    if (workpool_start(serve_base, 2) < 0) {
        snprintf(err, sizeof err, "cannot start worker threads");
        goto out;
    }
    /* before the queue: the duplicate window it loads is written to Redis once it answers */
    if (cluster_start(serve_base, cfg, err, sizeof err) < 0) goto out;
    if (!(sp = spool_open(cfg->spool, serve_base, err, sizeof err))) goto out;
    spool_set_release_barrier(sp, records_barrier, records_barrier_passed);
    if (qmgr_init(serve_base, cfg, sp, err, sizeof err) < 0) goto out;
    queue_started = 1;
    char replay_err[512] = "";
    /* lives until recovery_done, which the spool calls at the latest in spool_close below */
    struct replay_ctx replay = {
        records_replay_open(cfg->state, replay_err, sizeof replay_err), 0, sp, 0, "", NULL, 0};
    if (!replay.rp) log_error("outrelay: no replay of records from the spool: %s", replay_err);
    spool_set_recovery_witness(sp, replay_witness, &replay);
    /* the spool is read now; its messages come back into the queue in the background */
    int found = qmgr_recover(recovery_done, replay_retry, &replay, err, sizeof err);
    if (found < 0) {
        recovery_done(&replay, 0, 1);
        goto out;
    }
    if (!replay.done)
        log_info("outrelay: %d message%s found in the spool; those still open come back into the "
                 "queue while the relay serves",
                 found, found == 1 ? "" : "s");
    smtpd_set_spool(sp, qmgr_accept);
    tlsrpt_start(serve_base, cfg);
    tlsrpt_started = 1;
    if (control_start(serve_base, cfg->control_socket, err, sizeof err) < 0) goto out;
    control_started = 1;
    if (cfg->metrics_listen) {
        if (metrics_start(serve_base, cfg->metrics_listen, err, sizeof err) < 0) goto out;
        metrics_started = 1;
        log_info("metrics: http://%s/metrics", cfg->metrics_listen);
    }
    sigterm = evsignal_new(serve_base, SIGTERM, on_signal, NULL);
    sigint = evsignal_new(serve_base, SIGINT, on_signal, NULL);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    sighup = evsignal_new(serve_base, SIGHUP, on_reload, &reload);
    event_add(sighup, NULL);
    log_info("outrelay %s: ready (%s), %zu message%s in the queue", OUTRELAY_VERSION, cfg->file,
             qmgr_size(), qmgr_size() == 1 ? "" : "s");
    event_base_dispatch(serve_base);
    status = 0;

out:
    log_hold_stop(); /* the shutdown's lines go out as they come */
    if (status != 0) log_error("outrelay: %s", err);
    smtpd_stop();
    if (control_started) control_stop();
    if (tlsrpt_started) tlsrpt_stop();
    if (queue_started) qmgr_stop();
    workpool_stop();
    spool_close(sp); /* runs the last commit callbacks */
    if (tlsrpt_started) tlsrpt_close();
    smtpd_release();
    cluster_stop(); /* before the queue goes: claims waiting for Redis are answered "unknown" */
    if (queue_started) qmgr_shutdown();
    if (route_started) route_shutdown();
    dns_shutdown();
    if (auth_started) auth_stages_stop();
    dkim_keystore_free(keys);
    if (metrics_started) metrics_stop();
    if (records_started) records_close();
    if (sigterm) event_free(sigterm);
    if (sigint) event_free(sigint);
    if (sighup) event_free(sighup);
    if (log_flush_ev) event_free(log_flush_ev);
    event_base_free(serve_base);
    auth_free(users);
    if (server_ctx) SSL_CTX_free(server_ctx);
    config_free(cfg);
    for (size_t i = 0; i < reload.n_retired; i++)
        config_free(reload.retired[i]);
    free(reload.retired);
    if (status == 0) log_info("outrelay: stopped");
    return status;
}

/* --- dns-advice ------------------------------------------------------------------------------- */

static int cmd_dns_advice(int argc, char **argv)
{
    const char *path = NULL;
    int rest;
    int r = parse_common(argc, argv, &path, &rest, 1);
    if (r != 0) {
        fprintf(r == 1 ? stdout : stderr,
                "usage: outrelay dns-advice [-c FILE]\n"
                "For every domain with a DKIM key: the DKIM TXT records to publish, whether SPF\n"
                "authorises every configured egress (and which mechanisms are missing), and the\n"
                "DMARC record - compared with what DNS publishes now. Exit 1 if anything is\n"
                "missing or wrong.\n");
        return r == 1 ? 0 : 2;
    }
    struct config *cfg = load_config(path);
    if (!cfg) return 1;
    log_init("outrelay", 0, LOG_LEVEL_ERROR);
    char err[512];
    struct dkim_keystore *ks = load_keys(cfg, "outrelay");
    int status = 1;
    if (!ks) {
        /* load_keys said why */
    } else if (orgdomain_init(NULL, err, sizeof err) < 0 ||
               dns_sync_init(cfg->dns_servers, cfg->n_dns_servers, cfg->dns_trust_anchor, err,
                             sizeof err) < 0 ||
               spf_init(err, sizeof err) < 0) {
        fprintf(stderr, "outrelay: %s\n", err);
    } else {
        struct strbuf out = STRBUF_INIT;
        /* a dead resolver must say so in seconds, not after libunbound's retries */
        dns_sync_bound(3000);
        status = advice_report(cfg, ks, &out) ? 1 : 0;
        fputs(strbuf_str(&out), stdout);
        strbuf_free(&out);
    }
    spf_shutdown();
    dns_sync_shutdown();
    orgdomain_shutdown();
    dkim_keystore_free(ks);
    config_free(cfg);
    return status;
}

/* --- report ---------------------------------------------------------------------------------- */

static int cmd_report(int argc, char **argv)
{
    /* report_run parses its own options; only -c/--config matters here */
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
            path = argv[++i];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            path = argv[i] + 9;
    }
    struct config *cfg = load_config(path);
    if (!cfg) return 1;
    int status = report_run(cfg, argc, argv);
    config_free(cfg);
    return status;
}

/* --- keygen ----------------------------------------------------------------------------------- */

static int cmd_keygen(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"rsa", required_argument, NULL, 'r'},
                                         {"ed25519", no_argument, NULL, 'e'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0, 0, 0, 0}};
    const char *path = NULL;
    enum dkim_algorithm alg = DKIM_ALG_RSA_SHA256;
    int bits = 2048, ch, help = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        if (ch == 'c')
            path = optarg;
        else if (ch == 'r')
            bits = atoi(optarg);
        else if (ch == 'e')
            alg = DKIM_ALG_ED25519_SHA256;
        else
            help = ch == 'h' ? 1 : -1;
    }
    if (help || argc - optind != 2) {
        fprintf(help == 1 ? stdout : stderr,
                "usage: outrelay keygen DOMAIN SELECTOR [--rsa BITS | --ed25519] [-c FILE]\n"
                "Writes <keys>/DOMAIN/SELECTOR.rsa.pem (default RSA 2048) or .ed25519.pem\n"
                "(mode 0600) and prints the TXT record to publish. Never overwrites a key.\n");
        return help == 1 ? 0 : 2;
    }
    if (alg == DKIM_ALG_RSA_SHA256 && (bits < 1024 || bits > 8192)) {
        fprintf(stderr, "outrelay: --rsa BITS must be between 1024 and 8192\n");
        return 2;
    }
    struct config *cfg = load_config(path);
    if (!cfg) return 1;
    struct strbuf txt = STRBUF_INIT;
    char err[512];
    int status =
        dkim_keygen(cfg->keys, argv[optind], argv[optind + 1], alg, bits, &txt, err, sizeof err);
    if (status < 0)
        fprintf(stderr, "outrelay: %s\n", err);
    else
        printf("%s", strbuf_str(&txt));
    strbuf_free(&txt);
    config_free(cfg);
    return status < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage_main(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("outrelay %s\n", OUTRELAY_VERSION);
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage_main(stdout);
        return 0;
    }
    if (strcmp(cmd, "serve") == 0) return cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "check") == 0) return cmd_check(argc - 1, argv + 1);
    if (strcmp(cmd, "queue") == 0) return cmd_queue(argc - 1, argv + 1);
    if (strcmp(cmd, "ramp") == 0) return cmd_ramp(argc - 1, argv + 1);
    if (strcmp(cmd, "cluster") == 0) return cmd_cluster(argc - 1, argv + 1);
    if (strcmp(cmd, "keygen") == 0) return cmd_keygen(argc - 1, argv + 1);
    if (strcmp(cmd, "dns-advice") == 0) return cmd_dns_advice(argc - 1, argv + 1);
    if (strcmp(cmd, "report") == 0) return cmd_report(argc - 1, argv + 1);
    if (strcmp(cmd, "settings") == 0) return settings_command(argc - 1, argv + 1);
    fprintf(stderr, "outrelay: unknown command \"%s\"\n\n", cmd);
    usage_main(stderr);
    return 2;
}
