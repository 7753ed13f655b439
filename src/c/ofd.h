/* ofd.h — open-file-description byte-range locks (Linux F_OFD_*).
 *
 * memipc uses them to know who is attached to a region in a way that neither a
 * crash nor pid reuse can fool: an OFD lock belongs to the open file
 * description, the kernel drops it when the last descriptor referring to it is
 * closed — including when the process is killed — and F_OFD_GETLK tells any
 * other process whether a byte is still held.  Classic POSIX (F_SETLK) locks
 * would not do: they belong to the process, so closing *any* descriptor of the
 * file drops them, and two handles in one process cannot be told apart.
 *
 * See docs/design/lifetime.md for the protocol built on them.
 */
#ifndef MI_OFD_H
#define MI_OFD_H

#include <stdint.h>

#include "result.h"

enum mi_lock_type { MI_LOCK_READ = 0, MI_LOCK_WRITE = 1, MI_LOCK_UNLOCK = 2 };

/* Take, convert or drop a lock on [start, start+length).  With `wait` the call
 * sleeps until the lock is granted (MI_INTERRUPTED on a signal); without it a
 * conflicting lock gives MI_BUSY. */
enum mi_result mi_ofd_lock(int fd, int64_t start, int64_t length, enum mi_lock_type type, int wait);

/* Would a lock of `type` on [start, start+length) conflict with a lock held
 * through another open file description?  *held_by_other is set to 1 or 0. */
enum mi_result mi_ofd_probe(int fd, int64_t start, int64_t length, enum mi_lock_type type,
                            int *held_by_other);

#endif
