/* config_reload.c - see config_reload.h. Compares only; never changes either config. */
#include "config/config_reload.h"

#include <string.h>

static int same_text(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int same_list(char **a, size_t na, char **b, size_t nb)
{
    if (na != nb) return 0;
    for (size_t i = 0; i < na; i++)
        if (!same_text(a[i], b[i])) return 0;
    return 1;
}

static int same_listen(const struct config *a, const struct config *b)
{
    if (a->n_listen != b->n_listen) return 0;
    for (size_t i = 0; i < a->n_listen; i++)
        if (!same_text(a->listen[i].address_text, b->listen[i].address_text) ||
            a->listen[i].tls != b->listen[i].tls)
            return 0;
    return 1;
}

static void name(struct strbuf *out, int *n, const char *setting)
{
    strbuf_printf(out, "%s%s", *n ? ", " : "", setting);
    (*n)++;
}

int config_restart_needed(const struct config *running, const struct config *fresh,
                          struct strbuf *out)
{
    const struct config *a = running, *b = fresh;
    int n = 0;
    if (!same_listen(a, b)) name(out, &n, "listen");
    if (!same_text(a->spool, b->spool)) name(out, &n, "spool");
    if (!same_text(a->state, b->state)) name(out, &n, "state");
    if (!same_text(a->user, b->user)) name(out, &n, "user");
    if (!same_text(a->control_socket, b->control_socket)) name(out, &n, "control_socket");
    if (!same_text(a->tls_cert, b->tls_cert) || !same_text(a->tls_key, b->tls_key))
        name(out, &n, "tls");
    if (!same_text(a->users_file, b->users_file)) name(out, &n, "auth.users_file");
    if (!same_list(a->dns_servers, a->n_dns_servers, b->dns_servers, b->n_dns_servers))
        name(out, &n, "dns.servers");
    if (!same_text(a->dns_trust_anchor, b->dns_trust_anchor)) name(out, &n, "dns.trust_anchor");
    if (a->log_to != b->log_to || a->log_level != b->log_level) name(out, &n, "log");
    if (!same_text(a->metrics_listen, b->metrics_listen)) name(out, &n, "metrics.listen");
    if (!same_text(a->cluster_redis, b->cluster_redis) ||
        !same_text(a->cluster_instance, b->cluster_instance) ||
        !same_text(a->cluster_user, b->cluster_user) ||
        !same_text(a->cluster_password, b->cluster_password) || a->cluster_db != b->cluster_db ||
        a->cluster_tls != b->cluster_tls ||
        !same_text(a->cluster_tls_ca_file, b->cluster_tls_ca_file) ||
        !same_text(a->cluster_tls_cert, b->cluster_tls_cert) ||
        !same_text(a->cluster_tls_key, b->cluster_tls_key) ||
        a->cluster_timeout != b->cluster_timeout ||
        !same_text(a->cluster_key_prefix, b->cluster_key_prefix) ||
        a->cluster_claim_ttl != b->cluster_claim_ttl)
        name(out, &n, "cluster");
    if (!same_list(a->dkim_headers, a->n_dkim_headers, b->dkim_headers, b->n_dkim_headers) ||
        !same_list(a->dkim_oversign, a->n_dkim_oversign, b->dkim_oversign, b->n_dkim_oversign))
        name(out, &n, "dkim");
    return n;
}
