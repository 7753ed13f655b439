"""Condition: a named cross-process condition variable bound to a Mutex."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar, final

from .. import _core
from .._layout import CONDITION_SIZE, CONDITION_SLEEPERS
from .._names import Scope
from .._region import Region
from ._base import SyncObject, SyncStats
from ._mutex import Mutex

_PREPARE, _DONE, _NOTIFY = 0, 1, 2
_T = TypeVar("_T")


def _initialize(buf: memoryview, offset: int) -> None:
    """A zeroed condition is ready: sequence 0, no sleepers."""


@final
class Condition(SyncObject):
    """Wait until another process changes shared state and notifies.

    Works like :class:`threading.Condition` with a :class:`Mutex`: hold the
    mutex, check the state, ``wait()``; the waker holds the mutex, changes the
    state, ``notify()``.  Wake-ups can be spurious, so prefer ``wait_for``.

        >>> import memipc, uuid
        >>> tag = "doc-" + uuid.uuid4().hex[:8]
        >>> lock = memipc.Mutex(tag + "-lock")
        >>> changed = memipc.Condition(tag + "-cond", lock)
        >>> with lock:
        ...     changed.wait_for(lambda: True, timeout=0.1)
        True
        >>> changed.close(); lock.close()
    """

    _KIND = "condition"
    _SIZE = CONDITION_SIZE

    def __init__(
        self,
        name: str,
        mutex: Mutex,
        *,
        create: bool | None = None,
        scope: Scope | None = None,
        mode: int | None = None,
    ) -> None:
        if not isinstance(mutex, Mutex):
            raise TypeError(f"Condition needs a memipc.Mutex, not {type(mutex).__name__}")
        self._mutex = mutex
        self._attach_named(name, create, scope, mode, _initialize)

    @classmethod
    def in_region(cls, region: Region, offset: int, mutex: Mutex) -> Condition:
        """A condition living at ``offset`` of ``region`` (64 bytes, 8-aligned)."""
        if not isinstance(mutex, Mutex):
            raise TypeError(f"Condition needs a memipc.Mutex, not {type(mutex).__name__}")
        condition = cls.__new__(cls)
        condition._mutex = mutex
        condition._attach_in_region(region, offset, _initialize)
        return condition

    @property
    def mutex(self) -> Mutex:
        return self._mutex

    def _require_mutex(self, what: str) -> None:
        if not self._mutex.held():
            raise RuntimeError(
                f"cannot {what} a Condition without holding its mutex; use 'with mutex:' first"
            )

    def wait(self, timeout: float | None = None) -> bool:
        """Release the mutex, sleep until notified, take the mutex back.

        Returns False if ``timeout`` seconds passed without a notify.  The
        mutex is held again on return, whatever happened (also on Ctrl-C).
        """
        self._require_mutex("wait on")
        handle = self._handle
        sequence = handle.condition_control(_PREPARE) or 0
        self._mutex.release()
        try:
            return handle.sleep(sequence, timeout)
        finally:
            handle.condition_control(_DONE)
            self._mutex.acquire()

    def wait_for(self, predicate: Callable[[], _T], timeout: float | None = None) -> _T:
        """Wait until ``predicate()`` is true (checked with the mutex held); return its last value."""
        self._require_mutex("wait on")
        deadline = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            self.wait(remaining)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters (must hold the mutex)."""
        self._require_mutex("notify")
        if n < 1:
            return
        self._handle.condition_control(_NOTIFY, min(n, 2**31 - 1))

    def notify_all(self) -> None:
        """Wake every waiter (must hold the mutex)."""
        self.notify(2**31 - 1)

    def stats(self) -> SyncStats:
        sleepers = _core.load_u32(self._live(), self._offset + CONDITION_SLEEPERS)
        return self._stats(sleepers, {})


Condition.__module__ = "memipc"
