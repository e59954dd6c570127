/* Socket helpers: address parsing and formatting, listening and connecting sockets. */
#ifndef WEIR_NET_SOCK_H
#define WEIR_NET_SOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/**
 * Parses "ip:port", "[ipv6]:port" or "localhost:port" into *ss (numeric addresses only).
 * 0 or WEIR_EINVAL.
 */
int weir__addr_parse(const char *s, size_t len, struct sockaddr_storage *ss, socklen_t *len_out);

/** Formats an address as "ip:port" / "[ipv6]:port" into out (NUL-terminated). Length or -1. */
int weir__addr_format(const struct sockaddr *sa, char *out, size_t cap);

/** Formats only the IP text into out. Length or -1. */
int weir__addr_format_ip(const struct sockaddr *sa, char *out, size_t cap);

/**
 * True when two socket addresses are the same family, address and port (IPv4, IPv6), or the same
 * AF_UNIX path or abstract name.
 */
bool weir__addr_equal(const struct sockaddr *a, const struct sockaddr *b);

/** A non-blocking listening socket bound to ss; reuseport sets SO_REUSEPORT. fd or -errno. */
int weir__listen(const struct sockaddr_storage *ss, socklen_t len, bool reuseport, int backlog);

/**
 * 0 when a plain bind (no SO_REUSEPORT) to ss succeeds, that is when no other socket listens
 * there, or -errno. The socket never listens, so no connection can queue on it and be reset
 * when it closes.
 */
int weir__bind_check(const struct sockaddr_storage *ss, socklen_t len);

/**
 * Starts a non-blocking connect (TCP with TCP_NODELAY, or AF_UNIX). Returns the fd (connection
 * in progress or done) or -errno for an immediate failure.
 */
int weir__connect(const struct sockaddr *sa, socklen_t len);

/** The pending error of a connecting socket: 0 when connected, else -errno. */
int weir__connect_result(int fd);

/** The local port a socket is bound to, or -1. */
int weir__sock_port(int fd);

#endif
