/*
 * Abuse limits shared by every worker thread (Pingora's pingora-limits): a request-rate
 * estimator and an in-flight counter, both count-min sketches of atomic counters keyed by any
 * bytes (a client address, an API key, a host name). No lock anywhere: a thread observing a
 * key adds to a few counters with atomic increments. Collisions between keys can only make an
 * estimate too high, never too low.
 *
 * Used by weir itself for server.limits.requests_per_second_per_ip and
 * max_connections_per_ip, and usable from hooks for limits of their own: create one at start,
 * share it between threads, observe from any hook.
 */
#ifndef WEIR_LIMITS_H
#define WEIR_LIMITS_H

#include "weir/common.h"
#include "weir/error.h"

WEIR_BEGIN_DECLS

/** Default sketch shape: 4 rows of 4096 counters (64 KiB per window). */
#define WEIR_LIMITS_DEFAULT_ROWS  4u
#define WEIR_LIMITS_DEFAULT_SLOTS 4096u

/**
 * A rate estimator: counts events per key over fixed windows of window_ms, keeping the current
 * and the previous window (two sketches used in turn; the older is cleared when a new window
 * starts). Estimates are of the events in the last window_ms, sliding: this window's count
 * plus the previous window's, weighted by the part of it still inside the last window_ms.
 *
 * Error bound (count-min): with N events in a window spread over any number of keys and S
 * slots per row, each row over-counts a key by N/S on average; the estimate is the smallest
 * of the rows, so it exceeds the true count by more than e*N/S with probability at most
 * e^-rows. Never below the true count, except for counts made while another thread clears
 * the bank for a new window (its first microseconds), which may be wiped.
 */
struct weir_rate;

/**
 * A new estimator. window_ms >= 1; rows 1..16 (0: WEIR_LIMITS_DEFAULT_ROWS); slots per row,
 * rounded up to a power of two, 16..2^24 (0: WEIR_LIMITS_DEFAULT_SLOTS). Hashes are keyed
 * with a random seed, so outsiders cannot choose keys that collide. The estimator goes to *out,
 * owned by the caller (weir_rate_free). 0; WEIR_EINVAL (bad arguments) or WEIR_ENOMEM, with
 * *out NULL. Any thread; does not block.
 */
WEIR_EXTERN int weir_rate_new(uint32_t window_ms, unsigned rows, unsigned slots,
                              struct weir_rate **out);

/** Frees an estimator no thread uses any more. Accepts NULL. */
WEIR_EXTERN void weir_rate_free(struct weir_rate *r);

/**
 * Adds n events for key (len bytes) at now_ms (any monotonic milliseconds, such as
 * weir_loop_now_ms) and returns the sliding estimate of the key's events in the last window,
 * these included. Any thread, concurrently; lock-free.
 */
WEIR_EXTERN uint64_t weir_rate_observe(struct weir_rate *r, const void *key, size_t len, uint32_t n,
                                       uint64_t now_ms);

/** The sliding estimate of the key's events in the last window at now_ms, without adding. */
WEIR_EXTERN uint64_t weir_rate_estimate(const struct weir_rate *r, const void *key, size_t len,
                                        uint64_t now_ms);

/**
 * Events per second of the key in the last complete window (0 when that window saw none or is
 * older than one window), as Pingora's Rate::rate.
 */
WEIR_EXTERN double weir_rate_per_second(const struct weir_rate *r, const void *key, size_t len,
                                        uint64_t now_ms);

/**
 * An in-flight counter: how many of something (connections, requests) each key holds now.
 * Every weir_inflight_add must be matched by a weir_inflight_sub of the same key and amount.
 */
struct weir_inflight;

/**
 * A new counter in *out, owned by the caller (weir_inflight_free); rows and slots as for
 * weir_rate_new. 0; WEIR_EINVAL (bad shape) or WEIR_ENOMEM, with *out NULL.
 */
WEIR_EXTERN int weir_inflight_new(unsigned rows, unsigned slots, struct weir_inflight **out);

/** Frees a counter no thread uses any more. Accepts NULL. */
WEIR_EXTERN void weir_inflight_free(struct weir_inflight *f);

/**
 * Adds n for key and returns the estimate after adding (never below the true count). To
 * enforce a cap: add 1, and if the result exceeds the cap, sub 1 and refuse. Any thread.
 */
WEIR_EXTERN uint64_t weir_inflight_add(struct weir_inflight *f, const void *key, size_t len,
                                       uint32_t n);

/** Takes back n added earlier for key. Any thread. */
WEIR_EXTERN void weir_inflight_sub(struct weir_inflight *f, const void *key, size_t len,
                                   uint32_t n);

/** The current estimate for key. */
WEIR_EXTERN uint64_t weir_inflight_estimate(const struct weir_inflight *f, const void *key,
                                            size_t len);

WEIR_END_DECLS

#endif
