/* smtp_proto.c - pure SMTP syntax; see smtp_proto.h. Strict by design: anything we cannot
 * parse unambiguously is refused, because a relay that guesses is a relay that can be smuggled. */
#include "mail/smtp_proto.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    enum smtp_verb verb;
} smtp_verbs[] = {
    {"HELO", SMTP_VERB_HELO},         {"EHLO", SMTP_VERB_EHLO}, {"MAIL", SMTP_VERB_MAIL},
    {"RCPT", SMTP_VERB_RCPT},         {"DATA", SMTP_VERB_DATA}, {"RSET", SMTP_VERB_RSET},
    {"NOOP", SMTP_VERB_NOOP},         {"QUIT", SMTP_VERB_QUIT}, {"VRFY", SMTP_VERB_VRFY},
    {"STARTTLS", SMTP_VERB_STARTTLS}, {"AUTH", SMTP_VERB_AUTH}, {"HELP", SMTP_VERB_HELP},
    {"BDAT", SMTP_VERB_BDAT},
};

int smtp_parse_command(const char *line, struct smtp_command *cmd)
{
    for (const unsigned char *p = (const unsigned char *)line; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f) return -1;
    size_t n = strcspn(line, " ");
    cmd->verb = SMTP_VERB_UNKNOWN;
    cmd->args = line + n;
    while (*cmd->args == ' ')
        cmd->args++;
    for (size_t i = 0; i < sizeof smtp_verbs / sizeof smtp_verbs[0]; i++) {
        if (strlen(smtp_verbs[i].name) == n && strncasecmp(line, smtp_verbs[i].name, n) == 0) {
            cmd->verb = smtp_verbs[i].verb;
            break;
        }
    }
    return 0;
}

static int is_atext(unsigned char c)
{
    return isalnum(c) || strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static int check_domain(const char *d, size_t len, int utf8)
{
    if (len == 0 || len > SMTP_MAX_DOMAIN) return -1;
    if (d[0] == '[') { /* address literal */
        if (d[len - 1] != ']' || len < 3) return -1;
        char lit[SMTP_MAX_DOMAIN + 1];
        memcpy(lit, d + 1, len - 2);
        lit[len - 2] = '\0';
        unsigned char buf[16];
        if (inet_pton(AF_INET, lit, buf) == 1) return 0;
        if (strncasecmp(lit, "IPv6:", 5) == 0 && inet_pton(AF_INET6, lit + 5, buf) == 1) return 0;
        return -1;
    }
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c == '.') {
            if (label == 0 || d[i - 1] == '-') return -1;
            label = 0;
            continue;
        }
        if (c >= 0x80) {
            if (!utf8) return -1;
        } else if (!(isalnum(c) || (c == '-' && label > 0)) && !(c == '_')) {
            return -1;
        }
        if (++label > 63) return -1;
    }
    return label == 0 || d[len - 1] == '-' ? -1 : 0;
}

static int check_local(const char *l, size_t len, int utf8)
{
    if (len == 0 || len > SMTP_MAX_LOCAL) return -1;
    if (l[0] == '"') {
        if (len < 2 || l[len - 1] != '"') return -1;
        for (size_t i = 1; i < len - 1; i++) {
            unsigned char c = (unsigned char)l[i];
            if (c == '\\') {
                if (++i >= len - 1 || (unsigned char)l[i] < 0x20 || l[i] == 0x7f) return -1;
                continue;
            }
            if (c == '"' || c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8)) return -1;
        }
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)l[i];
        if (c == '.') {
            if (i == 0 || i == len - 1 || l[i - 1] == '.') return -1;
            continue;
        }
        if (c >= 0x80) {
            if (!utf8) return -1;
            continue;
        }
        if (!is_atext(c)) return -1;
    }
    return 0;
}

int smtp_check_mailbox(const char *mailbox, int utf8)
{
    const char *at = strrchr(mailbox, '@');
    if (!at) return -1;
    if (check_local(mailbox, (size_t)(at - mailbox), utf8) < 0) return -1;
    return check_domain(at + 1, strlen(at + 1), utf8);
}

const char *smtp_address_domain(const char *address)
{
    const char *at = strrchr(address, '@');
    return at ? at + 1 : "";
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int smtp_xtext_decode(const char *in, size_t inlen, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < inlen; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '+') {
            if (i + 2 >= inlen) return -1;
            int h = hexval(in[i + 1]), l = hexval(in[i + 2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0)) /* NUL would cut the string */
                return -1;
            c = (unsigned char)(h * 16 + l);
            i += 2;
        } else if (c < 33 || c > 126 || c == '=') {
            return -1;
        }
        if (o + 1 >= size) return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

void smtp_xtext_encode(const char *in, char *out, size_t size)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < size; p++) {
        if (*p < 33 || *p > 126 || *p == '+' || *p == '=')
            o += (size_t)snprintf(out + o, size - o, "+%02X", *p);
        else
            out[o++] = (char)*p;
    }
    out[o] = '\0';
}

/* An obsolete source route "@a,@b" (without the colon): each hop is "@" and a domain. */
static int check_route(const char *r, size_t len)
{
    const char *end = r + len;
    while (r < end) {
        const char *comma = memchr(r, ',', (size_t)(end - r));
        const char *hop_end = comma ? comma : end;
        if (*r != '@' || check_domain(r + 1, (size_t)(hop_end - r - 1), 0) < 0) return -1;
        r = comma ? comma + 1 : end;
        if (comma && r == end) return -1;
    }
    return 0;
}

/* Parses "<path>" at *p (after "FROM:"/"TO:"), strips an obsolete source route, validates,
 * copies the mailbox to out. Advances *p past the '>'. */
static int parse_path(const char **p, char *out, int allow_null, int utf8, char *reply, size_t size,
                      const char *what)
{
    const char *s = *p;
    if (*s != '<') {
        snprintf(reply, size, "501 5.1.%d Syntax error in %s address: missing <>",
                 what[0] == 's' ? 7 : 3, what);
        return -1;
    }
    const char *close = strchr(s, '>');
    /* A quoted local part may contain '>'; find the closing bracket outside quotes. */
    int quoted = 0;
    for (close = s + 1; *close; close++) {
        if (*close == '\\' && quoted && close[1]) {
            close++;
            continue;
        }
        if (*close == '"')
            quoted = !quoted;
        else if (*close == '>' && !quoted)
            break;
    }
    if (*close != '>') {
        snprintf(reply, size, "501 5.1.%d Syntax error in %s address: unbalanced <>",
                 what[0] == 's' ? 7 : 3, what);
        return -1;
    }
    const char *start = s + 1;
    size_t len = (size_t)(close - start);
    if (len && *start == '@') { /* obsolete source route "@a,@b:mailbox" */
        const char *colon = memchr(start, ':', len);
        if (!colon || colon + 1 == close || check_route(start, (size_t)(colon - start)) < 0) {
            snprintf(reply, size, "501 5.1.%d Syntax error in %s address: bad source route",
                     what[0] == 's' ? 7 : 3, what);
            return -1;
        }
        len -= (size_t)(colon + 1 - start);
        start = colon + 1;
    }
    if (len > SMTP_MAX_PATH) {
        snprintf(reply, size, "501 5.1.%d The %s address is too long", what[0] == 's' ? 7 : 3,
                 what);
        return -1;
    }
    memcpy(out, start, len);
    out[len] = '\0';
    *p = close + 1;
    if (len == 0) {
        if (allow_null) return 0;
        snprintf(reply, size, "501 5.1.3 The null address is not a valid %s", what);
        return -1;
    }
    if (smtp_check_mailbox(out, utf8) < 0) {
        snprintf(reply, size, "501 5.1.%d Syntax error in %s address <%s>", what[0] == 's' ? 7 : 3,
                 what, out);
        return -1;
    }
    return 0;
}

/* Iterates " KEY=VALUE" parameters. Returns 1 with key/value filled, 0 at end, -1 on error. */
static int next_param(const char **p, char *key, size_t ksize, const char **value, size_t *vlen)
{
    const char *s = *p;
    if (*s == '\0') return 0;
    if (*s != ' ') return -1;
    while (*s == ' ')
        s++;
    if (*s == '\0') return 0;
    size_t n = strcspn(s, "= ");
    if (n == 0 || n >= ksize) return -1;
    memcpy(key, s, n);
    key[n] = '\0';
    s += n;
    if (*s == '=') {
        s++;
        *value = s;
        *vlen = strcspn(s, " ");
        s += *vlen;
    } else {
        *value = NULL;
        *vlen = 0;
    }
    *p = s;
    return 1;
}

int smtp_parse_mail(const char *args, struct smtp_mail_args *out, char *reply, size_t size)
{
    memset(out, 0, sizeof *out);
    out->size = -1;
    if (strncasecmp(args, "FROM:", 5) != 0) {
        snprintf(reply, size, "501 5.5.4 Syntax: MAIL FROM:<address>");
        return -1;
    }
    const char *p = args + 5;
    while (*p == ' ') /* tolerated by most MTAs; RFC 5321 says no space */
        p++;
    /* SMTPUTF8 follows the path: accept UTF-8 here, check it once the parameters are known. */
    if (parse_path(&p, out->address, 1, 1, reply, size, "sender") < 0) return -1;
    char key[32];
    const char *val;
    size_t vlen;
    int r;
    while ((r = next_param(&p, key, sizeof key, &val, &vlen)) == 1) {
        /* A known keyword with a bad or missing value is a syntax error (501), not 555. */
        if (strcasecmp(key, "SIZE") == 0) {
            if (!val || vlen == 0 || vlen >= 19 || !isdigit((unsigned char)val[0])) goto bad;
            char *end;
            out->size = strtoll(val, &end, 10);
            if (end != val + vlen || out->size < 0) goto bad;
        } else if (strcasecmp(key, "BODY") == 0) {
            if (!val) goto bad;
            if (vlen == 4 && strncasecmp(val, "7BIT", 4) == 0)
                out->body = SMTP_BODY_7BIT;
            else if (vlen == 8 && strncasecmp(val, "8BITMIME", 8) == 0)
                out->body = SMTP_BODY_8BITMIME;
            else
                goto bad;
        } else if (strcasecmp(key, "SMTPUTF8") == 0) {
            if (val) goto bad;
            out->smtputf8 = 1;
        } else if (strcasecmp(key, "REQUIRETLS") == 0) { /* RFC 8689: no value */
            if (val) goto bad;
            out->requiretls = 1;
        } else if (strcasecmp(key, "RET") == 0) {
            if (!val) goto bad;
            if (vlen == 4 && strncasecmp(val, "FULL", 4) == 0)
                out->ret = SMTP_RET_FULL;
            else if (vlen == 4 && strncasecmp(val, "HDRS", 4) == 0)
                out->ret = SMTP_RET_HDRS;
            else
                goto bad;
        } else if (strcasecmp(key, "ENVID") == 0) {
            if (!val || smtp_xtext_decode(val, vlen, out->envid, sizeof out->envid) < 0) goto bad;
        } else if (strcasecmp(key, "AUTH") == 0 && val) {
            /* RFC 4954 AUTH= is accepted and not propagated. */
        } else {
            snprintf(reply, size, "555 5.5.4 Unsupported MAIL parameter %s", key);
            return -1;
        }
    }
    if (r < 0) goto bad;
    if (!out->smtputf8 && out->address[0] && smtp_check_mailbox(out->address, 0) < 0) {
        snprintf(reply, size, "553 5.6.7 Non-ASCII sender address needs SMTPUTF8");
        return -1;
    }
    return 0;
bad:
    snprintf(reply, size, "501 5.5.4 Bad MAIL parameter syntax");
    return -1;
}

int smtp_parse_rcpt(const char *args, struct smtp_rcpt_args *out, char *reply, size_t size)
{
    memset(out, 0, sizeof *out);
    if (strncasecmp(args, "TO:", 3) != 0) {
        snprintf(reply, size, "501 5.5.4 Syntax: RCPT TO:<address>");
        return -1;
    }
    const char *p = args + 3;
    while (*p == ' ')
        p++;
    if (parse_path(&p, out->address, 0, 1, reply, size, "recipient") < 0) return -1;
    char key[32];
    const char *val;
    size_t vlen;
    int r;
    while ((r = next_param(&p, key, sizeof key, &val, &vlen)) == 1) {
        if (strcasecmp(key, "NOTIFY") == 0) {
            char list[64];
            if (!val || vlen == 0 || vlen >= sizeof list) goto bad;
            memcpy(list, val, vlen);
            list[vlen] = '\0';
            /* strtok_r skips empty items: "NOTIFY=," must not pass as "absent" */
            if (list[0] == ',' || list[vlen - 1] == ',' || strstr(list, ",,")) goto bad;
            char *save, *tok;
            for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (strcasecmp(tok, "NEVER") == 0)
                    out->notify |= SMTP_NOTIFY_NEVER;
                else if (strcasecmp(tok, "SUCCESS") == 0)
                    out->notify |= SMTP_NOTIFY_SUCCESS;
                else if (strcasecmp(tok, "FAILURE") == 0)
                    out->notify |= SMTP_NOTIFY_FAILURE;
                else if (strcasecmp(tok, "DELAY") == 0)
                    out->notify |= SMTP_NOTIFY_DELAY;
                else
                    goto bad;
            }
            if ((out->notify & SMTP_NOTIFY_NEVER) && out->notify != SMTP_NOTIFY_NEVER) goto bad;
        } else if (strcasecmp(key, "ORCPT") == 0) {
            if (!val || smtp_xtext_decode(val, vlen, out->orcpt, sizeof out->orcpt) < 0 ||
                !strchr(out->orcpt, ';'))
                goto bad;
        } else {
            snprintf(reply, size, "555 5.5.4 Unsupported RCPT parameter %s", key);
            return -1;
        }
    }
    if (r < 0) goto bad;
    return 0;
bad:
    snprintf(reply, size, "501 5.5.4 Bad RCPT parameter syntax");
    return -1;
}

int smtp_parse_reply_line(const char *line, int *code, int *more, const char **text)
{
    if (!isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1]) ||
        !isdigit((unsigned char)line[2]))
        return -1;
    if (line[0] < '2' || line[0] > '5') return -1;
    if (line[3] != '\0' && line[3] != ' ' && line[3] != '-') return -1;
    *code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    *more = line[3] == '-';
    *text = line[3] ? line + 4 : line + 3;
    return 0;
}

size_t smtp_enhanced_code(const char *text, char *out, size_t size)
{
    const char *p = text;
    out[0] = '\0';
    if (!(*p >= '2' && *p <= '5') || p[1] != '.') return 0;
    p += 2;
    size_t n = 0;
    while (n < 3 && isdigit((unsigned char)p[n]))
        n++;
    if (n == 0 || p[n] != '.') return 0;
    p += n + 1;
    n = 0;
    while (n < 3 && isdigit((unsigned char)p[n]))
        n++;
    if (n == 0 || (p[n] != ' ' && p[n] != '\0')) return 0;
    size_t total = (size_t)(p + n - text);
    if (total + 1 > size) return 0;
    memcpy(out, text, total);
    out[total] = '\0';
    return p[n] == ' ' ? total + 1 : total;
}
