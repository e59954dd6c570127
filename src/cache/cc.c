/*
 * HTTP caching semantics (RFC 9111) over header bytes: the Cache-Control parser, HTTP-dates
 * (parsed and formatted with our own civil-date arithmetic: no locale, no strptime, no
 * timegm), the freshness lifetime and current age of a stored response, and whether a
 * response may be stored by a shared cache at all. Pure functions: nothing allocates.
 */
#include <string.h>
#include <time.h>

#include "cache/cc.h"
#include "http/head.h"
#include "weir/error.h"

/* ---- Cache-Control (RFC 9111 5.2) ---- */

static bool is_tchar(char c)
{
    struct weir_iov one = {&c, 1};
    return weir__http_is_token(one);
}

/*
 * One list element: a directive name and its argument. An argument is a token or the inside
 * of a quoted-string, raw (a quoted-pair is kept as it is, and marks the argument escaped).
 * ok is false when the element does not follow the grammar (an unterminated quote, an empty
 * name or argument, bytes after the argument before the next comma).
 */
struct directive {
    struct weir_iov name;
    struct weir_iov arg;
    bool has_arg;
    bool escaped;
    bool ok;
};

/* Moves *pos to the next comma outside a quoted-string (or the end). */
static void skip_to_comma(struct weir_iov v, size_t *pos)
{
    size_t i = *pos;
    bool quoted = false;
    while (i < v.len) {
        char c = v.base[i];
        if (quoted && c == '\\') {
            i += i + 1 < v.len ? 2 : 1;
            continue;
        }
        if (c == '"') {
            quoted = !quoted;
        } else if (c == ',' && !quoted) {
            break;
        }
        i++;
    }
    *pos = i;
}

static size_t skip_ows(struct weir_iov v, size_t i)
{
    while (i < v.len && weir__http_is_ows(v.base[i])) {
        i++;
    }
    return i;
}

/* A quoted-string's inside, from just after its opening quote; *pos ends past the closing one. */
static void quoted_arg(struct weir_iov v, size_t *pos, struct directive *d)
{
    size_t i = *pos, start = i;
    while (i < v.len && v.base[i] != '"') {
        if (v.base[i] == '\\') {
            d->escaped = true;
            i += i + 1 < v.len ? 2 : 1;
        } else {
            i++;
        }
    }
    if (i >= v.len) {
        d->arg = (struct weir_iov){v.base + start, v.len - start};
        d->ok = false; /* unterminated */
        *pos = v.len;
        return;
    }
    d->arg = (struct weir_iov){v.base + start, i - start};
    *pos = i + 1;
}

/*
 * The next element of the list v from *pos, skipping empty ones. Lenient where nothing is
 * lost: whitespace around "=" is allowed. false at the end of v.
 */
static bool next_directive(struct weir_iov v, size_t *pos, struct directive *d)
{
    size_t i = *pos;
    while (i < v.len && (weir__http_is_ows(v.base[i]) || v.base[i] == ',')) {
        i++;
    }
    if (i >= v.len) {
        *pos = v.len;
        return false;
    }
    *d = (struct directive){.ok = true};
    size_t start = i;
    while (i < v.len && is_tchar(v.base[i])) {
        i++;
    }
    d->name = (struct weir_iov){v.base + start, i - start};
    d->ok = d->name.len > 0;
    i = skip_ows(v, i);
    if (i < v.len && v.base[i] == '=') {
        d->has_arg = true;
        i = skip_ows(v, i + 1);
        if (i < v.len && v.base[i] == '"') {
            i++;
            quoted_arg(v, &i, d);
        } else {
            start = i;
            while (i < v.len && is_tchar(v.base[i])) {
                i++;
            }
            d->arg = (struct weir_iov){v.base + start, i - start};
            if (d->arg.len == 0) {
                d->ok = false;
            }
        }
        i = skip_ows(v, i);
    }
    if (i < v.len && v.base[i] != ',') {
        d->ok = false;
        skip_to_comma(v, &i);
    }
    *pos = i;
    return true;
}

/* delta-seconds (RFC 9111 1.2.2): 1*DIGIT, at most 2^31; false when malformed. */
static bool delta_seconds(const struct directive *d, uint32_t *out)
{
    if (!d->ok || !d->has_arg || d->escaped || d->arg.len == 0) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < d->arg.len; i++) {
        char c = d->arg.base[i];
        if (c < '0' || c > '9') {
            return false;
        }
        if (v < WEIR_CC_DELTA_MAX) {
            v = v * 10 + (uint64_t)(c - '0');
        }
    }
    *out = v >= WEIR_CC_DELTA_MAX ? WEIR_CC_DELTA_MAX : (uint32_t)v;
    return true;
}

enum dir_kind {
    DIR_FLAG,        /* no argument (one given is ignored) */
    DIR_FLAG_STRICT, /* the same, but honoured even in a malformed element: it restricts */
    DIR_FRESHNESS,   /* delta-seconds the freshness depends on: malformed sets INVALID */
    DIR_DELTA,       /* delta-seconds; malformed is ignored */
    DIR_OPT_DELTA,   /* optional delta-seconds (max-stale: no value means any staleness) */
};

static const struct {
    const char *name;
    uint32_t flag;
    enum dir_kind kind;
    size_t off; /* the value's field in struct weir__cc, for the delta kinds */
} directives[] = {
    {"no-store", WEIR_CC_NO_STORE, DIR_FLAG_STRICT, 0},
    {"no-cache", WEIR_CC_NO_CACHE, DIR_FLAG_STRICT, 0},
    {"private", WEIR_CC_PRIVATE, DIR_FLAG_STRICT, 0},
    {"public", WEIR_CC_PUBLIC, DIR_FLAG, 0},
    {"must-revalidate", WEIR_CC_MUST_REVALIDATE, DIR_FLAG_STRICT, 0},
    {"proxy-revalidate", WEIR_CC_PROXY_REVALIDATE, DIR_FLAG_STRICT, 0},
    {"no-transform", WEIR_CC_NO_TRANSFORM, DIR_FLAG_STRICT, 0},
    {"immutable", WEIR_CC_IMMUTABLE, DIR_FLAG, 0},
    {"only-if-cached", WEIR_CC_ONLY_IF_CACHED, DIR_FLAG, 0},
    {"max-age", WEIR_CC_MAX_AGE, DIR_FRESHNESS, offsetof(struct weir__cc, max_age)},
    {"s-maxage", WEIR_CC_S_MAXAGE, DIR_FRESHNESS, offsetof(struct weir__cc, s_maxage)},
    {"stale-while-revalidate", WEIR_CC_SWR, DIR_DELTA,
     offsetof(struct weir__cc, stale_while_revalidate)},
    {"stale-if-error", WEIR_CC_SIE, DIR_DELTA, offsetof(struct weir__cc, stale_if_error)},
    {"max-stale", WEIR_CC_MAX_STALE, DIR_OPT_DELTA, offsetof(struct weir__cc, max_stale)},
    {"min-fresh", WEIR_CC_MIN_FRESH, DIR_DELTA, offsetof(struct weir__cc, min_fresh)},
};

static uint32_t *value_slot(struct weir__cc *cc, size_t off)
{
    return (uint32_t *)(void *)((char *)cc + off);
}

/*
 * Applies one directive. seen holds the valued directives met before (by the flag bit):
 * only the first occurrence counts, well-formed or not.
 */
static void apply(struct weir__cc *cc, const struct directive *d, uint32_t *seen)
{
    for (size_t k = 0; k < sizeof(directives) / sizeof(directives[0]); k++) {
        if (!weir_iov_ieq_cstr(d->name, directives[k].name)) {
            continue;
        }
        uint32_t flag = directives[k].flag;
        enum dir_kind kind = directives[k].kind;
        if (kind == DIR_FLAG_STRICT || (kind == DIR_FLAG && d->ok)) {
            cc->flags |= flag;
            return;
        }
        if (kind == DIR_FLAG || (*seen & flag) != 0) {
            return;
        }
        *seen |= flag;
        uint32_t v = 0;
        if (kind == DIR_OPT_DELTA && d->ok && !d->has_arg) {
            v = WEIR_CC_DELTA_MAX; /* max-stale alone: any staleness */
        } else if (!delta_seconds(d, &v)) {
            if (kind == DIR_FRESHNESS) {
                cc->flags |= WEIR_CC_INVALID;
            }
            return;
        }
        cc->flags |= flag;
        *value_slot(cc, directives[k].off) = v;
        return;
    }
}

static void parse_list(struct weir_iov v, struct weir__cc *cc, uint32_t *seen)
{
    size_t pos = 0;
    struct directive d;
    while (next_directive(v, &pos, &d)) {
        apply(cc, &d, seen);
    }
}

void weir__cc_parse_value(struct weir_iov v, struct weir__cc *cc)
{
    uint32_t seen = 0;
    memset(cc, 0, sizeof(*cc));
    parse_list(v, cc, &seen);
}

void weir__cc_parse(const struct weir_headers *h, struct weir__cc *cc)
{
    uint32_t seen = 0;
    memset(cc, 0, sizeof(*cc));
    size_t n = h != NULL ? weir_headers_count(h) : 0;
    for (size_t i = 0; i < n; i++) {
        const struct weir_header *f = weir_headers_at(h, i);
        if (f != NULL && weir_iov_ieq_cstr(f->name, "cache-control")) {
            parse_list(f->value, cc, &seen);
        }
    }
}

/* ---- HTTP-date (RFC 9110 5.6.7) ---- */

#define DATE_LEN 29
/* The instants four-digit years can name: 0000-01-01T00:00:00Z to 9999-12-31T23:59:59Z. */
#define DATE_MIN (-62167219200LL)
#define DATE_MAX 253402300799LL

static const char month_names[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
/* Indexed by weekday, 0 = Sunday. */
static const char day_names[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const day_names_long[7] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                              "Thursday", "Friday", "Saturday"};

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;                                   /* [0, 399] */
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* [0, 365] */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

/* The inverse: the date of day z since 1970-01-01. */
static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;                                      /* [0, 146096] */
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
    int64_t mp = (5 * doy + 2) / 153;                                    /* [0, 11] */
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int len[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : len[m - 1];
}

/* A cursor over the date's bytes; every match checks the bytes left. */
struct scan {
    struct weir_iov v;
    size_t i;
};

static bool lit(struct scan *s, const char *text, size_t n)
{
    if (n > s->v.len - s->i || memcmp(s->v.base + s->i, text, n) != 0) {
        return false;
    }
    s->i += n;
    return true;
}

/* Exactly n digits (n <= 4). */
static bool num(struct scan *s, size_t n, int *out)
{
    if (n > s->v.len - s->i) {
        return false;
    }
    int v = 0;
    for (size_t k = 0; k < n; k++) {
        char c = s->v.base[s->i + k];
        if (c < '0' || c > '9') {
            return false;
        }
        v = v * 10 + (c - '0');
    }
    s->i += n;
    *out = v;
    return true;
}

static bool month(struct scan *s, int *out)
{
    for (int k = 0; k < 12; k++) {
        if (lit(s, month_names[k], 3)) {
            *out = k + 1;
            return true;
        }
    }
    return false;
}

/* A short (or, long, a full) day name. The weekday is not checked against the date. */
static bool day_name(struct scan *s, bool long_form)
{
    for (int k = 0; k < 7; k++) {
        if (long_form ? lit(s, day_names_long[k], strlen(day_names_long[k]))
                      : lit(s, day_names[k], 3)) {
            return true;
        }
    }
    return false;
}

struct tm_parts {
    int64_t year;
    int mon, day, hour, min, sec;
};

/* time-of-day: hh ":" mm ":" ss, 00:00:00 to 23:59:60 (a leap second). */
static bool time_of_day(struct scan *s, struct tm_parts *t)
{
    return num(s, 2, &t->hour) && lit(s, ":", 1) && num(s, 2, &t->min) && lit(s, ":", 1) &&
           num(s, 2, &t->sec) && t->hour <= 23 && t->min <= 59 && t->sec <= 60;
}

/* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
static bool imf_fixdate(struct scan *s, struct tm_parts *t)
{
    int y = 0;
    bool ok = day_name(s, false) && lit(s, ", ", 2) && num(s, 2, &t->day) && lit(s, " ", 1) &&
              month(s, &t->mon) && lit(s, " ", 1) && num(s, 4, &y) && lit(s, " ", 1) &&
              time_of_day(s, t) && lit(s, " GMT", 4);
    t->year = y;
    return ok;
}

/* The year a two-digit one stands for: RFC 9110 5.6.7 (not more than 50 years ahead). */
static int64_t rfc850_year(int yy)
{
    time_t now = time(NULL);
    int64_t cur = 2000;
    if (now != (time_t)-1) {
        int m = 0, d = 0;
        int64_t days = (int64_t)now / 86400 - ((int64_t)now % 86400 < 0);
        civil_from_days(days, &cur, &m, &d);
    }
    int64_t y = cur - cur % 100 + yy;
    if (y > cur + 50) {
        y -= 100;
    } else if (y <= cur - 50) {
        y += 100;
    }
    return y;
}

/* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
static bool rfc850_date(struct scan *s, struct tm_parts *t)
{
    int yy = 0;
    bool ok = day_name(s, true) && lit(s, ", ", 2) && num(s, 2, &t->day) && lit(s, "-", 1) &&
              month(s, &t->mon) && lit(s, "-", 1) && num(s, 2, &yy) && lit(s, " ", 1) &&
              time_of_day(s, t) && lit(s, " GMT", 4);
    if (ok) {
        t->year = rfc850_year(yy);
    }
    return ok;
}

/* asctime: Sun Nov  6 08:49:37 1994 */
static bool asctime_date(struct scan *s, struct tm_parts *t)
{
    int y = 0;
    bool ok = day_name(s, false) && lit(s, " ", 1) && month(s, &t->mon) && lit(s, " ", 1);
    if (ok && lit(s, " ", 1)) {
        ok = num(s, 1, &t->day);
    } else if (ok) {
        ok = num(s, 2, &t->day);
    }
    ok = ok && lit(s, " ", 1) && time_of_day(s, t) && lit(s, " ", 1) && num(s, 4, &y);
    t->year = y;
    return ok;
}

bool weir__http_date_parse(struct weir_iov v, int64_t *out)
{
    while (v.len > 0 && weir__http_is_ows(v.base[0])) {
        v.base++;
        v.len--;
    }
    while (v.len > 0 && weir__http_is_ows(v.base[v.len - 1])) {
        v.len--;
    }
    bool (*const forms[])(struct scan *, struct tm_parts *) = {imf_fixdate, rfc850_date,
                                                               asctime_date};
    for (size_t k = 0; k < sizeof(forms) / sizeof(forms[0]); k++) {
        struct scan s = {v, 0};
        struct tm_parts t = {0, 0, 0, 0, 0, 0};
        if (!forms[k](&s, &t) || s.i != v.len) {
            continue;
        }
        if (t.day < 1 || t.day > days_in_month(t.year, t.mon)) {
            return false;
        }
        int64_t days = days_from_civil(t.year, t.mon, t.day);
        int64_t secs = days * 86400 + t.hour * 3600 + t.min * 60 + t.sec;
        if (secs > DATE_MAX) {
            return false; /* 9999-12-31T23:59:60: past what a date can be formatted as */
        }
        *out = secs;
        return true;
    }
    return false;
}

/* Writes the n low decimal digits of v at buf[*at], within cap. */
static void put_digits(char *buf, size_t cap, size_t *at, int64_t v, size_t n)
{
    for (size_t k = n; k > 0; k--) {
        if (*at + k - 1 < cap) {
            buf[*at + k - 1] = (char)('0' + v % 10);
        }
        v /= 10;
    }
    *at += n;
}

static void put_text(char *buf, size_t cap, size_t *at, const char *text, size_t n)
{
    if (n <= cap && *at <= cap - n) {
        memcpy(buf + *at, text, n);
    }
    *at += n;
}

size_t weir__http_date_format(int64_t t, char *buf, size_t cap)
{
    if (cap < DATE_LEN + 1 || t < DATE_MIN || t > DATE_MAX) {
        if (cap > 0) {
            buf[0] = '\0';
        }
        return 0;
    }
    int64_t days = t / 86400 - (t % 86400 < 0);
    int64_t secs = t - days * 86400;
    int64_t year = 0;
    int mon = 0, day = 0;
    civil_from_days(days, &year, &mon, &day);
    int64_t wday = (days % 7 + 7 + 4) % 7; /* 1970-01-01 was a Thursday */
    size_t at = 0;
    put_text(buf, cap, &at, day_names[wday], 3);
    put_text(buf, cap, &at, ", ", 2);
    put_digits(buf, cap, &at, day, 2);
    put_text(buf, cap, &at, " ", 1);
    put_text(buf, cap, &at, month_names[mon - 1], 3);
    put_text(buf, cap, &at, " ", 1);
    put_digits(buf, cap, &at, year, 4);
    put_text(buf, cap, &at, " ", 1);
    put_digits(buf, cap, &at, secs / 3600, 2);
    put_text(buf, cap, &at, ":", 1);
    put_digits(buf, cap, &at, secs / 60 % 60, 2);
    put_text(buf, cap, &at, ":", 1);
    put_digits(buf, cap, &at, secs % 60, 2);
    put_text(buf, cap, &at, " GMT", 4);
    buf[at] = '\0'; /* at == DATE_LEN < cap */
    return at;
}

/* ---- freshness and age (RFC 9111 4.2) ---- */

static int64_t sub_sat(int64_t a, int64_t b)
{
    if (b > 0 && a < INT64_MIN + b) {
        return INT64_MIN;
    }
    if (b < 0 && a > INT64_MAX + b) {
        return INT64_MAX;
    }
    return a - b;
}

static int64_t add_sat(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b) {
        return INT64_MAX;
    }
    if (b < 0 && a < INT64_MIN - b) {
        return INT64_MIN;
    }
    return a + b;
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

uint32_t weir__freshness_lifetime(const struct weir__cc *cc, const struct weir_headers *h,
                                  const struct weir__cache_times *t, bool *explicit_)
{
    bool unused = false;
    if (explicit_ == NULL) {
        explicit_ = &unused;
    }
    *explicit_ = true;
    if (cc->flags & WEIR_CC_INVALID) {
        return 0; /* invalid freshness information: stale (RFC 9111 4.2.1) */
    }
    if (cc->flags & WEIR_CC_S_MAXAGE) {
        return cc->s_maxage;
    }
    if (cc->flags & WEIR_CC_MAX_AGE) {
        return cc->max_age;
    }
    struct weir_iov v;
    if (h != NULL && weir_headers_get(h, "Expires", &v)) {
        int64_t expires = 0;
        if (!weir__http_date_parse(v, &expires)) {
            return 0; /* RFC 9111 5.3: an invalid date means already expired */
        }
        int64_t life = sub_sat(expires, t->date);
        if (life <= 0) {
            return 0;
        }
        return life >= (int64_t)WEIR_CC_DELTA_MAX ? WEIR_CC_DELTA_MAX : (uint32_t)life;
    }
    *explicit_ = false;
    return 0;
}

/*
 * RFC 9111 4.2.3, in saturating arithmetic. A negative response delay or resident time (a
 * clock that went back) counts as 0: an age is never made younger than what was received.
 */
uint32_t weir__current_age(const struct weir__cache_times *t, int64_t now)
{
    int64_t apparent_age = max64(0, sub_sat(t->response_time, t->date));
    int64_t response_delay = max64(0, sub_sat(t->response_time, t->request_time));
    int64_t corrected_age_value = add_sat((int64_t)t->age, response_delay);
    int64_t corrected_initial_age = max64(apparent_age, corrected_age_value);
    int64_t resident_time = max64(0, sub_sat(now, t->response_time));
    int64_t current_age = add_sat(corrected_initial_age, resident_time);
    return current_age >= (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)current_age;
}

/* ---- storability (RFC 9111 3) ---- */

bool weir__status_heuristic(int status)
{
    switch (status) {
    case 200:
    case 203:
    case 204:
    case 206:
    case 300:
    case 301:
    case 308:
    case 404:
    case 405:
    case 410:
    case 414:
    case 501:
        return true;
    default:
        return false;
    }
}

/*
 * A final status this cache understands. A recipient must not cache an unrecognised status
 * (RFC 9110 15): the recognised ones are those weir_http_reason names. 206 and 304 are not
 * understood here (RFC 9111 3: storing them needs range combining and 4.3.4's update, which
 * are the caller's), so they are never stored as responses of their own.
 */
static bool status_understood(int status)
{
    if (status < 200 || status > 599 || status == 206 || status == 304) {
        return false;
    }
    return strcmp(weir_http_reason(status), "Unknown") != 0;
}

bool weir__cc_storable(int status, const struct weir__cc *cc, bool explicit_fresh, bool authorized)
{
    if (!status_understood(status)) {
        return false;
    }
    if (cc->flags & (WEIR_CC_NO_STORE | WEIR_CC_PRIVATE)) {
        return false;
    }
    if (authorized &&
        !(cc->flags & (WEIR_CC_PUBLIC | WEIR_CC_S_MAXAGE | WEIR_CC_MUST_REVALIDATE))) {
        return false;
    }
    return explicit_fresh || (cc->flags & (WEIR_CC_MAX_AGE | WEIR_CC_S_MAXAGE)) != 0 ||
           weir__status_heuristic(status) || (cc->flags & WEIR_CC_PUBLIC) != 0;
}
