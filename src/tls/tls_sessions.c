/*
 * Upstream TLS session resumption: the sessions origins give weir, kept per TLS identity (the
 * client context, the peer's address, SNI, verification name and mode: what the pool keys
 * connections by) so a new connection to the same origin with the same identity resumes,
 * and never one with another identity.
 *
 * One small table for the process, direct-mapped by the identity's hash, behind a mutex
 * taken twice per upstream TLS connection (looking up before the handshake, storing when the
 * origin sends a session), never per request. Workers share it because pooled connections
 * move between workers (the pool's shared tier). A TLS 1.3 session is taken out when used, as
 * RFC 8446 C.4 asks (the resumed connection brings fresh ones); a TLS 1.2 one stays.
 */
#include "tls/tls_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include <openssl/err.h>

#include "core/alloc.h"
#include "weir/error.h"
#include "weir/peer.h"

#define SLOTS   256
#define KEY_MAX (8 + 1 + sizeof(struct sockaddr_storage) + 1 + 2 * 256)

struct skey {
    uint64_t hash;
    size_t len;
    unsigned char bytes[KEY_MAX];
};

struct slot {
    uint64_t hash;
    size_t len;
    unsigned char *key; /* NULL: empty */
    SSL_SESSION *sess;
};

static struct slot slots[SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int key_index = -1;
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static void free_key(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    weir__free(ptr);
}

static void make_index(void)
{
    key_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_key);
}

static void put(struct skey *k, const void *p, size_t n)
{
    if (k->len + n <= sizeof(k->bytes)) {
        memcpy(k->bytes + k->len, p, n);
        k->len += n;
    }
}

/*
 * The identity a session belongs to, as bytes, and their FNV-1a hash. The context is named by
 * the id it was given when made (never reused, unlike its address once it is freed).
 */
static void key_of(const struct weir_peer *peer, const SSL_CTX *ctx, struct skey *k)
{
    k->len = 0;
    uint64_t id = (uint64_t)(uintptr_t)SSL_CTX_get_app_data(ctx);
    put(k, &id, sizeof(id));
    unsigned char alen = (unsigned char)peer->addrlen;
    put(k, &alen, 1);
    put(k, &peer->addr, peer->addrlen);
    unsigned char nv = peer->tls_no_verify;
    put(k, &nv, 1);
    put(k, peer->sni, strnlen(peer->sni, sizeof(peer->sni) - 1) + 1);
    put(k, peer->verify_name, strnlen(peer->verify_name, sizeof(peer->verify_name) - 1) + 1);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < k->len; i++) {
        h = (h ^ k->bytes[i]) * 1099511628211ull;
    }
    k->hash = h;
}

static bool slot_is(const struct slot *s, uint64_t hash, const unsigned char *key, size_t len)
{
    return s->key != NULL && s->hash == hash && s->len == len && memcmp(s->key, key, len) == 0;
}

/* OpenSSL's new-session callback (client side): keep it for the connection's identity. */
static int new_session(SSL *ssl, SSL_SESSION *sess)
{
    const struct skey *k = key_index >= 0 ? SSL_get_ex_data(ssl, key_index) : NULL;
    if (k == NULL || !SSL_SESSION_is_resumable(sess)) {
        return 0;
    }
    unsigned char *copy = weir__malloc(k->len);
    if (copy == NULL) {
        return 0;
    }
    memcpy(copy, k->bytes, k->len);
    struct slot *s = &slots[k->hash % SLOTS];
    SSL_SESSION *old = NULL;
    unsigned char *old_key = NULL;
    (void)pthread_mutex_lock(&lock);
    old = s->sess;
    old_key = s->key;
    s->hash = k->hash;
    s->len = k->len;
    s->key = copy;
    s->sess = sess;
    (void)pthread_mutex_unlock(&lock);
    SSL_SESSION_free(old);
    weir__free(old_key);
    return 1; /* the reference is ours now */
}

void weir__tls_sessions_enable(SSL_CTX *ctx)
{
    static _Atomic uint64_t next_id = 1;
    (void)SSL_CTX_set_app_data(ctx, (void *)(uintptr_t)atomic_fetch_add(&next_id, 1));
    (void)SSL_CTX_set_session_cache_mode(ctx,
                                         SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session);
}

int weir__tls_sessions_attach(SSL *ssl, const struct weir_peer *peer)
{
    SSL_CTX *ctx = SSL_get_SSL_CTX(ssl);
    if ((SSL_CTX_get_session_cache_mode(ctx) & SSL_SESS_CACHE_CLIENT) == 0) {
        return 0; /* session_reuse off */
    }
    (void)pthread_once(&index_once, make_index);
    if (key_index < 0) {
        return 0;
    }
    struct skey *k = weir__malloc(sizeof(*k));
    if (k == NULL) {
        return WEIR_ENOMEM;
    }
    key_of(peer, ctx, k);
    if (SSL_set_ex_data(ssl, key_index, k) != 1) {
        weir__free(k);
        ERR_clear_error();
        return WEIR_ENOMEM;
    }
    struct slot *s = &slots[k->hash % SLOTS];
    SSL_SESSION *sess = NULL;
    unsigned char *gone = NULL;
    (void)pthread_mutex_lock(&lock);
    if (slot_is(s, k->hash, k->bytes, k->len)) {
        sess = s->sess;
        if (SSL_SESSION_get_protocol_version(sess) == TLS1_3_VERSION) {
            gone = s->key; /* single use: the slot gives up its reference */
            s->key = NULL;
            s->sess = NULL;
        } else {
            (void)SSL_SESSION_up_ref(sess);
        }
    }
    (void)pthread_mutex_unlock(&lock);
    weir__free(gone);
    if (sess != NULL) {
        if (SSL_SESSION_is_resumable(sess) && SSL_set_session(ssl, sess) != 1) {
            ERR_clear_error(); /* a full handshake then */
        }
        SSL_SESSION_free(sess);
    }
    return 0;
}

void weir__tls_sessions_clear(void)
{
    (void)pthread_mutex_lock(&lock);
    for (size_t i = 0; i < SLOTS; i++) {
        SSL_SESSION_free(slots[i].sess);
        weir__free(slots[i].key);
        slots[i] = (struct slot){0};
    }
    (void)pthread_mutex_unlock(&lock);
}
