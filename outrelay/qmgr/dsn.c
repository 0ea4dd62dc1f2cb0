/* dsn.c - builds RFC 3464 delivery status notifications as complete RFC 5322 messages.
 * Pure: no I/O besides reading the clock and the kernel's random source; any thread may call it.
 * It never emits a line longer than 998 octets or a bare CR/LF, and cleans every text that came
 * from outside (remote replies, addresses) so it cannot inject header lines. Called by the queue
 * manager when recipients fail permanently or expire, or are still delayed after
 * delivery.delay_warning; it spools the result with the null sender. */
#include "qmgr/dsn.h"

#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>

#include "common/clock.h"
#include "common/util.h"

/* Bigger originals are returned as headers only (RFC 3462 text/rfc822-headers). */
#define DSN_MAX_ORIGINAL (64 * 1024)
/* Fold generated lines here when whitespace allows; never let any line pass 998 octets. */
#define DSN_FOLD_AT 78
#define DSN_LINE_MAX 998

enum dsn_charset { DSN_KEEP_8BIT, DSN_ASCII_ONLY };

static atomic_uint_fast64_t dsn_counter;

/* 64 unpredictable bits; falls back to clock and counter when getrandom() cannot answer. */
static uint64_t dsn_random64(void)
{
    uint64_t r;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r) return r;
    r = (uint64_t)clock_now_us() * 0x9E3779B97F4A7C15ull;
    return r ^ (atomic_fetch_add(&dsn_counter, 1) << 32);
}

/* ---- cleaning and folding ---------------------------------------------------------------- */

/* Appends s with controls (CR, LF, TAB, ...) turned into spaces, runs of spaces collapsed and
 * both ends trimmed; with DSN_ASCII_ONLY, 8-bit bytes become '?'. */
static void dsn_put_clean(struct strbuf *out, const char *s, enum dsn_charset charset)
{
    int pending_space = 0;
    size_t start = out->len;
    if (s == NULL) return;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        unsigned char c = *p;
        if (c <= 0x20 || c == 0x7f) {
            pending_space = 1;
            continue;
        }
        if (c >= 0x80 && charset == DSN_ASCII_ONLY) c = '?';
        if (pending_space && out->len > start) strbuf_puts(out, " ");
        pending_space = 0;
        strbuf_append(out, &c, 1);
    }
}

/* A host name fit for "MAILER-DAEMON@host" and Message-ID right-hand sides. */
static void dsn_put_host(struct strbuf *out, const char *host)
{
    size_t start = out->len;
    for (const char *p = host != NULL ? host : ""; *p != '\0'; p++) {
        char c = *p;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr(".-_[]:", c) != NULL)
            strbuf_append(out, &c, 1);
    }
    if (out->len == start) strbuf_puts(out, "localhost");
}

enum dsn_fold { DSN_FOLD_FIELD, DSN_WRAP_TEXT };

/* Writes one logical line (no CR/LF inside, single spaces) followed by CRLF, broken before a
 * space once DSN_FOLD_AT is reached. DSN_FOLD_FIELD keeps that space at the start of the next
 * line (RFC 5322 folding, so unfolding restores the value); DSN_WRAP_TEXT drops it (plain word
 * wrap for people). A word too long for DSN_LINE_MAX is split hard; a field continuation then
 * starts with an inserted space. */
static void dsn_put_folded(struct strbuf *out, const char *line, size_t len, enum dsn_fold fold)
{
    size_t col = 0, pos = 0;
    while (pos < len) {
        size_t word_end = pos;
        while (word_end < len && line[word_end] != ' ')
            word_end++;
        size_t word_len = word_end - pos;
        if (col > 0) {
            if (col + 1 + word_len > DSN_FOLD_AT) {
                strbuf_puts(out, "\r\n");
                col = 0;
            }
            if (col > 0 || fold == DSN_FOLD_FIELD) {
                strbuf_puts(out, " ");
                col++;
            }
        }
        while (word_len > 0) {
            size_t room = DSN_LINE_MAX - col;
            size_t chunk = word_len < room ? word_len : room;
            strbuf_append(out, line + pos, chunk);
            col += chunk;
            pos += chunk;
            word_len -= chunk;
            if (word_len > 0) {
                strbuf_puts(out, fold == DSN_FOLD_FIELD ? "\r\n " : "\r\n");
                col = fold == DSN_FOLD_FIELD ? 1 : 0;
            }
        }
        while (pos < len && line[pos] == ' ')
            pos++;
    }
    strbuf_puts(out, "\r\n");
}

/* "Name: value" with value cleaned, folded. Nothing when value is NULL. */
static void dsn_put_field(struct strbuf *out, const char *name, const char *prefix,
                          const char *value, enum dsn_charset charset)
{
    if (value == NULL) return;
    struct strbuf line = STRBUF_INIT;
    strbuf_printf(&line, "%s: %s", name, prefix != NULL ? prefix : "");
    dsn_put_clean(&line, value, charset);
    dsn_put_folded(out, line.data, line.len, DSN_FOLD_FIELD);
    strbuf_free(&line);
}

static void dsn_put_date_field(struct strbuf *out, const char *name, int64_t when)
{
    char date[64];
    if (when <= 0) return;
    util_rfc5322_date(when, date, sizeof date);
    strbuf_printf(out, "%s: %s\r\n", name, date);
}

/* ---- the original message ---------------------------------------------------------------- */

/* One line of the original: [start, start+len) without its terminator (CRLF, LF or CR). */
static size_t dsn_next_line(const char *data, size_t size, size_t pos, size_t *len)
{
    size_t end = pos;
    while (end < size && data[end] != '\r' && data[end] != '\n')
        end++;
    *len = end - pos;
    if (end < size && data[end] == '\r') end++;
    if (end < size && data[end] == '\n') end++;
    return end;
}

/* 0 when the original can travel whole as message/rfc822: no NUL, no line over 998. */
static int dsn_original_needs_trimming(const char *data, size_t size)
{
    if (memchr(data, '\0', size) != NULL) return 1;
    for (size_t pos = 0, len; pos < size;) {
        pos = dsn_next_line(data, size, pos, &len);
        if (len > DSN_LINE_MAX) return 1;
    }
    return 0;
}

static int dsn_has_8bit(const char *data, size_t size)
{
    for (size_t i = 0; i < size; i++)
        if ((unsigned char)data[i] >= 0x80) return 1;
    return 0;
}

/* Copies the original (or its header section) with CRLF line ends; NULs become spaces and
 * over-long lines are split with a folding space so no line passes 998 octets. */
static void dsn_put_original(struct strbuf *out, const char *data, size_t size, int headers_only)
{
    for (size_t pos = 0, len; pos < size;) {
        size_t start = pos;
        pos = dsn_next_line(data, size, pos, &len);
        if (headers_only && len == 0) break;
        for (size_t done = 0; done < len || len == 0;) {
            size_t chunk = len - done;
            size_t room = done == 0 ? DSN_LINE_MAX : DSN_LINE_MAX - 1;
            if (chunk > room) chunk = room;
            if (done > 0) strbuf_puts(out, " ");
            for (size_t i = 0; i < chunk; i++) {
                char c = data[start + done + i];
                strbuf_append(out, c == '\0' ? " " : &c, 1);
            }
            done += chunk;
            strbuf_puts(out, "\r\n");
            if (len == 0) break;
        }
    }
}

/* ---- the three parts --------------------------------------------------------------------- */

static int dsn_all_delayed(const struct dsn_request *req)
{
    if (req->n_recipients == 0) return 0;
    for (size_t i = 0; i < req->n_recipients; i++) {
        const char *action = req->recipients[i].action;
        if (action == NULL || strcmp(action, "delayed") != 0) return 0;
    }
    return 1;
}

static const char *dsn_action(const struct dsn_recipient *rcpt)
{
    return rcpt->action != NULL ? rcpt->action : "failed";
}

static const char *dsn_status(const struct dsn_recipient *rcpt)
{
    if (rcpt->status != NULL && rcpt->status[0] != '\0') return rcpt->status;
    return strcmp(dsn_action(rcpt), "delayed") == 0 ? "4.0.0" : "5.0.0";
}

/* Writes a paragraph: cleaned text folded into lines, then an empty line. */
static void dsn_put_paragraph(struct strbuf *out, const char *text)
{
    struct strbuf line = STRBUF_INIT;
    dsn_put_clean(&line, text, DSN_KEEP_8BIT);
    dsn_put_folded(out, line.data != NULL ? line.data : "", line.len, DSN_WRAP_TEXT);
    strbuf_puts(out, "\r\n");
    strbuf_free(&line);
}

static void dsn_build_text(const struct dsn_request *req, int delayed, int attached,
                           int headers_only, struct strbuf *out)
{
    struct strbuf para = STRBUF_INIT;
    strbuf_puts(&para, "This is the mail delivery system at ");
    dsn_put_host(&para, req->reporting_mta);
    strbuf_puts(&para, ".");
    dsn_put_paragraph(out, strbuf_str(&para));
    strbuf_reset(&para);

    if (delayed)
        strbuf_puts(&para, "Your message has not yet been delivered to the recipients listed "
                           "below. Delivery will be retried automatically; you do not need to "
                           "send the message again. You will be told if it finally fails.");
    else
        strbuf_puts(&para, "Your message could not be delivered to the recipients listed "
                           "below. The reasons given by the receiving systems are shown with "
                           "each recipient.");
    if (attached)
        strbuf_puts(&para, headers_only ? " The header section of your message is attached."
                                        : " A copy of your message is attached.");
    dsn_put_paragraph(out, strbuf_str(&para));
    strbuf_reset(&para);

    if (req->queue_id != NULL) {
        strbuf_puts(&para, "Queue ID of your message at this system: ");
        strbuf_puts(&para, req->queue_id);
        dsn_put_paragraph(out, strbuf_str(&para));
        strbuf_reset(&para);
    }

    for (size_t i = 0; i < req->n_recipients; i++) {
        const struct dsn_recipient *rcpt = &req->recipients[i];
        strbuf_puts(&para, "<");
        strbuf_puts(&para, rcpt->address != NULL ? rcpt->address : "");
        strbuf_printf(&para, ">: %s (status %s).", dsn_action(rcpt), dsn_status(rcpt));
        if (rcpt->diagnostic != NULL) {
            strbuf_puts(&para, " ");
            if (rcpt->remote_mta != NULL)
                strbuf_printf(&para, "The server %s", rcpt->remote_mta);
            else
                strbuf_puts(&para, "The receiving system");
            strbuf_printf(&para, " replied: %s", rcpt->diagnostic);
        } else if (rcpt->remote_mta != NULL) {
            strbuf_printf(&para, " Last server tried: %s.", rcpt->remote_mta);
        }
        dsn_put_paragraph(out, strbuf_str(&para));
        strbuf_reset(&para);
    }
    strbuf_free(&para);
}

static void dsn_build_status(const struct dsn_request *req, struct strbuf *out)
{
    struct strbuf host = STRBUF_INIT;
    dsn_put_host(&host, req->reporting_mta);
    dsn_put_field(out, "Reporting-MTA", "dns; ", strbuf_str(&host), DSN_ASCII_ONLY);
    strbuf_free(&host);
    dsn_put_field(out, "Original-Envelope-Id", NULL, req->envid, DSN_ASCII_ONLY);
    dsn_put_date_field(out, "Arrival-Date", req->arrival);

    for (size_t i = 0; i < req->n_recipients; i++) {
        const struct dsn_recipient *rcpt = &req->recipients[i];
        strbuf_puts(out, "\r\n");
        dsn_put_field(out, "Final-Recipient", "rfc822; ",
                      rcpt->address != NULL ? rcpt->address : "", DSN_ASCII_ONLY);
        if (rcpt->orcpt != NULL && rcpt->orcpt[0] != '\0')
            dsn_put_field(out, "Original-Recipient", strchr(rcpt->orcpt, ';') ? "" : "rfc822; ",
                          rcpt->orcpt, DSN_ASCII_ONLY);
        dsn_put_field(out, "Action", NULL, dsn_action(rcpt), DSN_ASCII_ONLY);
        dsn_put_field(out, "Status", NULL, dsn_status(rcpt), DSN_ASCII_ONLY);
        if (rcpt->remote_mta != NULL && rcpt->remote_mta[0] != '\0')
            dsn_put_field(out, "Remote-MTA", "dns; ", rcpt->remote_mta, DSN_ASCII_ONLY);
        if (rcpt->diagnostic != NULL && rcpt->diagnostic[0] != '\0')
            dsn_put_field(out, "Diagnostic-Code", "smtp; ", rcpt->diagnostic, DSN_ASCII_ONLY);
        dsn_put_date_field(out, "Last-Attempt-Date", rcpt->last_attempt);
        /* RFC 3464 2.3.9: only for a delayed recipient */
        if (strcmp(dsn_action(rcpt), "delayed") == 0)
            dsn_put_date_field(out, "Will-Retry-Until", rcpt->will_retry_until);
    }
}

/* A boundary that occurs in none of the parts (RFC 2046 5.1.1). */
static void dsn_choose_boundary(struct strbuf *boundary, const struct strbuf *const *parts,
                                size_t n_parts, const char *original, size_t original_len)
{
    for (;;) {
        strbuf_reset(boundary);
        strbuf_printf(boundary, "=_outrelay_dsn_%016llx_%llu", (unsigned long long)dsn_random64(),
                      (unsigned long long)atomic_fetch_add(&dsn_counter, 1));
        int clash = original_len > 0 &&
                    memmem(original, original_len, boundary->data, boundary->len) != NULL;
        for (size_t i = 0; i < n_parts && !clash; i++)
            clash = parts[i]->len > 0 &&
                    memmem(parts[i]->data, parts[i]->len, boundary->data, boundary->len) != NULL;
        if (!clash) return;
    }
}

void dsn_build(const struct dsn_request *req, struct strbuf *out)
{
    int delayed = dsn_all_delayed(req);
    const char *original = req->original;
    size_t original_len = original != NULL ? req->original_len : 0;
    int attached = original_len > 0;
    int headers_only = req->headers_only || original_len > DSN_MAX_ORIGINAL ||
                       (attached && dsn_original_needs_trimming(original, original_len));

    struct strbuf text = STRBUF_INIT, status = STRBUF_INIT, copy = STRBUF_INIT;
    struct strbuf boundary = STRBUF_INIT, host = STRBUF_INIT;
    dsn_build_text(req, delayed, attached, headers_only, &text);
    dsn_build_status(req, &status);
    if (attached) dsn_put_original(&copy, original, original_len, headers_only);
    const struct strbuf *parts[] = {&text, &status, &copy};
    dsn_choose_boundary(&boundary, parts, 3, original, original_len);
    dsn_put_host(&host, req->reporting_mta);
    int text_8bit = dsn_has_8bit(text.data, text.len);
    int copy_8bit = dsn_has_8bit(copy.data, copy.len);

    /* Header section. */
    char date[64];
    util_rfc5322_date(clock_now(), date, sizeof date);
    strbuf_printf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", strbuf_str(&host));
    struct strbuf to = STRBUF_INIT;
    strbuf_puts(&to, "To: <");
    dsn_put_clean(&to, req->sender, DSN_KEEP_8BIT);
    strbuf_puts(&to, ">");
    dsn_put_folded(out, to.data, to.len, DSN_FOLD_FIELD);
    strbuf_free(&to);
    strbuf_printf(out, "Subject: %s\r\n",
                  delayed ? "Delayed Mail (still being retried)"
                          : "Undelivered Mail Returned to Sender");
    strbuf_printf(out, "Date: %s\r\n", date);
    strbuf_printf(out, "Message-ID: <%lld.%016llx.%llu@%s>\r\n", (long long)clock_now_us(),
                  (unsigned long long)dsn_random64(),
                  (unsigned long long)atomic_fetch_add(&dsn_counter, 1), strbuf_str(&host));
    strbuf_puts(out, "Auto-Submitted: auto-replied\r\n");
    strbuf_puts(out, "MIME-Version: 1.0\r\n");
    strbuf_printf(out,
                  "Content-Type: multipart/report; report-type=delivery-status;\r\n"
                  "\tboundary=\"%s\"\r\n",
                  strbuf_str(&boundary));
    if (text_8bit || copy_8bit) strbuf_puts(out, "Content-Transfer-Encoding: 8bit\r\n");
    strbuf_puts(out, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

    /* Part 1: for people. */
    strbuf_printf(out, "--%s\r\n", strbuf_str(&boundary));
    strbuf_puts(out, "Content-Description: Notification\r\n");
    strbuf_printf(out, "Content-Type: text/plain; charset=%s\r\n",
                  text_8bit ? "utf-8" : "us-ascii");
    if (text_8bit) strbuf_puts(out, "Content-Transfer-Encoding: 8bit\r\n");
    strbuf_puts(out, "\r\n");
    strbuf_append(out, text.data, text.len);

    /* Part 2: for programs. Its last CRLF belongs to the next delimiter (RFC 2046), so no
     * empty line follows the last recipient block. */
    strbuf_printf(out, "--%s\r\n", strbuf_str(&boundary));
    strbuf_puts(out, "Content-Description: Delivery report\r\n");
    strbuf_puts(out, "Content-Type: message/delivery-status\r\n\r\n");
    strbuf_append(out, status.data, status.len);

    /* Part 3: what was sent. The copy keeps its last CRLF; the delimiter brings its own. */
    if (attached) {
        strbuf_printf(out, "--%s\r\n", strbuf_str(&boundary));
        strbuf_printf(out, "Content-Description: %s\r\n",
                      headers_only ? "Undelivered Message Headers" : "Undelivered Message");
        strbuf_printf(out, "Content-Type: %s\r\n",
                      headers_only ? "text/rfc822-headers" : "message/rfc822");
        if (copy_8bit) strbuf_puts(out, "Content-Transfer-Encoding: 8bit\r\n");
        strbuf_puts(out, "\r\n");
        strbuf_append(out, copy.data, copy.len);
        strbuf_puts(out, "\r\n");
    }
    strbuf_printf(out, "--%s--\r\n", strbuf_str(&boundary));

    strbuf_free(&text);
    strbuf_free(&status);
    strbuf_free(&copy);
    strbuf_free(&boundary);
    strbuf_free(&host);
}
