/*
 * The QSBR RCU flavour (liburcu) as weir uses it: worker threads are readers that announce a
 * quiescent state once per loop turn and go offline while they block in epoll_wait, so a
 * grace period never waits on an idle worker. Publishers swap a pointer and wait for a grace
 * period before freeing what it pointed to.
 *
 * These wrappers also tell ThreadSanitizer about the ordering liburcu implements with inline
 * assembly it cannot see: publish/read are a release/acquire pair on the pointer, and every
 * reader's quiescent state happens before the end of any grace period that waited for it.
 */
#ifndef WEIR_CORE_RCU_H
#define WEIR_CORE_RCU_H

#include <stdbool.h>

/** Registers the calling thread as a reader (online). */
void weir__rcu_register(void);
void weir__rcu_unregister(void);
/** True when the calling thread is a registered reader. */
bool weir__rcu_registered(void);

/** A registered reader holds no RCU-protected pointer from here on (once per loop turn). */
void weir__rcu_quiescent(void);
/** Around a blocking wait: a registered reader goes offline, then online. No-ops otherwise. */
void weir__rcu_offline(void);
void weir__rcu_online(void);

/**
 * Waits for a grace period: every reader has passed a quiescent state (or been offline)
 * since the call. From any thread; a registered reader goes offline while it waits.
 */
void weir__rcu_synchronize(void);

/** Publishes p at *slot (a release) and returns the previous value. */
void *weir__rcu_xchg(void **slot, void *p);
/** Reads *slot inside a read-side section (an acquire). */
void *weir__rcu_read(void *const *slot);

#endif
