/*
 * The TTL of a DNS answer (see dns_msg.h). RFC 1035 section 4.1: a 12-byte header (QDCOUNT at
 * offset 4, ANCOUNT at 6), QDCOUNT questions (a name, type, class), then ANCOUNT records (a
 * name, type, class, a 32-bit TTL, RDLENGTH and that many bytes of data). Names are skipped,
 * not expanded: a label is a length byte 0..63 and that many bytes, a compression pointer
 * (top bits 11) is two bytes and ends the name; the other two top-bit patterns are refused.
 */
#include "lb/dns_msg.h"

#include "weir/error.h"

#define HEADER_LEN 12

struct reader {
    const unsigned char *p;
    size_t len;
    size_t pos;
};

static int need(const struct reader *r, size_t n)
{
    return r->len - r->pos >= n ? 0 : WEIR_EINVAL;
}

static uint16_t u16_at(const struct reader *r, size_t at)
{
    return (uint16_t)((unsigned)r->p[at] << 8 | r->p[at + 1]);
}

static uint32_t u32_at(const struct reader *r, size_t at)
{
    return (uint32_t)r->p[at] << 24 | (uint32_t)r->p[at + 1] << 16 | (uint32_t)r->p[at + 2] << 8 |
           (uint32_t)r->p[at + 3];
}

/* Moves past one encoded name. Each step consumes at least one byte: bounded by len. */
static int skip_name(struct reader *r)
{
    for (;;) {
        if (need(r, 1) != 0) {
            return WEIR_EINVAL;
        }
        unsigned char b = r->p[r->pos];
        if ((b & 0xC0) == 0xC0) {
            if (need(r, 2) != 0) {
                return WEIR_EINVAL;
            }
            r->pos += 2;
            return 0;
        }
        if ((b & 0xC0) != 0) {
            return WEIR_EINVAL; /* 01 and 10: reserved label types */
        }
        r->pos++;
        if (b == 0) {
            return 0;
        }
        if (need(r, b) != 0) {
            return WEIR_EINVAL;
        }
        r->pos += b;
    }
}

int weir__dns_answer_ttl(const unsigned char *msg, size_t len, uint32_t *ttl)
{
    struct reader r = {msg, len, 0};
    *ttl = 0;
    if (msg == NULL || need(&r, HEADER_LEN) != 0) {
        return WEIR_EINVAL;
    }
    uint16_t qdcount = u16_at(&r, 4);
    uint16_t ancount = u16_at(&r, 6);
    r.pos = HEADER_LEN;
    for (uint16_t i = 0; i < qdcount; i++) {
        if (skip_name(&r) != 0 || need(&r, 4) != 0) {
            return WEIR_EINVAL;
        }
        r.pos += 4; /* type, class */
    }
    uint32_t least = UINT32_MAX;
    for (uint16_t i = 0; i < ancount; i++) {
        if (skip_name(&r) != 0 || need(&r, 10) != 0) {
            return WEIR_EINVAL;
        }
        uint32_t t = u32_at(&r, r.pos + 4);
        uint16_t rdlength = u16_at(&r, r.pos + 8);
        r.pos += 10;
        if (need(&r, rdlength) != 0) {
            return WEIR_EINVAL;
        }
        r.pos += rdlength;
        if (t > INT32_MAX) {
            t = 0;
        }
        if (t < least) {
            least = t;
        }
    }
    *ttl = ancount > 0 ? least : 0;
    return ancount;
}

const char *weir__dns_name_check(const char *s, size_t len)
{
    if (len > 0 && s[len - 1] == '.') {
        len--; /* absolute form */
    }
    if (len == 0 || len > 253) {
        return "a DNS name has 1 to 253 characters";
    }
    size_t label = 0;
    bool digits_only = true;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0) {
                return "a DNS name has no empty label";
            }
            label = 0;
            digits_only = true;
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok) {
            return "a DNS name has only letters, digits, '-', '_' and dots";
        }
        if (++label > 63) {
            return "a DNS label has at most 63 characters";
        }
        digits_only = digits_only && c >= '0' && c <= '9';
    }
    if (label == 0) {
        return "a DNS name has no empty label";
    }
    if (digits_only) {
        return "not a valid IP address";
    }
    return NULL;
}
