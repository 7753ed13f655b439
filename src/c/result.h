/* result.h — the one result enum of the C core.
 *
 * Every C function that can fail returns an `enum mi_result`; module.c maps it
 * to a Python exception in exactly one place (raise_for_result).  MI_ERRNO means
 * "look at errno", which module.c turns into OSError with the object's name.
 */
#ifndef MI_RESULT_H
#define MI_RESULT_H

enum mi_result {
    MI_OK = 0,          /* done */
    MI_TIMEOUT = 1,     /* the absolute deadline passed */
    MI_INTERRUPTED = 2, /* a signal arrived; the caller checks for Ctrl-C and retries */
    MI_BUSY = 3,        /* a non-blocking attempt found the resource taken */
    MI_CORRUPT = 4,     /* shared state failed validation → CorruptRegionError */
    MI_ERRNO = 5,       /* a system call failed; errno says why */
};

#endif
