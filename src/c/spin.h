/* spin.h — the spin half of SpinThenFutexWait. */
#ifndef MI_SPIN_H
#define MI_SPIN_H

#include <sched.h>
#include <stdint.h>

#include "atomic.h"
#include "futex.h"
#include "sync.h"

static inline void mi_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* The spin budget for this wait: fixed, zero, or adaptive from the object's
 * shared estimate (clamped: it is untrusted shared memory; 0 means fresh). */
static inline int64_t mi_spin_budget(const struct mi_wait *wait, const uint32_t *estimate)
{
    int64_t budget = wait->spin_ns;
    /* Affinity to one CPU does not mean sharing it with the partner (a
     * pinned pair sits on two CPUs), so the budget never looks at it: a
     * partner that needs our CPU shows up as catches that needed a yield,
     * which MI_SPIN_LEARN counts as misses. */
    if (budget < 0) {
        /* relaxed: a hint; any value is safe after clamping. */
        budget = mi_load_relaxed_u32(estimate);
        if (budget == 0)
            budget = MI_SPIN_DEFAULT_MAX_NS / 2;
        if (budget < MI_SPIN_MIN_NS)
            budget = MI_SPIN_MIN_NS;
        if (budget > MI_SPIN_DEFAULT_MAX_NS)
            budget = MI_SPIN_DEFAULT_MAX_NS;
    }
    /* Never spin past this call's deadline (the caller's timeout, or the
     * 50 ms slice after which Ctrl-C is checked). */
    if (wait->deadline_ns >= 0) {
        int64_t left = wait->deadline_ns - mi_monotonic_ns();
        if (budget > left)
            budget = left > 0 ? left : 0;
    }
    return budget;
}

/* Adapt the budget after a wait:
 *   - the spin caught the change: grow halfway to the cap;
 *   - the spin missed, but the change came within the cap (a near miss:
 *     spinning a little longer would have saved the sleep): grow too;
 *   - the change came later than the cap: spinning could not have won;
 *     shrink by an eighth, down to MI_SPIN_MIN_NS.
 * A responsive partner (a ping-pong, a busy lock) thus keeps the budget near
 * the cap, where one cross-CPU futex wake-up (~20 µs here) is the price
 * avoided, while an idle one decays it within a few dozen waits so that
 * spinning costs little CPU.  Judging near misses by the whole wait, not by
 * the spin alone, is what lets a pair that fell asleep (during a warm-up, or
 * while descheduled on a loaded machine) find its way back to spinning. */
static inline void mi_spin_learn(uint32_t *estimate, int64_t waited_ns, int caught_by_spin)
{
    int64_t old = mi_load_relaxed_u32(estimate);
    if (old == 0)
        old = MI_SPIN_DEFAULT_MAX_NS / 2;
    if (old > MI_SPIN_DEFAULT_MAX_NS)
        old = MI_SPIN_DEFAULT_MAX_NS;
    int grow = caught_by_spin || (waited_ns >= 0 && waited_ns <= MI_SPIN_DEFAULT_MAX_NS);
    int64_t next = grow ? old + (MI_SPIN_DEFAULT_MAX_NS - old) / 2 : old - old / 8;
    if (next < MI_SPIN_MIN_NS)
        next = MI_SPIN_MIN_NS;
    /* relaxed: a hint shared by all users of the object; races lose an update at worst. */
    mi_store_relaxed_u32(estimate, (uint32_t)next);
}

/* After a wait that slept (adaptive mode only): learn from its whole length. */
static inline void mi_spin_learn_wait(uint32_t *estimate, const struct mi_wait *wait)
{
    if (wait->spin_ns < 0 && wait->slept)
        mi_spin_learn(estimate, mi_monotonic_ns() - wait->start_ns, 0);
}

/* Pause-spin until *word satisfies `ready(word value)` or the budget runs
 * out; past half the budget, yield the CPU between checks so that on an
 * oversubscribed machine the holder gets to run.  Returns 1 if ready. */
#define MI_SPIN_UNTIL(word_pointer, value_name, condition, budget_ns, yielded_out)                 \
    ({                                                                                            \
        int ready_ = 0;                                                                           \
        int64_t start_ = mi_monotonic_ns(), now_ = start_;                                        \
        (yielded_out) = 0;                                                                        \
        for (unsigned iteration_ = 0; (budget_ns) > 0; iteration_++) {                            \
            uint32_t value_name = mi_load_relaxed_u32(word_pointer);                              \
            if (condition) {                                                                      \
                ready_ = 1;                                                                       \
                break;                                                                            \
            }                                                                                     \
            if ((iteration_ & 31u) == 0) {                                                        \
                now_ = mi_monotonic_ns();                                                         \
                if (now_ - start_ >= (budget_ns))                                                 \
                    break;                                                                        \
                if (now_ - start_ >= (budget_ns) / 2) {                                           \
                    sched_yield();                                                                \
                    (yielded_out) = 1;                                                            \
                }                                                                                 \
            }                                                                                     \
            mi_cpu_relax();                                                                       \
        }                                                                                         \
        ready_;                                                                                   \
    })

/* Learn from a spin that caught the change: a success.  (Counting a catch
 * that needed a sched_yield as a miss was tried: it fixes two processes
 * sharing one CPU, but on two CPUs host noise then talks a ping-pong out of
 * spinning for whole rounds: bench/RESULTS.md, issue 3.  `yielded` is kept
 * for that trade-off to be revisited.) */
#define MI_SPIN_LEARN(estimate, wait, ready, yielded)                                              \
    do {                                                                                          \
        (void)(yielded);                                                                          \
        if ((wait)->spin_ns < 0 && (ready))                                                       \
            mi_spin_learn((estimate), 0, 1);                                                      \
    } while (0)

#endif
