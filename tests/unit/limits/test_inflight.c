/*
 * Unit tests for the in-flight counter (src/limits/inflight.c): add/sub bookkeeping, a cap
 * enforced the documented way, no under-count over many keys, and balanced add/sub from
 * several threads returning every counter to zero.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <pthread.h>

#include <cmocka.h>

#include "weir/limits.h"

static void test_add_sub(void **state)
{
    (void)state;
    struct weir_inflight *f = NULL;
    assert_int_equal(weir_inflight_new(0, 1u << 25, &f), WEIR_EINVAL);
    assert_null(f);
    assert_int_equal(weir_inflight_new(0, 0, &f), 0);
    assert_non_null(f);
    assert_int_equal(weir_inflight_add(f, "a", 1, 1), 1);
    assert_int_equal(weir_inflight_add(f, "a", 1, 2), 3);
    assert_int_equal(weir_inflight_estimate(f, "b", 1), 0);
    weir_inflight_sub(f, "a", 1, 3);
    assert_int_equal(weir_inflight_estimate(f, "a", 1), 0);
    weir_inflight_free(f);
    weir_inflight_free(NULL);
}

static void test_cap(void **state)
{
    (void)state;
    struct weir_inflight *f = NULL;
    assert_int_equal(weir_inflight_new(0, 0, &f), 0);
    unsigned admitted = 0;
    for (int i = 0; i < 10; i++) {
        if (weir_inflight_add(f, "ip", 2, 1) > 4) {
            weir_inflight_sub(f, "ip", 2, 1);
        } else {
            admitted++;
        }
    }
    assert_int_equal(admitted, 4);
    assert_int_equal(weir_inflight_estimate(f, "ip", 2), 4);
    weir_inflight_free(f);
}

static void test_never_under(void **state)
{
    (void)state;
    struct weir_inflight *f = NULL;
    assert_int_equal(weir_inflight_new(2, 64, &f), 0); /* tiny: many collisions */
    for (unsigned k = 0; k < 1000; k++) {
        weir_inflight_add(f, &k, sizeof(k), k % 7 + 1);
    }
    for (unsigned k = 0; k < 1000; k++) {
        assert_true(weir_inflight_estimate(f, &k, sizeof(k)) >= k % 7 + 1);
    }
    weir_inflight_free(f);
}

static void *churn(void *p)
{
    struct weir_inflight *f = p;
    for (unsigned i = 0; i < 100000; i++) {
        unsigned k = i % 97;
        weir_inflight_add(f, &k, sizeof(k), 1);
        weir_inflight_sub(f, &k, sizeof(k), 1);
    }
    return NULL;
}

static void test_concurrent_balanced(void **state)
{
    (void)state;
    struct weir_inflight *f = NULL;
    assert_int_equal(weir_inflight_new(0, 0, &f), 0);
    pthread_t t[6];
    for (int i = 0; i < 6; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, churn, f), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
    }
    for (unsigned k = 0; k < 97; k++) {
        assert_int_equal(weir_inflight_estimate(f, &k, sizeof(k)), 0);
    }
    weir_inflight_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_sub),
        cmocka_unit_test(test_cap),
        cmocka_unit_test(test_never_under),
        cmocka_unit_test(test_concurrent_balanced),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
