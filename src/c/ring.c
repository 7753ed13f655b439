/* ring.c — Queue's ring: reserve / commit / claim / release, crash-safe.
 *
 * Protocol (layout and invariants in layout.h, struct mi_ring / mi_record):
 *
 *   producer  reserve:  [producer lock] check room against `release`; write
 *                       a PADDING record to the end if the record would
 *                       straddle it; write the header (state WRITING, our
 *                       identity); publish `tail` (release).  [unlock]
 *             copy the payload, then commit: state COMMITTED (release),
 *             bump `data_sequence`, wake a sleeping consumer.
 *   consumer  claim:    [consumer lock] take the record at `head` if it is
 *                       COMMITTED: state READING with our identity; publish
 *                       `head`.  [unlock]  Skip PADDING.
 *             read the payload, then release: state CONSUMED, and advance
 *             `release` over every consumed or padding record (CAS, so
 *             consumers finishing out of order cooperate).
 *
 * No receiver ever sees a message part-way through writing: it reads only
 * records whose state it loaded as COMMITTED with acquire order, which pairs
 * with the producer's release store after the copy.
 *
 * Crashes.  The locks are robust owned words (mutex.c): a process killed
 * while holding one is taken over.  A producer killed between reserve and
 * commit leaves a WRITING record with its identity: a consumer waiting at
 * that record checks the writer (1 ms after it starts waiting, then every
 * 200 ms) and turns the record into PADDING, counted in `drops`.  A consumer
 * killed between claim and release leaves a READING record with its
 * identity: a producer waiting for room checks the reader and marks the
 * record CONSUMED (also a drop).  So neither blocks the others for more than
 * about a second.  SPSC rings skip both locks: one producer and one consumer
 * process by contract.
 *
 * Every header is validated where it is read: its position must be the one
 * expected, its length at most max_message, its span inside the ring, its
 * state one this protocol allows there; the cursors must satisfy
 * release <= head <= tail <= release + capacity.  Anything else is
 * MI_CORRUPT, never a wild read or write.
 */
#include <limits.h>

#include "atomic.h"
#include "futex.h"
#include "ring.h"
#include "sync.h"
#include "wait.h"

#define FIRST_CHECK_NS 1000000 /* check a stuck peer 1 ms after we start waiting on it */

enum mi_result mi_ring_validate(struct mi_ring *ring, uint64_t size, struct mi_ring_view *view)
{
    uint64_t capacity = mi_load_acquire_u64(&ring->capacity);
    uint64_t max_message = mi_load_acquire_u64(&ring->max_message);
    uint64_t data_offset = mi_load_acquire_u64(&ring->data_offset);
    if (capacity < 2 * MI_RECORD_HEADER || (capacity & (capacity - 1)) != 0 || capacity > (UINT64_C(1) << 40))
        return MI_CORRUPT;
    if (data_offset != sizeof(struct mi_ring) || size < data_offset || size - data_offset < capacity)
        return MI_CORRUPT;
    if (max_message == 0 || max_message > capacity / 2 - MI_RECORD_HEADER)
        return MI_CORRUPT;
    view->ring = ring;
    view->data = (char *)ring + data_offset;
    view->capacity = capacity;
    view->mask = capacity - 1;
    view->max_message = max_message;
    view->spsc = (mi_load_relaxed_u32(&ring->head_block.flags) & MI_RING_SPSC) != 0;
    return MI_OK;
}

static struct mi_record *record_at(const struct mi_ring_view *view, uint64_t position)
{
    return (struct mi_record *)(view->data + (position & view->mask));
}

char *mi_ring_payload(const struct mi_ring_view *view, uint64_t position)
{
    return (char *)record_at(view, position) + MI_RECORD_HEADER;
}

/* Cursors, loaded with acquire and checked against each other.
 *
 * They move while we read them, so the order matters: release, head, tail
 * (each later read can only be larger, so release <= head <= tail holds
 * between consistent reads), then release again for the room check, since
 * the tail we read may already use room freed after our first read of
 * release (reading release once, first, reported a live ring as corrupt
 * under four producers and four consumers).  *release is the second read:
 * the freshest lower bound on the room. */
static int load_cursors(const struct mi_ring_view *view, uint64_t *release, uint64_t *head, uint64_t *tail)
{
    uint64_t first_release = mi_load_acquire_u64(&view->ring->release);
    *head = mi_load_acquire_u64(&view->ring->head);
    *tail = mi_load_acquire_u64(&view->ring->tail);
    *release = mi_load_acquire_u64(&view->ring->release);
    if (first_release > *head || *head > *tail || *release < first_release)
        return MI_CORRUPT;
    /* Records start at multiples of MI_RECORD_HEADER: a cursor that does not
     * would make us read a header at a misaligned address. */
    if ((first_release | *release | *head | *tail) % MI_RECORD_HEADER != 0)
        return MI_CORRUPT;
    if (*tail > *release && *tail - *release > view->capacity)
        return MI_CORRUPT;
    return MI_OK;
}

static void write_identity(struct mi_record *record, const struct mi_self *me)
{
    mi_store_relaxed_u32(&record->pid, me->pid);
    mi_store_relaxed_u32(&record->pidns, me->pidns);
    mi_store_relaxed_u64(&record->start_ticks, me->start_ticks);
}

static int identity_alive(const struct mi_record *record)
{
    return mi_process_alive(mi_load_relaxed_u32(&record->pid), mi_load_relaxed_u64(&record->start_ticks),
                            mi_load_relaxed_u32(&record->pidns));
}

/* Validate the record header at `position` and return its span. */
static int record_span(const struct mi_ring_view *view, uint64_t position, uint32_t state, uint64_t *span)
{
    struct mi_record *record = record_at(view, position);
    if (mi_load_relaxed_u64(&record->position) != position)
        return MI_CORRUPT;
    uint64_t length = mi_load_relaxed_u32(&record->length);
    uint64_t room = view->capacity - (position & view->mask);
    if (state == MI_RECORD_PADDING) {
        if (length + MI_RECORD_HEADER > room)
            return MI_CORRUPT;
    } else if (length > view->max_message) {
        return MI_CORRUPT;
    }
    *span = mi_record_span(length);
    if (*span > room)
        return MI_CORRUPT;
    return MI_OK;
}

/* Advance `release` over consumed and padding records; with `check_dead`,
 * also over records whose reader died.  MI_OK or MI_CORRUPT. */
static int advance_release(const struct mi_ring_view *view, int check_dead)
{
    struct mi_ring *ring = view->ring;
    for (;;) {
        uint64_t release, head, tail;
        if (load_cursors(view, &release, &head, &tail) != MI_OK)
            return MI_CORRUPT;
        if (release >= head)
            return MI_OK; /* nothing to pass over, or others already advanced past our head */
        uint64_t next = release;
        int inconsistent = 0;
        while (next < head) {
            struct mi_record *record = record_at(view, next);
            uint32_t state = mi_load_acquire_u32(&record->state);
            uint64_t span;
            if (state == MI_RECORD_READING && check_dead && !identity_alive(record)) {
                if (mi_cas_acq_rel_u32(&record->state, MI_RECORD_READING, MI_RECORD_CONSUMED)) {
                    mi_fetch_add_relaxed_u64(&ring->drops, 1);
                    mi_fetch_add_relaxed_u64(&ring->lost_reads, 1);
                }
                continue;
            }
            if (state != MI_RECORD_CONSUMED && state != MI_RECORD_PADDING)
                break;
            if (record_span(view, next, state, &span) != MI_OK || span > head - next) {
                inconsistent = 1;
                break;
            }
            next += span;
        }
        if (inconsistent) {
            mi_fence_acquire(); /* the header reads above happen before this re-check */
            /* Another process may have advanced `release` past these records
             * while we walked, and a producer may be writing a new header
             * over one of them (length first, so a header can read as old
             * state and position with the new length).  Only a header that
             * is wrong while `release` stands still is corruption: no
             * producer writes at or above an unchanged `release`. */
            if (mi_load_acquire_u64(&ring->release) == release)
                return MI_CORRUPT;
            continue;
        }
        if (next == release)
            return MI_OK;
        /* acq_rel: producers that see the new release may overwrite the space. */
        if (mi_cas_acq_rel_u64(&ring->release, release, next)) {
            mi_announce(&ring->space_sequence, &ring->producers_asleep, INT_MAX);
            return MI_OK;
        }
    }
}

static int lock_side(const struct mi_ring_view *view, struct mi_owned *lock, struct mi_wait *wait)
{
    if (view->spsc)
        return MI_OK;
    int died = 0;
    int result = mi_owned_lock(lock, &view->ring->head_block, &view->ring->consumer_spin, wait, &died);
    /* A ring lock is never held across calls, so "this thread holds it
     * already" can only mean a forged lock word. */
    return result == MI_DEADLOCK ? MI_CORRUPT : result;
}

static void unlock_side(const struct mi_ring_view *view, struct mi_owned *lock)
{
    if (!view->spsc)
        mi_owned_unlock(lock);
}

/* Move `head` over PADDING records at the head of the ring (a producer
 * that found the ring full does this, so padding nobody reads still frees
 * room).  Consumers move `head` with the same CAS, and a PADDING record
 * never becomes anything else, so both sides compute the same new head. */
static void skip_padding(const struct mi_ring_view *view)
{
    struct mi_ring *ring = view->ring;
    for (int step = 0; step < 1024; step++) {
        uint64_t release, head, tail, span;
        if (load_cursors(view, &release, &head, &tail) != MI_OK || head == tail)
            return;
        struct mi_record *record = record_at(view, head);
        if (mi_load_acquire_u32(&record->state) != MI_RECORD_PADDING
            || record_span(view, head, MI_RECORD_PADDING, &span) != MI_OK || span > tail - head)
            return;
        /* acq_rel: ordered with consumers' CAS on head. */
        mi_cas_acq_rel_u64(&ring->head, head, head + span);
    }
}

int mi_ring_reserve(const struct mi_ring_view *view, uint64_t length, struct mi_wait *wait, uint64_t *position)
{
    struct mi_ring *ring = view->ring;
    if (length > view->max_message)
        return MI_TOO_LARGE;
    const struct mi_self *me = mi_self_get();
    uint64_t need = mi_record_span(length);
    for (;;) {
        uint32_t space_seen = mi_load_acquire_u32(&ring->space_sequence);
        int result = lock_side(view, &ring->producer_lock, wait);
        if (result != MI_OK)
            return result == MI_TIMEOUT ? MI_FULL : result;
        uint64_t release, head, tail;
        if (load_cursors(view, &release, &head, &tail) != MI_OK) {
            unlock_side(view, &ring->producer_lock);
            return MI_CORRUPT;
        }
        uint64_t index = tail & view->mask;
        uint64_t pad = index + need > view->capacity ? view->capacity - index : 0;
        if (tail + pad + need - release <= view->capacity) {
            if (pad) {
                struct mi_record *filler = record_at(view, tail);
                mi_store_relaxed_u32(&filler->length, (uint32_t)(pad - MI_RECORD_HEADER));
                mi_store_relaxed_u64(&filler->position, tail);
                mi_store_relaxed_u32(&filler->state, MI_RECORD_PADDING);
                tail += pad;
            }
            struct mi_record *record = record_at(view, tail);
            mi_store_relaxed_u32(&record->length, (uint32_t)length);
            mi_store_relaxed_u64(&record->position, tail);
            write_identity(record, me);
            mi_store_relaxed_u32(&record->state, MI_RECORD_WRITING);
            /* release: the headers above are visible to any consumer that
             * sees the new tail (its acquire load in load_cursors). */
            mi_store_release_u64(&ring->tail, tail + need);
            unlock_side(view, &ring->producer_lock);
            *position = tail;
            return MI_OK;
        }
        unlock_side(view, &ring->producer_lock);
        /* Full: padding may sit at the head, or a dead reader may hold the oldest record. */
        skip_padding(view);
        int64_t now = mi_monotonic_ns();
        int check = now >= wait->next_check_ns;
        if (check)
            wait->next_check_ns = now + (wait->slept ? MI_LIVENESS_INTERVAL_NS : FIRST_CHECK_NS);
        if (advance_release(view, check) != MI_OK)
            return MI_CORRUPT;
        if (mi_load_acquire_u64(&ring->release) != release)
            continue;
        result = mi_wait_for_change(&ring->space_sequence, space_seen, &ring->producers_asleep, &ring->producer_spin,
                                 wait, &ring->waits, wait->next_check_ns);
        if (result == MI_TIMEOUT)
            return MI_FULL;
        if (result != MI_OK)
            return result;
    }
}

static int finish(const struct mi_ring_view *view, uint64_t position, uint32_t state)
{
    if (position % MI_RECORD_HEADER != 0)
        return MI_CORRUPT;
    struct mi_record *record = record_at(view, position);
    uint64_t span;
    if (record_span(view, position, MI_RECORD_WRITING, &span) != MI_OK
        || mi_load_relaxed_u32(&record->state) != MI_RECORD_WRITING)
        return MI_CORRUPT;
    if (state == MI_RECORD_COMMITTED) {
        mi_fetch_add_relaxed_u64(&view->ring->sent, 1);
        mi_fetch_add_relaxed_u64(&view->ring->bytes_sent, mi_load_relaxed_u32(&record->length));
    } else {
        mi_store_relaxed_u32(&record->length, (uint32_t)(span - MI_RECORD_HEADER));
    }
    /* release: the payload copied before this store is visible to the
     * consumer whose acquire load of `state` sees COMMITTED. */
    mi_store_release_u32(&record->state, state);
    mi_announce(&view->ring->data_sequence, &view->ring->consumers_asleep, 1);
    return MI_OK;
}

int mi_ring_commit(const struct mi_ring_view *view, uint64_t position)
{
    return finish(view, position, MI_RECORD_COMMITTED);
}

int mi_ring_abort(const struct mi_ring_view *view, uint64_t position)
{
    /* The record becomes padding.  Its room comes back when `head` passes
     * it: consumers skip it, and a producer that finds the ring full skips
     * padding at `head` itself (skip_padding), so discarded loans cannot fill
     * a queue nobody reads.  (Moving `tail` back instead let a receiver that
     * read the padding skip a new record reserved at the same place.) */
    return finish(view, position, MI_RECORD_PADDING);
}

int mi_ring_claim(const struct mi_ring_view *view, struct mi_wait *wait, uint64_t *position, uint32_t *length)
{
    struct mi_ring *ring = view->ring;
    const struct mi_self *me = mi_self_get();
    for (;;) {
        uint32_t data_seen = mi_load_acquire_u32(&ring->data_sequence);
        int result = lock_side(view, &ring->consumer_lock, wait);
        if (result != MI_OK)
            return result == MI_TIMEOUT ? MI_EMPTY : result;
        uint64_t release, head, tail;
        int64_t sleep_until = -1;
        for (;;) {
            if (load_cursors(view, &release, &head, &tail) != MI_OK) {
                unlock_side(view, &ring->consumer_lock);
                return MI_CORRUPT;
            }
            if (head == tail)
                break;
            struct mi_record *record = record_at(view, head);
            uint32_t state = mi_load_acquire_u32(&record->state);
            uint64_t span;
            int allowed = state == MI_RECORD_WRITING || state == MI_RECORD_COMMITTED || state == MI_RECORD_PADDING;
            int valid = allowed && record_span(view, head, state, &span) == MI_OK && span <= tail - head;
            /* Even under the consumer lock `head` can move: a producer that
             * found the ring full skips padding at the head, and may then
             * reuse that room, so the bytes we read may be a newer header or
             * the middle of a newer payload.  They are this record's header
             * only if `head` still stands here after reading them (room at
             * or above `head` is never reused). */
            mi_fence_acquire();
            if (mi_load_acquire_u64(&ring->head) != head)
                continue;
            if (!valid) {
                unlock_side(view, &ring->consumer_lock);
                return MI_CORRUPT;
            }
            if (state == MI_RECORD_PADDING) {
                /* acq_rel CAS, not a store: a producer may skip the same padding (skip_padding). */
                mi_cas_acq_rel_u64(&ring->head, head, head + span);
                continue;
            }
            if (state == MI_RECORD_WRITING) {
                int64_t now = mi_monotonic_ns();
                if (wait->next_check_ns == 0 || wait->next_check_ns > now + FIRST_CHECK_NS)
                    wait->next_check_ns = now + FIRST_CHECK_NS; /* first sight of this record */
                if (now >= wait->next_check_ns) {
                    wait->next_check_ns = now + MI_LIVENESS_INTERVAL_NS;
                    if (!identity_alive(record)
                        && mi_cas_acq_rel_u32(&record->state, MI_RECORD_WRITING, MI_RECORD_PADDING)) {
                        mi_store_relaxed_u32(&record->length, (uint32_t)(span - MI_RECORD_HEADER));
                        mi_fetch_add_relaxed_u64(&ring->drops, 1);
                        continue; /* the dead producer's record is now padding */
                    }
                }
                sleep_until = wait->next_check_ns;
                break;
            }
            /* COMMITTED: it is ours. */
            write_identity(record, me);
            /* release: our identity is in place before anyone sees READING. */
            mi_store_release_u32(&record->state, MI_RECORD_READING);
            /* A producer only moves head over PADDING, never over this
             * COMMITTED record, so this CAS should not fail; if head moved
             * anyway, our reads were stale: give the record back, retry. */
            if (!mi_cas_acq_rel_u64(&ring->head, head, head + span)) {
                mi_store_release_u32(&record->state, MI_RECORD_COMMITTED); /* not ours after all */
                continue;
            }
            unlock_side(view, &ring->consumer_lock);
            *position = head;
            *length = mi_load_relaxed_u32(&record->length);
            /* relaxed: statistics; a claimed message no longer waits. */
            mi_fetch_add_relaxed_u64(&ring->received, 1);
            mi_fetch_add_relaxed_u64(&ring->bytes_received, *length);
            return MI_OK;
        }
        unlock_side(view, &ring->consumer_lock);
        advance_release(view, 0); /* padding we skipped may free room */
        result = mi_wait_for_change(&ring->data_sequence, data_seen, &ring->consumers_asleep, &ring->consumer_spin,
                                 wait, &ring->waits, sleep_until);
        if (result == MI_TIMEOUT)
            return MI_EMPTY;
        if (result != MI_OK)
            return result;
    }
}

int mi_ring_release(const struct mi_ring_view *view, uint64_t position)
{
    if (position % MI_RECORD_HEADER != 0)
        return MI_CORRUPT;
    struct mi_record *record = record_at(view, position);
    uint64_t span;
    if (record_span(view, position, MI_RECORD_READING, &span) != MI_OK)
        return MI_CORRUPT;
    /* acq_rel: our reads of the payload happen before the space is reused;
     * a CAS so that a record a producer already declared dropped stays so. */
    if (!mi_cas_acq_rel_u32(&record->state, MI_RECORD_READING, MI_RECORD_CONSUMED))
        return MI_CORRUPT;
    return advance_release(view, 0);
}

uint64_t mi_ring_depth(const struct mi_ring_view *view)
{
    uint64_t sent = mi_load_relaxed_u64(&view->ring->sent);
    uint64_t received = mi_load_relaxed_u64(&view->ring->received);
    return sent > received ? sent - received : 0;
}

/* ---- inspecting a committed record (request/response) ----------------------
 *
 * A Client keeps the position of its request record and, between slices of
 * waiting for the reply, asks what became of it.  The record itself says who
 * took it: a consumer's claim writes its identity and the state READING in
 * one header update under the consumer lock, so "the server that took my call
 * died" needs no extra shared word, and there is no window between a server
 * taking a request and the request naming that server.
 *
 * The room of a record is reused only after `release` passes it, so while
 * release <= position < tail the header at `position` is that record's.  As
 * in advance_release (stale reads), the header is trusted only if `release`
 * still stands at or below `position` after reading it; if it moved past, the
 * record was released meanwhile, and that is the answer.
 */
int mi_ring_inspect(const struct mi_ring_view *view, uint64_t position, uint32_t *status, uint32_t *reader_pid)
{
    struct mi_ring *ring = view->ring;
    *status = MI_INSPECT_RELEASED;
    *reader_pid = 0;
    if (position % MI_RECORD_HEADER != 0)
        return MI_CORRUPT;
    for (int attempt = 0; attempt < 8; attempt++) {
        uint64_t release, head, tail;
        if (load_cursors(view, &release, &head, &tail) != MI_OK)
            return MI_CORRUPT;
        if (position < release)
            return MI_OK; /* consumed and passed over; the room may hold newer records */
        if (position >= tail)
            return MI_CORRUPT; /* never reserved, so not a position any producer was given */
        struct mi_record *record = record_at(view, position);
        /* acquire: pairs with the release stores of `state` in finish() and
         * mi_ring_claim(); the identity written before READING is visible. */
        uint32_t state = mi_load_acquire_u32(&record->state);
        uint64_t recorded = mi_load_relaxed_u64(&record->position);
        uint32_t pid = mi_load_relaxed_u32(&record->pid);
        uint32_t pidns = mi_load_relaxed_u32(&record->pidns);
        uint64_t start_ticks = mi_load_relaxed_u64(&record->start_ticks);
        mi_fence_acquire(); /* the header reads above happen before this re-check */
        if (mi_load_acquire_u64(&ring->release) > position)
            return MI_OK; /* released while we read: the bytes may be a newer header */
        if (recorded != position)
            return MI_CORRUPT;
        switch (state) {
        case MI_RECORD_WRITING:
            *status = MI_INSPECT_WRITING;
            return MI_OK;
        case MI_RECORD_COMMITTED:
            *status = MI_INSPECT_WAITING;
            return MI_OK;
        case MI_RECORD_CONSUMED:
        case MI_RECORD_PADDING:
            return MI_OK; /* released, not yet passed over by `release` */
        case MI_RECORD_READING:
            break;
        default:
            return MI_CORRUPT;
        }
        *reader_pid = pid;
        if (mi_process_alive(pid, start_ticks, pidns)) {
            *status = MI_INSPECT_READING;
            return MI_OK;
        }
        /* The identity was read field by field: a record handed back by a
         * claim whose head CAS failed and claimed again while we read could
         * pair one reader's pid with another's start time.  Trust "dead"
         * only if a second read finds the same reader still holding it. */
        int same = mi_load_acquire_u32(&record->state) == MI_RECORD_READING
                   && mi_load_relaxed_u32(&record->pid) == pid && mi_load_relaxed_u32(&record->pidns) == pidns
                   && mi_load_relaxed_u64(&record->start_ticks) == start_ticks;
        mi_fence_acquire(); /* as above: the second read happens before the re-check */
        if (mi_load_acquire_u64(&ring->release) > position) {
            *reader_pid = 0;
            return MI_OK;
        }
        if (same) {
            *status = MI_INSPECT_READER_DIED;
            return MI_OK;
        }
    }
    /* The header kept changing under us: report it held, the caller asks again later. */
    *status = MI_INSPECT_READING;
    return MI_OK;
}
