/* RCU-published snapshots with per-worker holders (see snapshot.h). */
#include "core/snapshot.h"

#include "core/alloc.h"
#include "core/rcu.h"

struct weir__snapshot *weir__snapshot_new(void *data, void (*free_fn)(void *data))
{
    struct weir__snapshot *s = weir__malloc(sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    s->data = data;
    s->free_fn = free_fn;
    atomic_init(&s->refs, 1);
    return s;
}

void weir__snapshot_release(struct weir__snapshot *s)
{
    if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1) {
        if (s->free_fn) {
            s->free_fn(s->data);
        }
        weir__free(s);
    }
}

void weir__snapshot_publish(struct weir__snapshot_slot *slot, struct weir__snapshot *s)
{
    struct weir__snapshot *old = weir__rcu_xchg((void **)&slot->current, s);
    if (old != NULL) {
        weir__rcu_synchronize();
        weir__snapshot_release(old);
    }
}

static void holder_drop(struct weir__snapshot_holder *h)
{
    weir__snapshot_release(h->snap);
    weir__free(h);
}

struct weir__snapshot_holder *weir__snapshot_acquire(struct weir__snapshot_slot *slot,
                                                     struct weir__snapshot_holder **cur)
{
    struct weir__snapshot *s = weir__rcu_read((void *const *)&slot->current);
    if (s == NULL || (*cur != NULL && (*cur)->snap == s)) {
        return *cur;
    }
    struct weir__snapshot_holder *h = weir__malloc(sizeof(*h));
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

void weir__snapshot_holder_put(struct weir__snapshot_holder *h)
{
    if (--h->local_refs == 0 && h->retired) {
        holder_drop(h);
    }
}

void weir__snapshot_holder_retire(struct weir__snapshot_holder **cur)
{
    struct weir__snapshot_holder *h = *cur;
    *cur = NULL;
    if (h == NULL) {
        return;
    }
    h->retired = true;
    if (h->local_refs == 0) {
        holder_drop(h);
    }
}
