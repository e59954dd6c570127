#include "load.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

struct weir_config *load_ok(const char *yaml)
{
    struct weir_config *cfg = NULL;
    struct weir_config_errors *errs = NULL;
    int rc = weir_config_load_string("t.yaml", yaml, strlen(yaml), &cfg, &errs);
    if (rc != 0) {
        weir_config_errors_print(errs, stderr);
    }
    assert_int_equal(rc, 0);
    assert_null(errs);
    assert_non_null(cfg);
    return cfg;
}
