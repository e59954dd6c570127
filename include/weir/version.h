/* Library version. */
#ifndef WEIR_VERSION_H
#define WEIR_VERSION_H

#include "weir/common.h"

WEIR_BEGIN_DECLS

#define WEIR_VERSION_MAJOR  0
#define WEIR_VERSION_MINOR  1
#define WEIR_VERSION_PATCH  0
#define WEIR_VERSION_STRING "0.1.0"

/** The version string of the linked library ("0.1.0"). */
WEIR_EXTERN const char *weir_version(void);

/** The build options of the linked library ("Release", "Debug WEIR_ASAN ..."). */
WEIR_EXTERN const char *weir_build_options(void);

WEIR_END_DECLS

#endif
