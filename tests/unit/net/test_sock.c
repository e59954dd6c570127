/*
 * Unit tests for address parsing, formatting and comparison (src/net/sock.c). Parsing is
 * numeric only: anything that would need DNS is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/un.h>
#include <unistd.h>

#include "../tmpdir.h"
#include "net/sock.h"
#include "weir/error.h"

static int parse(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    return weir__addr_parse(s, strlen(s), ss, len);
}

static void test_parse_accepts(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len = 0;

    assert_int_equal(parse("127.0.0.1:80", &ss, &len), 0);
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)&ss;
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(len, sizeof(struct sockaddr_in));
    assert_int_equal(ntohs(a4->sin_port), 80);
    assert_int_equal(ntohl(a4->sin_addr.s_addr), 0x7f000001u);

    assert_int_equal(parse("[::1]:8080", &ss, &len), 0);
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&ss;
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(len, sizeof(struct sockaddr_in6));
    assert_int_equal(ntohs(a6->sin6_port), 8080);
    assert_true(IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr));

    assert_int_equal(parse("localhost:1", &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohs(a4->sin_port), 1);
    assert_int_equal(ntohl(a4->sin_addr.s_addr), 0x7f000001u);

    assert_int_equal(parse("0.0.0.0:65535", &ss, &len), 0);
    assert_int_equal(ntohs(a4->sin_port), 65535);
    assert_int_equal(a4->sin_addr.s_addr, 0);

    assert_int_equal(parse("[2001:db8::a:b]:443", &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(ntohs(a6->sin6_port), 443);

    assert_int_equal(parse("[::ffff:10.0.0.1]:0", &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET6);

    /* The length bounds the input: bytes after it are ignored. */
    const char *s = "10.1.2.3:8080garbage";
    assert_int_equal(weir__addr_parse(s, 13, &ss, &len), 0);
    assert_int_equal(ntohs(a4->sin_port), 8080);
}

static void test_parse_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        ":80",
        "1.2.3.4",
        "1.2.3.4:",
        "1.2.3.4:65536",
        "1.2.3.4:99999",
        "1.2.3.4:123456",
        "1.2.3.4:8x",
        "1.2.3.4:-1",
        "1.2.3.4: 80",
        "1.2.3.4:+80",
        "[::1]80",
        "[::1]",
        "[::1]:",
        "[]:80",
        "[::1:80",
        "::1:80",
        "[1.2.3.4]:80",
        "[::1]:65536",
        "[fe80::1%eth0]:80",
        "host.example:80",
        "example:80",
        "localhost:",
        "localhost",
        "LOCALHOST.:1",
        "999.1.1.1:1",
        "1.2.3:80",
        "1.2.3.4.5:80",
        " 1.2.3.4:80",
        "1.2.3.4 :80",
        "1.2.3.4:80:80",
        "[::1]:80:80",
        "0123456789012345678901234567890123456789012345678901234567890123456789:80",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sockaddr_storage ss;
        socklen_t len = 0;
        int rc = parse(bad[i], &ss, &len);
        if (rc != WEIR_EINVAL) {
            print_error("accepted \"%s\"\n", bad[i]);
        }
        assert_int_equal(rc, WEIR_EINVAL);
    }
    /* Zero length and NULL text. */
    struct sockaddr_storage ss;
    socklen_t len = 0;
    assert_int_equal(weir__addr_parse(NULL, 0, &ss, &len), WEIR_EINVAL);
    /* A length that cuts the port off. */
    assert_int_equal(weir__addr_parse("1.2.3.4:80", 8, &ss, &len), WEIR_EINVAL);
}

/* Bytes after a NUL inside the given length are part of the input, and make it invalid. */
static void test_parse_rejects_embedded_nul(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len = 0;
    static const char v4[] = "127.0.0.1\0junk:80";
    assert_int_equal(weir__addr_parse(v4, sizeof(v4) - 1, &ss, &len), WEIR_EINVAL);
    static const char v6[] = "[::1\0junk]:80";
    assert_int_equal(weir__addr_parse(v6, sizeof(v6) - 1, &ss, &len), WEIR_EINVAL);
    static const char port[] = "127.0.0.1:8\0";
    assert_int_equal(weir__addr_parse(port, sizeof(port) - 1, &ss, &len), WEIR_EINVAL);
}

static void roundtrip(const char *in, const char *want)
{
    struct sockaddr_storage ss, ss2;
    socklen_t len = 0, len2 = 0;
    char out[64];
    assert_int_equal(parse(in, &ss, &len), 0);
    int n = weir__addr_format((const struct sockaddr *)&ss, out, sizeof(out));
    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(out, want);
    assert_int_equal(parse(out, &ss2, &len2), 0);
    assert_int_equal(len, len2);
    assert_true(weir__addr_equal((const struct sockaddr *)&ss, (const struct sockaddr *)&ss2));
}

static void test_format_roundtrip(void **state)
{
    (void)state;
    roundtrip("127.0.0.1:80", "127.0.0.1:80");
    roundtrip("0.0.0.0:65535", "0.0.0.0:65535");
    roundtrip("localhost:1", "127.0.0.1:1");
    roundtrip("[::1]:8080", "[::1]:8080");
    roundtrip("[2001:DB8:0:0:0:0:0:1]:443", "[2001:db8::1]:443");
    roundtrip("1.2.3.4:00080", "1.2.3.4:80");

    struct sockaddr_storage ss;
    socklen_t len;
    char out[64];
    assert_int_equal(parse("[::1]:8080", &ss, &len), 0);
    assert_int_equal(weir__addr_format_ip((const struct sockaddr *)&ss, out, sizeof(out)), 3);
    assert_string_equal(out, "::1");

    assert_int_equal(parse("192.168.100.200:65535", &ss, &len), 0);
    assert_int_equal(weir__addr_format_ip((const struct sockaddr *)&ss, out, sizeof(out)), 15);
    assert_string_equal(out, "192.168.100.200");
    /* Too small an output buffer: -1, never a truncated address. */
    assert_int_equal(weir__addr_format((const struct sockaddr *)&ss, out, 22), 21);
    assert_string_equal(out, "192.168.100.200:65535");
    assert_int_equal(weir__addr_format((const struct sockaddr *)&ss, out, 21), -1);
    assert_int_equal(weir__addr_format((const struct sockaddr *)&ss, out, 5), -1);
    assert_int_equal(weir__addr_format_ip((const struct sockaddr *)&ss, out, 10), -1);

    /* Families other than IPv4/IPv6 are not formatted. */
    struct sockaddr_storage un;
    memset(&un, 0, sizeof(un));
    un.ss_family = AF_UNIX;
    assert_int_equal(weir__addr_format((const struct sockaddr *)&un, out, sizeof(out)), -1);
    assert_int_equal(weir__addr_format_ip((const struct sockaddr *)&un, out, sizeof(out)), -1);
}

static void test_addr_equal(void **state)
{
    (void)state;
    struct sockaddr_storage a, b;
    socklen_t la, lb;
#define EQ(x, y, want)                                                                             \
    do {                                                                                           \
        assert_int_equal(parse(x, &a, &la), 0);                                                    \
        assert_int_equal(parse(y, &b, &lb), 0);                                                    \
        assert_int_equal(weir__addr_equal((struct sockaddr *)&a, (struct sockaddr *)&b), want);    \
        assert_int_equal(weir__addr_equal((struct sockaddr *)&b, (struct sockaddr *)&a), want);    \
    } while (0)
    EQ("127.0.0.1:80", "127.0.0.1:80", true);
    EQ("127.0.0.1:80", "localhost:80", true);
    EQ("127.0.0.1:80", "127.0.0.1:81", false);
    EQ("127.0.0.1:80", "127.0.0.2:80", false);
    EQ("[::1]:80", "[0:0:0:0:0:0:0:1]:80", true);
    EQ("[::1]:80", "[::1]:81", false);
    EQ("[::1]:80", "[::2]:80", false);
    EQ("127.0.0.1:80", "[::ffff:127.0.0.1]:80", false); /* different families */
#undef EQ
    struct sockaddr_storage other;
    memset(&other, 0, sizeof(other));
    other.ss_family = AF_UNSPEC; /* a family we do not compare is never equal */
    assert_false(weir__addr_equal((struct sockaddr *)&other, (struct sockaddr *)&other));
}

/*
 * A unix address in zeroed storage, copied in as bytes the way a peer's address is (storing
 * through a struct sockaddr_un and reading through a struct sockaddr would break aliasing).
 */
static socklen_t unix_addr(struct sockaddr_storage *ss, const char *path, size_t len)
{
    struct sockaddr_un un;
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    assert_true(len < sizeof(un.sun_path));
    memcpy(un.sun_path, path, len);
    memset(ss, 0, sizeof(*ss));
    memcpy(ss, &un, sizeof(un));
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
}

/* Unix-socket peers key the upstream pool like IP ones: by path, or by abstract name. */
static void test_addr_equal_unix(void **state)
{
    (void)state;
    struct sockaddr_storage a, b, in;
    socklen_t inlen;
    assert_int_equal(parse("127.0.0.1:80", &in, &inlen), 0);
#define UEQ(x, xl, y, yl, want)                                                                    \
    do {                                                                                           \
        unix_addr(&a, x, xl);                                                                      \
        unix_addr(&b, y, yl);                                                                      \
        assert_int_equal(weir__addr_equal((struct sockaddr *)&a, (struct sockaddr *)&b), want);    \
        assert_int_equal(weir__addr_equal((struct sockaddr *)&b, (struct sockaddr *)&a), want);    \
    } while (0)
    UEQ("/tmp/a.sock", 11, "/tmp/a.sock", 11, true);
    UEQ("/tmp/a.sock", 11, "/tmp/b.sock", 11, false);
    UEQ("/tmp/a.sock", 11, "/tmp/a.soc", 10, false);
    UEQ("\0abstract", 9, "\0abstract", 9, true);
    UEQ("\0abstract", 9, "\0abstrac", 8, false);
    UEQ("\0abstract", 9, "/abstract", 9, false);
#undef UEQ
    unix_addr(&a, "/tmp/a.sock", 11);
    assert_false(weir__addr_equal((struct sockaddr *)&a, (struct sockaddr *)&in));
}

/* weir__connect reaches a unix-socket peer (TCP_NODELAY is for TCP only; AF_UNIX refuses it). */
static void test_connect_unix(void **state)
{
    (void)state;
    char dir[WEIR_TEST_DIR_MAX + 1];
    assert_int_equal(weir_test_mkdtemp(dir, sizeof(dir), "sock"), 0);
    char path[WEIR_TEST_DIR_MAX + 8];
    int n = snprintf(path, sizeof(path), "%s/s", dir);
    assert_true(n > 0 && (size_t)n < sizeof(path));
    struct sockaddr_storage un;
    socklen_t len = unix_addr(&un, path, (size_t)n);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&un, len), 0);
    assert_int_equal(listen(lfd, 4), 0);
    int cfd = weir__connect((struct sockaddr *)&un, len);
    assert_true(cfd >= 0);
    assert_int_equal(weir__connect_result(cfd), 0);
    int afd = accept(lfd, NULL, NULL);
    assert_true(afd >= 0);
    assert_int_equal(write(cfd, "x", 1), 1);
    char c = 0;
    assert_int_equal(read(afd, &c, 1), 1);
    assert_int_equal(c, 'x');
    close(afd);
    close(cfd);
    close(lfd);
    /* A path nobody listens on fails at once, as a refused TCP connect would. */
    assert_int_equal(unlink(path), 0);
    assert_int_equal(weir__connect((struct sockaddr *)&un, len), -ENOENT);
    assert_int_equal(rmdir(dir), 0);
}

static void test_listen_connect(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len;
    assert_int_equal(parse("127.0.0.1:0", &ss, &len), 0);
    int lfd = weir__listen(&ss, len, false, 16);
    assert_true(lfd >= 0);
    int port = weir__sock_port(lfd);
    assert_true(port > 0);
    ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
    int cfd = weir__connect((struct sockaddr *)&ss, len);
    assert_true(cfd >= 0);
    /* Loopback connects at once or shortly; either way no error is pending. */
    assert_int_equal(weir__connect_result(cfd), 0);
    close(cfd);
    close(lfd);
    assert_int_equal(weir__sock_port(-1), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_accepts),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_parse_rejects_embedded_nul),
        cmocka_unit_test(test_format_roundtrip),
        cmocka_unit_test(test_addr_equal),
        cmocka_unit_test(test_addr_equal_unix),
        cmocka_unit_test(test_connect_unix),
        cmocka_unit_test(test_listen_connect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
