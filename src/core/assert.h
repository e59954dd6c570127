/* Two tiers of assertion: always on, and debug builds only. Never for peer input. */
#ifndef WEIR_CORE_ASSERT_H
#define WEIR_CORE_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define WEIR_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            (void)fprintf(stderr, "weir: assertion failed: %s (%s:%d)\n", #cond, __FILE__,         \
                          __LINE__);                                                               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#ifndef NDEBUG
#define WEIR_DEBUG_ASSERT(cond) WEIR_ASSERT(cond)
#else
#define WEIR_DEBUG_ASSERT(cond) ((void)0)
#endif

#endif
