/* rwlock.c — a reader/writer lock that survives the death of either side.
 *
 * Writers first take `writer`, a robust owned word (mutex.c), so writers
 * queue among themselves and a dead writer is taken over with owner_died.
 * The writer then closes `gate` (1), which stops new readers, and waits until
 * every reader slot is empty; readers already inside finish first.  Waiting
 * writers thus get in after the current readers, never starved by a stream of
 * new ones (writer preference at the gate).
 *
 * Each reader holds one slot with its pid, thread and start time, so:
 *   - a writer waiting for readers checks the slots' owners at every liveness
 *     interval and clears the slots of dead readers;
 *   - a reader that entered records itself before re-checking the gate, and
 *     backs out if a writer closed it in between (the writer, which closes
 *     the gate before scanning, then sees either the slot or nothing).
 * A reader waiting at a closed gate whose writer died takes the writer word
 * over itself, sets `abandoned` so the next writer still gets owner_died, and
 * reopens the gate.
 */
#include <limits.h>

#include "atomic.h"
#include "futex.h"
#include "spin.h"
#include "sync.h"

static int claim_slot(struct mi_rwlock *rwlock, const struct mi_self *me)
{
    uint32_t start = (me->tid * 2654435761u) % MI_RWLOCK_READER_SLOTS;
    for (uint32_t probe = 0; probe < MI_RWLOCK_READER_SLOTS; probe++) {
        uint32_t index = (start + probe) % MI_RWLOCK_READER_SLOTS;
        struct mi_reader_slot *slot = &rwlock->readers[index];
        if (mi_load_relaxed_u64(&slot->identity) != 0)
            continue;
        /* acq_rel: claims the slot; the writer's scan (acquire) sees it. */
        if (mi_cas_acq_rel_u64(&slot->identity, 0, MI_IDENTITY(me->pid, me->start_ticks))) {
            mi_store_relaxed_u32(&slot->tid, me->tid);
            mi_store_relaxed_u32(&slot->pidns, me->pidns);
            return (int)index;
        }
    }
    return -1;
}

static void free_slot(struct mi_rwlock *rwlock, int index)
{
    struct mi_reader_slot *slot = &rwlock->readers[index];
    mi_store_relaxed_u32(&slot->tid, 0);
    /* release: the reader's reads happen before the writer sees the slot free. */
    mi_store_release_u64(&slot->identity, 0);
    if (mi_load_acquire_u32(&rwlock->gate) != 0) {
        mi_fetch_add_acq_rel_u32(&rwlock->reader_exits, 1);
        mi_futex_wake(&rwlock->reader_exits, 1);
    }
}

/* Reopen the gate for a dead writer: take its word, mark the lock abandoned. */
static int recover_dead_writer(struct mi_rwlock *rwlock, const struct mi_self *me)
{
    uint32_t seen = mi_load_acquire_u32(&rwlock->writer.word);
    uint32_t owner = seen & MI_OWNER_MASK;
    if (owner == 0)
        return 0;
    uint64_t identity = mi_load_acquire_u64(&rwlock->writer.owner_identity);
    if (identity != 0 && MI_IDENTITY_PID(identity) != owner)
        return 0; /* a record in transition: no verdict now (see mutex.c) */
    if (mi_process_alive(owner, identity & 0xffffffffu, mi_load_relaxed_u32(&rwlock->writer.owner_pidns)))
        return 0;
    if (!mi_cas_acq_rel_u32(&rwlock->writer.word, seen, me->pid | (seen & MI_WAITERS_BIT)))
        return 0;
    mi_fetch_add_relaxed_u64(&rwlock->head.owner_deaths, 1);
    /* release: the next writer that reads abandoned == 1 reports owner_died. */
    mi_store_release_u32(&rwlock->abandoned, 1);
    mi_store_release_u32(&rwlock->gate, 0);
    mi_futex_wake(&rwlock->gate, INT_MAX);
    uint32_t previous = mi_exchange_acq_rel_u32(&rwlock->writer.word, 0);
    if (previous & MI_WAITERS_BIT)
        mi_futex_wake(&rwlock->writer.word, 1);
    return 1;
}

int mi_rwlock_acquire_read(struct mi_rwlock *rwlock, struct mi_wait *wait, int *slot_index)
{
    const struct mi_self *me = mi_self_get();
    int64_t budget = mi_spin_budget(wait, &rwlock->spin_estimate);
    for (;;) {
        /* acquire: an open gate means the last writer's writes are visible. */
        if (mi_load_acquire_u32(&rwlock->gate) == 0) {
            int index = claim_slot(rwlock, me);
            if (index >= 0) {
                if (mi_load_acquire_u32(&rwlock->gate) == 0) {
                    mi_spin_learn_wait(&rwlock->spin_estimate, wait);
                    *slot_index = index;
                    mi_fetch_add_relaxed_u64(&rwlock->head.operations, 1);
                    return MI_OK;
                }
                free_slot(rwlock, index); /* a writer closed the gate meanwhile */
            }
        }
        if (budget > 0 && !wait->slept) {
            int yielded = 0;
            int ready = MI_SPIN_UNTIL(&rwlock->gate, value, value == 0, budget, yielded);
            MI_SPIN_LEARN(&rwlock->spin_estimate, wait, ready, yielded);
            budget = 0;
            if (ready)
                continue;
        }
        int64_t now = mi_monotonic_ns();
        if (now >= wait->next_check_ns) {
            wait->next_check_ns = now + MI_LIVENESS_INTERVAL_NS;
            if (recover_dead_writer(rwlock, me))
                continue;
        }
        if (wait->deadline_ns >= 0 && now >= wait->deadline_ns)
            return MI_TIMEOUT;
        int64_t sleep_until = wait->next_check_ns;
        if (wait->deadline_ns >= 0 && wait->deadline_ns < sleep_until)
            sleep_until = wait->deadline_ns;
        if (!wait->slept)
            mi_fetch_add_relaxed_u64(&rwlock->head.contentions, 1);
        wait->slept = 1;
        /* With no free slot (120 readers inside) the gate is open: nap briefly. */
        uint32_t gate = mi_load_acquire_u32(&rwlock->gate);
        if (gate == 0) {
            int64_t nap = mi_monotonic_ns() + 1000000;
            sleep_until = sleep_until < nap ? sleep_until : nap;
        }
        enum mi_result outcome = mi_futex_wait(&rwlock->gate, gate, sleep_until);
        if (outcome == MI_INTERRUPTED || outcome == MI_ERRNO)
            return outcome;
    }
}

int mi_rwlock_release_read(struct mi_rwlock *rwlock, int slot_index)
{
    if (slot_index < 0 || (uint32_t)slot_index >= MI_RWLOCK_READER_SLOTS)
        return MI_NOT_OWNER;
    const struct mi_self *me = mi_self_get();
    struct mi_reader_slot *slot = &rwlock->readers[slot_index];
    if (mi_load_acquire_u64(&slot->identity) != MI_IDENTITY(me->pid, me->start_ticks)
        || mi_load_relaxed_u32(&slot->tid) != me->tid)
        return MI_NOT_OWNER;
    free_slot(rwlock, slot_index);
    return MI_OK;
}

/* 1 when no live reader holds a slot; clears dead readers' slots when `check`. */
static int readers_gone(struct mi_rwlock *rwlock, int check)
{
    int gone = 1;
    for (uint32_t index = 0; index < MI_RWLOCK_READER_SLOTS; index++) {
        struct mi_reader_slot *slot = &rwlock->readers[index];
        uint64_t identity = mi_load_acquire_u64(&slot->identity);
        if (identity == 0)
            continue;
        /* The identity is the claim word itself, so the CAS below clears
         * exactly the reader that was found dead, never a newcomer. */
        if (check && !mi_process_alive(MI_IDENTITY_PID(identity), identity & 0xffffffffu,
                                       mi_load_relaxed_u32(&slot->pidns))) {
            if (mi_cas_acq_rel_u64(&slot->identity, identity, 0)) {
                mi_fetch_add_relaxed_u64(&rwlock->head.owner_deaths, 1);
                continue;
            }
        }
        gone = 0;
    }
    return gone;
}

int mi_rwlock_acquire_write(struct mi_rwlock *rwlock, struct mi_wait *wait, int *owner_died)
{
    if (wait->progress == 0) {
        int died = 0;
        int result = mi_owned_lock(&rwlock->writer, &rwlock->head, &rwlock->spin_estimate, wait, &died);
        if (result != MI_OK)
            return result;
        if (mi_exchange_acq_rel_u32(&rwlock->abandoned, 0) != 0)
            died = 1;
        wait->owner_died = died;
        wait->progress = 1;
        wait->next_check_ns = 0;
        /* acq_rel: readers that re-check the gate after claiming a slot see it closed. */
        mi_exchange_acq_rel_u32(&rwlock->gate, 1);
    }
    for (;;) {
        uint32_t exits = mi_load_acquire_u32(&rwlock->reader_exits);
        int64_t now = mi_monotonic_ns();
        int check = now >= wait->next_check_ns;
        if (check)
            wait->next_check_ns = now + MI_LIVENESS_INTERVAL_NS;
        if (readers_gone(rwlock, check)) {
            *owner_died = wait->owner_died;
            return MI_OK;
        }
        if (wait->deadline_ns >= 0 && now >= wait->deadline_ns)
            return MI_TIMEOUT; /* still holding `writer`: see sync.h */
        int64_t sleep_until = wait->next_check_ns;
        if (wait->deadline_ns >= 0 && wait->deadline_ns < sleep_until)
            sleep_until = wait->deadline_ns;
        wait->slept = 1;
        enum mi_result outcome = mi_futex_wait(&rwlock->reader_exits, exits, sleep_until);
        if (outcome == MI_INTERRUPTED || outcome == MI_ERRNO)
            return outcome;
    }
}

int mi_rwlock_release_write(struct mi_rwlock *rwlock)
{
    if (!mi_owned_held_by_me(&rwlock->writer))
        return MI_NOT_OWNER;
    /* release: the writer's writes are visible to readers that see it open. */
    mi_store_release_u32(&rwlock->gate, 0);
    mi_futex_wake(&rwlock->gate, INT_MAX);
    return mi_owned_unlock(&rwlock->writer);
}
