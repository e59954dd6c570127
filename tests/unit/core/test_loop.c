/*
 * Unit tests for the event loop (src/core/loop.c): the timer heap (order, re-arming,
 * stopping anywhere in the heap, callbacks that touch other timers), cross-thread posts
 * (wake-up, bound, closed loop), deferred calls, and edge-triggered readiness.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/loop.h"
#include "weir/error.h"

/* ---- helpers ---- */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* A small deterministic PRNG so a failure reproduces. */
static uint32_t rng_state = 12345;

static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static void stop_cb(struct weir_loop *loop, struct weir_timer *t)
{
    (void)t;
    weir__loop_stop(loop);
}

/* Runs exactly one loop turn (events, timers, deferred calls, turn hook). */
static void run_one_turn(struct weir_loop *loop)
{
    struct weir_timer stop;
    weir_timer_init(&stop, stop_cb, NULL);
    assert_int_equal(weir_timer_start(loop, &stop, 0), 0);
    assert_int_equal(weir__loop_run(loop), 0);
    weir_timer_stop(loop, &stop);
}

/* Waits (real time) until every armed timer is due, then fires them in one pass. */
static void fire_all_after(struct weir_loop *loop, unsigned max_ms)
{
    sleep_ms(max_ms + 10);
    weir__loop_update_time(loop);
    weir__loop_run_timers(loop);
}

/* ---- timer order ---- */

#define NT 1000

struct rec {
    struct weir_timer t;
    int id;
    int fired;
    bool expect;
};

static struct rec recs[NT];
static int fire_seq[NT * 4];
static int nfired;

/* Each firing checks the heap invariant from outside: no armed timer is due earlier. */
static void order_cb(struct weir_loop *loop, struct weir_timer *t)
{
    struct rec *r = t->data;
    assert_false(weir_timer_active(t));
    assert_true(t->deadline_ms <= weir_loop_now_ms(loop));
    for (int i = 0; i < NT; i++) {
        if (weir_timer_active(&recs[i].t)) {
            assert_true(recs[i].t.deadline_ms >= t->deadline_ms);
        }
    }
    if (nfired > 0) {
        struct rec *prev = &recs[fire_seq[nfired - 1]];
        assert_true(prev->t.deadline_ms <= t->deadline_ms);
    }
    fire_seq[nfired++] = r->id;
    r->fired++;
}

static void recs_init(int n)
{
    nfired = 0;
    for (int i = 0; i < n; i++) {
        recs[i].id = i;
        recs[i].fired = 0;
        recs[i].expect = false;
        weir_timer_init(&recs[i].t, order_cb, &recs[i]);
    }
    for (int i = n; i < NT; i++) {
        weir_timer_init(&recs[i].t, order_cb, &recs[i]);
    }
}

static void test_timers_fire_in_deadline_order(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(0);
    assert_non_null(loop);
    static const uint64_t ms[] = {50, 10, 30, 20, 40, 0, 5, 45, 15, 25};
    recs_init(10);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(weir_timer_start(loop, &recs[i].t, ms[i]), 0);
        assert_true(weir_timer_active(&recs[i].t));
    }
    assert_int_equal(weir__loop_timer_count(loop), 10);
    fire_all_after(loop, 50);
    assert_int_equal(nfired, 10);
    assert_int_equal(weir__loop_timer_count(loop), 0);
    static const int want[] = {5, 6, 1, 8, 3, 9, 2, 4, 7, 0};
    for (int i = 0; i < 10; i++) {
        assert_int_equal(fire_seq[i], want[i]);
        assert_int_equal(recs[i].fired, 1);
    }
    weir__loop_free(loop);
}

static void test_timer_not_due_does_not_fire(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(0);
    assert_non_null(loop);
    recs_init(2);
    weir__loop_update_time(loop);
    assert_int_equal(weir_timer_start(loop, &recs[0].t, 0), 0);
    assert_int_equal(weir_timer_start(loop, &recs[1].t, 100000), 0);
    weir__loop_run_timers(loop);
    assert_int_equal(recs[0].fired, 1);
    assert_int_equal(recs[1].fired, 0);
    assert_true(weir_timer_active(&recs[1].t));
    assert_int_equal(weir__loop_timer_count(loop), 1);
    weir_timer_stop(loop, &recs[1].t);
    weir_timer_stop(loop, &recs[1].t); /* harmless twice */
    assert_int_equal(weir__loop_timer_count(loop), 0);
    weir__loop_free(loop);
}

static void test_rearm_and_stop(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(0);
    assert_non_null(loop);
    recs_init(8);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(weir_timer_start(loop, &recs[i].t, (uint64_t)(i + 1) * 10), 0);
    }
    /* recs[0] is the root: stop it. recs[4] sits in the middle: stop it too. */
    weir_timer_stop(loop, &recs[0].t);
    weir_timer_stop(loop, &recs[4].t);
    assert_false(weir_timer_active(&recs[0].t));
    assert_false(weir_timer_active(&recs[4].t));
    assert_int_equal(weir__loop_timer_count(loop), 6);
    /* Re-arm: later (7 -> after everyone), earlier (6 -> first), and a stopped one back. */
    assert_int_equal(weir_timer_start(loop, &recs[7].t, 200), 0);
    assert_int_equal(weir_timer_start(loop, &recs[6].t, 1), 0);
    assert_int_equal(weir_timer_start(loop, &recs[4].t, 35), 0);
    assert_int_equal(weir__loop_timer_count(loop), 7);
    /* Re-arming an armed timer does not duplicate it. */
    assert_int_equal(weir_timer_start(loop, &recs[4].t, 35), 0);
    assert_int_equal(weir__loop_timer_count(loop), 7);
    fire_all_after(loop, 200);
    static const int want[] = {6, 1, 2, 4, 3, 5, 7};
    assert_int_equal(nfired, 7);
    for (int i = 0; i < 7; i++) {
        assert_int_equal(fire_seq[i], want[i]);
    }
    assert_int_equal(recs[0].fired, 0);
    for (int i = 1; i < 8; i++) {
        assert_int_equal(recs[i].fired, 1);
    }
    weir__loop_free(loop);
}

static void test_heap_random_1000(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(0);
    assert_non_null(loop);
    rng_state = 0x9e3779b9u;
    recs_init(NT);
    for (int i = 0; i < NT; i++) {
        assert_int_equal(weir_timer_start(loop, &recs[i].t, rng() % 60), 0);
        recs[i].expect = true;
    }
    for (int op = 0; op < 20000; op++) {
        struct rec *r = &recs[rng() % NT];
        switch (rng() % 3) {
        case 0:
            weir_timer_stop(loop, &r->t);
            r->expect = false;
            break;
        case 1:
        case 2:
            assert_int_equal(weir_timer_start(loop, &r->t, rng() % 60), 0);
            r->expect = true;
            break;
        }
        if (op % 1000 == 0) {
            size_t n = 0;
            for (int i = 0; i < NT; i++) {
                n += weir_timer_active(&recs[i].t);
            }
            assert_int_equal(n, weir__loop_timer_count(loop));
        }
    }
    int want = 0;
    for (int i = 0; i < NT; i++) {
        want += recs[i].expect;
        assert_int_equal(weir_timer_active(&recs[i].t), recs[i].expect);
    }
    assert_int_equal(weir__loop_timer_count(loop), (size_t)want);
    fire_all_after(loop, 60);
    assert_int_equal(nfired, want);
    for (int i = 0; i < NT; i++) {
        assert_int_equal(recs[i].fired, recs[i].expect ? 1 : 0);
    }
    assert_int_equal(weir__loop_timer_count(loop), 0);
    weir__loop_free(loop);
}

/* Firing timers in several passes while stopping and starting others in between. */
static void test_heap_random_interleaved(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(0);
    assert_non_null(loop);
    rng_state = 777;
    recs_init(NT);
    for (int i = 0; i < NT; i++) {
        assert_int_equal(weir_timer_start(loop, &recs[i].t, rng() % 30), 0);
    }
    uint64_t end = mono_ms() + 2000;
    while (weir__loop_timer_count(loop) > 0 && mono_ms() < end) {
        for (int k = 0; k < 50; k++) {
            struct rec *r = &recs[rng() % NT];
            if (r->fired) {
                continue;
            }
            if (rng() % 2) {
                weir_timer_stop(loop, &r->t);
                assert_int_equal(weir_timer_start(loop, &r->t, rng() % 30), 0);
            } else if (weir_timer_active(&r->t)) {
                assert_int_equal(weir_timer_start(loop, &r->t, rng() % 30), 0);
            }
        }
        sleep_ms(2);
        weir__loop_update_time(loop);
        nfired = 0; /* order is checked within one pass */
        weir__loop_run_timers(loop);
    }
    for (int i = 0; i < NT; i++) {
        assert_int_equal(recs[i].fired, 1);
    }
    weir__loop_free(loop);
}

/* ---- callbacks that touch other timers ---- */

struct chain {
    struct weir_timer a, b, c, d;
    int fa, fb, fc, fd;
};

static void chain_b(struct weir_loop *loop, struct weir_timer *t)
{
    (void)loop;
    ((struct chain *)t->data)->fb++;
}

static void chain_c(struct weir_loop *loop, struct weir_timer *t)
{
    (void)loop;
    ((struct chain *)t->data)->fc++;
}

static void chain_d(struct weir_loop *loop, struct weir_timer *t)
{
    (void)loop;
    ((struct chain *)t->data)->fd++;
}

static void chain_a(struct weir_loop *loop, struct weir_timer *t)
{
    struct chain *ch = t->data;
    ch->fa++;
    weir_timer_stop(loop, &ch->b);                               /* due now: must not fire */
    assert_int_equal(weir_timer_start(loop, &ch->c, 0), 0);      /* due, fires on the next pass */
    assert_int_equal(weir_timer_start(loop, &ch->d, 100000), 0); /* was due: pushed out */
}

static void test_callback_starts_and_stops_others(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(0);
    assert_non_null(loop);
    struct chain ch = {0};
    weir_timer_init(&ch.a, chain_a, &ch);
    weir_timer_init(&ch.b, chain_b, &ch);
    weir_timer_init(&ch.c, chain_c, &ch);
    weir_timer_init(&ch.d, chain_d, &ch);
    assert_int_equal(weir_timer_start(loop, &ch.a, 1), 0);
    assert_int_equal(weir_timer_start(loop, &ch.b, 5), 0);
    assert_int_equal(weir_timer_start(loop, &ch.d, 6), 0);
    fire_all_after(loop, 6);
    weir__loop_run_timers(loop);
    assert_int_equal(ch.fa, 1);
    assert_int_equal(ch.fb, 0);
    assert_int_equal(ch.fc, 1); /* armed during the first pass, fired by the second */
    assert_int_equal(ch.fd, 0);
    assert_true(weir_timer_active(&ch.d));
    assert_false(weir_timer_active(&ch.b));
    assert_int_equal(weir__loop_timer_count(loop), 1);
    weir_timer_stop(loop, &ch.d);
    weir__loop_free(loop);
}

static int rearm_count;

static void rearm_zero_cb(struct weir_loop *loop, struct weir_timer *t)
{
    rearm_count++;
    if (rearm_count < 100) { /* a guard so a failing run ends */
        assert_int_equal(weir_timer_start(loop, t, 0), 0);
    }
}

/*
 * A timer that re-arms itself with 0 ms from its callback must fire again on a later pass,
 * not within the same one: otherwise one timer keeps the loop from ever finishing its turn
 * (no I/O, no deferred calls, no quiescent state for RCU). libuv fixed the same busy loop.
 */
static void test_rearm_zero_in_callback_waits_for_next_pass(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(0);
    assert_non_null(loop);
    struct weir_timer t;
    weir_timer_init(&t, rearm_zero_cb, NULL);
    rearm_count = 0;
    assert_int_equal(weir_timer_start(loop, &t, 0), 0);
    weir__loop_run_timers(loop);
    int fired = rearm_count;
    bool armed = weir_timer_active(&t);
    weir_timer_stop(loop, &t);
    weir__loop_free(loop);
    assert_int_equal(fired, 1);
    assert_true(armed);
}

/* ---- running the loop ---- */

static void test_run_until_stop_timer(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(0);
    assert_non_null(loop);
    struct weir_timer stop;
    weir_timer_init(&stop, stop_cb, NULL);
    uint64_t t0 = mono_ms();
    assert_int_equal(weir_timer_start(loop, &stop, 30), 0);
    assert_int_equal(weir__loop_run(loop), 0);
    uint64_t dt = mono_ms() - t0;
    /* The cached clock is coarse (a few ms); allow for it but not for a 1 s idle tick. */
    assert_true(dt >= 20);
    assert_true(dt < 900);
    assert_false(weir_timer_active(&stop));
    assert_true(weir_loop_now_ms(loop) > 0);
    assert_true(weir_loop_wall_s(loop) > 1600000000);
    weir__loop_free(loop);
}

/* ---- posts ---- */

struct post_fx {
    struct weir_loop *loop;
    pthread_t loop_thread;
    atomic_int ran;
    atomic_bool on_loop_thread;
    uint64_t posted_at;
    int post_rc;
};

static void post_stop_fn(struct weir_loop *loop, void *arg)
{
    struct post_fx *fx = arg;
    atomic_store(&fx->on_loop_thread, pthread_equal(pthread_self(), fx->loop_thread) != 0);
    atomic_fetch_add(&fx->ran, 1);
    weir__loop_stop(loop);
}

static void *poster_main(void *arg)
{
    struct post_fx *fx = arg;
    sleep_ms(50);
    fx->posted_at = mono_ms();
    fx->post_rc = weir_loop_post(fx->loop, post_stop_fn, fx);
    return NULL;
}

static void test_post_from_thread_wakes_loop(void **state)
{
    (void)state;
    static struct post_fx fx;
    memset(&fx, 0, sizeof(fx));
    fx.loop = weir__loop_new(0);
    assert_non_null(fx.loop);
    fx.loop_thread = pthread_self();
    /* A safety timer: if the post never arrives the loop still ends (and the test fails). */
    struct weir_timer safety;
    weir_timer_init(&safety, stop_cb, NULL);
    assert_int_equal(weir_timer_start(fx.loop, &safety, 5000), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, poster_main, &fx), 0);
    assert_int_equal(weir__loop_run(fx.loop), 0);
    uint64_t done = mono_ms();
    pthread_join(th, NULL);
    assert_int_equal(fx.post_rc, 0);
    assert_int_equal(atomic_load(&fx.ran), 1);
    assert_true(atomic_load(&fx.on_loop_thread));
    /* Woken by the post, not by the loop's 1 s idle tick. */
    assert_true(done - fx.posted_at < 500);
    weir_timer_stop(fx.loop, &safety);
    weir__loop_free(fx.loop);
}

static atomic_int count_ran;

static void count_fn(struct weir_loop *loop, void *arg)
{
    (void)loop;
    atomic_fetch_add(&count_ran, 1);
    if (arg != NULL) {
        weir__loop_stop(loop);
    }
}

static void test_post_bound_and_closed(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(4);
    assert_non_null(loop);
    atomic_store(&count_ran, 0);
    assert_int_equal(weir_loop_post(loop, count_fn, NULL), 0);
    assert_int_equal(weir_loop_post(loop, count_fn, NULL), 0);
    assert_int_equal(weir_loop_post(loop, count_fn, NULL), 0);
    assert_int_equal(weir_loop_post(loop, count_fn, (void *)1), 0);
    assert_int_equal(weir_loop_post(loop, count_fn, NULL), WEIR_ELIMIT);
    assert_int_equal(weir__loop_run(loop), 0);
    assert_int_equal(atomic_load(&count_ran), 4);
    /* The loop has exited: posts are refused, not queued for nobody. */
    assert_int_equal(weir_loop_post(loop, count_fn, NULL), WEIR_ECLOSED);
    weir__loop_free(loop);
    assert_int_equal(atomic_load(&count_ran), 4);
}

/* The ring wraps: calls that post the next one keep a small queue cycling. */
static int chain_posted;

static void chain_fn(struct weir_loop *loop, void *arg)
{
    (void)arg;
    int ran = atomic_fetch_add(&count_ran, 1) + 1;
    if (chain_posted < 30) {
        assert_int_equal(weir_loop_post(loop, chain_fn, NULL), 0);
        chain_posted++;
    }
    if (ran == 30) {
        weir__loop_stop(loop);
    }
}

static void test_post_ring_wraps(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(3);
    assert_non_null(loop);
    atomic_store(&count_ran, 0);
    chain_posted = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(weir_loop_post(loop, chain_fn, NULL), 0);
        chain_posted++;
    }
    assert_int_equal(weir_loop_post(loop, chain_fn, NULL), WEIR_ELIMIT);
    assert_int_equal(weir__loop_run(loop), 0);
    assert_int_equal(atomic_load(&count_ran), 30);
    weir__loop_free(loop);
}

static void post_then_stop_cb(struct weir_loop *loop, struct weir_timer *t)
{
    int *rc = t->data;
    *rc = weir_loop_post(loop, count_fn, NULL);
    weir__loop_stop(loop);
}

/*
 * A post accepted (0) in the loop's last turn must still run (or be refused with
 * WEIR_ECLOSED); it must not vanish with the loop.
 */
static void test_post_accepted_in_last_turn_runs(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(0);
    assert_non_null(loop);
    atomic_store(&count_ran, 0);
    int rc = -1;
    struct weir_timer t;
    weir_timer_init(&t, post_then_stop_cb, &rc);
    assert_int_equal(weir_timer_start(loop, &t, 0), 0);
    assert_int_equal(weir__loop_run(loop), 0);
    weir__loop_free(loop);
    if (rc == 0) {
        assert_int_equal(atomic_load(&count_ran), 1);
    } else {
        assert_int_equal(rc, WEIR_ECLOSED);
        assert_int_equal(atomic_load(&count_ran), 0);
    }
}

/* ---- deferred calls ---- */

struct dfx {
    struct weir__defer d1, d2, d3, d4;
    int turn;
    int ran1, ran2, ran3, ran4;
    int turn1, turn2;
    int timer_turn_seen; /* the turn number when the timer fired */
    char log[32];
    int nlog;
};

static struct dfx dfx;

static void dlog(char c)
{
    if (dfx.nlog < (int)sizeof(dfx.log) - 1) {
        dfx.log[dfx.nlog++] = c;
    }
}

static void turn_hook(struct weir_loop *loop, void *arg)
{
    (void)loop;
    (void)arg;
    dlog('|');
    dfx.turn++;
}

static void d2_fn(struct weir_loop *loop, struct weir__defer *d)
{
    (void)loop;
    (void)d;
    dfx.ran2++;
    dfx.turn2 = dfx.turn;
    dlog('2');
}

static void d1_fn(struct weir_loop *loop, struct weir__defer *d)
{
    assert_false(d->queued);
    dfx.ran1++;
    dfx.turn1 = dfx.turn;
    dlog('1');
    weir__loop_defer(loop, &dfx.d2); /* queued while running: next turn */
}

static void defer_from_timer(struct weir_loop *loop, struct weir_timer *t)
{
    (void)t;
    dlog('T');
    weir__loop_defer(loop, &dfx.d1);
    weir__loop_defer(loop, &dfx.d1); /* already queued: no-op */
    weir__loop_stop(loop);
}

static void test_defer_end_of_turn_and_next_turn(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(0);
    assert_non_null(loop);
    memset(&dfx, 0, sizeof(dfx));
    dfx.d1.fn = d1_fn;
    dfx.d2.fn = d2_fn;
    weir__loop_set_turn_hook(loop, turn_hook, NULL);
    struct weir_timer t;
    weir_timer_init(&t, defer_from_timer, NULL);
    assert_int_equal(weir_timer_start(loop, &t, 0), 0);
    assert_int_equal(weir__loop_run(loop), 0);
    /* Timer, then the deferred call at the end of that turn, then the turn hook. */
    assert_string_equal(dfx.log, "T1|");
    assert_int_equal(dfx.ran1, 1);
    assert_int_equal(dfx.ran2, 0);
    assert_true(dfx.d2.queued);
    run_one_turn(loop);
    assert_int_equal(dfx.ran1, 1);
    assert_int_equal(dfx.ran2, 1);
    assert_int_equal(dfx.turn2, dfx.turn1 + 1);
    assert_false(dfx.d2.queued);
    assert_string_equal(dfx.log, "T1|2|");
    weir__loop_free(loop);
}

static void dn_fn(struct weir_loop *loop, struct weir__defer *d)
{
    (void)loop;
    if (d == &dfx.d1) {
        dfx.ran1++;
        dlog('1');
    } else if (d == &dfx.d2) {
        dfx.ran2++;
        dlog('2');
    } else if (d == &dfx.d3) {
        dfx.ran3++;
        dlog('3');
    } else if (d == &dfx.d4) {
        dfx.ran4++;
        dlog('4');
    }
}

static void dfx_reset(void)
{
    memset(&dfx, 0, sizeof(dfx));
    dfx.d1.fn = dn_fn;
    dfx.d2.fn = dn_fn;
    dfx.d3.fn = dn_fn;
    dfx.d4.fn = dn_fn;
}

static void test_defer_cancel(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(0);
    assert_non_null(loop);
    dfx_reset();
    /* Cancelling what is not queued is harmless. */
    weir__loop_defer_cancel(loop, &dfx.d1);
    weir__loop_defer(loop, &dfx.d1);
    weir__loop_defer(loop, &dfx.d2);
    weir__loop_defer(loop, &dfx.d3);
    weir__loop_defer_cancel(loop, &dfx.d2); /* middle */
    weir__loop_defer_cancel(loop, &dfx.d3); /* tail: the tail must move back */
    assert_false(dfx.d2.queued);
    assert_false(dfx.d3.queued);
    weir__loop_defer(loop, &dfx.d4); /* appended after the new tail */
    run_one_turn(loop);
    assert_string_equal(dfx.log, "14");
    /* Cancel the only entry (head and tail), then queue again. */
    dfx_reset();
    weir__loop_defer(loop, &dfx.d1);
    weir__loop_defer_cancel(loop, &dfx.d1);
    weir__loop_defer(loop, &dfx.d2);
    weir__loop_defer_cancel(loop, &dfx.d1); /* no longer queued */
    weir__loop_defer(loop, &dfx.d3);
    run_one_turn(loop);
    assert_string_equal(dfx.log, "23");
    /* A cancelled call can be queued again. */
    dfx_reset();
    weir__loop_defer(loop, &dfx.d1);
    weir__loop_defer_cancel(loop, &dfx.d1);
    weir__loop_defer(loop, &dfx.d1);
    run_one_turn(loop);
    assert_string_equal(dfx.log, "1");
    weir__loop_free(loop);
}

static void cancel_d2_fn(struct weir_loop *loop, struct weir__defer *d)
{
    (void)d;
    dfx.ran1++;
    dlog('1');
    /* d2 is queued in the same batch (a connection closing cancels its kick). */
    weir__loop_defer_cancel(loop, &dfx.d2);
}

/*
 * Cancelling, from one deferred call, another one queued in the same batch: the cancelled
 * call must not run, and the calls after it must still run.
 */
static void test_defer_cancel_from_deferred_call(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(0);
    assert_non_null(loop);
    dfx_reset();
    dfx.d1.fn = cancel_d2_fn;
    weir__loop_defer(loop, &dfx.d1);
    weir__loop_defer(loop, &dfx.d2);
    weir__loop_defer(loop, &dfx.d3);
    weir__loop_defer(loop, &dfx.d4);
    run_one_turn(loop);
    char first[32];
    memcpy(first, dfx.log, sizeof(first));
    bool stuck = dfx.d3.queued || dfx.d4.queued;
    /* And d3 can be queued again afterwards. */
    dfx.nlog = 0;
    memset(dfx.log, 0, sizeof(dfx.log));
    weir__loop_defer(loop, &dfx.d3);
    run_one_turn(loop);
    weir__loop_free(loop);
    assert_string_equal(first, "134");
    assert_false(stuck);
    assert_string_equal(dfx.log, "3");
}

/* Deferred calls still queued when the loop is freed run then (deferred frees). */
static void test_defer_runs_at_free(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(0);
    assert_non_null(loop);
    dfx_reset();
    weir__loop_defer(loop, &dfx.d1);
    weir__loop_free(loop);
    assert_int_equal(dfx.ran1, 1);
}

/* ---- readiness ---- */

struct io_fx {
    struct weir_io io;
    int calls;
    uint32_t events;
};

static void io_cb(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
    (void)loop;
    struct io_fx *fx = io->data;
    fx->calls++;
    fx->events |= events;
}

static void test_io_edge_triggered(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(0);
    assert_non_null(loop);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    struct io_fx fx = {0};
    fx.io.fd = sv[0];
    fx.io.cb = io_cb;
    fx.io.data = &fx;
    assert_int_equal(weir_loop_io_add(loop, &fx.io, WEIR_IO_READ), 0);
    assert_int_equal(fx.io.events, WEIR_IO_READ);

    run_one_turn(loop);
    assert_int_equal(fx.calls, 0); /* nothing to read yet */

    assert_int_equal(write(sv[1], "a", 1), 1);
    run_one_turn(loop);
    assert_int_equal(fx.calls, 1);
    assert_true(fx.events & WEIR_IO_READ);

    /* Not drained, no new bytes: edge-triggered, so no second event. */
    run_one_turn(loop);
    run_one_turn(loop);
    assert_int_equal(fx.calls, 1);

    /* A new edge: one more event. */
    assert_int_equal(write(sv[1], "b", 1), 1);
    run_one_turn(loop);
    assert_int_equal(fx.calls, 2);

    char buf[8];
    assert_int_equal(read(sv[0], buf, sizeof(buf)), 2);
    assert_memory_equal(buf, "ab", 2);

    /* Asking for writability too reports it (the socket has room). */
    fx.events = 0;
    assert_int_equal(weir_loop_io_mod(loop, &fx.io, WEIR_IO_READ | WEIR_IO_WRITE), 0);
    assert_int_equal(weir_loop_io_mod(loop, &fx.io, WEIR_IO_READ | WEIR_IO_WRITE), 0);
    run_one_turn(loop);
    assert_int_equal(fx.calls, 3);
    assert_true(fx.events & WEIR_IO_WRITE);
    run_one_turn(loop);
    assert_int_equal(fx.calls, 3);

    /* The peer closing is an edge too. */
    fx.events = 0;
    assert_int_equal(weir_loop_io_mod(loop, &fx.io, WEIR_IO_READ | WEIR_IO_RDHUP), 0);
    run_one_turn(loop); /* the MOD may report current readiness once */
    int before = fx.calls;
    fx.events = 0;
    close(sv[1]);
    run_one_turn(loop);
    assert_int_equal(fx.calls, before + 1);
    assert_true(fx.events & (WEIR_IO_RDHUP | WEIR_IO_HUP));

    /* After io_del no more events. */
    weir_loop_io_del(loop, &fx.io);
    assert_int_equal(fx.io.events, 0);
    before = fx.calls;
    run_one_turn(loop);
    assert_int_equal(fx.calls, before);
    assert_true(weir_loop_io_add(loop, &(struct weir_io){.fd = -1}, WEIR_IO_READ) < 0);
    close(sv[0]);
    weir__loop_free(loop);
}

static void test_loop_data(void **state)
{
    (void)state;
    struct weir_loop *loop = weir__loop_new(0);
    assert_non_null(loop);
    int x;
    assert_null(weir__loop_data(loop));
    weir__loop_set_data(loop, &x);
    assert_ptr_equal(weir__loop_data(loop), &x);
    weir__loop_free(loop);
    weir__loop_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_deadline_order),
        cmocka_unit_test(test_timer_not_due_does_not_fire),
        cmocka_unit_test(test_rearm_and_stop),
        cmocka_unit_test(test_heap_random_1000),
        cmocka_unit_test(test_heap_random_interleaved),
        cmocka_unit_test(test_callback_starts_and_stops_others),
        cmocka_unit_test(test_rearm_zero_in_callback_waits_for_next_pass),
        cmocka_unit_test(test_run_until_stop_timer),
        cmocka_unit_test(test_post_from_thread_wakes_loop),
        cmocka_unit_test(test_post_bound_and_closed),
        cmocka_unit_test(test_post_ring_wraps),
        cmocka_unit_test(test_post_accepted_in_last_turn_runs),
        cmocka_unit_test(test_defer_end_of_turn_and_next_turn),
        cmocka_unit_test(test_defer_cancel),
        cmocka_unit_test(test_defer_cancel_from_deferred_call),
        cmocka_unit_test(test_defer_runs_at_free),
        cmocka_unit_test(test_io_edge_triggered),
        cmocka_unit_test(test_loop_data),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
