"""Queue between real spawned processes (issue 4): nothing lost, duplicated, reordered or torn.

Producers send checksummed messages of random sizes numbered 0, 1, 2, ...
(:mod:`tests.channels.children` describes the format) with every sending
method (``send_many`` batches mostly, single ``send`` and ``loan``);
consumers take them with every receiving method (``recv_many`` mostly,
``recv`` and ``recv_view``) and report, per producer, the sequence numbers in
the order they arrived.  The parent then checks the outcomes the queue allows:

* every message arrives exactly once, across all consumers;
* each consumer sees each producer's sequence numbers increasing (a queue
  hands out records in the order they were reserved, and one producer
  reserves its messages in order);
* every checksum is valid: no receiver ever saw a message part-way through
  writing or overwritten while it read it.

The issue's 1,000,000-message MPMC run is opt-in (``--stress``); the default
run sends a fifth of that.  Blocking is checked across processes too: a
receiver asleep in ``recv(timeout=None)`` and a sender asleep on a full queue
are woken by another process.  Every step has a timeout.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

import pytest

from memipc import Empty, Full, Queue
from tests._support import procs
from tests.channels import children

#: Timeout of every multi-process step (start-up, messages, joins).
TIMEOUT = 60.0
#: Pause after a child is seen asleep, to check that it stays blocked.
SETTLE = 0.3
Mode = Literal["mpmc", "spsc"]
MODES: list[Mode] = ["mpmc", "spsc"]


# ---- helpers ----------------------------------------------------------------


def run_stream(name: str, *, mode: Mode, producers: int, consumers: int, total: int, capacity: int) -> None:
    """Send ``total`` messages from ``producers`` processes to ``consumers`` processes; check everything."""
    counts = [total // producers + (1 if p < total % producers else 0) for p in range(producers)]
    timeout = TIMEOUT + total / 10_000  # 80 s for the default run, 160 s for the stress run
    with Queue(name, capacity, max_message=children.MAX_SIZE, mode=mode, create=True) as queue:
        consumer_children = [
            procs.Child(children.consume, name, 1000 + c, timeout=timeout) for c in range(consumers)
        ]
        producer_children = [
            procs.Child(children.produce, name, p, counts[p], p, timeout=timeout) for p in range(producers)
        ]
        try:
            sent = gather(producer_children, consumer_children, timeout)
            assert [messages for messages, _ in sent] == counts
            for _ in range(consumers):
                queue.send(children.STOP, timeout=TIMEOUT)
            summaries = gather(consumer_children, [], timeout)
        finally:
            for child in producer_children + consumer_children:
                child.kill()
        check_stream(summaries, counts)
        stops = consumers + sum(summary["extra_stops"] for summary in summaries)
        stats = queue.stats()
        assert stats.sent == stats.received == total + stops
        assert (
            stats.bytes == stats.bytes_received == sum(size for _, size in sent) + stops * len(children.STOP)
        )
        assert stats.drops == 0
        assert len(queue) == 0
        with pytest.raises(Empty):
            queue.recv_nowait()


def gather(group: list[procs.Child], others: list[procs.Child], timeout: float) -> list[Any]:
    """The results of ``group``, in order; fails as soon as any child of ``group`` or ``others`` fails.

    A child of ``others`` (still expected to be running) that reports is a
    failure too: without this, a consumer that raised would leave the
    producers blocked on a full queue until their own timeout.
    """
    results: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while len(results) < len(group):
        # Wait on the result pipes, not the process sentinels: a child whose result is bigger
        # than a pipe buffer cannot exit until the parent starts reading it.
        pending = {child._parent: child for child in group if id(child) not in results}
        pending.update({child._parent: child for child in others})
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"children did not finish within {timeout} s")
        for conn in wait(list(pending), remaining):
            child = pending[conn]  # type: ignore[index]
            if child in others:
                child.result(5)  # raises ChildFailed with the child's traceback
                raise AssertionError(f"child {child.pid} finished before it was told to stop")
            results[id(child)] = child.result(5)
    return [results[id(child)] for child in group]


def check_stream(summaries: list[dict[str, Any]], counts: list[int]) -> None:
    bad = [(summary["bad_count"], summary["bad"]) for summary in summaries if summary["bad_count"]]
    assert not bad, f"consumers received damaged messages (count, first few): {bad}"
    merged: dict[int, list[int]] = {producer: [] for producer in range(len(counts))}
    for number, summary in enumerate(summaries):
        for producer, sequences in children.unpack_sequences(summary).items():
            assert producer in merged, f"consumer {number} received messages from unknown producer {producer}"
            backwards = [i for i in range(1, len(sequences)) if sequences[i] <= sequences[i - 1]]
            assert not backwards, (
                f"consumer {number} saw producer {producer}'s messages out of order "
                f"{len(backwards)} times, first at {sequences[backwards[0] - 1 : backwards[0] + 1]}"
            )
            merged[producer].extend(sequences)
    for producer, count in enumerate(counts):
        sequences = merged[producer]
        if sorted(sequences) != list(range(count)):
            seen = Counter(sequences)
            missing = count - len([s for s in range(count) if s in seen])
            duplicated = sum(1 for times in seen.values() if times > 1)
            raise AssertionError(
                f"producer {producer} sent {count} messages; consumers got {len(sequences)}: "
                f"{missing} missing, {duplicated} duplicated"
            )


@contextmanager
def reporting(function: Any, *args: Any) -> Iterator[tuple[procs.Child, Connection]]:
    """A child running ``function(*args, conn)`` that has reported ``("waiting", pid)``."""
    parent_end, child_end = procs.CTX.Pipe(duplex=False)
    try:
        with procs.started(function, *args, child_end, timeout=TIMEOUT) as child:
            child_end.close()
            if not parent_end.poll(TIMEOUT):
                raise TimeoutError(f"child {child.pid} did not report within {TIMEOUT} s")
            assert parent_end.recv() == ("waiting", child.pid)
            yield child, parent_end
    finally:
        child_end.close()
        parent_end.close()


def wait_until_asleep(queue: Queue, waits_before: int, child: procs.Child) -> None:
    """Wait until the queue counts one more sleeper, then check the child stays blocked a while."""
    deadline = time.monotonic() + TIMEOUT
    while queue.stats().waits <= waits_before:
        assert child.process.is_alive(), f"child {child.pid} ended instead of blocking"
        if time.monotonic() > deadline:
            raise TimeoutError(f"child {child.pid} did not go to sleep within {TIMEOUT} s")
        time.sleep(0.005)
    time.sleep(SETTLE)
    assert child.process.is_alive(), f"child {child.pid} stopped blocking with nothing to wake it"


# ---- streams ----------------------------------------------------------------


def test_four_producers_and_four_consumers_lose_duplicate_reorder_and_tear_nothing(name: str) -> None:
    run_stream(name, mode="mpmc", producers=4, consumers=4, total=200_000, capacity=1 << 20)


@pytest.mark.stress
def test_four_producers_and_four_consumers_deliver_a_million_messages_intact(name: str) -> None:
    run_stream(name, mode="mpmc", producers=4, consumers=4, total=1_000_000, capacity=1 << 20)


def test_four_producers_and_four_consumers_stay_intact_through_a_small_ring_that_wraps_constantly(
    name: str,
) -> None:
    run_stream(name, mode="mpmc", producers=4, consumers=4, total=20_000, capacity=8192)


def test_one_producer_and_one_consumer_in_spsc_mode_lose_duplicate_reorder_and_tear_nothing(
    name: str,
) -> None:
    run_stream(name, mode="spsc", producers=1, consumers=1, total=200_000, capacity=1 << 20)


def test_one_producer_and_one_consumer_in_spsc_mode_stay_intact_through_a_small_ring_that_wraps_constantly(
    name: str,
) -> None:
    run_stream(name, mode="spsc", producers=1, consumers=1, total=20_000, capacity=8192)


# ---- blocking across processes ---------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_receiver_asleep_without_timeout_gets_a_message_another_process_sends_later(
    name: str, mode: Mode
) -> None:
    message = children.Maker(7, seed=7).message(300)
    with Queue(name, 1 << 16, mode=mode, create=True) as queue:
        waits_before = queue.stats().waits
        with reporting(children.recv_blocking, name) as (receiver, _):
            wait_until_asleep(queue, waits_before, receiver)
            sent_at = procs.run(children.send_one, name, message, timeout=TIMEOUT)
            received, received_at = receiver.result(TIMEOUT)
        assert received == message
        assert received_at >= sent_at
        assert len(queue) == 0
        assert queue.stats().received == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_sender_asleep_on_a_full_queue_proceeds_when_another_process_receives(
    name: str, mode: Mode
) -> None:
    maker = children.Maker(1, seed=1)
    with Queue(name, 4096, mode=mode, create=True) as queue:
        filled = []
        while True:
            message = maker.message(480)  # a 512-byte record: eight fill the ring exactly
            try:
                queue.send_nowait(message)
            except Full:
                break
            filled.append(message)
        assert len(filled) == 8
        last = maker.message(480)
        waits_before = queue.stats().waits
        with reporting(children.send_blocking, name, last) as (sender, _):
            wait_until_asleep(queue, waits_before, sender)
            assert len(queue) == len(filled)
            first, taken_at = procs.run(children.recv_one, name, timeout=TIMEOUT)
            sent_at = sender.result(TIMEOUT)
        assert first == filled[0]
        assert sent_at >= taken_at
        rest = [queue.recv(timeout=TIMEOUT) for _ in range(len(filled))]
        assert rest == [*filled[1:], last]
        assert len(queue) == 0
