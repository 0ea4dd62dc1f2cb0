/* sts_parse.c - the text of MTA-STS (RFC 8461): the _mta-sts TXT record (section 3.1), the
 * policy file (section 3.2) and MX pattern matching (section 4.1). Pure functions on their
 * arguments; any thread. Called by sts.c, the unit tests and the policy fuzz target. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/util.h"
#include "sts/sts.h"

static const char *skip_wsp(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* One record: 0 with id, 1 when it is not an STSv1 record, -1 when it is one but malformed. */
static int parse_record(const char *r, char *id)
{
    const char *s = r;
    if (*s != 'v') return 1;
    s = skip_wsp(s + 1);
    if (*s != '=') return 1;
    s = skip_wsp(s + 1);
    if (strncmp(s, "STSv1", 5) != 0) return 1;
    s += 5;
    id[0] = '\0';
    int have_id = 0;
    for (;;) {
        s = skip_wsp(s);
        if (*s == '\0') break;
        if (*s != ';') return -1;
        s = skip_wsp(s + 1);
        if (*s == '\0') break; /* a trailing ";" */
        /* sts-field-name = ALPHA *31(ALPHA / DIGIT / "_" / "-" / ".") */
        const char *name = s;
        if (!isalpha((unsigned char)*s)) return -1;
        while (isalnum((unsigned char)*s) || *s == '_' || *s == '-' || *s == '.')
            s++;
        size_t name_len = (size_t)(s - name);
        if (name_len > 32 || *s != '=') return -1;
        s++;
        const char *val = s;
        while (*s && *s != ';' && *s != ' ' && *s != '\t') {
            if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e || *s == '=') return -1;
            s++;
        }
        size_t val_len = (size_t)(s - val);
        if (val_len == 0) return -1;
        if (name_len == 2 && !strncmp(name, "id", 2)) {
            if (have_id || val_len > 32) return -1;
            for (size_t i = 0; i < val_len; i++)
                if (!isalnum((unsigned char)val[i])) return -1;
            memcpy(id, val, val_len);
            id[val_len] = '\0';
            have_id = 1;
        }
    }
    return have_id ? 0 : -1;
}

int sts_parse_txt(char *const *txt, size_t n, char *id)
{
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        char one[33];
        int r = parse_record(txt[i], one);
        if (r == 1) continue;       /* not ours: ignored */
        if (++found > 1) return -1; /* more than one: as if none */
        if (r < 0) return -1;
        memcpy(id, one, sizeof one);
    }
    return found == 1 ? 0 : -1;
}

const char *sts_mode_name(enum sts_mode mode)
{
    return mode == STS_MODE_ENFORCE ? "enforce" : mode == STS_MODE_TESTING ? "testing" : "none";
}

void sts_policy_ref(struct mta_sts_policy *p)
{
    if (p) p->refs++;
}

void sts_policy_release(struct mta_sts_policy *p)
{
    if (!p || --p->refs > 0) return;
    for (size_t i = 0; i < p->n_mx; i++)
        free(p->mx[i]);
    free(p->text);
    free(p);
}

/* mx patterns: a host name, optionally "*." and then one; letters, digits, '-' and '.' */
static int valid_pattern(const char *v)
{
    if (!strncmp(v, "*.", 2)) v += 2;
    if (!*v || *v == '.' || strlen(v) > 253) return 0;
    for (const char *s = v; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && !(*s == '.' && s[1] != '.' && s[1]))
            return 0;
    return 1;
}

struct mta_sts_policy *sts_parse_policy(const char *body, size_t len, char *err, size_t errlen)
{
    struct mta_sts_policy *p = xcalloc(1, sizeof *p);
    p->refs = 1;
    int have_version = 0, have_mode = 0, have_max_age = 0;
    /* a normalised line is at most one byte longer than its original (": "), plus a LF */
    size_t cap = 2 * len + 2, tn = 0;
    char *text = xcalloc(1, cap);
    size_t i = 0;
    while (i < len) {
        size_t start = i;
        while (i < len && body[i] != '\n')
            i++;
        size_t end = i;
        if (i < len) i++; /* the LF */
        if (end > start && body[end - 1] == '\r') end--;
        char line[1024];
        size_t ll = end - start;
        if (ll == 0) continue;
        if (ll >= sizeof line || memchr(body + start, '\0', ll)) {
            snprintf(err, errlen, "a policy line is too long or holds a NUL byte");
            goto bad;
        }
        memcpy(line, body + start, ll);
        line[ll] = '\0';
        char *colon = strchr(line, ':');
        if (!colon) {
            snprintf(err, errlen, "policy line \"%.60s\" is not \"field: value\"", line);
            goto bad;
        }
        char *name_end = colon;
        while (name_end > line && (name_end[-1] == ' ' || name_end[-1] == '\t'))
            name_end--;
        *name_end = '\0';
        char *val = (char *)skip_wsp(colon + 1);
        size_t vl = strlen(val);
        while (vl && (val[vl - 1] == ' ' || val[vl - 1] == '\t'))
            val[--vl] = '\0';
        /* the policy string keeps each line as "field: value" */
        int w = snprintf(text + tn, cap - tn, "%s%s: %s", tn ? "\n" : "", line, val);
        if (w > 0) tn = tn + (size_t)w < cap ? tn + (size_t)w : cap - 1;
        if (!strcmp(line, "version")) {
            if (have_version++) continue;
            if (strcmp(val, "STSv1") != 0) {
                snprintf(err, errlen, "version is \"%.40s\", not STSv1", val);
                goto bad;
            }
        } else if (!strcmp(line, "mode")) {
            if (have_mode++) continue;
            if (!strcmp(val, "enforce"))
                p->mode = STS_MODE_ENFORCE;
            else if (!strcmp(val, "testing"))
                p->mode = STS_MODE_TESTING;
            else if (!strcmp(val, "none"))
                p->mode = STS_MODE_NONE;
            else {
                snprintf(err, errlen, "mode is \"%.40s\", not enforce, testing or none", val);
                goto bad;
            }
        } else if (!strcmp(line, "max_age")) {
            if (have_max_age++) continue;
            size_t nd = strspn(val, "0123456789");
            if (nd == 0 || nd > 10 || val[nd]) {
                snprintf(err, errlen, "max_age \"%.40s\" is not 1 to 10 digits", val);
                goto bad;
            }
            long long v = strtoll(val, NULL, 10);
            p->max_age = v > STS_MAX_AGE_LIMIT ? STS_MAX_AGE_LIMIT : v;
        } else if (!strcmp(line, "mx")) {
            if (!valid_pattern(val)) {
                snprintf(err, errlen, "mx \"%.60s\" is not a host name pattern", val);
                goto bad;
            }
            if (p->n_mx < STS_MAX_MX) p->mx[p->n_mx++] = xstrdup(val);
        } /* other fields are ignored (section 3.2) */
    }
    if (!have_version || !have_mode || !have_max_age) {
        snprintf(err, errlen, "the policy lacks %s",
                 !have_version ? "version"
                 : !have_mode  ? "mode"
                               : "max_age");
        goto bad;
    }
    if (p->mode != STS_MODE_NONE && p->n_mx == 0) {
        snprintf(err, errlen, "a policy in mode %s lists no mx", sts_mode_name(p->mode));
        goto bad;
    }
    p->text = text;
    return p;
bad:
    free(text);
    sts_policy_release(p);
    return NULL;
}

int sts_mx_matches(const char *pattern, const char *host)
{
    size_t hl = strlen(host);
    if (hl && host[hl - 1] == '.') hl--;
    if (!strncmp(pattern, "*.", 2)) {
        /* "*.example.com" is "x.example.com" but neither "example.com" nor "a.b.example.com" */
        const char *dot = memchr(host, '.', hl);
        if (!dot || dot == host) return 0;
        size_t rest = hl - (size_t)(dot + 1 - host);
        return strlen(pattern + 2) == rest && !strncasecmp(dot + 1, pattern + 2, rest);
    }
    return strlen(pattern) == hl && !strncasecmp(pattern, host, hl);
}

int sts_policy_allows(const struct mta_sts_policy *p, const char *host)
{
    for (size_t i = 0; i < p->n_mx; i++)
        if (sts_mx_matches(p->mx[i], host)) return 1;
    return 0;
}
