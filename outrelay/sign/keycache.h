/* keycache.h - parsed DKIM private keys, kept for the life of the key store.
 * libopendkim parses the PEM text of the key again for every message it signs, and OpenSSL 3's
 * decoder makes that cost more than the RSA signature itself (about 0.35 ms, under locks the
 * workers contend for). keycache.c answers those parses from EVP_PKEYs parsed once at load:
 * it provides PEM_read_bio_PrivateKey for this process, returns a new reference to the cached
 * key when the input is exactly a registered key's PEM, and hands anything else to OpenSSL.
 * Register/unregister from the thread that owns the key store, before/after workers sign. */
#ifndef OUTRELAY_KEYCACHE_H
#define OUTRELAY_KEYCACHE_H

#include <openssl/evp.h>

/* pem must stay valid until keycache_unregister(pem). The cache takes its own reference. */
void keycache_register(const char *pem, EVP_PKEY *pkey);
void keycache_unregister(const char *pem);

#endif
