/* atomic.h — the only file of the C core that spells a memory order.
 *
 * Shared memory holds plain integers that several processes access at once, so
 * every access to a word that changes after publication goes through one of
 * these helpers.  The memory order is part of the helper's name (as Aeron's
 * getVolatile / putOrdered do), so a reader of the calling code sees the
 * ordering without looking here.
 *
 *   acquire load  — later reads in this thread cannot move before it; pairs
 *                   with a release store in the writer.
 *   release store — earlier writes in this thread become visible no later than
 *                   this store; pairs with an acquire load in the reader.
 *   acq_rel RMW   — both: a read-modify-write that publishes and consumes.
 *   relaxed       — atomic but unordered: statistics and hints only.
 *
 * The words live in memory mapped by several processes, so they are plain
 * uint32_t/uint64_t fields in the layout structs; the GCC/Clang __atomic
 * builtins operate on such plain objects (C11 _Atomic would change the types in
 * layout.h).  All addresses must be naturally aligned: layout.h asserts it for
 * every field and module.c checks it for offsets that come from Python.
 */
#ifndef MI_ATOMIC_H
#define MI_ATOMIC_H

#include <stdbool.h>
#include <stdint.h>

static inline uint32_t mi_load_acquire_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint64_t mi_load_acquire_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint32_t mi_load_relaxed_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline uint64_t mi_load_relaxed_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

static inline void mi_store_release_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void mi_store_release_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void mi_store_relaxed_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline void mi_store_relaxed_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

/* Strong compare-and-swap: true if *p held `expected` and now holds `desired`.
 * On failure, acquire so the caller may act on the value it then reloads. */
static inline bool mi_cas_acq_rel_u32(uint32_t *p, uint32_t expected, uint32_t desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline bool mi_cas_acq_rel_u64(uint64_t *p, uint64_t expected, uint64_t desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static inline uint32_t mi_fetch_add_acq_rel_u32(uint32_t *p, uint32_t v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
static inline uint64_t mi_fetch_add_acq_rel_u64(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
static inline uint64_t mi_fetch_add_relaxed_u64(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }

/* seq_cst fence: orders an earlier store before a later load of *another*
 * word (the Dekker pattern of "publish, then check for sleepers" against
 * "announce sleep, then re-check"), which acquire/release alone does not. */
static inline void mi_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

/* Seqlock fences.  acquire: the (relaxed) reads of data before it happen
 * before a later re-check of the word guarding that data, so "the guard did
 * not move" proves the data was not overwritten while we read it.  release:
 * a guard stored before it is visible before (relaxed) writes of data after
 * it, so a reader that sees the new data also sees the moved guard. */
static inline void mi_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void mi_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }

static inline uint32_t mi_exchange_acq_rel_u32(uint32_t *p, uint32_t v) { return __atomic_exchange_n(p, v, __ATOMIC_ACQ_REL); }

#endif
