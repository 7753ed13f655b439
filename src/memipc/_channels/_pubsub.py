"""Publisher / Subscriber: one-to-many messages, each subscriber with its own cursor.

>>> import memipc, uuid
>>> name = "doc-" + uuid.uuid4().hex[:8]
>>> pub = memipc.Publisher(name, capacity=1 << 16)
>>> early = memipc.Subscriber(name)             # sees what is published from now on
>>> pub.send(b"tick 1"); pub.put({"tick": 2})
>>> late = memipc.Subscriber(name, start="earliest")   # replays what is still in the ring
>>> early.recv(), early.get(), late.recv()
(b'tick 1', {'tick': 2}, b'tick 1')
>>> for sub in (early, late, pub): sub.close()

The ring, the cursors and crash recovery are C (src/c/bus.c, layout in
src/c/layout.h); this module is their Python face.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal, final

from .. import _core, _faults
from .._errors import ClosedError, Empty, Full
from .._names import Scope, parse
from .._region import Region
from .._sync._base import check_tag, claim
from . import _codec
from ._queue import _let_go, attach, ring_geometry
from ._stats import ChannelStats

Overflow = Literal["block", "overwrite"]
Start = Literal["latest", "earliest"]
DEFAULT_CAPACITY = 1 << 20
DATA_OFFSET = _core.BUS_DATA_OFFSET
SLOTS = _core.BUS_SLOTS
SLOT_BYTES = 64

# Control-block and slot fields Python reads for stats (layout.h, struct mi_bus / mi_bus_slot).
_CAPACITY, _MAX_MESSAGE, _DATA_OFFSET, _SLOTS_FIELD, _SLOTS_USED = 32, 40, 48, 56, 60
_TAIL, _OLDEST, _NEXT_SEQUENCE = 128, 136, 152
_SENT, _BYTES_SENT, _WAITS, _SUBSCRIBERS_LOST, _JOINS = 320, 328, 336, 344, 352
_SLOT_IDENTITY, _SLOT_PID, _SLOT_CURSOR, _SLOT_RECEIVED, _SLOT_MISSED, _SLOT_NEXT = 0, 12, 16, 24, 32, 56


@final
@dataclass(frozen=True, slots=True)
class SubscriberInfo:
    """One subscriber as its slot shows it (for ``memipc info``)."""

    slot: int
    pid: int
    cursor: int
    #: messages published that it has not read yet
    lag: int
    lag_bytes: int
    received: int
    missed: int


def _open_bus(
    name: str,
    capacity: int,
    max_message: int | None,
    overflow: Overflow,
    create: bool | None,
    scope: Scope | None,
    permissions: int | None,
) -> tuple[Region, memoryview, _core.Bus, str]:
    if overflow not in ("block", "overwrite"):
        raise ValueError(f"overflow must be 'block' or 'overwrite', not {overflow!r}")
    oname = parse(name, scope)
    ring_capacity, ring_max = ring_geometry(capacity, max_message)

    def initialize(area: memoryview) -> None:
        def fields(buf: memoryview, offset: int) -> None:
            _core.store_u32(buf, offset + 4, _core.BUS_OVERWRITE if overflow == "overwrite" else 0)
            _core.store_u64(buf, offset + _CAPACITY, ring_capacity)
            _core.store_u64(buf, offset + _MAX_MESSAGE, ring_max)
            _core.store_u64(buf, offset + _DATA_OFFSET, DATA_OFFSET)
            _core.store_u32(buf, offset + _SLOTS_FIELD, SLOTS)

        claim(area, 0, "pubsub", DATA_OFFSET, fields)

    region = attach(oname, "pubsub", create, DATA_OFFSET + ring_capacity, permissions, initialize)
    try:
        buf = region.buf
        check_tag(buf, 0, "pubsub")
        bus = _core.Bus(buf, 0)
    except BaseException:
        region.close()
        raise
    return region, buf, bus, oname.qualified


class _Endpoint:
    """What Publisher and Subscriber share: the region, the handle, closing, stats."""

    _kind_label = "?"
    _bus: _core.Bus
    _region: Region | None = None
    _buf: memoryview | None = None
    _name: str = "?"

    def _setup(self, opened: tuple[Region, memoryview, _core.Bus, str], spin: float | None) -> None:
        if spin is not None and not 0 <= spin <= 1:
            raise ValueError(f"spin must be None (adaptive) or between 0 and 1 second, not {spin!r}")
        self._region, self._buf, self._bus, self._name = opened
        self._spin = spin
        self._capacity, self._max_message, overwrite = self._bus.parameters()
        self._overflow: Overflow = "overwrite" if overwrite else "block"

    @property
    def name(self) -> str:
        return self._name

    @property
    def capacity(self) -> int:
        """Bytes of message storage (a power of two)."""
        return self._capacity

    @property
    def max_message(self) -> int:
        """The largest message the channel accepts, in bytes."""
        return self._max_message

    @property
    def overflow(self) -> Overflow:
        """What a full ring does: ``"block"`` the publisher or ``"overwrite"`` the oldest messages."""
        return self._overflow

    def _live(self) -> memoryview:
        if self._buf is None:
            raise ClosedError(f"{self!r} is closed; open the channel again")
        return self._buf

    def subscribers(self) -> list[SubscriberInfo]:
        """The subscribers now attached, from their slots (pids are as recorded, not re-checked)."""
        buf = self._live()
        tail = _core.load_u64(buf, _TAIL)
        published = _core.load_u64(buf, _NEXT_SEQUENCE)
        used = min(_core.load_u32(buf, _SLOTS_USED), SLOTS)
        found = []
        for index in range(used):
            base = DATA_OFFSET - SLOTS * SLOT_BYTES + index * SLOT_BYTES
            if _core.load_u64(buf, base + _SLOT_IDENTITY) == 0:
                continue
            cursor = _core.load_u64(buf, base + _SLOT_CURSOR)
            found.append(
                SubscriberInfo(
                    slot=index,
                    pid=_core.load_u32(buf, base + _SLOT_PID),
                    cursor=cursor,
                    lag=max(0, published - _core.load_u64(buf, base + _SLOT_NEXT)),
                    lag_bytes=max(0, tail - cursor),
                    received=_core.load_u64(buf, base + _SLOT_RECEIVED),
                    missed=_core.load_u64(buf, base + _SLOT_MISSED),
                )
            )
        return found

    def close(self) -> None:
        """Close this handle (idempotent); the channel goes away with its last handle."""
        bus = getattr(self, "_bus", None)
        if bus is not None:
            bus.close()
        self._buf = None
        if self._region is not None:
            self._region.close()
            self._region = None

    def unlink(self) -> None:
        """Remove the channel's name now; open handles keep working."""
        self._live()
        if self._region is not None:
            self._region.unlink()

    def __del__(self) -> None:
        if self._region is not None:
            with suppress(BufferError):
                self.close()

    def __repr__(self) -> str:
        state = " closed" if self._buf is None else ""
        return (
            f"<memipc.{self._kind_label} name={self._name!r} kind='pubsub' "
            f"size={getattr(self, '_capacity', 0)} overflow={getattr(self, '_overflow', '?')!r}{state}>"
        )


@final
class Publisher(_Endpoint):
    """The sending end of a one-to-many channel living in one named region.

    ``Publisher(name, capacity)`` opens the channel or creates it (``create=``
    True or False insists); whoever creates it sets ``capacity``,
    ``max_message`` and ``overflow``, and later openers get what exists.
    Several processes may publish on one channel; each message goes to every
    subscriber attached when it is sent (and to later ``start="earliest"``
    subscribers while it is still in the ring).

    ``overflow="block"``: the slowest live subscriber holds publishers back
    (``send`` waits up to ``timeout``, then raises :class:`~memipc.Full`);
    subscribers that die are noticed within about a second and stop holding
    anyone back.  ``overflow="overwrite"``: publishers never wait; a
    subscriber that falls a whole ring behind skips ahead and counts what it
    lost in ``missed``.  No subscriber ever sees a torn message.
    """

    _kind_label = "Publisher"

    def __init__(
        self,
        name: str,
        capacity: int = DEFAULT_CAPACITY,
        *,
        overflow: Overflow = "block",
        max_message: int | None = None,
        create: bool | None = None,
        scope: Scope | None = None,
        permissions: int | None = None,
        spin: float | None = None,
    ) -> None:
        self._setup(_open_bus(name, capacity, max_message, overflow, create, scope, permissions), spin)

    def _full(self, timeout: float | None) -> Full:
        return Full(
            f"publisher {self._name!r}: no room for {timeout} s; the slowest subscriber is holding the "
            "ring (overflow='block'). Read faster, enlarge capacity, or use overflow='overwrite'"
        )

    def send(self, data: Any, timeout: float | None = None) -> None:
        """Publish one bytes-like message; Full if there is no room within ``timeout`` seconds."""
        self._live()
        if not self._bus.send(data, timeout, self._spin):
            raise self._full(timeout)

    def send_nowait(self, data: Any) -> None:
        """Publish without waiting; Full if the ring is held by a slow subscriber now."""
        self.send(data, 0)

    @contextmanager
    def loan(self, nbytes: int, timeout: float | None = None) -> Iterator[memoryview]:
        """Fill the next message in place (zero copy); published when the block ends.

        Discarded if the block raises.  Other publishers on the channel wait
        while a loan is open, so keep the block short; keeping the memoryview
        past the block raises BufferError (and discards the message).
        """
        buf = self._live()
        reserved = self._bus.reserve(nbytes, timeout, self._spin)
        if reserved == -1:
            raise self._full(timeout)
        assert isinstance(reserved, tuple)
        position, offset = reserved
        try:
            window = _core.Window(buf, offset, nbytes)
            view = memoryview(window)
            if _faults.armed:
                _faults.reach("pubsub.loan.after_reserve")
        except BaseException:
            self._bus.abort()  # Ctrl-C before the block: drop the reservation and its lock
            raise
        try:
            yield view
            if _faults.armed:
                _faults.reach("pubsub.loan.before_commit")
        except BaseException:
            _let_go(view, window)
            self._bus.abort()
            raise
        if not _let_go(view, window):
            self._bus.abort()
            raise BufferError(
                "a reference to the loaned buffer (a slice, an array, a memoryview) outlived the "
                "'with pub.loan()' block; the message was discarded. Copy what you need instead"
            )
        self._bus.commit(position)

    def put(self, obj: object, timeout: float | None = None) -> None:
        """Publish any picklable object (pickle 5; out-of-band buffers copied once, into the ring)."""
        stream, raws, size, offsets = _codec.encode_object(obj)
        with self.loan(size, timeout) as target:
            _codec.write_object(target, stream, raws, offsets)
        for raw in raws:
            raw.release()

    def stats(self) -> ChannelStats:
        """Counters: ``received`` sums the attached subscribers; ``depth`` is the slowest one's backlog."""
        buf = self._live()
        subscribers = self.subscribers()
        sent = _core.load_u64(buf, _SENT)
        return ChannelStats(
            sent=sent,
            received=sum(s.received for s in subscribers),
            bytes=_core.load_u64(buf, _BYTES_SENT),
            bytes_received=0,
            depth=max((s.lag for s in subscribers), default=0),
            waits=_core.load_u64(buf, _WAITS),
            drops=_core.load_u64(buf, _SUBSCRIBERS_LOST),
        )

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@final
class Subscriber(_Endpoint):
    """A receiving end of a one-to-many channel, with its own cursor.

    ``start="latest"`` receives what is published from now on;
    ``"earliest"`` first replays what is still in the ring.  If no publisher
    has created the channel yet, the subscriber creates it (``capacity``,
    ``overflow`` and ``max_message`` apply then), so either side may start
    first; ``create=False`` insists that it exists.  At most 128 subscribers
    attach at once.

    ``missed`` counts messages this subscriber lost because an
    ``overflow="overwrite"`` publisher lapped it; ``received + missed`` is
    the number of messages published since it joined.
    """

    _kind_label = "Subscriber"

    def __init__(
        self,
        name: str,
        *,
        start: Start = "latest",
        capacity: int = DEFAULT_CAPACITY,
        overflow: Overflow = "block",
        max_message: int | None = None,
        create: bool | None = None,
        scope: Scope | None = None,
        permissions: int | None = None,
        spin: float | None = None,
        timeout: float | None = None,
    ) -> None:
        if start not in ("latest", "earliest"):
            raise ValueError(f"start must be 'latest' or 'earliest', not {start!r}")
        self._setup(_open_bus(name, capacity, max_message, overflow, create, scope, permissions), spin)
        try:
            if not self._bus.join(start == "earliest", timeout):
                raise TimeoutError(
                    f"subscriber {self._name!r}: a publisher held the channel for {timeout} s while we "
                    "tried to join (an open loan?); try again"
                )
        except BaseException:
            self.close()
            raise

    def _empty(self, timeout: float | None) -> Empty:
        return Empty(f"subscriber {self._name!r}: nothing was published for {timeout} s")

    @property
    def missed(self) -> int:
        """Messages lost to an overwriting publisher since this subscriber joined."""
        return int(self._bus.counters()[1])

    @property
    def received(self) -> int:
        """Messages this subscriber has received."""
        return int(self._bus.counters()[0])

    def recv(self, timeout: float | None = None) -> bytes:
        """The next message as bytes; Empty if none arrives within ``timeout`` seconds."""
        self._live()
        message = self._bus.recv(timeout, self._spin)
        if message is None:
            raise self._empty(timeout)
        return message

    def recv_nowait(self) -> bytes:
        """The next message if one is there now, else Empty."""
        return self.recv(0)

    def recv_view(self, timeout: float | None = None) -> AbstractContextManager[memoryview]:
        """The next message, read in place (read-only) until the block ends.

        With ``overflow="block"`` this is zero copy: the publisher cannot
        reuse the record while the block runs.  With ``"overwrite"`` the
        publisher never waits, so the message is copied out first (and
        checked intact) — reading in place could see it overwritten.
        Keeping the memoryview past the block raises BufferError.
        """
        return _ReceivedView(self, timeout)

    def get(self, timeout: float | None = None) -> Any:
        """Receive an object published with :meth:`Publisher.put`."""
        with self.recv_view(timeout) as payload:
            return _codec.read_object(payload)

    def __iter__(self) -> Iterator[bytes]:
        """Messages as they arrive, for ever (until the handle is closed)."""
        while self._buf is not None:
            yield self.recv()

    def stats(self) -> ChannelStats:
        """This subscriber's counters; ``sent`` is the channel's, ``depth`` this subscriber's backlog."""
        buf = self._live()
        received, missed, received_bytes, _position, expected = self._bus.counters()
        return ChannelStats(
            sent=_core.load_u64(buf, _SENT),
            received=received,
            bytes=_core.load_u64(buf, _BYTES_SENT),
            bytes_received=received_bytes,
            depth=max(0, _core.load_u64(buf, _NEXT_SEQUENCE) - expected),
            waits=0,
            drops=missed,
        )

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
class _ReceivedView:
    """``with sub.recv_view() as view``: a plain class, not a generator, since this is
    the per-message path of zero-copy fan-out and a generator context manager
    costs microseconds here."""

    __slots__ = ("_record", "_subscriber", "_timeout", "_view", "_window")

    def __init__(self, subscriber: Subscriber, timeout: float | None) -> None:
        self._subscriber = subscriber
        self._timeout = timeout
        self._view: memoryview | None = None
        self._window: _core.Window | None = None
        self._record: tuple[int, int, int] | None = None

    def __enter__(self) -> memoryview:
        subscriber = self._subscriber
        buf = subscriber._live()
        if subscriber._overflow == "overwrite":
            self._view = memoryview(subscriber.recv(self._timeout))
            return self._view
        found = subscriber._bus.next(self._timeout, subscriber._spin)
        if found is None:
            raise subscriber._empty(self._timeout)
        position, offset, length, sequence = found
        try:
            window = _core.Window(buf, offset, length, True)
            view = memoryview(window)
            if _faults.armed:
                _faults.reach("pubsub.recv_view.inside")
        except BaseException:
            subscriber._bus.cancel()  # Ctrl-C before the block: the message stays unread
            raise
        self._record = (position, length, sequence)
        self._window, self._view = window, view
        return view

    def __exit__(self, *exc: object) -> None:
        view, window, record = self._view, self._window, self._record
        self._view = self._window = self._record = None
        if window is None or record is None:
            if view is not None:
                view.release()
            return
        assert view is not None
        clean = _let_go(view, window)
        self._subscriber._bus.done(*record)
        if not clean:
            raise BufferError(
                "a reference to the received buffer (a slice, an array, a memoryview) outlived the "
                "'with sub.recv_view()' block; its record may be overwritten now. "
                "Copy what you need inside the block"
            )


SubscriberInfo.__module__ = Publisher.__module__ = Subscriber.__module__ = "memipc"
