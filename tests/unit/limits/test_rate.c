/*
 * Unit tests for the rate estimator (src/limits/rate.c): exact counts for a lone key,
 * count-min accuracy against exact counts over many keys (never under, over by more than
 * e*N/S for few keys), the sliding estimate across window rotation, clearing of a reused
 * window, and concurrent increments from several threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <pthread.h>

#include <cmocka.h>

#include "weir/limits.h"

static void test_bad_arguments(void **state)
{
    (void)state;
    struct weir_rate *r = NULL;
    assert_int_equal(weir_rate_new(0, 0, 0, &r), WEIR_EINVAL);
    assert_int_equal(weir_rate_new(1000, 17, 0, &r), WEIR_EINVAL);
    assert_int_equal(weir_rate_new(1000, 4, (1u << 24) + 1, &r), WEIR_EINVAL);
    assert_null(r);
    assert_int_equal(weir_rate_new(1000, 1, 1, &r), 0); /* rounded up to 16 slots */
    assert_non_null(r);
    weir_rate_free(r);
    weir_rate_free(NULL);
}

static void test_single_key_exact(void **state)
{
    (void)state;
    struct weir_rate *r = NULL;
    assert_int_equal(weir_rate_new(1000, 0, 0, &r), 0);
    assert_non_null(r);
    for (uint64_t i = 1; i <= 100; i++) {
        assert_int_equal(weir_rate_observe(r, "10.0.0.1", 8, 1, 5000 + i), i);
    }
    assert_int_equal(weir_rate_observe(r, "10.0.0.1", 8, 50, 5200), 150);
    assert_int_equal(weir_rate_estimate(r, "10.0.0.1", 8, 5300), 150);
    assert_int_equal(weir_rate_estimate(r, "10.0.0.2", 8, 5300), 0);
    weir_rate_free(r);
}

static uint32_t next_rand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

/* 20000 keys with 1..50 events each into 4 x 4096 counters. */
static void test_accuracy_against_exact(void **state)
{
    (void)state;
    enum { KEYS = 20000, SLOTS = 4096 };
    static uint32_t truth[KEYS];
    struct weir_rate *r = NULL;
    assert_int_equal(weir_rate_new(1000, 4, SLOTS, &r), 0);
    assert_non_null(r);
    uint64_t seed = 42, total = 0;
    for (unsigned k = 0; k < KEYS; k++) {
        truth[k] = 1 + next_rand(&seed) % 50;
        total += truth[k];
        char key[16];
        int len = snprintf(key, sizeof(key), "key-%u", k);
        /* Several observations per key, interleaved with the others' by the outer loop. */
        weir_rate_observe(r, key, (size_t)len, truth[k] - truth[k] / 2, 100);
    }
    for (unsigned k = 0; k < KEYS; k++) {
        char key[16];
        int len = snprintf(key, sizeof(key), "key-%u", k);
        if (truth[k] / 2 > 0) {
            weir_rate_observe(r, key, (size_t)len, truth[k] / 2, 200);
        }
    }
    double bound = 2.718281828 * (double)total / SLOTS;
    unsigned over_bound = 0;
    double err_sum = 0;
    for (unsigned k = 0; k < KEYS; k++) {
        char key[16];
        int len = snprintf(key, sizeof(key), "key-%u", k);
        uint64_t est = weir_rate_estimate(r, key, (size_t)len, 300);
        assert_true(est >= truth[k]); /* count-min never under-counts */
        err_sum += (double)(est - truth[k]);
        if ((double)(est - truth[k]) > bound) {
            over_bound++;
        }
    }
    /* Theory: P(error > e*N/S) <= e^-4 (1.8%) per key. */
    assert_true(over_bound <= KEYS / 20);
    /* On average the smallest of four rows over-counts far less than N/S. */
    assert_true(err_sum / KEYS < (double)total / SLOTS);
    weir_rate_free(r);
}

static void test_window_rotation(void **state)
{
    (void)state;
    struct weir_rate *r = NULL;
    assert_int_equal(weir_rate_new(1000, 0, 0, &r), 0);
    const char *k = "client";
    assert_int_equal(weir_rate_observe(r, k, 6, 10, 100), 10); /* window 0 */
    assert_int_equal(weir_rate_estimate(r, k, 6, 999), 10);
    /* Window 1: the previous window counts in proportion to its overlap with the last 1s. */
    assert_int_equal(weir_rate_estimate(r, k, 6, 1000), 10);
    assert_int_equal(weir_rate_estimate(r, k, 6, 1500), 5);
    assert_int_equal(weir_rate_estimate(r, k, 6, 1900), 1);
    assert_int_equal(weir_rate_observe(r, k, 6, 3, 1500), 3 + 5);
    assert_true(weir_rate_per_second(r, k, 6, 1500) == 10.0);
    /* Window 2 reuses window 0's bank: the old 10 must be gone. */
    assert_int_equal(weir_rate_estimate(r, k, 6, 2000), 3);
    assert_int_equal(weir_rate_observe(r, k, 6, 1, 2000), 1 + 3);
    assert_int_equal(weir_rate_observe(r, k, 6, 1, 2500), 2 + 1);
    assert_true(weir_rate_per_second(r, k, 6, 2500) == 3.0);
    /* Far later: both windows are stale. */
    assert_int_equal(weir_rate_estimate(r, k, 6, 10000), 0);
    assert_true(weir_rate_per_second(r, k, 6, 10000) == 0.0);
    assert_int_equal(weir_rate_observe(r, k, 6, 1, 10000), 1);
    /* A lagging clock counts into the newest window instead of reopening an old one. */
    assert_int_equal(weir_rate_observe(r, k, 6, 1, 9000), 2);
    assert_int_equal(weir_rate_estimate(r, k, 6, 10001), 2);
    weir_rate_free(r);
}

struct worker_arg {
    struct weir_rate *r;
    unsigned id;
    unsigned n;
    bool rotate;
};

static void *observe_many(void *p)
{
    struct worker_arg *a = p;
    char own[16];
    int len = snprintf(own, sizeof(own), "own-%u", a->id);
    for (unsigned i = 0; i < a->n; i++) {
        uint64_t now = a->rotate ? 1000 + i / 64 : 1000;
        weir_rate_observe(a->r, "shared", 6, 1, now);
        weir_rate_observe(a->r, own, (size_t)len, 2, now);
    }
    return NULL;
}

static void test_concurrent_increments(void **state)
{
    (void)state;
    enum { THREADS = 8, N = 50000 };
    struct weir_rate *r = NULL;
    assert_int_equal(weir_rate_new(1000000, 0, 0, &r), 0);
    pthread_t t[THREADS];
    struct worker_arg a[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        a[i] = (struct worker_arg){r, i, N, false};
        assert_int_equal(pthread_create(&t[i], NULL, observe_many, &a[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    /* No increment is lost: the lone shared key's counters hold the exact total. */
    assert_int_equal(weir_rate_estimate(r, "shared", 6, 1000), (uint64_t)THREADS * N);
    for (unsigned i = 0; i < THREADS; i++) {
        char own[16];
        int len = snprintf(own, sizeof(own), "own-%u", i);
        assert_true(weir_rate_estimate(r, own, (size_t)len, 1000) >= 2u * N);
    }
    weir_rate_free(r);
}

/* Threads rotate windows (every 64 observations, 1 ms windows) while others count. */
static void test_concurrent_rotation(void **state)
{
    (void)state;
    enum { THREADS = 4, N = 20000 };
    struct weir_rate *r = NULL;
    assert_int_equal(weir_rate_new(1, 2, 64, &r), 0);
    pthread_t t[THREADS];
    struct worker_arg a[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        a[i] = (struct worker_arg){r, i, N, true};
        assert_int_equal(pthread_create(&t[i], NULL, observe_many, &a[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    /* The last windows hold at most what every thread observed in them. */
    uint64_t last = 1000 + (N - 1) / 64;
    assert_true(weir_rate_estimate(r, "shared", 6, last) <= (uint64_t)THREADS * N);
    assert_int_equal(weir_rate_estimate(r, "shared", 6, last + 2), 0);
    weir_rate_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_arguments),          cmocka_unit_test(test_single_key_exact),
        cmocka_unit_test(test_accuracy_against_exact), cmocka_unit_test(test_window_rotation),
        cmocka_unit_test(test_concurrent_increments),  cmocka_unit_test(test_concurrent_rotation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
