/*
 * Unit tests for stream reads and queued writes (src/net/stream.c) over a non-blocking
 * socketpair: short writes resumed in order, EOF, a full buffer, and growing a buffer for a
 * long message head.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/stream.h"
#include "weir/error.h"

struct fx {
    int sv[2];
    struct weir__bufpool pool;
    struct weir__stream st;
};

static int setup(void **state)
{
    static struct fx fx;
    memset(&fx, 0, sizeof(fx));
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fx.sv) != 0) {
        return -1;
    }
    if (weir__bufpool_init(&fx.pool, 16, 4) != 0) {
        return -1;
    }
    fx.st.io.fd = fx.sv[0];
    fx.st.readable = true;
    fx.st.writable = true;
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    weir__buf_release(&fx->pool, &fx->st.in);
    weir__bufpool_dispose(&fx->pool);
    if (fx->sv[0] >= 0) {
        close(fx->sv[0]);
    }
    if (fx->sv[1] >= 0) {
        close(fx->sv[1]);
    }
    return 0;
}

/* ---- outq ---- */

#define PART (300 * 1024)
static char parts[4][PART];
static char received[4 * PART + 16];

static size_t drain(int fd, size_t at)
{
    for (;;) {
        ssize_t n = read(fd, received + at, sizeof(received) - at);
        if (n <= 0) {
            assert_true(n == 0 || errno == EAGAIN);
            return at;
        }
        at += (size_t)n;
    }
}

static void test_outq_push_len(void **state)
{
    (void)state;
    struct weir__outq q = {0};
    assert_true(weir__outq_empty(&q));
    weir__outq_push(&q, "abc", 3);
    weir__outq_push(&q, "", 0); /* ignored */
    weir__outq_push(&q, "de", 2);
    assert_int_equal(q.n, 2);
    assert_int_equal(weir__outq_len(&q), 5);
    assert_false(weir__outq_empty(&q));
    weir__outq_reset(&q);
    assert_true(weir__outq_empty(&q));
    assert_int_equal(weir__outq_len(&q), 0);
}

/* A queue holds WEIR_OUTQ_MAX ranges; one more aborts (WEIR_ASSERT) rather than dropping bytes. */
static void test_outq_fifth_range_not_lost(void **state)
{
    (void)state;
    struct weir__outq q = {0};
    for (int i = 0; i < WEIR_OUTQ_MAX; i++) {
        weir__outq_push(&q, "xy", 2);
    }
    assert_int_equal(weir__outq_len(&q), 2 * WEIR_OUTQ_MAX);
}

static void test_flush_partial_writes(void **state)
{
    struct fx *fx = *state;
    size_t total = 0;
    for (int p = 0; p < 4; p++) {
        for (size_t i = 0; i < PART; i++) {
            parts[p][i] = (char)((i * 31 + (size_t)p * 7) & 0xff);
        }
    }
    /* Ranges of different sizes, so short writes stop inside various iovecs. */
    static const size_t sizes[4] = {PART, 17, PART - 5, PART};
    struct weir__outq q = {0};
    for (int p = 0; p < 4; p++) {
        weir__outq_push(&q, parts[p], sizes[p]);
        total += sizes[p];
    }
    assert_int_equal(weir__outq_len(&q), total);

    /* The peer's buffer fills long before 900 KiB: the first flush is short. */
    ssize_t n = weir__stream_flush(&fx->st, &q);
    assert_true(n > 0);
    assert_true((size_t)n < total);
    assert_false(fx->st.writable);
    assert_false(weir__outq_empty(&q));
    assert_int_equal(weir__outq_len(&q), total - (size_t)n);

    size_t written = (size_t)n;
    size_t got = 0;
    int rounds = 0;
    while (!weir__outq_empty(&q)) {
        assert_true(++rounds < 10000);
        got = drain(fx->sv[1], got);
        fx->st.writable = true;
        n = weir__stream_flush(&fx->st, &q);
        assert_true(n >= 0);
        written += (size_t)n;
        assert_int_equal(weir__outq_len(&q), total - written);
    }
    assert_int_equal(written, total);
    assert_int_equal(q.n, 0); /* reset once drained */
    assert_int_equal(q.i, 0);
    got = drain(fx->sv[1], got);
    assert_int_equal(got, total);
    size_t at = 0;
    for (int p = 0; p < 4; p++) {
        assert_memory_equal(received + at, parts[p], sizes[p]);
        at += sizes[p];
    }
    /* Flushing an empty queue writes nothing. */
    assert_int_equal(weir__stream_flush(&fx->st, &q), 0);
}

static void test_flush_error(void **state)
{
    struct fx *fx = *state;
    signal(SIGPIPE, SIG_IGN); /* as the server does */
    close(fx->sv[1]);
    fx->sv[1] = -1;
    struct weir__outq q = {0};
    weir__outq_push(&q, "abc", 3);
    ssize_t n = weir__stream_flush(&fx->st, &q);
    assert_int_equal(n, -EPIPE);
    assert_false(weir__outq_empty(&q));
}

/* ---- reads ---- */

static void test_read_eagain_then_data_then_eof(void **state)
{
    struct fx *fx = *state;
    /* Nothing yet: 0 and no longer readable, not EOF. */
    assert_int_equal(weir__stream_read(&fx->st, &fx->pool), 0);
    assert_false(fx->st.readable);
    assert_false(fx->st.eof);
    assert_non_null(fx->st.in.data);
    assert_int_equal(fx->pool.outstanding, 1);

    assert_int_equal(write(fx->sv[1], "hello", 5), 5);
    fx->st.readable = true;
    assert_int_equal(weir__stream_read(&fx->st, &fx->pool), 5);
    assert_true(fx->st.readable);
    assert_int_equal(weir__buf_len(&fx->st.in), 5);
    assert_memory_equal(fx->st.in.data + fx->st.in.rpos, "hello", 5);

    assert_int_equal(shutdown(fx->sv[1], SHUT_WR), 0);
    assert_int_equal(weir__stream_read(&fx->st, &fx->pool), 0);
    assert_true(fx->st.eof);
    assert_false(fx->st.readable);
    /* The bytes read before EOF are still there. */
    assert_int_equal(weir__buf_len(&fx->st.in), 5);
}

static void test_read_buffer_full(void **state)
{
    struct fx *fx = *state;
    static const char msg[] = "0123456789abcdefGHIJKLMNOPQRSTUV"; /* 32 bytes, buffer 16 */
    assert_int_equal(write(fx->sv[1], msg, 32), 32);
    assert_int_equal(weir__stream_read(&fx->st, &fx->pool), 16);
    assert_int_equal(weir__buf_space(&fx->st.in), 0);
    /* Full: nothing read, but the socket still has bytes, so it stays readable. */
    assert_int_equal(weir__stream_read(&fx->st, &fx->pool), 0);
    assert_true(fx->st.readable);
    assert_false(fx->st.eof);
    /* Consuming a prefix makes room (the read compacts first). */
    weir__buf_consume(&fx->st.in, 10);
    assert_int_equal(weir__stream_read(&fx->st, &fx->pool), 10);
    assert_int_equal(fx->st.in.rpos, 0);
    assert_memory_equal(fx->st.in.data, msg + 10, 16);
    weir__buf_consume(&fx->st.in, 16);
    assert_int_equal(weir__stream_read(&fx->st, &fx->pool), 6);
    assert_memory_equal(fx->st.in.data, msg + 26, 6);
    assert_int_equal(weir__stream_read(&fx->st, &fx->pool), 0);
    assert_false(fx->st.readable);
}

static void test_read_error(void **state)
{
    struct fx *fx = *state;
    struct weir__stream bad = {0};
    bad.io.fd = -1;
    assert_int_equal(weir__stream_read(&bad, &fx->pool), -EBADF);
    weir__buf_release(&fx->pool, &bad.in);
    assert_int_equal(fx->pool.outstanding, 0);
}

/* ---- growing for a head ---- */

static void test_grow_for_head(void **state)
{
    struct fx *fx = *state;
    /* No buffer yet: nothing to do. */
    assert_int_equal(weir__stream_grow_for_head(&fx->st, &fx->pool, 64), 0);
    assert_null(fx->st.in.data);

    static const char head[] =
        "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n";
    size_t hlen = sizeof(head) - 1;
    assert_true(hlen > 64);
    assert_int_equal(write(fx->sv[1], head, hlen), (ssize_t)hlen);

    assert_int_equal(weir__stream_read(&fx->st, &fx->pool), 16);
    /* Room left after a consumed prefix: compacts, keeps the pooled buffer. */
    weir__buf_consume(&fx->st.in, 4);
    char *pooled = fx->st.in.data;
    assert_int_equal(weir__stream_grow_for_head(&fx->st, &fx->pool, 64), 0);
    assert_ptr_equal(fx->st.in.data, pooled);
    assert_int_equal(fx->st.in.rpos, 0);
    assert_int_equal(fx->st.in.wpos, 12);
    assert_memory_equal(fx->st.in.data, head + 4, 12);
    assert_int_equal(weir__stream_read(&fx->st, &fx->pool), 4);

    /* Full from the start: moves to a 64-byte heap buffer, bytes intact. */
    assert_int_equal(weir__stream_grow_for_head(&fx->st, &fx->pool, 64), 0);
    assert_int_equal(fx->st.in.cap, 64);
    assert_int_equal(fx->st.in.rpos, 0);
    assert_int_equal(fx->st.in.wpos, 16);
    assert_memory_equal(fx->st.in.data, head + 4, 16);
    assert_int_equal(fx->pool.outstanding, 1);
#ifndef WEIR_NO_POOLS
    assert_int_equal(fx->pool.nfree, 1); /* the small block went back to the pool */
#endif
    /* Not full: a second call changes nothing. */
    char *big = fx->st.in.data;
    assert_int_equal(weir__stream_grow_for_head(&fx->st, &fx->pool, 64), 0);
    assert_ptr_equal(fx->st.in.data, big);

    assert_int_equal(weir__stream_read(&fx->st, &fx->pool), 48);
    assert_memory_equal(fx->st.in.data, head + 4, 64);
    /* Full at max: the head is too large. */
    assert_int_equal(weir__stream_grow_for_head(&fx->st, &fx->pool, 64), WEIR_ELIMIT);
    assert_int_equal(weir__stream_grow_for_head(&fx->st, &fx->pool, 32), WEIR_ELIMIT);

    /* The big buffer is released like any other and is not pooled. */
    weir__buf_release(&fx->pool, &fx->st.in);
    assert_int_equal(fx->pool.outstanding, 0);
#ifndef WEIR_NO_POOLS
    assert_int_equal(fx->pool.nfree, 1);
#endif
    /* A fresh read gets a pool-sized buffer again. */
    assert_true(weir__stream_read(&fx->st, &fx->pool) > 0);
    assert_int_equal(fx->st.in.cap, 16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outq_push_len),
        cmocka_unit_test(test_outq_fifth_range_not_lost),
        cmocka_unit_test_setup_teardown(test_flush_partial_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_eagain_then_data_then_eof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_buffer_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grow_for_head, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
