/* Socket helpers (see sock.h). Everything is non-blocking and close-on-exec. */
#include "net/sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "weir/error.h"
#include "weir/peer.h"

static int parse_port(const char *s, size_t len, uint16_t *port)
{
    if (len == 0 || len > 5) {
        return WEIR_EINVAL;
    }
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return WEIR_EINVAL;
        }
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535) {
        return WEIR_EINVAL;
    }
    *port = (uint16_t)v;
    return 0;
}

int weir__addr_parse(const char *s, size_t len, struct sockaddr_storage *ss, socklen_t *len_out)
{
    char host[64];
    const char *colon;
    size_t hlen;
    uint16_t port;

    memset(ss, 0, sizeof(*ss));
    if (s == NULL || len == 0 || memchr(s, '\0', len) != NULL) {
        return WEIR_EINVAL; /* inet_pton would stop at the NUL and accept a prefix */
    }
    if (len > 0 && s[0] == '[') {
        const char *rb = memchr(s, ']', len);
        if (rb == NULL || (size_t)(rb - s) + 1 >= len || rb[1] != ':') {
            return WEIR_EINVAL;
        }
        hlen = (size_t)(rb - s) - 1;
        if (hlen == 0 || hlen >= sizeof(host)) {
            return WEIR_EINVAL;
        }
        memcpy(host, s + 1, hlen);
        host[hlen] = '\0';
        if (parse_port(rb + 2, len - (size_t)(rb - s) - 2, &port) != 0) {
            return WEIR_EINVAL;
        }
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1) {
            return WEIR_EINVAL;
        }
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        *len_out = sizeof(*a6);
        return 0;
    }
    colon = NULL;
    for (size_t i = len; i > 0; i--) {
        if (s[i - 1] == ':') {
            colon = s + i - 1;
            break;
        }
    }
    if (colon == NULL) {
        return WEIR_EINVAL;
    }
    hlen = (size_t)(colon - s);
    if (hlen == 0 || hlen >= sizeof(host)) {
        return WEIR_EINVAL;
    }
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    if (parse_port(colon + 1, len - hlen - 1, &port) != 0) {
        return WEIR_EINVAL;
    }
    if (strcmp(host, "localhost") == 0) {
        memcpy(host, "127.0.0.1", sizeof("127.0.0.1"));
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) != 1) {
        return WEIR_EINVAL;
    }
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
    *len_out = sizeof(*a4);
    return 0;
}

int weir__addr_format_ip(const struct sockaddr *sa, char *out, size_t cap)
{
    const void *src;
    if (sa->sa_family == AF_INET) {
        src = &((const struct sockaddr_in *)sa)->sin_addr;
    } else if (sa->sa_family == AF_INET6) {
        src = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    } else {
        return -1;
    }
    if (inet_ntop(sa->sa_family, src, out, (socklen_t)cap) == NULL) {
        return -1;
    }
    return (int)strlen(out);
}

int weir__addr_format(const struct sockaddr *sa, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    if (weir__addr_format_ip(sa, ip, sizeof(ip)) < 0) {
        return -1;
    }
    int n;
    if (sa->sa_family == AF_INET) {
        n = snprintf(out, cap, "%s:%u", ip, ntohs(((const struct sockaddr_in *)sa)->sin_port));
    } else {
        n = snprintf(out, cap, "[%s]:%u", ip, ntohs(((const struct sockaddr_in6 *)sa)->sin6_port));
    }
    return (n < 0 || (size_t)n >= cap) ? -1 : n;
}

bool weir__addr_equal(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family) {
        return false;
    }
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    if (a->sa_family == AF_UNIX) {
        /* A path ends at its NUL; an abstract name (leading NUL) is all of sun_path, so both
           must sit in zeroed storage past their length (every copy weir makes does). */
        const struct sockaddr_un *x = (const void *)a, *y = (const void *)b;
        if (x->sun_path[0] != '\0') {
            return strncmp(x->sun_path, y->sun_path, sizeof(x->sun_path)) == 0;
        }
        return memcmp(x->sun_path, y->sun_path, sizeof(x->sun_path)) == 0;
    }
    return false;
}

/* A non-blocking socket bound to ss (SO_REUSEADDR, and SO_REUSEPORT when asked); fd or -errno. */
static int bound_socket(const struct sockaddr_storage *ss, socklen_t len, bool reuseport)
{
    int one = 1;
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        bind(fd, (const struct sockaddr *)ss, len) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

int weir__listen(const struct sockaddr_storage *ss, socklen_t len, bool reuseport, int backlog)
{
    int fd = bound_socket(ss, len, reuseport);
    if (fd >= 0 && listen(fd, backlog) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

int weir__bind_check(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = bound_socket(ss, len, false);
    if (fd < 0) {
        return fd;
    }
    close(fd);
    return 0;
}

int weir__connect(const struct sockaddr *sa, socklen_t len)
{
    int one = 1;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    /* TCP only: a unix-socket peer has no Nagle to turn off and refuses the option. */
    bool tcp = sa->sa_family == AF_INET || sa->sa_family == AF_INET6;
    if (tcp && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    if (connect(fd, sa, len) != 0 && errno != EINPROGRESS) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

int weir__connect_result(int fd)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        return -errno;
    }
    return -err;
}

int weir__sock_port(int fd)
{
    struct sockaddr_storage ss = {0}; /* the analyzer cannot see getsockname fill it */
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        return -1;
    }
    if (ss.ss_family == AF_INET) {
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    if (ss.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return -1;
}

int weir_peer_set_sockaddr(struct weir_peer *peer, const struct sockaddr *sa, socklen_t len)
{
    if ((sa->sa_family != AF_INET && sa->sa_family != AF_INET6) || len > sizeof(peer->addr)) {
        return WEIR_EINVAL;
    }
    memcpy(&peer->addr, sa, len);
    peer->addrlen = len;
    if (weir__addr_format(sa, peer->name, sizeof(peer->name)) < 0) {
        peer->name[0] = '\0';
    }
    return 0;
}

int weir_peer_set_address(struct weir_peer *peer, const char *hostport)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (weir__addr_parse(hostport, strlen(hostport), &ss, &len) != 0) {
        return WEIR_EINVAL;
    }
    return weir_peer_set_sockaddr(peer, (struct sockaddr *)&ss, len);
}
