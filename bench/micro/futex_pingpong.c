/* futex_pingpong.c — the C reference for bench/sync.py's handoff round trip.
 *
 * Two processes (fork) share one anonymous MAP_SHARED page holding two 32-bit
 * words, `ping` and `pong`, each on its own cache line.  Process A signals
 * ping and waits for pong; process B waits for ping and signals pong.  A times
 * every round trip with CLOCK_MONOTONIC and prints p50 / p99 / mean.
 *
 * A word is an auto-reset flag: 1 = signaled, 0 = not.  The waiter consumes
 * the signal by CAS 1 -> 0, so the handoff has the same shape as
 * memipc.Event(manual_reset=False): set() then wait().
 *
 * Modes:
 *   sleep  signal = store 1, FUTEX_WAKE one;  wait = CAS 1 -> 0, else
 *          FUTEX_WAIT while the word is 0.  No spinning at all: the waiter
 *          goes to sleep on its first miss, and the signaller always makes the
 *          wake system call (no "are there waiters" shortcut), the plainest
 *          futex handoff there is.  This is what memipc's spin=0 is compared to.
 *          It waits with no timeout; memipc waits with an absolute deadline
 *          (FUTEX_WAIT_BITSET, 50 ms Ctrl-C slices), and what that costs is
 *          part of what the comparison measures.
 *   spin   signal = store 1;  wait = spin (with the CPU's pause hint) until the
 *          word is 1, then store 0.  No system call: the floor set by the
 *          cache-line transfer between the two CPUs.
 *
 * The futex ops are the shared (non-PRIVATE) ones, as memipc uses: the kernel
 * keys them by the backing shmem page, so both processes meet on one futex.
 *
 * Usage: futex_pingpong MODE ROUND_TRIPS WARMUP CPU_A CPU_B [SAMPLES_FILE]
 *   MODE is sleep, spin or both; CPU_A / CPU_B pin the two processes
 *   (-1 leaves a process unpinned).  Prints one JSON object per mode on
 *   stdout: {"mode": ..., "n": ..., "p50_ns": ..., "p99_ns": ..., "mean_ns": ...}.
 *   With SAMPLES_FILE (one mode only), the round-trip times are also written
 *   there as native int64 nanoseconds, so bench/sync.py can pool rounds
 *   exactly as it pools the Python peers' samples.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The shared page.  Each word has its own cache line so that A's signal and
 * B's signal do not share a line (as two separate memipc events do not). */
struct pingpong {
    _Alignas(64) _Atomic uint32_t ping; /* A signals, B consumes */
    _Alignas(64) _Atomic uint32_t pong; /* B signals, A consumes */
};

enum mode { MODE_SLEEP, MODE_SPIN };

static int64_t monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void futex_wait(_Atomic uint32_t *word, uint32_t expected)
{
    /* EAGAIN (the word changed before we slept) and EINTR both mean "look again". */
    if (syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected, NULL, NULL, 0) < 0 &&
        errno != EAGAIN && errno != EINTR) {
        perror("futex_wait");
        _exit(2);
    }
}

static void futex_wake(_Atomic uint32_t *word)
{
    if (syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, 1, NULL, NULL, 0) < 0) {
        perror("futex_wake");
        _exit(2);
    }
}

static void signal_word(_Atomic uint32_t *word, enum mode mode)
{
    /* release: pairs with the acquire CAS / load in wait_word(), so whatever
     * the signaller wrote before is visible to the process it releases. */
    atomic_store_explicit(word, 1, memory_order_release);
    if (mode == MODE_SLEEP)
        futex_wake(word);
}

static void wait_word(_Atomic uint32_t *word, enum mode mode)
{
    if (mode == MODE_SPIN) {
        /* acquire: pairs with the release store in signal_word(). */
        while (atomic_load_explicit(word, memory_order_acquire) != 1)
            cpu_relax();
        /* relaxed: only this process consumes this word, and the signaller
         * does not store again until we answer on the other word. */
        atomic_store_explicit(word, 0, memory_order_relaxed);
        return;
    }
    for (;;) {
        uint32_t expected = 1;
        /* acquire: pairs with the release store in signal_word(). */
        if (atomic_compare_exchange_strong_explicit(word, &expected, 0, memory_order_acquire,
                                                    memory_order_relaxed))
            return;
        futex_wait(word, 0);
    }
}

static void pin(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        _exit(2);
    }
}

static int compare_i64(const void *left, const void *right)
{
    int64_t a = *(const int64_t *)left, b = *(const int64_t *)right;
    return (a > b) - (a < b);
}

/* Nearest-rank percentile of a sorted array: the same rule bench/sync.py uses. */
static int64_t percentile(const int64_t *sorted, long count, double fraction)
{
    long rank = (long)(fraction * (double)count + 0.999999999);
    if (rank < 1)
        rank = 1;
    if (rank > count)
        rank = count;
    return sorted[rank - 1];
}

static int run(enum mode mode, long round_trips, long warmup, int cpu_a, int cpu_b, const char *samples_path)
{
    struct pingpong *shared =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    atomic_init(&shared->ping, 0);
    atomic_init(&shared->pong, 0);
    long total = warmup + round_trips;
    int64_t *samples = malloc((size_t)round_trips * sizeof *samples);
    if (samples == NULL) {
        perror("malloc");
        return 2;
    }

    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 2;
    }
    if (child == 0) { /* process B */
        pin(cpu_b);
        for (long i = 0; i < total; i++) {
            wait_word(&shared->ping, mode);
            signal_word(&shared->pong, mode);
        }
        _exit(0);
    }
    pin(cpu_a); /* process A */
    for (long i = 0; i < total; i++) {
        int64_t start = monotonic_ns();
        signal_word(&shared->ping, mode);
        wait_word(&shared->pong, mode);
        if (i >= warmup)
            samples[i - warmup] = monotonic_ns() - start;
    }
    int status = 0;
    if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "futex_pingpong: process B failed\n");
        return 2;
    }

    if (samples_path != NULL) {
        FILE *out = fopen(samples_path, "wb");
        if (out == NULL || fwrite(samples, sizeof *samples, (size_t)round_trips, out) != (size_t)round_trips ||
            fclose(out) != 0) {
            perror(samples_path);
            return 2;
        }
    }
    double sum = 0;
    for (long i = 0; i < round_trips; i++)
        sum += (double)samples[i];
    qsort(samples, (size_t)round_trips, sizeof *samples, compare_i64);
    printf("{\"mode\": \"%s\", \"n\": %ld, \"p50_ns\": %lld, \"p99_ns\": %lld, \"mean_ns\": %.1f}\n",
           mode == MODE_SLEEP ? "sleep" : "spin", round_trips,
           (long long)percentile(samples, round_trips, 0.50),
           (long long)percentile(samples, round_trips, 0.99), sum / (double)round_trips);
    fflush(stdout);
    free(samples);
    munmap(shared, 4096);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: %s sleep|spin|both ROUND_TRIPS WARMUP CPU_A CPU_B [SAMPLES_FILE]\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    long round_trips = strtol(argv[2], NULL, 10), warmup = strtol(argv[3], NULL, 10);
    int cpu_a = (int)strtol(argv[4], NULL, 10), cpu_b = (int)strtol(argv[5], NULL, 10);
    const char *samples_path = argc == 7 ? argv[6] : NULL;
    if (round_trips < 1 || warmup < 0) {
        fprintf(stderr, "ROUND_TRIPS must be >= 1 and WARMUP >= 0\n");
        return 2;
    }
    int sleep = strcmp(mode, "sleep") == 0 || strcmp(mode, "both") == 0;
    int spin = strcmp(mode, "spin") == 0 || strcmp(mode, "both") == 0;
    if (!sleep && !spin) {
        fprintf(stderr, "MODE must be sleep, spin or both, not %s\n", mode);
        return 2;
    }
    if (sleep && spin && samples_path != NULL) {
        fprintf(stderr, "SAMPLES_FILE needs a single MODE, not both\n");
        return 2;
    }
    if (sleep && run(MODE_SLEEP, round_trips, warmup, cpu_a, cpu_b, samples_path) != 0)
        return 2;
    if (spin && run(MODE_SPIN, round_trips, warmup, cpu_a, cpu_b, samples_path) != 0)
        return 2;
    return 0;
}
