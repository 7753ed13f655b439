"""Event: a named cross-process event, manual- or auto-reset (Win32 CreateEvent)."""

from __future__ import annotations

from typing import final

from .. import _core
from .._layout import EVENT_REGISTERED, EVENT_SIZE, EVENT_STATE, SYNC_FLAGS
from .._names import Scope
from .._region import Region
from ._base import Initializer, SyncObject, SyncStats

_SET, _CLEAR, _IS_SET, _TRY, _REGISTER, _UNREGISTER = 0, 1, 2, 3, 4, 5


def _initializer(manual_reset: bool, initial: bool) -> Initializer:
    def initialize(buf: memoryview, offset: int) -> None:
        _core.store_u32(buf, offset + SYNC_FLAGS, _core.EVENT_MANUAL if manual_reset else 0)
        _core.store_u32(buf, offset + EVENT_STATE, 1 if initial else 0)

    return initialize


@final
class Event(SyncObject):
    """A flag processes wait for (SetEvent / ResetEvent / WaitForSingleObject).

    Manual reset (default): ``set()`` releases every waiter, now and later,
    until ``clear()``.  Auto reset (``manual_reset=False``): each ``set()``
    releases exactly one waiter; with nobody waiting, the event stays set
    until one arrives.  ``manual_reset`` and ``initial`` apply when this call
    creates the event.

        >>> import memipc, uuid
        >>> ready = memipc.Event("doc-" + uuid.uuid4().hex[:8])
        >>> ready.wait(timeout=0)
        False
        >>> ready.set(); ready.wait(timeout=1), ready.is_set()
        (True, True)
        >>> ready.close()
    """

    _KIND = "event"
    _SIZE = EVENT_SIZE

    def __init__(
        self,
        name: str,
        manual_reset: bool = True,
        initial: bool = False,
        *,
        create: bool | None = None,
        scope: Scope | None = None,
        mode: int | None = None,
        spin: float | None = None,
    ) -> None:
        self._set_spin(spin)
        self._attach_named(name, create, scope, mode, _initializer(manual_reset, initial))

    @classmethod
    def in_region(
        cls,
        region: Region,
        offset: int,
        manual_reset: bool = True,
        initial: bool = False,
        *,
        spin: float | None = None,
    ) -> Event:
        """An event living at ``offset`` of ``region`` (64 bytes, 8-aligned)."""
        event = cls.__new__(cls)
        event._set_spin(spin)
        event._attach_in_region(region, offset, _initializer(manual_reset, initial))
        return event

    @property
    def manual_reset(self) -> bool:
        return bool(_core.load_u32(self._live(), self._offset + SYNC_FLAGS) & _core.EVENT_MANUAL)

    def set(self) -> None:
        """Signal: release all waiters (manual) or exactly one (auto)."""
        self._handle.event_control(_SET)

    def clear(self) -> None:
        """Reset to not signaled."""
        self._handle.event_control(_CLEAR)

    def is_set(self) -> bool:
        """True if signaled (for auto reset: a release is pending)."""
        return bool(self._handle.event_control(_IS_SET))

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until signaled; False if ``timeout`` seconds pass first.

        An auto-reset event is consumed by the waiter it releases.
        """
        return self._handle.wait(timeout, self._spin)

    def _try_consume(self) -> bool:
        return bool(self._handle.event_control(_TRY))

    def _register(self, add: bool) -> None:
        self._handle.event_control(_REGISTER if add else _UNREGISTER)

    def stats(self) -> SyncStats:
        buf = self._live()
        registered = _core.load_u32(buf, self._offset + EVENT_REGISTERED)
        return self._stats(registered, {"is_set": self.is_set(), "manual_reset": self.manual_reset})


Event.__module__ = "memipc"
