/*
 * WebSocket over HTTP/2 (RFC 8441) to an HTTP/1.1 origin (RFC 6455). The client's extended
 * CONNECT (:protocol websocket) carries no Sec-WebSocket-Key: weir is the HTTP/1.1 client
 * here, so it makes one, checks the origin's Sec-WebSocket-Accept against it as a browser
 * would, and answers the HTTP/2 client 200 where the origin said 101. After that both are
 * the same byte tunnel (upstream.c up_head): the stream's DATA one way, the origin's bytes
 * the other.
 */
#include "proxy/proxy_int.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <string.h>

#include "weir/log.h"

#define WS_KEY_LEN 24 /* base64 of 16 bytes */
#define WS_GUID    "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

int weir__ws_h2_request(struct weir_session *s, struct weir_headers *h)
{
    unsigned char nonce[16];
    char *key = weir_arena_alloc(s->arena, WS_KEY_LEN + 1);
    if (key == NULL) {
        return WEIR_ENOMEM;
    }
    if (RAND_bytes(nonce, sizeof(nonce)) != 1 ||
        EVP_EncodeBlock((unsigned char *)key, nonce, sizeof(nonce)) != WS_KEY_LEN) {
        return WEIR_EINVAL;
    }
    s->ws_key = (struct weir_iov){key, WS_KEY_LEN};
    int rc = weir_headers_set_iov(h, WEIR_IOV_LIT("Sec-WebSocket-Key"), s->ws_key);
    if (rc == 0 && !weir_headers_get(h, "Sec-WebSocket-Version", NULL)) {
        rc = weir__push_field(h, WEIR_IOV_LIT("Sec-WebSocket-Version"), WEIR_IOV_LIT("13"));
    }
    return rc;
}

bool weir__ws_accept_ok(struct weir_iov key, const struct weir_headers *h)
{
    struct weir_iov got;
    if (key.len != WS_KEY_LEN ||
        !weir_headers_get_iov(h, WEIR_IOV_LIT("Sec-WebSocket-Accept"), &got)) {
        return false;
    }
    char in[WS_KEY_LEN + sizeof(WS_GUID) - 1];
    memcpy(in, key.base, WS_KEY_LEN);
    memcpy(in + WS_KEY_LEN, WS_GUID, sizeof(WS_GUID) - 1);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char want[32]; /* base64 of the 20 bytes of SHA-1: 28 and a NUL */
    if (EVP_Digest(in, sizeof(in), md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20 ||
        EVP_EncodeBlock((unsigned char *)want, md, 20) != 28) {
        return false;
    }
    return weir_iov_eq(got, (struct weir_iov){want, 28});
}

void weir__ws_h2_response(struct weir_resp *r)
{
    /* RFC 8441 5: the HTTP/2 answer is a 2xx; the handshake's own fields stay behind */
    weir_headers_remove(&r->headers, "Sec-WebSocket-Accept");
    r->status = 200;
    r->reason = WEIR_IOV_LIT("OK");
}
