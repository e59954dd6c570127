/*
 * Error log (rare lines, written directly) and access log (per-worker buffers handed to one
 * writer thread through a bounded queue; workers never block on the file).
 */
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"

static int error_fd = 2;
static atomic_int error_level = WEIR_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int weir__log_open(const char *path, enum weir_log_level level)
{
    atomic_store(&error_level, (int)level);
    if (path == NULL || strcmp(path, "stderr") == 0) {
        return 0;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -errno;
    }
    if (error_fd > 2) {
        close(error_fd);
    }
    error_fd = fd;
    return 0;
}

void weir__log_close(void)
{
    if (error_fd > 2) {
        close(error_fd);
        error_fd = 2;
    }
}

bool weir__log_enabled(enum weir_log_level level)
{
    return (int)level <= atomic_load_explicit(&error_level, memory_order_relaxed);
}

void weir_log(enum weir_log_level level, const char *fmt, ...)
{
    if (!weir__log_enabled(level)) {
        return;
    }
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level]);
    if (n < 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) {
        return;
    }
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2) {
        len = sizeof(line) - 2;
    }
    line[len++] = '\n';
    /* A short write to the error log cannot be reported anywhere better. */
    (void)!write(error_fd, line, len);
}

/* ---- access log ---- */

#define ACCESS_BUF_SIZE  (64 * 1024)
#define ACCESS_QUEUE_CAP 64

struct chunk {
    char *data;
    size_t len;
};

struct weir__access_log {
    int fd;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct chunk queue[ACCESS_QUEUE_CAP];
    unsigned head;
    unsigned count;
    bool stopping;
    atomic_uint_fast64_t dropped;
};

static void write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            weir_log(WEIR_LOG_ERROR, "access log write failed: %s", strerror(errno));
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

static void *writer_main(void *arg)
{
    struct weir__access_log *al = arg;
    pthread_mutex_lock(&al->lock);
    for (;;) {
        while (al->count == 0 && !al->stopping) {
            pthread_cond_wait(&al->cond, &al->lock);
        }
        if (al->count == 0 && al->stopping) {
            break;
        }
        struct chunk c = al->queue[al->head];
        al->head = (al->head + 1) % ACCESS_QUEUE_CAP;
        al->count--;
        pthread_mutex_unlock(&al->lock);
        write_all(al->fd, c.data, c.len);
        weir__free(c.data);
        pthread_mutex_lock(&al->lock);
    }
    pthread_mutex_unlock(&al->lock);
    return NULL;
}

struct weir__access_log *weir__access_log_open(const char *path)
{
    struct weir__access_log *al = weir__calloc(1, sizeof(*al));
    if (al == NULL) {
        weir_log(WEIR_LOG_ERROR, "cannot open access log %s: out of memory", path);
        return NULL;
    }
    if (strcmp(path, "stdout") == 0) {
        al->fd = dup(1);
    } else {
        al->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    }
    if (al->fd < 0) {
        weir_log(WEIR_LOG_ERROR, "cannot open access log %s: %s", path, strerror(errno));
        weir__free(al);
        return NULL;
    }
    pthread_mutex_init(&al->lock, NULL);
    pthread_cond_init(&al->cond, NULL);
    int rc = pthread_create(&al->thread, NULL, writer_main, al);
    if (rc != 0) {
        weir_log(WEIR_LOG_ERROR, "cannot start the access log writer: %s", strerror(rc));
        close(al->fd);
        pthread_mutex_destroy(&al->lock);
        pthread_cond_destroy(&al->cond);
        weir__free(al);
        return NULL;
    }
    return al;
}

void weir__access_log_close(struct weir__access_log *al)
{
    if (al == NULL) {
        return;
    }
    pthread_mutex_lock(&al->lock);
    al->stopping = true;
    pthread_cond_signal(&al->cond);
    pthread_mutex_unlock(&al->lock);
    pthread_join(al->thread, NULL);
    close(al->fd);
    pthread_mutex_destroy(&al->lock);
    pthread_cond_destroy(&al->cond);
    weir__free(al);
}

uint64_t weir__access_log_dropped(const struct weir__access_log *al)
{
    return atomic_load(&al->dropped);
}

void weir__access_buf_init(struct weir__access_buf *b, struct weir__access_log *log)
{
    memset(b, 0, sizeof(*b));
    b->log = log;
}

static void hand_over(struct weir__access_buf *b)
{
    struct weir__access_log *al = b->log;
    if (b->len == 0) {
        return;
    }
    pthread_mutex_lock(&al->lock);
    if (al->count < ACCESS_QUEUE_CAP) {
        unsigned slot = (al->head + al->count) % ACCESS_QUEUE_CAP;
        al->queue[slot] = (struct chunk){b->data, b->len};
        al->count++;
        b->data = NULL;
        b->cap = 0;
        pthread_cond_signal(&al->cond);
    } else {
        atomic_fetch_add(&al->dropped, 1);
    }
    pthread_mutex_unlock(&al->lock);
    b->len = 0;
}

void weir__access_buf_append(struct weir__access_buf *b, const char *line, size_t len,
                             uint64_t now_ms)
{
    if (b->log == NULL || len > ACCESS_BUF_SIZE) {
        return;
    }
    if (b->len + len > b->cap) {
        hand_over(b);
    }
    if (b->data == NULL) {
        b->data = weir__malloc(ACCESS_BUF_SIZE);
        if (b->data == NULL) {
            atomic_fetch_add(&b->log->dropped, 1);
            return;
        }
        b->cap = ACCESS_BUF_SIZE;
        b->len = 0;
    }
    if (b->len == 0) {
        b->first_ms = now_ms;
    }
    memcpy(b->data + b->len, line, len);
    b->len += len;
}

void weir__access_buf_flush(struct weir__access_buf *b, uint64_t now_ms, uint64_t max_age_ms)
{
    if (b->log != NULL && b->len > 0 && now_ms - b->first_ms >= max_age_ms) {
        hand_over(b);
    }
}

void weir__access_buf_dispose(struct weir__access_buf *b)
{
    if (b->log != NULL) {
        hand_over(b);
    }
    weir__free(b->data);
    b->data = NULL;
}
