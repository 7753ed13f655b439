"""Hostile control block and records: a Queue reports ``CorruptRegionError``, never crashes or hangs.

Everything in a queue's shared memory is untrusted (issue 4: "Corrupted ring
state written by a hostile process gives CorruptRegionError, never a crash or
an out-of-bounds access").  These tests write values straight into a queue's
/dev/shm file, as another process could, then use the queue.

* Targeted tests change one field in a way layout.h calls inconsistent and
  check *which* outcome each operation gives: cursors out of order, a record
  header at ``head`` that lies about its position, length or state, ring
  parameters that do not fit the file, a damaged tag, a lock word that names a
  live process, a dead one, or this very thread (also while a loan is
  discarded, which tries the producer lock).
* The fuzz property lets hypothesis write random and near-valid values into
  one to three control-block fields (capacity, max_message, data_offset,
  tail, head, release, the producer and consumer lock words) and record
  header fields (state, length, position, pid) of records at or after
  ``head``, after a random history of sends and receives — possibly while a
  ``recv_view`` and a ``loan`` are open, which then end (release; commit or
  discard) on the damaged ring — and then runs every operation twice over,
  and reopens the queue.  Each operation must end in
  ``CorruptRegionError``, ``Empty``, ``Full`` (or ``MessageTooLargeError`` for
  a handle whose max_message was forged smaller), or a clean result: received
  messages no longer than max_message.  The operations run in a forked child,
  so that a crash (SIGSEGV, SIGBUS) or a hang — even one that holds the GIL —
  fails the example instead of killing or stalling the test run; the control
  block's reserved bytes must still be zero afterwards (no stray write).
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
    Queue,
    _layout,
)
from tests.channels.conftest import (
    CAPACITY,
    COMMITTED,
    CONSUMED,
    CONSUMER_LOCK,
    CONTROL_BYTES,
    DATA_OFFSET,
    HEAD,
    LENGTH,
    MAX_MESSAGE,
    PADDING,
    POSITION,
    PRODUCER_LOCK,
    READING,
    RECORD_HEADER,
    RELEASE,
    STATE,
    TAG,
    TAIL,
    WRITING,
    Control,
    Mode,
    Queues,
)

Names = Callable[[], str]
Controls = Callable[[Queue], Control]

#: Bound on one forked child's whole run; it needs tens of milliseconds.
CHILD_TIMEOUT = 5.0
#: Where the reserved, always-zero tail of the control block starts (layout.h, struct mi_ring).
RESERVED = 568
PID_FIELD = 16
OWNER_TID = 4
U64 = 2**64
U32 = 2**32

# No shrinking: an example that hangs costs CHILD_TIMEOUT per run, and hypothesis would spend
# minutes shrinking one; the report lists the writes instead (and the targeted tests above
# pin down every failure found so far).
FUZZ = settings(
    max_examples=120,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def span(length: int) -> int:
    return -(-(RECORD_HEADER + length) // 32) * 32


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


DEAD_PID = dead_pid()


# ---- running operations where a crash or a hang cannot hurt ---------------------------------


def in_child(function: Callable[[], Any], timeout: float = CHILD_TIMEOUT) -> Any:
    """Run ``function()`` in a forked child and return its (picklable) result.

    The child shares the parent's mappings (MAP_SHARED), so it sees and changes
    the same queue.  Fails if the child crashes, hangs past ``timeout`` or
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


# ---- what every operation may do -------------------------------------------------------------

ALLOWED = (CorruptRegionError, Empty, Full)


def attempt(results: list[tuple[str, str]], label: str, call: Callable[[], object]) -> None:
    """Run one operation; record "ok" or the exception's name (anything else is kept for the report)."""
    try:
        call()
    except ALLOWED as error:
        results.append((label, type(error).__name__))
    except MessageTooLargeError:
        results.append((label, "MessageTooLargeError"))
    except Exception as error:
        results.append((label, f"UNEXPECTED {error!r}"))
    else:
        results.append((label, "ok"))


def exercise(queue: Queue, max_message: int, results: list[tuple[str, str]], prefix: str) -> None:
    """Every operation once on ``queue``, none of them able to wait for more than 20 ms."""

    def received(data: bytes) -> None:
        if len(data) > max_message:
            raise AssertionError(
                f"received {len(data)} bytes from a queue whose max_message is {max_message}"
            )

    def view() -> None:
        with queue.recv_view(timeout=0) as payload:
            received(bytes(payload))

    def loan(commit: bool) -> None:
        with contextlib.suppress(_Abort), queue.loan(min(64, max_message), timeout=0) as buf:
            buf[:] = b"\x5a" * len(buf)
            if not commit:
                raise _Abort

    def many() -> None:
        for data in queue.recv_many(4, timeout=0):
            received(data)

    def count() -> None:
        stats = queue.stats()
        assert len(queue) >= 0 and stats.depth >= 0 and stats.sent >= 0

    operations: list[tuple[str, Callable[[], object]]] = [
        ("len and stats", count),
        ("recv_nowait", lambda: received(queue.recv_nowait())),
        ("recv_view", view),
        ("send_nowait small", lambda: queue.send_nowait(b"s" * 10)),
        ("send_nowait largest", lambda: queue.send_nowait(b"L" * max_message)),
        ("recv_many", many),
        ("send_many", lambda: queue.send_many([b"m" * 100] * 3, timeout=0)),
        ("loan commit", lambda: loan(True)),
        ("loan abort", lambda: loan(False)),
        ("recv 20 ms", lambda: received(queue.recv(timeout=0.02))),
        ("send 20 ms", lambda: queue.send(b"t" * 300, timeout=0.02)),
    ]
    for label, call in operations:
        attempt(results, f"{prefix}{label}", call)


def everything(
    name: str, queue: Queue, block: Control, damage: list[Write], in_flight: tuple[bool, str]
) -> list[tuple[str, str]]:
    """The child's work: damage the queue, maybe under a loan and a view in flight; then use it.

    With ``in_flight``, a ``recv_view`` and/or a ``loan`` are open while the
    damage is done, and then end (release; commit or abort) on the damaged ring.  Then
    the open handle is exercised twice, and the queue is reopened and exercised.
    """
    results: list[tuple[str, str]] = []
    hold_view, loan_end = in_flight
    open_blocks: list[tuple[str, contextlib.AbstractContextManager[memoryview]]] = []
    if hold_view:
        attempt(
            results,
            "start recv_view",
            lambda: open_blocks.append(("recv_view", _entered(queue.recv_view(0)))),
        )
    if loan_end != "none":
        attempt(results, "start loan", lambda: open_blocks.append((loan_end, _entered(queue.loan(100, 0)))))
    for _, offset, value in damage:
        block.write(offset, value)
    for label, manager in reversed(open_blocks):
        attempt(results, f"end {label}", _exiter(manager, label))
    for round_ in range(2):
        exercise(queue, queue.max_message, results, f"open handle, round {round_}: ")
    try:
        reopened = Queue(name, create=False)
    except ALLOWED as error:
        results.append(("reopen", type(error).__name__))
        return results
    except Exception as error:
        results.append(("reopen", f"UNEXPECTED {error!r}"))
        return results
    results.append(("reopen", "ok"))
    exercise(reopened, reopened.max_message, results, "reopened: ")
    with contextlib.suppress(BufferError):
        reopened.close()
    return results


class _Abort(Exception):
    pass


def _exiter(manager: contextlib.AbstractContextManager[memoryview], how: str) -> Callable[[], object]:
    """End a block in flight: normally, or (``how == "abort"``) by an exception, which discards a loan."""
    if how == "abort":
        return lambda: manager.__exit__(_Abort, _Abort(), None)
    return lambda: manager.__exit__(None, None, None)


def _entered(
    manager: contextlib.AbstractContextManager[memoryview],
) -> contextlib.AbstractContextManager[memoryview]:
    view = manager.__enter__()
    if not view.readonly:
        view[:] = b"\x11" * view.nbytes
    del view
    return manager


def unexpected(results: list[tuple[str, str]], *, allow_too_large: bool) -> list[tuple[str, str]]:
    allowed = {"ok", "CorruptRegionError", "Empty", "Full"}
    if allow_too_large:
        allowed.add("MessageTooLargeError")
    return [(label, outcome) for label, outcome in results if outcome not in allowed]


# ---- targeted corruptions ------------------------------------------------------------------


@contextlib.contextmanager
def queue_with_messages(queues: Queues, control: Controls, count: int = 3) -> Iterator[tuple[Queue, Control]]:
    queue = queues(4096)
    for index in range(count):
        queue.send_nowait(bytes([index]) * 100)
    yield queue, control(queue)


@pytest.mark.parametrize(
    ("field", "change"),
    [
        (HEAD, lambda head, tail, release: tail + 32),  # head past tail
        (RELEASE, lambda head, tail, release: head + 32),  # release past head
        (TAIL, lambda head, tail, release: release + 4096 + 32),  # more in flight than the ring holds
        (TAIL, lambda head, tail, release: head - 32),  # tail behind head
        (HEAD, lambda head, tail, release: U64 - 32),  # head near the end of the position space
    ],
    ids=["head>tail", "release>head", "tail-release>capacity", "tail<head", "head near 2**64"],
)
def test_cursors_out_of_order_give_corrupt_region_error(
    queues: Queues, control: Controls, field: int, change: Callable[[int, int, int], int]
) -> None:
    with queue_with_messages(queues, control) as (queue, block):
        block.set_u64(field, change(block.u64(HEAD), block.u64(TAIL), block.u64(RELEASE)))
        with pytest.raises(CorruptRegionError):
            queue.recv_nowait()
        with pytest.raises(CorruptRegionError):
            queue.send_nowait(b"x")
        with pytest.raises(CorruptRegionError), queue.recv_view(timeout=0):
            pass
        assert len(queue) == 3  # the counters are not cursors: still readable


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (POSITION, lambda position: position + 4096),  # a stale header from the previous lap
        (POSITION, lambda position: position + 32),
        (LENGTH, lambda position: 2017),  # longer than max_message
        (LENGTH, lambda position: U32 - 1),
        (LENGTH, lambda position: 1000),  # within max_message, but runs past tail
        (STATE, lambda position: 0),
        (STATE, lambda position: READING),
        (STATE, lambda position: CONSUMED),
        (STATE, lambda position: 99),
    ],
    ids=[
        "position one lap ahead",
        "position off by one record",
        "length over max_message",
        "length 2**32-1",
        "length past tail",
        "state 0",
        "state READING",
        "state CONSUMED",
        "state 99",
    ],
)
def test_a_record_header_at_head_that_lies_gives_corrupt_region_error(
    queues: Queues, control: Controls, field: int, value: Callable[[int], int]
) -> None:
    queue = queues(4096)
    queue.send_nowait(b"\x01" * 100)
    block = control(queue)
    head = block.u64(HEAD)
    at = block.record(head) + field
    if field == POSITION:
        block.set_u64(at, value(head))
    else:
        block.set_u32(at, value(head))
    with pytest.raises(CorruptRegionError):
        queue.recv_nowait()
    with pytest.raises(CorruptRegionError):
        queue.recv_many(3, timeout=0)


def test_padding_that_runs_past_the_end_of_the_ring_gives_corrupt_region_error(
    queues: Queues, control: Controls
) -> None:
    queue = queues(4096)
    queue.send_nowait(b"\x01" * 100)
    block = control(queue)
    head = block.u64(HEAD)
    block.set_u32(block.record(head) + STATE, PADDING)
    block.set_u32(block.record(head) + LENGTH, 4096)  # a filler longer than the room to the end
    with pytest.raises(CorruptRegionError):
        queue.recv_nowait()


def test_a_forged_commit_beyond_tail_is_never_received(queues: Queues, control: Controls) -> None:
    """A COMMITTED header past ``tail`` is not a message: receivers stop at tail."""
    queue = queues(4096)
    block = control(queue)
    position = block.u64(TAIL)
    block.set_u32(block.record(position) + STATE, COMMITTED)
    block.set_u32(block.record(position) + LENGTH, 10)
    block.set_u64(block.record(position) + POSITION, position)
    with pytest.raises(Empty):
        queue.recv_nowait()
    assert len(queue) == 0
    queue.send_nowait(b"real")
    assert queue.recv_nowait() == b"real"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (CAPACITY, 4096 + 32),  # not a power of two
        (CAPACITY, 8192),  # more than the file holds
        (CAPACITY, 0),
        (CAPACITY, 1 << 63),
        (MAX_MESSAGE, 0),
        (MAX_MESSAGE, 2017),  # more than half the ring less a header
        (MAX_MESSAGE, U64 - 1),
        (DATA_OFFSET, 1024 + 32),
        (DATA_OFFSET, 0),
        (DATA_OFFSET, U64 - 1024),
    ],
    ids=[
        "capacity not a power of two",
        "capacity beyond the file",
        "capacity 0",
        "capacity 2**63",
        "max_message 0",
        "max_message over half",
        "max_message 2**64-1",
        "data_offset moved",
        "data_offset 0",
        "data_offset wraps",
    ],
)
def test_ring_parameters_that_do_not_fit_fail_a_reopen_and_open_handles_keep_working(
    queues: Queues, control: Controls, name: str, field: int, value: int
) -> None:
    queue = queues(4096, name=name)
    queue.send_nowait(b"queued")
    block = control(queue)
    block.set_u64(field, value)
    before = block.read(0, CONTROL_BYTES)
    with pytest.raises(CorruptRegionError):
        Queue(name, create=False)
    assert block.read(0, CONTROL_BYTES) == before, "a failed open wrote into the control block"
    # An open handle validated the parameters once and never reads them again.
    assert queue.recv_nowait() == b"queued"
    queue.send_nowait(b"x" * queue.max_message)
    assert queue.recv_nowait() == b"x" * queue.max_message


def test_a_smaller_valid_max_message_applies_to_handles_opened_after_it_was_written(
    queues: Queues, control: Controls, name: str
) -> None:
    queue = queues(4096, name=name)
    control(queue).set_u64(MAX_MESSAGE, 100)
    reopened = queues(name=name, create=False)
    assert reopened.max_message == 100
    with pytest.raises(MessageTooLargeError):
        reopened.send_nowait(b"x" * 101)
    queue.send_nowait(b"x" * 1000)  # the first handle keeps the limit it validated
    with pytest.raises(CorruptRegionError):
        reopened.recv_nowait()  # a record longer than this handle's max_message is not to be trusted


def sync_tag(kind: str) -> int:
    """The ready tag of a sync object of ``kind`` (layout.h: MI_TAG)."""
    return int(0x5359 << 16 | _layout.KIND_CODES[kind])


@pytest.mark.parametrize(
    "tag",
    [0, 1, 0xDEADBEEF, sync_tag("mutex")],
    ids=["zeroed", "initializing", "garbage", "a mutex's tag"],
)
def test_a_damaged_tag_fails_every_operation_and_a_reopen_writes_nothing(
    queues: Queues, control: Controls, name: str, tag: int
) -> None:
    queue = queues(4096, name=name)
    queue.send_nowait(b"queued")
    block = control(queue)
    original = block.u32(TAG)
    assert original == sync_tag("queue")
    block.set_u32(TAG, tag)
    for call in (
        queue.recv_nowait,
        lambda: queue.send_nowait(b"x"),
        lambda: queue.send_many([b"x"]),
        lambda: queue.recv_many(1),
        lambda: len(queue),
    ):
        with pytest.raises(CorruptRegionError):
            call()
    before = block.read(0, CONTROL_BYTES)
    with pytest.raises((CorruptRegionError, KindMismatchError)):
        Queue(name, create=False)
    assert block.read(0, CONTROL_BYTES) == before, "a failed open rewrote the damaged control block"
    block.set_u32(TAG, original)
    assert queue.recv_nowait() == b"queued", "the queued message did not survive the failed open"


@pytest.mark.parametrize("lock", [PRODUCER_LOCK, CONSUMER_LOCK], ids=["producer lock", "consumer lock"])
def test_a_lock_word_held_by_a_live_process_gives_full_or_empty_in_mpmc_and_is_ignored_in_spsc(
    queues: Queues, control: Controls, mode: Mode, lock: int
) -> None:
    queue = queues(4096)
    queue.send_nowait(b"queued")
    block = control(queue)
    block.set_u32(lock, 1)  # init: alive, and never the owner of anything here
    if mode == "spsc":
        queue.send_nowait(b"more")
        assert queue.recv_many(5, timeout=0) == [b"queued", b"more"]
        return
    if lock == PRODUCER_LOCK:
        with pytest.raises(Full):
            queue.send_nowait(b"x")
        with pytest.raises(Full):
            queue.send(b"x", timeout=0.05)
        assert queue.recv_nowait() == b"queued"  # receivers do not need the producer lock
    else:
        with pytest.raises(Empty):
            queue.recv_nowait()
        with pytest.raises(Empty):
            queue.recv(timeout=0.05)
        queue.send_nowait(b"more")  # senders do not need the consumer lock
    block.set_u32(lock, 0)  # the "owner" lets go: everything works again
    queue.send_nowait(b"last")
    expected = [b"last"] if lock == PRODUCER_LOCK else [b"queued", b"more", b"last"]
    assert queue.recv_many(5, timeout=0) == expected


@pytest.mark.parametrize("lock", [PRODUCER_LOCK, CONSUMER_LOCK], ids=["producer lock", "consumer lock"])
def test_a_lock_word_of_a_dead_process_is_taken_over(queues: Queues, control: Controls, lock: int) -> None:
    queue = queues(4096)
    block = control(queue)
    block.set_u32(lock, DEAD_PID)
    queue.send_nowait(b"after takeover")
    assert queue.recv_nowait() == b"after takeover"


@pytest.mark.parametrize("lock", [PRODUCER_LOCK, CONSUMER_LOCK], ids=["producer lock", "consumer lock"])
def test_a_lock_word_forged_with_this_threads_identity_gives_corrupt_region_error_in_mpmc(
    control: Controls, name: str, lock: int
) -> None:
    """The ring never holds its locks between calls: our own pid and tid in one is a forgery."""
    queue = Queue(name, 4096, mode="mpmc")
    try:
        block = control(queue)
        block.write(lock, struct.pack("<II", os.getpid(), threading.get_native_id()))
        operation = (lambda: queue.send_nowait(b"x")) if lock == PRODUCER_LOCK else queue.recv_nowait
        with pytest.raises(CorruptRegionError):
            operation()
    finally:
        queue.close()


@pytest.mark.parametrize("owner", [1, "this thread"], ids=["a live process", "this thread"])
def test_discarding_a_loan_under_a_forged_producer_lock_ends_without_hanging(
    control: Controls, name: str, owner: int | str
) -> None:
    """A discarded loan may try to give its room back under the producer lock: never wait for ever."""
    queue = Queue(name, 4096, mode="mpmc")
    block = control(queue)

    def discard() -> str:
        try:
            with queue.loan(100, timeout=0):
                if owner == "this thread":
                    block.write(PRODUCER_LOCK, struct.pack("<II", os.getpid(), threading.get_native_id()))
                else:
                    block.set_u32(PRODUCER_LOCK, 1)
                raise _Abort
        except _Abort:
            return "discarded"
        except CorruptRegionError:
            return "CorruptRegionError"

    try:
        assert in_child(discard) in ("discarded", "CorruptRegionError")
        block.set_u32(PRODUCER_LOCK, 0)
        with pytest.raises(Empty):
            queue.recv_nowait()
        queue.send_nowait(b"x" * queue.max_message)
    finally:
        queue.close()


# ---- the fuzz property ----------------------------------------------------------------------


SPECIAL_U64 = [0, 1, 31, 32, 1024, 1 << 40, (1 << 40) + 4096, 1 << 63, U64 - 1, U64 - 32, U64 - 4096]


def u64_values(current: int, capacity: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(0, U64 - 1),
        st.sampled_from([*SPECIAL_U64, capacity // 2 - 32, capacity // 2 - 31, capacity, 2 * capacity]),
        st.integers(-2 * capacity, 2 * capacity).map(lambda delta: (current + delta) % U64),
        st.integers(-8, 8).map(lambda records: (current + 32 * records) % U64),
    )


def u32_values(extra: list[int]) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, U32 - 1), st.sampled_from([0, 1, 0x80000000, U32 - 1, *extra]))


CONTROL_FIELDS = {
    "capacity": (CAPACITY, 8),
    "max_message": (MAX_MESSAGE, 8),
    "data_offset": (DATA_OFFSET, 8),
    "tail": (TAIL, 8),
    "head": (HEAD, 8),
    "release": (RELEASE, 8),
    "producer lock word": (PRODUCER_LOCK, 4),
    "consumer lock word": (CONSUMER_LOCK, 4),
}
RECORD_FIELDS = {"state": (STATE, 4), "length": (LENGTH, 4), "position": (POSITION, 8), "pid": (PID_FIELD, 4)}


Write = tuple[str, int, bytes]  # (description, control-block offset, bytes)


def hostile_write(data: st.DataObject, block: Control) -> Write:
    """Draw one hostile write, from the queue's current state; the child performs it."""
    capacity = block.capacity
    release, head, tail = block.u64(RELEASE), block.u64(HEAD), block.u64(TAIL)
    if data.draw(st.booleans(), label="control block field?"):
        field = data.draw(st.sampled_from(sorted(CONTROL_FIELDS)), label="field")
        offset, size = CONTROL_FIELDS[field]
        if size == 8:
            value = data.draw(u64_values(block.u64(offset), capacity), label="value")
        else:
            value = data.draw(u32_values([os.getpid(), os.getpid() | 0x80000000, DEAD_PID]), label="value")
        return f"{field} = {value:#x}", offset, value.to_bytes(size, "little")
    candidates = [head, tail, release, head + capacity // 2]
    length_at_head = block.u32(block.record(head) + LENGTH)
    if length_at_head <= capacity:
        candidates.append(head + span(length_at_head))
    position = data.draw(
        st.one_of(
            st.sampled_from(candidates),
            st.integers(0, capacity // 32 - 1).map(lambda index: head - (head % capacity) + 32 * index),
        ),
        label="record position",
    )
    field = data.draw(st.sampled_from(sorted(RECORD_FIELDS)), label="record field")
    offset, size = RECORD_FIELDS[field]
    at = block.record(position) + offset
    index = position % capacity
    if field == "state":
        value = data.draw(
            st.one_of(
                st.sampled_from([0, WRITING, COMMITTED, PADDING, READING, CONSUMED, 6]), u32_values([])
            ),
            label="value",
        )
    elif field == "length":
        value = data.draw(
            st.one_of(
                st.integers(0, capacity + 64),
                st.sampled_from(
                    [capacity // 2 - 32, capacity // 2 - 31, capacity - index - 32, capacity - index]
                ),
                u32_values([]),
            ).map(lambda length: length % U32),
            label="value",
        )
    elif field == "pid":
        value = data.draw(u32_values([os.getpid(), DEAD_PID, 0x3FFFFFFF]), label="value")
    else:
        value = data.draw(u64_values(position, capacity), label="value")
    return f"record at {position:#x}: {field} = {value:#x}", at, value.to_bytes(size, "little")


def history(queue: Queue, steps: list[tuple[bool, int]]) -> None:
    """Sends and receives before the damage, so that cursors and records sit anywhere in the ring."""
    for index, (send, size) in enumerate(steps):
        try:
            if send:
                queue.send_nowait(index.to_bytes(4, "little") * (size // 4) + b"\x00" * (size % 4))
            else:
                queue.recv_nowait()
        except (Full, Empty):
            pass


@FUZZ
@given(
    data=st.data(),
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 2016)), max_size=24),
    writes=st.integers(1, 3),
    in_flight=st.tuples(st.booleans(), st.sampled_from(["none", "commit", "abort"])),
)
def test_hostile_ring_state_gives_corrupt_region_error_never_a_crash_or_a_hang(
    names: Names,
    mode: Mode,
    data: st.DataObject,
    steps: list[tuple[bool, int]],
    writes: int,
    in_flight: tuple[bool, str],
) -> None:
    name = names()
    queue = Queue(name, 4096, mode=mode, create=True)
    block = Control(name, queue.capacity)
    try:
        history(queue, steps)
        damage = [hostile_write(data, block) for _ in range(writes)]
        results: list[tuple[str, str]] = in_child(lambda: everything(name, queue, block, damage, in_flight))
        for label, outcome in results:
            event(f"{label.split(':')[0]}: {outcome}")
        forged_max = block.u64(MAX_MESSAGE) < queue.max_message
        bad = unexpected(results, allow_too_large=forged_max)
        assert not bad, f"after {[d for d, _, _ in damage]}: operations ended otherwise than allowed: {bad}"
        assert block.read(RESERVED, CONTROL_BYTES - RESERVED) == bytes(CONTROL_BYTES - RESERVED), (
            f"after {[d for d, _, _ in damage]}: an operation wrote into the control block's reserved bytes"
        )
    finally:
        block.close()
        queue.close()
