"""wait_any: WaitForMultipleObjects over Events, Semaphores and Mutexes."""

from __future__ import annotations

import time
from collections.abc import Sequence

from .. import _core
from .._layout import (
    EVENT_STATE,
    MUTEX_LOCK,
    OWNED_WORD,
    OWNER_MASK,
    SEMAPHORE_SLEEPERS,
    SEMAPHORE_VALUE,
    WAITERS_BIT,
)
from ._event import Event
from ._mutex import Mutex
from ._semaphore import Semaphore

Waitable = Event | Semaphore | Mutex


def _try(obj: Waitable) -> bool:
    if isinstance(obj, Event):
        return obj._try_consume()
    return obj.acquire(timeout=0)


def wait_any(objects: Sequence[Waitable], timeout: float | None = None) -> int | None:
    """Wait until one of ``objects`` is signaled; return its index, or None on timeout.

    As WaitForMultipleObjects does, the returned object is *consumed* where
    its semantics say so: an auto-reset event is reset, a semaphore count is
    taken, a mutex is acquired (check its ``owner_died``).  A manual-reset
    event is only observed.  When several are ready, the lowest index wins.

        >>> import memipc, uuid
        >>> tag = "doc-" + uuid.uuid4().hex[:8]
        >>> a, b = memipc.Event(tag + "-a"), memipc.Event(tag + "-b")
        >>> b.set(); memipc.wait_any([a, b], timeout=1)
        1
        >>> a.close(); b.close()
    """
    items = list(objects)
    if not items:
        raise ValueError("wait_any needs at least one object")
    if len(items) > 64:
        raise ValueError(f"wait_any takes at most 64 objects, got {len(items)}")
    for obj in items:
        if not isinstance(obj, Event | Semaphore | Mutex):
            raise TypeError(f"wait_any accepts Event, Semaphore and Mutex objects, not {type(obj).__name__}")
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
    while True:
        for index, obj in enumerate(items):
            if _try(obj):
                return index
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return None
        words = []
        registered: list[Event | Semaphore] = []
        try:
            for obj in items:
                buf, offset = obj._live(), obj._offset
                if isinstance(obj, Event):
                    obj._register(True)
                    registered.append(obj)
                    words.append((buf, offset + EVENT_STATE, _core.load_u32(buf, offset + EVENT_STATE)))
                elif isinstance(obj, Semaphore):
                    _core.fetch_add_u32(buf, offset + SEMAPHORE_SLEEPERS, 1)
                    registered.append(obj)
                    words.append(
                        (buf, offset + SEMAPHORE_VALUE, _core.load_u32(buf, offset + SEMAPHORE_VALUE))
                    )
                else:
                    word_offset = offset + MUTEX_LOCK + OWNED_WORD
                    word = _core.load_u32(buf, word_offset)
                    # Ask the holder to wake sleepers on release, as a blocked acquire does.
                    wants_wake = word & OWNER_MASK and not word & WAITERS_BIT
                    if wants_wake and _core.cas_u32(buf, word_offset, word, word | WAITERS_BIT):
                        word |= WAITERS_BIT
                    words.append((buf, word_offset, word))
            # Re-check after registering: a signal between the first pass and
            # registration changed a word, so the wait below returns at once.
            _core.futex_wait_many(words, remaining)
        finally:
            for obj in registered:
                if isinstance(obj, Event):
                    obj._register(False)
                else:
                    _core.fetch_add_u32(obj._live(), obj._offset + SEMAPHORE_SLEEPERS, 0xFFFFFFFF)
