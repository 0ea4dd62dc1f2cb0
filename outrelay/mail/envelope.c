/* envelope.c - envelope struct and its spool text form; see envelope.h. Never does I/O: the
 * spool writes and reads the text this file makes and parses. */
#include "mail/envelope.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

struct envelope *envelope_new(void)
{
    return xcalloc(1, sizeof(struct envelope));
}

void envelope_add_rcpt(struct envelope *env, const char *address, const char *orcpt, int notify)
{
    env->rcpts = xrealloc(env->rcpts, (env->n_rcpts + 1) * sizeof *env->rcpts);
    struct envelope_rcpt *r = &env->rcpts[env->n_rcpts++];
    r->address = xstrdup(address);
    r->orcpt = orcpt && *orcpt ? xstrdup(orcpt) : NULL;
    r->notify = notify;
}

void envelope_free(struct envelope *env)
{
    if (!env) return;
    free(env->origin);
    free(env->client_addr);
    free(env->helo);
    free(env->auth_user);
    free(env->sender);
    free(env->envid);
    free(env->message_id);
    free(env->from_domain);
    free(env->transport);
    for (size_t i = 0; i < env->n_rcpts; i++) {
        free(env->rcpts[i].address);
        free(env->rcpts[i].orcpt);
    }
    free(env->rcpts);
    free(env);
}

/* Values are percent-escaped for '%', '\n', '\r', '\t' and NUL-free by construction. */
static void put(struct strbuf *out, const char *key, const char *value)
{
    if (!value) return;
    strbuf_puts(out, key);
    strbuf_append(out, " ", 1);
    for (const char *p = value; *p; p++) {
        if (*p == '%' || *p == '\n' || *p == '\r' || *p == '\t')
            strbuf_printf(out, "%%%02X", (unsigned char)*p);
        else
            strbuf_append(out, p, 1);
    }
    strbuf_append(out, "\n", 1);
}

static int hexdigit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Returns NULL for a broken escape: '%' without two hex digits, or one that decodes to NUL. */
static char *unescape(const char *s, size_t len)
{
    char *out = xmalloc(len + 1), *o = out;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            int h = i + 2 < len ? hexdigit(s[i + 1]) : -1;
            int l = i + 2 < len ? hexdigit(s[i + 2]) : -1;
            if (h < 0 || l < 0 || (h == 0 && l == 0)) {
                free(out);
                return NULL;
            }
            *o++ = (char)(h * 16 + l);
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

void envelope_serialize(const struct envelope *env, struct strbuf *out)
{
    char num[32];
    put(out, "queue_id", env->queue_id);
    snprintf(num, sizeof num, "%lld", (long long)env->arrival);
    put(out, "arrival", num);
    snprintf(num, sizeof num, "%lld", (long long)env->arrival_us);
    put(out, "arrival_us", num);
    put(out, "origin", env->origin);
    put(out, "client", env->client_addr);
    put(out, "helo", env->helo);
    put(out, "auth", env->auth_user);
    put(out, "sender", env->sender ? env->sender : "");
    put(out, "envid", env->envid);
    snprintf(num, sizeof num, "%d%d%d", env->ret_hdrs, env->body_8bit, env->smtputf8);
    put(out, "flags", num);
    put(out, "message_id", env->message_id);
    put(out, "from_domain", env->from_domain);
    if (env->transformed) put(out, "transformed", "1");
    if (env->requiretls) put(out, "requiretls", "1"); /* absent in spools written before it */
    put(out, "transport", env->transport);
    snprintf(num, sizeof num, "%lld", (long long)env->size);
    put(out, "size", num);
    for (size_t i = 0; i < env->n_rcpts; i++) {
        const struct envelope_rcpt *r = &env->rcpts[i];
        struct strbuf v = STRBUF_INIT;
        strbuf_printf(&v, "%d\t", r->notify);
        /* address and orcpt are escaped by put(); tabs inside them become %09 first. */
        struct strbuf a = STRBUF_INIT, o = STRBUF_INIT;
        for (const char *p = r->address; *p; p++)
            *p == '\t' || *p == '%' ? strbuf_printf(&a, "%%%02X", (unsigned char)*p)
                                    : strbuf_append(&a, p, 1);
        if (r->orcpt)
            for (const char *p = r->orcpt; *p; p++)
                *p == '\t' || *p == '%' ? strbuf_printf(&o, "%%%02X", (unsigned char)*p)
                                        : strbuf_append(&o, p, 1);
        strbuf_printf(&v, "%s\t%s", strbuf_str(&a), strbuf_str(&o));
        /* v holds already-escaped fields: append raw. */
        strbuf_puts(out, "rcpt ");
        for (const char *p = strbuf_str(&v); *p; p++) {
            if (*p == '\n' || *p == '\r')
                strbuf_printf(out, "%%%02X", (unsigned char)*p);
            else
                strbuf_append(out, p, 1);
        }
        strbuf_append(out, "\n", 1);
        strbuf_free(&v);
        strbuf_free(&a);
        strbuf_free(&o);
    }
}

struct envelope *envelope_parse(const char *text, size_t len)
{
    struct envelope *env = envelope_new();
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) goto bad;
        const char *sp = memchr(p, ' ', (size_t)(nl - p));
        if (!sp) goto bad;
        size_t klen = (size_t)(sp - p);
        const char *v = sp + 1;
        size_t vlen = (size_t)(nl - v);
#define KEY(k) (klen == strlen(k) && memcmp(p, k, klen) == 0)
        if (KEY("rcpt")) {
            char *raw = xstrndup(v, vlen);
            char *t1 = strchr(raw, '\t');
            char *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
            if (!t1 || !t2) {
                free(raw);
                goto bad;
            }
            *t1 = *t2 = '\0';
            char *addr = unescape(t1 + 1, strlen(t1 + 1));
            char *orcpt = unescape(t2 + 1, strlen(t2 + 1));
            int ok = addr && orcpt;
            if (ok) envelope_add_rcpt(env, addr, orcpt, atoi(raw));
            free(addr);
            free(orcpt);
            free(raw);
            if (!ok) goto bad;
        } else {
            char *val = unescape(v, vlen);
            if (!val) goto bad;
/* A field seen twice is refused (and not leaked): envelope_serialize never writes one twice. */
#define SET(field)                                                                                 \
    do {                                                                                           \
        if (field) {                                                                               \
            free(val);                                                                             \
            goto bad;                                                                              \
        }                                                                                          \
        field = val;                                                                               \
    } while (0)
            if (KEY("queue_id")) {
                if (env->queue_id[0] || strlen(val) >= sizeof env->queue_id) {
                    free(val); /* a second or overlong id: not ours */
                    goto bad;
                }
                memcpy(env->queue_id, val, strlen(val) + 1);
                free(val);
            } else if (KEY("arrival_us")) {
                env->arrival_us = atoll(val);
                free(val);
            } else if (KEY("arrival")) {
                env->arrival = atoll(val);
                free(val);
            } else if (KEY("size")) {
                env->size = atoll(val);
                free(val);
            } else if (KEY("flags")) {
                env->ret_hdrs = val[0] == '1';
                env->body_8bit = val[0] && val[1] == '1';
                env->smtputf8 = val[0] && val[1] && val[2] == '1';
                free(val);
            } else if (KEY("origin")) {
                SET(env->origin);
            } else if (KEY("client")) {
                SET(env->client_addr);
            } else if (KEY("helo")) {
                SET(env->helo);
            } else if (KEY("auth")) {
                SET(env->auth_user);
            } else if (KEY("sender")) {
                SET(env->sender);
            } else if (KEY("envid")) {
                SET(env->envid);
            } else if (KEY("message_id")) {
                SET(env->message_id);
            } else if (KEY("from_domain")) {
                SET(env->from_domain);
            } else if (KEY("transformed")) {
                env->transformed = val[0] == '1';
                free(val);
            } else if (KEY("requiretls")) {
                env->requiretls = val[0] == '1';
                free(val);
            } else if (KEY("transport")) {
                SET(env->transport);
            } else {
                free(val); /* unknown keys from newer versions are ignored */
            }
        }
#undef SET
#undef KEY
        p = nl + 1;
    }
    if (!env->queue_id[0] || !env->sender || env->n_rcpts == 0) goto bad;
    return env;
bad:
    envelope_free(env);
    return NULL;
}
