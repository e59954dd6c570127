/*
 * Access-log lines, in nginx's combined format or as one JSON object per line, appended to
 * the worker's access buffer (core/log.c hands full buffers to the writer thread).
 */
#include "proxy/proxy_int.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define LINE_MAX_BYTES 4096
#define FIELD_MAX      1024

struct line {
    char buf[LINE_MAX_BYTES];
    size_t len;
};

static void put_raw(struct line *l, const char *s, size_t n)
{
    if (n > sizeof(l->buf) - 1 - l->len) {
        n = sizeof(l->buf) - 1 - l->len;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_str(struct line *l, const char *s)
{
    put_raw(l, s, strlen(s));
}

static void put_u64(struct line *l, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v);
    put_raw(l, tmp, (size_t)n);
}

/* nginx-style escaping: '"', '\\' and bytes outside printable ASCII become \xHH. */
static void put_escaped(struct line *l, struct weir_iov v, bool json)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = v.len < FIELD_MAX ? v.len : FIELD_MAX;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v.base[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
            put_raw(l, (const char *)&ch, 1);
        } else if (json && (ch == '"' || ch == '\\')) {
            char esc[2] = {'\\', (char)ch};
            put_raw(l, esc, 2);
        } else if (json) {
            char esc[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
            put_raw(l, esc, 6);
        } else {
            char esc[4] = {'\\', 'x', hex[ch >> 4], hex[ch & 15]};
            put_raw(l, esc, 4);
        }
    }
}

static struct weir_iov header_or_dash(const struct weir_session *s, const char *name, bool json)
{
    struct weir_iov v;
    if (weir_headers_get(&s->req.headers, name, &v)) {
        return v;
    }
    return json ? WEIR_IOV_LIT("") : WEIR_IOV_LIT("-");
}

static void format_combined(const struct weir_session *s, struct line *l)
{
    static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    time_t t = (time_t)s->start_wall;
    gmtime_r(&t, &tm);
    char ts[40];
    int n = snprintf(ts, sizeof(ts), "[%02d/%s/%04d:%02d:%02d:%02d +0000] \"", tm.tm_mday,
                     mon[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    put_raw(l, s->c->ip, s->c->iplen);
    put_str(l, " - - ");
    put_raw(l, ts, n > 0 ? (size_t)n : 0);
    put_escaped(l, s->orig_method, false);
    put_str(l, " ");
    put_escaped(l, s->orig_target, false);
    put_str(l, s->h2 != NULL ? " HTTP/2.0\" " : s->client_minor ? " HTTP/1.1\" " : " HTTP/1.0\" ");
    put_u64(l, (uint64_t)s->status);
    put_str(l, " ");
    put_u64(l, s->respp.bytes);
    put_str(l, " \"");
    put_escaped(l, header_or_dash(s, "Referer", false), false);
    put_str(l, "\" \"");
    put_escaped(l, header_or_dash(s, "User-Agent", false), false);
    put_str(l, "\"");
}

static void json_str(struct line *l, const char *key, struct weir_iov v, bool comma)
{
    if (comma) {
        put_str(l, ",");
    }
    put_str(l, "\"");
    put_str(l, key);
    put_str(l, "\":\"");
    put_escaped(l, v, true);
    put_str(l, "\"");
}

static void json_num(struct line *l, const char *key, uint64_t v)
{
    put_str(l, ",\"");
    put_str(l, key);
    put_str(l, "\":");
    put_u64(l, v);
}

/* Which side ended a failed request: the client, the upstream or weir ("" for a success). */
static struct weir_iov termination(const struct weir_session *s)
{
    if (!s->has_err) {
        return WEIR_IOV_LIT("");
    }
    switch (s->err.source) {
    case WEIR_SRC_DOWNSTREAM:
        return WEIR_IOV_LIT("client");
    case WEIR_SRC_UPSTREAM:
        return WEIR_IOV_LIT("upstream");
    case WEIR_SRC_INTERNAL:
        break;
    }
    return WEIR_IOV_LIT("weir");
}

static void format_json(const struct weir_session *s, struct line *l)
{
    struct tm tm;
    time_t t = (time_t)s->start_wall;
    gmtime_r(&t, &tm);
    char ts[32];
    int n = snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    put_str(l, "{");
    json_str(l, "time", (struct weir_iov){ts, n > 0 ? (size_t)n : 0}, false);
    json_str(l, "client", (struct weir_iov){s->c->ip, s->c->iplen}, true);
    json_str(l, "method", s->orig_method, true);
    json_str(l, "target", s->orig_target, true);
    json_str(l, "protocol",
             s->h2 != NULL     ? WEIR_IOV_LIT("HTTP/2.0")
             : s->client_minor ? WEIR_IOV_LIT("HTTP/1.1")
                               : WEIR_IOV_LIT("HTTP/1.0"),
             true);
    json_num(l, "status", (uint64_t)s->status);
    json_num(l, "body_bytes_sent", s->respp.bytes);
    json_num(l, "request_body_bytes", s->reqp.bytes);
    json_str(l, "host", weir_req_host(&s->req), true);
    json_str(l, "referer", header_or_dash(s, "Referer", true), true);
    json_str(l, "user_agent", header_or_dash(s, "User-Agent", true), true);
    json_str(l, "upstream", s->have_peer ? weir_iov_cstr(s->peer.name) : WEIR_IOV_LIT(""), true);
    json_num(l, "retries", s->retries);
    json_num(l, "duration_ms", weir_loop_now_ms(s->w->loop) - s->start_ms);
    json_str(l, "error",
             s->has_err ? weir_iov_cstr(weir_error_type_str(s->err.type)) : WEIR_IOV_LIT(""), true);
    json_str(l, "termination", termination(s), true);
    put_str(l, "}");
}

void weir__access_log_request(struct weir_session *s)
{
    struct weir__proxy_worker *w = s->w;
    if (w->access.log == NULL) {
        return;
    }
    struct line l;
    l.len = 0;
    if (w->access_format == WEIR_ACCESS_JSON) {
        format_json(s, &l);
    } else {
        format_combined(s, &l);
    }
    l.buf[l.len++] = '\n';
    weir__access_buf_append(&w->access, l.buf, l.len, weir_loop_now_ms(w->loop));
}

void weir__access_log_reject(struct weir__conn *c, int status, size_t body_bytes)
{
    struct weir__proxy_worker *w = c->w;
    if (w->access.log == NULL) {
        return;
    }
    /* The request line as received, up to its end or the buffer's (it may be the bad part). */
    struct weir_iov line = {NULL, 0};
    if (c->st.in.data != NULL) {
        const char *p = c->st.in.data + c->st.in.rpos;
        size_t n = weir__buf_len(&c->st.in);
        const char *eol = memchr(p, '\n', n);
        line.base = p;
        line.len = eol ? (size_t)(eol - p) : n;
        if (line.len > 0 && line.base[line.len - 1] == '\r') {
            line.len--;
        }
    }
    struct tm tm;
    time_t t = (time_t)weir_loop_wall_s(w->loop);
    gmtime_r(&t, &tm);
    struct line l;
    l.len = 0;
    if (w->access_format == WEIR_ACCESS_JSON) {
        char ts[32];
        int n = snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        put_str(&l, "{");
        json_str(&l, "time", (struct weir_iov){ts, n > 0 ? (size_t)n : 0}, false);
        json_str(&l, "client", (struct weir_iov){c->ip, c->iplen}, true);
        json_str(&l, "request_line", line, true);
        json_num(&l, "status", (uint64_t)status);
        json_num(&l, "body_bytes_sent", body_bytes);
        json_str(&l, "error", WEIR_IOV_LIT("InvalidHTTP"), true);
        put_str(&l, "}");
    } else {
        static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
        char ts[40];
        int n = snprintf(ts, sizeof(ts), "[%02d/%s/%04d:%02d:%02d:%02d +0000] \"", tm.tm_mday,
                         mon[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
        put_raw(&l, c->ip, c->iplen);
        put_str(&l, " - - ");
        put_raw(&l, ts, n > 0 ? (size_t)n : 0);
        put_escaped(&l, line, false);
        put_str(&l, "\" ");
        put_u64(&l, (uint64_t)status);
        put_str(&l, " ");
        put_u64(&l, body_bytes);
        put_str(&l, " \"-\" \"-\"");
    }
    l.buf[l.len++] = '\n';
    weir__access_buf_append(&w->access, l.buf, l.len, weir_loop_now_ms(w->loop));
}
