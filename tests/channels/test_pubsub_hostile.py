"""Hostile shared memory: a Publisher/Subscriber channel reports CorruptRegionError, never crashes or hangs.

Everything in the channel's shared memory is untrusted.  These tests write
values straight into the channel's /dev/shm file (through
:class:`~tests.channels.pubsub_children.BusControl`), as another process
could, and then use the channel.

* Targeted tests change one field of the control block (ring parameters,
  tag, ``tail``, ``oldest``, ``floor``, ``slots_used``, ``next_sequence``,
  the publisher lock), of a subscriber slot (``identity``, ``cursor``) or of a
  record header (``position``, ``sequence``, ``length``, ``kind``) and check
  which outcome each operation gives.  Where layout.h calls a value
  inconsistent, the answer is ``CorruptRegionError``; where a value cannot be
  checked (a ``floor`` or a slot cursor that is merely too high, a slot whose
  owner looks dead), the channel must behave sanely: no torn message, every
  loss counted.
* The fuzz property lets hypothesis damage a channel after a random history
  (1-4 writes: near-valid or random values into named fields, or random bytes
  at random offsets of the control block, the first slots and the records
  around the cursors), possibly while a loan is open, and then runs every
  operation on every handle, joins a new subscriber and reopens the channel.
  Each operation must end normally (a received message no longer than
  ``max_message``) or in ``CorruptRegionError``, ``Empty``, ``Full``,
  ``TimeoutError`` (a join or a send behind a forged lock), ``KindMismatchError``
  (the tag forged into another kind's), or
  ``MessageTooLargeError`` (a reopened handle whose ``max_message`` was
  forged smaller).  The operations run in a forked child, so that a crash
  (SIGSEGV, SIGBUS) or a hang fails the example instead of the whole run; the
  control block's reserved bytes must still be zero afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import struct
import threading
import time
import traceback
import warnings
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from memipc import (
    CorruptRegionError,
    Empty,
    Full,
    KindMismatchError,
    MessageTooLargeError,
    Publisher,
    Subscriber,
    _layout,
)
from memipc._channels._pubsub import Start
from tests.channels.pubsub_children import (
    BYTES_SENT,
    CAPACITY,
    CONTROL_BYTES,
    CURSOR,
    DATA_OFFSET,
    DATA_SEQUENCE,
    FLOOR,
    IDENTITY,
    KIND,
    LENGTH,
    LOCK_OWNER_TID,
    MAX_MESSAGE,
    MESSAGE,
    MISSED,
    NEXT_SEQUENCE,
    OLDEST,
    PADDING,
    PID,
    PIDNS,
    POSITION,
    PUBLISHER_LOCK,
    PUBLISHERS_ASLEEP,
    PUBLISHERS_WAITING,
    RECEIVED,
    RECORD_HEADER,
    RESERVED,
    SENT,
    SEQUENCE,
    SLOT_NEXT_SEQUENCE,
    SLOTS,
    SLOTS_FIELD,
    SLOTS_USED,
    SPACE_SEQUENCE,
    SPACE_WANTED,
    SUBSCRIBERS_ASLEEP,
    TAG,
    TAIL,
    BusControl,
)

Names = Callable[[], str]

#: Bound on one forked child's whole run; it needs tens of milliseconds.
CHILD_TIMEOUT = 5.0
U64 = 2**64
U32 = 2**32
CAPACITY_BYTES = 4096
MAX = 2016

# No shrinking: an example that hangs costs CHILD_TIMEOUT per run; the report lists the writes.
FUZZ = settings(
    max_examples=100,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def span(length: int) -> int:
    return -(-(RECORD_HEADER + length) // 32) * 32


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


DEAD_PID = dead_pid()


def stamped(sequence: int, size: int) -> bytes:
    """A message that carries its number and a CRC of its body, so damage shows."""
    body = bytes((sequence + index) % 251 for index in range(max(0, size - 12)))
    return struct.pack("<QI", sequence, zlib.crc32(body)) + body


def intact(data: bytes) -> int:
    sequence, crc = struct.unpack_from("<QI", data)
    assert zlib.crc32(data[12:]) == crc, f"message {sequence} is torn or damaged"
    return int(sequence)


# ---- running operations where a crash or a hang cannot hurt ---------------------------------


def in_child(function: Callable[[], Any], timeout: float = CHILD_TIMEOUT) -> Any:
    """Run ``function()`` in a forked child and return its (picklable) result.

    The child shares the parent's mappings (MAP_SHARED), so it sees and changes
    the same channel.  Fails if the child crashes, hangs past ``timeout`` or
    raises; the child always ends with ``os._exit`` (no finalizers run there).
    """
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            try:
                payload = pickle.dumps(("ok", function()))
            except BaseException as error:
                payload = pickle.dumps(("error", f"{error!r}\n{traceback.format_exc()}"))
            view = memoryview(payload)
            while view:
                view = view[os.write(write_end, view) :]
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([read_end], [], [], max(0.0, left))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"the operations hung: the child was still running after {timeout} s")
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        raise AssertionError(
            f"the operations crashed the process: {signal.Signals(os.WTERMSIG(status)).name}"
        )
    assert chunks, f"the child exited ({status:#x}) without reporting"
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "error":
        raise AssertionError(f"the child failed: {value}")
    return value


# ---- fixtures ---------------------------------------------------------------------------------


class Scene:
    """A block or overwrite channel: a publisher, two subscribers, some traffic; the control file open."""

    def __init__(self, name: str, overflow: str = "block", messages: int = 3, read: int = 1) -> None:
        self.name = name
        self.publisher = Publisher(name, CAPACITY_BYTES, overflow=overflow, create=True)  # type: ignore[arg-type]
        self.subscribers = [Subscriber(name, start="earliest"), Subscriber(name, start="earliest")]
        self.block = BusControl(name)
        self.sent = 0
        for _ in range(messages):
            self.send(100)
        for _ in range(read):
            self.subscribers[0].recv_nowait()

    def send(self, size: int) -> None:
        self.publisher.send_nowait(stamped(self.sent, size))
        self.sent += 1

    def close(self) -> None:
        self.block.close()
        for endpoint in [*self.subscribers, self.publisher]:
            with contextlib.suppress(BufferError):
                endpoint.close()


@pytest.fixture
def scene(names: Names) -> Iterator[Callable[..., Scene]]:
    made: list[Scene] = []

    def make(overflow: str = "block", messages: int = 3, read: int = 1) -> Scene:
        made.append(Scene(names(), overflow, messages, read))
        return made[-1]

    yield make
    for one in made:
        one.close()


def outcome(call: Callable[[], object]) -> str:
    """ "ok" or the name of what ``call()`` raised."""
    try:
        call()
    except Exception as error:
        return type(error).__name__
    return "ok"


def drain(subscriber: Subscriber) -> list[int]:
    """Receive until Empty; every message must be intact; returns their numbers."""
    got = []
    while True:
        try:
            got.append(intact(subscriber.recv_nowait()))
        except Empty:
            return got


# ---- ring parameters and the tag --------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (CAPACITY, 4096 + 32),  # not a power of two
        (CAPACITY, 8192),  # more than the file holds
        (CAPACITY, 0),
        (CAPACITY, 1 << 63),
        (MAX_MESSAGE, 0),
        (MAX_MESSAGE, MAX + 1),  # more than half the ring less a header
        (MAX_MESSAGE, U64 - 1),
        (DATA_OFFSET, 1024),
        (DATA_OFFSET, 0),
        (DATA_OFFSET, U64 - 1024),
        (SLOTS_FIELD, 127),
        (SLOTS_FIELD, 0),
    ],
    ids=[
        "capacity not a power of two",
        "capacity beyond the file",
        "capacity 0",
        "capacity 2**63",
        "max_message 0",
        "max_message over half",
        "max_message 2**64-1",
        "data_offset at the slots",
        "data_offset 0",
        "data_offset wraps",
        "slots 127",
        "slots 0",
    ],
)
def test_ring_parameters_that_do_not_fit_fail_every_open_and_open_handles_keep_working(
    scene: Callable[..., Scene], field: int, value: int
) -> None:
    one = scene()
    if field == SLOTS_FIELD:
        one.block.set_u32(field, value)
    else:
        one.block.set_u64(field, value)
    before = one.block.read(0, CONTROL_BYTES)
    with pytest.raises(CorruptRegionError):
        Publisher(one.name, create=False)
    with pytest.raises(CorruptRegionError):
        Subscriber(one.name, create=False)
    with pytest.raises(CorruptRegionError):
        Subscriber(one.name)  # open-or-create must not "repair" it either
    assert one.block.read(0, CONTROL_BYTES) == before, "a failed open wrote into the control block"
    # Open handles validated the parameters once and never read them again.
    one.send(MAX)
    assert drain(one.subscribers[0]) == [1, 2, 3]
    assert drain(one.subscribers[1]) == [0, 1, 2, 3]


def test_a_smaller_valid_max_message_applies_to_handles_opened_after_it_was_written(
    scene: Callable[..., Scene],
) -> None:
    one = scene()
    one.block.set_u64(MAX_MESSAGE, 100)
    reopened = Publisher(one.name, create=False)
    late = Subscriber(one.name, start="earliest", create=False)
    try:
        assert reopened.max_message == 100
        with pytest.raises(MessageTooLargeError):
            reopened.send_nowait(b"x" * 101)
        one.send(1000)  # the first handle keeps the limit it validated
        assert late.recv_nowait()  # the 100-byte messages are fine
        for _ in range(2):
            late.recv_nowait()
        with pytest.raises(CorruptRegionError):
            late.recv_nowait()  # a record longer than this handle's max_message is not to be trusted
    finally:
        late.close()
        reopened.close()


def sync_tag(kind: str) -> int:
    """The ready tag of an object of ``kind`` (layout.h: MI_TAG)."""
    return int(0x5359 << 16 | _layout.KIND_CODES[kind])


@pytest.mark.parametrize(
    "tag", [0, 1, 0xDEADBEEF, sync_tag("queue")], ids=["zeroed", "initializing", "garbage", "a queue's tag"]
)
def test_a_damaged_tag_fails_every_operation_and_a_reopen_writes_nothing(
    scene: Callable[..., Scene], tag: int
) -> None:
    one = scene()
    original = one.block.u32(TAG)
    assert original == sync_tag("pubsub")
    one.block.set_u32(TAG, tag)
    publisher, subscriber = one.publisher, one.subscribers[0]

    def loan() -> None:
        with publisher.loan(4):
            pass

    def view() -> None:
        with subscriber.recv_view(timeout=0):
            pass

    for call in (
        lambda: publisher.send_nowait(b"x"),
        loan,
        lambda: publisher.put(1),
        subscriber.recv_nowait,
        view,
        lambda: subscriber.recv(timeout=0.01),
    ):
        with pytest.raises(CorruptRegionError):
            call()
    before = one.block.read(0, CONTROL_BYTES)
    with pytest.raises((CorruptRegionError, KindMismatchError)):
        Subscriber(one.name)
    with pytest.raises((CorruptRegionError, KindMismatchError)):
        Publisher(one.name, create=False)
    assert one.block.read(0, CONTROL_BYTES) == before, "a failed open rewrote the damaged control block"
    one.block.set_u32(TAG, original)
    assert drain(subscriber) == [1, 2], "the published messages did not survive"


# ---- tail, oldest, floor, next_sequence, slots_used ----------------------------------------------


@pytest.mark.parametrize("overflow", ["block", "overwrite"])
@pytest.mark.parametrize(
    ("field", "change"),
    [
        (OLDEST, lambda oldest, tail: tail + 32),  # oldest past tail
        (OLDEST, lambda oldest, tail: oldest + 8),  # misaligned
        (TAIL, lambda oldest, tail: tail + 8),  # misaligned
        (OLDEST, lambda oldest, tail: U64 - 32),  # near the end of the position space
    ],
    ids=["oldest>tail", "oldest misaligned", "tail misaligned", "oldest near 2**64"],
)
def test_ends_out_of_order_give_corrupt_region_error_to_everyone(
    scene: Callable[..., Scene], overflow: str, field: int, change: Callable[[int, int], int]
) -> None:
    one = scene(overflow)
    one.block.set_u64(field, change(one.block.u64(OLDEST), one.block.u64(TAIL)))
    for call in (
        lambda: one.publisher.send_nowait(b"x"),
        one.subscribers[0].recv_nowait,
        one.subscribers[1].recv_nowait,
        lambda: Subscriber(one.name, start="earliest", timeout=1).close(),
        lambda: Subscriber(one.name, timeout=1).close(),
    ):
        assert outcome(call) == "CorruptRegionError"
    assert len(one.publisher.subscribers()) == 2, "a failed join kept its slot"
    assert one.publisher.stats().sent == 3, "the counters are not cursors: still readable"


@pytest.mark.parametrize("overflow", ["block", "overwrite"])
def test_a_tail_more_than_a_ring_ahead_of_oldest_stops_the_publisher_and_joiners(
    scene: Callable[..., Scene], overflow: str
) -> None:
    one = scene(overflow)
    one.block.set_u64(TAIL, one.block.u64(OLDEST) + CAPACITY_BYTES + 32)
    assert outcome(lambda: one.publisher.send_nowait(b"x")) == "CorruptRegionError"
    assert outcome(lambda: Subscriber(one.name, start="earliest", timeout=1).close()) == "CorruptRegionError"
    # A subscriber checks each header instead: what it reads is intact, and then the forgery shows.
    for subscriber in one.subscribers:
        got: list[int] = []

        def read_on(subscriber: Subscriber = subscriber, got: list[int] = got) -> None:
            while True:
                got.append(intact(subscriber.recv(timeout=0)))

        with pytest.raises(CorruptRegionError):
            read_on()
        assert got == list(range(3 - len(got), 3))


@pytest.mark.parametrize("forged", ["lower", "higher"])
def test_a_forged_next_sequence_shows_as_missed_messages_or_corruption_never_as_a_wrong_message(
    scene: Callable[..., Scene], forged: str
) -> None:
    one = scene()
    next_sequence = one.block.u64(NEXT_SEQUENCE)
    assert next_sequence == 3
    one.block.set_u64(NEXT_SEQUENCE, 1 if forged == "lower" else 1000)
    one.send(100)
    subscriber = one.subscribers[0]
    assert [intact(subscriber.recv_nowait()) for _ in range(2)] == [1, 2]
    if forged == "lower":
        with pytest.raises(CorruptRegionError):
            subscriber.recv_nowait()  # numbered before what it already received
    else:
        assert intact(subscriber.recv_nowait()) == 3
        assert subscriber.missed == 1000 - 3


def test_a_floor_beyond_tail_or_behind_oldest_gives_corrupt_region_error_to_the_publisher(
    scene: Callable[..., Scene],
) -> None:
    one = scene()
    for value in (
        one.block.u64(TAIL) + 32,
        one.block.u64(OLDEST) - 32 if one.block.u64(OLDEST) else U64 - 32,
    ):
        one.block.set_u64(FLOOR, value)
        assert outcome(lambda: one.publisher.send_nowait(b"x")) == "CorruptRegionError"
    assert drain(one.subscribers[0]) == [1, 2], "subscribers do not read floor"


def test_a_floor_forged_too_high_loses_messages_of_a_slow_subscriber_but_never_tears_one(
    scene: Callable[..., Scene],
) -> None:
    """floor is a hint only the publisher keeps: too high, it overwrites unread records; readers see gaps."""
    one = scene(messages=0, read=0)
    slow = one.subscribers[1]
    for _ in range(20):
        one.block.set_u64(FLOOR, one.block.u64(TAIL))
        one.send(600)
    got = drain(slow)
    assert got, "the slow subscriber received nothing"
    assert got == sorted(got) and got[-1] == 19
    assert slow.received + slow.missed == 20
    assert slow.missed > 0


@pytest.mark.parametrize("used", [SLOTS + 1, U32 - 1])
def test_slots_used_beyond_the_slot_count_gives_corrupt_region_error_to_a_publisher_that_needs_room(
    scene: Callable[..., Scene], used: int
) -> None:
    one = scene(messages=0, read=0)
    one.block.set_u32(SLOTS_USED, used)
    assert len(one.publisher.subscribers()) == 2, "subscribers() must stay within the 128 slots"
    outcomes = {outcome(lambda: one.send(600)) for _ in range(20)}
    assert outcomes <= {"ok", "CorruptRegionError"}
    assert "CorruptRegionError" in outcomes
    assert outcome(lambda: Subscriber(one.name, timeout=1).close()) == "CorruptRegionError"


def test_slots_used_forged_to_zero_hides_the_subscribers_who_then_count_their_losses(
    scene: Callable[..., Scene],
) -> None:
    one = scene(messages=0, read=0)
    one.block.set_u32(SLOTS_USED, 0)
    assert one.publisher.subscribers() == []
    for _ in range(20):
        one.send(600)  # nobody holds the ring back now
    for subscriber in one.subscribers:
        got = drain(subscriber)
        assert got == sorted(got) and got[-1] == 19
        assert subscriber.received + subscriber.missed == 20


# ---- slots ----------------------------------------------------------------------------------


def test_a_live_subscribers_slot_cursor_out_of_range_gives_corrupt_region_error_until_it_reads(
    scene: Callable[..., Scene],
) -> None:
    one = scene(messages=6, read=0)
    slow = one.subscribers[1]
    one.block.set_u64(BusControl.slot(1) + CURSOR, one.block.u64(TAIL) + 4096)
    outcomes = {outcome(lambda: one.send(600)) for _ in range(10)}
    assert "CorruptRegionError" in outcomes
    assert outcomes <= {"ok", "CorruptRegionError"}
    assert intact(slow.recv_nowait()) == 0  # reading stores a true cursor again
    drain(one.subscribers[0])
    assert outcome(lambda: one.send(600)) in ("ok", "Full")


def test_a_live_subscribers_slot_cursor_forged_ahead_loses_its_messages_but_never_tears_one(
    scene: Callable[..., Scene],
) -> None:
    one = scene(messages=0, read=0)
    slow = one.subscribers[1]
    for _ in range(20):
        one.block.set_u64(BusControl.slot(1) + CURSOR, one.block.u64(TAIL))
        one.block.set_u64(BusControl.slot(0) + CURSOR, one.block.u64(TAIL))
        one.send(600)
    for subscriber in (one.subscribers[0], slow):
        got = drain(subscriber)
        assert got == sorted(got) and got[-1] == 19
        assert subscriber.received + subscriber.missed == 20


@pytest.mark.parametrize("overflow", ["block", "overwrite"])
def test_a_subscriber_whose_slot_was_taken_from_it_reads_on_and_counts_its_losses(
    scene: Callable[..., Scene], overflow: str
) -> None:
    """As if a publisher wrongly judged it dead: it no longer holds anyone back, and knows when lapped."""
    one = scene(overflow, messages=0, read=0)
    for slot in (0, 1):
        one.block.set_u64(BusControl.slot(slot) + IDENTITY, 0)
    for _ in range(20):
        one.send(600)
    for subscriber in one.subscribers:
        got = drain(subscriber)
        assert got == sorted(got) and got[-1] == 19
        assert subscriber.received + subscriber.missed == 20
    assert one.publisher.subscribers() == []


def test_a_slot_forged_for_a_dead_process_is_freed_when_the_publisher_needs_its_room(
    scene: Callable[..., Scene],
) -> None:
    one = scene(messages=0, read=0)
    for subscriber in one.subscribers:
        subscriber.close()
    slot = BusControl.slot(5)
    one.block.set_u64(slot + IDENTITY, DEAD_PID << 32 | 12345)
    one.block.set_u32(slot + PID, DEAD_PID)
    one.block.set_u64(slot + CURSOR, 0)
    one.block.set_u32(SLOTS_USED, 6)
    one.block.set_u64(FLOOR, 0)
    for _ in range(30):
        one.send(600)
    assert one.publisher.stats().drops == 1
    assert one.publisher.subscribers() == []


def test_a_subscriber_killed_inside_its_join_does_not_brick_the_channel(scene: Callable[..., Scene]) -> None:
    """The state a join leaves if killed between claiming a used slot and storing its cursor."""
    one = scene(messages=0, read=0)
    reader = one.subscribers[0]
    one.subscribers[1].close()
    for _ in range(20):  # a few laps: oldest > 0
        one.send(300)
        intact(reader.recv_nowait())
    assert one.block.u64(OLDEST) > 0
    slot = BusControl.slot(1)  # used and closed before (cursor 0, stale now); claimed, cursor not yet stored
    one.block.set_u64(slot + CURSOR, 0)
    one.block.set_u64(slot + IDENTITY, DEAD_PID << 32 | 12345)
    one.block.set_u32(PUBLISHER_LOCK, DEAD_PID)  # the joiner held the publisher lock
    for _ in range(20):
        one.send(300)
        intact(reader.recv_nowait())
    assert one.publisher.stats().drops == 1


# ---- record headers ---------------------------------------------------------------------------


@pytest.mark.parametrize("overflow", ["block", "overwrite"])
@pytest.mark.parametrize(
    ("field", "value"),
    [
        (POSITION, lambda position: position + 4096),  # a stale header from another lap
        (POSITION, lambda position: position + 32),
        (LENGTH, lambda position: MAX + 1),  # longer than max_message
        (LENGTH, lambda position: U32 - 1),
        (LENGTH, lambda position: 1000),  # within max_message, but runs past tail
        (KIND, lambda position: 0),
        (KIND, lambda position: 99),
        (KIND, lambda position: PADDING),  # a filler that does not end at the ring's end
    ],
    ids=[
        "position one lap ahead",
        "position off by one record",
        "length over max_message",
        "length 2**32-1",
        "length past tail",
        "kind 0",
        "kind 99",
        "padding mid-ring",
    ],
)
def test_a_record_header_that_lies_gives_corrupt_region_error_to_its_readers(
    scene: Callable[..., Scene], overflow: str, field: int, value: Callable[[int], int]
) -> None:
    one = scene(overflow, messages=1, read=0)
    at = one.block.record(0) + field
    if field == POSITION:
        one.block.set_u64(at, value(0))
    else:
        one.block.set_u32(at, value(0))
    for subscriber in one.subscribers:
        assert outcome(subscriber.recv_nowait) == "CorruptRegionError"
        with pytest.raises(CorruptRegionError), subscriber.recv_view(timeout=0):
            pass
    assert outcome(lambda: Subscriber(one.name, start="earliest", timeout=1).close()) == "CorruptRegionError"
    late = Subscriber(one.name, start="latest", timeout=1)  # a latest joiner never reads it
    try:
        one.send(100)
        assert intact(late.recv_nowait()) == 1
    finally:
        late.close()


def test_a_damaged_record_the_publisher_must_evict_gives_it_corrupt_region_error(
    scene: Callable[..., Scene],
) -> None:
    one = scene("overwrite", messages=0, read=0)
    for _ in range(6):
        one.send(600)
    oldest = one.block.u64(OLDEST)
    one.block.set_u64(one.block.record(oldest) + POSITION, oldest + 64)
    outcomes = [outcome(lambda: one.send(600)) for _ in range(3)]
    assert "CorruptRegionError" in outcomes


@pytest.mark.parametrize("overflow", ["block", "overwrite"])
def test_a_record_numbered_before_what_a_subscriber_expects_gives_corrupt_region_error(
    scene: Callable[..., Scene], overflow: str
) -> None:
    one = scene(overflow, messages=3, read=2)
    position = span(100) * 2  # the third record
    assert one.block.u64(one.block.record(position) + POSITION) == position
    one.block.set_u64(one.block.record(position) + SEQUENCE, 0)
    assert outcome(one.subscribers[0].recv_nowait) == "CorruptRegionError"
    assert [intact(one.subscribers[1].recv_nowait()) for _ in range(2)] == [0, 1]
    assert outcome(one.subscribers[1].recv_nowait) == "CorruptRegionError"


def test_a_forged_record_beyond_tail_is_never_received(scene: Callable[..., Scene]) -> None:
    one = scene(messages=0, read=0)
    tail = one.block.u64(TAIL)
    header = one.block.record(tail)
    one.block.set_u64(header + POSITION, tail)
    one.block.set_u64(header + SEQUENCE, 0)
    one.block.set_u32(header + LENGTH, 10)
    one.block.set_u32(header + KIND, MESSAGE)
    for subscriber in one.subscribers:
        with pytest.raises(Empty):
            subscriber.recv_nowait()
    one.send(100)
    assert intact(one.subscribers[0].recv_nowait()) == 0


# ---- the publisher lock -----------------------------------------------------------------------


def test_a_publisher_lock_held_by_a_live_process_gives_full_and_join_timeouts_but_readers_go_on(
    scene: Callable[..., Scene],
) -> None:
    one = scene()
    one.block.set_u32(PUBLISHER_LOCK, 1)  # init: alive, and never the owner of anything here
    with pytest.raises(Full):
        one.publisher.send_nowait(b"x")
    with pytest.raises(Full):
        one.publisher.send(b"x", timeout=0.05)
    with pytest.raises(TimeoutError):
        Subscriber(one.name, timeout=0.05)
    assert drain(one.subscribers[0]) == [1, 2], "subscribers do not need the publisher lock"
    one.block.set_u32(PUBLISHER_LOCK, 0)  # the "owner" lets go
    one.send(100)
    assert drain(one.subscribers[0]) == [3]


def test_a_publisher_lock_of_a_dead_process_is_taken_over(scene: Callable[..., Scene]) -> None:
    one = scene()
    one.block.set_u32(PUBLISHER_LOCK, DEAD_PID)
    one.send(100)
    assert drain(one.subscribers[0]) == [1, 2, 3]
    one.block.set_u32(PUBLISHER_LOCK, DEAD_PID)
    Subscriber(one.name, timeout=5).close()


def test_a_publisher_lock_forged_with_this_threads_identity_is_refused_without_hanging(
    scene: Callable[..., Scene],
) -> None:
    """Our own pid and tid in the lock word: a loan we do not have.  Refused, never waited for."""
    one = scene()

    def operations() -> list[str]:  # in a forked child: its own pid and thread
        one.block.write(PUBLISHER_LOCK, struct.pack("<II", os.getpid(), threading.get_native_id()))
        return [
            outcome(lambda: one.publisher.send(b"x", timeout=1)),
            outcome(lambda: Subscriber(one.name, timeout=1).close()),
        ]

    found = in_child(operations)
    assert set(found) <= {"RuntimeError", "CorruptRegionError"}, found


# ---- the fuzz property ----------------------------------------------------------------------


Write = tuple[str, int, bytes]  # (description, control-block offset, bytes)

SPECIAL_U64 = [0, 1, 31, 32, 1024, 1 << 40, 1 << 63, U64 - 1, U64 - 32, U64 - 4096]


def u64_values(current: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(0, U64 - 1),
        st.sampled_from([*SPECIAL_U64, MAX, MAX + 1, CAPACITY_BYTES, 2 * CAPACITY_BYTES]),
        st.integers(-2 * CAPACITY_BYTES, 2 * CAPACITY_BYTES).map(lambda delta: (current + delta) % U64),
        st.integers(-8, 8).map(lambda records: (current + 32 * records) % U64),
    )


def u32_values(extra: list[int]) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, U32 - 1), st.sampled_from([0, 1, 0x80000000, U32 - 1, *extra]))


CONTROL_U64 = {
    "capacity": CAPACITY,
    "max_message": MAX_MESSAGE,
    "data_offset": DATA_OFFSET,
    "tail": TAIL,
    "oldest": OLDEST,
    "floor": FLOOR,
    "next_sequence": NEXT_SEQUENCE,
    "space_wanted": SPACE_WANTED,
    "sent": SENT,
    "bytes_sent": BYTES_SENT,
}
CONTROL_U32 = {
    "slots": SLOTS_FIELD,
    "slots_used": SLOTS_USED,
    "publisher lock word": PUBLISHER_LOCK,
    "lock owner tid": LOCK_OWNER_TID,
    "data_sequence": DATA_SEQUENCE,
    "subscribers_asleep": SUBSCRIBERS_ASLEEP,
    "space_sequence": SPACE_SEQUENCE,
    "publishers_waiting": PUBLISHERS_WAITING,
    "publishers_asleep": PUBLISHERS_ASLEEP,
    "tag": TAG,
}
SLOT_FIELDS = {
    "identity": (IDENTITY, 8),
    "pidns": (PIDNS, 4),
    "pid": (PID, 4),
    "cursor": (CURSOR, 8),
    "received": (RECEIVED, 8),
    "missed": (MISSED, 8),
    "next_sequence": (SLOT_NEXT_SEQUENCE, 8),
}
RECORD_FIELDS = {
    "position": (POSITION, 8),
    "sequence": (SEQUENCE, 8),
    "length": (LENGTH, 4),
    "kind": (KIND, 4),
}


def hostile_write(data: st.DataObject, block: BusControl) -> Write:
    """Draw one hostile write from the channel's current state; the child performs it."""
    oldest, tail = block.u64(OLDEST), block.u64(TAIL)
    cursors = [block.u64(BusControl.slot(index) + CURSOR) for index in range(3)]
    target = data.draw(st.sampled_from(["control u64", "control u32", "slot", "record", "raw bytes"]))
    if target == "control u64":
        field = data.draw(st.sampled_from(sorted(CONTROL_U64)), label="field")
        offset = CONTROL_U64[field]
        value = data.draw(u64_values(block.u64(offset)), label="value")
        return f"{field} = {value:#x}", offset, value.to_bytes(8, "little")
    if target == "control u32":
        field = data.draw(st.sampled_from(sorted(CONTROL_U32)), label="field")
        offset = CONTROL_U32[field]
        extra = [os.getpid(), DEAD_PID, threading.get_native_id(), SLOTS, SLOTS + 1, block.u32(offset) + 1]
        extra += [sync_tag("queue"), sync_tag("mutex"), 1]
        value = data.draw(u32_values(extra), label="value")
        return f"{field} = {value:#x}", offset, value.to_bytes(4, "little")
    if target == "slot":
        index = data.draw(st.integers(0, 3), label="slot")
        field = data.draw(st.sampled_from(sorted(SLOT_FIELDS)), label="slot field")
        offset, size = SLOT_FIELDS[field]
        at = BusControl.slot(index) + offset
        if field == "identity":
            value = data.draw(
                st.one_of(
                    st.sampled_from([0, DEAD_PID << 32 | 1, os.getpid() << 32, 1 << 32]),
                    st.integers(0, U64 - 1),
                ),
                label="value",
            )
        elif size == 8:
            value = data.draw(u64_values(block.u64(at)), label="value")
        else:
            value = data.draw(u32_values([os.getpid(), DEAD_PID]), label="value")
        return f"slot {index}: {field} = {value:#x}", at, value.to_bytes(size, "little")
    if target == "record":
        position = data.draw(
            st.one_of(
                st.sampled_from([oldest, tail, *cursors]),
                st.integers(0, CAPACITY_BYTES // 32 - 1).map(lambda index: 32 * index),
            ),
            label="record position",
        )
        field = data.draw(st.sampled_from(sorted(RECORD_FIELDS)), label="record field")
        offset, size = RECORD_FIELDS[field]
        at = block.record(position) + offset
        index = position % CAPACITY_BYTES
        if field == "kind":
            value = data.draw(
                st.one_of(st.sampled_from([0, MESSAGE, PADDING, 3]), u32_values([])), label="value"
            )
        elif field == "length":
            value = data.draw(
                st.one_of(
                    st.integers(0, CAPACITY_BYTES + 64),
                    st.sampled_from([MAX, MAX + 1, CAPACITY_BYTES - index - 32, CAPACITY_BYTES - index]),
                    u32_values([]),
                ).map(lambda length: length % U32),
                label="value",
            )
        else:
            value = data.draw(u64_values(block.u64(at)), label="value")
        return f"record at {position:#x}: {field} = {value:#x}", at, value.to_bytes(size, "little")
    # Random bytes at a random offset: the control block, the first slots, or records near the cursors.
    region = data.draw(st.sampled_from(["control", "slots", "records"]), label="region")
    if region == "control":
        offset = data.draw(st.integers(0, RESERVED - 1), label="offset")
    elif region == "slots":
        offset = data.draw(st.integers(BusControl.slot(0), BusControl.slot(4) - 1), label="offset")
    else:
        around = data.draw(st.sampled_from([oldest, tail, *cursors]), label="around")
        offset = block.record(around) + data.draw(st.integers(-64, 256), label="delta")
        offset = max(BusControl.slot(SLOTS), min(offset, BusControl.slot(SLOTS) + CAPACITY_BYTES - 1))
    raw = data.draw(st.binary(min_size=1, max_size=16), label="bytes")
    end = RESERVED if region == "control" else BusControl.slot(SLOTS) + CAPACITY_BYTES
    raw = raw[: end - offset]  # the reserved bytes stay zero: the test checks nobody else wrote them
    return f"{len(raw)} bytes at {offset:#x}: {raw.hex()}", offset, raw


#: KindMismatchError: a tag forged into another kind's tag makes the region look like that kind.
ALLOWED = {"ok", "CorruptRegionError", "Empty", "Full", "TimeoutError", "KindMismatchError"}


def attempt(results: list[tuple[str, str]], label: str, call: Callable[[], object]) -> None:
    """Run one operation; record "ok" or the exception's name."""
    try:
        call()
    except (CorruptRegionError, Empty, Full, TimeoutError, MessageTooLargeError) as error:
        results.append((label, type(error).__name__))
    except Exception as error:
        results.append((label, f"UNEXPECTED {error!r}"))
    else:
        results.append((label, "ok"))


class _Abort(Exception):
    pass


def exercise_publisher(publisher: Publisher, results: list[tuple[str, str]], prefix: str) -> None:
    largest = publisher.max_message

    def loan(commit: bool) -> None:
        with contextlib.suppress(_Abort), publisher.loan(min(64, largest), timeout=0) as buf:
            buf[:] = b"\x5a" * len(buf)
            if not commit:
                raise _Abort

    def look() -> None:
        stats = publisher.stats()
        assert stats.sent >= 0 and stats.depth >= 0
        for info in publisher.subscribers():
            assert 0 <= info.slot < SLOTS and info.lag >= 0 and info.lag_bytes >= 0

    for label, call in [
        ("stats and subscribers", look),
        ("send_nowait small", lambda: publisher.send_nowait(b"s" * 10)),
        ("send_nowait largest", lambda: publisher.send_nowait(b"L" * largest)),
        ("loan commit", lambda: loan(True)),
        ("loan abort", lambda: loan(False)),
        ("put", lambda: publisher.put(("object", 1), timeout=0)),
        ("send 20 ms", lambda: publisher.send(b"t" * 300, timeout=0.02)),
    ]:
        attempt(results, f"{prefix}{label}", call)


def exercise_subscriber(subscriber: Subscriber, results: list[tuple[str, str]], prefix: str) -> None:
    largest = subscriber.max_message

    def received(data: bytes | memoryview) -> None:
        if len(data) > largest:
            raise AssertionError(f"received {len(data)} bytes from a channel whose max_message is {largest}")

    def view() -> None:
        with subscriber.recv_view(timeout=0) as payload:
            received(bytes(payload))

    def look() -> None:
        stats = subscriber.stats()
        assert stats.received >= 0 and stats.depth >= 0

    for label, call in [
        ("stats", look),
        ("recv_nowait", lambda: received(subscriber.recv_nowait())),
        ("recv_view", view),
        ("recv 20 ms", lambda: received(subscriber.recv(timeout=0.02))),
        ("recv_nowait again", lambda: received(subscriber.recv_nowait())),
    ]:
        attempt(results, f"{prefix}{label}", call)


def everything(name: str, one: Scene, damage: list[Write], loan_open: str) -> list[tuple[str, str]]:
    """The child's work: damage the channel (maybe under an open loan), then use every handle."""
    results: list[tuple[str, str]] = []
    open_loan: contextlib.AbstractContextManager[memoryview] | None = None
    if loan_open != "none":
        try:
            open_loan = one.publisher.loan(100, timeout=0)
            open_loan.__enter__()[:] = b"\x11" * 100
            results.append(("start loan", "ok"))
        except Full:
            results.append(("start loan", "Full"))
    for _, offset, value in damage:
        one.block.write(offset, value)
    if open_loan is not None:
        if loan_open == "abort":
            attempt(results, "end loan (abort)", lambda: open_loan.__exit__(_Abort, _Abort(), None))
        else:
            attempt(results, "end loan (commit)", lambda: open_loan.__exit__(None, None, None))
    for round_ in range(2):
        exercise_publisher(one.publisher, results, f"publisher, round {round_}: ")
        for index, subscriber in enumerate(one.subscribers):
            exercise_subscriber(subscriber, results, f"subscriber {index}, round {round_}: ")
    starts: tuple[Start, ...] = ("earliest", "latest")
    for start in starts:
        try:
            joined = Subscriber(name, start=start, create=False, timeout=0.05)
        except (CorruptRegionError, TimeoutError, KindMismatchError) as error:
            results.append((f"join {start}", type(error).__name__))
            continue
        except Exception as error:
            results.append((f"join {start}", f"UNEXPECTED {error!r}"))
            continue
        results.append((f"join {start}", "ok"))
        exercise_subscriber(joined, results, f"joined {start}: ")
        with contextlib.suppress(BufferError):
            joined.close()
    try:
        reopened = Publisher(name, create=False)
    except (CorruptRegionError, KindMismatchError) as error:
        results.append(("reopen", type(error).__name__))
        return results
    except Exception as error:
        results.append(("reopen", f"UNEXPECTED {error!r}"))
        return results
    results.append(("reopen", "ok"))
    exercise_publisher(reopened, results, "reopened: ")
    with contextlib.suppress(BufferError):
        reopened.close()
    return results


def history(one: Scene, steps: list[tuple[int, int]]) -> None:
    """Sends and receives before the damage, so that cursors and records sit anywhere in the ring."""
    for action, size in steps:
        with contextlib.suppress(Full, Empty):
            if action == 0:
                one.send(size)
            else:
                one.subscribers[action - 1].recv_nowait()


FUZZ_ARGUMENTS: dict[str, st.SearchStrategy[Any]] = {
    "data": st.data(),
    "overflow": st.sampled_from(["block", "overwrite"]),
    "steps": st.lists(st.tuples(st.integers(0, 2), st.integers(12, MAX)), max_size=24),
    "writes": st.integers(1, 4),
    "loan_open": st.sampled_from(["none", "none", "commit", "abort"]),
}


def fuzz_once(
    names: Names,
    data: st.DataObject,
    overflow: str,
    steps: list[tuple[int, int]],
    writes: int,
    loan_open: str,
) -> None:
    one = Scene(names(), overflow, messages=0, read=0)
    try:
        history(one, steps)
        damage = [hostile_write(data, one.block) for _ in range(writes)]
        results: list[tuple[str, str]] = in_child(lambda: everything(one.name, one, damage, loan_open))
        for label, result in results:
            event(f"{label.split(':')[-1].strip()}: {result}")
        forged_max = one.block.u64(MAX_MESSAGE) < one.publisher.max_message
        allowed = ALLOWED | ({"MessageTooLargeError"} if forged_max else set())
        bad = [(label, result) for label, result in results if result not in allowed]
        assert not bad, f"after {[d for d, _, _ in damage]}: operations ended otherwise than allowed: {bad}"
        assert one.block.read(RESERVED, CONTROL_BYTES - RESERVED) == bytes(CONTROL_BYTES - RESERVED), (
            f"after {[d for d, _, _ in damage]}: an operation wrote into the control block's reserved bytes"
        )
    finally:
        one.close()


@FUZZ
@given(**FUZZ_ARGUMENTS)
def test_hostile_channel_state_gives_corrupt_region_error_never_a_crash_or_a_hang(
    names: Names,
    data: st.DataObject,
    overflow: str,
    steps: list[tuple[int, int]],
    writes: int,
    loan_open: str,
) -> None:
    fuzz_once(names, data, overflow, steps, writes, loan_open)


@pytest.mark.stress
@settings(FUZZ, max_examples=1500)
@given(**FUZZ_ARGUMENTS)
def test_hostile_channel_state_soak(
    names: Names,
    data: st.DataObject,
    overflow: str,
    steps: list[tuple[int, int]],
    writes: int,
    loan_open: str,
) -> None:
    fuzz_once(names, data, overflow, steps, writes, loan_open)
