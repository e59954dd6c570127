/* Private side of the event loop: creation, running, stopping and deferred calls. */
#ifndef WEIR_CORE_LOOP_H
#define WEIR_CORE_LOOP_H

#include "weir/loop.h"

/** A call queued to run at the end of the current loop turn (intrusive; caller storage). */
struct weir__defer {
    struct weir__defer *next;
    void (*fn)(struct weir_loop *loop, struct weir__defer *d);
    bool queued;
    uint64_t round; /* private: the round it was queued in */
};

/** Called once per loop turn, after events and timers (RCU quiescent state, log flush). */
typedef void (*weir__turn_fn)(struct weir_loop *loop, void *arg);

/** A new loop; post_cap bounds the cross-thread queue. NULL on failure (errno set). */
struct weir_loop *weir__loop_new(uint32_t post_cap);
void weir__loop_free(struct weir_loop *loop);

/** Runs until weir__loop_stop is called on the loop's thread. 0 or -errno. */
int weir__loop_run(struct weir_loop *loop);
/**
 * One turn without waiting: the events ready now, the due timers, the deferred calls and the
 * turn hook. Returns how many callbacks ran (0: the loop is quiescent at this instant), or
 * -errno. For tests and fuzz drivers that step the loop themselves.
 */
int weir__loop_run_once(struct weir_loop *loop);
/** Makes weir__loop_run return after the current turn (loop's thread). */
void weir__loop_stop(struct weir_loop *loop);

void weir__loop_set_turn_hook(struct weir_loop *loop, weir__turn_fn fn, void *arg);

/** Queues d to run at the end of this turn; no-op if already queued. */
void weir__loop_defer(struct weir_loop *loop, struct weir__defer *d);
/** Removes d from the queue if it is there. */
void weir__loop_defer_cancel(struct weir_loop *loop, struct weir__defer *d);

/** Number of armed timers (tests). */
size_t weir__loop_timer_count(const struct weir_loop *loop);

/** Refreshes the cached clocks (tests; the loop does it each turn). */
void weir__loop_update_time(struct weir_loop *loop);
/* The deadline weir_timer_start(loop, t, ms) would give t now. */
uint64_t weir__loop_deadline(const struct weir_loop *loop, uint64_t ms);

/** Moves the loop's monotonic clock ms forward, for good (tests: timeouts without waiting). */
void weir__loop_skew_clock(struct weir_loop *loop, uint64_t ms);

/** Fires every timer due at the cached time (tests; the loop does it each turn). */
void weir__loop_run_timers(struct weir_loop *loop);

/** The loop's user slot (the worker that owns it). */
void weir__loop_set_data(struct weir_loop *loop, void *data);
void *weir__loop_data(const struct weir_loop *loop);

#endif
