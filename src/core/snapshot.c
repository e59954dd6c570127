/* RCU-published snapshots with per-worker holders (see snapshot.h). */
#include "core/snapshot.h"

#include <urcu-qsbr.h>

#include "core/alloc.h"

/*
 * liburcu's rcu_xchg_pointer (inline asm) and rcu_dereference (a volatile load ordered by the
 * address dependency) are invisible to ThreadSanitizer: it would see no ordering between the
 * publisher filling a snapshot and a worker reading it, and report every such read. In TSan
 * builds, tell it about the release/acquire pair those two calls implement. (The grace period
 * needs no annotation: a reader that keeps a snapshot past its quiescent state holds a
 * reference, and the atomic reference count orders the free.)
 */
#if defined(__SANITIZE_THREAD__)
#define WEIR_TSAN_ANNOTATE 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WEIR_TSAN_ANNOTATE 1
#endif
#endif
#ifdef WEIR_TSAN_ANNOTATE
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define TSAN_ACQUIRE(p) __tsan_acquire(p)
#define TSAN_RELEASE(p) __tsan_release(p)
#else
#define TSAN_ACQUIRE(p) ((void)(p))
#define TSAN_RELEASE(p) ((void)(p))
#endif

struct weir_snapshot *weir__snapshot_new(void *data, void (*free_fn)(void *data))
{
    struct weir_snapshot *s = weir__malloc(sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    s->data = data;
    s->free_fn = free_fn;
    atomic_init(&s->refs, 1);
    return s;
}

void weir__snapshot_release(struct weir_snapshot *s)
{
    if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1) {
        if (s->free_fn) {
            s->free_fn(s->data);
        }
        weir__free(s);
    }
}

void weir__snapshot_publish(struct weir_snapshot_slot *slot, struct weir_snapshot *s)
{
    TSAN_RELEASE(&slot->current);
    struct weir_snapshot *old = rcu_xchg_pointer(&slot->current, s);
    if (old != NULL) {
        synchronize_rcu();
        weir__snapshot_release(old);
    }
}

static void holder_drop(struct weir_snapshot_holder *h)
{
    weir__snapshot_release(h->snap);
    weir__free(h);
}

struct weir_snapshot_holder *weir__snapshot_acquire(struct weir_snapshot_slot *slot,
                                                    struct weir_snapshot_holder **cur)
{
    struct weir_snapshot *s = rcu_dereference(slot->current);
    TSAN_ACQUIRE(&slot->current);
    if (s == NULL || (*cur != NULL && (*cur)->snap == s)) {
        return *cur;
    }
    struct weir_snapshot_holder *h = weir__malloc(sizeof(*h));
    if (h == NULL) {
        return *cur;
    }
    /* Safe: we are inside a QSBR read-side section, so s cannot be freed under us. */
    atomic_fetch_add(&s->refs, 1);
    h->snap = s;
    h->local_refs = 0;
    h->retired = false;
    weir__snapshot_holder_retire(cur);
    *cur = h;
    return h;
}

void weir__snapshot_holder_put(struct weir_snapshot_holder *h)
{
    if (--h->local_refs == 0 && h->retired) {
        holder_drop(h);
    }
}

void weir__snapshot_holder_retire(struct weir_snapshot_holder **cur)
{
    struct weir_snapshot_holder *h = *cur;
    *cur = NULL;
    if (h == NULL) {
        return;
    }
    h->retired = true;
    if (h->local_refs == 0) {
        holder_drop(h);
    }
}
