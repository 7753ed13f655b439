"""Queue against a ``collections.deque`` model (hypothesis RuleBasedStateMachine).

Single process, never blocking: every call uses ``timeout=0`` or is a
``*_nowait``, so each step's outcome is decided by the queue's state alone.
Steps go through two handles of one name, to show that they share the ring.

What the model decides exactly:

* what comes out: every receive (``recv_nowait``, ``recv_view``,
  ``recv_many``) returns the oldest messages, byte for byte, and raises
  ``Empty`` / returns ``[]`` exactly when the model is empty; ``get``
  returns an object equal to the one ``put``, and consumes a message that was
  not put with ``CorruptRegionError``;
* ``len(q)`` and ``stats()`` (sent, received, bytes, bytes_received, depth)
  follow the model after every step, with no waits and no drops.

Whether a send fits depends on padding and on where the cursors sit, which the
model does not track.  So a send may fail with ``Full`` whenever it likes, but
then must leave the queue exactly as it was (the invariants check it), and a
``send_many`` sends a prefix of its batch.  One bound is checked: once the
queue has been drained (``recv_nowait`` raised ``Empty``), a message of
``max_message`` bytes always fits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from memipc import ChannelStats, CorruptRegionError, Empty, Full, MessageTooLargeError, Queue
from memipc._channels import _codec
from tests.channels.conftest import Mode

Names = Callable[[], str]

MODEL_SETTINGS = settings(
    max_examples=60,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


NOT_AN_OBJECT = object()


@dataclass(frozen=True)
class Message:
    """One message in the model: its payload, and the object ``put`` sent (if it was put).

    A put message's payload has the right length and parts, but its alignment
    gaps hold whatever the ring held before, so only what it encodes is compared.
    """

    payload: bytes
    obj: Any = NOT_AN_OBJECT


def encoded(obj: object) -> bytes:
    """The payload ``put(obj)`` writes (pickle 5 with out-of-band buffers, _codec's layout)."""
    stream, raws, size, offsets = _codec.encode_object(obj)
    target = bytearray(size)
    _codec.write_object(memoryview(target), stream, raws, offsets)
    return bytes(target)


OBJECTS = st.recursive(
    st.none() | st.integers() | st.text(max_size=20) | st.binary(max_size=64),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner),
    max_leaves=10,
)


class QueueModel(RuleBasedStateMachine):
    #: Set by the test: the ``names`` fixture's factory and the mode under test.
    names: ClassVar[Names]
    mode: ClassVar[Mode]

    def __init__(self) -> None:
        super().__init__()
        self.handles: list[Queue] = []
        self.model: deque[Message] = deque()
        self.counter = 0
        self.sent = self.received = self.bytes_sent = self.bytes_received = 0
        self.max_message = 0

    # ---- setup and helpers --------------------------------------------------

    @initialize(capacity=st.sampled_from([4096, 8192]), max_message=st.sampled_from([None, 100, 1000]))
    def create(self, capacity: int, max_message: int | None) -> None:
        name = type(self).names()
        first = Queue(name, capacity, max_message=max_message, mode=type(self).mode, create=True)
        self.handles = [first, Queue(name, create=False)]
        self.max_message = first.max_message
        assert self.handles[1].max_message == self.max_message

    def teardown(self) -> None:
        for handle in self.handles:
            handle.close()

    def message(self, size: int) -> bytes:
        """``size`` bytes unlike any other message of the run (never starting with put's b"MPK5")."""
        self.counter += 1
        stamp = self.counter.to_bytes(4, "little")
        return (stamp * (size // 4 + 1))[:size]

    def size(self, data: st.DataObject) -> int:
        top = self.max_message
        return data.draw(
            st.one_of(st.integers(0, 40), st.integers(max(0, top - 40), top), st.integers(0, top)),
            label="size",
        )

    def sent_one(self, message: Message) -> None:
        self.model.append(message)
        self.sent += 1
        self.bytes_sent += len(message.payload)

    def received_one(self) -> Message:
        message = self.model.popleft()
        self.received += 1
        self.bytes_received += len(message.payload)
        return message

    def received_bytes(self, data: bytes) -> None:
        assert self.model, f"received {data[:8]!r} from a queue the model says is empty"
        expected = self.received_one()
        if expected.obj is NOT_AN_OBJECT:
            assert data == expected.payload, (
                f"received {len(data)} bytes {data[:8]!r}, expected {expected.payload[:8]!r}"
            )
        else:  # put's alignment gaps are not part of the message: compare what they encode
            assert len(data) == len(expected.payload)
            assert _codec.read_object(memoryview(data)) == expected.obj

    # ---- sending ------------------------------------------------------------

    @rule(data=st.data(), handle=st.integers(0, 1))
    def send_nowait(self, data: st.DataObject, handle: int) -> None:
        payload = self.message(self.size(data))
        try:
            self.handles[handle].send_nowait(payload)
        except Full:
            return  # the invariants check that nothing changed
        self.sent_one(Message(payload))

    @rule(handle=st.integers(0, 1), extra=st.integers(1, 100))
    def send_more_than_max_message(self, handle: int, extra: int) -> None:
        with pytest.raises(MessageTooLargeError):
            self.handles[handle].send_nowait(b"\x00" * (self.max_message + extra))

    @rule(data=st.data(), handle=st.integers(0, 1), commit=st.booleans())
    def loan(self, data: st.DataObject, handle: int, commit: bool) -> None:
        payload = self.message(self.size(data))
        try:
            with self.handles[handle].loan(len(payload), timeout=0) as buf:
                buf[:] = payload
                if not commit:
                    raise _Abort
        except (Full, _Abort):
            return
        self.sent_one(Message(payload))

    @rule(data=st.data(), handle=st.integers(0, 1), count=st.integers(0, 8))
    def send_many(self, data: st.DataObject, handle: int, count: int) -> None:
        batch = [self.message(self.size(data)) for _ in range(count)]
        sent = self.handles[handle].send_many(batch, timeout=0)
        assert 0 <= sent <= count
        for payload in batch[:sent]:
            self.sent_one(Message(payload))

    @rule(handle=st.integers(0, 1), obj=OBJECTS)
    def put(self, handle: int, obj: Any) -> None:
        payload = encoded(obj)
        if len(payload) > self.max_message:
            with pytest.raises(MessageTooLargeError):
                self.handles[handle].put(obj, timeout=0)
            return
        try:
            self.handles[handle].put(obj, timeout=0)
        except Full:
            return
        self.sent_one(Message(payload, obj))

    # ---- receiving ----------------------------------------------------------

    def empty(self, error: Empty) -> None:
        assert not self.model, f"Empty raised with {len(self.model)} messages in the model: {error}"

    @rule(handle=st.integers(0, 1))
    def recv_nowait(self, handle: int) -> None:
        try:
            data = self.handles[handle].recv_nowait()
        except Empty as error:
            self.empty(error)
            return
        self.received_bytes(data)

    @rule(handle=st.integers(0, 1))
    def recv_view(self, handle: int) -> None:
        try:
            with self.handles[handle].recv_view(timeout=0) as view:
                assert view.readonly
                data = bytes(view)
        except Empty as error:
            self.empty(error)
            return
        self.received_bytes(data)

    @rule(handle=st.integers(0, 1), most=st.integers(1, 8))
    def recv_many(self, handle: int, most: int) -> None:
        got = self.handles[handle].recv_many(most, timeout=0)
        assert len(got) == min(most, len(self.model)), (
            f"recv_many({most}) returned {len(got)} messages with {len(self.model)} in the model"
        )
        for data in got:
            self.received_bytes(data)

    @rule(handle=st.integers(0, 1))
    def get(self, handle: int) -> None:
        """An object comes back equal; a message that was not put is consumed as corrupt."""
        if not self.model:
            with pytest.raises(Empty):
                self.handles[handle].get(timeout=0)
            return
        if self.model[0].obj is NOT_AN_OBJECT:
            with pytest.raises(CorruptRegionError):
                self.handles[handle].get(timeout=0)
            self.received_one()
            return
        obj = self.handles[handle].get(timeout=0)
        assert obj == self.received_one().obj

    @precondition(lambda self: self.handles and not self.model)
    @rule(handle=st.integers(0, 1))
    def a_drained_queue_takes_the_largest_message(self, handle: int) -> None:
        with pytest.raises(Empty):
            self.handles[handle].recv_nowait()
        payload = self.message(self.max_message)
        self.handles[1 - handle].send_nowait(payload)
        self.sent_one(Message(payload))

    # ---- invariants ---------------------------------------------------------

    @precondition(lambda self: self.handles)
    @invariant()
    def length_and_stats_follow_the_model(self) -> None:
        expected = ChannelStats(
            sent=self.sent,
            received=self.received,
            bytes=self.bytes_sent,
            bytes_received=self.bytes_received,
            depth=len(self.model),
            waits=0,
            drops=0,
        )
        for handle in self.handles:
            assert len(handle) == len(self.model)
            assert handle.stats() == expected


class _Abort(Exception):
    """Raised inside a loan to discard it."""


def test_queue_behaves_like_a_deque(names: Names, mode: Mode) -> None:
    class Machine(QueueModel):
        pass

    Machine.names = names
    Machine.mode = mode
    run_state_machine_as_test(Machine, settings=MODEL_SETTINGS)
