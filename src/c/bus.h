/* bus.h — the publish/subscribe ring behind Publisher / Subscriber (layout in layout.h). */
#ifndef MI_BUS_H
#define MI_BUS_H

#include <stdint.h>

#include "layout.h"
#include "result.h"
#include "sync.h"

#define MI_BUS_FULL 120     /* a "block" publisher found no room before the deadline */
#define MI_BUS_EMPTY 121    /* nothing new before the deadline */
#define MI_BUS_TOO_LARGE 122
#define MI_BUS_OVERRUN 123  /* overwrite mode: the message was overwritten while being read */
#define MI_BUS_NO_SLOT 124  /* every subscriber slot is taken by a live subscriber */

/* Parameters read once from shared memory, checked, never read again. */
struct mi_bus_view {
    struct mi_bus *bus;
    struct mi_bus_slot *slots;
    char *data;
    uint64_t capacity;
    uint64_t mask;
    uint64_t max_message;
    int overwrite;
};

/* One subscriber's private state (the shared slot only mirrors it). */
struct mi_bus_cursor {
    uint64_t position;      /* next record to read */
    uint64_t next_sequence; /* sequence number expected next */
    uint32_t slot;
    uint64_t received;
    uint64_t missed;
    uint64_t bytes;
};

enum mi_result mi_bus_validate(struct mi_bus *bus, uint64_t size, struct mi_bus_view *view);

/* Publisher: reserve room for `length` bytes.  On MI_OK the caller holds the
 * publisher lock and must mi_bus_commit or mi_bus_abort. */
int mi_bus_reserve(const struct mi_bus_view *view, uint64_t length, struct mi_wait *wait, uint64_t *position);
char *mi_bus_payload(const struct mi_bus_view *view, uint64_t position);
int mi_bus_commit(const struct mi_bus_view *view, uint64_t position);
void mi_bus_abort(const struct mi_bus_view *view);

/* Subscriber: take a slot, starting at the newest (or oldest intact) record. */
int mi_bus_join(const struct mi_bus_view *view, int earliest, struct mi_wait *wait, struct mi_bus_cursor *cursor);
void mi_bus_leave(const struct mi_bus_view *view, struct mi_bus_cursor *cursor);

/* Wait for the next message: its position, length and sequence (not yet
 * consumed).  Read the payload, then call mi_bus_done: MI_OK, or
 * MI_BUS_OVERRUN when an overwrite publisher overwrote it meanwhile (discard
 * what was read; the next mi_bus_next skips ahead and counts the loss). */
int mi_bus_next(const struct mi_bus_view *view, struct mi_bus_cursor *cursor, struct mi_wait *wait,
                uint64_t *position, uint32_t *length, uint64_t *sequence);
int mi_bus_done(const struct mi_bus_view *view, struct mi_bus_cursor *cursor, uint64_t position, uint32_t length,
                uint64_t sequence);

#endif
