/*
 * Unit tests for the public upstream TLS context (weir_tls_client_new): the refusals an API
 * user sees with their reason and file, and contexts that build.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <stdio.h>
#include <unistd.h>

#include "../tmpdir.h"
#include "weir/error.h"
#include "weir/tls.h"

static void test_refusals_say_which_file_and_why(void **state)
{
    (void)state;
    struct weir_tls_client *cli = NULL;
    char err[256];

    assert_int_equal(weir_tls_client_new(NULL, &cli, err, sizeof(err)), WEIR_EINVAL);
    struct weir_tls_client_options half = {.client_cert = "/x.pem"};
    assert_int_equal(weir_tls_client_new(&half, &cli, err, sizeof(err)), WEIR_EINVAL);
    assert_string_equal(err, "client_cert and client_key go together");

    struct weir_tls_client_options missing = {.ca = "/nonexistent/ca.pem"};
    assert_int_equal(weir_tls_client_new(&missing, &cli, err, sizeof(err)), WEIR_EINVAL);
    assert_non_null(strstr(err, "ca: cannot read /nonexistent/ca.pem"));

    /* A file that is not PEM at all, and one with no certificate. */
    char dir[WEIR_TEST_DIR_MAX + 1];
    assert_int_equal(weir_test_mkdtemp(dir, sizeof(dir), "tls"), 0);
    char junk[sizeof(dir) + 16];
    (void)snprintf(junk, sizeof(junk), "%s/junk.pem", dir);
    FILE *f = fopen(junk, "w");
    assert_non_null(f);
    assert_true(fputs("not a certificate\n", f) >= 0);
    assert_int_equal(fclose(f), 0);
    struct weir_tls_client_options bad = {.ca = junk};
    assert_int_equal(weir_tls_client_new(&bad, &cli, err, sizeof(err)), WEIR_EINVAL);
    assert_non_null(strstr(err, "holds no PEM certificate"));
    struct weir_tls_client_options dir_as_ca = {.ca = dir};
    assert_int_equal(weir_tls_client_new(&dir_as_ca, &cli, err, 0), WEIR_EINVAL); /* no err */
    assert_int_equal(unlink(junk), 0);
    assert_int_equal(rmdir(dir), 0);
    assert_null(cli);
}

static void test_system_store_context_builds_and_frees(void **state)
{
    (void)state;
    struct weir_tls_client *cli = NULL;
    struct weir_tls_client_options o = {0};
    char err[256];
    assert_int_equal(weir_tls_client_new(&o, &cli, err, sizeof(err)), 0);
    assert_non_null(cli);
    weir_tls_client_free(cli);
    weir_tls_client_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals_say_which_file_and_why),
        cmocka_unit_test(test_system_store_context_builds_and_frees),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
