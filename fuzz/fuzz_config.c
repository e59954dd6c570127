/*
 * libFuzzer target for the YAML config loader: any bytes go to weir_config_load_string, and
 * whatever comes back (a snapshot or the error list) is walked and freed. ASan's leak check at
 * exit catches anything a failed load forgot to free.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "weir/config.h"
#include "weir/error.h"

/*
 * libfyaml 0.7.12 itself leaks a scanner buffer on some inputs (a flow mapping key made of a
 * long run of '' escapes, e.g. {...X: 2}; reproduced with libfyaml alone). LSan
 * reads this hook at start-up; the suppression matches only stacks through libfyaml, and weir
 * never allocates from a libfyaml frame, so leaks of ours are still caught.
 */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libfyaml.so\n";
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
