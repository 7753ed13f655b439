"""Semaphore: a named cross-process counting semaphore (Win32 CreateSemaphore)."""

from __future__ import annotations

from types import TracebackType
from typing import final

from .. import _core
from .._layout import SEMAPHORE_MAXIMUM, SEMAPHORE_SIZE, SEMAPHORE_SLEEPERS, SEMAPHORE_VALUE
from .._names import Scope
from .._region import Region
from ._base import Initializer, SyncObject, SyncStats

_UNBOUNDED = 0xFFFFFFFF


def _initializer(initial: int, maximum: int | None) -> Initializer:
    if isinstance(initial, bool) or not isinstance(initial, int) or initial < 0:
        raise ValueError(f"initial must be a non-negative int, not {initial!r}")
    top = _UNBOUNDED if maximum is None else maximum
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= _UNBOUNDED:
        raise ValueError(f"maximum must be None or an int from 1 to {_UNBOUNDED}, not {maximum!r}")
    if initial > top:
        raise ValueError(f"initial {initial} is above maximum {top}")

    def initialize(buf: memoryview, offset: int) -> None:
        _core.store_u32(buf, offset + SEMAPHORE_MAXIMUM, top)
        _core.store_u32(buf, offset + SEMAPHORE_VALUE, initial)

    return initialize


@final
class Semaphore(SyncObject):
    """A counter that processes decrement (``acquire``) and increment (``release``).

    ``initial`` and ``maximum`` apply when this call creates it; opening an
    existing semaphore keeps its own (as CreateSemaphore does).

        >>> import memipc, uuid
        >>> slots = memipc.Semaphore("doc-" + uuid.uuid4().hex[:8], initial=2, maximum=2)
        >>> slots.acquire(), slots.acquire(), slots.acquire(timeout=0)
        (True, True, False)
        >>> slots.release(2); slots.value
        2
        >>> slots.close()
    """

    _KIND = "semaphore"
    _SIZE = SEMAPHORE_SIZE

    def __init__(
        self,
        name: str,
        initial: int = 0,
        maximum: int | None = None,
        *,
        create: bool | None = None,
        scope: Scope | None = None,
        mode: int | None = None,
        spin: float | None = None,
    ) -> None:
        self._set_spin(spin)
        self._attach_named(name, create, scope, mode, _initializer(initial, maximum))

    @classmethod
    def in_region(
        cls,
        region: Region,
        offset: int,
        initial: int = 0,
        maximum: int | None = None,
        *,
        spin: float | None = None,
    ) -> Semaphore:
        """A semaphore living at ``offset`` of ``region`` (64 bytes, 8-aligned)."""
        semaphore = cls.__new__(cls)
        semaphore._set_spin(spin)
        semaphore._attach_in_region(region, offset, _initializer(initial, maximum))
        return semaphore

    def acquire(self, timeout: float | None = None) -> bool:
        """Take one count; False if ``timeout`` seconds pass first."""
        return self._handle.acquire(timeout, self._spin)

    def release(self, n: int = 1) -> None:
        """Give back ``n`` counts; ValueError if that would pass ``maximum``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, not {n!r}")
        if n > _UNBOUNDED:
            raise ValueError(f"release({n}) would raise the count above its maximum")
        self._handle.release(n)

    @property
    def value(self) -> int:
        """The current count (a snapshot)."""
        return _core.load_u32(self._live(), self._offset + SEMAPHORE_VALUE)

    @property
    def maximum(self) -> int | None:
        top = _core.load_u32(self._live(), self._offset + SEMAPHORE_MAXIMUM)
        return None if top == _UNBOUNDED else top

    def stats(self) -> SyncStats:
        buf = self._live()
        sleepers = _core.load_u32(buf, self._offset + SEMAPHORE_SLEEPERS)
        return self._stats(sleepers, {"value": self.value, "maximum": self.maximum})

    def __enter__(self) -> Semaphore:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


Semaphore.__module__ = "memipc"
