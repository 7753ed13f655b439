/* futex.c — the only place in memipc that makes the futex system call.
 *
 * Design: FUTEX_WAIT_BITSET with FUTEX_BITSET_MATCH_ANY takes an *absolute*
 * timeout on CLOCK_MONOTONIC, which is exactly the deadline the callers hold;
 * plain FUTEX_WAIT would take a relative timeout that must be recomputed on
 * every retry.  The kernel compares *word with `expected` atomically with
 * queueing the waiter, which closes the lost-wake-up window between the
 * caller's check and its sleep (Drepper, "Futexes Are Tricky", 2011).
 *
 * No retry loop lives here: EINTR is returned to the caller as
 * MI_INTERRUPTED, because only the Python boundary (module.c) can tell whether
 * the signal was Ctrl-C that must be delivered as KeyboardInterrupt.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "futex.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int64_t mi_monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

enum mi_result mi_futex_wait(uint32_t *word, uint32_t expected, int64_t deadline_ns)
{
    struct timespec deadline;
    struct timespec *deadline_pointer = NULL;
    if (deadline_ns >= 0) {
        deadline.tv_sec = (time_t)(deadline_ns / 1000000000);
        deadline.tv_nsec = (long)(deadline_ns % 1000000000);
        deadline_pointer = &deadline;
    }
    long rc = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, deadline_pointer, NULL,
                      FUTEX_BITSET_MATCH_ANY);
    if (rc == 0)
        return MI_OK;
    switch (errno) {
    case EAGAIN:    /* *word != expected when we arrived: the change we wait for happened */
        return MI_OK;
    case ETIMEDOUT:
        return MI_TIMEOUT;
    case EINTR:
        return MI_INTERRUPTED;
    default:
        return MI_ERRNO;
    }
}

enum mi_result mi_futex_wait_many(uint32_t *const *words, const uint32_t *expected, int count,
                                  int64_t deadline_ns)
{
#ifdef SYS_futex_waitv
    struct futex_waitv waiters[FUTEX_WAITV_MAX];
    if (count <= 0 || count > FUTEX_WAITV_MAX) {
        errno = EINVAL;
        return MI_ERRNO;
    }
    for (int i = 0; i < count; i++) {
        waiters[i].val = expected[i];
        waiters[i].uaddr = (uint64_t)(uintptr_t)words[i];
        waiters[i].flags = FUTEX_32; /* 32-bit word, shared: no FUTEX_PRIVATE_FLAG */
        waiters[i].__reserved = 0;
    }
    struct timespec deadline;
    struct timespec *deadline_pointer = NULL;
    if (deadline_ns >= 0) {
        deadline.tv_sec = (time_t)(deadline_ns / 1000000000);
        deadline.tv_nsec = (long)(deadline_ns % 1000000000);
        deadline_pointer = &deadline;
    }
    long rc = syscall(SYS_futex_waitv, waiters, (unsigned)count, 0, deadline_pointer, CLOCK_MONOTONIC);
    if (rc >= 0)
        return MI_OK;
    switch (errno) {
    case EAGAIN:
        return MI_OK;
    case ETIMEDOUT:
        return MI_TIMEOUT;
    case EINTR:
        return MI_INTERRUPTED;
    default:
        return MI_ERRNO;
    }
#else
    (void)words;
    (void)expected;
    (void)count;
    (void)deadline_ns;
    errno = ENOSYS;
    return MI_ERRNO;
#endif
}

int mi_futex_wake(uint32_t *word, int count)
{
    if (count <= 0)
        return 0;
    long rc = syscall(SYS_futex, word, FUTEX_WAKE_BITSET, count, NULL, NULL, FUTEX_BITSET_MATCH_ANY);
    return rc < 0 ? -1 : (int)rc;
}
