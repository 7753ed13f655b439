/* test_core.c — the C core without Python: atomics, futex, OFD locks, layout.
 *
 * Built and run by tests/test_c_core.py (also under the sanitizers in CI).
 * Prints one line per check and exits non-zero on the first failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "atomic.h"
#include "futex.h"
#include "layout.h"
#include "ofd.h"

#define CHECK(condition)                                                         \
    do {                                                                         \
        if (!(condition)) {                                                      \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #condition); \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

static uint32_t *shared_word;

static void *wake_after_a_while(void *unused)
{
    (void)unused;
    usleep(20000);
    mi_store_release_u32(shared_word, 1);
    mi_futex_wake(shared_word, 1);
    return NULL;
}

static void *add_many(void *word)
{
    for (int i = 0; i < 100000; i++)
        mi_fetch_add_relaxed_u64((uint64_t *)word, 1);
    return NULL;
}

int main(void)
{
    /* atomics */
    uint32_t small = 0;
    uint64_t big = 0;
    CHECK(mi_cas_acq_rel_u32(&small, 0, 5));
    CHECK(!mi_cas_acq_rel_u32(&small, 0, 6));
    CHECK(mi_load_acquire_u32(&small) == 5);
    CHECK(mi_fetch_add_acq_rel_u64(&big, 3) == 0 && mi_load_relaxed_u64(&big) == 3);
    CHECK(mi_exchange_acq_rel_u32(&small, 9) == 5 && small == 9);
    puts("ok atomics");

    pthread_t threads[4];
    uint64_t counter = 0;
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&threads[i], NULL, add_many, &counter) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);
    CHECK(counter == 400000);
    puts("ok atomic counter under contention");

    /* futex: a shared anonymous page, as the real regions are MAP_SHARED */
    shared_word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(shared_word != MAP_FAILED);
    *shared_word = 0;
    int64_t start = mi_monotonic_ns();
    CHECK(mi_futex_wait(shared_word, 0, start + 30000000) == MI_TIMEOUT);
    CHECK(mi_monotonic_ns() - start >= 29000000);
    puts("ok futex wait times out at the absolute deadline");

    CHECK(mi_futex_wait(shared_word, 1, -1) == MI_OK); /* value differs: returns at once */
    puts("ok futex wait returns when the value already differs");

    pthread_t waker;
    CHECK(pthread_create(&waker, NULL, wake_after_a_while, NULL) == 0);
    while (mi_load_acquire_u32(shared_word) == 0)
        CHECK(mi_futex_wait(shared_word, 0, mi_monotonic_ns() + 5000000000) == MI_OK);
    pthread_join(waker, NULL);
    puts("ok futex wake reaches a sleeper");

    CHECK(mi_futex_wait((uint32_t *)((char *)shared_word + 1), 0, -1) == MI_ERRNO && errno == EINVAL);
    puts("ok misaligned futex word is an error, not a hang");
    munmap(shared_word, 4096);

    /* OFD locks: two descriptions of one file */
    char path[] = "/tmp/memipc-c-test-XXXXXX";
    int first = mkstemp(path);
    CHECK(first >= 0);
    int second = open(path, O_RDWR);
    CHECK(second >= 0);
    unlink(path);
    int held = -1;
    CHECK(mi_ofd_lock(first, 0, 1, MI_LOCK_READ, 0) == MI_OK);
    CHECK(mi_ofd_probe(second, 0, 1, MI_LOCK_WRITE, &held) == MI_OK && held == 1);
    CHECK(mi_ofd_probe(first, 0, 1, MI_LOCK_WRITE, &held) == MI_OK && held == 0);
    CHECK(mi_ofd_lock(second, 0, 1, MI_LOCK_WRITE, 0) == MI_BUSY);
    close(first);
    CHECK(mi_ofd_lock(second, 0, 1, MI_LOCK_WRITE, 0) == MI_OK);
    close(second);
    puts("ok OFD locks follow the open file description");

    /* layout */
    CHECK(sizeof(struct mi_region_header) == MI_HEADER_BYTES);
    CHECK((MI_ABI_VERSION >> 24) == MI_LAYOUT_REVISION);
    const unsigned char *magic = (const unsigned char *)&(uint64_t){MI_MAGIC};
    CHECK(magic[0] == 0x89 && magic[1] == 'M' && magic[7] == '\n');
    puts("ok layout");
    return 0;
}
