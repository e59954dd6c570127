/*
 * Immutable snapshots published through one RCU pointer (liburcu QSBR), read by worker
 * threads without locks or shared writes on the request path.
 *
 * A snapshot is reference counted, but a request never touches that shared counter: each
 * worker holds one reference through a thread-local holder, and requests count themselves on
 * the holder (a plain integer). When the published pointer changes, the worker moves to a new
 * holder; the old one drops its reference once its last request ends. So a request keeps the
 * snapshot it started with, and a reload costs one atomic operation per worker.
 */
#ifndef WEIR_CORE_SNAPSHOT_H
#define WEIR_CORE_SNAPSHOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct weir__snapshot {
    void *data;
    void (*free_fn)(void *data);
    atomic_long refs;
};

/** The publication point: one RCU-protected pointer. */
struct weir__snapshot_slot {
    struct weir__snapshot *current;
};

/** A worker's reference to one snapshot, shared by that worker's requests. */
struct weir__snapshot_holder {
    struct weir__snapshot *snap;
    uint32_t local_refs; /* requests using it */
    bool retired;        /* the worker has moved on; free when local_refs reaches 0 */
};

/** Wraps data in a snapshot with one reference (the slot's, once published). NULL on ENOMEM. */
struct weir__snapshot *weir__snapshot_new(void *data, void (*free_fn)(void *data));

/** Drops a reference; frees the data at zero. */
void weir__snapshot_release(struct weir__snapshot *s);

/**
 * Publishes s in slot and drops the slot's reference to the previous snapshot after a grace
 * period (synchronize_rcu). Control thread only; blocks until readers moved on.
 */
void weir__snapshot_publish(struct weir__snapshot_slot *slot, struct weir__snapshot *s);

/**
 * Worker side: returns the holder for the slot's current snapshot, switching from *cur when
 * the slot changed. Must be called from a registered RCU (QSBR) thread.
 * NULL only on out of memory with no current holder.
 */
struct weir__snapshot_holder *weir__snapshot_acquire(struct weir__snapshot_slot *slot,
                                                     struct weir__snapshot_holder **cur);

/** A request ends: drop its count on h (freeing a retired holder when it was the last). */
void weir__snapshot_holder_put(struct weir__snapshot_holder *h);

/** The worker exits: retire its holder. */
void weir__snapshot_holder_retire(struct weir__snapshot_holder **cur);

#endif
