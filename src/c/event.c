/* event.c — Win32-style events (manual and auto reset) and conditions.
 *
 * Manual reset: `state` is 1 while set; waiters sleep while it is 0; set()
 * wakes everyone; clear() stores 0.
 *
 * Auto reset: `state` counts releases not yet taken ("tokens").  A waiter
 * takes a token with a CAS from a positive value.  Waiters that are about to
 * sleep first `register`; set() adds a token but never makes more than
 * registered + 1, so each set() releases one waiter while waiters remain
 * un-released, and a set() with nobody waiting leaves exactly one token
 * (signaled) for the next arrival, as SetEvent does.  A timed-out waiter
 * tries to take a token once more before unregistering, so a set() that
 * counted it is never lost.
 *
 * Condition: a waiter registers (sleepers) and reads `sequence` (prepare)
 * before releasing its mutex, so a notify between the release and the sleep
 * is never lost.  notify(n) grants min(n, sleepers not yet granted) wake-ups
 * in `pending` and bumps `sequence`; a waiter returns only by consuming a
 * grant made after it arrived.  A waiter that dies asleep stays counted in
 * `sleepers` and may leave a grant behind, which a later waiter consumes as
 * a spurious wake-up (allowed, as for pthread conditions: use wait_for).
 */
#include <limits.h>

#include "atomic.h"
#include "futex.h"
#include "spin.h"
#include "sync.h"

static int manual(const struct mi_event *event)
{
    return (mi_load_relaxed_u32(&event->head.flags) & MI_EVENT_MANUAL) != 0;
}

int mi_event_try(struct mi_event *event)
{
    uint32_t state = mi_load_acquire_u32(&event->state);
    if (manual(event))
        return state != 0;
    while (state > 0) {
        /* acq_rel: taking a token sees what the setter published. */
        if (mi_cas_acq_rel_u32(&event->state, state, state - 1))
            return 1;
        state = mi_load_acquire_u32(&event->state);
    }
    return 0;
}

void mi_event_register(struct mi_event *event)
{
    /* acq_rel: set() reads `registered` after adding a token. */
    mi_fetch_add_acq_rel_u32(&event->registered, 1);
}

void mi_event_unregister(struct mi_event *event)
{
    uint32_t registered = mi_load_relaxed_u32(&event->registered);
    while (registered > 0 && !mi_cas_acq_rel_u32(&event->registered, registered, registered - 1))
        registered = mi_load_relaxed_u32(&event->registered);
}

int mi_event_wait(struct mi_event *event, struct mi_wait *wait)
{
    if (mi_event_try(event))
        goto done;
    int64_t budget = mi_spin_budget(wait, &event->spin_estimate);
    if (budget > 0 && !wait->slept) {
        int yielded = 0;
        int ready = MI_SPIN_UNTIL(&event->state, value, value != 0 && mi_event_try(event), budget, yielded);
        MI_SPIN_LEARN(&event->spin_estimate, wait, ready, yielded);
        if (ready)
            goto done;
    }
    mi_event_register(event);
    int result = MI_OK;
    for (;;) {
        if (mi_event_try(event))
            break;
        if (wait->deadline_ns >= 0 && mi_monotonic_ns() >= wait->deadline_ns) {
            result = MI_TIMEOUT;
            break;
        }
        if (!wait->slept)
            mi_fetch_add_relaxed_u64(&event->head.contentions, 1);
        wait->slept = 1;
        enum mi_result outcome = mi_futex_wait(&event->state, 0, wait->deadline_ns);
        if (outcome == MI_INTERRUPTED || outcome == MI_ERRNO) {
            result = outcome;
            break;
        }
    }
    if (result != MI_OK && mi_event_try(event))
        result = MI_OK; /* a set() that counted us arrived at the last moment */
    mi_event_unregister(event);
    if (result != MI_OK)
        return result;
    mi_spin_learn_wait(&event->spin_estimate, wait);
done:
    return MI_OK;
}

void mi_event_set(struct mi_event *event)
{
    mi_fetch_add_relaxed_u64(&event->head.operations, 1);
    if (manual(event)) {
        /* release: what the setter wrote is visible to every woken waiter. */
        mi_store_release_u32(&event->state, 1);
        mi_futex_wake(&event->state, INT_MAX);
        return;
    }
    uint32_t state = mi_load_acquire_u32(&event->state);
    while (state == 0) {
        /* acq_rel: a waiter that takes this token sees what the setter wrote. */
        if (mi_cas_acq_rel_u32(&event->state, 0, 1)) {
            mi_futex_wake(&event->state, 1);
            return;
        }
        state = mi_load_acquire_u32(&event->state);
    }
    /* Already signaled: add a token only for a sleeper we actually woke.  The
     * kernel's count of woken sleepers is the truth about who waits; the
     * `registered` count can include waiters that died asleep, so it only
     * bounds the tokens (see #3's crash test: a dead waiter must not make two
     * sets bank two releases). */
    if (mi_futex_wake(&event->state, 1) <= 0)
        return; /* nobody asleep: stays signaled once (SetEvent on a set event) */
    for (;;) {
        uint32_t registered = mi_load_acquire_u32(&event->registered);
        uint32_t cap = registered >= UINT32_MAX - 1 ? UINT32_MAX : registered + 1;
        if (state >= cap || mi_cas_acq_rel_u32(&event->state, state, state + 1))
            return;
        state = mi_load_acquire_u32(&event->state);
    }
}

void mi_event_clear(struct mi_event *event)
{
    /* release: orders the clear after the clearer's earlier writes. */
    mi_store_release_u32(&event->state, 0);
}

uint32_t mi_condition_prepare(struct mi_condition *condition)
{
    /* acq_rel: notify() reads sleepers after bumping the sequence. */
    mi_fetch_add_acq_rel_u32(&condition->sleepers, 1);
    return mi_load_acquire_u32(&condition->sequence);
}

/* Take one granted wake-up if a notify happened since `sequence`; 1 if taken. */
static int take_wakeup(struct mi_condition *condition, uint32_t sequence)
{
    if (mi_load_acquire_u32(&condition->sequence) == sequence)
        return 0;
    uint32_t pending = mi_load_acquire_u32(&condition->pending);
    while (pending > 0) {
        /* acq_rel: consuming a wake-up sees what the notifier wrote. */
        if (mi_cas_acq_rel_u32(&condition->pending, pending, pending - 1))
            return 1;
        pending = mi_load_acquire_u32(&condition->pending);
    }
    return 0;
}

int mi_condition_sleep(struct mi_condition *condition, uint32_t sequence, struct mi_wait *wait)
{
    for (;;) {
        if (take_wakeup(condition, sequence))
            return MI_OK;
        int64_t now = mi_monotonic_ns();
        if (wait->deadline_ns >= 0 && now >= wait->deadline_ns)
            return MI_TIMEOUT;
        wait->slept = 1;
        uint32_t current = mi_load_acquire_u32(&condition->sequence);
        enum mi_result outcome = mi_futex_wait(&condition->sequence, current, wait->deadline_ns);
        if (outcome == MI_INTERRUPTED || outcome == MI_ERRNO)
            return outcome;
    }
}

void mi_condition_done(struct mi_condition *condition)
{
    uint32_t sleepers = mi_load_relaxed_u32(&condition->sleepers);
    while (sleepers > 0 && !mi_cas_acq_rel_u32(&condition->sleepers, sleepers, sleepers - 1))
        sleepers = mi_load_relaxed_u32(&condition->sleepers);
}

void mi_condition_notify(struct mi_condition *condition, int count)
{
    mi_fetch_add_relaxed_u64(&condition->head.operations, 1);
    if (count <= 0)
        return;
    uint32_t grant = 0;
    for (;;) {
        uint32_t sleepers = mi_load_acquire_u32(&condition->sleepers);
        uint32_t pending = mi_load_acquire_u32(&condition->pending);
        if (sleepers == 0)
            return;
        grant = sleepers > pending ? sleepers - pending : 0;
        if (grant > (uint32_t)count)
            grant = (uint32_t)count;
        /* acq_rel: the grant is visible before the sequence moves. */
        if (grant == 0 || mi_cas_acq_rel_u32(&condition->pending, pending, pending + grant))
            break;
    }
    /* Bump the sequence even when every sleeper seems covered by pending
     * grants: a grant left by a waiter that died or timed out can only be
     * taken by a waiter that saw the sequence move after it arrived. */
    mi_fetch_add_acq_rel_u32(&condition->sequence, 1);
    mi_futex_wake(&condition->sequence, grant > 0 ? (int)grant : 1);
}
