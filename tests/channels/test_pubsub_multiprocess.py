"""Publisher / Subscriber between real spawned processes: fan-out, crashes and Ctrl-C.

Publishers send checksummed messages numbered 0, 1, 2, ... per publisher
(:mod:`tests.channels.children` describes the format) by ``send`` and
``loan``; subscribers take them by ``recv`` and ``recv_view`` and report, per
publisher, the sequence numbers in the order they arrived, plus their
``received`` and ``missed`` counters.  The parent ends every stream with one
``STOP``, which every subscriber receives.  What the parent then checks:

* ``overflow="block"``: every subscriber sees every message of every
  publisher, each publisher's in order, none damaged, none missed (1 x 4,
  1 x 16 processes, 64 subscriber handles in four processes, two publishers
  in two processes, late joiners);
* ``overflow="overwrite"`` with deliberately slow subscribers: nothing torn,
  each publisher's sequence strictly increasing, ``received + missed`` equal
  to what was published, and the last message always arrives.

Crashes (the promise: a dead peer holds nobody up for more than about a
second; the bound asserted is :data:`RECOVERY_BOUND`):

* a subscriber SIGKILLed while a block-mode publisher waits for it to read,
  or inside ``recv_view``: the publisher gets the room;
* a publisher SIGKILLed at each ``pubsub.loan.*`` kill point (holding the
  publisher lock with a record reserved): nothing of its message is ever
  seen, and another publisher publishes, and a new subscriber joins, soon;
* with all 128 slots taken, a dead subscriber's slot goes to a new joiner.

Ctrl-C (SIGINT) reaches a subscriber blocked in ``recv``, a publisher blocked
in ``send`` on a full ring, and a subscriber blocked joining behind an open
loan within :data:`INTERRUPT_BOUND` (the promise is 100 ms), and leaves the
channel as it was.  Measured figures are printed (``pytest -rP``) and
recorded as junit properties.  Every step has a timeout; every child is
killed and every name removed when its test ends, whatever happens.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

import pytest

from memipc import Empty, Full, Publisher, Subscriber
from tests._support import killpoints, procs
from tests.channels import children
from tests.channels import pubsub_children as pc

#: Timeout of every multi-process step (start-up, messages, joins).
TIMEOUT = 60.0
#: A dead peer must not hold anyone up for more than about a second; room for a loaded machine.
RECOVERY_BOUND = 1.5
#: KeyboardInterrupt must arrive within 100 ms; this leaves room for a loaded machine.
INTERRUPT_BOUND = 0.5
#: How long a child is seen asleep before SIGINT, or blocked before it is allowed to go on.
SETTLE = 0.2
Overflow = Literal["block", "overwrite"]
Start = Literal["latest", "earliest"]
Record = Callable[[str, object], None]


# ---- helpers ----------------------------------------------------------------------------------


def report(record_property: Record, label: str, seconds: float) -> None:
    print(f"{label}: {seconds * 1000:.1f} ms")
    record_property(label, f"{seconds:.4f}")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.002)


def expect(conn: Connection, child: procs.Child, kind: str) -> tuple[Any, ...]:
    """The child's next report, which must be of ``kind``."""
    if not conn.poll(TIMEOUT):
        raise TimeoutError(f"child {child.pid} did not report {kind!r} within {TIMEOUT} s")
    try:
        message: tuple[Any, ...] = conn.recv()
    except EOFError:
        child.result(5)  # raises ChildFailed with the child's traceback if it raised
        raise AssertionError(f"child {child.pid} closed its pipe before reporting {kind!r}") from None
    assert message[0] == kind, f"child {child.pid} reported {message!r}, expected {kind!r}"
    return message


def spawn_reporting(
    stack: ExitStack, kind: str, function: Callable[..., Any], *args: Any, duplex: bool = False
) -> tuple[procs.Child, Connection]:
    """Start a child running ``function(*args, conn)`` without waiting for its report."""
    parent_end, child_end = procs.CTX.Pipe(duplex=duplex)
    stack.callback(parent_end.close)
    try:
        child = stack.enter_context(procs.started(function, *args, child_end, timeout=TIMEOUT))
    finally:
        child_end.close()
    return child, parent_end


def gather(group: list[procs.Child], others: list[procs.Child], timeout: float = TIMEOUT) -> list[Any]:
    """The results of ``group`` in order; fails as soon as a child of ``group`` or ``others`` fails.

    A child of ``others`` (still expected to run) that finishes is a failure
    too: a subscriber that raised would otherwise leave a block-mode
    publisher waiting until its own timeout.
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


@dataclass
class Seen:
    """What one subscriber reported."""

    sequences: dict[int, list[int]]
    received: int
    missed: int
    bad_count: int
    bad: list[str]

    @classmethod
    def of(cls, summary: dict[str, Any]) -> Seen:
        return cls(
            children.unpack_sequences(summary),
            summary["received"],
            summary["missed"],
            summary["bad_count"],
            summary["bad"],
        )


def check_lossless(seen: list[Seen], counts: dict[int, int], first: dict[int, int] | None = None) -> None:
    """Block mode: every subscriber got every publisher's messages from ``first`` on, in order, intact."""
    starts = first or {}
    for number, one in enumerate(seen):
        assert one.bad_count == 0, f"subscriber {number} received damaged messages: {one.bad}"
        for producer, count in counts.items():
            got = one.sequences.get(producer, [])
            expected = list(range(starts.get(producer, 0), count))
            if got != expected:
                missing = sorted(set(expected) - set(got))
                raise AssertionError(
                    f"subscriber {number}: publisher {producer} sent {expected[:1]}..{count - 1}; got "
                    f"{len(got)} messages, {len(missing)} missing (first {missing[:5]}), "
                    f"in order: {got == sorted(got)}"
                )
        assert set(one.sequences) <= set(counts), f"subscriber {number}: unknown publishers {one.sequences}"
        total = sum(len(sequences) for sequences in one.sequences.values())
        assert (one.received, one.missed) == (total + 1, 0), (
            f"subscriber {number}: received {one.received}, missed {one.missed}; counted {total} + STOP"
        )


def check_lossy(seen: list[Seen], counts: dict[int, int]) -> None:
    """Overwrite mode: intact, each publisher's sequence strictly increasing, every loss counted."""
    published = sum(counts.values()) + 1  # and the STOP
    for number, one in enumerate(seen):
        assert one.bad_count == 0, f"subscriber {number} received torn messages: {one.bad}"
        for producer, got in one.sequences.items():
            assert producer in counts, f"subscriber {number}: unknown publisher {producer}"
            backwards = [i for i in range(1, len(got)) if got[i] <= got[i - 1]]
            assert not backwards, (
                f"subscriber {number}: publisher {producer}'s messages out of order or repeated at "
                f"{[got[i - 1 : i + 1] for i in backwards[:3]]}"
            )
            assert got[-1] < counts[producer]
        total = sum(len(sequences) for sequences in one.sequences.values())
        assert one.received == total + 1, f"subscriber {number}: received {one.received}, counted {total}"
        assert one.received + one.missed == published, (
            f"subscriber {number}: received {one.received} + missed {one.missed} != {published} published"
        )


# ---- fan-out streams ----------------------------------------------------------------------------


@dataclass
class Stream:
    """One run: publisher processes (id -> message count), subscriber processes, the outcome."""

    name: str
    overflow: Overflow
    capacity: int
    publishers: dict[int, int]
    subscribers: list[dict[str, Any]]  # keyword arguments of pubsub_children.subscribe
    handles_per_process: int = 0  # > 0: subscribe_many processes instead (len(subscribers) of them)
    low: int = children.MIN_SIZE
    high: int = children.MAX_SIZE

    def run(self) -> tuple[list[Seen], Publisher]:
        """Run the stream; return what every subscriber (handle) saw, and the parent's open publisher."""
        publisher = Publisher(
            self.name, self.capacity, overflow=self.overflow, max_message=children.MAX_SIZE, create=True
        )
        try:
            return self._run(publisher), publisher
        except BaseException:
            publisher.close()
            raise

    def _run(self, publisher: Publisher) -> list[Seen]:
        timeout = TIMEOUT + sum(self.publishers.values()) / 2_000
        with ExitStack() as stack:
            subscriber_children = []
            for index, arguments in enumerate(self.subscribers):
                if self.handles_per_process:
                    child, conn = spawn_reporting(
                        stack, "joined", pc.subscribe_many, self.name, self.handles_per_process, index
                    )
                else:
                    child, conn = spawn_reporting(
                        stack,
                        "joined",
                        pc.subscribe,
                        self.name,
                        arguments.get("start", "latest"),
                        index,
                        arguments.get("pause_every", 0),
                        arguments.get("pause", 0.0),
                    )
                subscriber_children.append((child, conn))
            for child, conn in subscriber_children:  # every subscriber holds its slot before anything is sent
                expect(conn, child, "joined")
            publisher_children = [
                stack.enter_context(
                    procs.started(
                        pc.publish, self.name, producer, count, producer, self.low, self.high, timeout=timeout
                    )
                )
                for producer, count in self.publishers.items()
            ]
            subscribers_only = [child for child, _ in subscriber_children]
            sent = gather(publisher_children, subscribers_only, timeout)
            assert [messages for messages, _ in sent] == list(self.publishers.values())
            publisher.send(children.STOP, timeout=TIMEOUT)
            summaries = gather(subscribers_only, [], timeout)
        if self.handles_per_process:
            return [Seen.of(summary) for per_process in summaries for summary in per_process]
        return [Seen.of(summary) for summary in summaries]


def subscriber_specs(count: int, **arguments: Any) -> list[dict[str, Any]]:
    return [dict(arguments) for _ in range(count)]


@pytest.mark.parametrize(
    ("subscribers", "messages"),
    [(4, 20_000), (16, 3_000), pytest.param(16, 100_000, marks=pytest.mark.stress, id="16-stress")],
)
def test_one_publisher_to_many_subscribers_in_block_mode_delivers_everything_in_order(
    name: str, subscribers: int, messages: int
) -> None:
    stream = Stream(name, "block", 1 << 16, {1: messages}, subscriber_specs(subscribers))
    seen, publisher = stream.run()
    try:
        check_lossless(seen, {1: messages})
        stats = publisher.stats()
        assert stats.sent == messages + 1
        assert stats.drops == 0
        assert publisher.subscribers() == [], "subscribers that closed kept their slots"
    finally:
        publisher.close()


def test_a_small_ring_that_wraps_constantly_still_delivers_everything_in_block_mode(name: str) -> None:
    stream = Stream(name, "block", 8192, {1: 10_000}, subscriber_specs(4))
    seen, publisher = stream.run()
    try:
        check_lossless(seen, {1: 10_000})
        assert publisher.stats().waits > 0, "the publisher never had to wait: the ring was not small"
    finally:
        publisher.close()


def test_sixty_four_subscriber_handles_in_four_processes_each_get_everything(name: str) -> None:
    stream = Stream(name, "block", 1 << 15, {1: 2_000}, subscriber_specs(4), handles_per_process=16)
    seen, publisher = stream.run()
    try:
        assert len(seen) == 64
        check_lossless(seen, {1: 2_000})
    finally:
        publisher.close()


@pytest.mark.stress
def test_one_hundred_and_twenty_eight_subscriber_processes_each_get_everything(name: str) -> None:
    stream = Stream(name, "block", 1 << 16, {1: 5_000}, subscriber_specs(128))
    seen, publisher = stream.run()
    try:
        check_lossless(seen, {1: 5_000})
    finally:
        publisher.close()


@pytest.mark.parametrize("overflow", ["block", "overwrite"])
def test_two_publishers_in_two_processes_keep_each_ones_order_for_every_subscriber(
    name: str, overflow: Overflow
) -> None:
    counts = {1: 8_000, 2: 8_000}
    stream = Stream(name, overflow, 1 << 15, counts, subscriber_specs(4))
    seen, publisher = stream.run()
    try:
        if overflow == "block":
            check_lossless(seen, counts)
        else:
            check_lossy(seen, counts)
        assert publisher.stats().sent == sum(counts.values()) + 1
    finally:
        publisher.close()


def test_overwrite_mode_with_slow_subscribers_tears_nothing_and_counts_every_loss(name: str) -> None:
    counts = {1: 20_000}
    specs: list[dict[str, Any]] = [
        {},
        {},
        {"pause_every": 50, "pause": 0.01},
        {"pause_every": 7, "pause": 0.002},
    ]
    seen, publisher = Stream(name, "overwrite", 8192, counts, specs).run()
    try:
        check_lossy(seen, counts)
        for one in seen:
            assert one.sequences[1][-1] == counts[1] - 1, "the last message before STOP was lost"
        assert seen[2].missed > 0 and seen[3].missed > 0, "the slow subscribers were never lapped"
        assert publisher.stats().waits == 0
    finally:
        publisher.close()


# ---- late joiners -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first_half", "capacity"), [(50, 1 << 16), (200, 8192)], ids=["all-still-in-the-ring", "ring-wrapped"]
)
def test_late_joiners_get_the_ring_from_its_oldest_message_or_from_their_join(
    name: str, first_half: int, capacity: int
) -> None:
    """A publisher pauses half-way; late subscribers join; ``earliest`` replays what the ring still holds.

    96-byte messages take 128-byte records, which divide the ring: after the
    first half, it holds exactly the last ``capacity // 128`` of them.
    """
    size, second_half = 96, 100
    total = first_half + second_half
    record = 128  # a 96-byte message and its 32-byte header
    oldest_kept = max(0, first_half - capacity // record)
    with (
        Publisher(name, capacity, max_message=children.MAX_SIZE, create=True) as publisher,
        ExitStack() as stack,
    ):
        early, early_conn = spawn_reporting(stack, "joined", pc.subscribe, name, "latest", 1, 0, 0.0)
        expect(early_conn, early, "joined")
        pausing, pausing_conn = spawn_reporting(
            stack, "half", pc.publish_in_two_halves, name, 1, first_half, second_half, size, duplex=True
        )
        expect(pausing_conn, pausing, "half")
        late = []
        for start in ("earliest", "latest"):
            child, conn = spawn_reporting(stack, "joined", pc.subscribe, name, start, 2, 0, 0.0)
            expect(conn, child, "joined")
            late.append(child)
        pausing_conn.send(("go",))
        assert gather([pausing], [early, *late]) == [total]
        publisher.send(children.STOP, timeout=TIMEOUT)
        early_seen, earliest_seen, latest_seen = (Seen.of(s) for s in gather([early, *late], []))
    check_lossless([early_seen], {1: total})
    check_lossless([earliest_seen], {1: total}, first={1: oldest_kept})
    check_lossless([latest_seen], {1: total}, first={1: first_half})


def test_an_earliest_subscriber_joining_mid_stream_gets_a_gap_free_run_to_the_end(name: str) -> None:
    """Joining races the publisher: wherever the join lands, nothing after it is missed or reordered."""
    count = 10_000
    with Publisher(name, 8192, max_message=children.MAX_SIZE, create=True) as publisher, ExitStack() as stack:
        early, early_conn = spawn_reporting(stack, "joined", pc.subscribe, name, "latest", 1, 0, 0.0)
        expect(early_conn, early, "joined")
        publishing = stack.enter_context(
            procs.started(pc.publish, name, 1, count, 1, 16, 300, timeout=TIMEOUT)
        )
        joiners = [
            spawn_reporting(stack, "joined", pc.subscribe, name, start, 3, 0, 0.0)
            for start in ("earliest", "latest", "earliest")
        ]
        for child, conn in joiners:
            expect(conn, child, "joined")
        gather([publishing], [early] + [child for child, _ in joiners])
        publisher.send(children.STOP, timeout=TIMEOUT)
        summaries = gather([early] + [child for child, _ in joiners], [])
    seen = [Seen.of(summary) for summary in summaries]
    check_lossless(seen[:1], {1: count})
    for one in seen[1:]:
        got = one.sequences.get(1, [])
        first = got[0] if got else count
        check_lossless([one], {1: count}, first={1: first})


# ---- subscribers that die -------------------------------------------------------------------------


FILL_SIZE, FILL_COUNT = 480, 8  # 512-byte records: eight fill a 4096-byte ring


def fill(publisher: Publisher) -> None:
    for index in range(FILL_COUNT):
        publisher.send_nowait(bytes([index]) * FILL_SIZE)
    with pytest.raises(Full):
        publisher.send_nowait(b"one too many")


def sigkill(child: procs.Child) -> float:
    """SIGKILL ``child`` and reap it; return the time just before the kill."""
    killed_at = time.monotonic()
    child.signal(signal.SIGKILL)
    child.process.join(TIMEOUT)
    assert child.process.exitcode == -signal.SIGKILL, f"exit code {child.process.exitcode}"
    return killed_at


def test_a_block_mode_publisher_waiting_on_a_subscriber_that_is_killed_gets_room_soon(
    name: str, record_property: Record
) -> None:
    with Publisher(name, 4096, create=True) as publisher, Subscriber(name) as reader, ExitStack() as stack:
        victim, victim_conn = spawn_reporting(stack, "joined", pc.join_and_hold, name)
        expect(victim_conn, victim, "joined")
        fill(publisher)
        assert [reader.recv_nowait() for _ in range(FILL_COUNT)][-1] == bytes([7]) * FILL_SIZE
        outcome: list[BaseException | float] = []

        def send() -> None:
            try:
                publisher.send(b"after the death", timeout=TIMEOUT)
                outcome.append(time.monotonic())
            except BaseException as error:
                outcome.append(error)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        wait_until(lambda: publisher.stats().waits == 1, "the publisher to wait for the idle subscriber")
        time.sleep(SETTLE)
        assert not outcome, f"the publisher got room while the idle subscriber lived: {outcome}"
        killed_at = sigkill(victim)
        sender.join(TIMEOUT)
        [sent_at] = outcome
        assert isinstance(sent_at, float), f"the send failed: {sent_at!r}"
        report(record_property, "room_after_subscriber_death", sent_at - killed_at)
        assert sent_at - killed_at <= RECOVERY_BOUND
        assert reader.recv_nowait() == b"after the death"
        stats = publisher.stats()
        assert stats.drops == 1, "the dead subscriber was not counted as lost"
        assert [info.pid for info in publisher.subscribers()] == [reader.subscribers()[0].pid]


def test_a_subscriber_killed_inside_recv_view_stops_no_one_and_its_room_comes_back(
    name: str, record_property: Record
) -> None:
    with Publisher(name, 4096, create=True) as publisher, Subscriber(name) as reader:
        fill(publisher)
        assert len(reader.recv_nowait()) == FILL_SIZE
        killpoints.kill_at("pubsub.recv_view.inside", pc.view_one, name, timeout=TIMEOUT)
        assert publisher.stats().drops == 0
        assert len(publisher.subscribers()) == 2, "the dead reader's slot is gone before anyone needed it"
        # The ring is full and the dead reader holds its oldest record: the next send needs that room.
        more = [children.Maker(9, seed=9).message(FILL_SIZE) for _ in range(FILL_COUNT)]
        for _ in range(FILL_COUNT - 1):
            reader.recv_nowait()
        durations = procs.run(pc.send_timed, name, more[:1], timeout=TIMEOUT)
        report(record_property, "send_onto_a_dead_readers_record", durations[0])
        assert max(durations) <= RECOVERY_BOUND
        assert publisher.stats().drops == 1
        assert reader.recv_nowait() == more[0]
        with pytest.raises(Empty):
            reader.recv_nowait()


def test_with_every_slot_taken_a_dead_subscribers_slot_goes_to_the_next_joiner(name: str) -> None:
    publisher = Publisher(name, 4096, create=True)
    subscribers: list[Subscriber] = []
    try:
        subscribers = [Subscriber(name) for _ in range(pc.SLOTS - 1)]
        with ExitStack() as stack:
            victim, conn = spawn_reporting(stack, "joined", pc.join_and_hold, name)
            expect(conn, victim, "joined")
            with pytest.raises(RuntimeError, match="close one"):
                Subscriber(name)
            victim_slot = [info.slot for info in publisher.subscribers() if info.pid == victim.pid]
            assert victim_slot == [pc.SLOTS - 1]
            sigkill(victim)
        subscribers.append(Subscriber(name, timeout=TIMEOUT))
        assert len(publisher.subscribers()) == pc.SLOTS
        assert publisher.stats().drops == 1
        publisher.send_nowait(b"to everyone")
        assert all(subscriber.recv_nowait() == b"to everyone" for subscriber in subscribers)
    finally:
        for subscriber in subscribers:
            subscriber.close()
        publisher.close()


# ---- publishers that die holding a loan ---------------------------------------------------------

DEAD, LIVE = 1, 2
BEFORE, AFTER, SIZE = 5, 5, 300


@pytest.mark.parametrize("first", ["publisher", "joiner"], ids=["publish-first", "join-first"])
@pytest.mark.parametrize("point", ["pubsub.loan.after_reserve", "pubsub.loan.before_commit"])
def test_a_publisher_killed_holding_a_loan_leaves_nothing_visible_and_holds_no_one_up(
    name: str, point: str, first: str, record_property: Record
) -> None:
    with (
        Publisher(name, 1 << 16, max_message=children.MAX_SIZE, create=True) as publisher,
        ExitStack() as stack,
    ):
        waiting, waiting_conn = spawn_reporting(stack, "joined", pc.subscribe, name, "latest", 1, 0, 0.0)
        expect(waiting_conn, waiting, "joined")
        live, live_conn = spawn_reporting(
            stack, "ready", pc.publish_on_go, name, LIVE, AFTER, SIZE, duplex=True
        )
        expect(live_conn, live, "ready")
        killpoints.kill_at(point, pc.publish_then_loan, name, DEAD, BEFORE, SIZE, timeout=TIMEOUT)
        dead_at = time.monotonic()  # the child is dead and reaped: it holds the publisher lock
        marker = children.Maker(3, seed=3).message(SIZE)
        if first == "joiner":
            joined = Subscriber(name, start="earliest", timeout=TIMEOUT)
            took = time.monotonic() - dead_at
            stack.callback(joined.close)
            publisher.send(marker, timeout=TIMEOUT)
        else:
            publisher.send(marker, timeout=TIMEOUT)
            took = time.monotonic() - dead_at
            joined = Subscriber(name, start="earliest", timeout=TIMEOUT)
            stack.callback(joined.close)
        report(record_property, f"first_{first}_after_publisher_death", took)
        assert took <= RECOVERY_BOUND
        live_conn.send(("go",))
        longest = gather([live], [waiting])[0]["longest_send"]
        report(record_property, "longest_send_of_the_other_publisher", longest)
        assert longest <= RECOVERY_BOUND
        publisher.send(children.STOP, timeout=TIMEOUT)
        [summary] = gather([waiting], [])
        seen = Seen.of(summary)
        check_lossless([seen], {DEAD: BEFORE, LIVE: AFTER, 3: 1})
        # The joiner came after the death: it replays the ring, which holds nothing of the dead loan.
        replayed = []
        while True:
            try:
                replayed.append(joined.recv_nowait())
            except Empty:
                break
        identities = [children.check_message(message) for message in replayed[:-1]]
        assert None not in identities, "a damaged message was replayed"
        assert replayed[-1] == children.STOP
        assert sorted(i for i in identities if i is not None) == sorted(
            [(DEAD, s) for s in range(BEFORE)] + [(LIVE, s) for s in range(AFTER)] + [(3, 0)]
        )
        stats = publisher.stats()
        assert stats.sent == BEFORE + AFTER + 2
        assert seen.received + seen.missed == stats.sent, "the dead message left a hole in the numbering"


@pytest.mark.parametrize("kills", [3, pytest.param(40, marks=pytest.mark.stress, id="stress")])
@pytest.mark.parametrize("overflow", ["block", "overwrite"])
def test_publishers_killed_at_random_moments_leave_only_whole_messages_and_the_others_go_on(
    name: str, overflow: Overflow, kills: int, record_property: Record
) -> None:
    """SIGKILL lands anywhere, also inside the C send holding the publisher lock mid-copy."""
    seed = random.randrange(1 << 32)
    record_property("seed", seed)
    rng = random.Random(seed)
    steady_id, victims = 1, range(100, 100 + kills)
    with (
        Publisher(name, 1 << 15, overflow=overflow, max_message=children.MAX_SIZE, create=True) as publisher,
        ExitStack() as stack,
    ):
        watchers = [
            spawn_reporting(stack, "joined", pc.subscribe, name, "latest", n, 0, 0.0) for n in range(2)
        ]
        for child, conn in watchers:
            expect(conn, child, "joined")
        watching = [child for child, _ in watchers]
        steady, steady_conn = spawn_reporting(
            stack, "sending", pc.publish_until_told, name, steady_id, seed, duplex=True
        )
        expect(steady_conn, steady, "sending")
        for victim_id in victims:
            with ExitStack() as victim_stack:
                victim, victim_conn = spawn_reporting(
                    victim_stack, "sending", pc.publish_until_killed, name, victim_id, seed + victim_id
                )
                expect(victim_conn, victim, "sending")
                time.sleep(rng.uniform(0.005, 0.1))  # not synchronization: a random moment to strike
                sigkill(victim)
        steady_conn.send(("stop",))
        [count] = gather([steady], watching)
        publisher.send(children.STOP, timeout=TIMEOUT)
        seen = [Seen.of(summary) for summary in gather(watching, [])]
        sent = publisher.stats().sent
    for number, one in enumerate(seen):
        assert one.bad_count == 0, f"seed {seed}: subscriber {number} received damaged messages: {one.bad}"
        for victim_id in victims:
            got = one.sequences.get(victim_id, [])
            if overflow == "block":
                assert got, f"seed {seed}: nothing from victim {victim_id}, which reported a message sent"
                assert got == list(range(len(got))), f"seed {seed}: victim {victim_id}: not a gap-free prefix"
            else:
                assert got == sorted(set(got)), f"seed {seed}: victim {victim_id}: out of order or repeated"
        steady_got = one.sequences.get(steady_id, [])
        if overflow == "block":
            assert steady_got == list(range(count)), f"seed {seed}: the steady publisher lost messages"
            assert one.missed == 0
        else:
            assert steady_got == sorted(set(steady_got)) and steady_got[-1] == count - 1
        assert one.received + one.missed == sent, (
            f"seed {seed}: subscriber {number}: {one.received} received + {one.missed} missed != {sent} sent"
        )


# ---- Ctrl-C -----------------------------------------------------------------------------------------


def interrupt(
    child: procs.Child, conn: Connection, asleep: Callable[[], bool], what: str, record_property: Record
) -> None:
    """Wait until ``child`` sleeps in ``what``, send SIGINT, check KeyboardInterrupt came in time."""
    _, _, blocking_at = expect(conn, child, "blocking")
    wait_until(asleep, f"the child to sleep in {what}")
    time.sleep(SETTLE)  # the sleeper counts drop for a moment between wait slices: not re-checked here
    sent_at = time.monotonic()
    child.signal(signal.SIGINT)
    _, caught_at = expect(conn, child, "interrupted")
    latency = caught_at - sent_at
    report(record_property, f"ctrl-c latency in {what}", latency)
    assert caught_at - blocking_at >= SETTLE, "the child was not blocked when SIGINT was sent"
    assert latency < INTERRUPT_BOUND, f"KeyboardInterrupt left {what} {latency * 1000:.1f} ms after SIGINT"


def test_ctrl_c_interrupts_a_subscriber_blocked_in_recv_and_it_still_receives(
    name: str, record_property: Record
) -> None:
    with Publisher(name, 4096, create=True) as publisher, ExitStack() as stack, pc.BusControl(name) as block:
        child, conn = spawn_reporting(stack, "blocking", pc.interrupt_recv, name, duplex=True)
        interrupt(
            child, conn, lambda: block.u32(pc.SUBSCRIBERS_ASLEEP) >= 1, "Subscriber.recv", record_property
        )
        assert block.u32(pc.SUBSCRIBERS_ASLEEP) == 0, "the interrupted subscriber is still counted as asleep"
        assert len(publisher.subscribers()) == 1, "the interrupted subscriber lost its slot"
        conn.send(("go",))
        publisher.send(b"after the interrupt", timeout=TIMEOUT)
        assert child.result(TIMEOUT) == b"after the interrupt"
        assert publisher.subscribers() == []


def test_ctrl_c_interrupts_a_publisher_blocked_on_a_full_ring_and_it_still_publishes(
    name: str, record_property: Record
) -> None:
    with (
        Publisher(name, 4096, create=True) as publisher,
        Subscriber(name) as holder,
        ExitStack() as stack,
        pc.BusControl(name) as block,
    ):
        largest = [bytes([index]) * publisher.max_message for index in range(2)]
        for message in largest:
            publisher.send_nowait(message)
        tail = block.u64(pc.TAIL)
        child, conn = spawn_reporting(stack, "blocking", pc.interrupt_send, name, duplex=True)
        interrupt(
            child, conn, lambda: block.u32(pc.PUBLISHERS_ASLEEP) >= 1, "Publisher.send", record_property
        )
        assert block.u32(pc.PUBLISHERS_ASLEEP) == 0, "the interrupted publisher is still counted as asleep"
        assert block.u32(pc.PUBLISHERS_WAITING) == 0, "the interrupted publisher is still counted as waiting"
        assert block.u32(pc.PUBLISHER_LOCK) & 0x3FFFFFFF == 0, "the interrupted publisher kept the lock"
        assert block.u64(pc.TAIL) == tail, "the interrupted send published something"
        stats = publisher.stats()
        assert (stats.sent, stats.drops) == (2, 0)
        conn.send(("go",))
        assert holder.recv(timeout=TIMEOUT) == largest[0]
        assert child.result(TIMEOUT) is None, "the interrupted process could not publish"
        assert holder.recv(timeout=TIMEOUT) == largest[1]
        assert holder.recv(timeout=TIMEOUT) == b"after the interrupt"


def test_ctrl_c_interrupts_a_subscriber_blocked_joining_behind_an_open_loan(
    name: str, record_property: Record
) -> None:
    with Publisher(name, 4096, create=True) as publisher, ExitStack() as stack, pc.BusControl(name) as block:
        with publisher.loan(6) as buf:
            buf[:] = b"loaned"
            child, conn = spawn_reporting(stack, "blocking", pc.interrupt_join, name, duplex=True)
            lock_sleepers = pc.PUBLISHER_LOCK + 20  # struct mi_owned: sleepers
            interrupt(
                child, conn, lambda: block.u32(lock_sleepers) >= 1, "Subscriber() joining", record_property
            )
            assert block.u32(lock_sleepers) == 0
            assert publisher.subscribers() == [], "the interrupted join took a slot"
            conn.send(("go",))
            time.sleep(SETTLE)  # not synchronization: the joiner must still wait for the loan
            assert child.process.is_alive()
        assert child.result(TIMEOUT) is True
        assert publisher.stats().sent == 1
