"""Child-process bodies for the Publisher/Subscriber multi-process, crash and Ctrl-C tests.

Every function here is importable by the spawn start method and takes only
picklable arguments: the channel's name as a string, numbers, and sometimes a
``multiprocessing`` pipe end (``conn``).  A pipe has no feeder thread, so a
report a child sends just before it is SIGKILLed is already in the kernel.
Children that wait for the parent do so with a timeout, so a test that
forgets one cannot leave it running; :mod:`tests._support.procs` kills every
child when its test ends anyway.

Messages are those of :mod:`tests.channels.children`: a 16-byte header
(publisher id, CRC-32, sequence number) and a random body, so a torn or mixed
message fails :func:`~tests.channels.children.check_message`.  Each publisher
numbers its messages 0, 1, 2, ...  ``STOP`` (shorter than any test message)
tells a subscriber that nothing more will come; one ``STOP`` reaches every
subscriber, since every subscriber receives every message.

Reports (tuples on ``conn``, first item says what happened):

* ``("joined", pid)``: the subscriber holds its slot (its cursor is set);
* ``("ready", pid)``: a publisher is open and waits for the parent's ``("go",)``;
* ``("half", pid)``: a publisher sent its first batch and waits for ``("go",)``;
* ``("blocking", pid, monotonic)`` / ``("interrupted", monotonic)``: Ctrl-C children.

:class:`BusControl` at the end is the parent's side: the channel's control
block, slots and records read and written through its /dev/shm file, with the
offsets of layout.h (struct mi_bus, mi_bus_slot, mi_bus_record).
"""

from __future__ import annotations

import os
import random
import signal
import struct
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from memipc import Publisher, Subscriber, _names
from memipc._channels._pubsub import Start
from memipc._platform import current as platform
from tests.channels.children import MAX_SIZE, MIN_SIZE, STOP, Maker, Tally

#: How long a child waits for one channel operation or for the parent's next move.
CHILD_TIMEOUT = 30.0
#: How long a child that is meant to be SIGKILLed waits before it gives up.
VICTIM_SECONDS = 60.0


def _await(conn: Connection, kind: str) -> None:
    if not conn.poll(CHILD_TIMEOUT):
        raise TimeoutError(f"child {os.getpid()} waited {CHILD_TIMEOUT} s for the parent's {kind!r}")
    message = conn.recv()
    if message != (kind,):
        raise AssertionError(f"child {os.getpid()} expected ({kind!r},) from the parent, got {message!r}")


def _publish(publisher: Publisher, maker: Maker, count: int, low: int, high: int) -> None:
    """``count`` messages, mostly by ``send``, some by ``loan`` (filled in place)."""
    for _ in range(count):
        size = maker.size(low, high)
        if maker.rng.random() < 0.8:
            publisher.send(maker.message(size), timeout=CHILD_TIMEOUT)
        else:
            header, body = maker.parts(size)
            with publisher.loan(size, timeout=CHILD_TIMEOUT) as buf:
                buf[: len(header)] = header
                buf[len(header) :] = body


def _receive_one(subscriber: Subscriber, rng: random.Random, tally: Tally) -> bool:
    """Take one message by ``recv`` or ``recv_view`` (checked in place); False on ``STOP``."""
    if rng.random() < 0.8:
        data = subscriber.recv(timeout=CHILD_TIMEOUT)
        if data == STOP:
            return False
        tally.add(data)
        return True
    with subscriber.recv_view(timeout=CHILD_TIMEOUT) as view:
        if len(view) == len(STOP) and view == STOP:
            return False
        tally.add(view)
    return True


def _finish(subscriber: Subscriber, tally: Tally) -> dict[str, Any]:
    summary = tally.summary()
    summary["received"] = subscriber.received
    summary["missed"] = subscriber.missed
    return summary


# ---- publishers ---------------------------------------------------------------------------------


def publish(
    name: str, producer: int, count: int, seed: int, low: int = MIN_SIZE, high: int = MAX_SIZE
) -> tuple[int, int]:
    """Publish ``count`` checksummed messages of random sizes; return (messages, bytes)."""
    maker = Maker(producer, seed)
    with Publisher(name, create=False) as publisher:
        _publish(publisher, maker, count, low, high)
    return maker.sequence, maker.total_bytes


def publish_in_two_halves(
    name: str, producer: int, first: int, second: int, size: int, conn: Connection
) -> int:
    """Publish ``first`` messages, report ``("half", pid)``, on ``("go",)`` publish ``second`` more."""
    maker = Maker(producer, seed=producer)
    with Publisher(name, create=False) as publisher:
        _publish(publisher, maker, first, size, size)
        conn.send(("half", os.getpid()))
        _await(conn, "go")
        _publish(publisher, maker, second, size, size)
    return maker.sequence


def publish_then_loan(name: str, producer: int, before: int, size: int) -> None:
    """Publish ``before`` messages, then fill a loan with a complete, valid one (killed at a point)."""
    maker = Maker(producer, seed=producer)
    with Publisher(name, create=False) as publisher:
        _publish(publisher, maker, before, size, size)
        header, body = maker.parts(size)
        with publisher.loan(size, timeout=CHILD_TIMEOUT) as buf:
            buf[: len(header)] = header
            buf[len(header) :] = body


def publish_on_go(name: str, producer: int, count: int, size: int, conn: Connection) -> dict[str, float]:
    """Report ``("ready", pid)``; on ``("go",)`` publish ``count`` messages one by one.

    Returns the longest single send, in seconds.
    """
    maker = Maker(producer, seed=producer)
    with Publisher(name, create=False) as publisher:
        conn.send(("ready", os.getpid()))
        _await(conn, "go")
        longest = 0.0
        for _ in range(count):
            message = maker.message(size)
            before = time.monotonic()
            publisher.send(message, timeout=CHILD_TIMEOUT)
            longest = max(longest, time.monotonic() - before)
    return {"longest_send": longest}


def publish_until_killed(name: str, producer: int, seed: int, conn: Connection) -> None:
    """Publish by ``send`` and ``loan`` for ever; report ``("sending", pid)`` after the first message."""
    maker = Maker(producer, seed)
    deadline = time.monotonic() + VICTIM_SECONDS
    with Publisher(name, create=False) as publisher:
        _publish(publisher, maker, 1, MIN_SIZE, MAX_SIZE)
        conn.send(("sending", os.getpid()))
        while time.monotonic() < deadline:
            _publish(publisher, maker, 16, MIN_SIZE, MAX_SIZE)
    raise TimeoutError(f"publisher {os.getpid()} sent for {VICTIM_SECONDS} s and was never killed")


def publish_until_told(name: str, producer: int, seed: int, conn: Connection) -> int:
    """Report ``("sending", pid)``, publish until the parent's ``("stop",)``; return how many."""
    maker = Maker(producer, seed)
    deadline = time.monotonic() + VICTIM_SECONDS
    with Publisher(name, create=False) as publisher:
        conn.send(("sending", os.getpid()))
        while not conn.poll(0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"publisher {os.getpid()} was never told to stop")
            _publish(publisher, maker, 16, MIN_SIZE, MAX_SIZE)
        message = conn.recv()
        if message != ("stop",):
            raise AssertionError(f"publisher {os.getpid()} expected ('stop',), got {message!r}")
    return maker.sequence


def send_timed(name: str, messages: list[bytes]) -> list[float]:
    """Publish ``messages`` one by one; return how long each send took, in seconds."""
    durations = []
    with Publisher(name, create=False) as publisher:
        for message in messages:
            before = time.monotonic()
            publisher.send(message, timeout=CHILD_TIMEOUT)
            durations.append(time.monotonic() - before)
    return durations


# ---- subscribers --------------------------------------------------------------------------------


def subscribe(
    name: str, start: Start, seed: int, pause_every: int, pause: float, conn: Connection
) -> dict[str, Any]:
    """Join, report ``("joined", pid)``, receive and check messages until ``STOP``.

    With ``pause_every``, the subscriber sleeps ``pause`` seconds after every
    ``pause_every`` messages (a deliberately slow reader).  Returns a
    :class:`~tests.channels.children.Tally` summary plus the subscriber's
    ``received`` and ``missed`` counters (which count the ``STOP``).
    """
    rng = random.Random(seed)
    tally = Tally()
    with Subscriber(name, start=start, create=False) as subscriber:
        conn.send(("joined", os.getpid()))
        while _receive_one(subscriber, rng, tally):
            if pause_every and tally.count % pause_every == 0:
                time.sleep(pause)
        return _finish(subscriber, tally)


def subscribe_many(name: str, handles: int, seed: int, conn: Connection) -> list[dict[str, Any]]:
    """Open ``handles`` subscribers in this process, report ``("joined", pid)``, and read them in turn.

    Round after round, each handle still running takes one message (``recv``
    or ``recv_view``), until every handle has seen ``STOP``.  Returns one
    summary per handle, as :func:`subscribe` does.
    """
    rng = random.Random(seed)
    subscribers = [Subscriber(name, create=False) for _ in range(handles)]
    try:
        tallies = [Tally() for _ in subscribers]
        conn.send(("joined", os.getpid()))
        running = set(range(handles))
        while running:
            for index in sorted(running):
                if not _receive_one(subscribers[index], rng, tallies[index]):
                    running.discard(index)
        return [_finish(subscriber, tally) for subscriber, tally in zip(subscribers, tallies, strict=True)]
    finally:
        for subscriber in subscribers:
            subscriber.close()


def join_and_hold(name: str, conn: Connection) -> None:
    """Join, report ``("joined", pid)``, and never read (until SIGKILLed)."""
    with Subscriber(name, create=False):
        conn.send(("joined", os.getpid()))
        time.sleep(VICTIM_SECONDS)
    raise TimeoutError(f"subscriber {os.getpid()} held its slot for {VICTIM_SECONDS} s and was never killed")


def view_one(name: str) -> None:
    """Join at the earliest message and read it with ``recv_view`` (killed inside)."""
    with (
        Subscriber(name, start="earliest", create=False) as subscriber,
        subscriber.recv_view(timeout=CHILD_TIMEOUT) as view,
    ):
        bytes(view)


def receive(name: str, count: int, start: Start = "earliest") -> list[bytes]:
    """Join and receive ``count`` messages, each within the child timeout."""
    with Subscriber(name, start=start, create=False) as subscriber:
        return [subscriber.recv(timeout=CHILD_TIMEOUT) for _ in range(count)]


# ---- closing a handle another thread is blocked on ------------------------------------------------


def close_while_another_thread_waits(name: str, side: str) -> tuple[str, list[str]]:
    """A thread blocks in ``recv`` (``side="recv"``) or ``send`` (a full ring); this thread closes its handle.

    Then it gives the blocked call a reason to wake (a message, or room).
    Returns (what ``close()`` did, what the blocked call did).  A crash here
    is the child dying of SIGSEGV, which the parent sees.
    """
    publisher = Publisher(name, 4096, create=True)
    subscriber = Subscriber(name)
    ended: list[str] = []

    def blocked() -> None:
        try:
            if side == "recv":
                subscriber.recv(timeout=CHILD_TIMEOUT)
            else:
                for _ in range(9):  # eight 512-byte records fill the ring; the ninth waits
                    publisher.send(b"x" * 480, timeout=CHILD_TIMEOUT)
            ended.append("returned")
        except Exception as error:
            ended.append(type(error).__name__)

    thread = threading.Thread(target=blocked, daemon=True)
    thread.start()
    word = SUBSCRIBERS_ASLEEP if side == "recv" else PUBLISHERS_ASLEEP
    with BusControl(name) as block:
        deadline = time.monotonic() + CHILD_TIMEOUT
        while block.u32(word) == 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {side} never went to sleep")
            time.sleep(0.001)
    target = subscriber if side == "recv" else publisher
    try:
        target.close()
        closed = "closed"
    except Exception as error:
        closed = type(error).__name__
    if side == "recv":
        publisher.send(b"wake up")
    else:
        subscriber.recv(timeout=CHILD_TIMEOUT)
    thread.join(CHILD_TIMEOUT)
    for endpoint in (subscriber, publisher):
        endpoint.close()
    return closed, ended


# ---- Ctrl-C -----------------------------------------------------------------------------------


def _until_interrupted(conn: Connection, block: Any) -> float:
    """Run ``block()`` until Ctrl-C; return ``time.monotonic()`` at the catch."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    conn.send(("blocking", os.getpid(), time.monotonic()))
    try:
        outcome = block()
    except KeyboardInterrupt:
        return time.monotonic()
    raise AssertionError(f"the blocking call returned {outcome!r} instead of raising KeyboardInterrupt")


def _interrupted(conn: Connection, caught_at: float) -> None:
    conn.send(("interrupted", caught_at))
    _await(conn, "go")


def interrupt_recv(name: str, conn: Connection) -> bytes:
    """Block in ``recv()`` with nothing published; after Ctrl-C, receive what the parent then sends."""
    with Subscriber(name, create=False) as subscriber:
        caught_at = _until_interrupted(conn, subscriber.recv)
        _interrupted(conn, caught_at)
        return subscriber.recv(timeout=CHILD_TIMEOUT)


def interrupt_send(name: str, conn: Connection) -> None:
    """Block in ``send()`` on a ring a subscriber holds full; after Ctrl-C, send again."""
    with Publisher(name, create=False) as publisher:
        caught_at = _until_interrupted(conn, lambda: publisher.send(b"\xcc" * publisher.max_message))
        _interrupted(conn, caught_at)
        publisher.send(b"after the interrupt", timeout=CHILD_TIMEOUT)


def interrupt_join(name: str, conn: Connection) -> bool:
    """Block joining while another process holds a loan; after Ctrl-C, join once the parent lets go."""
    caught_at = _until_interrupted(conn, lambda: Subscriber(name, create=False))
    _interrupted(conn, caught_at)
    with Subscriber(name, create=False, timeout=CHILD_TIMEOUT):
        return True


# ---- the parent's window on a channel's shared memory --------------------------------------------

#: Where the user area (the control block) starts in a channel's segment file (see _segment.py).
DATA_BASE = 4096
#: Control block (layout.h, struct mi_bus): 1024 bytes, then 128 slots of 64 bytes, then the records.
CONTROL_BYTES, SLOT_BYTES, SLOTS = 1024, 64, 128
DATA_OFFSET_VALUE = CONTROL_BYTES + SLOTS * SLOT_BYTES
#: Control-block fields (layout.h, struct mi_bus).
TAG, FLAGS, CAPACITY, MAX_MESSAGE, DATA_OFFSET, SLOTS_FIELD, SLOTS_USED = 0, 4, 32, 40, 48, 56, 60
PUBLISHER_LOCK, LOCK_OWNER_TID, TAIL, OLDEST, FLOOR, NEXT_SEQUENCE, SPACE_WANTED = (
    64,
    68,
    128,
    136,
    144,
    152,
    160,
)
DATA_SEQUENCE, SUBSCRIBERS_ASLEEP, SPACE_SEQUENCE, PUBLISHERS_WAITING, PUBLISHERS_ASLEEP = (
    192,
    196,
    256,
    260,
    268,
)
SENT, BYTES_SENT, WAITS, SUBSCRIBERS_LOST, JOINS, RESERVED = 320, 328, 336, 344, 352, 360
#: Slot fields (layout.h, struct mi_bus_slot).
IDENTITY, PIDNS, PID, CURSOR, RECEIVED, MISSED, BYTES, START_TICKS, SLOT_NEXT_SEQUENCE = (
    0,
    8,
    12,
    16,
    24,
    32,
    40,
    48,
    56,
)
#: Record header fields (layout.h, struct mi_bus_record), and the kinds.
POSITION, SEQUENCE, LENGTH, KIND = 0, 8, 16, 20
MESSAGE, PADDING = 1, 2
RECORD_HEADER = 32


class BusControl:
    """A channel's control block, slots and records, through its /dev/shm file (pread/pwrite).

    This is how a hostile or curious process sees the channel; offsets are
    relative to the control block (the start of the region's user area).
    """

    def __init__(self, name: str) -> None:
        self._fd = os.open(platform.segment_path(_names.parse(name).os_name), os.O_RDWR)
        self.capacity = self.u64(CAPACITY)

    def __enter__(self) -> BusControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, DATA_BASE + offset)

    def write(self, offset: int, data: bytes) -> None:
        assert os.pwrite(self._fd, data, DATA_BASE + offset) == len(data)

    def u32(self, offset: int) -> int:
        value: int = struct.unpack("<I", self.read(offset, 4))[0]
        return value

    def u64(self, offset: int) -> int:
        value: int = struct.unpack("<Q", self.read(offset, 8))[0]
        return value

    def set_u32(self, offset: int, value: int) -> None:
        self.write(offset, (value & 0xFFFFFFFF).to_bytes(4, "little"))

    def set_u64(self, offset: int, value: int) -> None:
        self.write(offset, (value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))

    @staticmethod
    def slot(index: int) -> int:
        """Control-block-relative offset of subscriber slot ``index``."""
        return CONTROL_BYTES + SLOT_BYTES * index

    def record(self, position: int) -> int:
        """Control-block-relative offset of the record header at ring ``position``."""
        return DATA_OFFSET_VALUE + (position & (self.capacity - 1))
