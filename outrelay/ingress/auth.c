/* auth.c - users file and password verification; see auth.h. */
#include "ingress/auth.h"

#include <crypt.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hashmap.h"
#include "common/util.h"

struct auth_users {
    struct hashmap *hashes; /* user -> crypt hash */
};

/* A valid SHA-512 crypt hash of a random password, used for unknown users. */
static const char auth_dummy_hash[] =
    "$6$outrelaydummy$Jc2l0dJm2hqf1CZqOq1C8b4Jm7qzvGmC0m3r2n9y5o4VQm1gLQyqkqS2d0h5xXz7a2Lr8m"
    "9uJ6vYtNq3wB1e0";

void auth_free(struct auth_users *users)
{
    if (!users) return;
    hashmap_free_values(users->hashes, free);
    free(users);
}

struct auth_users *auth_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct auth_users *users = xcalloc(1, sizeof *users);
    users->hashes = hashmap_new();
    char line[1024];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#') continue;
        char *colon = strchr(p, ':');
        if (!colon || colon == p || colon[1] != '$') {
            snprintf(err, errlen, "%s:%d: expected \"name:crypt-hash\"", path, lineno);
            fclose(f);
            auth_free(users);
            return NULL;
        }
        *colon = '\0';
        free(hashmap_put(users->hashes, p, xstrdup(colon + 1)));
    }
    fclose(f);
    return users;
}

int auth_verify(const struct auth_users *users, const char *user, const char *password)
{
    const char *hash = users ? hashmap_get(users->hashes, user) : NULL;
    struct crypt_data data;
    memset(&data, 0, sizeof data);
    const char *computed = crypt_r(password, hash ? hash : auth_dummy_hash, &data);
    if (!hash || !computed || computed[0] == '*') return 0;
    return util_secure_streq(computed, hash);
}

int auth_base64_decode(const char *in, unsigned char *out, size_t size)
{
    size_t len = strlen(in);
    if (len % 4 != 0 || (len / 4) * 3 + 1 > size) return -1;
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
    if (n < 0) return -1;
    /* EVP_DecodeBlock counts padding as data; remove it. */
    if (len >= 1 && in[len - 1] == '=') n--;
    if (len >= 2 && in[len - 2] == '=') n--;
    out[n] = '\0';
    return n;
}
