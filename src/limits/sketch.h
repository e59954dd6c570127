/*
 * The count-min sketch under the rate estimator and the in-flight counter: rows of atomic
 * 32-bit counters, one counter per row for each key, chosen by a seeded hash. Adding touches
 * one counter per row; an estimate is the smallest of a key's counters, so keys that share a
 * counter can only inflate each other's estimates.
 */
#ifndef WEIR_LIMITS_SKETCH_H
#define WEIR_LIMITS_SKETCH_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define WEIR__SKETCH_MAX_ROWS 16u

struct weir__sketch {
    unsigned rows;
    uint32_t mask;       /* slots per row - 1 (a power of two minus one) */
    _Atomic uint32_t *c; /* rows * (mask + 1) counters, row after row */
};

/** Row indices of one key: computed once per operation from a single 64-bit hash. */
struct weir__sketch_idx {
    uint32_t at[WEIR__SKETCH_MAX_ROWS];
};

/** Checks and normalises (rows, slots); 0 or WEIR_EINVAL. */
int weir__sketch_shape(unsigned *rows, unsigned *slots);
/** Allocates zeroed counters. 0 or WEIR_ENOMEM. */
int weir__sketch_init(struct weir__sketch *sk, unsigned rows, unsigned slots);
void weir__sketch_dispose(struct weir__sketch *sk);
/** A random 64-bit seed (getrandom, falling back to the clock and address bits). */
uint64_t weir__sketch_seed(void);
/** A keyed 64-bit hash of len bytes. */
uint64_t weir__sketch_hash(uint64_t seed, const void *key, size_t len);
/** The counter of each row for hash h. */
void weir__sketch_index(const struct weir__sketch *sk, uint64_t h, struct weir__sketch_idx *ix);
/** Adds n to the key's counters; returns the smallest counter after adding. */
uint32_t weir__sketch_add(struct weir__sketch *sk, const struct weir__sketch_idx *ix, uint32_t n);
/** Subtracts n from the key's counters. */
void weir__sketch_sub(struct weir__sketch *sk, const struct weir__sketch_idx *ix, uint32_t n);
/** The smallest of the key's counters. */
uint32_t weir__sketch_min(const struct weir__sketch *sk, const struct weir__sketch_idx *ix);
/** Zeroes every counter (atomic stores: racing adders are not undefined behaviour). */
void weir__sketch_clear(struct weir__sketch *sk);

#endif
