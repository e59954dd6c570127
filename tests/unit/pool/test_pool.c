/*
 * Unit tests for the two-tier upstream pool (src/pool/pool.c): a connection released on one
 * worker is reused by another once it has idled past share_after; a busy worker keeps its
 * own; the shared tier evicts connections the peer closed or sent bytes on, and ones idle too
 * long, before handing anything out; its bounds per peer and in total hold; a full hot list
 * spills its oldest into the shared tier. Two loops in one thread stand for two workers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/loop.h"
#include "../tmpdir.h"
#include "net/sock.h"
#include "pool/pool.h"
#include "weir/error.h"

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void stop_cb(struct weir_loop *loop, struct weir_timer *t)
{
    (void)t;
    weir__loop_stop(loop);
}

/* Runs loop's events and timers for about ms milliseconds. */
static void run_for(struct weir_loop *loop, unsigned ms)
{
    struct weir_timer stop;
    weir_timer_init(&stop, stop_cb, NULL);
    assert_int_equal(weir_timer_start(loop, &stop, ms), 0);
    assert_int_equal(weir__loop_run(loop), 0);
    weir_timer_stop(loop, &stop);
}

struct worker {
    struct weir_loop *loop;
    struct weir__bufpool bufs;
    struct weir__pool *pool;
};

struct fixture {
    int lfd;
    struct weir_peer peer;
    struct weir__pool_shared *sh;
    struct worker w[2];
    int accepted[16];
    int naccepted;
};

static void worker_init(struct worker *w, struct weir__pool_shared *sh, uint32_t per_key,
                        uint32_t idle_ms)
{
    w->loop = weir__loop_new(64);
    assert_non_null(w->loop);
    assert_int_equal(weir__bufpool_init(&w->bufs, 4096, 4), 0);
    w->pool = weir__pool_new(w->loop, &w->bufs, per_key, 64, idle_ms, sh, 20);
    assert_non_null(w->pool);
}

static void worker_dispose(struct worker *w)
{
    weir__pool_free(w->pool);
    run_for(w->loop, 1); /* deferred frees */
    weir__bufpool_dispose(&w->bufs);
    weir__loop_free(w->loop);
}

static struct fixture *setup(uint32_t shared_per_key, uint32_t shared_total, uint32_t hot_per_key,
                             uint32_t idle_ms)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(f->lfd, 64), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&a, &len), 0);
    assert_int_equal(weir_peer_set_sockaddr(&f->peer, (struct sockaddr *)&a, len), 0);
    f->sh = weir__pool_shared_new(shared_per_key, shared_total, idle_ms);
    assert_non_null(f->sh);
    worker_init(&f->w[0], f->sh, hot_per_key, idle_ms);
    worker_init(&f->w[1], f->sh, hot_per_key, idle_ms);
    return f;
}

static void teardown_fixture(struct fixture *f)
{
    worker_dispose(&f->w[0]);
    worker_dispose(&f->w[1]);
    weir__pool_shared_free(f->sh);
    for (int i = 0; i < f->naccepted; i++) {
        close(f->accepted[i]);
    }
    close(f->lfd);
    free(f);
}

/* A connected upstream connection from worker i, as a session would release it. */
static struct weir__upconn *open_conn(struct fixture *f, int i)
{
    struct weir__upconn *u = NULL;
    assert_int_equal(weir__upconn_connect(f->w[i].pool, &f->peer, &u), 0);
    int fd = -1;
    for (int tries = 0; tries < 200 && fd < 0; tries++) {
        fd = accept(f->lfd, NULL, NULL);
        if (fd < 0) {
            sleep_ms(1);
        }
    }
    assert_true(fd >= 0);
    assert_true(f->naccepted < 16);
    f->accepted[f->naccepted++] = fd;
    assert_int_equal(weir__connect_result(u->st.io.fd), 0);
    u->connected = true;
    return u;
}

static void test_shared_after_idle(void **state)
{
    (void)state;
    struct fixture *f = setup(8, 64, 8, 60000);
    struct weir__upconn *u = open_conn(f, 0);
    assert_true(weir__pool_put(f->w[0].pool, u));
    /* Fresh in worker 0's hot tier: worker 1 cannot see it; worker 0 takes it back. */
    assert_null(weir__pool_take(f->w[1].pool, &f->peer));
    struct weir__upconn *again = weir__pool_take(f->w[0].pool, &f->peer);
    assert_ptr_equal(again, u);
    assert_int_equal(weir__pool_stats(f->w[0].pool)->reuses, 1);
    assert_true(weir__pool_put(f->w[0].pool, u));
    /* Idle past share_after (20 ms): the sweep moves it to the shared tier. */
    run_for(f->w[0].loop, 60);
    assert_int_equal(weir__pool_idle_count(f->w[0].pool), 0);
    assert_int_equal(weir__pool_shared_idle_count(f->sh), 1);
    assert_int_equal(weir__pool_stats(f->w[0].pool)->to_shared, 1);
    struct weir__upconn *got = weir__pool_take(f->w[1].pool, &f->peer);
    assert_ptr_equal(got, u);
    assert_ptr_equal(got->pool, f->w[1].pool);
    assert_int_equal(weir__pool_stats(f->w[1].pool)->reuses_shared, 1);
    assert_int_equal(weir__pool_shared_idle_count(f->sh), 0);
    /* It works on worker 1's loop: a write reaches the peer. */
    assert_int_equal(write(got->st.io.fd, "x", 1), 1);
    char c;
    sleep_ms(5);
    assert_int_equal(read(f->accepted[0], &c, 1), 1);
    weir__upconn_close(f->w[1].pool, got);
    teardown_fixture(f);
}

static void test_shared_evicts_closed_and_stray_bytes(void **state)
{
    (void)state;
    struct fixture *f = setup(8, 64, 8, 60000);
    struct weir__upconn *a = open_conn(f, 0);
    struct weir__upconn *b = open_conn(f, 0);
    assert_true(weir__pool_put(f->w[0].pool, a));
    assert_true(weir__pool_put(f->w[0].pool, b));
    run_for(f->w[0].loop, 60);
    assert_int_equal(weir__pool_shared_idle_count(f->sh), 2);
    /* The peer closes one and writes on the other while both sit in the shared tier. */
    close(f->accepted[0]);
    assert_int_equal(write(f->accepted[1], "junk", 4), 4);
    f->accepted[0] = socket(AF_INET, SOCK_STREAM, 0); /* keep teardown's close balanced */
    sleep_ms(10);
    assert_null(weir__pool_take(f->w[1].pool, &f->peer));
    struct weir__pool_stats st;
    weir__pool_shared_stats(f->sh, &st);
    assert_int_equal(st.evict_closed, 2);
    assert_int_equal(weir__pool_shared_idle_count(f->sh), 0);
    teardown_fixture(f);
}

static void test_shared_idle_timeout(void **state)
{
    (void)state;
    struct fixture *f = setup(8, 64, 8, 80);
    struct weir__upconn *u = open_conn(f, 0);
    assert_true(weir__pool_put(f->w[0].pool, u));
    run_for(f->w[0].loop, 40);
    assert_int_equal(weir__pool_shared_idle_count(f->sh), 1);
    sleep_ms(100);
    run_for(f->w[1].loop, 1); /* the loop's clock moves on */
    assert_null(weir__pool_take(f->w[1].pool, &f->peer));
    struct weir__pool_stats st;
    weir__pool_shared_stats(f->sh, &st);
    assert_int_equal(st.evict_timeout, 1);
    teardown_fixture(f);
}

static void test_shared_bounds(void **state)
{
    (void)state;
    /* Two per peer in the shared tier: sharing three evicts the oldest. */
    struct fixture *f = setup(2, 64, 8, 60000);
    struct weir__upconn *u[3];
    for (int i = 0; i < 3; i++) {
        u[i] = open_conn(f, 0);
    }
    for (int i = 0; i < 3; i++) {
        assert_true(weir__pool_put(f->w[0].pool, u[i]));
    }
    run_for(f->w[0].loop, 60);
    assert_int_equal(weir__pool_shared_idle_count(f->sh), 2);
    struct weir__pool_stats st;
    weir__pool_shared_stats(f->sh, &st);
    assert_int_equal(st.evict_full, 1);
    /* The most recently released comes out first. */
    struct weir__upconn *got = weir__pool_take(f->w[1].pool, &f->peer);
    assert_ptr_equal(got, u[2]);
    weir__upconn_close(f->w[1].pool, got);
    teardown_fixture(f);
}

static void test_full_hot_list_spills_to_shared(void **state)
{
    (void)state;
    /* One idle connection per peer in a hot tier: a second release pushes the older one
       into the shared tier at once, where the other worker finds it. */
    struct fixture *f = setup(8, 64, 1, 60000);
    struct weir__upconn *a = open_conn(f, 0);
    struct weir__upconn *b = open_conn(f, 0);
    assert_true(weir__pool_put(f->w[0].pool, a));
    assert_true(weir__pool_put(f->w[0].pool, b));
    assert_int_equal(weir__pool_idle_count(f->w[0].pool), 1);
    assert_int_equal(weir__pool_shared_idle_count(f->sh), 1);
    assert_ptr_equal(weir__pool_take(f->w[1].pool, &f->peer), a);
    assert_ptr_equal(weir__pool_take(f->w[0].pool, &f->peer), b);
    weir__upconn_close(f->w[1].pool, a);
    weir__upconn_close(f->w[0].pool, b);
    teardown_fixture(f);
}

static void test_rarely_wanted_peer_shared_at_once(void **state)
{
    (void)state;
    /* A worker that looks for a connection to a peer only now and then (no other look within
       share_after) hands the connection to the shared tier as soon as it is released; one
       that keeps asking keeps it hot. */
    struct fixture *f = setup(8, 64, 8, 60000);
    assert_null(weir__pool_take(f->w[0].pool, &f->peer)); /* first look: a miss */
    struct weir__upconn *u = open_conn(f, 0);
    assert_true(weir__pool_put(f->w[0].pool, u));
    assert_int_equal(weir__pool_idle_count(f->w[0].pool), 0);
    assert_int_equal(weir__pool_shared_idle_count(f->sh), 1);
    assert_ptr_equal(weir__pool_take(f->w[1].pool, &f->peer), u);
    /* Worker 1 now asks again right away: in demand there, so it stays hot. */
    assert_true(weir__pool_put(f->w[1].pool, u));
    assert_ptr_equal(weir__pool_take(f->w[1].pool, &f->peer), u);
    assert_true(weir__pool_put(f->w[1].pool, u));
    assert_int_equal(weir__pool_idle_count(f->w[1].pool), 1);
    assert_int_equal(weir__pool_shared_idle_count(f->sh), 0);
    teardown_fixture(f);
}

static void test_no_sharing_without_shared_tier(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(16);
    struct weir__bufpool bufs;
    assert_int_equal(weir__bufpool_init(&bufs, 4096, 4), 0);
    struct weir__pool *p = weir__pool_new(loop, &bufs, 1, 4, 60000, NULL, 20);
    assert_non_null(p);
    struct weir_peer peer;
    memset(&peer, 0, sizeof(peer));
    assert_int_equal(weir_peer_set_address(&peer, "127.0.0.1:9"), 0);
    assert_null(weir__pool_take(p, &peer));
    weir__pool_free(p);
    weir__bufpool_dispose(&bufs);
    weir__loop_free(loop);
}

static void test_lone_pool_keeps_recent_surplus_then_trims(void **state)
{
    (void)state;
    /* No shared tier, two per key: connections released while the oldest idle one idled
       less than a second are kept (up to four times the bound), the rest of a burst closed;
       the surplus is closed once it has idled a second. */
    struct fixture *f = setup(2, 64, 2, 60000);
    weir__pool_free(f->w[0].pool);
    f->w[0].pool = weir__pool_new(f->w[0].loop, &f->w[0].bufs, 2, 64, 60000, NULL, 20);
    assert_non_null(f->w[0].pool);
    struct weir__upconn *u[10];
    for (int i = 0; i < 10; i++) {
        u[i] = open_conn(f, 0);
    }
    for (int i = 0; i < 10; i++) {
        assert_true(weir__pool_put(f->w[0].pool, u[i]));
    }
    assert_int_equal(weir__pool_idle_count(f->w[0].pool), 8);
    assert_int_equal(weir__pool_stats(f->w[0].pool)->evict_full, 2);
    run_for(f->w[0].loop, 1200);
    assert_int_equal(weir__pool_idle_count(f->w[0].pool), 2);
    assert_int_equal(weir__pool_stats(f->w[0].pool)->evict_full, 8);
    /* the most recently released are the ones kept */
    struct weir__upconn *got = weir__pool_take(f->w[0].pool, &f->peer);
    assert_ptr_equal(got, u[9]);
    weir__upconn_close(f->w[0].pool, got);
    teardown_fixture(f);
}

static void unix_peer(struct weir_peer *peer, const char *dir, const char *name)
{
    struct sockaddr_un un;
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    int n = snprintf(un.sun_path, sizeof(un.sun_path), "%s/%s", dir, name);
    assert_true(n > 0 && (size_t)n < sizeof(un.sun_path));
    memset(peer, 0, sizeof(*peer));
    peer->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + 1);
    memcpy(&peer->addr, &un, peer->addrlen);
}

/*
 * A unix-socket peer is a pool key like an IP one: the connection released comes back for the
 * same path and not for another, and a close while it is idle evicts it (its key must be found
 * to unlink it before it is freed).
 */
static void test_unix_peer_key(void **state)
{
    (void)state;
    char dir[WEIR_TEST_DIR_MAX + 1];
    assert_int_equal(weir_test_mkdtemp(dir, sizeof(dir), "pool"), 0);
    struct weir_peer peer, other;
    unix_peer(&peer, dir, "origin");
    unix_peer(&other, dir, "other");
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&peer.addr, peer.addrlen), 0);
    assert_int_equal(listen(lfd, 4), 0);
    struct worker w;
    worker_init(&w, NULL, 8, 60000);
    struct weir__upconn *u = NULL;
    assert_int_equal(weir__upconn_connect(w.pool, &peer, &u), 0);
    int afd = accept(lfd, NULL, NULL);
    assert_true(afd >= 0);
    u->connected = true;
    assert_true(weir__pool_put(w.pool, u));
    assert_null(weir__pool_take(w.pool, &other));
    assert_ptr_equal(weir__pool_take(w.pool, &peer), u);
    assert_int_equal(weir__pool_stats(w.pool)->reuses, 1);
    assert_true(weir__pool_put(w.pool, u));
    assert_int_equal(weir__pool_idle_count(w.pool), 1);
    close(afd);
    run_for(w.loop, 20);
    assert_int_equal(weir__pool_idle_count(w.pool), 0);
    assert_int_equal(weir__pool_stats(w.pool)->evict_closed, 1);
    assert_null(weir__pool_take(w.pool, &peer));
    worker_dispose(&w);
    close(lfd);
    struct sockaddr_un path;
    memcpy(&path, &peer.addr, sizeof(path));
    assert_int_equal(unlink(path.sun_path), 0);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_after_idle),
        cmocka_unit_test(test_shared_evicts_closed_and_stray_bytes),
        cmocka_unit_test(test_shared_idle_timeout),
        cmocka_unit_test(test_shared_bounds),
        cmocka_unit_test(test_full_hot_list_spills_to_shared),
        cmocka_unit_test(test_rarely_wanted_peer_shared_at_once),
        cmocka_unit_test(test_no_sharing_without_shared_tier),
        cmocka_unit_test(test_lone_pool_keeps_recent_surplus_then_trims),
        cmocka_unit_test(test_unix_peer_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
