/* futex.h — sleep until a 32-bit word in shared memory changes.
 *
 * The words live in MAP_SHARED mappings used by several processes, so the
 * shared (non-PRIVATE) futex operations are used: the kernel keys the wait
 * queue by the backing page, and every process that maps the region waits on
 * the same queue whatever address it mapped it at.
 *
 * Deadlines are absolute CLOCK_MONOTONIC nanoseconds, computed once by the
 * caller before any retry (as CPython's semaphore.c does), so retries after
 * EINTR never stretch the total wait.  A negative deadline means "forever".
 */
#ifndef MI_FUTEX_H
#define MI_FUTEX_H

#include <stdint.h>

#include "result.h"

/* Current CLOCK_MONOTONIC time in nanoseconds. */
int64_t mi_monotonic_ns(void);

/* Sleep while *word == expected, until woken or `deadline_ns` passes.
 * MI_OK: woken, or *word already differed (the caller re-checks its condition;
 *        spurious wake-ups are possible).
 * MI_TIMEOUT: the deadline passed.  MI_INTERRUPTED: a signal arrived.
 * MI_ERRNO: the word is not usable as a futex (errno set). */
enum mi_result mi_futex_wait(uint32_t *word, uint32_t expected, int64_t deadline_ns);

/* Sleep until any of `count` words differs from its expected value, a wake
 * on any of them, or the deadline (FUTEX_WAITV, Linux 5.16+).  MI_OK also
 * when a value already differed.  MI_ERRNO with errno ENOSYS on older
 * kernels: the caller then polls. */
enum mi_result mi_futex_wait_many(uint32_t *const *words, const uint32_t *expected, int count,
                                  int64_t deadline_ns);

/* Wake up to `count` sleepers on `word`; returns how many were woken, or -1
 * with errno set. */
int mi_futex_wake(uint32_t *word, int count);

#endif
