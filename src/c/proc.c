/* proc.c — who am I, and is that process still alive (Linux /proc).
 *
 * Owner records in shared memory hold pid + start time + pid namespace.  A
 * pid alone is not an identity: the kernel recycles pids.  The start time
 * (field 22 of /proc/<pid>/stat, clock ticks since boot) of a recycled pid
 * is later than the one recorded, so a mismatch means "gone".  A zombie
 * (state Z or X) has released nothing yet but will never run again, so it
 * counts as dead: a parent that has not reaped a killed child must not wait
 * for it.  Pids from another pid namespace cannot be looked up here at all;
 * such owners are assumed alive (waiting is safe; stealing would not be).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sync.h"

static struct mi_self process_self;     /* pid, start_ticks, pidns: per process */
static __thread uint32_t thread_id;     /* per thread; 0 until first use */
static __thread uint32_t thread_id_pid; /* the pid thread_id was read in (fork resets) */
static __thread struct mi_self thread_self;

/* Read state and start time of `pid`; 0 on success. */
static int read_stat(uint32_t pid, char *state, uint64_t *start_ticks)
{
    char path[64], buffer[1024];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t length = read(fd, buffer, sizeof buffer - 1);
    close(fd);
    if (length <= 0)
        return -1;
    buffer[length] = '\0';
    /* The command name may contain spaces and ')': fields resume after the last ')'. */
    char *cursor = strrchr(buffer, ')');
    if (cursor == NULL || cursor[1] != ' ')
        return -1;
    cursor += 2;
    *state = *cursor;
    for (int field = 3; field < 22; field++) {
        cursor = strchr(cursor, ' ');
        if (cursor == NULL)
            return -1;
        cursor++;
    }
    char *end;
    errno = 0;
    unsigned long long ticks = strtoull(cursor, &end, 10);
    if (errno != 0 || end == cursor)
        return -1;
    *start_ticks = ticks;
    return 0;
}

static uint32_t own_pidns(void)
{
    struct stat info;
    if (stat("/proc/self/ns/pid", &info) != 0)
        return 0;
    return (uint32_t)info.st_ino;
}

static volatile int forked = 1; /* 1: process_self must be (re)read; set again in a fork child */

static void after_fork_in_child(void)
{
    forked = 1;
}

static void refresh_process(void)
{
    static int registered;
    if (!registered) {
        pthread_atfork(NULL, NULL, after_fork_in_child);
        registered = 1;
    }
    struct mi_self fresh = {.pid = (uint32_t)getpid(), .pidns = own_pidns()};
    char state;
    if (read_stat(fresh.pid, &state, &fresh.start_ticks) != 0)
        fresh.start_ticks = 0;
    process_self = fresh;
    forked = 0;
}

/* Cached: getpid() and gettid() are system calls, and this runs on every
 * lock operation.  A fork() child refreshes through the atfork handler; the
 * thread id is re-read when the process changed under the thread's cache. */
const struct mi_self *mi_self_get(void)
{
    if (forked)
        refresh_process();
    if (thread_id == 0 || thread_id_pid != process_self.pid) {
        thread_id = (uint32_t)syscall(SYS_gettid);
        thread_id_pid = process_self.pid;
        thread_self = process_self;
        thread_self.tid = thread_id;
    }
    return &thread_self;
}

int mi_process_alive(uint32_t pid, uint64_t start_ticks, uint32_t pidns)
{
    if (pid == 0 || pid > MI_OWNER_MASK)
        return 0;
    const struct mi_self *me = mi_self_get();
    if (pidns != 0 && me->pidns != 0 && pidns != me->pidns)
        return 1; /* another pid namespace: cannot tell, so never steal */
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH)
        return 0;
    char state;
    uint64_t ticks;
    if (read_stat(pid, &state, &ticks) != 0)
        return errno == ENOENT ? 0 : 1; /* gone between kill() and open(), or unreadable: assume alive */
    if (state == 'Z' || state == 'X')
        return 0;
    if (start_ticks != 0 && (ticks & 0xffffffffu) != (start_ticks & 0xffffffffu))
        return 0; /* the pid was recycled (identities keep the low 32 bits) */
    return 1;
}
