"""Queue in one process: every method and error of SPEC §5, in both modes.

(One exception, kept next to the loan tests it belongs with: discarded loans
racing a receiver in a spawned child, since only another process can run the
ring's C code at the same time as this one.)

Each test runs once for ``mode="mpmc"`` and once for ``"spsc"`` (the ``mode``
fixture in conftest.py).  The default test queue has 4096 bytes of storage and
a ``max_message`` of 2016 (half the ring less one 32-byte record header).

Timed waits are only ever checked from below ("took at least the timeout");
a call that must *not* wait runs in a helper thread, and the test fails if it
is still running after a generous bound rather than hanging the run.
"""

from __future__ import annotations

import array
import contextlib
import gc
import pickle
import queue as stdlib_queue
import random
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from memipc import (
    ChannelStats,
    ClosedError,
    CorruptRegionError,
    Empty,
    ExistsError,
    Full,
    KindMismatchError,
    MessageTooLargeError,
    Mutex,
    NotFoundError,
    Queue,
    Region,
)
from memipc._channels import _codec
from tests._support import procs
from tests.channels.conftest import HEAD, RELEASE, TAIL, Control, Mode, Queues

Names = Callable[[], str]
Controls = Callable[[Queue], Control]

#: A short timeout for calls that must time out.
TIMEOUT = 0.1
#: Bound on a call that must return at once: reaching it means the call blocked.
AT_ONCE = 10.0
MAX = 2016  # max_message of the default 4096-byte test queue


def span(length: int) -> int:
    """Ring bytes one record of ``length`` payload bytes occupies (header + payload, 32-aligned)."""
    return -(-(32 + length) // 32) * 32


def outcome_within(call: Callable[[], Any], bound: float = AT_ONCE) -> Any:
    """Run ``call()`` in a thread; return its result or the exception it raised; fail if it blocks."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(call())
        except BaseException as error:
            box.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), f"the call was still blocked after {bound} s; it should return at once"
    return box[0]


def timed(call: Callable[[], Any]) -> tuple[BaseException | None, float]:
    """(what ``call()`` raised or None, seconds it took)."""
    start = time.monotonic()
    try:
        call()
    except Exception as error:
        return error, time.monotonic() - start
    return None, time.monotonic() - start


def fill(queue: Queue, size: int = MAX) -> int:
    """Send ``size``-byte messages until the queue is full; return how many went in."""
    sent = 0
    while True:
        try:
            queue.send_nowait(bytes([sent % 256]) * size)
        except Full:
            return sent
        sent += 1


# ---- geometry and opening ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "capacity"),
    [
        (1, 4096),
        (4095, 4096),
        (4096, 4096),
        (4097, 8192),
        (5000, 8192),
        (1 << 16, 1 << 16),
        (100_000, 1 << 17),
    ],
)
def test_capacity_is_rounded_up_to_a_power_of_two_of_at_least_4096_and_max_message_is_half_less_a_header(
    queues: Queues, asked: int, capacity: int
) -> None:
    queue = queues(asked)
    assert queue.capacity == capacity
    assert queue.max_message == capacity // 2 - 32


def test_a_larger_max_message_grows_the_capacity_and_is_the_exact_limit(queues: Queues) -> None:
    queue = queues(4096, max_message=3000)
    assert queue.capacity == 8192
    assert queue.max_message == 3000
    queue.send_nowait(b"m" * 3000)
    assert queue.recv_nowait() == b"m" * 3000
    with pytest.raises(MessageTooLargeError):
        queue.send_nowait(b"m" * 3001)


def test_a_smaller_max_message_keeps_the_capacity_and_lowers_the_limit(queues: Queues) -> None:
    queue = queues(8192, max_message=100)
    assert (queue.capacity, queue.max_message) == (8192, 100)
    queue.send_nowait(b"x" * 100)
    with pytest.raises(MessageTooLargeError):
        queue.send_nowait(b"x" * 101)
    assert queue.recv_nowait() == b"x" * 100


@pytest.mark.parametrize(
    "arguments",
    [
        {"capacity": 0},
        {"capacity": -4096},
        {"capacity": True},
        {"capacity": 4096.0},
        {"max_message": 0},
        {"max_message": -1},
        {"mode": "fifo"},
        {"spin": 2.0},
        {"spin": -0.1},
    ],
    ids=lambda arguments: ",".join(f"{key}={value!r}" for key, value in arguments.items()),
)
def test_invalid_arguments_raise_value_error_and_create_nothing(name: str, arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Queue(name, **arguments)
    with pytest.raises(NotFoundError):
        Queue(name, create=False)


def test_reopening_by_name_sees_the_same_queue_with_the_creators_mode_and_capacity(
    queues: Queues, name: str, mode: Mode
) -> None:
    first = queues(8192, name=name, max_message=1000)
    other: Mode = "spsc" if mode == "mpmc" else "mpmc"
    second = queues(1 << 16, name=name, mode=other, max_message=50)
    assert first.created and not second.created
    assert (second.capacity, second.max_message, second.mode) == (8192, 1000, mode)
    assert second.name == first.name == name
    first.send_nowait(b"from the first handle")
    assert len(second) == 1
    assert second.recv_nowait() == b"from the first handle"
    second.put({"back": 1})
    assert first.get(timeout=0) == {"back": 1}
    assert first.stats() == second.stats()


def test_create_true_refuses_a_name_that_exists(queues: Queues, name: str) -> None:
    queues(name=name, create=True)
    with pytest.raises(ExistsError):
        queues(name=name, create=True)


def test_create_false_refuses_a_name_that_does_not_exist_and_opens_one_that_does(
    queues: Queues, name: str
) -> None:
    with pytest.raises(NotFoundError):
        queues(name=name, create=False)
    created = queues(name=name, create=True)
    opened = queues(name=name, create=False)
    assert created.created and not opened.created
    created.send_nowait(b"x")
    assert opened.recv_nowait() == b"x"


def test_a_name_holding_a_mutex_raises_kind_mismatch(name: str, mode: Mode) -> None:
    mutex = Mutex(name)
    try:
        with pytest.raises(KindMismatchError):
            Queue(name, mode=mode)
        with pytest.raises(KindMismatchError):
            Queue(name, mode=mode, create=False)
        with pytest.raises(ExistsError):
            Queue(name, mode=mode, create=True)
    finally:
        mutex.close()


def test_a_name_holding_a_region_raises_kind_mismatch_and_a_queue_is_no_region(
    names: Names, queues: Queues, mode: Mode
) -> None:
    region_name = names()
    region = Region.create(region_name, 8192)
    try:
        with pytest.raises(KindMismatchError):
            Queue(region_name, mode=mode)
        with pytest.raises(KindMismatchError):
            Queue(region_name, mode=mode, create=False)
    finally:
        region.close()
    queue = queues()
    with pytest.raises(KindMismatchError):
        Region.open(queue.name)
    with pytest.raises(KindMismatchError):
        Mutex(queue.name)


def test_unlink_removes_the_name_but_open_handles_keep_working(queues: Queues, name: str) -> None:
    queue = queues(name=name)
    queue.send_nowait(b"before")
    queue.unlink()
    with pytest.raises(NotFoundError):
        Queue(name, create=False)
    queue.send_nowait(b"after")
    assert queue.recv_nowait() == b"before"
    assert queue.recv_nowait() == b"after"


def test_repr_shows_name_kind_size_and_mode_and_says_closed(queues: Queues, mode: Mode) -> None:
    queue = queues(8192)
    text = repr(queue)
    for part in (repr(queue.name), "kind='queue'", "size=8192", f"mode={mode!r}"):
        assert part in text
    assert "closed" not in text
    queue.close()
    assert "closed" in repr(queue)


# ---- send and recv ----------------------------------------------------------------------------


def test_messages_arrive_in_order_with_their_exact_bytes(queues: Queues) -> None:
    queue = queues(1 << 16)
    messages: list[Any] = [
        b"",
        b"a",
        b"\x00" * 31,
        b"\xff" * 32,
        b"hello world",
        bytearray(b"a bytearray"),
        memoryview(b"--a memoryview--")[2:-2],
        array.array("i", [1, 2, 3]),
        np.arange(5, dtype=np.uint16),
        bytes(range(256)) * 8,
        b"x" * queue.max_message,
    ]
    for message in messages:
        queue.send_nowait(message)
    assert len(queue) == len(messages)
    for message in messages:
        got = queue.recv_nowait()
        assert type(got) is bytes
        assert got == bytes(memoryview(message).cast("B"))
    assert len(queue) == 0


def test_the_empty_message_is_a_message(queue: Queue) -> None:
    queue.send_nowait(b"")
    assert len(queue) == 1
    assert queue.recv_nowait() == b""
    with pytest.raises(Empty):
        queue.recv_nowait()


def test_a_message_of_exactly_max_message_bytes_fits_and_one_byte_more_never_does(queue: Queue) -> None:
    assert queue.max_message == MAX
    largest = bytes(random.Random(1).randbytes(MAX))
    queue.send_nowait(largest)
    queue.send(largest, timeout=0)
    assert queue.recv_nowait() == largest
    assert queue.recv(timeout=0) == largest
    with pytest.raises(MessageTooLargeError):
        queue.send_nowait(b"y" * (MAX + 1))
    assert len(queue) == 0


def test_two_largest_messages_fill_the_ring_exactly(queue: Queue) -> None:
    assert fill(queue) == 2
    with pytest.raises(Full):
        queue.send_nowait(b"")
    assert queue.recv_nowait() == b"\x00" * MAX
    queue.send_nowait(b"\x02" * MAX)
    assert [queue.recv_nowait(), queue.recv_nowait()] == [b"\x01" * MAX, b"\x02" * MAX]


def test_records_wrap_around_the_end_many_times_with_padding_and_lose_no_byte(
    queue: Queue, control: Controls
) -> None:
    """Sizes whose records do not divide the ring force a padding record at the end again and again."""
    rng = random.Random(4)
    block = control(queue)
    model: deque[bytes] = deque()
    payload_spans = 0
    for index in range(3000):
        size = rng.choice([0, 1, 33, 999, 1000, 1500, MAX - 1, MAX, rng.randrange(MAX + 1)])
        data = index.to_bytes(4, "little")[:size] + rng.randbytes(max(0, size - 4))
        while True:
            try:
                queue.send_nowait(data)
                break
            except Full:
                assert queue.recv_nowait() == model.popleft()
        model.append(data)
        payload_spans += span(size)
        assert len(queue) == len(model)
    while model:
        assert queue.recv_nowait() == model.popleft()
    with pytest.raises(Empty):
        queue.recv_nowait()
    tail, head, release = block.u64(TAIL), block.u64(HEAD), block.u64(RELEASE)
    assert tail == head == release, "a drained queue has all its cursors together"
    assert tail // queue.capacity >= 100, "the records did not wrap around the ring many times"
    assert tail > payload_spans, "no padding record was ever written, although records had to straddle"
    assert (tail - payload_spans) % 32 == 0


def test_send_nowait_on_a_full_queue_raises_full_and_keeps_what_was_queued(queue: Queue) -> None:
    assert fill(queue, 600) == 6
    before = queue.stats()
    with pytest.raises(Full) as caught:
        queue.send_nowait(b"z" * 600)
    assert isinstance(caught.value, stdlib_queue.Full)
    assert queue.stats() == before
    assert [queue.recv_nowait() for _ in range(6)] == [bytes([i]) * 600 for i in range(6)]


def test_send_with_a_timeout_on_a_full_queue_waits_at_least_the_timeout(queue: Queue) -> None:
    fill(queue)
    error, took = timed(lambda: queue.send(b"late", timeout=TIMEOUT))
    assert isinstance(error, Full)
    assert took >= TIMEOUT
    assert len(queue) == 2


def test_recv_nowait_on_an_empty_queue_raises_empty(queue: Queue) -> None:
    with pytest.raises(Empty) as caught:
        queue.recv_nowait()
    assert isinstance(caught.value, stdlib_queue.Empty)
    with pytest.raises(Empty):
        queue.recv(timeout=0)


def test_recv_with_a_timeout_on_an_empty_queue_waits_at_least_the_timeout(queue: Queue) -> None:
    error, took = timed(lambda: queue.recv(timeout=TIMEOUT))
    assert isinstance(error, Empty)
    assert took >= TIMEOUT


def test_blocking_calls_return_as_soon_as_they_can(queue: Queue) -> None:
    """recv(timeout=None) with a message waiting, send(timeout=None) with room, return at once."""
    assert outcome_within(lambda: queue.send(b"now")) is None
    assert outcome_within(queue.recv) == b"now"


def test_a_blocked_recv_wakes_when_another_thread_sends(queue: Queue) -> None:
    timer = threading.Timer(0.05, lambda: queue.send(b"wake up"))
    timer.start()
    try:
        assert queue.recv(timeout=AT_ONCE) == b"wake up"
    finally:
        timer.join()


def test_a_blocked_send_wakes_when_another_thread_receives(queue: Queue) -> None:
    fill(queue)
    received: list[bytes] = []
    timer = threading.Timer(0.05, lambda: received.append(queue.recv()))
    timer.start()
    try:
        queue.send(b"fits now", timeout=AT_ONCE)
    finally:
        timer.join()
    assert received == [b"\x00" * MAX]
    assert [queue.recv_nowait(), queue.recv_nowait()] == [b"\x01" * MAX, b"fits now"]


# ---- messages that can never fit --------------------------------------------------------------


def _too_large_calls(queue: Queue) -> dict[str, Callable[[], Any]]:
    big = b"b" * (MAX + 1)

    def loan() -> None:
        with queue.loan(MAX + 1):
            raise AssertionError("the loan was granted")

    return {
        "send": lambda: queue.send(big),
        "send with timeout": lambda: queue.send(big, timeout=5),
        "send_nowait": lambda: queue.send_nowait(big),
        "loan": loan,
        "put": lambda: queue.put(big),
        "put of an array": lambda: queue.put(np.zeros(MAX, dtype=np.uint8)),
        "send_array": lambda: queue.send_array(np.zeros(MAX, dtype=np.uint8)),
        "send_many": lambda: queue.send_many([big]),
    }


@pytest.mark.parametrize("full", [False, True], ids=["empty queue", "full queue"])
@pytest.mark.parametrize(
    "call",
    ["send", "send with timeout", "send_nowait", "loan", "put", "put of an array", "send_array", "send_many"],
)
def test_a_message_larger_than_max_message_raises_message_too_large_at_once(
    queue: Queue, call: str, full: bool
) -> None:
    queued = fill(queue) if full else 0
    before = queue.stats()
    outcome = outcome_within(_too_large_calls(queue)[call])
    assert isinstance(outcome, MessageTooLargeError), f"{call} gave {outcome!r}"
    assert isinstance(outcome, ValueError)
    assert str(queue.max_message) in str(outcome) or "max_message" in str(outcome)
    assert queue.stats() == before
    assert len(queue) == queued


def test_send_many_sends_the_items_before_an_oversized_one_and_then_raises(queue: Queue) -> None:
    with pytest.raises(MessageTooLargeError):
        queue.send_many([b"one", b"two", b"x" * (MAX + 1), b"four"])
    assert queue.recv_many(10, timeout=0) == [b"one", b"two"]


# ---- loan ---------------------------------------------------------------------------------------


def test_loan_fills_the_message_in_place_and_commits_it_on_exit(queue: Queue) -> None:
    with queue.loan(11) as buf:
        assert isinstance(buf, memoryview)
        assert (buf.nbytes, buf.readonly) == (11, False)
        assert len(queue) == 0, "a loan is visible before it is committed"
        buf[:] = b"in place!!!"
    assert len(queue) == 1
    assert queue.stats().sent == 1 and queue.stats().bytes == 11
    assert queue.recv_nowait() == b"in place!!!"


def test_loan_of_zero_bytes_and_of_max_message_bytes(queue: Queue) -> None:
    with queue.loan(0) as buf:
        assert buf.nbytes == 0
    with queue.loan(MAX, timeout=0) as buf:
        buf[:] = b"L" * MAX
    assert queue.recv_nowait() == b""
    assert queue.recv_nowait() == b"L" * MAX


def test_loan_of_a_negative_size_raises_value_error(queue: Queue) -> None:
    with pytest.raises(ValueError, match="negative"), queue.loan(-1):
        pass
    assert len(queue) == 0


def test_loan_discards_the_message_when_the_block_raises(queue: Queue) -> None:
    class Boom(Exception):
        pass

    def abort() -> None:
        with queue.loan(5) as buf:
            buf[:] = b"never"
            raise Boom

    with pytest.raises(Boom):
        abort()
    assert len(queue) == 0
    assert queue.stats().sent == 0
    with pytest.raises(Empty):
        queue.recv_nowait()
    queue.send_nowait(b"next")
    assert queue.recv_nowait() == b"next"


def test_a_discarded_loan_between_messages_is_skipped_by_receivers(queue: Queue) -> None:
    queue.send_nowait(b"first")
    with pytest.raises(KeyboardInterrupt), queue.loan(100):
        raise KeyboardInterrupt
    queue.send_nowait(b"second")
    assert len(queue) == 2
    assert queue.recv_many(5, timeout=0) == [b"first", b"second"]


def test_discarded_loans_do_not_use_up_the_room_of_an_empty_queue(queue: Queue) -> None:
    """Abort a loan ten times: nothing is queued, so the largest message must still fit."""
    for _ in range(10):
        with pytest.raises(RuntimeError), queue.loan(1000, timeout=0):
            raise RuntimeError("abort")
    assert len(queue) == 0
    queue.send_nowait(b"m" * MAX)
    assert queue.recv_nowait() == b"m" * MAX


def test_loan_on_a_full_queue_raises_full_now_or_after_the_timeout(queue: Queue) -> None:
    fill(queue)

    def loan(timeout: float) -> None:
        with queue.loan(1, timeout=timeout):
            raise AssertionError("a loan was granted on a full queue")

    with pytest.raises(Full):
        loan(0)
    error, took = timed(lambda: loan(TIMEOUT))
    assert isinstance(error, Full)
    assert took >= TIMEOUT
    assert len(queue) == 2


def test_keeping_a_pickle_buffer_of_a_loan_after_the_block_raises_buffer_error_and_discards_it(
    queue: Queue,
) -> None:
    kept: list[Any] = []

    def keep() -> None:
        with queue.loan(8) as buf:
            buf[:] = b"escaping"
            kept.append(pickle.PickleBuffer(buf))  # holds a buffer export of the loan

    try:
        with pytest.raises(BufferError, match="discarded"):
            keep()
    finally:
        kept.clear()
    assert len(queue) == 0
    assert queue.stats().sent == 0
    queue.send_nowait(b"fine")
    assert queue.recv_nowait() == b"fine"


ESCAPES: dict[str, Callable[[memoryview], Any]] = {
    "slice": lambda view: view[2:],
    "numpy array": lambda view: np.frombuffer(view, dtype=np.uint8),
    "cast": lambda view: view.cast("c"),
}


@pytest.mark.parametrize("escape", list(ESCAPES))
def test_keeping_a_slice_or_array_of_a_loan_after_the_block_raises_buffer_error(
    queue: Queue, escape: str
) -> None:
    """What is kept shares the loan's memory: writing through it later would change a sent message."""
    kept: list[Any] = []

    def keep() -> None:
        with queue.loan(8) as buf:
            buf[:] = b"escaping"
            kept.append(ESCAPES[escape](buf))

    try:
        with pytest.raises(BufferError):
            keep()
    finally:
        kept.clear()
    assert len(queue) == 0


# One two-process test lives here, with the loan it is about: a receiver in another process
# claims records in a tight loop while this process discards loans and sends numbered messages.

#: How long the sender discards loans against the receiving child (the stress run: --stress).
RACE_SECONDS = 2.0
RACE_STRESS_SECONDS = 120.0
STOP = b"stop"


class _Discard(Exception):
    pass


def receive_in_order(name: str, seconds: float) -> tuple[int, str | None]:
    """Child: receive numbered messages until STOP; return (how many, the first problem or None)."""
    queue = Queue(name, create=False)
    deadline = time.monotonic() + seconds
    expected = 0
    try:
        while time.monotonic() < deadline:
            try:
                message = queue.recv_nowait()
            except Empty:
                continue
            if message == STOP:
                return expected, None
            number = int.from_bytes(message, "little")
            if number != expected:
                return expected, f"received message {number} when {expected} was next"
            expected += 1
        return expected, f"no STOP within {seconds} s"
    except CorruptRegionError as error:
        return expected, f"CorruptRegionError after {expected} messages: {error}"
    finally:
        queue.close()


@pytest.mark.parametrize(
    "seconds", [RACE_SECONDS, pytest.param(RACE_STRESS_SECONDS, marks=pytest.mark.stress, id="stress")]
)
def test_discarded_loans_never_corrupt_the_queue_for_a_receiver_in_another_process(
    name: str, mode: Mode, seconds: float
) -> None:
    queue = Queue(name, 4096, mode=mode)
    sent, discarded, problem = 0, 0, None
    try:
        with procs.started(receive_in_order, name, seconds + 15, timeout=seconds + 60) as child:
            deadline = time.monotonic() + seconds
            try:
                while time.monotonic() < deadline:
                    try:
                        with queue.loan(100, timeout=0):
                            raise _Discard
                    except _Discard:
                        discarded += 1
                    except Full:
                        pass
                    if discarded % 4 == 0:
                        with contextlib.suppress(Full):
                            queue.send_nowait(sent.to_bytes(8, "little"))
                            sent += 1
                queue.send(STOP, timeout=10)
            except CorruptRegionError as error:
                problem = f"the sender got CorruptRegionError: {error}"
            except Full:
                problem = "the queue stayed full for 10 s after the race (a record nobody will ever free?)"
            received, child_problem = child.result(seconds + 60)
        summary = f"({sent} sent, {received} received, {discarded} loans discarded, {queue.stats()})"
        assert (problem, child_problem) == (None, None), (
            f"sender: {problem}; receiver: {child_problem} {summary}"
        )
        assert received == sent, summary
        assert discarded > 1000, "too few discards to race anything"
    finally:
        queue.close()


# ---- recv_view -------------------------------------------------------------------------------


def test_recv_view_reads_the_message_in_place_read_only_and_frees_it_on_exit(queue: Queue) -> None:
    queue.send_nowait(b"look, no copy")
    queue.send_nowait(b"second")
    with queue.recv_view() as view:
        assert isinstance(view, memoryview)
        assert view.readonly
        assert bytes(view) == b"look, no copy"
        with pytest.raises(TypeError):
            view[0] = 0
    with pytest.raises(ValueError):
        bytes(view)  # released when the block ended
    stats = queue.stats()
    assert (stats.received, stats.bytes_received, stats.depth) == (1, 13, 1)
    with queue.recv_view(timeout=0) as view:
        assert bytes(view) == b"second"


def test_recv_view_of_the_empty_message_is_an_empty_view(queue: Queue) -> None:
    queue.send_nowait(b"")
    with queue.recv_view(timeout=0) as view:
        assert view.nbytes == 0
    assert len(queue) == 0


def test_recv_view_frees_the_record_even_when_the_block_raises(queue: Queue) -> None:
    fill(queue)

    def fail_inside() -> None:
        with queue.recv_view() as view:
            assert bytes(view[:1]) == b"\x00"
            raise LookupError

    with pytest.raises(LookupError):
        fail_inside()
    assert len(queue) == 1
    queue.send_nowait(b"\x02" * MAX)  # the freed record's room is usable again
    assert queue.recv_nowait() == b"\x01" * MAX


def test_recv_view_on_an_empty_queue_raises_empty_now_or_after_the_timeout(queue: Queue) -> None:
    def view(timeout: float) -> None:
        with queue.recv_view(timeout=timeout):
            raise AssertionError("an empty queue gave a view")

    with pytest.raises(Empty):
        view(0)
    error, took = timed(lambda: view(TIMEOUT))
    assert isinstance(error, Empty)
    assert took >= TIMEOUT


def test_keeping_a_pickle_buffer_of_a_received_view_raises_buffer_error_and_still_frees_the_record(
    queue: Queue,
) -> None:
    queue.send_nowait(b"escaping")
    kept: list[Any] = []

    def keep() -> None:
        with queue.recv_view() as view:
            kept.append(pickle.PickleBuffer(view))

    try:
        with pytest.raises(BufferError, match="freed"):
            keep()
    finally:
        kept.clear()
    assert len(queue) == 0
    assert queue.stats().received == 1


@pytest.mark.parametrize("escape", list(ESCAPES))
def test_keeping_a_slice_or_array_of_a_received_view_after_the_block_raises_buffer_error(
    queue: Queue, escape: str
) -> None:
    """The record is reused once freed: what is kept past the block would read other messages."""
    queue.send_nowait(b"escaping")
    kept: list[Any] = []

    def keep() -> None:
        with queue.recv_view() as view:
            kept.append(ESCAPES[escape](view))

    try:
        with pytest.raises(BufferError):
            keep()
    finally:
        kept.clear()
    assert len(queue) == 0


def test_a_message_being_read_no_longer_counts_as_waiting(queue: Queue) -> None:
    """len() and stats().depth count messages a receiver can still get."""
    queue.send_nowait(b"one")
    queue.send_array(np.arange(3))
    with queue.recv_view() as view:
        assert bytes(view) == b"one"
        assert len(queue) == 1, "the message inside recv_view still counts as waiting"
    held = queue.recv_array()
    try:
        assert len(queue) == 0, "an array received with copy=False still counts as waiting"
        assert queue.stats().depth == 0
        with pytest.raises(Empty):
            queue.recv_nowait()
    finally:
        del held


# ---- put and get ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        None,
        0,
        2**200,
        -1.5,
        "text ✓",
        b"bytes in band",
        b"",
        (1, "two", [3.0]),
        {"nested": {"list": [1, 2, {3}]}, "frozen": frozenset({4})},
        bytearray(b"a bytearray"),
        ValueError("an exception"),
    ],
    ids=repr,
)
def test_put_and_get_carry_any_picklable_object(queue: Queue, obj: object) -> None:
    queue.put(obj)
    assert len(queue) == 1
    got = queue.get(timeout=0)
    if isinstance(obj, BaseException):
        assert type(got) is type(obj) and got.args == obj.args
    else:
        assert got == obj and type(got) is type(obj)


def test_put_sends_a_numpy_array_out_of_band_copied_straight_into_the_record(queue: Queue) -> None:
    array = np.arange(400, dtype=np.int32)  # 1600 bytes
    queue.put({"frame": array, "id": 7}, timeout=0)
    with queue.recv_view() as payload:
        magic, count, stream_length = struct.unpack_from("<4sIQ", payload, 0)
        assert (magic, count) == (_codec.OBJECT_MAGIC, 1), "the array was not sent out of band"
        (length,) = struct.unpack_from("<Q", payload, 16)
        assert length == array.nbytes
        assert stream_length < 1000, "the array's data went into the pickle stream"
        stream_at = -(-(16 + 8) // 32) * 32
        data_at = -(-(stream_at + stream_length) // 32) * 32
        assert bytes(payload[data_at : data_at + length]) == array.tobytes()
        assert payload.nbytes == data_at + length
        decoded: Any = _codec.read_object(payload)
    assert decoded["id"] == 7
    np.testing.assert_array_equal(decoded["frame"], array)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float64).reshape(3, 4),
        np.arange(12, dtype=">i4").reshape(3, 4),
        np.arange(30, dtype=np.int16).reshape(5, 6)[::2, 1::2],
        np.zeros((0, 3), dtype=np.uint8),
        np.array(3.5),
        np.array([(1, b"ab"), (2, b"cd")], dtype=[("n", "<i8"), ("s", "S2")]),
    ],
    ids=["float64 2-d", "big-endian", "non-contiguous", "empty", "0-d", "structured"],
)
def test_put_and_get_carry_numpy_arrays_as_equal_writable_arrays(queue: Queue, array: Any) -> None:
    queue.put(array)
    got = queue.get(timeout=0)
    assert isinstance(got, np.ndarray)
    assert (got.dtype, got.shape) == (array.dtype, array.shape)
    np.testing.assert_array_equal(got, array)
    assert got.flags.writeable
    assert len(queue) == 0


def test_put_sends_pickle_buffers_out_of_band_and_get_returns_them(queue: Queue) -> None:
    data = bytearray(range(256)) * 4
    queue.put([pickle.PickleBuffer(data), b"in band"])
    with queue.recv_view() as payload:
        assert struct.unpack_from("<4sI", payload, 0) == (_codec.OBJECT_MAGIC, 1)
    queue.put([pickle.PickleBuffer(data), b"in band"])
    got = queue.get()
    assert bytes(got[0]) == bytes(data) and got[1] == b"in band"


def test_put_of_something_unpicklable_raises_and_sends_nothing(queue: Queue) -> None:
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        queue.put(lambda: None)
    with pytest.raises(TypeError):
        queue.put(threading.Lock())
    assert len(queue) == 0
    assert queue.stats().sent == 0


def test_get_of_a_message_not_sent_with_put_raises_corrupt_region_error_and_consumes_it(queue: Queue) -> None:
    queue.send_nowait(b"plain bytes, no pickle header")
    queue.send_nowait(b"")
    with pytest.raises(CorruptRegionError, match="put"):
        queue.get(timeout=0)
    with pytest.raises(CorruptRegionError):
        queue.get(timeout=0)
    assert len(queue) == 0
    queue.put("fine")
    assert queue.get(timeout=0) == "fine"


def test_get_on_an_empty_queue_raises_empty_after_the_timeout(queue: Queue) -> None:
    with pytest.raises(Empty):
        queue.get(timeout=0)
    error, took = timed(lambda: queue.get(timeout=TIMEOUT))
    assert isinstance(error, Empty)
    assert took >= TIMEOUT


def test_put_on_a_full_queue_raises_full_after_the_timeout(queue: Queue) -> None:
    fill(queue)
    with pytest.raises(Full):
        queue.put("no room", timeout=0)
    error, took = timed(lambda: queue.put("no room", timeout=TIMEOUT))
    assert isinstance(error, Full)
    assert took >= TIMEOUT
    assert len(queue) == 2


# ---- send_array and recv_array ------------------------------------------------------------


ARRAYS: dict[str, Any] = {
    "int32 1-d": np.arange(10, dtype=np.int32),
    "float64 3-d": np.linspace(0, 1, 24).reshape(2, 3, 4),
    "big-endian int": np.arange(12, dtype=">i8").reshape(3, 4),
    "big-endian complex": np.array([1 + 2j, -3j], dtype=">c16"),
    "structured": np.array(
        [(1, 2.5, b"ab"), (3, -4.0, b"cd")], dtype=[("a", "<i4"), ("b", ">f8"), ("c", "S2")]
    ),
    "aligned structured": np.zeros(3, dtype=np.dtype([("x", "u1"), ("y", "<i8")], align=True)),
    "subarray field": np.ones(2, dtype=[("m", "<f4", (2, 3))]),
    "unicode": np.array(["ab", "cde"], dtype="<U3"),
    "datetime": np.array(["2020-01-01", "1970-01-01"], dtype="M8[ns]"),
    "bool": np.array([True, False, True]),
    "float16": np.array([1.5, -2.0], dtype=np.float16),
    "0-d": np.array(5.0),
    "0-d structured": np.array((1, 2.0), dtype=[("a", "<i2"), ("b", "<f4")]),
    "empty 1-d": np.zeros(0, dtype=np.float64),
    "empty 3-d": np.zeros((3, 0, 2), dtype=np.int16),
    "non-contiguous": np.arange(40).reshape(5, 8)[::2, 1::3],
    "reversed": np.arange(10, dtype=np.uint8)[::-1],
    "fortran order": np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
}


@pytest.mark.parametrize("copy", [False, True], ids=["view", "copy"])
@pytest.mark.parametrize("key", list(ARRAYS))
def test_send_array_and_recv_array_keep_dtype_shape_and_values(queue: Queue, key: str, copy: bool) -> None:
    array = ARRAYS[key]
    queue.send_array(array, timeout=0)
    got = queue.recv_array(copy=copy, timeout=0)
    try:
        assert got.dtype == array.dtype, f"dtype {got.dtype} came back for {array.dtype}"
        assert got.shape == array.shape, f"shape {got.shape} came back for {array.shape}"
        np.testing.assert_array_equal(got, array)
        if not copy:  # the exact bytes sent (a copy need not keep a structured dtype's padding bytes)
            assert got.tobytes() == np.ascontiguousarray(array).tobytes()
        assert got.flags.writeable is copy
    finally:
        del got
        gc.collect()
    assert len(queue) == 0
    queue.send_nowait(b"m" * MAX)  # nothing is held any more


def test_recv_array_without_copy_is_read_only_shared_memory(queue: Queue) -> None:
    queue.send_array(np.arange(8, dtype=np.int64))
    got = queue.recv_array()
    assert not got.flags.writeable and not got.flags.owndata
    with pytest.raises(ValueError):
        got[0] = 1
    del got


def test_recv_array_without_copy_holds_ring_space_until_the_array_is_deleted(queue: Queue) -> None:
    block = np.arange(475, dtype=np.int32)  # 1900 bytes: two records fill the 4096-byte ring
    queue.send_array(block, timeout=0)
    queue.send_array(block * 2, timeout=0)
    first = queue.recv_array(timeout=0)
    second = queue.recv_array(timeout=0)
    try:
        with pytest.raises(Full):
            queue.send_nowait(b"s" * 100)
        np.testing.assert_array_equal(first, block)  # still intact: nothing could overwrite it
        first = None
        gc.collect()
        queue.send_nowait(b"s" * 100)
        np.testing.assert_array_equal(second, block * 2)
    finally:
        first = second = None
        gc.collect()
    assert queue.recv_nowait() == b"s" * 100
    queue.send_nowait(b"m" * MAX)


def test_recv_array_with_copy_frees_the_record_at_once(queue: Queue) -> None:
    block = np.arange(475, dtype=np.int32)
    queue.send_array(block, timeout=0)
    queue.send_array(block, timeout=0)
    kept = [queue.recv_array(copy=True, timeout=0) for _ in range(2)]
    assert queue.send_many([b"s" * 100] * 30, timeout=0) >= 20
    kept[0][0] = -1  # an ordinary writable array
    np.testing.assert_array_equal(kept[1], block)


def test_a_view_of_a_received_array_keeps_the_record_reserved(queue: Queue) -> None:
    """numpy keeps a slice's memory alive through its base; the record must stay reserved as long."""
    block = np.arange(475, dtype=np.int32)
    queue.send_array(block, timeout=0)
    queue.send_array(block, timeout=0)
    first = queue.recv_array(timeout=0)
    second = queue.recv_array(timeout=0)
    tail = first[400:]
    del first, second
    gc.collect()
    try:
        sent = queue.send_many([b"\xee" * 1000] * 3, timeout=0)
        assert sent == 0, f"{sent} messages were written over the record the slice still uses"
        np.testing.assert_array_equal(tail, block[400:])
    finally:
        del tail
        gc.collect()


def test_send_array_of_object_dtype_raises_type_error_and_sends_nothing(queue: Queue) -> None:
    with pytest.raises(TypeError):
        queue.send_array(np.array([object(), None], dtype=object))
    assert len(queue) == 0
    assert queue.stats().sent == 0


def test_recv_array_of_a_message_not_sent_with_send_array_raises_corrupt_region_error(queue: Queue) -> None:
    queue.send_nowait(b"no array header here")
    queue.put(np.arange(3))
    for _ in range(2):
        with pytest.raises(CorruptRegionError, match="send_array"):
            queue.recv_array(timeout=0)
    assert len(queue) == 0


def test_recv_array_on_an_empty_queue_raises_empty_after_the_timeout(queue: Queue) -> None:
    with pytest.raises(Empty):
        queue.recv_array(timeout=0)
    error, took = timed(lambda: queue.recv_array(timeout=TIMEOUT))
    assert isinstance(error, Empty)
    assert took >= TIMEOUT


def test_send_array_on_a_full_queue_raises_full_after_the_timeout(queue: Queue) -> None:
    fill(queue)
    error, took = timed(lambda: queue.send_array(np.zeros(4), timeout=TIMEOUT))
    assert isinstance(error, Full)
    assert took >= TIMEOUT


# ---- batches ------------------------------------------------------------------------------


def test_send_many_sends_what_fits_in_order_and_returns_the_count(queue: Queue) -> None:
    messages = [i.to_bytes(2, "little") * 50 for i in range(100)]  # 100 bytes: 160-byte records
    sent = queue.send_many(messages, timeout=0)
    assert sent == 4096 // span(100) == 25
    assert len(queue) == 25
    assert queue.recv_many(1000, timeout=0) == messages[:25]
    assert queue.send_many(messages[25:], timeout=0) == 25


def test_send_many_takes_any_iterable_of_bytes_like_objects(queue: Queue) -> None:
    assert queue.send_many(bytes([i]) * i for i in range(5)) == 5
    assert queue.send_many((bytearray(b"ba"), memoryview(b"mv"))) == 2
    assert queue.send_many([]) == 0
    assert queue.recv_many(10) == [b"", b"\x01", b"\x02\x02", b"\x03" * 3, b"\x04" * 4, b"ba", b"mv"]


def test_send_many_of_non_bytes_raises_type_error_after_sending_the_items_before_it(queue: Queue) -> None:
    with pytest.raises(TypeError):
        queue.send_many([b"ok", "not bytes", b"never"])
    assert queue.recv_many(10, timeout=0) == [b"ok"]


def test_send_many_on_a_full_queue_waits_at_least_the_timeout_and_sends_none(queue: Queue) -> None:
    fill(queue)
    start = time.monotonic()
    assert queue.send_many([b"a", b"b"], timeout=TIMEOUT) == 0
    assert time.monotonic() - start >= TIMEOUT
    assert len(queue) == 2


def test_recv_many_returns_a_partial_batch_or_an_empty_list_after_the_timeout(queue: Queue) -> None:
    for i in range(3):
        queue.send_nowait(bytes([i]))
    assert queue.recv_many(2, timeout=0) == [b"\x00", b"\x01"]
    assert queue.recv_many(100, timeout=0) == [b"\x02"]
    assert queue.recv_many(5, timeout=0) == []
    start = time.monotonic()
    assert queue.recv_many(5, timeout=TIMEOUT) == []
    assert time.monotonic() - start >= TIMEOUT


def test_recv_many_needs_a_positive_count(queue: Queue) -> None:
    queue.send_nowait(b"kept")
    for count in (0, -1):
        with pytest.raises(ValueError):
            queue.recv_many(count)
    assert queue.recv_nowait() == b"kept"


def test_batches_wrap_around_the_ring_in_order(queue: Queue) -> None:
    rng = random.Random(9)
    sent: list[bytes] = []
    received: list[bytes] = []
    for _ in range(300):
        batch = [rng.randbytes(rng.randrange(0, 700)) for _ in range(rng.randrange(1, 12))]
        count = queue.send_many(batch, timeout=0)
        assert 0 <= count <= len(batch)
        sent.extend(batch[:count])
        received.extend(queue.recv_many(rng.randrange(1, 8), timeout=0))
    received.extend(queue.recv_many(1000, timeout=0))
    assert received == sent
    assert len(sent) > 300


# ---- stats and len ----------------------------------------------------------------------


def test_stats_count_messages_bytes_and_depth_and_len_is_the_depth(queue: Queue) -> None:
    assert queue.stats() == ChannelStats(
        sent=0, received=0, bytes=0, bytes_received=0, depth=0, waits=0, drops=0
    )
    queue.send_nowait(b"abc")
    queue.send_many([b"", b"12345"])
    with queue.loan(7) as buf:
        buf[:] = b"7 bytes"
    queue.put(None)
    put_size = queue.stats().bytes - 15
    assert put_size > 0
    assert len(queue) == 5
    assert queue.stats() == ChannelStats(
        sent=5, received=0, bytes=15 + put_size, bytes_received=0, depth=5, waits=0, drops=0
    )
    assert queue.recv_nowait() == b"abc"
    assert queue.recv_many(2) == [b"", b"12345"]
    with queue.recv_view() as view:
        assert view.nbytes == 7
    assert len(queue) == 1
    assert queue.stats() == ChannelStats(
        sent=5, received=4, bytes=15 + put_size, bytes_received=15, depth=1, waits=0, drops=0
    )
    queue.get()
    stats = queue.stats()
    assert (stats.received, stats.bytes_received, stats.depth, len(queue)) == (5, 15 + put_size, 0, 0)


def test_failed_and_discarded_sends_count_nothing(queue: Queue) -> None:
    fill(queue)
    before = queue.stats()
    with pytest.raises(Full):
        queue.send_nowait(b"x")
    assert queue.send_many([b"x"], timeout=0) == 0
    with pytest.raises(MessageTooLargeError):
        queue.send_nowait(b"x" * (MAX + 1))
    queue.recv_nowait()
    with pytest.raises(ZeroDivisionError), queue.loan(10):
        raise ZeroDivisionError
    after = queue.stats()
    assert (after.sent, after.bytes) == (before.sent, before.bytes)
    assert (after.received, after.depth, after.drops) == (1, 1, 0)


def test_waits_counts_the_calls_that_had_to_sleep(queues: Queues) -> None:
    queue = queues(spin=0)
    queue.recv_many(1, timeout=0)
    with pytest.raises(Empty):
        queue.recv_nowait()
    assert queue.stats().waits == 0, "a call that did not wait was counted"
    with pytest.raises(Empty):
        queue.recv(timeout=0.05)
    assert queue.stats().waits == 1
    fill(queue)
    with pytest.raises(Full):
        queue.send(b"x", timeout=0.05)
    assert queue.stats().waits == 2


# ---- close --------------------------------------------------------------------------------


METHODS = [
    "send",
    "send_nowait",
    "recv",
    "recv_nowait",
    "put",
    "get",
    "loan",
    "recv_view",
    "send_array",
    "recv_array",
    "send_many",
    "recv_many",
    "stats",
    "len",
]


def _every_method(queue: Queue) -> dict[str, Callable[[], Any]]:
    def loan() -> None:
        with queue.loan(1):
            pass

    def recv_view() -> None:
        with queue.recv_view(timeout=0):
            pass

    return {
        "send": lambda: queue.send(b"x", timeout=0),
        "send_nowait": lambda: queue.send_nowait(b"x"),
        "recv": lambda: queue.recv(timeout=0),
        "recv_nowait": queue.recv_nowait,
        "put": lambda: queue.put(1, timeout=0),
        "get": lambda: queue.get(timeout=0),
        "loan": loan,
        "recv_view": recv_view,
        "send_array": lambda: queue.send_array(np.zeros(2), timeout=0),
        "recv_array": lambda: queue.recv_array(timeout=0),
        "send_many": lambda: queue.send_many([b"x"], timeout=0),
        "recv_many": lambda: queue.recv_many(1, timeout=0),
        "stats": queue.stats,
        "len": lambda: len(queue),
    }


@pytest.mark.parametrize("method", METHODS)
def test_every_method_raises_closed_error_after_close_and_close_is_idempotent(
    queues: Queues, method: str
) -> None:
    queue = queues()
    queue.send_nowait(b"waiting")
    queue.close()
    queue.close()
    with pytest.raises(ClosedError):
        _every_method(queue)[method]()
    queue.close()


def test_a_close_refused_while_a_received_array_lives_can_be_completed_later(name: str, mode: Mode) -> None:
    """close() raises BufferError while an array still views the ring; once it is gone, close() finishes."""
    queue = Queue(name, 4096, mode=mode)
    try:
        queue.send_array(np.arange(4))
        held = queue.recv_array()
        with pytest.raises(BufferError):
            queue.close()
        np.testing.assert_array_equal(held, np.arange(4))  # still mapped
        del held
        gc.collect()
        queue.close()
        with pytest.raises(NotFoundError):  # the last handle is closed: the queue is gone
            Queue(name, create=False)
    finally:
        gc.collect()
        with contextlib.suppress(BufferError):
            queue.close()


def test_closing_one_handle_leaves_the_others_working(queues: Queues, name: str) -> None:
    first = queues(name=name)
    second = queues(name=name)
    first.send_nowait(b"kept")
    first.close()
    assert second.recv_nowait() == b"kept"
    second.send_nowait(b"more")
    assert len(second) == 1


def test_the_with_statement_closes_the_queue(name: str, mode: Mode) -> None:
    with Queue(name, mode=mode) as queue:
        queue.send_nowait(b"x")
        assert queue.recv_nowait() == b"x"
    with pytest.raises(ClosedError):
        queue.send_nowait(b"x")
    assert "closed" in repr(queue)


def test_the_queue_goes_away_with_its_last_handle(name: str, mode: Mode) -> None:
    first = Queue(name, mode=mode)
    second = Queue(name, create=False)
    first.send_nowait(b"x")
    first.close()
    assert second.recv_nowait() == b"x"
    second.close()
    with pytest.raises(NotFoundError):
        Queue(name, create=False)
