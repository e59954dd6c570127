/*
 * The Server and its Services. The main thread binds every listener, starts one thread per
 * proxy worker and per background service, then waits for signals: SIGTERM/SIGQUIT drain
 * gracefully within the grace period, SIGINT stops at once. Workers run their own event loop
 * and pass an RCU quiescent state once per loop turn.
 */
#include "weir/server.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/rcu.h"
#include "core/snapshot.h"
#include "net/sock.h"
#include "proxy/proxy_int.h"
#include "tls/tls.h"
#include "weir/log.h"

#define MAX_LISTENERS  64
#define LISTEN_BACKLOG 4096

enum service_kind {
    SVC_PROXY = 1,
    SVC_BACKGROUND,
};

struct listener {
    char *address;
    struct sockaddr_storage ss;
    socklen_t len;
    int shared_fd;                     /* work_stealing: one socket for every worker */
    struct weir__listener_count count; /* listeners[].max_connections, across workers */
    struct weir__tls_server *tls;      /* listeners[].tls, owned by the first snapshot */
    uint16_t redirect_https;           /* listeners[].redirect_https's port; 0: off */
    bool h2c;                          /* listeners[].h2c */
};

struct worker;

struct weir_service {
    struct weir_service *next;
    struct weir_server *srv;
    char *name;
    enum service_kind kind;
    struct weir_proxy_hooks hooks;
    struct weir_background_ops bg;
    void *data;
    struct listener listeners[MAX_LISTENERS];
    unsigned nlisteners;
    unsigned threads;
    struct worker *workers;
    unsigned nworkers;
    struct weir_inflight *ip_conns;        /* server.limits.max_connections_per_ip (NULL: off) */
    struct weir__pool_shared *shared_pool; /* the upstream pool's shared tier (NULL: off) */
    struct weir_rate *ip_rate; /* server.limits.requests_per_second_per_ip (NULL: off) */
};

struct worker_listener {
    struct weir_io io;
    struct worker *wk;
    struct weir__listener_opts opts;
    bool own_fd;
    bool watching;
};

struct worker {
    struct weir_service *svc;
    unsigned index;
    pthread_t thread;
    bool started;
    struct weir_loop *loop;
    struct weir__proxy_worker *pw;
    struct worker_listener ls[MAX_LISTENERS];
    unsigned nls;
    bool draining;
    bool paused; /* at max_connections: listeners unwatched */
    atomic_bool exited;
    int start_rc;
    bool loop_live; /* the loop exists and takes posts; under start_lock */
    pthread_mutex_t start_lock;
    pthread_cond_t start_cond;
    bool start_done;
};

struct weir_server {
    struct weir__snapshot_slot slot;
    struct weir_config *cfg; /* the first snapshot's config, for settings fixed at start */
    struct weir_service *services;
    struct weir__access_log *access;
    atomic_bool running;
};

int weir_server_new(struct weir_config *cfg, struct weir_server **out)
{
    *out = NULL;
    struct weir_server *srv = weir__calloc(1, sizeof(*srv));
    if (srv == NULL) {
        weir_config_free(cfg);
        return WEIR_ENOMEM;
    }
    if (cfg == NULL) {
        if (weir_config_new_default(&cfg) != 0) {
            weir__free(srv);
            return WEIR_ENOMEM;
        }
    }
    struct weir__snapshot *snap = weir__snapshot_new(cfg, (void (*)(void *))weir_config_free);
    if (snap == NULL) {
        weir_config_free(cfg);
        weir__free(srv);
        return WEIR_ENOMEM;
    }
    srv->cfg = cfg;
    (void)weir__rcu_xchg((void **)&srv->slot.current, snap);
    *out = srv;
    return 0;
}

const struct weir_config *weir_server_config(const struct weir_server *srv)
{
    return srv->cfg;
}

static struct weir_service *service_new(struct weir_server *srv, const char *name,
                                        enum service_kind kind, void *data)
{
    struct weir_service *svc = weir__calloc(1, sizeof(*svc));
    if (svc == NULL) {
        return NULL;
    }
    svc->name = weir__strdup(name ? name : "service");
    if (svc->name == NULL) {
        weir__free(svc);
        return NULL;
    }
    svc->srv = srv;
    svc->kind = kind;
    svc->data = data;
    svc->threads = srv->cfg->server.threads;
    struct weir_service **tail = &srv->services;
    while (*tail) {
        tail = &(*tail)->next;
    }
    *tail = svc;
    return svc;
}

int weir_server_add_proxy(struct weir_server *srv, const char *name,
                          const struct weir_proxy_hooks *hooks, void *data,
                          struct weir_service **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (hooks == NULL || hooks->upstream_peer == NULL) {
        return WEIR_EINVAL;
    }
    struct weir_service *svc = service_new(srv, name, SVC_PROXY, data);
    if (svc == NULL) {
        return WEIR_ENOMEM;
    }
    svc->hooks = *hooks;
    if (out != NULL) {
        *out = svc;
    }
    return 0;
}

int weir_server_add_background(struct weir_server *srv, const char *name,
                               const struct weir_background_ops *ops, void *data,
                               struct weir_service **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (ops == NULL || ops->start == NULL) {
        return WEIR_EINVAL;
    }
    struct weir_service *svc = service_new(srv, name, SVC_BACKGROUND, data);
    if (svc == NULL) {
        return WEIR_ENOMEM;
    }
    svc->bg = *ops;
    svc->threads = 1;
    if (out != NULL) {
        *out = svc;
    }
    return 0;
}

int weir_service_add_listener(struct weir_service *svc, const char *address)
{
    if (svc->kind != SVC_PROXY || svc->nlisteners >= MAX_LISTENERS) {
        return WEIR_EINVAL;
    }
    struct listener *l = &svc->listeners[svc->nlisteners];
    if (weir__addr_parse(address, strlen(address), &l->ss, &l->len) != 0) {
        return WEIR_EINVAL;
    }
    l->address = weir__strdup(address);
    if (l->address == NULL) {
        return WEIR_ENOMEM;
    }
    l->shared_fd = -1;
    svc->nlisteners++;
    return 0;
}

int weir_service_add_listener_cfg(struct weir_service *svc, const struct weir_cfg_listener *l)
{
    int rc = weir_service_add_listener(svc, l->address);
    if (rc == 0) {
        svc->listeners[svc->nlisteners - 1].count.max = l->max_connections;
        svc->listeners[svc->nlisteners - 1].tls = l->tls.server;
        svc->listeners[svc->nlisteners - 1].redirect_https = l->redirect_https;
        svc->listeners[svc->nlisteners - 1].h2c = l->h2c;
    }
    return rc;
}

int weir_service_set_threads(struct weir_service *svc, unsigned threads)
{
    if (threads < 1 || threads > 256 || svc->kind != SVC_PROXY) {
        return WEIR_EINVAL;
    }
    svc->threads = threads;
    return 0;
}

void weir_server_shutdown(struct weir_server *srv)
{
    (void)srv;
    /* The main thread waits for signals; this reaches it from any thread or handler. */
    kill(getpid(), SIGTERM);
}

static void free_service(struct weir_service *svc)
{
    for (unsigned i = 0; i < svc->nlisteners; i++) {
        weir__free(svc->listeners[i].address);
        if (svc->listeners[i].shared_fd >= 0) {
            close(svc->listeners[i].shared_fd);
        }
    }
    weir__free(svc->workers);
    weir_inflight_free(svc->ip_conns);
    weir_rate_free(svc->ip_rate);
    if (svc->shared_pool != NULL) {
        struct weir__pool_stats st;
        weir__pool_shared_stats(svc->shared_pool, &st);
        weir_log(WEIR_LOG_INFO,
                 "upstream pool (shared tier of %s): evicted %llu closed by the peer, %llu idle "
                 "too long, %llu over the bounds",
                 svc->name, (unsigned long long)st.evict_closed,
                 (unsigned long long)st.evict_timeout, (unsigned long long)st.evict_full);
    }
    weir__pool_shared_free(svc->shared_pool);
    weir__free(svc->name);
    weir__free(svc);
}

void weir_server_free(struct weir_server *srv)
{
    if (srv == NULL) {
        return;
    }
    while (srv->services) {
        struct weir_service *next = srv->services->next;
        free_service(srv->services);
        srv->services = next;
    }
    struct weir__snapshot *snap = srv->slot.current;
    srv->slot.current = NULL;
    weir__snapshot_release(snap);
    weir__tls_sessions_clear(); /* the upstream sessions kept for resumption */
    weir__free(srv);
}

/* ---- worker threads ---- */

static void listener_event(struct weir_loop *loop, struct weir_io *io, uint32_t events);

static void set_listening(struct worker *wk, bool on)
{
    for (unsigned i = 0; i < wk->nls; i++) {
        struct worker_listener *wl = &wk->ls[i];
        if (on && !wl->watching && wl->io.fd >= 0) {
            uint32_t ev = WEIR_IO_READ;
            if (wk->svc->srv->cfg->server.work_stealing) {
                ev |= EPOLLEXCLUSIVE;
            }
            if (weir_loop_io_add(wk->loop, &wl->io, ev) == 0) {
                wl->watching = true;
                wl->io.cb(wk->loop, &wl->io, WEIR_IO_READ); /* drain what queued meanwhile */
            }
        } else if (!on && wl->watching) {
            weir_loop_io_del(wk->loop, &wl->io);
            wl->watching = false;
        }
    }
}

static void conn_closed(struct weir__proxy_worker *pw, void *arg)
{
    struct worker *wk = arg;
    if (wk->paused && !wk->draining &&
        pw->nconns < wk->svc->srv->cfg->server.limits.max_connections) {
        wk->paused = false;
        set_listening(wk, true);
    }
}

static void listener_event(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
    struct worker_listener *wl = io->data;
    struct worker *wk = wl->wk;
    uint32_t max = wk->svc->srv->cfg->server.limits.max_connections;
    /* Edge-triggered: accept until the queue is empty. */
    for (;;) {
        if (wk->draining || wk->paused) {
            return;
        }
        if (wk->pw->nconns >= max) {
            wk->paused = true;
            set_listening(wk, false);
            weir_log(WEIR_LOG_WARN, "worker %u: max_connections (%u) reached; pausing accept",
                     wk->index, max);
            return;
        }
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(io->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                weir_log(WEIR_LOG_ERROR, "accept: %s", strerror(errno));
            }
            return;
        }
        int rc = weir__proxy_accept(wk->pw, fd, (struct sockaddr *)&ss, len, &wl->opts);
        if (rc != 0 && rc != WEIR_ELIMIT) { /* refusals by a cap are logged sparingly */
            weir_log(WEIR_LOG_ERROR, "accept: %s", weir_strerror(rc));
        }
    }
}

static void worker_turn(struct weir_loop *loop, void *arg)
{
    struct worker *wk = arg;
    weir__rcu_quiescent();
    if (wk->pw != NULL) {
        weir__proxy_turn(wk->pw);
        if (wk->draining && wk->pw->nconns == 0) {
            weir__loop_stop(loop);
        }
    }
}

/* Stops the kernel from completing new connections on our sockets: they are refused now. */
static void shut_listeners(struct worker *wk)
{
    for (unsigned i = 0; i < wk->nls; i++) {
        if (wk->ls[i].own_fd && wk->ls[i].io.fd >= 0) {
            close(wk->ls[i].io.fd);
            wk->ls[i].io.fd = -1;
        }
    }
}

static void post_drain(struct weir_loop *loop, void *arg)
{
    struct worker *wk = arg;
    wk->draining = true;
    set_listening(wk, false);
    shut_listeners(wk);
    if (wk->pw != NULL) {
        weir__proxy_drain(wk->pw);
    } else {
        weir__loop_stop(loop);
    }
}

static void post_stop(struct weir_loop *loop, void *arg)
{
    struct worker *wk = arg;
    wk->draining = true;
    set_listening(wk, false);
    if (wk->pw != NULL) {
        weir__proxy_close_all(wk->pw);
    }
    weir__loop_stop(loop);
}

static void signal_started(struct worker *wk, int rc)
{
    pthread_mutex_lock(&wk->start_lock);
    wk->start_rc = rc;
    wk->start_done = true;
    wk->loop_live = rc == 0;
    pthread_cond_signal(&wk->start_cond);
    pthread_mutex_unlock(&wk->start_lock);
}

static int worker_setup(struct worker *wk)
{
    struct weir_service *svc = wk->svc;
    struct weir_server *srv = svc->srv;
    wk->loop = weir__loop_new(1024);
    if (wk->loop == NULL) {
        return -errno;
    }
    weir__loop_set_data(wk->loop, wk);
    weir__loop_set_turn_hook(wk->loop, worker_turn, wk);
    if (svc->kind == SVC_BACKGROUND) {
        return svc->bg.start(wk->loop, svc->data);
    }
    const struct weir_cfg_server *sc = &srv->cfg->server;
    uint32_t extra = svc->shared_pool == NULL && sc->upstream_keepalive != 0 && svc->threads == 1
                         ? sc->upstream_shared_per_peer
                         : 0;
    wk->pw = weir__proxy_worker_new(wk->loop, &svc->hooks, svc->data, &srv->slot, srv->access,
                                    svc->shared_pool, extra);
    if (wk->pw == NULL) {
        return WEIR_ENOMEM;
    }
    wk->pw->on_closed = conn_closed;
    wk->pw->on_closed_arg = wk;
    wk->pw->ip_conns = svc->ip_conns;
    wk->pw->ip_rate = svc->ip_rate;
    set_listening(wk, true);
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *wk = arg;
    struct weir_service *svc = wk->svc;
    weir__rcu_register();
    int rc = worker_setup(wk);
    signal_started(wk, rc);
    if (rc == 0) {
        rc = weir__loop_run(wk->loop);
        if (rc != 0) {
            weir_log(WEIR_LOG_ERROR, "%s worker %u: event loop failed: %s", svc->name, wk->index,
                     weir_strerror(rc));
        }
        if (svc->kind == SVC_BACKGROUND && svc->bg.stop) {
            svc->bg.stop(wk->loop, svc->data);
        }
    }
    set_listening(wk, false);
    for (unsigned i = 0; i < wk->nls; i++) {
        if (wk->ls[i].own_fd && wk->ls[i].io.fd >= 0) {
            close(wk->ls[i].io.fd);
            wk->ls[i].io.fd = -1;
        }
    }
    if (wk->pw != NULL) {
        weir__proxy_worker_free(wk->pw);
        wk->pw = NULL;
    }
    weir__rcu_unregister();
    pthread_mutex_lock(&wk->start_lock);
    wk->loop_live = false;
    pthread_mutex_unlock(&wk->start_lock);
    weir__loop_free(wk->loop);
    wk->loop = NULL;
    atomic_store(&wk->exited, true);
    return NULL;
}

/* Binds the service's sockets: one per worker (SO_REUSEPORT) or one shared. */
static int bind_listeners(struct weir_service *svc)
{
    bool stealing = svc->srv->cfg->server.work_stealing;
    for (unsigned i = 0; i < svc->nlisteners; i++) {
        struct listener *l = &svc->listeners[i];
        if (stealing) {
            int fd = weir__listen(&l->ss, l->len, false, LISTEN_BACKLOG);
            if (fd < 0) {
                weir_log(WEIR_LOG_ERROR, "cannot listen on %s: %s", l->address, strerror(-fd));
                return fd;
            }
            l->shared_fd = fd;
        }
        if (!stealing) {
            /*
             * SO_REUSEPORT would let us join another process's group on the same port and
             * share its traffic silently: a plain bind first proves the port is free. It
             * does not listen: a client connecting in that window (a readiness probe) would
             * queue on it and be reset when it closes.
             */
            int rc = weir__bind_check(&l->ss, l->len);
            if (rc < 0) {
                weir_log(WEIR_LOG_ERROR, "cannot listen on %s: %s", l->address, strerror(-rc));
                return rc;
            }
        }
        for (unsigned w = 0; w < svc->nworkers; w++) {
            struct worker_listener *wl = &svc->workers[w].ls[i];
            wl->wk = &svc->workers[w];
            wl->opts.count = &l->count;
            wl->opts.tls = l->tls;
            wl->opts.redirect_https = l->redirect_https;
            wl->opts.h2c = l->h2c;
            wl->io.cb = listener_event;
            wl->io.data = wl;
            if (stealing) {
                wl->io.fd = l->shared_fd;
                wl->own_fd = false;
            } else {
                int fd = weir__listen(&l->ss, l->len, true, LISTEN_BACKLOG);
                if (fd < 0) {
                    weir_log(WEIR_LOG_ERROR, "cannot listen on %s: %s", l->address, strerror(-fd));
                    return fd;
                }
                if (w == 0) {
                    /* Port 0: every worker's socket must share the port the first one got. */
                    int port = weir__sock_port(fd);
                    if (port > 0 && l->ss.ss_family == AF_INET) {
                        ((struct sockaddr_in *)&l->ss)->sin_port = htons((uint16_t)port);
                    } else if (port > 0 && l->ss.ss_family == AF_INET6) {
                        ((struct sockaddr_in6 *)&l->ss)->sin6_port = htons((uint16_t)port);
                    }
                }
                wl->io.fd = fd;
                wl->own_fd = true;
            }
            svc->workers[w].nls = svc->nlisteners;
        }
    }
    return 0;
}

/*
 * Writes the pid to a temporary file beside path and renames it into place, so whoever reads
 * path (a supervisor, logrotate, a test) sees no file or the whole pid, never an empty one.
 */
static int write_pid_file(const char *path)
{
    char buf[32];
    char tmp[4096];
    int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    int t = snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
    if (n < 0 || t < 0 || (size_t)t >= sizeof(tmp)) {
        return -ENAMETOOLONG;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -errno;
    }
    ssize_t w = write(fd, buf, (size_t)n);
    int rc = (w == n) ? 0 : (w < 0 ? -errno : -EIO);
    if (close(fd) != 0 && rc == 0) {
        rc = -errno;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -errno;
    }
    if (rc != 0) {
        (void)unlink(tmp);
    }
    return rc;
}

/* Sketch size for the per-address limits: 4 rows of 64Ki counters (1 MiB per sketch). */
#define LIMITS_SLOTS 65536u

/*
 * The per-address limit tables every worker of the service shares, made only for the limits
 * switched on (they are read from the configuration the server started with).
 */
static int create_limits(struct weir_service *svc)
{
    const struct weir_cfg_limits *lim = &svc->srv->cfg->server.limits;
    if (lim->max_connections_per_ip != 0) {
        int rc = weir_inflight_new(4, LIMITS_SLOTS, &svc->ip_conns);
        if (rc != 0) {
            return rc;
        }
    }
    if (lim->requests_per_second_per_ip != 0) {
        int rc = weir_rate_new(1000, 4, LIMITS_SLOTS, &svc->ip_rate);
        if (rc != 0) {
            return rc;
        }
    }
    const struct weir_cfg_server *sc = &svc->srv->cfg->server;
    /* A lone worker has nobody to share with: it keeps the shared tier's share itself
       (moving connections to a tier only it reads cost an epoll_ctl each way, measured 2 per
       request under h2load -m10 with 500 requests in flight). */
    if (sc->upstream_shared_per_peer != 0 && sc->upstream_keepalive != 0 && svc->threads > 1) {
        svc->shared_pool = weir__pool_shared_new(
            sc->upstream_shared_per_peer, sc->upstream_shared_total, sc->timeouts.upstream_idle_ms);
        if (svc->shared_pool == NULL) {
            return WEIR_ENOMEM;
        }
    }
    return 0;
}

static int start_service(struct weir_service *svc)
{
    svc->nworkers = svc->threads;
    svc->workers = weir__calloc(svc->nworkers, sizeof(*svc->workers));
    if (svc->workers == NULL) {
        weir_log(WEIR_LOG_ERROR, "service %s: out of memory", svc->name);
        return WEIR_ENOMEM;
    }
    for (unsigned i = 0; i < svc->nworkers; i++) {
        svc->workers[i].svc = svc;
        svc->workers[i].index = i;
        pthread_mutex_init(&svc->workers[i].start_lock, NULL);
        pthread_cond_init(&svc->workers[i].start_cond, NULL);
    }
    if (svc->kind == SVC_PROXY) {
        if (svc->nlisteners == 0) {
            weir_log(WEIR_LOG_ERROR, "service %s has no listener", svc->name);
            return WEIR_EINVAL;
        }
        int rc = create_limits(svc);
        if (rc != 0) {
            weir_log(WEIR_LOG_ERROR, "service %s: cannot set up its shared tables: %s", svc->name,
                     weir_strerror(rc));
            return rc;
        }
        rc = bind_listeners(svc);
        if (rc != 0) {
            return rc;
        }
    }
    for (unsigned i = 0; i < svc->nworkers; i++) {
        struct worker *wk = &svc->workers[i];
        int rc = pthread_create(&wk->thread, NULL, worker_main, wk);
        if (rc != 0) {
            weir_log(WEIR_LOG_ERROR, "service %s: cannot start worker %u: %s", svc->name, i,
                     strerror(rc));
            return -rc;
        }
        wk->started = true;
        pthread_mutex_lock(&wk->start_lock);
        while (!wk->start_done) {
            pthread_cond_wait(&wk->start_cond, &wk->start_lock);
        }
        pthread_mutex_unlock(&wk->start_lock);
        if (wk->start_rc != 0) {
            weir_log(WEIR_LOG_ERROR, "service %s: worker %u failed to start: %s", svc->name, i,
                     weir_strerror(wk->start_rc));
            return wk->start_rc;
        }
    }
    if (svc->kind == SVC_PROXY) {
        for (unsigned i = 0; i < svc->nlisteners; i++) {
            weir_log(WEIR_LOG_INFO, "%s: listening on %s (%u threads, %s)", svc->name,
                     svc->listeners[i].address, svc->nworkers,
                     svc->srv->cfg->server.work_stealing ? "work stealing" : "SO_REUSEPORT");
        }
    }
    return 0;
}

/*
 * Posts fn to a worker. A worker that failed to start has no loop, and one that is exiting
 * frees its loop whatever its exited flag said a moment ago: loop_live, under the worker's
 * lock, says whether the loop may still be posted to.
 */
static void post_worker(struct worker *wk, weir_post_fn fn)
{
    for (;;) {
        pthread_mutex_lock(&wk->start_lock);
        int rc = wk->loop_live ? weir_loop_post(wk->loop, fn, wk) : 0;
        pthread_mutex_unlock(&wk->start_lock);
        if (rc != WEIR_ELIMIT) {
            return;
        }
        /* A full queue means the worker is alive and busy; try once more later. */
        usleep(1000);
    }
}

static void post_all(struct weir_server *srv, enum service_kind kind, weir_post_fn fn)
{
    for (struct weir_service *svc = srv->services; svc; svc = svc->next) {
        if (svc->kind != kind || svc->workers == NULL) {
            continue;
        }
        for (unsigned i = 0; i < svc->nworkers; i++) {
            struct worker *wk = &svc->workers[i];
            if (wk->started) {
                post_worker(wk, fn);
            }
        }
    }
}

static bool all_exited(struct weir_server *srv, enum service_kind kind)
{
    for (struct weir_service *svc = srv->services; svc; svc = svc->next) {
        if (svc->kind != kind || svc->workers == NULL) {
            continue;
        }
        for (unsigned i = 0; i < svc->nworkers; i++) {
            if (svc->workers[i].started && !atomic_load(&svc->workers[i].exited)) {
                return false;
            }
        }
    }
    return true;
}

static void join_all(struct weir_server *srv)
{
    for (struct weir_service *svc = srv->services; svc; svc = svc->next) {
        for (unsigned i = 0; svc->workers && i < svc->nworkers; i++) {
            struct worker *wk = &svc->workers[i];
            if (wk->started) {
                pthread_join(wk->thread, NULL);
                wk->started = false;
            } else {
                for (unsigned j = 0; j < wk->nls; j++) {
                    if (wk->ls[j].own_fd && wk->ls[j].io.fd >= 0) {
                        close(wk->ls[j].io.fd);
                        wk->ls[j].io.fd = -1;
                    }
                }
            }
            pthread_mutex_destroy(&wk->start_lock);
            pthread_cond_destroy(&wk->start_cond);
        }
    }
}

/* Waits for a signal; returns it, or 0 after timeout_ms (negative: forever). */
static int wait_signal(const sigset_t *set, int timeout_ms)
{
    for (;;) {
        int sig;
        if (timeout_ms < 0) {
            if (sigwait(set, &sig) == 0) {
                return sig;
            }
            continue;
        }
        struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
        sig = sigtimedwait(set, NULL, &ts);
        if (sig > 0) {
            return sig;
        }
        if (errno == EAGAIN) {
            return 0;
        }
    }
}

/* Graceful stop: drain proxies within the grace period, then stop everything. */
static void graceful_stop(struct weir_server *srv, const sigset_t *set)
{
    uint32_t grace = srv->cfg->server.grace_period_ms;
    weir_log(WEIR_LOG_INFO, "shutting down: finishing in-flight requests (grace period %ums)",
             grace);
    post_all(srv, SVC_PROXY, post_drain);
    /* Shared sockets (work stealing): shut down here; the fds stay valid until freed. */
    for (struct weir_service *svc = srv->services; svc; svc = svc->next) {
        for (unsigned i = 0; i < svc->nlisteners; i++) {
            if (svc->listeners[i].shared_fd >= 0) {
                (void)shutdown(svc->listeners[i].shared_fd, SHUT_RDWR);
            }
        }
    }
    uint32_t waited = 0;
    while (!all_exited(srv, SVC_PROXY) && waited < grace) {
        int sig = wait_signal(set, 50);
        waited += 50;
        if (sig == SIGINT) {
            weir_log(WEIR_LOG_INFO, "SIGINT: stopping now");
            break;
        }
    }
    if (!all_exited(srv, SVC_PROXY)) {
        weir_log(WEIR_LOG_WARN, "grace period over: closing remaining connections");
    }
    post_all(srv, SVC_PROXY, post_stop);
    post_all(srv, SVC_BACKGROUND, post_stop);
}

int weir_server_run(struct weir_server *srv)
{
    const struct weir_cfg_server *sc = &srv->cfg->server;
    sigset_t set, old;
    int rc = 0;
    bool pid_written = false;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGQUIT);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    /* Threads inherit the mask: signals reach only the main thread's sigwait. */
    pthread_sigmask(SIG_BLOCK, &set, &old);
    (void)signal(SIGPIPE, SIG_IGN);
    /* A response spill file past RLIMIT_FSIZE fails its write (EFBIG), not the process. */
    (void)signal(SIGXFSZ, SIG_IGN);

    rc = weir__log_open(sc->error_log, sc->log_level);
    if (rc != 0) {
        (void)fprintf(stderr, "weir: cannot open error log %s: %s\n", sc->error_log, strerror(-rc));
        goto out;
    }
    if (sc->access_log != NULL) {
        srv->access = weir__access_log_open(sc->access_log);
        if (srv->access == NULL) {
            rc = WEIR_EINVAL;
            goto out;
        }
    }
    for (struct weir_service *svc = srv->services; svc; svc = svc->next) {
        rc = start_service(svc);
        if (rc != 0) {
            goto stop;
        }
    }
    if (sc->pid_file != NULL) {
        rc = write_pid_file(sc->pid_file);
        if (rc != 0) {
            weir_log(WEIR_LOG_ERROR, "cannot write pid file %s: %s", sc->pid_file, strerror(-rc));
            goto stop;
        }
        pid_written = true;
    }
    atomic_store(&srv->running, true);
    weir_log(WEIR_LOG_INFO, "weir started (pid %ld)", (long)getpid());
    for (;;) {
        /* Once a second, between signals: the heap's housekeeping (cache memory back). */
        int sig = wait_signal(&set, 1000);
        if (sig == 0) {
            weir__alloc_trim();
            continue;
        }
        if (sig == SIGHUP) {
            weir_log(WEIR_LOG_WARN, "SIGHUP: live reload is not available yet; ignoring");
            continue;
        }
        if (sig == SIGINT) {
            weir_log(WEIR_LOG_INFO, "SIGINT: stopping now");
            post_all(srv, SVC_PROXY, post_stop);
            post_all(srv, SVC_BACKGROUND, post_stop);
        } else {
            graceful_stop(srv, &set);
        }
        break;
    }
    goto join;
stop:
    post_all(srv, SVC_PROXY, post_stop);
    post_all(srv, SVC_BACKGROUND, post_stop);
join:
    join_all(srv);
    atomic_store(&srv->running, false);
    if (pid_written) {
        unlink(sc->pid_file);
    }
    weir_log(WEIR_LOG_INFO, "weir stopped");
out:
    weir__access_log_close(srv->access);
    srv->access = NULL;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}
