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
 * shared estimate (clamped: it is untrusted shared memory). */
static inline int64_t mi_spin_budget(const struct mi_wait *wait, const uint32_t *estimate)
{
    int64_t budget = wait->spin_ns;
    if (budget < 0) {
        /* relaxed: a hint; any value is safe after clamping. */
        budget = 2 * (int64_t)mi_load_relaxed_u32(estimate) + 4000;
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

/* Move the adaptive estimate a quarter of the way towards how long this
 * wait took in all (spin and sleep).  Waits longer than the cap teach "do not
 * spin" (target 0): spinning could not have won them.  Short waits that the
 * spin missed and the sleep caught teach a longer spin next time, which is
 * what makes a ping-pong partner converge on spinning just long enough. */
static inline void mi_spin_learn(uint32_t *estimate, int64_t waited_ns)
{
    int64_t old = mi_load_relaxed_u32(estimate);
    if (old > MI_SPIN_DEFAULT_MAX_NS)
        old = MI_SPIN_DEFAULT_MAX_NS;
    int64_t target = waited_ns <= MI_SPIN_DEFAULT_MAX_NS ? waited_ns : 0;
    int64_t next = old + (target - old) / 4;
    if (next < 0)
        next = 0;
    /* relaxed: a hint shared by all users of the object; races lose an update at worst. */
    mi_store_relaxed_u32(estimate, (uint32_t)next);
}

/* After a wait that slept, learn from its total length (adaptive mode only). */
static inline void mi_spin_learn_wait(uint32_t *estimate, const struct mi_wait *wait)
{
    if (wait->spin_ns < 0 && wait->slept)
        mi_spin_learn(estimate, mi_monotonic_ns() - wait->start_ns);
}

/* Pause-spin until *word satisfies `ready(word value)` or the budget runs
 * out; past half the budget, yield the CPU between checks so that on an
 * oversubscribed machine the holder gets to run.  Returns 1 if ready. */
#define MI_SPIN_UNTIL(word_pointer, value_name, condition, budget_ns, spent_out)                   \
    ({                                                                                            \
        int ready_ = 0;                                                                           \
        int64_t start_ = mi_monotonic_ns(), now_ = start_;                                        \
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
                if (now_ - start_ >= (budget_ns) / 2)                                             \
                    sched_yield();                                                                \
            }                                                                                     \
            mi_cpu_relax();                                                                       \
        }                                                                                         \
        (spent_out) = mi_monotonic_ns() - start_;                                                 \
        ready_;                                                                                   \
    })

#endif
