/*
 * The built-in demo origin: a small HTTP/1.1 server run as a background service, so that
 * `weir` with no arguments shows a whole proxy path working. It answers every request with a
 * short text page describing what it received, reads and discards request bodies sent with
 * Content-Length, and keeps connections alive. Written on the public event-loop API.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "app.h"

#define DEMO_BUF       16384
#define DEMO_MAX_CONNS 1024

struct demo_conn {
    struct weir_io io;
    struct weir_timer idle;
    char in[DEMO_BUF];
    size_t inlen;
    size_t body_left;
    char out[1024];
    size_t outlen, outoff;
    struct demo_server *srv;
    struct demo_conn *prev, *next;
};

struct demo_server {
    struct weir_io lio;
    unsigned nconns;
    unsigned long served;
    struct demo_conn *conns;
};

static struct demo_server demo;

static void conn_free(struct weir_loop *loop, struct demo_conn *c)
{
    weir_loop_io_del(loop, &c->io);
    weir_timer_stop(loop, &c->idle);
    close(c->io.fd);
    c->srv->nconns--;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        c->srv->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    weir_free(c);
}

static void idle_cb(struct weir_loop *loop, struct weir_timer *t)
{
    conn_free(loop, t->data);
}

/* Case-insensitive search for a header value inside the head [p, p+len). */
static bool find_header(const char *p, size_t len, const char *name, const char **v, size_t *vlen)
{
    size_t nlen = strlen(name);
    for (const char *line = p; line < p + len;) {
        const char *eol = memchr(line, '\n', (size_t)(p + len - line));
        if (eol == NULL) {
            break;
        }
        if ((size_t)(eol - line) > nlen + 1 && strncasecmp(line, name, nlen) == 0 &&
            line[nlen] == ':') {
            const char *s = line + nlen + 1;
            while (s < eol && (*s == ' ' || *s == '\t')) {
                s++;
            }
            const char *e = eol;
            while (e > s && (e[-1] == '\r' || e[-1] == ' ')) {
                e--;
            }
            *v = s;
            *vlen = (size_t)(e - s);
            return true;
        }
        line = eol + 1;
    }
    return false;
}

static bool answer(struct demo_conn *c, const char *head, size_t hlen)
{
    const char *sp1 = memchr(head, ' ', hlen);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', hlen - (size_t)(sp1 + 1 - head)) : NULL;
    if (sp1 == NULL || sp2 == NULL) {
        return false;
    }
    const char *v;
    size_t vlen;
    c->body_left = 0;
    if (find_header(head, hlen, "Content-Length", &v, &vlen)) {
        size_t n = 0;
        for (size_t i = 0; i < vlen && i < 18; i++) {
            n = n * 10 + (size_t)(v[i] - '0');
        }
        c->body_left = n;
    }
    const char *xff = "-";
    size_t xfflen = 1;
    if (find_header(head, hlen, "X-Forwarded-For", &v, &vlen)) {
        xff = v;
        xfflen = vlen;
    }
    char body[512];
    int blen = snprintf(body, sizeof(body),
                        "Hello from weir's demo origin.\n"
                        "You asked for: %.*s %.*s\n"
                        "X-Forwarded-For: %.*s\n"
                        "Requests served by this origin: %lu\n",
                        (int)(sp1 - head), head, (int)(sp2 - sp1 - 1), sp1 + 1, (int)xfflen, xff,
                        ++c->srv->served);
    if (blen < 0 || (size_t)blen >= sizeof(body)) {
        return false;
    }
    bool head_req = (sp1 - head) == 4 && memcmp(head, "HEAD", 4) == 0;
    int n = snprintf(c->out, sizeof(c->out),
                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                     "Server: weir-demo-origin\r\n\r\n%s",
                     blen, head_req ? "" : body);
    if (n < 0 || (size_t)n >= sizeof(c->out)) {
        return false;
    }
    c->outlen = (size_t)n;
    c->outoff = 0;
    return true;
}

/* Returns false when the connection must close. */
static bool conn_step(struct demo_conn *c)
{
    for (;;) {
        while (c->outoff < c->outlen) {
            ssize_t n = send(c->io.fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
            if (n < 0) {
                return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
            }
            c->outoff += (size_t)n;
        }
        c->outlen = c->outoff = 0;
        if (c->body_left > 0 && c->inlen > 0) {
            size_t n = c->inlen < c->body_left ? c->inlen : c->body_left;
            memmove(c->in, c->in + n, c->inlen - n);
            c->inlen -= n;
            c->body_left -= n;
            continue;
        }
        if (c->body_left == 0 && c->inlen > 0) {
            const char *end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
            if (end != NULL) {
                size_t hlen = (size_t)(end - c->in) + 4;
                if (!answer(c, c->in, hlen)) {
                    return false;
                }
                memmove(c->in, c->in + hlen, c->inlen - hlen);
                c->inlen -= hlen;
                continue;
            }
            if (c->inlen == sizeof(c->in)) {
                return false; /* head too large for a demo */
            }
        }
        ssize_t n = recv(c->io.fd, c->in + c->inlen, sizeof(c->in) - c->inlen, 0);
        if (n == 0) {
            return false;
        }
        if (n < 0) {
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        }
        c->inlen += (size_t)n;
    }
}

static void conn_event(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
    struct demo_conn *c = io->data;
    if (!conn_step(c)) {
        conn_free(loop, c);
        return;
    }
    if (weir_timer_start(loop, &c->idle, 30000) != 0) {
        conn_free(loop, c);
    }
}

static void accept_event(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
    for (;;) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            return;
        }
        struct demo_conn *c = demo.nconns < DEMO_MAX_CONNS ? weir_calloc(1, sizeof(*c)) : NULL;
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->srv = &demo;
        c->io.fd = fd;
        c->io.cb = conn_event;
        c->io.data = c;
        weir_timer_init(&c->idle, idle_cb, c);
        demo.nconns++;
        c->next = demo.conns;
        if (demo.conns) {
            demo.conns->prev = c;
        }
        demo.conns = c;
        if (weir_loop_io_add(loop, &c->io, WEIR_IO_READ | WEIR_IO_WRITE | WEIR_IO_RDHUP) != 0) {
            conn_free(loop, c);
            continue;
        }
        conn_event(loop, &c->io, WEIR_IO_READ);
    }
}

static int demo_start(struct weir_loop *loop, void *data)
{
    const char *addr = data;
    struct sockaddr_in sin = {.sin_family = AF_INET};
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= 64) {
        return WEIR_EINVAL;
    }
    char host[64];
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
        return WEIR_EINVAL;
    }
    sin.sin_port = htons((uint16_t)strtoul(colon + 1, NULL, 10));
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) {
        return -errno;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(fd, 511) != 0) {
        int err = -errno;
        close(fd);
        weir_log(WEIR_LOG_ERROR, "demo origin: cannot listen on %s: %s", addr, strerror(-err));
        return err;
    }
    demo.lio.fd = fd;
    demo.lio.cb = accept_event;
    demo.lio.data = &demo;
    int rc = weir_loop_io_add(loop, &demo.lio, WEIR_IO_READ);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    weir_log(WEIR_LOG_INFO, "demo origin: listening on %s", addr);
    return 0;
}

static void demo_stop(struct weir_loop *loop, void *data)
{
    weir_loop_io_del(loop, &demo.lio);
    close(demo.lio.fd);
    while (demo.conns) {
        conn_free(loop, demo.conns);
    }
}

const struct weir_background_ops weir_app_demo_origin_ops = {
    .start = demo_start,
    .stop = demo_stop,
};
