"""Child-process bodies for the Queue multi-process and crash tests, and the message format they share.

Every function here is importable by the spawn start method and takes only
picklable arguments: the queue's name as a string, numbers, and sometimes a
duplex ``multiprocessing`` pipe end (``conn``).  A pipe has no feeder thread,
so a message a child sends just before it is SIGKILLed is already in the
kernel.  Children that wait for the parent (``("go",)``, ``("die",)``) do so
with a timeout, so a test that forgets them cannot leave them running; the
harness in :mod:`tests._support.procs` kills every child when its test ends
anyway.

Messages
--------
A test message is ``HEADER`` (producer id, CRC-32, sequence number; 16 bytes)
followed by a body of random bytes.  The CRC covers the producer id, the
sequence number and the body, so a message that a receiver sees part-way
through writing, or with another message's bytes in it, fails
:func:`check_message`.  Each producer numbers its messages 0, 1, 2, ... in
the order it sends them.  ``STOP`` (shorter than any test message) tells a
consumer that nothing more will come.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import time
import zlib
from array import array
from multiprocessing.connection import Connection
from typing import Any

from memipc import Queue

#: producer id (u32), CRC-32 of (producer id, sequence, body) (u32), sequence number (u64).
HEADER = struct.Struct("<IIQ")
#: What the CRC covers ahead of the body.
_PREFIX = struct.Struct("<IQ")
#: Smallest and largest test message, header included.
MIN_SIZE, MAX_SIZE = HEADER.size, 2048
#: The end-of-stream marker; shorter than any test message.
STOP = b"STOP"
#: How long a child waits for one queue operation or for the parent's next move.
CHILD_TIMEOUT = 30.0
#: How long a child that is meant to be SIGKILLed keeps going before it gives up.
VICTIM_SECONDS = 60.0
#: Random bytes that message bodies are cut from.
_POOL_BYTES = 1 << 16


class Maker:
    """Builds one producer's messages: sequence numbers 0, 1, 2, ... and random bodies."""

    def __init__(self, producer: int, seed: int) -> None:
        self.producer = producer
        self.sequence = 0
        self.total_bytes = 0
        self.rng = random.Random(seed)
        self._pool = self.rng.randbytes(_POOL_BYTES + MAX_SIZE)

    def size(self, low: int = MIN_SIZE, high: int = MAX_SIZE) -> int:
        return self.rng.randint(low, high)

    def parts(self, size: int) -> tuple[bytes, bytes]:
        """(header, body) of the next message, ``size`` bytes in all; advances the sequence."""
        assert size >= MIN_SIZE, size
        offset = self.rng.randrange(_POOL_BYTES)
        body = self._pool[offset : offset + size - HEADER.size]
        crc = zlib.crc32(body, zlib.crc32(_PREFIX.pack(self.producer, self.sequence)))
        header = HEADER.pack(self.producer, crc, self.sequence)
        self.sequence += 1
        self.total_bytes += size
        return header, body

    def message(self, size: int | None = None) -> bytes:
        header, body = self.parts(self.size() if size is None else size)
        return header + body


def check_message(data: Any) -> tuple[int, int] | None:
    """(producer, sequence) of a well-formed test message, None if it is damaged."""
    if len(data) < HEADER.size:
        return None
    producer, crc, sequence = HEADER.unpack_from(data)
    body = data[HEADER.size :]
    if zlib.crc32(body, zlib.crc32(_PREFIX.pack(producer, sequence))) != crc:
        return None
    return producer, sequence


class Tally:
    """What a consumer saw: per-producer sequence numbers in arrival order, and damaged messages."""

    def __init__(self) -> None:
        self.sequences: dict[int, array[int]] = {}
        self.bad_count = 0
        self.bad: list[str] = []
        self.count = 0

    def add(self, data: Any) -> None:
        self.count += 1
        checked = check_message(data)
        if checked is None:
            self.bad_count += 1
            if len(self.bad) < 5:
                self.bad.append(repr(bytes(data[:48])))
            return
        producer, sequence = checked
        seen = self.sequences.get(producer)
        if seen is None:
            seen = self.sequences[producer] = array("Q")
        seen.append(sequence)

    def summary(self) -> dict[str, Any]:
        """Picklable and compact: the sequence arrays travel as bytes."""
        return {
            "sequences": {producer: seen.tobytes() for producer, seen in self.sequences.items()},
            "bad_count": self.bad_count,
            "bad": self.bad,
            "count": self.count,
        }


def unpack_sequences(summary: dict[str, Any]) -> dict[int, list[int]]:
    """The parent's side of :meth:`Tally.summary`."""
    result = {}
    for producer, raw in summary["sequences"].items():
        seen = array("Q")
        seen.frombytes(raw)
        result[producer] = seen.tolist()
    return result


def _await(conn: Connection, kind: str) -> None:
    if not conn.poll(CHILD_TIMEOUT):
        raise TimeoutError(f"child {os.getpid()} waited {CHILD_TIMEOUT} s for the parent's {kind!r}")
    message = conn.recv()
    if message != (kind,):
        raise AssertionError(f"child {os.getpid()} expected ({kind!r},) from the parent, got {message!r}")


def _send_all(queue: Queue, messages: list[bytes]) -> None:
    done = 0
    while done < len(messages):
        sent = queue.send_many(messages[done:], timeout=CHILD_TIMEOUT)
        if sent == 0:
            raise TimeoutError(f"producer {os.getpid()}: the queue stayed full for {CHILD_TIMEOUT} s")
        done += sent


def _send_loaned(queue: Queue, maker: Maker, size: int) -> None:
    header, body = maker.parts(size)
    with queue.loan(size, timeout=CHILD_TIMEOUT) as buf:
        buf[: HEADER.size] = header
        buf[HEADER.size :] = body


def _send_batch(queue: Queue, maker: Maker, count: int, low: int, high: int) -> None:
    """``count`` messages by one of send_many (mostly), single sends, or loans."""
    choice = maker.rng.random()
    if choice < 0.8:
        _send_all(queue, [maker.message(maker.size(low, high)) for _ in range(count)])
    elif choice < 0.9:
        for _ in range(count):
            queue.send(maker.message(maker.size(low, high)), timeout=CHILD_TIMEOUT)
    else:
        for _ in range(count):
            _send_loaned(queue, maker, maker.size(low, high))


# ---- throughput: producers and consumers that check everything ---------------


def produce(
    name: str, producer: int, count: int, seed: int, low: int = MIN_SIZE, high: int = MAX_SIZE
) -> tuple[int, int]:
    """Send ``count`` checksummed messages of random sizes in random batches; return (messages, bytes)."""
    maker = Maker(producer, seed)
    with Queue(name, create=False) as queue:
        while maker.sequence < count:
            batch = min(count - maker.sequence, maker.rng.randint(1, 64))
            _send_batch(queue, maker, batch, low, high)
    return maker.sequence, maker.total_bytes


def consume(name: str, seed: int) -> dict[str, Any]:
    """Receive and check messages until a ``STOP``; return a :class:`Tally` summary.

    Mostly ``recv_many``, sometimes ``recv`` or ``recv_view`` (checked in place).
    A batch that took more than one ``STOP`` puts the extra ones back for the
    other consumers (``extra_stops`` in the summary counts them).
    """
    rng = random.Random(seed)
    tally = Tally()
    stops = 0
    with Queue(name, create=False) as queue:
        while stops == 0:
            choice = rng.random()
            if choice < 0.8:
                batch = queue.recv_many(rng.randint(1, 128), timeout=CHILD_TIMEOUT)
                if not batch:
                    raise TimeoutError(f"consumer {os.getpid()}: nothing arrived for {CHILD_TIMEOUT} s")
            elif choice < 0.9:
                batch = [queue.recv(timeout=CHILD_TIMEOUT)]
            else:
                with queue.recv_view(timeout=CHILD_TIMEOUT) as view:
                    if len(view) == len(STOP) and view == STOP:
                        stops += 1
                    else:
                        tally.add(view)
                continue
            for data in batch:
                if data == STOP:
                    stops += 1
                else:
                    tally.add(data)
        for _ in range(stops - 1):
            queue.send(STOP, timeout=CHILD_TIMEOUT)
    summary = tally.summary()
    summary["extra_stops"] = stops - 1
    return summary


# ---- crash tests: producers -------------------------------------------------


def send_then_loan(name: str, producer: int, before: int, size: int) -> None:
    """Send ``before`` messages, then fill a loan with a complete, valid message (killed at a point)."""
    maker = Maker(producer, seed=producer)
    with Queue(name, create=False) as queue:
        for _ in range(before):
            queue.send(maker.message(size), timeout=CHILD_TIMEOUT)
        _send_loaned(queue, maker, size)


def die_mid_copy(name: str, producer: int, before: int, size: int, conn: Connection) -> None:
    """Send ``before`` messages, write half of a loaned one, report ``("half", pid)``, and on
    the parent's ``("die",)`` SIGKILL itself with the loan still open."""
    maker = Maker(producer, seed=producer)
    with Queue(name, create=False) as queue:
        for _ in range(before):
            queue.send(maker.message(size), timeout=CHILD_TIMEOUT)
        message = maker.message(size)
        with queue.loan(size, timeout=CHILD_TIMEOUT) as buf:
            buf[: size // 2] = message[: size // 2]
            conn.send(("half", os.getpid()))
            _await(conn, "die")
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(CHILD_TIMEOUT)  # never reached: SIGKILL cannot be caught


def send_on_go(name: str, producer: int, count: int, size: int, conn: Connection) -> dict[str, float]:
    """Report ``("ready", pid)``; on ``("go",)`` send ``count`` messages one by one.

    Returns when the first send started and the longest single send, in seconds.
    """
    maker = Maker(producer, seed=producer)
    with Queue(name, create=False) as queue:
        conn.send(("ready", os.getpid()))
        _await(conn, "go")
        started = time.monotonic()
        longest = 0.0
        for _ in range(count):
            message = maker.message(size)
            before = time.monotonic()
            queue.send(message, timeout=CHILD_TIMEOUT)
            longest = max(longest, time.monotonic() - before)
    return {"started": started, "longest_send": longest}


def send_until_killed(name: str, producer: int, seed: int, conn: Connection) -> None:
    """Send checksummed messages by every method, for ever; report ``("sending", pid)`` after the first."""
    maker = Maker(producer, seed)
    deadline = time.monotonic() + VICTIM_SECONDS
    with Queue(name, create=False) as queue:
        queue.send(maker.message(), timeout=CHILD_TIMEOUT)
        conn.send(("sending", os.getpid()))
        while time.monotonic() < deadline:
            _send_batch(queue, maker, maker.rng.randint(1, 16), MIN_SIZE, MAX_SIZE)
    raise TimeoutError(f"producer {os.getpid()} sent for {VICTIM_SECONDS} s and was never killed")


def send_until_told(name: str, producer: int, seed: int, conn: Connection) -> int:
    """Report ``("sending", pid)``, send messages until the parent's ``("stop",)``; return how many."""
    maker = Maker(producer, seed)
    deadline = time.monotonic() + VICTIM_SECONDS
    with Queue(name, create=False) as queue:
        conn.send(("sending", os.getpid()))
        while not conn.poll(0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"producer {os.getpid()} was never told to stop")
            _send_batch(queue, maker, maker.rng.randint(1, 16), MIN_SIZE, MAX_SIZE)
        message = conn.recv()
        if message != ("stop",):
            raise AssertionError(f"producer {os.getpid()} expected ('stop',), got {message!r}")
    return maker.sequence


# ---- crash tests: consumers -------------------------------------------------


def view_one(name: str) -> None:
    """Receive one message with ``recv_view`` (killed inside it)."""
    with Queue(name, create=False) as queue, queue.recv_view(timeout=CHILD_TIMEOUT) as view:
        check_message(view)


def hold_view(name: str, conn: Connection) -> None:
    """Claim one message with ``recv_view``, report ``("holding", producer, sequence)``, and on
    the parent's ``("die",)`` SIGKILL itself inside the block."""
    with Queue(name, create=False) as queue, queue.recv_view(timeout=CHILD_TIMEOUT) as view:
        conn.send(("holding", check_message(view)))
        _await(conn, "die")
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(CHILD_TIMEOUT)  # never reached: SIGKILL cannot be caught


def receive(name: str, count: int) -> list[bytes]:
    """Receive ``count`` messages, each within the child timeout."""
    with Queue(name, create=False) as queue:
        return [queue.recv(timeout=CHILD_TIMEOUT) for _ in range(count)]


def send_timed(name: str, messages: list[bytes]) -> list[float]:
    """Send ``messages`` one by one; return how long each send took, in seconds."""
    durations = []
    with Queue(name, create=False) as queue:
        for message in messages:
            before = time.monotonic()
            queue.send(message, timeout=CHILD_TIMEOUT)
            durations.append(time.monotonic() - before)
    return durations


# ---- blocking across processes ---------------------------------------------


def recv_blocking(name: str, conn: Connection) -> tuple[bytes, float]:
    """Report ``("waiting", pid)``, then ``recv(timeout=None)``; return the message and when it came."""
    with Queue(name, create=False) as queue:
        conn.send(("waiting", os.getpid()))
        message = queue.recv(timeout=None)
        return message, time.monotonic()


def send_blocking(name: str, message: bytes, conn: Connection) -> float:
    """Report ``("waiting", pid)``, then ``send(message, timeout=None)``; return when it went in."""
    with Queue(name, create=False) as queue:
        conn.send(("waiting", os.getpid()))
        queue.send(message, timeout=None)
        return time.monotonic()


def send_one(name: str, message: bytes) -> float:
    """Send one message; return when the send started."""
    with Queue(name, create=False) as queue:
        started = time.monotonic()
        queue.send(message, timeout=CHILD_TIMEOUT)
        return started


def recv_one(name: str) -> tuple[bytes, float]:
    """Receive one message; return it and when the receive started."""
    with Queue(name, create=False) as queue:
        started = time.monotonic()
        message = queue.recv(timeout=CHILD_TIMEOUT)
        return message, started
