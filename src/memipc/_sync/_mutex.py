"""Mutex: a named, robust, cross-process lock (Win32 named mutex, WAIT_ABANDONED)."""

from __future__ import annotations

from types import TracebackType
from typing import final

from .. import _core
from .._layout import MUTEX_LOCK, MUTEX_SIZE, OWNED_SLEEPERS, OWNED_WORD, OWNER_MASK
from .._names import Scope
from .._region import Region
from ._base import SyncObject, SyncStats


def _initialize(buf: memoryview, offset: int) -> None:
    """A zeroed mutex is an unlocked one: nothing to write."""


@final
class Mutex(SyncObject):
    """A lock shared by processes, that survives its owner's death.

    ``Mutex(name)`` opens the mutex, creating it if needed (``create=True``
    insists on creating, ``create=False`` on opening).  If a process dies
    while holding it, the next acquirer gets it with ``owner_died`` set — the
    data it protects may be half-updated — instead of waiting for ever.

        >>> import memipc, uuid
        >>> lock = memipc.Mutex("doc-" + uuid.uuid4().hex[:8])
        >>> with lock:
        ...     lock.owner_died
        False
        >>> lock.acquire(timeout=0.1)
        True
        >>> lock.release(); lock.close()
    """

    _KIND = "mutex"
    _SIZE = MUTEX_SIZE

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
        self._attach_named(name, create, scope, mode, _initialize)
        self.release = self._handle.unlock  # type: ignore[method-assign]  # hot path: no Python frame

    @classmethod
    def in_region(cls, region: Region, offset: int, *, spin: float | None = None) -> Mutex:
        """A mutex living at ``offset`` of ``region`` (64 bytes, 8-aligned); made on first use."""
        mutex = cls.__new__(cls)
        mutex._set_spin(spin)
        mutex._attach_in_region(region, offset, _initialize)
        mutex.release = mutex._handle.unlock  # type: ignore[method-assign]
        return mutex

    def acquire(self, timeout: float | None = None) -> bool:
        """Take the lock; False if ``timeout`` seconds pass first (None waits for ever).

        Raises RuntimeError if this thread already holds it.
        """
        outcome = self._handle.lock(timeout, self._spin)
        self._owner_died = outcome == 1
        return outcome >= 0

    def release(self) -> None:
        """Release the lock; RuntimeError if this thread does not hold it."""
        self._handle.unlock()

    @property
    def owner_died(self) -> bool:
        """True if the previous owner died holding the lock, for the current acquisition."""
        return self._owner_died

    def locked(self) -> bool:
        """True if some thread of some process holds it right now."""
        return _core.load_u32(self._live(), self._offset + MUTEX_LOCK + OWNED_WORD) & OWNER_MASK != 0

    def held(self) -> bool:
        """True if the calling thread holds it."""
        return self._handle.held()

    def stats(self) -> SyncStats:
        buf = self._live()
        word = _core.load_u32(buf, self._offset + MUTEX_LOCK + OWNED_WORD)
        sleepers = _core.load_u32(buf, self._offset + MUTEX_LOCK + OWNED_SLEEPERS)
        return self._stats(sleepers, {"owner_pid": word & OWNER_MASK or None})

    def __enter__(self) -> Mutex:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


Mutex.__module__ = "memipc"
