/* smtpd_auth.c - SMTP AUTH (PLAIN and LOGIN) for smtpd sessions: the AUTH command, the
 * continuation lines, and the password check handed to the workpool (the session is busy
 * until auth_done runs on the loop). Never checks a password on the loop thread. Called from
 * smtpd.c's command dispatch; shares struct session through smtpd_internal.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/util.h"
#include "common/workpool.h"
#include "ingress/auth.h"
#include "ingress/smtpd_internal.h"

#define SMTPD_MAX_AUTH_FAILURES 3

int smtpd_auth_offered(const struct session *s)
{
    return s->tls && smtpd_users && !s->auth_user;
}

struct auth_job {
    struct session *s;
    char *user;
    char *password;
    int ok;
};

static void auth_work(void *arg)
{
    struct auth_job *j = arg;
    j->ok = auth_verify(smtpd_users, j->user, j->password);
}

static void auth_done(void *arg)
{
    struct auth_job *j = arg;
    struct session *s = j->s;
    s->busy = 0;
    if (s->dead) {
        smtpd_session_free(s);
    } else if (j->ok) {
        s->auth_user = xstrdup(j->user);
        const struct origin_conf *o = smtpd_origin_for_user(j->user);
        if (o) s->origin = o;
        log_info("smtpd: %s: authenticated as %s, origin=%s", s->peer_text, j->user,
                 s->origin ? s->origin->name : "(none)");
        s->state = STATE_READY;
        smtpd_reply(s, "235 2.7.0 Authentication successful");
    } else {
        s->state = STATE_READY;
        log_warn("smtpd: %s: authentication failed for %s", s->peer_text, j->user);
        if (++s->auth_failures >= SMTPD_MAX_AUTH_FAILURES)
            smtpd_reply_and_close(s, "421 4.7.0 Too many authentication failures");
        else
            smtpd_reply(s, "535 5.7.8 Authentication credentials invalid");
    }
    explicit_bzero(j->password, strlen(j->password));
    free(j->user);
    free(j->password);
    free(j);
    if (!s->dead && s->state != STATE_CLOSING) smtpd_session_process(s);
}

static void auth_start(struct session *s, const char *user, const char *password)
{
    struct auth_job *j = xcalloc(1, sizeof *j);
    j->s = s;
    j->user = xstrdup(user);
    j->password = xstrdup(password);
    s->busy = 1;
    workpool_submit(auth_work, auth_done, j);
}

/* Up to size-1 bytes of untrusted text for a log line, anything unprintable as '?'. */
static const char *printable(const char *in, char *out, size_t size)
{
    size_t i = 0;
    for (; in[i] && i + 1 < size; i++)
        out[i] = in[i] >= 0x20 && in[i] < 0x7f ? in[i] : '?';
    out[i] = '\0';
    return out;
}

/* RFC 4616: [authzid] NUL authcid NUL passwd, no NUL inside the parts. We have no notion of
 * acting for someone else, so an authorization identity other than the authentication
 * identity is refused; without this check "cloud\0loner\0pw" logged in as loner while
 * claiming to be cloud. An empty authzid, or one equal to authcid, means "myself". */
static void auth_plain_response(struct session *s, const char *b64)
{
    unsigned char buf[1024];
    if (strcmp(b64, "*") == 0) {
        s->state = STATE_READY;
        smtpd_reply(s, "501 5.7.0 Authentication cancelled");
        return;
    }
    int n = auth_base64_decode(b64, buf, sizeof buf);
    const unsigned char *user = n > 0 ? memchr(buf, '\0', (size_t)n) : NULL;
    const unsigned char *pass = user ? memchr(user + 1, '\0', (size_t)(buf + n - user - 1)) : NULL;
    if (!user || !pass || memchr(pass + 1, '\0', (size_t)(buf + n - pass - 1))) {
        explicit_bzero(buf, sizeof buf);
        s->state = STATE_READY;
        smtpd_reply(s, "501 5.5.2 Malformed AUTH PLAIN response");
        return;
    }
    const char *authzid = (const char *)buf;
    if (authzid[0] && strcmp(authzid, (const char *)user + 1) != 0) {
        char z[128], c[128];
        log_warn("smtpd: %s: authentication refused: authorization identity \"%s\" differs "
                 "from authentication identity \"%s\"",
                 s->peer_text, printable(authzid, z, sizeof z),
                 printable((const char *)user + 1, c, sizeof c));
        explicit_bzero(buf, sizeof buf);
        s->state = STATE_READY;
        if (++s->auth_failures >= SMTPD_MAX_AUTH_FAILURES)
            smtpd_reply_and_close(s, "421 4.7.0 Too many authentication failures");
        else
            smtpd_reply(s, "535 5.7.8 Authentication credentials invalid: no authorization to "
                           "act as another identity");
        return;
    }
    auth_start(s, (const char *)user + 1, (const char *)pass + 1);
    explicit_bzero(buf, sizeof buf);
}

void smtpd_cmd_auth(struct session *s, const char *args)
{
    if (!smtpd_auth_offered(s)) {
        if (!s->tls && smtpd_users)
            smtpd_reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
        else if (s->auth_user)
            smtpd_reply(s, "503 5.5.1 Already authenticated");
        else
            smtpd_reply(s, "503 5.5.1 AUTH not available");
        return;
    }
    if (s->state != STATE_READY) {
        smtpd_reply(s, "503 5.5.1 AUTH not allowed during a mail transaction");
        return;
    }
    char mech[32] = "";
    const char *initial = NULL;
    size_t n = strcspn(args, " ");
    if (n < sizeof mech) {
        memcpy(mech, args, n);
        mech[n] = '\0';
    }
    if (args[n] == ' ') initial = args + n + 1;
    if (strcasecmp(mech, "PLAIN") == 0) {
        if (initial) {
            auth_plain_response(s, initial);
        } else {
            s->state = STATE_AUTH_PLAIN;
            smtpd_reply(s, "334 ");
        }
    } else if (strcasecmp(mech, "LOGIN") == 0) {
        if (initial) {
            unsigned char user[256];
            if (auth_base64_decode(initial, user, sizeof user) < 0) {
                smtpd_reply(s, "501 5.5.2 Malformed AUTH LOGIN response");
                return;
            }
            snprintf(s->auth_login_user, sizeof s->auth_login_user, "%s", user);
            s->state = STATE_AUTH_LOGIN_PASS;
            smtpd_reply(s, "334 UGFzc3dvcmQ6");
        } else {
            s->state = STATE_AUTH_LOGIN_USER;
            smtpd_reply(s, "334 VXNlcm5hbWU6");
        }
    } else {
        smtpd_reply(s, "504 5.5.4 Unrecognized authentication mechanism");
    }
}

void smtpd_auth_continue(struct session *s, const char *line)
{
    if (s->state == STATE_AUTH_PLAIN) {
        auth_plain_response(s, line);
        return;
    }
    if (strcmp(line, "*") == 0) {
        s->state = STATE_READY;
        smtpd_reply(s, "501 5.7.0 Authentication cancelled");
        return;
    }
    unsigned char buf[256];
    if (auth_base64_decode(line, buf, sizeof buf) < 0) {
        s->state = STATE_READY;
        smtpd_reply(s, "501 5.5.2 Malformed AUTH LOGIN response");
        return;
    }
    if (s->state == STATE_AUTH_LOGIN_USER) {
        snprintf(s->auth_login_user, sizeof s->auth_login_user, "%s", buf);
        s->state = STATE_AUTH_LOGIN_PASS;
        smtpd_reply(s, "334 UGFzc3dvcmQ6");
    } else {
        auth_start(s, s->auth_login_user, (const char *)buf);
        explicit_bzero(buf, sizeof buf);
    }
}
