/* keystore.c - the DKIM private keys on disk: loading <keys>/<domain>/<selector>.<alg>.pem
 * (mode 0600/0400 only, type and size checked with OpenSSL), choosing the keys for a From domain,
 * generating new keys (`outrelay keygen`) and printing the TXT record to publish. The only code
 * that reads or writes key files. Loading happens at start/reload, never on the event loop. */
#include "sign/dkim.h"
#include "sign/keycache.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/dirs.h"
#include "common/util.h"
#include "mail/orgdomain.h"

#define KEY_FILE_MAX (64 * 1024)
#define RSA_MIN_BITS 1024
#define RSA_MAX_BITS 8192
#define RSA_DEFAULT_BITS 2048

static const char *const algorithm_suffix[] = {
    [DKIM_ALG_RSA_SHA256] = ".rsa.pem",
    [DKIM_ALG_ED25519_SHA256] = ".ed25519.pem",
};

/* ---------------------------------------------------------------------------------------- */
/* Names */

/* A DNS name made of letters, digits, '-', '_' and dots, no empty labels. */
static int name_is_valid(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max || s[0] == '.' || s[n - 1] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.' && s[i + 1] == '.') return 0;
        if (!isalnum(c) && c != '-' && c != '_' && c != '.') return 0;
    }
    return 1;
}

static void lower_in_place(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* "sel.rsa.pem" -> selector "sel", algorithm RSA. Returns 0, or -1 for names we ignore. */
static int parse_key_file_name(const char *name, char *selector, size_t size,
                               enum dkim_algorithm *algorithm)
{
    size_t n = strlen(name);
    for (int a = DKIM_ALG_RSA_SHA256; a <= DKIM_ALG_ED25519_SHA256; a++) {
        size_t sl = strlen(algorithm_suffix[a]);
        if (n <= sl || strcmp(name + n - sl, algorithm_suffix[a]) != 0) continue;
        if (n - sl >= size) return -1;
        memcpy(selector, name, n - sl);
        selector[n - sl] = '\0';
        if (!name_is_valid(selector, 63)) return -1;
        *algorithm = (enum dkim_algorithm)a;
        return 0;
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* OpenSSL helpers */

/* The newest OpenSSL error as text ("" when the queue is empty); clears the queue. */
static const char *openssl_error(char *buf, size_t size)
{
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, buf, size);
    else
        snprintf(buf, size, "unknown OpenSSL error");
    ERR_clear_error();
    return buf;
}

/* Never prompt for a passphrase: encrypted keys are refused. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static char *base64_of(const unsigned char *data, size_t len)
{
    char *out = xmalloc(4 * ((len + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

/* Fills public_b64, bits and pem (as unencrypted PKCS#8, which libopendkim reads for both
 * algorithms) from pkey. Returns 0 / -1 with err. */
static int key_fill_from_pkey(struct dkim_key *key, EVP_PKEY *pkey, char *err, size_t errlen)
{
    char ossl[256];
    int id = EVP_PKEY_get_base_id(pkey);

    if (key->algorithm == DKIM_ALG_RSA_SHA256) {
        if (id != EVP_PKEY_RSA) {
            snprintf(err, errlen, "not an RSA private key (the name says .rsa.pem)");
            return -1;
        }
        key->bits = EVP_PKEY_get_bits(pkey);
        if (key->bits < RSA_MIN_BITS) {
            snprintf(err, errlen, "RSA key of %d bits is too small (at least %d)", key->bits,
                     RSA_MIN_BITS);
            return -1;
        }
        unsigned char *der = NULL;
        int n = i2d_PUBKEY(pkey, &der);
        if (n <= 0) {
            snprintf(err, errlen, "cannot encode the public key: %s",
                     openssl_error(ossl, sizeof ossl));
            return -1;
        }
        key->public_b64 = base64_of(der, (size_t)n);
        OPENSSL_free(der);
    } else {
        if (id != EVP_PKEY_ED25519) {
            snprintf(err, errlen, "not an Ed25519 private key (the name says .ed25519.pem)");
            return -1;
        }
        unsigned char raw[32];
        size_t rawlen = sizeof raw;
        if (EVP_PKEY_get_raw_public_key(pkey, raw, &rawlen) != 1 || rawlen != sizeof raw) {
            snprintf(err, errlen, "cannot extract the raw Ed25519 public key: %s",
                     openssl_error(ossl, sizeof ossl));
            return -1;
        }
        key->public_b64 = base64_of(raw, rawlen);
        key->bits = 256;
    }

    BIO *mem = BIO_new(BIO_s_mem());
    if (!mem || PEM_write_bio_PrivateKey(mem, pkey, NULL, NULL, 0, NULL, NULL) != 1) {
        BIO_free(mem);
        snprintf(err, errlen, "cannot re-encode the private key: %s",
                 openssl_error(ossl, sizeof ossl));
        return -1;
    }
    char *p;
    long n = BIO_get_mem_data(mem, &p);
    key->pem = xstrndup(p, (size_t)n);
    BIO_free(mem);
    return 0;
}

static void key_clear(struct dkim_key *key)
{
    free(key->domain);
    free(key->selector);
    free(key->path);
    if (key->pem) {
        keycache_unregister(key->pem);
        OPENSSL_cleanse(key->pem, strlen(key->pem));
        free(key->pem);
    }
    free(key->public_b64);
    memset(key, 0, sizeof *key);
}

/* ---------------------------------------------------------------------------------------- */
/* Loading */

struct load_state {
    struct dkim_keystore *ks;
    size_t cap;
    char ***errors;
    size_t *n_errors;
};

static void load_error(struct load_state *st, const char *path, const char *what)
{
    struct strbuf sb = STRBUF_INIT;
    strbuf_printf(&sb, "%s: %s", path, what);
    if (st->errors && st->n_errors) {
        *st->errors = xrealloc(*st->errors, (*st->n_errors + 1) * sizeof **st->errors);
        (*st->errors)[(*st->n_errors)++] = strbuf_detach(&sb, NULL);
    } else {
        strbuf_free(&sb);
    }
}

/* Reads a key file after checking it is a regular file only its owner can read. Returns the
 * bytes (NUL-terminated, caller frees) or NULL with err. */
static char *read_private_file(const char *path, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "not a regular file");
        close(fd);
        return NULL;
    }
    mode_t mode = st.st_mode & 07777;
    if (mode != 0600 && mode != 0400) {
        snprintf(err, errlen,
                 "mode %04o refused: a private key must be readable by its owner only "
                 "(chmod 600)",
                 (unsigned)mode);
        close(fd);
        return NULL;
    }
    if (st.st_size <= 0 || st.st_size > KEY_FILE_MAX) {
        snprintf(err, errlen, "size %lld is not that of a PEM key", (long long)st.st_size);
        close(fd);
        return NULL;
    }
    char *buf = xmalloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            snprintf(err, errlen, "read failed: %s", r < 0 ? strerror(errno) : "short file");
            free(buf);
            close(fd);
            return NULL;
        }
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    *len = got;
    return buf;
}

static void load_key_file(struct load_state *st, const char *domain, const char *selector,
                          enum dkim_algorithm algorithm, const char *path)
{
    char err[512], ossl[256];
    size_t len = 0;
    char *text = read_private_file(path, &len, err, sizeof err);
    if (!text) {
        load_error(st, path, err);
        return;
    }
    BIO *mem = BIO_new_mem_buf(text, (int)len);
    EVP_PKEY *pkey = mem ? PEM_read_bio_PrivateKey(mem, NULL, no_passphrase, NULL) : NULL;
    BIO_free(mem);
    OPENSSL_cleanse(text, len);
    free(text);
    if (!pkey) {
        snprintf(err, sizeof err, "not a readable unencrypted PEM private key (%s)",
                 openssl_error(ossl, sizeof ossl));
        load_error(st, path, err);
        return;
    }
    struct dkim_key key = {.algorithm = algorithm};
    if (key_fill_from_pkey(&key, pkey, err, sizeof err) < 0) {
        EVP_PKEY_free(pkey);
        key_clear(&key);
        load_error(st, path, err);
        return;
    }
    keycache_register(key.pem, pkey); /* parsed once, not for every signature */
    EVP_PKEY_free(pkey);
    key.domain = xstrdup(domain);
    key.selector = xstrdup(selector);
    key.path = xstrdup(path);
    if (st->ks->n_keys == st->cap) {
        st->cap = st->cap ? 2 * st->cap : 8;
        st->ks->keys = xrealloc(st->ks->keys, st->cap * sizeof *st->ks->keys);
    }
    st->ks->keys[st->ks->n_keys++] = key;
}

static void load_domain_dir(struct load_state *st, const char *dir, const char *domain)
{
    DIR *d = opendir(dir);
    if (!d) {
        load_error(st, dir, strerror(errno));
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char selector[64];
        enum dkim_algorithm algorithm;
        if (de->d_name[0] == '.' ||
            parse_key_file_name(de->d_name, selector, sizeof selector, &algorithm) < 0)
            continue;
        struct strbuf path = STRBUF_INIT;
        strbuf_printf(&path, "%s/%s", dir, de->d_name);
        load_key_file(st, domain, selector, algorithm, path.data);
        strbuf_free(&path);
    }
    closedir(d);
}

/* Domain, then algorithm (RSA first), then selector: a stable signing order. */
static int key_compare(const void *a, const void *b)
{
    const struct dkim_key *x = a, *y = b;
    int c = strcmp(x->domain, y->domain);
    if (c) return c;
    if (x->algorithm != y->algorithm) return x->algorithm < y->algorithm ? -1 : 1;
    return strcmp(x->selector, y->selector);
}

struct dkim_keystore *dkim_keystore_load(const char *dir, char ***errors, size_t *n_errors)
{
    struct dkim_keystore *ks = xcalloc(1, sizeof *ks);
    struct load_state st = {.ks = ks, .errors = errors, .n_errors = n_errors};
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return ks;
        load_error(&st, dir, strerror(errno));
        free(ks);
        return NULL;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || !name_is_valid(de->d_name, 253)) continue;
        struct strbuf sub = STRBUF_INIT;
        strbuf_printf(&sub, "%s/%s", dir, de->d_name);
        struct stat sst;
        if (stat(sub.data, &sst) == 0 && S_ISDIR(sst.st_mode)) {
            char *domain = xstrdup(de->d_name);
            lower_in_place(domain);
            load_domain_dir(&st, sub.data, domain);
            free(domain);
        }
        strbuf_free(&sub);
    }
    closedir(d);
    if (ks->n_keys > 1) qsort(ks->keys, ks->n_keys, sizeof *ks->keys, key_compare);
    return ks;
}

void dkim_keystore_free(struct dkim_keystore *ks)
{
    if (!ks) return;
    for (size_t i = 0; i < ks->n_keys; i++)
        key_clear(&ks->keys[i]);
    free(ks->keys);
    free(ks);
}

static size_t keys_of_domain(const struct dkim_keystore *ks, const char *domain,
                             const struct dkim_key **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < ks->n_keys && n < max; i++)
        if (strcmp(ks->keys[i].domain, domain) == 0) out[n++] = &ks->keys[i];
    return n;
}

size_t dkim_keystore_for(const struct dkim_keystore *ks, const char *from_domain,
                         const struct dkim_key **out, size_t max)
{
    char domain[256], org[256];
    if (!ks || !from_domain || max == 0) return 0;
    snprintf(domain, sizeof domain, "%s", from_domain);
    lower_in_place(domain);
    size_t n = strlen(domain);
    if (n && domain[n - 1] == '.') domain[n - 1] = '\0';
    size_t found = keys_of_domain(ks, domain, out, max);
    if (found) return found;
    orgdomain_of(domain, org, sizeof org);
    if (strcmp(org, domain) == 0) return 0;
    return keys_of_domain(ks, org, out, max);
}

/* ---------------------------------------------------------------------------------------- */
/* Key generation and the DNS record */

void dkim_dns_record(const struct dkim_key *key, struct strbuf *out)
{
    /* Zone-file syntax, one character-string per line, each at most 255 bytes. */
    const char *kind = key->algorithm == DKIM_ALG_ED25519_SHA256 ? "ed25519" : "rsa";
    strbuf_printf(out, "%s._domainkey.%s. IN TXT ( \"v=DKIM1; k=%s; \"", key->selector, key->domain,
                  kind);
    const char *p = key->public_b64;
    size_t left = strlen(p);
    size_t room = 255 - 2; /* the first string also holds "p=" */
    strbuf_puts(out, "\n    \"p=");
    for (;;) {
        size_t take = left < room ? left : room;
        strbuf_append(out, p, take);
        p += take;
        left -= take;
        strbuf_puts(out, "\"");
        if (!left) break;
        strbuf_puts(out, "\n    \"");
        room = 255;
    }
    strbuf_puts(out, " )\n");
}

static EVP_PKEY *generate_pkey(enum dkim_algorithm algorithm, int bits, char *err, size_t errlen)
{
    char ossl[256];
    EVP_PKEY *pkey = algorithm == DKIM_ALG_RSA_SHA256
                         ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits)
                         : EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!pkey) snprintf(err, errlen, "key generation failed: %s", openssl_error(ossl, sizeof ossl));
    return pkey;
}

/* Writes text to a new file (O_EXCL, 0600) and syncs it. Returns 0 / -1 with err. */
static int write_new_private_file(const char *path, const char *text, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            snprintf(err, errlen, "%s: already exists; refusing to overwrite a key", path);
        else
            snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        return -1;
    }
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno));
            close(fd);
            unlink(path);
            return -1;
        }
        done += (size_t)w;
    }
    if (fchmod(fd, 0600) < 0 || fsync(fd) < 0 || close(fd) < 0) {
        snprintf(err, errlen, "%s: cannot finish writing: %s", path, strerror(errno));
        unlink(path);
        return -1;
    }
    return 0;
}

int dkim_keygen(const char *dir, const char *domain, const char *selector,
                enum dkim_algorithm algorithm, int bits, struct strbuf *txt_out, char *err,
                size_t errlen)
{
    if (algorithm != DKIM_ALG_RSA_SHA256 && algorithm != DKIM_ALG_ED25519_SHA256) {
        snprintf(err, errlen, "unknown key algorithm");
        return -1;
    }
    if (!name_is_valid(domain, 253)) {
        snprintf(err, errlen, "\"%s\" is not a domain name", domain);
        return -1;
    }
    if (!name_is_valid(selector, 63)) {
        snprintf(err, errlen, "\"%s\" is not a valid selector", selector);
        return -1;
    }
    if (algorithm == DKIM_ALG_RSA_SHA256) {
        if (bits == 0) bits = RSA_DEFAULT_BITS;
        if (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS) {
            snprintf(err, errlen, "RSA key size %d out of range (%d..%d)", bits, RSA_MIN_BITS,
                     RSA_MAX_BITS);
            return -1;
        }
    }

    struct dkim_key key = {.algorithm = algorithm};
    key.domain = xstrdup(domain);
    lower_in_place(key.domain);
    key.selector = xstrdup(selector);
    struct strbuf path = STRBUF_INIT;
    int rc = -1;
    EVP_PKEY *pkey = NULL;

    strbuf_printf(&path, "%s/%s/%s%s", dir, key.domain, selector, algorithm_suffix[algorithm]);
    if (access(path.data, F_OK) == 0) {
        snprintf(err, errlen, "%s: already exists; refusing to overwrite a key", path.data);
        goto out;
    }
    if (dirs_make(dir, 0700, 0700, err, errlen) < 0) goto out;
    struct strbuf sub = STRBUF_INIT;
    strbuf_printf(&sub, "%s/%s", dir, key.domain);
    int dir_ok = dirs_make(sub.data, 0700, 0700, err, errlen);
    strbuf_free(&sub);
    if (dir_ok < 0) goto out;
    pkey = generate_pkey(algorithm, bits, err, errlen);
    if (!pkey || key_fill_from_pkey(&key, pkey, err, errlen) < 0) goto out;
    if (write_new_private_file(path.data, key.pem, err, errlen) < 0) goto out;
    key.path = strbuf_detach(&path, NULL);
    if (txt_out) dkim_dns_record(&key, txt_out);
    rc = 0;
out:
    EVP_PKEY_free(pkey);
    key_clear(&key);
    strbuf_free(&path);
    return rc;
}
