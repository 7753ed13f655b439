/* wait.c — spin-then-sleep on a channel's sequence words (see wait.h). */
#include "wait.h"

#include "atomic.h"
#include "futex.h"
#include "spin.h"

int mi_wait_for_change(uint32_t *word, uint32_t seen, uint32_t *asleep, uint32_t *estimate, struct mi_wait *wait,
                       uint64_t *waits_counter, int64_t sleep_until)
{
    int64_t budget = mi_spin_budget(wait, estimate);
    int64_t started = mi_monotonic_ns();
    int spun = budget > 0 && !wait->slept;
    if (spun) {
        int yielded = 0;
        int ready = MI_SPIN_UNTIL(word, value, value != seen, budget, yielded);
        MI_SPIN_LEARN(estimate, wait, ready, yielded);
        if (ready)
            return MI_OK;
    }
    int64_t now = mi_monotonic_ns();
    if (wait->deadline_ns >= 0 && now >= wait->deadline_ns)
        return MI_TIMEOUT;
    if (wait->deadline_ns >= 0 && (sleep_until < 0 || wait->deadline_ns < sleep_until))
        sleep_until = wait->deadline_ns;
    if (!wait->slept)
        mi_fetch_add_relaxed_u64(waits_counter, 1);
    wait->slept = 1;
    mi_fetch_add_acq_rel_u32(asleep, 1);
    /* seq_cst: our "asleep" is visible before we re-check the word, pairing
     * with the waker's fence between its update and its read of "asleep". */
    mi_fence_seq_cst();
    enum mi_result outcome = MI_OK;
    if (mi_load_acquire_u32(word) == seen)
        outcome = mi_futex_wait(word, seen, sleep_until);
    mi_fetch_add_acq_rel_u32(asleep, (uint32_t)-1);
    if (outcome == MI_INTERRUPTED || outcome == MI_ERRNO)
        return outcome;
    if (spun && wait->spin_ns < 0 && mi_load_acquire_u32(word) != seen)
        mi_spin_learn(estimate, mi_monotonic_ns() - started, 0);
    return MI_OK;
}

void mi_announce(uint32_t *sequence, uint32_t *asleep, int count)
{
    mi_fetch_add_acq_rel_u32(sequence, 1);
    mi_fence_seq_cst(); /* pairs with mi_wait_for_change's fence */
    if (mi_load_acquire_u32(asleep) > 0)
        mi_futex_wake(sequence, count);
}

