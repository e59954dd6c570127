/*
 * Value syntax shared by the config loader and the command line: durations ("250ms", "30s"),
 * sizes ("16k"), "host:port" addresses and HTTP field names. All overflow-checked, none
 * locale-dependent.
 */
#include <arpa/inet.h>
#include <string.h>

#include "config/config_int.h"
#include "lb/dns_msg.h"
#include "weir/error.h"

/*
 * Parses "digits[.digits]" at the start of s into mant / 10^frac_digits. Returns the number of
 * bytes used, or 0 when s does not start with a digit or the number is too long to be exact.
 */
static size_t parse_decimal(const char *s, uint64_t *mant, unsigned *frac_digits)
{
    uint64_t m = 0;
    unsigned frac = 0;
    size_t i = 0;
    bool dot = false;
    if (s[0] < '0' || s[0] > '9') {
        return 0;
    }
    for (;; i++) {
        char c = s[i];
        if (c == '.' && !dot) {
            dot = true;
            if (s[i + 1] < '0' || s[i + 1] > '9') {
                return 0; /* "1." and "1.s" are typos, not numbers */
            }
            continue;
        }
        if (c < '0' || c > '9') {
            break;
        }
        uint64_t d = (uint64_t)(c - '0');
        if (m > (UINT64_MAX - d) / 10 || frac >= 18) {
            return 0;
        }
        m = m * 10 + d;
        frac += dot;
    }
    *mant = m;
    *frac_digits = frac;
    return i;
}

/* mant / 10^frac * unit, exactly; WEIR_EINVAL on overflow or a fraction of the base unit. */
static int scale(uint64_t mant, unsigned frac, uint64_t unit, uint64_t max, uint64_t *out)
{
    while (frac > 0 && mant % 10 == 0) { /* "1.50000000000000000g" is 1.5g */
        mant /= 10;
        frac--;
    }
    uint64_t div = 1;
    for (unsigned i = 0; i < frac; i++) {
        div *= 10;
    }
    if (mant != 0 && unit > UINT64_MAX / mant) {
        /* mant * unit overflows; divide first when that stays exact. */
        if (mant % div != 0 || mant / div > max / unit) {
            return WEIR_EINVAL;
        }
        *out = mant / div * unit;
        return 0;
    }
    uint64_t v = mant * unit;
    if (v % div != 0 || v / div > max) {
        return WEIR_EINVAL;
    }
    *out = v / div;
    return 0;
}

int weir_config_parse_duration(const char *s, uint32_t *ms)
{
    static const struct {
        const char *name;
        uint64_t ms;
    } units[] = {{"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    uint64_t mant, v;
    unsigned frac;
    if (s == NULL) {
        return WEIR_EINVAL;
    }
    size_t n = parse_decimal(s, &mant, &frac);
    if (n == 0) {
        return WEIR_EINVAL;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(s + n, units[i].name) == 0) {
            if (scale(mant, frac, units[i].ms, UINT32_MAX, &v) != 0) {
                return WEIR_EINVAL;
            }
            *ms = (uint32_t)v;
            return 0;
        }
    }
    return WEIR_EINVAL;
}

int weir_config_parse_size(const char *s, uint64_t *bytes)
{
    static const struct {
        const char *name;
        uint64_t mul;
    } units[] = {{"", 1},         {"k", 1u << 10}, {"K", 1u << 10}, {"m", 1u << 20},
                 {"M", 1u << 20}, {"g", 1u << 30}, {"G", 1u << 30}};
    uint64_t mant;
    unsigned frac;
    if (s == NULL) {
        return WEIR_EINVAL;
    }
    size_t n = parse_decimal(s, &mant, &frac);
    if (n == 0) {
        return WEIR_EINVAL;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(s + n, units[i].name) == 0) {
            return scale(mant, frac, units[i].mul, UINT64_MAX, bytes);
        }
    }
    return WEIR_EINVAL;
}

static const char *check_port(const char *p, size_t len, bool allow_port0)
{
    uint32_t port = 0;
    if (len == 0) {
        return "the port is missing";
    }
    if (len > 5) {
        return "the port must be a number from 1 to 65535";
    }
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return "the port must be a number from 1 to 65535";
        }
        port = port * 10 + (uint32_t)(p[i] - '0');
    }
    if (port > 65535 || (port == 0 && !allow_port0)) {
        return allow_port0 ? "the port must be a number from 0 to 65535"
                           : "the port must be a number from 1 to 65535";
    }
    return NULL;
}

static const char *check_host(const char *h, size_t len, int family)
{
    char buf[INET6_ADDRSTRLEN];
    if (len == 0) {
        return "the host is missing (use 0.0.0.0 or [::] for every interface)";
    }
    if (family == AF_INET && len == 9 && memcmp(h, "localhost", 9) == 0) {
        return NULL;
    }
    if (len >= sizeof(buf)) {
        goto bad;
    }
    memcpy(buf, h, len);
    buf[len] = '\0';
    unsigned char addr[16];
    if (inet_pton(family, buf, addr) == 1) {
        return NULL;
    }
bad:
    return family == AF_INET6 ? "not a valid IPv6 address"
                              : "the host must be a numeric IP address or localhost";
}

const char *weir__cfg_check_address(const char *s, size_t len, bool allow_port0)
{
    if (memchr(s, '\0', len) != NULL) {
        return "it contains a NUL byte";
    }
    if (len > 0 && s[0] == '[') {
        const char *end = memchr(s, ']', len);
        if (end == NULL) {
            return "no ']' closes the IPv6 address";
        }
        size_t hlen = (size_t)(end - s - 1);
        const char *why = check_host(s + 1, hlen, AF_INET6);
        if (why != NULL) {
            return why;
        }
        size_t rest = len - hlen - 2;
        if (rest == 0 || end[1] != ':') {
            return "the port is missing";
        }
        return check_port(end + 2, rest - 1, allow_port0);
    }
    const char *colon = memchr(s, ':', len);
    if (colon == NULL) {
        return "the port is missing";
    }
    if (memchr(colon + 1, ':', len - (size_t)(colon - s) - 1) != NULL) {
        return "write an IPv6 address in brackets, as [::1]:8080";
    }
    size_t hlen = (size_t)(colon - s);
    const char *why = check_host(s, hlen, AF_INET);
    if (why != NULL) {
        return why;
    }
    return check_port(colon + 1, len - hlen - 1, allow_port0);
}

const char *weir__cfg_check_backend_address(const char *s, size_t len, bool *dns)
{
    *dns = false;
    const char *why = weir__cfg_check_address(s, len, false);
    if (why == NULL || (len > 0 && s[0] == '[') || memchr(s, '\0', len) != NULL) {
        return why;
    }
    const char *colon = memchr(s, ':', len);
    if (colon == NULL || colon == s || memchr(colon + 1, ':', len - (size_t)(colon - s) - 1)) {
        return why; /* no port, no host, or an IPv6 address without brackets */
    }
    size_t hlen = (size_t)(colon - s);
    if (check_host(s, hlen, AF_INET) == NULL) {
        return why; /* the host is fine: the port is not */
    }
    if (weir__dns_name_check(s, hlen) != NULL) {
        return "the host must be a numeric IP address, localhost or a DNS name";
    }
    why = check_port(colon + 1, len - hlen - 1, false);
    *dns = why == NULL;
    return why;
}

bool weir__cfg_is_token(const char *s, size_t len)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (len == 0) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  (c != '\0' && strchr(extra, c) != NULL);
        if (!ok) {
            return false;
        }
    }
    return true;
}
