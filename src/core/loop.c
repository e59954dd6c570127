/*
 * One event loop per thread: edge-triggered epoll, a binary min-heap of timers, a bounded
 * queue of calls posted from other threads (woken through an eventfd), and a list of calls
 * deferred to the end of the turn (sessions resume through it, never re-entrantly).
 */
#include "core/loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/rcu.h"
#include "weir/error.h"

#define MAX_EVENTS 256

struct post_item {
    weir_post_fn fn;
    void *arg;
};

struct weir_loop {
    int epfd;
    struct weir_io wake;
    bool stop;
    uint64_t now_ms;
    uint64_t skew_ms; /* added to the monotonic clock (tests: weir__loop_skew_clock) */
    int64_t wall_s;

    struct weir_timer **heap;
    uint64_t timer_seq; /* counts timer starts: a pass fires only timers armed before it */
    size_t nheap;
    size_t heap_cap;

    pthread_mutex_t post_lock;
    struct post_item *posts; /* ring */
    uint32_t post_cap;
    uint32_t post_head;
    uint32_t post_len;
    bool closed;

    struct weir__defer *defer_head;
    struct weir__defer *defer_tail;
    uint64_t defer_round;

    weir__turn_fn turn_fn;
    void *turn_arg;
    void *data;
};

void weir__loop_update_time(struct weir_loop *loop)
{
    /*
     * The precise clock, not CLOCK_MONOTONIC_COARSE: the coarse one moves in jiffies (4 ms at
     * HZ=250), which fired timers up to a jiffy early and rounded durations in the access log
     * to it. Through the vDSO the precise read costs tens of nanoseconds, once per turn.
     */
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
        loop->now_ms =
            (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u + loop->skew_ms;
    }
    if (clock_gettime(CLOCK_REALTIME_COARSE, &ts) == 0) {
        loop->wall_s = ts.tv_sec;
    }
}

static void drain_posts(struct weir_loop *loop, struct weir_io *io, uint32_t events);
static unsigned run_deferred(struct weir_loop *loop);

struct weir_loop *weir__loop_new(uint32_t post_cap)
{
    struct weir_loop *loop = weir__calloc(1, sizeof(*loop));
    if (loop == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    loop->epfd = -1;
    loop->wake.fd = -1;
    loop->post_cap = post_cap ? post_cap : 1024;
    loop->posts = weir__calloc(loop->post_cap, sizeof(*loop->posts));
    if (loop->posts == NULL || pthread_mutex_init(&loop->post_lock, NULL) != 0) {
        weir__free(loop->posts);
        weir__free(loop);
        errno = ENOMEM;
        return NULL;
    }
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    loop->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    loop->wake.cb = drain_posts;
    if (loop->epfd < 0 || loop->wake.fd < 0 ||
        weir_loop_io_add(loop, &loop->wake, WEIR_IO_READ) != 0) {
        int saved = errno;
        weir__loop_free(loop);
        errno = saved;
        return NULL;
    }
    weir__loop_update_time(loop);
    return loop;
}

void weir__loop_free(struct weir_loop *loop)
{
    if (loop == NULL) {
        return;
    }
    /* Deferred frees queued in the last turn must still run. */
    while (loop->defer_head != NULL) {
        run_deferred(loop);
    }
    if (loop->wake.fd >= 0) {
        close(loop->wake.fd);
    }
    if (loop->epfd >= 0) {
        close(loop->epfd);
    }
    pthread_mutex_destroy(&loop->post_lock);
    weir__free(loop->posts);
    weir__free(loop->heap);
    weir__free(loop);
}

/* ---- timers: a binary min-heap keyed by deadline, each timer knowing its index ---- */

static void heap_swap(struct weir_loop *loop, size_t a, size_t b)
{
    struct weir_timer *t = loop->heap[a];
    loop->heap[a] = loop->heap[b];
    loop->heap[b] = t;
    loop->heap[a]->heap_index = a;
    loop->heap[b]->heap_index = b;
}

static void sift_up(struct weir_loop *loop, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (loop->heap[parent]->deadline_ms <= loop->heap[i]->deadline_ms) {
            break;
        }
        heap_swap(loop, i, parent);
        i = parent;
    }
}

static void sift_down(struct weir_loop *loop, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1;
        size_t r = l + 1;
        size_t m = i;
        if (l < loop->nheap && loop->heap[l]->deadline_ms < loop->heap[m]->deadline_ms) {
            m = l;
        }
        if (r < loop->nheap && loop->heap[r]->deadline_ms < loop->heap[m]->deadline_ms) {
            m = r;
        }
        if (m == i) {
            return;
        }
        heap_swap(loop, i, m);
        i = m;
    }
}

void weir_timer_init(struct weir_timer *t, weir_timer_cb cb, void *data)
{
    t->deadline_ms = 0;
    t->heap_index = SIZE_MAX;
    t->cb = cb;
    t->data = data;
}

bool weir_timer_active(const struct weir_timer *t)
{
    return t->heap_index != SIZE_MAX;
}

void weir_timer_stop(struct weir_loop *loop, struct weir_timer *t)
{
    size_t i = t->heap_index;
    if (i == SIZE_MAX) {
        return;
    }
    t->heap_index = SIZE_MAX;
    loop->nheap--;
    if (i == loop->nheap) {
        return;
    }
    loop->heap[i] = loop->heap[loop->nheap];
    loop->heap[i]->heap_index = i;
    sift_down(loop, i);
    sift_up(loop, i);
}

uint64_t weir__loop_deadline(const struct weir_loop *loop, uint64_t ms)
{
    /*
     * now_ms is the turn's start truncated to the millisecond, so the real time is already up
     * to a millisecond past it: one more keeps a timer from firing before ms have passed.
     * 0 stays 0, "on the next pass".
     */
    return ms == 0 ? loop->now_ms : loop->now_ms + ms + 1;
}

int weir_timer_start(struct weir_loop *loop, struct weir_timer *t, uint64_t ms)
{
    uint64_t deadline = weir__loop_deadline(loop, ms);
    t->start_seq = ++loop->timer_seq;
    if (t->heap_index != SIZE_MAX) {
        uint64_t old = t->deadline_ms;
        t->deadline_ms = deadline;
        if (deadline < old) {
            sift_up(loop, t->heap_index);
        } else {
            sift_down(loop, t->heap_index);
        }
        return 0;
    }
    if (loop->nheap == loop->heap_cap) {
        size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
        /* An array of pointers: sizeof(*h) is a pointer's size on purpose. */
        // NOLINTNEXTLINE(bugprone-sizeof-expression)
        struct weir_timer **h = weir__reallocarray(loop->heap, cap, sizeof(*h));
        if (h == NULL) {
            return WEIR_ENOMEM;
        }
        loop->heap = h;
        loop->heap_cap = cap;
    }
    t->deadline_ms = deadline;
    t->heap_index = loop->nheap;
    loop->heap[loop->nheap++] = t;
    sift_up(loop, t->heap_index);
    return 0;
}

size_t weir__loop_timer_count(const struct weir_loop *loop)
{
    return loop->nheap;
}

void weir__loop_skew_clock(struct weir_loop *loop, uint64_t ms)
{
    loop->skew_ms += ms;
    weir__loop_update_time(loop);
}

/* Fires the timers due; returns how many. */
static unsigned run_timers(struct weir_loop *loop)
{
    /*
     * Timers armed by callbacks during this pass wait for the next one (as libuv does), so a
     * callback re-arming itself with 0 ms cannot keep the turn from ending.
     */
    uint64_t pass = loop->timer_seq;
    unsigned fired = 0;
    while (loop->nheap > 0 && loop->heap[0]->deadline_ms <= loop->now_ms &&
           loop->heap[0]->start_seq <= pass) {
        struct weir_timer *t = loop->heap[0];
        weir_timer_stop(loop, t);
        t->cb(loop, t);
        fired++;
    }
    return fired;
}

void weir__loop_run_timers(struct weir_loop *loop)
{
    (void)run_timers(loop);
}

static int next_timeout(const struct weir_loop *loop)
{
    if (loop->defer_head != NULL) {
        return 0;
    }
    if (loop->nheap == 0) {
        return 1000; /* wake once a second regardless: clocks and quiescent states advance */
    }
    uint64_t d = loop->heap[0]->deadline_ms;
    if (d <= loop->now_ms) {
        return 0;
    }
    uint64_t wait = d - loop->now_ms;
    return wait > 1000 ? 1000 : (int)wait;
}

uint64_t weir_loop_now_ms(const struct weir_loop *loop)
{
    return loop->now_ms;
}

int64_t weir_loop_wall_s(const struct weir_loop *loop)
{
    return loop->wall_s;
}

/* ---- file descriptors ---- */

int weir_loop_io_add(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
    struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = io};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, io->fd, &ev) != 0) {
        return -errno;
    }
    io->events = events;
    return 0;
}

int weir_loop_io_mod(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
    if (io->events == events) {
        return 0;
    }
    struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = io};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) != 0) {
        return -errno;
    }
    io->events = events;
    return 0;
}

void weir_loop_io_del(struct weir_loop *loop, struct weir_io *io)
{
    if (io->fd >= 0) {
        /* Fails only when fd was never added; nothing to undo then. */
        (void)epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    }
    io->events = 0;
}

/* ---- cross-thread posts ---- */

int weir_loop_post(struct weir_loop *loop, weir_post_fn fn, void *arg)
{
    int rc = 0;
    pthread_mutex_lock(&loop->post_lock);
    if (loop->closed) {
        rc = WEIR_ECLOSED;
    } else if (loop->post_len == loop->post_cap) {
        rc = WEIR_ELIMIT;
    } else {
        uint32_t slot = (loop->post_head + loop->post_len) % loop->post_cap;
        loop->posts[slot] = (struct post_item){fn, arg};
        loop->post_len++;
    }
    pthread_mutex_unlock(&loop->post_lock);
    if (rc == 0) {
        uint64_t one = 1;
        /* EAGAIN means the counter is already non-zero: the loop will wake anyway. */
        if (write(loop->wake.fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
            return -errno;
        }
    }
    return rc;
}

static void drain_posts(struct weir_loop *loop, struct weir_io *io, uint32_t events)
{
    uint64_t n;
    while (read(io->fd, &n, sizeof(n)) > 0) {
    }
    for (;;) {
        struct post_item it;
        pthread_mutex_lock(&loop->post_lock);
        if (loop->post_len == 0) {
            pthread_mutex_unlock(&loop->post_lock);
            return;
        }
        it = loop->posts[loop->post_head];
        loop->post_head = (loop->post_head + 1) % loop->post_cap;
        loop->post_len--;
        pthread_mutex_unlock(&loop->post_lock);
        it.fn(loop, it.arg);
    }
}

/* ---- deferred calls ---- */

void weir__loop_defer(struct weir_loop *loop, struct weir__defer *d)
{
    if (d->queued) {
        return;
    }
    d->queued = true;
    d->next = NULL;
    d->round = loop->defer_round;
    if (loop->defer_tail) {
        loop->defer_tail->next = d;
    } else {
        loop->defer_head = d;
    }
    loop->defer_tail = d;
}

void weir__loop_defer_cancel(struct weir_loop *loop, struct weir__defer *d)
{
    if (!d->queued) {
        return;
    }
    struct weir__defer **pp = &loop->defer_head;
    struct weir__defer *prev = NULL;
    while (*pp && *pp != d) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == d) {
        *pp = d->next;
        if (loop->defer_tail == d) {
            loop->defer_tail = prev;
        }
    }
    d->queued = false;
    d->next = NULL;
}

static unsigned run_deferred(struct weir_loop *loop)
{
    /*
     * Calls deferred while running belong to the next round, so one turn stays bounded. The
     * queue stays live while it runs, so a call may cancel any other still queued.
     */
    uint64_t round = loop->defer_round++;
    unsigned ran = 0;
    while (loop->defer_head != NULL && loop->defer_head->round <= round) {
        struct weir__defer *d = loop->defer_head;
        loop->defer_head = d->next;
        if (loop->defer_head == NULL) {
            loop->defer_tail = NULL;
        }
        d->queued = false;
        d->next = NULL;
        d->fn(loop, d);
        ran++;
    }
    return ran;
}

/* ---- running ---- */

void weir__loop_set_turn_hook(struct weir_loop *loop, weir__turn_fn fn, void *arg)
{
    loop->turn_fn = fn;
    loop->turn_arg = arg;
}

void weir__loop_set_data(struct weir_loop *loop, void *data)
{
    loop->data = data;
}

void *weir__loop_data(const struct weir_loop *loop)
{
    return loop->data;
}

void weir__loop_stop(struct weir_loop *loop)
{
    loop->stop = true;
}

/*
 * One turn: wait up to timeout ms (-1: as long as the next timer allows) for events, run them,
 * the due timers, the deferred calls and the turn hook. Returns the callbacks run, or -errno.
 */
static int run_turn(struct weir_loop *loop, int timeout)
{
    struct epoll_event evs[MAX_EVENTS];
    if (timeout < 0) {
        timeout = next_timeout(loop);
    }
    /* A reader blocked here must not hold up a grace period (see core/rcu.h). */
    if (timeout != 0) {
        weir__rcu_offline();
    }
    int n = epoll_wait(loop->epfd, evs, MAX_EVENTS, timeout);
    if (timeout != 0) {
        weir__rcu_online();
    }
    if (n < 0) {
        return errno == EINTR ? 0 : -errno;
    }
    weir__loop_update_time(loop);
    for (int i = 0; i < n; i++) {
        struct weir_io *io = evs[i].data.ptr;
        io->cb(loop, io, evs[i].events);
    }
    unsigned ran = (unsigned)n + run_timers(loop);
    ran += run_deferred(loop);
    if (loop->turn_fn) {
        loop->turn_fn(loop, loop->turn_arg);
    }
    return (int)ran;
}

int weir__loop_run_once(struct weir_loop *loop)
{
    return run_turn(loop, 0);
}

int weir__loop_run(struct weir_loop *loop)
{
    loop->stop = false;
    while (!loop->stop) {
        int rc = run_turn(loop, -1);
        if (rc < 0) {
            return rc;
        }
    }
    pthread_mutex_lock(&loop->post_lock);
    loop->closed = true;
    pthread_mutex_unlock(&loop->post_lock);
    /* Posts accepted before the queue closed still run: their senders count on it. */
    drain_posts(loop, &loop->wake, 0);
    return 0;
}
