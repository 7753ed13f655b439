/* ofd.c — F_OFD_SETLK / F_OFD_SETLKW / F_OFD_GETLK on a descriptor.
 *
 * Kept in C rather than Python's fcntl module because `struct flock` has a
 * platform-specific layout that Python code would have to pack by hand.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ofd.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

static short flock_type(enum mi_lock_type type)
{
    switch (type) {
    case MI_LOCK_READ:
        return F_RDLCK;
    case MI_LOCK_WRITE:
        return F_WRLCK;
    default:
        return F_UNLCK;
    }
}

enum mi_result mi_ofd_lock(int fd, int64_t start, int64_t length, enum mi_lock_type type, int wait)
{
    struct flock request;
    memset(&request, 0, sizeof request);    /* l_pid must be 0 for OFD locks */
    request.l_type = flock_type(type);
    request.l_whence = SEEK_SET;
    request.l_start = (off_t)start;
    request.l_len = (off_t)length;
    if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &request) == 0)
        return MI_OK;
    if (errno == EAGAIN || errno == EACCES)
        return MI_BUSY;
    if (errno == EINTR)
        return MI_INTERRUPTED;
    return MI_ERRNO;
}

enum mi_result mi_ofd_probe(int fd, int64_t start, int64_t length, enum mi_lock_type type,
                            int *held_by_other)
{
    struct flock request;
    memset(&request, 0, sizeof request);
    request.l_type = flock_type(type);
    request.l_whence = SEEK_SET;
    request.l_start = (off_t)start;
    request.l_len = (off_t)length;
    if (fcntl(fd, F_OFD_GETLK, &request) != 0)
        return MI_ERRNO;
    *held_by_other = request.l_type != F_UNLCK;
    return MI_OK;
}
