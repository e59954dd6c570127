/* Small formatters for log lines and diagnostics, shared by every layer. */
#ifndef WEIR_CORE_FMT_H
#define WEIR_CORE_FMT_H

#include <stdint.h>
#include <stdio.h>

/** A duration as an operator writes it: whole seconds as "60s", else milliseconds ("250ms"). */
static inline const char *weir__fmt_ms(uint64_t ms, char *buf, size_t size)
{
    if (ms != 0 && ms % 1000 == 0) {
        (void)snprintf(buf, size, "%llus", (unsigned long long)(ms / 1000));
    } else {
        (void)snprintf(buf, size, "%llums", (unsigned long long)ms);
    }
    return buf;
}

#endif
