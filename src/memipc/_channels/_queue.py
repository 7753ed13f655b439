"""Queue: a named message queue in shared memory, SPSC or MPMC.

>>> import memipc, uuid
>>> q = memipc.Queue("doc-" + uuid.uuid4().hex[:8], capacity=1 << 16)
>>> q.send(b"frame 1"); q.put({"frame": 2})
>>> q.recv(), q.get()
(b'frame 1', {'frame': 2})
>>> with q.loan(5) as buf:          # zero-copy send: fill the record in place
...     buf[:] = b"hello"
>>> with q.recv_view() as view:     # zero-copy receive: read it in place
...     bytes(view)
b'hello'
>>> q.close()
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Literal, final

from .. import _core, _faults
from .._errors import ClosedError, Empty, ExistsError, Full, NotFoundError
from .._names import Scope, parse
from .._region import Region
from .._sync._base import check_tag, claim
from . import _codec
from ._stats import ChannelStats

Mode = Literal["mpmc", "spsc"]
CONTROL_BYTES = _core.RING_CONTROL_BYTES
RECORD_HEADER = _core.RECORD_HEADER
MIN_CAPACITY = 4096
DEFAULT_CAPACITY = 1 << 20

# Control-block fields Python writes at creation or reads for stats (layout.h, struct mi_ring).
_CAPACITY, _MAX_MESSAGE, _DATA_OFFSET = 32, 40, 48
_SENT, _RECEIVED, _BYTES_SENT, _BYTES_RECEIVED = 512, 520, 528, 536
_WAITS, _DROPS, _LOST_READS = 544, 552, 560


def attach(
    oname: Any, kind: str, create: bool | None, size: int, permissions: int | None, initialize: Any
) -> Region:
    """Open (``create=False``), create (``True``) or open-or-create (``None``) a channel's region."""
    if create:
        return Region._create(oname, size, kind=kind, mode=permissions, initialize=initialize)
    if create is False:
        return Region._open(oname, kind=kind)
    for _ in range(16):
        try:
            return Region._open(oname, kind=kind)
        except NotFoundError:
            pass
        try:
            return Region._create(oname, size, kind=kind, mode=permissions, initialize=initialize)
        except ExistsError:
            continue
    raise ExistsError(f"cannot open or create {kind} {oname.qualified!r}: it kept changing; try again")


def _power_of_two_at_least(value: int) -> int:
    return 1 << max(0, (value - 1).bit_length())


def ring_geometry(capacity: int, max_message: int | None) -> tuple[int, int]:
    """(capacity, max_message) after rounding: capacity a power of two that holds max_message twice."""
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
        raise ValueError(f"capacity must be a positive number of bytes, not {capacity!r}")
    ring = _power_of_two_at_least(max(capacity, MIN_CAPACITY))
    if max_message is not None:
        if isinstance(max_message, bool) or not isinstance(max_message, int) or max_message <= 0:
            raise ValueError(f"max_message must be a positive number of bytes, not {max_message!r}")
        ring = max(ring, _power_of_two_at_least(2 * (max_message + RECORD_HEADER)))
    if ring > 1 << 40:
        raise ValueError(f"capacity {capacity} (for max_message={max_message}) is beyond 1 TiB")
    largest = ring // 2 - RECORD_HEADER
    return ring, largest if max_message is None else max_message


@final
class Queue:
    """A queue of byte messages between processes, living in one named region.

    ``Queue(name, capacity)`` opens the queue or creates it (``create=True`` or
    ``False`` insists).  ``capacity`` is message storage in bytes, rounded up
    to a power of two; one message may use at most half of it (``max_message``
    defaults to that).  ``mode="mpmc"`` lets any number of processes send and
    receive; ``"spsc"`` is faster but allows exactly one sending and one
    receiving process.  Sending or receiving blocks until ``timeout`` (seconds,
    None = for ever), spinning briefly before sleeping (``spin=`` as for the
    sync objects), and raises :class:`~memipc.Full` / :class:`~memipc.Empty`.

    A sender killed mid-message leaves nothing visible and blocks nobody for
    more than about a second; so does a receiver killed inside ``recv_view``
    (its message is dropped; ``stats().drops`` counts both).
    """

    _ring: _core.Ring
    _region: Region | None = None
    _buf: memoryview | None = None
    _name: str = "?"

    def __init__(
        self,
        name: str,
        capacity: int = DEFAULT_CAPACITY,
        *,
        max_message: int | None = None,
        mode: Mode = "mpmc",
        create: bool | None = None,
        scope: Scope | None = None,
        permissions: int | None = None,
        spin: float | None = None,
    ) -> None:
        if mode not in ("mpmc", "spsc"):
            raise ValueError(f"mode must be 'mpmc' or 'spsc', not {mode!r}")
        if spin is not None and not 0 <= spin <= 1:
            raise ValueError(f"spin must be None (adaptive) or between 0 and 1 second, not {spin!r}")
        self._spin = spin
        oname = parse(name, scope)
        ring_capacity, ring_max = ring_geometry(capacity, max_message)

        def initialize(area: memoryview) -> None:
            def fields(buf: memoryview, offset: int) -> None:
                _core.store_u32(buf, offset + 4, _core.RING_SPSC if mode == "spsc" else 0)
                _core.store_u64(buf, offset + _CAPACITY, ring_capacity)
                _core.store_u64(buf, offset + _MAX_MESSAGE, ring_max)
                _core.store_u64(buf, offset + _DATA_OFFSET, CONTROL_BYTES)

            claim(area, 0, "queue", CONTROL_BYTES, fields)

        region = self._attach(oname, create, CONTROL_BYTES + ring_capacity, permissions, initialize)
        try:
            buf = region.buf
            check_tag(buf, 0, "queue")
            self._ring = _core.Ring(buf, 0)
        except BaseException:
            region.close()
            raise
        self._region, self._buf, self._name = region, buf, oname.qualified
        self._capacity, self._max_message, spsc = self._ring.parameters()
        self._mode: Mode = "spsc" if spsc else "mpmc"
        self._created = region.created

    @staticmethod
    def _attach(
        oname: Any, create: bool | None, size: int, permissions: int | None, initialize: Any
    ) -> Region:
        return attach(oname, "queue", create, size, permissions, initialize)

    # ---- properties ------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def capacity(self) -> int:
        """Bytes of message storage (a power of two)."""
        return self._capacity

    @property
    def max_message(self) -> int:
        """The largest message this queue accepts, in bytes."""
        return self._max_message

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def created(self) -> bool:
        return self._created

    def _live(self) -> memoryview:
        if self._buf is None:
            raise ClosedError(f"{self!r} is closed; open the queue again")
        return self._buf

    def _full(self, timeout: float | None) -> Full:
        return Full(f"queue {self._name!r} stayed full for {timeout} s; a receiver may be slow or gone")

    def _empty(self, timeout: float | None) -> Empty:
        return Empty(f"queue {self._name!r} stayed empty for {timeout} s")

    # ---- bytes -----------------------------------------------------------

    def send(self, data: Any, timeout: float | None = None) -> None:
        """Send one bytes-like message; Full if no room within ``timeout`` seconds."""
        if not self._ring.send(data, timeout, self._spin):
            raise self._full(timeout)

    def send_nowait(self, data: Any) -> None:
        """Send without waiting; Full if there is no room now."""
        if not self._ring.send(data, 0):
            raise self._full(0)

    def recv(self, timeout: float | None = None) -> bytes:
        """Receive one message as bytes; Empty if none arrives within ``timeout`` seconds."""
        message = self._ring.recv(timeout, self._spin)
        if message is None:
            raise self._empty(timeout)
        return message

    def recv_nowait(self) -> bytes:
        """Receive without waiting; Empty if nothing is there now."""
        message = self._ring.recv(0)
        if message is None:
            raise self._empty(0)
        return message

    def send_many(self, messages: Iterable[Any], timeout: float | None = None) -> int:
        """Send a batch; waits (up to ``timeout``) only while nothing could be sent.

        Returns how many were sent; the rest did not fit and were not sent.
        """
        items = messages if isinstance(messages, list | tuple) else list(messages)
        return self._ring.send_many(items, timeout)

    def recv_many(self, max_n: int, timeout: float | None = None) -> list[bytes]:
        """Receive up to ``max_n`` messages; waits (up to ``timeout``) only for the first.

        Returns an empty list if nothing arrived in time.
        """
        if max_n < 1:
            raise ValueError(f"max_n must be at least 1, not {max_n}")
        return self._ring.recv_many(max_n, timeout)

    # ---- zero copy -------------------------------------------------------

    @contextmanager
    def loan(self, nbytes: int, timeout: float | None = None) -> Iterator[memoryview]:
        """Reserve a message of ``nbytes`` and fill it in place (zero copy).

        The message is sent when the block ends, and discarded if it raises.
        Keeping the memoryview, a slice of it or an array over it past the
        block raises BufferError (and discards the message): the record
        belongs to the queue once sent.
        """
        buf = self._live()
        reserved = self._ring.reserve(nbytes, timeout, self._spin)
        if reserved == -1:
            raise self._full(timeout)
        assert isinstance(reserved, tuple)
        position, offset = reserved
        window = _core.Window(buf, offset, nbytes)
        view = memoryview(window)
        if _faults.armed:
            _faults.reach("queue.loan.after_reserve")
        try:
            yield view
            if _faults.armed:
                _faults.reach("queue.loan.before_commit")
        except BaseException:
            _let_go(view, window)
            self._ring.abort(position)
            raise
        if not _let_go(view, window):
            self._ring.abort(position)
            raise BufferError(
                "a reference to the loaned buffer (a slice, an array, a memoryview) outlived the "
                "'with q.loan()' block; the message was discarded. Copy what you need instead"
            )
        self._ring.commit(position)

    @contextmanager
    def recv_view(self, timeout: float | None = None) -> Iterator[memoryview]:
        """Receive one message and read it in place (zero copy, read-only).

        The record is freed when the block ends.  Keeping the memoryview (or a
        slice or array made from it) past the block raises BufferError: the
        record is reused afterwards, so copy what you need inside the block.
        """
        position, view, window = self._claim_view(timeout)
        if _faults.armed:
            _faults.reach("queue.recv_view.inside")
        try:
            yield view
        finally:
            clean = _let_go(view, window)
            self._ring.release(position)
            if not clean:
                raise BufferError(
                    "a reference to the received buffer (a slice, an array, a memoryview) outlived the "
                    "'with q.recv_view()' block; its record was freed and will be overwritten. "
                    "Copy what you need inside the block"
                )

    def _claim_view(self, timeout: float | None) -> tuple[int, memoryview, _core.Window]:
        buf = self._live()
        claimed = self._ring.claim(timeout, self._spin)
        if claimed is None:
            raise self._empty(timeout)
        position, offset, length = claimed
        window = _core.Window(buf, offset, length, True)
        return position, memoryview(window), window

    # ---- objects and arrays ----------------------------------------------

    def put(self, obj: object, timeout: float | None = None) -> None:
        """Send any picklable object (pickle 5; out-of-band buffers copied once, into the ring)."""
        stream, raws, size, offsets = _codec.encode_object(obj)
        with self.loan(size, timeout) as target:
            _codec.write_object(target, stream, raws, offsets)
        for raw in raws:
            raw.release()

    def get(self, timeout: float | None = None) -> Any:
        """Receive an object sent with :meth:`put`."""
        with self.recv_view(timeout) as payload:
            return _codec.read_object(payload)

    def send_array(self, array: Any, timeout: float | None = None) -> None:
        """Send a numpy array with its dtype and shape (one copy, into the ring)."""
        import numpy as np  # noqa: PLC0415 - optional dependency

        # ascontiguousarray would turn a 0-d array into a 1-d one.
        contiguous = np.asarray(array)
        if not contiguous.flags.c_contiguous:
            contiguous = contiguous.copy(order="C")
        header, data_offset = _codec.encode_array_header(contiguous)
        with self.loan(data_offset + contiguous.nbytes, timeout) as target:
            target[: len(header)] = header
            target[data_offset:] = contiguous.reshape(-1).view(np.uint8).data

    def recv_array(self, copy: bool = False, timeout: float | None = None) -> Any:
        """Receive an array sent with :meth:`send_array`.

        With ``copy=False`` (default) the array lives in shared memory, read-only,
        and its record stays reserved until the array is garbage collected
        (``del`` it when done: until then it holds ring space). ``copy=True``
        returns an ordinary writable array and frees the record at once.
        """
        position, view, window = self._claim_view(timeout)
        try:
            array = _codec.read_array(view)
            if copy:
                result = array.copy()
                del array
                _let_go(view, window)
                self._ring.release(position)
                return result
        except BaseException:
            _let_go(view, window)
            self._ring.release(position)
            raise
        # The record is freed when the last array viewing it is collected.
        weakref.finalize(_codec.array_root(array), _release_quietly, self._ring, position)
        return array

    # ---- state -----------------------------------------------------------

    def stats(self) -> ChannelStats:
        """Counters for ``memipc watch`` and friends."""
        buf = self._live()
        return ChannelStats(
            sent=_core.load_u64(buf, _SENT),
            # A message claimed by a receiver that died is a drop, not a delivery.
            received=max(0, _core.load_u64(buf, _RECEIVED) - _core.load_u64(buf, _LOST_READS)),
            bytes=_core.load_u64(buf, _BYTES_SENT),
            bytes_received=_core.load_u64(buf, _BYTES_RECEIVED),
            depth=self._ring.depth(),
            waits=_core.load_u64(buf, _WAITS),
            drops=_core.load_u64(buf, _DROPS),
        )

    def __len__(self) -> int:
        """Messages sent and not yet received."""
        return self._ring.depth()

    def close(self) -> None:
        """Close this handle (idempotent); the queue goes away with its last handle.

        Raises BufferError while an array from ``recv_array(copy=False)`` is
        alive (it still reads the ring); the handle is then unusable, and
        ``close()`` can be called again once the array is gone.
        """
        ring = getattr(self, "_ring", None)
        if ring is not None:
            ring.close()
        self._buf = None
        if self._region is not None:
            self._region.close()  # BufferError: keep _region so a later close() finishes
            self._region = None

    def unlink(self) -> None:
        """Remove the queue's name now; open handles keep working."""
        self._live()
        if self._region is not None:
            self._region.unlink()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self._region is not None:
            with suppress(BufferError):
                self.close()

    def __repr__(self) -> str:
        state = " closed" if self._buf is None else ""
        return (
            f"<memipc.Queue name={self._name!r} kind='queue' size={getattr(self, '_capacity', 0)} "
            f"mode={getattr(self, '_mode', '?')!r}{state}>"
        )


def _let_go(view: memoryview, window: _core.Window) -> bool:
    """Release our memoryview of a record; False if anything made from it is still alive."""
    try:
        view.release()
    except BufferError:
        return False
    if window.exported():
        return False
    window.close()
    return True


def _release_quietly(ring: _core.Ring, position: int) -> None:
    with suppress(Exception):
        ring.release(position)


Queue.__module__ = "memipc"
