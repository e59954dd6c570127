/*
 * The per-thread event loop as hooks see it: timers, file-descriptor readiness and messages
 * posted from other threads. Every loop belongs to one thread; everything here but
 * weir_loop_post must be called on that thread.
 */
#ifndef WEIR_LOOP_H
#define WEIR_LOOP_H

#include "weir/common.h"

WEIR_BEGIN_DECLS

struct weir_loop;
struct weir_timer;
struct weir_io;

typedef void (*weir_timer_cb)(struct weir_loop *loop, struct weir_timer *timer);
typedef void (*weir_io_cb)(struct weir_loop *loop, struct weir_io *io, uint32_t events);
typedef void (*weir_post_fn)(struct weir_loop *loop, void *arg);

/** A one-shot timer in caller storage. Initialise with weir_timer_init before use. */
struct weir_timer {
    uint64_t deadline_ms; /**< private */
    size_t heap_index;    /**< private; SIZE_MAX when not armed */
    uint64_t start_seq;   /**< private: when it was armed, in the loop's sequence */
    weir_timer_cb cb;
    void *data; /**< the caller's */
};

/** Readiness interest on a file descriptor, in caller storage (edge-triggered). */
struct weir_io {
    int fd;
    uint32_t events; /**< private: registered epoll events */
    weir_io_cb cb;
    void *data; /**< the caller's */
};

/** Readiness bits passed to weir_io_cb and weir_loop_io_add (epoll's values). */
#define WEIR_IO_READ  0x001u
#define WEIR_IO_WRITE 0x004u
#define WEIR_IO_ERROR 0x008u
#define WEIR_IO_HUP   0x010u
#define WEIR_IO_RDHUP 0x2000u

WEIR_EXTERN void weir_timer_init(struct weir_timer *t, weir_timer_cb cb, void *data);

/**
 * Arms t to fire once after ms milliseconds (re-arms it if armed). 0 or WEIR_ENOMEM (the
 * loop's timer heap could not grow).
 */
WEIR_EXTERN int weir_timer_start(struct weir_loop *loop, struct weir_timer *t, uint64_t ms);

/** Disarms t; harmless when not armed. */
WEIR_EXTERN void weir_timer_stop(struct weir_loop *loop, struct weir_timer *t);

WEIR_EXTERN bool weir_timer_active(const struct weir_timer *t);

/** The loop's cached monotonic clock in milliseconds (updated once per loop turn). */
WEIR_EXTERN uint64_t weir_loop_now_ms(const struct weir_loop *loop);

/** Wall-clock seconds cached with the monotonic clock (for logs). */
WEIR_EXTERN int64_t weir_loop_wall_s(const struct weir_loop *loop);

/** Watches io->fd (non-blocking) for events, edge-triggered. 0 or -errno. */
WEIR_EXTERN int weir_loop_io_add(struct weir_loop *loop, struct weir_io *io, uint32_t events);
/** Changes the watched events. 0 or -errno. */
WEIR_EXTERN int weir_loop_io_mod(struct weir_loop *loop, struct weir_io *io, uint32_t events);
/** Stops watching io->fd (does not close it). */
WEIR_EXTERN void weir_loop_io_del(struct weir_loop *loop, struct weir_io *io);

/**
 * Runs fn(loop, arg) on loop's thread soon. May be called from any thread. The queue is
 * bounded: returns 0 or WEIR_ELIMIT when full (or WEIR_ECLOSED when the loop has exited).
 */
WEIR_EXTERN int weir_loop_post(struct weir_loop *loop, weir_post_fn fn, void *arg);

WEIR_END_DECLS

#endif
