/* sync.h — cross-process Mutex, Semaphore, Event, Condition and RWLock.
 *
 * All functions operate on structs from layout.h that live in shared memory.
 * Blocking functions take a `struct mi_wait` that the caller (module.c) keeps
 * across calls: it holds the absolute deadline of *this call* (module.c cuts
 * long waits into slices so Ctrl-C is seen), the spin budget, and when the
 * owner's liveness is next checked.  They return MI_TIMEOUT when that deadline
 * passes, MI_INTERRUPTED on a signal, MI_CORRUPT when the object's tag is not
 * what it was, and MI_OK on success.
 *
 * Wait strategy (SpinThenFutexWait): first spin — a pause loop re-checking the
 * word, for at most `spin_ns` — then sleep in the kernel.  Spinning pays off
 * when the holder releases within about one sleep/wake round trip (~20 µs per
 * side on a VM), so the default budget adapts per object: it grows when
 * spins succeed and decays when they fail (spin.h, mi_spin_learn).  spin_ns = 0 sleeps at once; spin_ns > 0 fixes the budget.
 */
#ifndef MI_SYNC_H
#define MI_SYNC_H

#include <stdint.h>

#include "layout.h"
#include "result.h"

/* More results than the common enum: kept here, mapped by module.c. */
#define MI_DEADLOCK 100     /* the calling thread already holds it */
#define MI_NOT_OWNER 101    /* release by a thread that does not hold it */
#define MI_OVERFLOW 102     /* semaphore release beyond its maximum */

#define MI_SPIN_ADAPTIVE (-1)
#define MI_SPIN_DEFAULT_MAX_NS 50000     /* 50 µs: about two sleep/wake halves on this class of VM */
#define MI_SPIN_MIN_NS 2000              /* the adaptive budget never drops below 2 µs */
#define MI_LIVENESS_INTERVAL_NS 200000000 /* 200 ms: owner checks while waiting */

/* Who is calling: pid, thread, start time, pid namespace. */
struct mi_self {
    uint32_t pid;
    uint32_t tid;
    uint64_t start_ticks;
    uint32_t pidns;
};

/* Per-call wait state, owned by the caller (never in shared memory). */
struct mi_wait {
    int64_t deadline_ns;      /* absolute CLOCK_MONOTONIC; < 0: none */
    int64_t spin_ns;          /* MI_SPIN_ADAPTIVE, 0, or a fixed budget */
    int64_t next_check_ns;    /* next owner liveness check; 0: check at once */
    int slept;                /* set when the call went to sleep at least once */
    int progress;             /* multi-phase waits (rwlock writers): where to resume */
    int64_t start_ns;         /* when the wait began (adaptive spin learns its length) */
    int owner_died;           /* carried across slices of a multi-phase wait */
};

/* The calling thread's identity (cached; refreshed after fork). */
const struct mi_self *mi_self_get(void);

/* 1 if the process (pid, start_ticks, pidns) may still be running, 0 if it is
 * certainly gone (no such pid, a zombie, or a recycled pid).  Only the low 32
 * bits of start_ticks are compared (see MI_IDENTITY); 0 means "unknown". */
int mi_process_alive(uint32_t pid, uint64_t start_ticks, uint32_t pidns);

/* Tag handling: claim-and-initialize, or check. */
enum mi_result mi_sync_check_tag(const struct mi_sync_head *head, uint32_t kind);

/* Robust owned word (Mutex, RWLock writers). *owner_died is set when the
 * previous owner died holding it. */
int mi_owned_lock(struct mi_owned *lock, struct mi_sync_head *head, uint32_t *spin_estimate,
                  struct mi_wait *wait, int *owner_died);
int mi_owned_try_lock(struct mi_owned *lock, struct mi_sync_head *head);
int mi_owned_unlock(struct mi_owned *lock);
int mi_owned_held_by_me(const struct mi_owned *lock);

int mi_semaphore_acquire(struct mi_semaphore *semaphore, struct mi_wait *wait);
int mi_semaphore_release(struct mi_semaphore *semaphore, uint32_t count);

int mi_event_wait(struct mi_event *event, struct mi_wait *wait);
int mi_event_try(struct mi_event *event);
void mi_event_set(struct mi_event *event);
void mi_event_clear(struct mi_event *event);
void mi_event_register(struct mi_event *event);
void mi_event_unregister(struct mi_event *event);

uint32_t mi_condition_prepare(struct mi_condition *condition);
int mi_condition_sleep(struct mi_condition *condition, uint32_t sequence, struct mi_wait *wait);
void mi_condition_done(struct mi_condition *condition);
void mi_condition_notify(struct mi_condition *condition, int count);

int mi_rwlock_acquire_read(struct mi_rwlock *rwlock, struct mi_wait *wait, int *slot_index);
int mi_rwlock_release_read(struct mi_rwlock *rwlock, int slot_index);
/* A writer holds `writer` while it waits for readers (wait->progress == 1);
 * on MI_TIMEOUT / MI_INTERRUPTED in that phase the caller either calls again
 * (next slice) or gives up with mi_rwlock_release_write(). */
int mi_rwlock_acquire_write(struct mi_rwlock *rwlock, struct mi_wait *wait, int *owner_died);
int mi_rwlock_release_write(struct mi_rwlock *rwlock);

#endif
