/* memcpy_bandwidth.c — the copy-bandwidth reference for bench/queue_bench.py.
 *
 * One thread copies SIZE bytes from one buffer to another with memcpy(),
 * REPEATS times, and times every copy with CLOCK_MONOTONIC.  Both buffers are
 * written in full before the first copy, so no page fault is timed, and a few
 * untimed copies come first.  This is the bound a copying queue works
 * against: sending a 16 MiB message is one such memcpy into the ring, and
 * receiving it is another out of it (on the other CPU, at the same time).
 *
 * Usage: memcpy_bandwidth SIZE REPEATS [CPU]
 *   CPU pins the thread (-1 or absent: not pinned).  Prints one JSON object:
 *   {"size": ..., "repeats": ..., "median_ns": ..., "best_ns": ...,
 *    "median_gbps": ..., "best_gbps": ...}, where GB/s counts the bytes
 *   copied (SIZE per copy, not SIZE read + SIZE written), 1 GB = 1e9 bytes.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { WARMUP = 3 };

static int64_t monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static int compare_i64(const void *left, const void *right)
{
    int64_t a = *(const int64_t *)left, b = *(const int64_t *)right;
    return (a > b) - (a < b);
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s SIZE REPEATS [CPU]\n", argv[0]);
        return 2;
    }
    long size = strtol(argv[1], NULL, 10), repeats = strtol(argv[2], NULL, 10);
    int cpu = argc == 4 ? (int)strtol(argv[3], NULL, 10) : -1;
    if (size < 1 || repeats < 1) {
        fprintf(stderr, "SIZE and REPEATS must be >= 1\n");
        return 2;
    }
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0) {
            perror("sched_setaffinity");
            return 2;
        }
    }
    unsigned char *source = aligned_alloc(4096, (size_t)size + 4096);
    unsigned char *target = aligned_alloc(4096, (size_t)size + 4096);
    int64_t *times = malloc((size_t)repeats * sizeof *times);
    if (source == NULL || target == NULL || times == NULL) {
        perror("malloc");
        return 2;
    }
    for (long i = 0; i < size; i++)
        source[i] = (unsigned char)(i * 131 + 7);
    memset(target, 1, (size_t)size);

    for (long i = 0; i < WARMUP + repeats; i++) {
        int64_t start = monotonic_ns();
        memcpy(target, source, (size_t)size);
        /* The copy's result must exist in memory before the clock is read again. */
        __asm__ __volatile__("" : : "r"(target) : "memory");
        int64_t elapsed = monotonic_ns() - start;
        if (i >= WARMUP)
            times[i - WARMUP] = elapsed;
    }
    if (target[size - 1] != source[size - 1]) {
        fprintf(stderr, "memcpy_bandwidth: copy check failed\n");
        return 2;
    }
    qsort(times, (size_t)repeats, sizeof *times, compare_i64);
    int64_t median = times[(repeats - 1) / 2], best = times[0];
    printf("{\"size\": %ld, \"repeats\": %ld, \"median_ns\": %lld, \"best_ns\": %lld, "
           "\"median_gbps\": %.3f, \"best_gbps\": %.3f}\n",
           size, repeats, (long long)median, (long long)best, (double)size / (double)median,
           (double)size / (double)best);
    free(times);
    free(target);
    free(source);
    return 0;
}
