/*
 * Unit tests for RCU-published snapshots with per-worker holders (src/core/snapshot.c): the
 * publish/acquire/put/retire lifecycle, a request keeping its snapshot across a reload, and
 * readers on several threads racing a publisher. Every snapshot must be freed exactly once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <urcu-qsbr.h>

#include "core/snapshot.h"

#define DATA_MAGIC 0x5a5a1234u
#define NDATA      128

struct data {
    unsigned magic;
    int id;
    atomic_int freed;
};

static struct data datas[NDATA];
static atomic_int total_freed;
static atomic_int bad; /* checks failed on another thread (cmocka asserts are main-only) */

static void data_free(void *p)
{
    struct data *d = p;
    if (d->magic != DATA_MAGIC) {
        atomic_fetch_add(&bad, 1);
    }
    d->magic = 0;
    atomic_fetch_add(&d->freed, 1);
    atomic_fetch_add(&total_freed, 1);
}

static void datas_reset(void)
{
    for (int i = 0; i < NDATA; i++) {
        datas[i].magic = DATA_MAGIC;
        datas[i].id = i;
        atomic_store(&datas[i].freed, 0);
    }
    atomic_store(&total_freed, 0);
    atomic_store(&bad, 0);
}

static struct weir__snapshot *snap(int i)
{
    struct weir__snapshot *s = weir__snapshot_new(&datas[i], data_free);
    assert_non_null(s);
    return s;
}

/* synchronize_rcu must not run on a thread that is an online reader. */
static void publish_offline(struct weir__snapshot_slot *slot, struct weir__snapshot *s)
{
    rcu_thread_offline();
    weir__snapshot_publish(slot, s);
    rcu_thread_online();
}

/* The slot's own reference, as the server drops it at shutdown. */
static void slot_dispose(struct weir__snapshot_slot *slot)
{
    struct weir__snapshot *s = slot->current;
    slot->current = NULL;
    weir__snapshot_release(s);
}

static void test_new_release(void **state)
{
    (void)state;
    datas_reset();
    struct weir__snapshot *s = snap(0);
    assert_ptr_equal(s->data, &datas[0]);
    assert_int_equal(atomic_load(&s->refs), 1);
    atomic_fetch_add(&s->refs, 1);
    weir__snapshot_release(s);
    assert_int_equal(atomic_load(&datas[0].freed), 0);
    weir__snapshot_release(s);
    assert_int_equal(atomic_load(&datas[0].freed), 1);
    weir__snapshot_release(NULL);

    /* No free_fn: only the wrapper goes. */
    struct weir__snapshot *bare = weir__snapshot_new(&datas[1], NULL);
    assert_non_null(bare);
    weir__snapshot_release(bare);
    assert_int_equal(atomic_load(&total_freed), 1);
}

static void test_lifecycle(void **state)
{
    (void)state;
    datas_reset();
    rcu_register_thread();
    struct weir__snapshot_slot slot = {NULL};
    struct weir__snapshot_holder *cur = NULL;

    publish_offline(&slot, snap(0));
    struct weir__snapshot_holder *h1 = weir__snapshot_acquire(&slot, &cur);
    assert_non_null(h1);
    assert_ptr_equal(cur, h1);
    assert_ptr_equal(h1->snap->data, &datas[0]);
    /* Same snapshot: same holder, no new reference. */
    assert_ptr_equal(weir__snapshot_acquire(&slot, &cur), h1);
    assert_int_equal(atomic_load(&h1->snap->refs), 2); /* slot + this worker */

    /* A request starts on s0. */
    h1->local_refs++;

    /* A reload: s0 loses the slot's reference but the worker's holder keeps it. */
    publish_offline(&slot, snap(1));
    assert_int_equal(atomic_load(&datas[0].freed), 0);
    rcu_quiescent_state();

    /* The next request moves the worker to s1; the first request still uses s0. */
    struct weir__snapshot_holder *h2 = weir__snapshot_acquire(&slot, &cur);
    assert_non_null(h2);
    assert_ptr_not_equal(h2, h1);
    assert_ptr_equal(cur, h2);
    assert_ptr_equal(h2->snap->data, &datas[1]);
    assert_true(h1->retired);
    assert_int_equal(atomic_load(&datas[0].freed), 0);
    assert_int_equal(datas[0].magic, DATA_MAGIC); /* still readable by request 1 */
    h2->local_refs++;

    /* Another reload while both requests run. */
    publish_offline(&slot, snap(2));
    assert_int_equal(atomic_load(&datas[1].freed), 0);

    /* Request 1 ends: its retired holder and s0 go, exactly once. */
    weir__snapshot_holder_put(h1);
    assert_int_equal(atomic_load(&datas[0].freed), 1);
    assert_int_equal(atomic_load(&total_freed), 1);

    /* The worker moves to s2 while request 2 holds s1. */
    struct weir__snapshot_holder *h3 = weir__snapshot_acquire(&slot, &cur);
    assert_ptr_equal(h3->snap->data, &datas[2]);
    assert_int_equal(atomic_load(&datas[1].freed), 0);
    weir__snapshot_holder_put(h2);
    assert_int_equal(atomic_load(&datas[1].freed), 1);

    /* A request on the current holder ends: the holder stays (not retired). */
    h3->local_refs++;
    weir__snapshot_holder_put(h3);
    assert_ptr_equal(cur, h3);
    assert_int_equal(atomic_load(&datas[2].freed), 0);

    /* The worker exits: its holder goes; the slot still holds s2. */
    weir__snapshot_holder_retire(&cur);
    assert_null(cur);
    weir__snapshot_holder_retire(&cur); /* NULL: harmless */
    assert_int_equal(atomic_load(&datas[2].freed), 0);

    slot_dispose(&slot);
    assert_int_equal(atomic_load(&datas[2].freed), 1);
    assert_int_equal(atomic_load(&total_freed), 3);
    assert_int_equal(atomic_load(&bad), 0);
    rcu_unregister_thread();
}

/* A worker that exits while a request still runs: the holder is freed by that request. */
static void test_retire_with_request_in_flight(void **state)
{
    (void)state;
    datas_reset();
    rcu_register_thread();
    struct weir__snapshot_slot slot = {NULL};
    struct weir__snapshot_holder *cur = NULL;
    publish_offline(&slot, snap(0));
    struct weir__snapshot_holder *h = weir__snapshot_acquire(&slot, &cur);
    assert_non_null(h);
    h->local_refs += 2;
    weir__snapshot_holder_retire(&cur);
    assert_null(cur);
    slot_dispose(&slot);
    assert_int_equal(atomic_load(&datas[0].freed), 0);
    weir__snapshot_holder_put(h);
    assert_int_equal(atomic_load(&datas[0].freed), 0);
    weir__snapshot_holder_put(h);
    assert_int_equal(atomic_load(&datas[0].freed), 1);
    rcu_unregister_thread();
}

/* ---- threads ---- */

#define NREADERS 4
#define NPUBLISH 100
#define INFLIGHT 8

static struct weir__snapshot_slot mt_slot;
static atomic_bool mt_stop;
static atomic_long mt_acquired;

static void *reader_main(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u + 1;
    struct weir__snapshot_holder *cur = NULL;
    struct weir__snapshot_holder *inflight[INFLIGHT] = {NULL};
    long n = 0;
    rcu_register_thread();
    while (!atomic_load(&mt_stop)) {
        seed = seed * 1103515245u + 12345u;
        unsigned slot = (seed >> 16) % INFLIGHT;
        /* End the request in this slot, if any, then start a new one. */
        if (inflight[slot] != NULL) {
            weir__snapshot_holder_put(inflight[slot]);
            inflight[slot] = NULL;
        }
        struct weir__snapshot_holder *h = weir__snapshot_acquire(&mt_slot, &cur);
        if (h != NULL) {
            const struct data *d = h->snap->data;
            if (d->magic != DATA_MAGIC) {
                atomic_fetch_add(&bad, 1); /* a freed snapshot */
                break;
            }
            h->local_refs++;
            inflight[slot] = h;
            n++;
        }
        rcu_quiescent_state();
    }
    for (int i = 0; i < INFLIGHT; i++) {
        if (inflight[i] != NULL) {
            /* Still in use until here: must not have been freed. */
            const struct data *d = inflight[i]->snap->data;
            if (d->magic != DATA_MAGIC) {
                atomic_fetch_add(&bad, 1);
            }
            weir__snapshot_holder_put(inflight[i]);
        }
    }
    weir__snapshot_holder_retire(&cur);
    rcu_unregister_thread();
    atomic_fetch_add(&mt_acquired, n);
    return NULL;
}

static void test_threads_publish_while_reading(void **state)
{
    (void)state;
    datas_reset();
    mt_slot.current = NULL;
    atomic_store(&mt_stop, false);
    atomic_store(&mt_acquired, 0);
    /* The publisher (this thread) is not an RCU reader: synchronize_rcu may block here. */
    weir__snapshot_publish(&mt_slot, snap(0));
    pthread_t th[NREADERS];
    for (uintptr_t i = 0; i < NREADERS; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, (void *)i), 0);
    }
    for (int i = 1; i <= NPUBLISH; i++) {
        weir__snapshot_publish(&mt_slot, snap(i));
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&mt_stop, true);
    for (int i = 0; i < NREADERS; i++) {
        pthread_join(th[i], NULL);
    }
    assert_int_equal(atomic_load(&bad), 0);
    assert_true(atomic_load(&mt_acquired) > 0);
    /* Everything but the current snapshot has been freed by now. */
    assert_int_equal(atomic_load(&total_freed), NPUBLISH);
    assert_int_equal(atomic_load(&datas[NPUBLISH].freed), 0);
    slot_dispose(&mt_slot);
    assert_int_equal(atomic_load(&total_freed), NPUBLISH + 1);
    for (int i = 0; i <= NPUBLISH; i++) {
        assert_int_equal(atomic_load(&datas[i].freed), 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_release),
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_retire_with_request_in_flight),
        cmocka_unit_test(test_threads_publish_while_reading),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
