/*
 * A main for the fuzz targets outside libFuzzer: runs LLVMFuzzerTestOneInput once on every file
 * named on the command line, or in every directory named (sorted, not recursive). The normal
 * build links each fuzz/fuzz_*.c with it into replay_fuzz_* so `make test` replays the seed
 * corpora and fuzz/regressions/ with gcc, in the release and the ASan+UBSan build. A target
 * reports a finding by crashing, so a clean exit means every input passed.
 *
 * usage: replay_fuzz_<name> PATH...
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FILE (1u << 20)

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (f == NULL || fstat(fileno(f), &st) != 0 || st.st_size < 0 || st.st_size > MAX_FILE) {
        (void)fprintf(stderr, "replay: %s: cannot read\n", path);
        if (f != NULL) {
            (void)fclose(f);
        }
        return 1;
    }
    size_t size = (size_t)st.st_size;
    /* Sized to the input, so ASan sees a read past the bytes handed in. */
    uint8_t *buf = malloc(size ? size : 1);
    int bad = buf == NULL || fread(buf, 1, size, f) != size;
    (void)fclose(f);
    if (!bad) {
        (void)LLVMFuzzerTestOneInput(buf, size);
    } else {
        (void)fprintf(stderr, "replay: %s: cannot read\n", path);
    }
    free(buf);
    return bad;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir, unsigned *count)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        (void)fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **more = realloc(names, cap * sizeof(*names));
            if (more == NULL) {
                rc = 1;
                break;
            }
            names = more;
        }
        size_t len = strlen(dir) + strlen(de->d_name) + 2;
        names[n] = malloc(len);
        if (names[n] == NULL) {
            rc = 1;
            break;
        }
        (void)snprintf(names[n], len, "%s/%s", dir, de->d_name);
        n++;
    }
    (void)closedir(d);
    qsort(names, n, sizeof(*names), by_name);
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (rc == 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
            rc = run_file(names[i]);
            (*count)++;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    unsigned count = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            continue; /* a target may have no regressions yet */
        }
        int rc = S_ISDIR(st.st_mode) ? run_dir(argv[i], &count) : (count++, run_file(argv[i]));
        if (rc != 0) {
            return 1;
        }
    }
    printf("replay: %u inputs passed\n", count);
    return 0;
}
