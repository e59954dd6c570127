/*
 * Unit tests for the load balancer (src/lb/lb.c): each algorithm's choices and weights,
 * nginx's smooth weighted order, the ketama ring's stability, passive ejection and its
 * backoff, backups, fail open/closed, drain, retries avoiding the backend just tried, set
 * updates keeping state, and selection racing updates from several threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/alloc.h"
#include "core/rcu.h"
#include "lb/lb_int.h"
#include "weir/error.h"

static struct weir_lb *make(enum weir_lb_algorithm alg, const struct weir_lb_backend *b, size_t n)
{
    struct weir_lb_options opt = {.algorithm = alg};
    struct weir_lb *lb = NULL;
    const char *why = NULL;
    assert_int_equal(weir_lb_new(&opt, b, n, &lb, &why), 0);
    return lb;
}

/* Index (by the last digit of the port) of the backend chosen for key. */
static int pick(struct weir_lb *lb, const char *key)
{
    struct weir_peer p;
    memset(&p, 0, sizeof(p));
    if (weir_lb_select(lb, weir_iov_cstr(key), &p) != 0) {
        return -1;
    }
    int idx = p.backend->ident[strlen(p.backend->ident) - 1] - '0';
    weir_peer_release(&p);
    return idx;
}

static const struct weir_lb_backend three[] = {
    {"127.0.0.1:9000", 1, false, false, 0},
    {"127.0.0.1:9001", 1, false, false, 0},
    {"127.0.0.1:9002", 1, false, false, 0},
};

static void test_round_robin(void **state)
{
    (void)state;
    struct weir_lb *lb = make(WEIR_LB_ROUND_ROBIN, three, 3);
    for (int i = 0; i < 9; i++) {
        assert_int_equal(pick(lb, ""), i % 3);
    }
    weir_lb_free(lb);
}

static void test_smooth_weighted(void **state)
{
    (void)state;
    /* nginx's documented example: weights 5, 1, 1 give a a b a c a a. */
    const struct weir_lb_backend b[] = {
        {"127.0.0.1:9000", 5, false, false, 0},
        {"127.0.0.1:9001", 1, false, false, 0},
        {"127.0.0.1:9002", 1, false, false, 0},
    };
    struct weir_lb *lb = make(WEIR_LB_ROUND_ROBIN, b, 3);
    const int want[] = {0, 0, 1, 0, 2, 0, 0};
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 7; i++) {
            assert_int_equal(pick(lb, ""), want[i]);
        }
    }
    weir_lb_free(lb);
}

static void test_random_weights(void **state)
{
    (void)state;
    const struct weir_lb_backend b[] = {
        {"127.0.0.1:9000", 1, false, false, 0},
        {"127.0.0.1:9001", 3, false, false, 0},
    };
    struct weir_lb *lb = make(WEIR_LB_RANDOM, b, 2);
    int count[2] = {0, 0};
    for (int i = 0; i < 40000; i++) {
        count[pick(lb, "")]++;
    }
    /* Expected 10000 for the weight-1 backend; the bounds are over 20 standard deviations. */
    assert_in_range(count[0], 8200, 11800);
    weir_lb_free(lb);
}

static void test_least_conn(void **state)
{
    (void)state;
    struct weir_lb *lb = make(WEIR_LB_LEAST_CONN, three, 3);
    /* Backend 0 has 5 requests in flight, backend 1 has 1: new picks avoid 0 whenever it
       is one of the two candidates, and prefer 2 over 1. */
    struct weir_backend **bs = NULL;
    size_t n = 0;
    assert_int_equal(weir__lb_backends(lb, &bs, &n), 0);
    atomic_store(&bs[0]->active, 5);
    atomic_store(&bs[1]->active, 1);
    int count[3] = {0, 0, 0};
    for (int i = 0; i < 3000; i++) {
        count[pick(lb, "")]++;
    }
    assert_int_equal(count[0], 0); /* two distinct candidates: 0 never beats either */
    assert_true(count[2] > count[1]);
    atomic_store(&bs[0]->active, 0);
    atomic_store(&bs[1]->active, 0);
    for (size_t i = 0; i < n; i++) {
        weir__backend_unref(bs[i]);
    }
    weir__free(bs);
    struct weir_lb_backend_info info;
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(weir_lb_backend_info(lb, i, &info), 0);
        assert_int_equal(info.active, 0);
    }
    weir_lb_free(lb);
}

static void test_crc32(void **state)
{
    (void)state;
    assert_int_equal(weir__crc32("123456789", 9), 0xCBF43926u);
    assert_int_equal(weir__crc32("", 0), 0);
}

static void test_ketama_stable(void **state)
{
    (void)state;
    const struct weir_lb_backend four[] = {
        {"127.0.0.1:9000", 1, false, false, 0},
        {"127.0.0.1:9001", 1, false, false, 0},
        {"127.0.0.1:9002", 1, false, false, 0},
        {"127.0.0.1:9003", 1, false, false, 0},
    };
    struct weir_lb *lb = make(WEIR_LB_KETAMA, four, 4);
    struct weir_lb *lb3 = make(WEIR_LB_KETAMA, four, 3); /* without :9003 */
    int count[4] = {0, 0, 0, 0};
    int moved = 0;
    char key[32];
    for (int i = 0; i < 4000; i++) {
        (void)snprintf(key, sizeof(key), "/item/%d", i);
        int a = pick(lb, key);
        assert_int_equal(pick(lb, key), a); /* deterministic */
        count[a]++;
        int b = pick(lb3, key);
        if (a != 3) {
            assert_int_equal(b, a); /* only the removed backend's keys move */
        } else {
            moved++;
        }
    }
    for (int i = 0; i < 4; i++) {
        assert_in_range(count[i], 600, 1400); /* 160 points each spread the keys */
    }
    assert_int_equal(moved, count[3]);
    weir_lb_free(lb);
    weir_lb_free(lb3);
}

static void test_passive_ejection(void **state)
{
    (void)state;
    struct weir_lb_options opt = {.algorithm = WEIR_LB_ROUND_ROBIN,
                                  .max_fails = 2,
                                  .eject_ms = 60000,
                                  .eject_max_ms = 200000};
    struct weir_lb *lb = NULL;
    assert_int_equal(weir_lb_new(&opt, three, 3, &lb, NULL), 0);
    struct weir_backend **bs = NULL;
    size_t n = 0;
    assert_int_equal(weir__lb_backends(lb, &bs, &n), 0);
    assert_int_equal(n, 3);
    weir__backend_failed(bs[1], WEIR_ERR_CONNECT_REFUSED, "connect");
    for (int i = 0; i < 6; i++) {
        (void)pick(lb, ""); /* one failure: still in rotation */
    }
    int seen1 = 0;
    for (int i = 0; i < 3; i++) {
        seen1 += pick(lb, "") == 1;
    }
    assert_int_equal(seen1, 1);
    weir__backend_failed(bs[1], WEIR_ERR_CONNECT_REFUSED, "connect");
    uint64_t now = weir__lb_now_ms();
    uint64_t until = atomic_load(&bs[1]->ejected_until_ms);
    assert_in_range(until - now, 59000, 60100);
    for (int i = 0; i < 30; i++) {
        assert_int_not_equal(pick(lb, ""), 1);
    }
    struct weir_lb_backend_info info;
    assert_int_equal(weir_lb_backend_info(lb, 1, &info), 0);
    assert_true(info.ejected);
    /* Back after its ejection and failing again: out at once, for twice as long. */
    atomic_store(&bs[1]->ejected_until_ms, 1);
    weir__backend_failed(bs[1], WEIR_ERR_CONNECT_REFUSED, "connect");
    until = atomic_load(&bs[1]->ejected_until_ms);
    assert_in_range(until - weir__lb_now_ms(), 119000, 120100);
    atomic_store(&bs[1]->ejected_until_ms, 1);
    weir__backend_failed(bs[1], WEIR_ERR_CONNECT_REFUSED, "connect");
    assert_in_range(atomic_load(&bs[1]->ejected_until_ms) - weir__lb_now_ms(), 199000, 200100);
    /* A success restores it. */
    weir__backend_succeeded(bs[1]);
    assert_int_equal(atomic_load(&bs[1]->ejected_until_ms), 0);
    assert_int_equal(atomic_load(&bs[1]->ejections), 0);
    seen1 = 0;
    for (int i = 0; i < 3; i++) {
        seen1 += pick(lb, "") == 1;
    }
    assert_int_equal(seen1, 1);
    for (size_t i = 0; i < n; i++) {
        weir__backend_unref(bs[i]);
    }
    weir__free(bs);
    weir_lb_free(lb);
}

static void test_backup_and_fail_modes(void **state)
{
    (void)state;
    const struct weir_lb_backend b[] = {
        {"127.0.0.1:9000", 1, false, false, 0},
        {"127.0.0.1:9001", 1, false, false, 0},
        {"127.0.0.1:9002", 1, true, false, 0},
    };
    struct weir_lb *lb = make(WEIR_LB_ROUND_ROBIN, b, 3);
    for (int i = 0; i < 10; i++) {
        assert_int_not_equal(pick(lb, ""), 2);
    }
    assert_int_equal(weir_lb_set_healthy(lb, "127.0.0.1:9000", false), 0);
    assert_int_equal(weir_lb_set_drain(lb, "127.0.0.1:9001", true), 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(pick(lb, ""), 2);
    }
    assert_int_equal(weir_lb_set_healthy(lb, "127.0.0.1:9002", false), 0);
    assert_int_equal(pick(lb, ""), -1); /* fail closed: nothing usable */
    assert_int_equal(weir_lb_set_healthy(lb, "127.0.0.1:9", false), WEIR_EINVAL);
    weir_lb_free(lb);

    struct weir_lb_options opt = {.algorithm = WEIR_LB_ROUND_ROBIN, .fail_open = true};
    assert_int_equal(weir_lb_new(&opt, b, 3, &lb, NULL), 0);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(weir_lb_set_healthy(lb, b[i].address, false), 0);
    }
    assert_int_equal(weir_lb_set_drain(lb, "127.0.0.1:9001", true), 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(pick(lb, ""), 0); /* all down: used anyway, but never a drained one */
    }
    weir_lb_free(lb);
}

static void test_retry_avoids_last(void **state)
{
    (void)state;
    for (int alg = WEIR_LB_ROUND_ROBIN; alg <= WEIR_LB_KETAMA; alg++) {
        struct weir_lb *lb = make((enum weir_lb_algorithm)alg, three, 3);
        for (int i = 0; i < 50; i++) {
            struct weir_peer p;
            memset(&p, 0, sizeof(p));
            assert_int_equal(weir_lb_select(lb, weir_iov_cstr("k"), &p), 0);
            struct weir_backend *first = p.backend;
            assert_int_equal(weir_lb_select(lb, weir_iov_cstr("k"), &p), 0);
            assert_ptr_not_equal(p.backend, first);
            weir_peer_release(&p);
            assert_null(p.backend);
        }
        /* One backend: the retry goes to it again rather than failing. */
        struct weir_lb *one = make((enum weir_lb_algorithm)alg, three, 1);
        struct weir_peer p;
        memset(&p, 0, sizeof(p));
        assert_int_equal(weir_lb_select(one, weir_iov_cstr("k"), &p), 0);
        assert_int_equal(weir_lb_select(one, weir_iov_cstr("k"), &p), 0);
        weir_peer_release(&p);
        weir_lb_free(one);
        weir_lb_free(lb);
    }
}

static void test_validation(void **state)
{
    (void)state;
    struct weir_lb_options opt = {0};
    struct weir_lb *lb = NULL;
    const char *why = NULL;
    const struct weir_lb_backend dup[] = {
        {"127.0.0.1:9000", 1, false, false, 0},
        {"127.0.0.1:9000", 2, false, false, 0},
    };
    assert_int_equal(weir_lb_new(&opt, dup, 2, &lb, &why), WEIR_EINVAL);
    assert_non_null(strstr(why, "twice"));
    const struct weir_lb_backend heavy[] = {{"127.0.0.1:9000", 257, false, false, 0}};
    assert_int_equal(weir_lb_new(&opt, heavy, 1, &lb, &why), WEIR_EINVAL);
    const struct weir_lb_backend bad[] = {{"example.invalid:80", 1, false, false, 0}};
    assert_int_equal(weir_lb_new(&opt, bad, 1, &lb, &why), WEIR_EINVAL);
    opt.algorithm = (enum weir_lb_algorithm)99;
    assert_int_equal(weir_lb_new(&opt, three, 3, &lb, &why), WEIR_EINVAL);
    /* An empty set selects nothing. */
    opt.algorithm = WEIR_LB_ROUND_ROBIN;
    assert_int_equal(weir_lb_new(&opt, NULL, 0, &lb, &why), 0);
    assert_int_equal(pick(lb, ""), -1);
    weir_lb_free(lb);
}

static void test_update_keeps_state(void **state)
{
    (void)state;
    struct weir_lb *lb = make(WEIR_LB_ROUND_ROBIN, three, 3);
    assert_int_equal(weir_lb_set_healthy(lb, "127.0.0.1:9001", false), 0);
    struct weir_peer held;
    memset(&held, 0, sizeof(held));
    assert_int_equal(weir_lb_select(lb, weir_iov_cstr(""), &held), 0);
    assert_string_equal(held.backend->ident, "127.0.0.1:9000");
    /* Drop :9000 (held by a request), keep :9001 (down), add :9003. */
    const struct weir_lb_backend next[] = {
        {"127.0.0.1:9001", 1, false, false, 0},
        {"127.0.0.1:9002", 1, false, false, 0},
        {"127.0.0.1:9003", 1, false, false, 0},
    };
    const char *why = NULL;
    assert_int_equal(weir_lb_update(lb, next, 3, &why), 0);
    assert_int_equal(weir_lb_size(lb), 3);
    struct weir_lb_backend_info info;
    assert_int_equal(weir_lb_backend_info(lb, 0, &info), 0);
    assert_string_equal(info.address, "127.0.0.1:9001");
    assert_false(info.healthy);
    for (int i = 0; i < 10; i++) {
        int idx = pick(lb, "");
        assert_true(idx == 2 || idx == 3);
    }
    /* The dropped backend lives on while the request holds it. */
    assert_string_equal(held.backend->ident, "127.0.0.1:9000");
    weir_peer_release(&held);
    /* A bad update leaves the set in force. */
    const struct weir_lb_backend bad[] = {{"nonsense", 1, false, false, 0}};
    assert_int_equal(weir_lb_update(lb, bad, 1, &why), WEIR_EINVAL);
    assert_int_equal(weir_lb_size(lb), 3);
    weir_lb_free(lb);
}

static void test_max_conns(void **state)
{
    (void)state;
    const struct weir_lb_backend b[] = {
        {"127.0.0.1:9000", 1, false, false, 2},
        {"127.0.0.1:9001", 1, false, false, 1},
    };
    struct weir_lb *lb = make(WEIR_LB_ROUND_ROBIN, b, 2);
    struct weir_peer p[4];
    memset(p, 0, sizeof(p));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(weir_lb_select(lb, weir_iov_cstr(""), &p[i]), 0);
    }
    /* 2 + 1 in flight: both at their cap. */
    assert_int_equal(weir_lb_select(lb, weir_iov_cstr(""), &p[3]), WEIR_ELIMIT);
    assert_null(p[3].backend);
    weir_peer_release(&p[0]);
    assert_int_equal(weir_lb_select(lb, weir_iov_cstr(""), &p[3]), 0);
    assert_int_equal(weir_lb_select(lb, weir_iov_cstr(""), &p[0]), WEIR_ELIMIT);
    /* A backend that is down does not make the answer "at capacity": only usable ones do. */
    assert_int_equal(weir_lb_set_healthy(lb, "127.0.0.1:9000", false), 0);
    assert_int_equal(weir_lb_select(lb, weir_iov_cstr(""), &p[0]), WEIR_ELIMIT);
    assert_int_equal(weir_lb_set_healthy(lb, "127.0.0.1:9001", false), 0);
    assert_int_equal(weir_lb_select(lb, weir_iov_cstr(""), &p[0]), WEIR_EUNAVAILABLE);
    for (int i = 1; i < 4; i++) {
        weir_peer_release(&p[i]);
    }
    /* The queue bound. */
    assert_true(weir__lb_queue_enter(lb));
    weir__lb_queue_leave(lb);
    weir_lb_free(lb);
    struct weir_lb_options opt = {.queue_size = 2};
    assert_int_equal(weir_lb_new(&opt, b, 2, &lb, NULL), 0);
    assert_true(weir__lb_queue_enter(lb));
    assert_true(weir__lb_queue_enter(lb));
    assert_false(weir__lb_queue_enter(lb));
    weir__lb_queue_leave(lb);
    assert_true(weir__lb_queue_enter(lb));
    weir__lb_queue_leave(lb);
    weir__lb_queue_leave(lb);
    weir_lb_free(lb);
    opt.queue_size = UINT32_MAX; /* none wait */
    assert_int_equal(weir_lb_new(&opt, b, 2, &lb, NULL), 0);
    assert_false(weir__lb_queue_enter(lb));
    weir_lb_free(lb);
}

struct race {
    struct weir_lb *lb;
    atomic_bool stop;
    atomic_ulong picks;
};

static void *selector(void *arg)
{
    struct race *r = arg;
    weir__rcu_register();
    unsigned long n = 0;
    while (!atomic_load(&r->stop) || n < 1000) {
        struct weir_peer p;
        memset(&p, 0, sizeof(p));
        if (weir_lb_select(r->lb, weir_iov_cstr("key"), &p) == 0) {
            n++;
            weir__backend_succeeded(p.backend);
            weir_peer_release(&p);
        }
        weir__rcu_quiescent();
    }
    atomic_fetch_add(&r->picks, n);
    weir__rcu_unregister();
    return NULL;
}

static void test_concurrent_updates(void **state)
{
    (void)state;
    for (int alg = WEIR_LB_ROUND_ROBIN; alg <= WEIR_LB_KETAMA; alg++) {
        struct race r = {.lb = make((enum weir_lb_algorithm)alg, three, 3)};
        atomic_init(&r.stop, false);
        atomic_init(&r.picks, 0);
        pthread_t th[3];
        for (int i = 0; i < 3; i++) {
            assert_int_equal(pthread_create(&th[i], NULL, selector, &r), 0);
        }
        for (int i = 0; i < 200; i++) {
            /* Alternate between two sets that share one backend. */
            const struct weir_lb_backend *set = (i % 2) ? three : three + 1;
            assert_int_equal(weir_lb_update(r.lb, set, 2, NULL), 0);
        }
        atomic_store(&r.stop, true);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(pthread_join(th[i], NULL), 0);
        }
        assert_true(atomic_load(&r.picks) >= 3000);
        weir_lb_free(r.lb);
    }
}

/* The health checker's way in: the set's lock, taken by an RCU reader that is online. */
static void *lock_taker(void *arg)
{
    struct race *r = arg;
    weir__rcu_register();
    unsigned long n = 0;
    while (!atomic_load(&r->stop) || n < 100) {
        struct weir_backend **bs = NULL;
        size_t nb = 0;
        if (weir__lb_backends(r->lb, &bs, &nb) == 0) {
            for (size_t i = 0; i < nb; i++) {
                weir__backend_unref(bs[i]);
            }
            weir__free(bs);
            n++;
        }
        weir__rcu_quiescent();
    }
    atomic_fetch_add(&r->picks, n);
    weir__rcu_unregister();
    return NULL;
}

/*
 * Regression: weir_lb_update used to wait for the grace period holding the set's lock, so a
 * reader blocked on that lock (the health checker starting a round) never passed a quiescent
 * state and both waited forever. The alarm turns a deadlock into a failure.
 */
static void test_update_while_a_reader_takes_the_lock(void **state)
{
    (void)state;
    struct race r = {.lb = make(WEIR_LB_ROUND_ROBIN, three, 3)};
    atomic_init(&r.stop, false);
    atomic_init(&r.picks, 0);
    alarm(60);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, lock_taker, &r), 0);
    }
    for (int i = 0; i < 2000; i++) {
        const struct weir_lb_backend *set = (i % 2) ? three : three + 1;
        assert_int_equal(weir_lb_update(r.lb, set, 2, NULL), 0);
    }
    atomic_store(&r.stop, true);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
    }
    alarm(0);
    assert_true(atomic_load(&r.picks) >= 200);
    weir_lb_free(r.lb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_robin),
        cmocka_unit_test(test_smooth_weighted),
        cmocka_unit_test(test_random_weights),
        cmocka_unit_test(test_least_conn),
        cmocka_unit_test(test_crc32),
        cmocka_unit_test(test_ketama_stable),
        cmocka_unit_test(test_passive_ejection),
        cmocka_unit_test(test_backup_and_fail_modes),
        cmocka_unit_test(test_retry_avoids_last),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_update_keeps_state),
        cmocka_unit_test(test_max_conns),
        cmocka_unit_test(test_concurrent_updates),
        cmocka_unit_test(test_update_while_a_reader_takes_the_lock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
