/* test_ring_stress.c — Queue's ring at C speed: 4 producer and 4 consumer
 * processes through a 1 KiB ring that wraps every few messages.
 *
 * Python-level stream tests reach a few hundred thousand ring operations a
 * second; here the same protocol runs ten times faster, so races between
 * releasing, reusing and re-reading a record (a consumer walking headers a
 * producer is overwriting) show up in a default test run instead of once
 * in a while under load.  Every message carries (producer, sequence,
 * checksum); the program fails on a torn message, a loss, a duplicate, a
 * per-producer reordering or any MI_CORRUPT from a live ring.
 *
 * Usage: test_ring_stress [messages-per-producer]   (built by tests/test_c_core.py)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "atomic.h"
#include "futex.h"
#include "ring.h"

#define PRODUCERS 4
#define CONSUMERS 4
#define CAPACITY 1024
#define MAX_MESSAGE 200

struct shared {
    uint64_t received[PRODUCERS]; /* messages taken, per producer */
    uint64_t corrupt;             /* MI_CORRUPT results seen */
    uint64_t bad;                 /* torn / reordered / duplicated messages */
    uint64_t last_seen[CONSUMERS][PRODUCERS];
};

static uint32_t checksum(const unsigned char *bytes, size_t length)
{
    uint32_t sum = 2166136261u;
    for (size_t i = 0; i < length; i++)
        sum = (sum ^ bytes[i]) * 16777619u;
    return sum;
}

static uint64_t next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

static struct mi_wait forever(void)
{
    struct mi_wait wait = {.deadline_ns = -1, .spin_ns = 0, .next_check_ns = 0};
    return wait;
}

static int produce(const struct mi_ring_view *view, struct shared *shared, int producer, uint64_t count)
{
    uint64_t random = 0x9e3779b97f4a7c15u * (uint64_t)(producer + 1);
    for (uint64_t sequence = 1; sequence <= count; sequence++) {
        uint64_t length = 16 + next_random(&random) % (MAX_MESSAGE - 16 + 1);
        struct mi_wait wait = forever();
        uint64_t position;
        int result = mi_ring_reserve(view, length, &wait, &position);
        if (result != MI_OK) {
            mi_fetch_add_relaxed_u64(&shared->corrupt, 1);
            fprintf(stderr, "producer %d: reserve returned %d at message %llu\n", producer, result,
                    (unsigned long long)sequence);
            return 1;
        }
        unsigned char *payload = (unsigned char *)mi_ring_payload(view, position);
        uint32_t header[3] = {(uint32_t)producer, (uint32_t)sequence, 0};
        for (uint64_t i = 12; i < length; i++)
            payload[i] = (unsigned char)(sequence * 31 + i);
        header[2] = checksum(payload + 12, length - 12);
        memcpy(payload, header, sizeof header);
        if (mi_ring_commit(view, position) != MI_OK) {
            mi_fetch_add_relaxed_u64(&shared->corrupt, 1);
            return 1;
        }
    }
    return 0;
}

static int consume(const struct mi_ring_view *view, struct shared *shared, int consumer, uint64_t total)
{
    unsigned char copy[MAX_MESSAGE];
    for (;;) {
        uint64_t taken = 0;
        for (int p = 0; p < PRODUCERS; p++)
            taken += mi_load_acquire_u64(&shared->received[p]);
        if (taken >= total)
            return 0;
        struct mi_wait wait = {.deadline_ns = mi_monotonic_ns() + 20000000, .spin_ns = 0, .next_check_ns = 0};
        uint64_t position;
        uint32_t length;
        int result = mi_ring_claim(view, &wait, &position, &length);
        if (result == MI_EMPTY)
            continue;
        if (result != MI_OK) {
            mi_fetch_add_relaxed_u64(&shared->corrupt, 1);
            fprintf(stderr, "consumer %d: claim returned %d\n", consumer, result);
            return 1;
        }
        memcpy(copy, mi_ring_payload(view, position), length);
        result = mi_ring_release(view, position);
        if (result != MI_OK) {
            mi_fetch_add_relaxed_u64(&shared->corrupt, 1);
            fprintf(stderr, "consumer %d: release returned %d\n", consumer, result);
            return 1;
        }
        uint32_t header[3];
        memcpy(header, copy, sizeof header);
        if (length < 16 || header[0] >= PRODUCERS || header[2] != checksum(copy + 12, length - 12)
            || header[1] <= shared->last_seen[consumer][header[0]]) {
            mi_fetch_add_relaxed_u64(&shared->bad, 1);
            fprintf(stderr, "consumer %d: bad message (length %u)\n", consumer, length);
            return 1;
        }
        shared->last_seen[consumer][header[0]] = header[1];
        mi_fetch_add_relaxed_u64(&shared->received[header[0]], 1);
    }
}

int main(int argc, char **argv)
{
    uint64_t per_producer = argc > 1 ? strtoull(argv[1], NULL, 10) : 100000;
    size_t size = sizeof(struct mi_ring) + CAPACITY;
    void *memory = mmap(NULL, size + sizeof(struct shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED)
        return 1;
    struct mi_ring *ring = memory;
    struct shared *shared = (struct shared *)((char *)memory + size);
    ring->capacity = CAPACITY;
    ring->max_message = MAX_MESSAGE;
    ring->data_offset = sizeof(struct mi_ring);
    struct mi_ring_view view;
    if (mi_ring_validate(ring, size, &view) != MI_OK)
        return 1;

    pid_t children[PRODUCERS + CONSUMERS];
    for (int i = 0; i < PRODUCERS + CONSUMERS; i++) {
        children[i] = fork();
        if (children[i] == 0)
            _exit(i < PRODUCERS ? produce(&view, shared, i, per_producer)
                                : consume(&view, shared, i - PRODUCERS, per_producer * PRODUCERS));
    }
    int failed = 0;
    for (int i = 0; i < PRODUCERS + CONSUMERS; i++) {
        int status;
        if (waitpid(children[i], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    }
    for (int p = 0; p < PRODUCERS; p++)
        if (shared->received[p] != per_producer)
            failed = 1;
    printf("%s ring stress: %d producers x %llu messages, %d consumers, corrupt %llu, bad %llu\n",
           failed ? "FAIL" : "ok", PRODUCERS, (unsigned long long)per_producer, CONSUMERS,
           (unsigned long long)shared->corrupt, (unsigned long long)shared->bad);
    return failed;
}
