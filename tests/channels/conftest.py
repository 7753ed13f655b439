"""Fixtures for the Queue tests: one suite over both modes, and every queue closed.

``mode`` is parametrized over ``"mpmc"`` and ``"spsc"`` (STYLE: run one suite
over every variant), so a test that takes ``queue`` or ``queues`` runs once per
mode.  ``queues`` is a factory of queues named by the ``names`` fixture; every
queue it made is closed when the test ends, so a test only closes a queue
itself when closing is what it tests.  ``control`` reads and writes a queue's
control block and records straight through its /dev/shm file, as a hostile or
curious process would.
"""

from __future__ import annotations

import gc
import os
import struct
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest

from memipc import Queue, _names
from memipc._platform import current as platform

Mode = Literal["mpmc", "spsc"]
Queues = Callable[..., Queue]

#: Where the user area (the control block) starts in a queue's segment file (see _segment.py).
DATA_BASE = 4096
#: Size of the control block; the records follow it (layout.h, struct mi_ring).
CONTROL_BYTES = 1024
#: Control-block offsets (layout.h, struct mi_ring).
TAG, FLAGS, CAPACITY, MAX_MESSAGE, DATA_OFFSET = 0, 4, 32, 40, 48
PRODUCER_LOCK, TAIL, CONSUMER_LOCK, HEAD, RELEASE = 64, 128, 192, 256, 320
DATA_SEQUENCE, CONSUMERS_ASLEEP, SPACE_SEQUENCE, PRODUCERS_ASLEEP = 384, 388, 448, 452
#: Record header offsets (layout.h, struct mi_record).
STATE, LENGTH, POSITION = 0, 4, 8
WRITING, COMMITTED, PADDING, READING, CONSUMED = 1, 2, 3, 4, 5
RECORD_HEADER = 32


class Control:
    """The control block and records of one queue, reached through its segment file (pread/pwrite)."""

    def __init__(self, name: str, capacity: int) -> None:
        self.capacity = capacity
        self._fd = os.open(platform.segment_path(_names.parse(name).os_name), os.O_RDWR)
        found = self.u64(CAPACITY)
        if found != capacity:
            os.close(self._fd)
            raise AssertionError(f"the control block is not where the tests think: capacity reads {found}")

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
        self.write(offset, struct.pack("<I", value & 0xFFFFFFFF))

    def set_u64(self, offset: int, value: int) -> None:
        self.write(offset, struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF))

    def record(self, position: int) -> int:
        """Control-block-relative offset of the record header at ring ``position``."""
        return CONTROL_BYTES + (position & (self.capacity - 1))


@pytest.fixture(params=["mpmc", "spsc"])
def mode(request: pytest.FixtureRequest) -> Mode:
    """Each Queue test runs once per mode."""
    value: Mode = request.param
    return value


@pytest.fixture
def queues(names: Callable[[], str], mode: Mode) -> Iterator[Queues]:
    """``queues(capacity=4096, name=None, **kwargs)``: a new queue of this test's mode; closed after."""
    made: list[Queue] = []

    def make(capacity: int = 4096, name: str | None = None, **kwargs: Any) -> Queue:
        kwargs.setdefault("mode", mode)
        queue = Queue(names() if name is None else name, capacity, **kwargs)
        made.append(queue)
        return queue

    yield make
    gc.collect()  # arrays from recv_array(copy=False) release their records when collected
    failures = []
    for queue in made:
        try:
            queue.close()
        except BufferError as error:  # a test kept a buffer: report it, but close the others
            failures.append(error)
    if failures:
        raise failures[0]


@pytest.fixture
def queue(queues: Queues) -> Queue:
    """A 4096-byte queue (max_message 2016) of this test's mode."""
    return queues()


@pytest.fixture
def control() -> Iterator[Callable[[Queue], Control]]:
    """``control(queue)``: a :class:`Control` over the queue's segment file; closed after."""
    opened: list[Control] = []

    def make(queue: Queue) -> Control:
        block = Control(queue.name, queue.capacity)
        opened.append(block)
        return block

    yield make
    for block in opened:
        block.close()
