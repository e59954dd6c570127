/*
 * Streaming base64 (RFC 4648, standard alphabet, with padding), for bodies that arrive and
 * leave in pieces (gRPC-Web's -text mode). Each direction keeps the bytes of an unfinished
 * group between pieces.
 */
#ifndef WEIR_CORE_B64_H
#define WEIR_CORE_B64_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct weir__b64 {
    unsigned char carry[4];
    uint8_t n;
};

/** Output room weir__b64_encode needs for n more input bytes. */
static inline size_t weir__b64_encode_room(const struct weir__b64 *st, size_t n)
{
    return (st->n + n + 2) / 3 * 4;
}

/** Output room weir__b64_decode needs for n more input bytes. */
static inline size_t weir__b64_decode_room(const struct weir__b64 *st, size_t n)
{
    return (st->n + n) / 4 * 3;
}

/**
 * Encodes in[0..n) after what st holds into out (weir__b64_encode_room bytes); at the end,
 * what is left is written padded. Returns the bytes written.
 */
size_t weir__b64_encode(struct weir__b64 *st, const char *in, size_t n, bool end, char *out);

/**
 * Decodes in[0..n) after what st holds into out (weir__b64_decode_room bytes). A padded
 * group may end any group of four (pieces encoded one by one, then joined). Returns the bytes
 * written, or -1 for a byte outside the alphabet, padding out of place, or (at the end) an
 * unfinished group.
 */
ptrdiff_t weir__b64_decode(struct weir__b64 *st, const char *in, size_t n, bool end, char *out);

#endif
