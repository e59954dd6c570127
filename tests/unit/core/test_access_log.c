/*
 * Unit tests for the access-log writer (src/core/log.c): two threads append through their
 * own buffers; after close the file holds every line exactly once, none torn or interleaved.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/log.h"

#define NTHREADS 2
#define NLINES   20000

static unsigned char seen[NTHREADS][NLINES];

struct writer {
    struct weir__access_log *al;
    int id;
};

/* "t<id> <seq> <filler>\n": the filler repeats a letter derived from seq, so a torn or
 * interleaved line does not parse back. */
static size_t make_line(char *out, size_t cap, int id, int seq)
{
    char fill[64];
    size_t flen = (size_t)(seq % 40) + 1;
    memset(fill, 'a' + (seq % 26), flen);
    fill[flen] = '\0';
    /* Called on writer threads too, where cmocka asserts must not be used; cap is ample. */
    int n = snprintf(out, cap, "t%d %06d %s\n", id, seq, fill);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct weir__access_buf b;
    char line[128];
    weir__access_buf_init(&b, w->al);
    for (int i = 0; i < NLINES; i++) {
        size_t n = make_line(line, sizeof(line), w->id, i);
        weir__access_buf_append(&b, line, n, (uint64_t)i);
        if (i % 1000 == 999) {
            weir__access_buf_flush(&b, (uint64_t)i, 0); /* an aged buffer handed over */
        }
        if (i % 4000 == 0) {
            usleep(1000); /* let the writer keep up: the queue drops when full */
        }
    }
    weir__access_buf_dispose(&b);
    return NULL;
}

static void test_two_threads_every_line_once(void **state)
{
    (void)state;
    char path[] = "/tmp/weir_test_access_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);

    struct weir__access_log *al = weir__access_log_open(path);
    assert_non_null(al);
    pthread_t th[NTHREADS];
    struct writer w[NTHREADS];
    for (int t = 0; t < NTHREADS; t++) {
        w[t].al = al;
        w[t].id = t;
        assert_int_equal(pthread_create(&th[t], NULL, writer_main, &w[t]), 0);
    }
    for (int t = 0; t < NTHREADS; t++) {
        pthread_join(th[t], NULL);
    }
    uint64_t dropped = weir__access_log_dropped(al);
    weir__access_log_close(al);
    assert_int_equal(dropped, 0);

    memset(seen, 0, sizeof(seen));
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char got[256];
    char want[128];
    long lines = 0;
    while (fgets(got, sizeof(got), f) != NULL) {
        lines++;
        size_t len = strlen(got);
        assert_true(len > 0 && got[len - 1] == '\n');
        assert_true(got[0] == 't');
        int id = got[1] - '0';
        assert_true(id >= 0 && id < NTHREADS);
        char *end = NULL;
        long seq = strtol(got + 3, &end, 10);
        assert_true(end == got + 9);
        assert_true(seq >= 0 && seq < NLINES);
        size_t wl = make_line(want, sizeof(want), id, (int)seq);
        assert_int_equal(len, wl);
        assert_memory_equal(got, want, wl);
        assert_int_equal(seen[id][seq], 0);
        seen[id][seq] = 1;
    }
    fclose(f);
    unlink(path);
    assert_int_equal(lines, (long)NTHREADS * NLINES);
    for (int t = 0; t < NTHREADS; t++) {
        for (int i = 0; i < NLINES; i++) {
            assert_int_equal(seen[t][i], 1);
        }
    }
}

/* Lines from one buffer keep their order; an aged flush hands over only what is old enough. */
static void test_single_buffer_order_and_age(void **state)
{
    (void)state;
    char path[] = "/tmp/weir_test_access_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    struct weir__access_log *al = weir__access_log_open(path);
    assert_non_null(al);
    struct weir__access_buf b;
    weir__access_buf_init(&b, al);
    weir__access_buf_append(&b, "one\n", 4, 100);
    weir__access_buf_append(&b, "two\n", 4, 150);
    weir__access_buf_flush(&b, 150, 1000); /* 50 ms old: kept */
    assert_int_equal(b.len, 8);
    weir__access_buf_flush(&b, 1100, 1000); /* 1000 ms old: handed over */
    assert_int_equal(b.len, 0);
    weir__access_buf_append(&b, "three\n", 6, 2000);
    weir__access_buf_dispose(&b);
    weir__access_log_close(al);

    /* A buffer with no log ignores lines. */
    struct weir__access_buf none;
    weir__access_buf_init(&none, NULL);
    weir__access_buf_append(&none, "x\n", 2, 0);
    weir__access_buf_flush(&none, 0, 0);
    weir__access_buf_dispose(&none);
    weir__access_log_close(NULL);

    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char got[64] = {0};
    size_t n = fread(got, 1, sizeof(got) - 1, f);
    fclose(f);
    unlink(path);
    assert_int_equal(n, 14);
    assert_string_equal(got, "one\ntwo\nthree\n");
}

static void test_open_failure(void **state)
{
    (void)state;
    assert_null(weir__access_log_open("/nonexistent-dir/weir/access.log"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_threads_every_line_once),
        cmocka_unit_test(test_single_buffer_order_and_age),
        cmocka_unit_test(test_open_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
