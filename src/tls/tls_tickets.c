/*
 * Session ticket keys for a listener, shared by every worker (they share the context) with no
 * lock and no shared state written per handshake.
 *
 * Generated keys rotate by the clock: the key of period p (p = now / period) is derived from
 * a secret made when the context was built, HMAC-SHA256(secret, label || p), so every thread
 * computes the same key for the same period and nothing needs rotating in memory. A ticket is
 * made with the current period's key and accepted during that period and the next; one made
 * with the previous period's key is accepted and replaced by a fresh one.
 *
 * Key files (ticket_key_files, nginx's ssl_session_ticket_key format: 80 bytes, a 16-byte name,
 * a 32-byte HMAC secret and a 32-byte AES-256 key; or 48 bytes with 16-byte halves and
 * AES-128) let several nodes resume each other's sessions: the first file makes tickets, the
 * others are only accepted, and rotating them is the operator's (a reload).
 */
#include "tls/tls_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "core/alloc.h"
#include "weir/error.h"

#define NAME_LEN  16
#define MAX_FILES 16

struct ticket_key {
    unsigned char name[NAME_LEN];
    unsigned char hmac[32];
    size_t hmac_len;
    unsigned char aes[32];
    bool aes128;
};

struct weir__tls_tickets {
    /* generated: the secret, the name prefix that marks our tickets, the period */
    unsigned char secret[32];
    unsigned char prefix[8];
    uint32_t period_s;
    /* from files: keys[0] makes tickets */
    struct ticket_key keys[MAX_FILES];
    size_t nkeys;
};

static uint64_t period_now(const struct weir__tls_tickets *t)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec / t->period_s;
}

/* The generated key of period p. */
static bool derive(const struct weir__tls_tickets *t, uint64_t p, struct ticket_key *k)
{
    unsigned char msg[9];
    for (int i = 0; i < 8; i++) {
        msg[1 + i] = (unsigned char)(p >> (56 - 8 * i));
    }
    memcpy(k->name, t->prefix, sizeof(t->prefix));
    memcpy(k->name + sizeof(t->prefix), msg + 1, 8);
    unsigned len = 0;
    msg[0] = 'h';
    if (HMAC(EVP_sha256(), t->secret, sizeof(t->secret), msg, sizeof(msg), k->hmac, &len) == NULL) {
        return false;
    }
    k->hmac_len = len;
    msg[0] = 'a';
    k->aes128 = false;
    return HMAC(EVP_sha256(), t->secret, sizeof(t->secret), msg, sizeof(msg), k->aes, &len) != NULL;
}

static int use_key(const struct ticket_key *k, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                   EVP_MAC_CTX *hctx, int enc)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, k->hmac_len),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    const EVP_CIPHER *cipher = k->aes128 ? EVP_aes_128_cbc() : EVP_aes_256_cbc();
    if (EVP_MAC_CTX_set_params(hctx, params) != 1 ||
        EVP_CipherInit_ex(cctx, cipher, NULL, k->aes, iv, enc) != 1) {
        return -1;
    }
    return 1;
}

/* OpenSSL's ticket key callback: enc 1 makes a ticket, 0 opens one. */
static int ticket_cb(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    const struct weir__tls_tickets *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (t == NULL) {
        return -1;
    }
    struct ticket_key k;
    if (enc) {
        if (t->nkeys > 0) {
            k = t->keys[0];
        } else if (!derive(t, period_now(t), &k)) {
            return -1;
        }
        if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1) {
            return -1;
        }
        memcpy(name, k.name, NAME_LEN);
        return use_key(&k, iv, cctx, hctx, 1);
    }
    if (t->nkeys > 0) {
        for (size_t i = 0; i < t->nkeys; i++) {
            if (memcmp(name, t->keys[i].name, NAME_LEN) == 0) {
                int rc = use_key(&t->keys[i], iv, cctx, hctx, 0);
                return rc == 1 && i > 0 ? 2 : rc; /* 2: accepted, and a new ticket is made */
            }
        }
        return 0; /* not ours: a full handshake */
    }
    if (memcmp(name, t->prefix, sizeof(t->prefix)) != 0) {
        return 0;
    }
    uint64_t p = 0;
    for (int i = 0; i < 8; i++) {
        p = p << 8 | name[sizeof(t->prefix) + i];
    }
    uint64_t now = period_now(t);
    if (p != now && p + 1 != now) {
        return 0; /* from too long ago (or the future): a full handshake */
    }
    if (!derive(t, p, &k)) {
        return -1;
    }
    int rc = use_key(&k, iv, cctx, hctx, 0);
    return rc == 1 && p != now ? 2 : rc;
}

/* Reads one key file into k: exactly 48 or 80 bytes. */
static int read_key_file(const char *file, struct ticket_key *k, char why[WEIR_TLS_ERRMAX])
{
    struct stat st;
    if (stat(file, &st) != 0) {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "cannot read %s: %s", file, strerror(errno));
        return WEIR_EINVAL;
    }
    if (!S_ISREG(st.st_mode) || (st.st_size != 48 && st.st_size != 80)) {
        (void)snprintf(why, WEIR_TLS_ERRMAX,
                       "%s: a ticket key file holds exactly 80 bytes (or 48), as 'openssl rand "
                       "80 > FILE' writes",
                       file);
        return WEIR_EINVAL;
    }
    unsigned char buf[80];
    FILE *f = fopen(file, "rb");
    size_t n = f != NULL ? fread(buf, 1, sizeof(buf), f) : 0;
    if (f == NULL || n != (size_t)st.st_size) {
        (void)snprintf(why, WEIR_TLS_ERRMAX, "cannot read %s: %s", file,
                       f == NULL ? strerror(errno) : "short read");
        if (f != NULL) {
            (void)fclose(f);
        }
        return WEIR_EINVAL;
    }
    (void)fclose(f);
    size_t half = n == 80 ? 32 : 16;
    memcpy(k->name, buf, NAME_LEN);
    memcpy(k->hmac, buf + NAME_LEN, half);
    k->hmac_len = half;
    memcpy(k->aes, buf + NAME_LEN + half, half);
    k->aes128 = n == 48;
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

int weir__tls_tickets_new(const char *const *files, size_t nfiles, uint32_t period_s,
                          struct weir__tls_tickets **out, size_t *bad_file,
                          char why[WEIR_TLS_ERRMAX])
{
    if (nfiles > MAX_FILES) {
        *bad_file = MAX_FILES;
        (void)snprintf(why, WEIR_TLS_ERRMAX, "at most %d ticket key files", MAX_FILES);
        return WEIR_EINVAL;
    }
    struct weir__tls_tickets *t = weir__calloc(1, sizeof(*t));
    if (t == NULL) {
        return WEIR_ENOMEM;
    }
    t->period_s = period_s > 0 ? period_s : 1;
    for (size_t i = 0; i < nfiles; i++) {
        int rc = read_key_file(files[i], &t->keys[i], why);
        if (rc != 0) {
            *bad_file = i;
            weir__tls_tickets_free(t);
            return rc;
        }
        t->nkeys++;
    }
    if (RAND_bytes(t->secret, sizeof(t->secret)) != 1 ||
        RAND_bytes(t->prefix, sizeof(t->prefix)) != 1) {
        ERR_clear_error();
        weir__tls_tickets_free(t);
        return WEIR_ENOMEM;
    }
    *out = t;
    return 0;
}

int weir__tls_tickets_use(struct weir__tls_tickets *t, SSL_CTX *ctx)
{
    if (SSL_CTX_set_app_data(ctx, t) != 1 ||
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb) != 1) {
        return WEIR_EINVAL;
    }
    return 0;
}

void weir__tls_tickets_free(struct weir__tls_tickets *t)
{
    if (t != NULL) {
        OPENSSL_cleanse(t, sizeof(*t));
        weir__free(t);
    }
}
