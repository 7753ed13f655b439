/* wait.h — how channel ends wait for each other: spin, then sleep on a
 * sequence word, woken only when someone is asleep (ring.c, bus.c). */
#ifndef MI_WAIT_H
#define MI_WAIT_H

#include <stdint.h>

#include "sync.h"

/* Wait while *word still holds `seen`: spin within the adaptive budget, then
 * sleep until the word changes, this call's deadline, or `sleep_until`
 * (< 0: none; a liveness check is due then).  `asleep` counts sleepers so
 * that wakers can skip the system call; `waits_counter` counts operations
 * that slept (stats).  MI_OK when the word (probably) changed or
 * `sleep_until` passed, MI_TIMEOUT at the deadline, MI_INTERRUPTED,
 * MI_ERRNO. */
int mi_wait_for_change(uint32_t *word, uint32_t seen, uint32_t *asleep, uint32_t *estimate, struct mi_wait *wait,
                       uint64_t *waits_counter, int64_t sleep_until);

/* Bump *sequence and wake up to `count` sleepers if any are asleep. */
void mi_announce(uint32_t *sequence, uint32_t *asleep, int count);

#endif
