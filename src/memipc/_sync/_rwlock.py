"""RWLock: a named cross-process reader/writer lock (seed 004's read/write pair, made safe)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import final

from .. import _core
from .._layout import (
    OWNED_SLEEPERS,
    OWNED_WORD,
    OWNER_MASK,
    READER_SLOT_SIZE,
    RWLOCK_GATE,
    RWLOCK_READERS,
    RWLOCK_SIZE,
    RWLOCK_WRITER,
)
from .._names import Scope
from .._region import Region
from ._base import SyncObject, SyncStats


def _initialize(buf: memoryview, offset: int) -> None:
    """A zeroed rwlock is free: gate open, no writer, no readers."""


@final
class RWLock(SyncObject):
    """Many readers or one writer, across processes; writers are not starved.

    A writer that dies holding the lock is survived: the next writer gets it
    with ``owner_died`` set.  A reader that dies is noticed by the waiting
    writer, which clears its place.  Up to 120 readers hold it at once; more
    wait for a place.

        >>> import memipc, uuid
        >>> table = memipc.RWLock("doc-" + uuid.uuid4().hex[:8])
        >>> with table.read():
        ...     table.acquire_read(timeout=0.1)
        True
        >>> table.release_read()
        >>> with table.write():
        ...     table.owner_died
        False
        >>> table.close()
    """

    _KIND = "rwlock"
    _SIZE = RWLOCK_SIZE

    _owner_died: bool = False

    def __init__(
        self,
        name: str,
        *,
        create: bool | None = None,
        scope: Scope | None = None,
        mode: int | None = None,
        spin: float | None = None,
    ) -> None:
        self._set_spin(spin)
        self._slots = threading.local()
        self._attach_named(name, create, scope, mode, _initialize)

    @classmethod
    def in_region(cls, region: Region, offset: int, *, spin: float | None = None) -> RWLock:
        """An rwlock living at ``offset`` of ``region`` (2048 bytes, 8-aligned)."""
        rwlock = cls.__new__(cls)
        rwlock._set_spin(spin)
        rwlock._slots = threading.local()
        rwlock._attach_in_region(region, offset, _initialize)
        return rwlock

    def _held_slots(self) -> list[int]:
        slots: list[int] | None = getattr(self._slots, "stack", None)
        if slots is None:
            slots = self._slots.stack = []
        return slots

    def acquire_read(self, timeout: float | None = None) -> bool:
        """Enter as a reader; False if ``timeout`` seconds pass first."""
        slot = self._handle.rw_acquire(False, timeout, self._spin)
        if slot < 0:
            return False
        self._held_slots().append(slot)
        return True

    def release_read(self) -> None:
        """Leave as a reader; RuntimeError if this thread is not reading."""
        slots = self._held_slots()
        if not slots:
            raise RuntimeError(f"release_read: the calling thread holds no read lock on {self!r}")
        self._handle.rw_release(False, slots[-1])
        slots.pop()

    def acquire_write(self, timeout: float | None = None) -> bool:
        """Enter as the writer; False if ``timeout`` seconds pass first."""
        outcome = self._handle.rw_acquire(True, timeout, self._spin)
        if outcome < 0:
            return False
        self._owner_died = outcome == 1
        return True

    def release_write(self) -> None:
        """Leave as the writer; RuntimeError if this thread is not writing."""
        self._handle.rw_release(True)

    @property
    def owner_died(self) -> bool:
        """True if a writer died holding the lock before the current write acquisition."""
        return self._owner_died

    @contextmanager
    def read(self, timeout: float | None = None) -> Iterator[RWLock]:
        """``with rw.read():`` — TimeoutError if ``timeout`` passes first."""
        if not self.acquire_read(timeout):
            raise TimeoutError(f"could not read-lock {self!r} within {timeout} s")
        try:
            yield self
        finally:
            self.release_read()

    @contextmanager
    def write(self, timeout: float | None = None) -> Iterator[RWLock]:
        """``with rw.write():`` — TimeoutError if ``timeout`` passes first."""
        if not self.acquire_write(timeout):
            raise TimeoutError(f"could not write-lock {self!r} within {timeout} s")
        try:
            yield self
        finally:
            self.release_write()

    def stats(self) -> SyncStats:
        buf = self._live()
        base = self._offset
        readers = sum(
            1
            for index in range(_core.RWLOCK_READER_SLOTS)
            if _core.load_u64(buf, base + RWLOCK_READERS + index * READER_SLOT_SIZE)
        )
        writer = _core.load_u32(buf, base + RWLOCK_WRITER + OWNED_WORD) & OWNER_MASK
        sleepers = _core.load_u32(buf, base + RWLOCK_WRITER + OWNED_SLEEPERS)
        gate_closed = bool(_core.load_u32(buf, base + RWLOCK_GATE))
        return self._stats(
            sleepers, {"readers": readers, "writer_pid": writer or None, "gate_closed": gate_closed}
        )


RWLock.__module__ = "memipc"
