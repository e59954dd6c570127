/* QSBR RCU wrappers with ThreadSanitizer annotations (see rcu.h). */
#include "core/rcu.h"

#include <urcu-qsbr.h>

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

static _Thread_local bool registered;
/* What TSan is told every quiescent state releases and every grace period acquires. */
static char grace_token;

void weir__rcu_register(void)
{
    rcu_register_thread();
    registered = true;
}

void weir__rcu_unregister(void)
{
    TSAN_RELEASE(&grace_token);
    rcu_unregister_thread();
    registered = false;
}

bool weir__rcu_registered(void)
{
    return registered;
}

void weir__rcu_quiescent(void)
{
    if (registered) {
        TSAN_RELEASE(&grace_token);
        rcu_quiescent_state();
    }
}

void weir__rcu_offline(void)
{
    if (registered) {
        TSAN_RELEASE(&grace_token);
        rcu_thread_offline();
    }
}

void weir__rcu_online(void)
{
    if (registered) {
        rcu_thread_online();
    }
}

void weir__rcu_synchronize(void)
{
    if (registered) {
        TSAN_RELEASE(&grace_token);
        rcu_thread_offline();
        synchronize_rcu();
        rcu_thread_online();
    } else {
        synchronize_rcu();
    }
    TSAN_ACQUIRE(&grace_token);
}

void *weir__rcu_xchg(void **slot, void *p)
{
    TSAN_RELEASE(slot);
    return rcu_xchg_pointer(slot, p);
}

void *weir__rcu_read(void *const *slot)
{
    void *p = rcu_dereference(*(void **)slot);
    TSAN_ACQUIRE((void *)slot);
    return p;
}
