/*
 * The one thing weir reads from a raw DNS message itself: the TTL of its answer. c-ares parses
 * A and AAAA answers with their TTLs, but its SRV parser (1.18) drops them; this walks the
 * header, the questions and the answer records only far enough to read each record's TTL.
 */
#ifndef WEIR_LB_DNS_MSG_H
#define WEIR_LB_DNS_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/**
 * Reads the answer section of the DNS message msg[0..len). Returns the number of answer
 * records (>= 0) and stores the smallest of their TTLs in *ttl (0 when there is none; a TTL
 * with the top bit set counts as 0, RFC 2181 section 8); or WEIR_EINVAL when the message is
 * cut short or a name is malformed before the last answer record ends. Reads nothing outside
 * msg; never follows compression pointers, so its work is linear in len.
 */
int weir__dns_answer_ttl(const unsigned char *msg, size_t len, uint32_t *ttl);

/**
 * Checks s[0..len) as a DNS name weir may query: dot-separated labels of 1..63 letters,
 * digits, '-' or '_', at most 253 bytes (one trailing dot allowed), the last label not all
 * digits (that is a mistyped IPv4 address). NULL when valid, else a short reason.
 */
const char *weir__dns_name_check(const char *s, size_t len);

#endif
