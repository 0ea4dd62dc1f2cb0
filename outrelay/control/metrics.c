/* metrics.c - see metrics.h. The observer runs on whatever thread emits an event, so the
 * counters sit behind one mutex; the HTTP side runs on the loop. */
#include "control/metrics.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "common/hashmap.h"
#include "common/strbuf.h"
#include "common/clock.h"
#include "common/util.h"
#include "qmgr/qmgr.h"
#include "records/records.h"
#include "route/route.h"

/* Every metric we expose, in output order. Counters/histograms are keyed "name{labels}". */
static const struct metric_def {
    const char *name;
    const char *type;
    const char *help;
} metric_defs[] = {
    {"outrelay_messages_accepted_total", "counter", "Messages accepted (250 after DATA)"},
    {"outrelay_recipients_delivered_total", "counter", "Recipients delivered"},
    {"outrelay_recipients_deferred_total", "counter", "Delivery attempts deferred (4xx)"},
    {"outrelay_recipients_bounced_total", "counter", "Recipients bounced (5xx or policy)"},
    {"outrelay_recipients_expired_total", "counter", "Recipients expired after max_lifetime"},
    {"outrelay_recipients_suppressed_total", "counter", "Duplicate deliveries suppressed"},
    {"outrelay_checks_total", "counter", "Pre-send DMARC predictions by result"},
    {"outrelay_routed_total", "counter",
     "Recipients routed, by egress and how (ramp, spill, wait)"},
    {"outrelay_shaping_events_total", "counter", "Deferrals whose reply is a receiver throttle"},
    {"outrelay_ramp_overrides_total", "counter", "Operator ramp overrides"},
    {"outrelay_shaping_activations_total", "counter",
     "Shaping rules that started a suspension, throttle or reroute"},
    {"outrelay_tls_deliveries_total", "counter",
     "Recipients delivered, by egress, provider and whether over TLS (tls yes/no)"},
    {"outrelay_tls_share_ratio", "gauge",
     "Share of the delivered recipients that went over TLS, per egress and provider"},
    {"outrelay_tls_failures_total", "counter",
     "Delivery attempts whose TLS failed, by RFC 8460 result type (tls_policy, DANE, MTA-STS)"},
    {"outrelay_delivery_delay_seconds", "histogram", "Acceptance to remote 250, per egress"},
    {"outrelay_queue_messages", "gauge", "Messages in the queue by state"},
    {"outrelay_ramp_share_percent", "gauge", "Effective share of the ramp's to-egress"},
    {"outrelay_cluster_up", "gauge", "1 while the shared Redis answers (cluster configured)"},
    {"outrelay_cluster_instances_seen", "gauge", "Instances whose heartbeat Redis last showed"},
    {"outrelay_cluster_errors_total", "counter",
     "Redis commands without an answer, connection losses and error replies"},
    {"outrelay_cluster_reconcile_pending", "gauge",
     "Deliveries made while Redis was down, not yet written to it"},
    {"outrelay_cluster_transitions_total", "counter", "Redis went down or came back, by state"},
    {"outrelay_cluster_state_pending", "gauge",
     "Shared state entries (shaping, ramp, autopilot) changed while Redis was away, not yet "
     "written to it"},
    {"outrelay_cluster_state_learnt_total", "counter",
     "Shared state entries learnt from other instances"},
    {"outrelay_cluster_caps_local", "gauge",
     "1 while caps are enforced locally (Redis down): each limit divided by the instances seen"},
};

static const double delay_buckets[] = {0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 21600, 86400};
#define N_BUCKETS (sizeof delay_buckets / sizeof delay_buckets[0])

static pthread_mutex_t metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hashmap *metrics_values; /* "name{labels}" -> double* */
static struct evhttp *metrics_http;

/* Label values come from the mail (origins, domains are ours; reply texts are not used). */
static void label_escape(struct strbuf *sb, const char *v)
{
    for (const char *p = v ? v : ""; *p; p++) {
        if (*p == '\\' || *p == '"')
            strbuf_printf(sb, "\\%c", *p);
        else if (*p == '\n')
            strbuf_puts(sb, "\\n");
        else
            strbuf_append(sb, p, 1);
    }
}

/* Adds delta to name{k1="v1",...}; labels is a NULL-terminated list of key, value pairs. */
static void add(const char *name, double delta, const char *const *labels)
{
    struct strbuf key = STRBUF_INIT;
    strbuf_puts(&key, name);
    if (labels && labels[0]) {
        strbuf_puts(&key, "{");
        for (int i = 0; labels[i]; i += 2) {
            strbuf_printf(&key, "%s%s=\"", i ? "," : "", labels[i]);
            label_escape(&key, labels[i + 1]);
            strbuf_puts(&key, "\"");
        }
        strbuf_puts(&key, "}");
    }
    double *v = hashmap_get(metrics_values, key.data);
    if (!v) {
        v = xcalloc(1, sizeof *v);
        hashmap_put(metrics_values, key.data, v);
    }
    *v += delta;
    strbuf_free(&key);
}

static int is_shaping_reply(const struct record_event *ev)
{
    const char *e = ev->enhanced_code ? ev->enhanced_code : "";
    return ev->reply_code == 421 || strncmp(e, "4.7.", 4) == 0;
}

static void observe(const struct record_event *ev)
{
    enum record_type type = ev->type;
    const char *origin = ev->origin ? ev->origin : "";
    const char *egress = ev->egress ? ev->egress : "";
    const char *provider = ev->provider ? ev->provider : "other";
    pthread_mutex_lock(&metrics_lock);
    if (!metrics_values) {
        pthread_mutex_unlock(&metrics_lock);
        return;
    }
    if (type == RECORD_RECEIVED) {
        add("outrelay_messages_accepted_total", 1, (const char *[]){"origin", origin, NULL});
    } else if (type == RECORD_DELIVERED || type == RECORD_DEFERRED || type == RECORD_BOUNCED ||
               type == RECORD_EXPIRED || type == RECORD_SUPPRESSED) {
        char name[64];
        snprintf(name, sizeof name, "outrelay_recipients_%s_total", records_type_name(type));
        add(name, 1,
            (const char *[]){"origin", origin, "egress", egress, "provider", provider, NULL});
        if (type == RECORD_DEFERRED && is_shaping_reply(ev))
            add("outrelay_shaping_events_total", 1,
                (const char *[]){"egress", egress, "provider", provider, NULL});
        if (type == RECORD_DELIVERED)
            add("outrelay_tls_deliveries_total", 1,
                (const char *[]){"egress", egress, "provider", provider, "tls",
                                 ev->tls_version ? "yes" : "no", NULL});
        if (type == RECORD_DELIVERED) {
            double s = (double)ev->delay_ms / 1000.0;
            for (size_t i = 0; i < N_BUCKETS; i++) {
                char le[32];
                snprintf(le, sizeof le, "%g", delay_buckets[i]);
                if (s <= delay_buckets[i])
                    add("outrelay_delivery_delay_seconds_bucket", 1,
                        (const char *[]){"egress", egress, "le", le, NULL});
                else
                    add("outrelay_delivery_delay_seconds_bucket", 0,
                        (const char *[]){"egress", egress, "le", le, NULL});
            }
            add("outrelay_delivery_delay_seconds_bucket", 1,
                (const char *[]){"egress", egress, "le", "+Inf", NULL});
            add("outrelay_delivery_delay_seconds_sum", s, (const char *[]){"egress", egress, NULL});
            add("outrelay_delivery_delay_seconds_count", 1,
                (const char *[]){"egress", egress, NULL});
        }
    } else if (type == RECORD_CHECKED && ev->dmarc_result) {
        add("outrelay_checks_total", 1,
            (const char *[]){"egress", egress, "dmarc", ev->dmarc_result, "spf",
                             ev->spf_result ? ev->spf_result : "", NULL});
    } else if (type == RECORD_ROUTED) {
        add("outrelay_routed_total", 1,
            (const char *[]){"egress", egress, "provider", provider, "how",
                             ev->action ? ev->action : "", NULL});
    } else if (type == RECORD_ATTEMPT && ev->tls_failure && !ev->tls_version) {
        add("outrelay_tls_failures_total", 1,
            (const char *[]){"egress", egress, "provider", provider, "result_type", ev->tls_failure,
                             NULL});
    } else if (type == RECORD_CLUSTER) {
        add("outrelay_cluster_transitions_total", 1,
            (const char *[]){"state", ev->action ? ev->action : "", NULL});
    } else if (type == RECORD_RAMP) {
        add("outrelay_ramp_overrides_total", 1, NULL);
    } else if (type == RECORD_SHAPING && ev->action && strcmp(ev->action, "lifted") != 0) {
        add("outrelay_shaping_activations_total", 1,
            (const char *[]){"egress", egress, "provider", provider, "action", ev->action, NULL});
    }
    pthread_mutex_unlock(&metrics_lock);
}

struct line {
    const char *key;
    double value;
};

static void collect(void *arg, const char *key, void *value)
{
    struct line **cursor = arg;
    (*cursor)->key = key;
    (*cursor)->value = *(double *)value;
    (*cursor)++;
}

static int by_key(const void *a, const void *b)
{
    return strcmp(((const struct line *)a)->key, ((const struct line *)b)->key);
}

/* name matches key when key is name or name{... */
static int key_is(const char *key, const char *name)
{
    size_t n = strlen(name);
    return strncmp(key, name, n) == 0 && (key[n] == '\0' || key[n] == '{');
}

/* outrelay_tls_share_ratio from the outrelay_tls_deliveries_total lines (sorted: the tls="no"
 * and tls="yes" lines of one egress and provider are neighbours). */
static void render_tls_share(struct strbuf *out, const struct line *lines, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!key_is(lines[i].key, "outrelay_tls_deliveries_total")) continue;
        const char *labels = strchr(lines[i].key, '{'), *tls = strstr(lines[i].key, ",tls=\"");
        if (!labels || !tls) continue;
        size_t len = (size_t)(tls - labels);
        double yes = 0, all = 0;
        size_t j = i;
        for (; j < n && key_is(lines[j].key, "outrelay_tls_deliveries_total"); j++) {
            const char *l = strchr(lines[j].key, '{'), *t = strstr(lines[j].key, ",tls=\"");
            if (!l || !t || (size_t)(t - l) != len || strncmp(l, labels, len) != 0) break;
            all += lines[j].value;
            if (strncmp(t, ",tls=\"yes\"", 10) == 0) yes += lines[j].value;
        }
        strbuf_printf(out, "outrelay_tls_share_ratio%.*s} %.17g\n", (int)len, labels,
                      all > 0 ? yes / all : 0);
        i = j - 1;
    }
}

static void render(struct strbuf *out)
{
    size_t active = 0, deferred = 0, held = 0;
    qmgr_stats(&active, &deferred, &held);
    pthread_mutex_lock(&metrics_lock);
    size_t n = hashmap_count(metrics_values);
    struct line *lines = xcalloc(n + 1, sizeof *lines), *cursor = lines;
    hashmap_foreach(metrics_values, collect, &cursor);
    qsort(lines, n, sizeof *lines, by_key);
    for (size_t d = 0; d < sizeof metric_defs / sizeof metric_defs[0]; d++) {
        const struct metric_def *m = &metric_defs[d];
        strbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name, m->type);
        if (!strcmp(m->name, "outrelay_queue_messages")) {
            strbuf_printf(out, "%s{state=\"active\"} %zu\n", m->name, active);
            strbuf_printf(out, "%s{state=\"deferred\"} %zu\n", m->name, deferred);
            strbuf_printf(out, "%s{state=\"held\"} %zu\n", m->name, held);
            continue;
        }
        if (!strncmp(m->name, "outrelay_cluster_", 17) && strcmp(m->type, "counter") != 0) {
            if (!cluster_configured()) continue;
            double v =
                !strcmp(m->name, "outrelay_cluster_up")               ? cluster_is_up()
                : !strcmp(m->name, "outrelay_cluster_instances_seen") ? cluster_instances_seen()
                : !strcmp(m->name, "outrelay_cluster_state_pending")
                    ? (double)cluster_state_pending()
                : !strcmp(m->name, "outrelay_cluster_caps_local") ? cluster_caps_local()
                                                                  : (double)cluster_dedup_pending();
            strbuf_printf(out, "%s %g\n", m->name, v);
            continue;
        }
        if (!strcmp(m->name, "outrelay_cluster_state_learnt_total")) {
            if (cluster_configured())
                strbuf_printf(out, "%s %llu\n", m->name,
                              (unsigned long long)cluster_state_learnt());
            continue;
        }
        if (!strcmp(m->name, "outrelay_cluster_errors_total")) {
            if (cluster_configured())
                strbuf_printf(out, "%s %llu\n", m->name, (unsigned long long)cluster_errors());
            continue;
        }
        if (!strcmp(m->name, "outrelay_ramp_share_percent")) {
            strbuf_printf(out, "%s %g\n", m->name, route_share(clock_now()));
            continue;
        }
        if (!strcmp(m->name, "outrelay_tls_share_ratio")) {
            render_tls_share(out, lines, n);
            continue;
        }
        int histogram = !strcmp(m->type, "histogram");
        for (size_t i = 0; i < n; i++) {
            char name[96];
            int match = 0;
            if (histogram) {
                for (int s = 0; s < 3 && !match; s++) {
                    snprintf(name, sizeof name, "%s%s", m->name,
                             (const char *[]){"_bucket", "_sum", "_count"}[s]);
                    match = key_is(lines[i].key, name);
                }
            } else {
                match = key_is(lines[i].key, m->name);
            }
            if (match) strbuf_printf(out, "%s %.17g\n", lines[i].key, lines[i].value);
        }
    }
    pthread_mutex_unlock(&metrics_lock);
    free(lines);
}

static void handle(struct evhttp_request *req, void *arg)
{
    (void)arg;
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        evhttp_send_error(req, 405, "only GET");
        return;
    }
    struct strbuf out = STRBUF_INIT;
    render(&out);
    struct evbuffer *body = evbuffer_new();
    evbuffer_add(body, out.data, out.len);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    evhttp_send_reply(req, 200, "OK", body);
    evbuffer_free(body);
    strbuf_free(&out);
}

int metrics_start(struct event_base *base, const char *listen, char *err, size_t errlen)
{
    struct sockaddr_any a;
    char host[64];
    if (util_parse_hostport(listen, -1, &a) < 0) {
        snprintf(err, errlen, "metrics.listen: bad address %s", listen);
        return -1;
    }
    util_format_addr(&a, 0, host, sizeof host);
    metrics_values = hashmap_new();
    metrics_http = evhttp_new(base);
    evhttp_set_cb(metrics_http, "/metrics", handle, NULL);
    evhttp_set_allowed_methods(metrics_http, EVHTTP_REQ_GET);
    if (evhttp_bind_socket(metrics_http, host, (ev_uint16_t)util_addr_port(&a)) != 0) {
        snprintf(err, errlen, "metrics: cannot listen on %s", listen);
        evhttp_free(metrics_http);
        metrics_http = NULL;
        return -1;
    }
    records_set_observer(observe);
    return 0;
}

void metrics_stop(void)
{
    records_set_observer(NULL);
    if (metrics_http) evhttp_free(metrics_http);
    metrics_http = NULL;
    pthread_mutex_lock(&metrics_lock);
    if (metrics_values) {
        hashmap_free_values(metrics_values, free);
        metrics_values = NULL;
    }
    pthread_mutex_unlock(&metrics_lock);
}
