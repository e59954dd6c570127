/* Version and build facts. */
#include "weir/version.h"

#include "build_info.h"

const char *weir_version(void)
{
    return WEIR_VERSION_STRING;
}

const char *weir_build_options(void)
{
    return WEIR_BUILD_OPTIONS ", " WEIR_BUILD_COMPILER;
}
