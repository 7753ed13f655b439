"""The common machinery of every sync object: where it lives, how it is born.

An object's bytes live in a buffer at an offset: either the user area of its
own named segment (kind ``mutex``, ``event``, ...) or a user's region.  Its
first word is a tag (layout.h): 0 = never initialized, TAG_INITIALIZING =
being initialized by whoever won the CAS from 0, TAG_BASE | kind = ready.
The winner writes the fields and publishes the tag last (release); everyone
else loads it (acquire) and checks it is the kind they asked for.

The spin policy (``spin=``) is the SpinThenFutexWait budget each blocking
call may spin before it sleeps:

* ``None`` (default): adaptive, per object, like glibc's adaptive mutexes —
  the budget follows how long recent successful spins took, capped at
  50 µs (about one sleep/wake round trip on a VM, the competitive bound);
* ``0``: sleep at once (lowest CPU use; pays the kernel wake-up every time);
* a float: spin at most that many seconds (up to 1).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, final

from .. import _core
from .._errors import ClosedError, CorruptRegionError, KindMismatchError
from .._layout import (
    KIND_CODES,
    KIND_NAMES,
    SYNC_CONTENTIONS,
    SYNC_OPERATIONS,
    SYNC_OWNER_DEATHS,
    SYNC_TAG,
    TAG_BASE,
    TAG_INITIALIZING,
)
from .._names import Scope, parse
from .._region import Region
from .._segment import article

#: How long an opener waits for another process to finish initializing an object in place.
INIT_WAIT_SECONDS = 1.0

Initializer = Callable[[memoryview, int], None]


@final
@dataclass(frozen=True, slots=True)
class SyncStats:
    """Counters of a sync object, as returned by ``stats()`` (for ``memipc watch``).

    Counters are updated with relaxed atomics: exact once the object is
    quiet, possibly a little stale while it is busy.
    """

    kind: str
    name: str | None
    #: acquisitions (Mutex, Semaphore, RWLock), sets (Event), notifies (Condition)
    operations: int
    #: operations that had to sleep
    contentions: int
    #: owners (or RWLock readers) found dead and recovered from
    owner_deaths: int
    #: processes or threads sleeping on it right now
    waiters: int
    #: kind-specific state: value, is_set, owner pid, readers, ...
    state: dict[str, Any]


SyncStats.__module__ = "memipc"


def claim(buf: memoryview, offset: int, kind: str, size: int, initialize: Initializer) -> bool:
    """Initialize the object at ``offset`` if nobody has, else check it; True if we initialized it."""
    code = KIND_CODES[kind]
    ready = TAG_BASE | code
    tag = _core.load_u32(buf, offset + SYNC_TAG)  # acquire: pairs with the publishing store below
    if tag == 0 and _core.cas_u32(buf, offset + SYNC_TAG, 0, TAG_INITIALIZING):
        buf[offset + 4 : offset + size] = bytes(size - 4)
        initialize(buf, offset)
        # release: every field above is visible before the tag says "ready".
        _core.store_u32(buf, offset + SYNC_TAG, ready)
        return True
    deadline = time.monotonic() + INIT_WAIT_SECONDS
    while tag in (0, TAG_INITIALIZING) and time.monotonic() < deadline:
        time.sleep(0.001)
        tag = _core.load_u32(buf, offset + SYNC_TAG)
    if tag == ready:
        return False
    where = f"{kind} at offset {offset}"
    if tag in (0, TAG_INITIALIZING):
        raise CorruptRegionError(
            f"{where}: another process began initializing it and did not finish within "
            f"{INIT_WAIT_SECONDS:.0f} s (it may have died); zero those bytes to start over"
        )
    if tag & 0xFFFF0000 == TAG_BASE and (tag & 0xFFFF) in KIND_NAMES:
        raise KindMismatchError(
            f"cannot use the {where} as {article(kind)}: it holds {article(KIND_NAMES[tag & 0xFFFF])}. "
            "Give each object its own offset"
        )
    raise CorruptRegionError(
        f"{where}: its tag {tag:#010x} is not a memipc object's; the bytes were overwritten, "
        "or the offset is wrong"
    )


def check_tag(buf: memoryview, offset: int, kind: str) -> None:
    """Check that an object someone else created and published is ready and of ``kind``.

    Unlike :func:`claim`, a missing tag is corruption here, never an invitation
    to initialize: the object's creator published it before we could open it.
    """
    tag = _core.load_u32(buf, offset + SYNC_TAG)  # acquire: pairs with the creator's publication
    if tag == TAG_BASE | KIND_CODES[kind]:
        return
    if tag & 0xFFFF0000 == TAG_BASE and (tag & 0xFFFF) in KIND_NAMES:
        raise KindMismatchError(
            f"the {kind} at offset {offset} holds {article(KIND_NAMES[tag & 0xFFFF])} instead; "
            "it was overwritten"
        )
    raise CorruptRegionError(
        f"{kind} at offset {offset}: its tag {tag:#010x} is not a published memipc {kind}'s; "
        "the bytes were overwritten. Remove the object and create it again"
    )


class SyncObject:
    """Base of Mutex, Semaphore, Event, Condition and RWLock: storage and lifetime."""

    _KIND: ClassVar[str]
    _SIZE: ClassVar[int]

    # Class-level defaults keep close(), __del__ and repr safe on half-built objects.
    _region: Region | None = None
    _owns_region: bool = False
    _buf: memoryview | None = None
    _offset: int = 0
    _name: str | None = None
    _created: bool = False
    _spin: float | None = None
    _handle: _core.Sync

    def _attach_named(
        self,
        name: str,
        create: bool | None,
        scope: Scope | None,
        mode: int | None,
        initialize: Initializer,
    ) -> None:
        oname = parse(name, scope)

        def init_area(area: memoryview) -> None:
            claim(area, 0, self._KIND, self._SIZE, initialize)

        if create is None:
            region = Region._open_or_create(
                oname, self._SIZE, kind=self._KIND, mode=mode, initialize=init_area
            )
        elif create:
            region = Region._create(oname, self._SIZE, kind=self._KIND, mode=mode, initialize=init_area)
        else:
            region = Region._open(oname, kind=self._KIND)
        try:
            buf = region.buf
            check_tag(buf, 0, self._KIND)
        except BaseException:
            region.close()
            raise
        self._region, self._owns_region, self._buf, self._offset = region, True, buf, 0
        self._name = oname.qualified
        self._created = region.created
        self._handle = _core.Sync(buf, 0, KIND_CODES[self._KIND])

    def _attach_in_region(self, region: Region, offset: int, initialize: Initializer) -> None:
        if not isinstance(region, Region):
            raise TypeError(f"in_region() needs a memipc.Region, not {type(region).__name__}")
        if offset < 0 or offset % 8 or offset + self._SIZE > region.size:
            raise ValueError(
                f"a {self._KIND} needs {self._SIZE} bytes at an offset that is a multiple of 8; "
                f"offset {offset} does not fit region {region.name!r} of {region.size} bytes"
            )
        if region.access != "rw":
            raise PermissionError(
                f"a {self._KIND} needs a region opened with access='rw', not {region.access!r}"
            )
        buf = region.buf
        self._created = claim(buf, offset, self._KIND, self._SIZE, initialize)
        self._region, self._owns_region, self._buf, self._offset = region, False, buf, offset
        self._handle = _core.Sync(buf, offset, KIND_CODES[self._KIND])

    def _live(self) -> memoryview:
        buf = self._buf
        if buf is None:
            raise ClosedError(f"{self!r} is closed")
        return buf

    def _set_spin(self, spin: float | None) -> None:
        if spin is not None and not 0 <= spin <= 1:
            raise ValueError(f"spin must be None (adaptive) or between 0 and 1 second, not {spin!r}")
        self._spin = None if spin is None else float(spin)

    @property
    def spin(self) -> float | None:
        """The spin budget in seconds before sleeping: None = adaptive, 0 = sleep only."""
        return self._spin

    @spin.setter
    def spin(self, value: float | None) -> None:
        self._set_spin(value)

    @property
    def name(self) -> str | None:
        """The object's name, or None for an object placed in a region."""
        return self._name

    @property
    def created(self) -> bool:
        """True if this handle created (initialized) the object."""
        return self._created

    def _counters(self) -> tuple[int, int, int]:
        buf = self._live()
        return (
            _core.load_u64(buf, self._offset + SYNC_OPERATIONS),
            _core.load_u64(buf, self._offset + SYNC_CONTENTIONS),
            _core.load_u64(buf, self._offset + SYNC_OWNER_DEATHS),
        )

    def _stats(self, waiters: int, state: dict[str, Any]) -> SyncStats:
        operations, contentions, deaths = self._counters()
        return SyncStats(self._KIND, self._name, operations, contentions, deaths, waiters, state)

    def close(self) -> None:
        """Close this handle (idempotent); a named object goes away with its last handle."""
        buf, self._buf = self._buf, None
        handle = getattr(self, "_handle", None)
        if handle is not None:
            handle.close()  # later calls raise ClosedError from the handle itself
        if buf is not None:
            del buf  # drop our reference before the region unmaps
            if self._owns_region and self._region is not None:
                self._region.close()
            self._region = None

    def unlink(self) -> None:
        """Remove the object's name now (named objects only); open handles keep working."""
        if not self._owns_region or self._region is None:
            raise ValueError(f"{self!r} lives in a region and has no name of its own")
        self._region.unlink()

    def __del__(self) -> None:
        if self._buf is not None:
            with contextlib.suppress(Exception):  # never raise from a finalizer
                self.close()

    def _where(self) -> str:
        if self._name is not None:
            return f"name={self._name!r}"
        region = self._region.name if self._region is not None else "?"
        return f"region={region!r} offset={self._offset}"

    def __repr__(self) -> str:
        state = " closed" if self._buf is None else ""
        return f"<memipc.{type(self).__name__} {self._where()} kind={self._KIND!r} size={self._SIZE}{state}>"
