/* Private logging: error log setup and the access-log writer. */
#ifndef WEIR_CORE_LOG_H
#define WEIR_CORE_LOG_H

#include "weir/log.h"
#include "weir/buf.h"

/** Opens the error log (path NULL: stderr) at the given threshold. 0 or -errno. */
int weir__log_open(const char *path, enum weir_log_level level);
void weir__log_close(void);
bool weir__log_enabled(enum weir_log_level level);

/**
 * The access log: each worker appends lines to its own buffer; full or aged buffers go to a
 * writer thread through a bounded queue, so a worker never waits on the disk. When the queue
 * is full lines are dropped and counted.
 */
struct weir__access_log;

/** Opens path ("stdout" for standard output) and starts the writer thread. NULL on error. */
struct weir__access_log *weir__access_log_open(const char *path);
/** Flushes everything queued, stops the writer and closes the file. Accepts NULL. */
void weir__access_log_close(struct weir__access_log *al);

/** A worker's buffer into the access log. */
struct weir__access_buf {
    struct weir__access_log *log;
    char *data;
    size_t len;
    size_t cap;
    uint64_t first_ms; /* when the oldest buffered line was added */
};

void weir__access_buf_init(struct weir__access_buf *b, struct weir__access_log *log);
/** Appends a line (must end with '\n'). May hand the buffer to the writer. */
void weir__access_buf_append(struct weir__access_buf *b, const char *line, size_t len,
                             uint64_t now_ms);
/** Hands the buffer over if it holds lines older than max_age_ms (0: any). */
void weir__access_buf_flush(struct weir__access_buf *b, uint64_t now_ms, uint64_t max_age_ms);
void weir__access_buf_dispose(struct weir__access_buf *b);

/** Lines dropped because the writer fell behind (metrics, tests). */
uint64_t weir__access_log_dropped(const struct weir__access_log *al);

#endif
