/*
 * The configuration loader's entry points: a file or a string is read, parsed by
 * config_yaml.c into a node tree, and checked against the root key table below, whose rows are
 * the sections (each in its own config_<section>.c, walked by config_keys.c) into an immutable
 * struct weir_config. The whole file is checked in one pass: every problem becomes one error
 * with the line:col of the node at fault and the dotted key path leading to it, and checking
 * goes on. A snapshot owns one arena holding itself and every string and array it points to,
 * so weir_config_free is a single free.
 */
#include "weir/config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_int.h"
#include "core/alloc.h"
#include "weir/error.h"

struct config_impl {
    struct weir_config pub; /* first: weir_config_free casts back */
    struct weir_arena *arena;
};

/*
 * The top level. A new section is one file with its table and one row here. Upstreams come
 * before routes, wherever they are in the file: routes name them.
 */
static const struct weir__cfg_key root_keys[] = {
    WEIR__CFG_SECTION("server", WEIR__CFG_AT(struct weir_config, server), &weir__cfg_server),
    {"listeners", WEIR__CFG_T_CUSTOM, WEIR__CFG_SEQ, .parse = weir__cfg_listeners,
     .sub = &weir__cfg_listener},
    {"routes", WEIR__CFG_T_CUSTOM, WEIR__CFG_SEQ | WEIR__CFG_LATE, .parse = weir__cfg_routes,
     .sub = &weir__cfg_route},
    {"upstreams", WEIR__CFG_T_CUSTOM, WEIR__CFG_NAMED, .parse = weir__cfg_upstreams,
     .sub = &weir__cfg_upstream},
    WEIR__CFG_SECTION("cache", WEIR__CFG_SELF(struct weir_config), &weir__cfg_cache),
};

const struct weir__cfg_section weir__cfg_root =
    WEIR__CFG_TABLE("a mapping with server, listeners, routes, upstreams, cache", root_keys, NULL);

static uint32_t online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (uint32_t)n;
}

static void set_defaults(struct weir_config *cfg)
{
    weir__cfg_defaults(&weir__cfg_root, cfg);
    cfg->server.threads = online_cpus(); /* what the table cannot know */
}

/* A snapshot holding only defaults, labelled source. NULL on out of memory. */
static struct config_impl *snapshot_new(const char *source)
{
    struct weir_arena *a = NULL;
    if (weir_arena_new(8192, SIZE_MAX, &a) != 0) {
        return NULL;
    }
    struct config_impl *impl = weir_arena_calloc(a, sizeof(*impl));
    char *src = weir_arena_strndup(a, source, strlen(source));
    if (impl == NULL || src == NULL) {
        weir_arena_free(a);
        return NULL;
    }
    impl->arena = a;
    impl->pub.source = src;
    set_defaults(&impl->pub);
    return impl;
}

int weir_config_new_default(struct weir_config **out)
{
    struct config_impl *impl = snapshot_new("(defaults)");
    *out = impl != NULL ? &impl->pub : NULL;
    return impl != NULL ? 0 : WEIR_ENOMEM;
}

void weir_config_free(struct weir_config *cfg)
{
    if (cfg != NULL) {
        weir_arena_free(((struct config_impl *)cfg)->arena);
    }
}

/* Parses and checks text into a new snapshot. 0, WEIR_ECONFIG (errors in errs), WEIR_ENOMEM. */
static int load(const char *name, const char *text, size_t len, struct weir_config_errors *errs,
                struct weir_config **out)
{
    struct config_impl *impl = NULL;
    struct weir_arena *tmp = NULL;
    struct ynode *root = NULL;
    int rc = WEIR_ENOMEM;

    if (len > WEIR__CFG_MAX_TEXT) {
        rc = weir__cfgerr_add(errs, 0, 0, "", "the file is larger than %u MiB",
                              WEIR__CFG_MAX_TEXT >> 20);
        rc = rc != 0 ? rc : WEIR_ECONFIG;
        goto out;
    }
    impl = snapshot_new(name);
    if (impl == NULL || weir_arena_new(16384, SIZE_MAX, &tmp) != 0) {
        goto out;
    }
    rc = weir__yaml_parse(text, len, tmp, errs, &root);
    if (rc != 0) {
        goto out;
    }
    struct weir__cfg_ctx c = {.errs = errs, .a = impl->arena, .tmp = tmp, .cfg = &impl->pub};
    if (root != NULL) {
        weir__cfg_walk(&c, root, &weir__cfg_root, c.cfg);
    }
    rc = c.oom ? WEIR_ENOMEM : weir_config_errors_count(errs) > 0 ? WEIR_ECONFIG : 0;
out:
    weir_arena_free(tmp);
    if (rc == 0) {
        *out = &impl->pub;
    } else if (impl != NULL) {
        weir_arena_free(impl->arena);
    }
    return rc;
}

/* Hands errs to the caller on WEIR_ECONFIG when asked for, else frees it. */
static int finish(int rc, struct weir_config_errors *errs, struct weir_config_errors **errsp)
{
    if (rc == WEIR_ECONFIG && errsp != NULL) {
        weir__cfgerr_sort(errs);
        *errsp = errs;
    } else {
        weir_config_errors_free(errs);
    }
    return rc;
}

int weir_config_load_string(const char *name, const char *text, size_t len,
                            struct weir_config **out, struct weir_config_errors **errs)
{
    if (errs != NULL) {
        *errs = NULL;
    }
    if (out == NULL || (text == NULL && len != 0)) {
        return WEIR_EINVAL;
    }
    *out = NULL;
    struct weir_config_errors *e = weir__cfgerr_new(name != NULL ? name : "(string)");
    if (e == NULL) {
        return WEIR_ENOMEM;
    }
    return finish(load(name != NULL ? name : "(string)", text != NULL ? text : "", len, e, out), e,
                  errs);
}

/* Reads the whole file into a heap buffer. 0 or -errno; EFBIG when over the size limit. */
static int read_file(const char *path, char **textp, size_t *lenp)
{
    char *buf = NULL;
    size_t len = 0;
    struct stat st;
    int rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = -EISDIR;
        goto out;
    }
    buf = weir__malloc(WEIR__CFG_MAX_TEXT + 1);
    if (buf == NULL) {
        rc = WEIR_ENOMEM;
        goto out;
    }
    /* Read to EOF rather than trust st_size: a pipe or /proc file reports 0. */
    while (len <= WEIR__CFG_MAX_TEXT) {
        ssize_t n = read(fd, buf + len, WEIR__CFG_MAX_TEXT + 1 - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            rc = -errno;
            goto out;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
    }
    if (len > WEIR__CFG_MAX_TEXT) {
        rc = -EFBIG;
    }
out:
    close(fd);
    if (rc != 0) {
        weir__free(buf);
        return rc;
    }
    *textp = buf;
    *lenp = len;
    return 0;
}

int weir_config_load_file(const char *path, struct weir_config **out,
                          struct weir_config_errors **errs)
{
    char *text = NULL;
    size_t len = 0;
    if (errs != NULL) {
        *errs = NULL;
    }
    if (path == NULL || out == NULL) {
        return WEIR_EINVAL;
    }
    *out = NULL;
    struct weir_config_errors *e = weir__cfgerr_new(path);
    if (e == NULL) {
        return WEIR_ENOMEM;
    }
    int rc = read_file(path, &text, &len);
    if (rc == -EFBIG) {
        rc = weir__cfgerr_add(e, 0, 0, "", "the file is larger than %u MiB",
                              WEIR__CFG_MAX_TEXT >> 20);
        rc = rc != 0 ? rc : WEIR_ECONFIG;
    } else if (rc < 0 && rc != WEIR_ENOMEM) {
        rc = weir__cfgerr_add(e, 0, 0, "", "cannot read the file: %s", weir_strerror(rc));
        rc = rc != 0 ? rc : WEIR_ECONFIG;
    } else if (rc == 0) {
        rc = load(path, text, len, e, out);
    }
    weir__free(text);
    return finish(rc, e, errs);
}
