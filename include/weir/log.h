/* The error log. Access logs are written by the library itself (server.access_log). */
#ifndef WEIR_LOG_H
#define WEIR_LOG_H

#include "weir/config.h"

WEIR_BEGIN_DECLS

/**
 * Writes one line to the error log when level is at or above the configured threshold. Any
 * thread. The line is written with one write(2); error logging is for rare events, never per
 * request.
 */
WEIR_EXTERN void weir_log(enum weir_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

WEIR_END_DECLS

#endif
