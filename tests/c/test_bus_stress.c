/* test_bus_stress.c — the publish/subscribe ring at C speed.
 *
 * Two publisher processes and four subscriber processes share a 2 KiB ring.
 * Every message carries (publisher, sequence, checksum).  In "block" mode
 * every subscriber must receive every message, each publisher's in order;
 * in "overwrite" mode (the subscribers read slowly on purpose) nothing torn
 * may come back, each publisher's messages stay in order, and received +
 * missed must equal what was published since the subscriber joined.
 *
 * Usage: test_bus_stress block|overwrite [messages-per-publisher]   (built by tests/test_c_core.py)
 */
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "atomic.h"
#include "bus.h"
#include "futex.h"

#define PUBLISHERS 2
#define SUBSCRIBERS 4
#define CAPACITY 2048
#define MAX_MESSAGE 300

struct shared {
    uint32_t joined;  /* subscribers ready */
    uint32_t publishers_done;
    uint64_t received[SUBSCRIBERS];
    uint64_t missed[SUBSCRIBERS];
    uint64_t bad[SUBSCRIBERS];
};

static uint32_t checksum(const unsigned char *bytes, size_t length)
{
    uint32_t sum = 2166136261u;
    for (size_t i = 0; i < length; i++)
        sum = (sum ^ bytes[i]) * 16777619u;
    return sum;
}

static int publish(const struct mi_bus_view *view, struct shared *shared, int publisher, uint64_t count)
{
    while (mi_load_acquire_u32(&shared->joined) < SUBSCRIBERS)
        sched_yield();
    uint64_t random = 0x9e3779b97f4a7c15u * (uint64_t)(publisher + 3);
    for (uint64_t sequence = 1; sequence <= count; sequence++) {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        uint64_t length = 16 + random % (MAX_MESSAGE - 16 + 1);
        struct mi_wait wait = {.deadline_ns = -1, .spin_ns = 0, .next_check_ns = 0};
        uint64_t position;
        if (mi_bus_reserve(view, length, &wait, &position) != MI_OK) {
            fprintf(stderr, "publisher %d: reserve failed\n", publisher);
            return 1;
        }
        unsigned char *payload = (unsigned char *)mi_bus_payload(view, position);
        for (uint64_t i = 12; i < length; i++)
            payload[i] = (unsigned char)(sequence * 7 + i);
        uint32_t header[3] = {(uint32_t)publisher, (uint32_t)sequence, checksum(payload + 12, length - 12)};
        memcpy(payload, header, sizeof header);
        if (mi_bus_commit(view, position) != MI_OK)
            return 1;
        if (view->overwrite && (sequence & 3) == 0)
            sched_yield(); /* let subscribers keep up often enough to race with us */
    }
    mi_fetch_add_acq_rel_u32(&shared->publishers_done, 1);
    return 0;
}

static int subscribe(const struct mi_bus_view *view, struct shared *shared, int subscriber, uint64_t total)
{
    struct mi_bus_cursor cursor;
    struct mi_wait join_wait = {.deadline_ns = -1, .spin_ns = 0, .next_check_ns = 0};
    if (mi_bus_join(view, 0, &join_wait, &cursor) != MI_OK)
        return 1;
    mi_fetch_add_acq_rel_u32(&shared->joined, 1);
    unsigned char copy[MAX_MESSAGE];
    uint32_t last[PUBLISHERS] = {0};
    for (;;) {
        struct mi_wait wait = {.deadline_ns = mi_monotonic_ns() + 20000000, .spin_ns = 0, .next_check_ns = 0};
        uint64_t position, sequence;
        uint32_t length;
        int result = mi_bus_next(view, &cursor, &wait, &position, &length, &sequence);
        if (result == MI_BUS_EMPTY) {
            if (mi_load_acquire_u32(&shared->publishers_done) == PUBLISHERS
                && cursor.received + cursor.missed >= total)
                break;
            continue;
        }
        if (result != MI_OK) {
            fprintf(stderr, "subscriber %d: next returned %d\n", subscriber, result);
            return 1;
        }
        memcpy(copy, mi_bus_payload(view, position), length);
        if (view->overwrite && (cursor.received & 63) == 0)
            sched_yield(); /* fall behind now and then */
        result = mi_bus_done(view, &cursor, position, length, sequence);
        if (result == MI_BUS_OVERRUN)
            continue;
        if (result != MI_OK) {
            fprintf(stderr, "subscriber %d: done returned %d\n", subscriber, result);
            return 1;
        }
        uint32_t header[3];
        memcpy(header, copy, sizeof header);
        if (length < 16 || header[0] >= PUBLISHERS || header[2] != checksum(copy + 12, length - 12)
            || header[1] <= last[header[0]]) {
            shared->bad[subscriber]++;
            fprintf(stderr, "subscriber %d: bad message (length %u)\n", subscriber, length);
            return 1;
        }
        if (!view->overwrite && header[1] != last[header[0]] + 1) {
            fprintf(stderr, "subscriber %d: gap in block mode\n", subscriber);
            return 1;
        }
        last[header[0]] = header[1];
    }
    shared->received[subscriber] = cursor.received;
    shared->missed[subscriber] = cursor.missed;
    mi_bus_leave(view, &cursor);
    return 0;
}

int main(int argc, char **argv)
{
    int overwrite = argc > 1 && strcmp(argv[1], "overwrite") == 0;
    uint64_t per_publisher = argc > 2 ? strtoull(argv[2], NULL, 10) : 100000;
    size_t size = MI_BUS_DATA_OFFSET + CAPACITY;
    void *memory = mmap(NULL, size + sizeof(struct shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED)
        return 1;
    struct mi_bus *bus = memory;
    struct shared *shared = (struct shared *)((char *)memory + size);
    bus->head_block.flags = overwrite ? MI_BUS_OVERWRITE : 0;
    bus->capacity = CAPACITY;
    bus->max_message = MAX_MESSAGE;
    bus->data_offset = MI_BUS_DATA_OFFSET;
    bus->slots = MI_BUS_SLOTS;
    struct mi_bus_view view;
    if (mi_bus_validate(bus, size, &view) != MI_OK)
        return 1;
    pid_t children[PUBLISHERS + SUBSCRIBERS];
    for (int i = 0; i < PUBLISHERS + SUBSCRIBERS; i++) {
        children[i] = fork();
        if (children[i] == 0)
            _exit(i < SUBSCRIBERS ? subscribe(&view, shared, i, per_publisher * PUBLISHERS)
                                  : publish(&view, shared, i - SUBSCRIBERS, per_publisher));
    }
    int failed = 0;
    for (int i = 0; i < PUBLISHERS + SUBSCRIBERS; i++) {
        int status;
        if (waitpid(children[i], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    }
    uint64_t received = 0, missed = 0;
    for (int s = 0; s < SUBSCRIBERS; s++) {
        if (shared->received[s] + shared->missed[s] != per_publisher * PUBLISHERS || shared->bad[s] != 0)
            failed = 1;
        if (!overwrite && shared->missed[s] != 0)
            failed = 1;
        received += shared->received[s];
        missed += shared->missed[s];
    }
    printf("%s bus stress (%s): %d publishers x %llu messages, %d subscribers, received %llu, missed %llu\n",
           failed ? "FAIL" : "ok", overwrite ? "overwrite" : "block", PUBLISHERS, (unsigned long long)per_publisher,
           SUBSCRIBERS, (unsigned long long)received, (unsigned long long)missed);
    return failed;
}
