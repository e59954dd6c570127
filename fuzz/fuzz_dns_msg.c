/*
 * libFuzzer target for src/lb/dns_msg.c, the only DNS bytes weir reads itself.
 *
 * weir__dns_answer_ttl on the input as a DNS message: it must never read outside it (ASan),
 * give the same result twice, return either an error or exactly the header's ANCOUNT with a
 * TTL of at most 2^31-1 (0 when there is no answer); and, checked differentially against
 * c-ares, whenever c-ares parses the message as an SRV answer (which walks every answer
 * record), so must it.
 *
 * weir__dns_name_check on the input as a name, against a reference written apart from it.
 */
#include <ares.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "lb/dns_msg.h"

static void trap_if(bool cond)
{
    if (cond) {
        __builtin_trap();
    }
}

static bool name_char(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
           c == '_';
}

/* The rules of weir__dns_name_check, label by label. */
static bool ref_name_ok(const uint8_t *s, size_t len)
{
    if (len > 0 && s[len - 1] == '.') {
        len--;
    }
    if (len == 0 || len > 253) {
        return false;
    }
    size_t start = 0;
    bool last_all_digits = false;
    while (start <= len) {
        size_t end = start;
        while (end < len && s[end] != '.') {
            end++;
        }
        size_t n = end - start;
        if (n == 0 || n > 63) {
            return false;
        }
        last_all_digits = true;
        for (size_t i = start; i < end; i++) {
            if (!name_char(s[i])) {
                return false;
            }
            last_all_digits = last_all_digits && s[i] >= '0' && s[i] <= '9';
        }
        start = end + 1;
    }
    return !last_all_digits;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t ttl = 12345, again = 54321;
    int n = weir__dns_answer_ttl(data, size, &ttl);
    int m = weir__dns_answer_ttl(data, size, &again);
    trap_if(n != m || ttl != again);
    if (n >= 0) {
        trap_if(size < 12);
        trap_if(n != (data[6] << 8 | data[7]));
        trap_if(ttl > INT32_MAX || (n == 0 && ttl != 0));
    }
    if (size <= INT32_MAX) {
        struct ares_srv_reply *srv = NULL;
        int rc = ares_parse_srv_reply(data, (int)size, &srv);
        if (srv != NULL) {
            ares_free_data(srv);
        }
        trap_if(rc == ARES_SUCCESS && n < 0);
    }
    bool ok = weir__dns_name_check((const char *)data, size) == NULL;
    trap_if(ok != ref_name_ok(data, size));
    return 0;
}
