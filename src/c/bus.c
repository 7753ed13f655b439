/* bus.c — Publisher / Subscriber: one ring, many readers, each with a cursor.
 *
 * Protocol (layout and offsets in layout.h, struct mi_bus / mi_bus_slot /
 * mi_bus_record):
 *
 *   publisher  [publisher lock] find room (below); move `oldest` past the
 *              records whose room the new record overwrites (store, then a
 *              release fence, then the writes); write a padding header if
 *              the record would straddle the end, the record header and the
 *              payload; publish `tail` (release).  [unlock]  Bump
 *              `data_sequence`, wake sleeping subscribers.
 *   subscriber read the header at its private cursor (below `tail`, loaded
 *              with acquire), read the payload, then in "overwrite" mode
 *              check behind an acquire fence that `oldest` has not passed
 *              the record (else what was read may be torn: discard it and
 *              skip ahead); store the new cursor in its slot (release).
 *
 * Room.  "block": the publisher may overwrite only what every live
 * subscriber has read: `floor` (publisher-only, under the lock) is a lower
 * bound of the live cursors, recomputed from the slots when it is too low.
 * A publisher waiting for room announces itself in `publishers_waiting`
 * *before* its last look at the cursors (seq_cst fence); a subscriber moves
 * its cursor, fences, and bumps `space_sequence` only if someone waits —
 * so no lost wake-up and no system call on the fast path.  "overwrite":
 * the publisher never waits; subscribers detect being lapped.
 *
 * Counting.  Every message carries its sequence number; a subscriber
 * expects `next_sequence` and counts a gap as missed.  So received + missed
 * == sent for every subscriber, and nothing torn is ever returned.
 *
 * Crashes.  The publisher lock is a robust owned word (mutex.c): a publisher
 * killed mid-message is taken over, and since `tail` never moved, nothing of
 * its message is visible.  A "block" publisher that lacks room checks the
 * subscribers that hold it back (1 ms after it starts waiting, then every
 * 200 ms) and frees the slots of dead ones.  Joining takes the publisher
 * lock, so a new subscriber's cursor is in its slot before any publisher
 * computes room.
 *
 * Untrusted memory.  Parameters are read once (mi_bus_validate).  Cursors
 * are checked against each other (oldest <= tail <= oldest + capacity,
 * aligned), headers against their position, kind, length and span, slot
 * cursors against [oldest, tail].  Anything else is MI_CORRUPT.
 */
#include <limits.h>

#include "atomic.h"
#include "bus.h"
#include "futex.h"
#include "ring.h"
#include "sync.h"
#include "wait.h"

enum mi_result mi_bus_validate(struct mi_bus *bus, uint64_t size, struct mi_bus_view *view)
{
    uint64_t capacity = mi_load_acquire_u64(&bus->capacity);
    uint64_t max_message = mi_load_acquire_u64(&bus->max_message);
    uint64_t data_offset = mi_load_acquire_u64(&bus->data_offset);
    if (capacity < 2 * MI_RECORD_HEADER || (capacity & (capacity - 1)) != 0 || capacity > (UINT64_C(1) << 40))
        return MI_CORRUPT;
    if (data_offset != MI_BUS_DATA_OFFSET || size < data_offset || size - data_offset < capacity)
        return MI_CORRUPT;
    if (max_message == 0 || max_message > capacity / 2 - MI_RECORD_HEADER)
        return MI_CORRUPT;
    if (mi_load_acquire_u32(&bus->slots) != MI_BUS_SLOTS)
        return MI_CORRUPT;
    view->bus = bus;
    view->slots = (struct mi_bus_slot *)((char *)bus + sizeof(struct mi_bus));
    view->data = (char *)bus + data_offset;
    view->capacity = capacity;
    view->mask = capacity - 1;
    view->max_message = max_message;
    view->overwrite = (mi_load_relaxed_u32(&bus->head_block.flags) & MI_BUS_OVERWRITE) != 0;
    return MI_OK;
}

static struct mi_bus_record *record_at(const struct mi_bus_view *view, uint64_t position)
{
    return (struct mi_bus_record *)(view->data + (position & view->mask));
}

char *mi_bus_payload(const struct mi_bus_view *view, uint64_t position)
{
    return (char *)record_at(view, position) + MI_RECORD_HEADER;
}

/* `oldest` first, then `tail`: oldest never passes the tail of its time, so
 * this order keeps oldest <= tail.  Only a publisher holding the lock (both
 * stand still then) may also check tail - oldest <= capacity: without it,
 * publishes between the two reads can move tail a whole ring further. */
static int load_ends(const struct mi_bus_view *view, int locked, uint64_t *oldest, uint64_t *tail)
{
    *oldest = mi_load_acquire_u64(&view->bus->oldest);
    *tail = mi_load_acquire_u64(&view->bus->tail);
    if (*oldest > *tail || (*oldest | *tail) % MI_RECORD_HEADER != 0)
        return MI_CORRUPT;
    if (locked && *tail - *oldest > view->capacity)
        return MI_CORRUPT;
    return MI_OK;
}

/* Is the header at `position` a well-formed record below `tail`?  Sets its span. */
static int header_valid(const struct mi_bus_view *view, uint64_t position, uint64_t tail, uint32_t kind,
                        uint64_t length, uint64_t *span)
{
    uint64_t room = view->capacity - (position & view->mask);
    if (kind == MI_BUS_MESSAGE) {
        if (length > view->max_message)
            return 0;
    } else if (kind != MI_BUS_PADDING || length + MI_RECORD_HEADER != room) {
        return 0;
    }
    *span = mi_record_span(length);
    return *span <= room && *span <= tail - position;
}

static int slot_alive(const struct mi_bus_slot *slot, uint64_t identity)
{
    return mi_process_alive(MI_IDENTITY_PID(identity), identity & 0xffffffffu, mi_load_relaxed_u32(&slot->pidns));
}

static uint32_t slots_used(const struct mi_bus_view *view)
{
    uint32_t used = mi_load_acquire_u32(&view->bus->slots_used);
    return used > MI_BUS_SLOTS ? MI_BUS_SLOTS + 1 : used;
}

/* The lowest cursor of the subscribers (`tail` if there are none).
 *
 * Under the publisher lock (`locked`), every claimed slot holds a cursor in
 * [oldest, tail]; anything else is MI_CORRUPT.  Without the lock a joiner
 * may have claimed a slot and not yet stored its cursor, so an out-of-range
 * cursor only means "no room yet".  With `check_dead`, slots whose
 * subscriber died and which hold the publisher back below `needed` are
 * freed. */
static int lowest_cursor(const struct mi_bus_view *view, uint64_t oldest, uint64_t tail, uint64_t needed,
                         int locked, int check_dead, uint64_t *lowest)
{
    uint32_t used = slots_used(view);
    if (used > MI_BUS_SLOTS)
        return MI_CORRUPT;
    uint64_t low = tail;
    for (uint32_t i = 0; i < used; i++) {
        struct mi_bus_slot *slot = &view->slots[i];
        uint64_t identity = mi_load_acquire_u64(&slot->identity);
        if (identity == 0)
            continue;
        uint64_t cursor = mi_load_acquire_u64(&slot->cursor);
        if (cursor < oldest || cursor > tail || cursor % MI_RECORD_HEADER != 0) {
            /* A subscriber killed inside its join (slot claimed, its own
             * cursor not yet stored) leaves the previous occupant's cursor:
             * free the slot if its owner is dead, whatever the schedule of
             * liveness checks. */
            if (!slot_alive(slot, identity)) {
                if (mi_cas_acq_rel_u64(&slot->identity, identity, 0))
                    mi_fetch_add_relaxed_u64(&view->bus->subscribers_lost, 1);
                continue;
            }
            if (locked)
                return MI_CORRUPT;
            cursor = oldest;
        }
        if (check_dead && cursor < needed && !slot_alive(slot, identity)) {
            if (mi_cas_acq_rel_u64(&slot->identity, identity, 0))
                mi_fetch_add_relaxed_u64(&view->bus->subscribers_lost, 1);
            continue;
        }
        if (cursor < low)
            low = cursor;
    }
    *lowest = low;
    return MI_OK;
}

/* Wait until the subscribers may have made room for a record ending at
 * `end`.  Announces the wait before the last look at the cursors (see the
 * header comment). */
static int wait_for_room(const struct mi_bus_view *view, uint32_t seen, uint64_t end, struct mi_wait *wait,
                         int64_t sleep_until)
{
    struct mi_bus *bus = view->bus;
    /* Ask to be woken once the laggards have freed a quarter of the ring
     * beyond what this record needs (but never beyond what has been
     * published): one wake-up per subscriber per stall, not per message. */
    uint64_t tail_now = mi_load_acquire_u64(&bus->tail);
    uint64_t wanted = end - view->capacity + view->capacity / 4;
    mi_store_relaxed_u64(&bus->space_wanted, wanted < tail_now ? wanted : tail_now);
    /* acq_rel: space_wanted is visible to a subscriber that sees us waiting. */
    mi_fetch_add_acq_rel_u32(&bus->publishers_waiting, 1);
    /* seq_cst: our "waiting" is visible before we re-read the cursors,
     * pairing with the subscriber's fence between its cursor store and its
     * read of publishers_waiting. */
    mi_fence_seq_cst();
    uint64_t oldest, tail, low;
    int result = MI_OK;
    if (load_ends(view, 0, &oldest, &tail) != MI_OK)
        result = MI_CORRUPT;
    else if (lowest_cursor(view, oldest, tail, 0, 0, 0, &low) != MI_OK)
        result = MI_CORRUPT;
    else if (end - low > view->capacity)
        result = mi_wait_for_change(&bus->space_sequence, seen, &bus->publishers_asleep, &bus->publisher_spin, wait,
                                    &bus->waits, sleep_until);
    mi_fetch_add_acq_rel_u32(&bus->publishers_waiting, (uint32_t)-1);
    return result;
}

int mi_bus_reserve(const struct mi_bus_view *view, uint64_t length, struct mi_wait *wait, uint64_t *position)
{
    struct mi_bus *bus = view->bus;
    if (length > view->max_message)
        return MI_BUS_TOO_LARGE;
    uint64_t need = mi_record_span(length);
    for (;;) {
        uint32_t space_seen = mi_load_acquire_u32(&bus->space_sequence);
        int died = 0;
        int result = mi_owned_lock(&bus->publisher_lock, &bus->head_block, &bus->publisher_spin, wait, &died);
        if (result == MI_TIMEOUT)
            return MI_BUS_FULL;
        if (result != MI_OK)
            return result; /* MI_DEADLOCK: this thread holds an open loan */
        uint64_t oldest, tail;
        if (load_ends(view, 1, &oldest, &tail) != MI_OK)
            goto corrupt;
        uint64_t index = tail & view->mask;
        uint64_t pad = index + need > view->capacity ? view->capacity - index : 0;
        uint64_t end = tail + pad + need;
        if (!view->overwrite) {
            uint64_t floor = mi_load_relaxed_u64(&bus->floor);
            if (floor < oldest || floor > tail || floor % MI_RECORD_HEADER != 0)
                goto corrupt;
            if (end - floor > view->capacity) {
                int64_t now = mi_monotonic_ns();
                int check = now >= wait->next_check_ns;
                if (check)
                    wait->next_check_ns = now + (wait->slept ? MI_LIVENESS_INTERVAL_NS : 1000000);
                if (lowest_cursor(view, oldest, tail, end - view->capacity, 1, check, &floor) != MI_OK)
                    goto corrupt;
                mi_store_relaxed_u64(&bus->floor, floor);
                if (end - floor > view->capacity) {
                    mi_owned_unlock(&bus->publisher_lock);
                    result = wait_for_room(view, space_seen, end, wait, wait->next_check_ns);
                    if (result == MI_TIMEOUT)
                        return MI_BUS_FULL;
                    if (result != MI_OK)
                        return result;
                    continue;
                }
            }
        }
        /* Move `oldest` past every record whose room the new one takes.
         * Records in [oldest, tail) are written only under this lock. */
        uint64_t limit = end > view->capacity ? end - view->capacity : 0;
        uint64_t next = oldest;
        while (next < limit) {
            struct mi_bus_record *record = record_at(view, next);
            uint64_t span;
            if (mi_load_relaxed_u64(&record->position) != next
                || !header_valid(view, next, tail, mi_load_relaxed_u32(&record->kind),
                                 mi_load_relaxed_u32(&record->length), &span))
                goto corrupt;
            next += span;
        }
        if (next != oldest) {
            mi_store_relaxed_u64(&bus->oldest, next);
            /* release fence: a subscriber that reads any byte we write below
             * also sees the new `oldest` when it re-checks (seqlock). */
            mi_fence_release();
        }
        uint64_t sequence = mi_load_relaxed_u64(&bus->next_sequence);
        if (pad) {
            struct mi_bus_record *filler = record_at(view, tail);
            mi_store_relaxed_u64(&filler->position, tail);
            mi_store_relaxed_u64(&filler->sequence, sequence);
            mi_store_relaxed_u32(&filler->length, (uint32_t)(pad - MI_RECORD_HEADER));
            mi_store_relaxed_u32(&filler->kind, MI_BUS_PADDING);
        }
        struct mi_bus_record *record = record_at(view, tail + pad);
        mi_store_relaxed_u64(&record->position, tail + pad);
        mi_store_relaxed_u64(&record->sequence, sequence);
        mi_store_relaxed_u32(&record->length, (uint32_t)length);
        mi_store_relaxed_u32(&record->kind, MI_BUS_MESSAGE);
        *position = tail + pad;
        return MI_OK; /* still holding the lock */
    corrupt:
        mi_owned_unlock(&bus->publisher_lock);
        return MI_CORRUPT;
    }
}

int mi_bus_commit(const struct mi_bus_view *view, uint64_t position)
{
    struct mi_bus *bus = view->bus;
    struct mi_bus_record *record = record_at(view, position);
    uint64_t length = mi_load_relaxed_u32(&record->length);
    if (position % MI_RECORD_HEADER != 0 || length > view->max_message
        || mi_load_relaxed_u64(&record->position) != position) {
        mi_owned_unlock(&bus->publisher_lock);
        return MI_CORRUPT;
    }
    mi_store_relaxed_u64(&bus->next_sequence, mi_load_relaxed_u64(&bus->next_sequence) + 1);
    /* release: the headers and payload written since reserve are visible to
     * any subscriber whose acquire load of `tail` sees the new value. */
    mi_store_release_u64(&bus->tail, position + mi_record_span(length));
    /* relaxed: statistics. */
    mi_fetch_add_relaxed_u64(&bus->sent, 1);
    mi_fetch_add_relaxed_u64(&bus->bytes_sent, length);
    mi_owned_unlock(&bus->publisher_lock);
    mi_announce(&bus->data_sequence, &bus->subscribers_asleep, INT_MAX);
    return MI_OK;
}

void mi_bus_abort(const struct mi_bus_view *view)
{
    /* Nothing was published: `tail` did not move.  But `oldest` may have
     * moved: in "block" mode past records every subscriber had read (late
     * joiners are no longer offered them); in "overwrite" mode possibly past
     * unread ones, which lagging subscribers then count as missed. */
    mi_owned_unlock(&view->bus->publisher_lock);
}

/* Mirror the cursor into our slot; in "block" mode wake a waiting publisher
 * when we cross the position it waits for (from `previous`). */
static void publish_cursor(const struct mi_bus_view *view, const struct mi_bus_cursor *cursor, uint64_t previous)
{
    struct mi_bus *bus = view->bus;
    struct mi_bus_slot *slot = &view->slots[cursor->slot];
    const struct mi_self *me = mi_self_get();
    /* A publisher that wrongly judged us dead gave the slot away: then we
     * read on from our private cursor but no longer hold anyone back. */
    if (mi_load_relaxed_u64(&slot->identity) != MI_IDENTITY(me->pid, me->start_ticks))
        return;
    /* relaxed: statistics for `memipc info`. */
    mi_store_relaxed_u64(&slot->received, cursor->received);
    mi_store_relaxed_u64(&slot->missed, cursor->missed);
    mi_store_relaxed_u64(&slot->bytes, cursor->bytes);
    mi_store_relaxed_u64(&slot->next_sequence, cursor->next_sequence);
    /* release: our reads of the records below the cursor happen before a
     * publisher that sees the new cursor overwrites them. */
    mi_store_release_u64(&slot->cursor, cursor->position);
    if (view->overwrite)
        return;
    mi_fence_seq_cst(); /* pairs with wait_for_room's fence */
    if (mi_load_acquire_u32(&bus->publishers_waiting) > 0) {
        uint64_t wanted = mi_load_relaxed_u64(&bus->space_wanted);
        if (previous < wanted && cursor->position >= wanted)
            mi_announce(&bus->space_sequence, &bus->publishers_asleep, INT_MAX);
    }
}

int mi_bus_join(const struct mi_bus_view *view, int earliest, struct mi_wait *wait, struct mi_bus_cursor *cursor)
{
    struct mi_bus *bus = view->bus;
    const struct mi_self *me = mi_self_get();
    uint64_t mine = MI_IDENTITY(me->pid, me->start_ticks);
    int died = 0;
    int result = mi_owned_lock(&bus->publisher_lock, &bus->head_block, &bus->publisher_spin, wait, &died);
    if (result != MI_OK)
        return result;
    uint64_t oldest, tail;
    uint32_t used = slots_used(view);
    if (load_ends(view, 1, &oldest, &tail) != MI_OK || used > MI_BUS_SLOTS)
        goto corrupt;
    int64_t chosen = -1;
    for (uint32_t i = 0; i < MI_BUS_SLOTS && chosen < 0; i++)
        if (mi_cas_acq_rel_u64(&view->slots[i].identity, 0, mine))
            chosen = i;
    for (uint32_t i = 0; i < MI_BUS_SLOTS && chosen < 0; i++) {
        uint64_t identity = mi_load_acquire_u64(&view->slots[i].identity);
        if (identity != 0 && !slot_alive(&view->slots[i], identity)
            && mi_cas_acq_rel_u64(&view->slots[i].identity, identity, mine)) {
            mi_fetch_add_relaxed_u64(&bus->subscribers_lost, 1);
            chosen = i;
        }
    }
    if (chosen < 0) {
        mi_owned_unlock(&bus->publisher_lock);
        return MI_BUS_NO_SLOT;
    }
    uint64_t start = earliest ? oldest : tail;
    uint64_t sequence = mi_load_relaxed_u64(&bus->next_sequence);
    if (start < tail) {
        struct mi_bus_record *record = record_at(view, start);
        uint64_t span;
        if (mi_load_relaxed_u64(&record->position) != start
            || !header_valid(view, start, tail, mi_load_relaxed_u32(&record->kind),
                             mi_load_relaxed_u32(&record->length), &span))
            goto corrupt_slot;
        uint64_t first = mi_load_relaxed_u64(&record->sequence);
        if (first > sequence)
            goto corrupt_slot;
        sequence = first;
    }
    struct mi_bus_slot *slot = &view->slots[chosen];
    mi_store_relaxed_u32(&slot->pidns, me->pidns);
    mi_store_relaxed_u32(&slot->pid, me->pid);
    mi_store_relaxed_u64(&slot->start_ticks, me->start_ticks);
    mi_store_relaxed_u64(&slot->received, 0);
    mi_store_relaxed_u64(&slot->missed, 0);
    mi_store_relaxed_u64(&slot->bytes, 0);
    mi_store_relaxed_u64(&slot->next_sequence, sequence);
    /* release: publishers that see this cursor see the fields above. */
    mi_store_release_u64(&slot->cursor, start);
    if ((uint32_t)chosen + 1 > used)
        mi_store_release_u32(&bus->slots_used, (uint32_t)chosen + 1);
    if (!view->overwrite && start < mi_load_relaxed_u64(&bus->floor))
        mi_store_relaxed_u64(&bus->floor, start);
    mi_fetch_add_relaxed_u64(&bus->joins, 1);
    mi_owned_unlock(&bus->publisher_lock);
    *cursor = (struct mi_bus_cursor){.position = start, .next_sequence = sequence, .slot = (uint32_t)chosen};
    return MI_OK;
corrupt_slot:
    mi_store_release_u64(&view->slots[chosen].identity, 0);
corrupt:
    mi_owned_unlock(&bus->publisher_lock);
    return MI_CORRUPT;
}

void mi_bus_leave(const struct mi_bus_view *view, struct mi_bus_cursor *cursor)
{
    struct mi_bus *bus = view->bus;
    const struct mi_self *me = mi_self_get();
    if (cursor->slot >= MI_BUS_SLOTS)
        return;
    /* acq_rel: our reads are done before the slot (and the room it held) is free. */
    mi_cas_acq_rel_u64(&view->slots[cursor->slot].identity, MI_IDENTITY(me->pid, me->start_ticks), 0);
    cursor->slot = UINT32_MAX;
    mi_fence_seq_cst(); /* pairs with wait_for_room's fence */
    if (!view->overwrite && mi_load_acquire_u32(&bus->publishers_waiting) > 0)
        mi_announce(&bus->space_sequence, &bus->publishers_asleep, INT_MAX);
}

int mi_bus_next(const struct mi_bus_view *view, struct mi_bus_cursor *cursor, struct mi_wait *wait,
                uint64_t *position, uint32_t *length, uint64_t *sequence)
{
    struct mi_bus *bus = view->bus;
    uint64_t subscriber_waits = 0;
    for (;;) {
        uint32_t seen = mi_load_acquire_u32(&bus->data_sequence);
        uint64_t oldest, tail;
        if (load_ends(view, 0, &oldest, &tail) != MI_OK || cursor->position > tail)
            return MI_CORRUPT;
        if (cursor->position < oldest) {
            /* Lapped ("overwrite"), or a publisher judged us dead: skip to
             * what is still intact; the sequence gap counts as missed. */
            cursor->position = oldest;
            continue;
        }
        if (cursor->position == tail) {
            int result = mi_wait_for_change(&bus->data_sequence, seen, &bus->subscribers_asleep,
                                            &bus->subscriber_spin, wait, &subscriber_waits, -1);
            if (result == MI_TIMEOUT)
                return MI_BUS_EMPTY;
            if (result != MI_OK)
                return result;
            continue;
        }
        struct mi_bus_record *record = record_at(view, cursor->position);
        uint64_t at = mi_load_relaxed_u64(&record->position);
        uint64_t number = mi_load_relaxed_u64(&record->sequence);
        uint32_t size = mi_load_relaxed_u32(&record->length);
        uint32_t kind = mi_load_relaxed_u32(&record->kind);
        uint64_t span;
        int valid = at == cursor->position && header_valid(view, cursor->position, tail, kind, size, &span);
        /* The header may belong to a newer lap ("overwrite", or a
         * subscriber a publisher wrongly judged dead): trust it only if
         * `oldest` has not passed it (acquire fence: the reads above happen
         * before this check). */
        mi_fence_acquire();
        if (mi_load_acquire_u64(&bus->oldest) > cursor->position)
            continue;
        if (!valid)
            return MI_CORRUPT;
        if (kind == MI_BUS_PADDING) {
            uint64_t previous = cursor->position;
            cursor->position += span;
            publish_cursor(view, cursor, previous);
            continue;
        }
        *position = cursor->position;
        *length = size;
        *sequence = number;
        return MI_OK;
    }
}

int mi_bus_done(const struct mi_bus_view *view, struct mi_bus_cursor *cursor, uint64_t position, uint32_t length,
                uint64_t sequence)
{
    /* acquire fence: the caller's reads of the payload happen before this
     * check; if `oldest` passed the record, they may be torn.  (In "block"
     * mode that happens only to a subscriber judged dead by mistake.) */
    mi_fence_acquire();
    if (mi_load_acquire_u64(&view->bus->oldest) > position)
        return MI_BUS_OVERRUN;
    if (position != cursor->position || length > view->max_message || sequence < cursor->next_sequence)
        return MI_CORRUPT;
    cursor->missed += sequence - cursor->next_sequence;
    cursor->next_sequence = sequence + 1;
    cursor->received += 1;
    cursor->bytes += length;
    cursor->position = position + mi_record_span(length);
    publish_cursor(view, cursor, position);
    return MI_OK;
}
