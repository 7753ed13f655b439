/* semaphore.c — a counting semaphore on one futex word.
 *
 * `value` is the count; acquire CASes it down from a positive value, else
 * spins, then sleeps while it is 0.  release adds with a CAS loop that
 * refuses to pass `maximum` and wakes as many sleepers as it added.  A
 * process that dies holding a count does not give it back: a semaphore has
 * no owner (as on Win32 and POSIX).
 */
#include <limits.h>

#include "atomic.h"
#include "futex.h"
#include "spin.h"
#include "sync.h"

static int try_take(struct mi_semaphore *semaphore)
{
    uint32_t value = mi_load_relaxed_u32(&semaphore->value);
    while (value > 0) {
        /* acq_rel: whatever the releaser published is visible to us. */
        if (mi_cas_acq_rel_u32(&semaphore->value, value, value - 1))
            return 1;
        value = mi_load_relaxed_u32(&semaphore->value);
    }
    return 0;
}

int mi_semaphore_acquire(struct mi_semaphore *semaphore, struct mi_wait *wait)
{
    if (try_take(semaphore))
        goto acquired;
    int64_t budget = mi_spin_budget(wait, &semaphore->spin_estimate);
    if (budget > 0 && !wait->slept) {
        int yielded = 0;
        int ready = MI_SPIN_UNTIL(&semaphore->value, value, value > 0 && try_take(semaphore), budget, yielded);
        MI_SPIN_LEARN(&semaphore->spin_estimate, wait, ready, yielded);
        if (ready)
            goto acquired;
    }
    for (;;) {
        if (try_take(semaphore))
            goto acquired;
        if (wait->deadline_ns >= 0 && mi_monotonic_ns() >= wait->deadline_ns)
            return MI_TIMEOUT;
        if (!wait->slept)
            mi_fetch_add_relaxed_u64(&semaphore->head.contentions, 1);
        wait->slept = 1;
        /* acq_rel: a releaser that reads sleepers after adding wakes us. */
        mi_fetch_add_acq_rel_u32(&semaphore->sleepers, 1);
        enum mi_result outcome = mi_futex_wait(&semaphore->value, 0, wait->deadline_ns);
        mi_fetch_add_acq_rel_u32(&semaphore->sleepers, (uint32_t)-1);
        if (outcome == MI_INTERRUPTED || outcome == MI_ERRNO)
            return outcome;
    }
acquired:
    mi_spin_learn_wait(&semaphore->spin_estimate, wait);
    mi_fetch_add_relaxed_u64(&semaphore->head.operations, 1);
    return MI_OK;
}

int mi_semaphore_release(struct mi_semaphore *semaphore, uint32_t count)
{
    uint32_t maximum = mi_load_relaxed_u32(&semaphore->maximum);
    uint32_t value = mi_load_relaxed_u32(&semaphore->value);
    for (;;) {
        if (count > maximum || value > maximum - count)
            return MI_OVERFLOW;
        /* acq_rel: publishes what the releaser wrote before releasing. */
        if (mi_cas_acq_rel_u32(&semaphore->value, value, value + count))
            break;
        value = mi_load_relaxed_u32(&semaphore->value);
    }
    /* acquire: pairs with a sleeper's increment before it sleeps; if we read
     * 0 the sleeper has not yet slept and its futex_wait sees value != 0. */
    if (mi_load_acquire_u32(&semaphore->sleepers) > 0)
        mi_futex_wake(&semaphore->value, count > INT_MAX ? INT_MAX : (int)count);
    return MI_OK;
}
