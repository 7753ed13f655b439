/* mutex.c — the robust owned word behind Mutex and RWLock writers.
 *
 * States of `word` (Drepper, "Futexes Are Tricky", mutex 3, with the owner's
 * pid in place of "1"):
 *     0                      free
 *     pid                    held, nobody sleeps
 *     pid | MI_WAITERS_BIT   held, someone may sleep: unlock must wake one
 * A thread that acquires after sleeping sets MI_WAITERS_BIT itself, because
 * it cannot know whether others still sleep (the classic conservative rule).
 *
 * Owner death: a waiter's sleep is cut at the next liveness check; if the
 * owner recorded in `owner_identity` (pid + start time in one word) is gone,
 * the waiter CASes the lock word from the dead owner to itself and reports
 * owner_died.  Two waiters may both see the death; the CAS picks one.  The
 * identity is cleared before the word is released and written after it is
 * taken; a checker uses it only if its pid is the pid in the word it CASes,
 * so an ABA on the word (owner B leaves, C comes and goes, B returns) still
 * pairs B's pid with B's own start time.
 *
 * Rejected: glibc's robust pthread mutexes (the kernel wakes a waiter the
 * instant the owner dies) — their layout is glibc's private business, they
 * cannot be validated against hostile writes, and RWLock writers need the
 * same recovery anyway, which pthread rwlocks do not offer.  The price is up
 * to MI_LIVENESS_INTERVAL_NS before a blocked waiter notices a death.
 */
#include <limits.h>

#include "atomic.h"
#include "futex.h"
#include "spin.h"
#include "sync.h"

enum mi_result mi_sync_check_tag(const struct mi_sync_head *head, uint32_t kind)
{
    /* acquire: pairs with the initializer's release store of the tag. */
    return mi_load_acquire_u32(&head->tag) == MI_TAG(kind) ? MI_OK : MI_CORRUPT;
}

static void record_owner(struct mi_owned *lock, const struct mi_self *me)
{
    /* relaxed: the record is read by liveness checkers that tolerate a
     * missing (0) start time; the lock word itself orders the data. */
    mi_store_relaxed_u32(&lock->owner_tid, me->tid);
    mi_store_relaxed_u32(&lock->owner_pidns, me->pidns);
    /* release: pairs with try_take_over's acquire; the identity is one word. */
    mi_store_release_u64(&lock->owner_identity, MI_IDENTITY(me->pid, me->start_ticks));
}

int mi_owned_held_by_me(const struct mi_owned *lock)
{
    const struct mi_self *me = mi_self_get();
    uint32_t word = mi_load_acquire_u32(&lock->word);
    return (word & MI_OWNER_MASK) == me->pid && mi_load_relaxed_u32(&lock->owner_tid) == me->tid;
}

int mi_owned_try_lock(struct mi_owned *lock, struct mi_sync_head *head)
{
    const struct mi_self *me = mi_self_get();
    /* acq_rel on success: the critical section sees the previous owner's writes. */
    if (!mi_cas_acq_rel_u32(&lock->word, 0, me->pid))
        return 0;
    record_owner(lock, me);
    mi_fetch_add_relaxed_u64(&head->operations, 1);
    return 1;
}

/* Take the word over from a dead owner.  1 if we did. */
static int try_take_over(struct mi_owned *lock, uint32_t seen, const struct mi_self *me)
{
    uint32_t owner = seen & MI_OWNER_MASK;
    uint64_t identity = mi_load_acquire_u64(&lock->owner_identity);
    uint32_t pidns = mi_load_relaxed_u32(&lock->owner_pidns);
    /* An identity of another pid is a record in transition: no verdict now.
     * 0 means not yet recorded: judge by the pid alone. */
    if (identity != 0 && MI_IDENTITY_PID(identity) != owner)
        return 0;
    if (mi_process_alive(owner, identity & 0xffffffffu, pidns))
        return 0;
    /* acq_rel: we now own whatever the dead owner left; keep the waiters bit. */
    return mi_cas_acq_rel_u32(&lock->word, seen, me->pid | (seen & MI_WAITERS_BIT));
}

int mi_owned_lock(struct mi_owned *lock, struct mi_sync_head *head, uint32_t *spin_estimate,
                  struct mi_wait *wait, int *owner_died)
{
    const struct mi_self *me = mi_self_get();
    *owner_died = 0;
    /* acq_rel on success: the critical section sees the previous owner's writes. */
    if (mi_cas_acq_rel_u32(&lock->word, 0, me->pid))
        goto acquired;
    uint32_t seen = mi_load_acquire_u32(&lock->word);
    if ((seen & MI_OWNER_MASK) == me->pid && mi_load_relaxed_u32(&lock->owner_tid) == me->tid)
        return MI_DEADLOCK;

    int64_t budget = mi_spin_budget(wait, spin_estimate);
    if (budget > 0 && !wait->slept) {
        int yielded = 0;
        int ready = MI_SPIN_UNTIL(&lock->word, value, value == 0 && mi_cas_acq_rel_u32(&lock->word, 0, me->pid),
                                  budget, yielded);
        MI_SPIN_LEARN(spin_estimate, wait, ready, yielded);
        if (ready)
            goto acquired;
    }
    for (;;) {
        seen = mi_load_acquire_u32(&lock->word);
        if ((seen & MI_OWNER_MASK) == 0) {
            /* Free (a stray waiters bit alone also means free): take it, and
             * keep waking others on unlock since they may sleep. */
            if (mi_cas_acq_rel_u32(&lock->word, seen, me->pid | MI_WAITERS_BIT))
                goto acquired;
            continue;
        }
        int64_t now = mi_monotonic_ns();
        if (now >= wait->next_check_ns) {
            wait->next_check_ns = now + MI_LIVENESS_INTERVAL_NS;
            if (try_take_over(lock, seen, me)) {
                *owner_died = 1;
                mi_fetch_add_relaxed_u64(&head->owner_deaths, 1);
                goto acquired;
            }
            continue;
        }
        if (wait->deadline_ns >= 0 && now >= wait->deadline_ns)
            return MI_TIMEOUT;
        if (!(seen & MI_WAITERS_BIT)) {
            if (!mi_cas_acq_rel_u32(&lock->word, seen, seen | MI_WAITERS_BIT))
                continue;
            seen |= MI_WAITERS_BIT;
        }
        int64_t sleep_until = wait->next_check_ns;
        if (wait->deadline_ns >= 0 && wait->deadline_ns < sleep_until)
            sleep_until = wait->deadline_ns;
        if (!wait->slept)
            mi_fetch_add_relaxed_u64(&head->contentions, 1);
        wait->slept = 1;
        mi_fetch_add_acq_rel_u32(&lock->sleepers, 1);
        enum mi_result outcome = mi_futex_wait(&lock->word, seen, sleep_until);
        mi_fetch_add_acq_rel_u32(&lock->sleepers, (uint32_t)-1);
        if (outcome == MI_INTERRUPTED || outcome == MI_ERRNO)
            return outcome;
    }
acquired:
    mi_spin_learn_wait(spin_estimate, wait);
    record_owner(lock, me);
    mi_fetch_add_relaxed_u64(&head->operations, 1);
    return MI_OK;
}

int mi_owned_unlock(struct mi_owned *lock)
{
    if (!mi_owned_held_by_me(lock))
        return MI_NOT_OWNER;
    mi_store_relaxed_u64(&lock->owner_identity, 0);
    mi_store_relaxed_u32(&lock->owner_tid, 0);
    /* acq_rel exchange: the critical section's writes are visible to the next
     * owner (release), and we learn whether anyone asked to be woken. */
    uint32_t previous = mi_exchange_acq_rel_u32(&lock->word, 0);
    if (previous & MI_WAITERS_BIT)
        mi_futex_wake(&lock->word, 1);
    return MI_OK;
}
