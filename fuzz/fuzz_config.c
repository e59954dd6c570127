/*
 * libFuzzer target for the YAML config loader: any bytes go to weir_config_load_string, and
 * whatever comes back (a snapshot or the error list) is walked and freed. ASan's leak check at
 * exit catches anything a failed load forgot to free.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_pki.h"
#include "weir/config.h"
#include "weir/error.h"

/*
 * Files the corpus's TLS configs name (listeners[].tls, client_auth, ticket_key_files,
 * upstreams.*.tls, routes[].upstream_tls), made once before the first input so the TLS keys
 * are loaded for real, not just refused for a missing file. cert.pem is self-signed, so it is
 * also the CA the configs verify against. Each file is written under a name of this process
 * and renamed into place, so fuzzers starting at once never read half a file.
 */
#define TLS_DIR "/tmp/weir-fuzz-config"

/* TLS_DIR/name.PID, the name a file is written under before it is renamed to TLS_DIR/name. */
static void temp_name(char *out, size_t size, const char *name)
{
    int n = snprintf(out, size, TLS_DIR "/%s.%ld", name, (long)getpid());
    weir_fuzz_trap_if(n < 0 || (size_t)n >= size);
}

static void publish(const char *tmp, const char *name)
{
    char path[128];
    int n = snprintf(path, sizeof(path), TLS_DIR "/%s", name);
    weir_fuzz_trap_if(n < 0 || (size_t)n >= sizeof(path) || rename(tmp, path) != 0);
}

static void make_tls_files(void)
{
    static bool made;
    if (made) {
        return;
    }
    made = true;
    (void)mkdir(TLS_DIR, 0700);
    char cert[128], key[128], ticket[128];
    temp_name(cert, sizeof(cert), "cert.pem");
    temp_name(key, sizeof(key), "key.pem");
    temp_name(ticket, sizeof(ticket), "ticket.key");
    weir_fuzz_write_cert("DNS:a.test,DNS:*.wild.test,IP:127.0.0.1", fopen(cert, "w"),
                         fopen(key, "w"));
    unsigned char bytes[80]; /* nginx's ticket key format: 80 bytes */
    for (size_t i = 0; i < sizeof(bytes); i++) {
        bytes[i] = (unsigned char)(i * 7 + 1);
    }
    FILE *f = fopen(ticket, "wb");
    weir_fuzz_trap_if(f == NULL || fwrite(bytes, 1, sizeof(bytes), f) != sizeof(bytes) ||
                      fclose(f) != 0);
    publish(key, "key.pem");
    publish(cert, "cert.pem");
    publish(ticket, "ticket.key");
}

/*
 * libfyaml 0.7.12 itself leaks the buffer fy_token_get_text formats a long scalar into (a flow
 * mapping key made of a run of '' escapes, {'''...X': 2}; reproduced with libfyaml alone, and
 * kept as fuzz/regressions/fuzz_config/libfyaml_atom_leak.yaml). The suppression names the
 * libfyaml function that leaks, fy_atom_format_text, not the whole library: anything else
 * libfyaml allocated for us and we failed to free (a parser without fy_parser_destroy, a diag
 * without fy_diag_destroy) is still reported. libfyaml has no frame pointers, so the default
 * fast unwinder stops at its first frame: allocations are unwound the slow way, ten frames
 * deep (enough to reach fy_atom_format_text; about 10 % of this target's speed). The sanitizer
 * runtime reads both hooks at start-up; gcc's runtime is a shared library, so they must be
 * visible outside this executable.
 */
__attribute__((visibility("default"))) const char *__lsan_default_suppressions(void);
__attribute__((visibility("default"))) const char *__lsan_default_suppressions(void)
{
    return "leak:fy_atom_format_text\n";
}

__attribute__((visibility("default"))) const char *__asan_default_options(void);
__attribute__((visibility("default"))) const char *__asan_default_options(void)
{
    return "fast_unwind_on_malloc=0:malloc_context_size=10";
}

static void walk(const struct weir_config *cfg)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct weir_cfg_route *r = &cfg->routes[i];
        n += r->upstream != NULL ? r->upstream->nbackends : 0;
        n += r->request_headers.n + r->response_headers.n + r->nhosts;
    }
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        n += cfg->listeners[i].address[0] != '\0';
    }
    if (n == SIZE_MAX) {
        __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    make_tls_files();
    struct weir_config *cfg = NULL;
    struct weir_config_errors *errs = NULL;
    int rc = weir_config_load_string("fuzz.yaml", (const char *)data, size, &cfg, &errs);
    if (rc == 0) {
        walk(cfg);
    } else if (rc == WEIR_ECONFIG) {
        for (size_t i = 0; i < weir_config_errors_count(errs); i++) {
            const struct weir_config_error *e = weir_config_errors_at(errs, i);
            if (e->message == NULL || e->key == NULL) {
                __builtin_trap();
            }
        }
        FILE *sink = fopen("/dev/null", "w");
        if (sink != NULL) {
            weir_config_errors_print(errs, sink);
            fclose(sink);
        }
    }
    weir_config_errors_free(errs);
    weir_config_free(cfg);
    return 0;
}
