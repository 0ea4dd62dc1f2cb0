/* auth.h - SMTP AUTH credentials: the users file ("name:crypt-hash" per line, yescrypt or
 * SHA-512 crypt) loaded at start, and the password check. auth_verify() is slow on purpose
 * (crypt) and must run on a worker thread; everything else is loop-thread only. */
#ifndef OUTRELAY_AUTH_H
#define OUTRELAY_AUTH_H

#include <stddef.h>

struct auth_users;

/* Returns NULL with err ("file:line: ...") on a malformed file. */
struct auth_users *auth_load(const char *path, char *err, size_t errlen);
void auth_free(struct auth_users *users);
/* 1 when user/password match; constant-time comparison; a dummy hash is computed for unknown
 * users so timing does not reveal who exists. Thread-safe (reads only). */
int auth_verify(const struct auth_users *users, const char *user, const char *password);
/* Decodes base64 (RFC 4648); returns decoded length or -1. out gets a NUL after the data. */
int auth_base64_decode(const char *in, unsigned char *out, size_t size);

#endif
