"""L1: who is attached to a segment, and when its name goes away.

The invariant: a memory-backed, non-persistent region's name exists exactly as
long as some live handle has it open (the Win32 lifetime, SPEC §3).

Mechanism (docs/design/lifetime.md explains the races it closes):

* Every handle holds an open-file-description (OFD) **read** lock on the
  header's *attach byte* (byte 0) for as long as it is open.  The kernel drops
  OFD locks when the holder's last descriptor closes, which includes being
  SIGKILLed, so a dead process never keeps a region alive, and pid reuse
  cannot fool it: nothing here trusts a pid.
* A closing handle drops its read lock, then tries to take a write lock
  without waiting.  That succeeds only if no other handle holds the byte,
  i.e. it was the last user; it then unlinks the name while holding the
  write lock.  (Converting the read lock in place would let two handles that
  close together each see the other and both leave the name behind.)
* An opening handle takes its read lock *waiting* (so it queues behind a
  closer that is unlinking), then checks that the name still refers to the
  file it opened.  If a closer unlinked it in between, the opener retries.
* Each handle also claims one row of the attach table by holding a read lock
  on the row's first byte that no other handle holds; it writes its pid and
  start time there for ``info()`` and ``memipc ls``.  The row is display only;
  the locks are the truth.  With more than 64 handles, later ones attach
  unlisted (they still keep the region alive).

Rejected: reference counts in shared memory (a crashed process never
decrements), pid liveness checks alone (pids are reused), and System V
``shm_nattch`` (POSIX shm has no equivalent).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from . import _core
from ._layout import (
    ATTACH_LOCK_BYTE,
    ATTACH_SLOTS,
    PID_LIMIT,
    SLOT_ATTACHED_NS,
    SLOT_PID,
    SLOT_START_TICKS,
    slot_offset,
)
from ._platform import LockType, current

_platform = current


@dataclass(frozen=True, slots=True)
class AttachedUser:
    """One live row of the attach table."""

    pid: int
    start_ticks: int
    attached_realtime_ns: int
    #: True if the pid's current process has the recorded start time.
    verified: bool


def lock_attach_byte(fd: int) -> None:
    """Take this handle's read lock on the attach byte, queueing behind a closer."""
    _platform.lock(fd, ATTACH_LOCK_BYTE, 1, LockType.READ, wait=True)


def in_use_elsewhere(fd: int) -> bool:
    """True if a handle other than ``fd``'s holds the segment open."""
    return _platform.locked_elsewhere(fd, ATTACH_LOCK_BYTE, 1)


def try_lock_exclusive(fd: int) -> bool:
    """Convert/take a write lock on the attach byte: True only if no other handle is attached."""
    return _platform.lock(fd, ATTACH_LOCK_BYTE, 1, LockType.WRITE, wait=False)


def unlock_attach_byte(fd: int) -> None:
    _platform.lock(fd, ATTACH_LOCK_BYTE, 1, LockType.UNLOCK, wait=False)


def last_one_out(fd: int) -> bool:
    """Leave, then take the attach byte exclusively if nobody else holds it.

    Dropping our read lock *before* trying for the write lock matters: two
    handles closing at once would otherwise each see the other's read lock,
    both give up, and leave the name behind.  This way the last to drop
    always succeeds (the others may too, one after another; the unlinker
    checks the name still refers to its file).
    """
    unlock_attach_byte(fd)
    return try_lock_exclusive(fd)


def claim_slot(fd: int, header: memoryview | None) -> int | None:
    """Claim a free attach-table row and record this process in it; None if all are taken.

    ``header`` is the writable header mapping, or None for a read-only handle
    (which then holds its row's lock without being able to fill the row).
    """
    pid = os.getpid()
    start_ticks = _platform.process_start_ticks(pid) or 0
    for index in range(ATTACH_SLOTS):
        lock_byte = slot_offset(index)
        if _platform.locked_elsewhere(fd, lock_byte, 1):
            continue
        if not _platform.lock(fd, lock_byte, 1, LockType.READ, wait=False):
            continue
        # Two handles may both have seen the row free and both hold a read
        # lock now.  Each re-checks after locking; at most one can see no
        # other holder, and the other backs off (see the module docstring).
        if _platform.locked_elsewhere(fd, lock_byte, 1):
            _platform.lock(fd, lock_byte, 1, LockType.UNLOCK, wait=False)
            continue
        if header is not None:
            row = slot_offset(index)
            # Clear the pid first so a reader never pairs it with the old
            # start time; the new pid is stored last (release) and pairs with
            # the acquire load in live_users().
            _core.store_u32(header, row + SLOT_PID, 0)
            _core.store_u64(header, row + SLOT_START_TICKS, start_ticks)
            _core.store_u64(header, row + SLOT_ATTACHED_NS, time.time_ns())
            _core.store_u32(header, row + SLOT_PID, pid)
        return index
    return None


def release_slot(fd: int, header: memoryview | None, index: int | None) -> None:
    """Clear and give up this handle's row."""
    if index is None:
        return
    if header is not None:
        # release: a reader that still sees our lock reads pid 0, "leaving".
        _core.store_u32(header, slot_offset(index) + SLOT_PID, 0)
    _platform.lock(fd, slot_offset(index), 1, LockType.UNLOCK, wait=False)


def live_users(fd: int, header: memoryview, own_slot: int | None) -> list[AttachedUser]:
    """The rows of the attach table whose owner is still attached.

    Row contents come from shared memory and are untrusted: a pid outside the
    possible range is reported as 0, and ``verified`` says whether the pid's
    running process has the recorded start time.
    """
    users = []
    for index in range(ATTACH_SLOTS):
        row = slot_offset(index)
        if index != own_slot and not _platform.locked_elsewhere(fd, row, 1):
            continue
        pid = _core.load_u32(header, row + SLOT_PID)  # acquire: pairs with claim_slot's store
        start_ticks = _core.load_u64(header, row + SLOT_START_TICKS)
        attached_ns = _core.load_u64(header, row + SLOT_ATTACHED_NS)
        if not 0 < pid < PID_LIMIT:
            pid = 0
        verified = pid != 0 and _platform.process_start_ticks(pid) == start_ticks
        users.append(AttachedUser(pid, start_ticks, attached_ns, verified))
    return users


def process_alive(pid: int, start_ticks: int) -> bool:
    """True if ``pid`` is running and is the same process that had ``start_ticks``."""
    return pid > 0 and _platform.process_start_ticks(pid) == start_ticks
