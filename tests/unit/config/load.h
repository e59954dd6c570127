/* What the config unit tests share (load.c is built into each of them). */
#ifndef WEIR_TESTS_CONFIG_LOAD_H
#define WEIR_TESTS_CONFIG_LOAD_H

#include "weir/config.h"

/** yaml loaded as "t.yaml", which must succeed with no error (the errors are printed if not). */
struct weir_config *load_ok(const char *yaml);

#endif
