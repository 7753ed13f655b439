/* ring.h — the variable-size message ring behind Queue (layout in layout.h). */
#ifndef MI_RING_H
#define MI_RING_H

#include <stdint.h>

#include "layout.h"
#include "result.h"
#include "sync.h"

#define MI_FULL 110         /* no room before the deadline (the caller sees MI_TIMEOUT-like Full) */
#define MI_EMPTY 111        /* nothing to receive before the deadline */
#define MI_TOO_LARGE 112    /* a message longer than max_message */

/* A validated view of one ring: every number here was read from shared
 * memory once, checked, and is never read from there again. */
struct mi_ring_view {
    struct mi_ring *ring;
    char *data;
    uint64_t capacity;
    uint64_t mask;
    uint64_t max_message;
    int spsc;
};

/* Bytes a record of `length` payload bytes occupies. */
static inline uint64_t mi_record_span(uint64_t length)
{
    return (MI_RECORD_HEADER + length + MI_RECORD_HEADER - 1) & ~(uint64_t)(MI_RECORD_HEADER - 1);
}

/* Check a ring's immutable parameters against the `size` bytes it lives in. */
enum mi_result mi_ring_validate(struct mi_ring *ring, uint64_t size, struct mi_ring_view *view);

/* Producer: reserve a record for `length` bytes (MI_OK, MI_FULL at the
 * deadline, MI_TOO_LARGE, MI_CORRUPT, MI_INTERRUPTED); *position is the
 * record's position; its payload is at mi_ring_payload(). */
int mi_ring_reserve(const struct mi_ring_view *view, uint64_t length, struct mi_wait *wait, uint64_t *position);
char *mi_ring_payload(const struct mi_ring_view *view, uint64_t position);
int mi_ring_commit(const struct mi_ring_view *view, uint64_t position);
int mi_ring_abort(const struct mi_ring_view *view, uint64_t position);

/* Consumer: claim the next committed record (MI_OK, MI_EMPTY, MI_CORRUPT,
 * MI_INTERRUPTED); then read its payload and release it. */
int mi_ring_claim(const struct mi_ring_view *view, struct mi_wait *wait, uint64_t *position, uint32_t *length);
int mi_ring_release(const struct mi_ring_view *view, uint64_t position);

/* Messages committed and not yet consumed (approximate while busy). */
uint64_t mi_ring_depth(const struct mi_ring_view *view);

/* Request/response (Server/Client, src/memipc/_channels/_rpc.py): what became
 * of the record committed at `position`, asked by the producer that committed
 * it while it waits for an answer.  On MI_OK, *status is one of:
 *   MI_INSPECT_RELEASED     consumed and released (its room may be reused)
 *   MI_INSPECT_WAITING      committed, no consumer has claimed it yet
 *   MI_INSPECT_READING      claimed by a consumer that is alive
 *   MI_INSPECT_READER_DIED  claimed by a consumer that has died
 *   MI_INSPECT_WRITING      not committed yet (only its producer sees this)
 * and *reader_pid the claiming process for the two READING states (else 0).
 * MI_CORRUPT if the cursors or the header fail validation. */
#define MI_INSPECT_RELEASED 0u
#define MI_INSPECT_WAITING 1u
#define MI_INSPECT_READING 2u
#define MI_INSPECT_READER_DIED 3u
#define MI_INSPECT_WRITING 4u
int mi_ring_inspect(const struct mi_ring_view *view, uint64_t position, uint32_t *status, uint32_t *reader_pid);

#endif
