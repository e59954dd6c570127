/*
 * bench/cache_hitratio.c: the hit ratio of weir's built-in cache storage on a Zipf trace,
 * beside a plain LRU of the same size in objects and TinyUFO's published figures.
 *
 * Uses include/weir/cache.h alone: a zone from weir_cache_new, and its storage's ops as a
 * proxy would drive them (lookup; on a miss begin_fill, append, finish; release). Every
 * object has the same key length, metadata and body, so every object costs the zone the same
 * bytes; that cost is measured (weir_cache_stats after storing one object) and each zone gets
 * capacity = N objects x that cost, so weir and the LRU both hold exactly N objects.
 *
 * The trace: TinyUFO's hit-ratio bench (pingora tinyufo/benches/bench_hit_ratio.rs): Zipf(s)
 * over `items` keys, `lookups` lookups, cache sizes of 0.5 %, 1 %, 5 %, 10 %, 25 % of the
 * keys. Here the generator is seeded (the same trace every run and for both caches): a
 * splitmix64 stream, the CDF precomputed, a binary search per sample.
 *
 * The scan table: the same Zipf lookups with `scan` cold keys (each looked up once, never
 * again) spread evenly among them; the hit ratio counts the Zipf lookups only.
 *
 *   bench_cache_hitratio [-n items] [-l lookups] [-s exponent] [-S seed] [-c scan_keys]
 *                        [-b body_bytes] [-m max_object_bytes] [-v]
 *
 * -m: the zone's max_object. Default: the zone's capacity, which makes the zone a single
 * shard (the shard count is the largest power of two <= 16 with capacity / (2 shards) >=
 * 8 x max_object); a small -m splits small zones into shards, each with its own queues,
 * sketch and budget of capacity / shards (a shard evicts while others have room).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "weir/cache.h"

#define KEY_LEN  16
#define META_LEN 32

static const double CAPS[] = {0.005, 0.01, 0.05, 0.10, 0.25};
/* tinyufo/README.md ("Hit Ratio", zipf = 1): TinyUFO, and TinyUFO minus LRU in points. */
static const double TINYUFO[] = {45.26, 52.35, 68.89, 75.98, 85.34};
static const double TINYUFO_MINUS_LRU[] = {14.21, 13.19, 10.14, 8.39, 5.39};
#define NCAPS (sizeof(CAPS) / sizeof(CAPS[0]))

static void die(const char *what)
{
    fprintf(stderr, "bench_cache_hitratio: %s\n", what);
    exit(2);
}

/* ---- deterministic randomness ---- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t mix64(uint64_t x)
{
    uint64_t s = x;
    return splitmix64(&s);
}

/* ---- the trace ---- */

struct trace {
    uint32_t *key; /* key ids: 0..items-1 Zipf (rank order), items.. the scan's cold keys */
    size_t n;
    size_t zipf; /* how many of them are Zipf lookups */
};

static struct trace make_trace(uint32_t items, size_t lookups, double s, uint64_t seed, size_t scan)
{
    double *cdf = malloc(sizeof(double) * items);
    if (cdf == NULL) {
        die("out of memory");
    }
    double sum = 0;
    for (uint32_t k = 0; k < items; k++) {
        sum += 1.0 / pow((double)(k + 1), s);
        cdf[k] = sum;
    }
    for (uint32_t k = 0; k < items; k++) {
        cdf[k] /= sum;
    }
    cdf[items - 1] = 1.0;
    struct trace t = {malloc(sizeof(uint32_t) * (lookups + scan)), lookups + scan, lookups};
    if (t.key == NULL) {
        die("out of memory");
    }
    uint64_t st = seed;
    /* scan keys go in evenly: the j-th after Zipf lookup floor((j + 0.5) * lookups / scan) */
    size_t out = 0, next_scan = 0;
    for (size_t i = 0; i < lookups; i++) {
        double u = (double)(splitmix64(&st) >> 11) * 0x1.0p-53;
        uint32_t lo = 0, hi = items - 1;
        while (lo < hi) { /* the first k with cdf[k] > u */
            uint32_t mid = lo + (hi - lo) / 2u;
            if (cdf[mid] > u) {
                hi = mid;
            } else {
                lo = mid + 1u;
            }
        }
        t.key[out++] = lo;
        while (next_scan < scan &&
               (size_t)(((double)next_scan + 0.5) * (double)lookups / (double)scan) <= i) {
            t.key[out++] = items + (uint32_t)next_scan++;
        }
    }
    while (next_scan < scan) {
        t.key[out++] = items + (uint32_t)next_scan++;
    }
    free(cdf);
    return t;
}

/* ---- weir ---- */

struct wkey {
    char k[KEY_LEN + 1];
    struct weir_iov iov;
    uint64_t hash;
};

static void key_of(uint32_t id, uint64_t seed, struct wkey *out)
{
    snprintf(out->k, sizeof(out->k), "key-%011" PRIu32, id);
    out->iov = (struct weir_iov){out->k, KEY_LEN};
    out->hash = mix64(((uint64_t)id << 1 | 1u) ^ seed);
}

static char meta_scratch[256];
static void *scratch_alloc(void *arg, size_t len)
{
    (void)arg;
    return len <= sizeof(meta_scratch) ? meta_scratch : malloc(len); /* never larger here */
}

static char META[META_LEN];
static char BODY[4096];

/* 1 on a hit; on a miss stores the object (the storage decides whether it stays). */
static int weir_access(struct weir_cache_storage *st, const struct wkey *k, size_t body)
{
    const struct weir_cache_storage_ops *ops = st->ops;
    struct weir_iov meta;
    struct weir_cache_obj *o = ops->lookup(st, k->iov, k->hash, scratch_alloc, NULL, &meta);
    if (o != NULL) {
        ops->release(o);
        return 1;
    }
    if (ops->begin_fill(st, k->iov, k->hash, (struct weir_iov){META, META_LEN}, body, &o) != 0) {
        die("begin_fill failed");
    }
    if (ops->append(o, (struct weir_iov){BODY, body}) != 0 || ops->finish(o) != 0) {
        die("append/finish failed");
    }
    ops->release(o);
    return 0;
}

static struct weir_cache *zone_new(uint64_t capacity, uint64_t max_object)
{
    struct weir_cache_opts o = {.capacity = capacity,
                                .max_object = max_object ? max_object : capacity};
    if (o.max_object > capacity) {
        o.max_object = capacity;
    }
    struct weir_cache *c = NULL;
    if (weir_cache_new(&o, &c) != 0) {
        die("weir_cache_new failed");
    }
    return c;
}

/* The bytes one object costs a zone (its charge: struct, key, metadata, chunk, body). */
static uint64_t object_charge(size_t body, uint64_t seed)
{
    struct weir_cache *c = zone_new(1u << 20, 0);
    struct wkey k;
    key_of(0, seed, &k);
    weir_access(weir_cache_storage(c), &k, body);
    struct weir_cache_stats s;
    weir_cache_stats(c, &s);
    weir_cache_free(c);
    if (s.objects != 1 || s.bytes == 0) {
        die("could not measure an object's charge");
    }
    return s.bytes;
}

struct wres {
    uint64_t hits, zipf_hits;
    double
        occupancy; /* mean objects held / n, sampled every 1024 lookups after the first n misses */
    struct weir_cache_stats st;
    double mops;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static struct wres run_weir(const struct trace *t, uint32_t items, uint32_t n, uint64_t charge,
                            uint64_t max_object, size_t body, uint64_t seed, uint32_t nkeys)
{
    struct weir_cache *c = zone_new((uint64_t)n * charge, max_object);
    struct weir_cache_storage *st = weir_cache_storage(c);
    struct wkey *keys = malloc(sizeof(*keys) * nkeys);
    if (keys == NULL) {
        die("out of memory");
    }
    for (uint32_t i = 0; i < nkeys; i++) {
        key_of(i, seed, &keys[i]);
    }
    struct wres r = {0};
    double t0 = now_s(), held = 0;
    uint64_t samples = 0;
    for (size_t i = 0; i < t->n; i++) {
        uint32_t id = t->key[i];
        int hit = weir_access(st, &keys[id], body);
        r.hits += (uint64_t)hit;
        if (id < items) {
            r.zipf_hits += (uint64_t)hit;
        }
        if ((i & 1023u) == 1023u && i + 1 - r.hits >= n) {
            struct weir_cache_stats s;
            weir_cache_stats(c, &s);
            held += (double)s.objects;
            samples++;
        }
    }
    r.mops = (double)t->n / (now_s() - t0) / 1e6;
    r.occupancy = samples ? held / (double)samples / (double)n : 0;
    weir_cache_stats(c, &r.st);
    if (r.st.hits != r.hits) {
        die("weir_cache_stats disagrees with the hits counted");
    }
    weir_cache_free(c);
    free(keys);
    return r;
}

/*
 * Fills an empty zone of n objects with n distinct keys: all must stay (exactly n fit; not
 * checked with -m, whose shards split the budget while the keys do not split evenly). Then
 * one more: what the zone holds after it (n, when that fill evicted exactly one).
 */
static uint64_t check_fit(uint32_t n, uint64_t charge, uint64_t max_object, size_t body,
                          uint64_t seed)
{
    struct weir_cache *c = zone_new((uint64_t)n * charge, max_object);
    struct wkey k;
    for (uint32_t i = 0; i < n; i++) {
        key_of(i, seed, &k);
        weir_access(weir_cache_storage(c), &k, body);
    }
    struct weir_cache_stats s;
    weir_cache_stats(c, &s);
    if (max_object == 0 && (s.objects != n || s.evictions != 0)) {
        fprintf(stderr,
                "bench_cache_hitratio: a zone of %" PRIu32 " x %" PRIu64 " bytes holds %" PRIu64
                " objects after %" PRIu32 " fills (%" PRIu64 " evictions)\n",
                n, charge, s.objects, n, s.evictions);
        exit(2);
    }
    key_of(n, seed, &k);
    weir_access(weir_cache_storage(c), &k, body);
    weir_cache_stats(c, &s);
    weir_cache_free(c);
    return s.objects;
}

/* ---- a plain LRU, in objects ---- */

struct lru {
    uint32_t *prev, *next; /* index nkeys is the sentinel */
    uint8_t *in;
    uint32_t cap, count, nil;
};

static uint64_t run_lru(const struct trace *t, uint32_t items, uint32_t cap, uint32_t nkeys,
                        uint64_t *zipf_hits)
{
    struct lru l = {malloc(sizeof(uint32_t) * (nkeys + 1u)),
                    malloc(sizeof(uint32_t) * (nkeys + 1u)),
                    calloc(nkeys, 1),
                    cap,
                    0,
                    nkeys};
    if (l.prev == NULL || l.next == NULL || l.in == NULL) {
        die("out of memory");
    }
    l.prev[l.nil] = l.next[l.nil] = l.nil; /* next of the sentinel: the most recent */
    uint64_t hits = 0;
    *zipf_hits = 0;
    for (size_t i = 0; i < t->n; i++) {
        uint32_t k = t->key[i];
        if (l.in[k]) {
            hits++;
            if (k < items) {
                (*zipf_hits)++;
            }
            l.next[l.prev[k]] = l.next[k]; /* unlink */
            l.prev[l.next[k]] = l.prev[k];
        } else {
            if (l.count == l.cap) {
                uint32_t v = l.prev[l.nil]; /* the least recent */
                l.next[l.prev[v]] = l.nil;
                l.prev[l.nil] = l.prev[v];
                l.in[v] = 0;
                l.count--;
            }
            l.in[k] = 1;
            l.count++;
        }
        l.next[k] = l.next[l.nil]; /* to the front */
        l.prev[k] = l.nil;
        l.prev[l.next[l.nil]] = k;
        l.next[l.nil] = k;
    }
    free(l.prev);
    free(l.next);
    free(l.in);
    return hits;
}

/* ---- main ---- */

static unsigned long long num(const char *s, const char *what)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s == '\0' || *end != '\0') {
        fprintf(stderr, "bench_cache_hitratio: %s must be a number (got '%s')\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    uint32_t items = 10000;
    size_t lookups = 5000000, scan = 100000, body = 64;
    double s = 1.0;
    uint64_t seed = 20240601, max_object = 0;
    bool verbose = false;
    int opt;
    while ((opt = getopt(argc, argv, "n:l:s:S:c:b:m:v")) != -1) {
        switch (opt) {
        case 'n':
            items = (uint32_t)num(optarg, "-n");
            break;
        case 'l':
            lookups = (size_t)num(optarg, "-l");
            break;
        case 's':
            s = strtod(optarg, NULL);
            break;
        case 'S':
            seed = num(optarg, "-S");
            break;
        case 'c':
            scan = (size_t)num(optarg, "-c");
            break;
        case 'b':
            body = (size_t)num(optarg, "-b");
            break;
        case 'm':
            max_object = num(optarg, "-m");
            break;
        case 'v':
            verbose = true;
            break;
        default:
            fprintf(stderr,
                    "usage: %s [-n items] [-l lookups] [-s zipf] [-S seed] [-c scan] "
                    "[-b body] [-m max_object] [-v]\n",
                    argv[0]);
            return 2;
        }
    }
    if (items < 200 || lookups < 1 || body < 1 || body > sizeof(BODY) || !(s > 0) ||
        items + scan > UINT32_MAX / 2) {
        die("bad settings (-n >= 200, -b 1..4096, -s > 0)");
    }
    memset(META, 'm', sizeof(META));
    memset(BODY, 'b', sizeof(BODY));

    uint64_t charge = object_charge(body, seed);
    printf("weir cache hit ratio: Zipf(%.2f) over %" PRIu32 " keys, %zu lookups, seed %" PRIu64
           "\n",
           s, items, lookups, seed);
    printf("one object: key %d B, metadata %d B, body %zu B; charged %" PRIu64
           " B by the zone (zone capacity = N x %" PRIu64 "; max_object %s)\n\n",
           KEY_LEN, META_LEN, body, charge, charge,
           max_object ? "as given (-m)" : "= capacity: one shard");

    struct trace t = make_trace(items, lookups, s, seed, 0);
    bool published = items == 10000 && fabs(s - 1.0) < 1e-9;
    printf(
        "| cache size | objects N | weir hit %% | LRU hit %% | TinyUFO (published) | weir - TinyUFO"
        " | LRU (published) | weir held, mean | full + 1 fill |%s\n",
        verbose ? " weir inserted | refused | evicted | Mlookups/s |" : "");
    printf("|---|---|---|---|---|---|---|---|---|%s\n", verbose ? "---|---|---|---|" : "");
    bool short_held = false;
    double nohit_weir[NCAPS], nohit_lru[NCAPS];
    for (size_t i = 0; i < NCAPS; i++) {
        uint32_t n = (uint32_t)lround(CAPS[i] * items);
        uint64_t after = check_fit(n, charge, max_object, body, seed);
        short_held |= after != n;
        struct wres w = run_weir(&t, items, n, charge, max_object, body, seed, items);
        uint64_t lz;
        uint64_t lh = run_lru(&t, items, n, items, &lz);
        nohit_weir[i] = 100.0 * (double)w.hits / (double)t.n;
        nohit_lru[i] = 100.0 * (double)lh / (double)t.n;
        printf("| %.1f%% | %" PRIu32 " | %.2f | %.2f |", CAPS[i] * 100, n, nohit_weir[i],
               nohit_lru[i]);
        if (published) {
            printf(" %.2f | %+.2f | %.2f |", TINYUFO[i], nohit_weir[i] - TINYUFO[i],
                   TINYUFO[i] - TINYUFO_MINUS_LRU[i]);
        } else {
            printf(" - | - | - |");
        }
        printf(" %.1f%% of N | %" PRIu64 " |", 100.0 * w.occupancy, after);
        if (verbose) {
            printf(" %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | %.1f |", w.st.inserts, w.st.rejected,
                   w.st.evictions, w.mops);
        }
        printf("\n");
        fflush(stdout);
    }
    free(t.key);
    printf("\nweir held, mean: objects in the zone over the run (sampled every 1024 lookups once N"
           " misses went by), in %% of N;\nfull + 1 fill: objects in a zone holding N after one"
           " more fill (N: that fill evicted exactly one).\n");
    if (short_held) {
        printf("NOTE: a full zone given one more fill kept fewer than N objects: the fill evicted"
               " more than it needed room for.\n");
    }

    if (scan == 0) {
        return 0;
    }
    t = make_trace(items, lookups, s, seed, scan);
    printf("\nscan resistance: the same %zu Zipf lookups with %zu cold keys (each once) spread"
           " evenly among them;\nhit %% over the Zipf lookups only, and the change from the"
           " table above (no scan)\n\n",
           lookups, scan);
    printf("| cache size | objects N | weir hit %% | (vs no scan) | LRU hit %% | (vs no scan) |"
           " weir held, mean |\n");
    printf("|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < NCAPS; i++) {
        uint32_t n = (uint32_t)lround(CAPS[i] * items);
        uint32_t nkeys = items + (uint32_t)scan;
        struct wres w = run_weir(&t, items, n, charge, max_object, body, seed, nkeys);
        uint64_t lz;
        (void)run_lru(&t, items, n, nkeys, &lz);
        double wz = 100.0 * (double)w.zipf_hits / (double)t.zipf;
        double l = 100.0 * (double)lz / (double)t.zipf;
        printf("| %.1f%% | %" PRIu32 " | %.2f | %+.2f | %.2f | %+.2f | %.1f%% of N |\n",
               CAPS[i] * 100, n, wz, wz - nohit_weir[i], l, l - nohit_lru[i], 100.0 * w.occupancy);
        fflush(stdout);
    }
    free(t.key);
    return 0;
}
