/* smtpd_auth.c - SMTP AUTH (PLAIN and LOGIN) for smtpd sessions: the AUTH command, the
 * continuation lines, and the password check handed to the workpool (the session is busy
 * until auth_done runs on the loop). Never checks a password on the loop thread. Called from
 * smtpd.c's command dispatch; shares struct session through smtpd_internal.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/util.h"
#include "common/workpool.h"
#include "ingress/auth.h"
#include "ingress/auth_throttle.h"
#include "ingress/smtpd_internal.h"

#define SMTPD_MAX_AUTH_FAILURES 3

struct auth_throttle *smtpd_auth_throttle;

/* A failed attempt is answered late (the n-th failure of this address after n seconds, at most
 * AUTH_THROTTLE_MAX_DELAY): s->late_reply, a string literal. The session is busy meanwhile. */
static void late_reply_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct session *s = arg;
    s->busy = 0;
    if (s->dead) {
        smtpd_session_free(s);
        return;
    }
    if (s->state == STATE_CLOSING) return; /* a write timeout ended the session meanwhile */
    smtpd_reply(s, "%s", s->late_reply);
    if (s->state != STATE_CLOSING) smtpd_session_process(s);
}

/* One failed AUTH: counted for the address across sessions; 421 and close when the session or
 * the address has failed too often, else `reply` after a delay that grows with the failures. */
static void auth_failed(struct session *s, const char *reply)
{
    s->state = STATE_READY;
    int n = auth_throttle_failed(smtpd_auth_throttle, s->peer_text, clock_now());
    if (++s->auth_failures >= SMTPD_MAX_AUTH_FAILURES || n >= AUTH_THROTTLE_LIMIT) {
        if (n >= AUTH_THROTTLE_LIMIT)
            log_warn("smtpd: %s: %d failed AUTH attempts in %d minutes; AUTH refused from this "
                     "address for the rest of the window",
                     s->peer_text, n, AUTH_THROTTLE_WINDOW / 60);
        smtpd_reply_and_close(s, "421 4.7.0 Too many authentication failures");
        return;
    }
    s->late_reply = reply;
    s->busy = 1;
    struct timeval tv = {n < AUTH_THROTTLE_MAX_DELAY ? n : AUTH_THROTTLE_MAX_DELAY, 0};
    event_base_once(smtpd_event_base(), -1, EV_TIMEOUT, late_reply_cb, s, &tv);
}

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
    } else if (s->state == STATE_CLOSING) { /* a write timeout ended the session meanwhile */
    } else if (j->ok) {
        s->auth_user = xstrdup(j->user);
        const struct origin_conf *o = smtpd_origin_for_user(j->user);
        if (o) s->origin = o;
        log_info("smtpd: %s: authenticated as %s, origin=%s", s->peer_text, j->user,
                 s->origin ? s->origin->name : "(none)");
        s->state = STATE_READY;
        smtpd_reply(s, "235 2.7.0 Authentication successful");
    } else {
        log_warn("smtpd: %s: authentication failed for %s", s->peer_text, j->user);
        auth_failed(s, "535 5.7.8 Authentication credentials invalid");
    }
    explicit_bzero(j->password, strlen(j->password));
    free(j->user);
    free(j->password);
    free(j);
    if (!s->dead && !s->busy && s->state != STATE_CLOSING) smtpd_session_process(s);
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
        auth_failed(s, "535 5.7.8 Authentication credentials invalid: no authorization to act "
                       "as another identity");
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
    if (auth_throttle_failures(smtpd_auth_throttle, s->peer_text, clock_now()) >=
        AUTH_THROTTLE_LIMIT) {
        smtpd_reply_and_close(s, "421 4.7.0 Too many authentication failures from this address; "
                                 "try again later");
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
