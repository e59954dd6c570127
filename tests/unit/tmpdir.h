/*
 * A private temporary directory for a unit test's unix sockets. Under $TMPDIR when that leaves
 * room in sun_path (108 bytes) for the socket names the tests use, else under /tmp.
 */
#ifndef WEIR_TESTS_TMPDIR_H
#define WEIR_TESTS_TMPDIR_H

#include <stdio.h>
#include <stdlib.h>

/** Longest directory path returned: sun_path less room for "/" and a short socket name. */
#define WEIR_TEST_DIR_MAX 72

/** Makes WEIR_TEST_DIR_MAX-bounded "<tmp>/weir-<tag>-XXXXXX" in out (size bytes). 0 or -1. */
static inline int weir_test_mkdtemp(char *out, size_t size, const char *tag)
{
    const char *base = getenv("TMPDIR");
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 || base == NULL || base[0] == '\0') {
            base = "/tmp";
        }
        int n = snprintf(out, size, "%s/weir-%s-XXXXXX", base, tag);
        if (n > 0 && (size_t)n < size && n <= WEIR_TEST_DIR_MAX) {
            return mkdtemp(out) != NULL ? 0 : -1;
        }
    }
    return -1;
}

#endif
