/* rua_xml.c - parses one DMARC aggregate report (RFC 7489 appendix C) with libxml2 and checks
 * it fully before anyone stores it. Hostile input is the normal case here: a document with a
 * DOCTYPE is refused the moment the parser meets it (so no entity is ever declared, expanded
 * or fetched), the network and every external loader are off, libxml2's default depth and
 * text limits stay on, and each field is length-checked. Called by rua.c. */
#include "report/rua_internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#include "common/util.h"

/* Longest text accepted in any one field (org names, domains, report ids, auth results). */
#define RUA_FIELD_MAX 1024

/* What the SAX hooks saw; ctxt->_private points here during the parse. */
struct rua_parse_state {
    int doctype;
    int entity;
    int error_line; /* the first error libxml2 reported (later ones are often consequences) */
    char error[200];
};

static void rua_sax_internal_subset(void *ctx, const xmlChar *name, const xmlChar *external_id,
                                    const xmlChar *system_id)
{
    (void)name;
    (void)external_id;
    (void)system_id;
    xmlParserCtxtPtr ctxt = ctx;
    struct rua_parse_state *st = ctxt->_private;
    st->doctype = 1;
    xmlStopParser(ctxt);
}

static void rua_sax_entity_decl(void *ctx, const xmlChar *name, int type, const xmlChar *public_id,
                                const xmlChar *system_id, xmlChar *content)
{
    (void)name;
    (void)type;
    (void)public_id;
    (void)system_id;
    (void)content;
    xmlParserCtxtPtr ctxt = ctx;
    struct rua_parse_state *st = ctxt->_private;
    st->entity = 1;
    xmlStopParser(ctxt);
}

/* Installed while we parse: nothing outside the document itself is ever read. */
static xmlParserInputPtr rua_no_loader(const char *url, const char *id, xmlParserCtxtPtr ctxt)
{
    (void)url;
    (void)id;
    (void)ctxt;
    return NULL;
}

/* Structured error handler: keeps the first error, prints nothing. */
static void rua_sax_error(void *ctx, xmlErrorPtr e)
{
    xmlParserCtxtPtr ctxt = ctx;
    struct rua_parse_state *st = ctxt != NULL ? ctxt->_private : NULL;
    if (st == NULL || e == NULL || e->level < XML_ERR_ERROR || st->error[0] != '\0') return;
    snprintf(st->error, sizeof st->error, "%s", e->message != NULL ? e->message : "error");
    size_t n = strlen(st->error);
    while (n > 0 && (st->error[n - 1] == '\n' || st->error[n - 1] == '\r'))
        st->error[--n] = '\0';
    st->error_line = e->line;
}

static void rua_silent(void *ctx, const char *msg, ...)
{
    (void)ctx;
    (void)msg;
}

/* ---- tree helpers ---------------------------------------------------------------------- */

static int rua_is(const xmlNode *n, const char *name)
{
    return n != NULL && n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0;
}

/* First element child named name (namespace ignored: DMARCbis reports add one). */
static xmlNode *rua_child(const xmlNode *parent, const char *name)
{
    if (parent == NULL) return NULL;
    for (xmlNode *c = parent->children; c != NULL; c = c->next)
        if (rua_is(c, name)) return c;
    return NULL;
}

/* The trimmed text of node, control characters replaced by '?'. NULL when node is NULL or
 * the text is empty. -1 (with err) when it is longer than RUA_FIELD_MAX. */
static int rua_text(const xmlNode *node, const char *what, char **out, char *err, size_t errlen)
{
    *out = NULL;
    if (node == NULL) return 0;
    xmlChar *content = xmlNodeGetContent(node);
    if (content == NULL) return 0;
    const char *s = (const char *)content;
    size_t len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        len--;
    while (len > 0 && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    if (len > RUA_FIELD_MAX) {
        snprintf(err, errlen, "%s is %zu characters long (limit %d)", what, len, RUA_FIELD_MAX);
        xmlFree(content);
        return -1;
    }
    if (len > 0) {
        char *copy = xstrndup(s, len);
        for (char *p = copy; *p != '\0'; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
        *out = copy;
    }
    xmlFree(content);
    return 0;
}

/* Text of parent/name; required fields fail when missing or empty. */
static int rua_field(const xmlNode *parent, const char *name, int required, char **out, char *err,
                     size_t errlen)
{
    if (rua_text(rua_child(parent, name), name, out, err, errlen) != 0) return -1;
    if (*out == NULL && required) {
        snprintf(err, errlen, "<%s> is missing or empty", name);
        return -1;
    }
    return 0;
}

static void rua_lower(char *s)
{
    for (; s != NULL && *s != '\0'; s++)
        *s = (char)tolower((unsigned char)*s);
}

static int rua_parse_int(const char *text, int64_t min, int64_t max, int64_t *out)
{
    if (text == NULL || text[0] == '\0') return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < min || v > max) return -1;
    *out = v;
    return 0;
}

/* s must be one of the words in the NULL-terminated list (case-insensitive; lowered). */
static int rua_enum(char *s, const char *const *words)
{
    rua_lower(s);
    for (size_t i = 0; words[i] != NULL; i++)
        if (s != NULL && strcmp(s, words[i]) == 0) return 0;
    return -1;
}

static const char *const rua_dispositions[] = {"none", "quarantine", "reject", NULL};
static const char *const rua_evals[] = {"pass", "fail", NULL};
static const char *const rua_policies[] = {"none", "quarantine", "reject", NULL};
static const char *const rua_alignments[] = {"r", "s", NULL};

/* Normalises an IPv4 or IPv6 address; IPv4-mapped IPv6 becomes IPv4. */
static int rua_normalise_ip(const char *text, char **out)
{
    unsigned char a[16];
    char buf[INET6_ADDRSTRLEN];
    if (inet_pton(AF_INET, text, a) == 1) {
        inet_ntop(AF_INET, a, buf, sizeof buf);
    } else if (inet_pton(AF_INET6, text, a) == 1) {
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, 12) == 0)
            inet_ntop(AF_INET, a + 12, buf, sizeof buf);
        else
            inet_ntop(AF_INET6, a, buf, sizeof buf);
    } else {
        return -1;
    }
    *out = xstrdup(buf);
    return 0;
}

/* ---- the report ------------------------------------------------------------------------ */

void rua_report_free(struct rua_report *rep)
{
    if (rep == NULL) return;
    free(rep->org_name);
    free(rep->email);
    free(rep->report_id);
    free(rep->domain);
    free(rep->adkim);
    free(rep->aspf);
    free(rep->p);
    free(rep->sp);
    for (size_t i = 0; i < rep->n_rows; i++) {
        struct rua_row *r = &rep->rows[i];
        free(r->source_ip);
        free(r->disposition);
        free(r->dkim_eval);
        free(r->spf_eval);
        free(r->header_from);
        free(r->envelope_from);
        free(r->dkim_results);
        free(r->spf_results);
        free(r->spf_raw);
    }
    free(rep->rows);
    memset(rep, 0, sizeof *rep);
}

static int rua_parse_metadata(const xmlNode *root, struct rua_report *rep, char *err, size_t errlen)
{
    const xmlNode *meta = rua_child(root, "report_metadata");
    if (meta == NULL) {
        snprintf(err, errlen, "<report_metadata> is missing");
        return -1;
    }
    if (rua_field(meta, "org_name", 1, &rep->org_name, err, errlen) != 0 ||
        rua_field(meta, "email", 0, &rep->email, err, errlen) != 0 ||
        rua_field(meta, "report_id", 1, &rep->report_id, err, errlen) != 0)
        return -1;
    const xmlNode *range = rua_child(meta, "date_range");
    char *begin = NULL, *end = NULL;
    int rc = -1;
    if (range == NULL) {
        snprintf(err, errlen, "<date_range> is missing");
    } else if (rua_field(range, "begin", 1, &begin, err, errlen) == 0 &&
               rua_field(range, "end", 1, &end, err, errlen) == 0) {
        /* up to the year 9999: a bigger number is not a date */
        if (rua_parse_int(begin, 0, 253402300799LL, &rep->date_begin) != 0 ||
            rua_parse_int(end, 0, 253402300799LL, &rep->date_end) != 0)
            snprintf(err, errlen, "<date_range> begin/end are not unix times");
        else if (rep->date_end < rep->date_begin)
            snprintf(err, errlen, "<date_range> ends before it begins");
        else
            rc = 0;
    }
    free(begin);
    free(end);
    return rc;
}

static int rua_parse_policy(const xmlNode *root, struct rua_report *rep, char *err, size_t errlen)
{
    const xmlNode *pol = rua_child(root, "policy_published");
    if (pol == NULL) {
        snprintf(err, errlen, "<policy_published> is missing");
        return -1;
    }
    char *pct = NULL;
    if (rua_field(pol, "domain", 1, &rep->domain, err, errlen) != 0 ||
        rua_field(pol, "adkim", 0, &rep->adkim, err, errlen) != 0 ||
        rua_field(pol, "aspf", 0, &rep->aspf, err, errlen) != 0 ||
        rua_field(pol, "p", 1, &rep->p, err, errlen) != 0 ||
        rua_field(pol, "sp", 0, &rep->sp, err, errlen) != 0 ||
        rua_field(pol, "pct", 0, &pct, err, errlen) != 0)
        return -1;
    rua_lower(rep->domain);
    int rc = -1;
    int64_t v = -1;
    if ((rep->adkim != NULL && rua_enum(rep->adkim, rua_alignments) != 0) ||
        (rep->aspf != NULL && rua_enum(rep->aspf, rua_alignments) != 0))
        snprintf(err, errlen, "<policy_published> adkim/aspf must be r or s");
    else if (rua_enum(rep->p, rua_policies) != 0 ||
             (rep->sp != NULL && rua_enum(rep->sp, rua_policies) != 0))
        snprintf(err, errlen, "<policy_published> p/sp must be none, quarantine or reject");
    else if (pct != NULL && rua_parse_int(pct, 0, 100, &v) != 0)
        snprintf(err, errlen, "<policy_published> pct \"%s\" is not 0..100", pct);
    else
        rc = 0;
    rep->pct = (int)v;
    free(pct);
    return rc;
}

/* "d=example.org s=sel1 pass; d=other.net fail" from the <dkim> (or <spf>) children; raw
 * (when not NULL) gets the first result whose scope is mfrom or absent. */
static int rua_auth_list(const xmlNode *auth, const char *kind, char **out, char **raw, char *err,
                         size_t errlen)
{
    struct strbuf sb = STRBUF_INIT;
    int rc = 0;
    *out = NULL;
    for (xmlNode *c = auth != NULL ? auth->children : NULL; c != NULL && rc == 0; c = c->next) {
        if (!rua_is(c, kind)) continue;
        char *domain = NULL, *extra = NULL, *result = NULL;
        int is_dkim = strcmp(kind, "dkim") == 0;
        if (rua_field(c, "domain", 0, &domain, err, errlen) != 0 ||
            rua_field(c, is_dkim ? "selector" : "scope", 0, &extra, err, errlen) != 0 ||
            rua_field(c, "result", 1, &result, err, errlen) != 0) {
            rc = -1;
        } else {
            rua_lower(domain);
            rua_lower(result);
            if (sb.len > 0) strbuf_puts(&sb, "; ");
            strbuf_printf(&sb, "d=%s", domain != NULL ? domain : "?");
            if (extra != NULL) strbuf_printf(&sb, " %s=%s", is_dkim ? "s" : "scope", extra);
            strbuf_printf(&sb, " %s", result);
            if (raw != NULL && *raw == NULL && (extra == NULL || strcmp(extra, "mfrom") == 0))
                *raw = xstrdup(result);
            if (sb.len > 16 * RUA_FIELD_MAX) {
                snprintf(err, errlen, "too many <%s> results", kind);
                rc = -1;
            }
        }
        free(domain);
        free(extra);
        free(result);
    }
    if (rc == 0 && sb.len > 0) *out = strbuf_detach(&sb, NULL);
    strbuf_free(&sb);
    return rc;
}

static int rua_parse_record(const xmlNode *rec, struct rua_row *r, char *err, size_t errlen)
{
    const xmlNode *row = rua_child(rec, "row");
    const xmlNode *eval = rua_child(row, "policy_evaluated");
    const xmlNode *ids = rua_child(rec, "identifiers");
    if (row == NULL || eval == NULL) {
        snprintf(err, errlen, "<row> or <policy_evaluated> is missing");
        return -1;
    }
    char *ip = NULL, *count = NULL;
    if (rua_field(row, "source_ip", 1, &ip, err, errlen) != 0) return -1;
    int rc = -1;
    if (rua_normalise_ip(ip, &r->source_ip) != 0) {
        snprintf(err, errlen, "source_ip \"%s\" is not an IP address", ip);
        goto done;
    }
    if (rua_field(row, "count", 1, &count, err, errlen) != 0) goto done;
    if (rua_parse_int(count, 0, INT64_C(1) << 40, &r->count) != 0) {
        snprintf(err, errlen, "count \"%s\" is not a number of messages", count);
        goto done;
    }
    if (rua_field(eval, "disposition", 1, &r->disposition, err, errlen) != 0 ||
        rua_field(eval, "dkim", 1, &r->dkim_eval, err, errlen) != 0 ||
        rua_field(eval, "spf", 1, &r->spf_eval, err, errlen) != 0)
        goto done;
    if (rua_enum(r->disposition, rua_dispositions) != 0) {
        snprintf(err, errlen, "disposition \"%s\" is not none, quarantine or reject",
                 r->disposition);
        goto done;
    }
    if (rua_enum(r->dkim_eval, rua_evals) != 0 || rua_enum(r->spf_eval, rua_evals) != 0) {
        snprintf(err, errlen, "policy_evaluated dkim/spf must be pass or fail");
        goto done;
    }
    if (rua_field(ids, "header_from", 0, &r->header_from, err, errlen) != 0 ||
        rua_field(ids, "envelope_from", 0, &r->envelope_from, err, errlen) != 0)
        goto done;
    rua_lower(r->header_from);
    const xmlNode *auth = rua_child(rec, "auth_results");
    if (rua_auth_list(auth, "dkim", &r->dkim_results, NULL, err, errlen) != 0 ||
        rua_auth_list(auth, "spf", &r->spf_results, &r->spf_raw, err, errlen) != 0)
        goto done;
    rc = 0;
done:
    free(ip);
    free(count);
    return rc;
}

static int rua_parse_tree(const xmlNode *root, struct rua_report *rep, char *err, size_t errlen)
{
    if (root == NULL || !rua_is(root, "feedback")) {
        snprintf(err, errlen, "not a DMARC aggregate report (root element is <%s>, not <feedback>)",
                 root != NULL ? (const char *)root->name : "");
        return -1;
    }
    if (rua_parse_metadata(root, rep, err, errlen) != 0 ||
        rua_parse_policy(root, rep, err, errlen) != 0)
        return -1;
    size_t cap = 0;
    for (xmlNode *c = root->children; c != NULL; c = c->next) {
        if (!rua_is(c, "record")) continue;
        if (rep->n_rows == cap) {
            cap = cap ? cap * 2 : 16;
            rep->rows = xrealloc(rep->rows, cap * sizeof *rep->rows);
        }
        struct rua_row *r = &rep->rows[rep->n_rows++];
        memset(r, 0, sizeof *r);
        char why[256];
        if (rua_parse_record(c, r, why, sizeof why) != 0) {
            snprintf(err, errlen, "record %zu (line %ld): %s", rep->n_rows, xmlGetLineNo(c), why);
            return -1;
        }
        if (rep->messages > INT64_MAX / 2 - r->count) {
            snprintf(err, errlen, "record %zu: message counts overflow", rep->n_rows);
            return -1;
        }
        rep->messages += r->count;
    }
    if (rep->n_rows == 0) {
        snprintf(err, errlen, "report has no <record>");
        return -1;
    }
    return 0;
}

/* libxml2's message for the parse failure, one line: the first error it reported. */
static void rua_xml_error(xmlParserCtxtPtr ctxt, const struct rua_parse_state *st, char *err,
                          size_t errlen)
{
    if (st->error[0] != '\0') {
        snprintf(err, errlen, "malformed XML at line %d: %s", st->error_line, st->error);
        return;
    }
    const xmlError *e = xmlCtxtGetLastError(ctxt);
    if (e == NULL || e->message == NULL) {
        snprintf(err, errlen, "malformed XML");
        return;
    }
    char msg[300];
    snprintf(msg, sizeof msg, "%s", e->message);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    snprintf(err, errlen, "malformed XML at line %d: %s", e->line, msg);
}

int rua_parse(const char *data, size_t len, struct rua_report *rep, char *err, size_t errlen)
{
    memset(rep, 0, sizeof *rep);
    rep->pct = -1;
    if (len > INT32_MAX) {
        snprintf(err, errlen, "document too large");
        return -1;
    }
    xmlInitParser();
    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    if (ctxt == NULL) {
        snprintf(err, errlen, "libxml2: cannot create a parser");
        return -1;
    }
    struct rua_parse_state st;
    memset(&st, 0, sizeof st);
    ctxt->_private = &st;
    ctxt->sax->internalSubset = rua_sax_internal_subset;
    ctxt->sax->entityDecl = rua_sax_entity_decl;
    ctxt->sax->externalSubset = NULL;
    ctxt->sax->serror = rua_sax_error;

    xmlExternalEntityLoader old_loader = xmlGetExternalEntityLoader();
    xmlGenericErrorFunc old_error = xmlGenericError;
    void *old_error_ctx = xmlGenericErrorContext;
    xmlSetExternalEntityLoader(rua_no_loader);
    xmlSetGenericErrorFunc(NULL, rua_silent);
    /* Never XML_PARSE_NOENT, XML_PARSE_DTDLOAD, XML_PARSE_HUGE or XINCLUDE. */
    int options = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_NOCDATA;
    xmlDocPtr doc = xmlCtxtReadMemory(ctxt, data, (int)len, "rua.xml", NULL, options);
    xmlSetGenericErrorFunc(old_error_ctx, old_error);
    xmlSetExternalEntityLoader(old_loader);

    int rc = -1;
    if (st.doctype || st.entity || (doc != NULL && (doc->intSubset || doc->extSubset)))
        snprintf(err, errlen,
                 "the document has a DOCTYPE (DTDs and entity declarations are never "
                 "accepted in a DMARC report)");
    else if (doc == NULL || !ctxt->wellFormed)
        rua_xml_error(ctxt, &st, err, errlen);
    else if (rua_parse_tree(xmlDocGetRootElement(doc), rep, err, errlen) == 0)
        rc = 0;
    if (doc != NULL) xmlFreeDoc(doc);
    xmlFreeParserCtxt(ctxt);
    if (rc != 0) rua_report_free(rep);
    return rc;
}
