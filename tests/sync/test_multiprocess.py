"""Every sync primitive between real spawned processes (SPEC §4, issue 3).

Children are fresh interpreters started with the spawn method
(tests/_support/procs.py) running functions from tests/sync/children.py;
nothing is shared but names and the multiprocessing primitives used to line
processes up.  Every child has a timeout and is killed when its test ends.
Race tests list their acceptable outcomes; no test asserts that something
was fast, only that it happened (or did not hang).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from memipc import Condition, Event, Mutex, Region, RWLock, Semaphore, wait_any
from tests._support import procs
from tests.sync import children
from tests.sync.children import get, put

Names = Callable[[], str]

#: Timeout of every child, and of every wait for one.
TIMEOUT = 60.0


@contextmanager
def scratch(name: str) -> Iterator[Region]:
    """A scratch region (guard mutex + counters, see children.py), closed afterwards."""
    with Region.create(name, children.SCRATCH_SIZE) as region:
        guard = Mutex.in_region(region, children.GUARD)  # initialize it before any child races to
        guard.close()
        yield region


def results(running: list[procs.Child]) -> list[Any]:
    """Every child's result, in order (each raises what its child raised)."""
    return [child.result() for child in running]


@contextmanager
def spawned(calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]]) -> Iterator[list[procs.Child]]:
    """Start one child per (function, args); all are killed and reaped when the block ends."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(procs.started(function, *args, timeout=TIMEOUT)) for function, args in calls
        ]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.002)


# ---- Mutex ------------------------------------------------------------------------

PROCESSES = 4
INCREMENTS = 2000


def test_mutex_keeps_every_increment_of_four_processes_racing_read_modify_write(names: Names) -> None:
    mutex_name, region_name = names(), names()
    mutex = Mutex(mutex_name, create=True)
    try:
        with scratch(region_name) as region:
            barrier = procs.CTX.Barrier(PROCESSES)
            calls = [(children.increment_under_mutex, (mutex_name, region_name, INCREMENTS, barrier))]
            with spawned(calls * PROCESSES) as running:
                assert results(running) == [INCREMENTS] * PROCESSES
            assert get(region, 0) == PROCESSES * INCREMENTS
            assert not mutex.locked()
            assert mutex.stats().operations >= PROCESSES * INCREMENTS
    finally:
        mutex.close()


# ---- Semaphore ----------------------------------------------------------------------

SEMAPHORE_SLOTS = 2
SEMAPHORE_ROUNDS = 25


def test_semaphore_never_lets_more_than_its_initial_count_of_processes_in_at_once(names: Names) -> None:
    semaphore_name, region_name = names(), names()
    semaphore = Semaphore(semaphore_name, initial=SEMAPHORE_SLOTS, create=True)
    try:
        with scratch(region_name) as region:
            barrier = procs.CTX.Barrier(PROCESSES)
            args = (semaphore_name, region_name, SEMAPHORE_ROUNDS, 0.003, barrier)
            with spawned([(children.hold_semaphore, args)] * PROCESSES) as running:
                assert results(running) == [SEMAPHORE_ROUNDS] * PROCESSES
            peak = get(region, children.PEAK_HOLDERS)
            # Never more than the count; and with four processes queueing for
            # 25 rounds each, the count was used in full at some point.
            assert peak == SEMAPHORE_SLOTS
            assert get(region, children.HOLDERS) == 0
            assert semaphore.value == SEMAPHORE_SLOTS
    finally:
        semaphore.close()


# ---- Event ------------------------------------------------------------------------------

WAITERS = 4
SETS = 2
#: How long each auto-reset waiter waits: long enough for both sets to land.
AUTO_WAIT = 3.0


def test_manual_reset_event_releases_every_waiting_process_and_later_ones_until_cleared(
    names: Names,
) -> None:
    event_name = names()
    event = Event(event_name, manual_reset=True, create=True)
    try:
        args = (event_name, TIMEOUT / 2, None)
        with spawned([(children.wait_for_event, args)] * WAITERS) as running:
            wait_until(lambda: event.stats().waiters == WAITERS, "every child to wait on the event")
            event.set()
            outcomes = results(running)
        assert [woken for woken, _ in outcomes] == [True] * WAITERS
        # Future waiters too, until clear().
        assert procs.run(children.wait_for_event, event_name, 0.0, None, timeout=TIMEOUT)[0] is True
        event.clear()
        assert procs.run(children.wait_for_event, event_name, 0.1, None, timeout=TIMEOUT)[0] is False
    finally:
        event.close()


def test_auto_reset_event_set_twice_wakes_exactly_two_of_four_waiting_processes(names: Names) -> None:
    """Acceptable outcome, and the only one: K=2 waiters wake with True, N-K=2 time out with False.

    The sets come one at a time after every waiter is asleep, so no set can
    find a release still pending and be absorbed by it.
    """
    event_name = names()
    event = Event(event_name, manual_reset=False, create=True)
    try:
        barrier = procs.CTX.Barrier(WAITERS)
        args = (event_name, AUTO_WAIT, barrier)
        with spawned([(children.wait_for_event, args)] * WAITERS) as running:
            wait_until(lambda: event.stats().waiters == WAITERS, "every child to wait on the event")
            for _ in range(SETS):
                time.sleep(0.3)
                event.set()
            outcomes = results(running)
        woken = Counter(result for result, _ in outcomes)
        assert woken == {True: SETS, False: WAITERS - SETS}, outcomes
        for result, waited in outcomes:
            if not result:
                assert waited >= AUTO_WAIT - 1e-6
        assert not event.is_set()  # both releases were taken
        assert event.stats().operations == SETS
    finally:
        event.close()


# ---- Condition ------------------------------------------------------------------------------

ITEMS_PER_PRODUCER = 100


def test_condition_hands_every_item_from_two_producer_processes_to_two_consumer_processes(
    names: Names,
) -> None:
    mutex_name, condition_name, region_name = names(), names(), names()
    mutex = Mutex(mutex_name, create=True)
    condition = Condition(condition_name, mutex, create=True)
    try:
        with scratch(region_name):
            first = list(range(ITEMS_PER_PRODUCER))
            second = list(range(1000, 1000 + ITEMS_PER_PRODUCER))
            shared = (mutex_name, condition_name, region_name)
            calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
                (children.produce, (*shared, first)),
                (children.produce, (*shared, second)),
                (children.consume, (*shared, ITEMS_PER_PRODUCER)),
                (children.consume, (*shared, ITEMS_PER_PRODUCER)),
            ]
            with spawned(calls) as running:
                produced_a, produced_b, taken_a, taken_b = results(running)
        assert produced_a == produced_b == ITEMS_PER_PRODUCER
        taken = taken_a + taken_b
        # Nothing lost, nothing delivered twice; each producer's items arrive in order.
        assert sorted(taken) == first + second
        for items in (taken_a, taken_b):
            for producer in (first, second):
                from_producer = [item for item in items if item in producer]
                assert from_producer == sorted(from_producer)
    finally:
        condition.close()
        mutex.close()


# ---- RWLock -----------------------------------------------------------------------------------

READERS = 3


def test_rwlock_lets_several_reader_processes_hold_it_at_the_same_time(names: Names) -> None:
    rwlock_name, region_name = names(), names()
    rwlock = RWLock(rwlock_name, create=True)
    try:
        with scratch(region_name):
            args = (rwlock_name, region_name, READERS, 20.0)
            with spawned([(children.read_until_everyone_is_reading, args)] * READERS) as running:
                # Every reader held the lock while all READERS were counted in.
                assert results(running) == [READERS] * READERS
    finally:
        rwlock.close()


def test_rwlock_writer_processes_exclude_readers_and_each_other(names: Names) -> None:
    rwlock_name, region_name = names(), names()
    rwlock = RWLock(rwlock_name, create=True)
    try:
        with scratch(region_name) as region:
            barrier = procs.CTX.Barrier(4)
            writer = (children.check_rwlock_exclusion, (rwlock_name, region_name, True, 40, barrier))
            reader = (children.check_rwlock_exclusion, (rwlock_name, region_name, False, 80, barrier))
            with spawned([writer, writer, reader, reader]) as running:
                assert results(running) == [0, 0, 0, 0]
            assert get(region, children.VIOLATIONS) == 0
            assert get(region, children.READERS_INSIDE) == get(region, children.WRITERS_INSIDE) == 0
    finally:
        rwlock.close()


def test_rwlock_writer_gets_in_while_three_reader_processes_keep_reading(names: Names) -> None:
    rwlock_name, region_name = names(), names()
    rwlock = RWLock(rwlock_name, create=True)
    try:
        with scratch(region_name) as region:
            calls = [
                (children.read_in_a_loop, (rwlock_name, region_name, index, 0.005))
                for index in range(READERS)
            ]
            try:
                with spawned(calls) as running:
                    wait_until(
                        lambda: all(get(region, children.FIRST_ROUNDS + i) >= 5 for i in range(READERS)),
                        "every reader to be reading in a loop",
                    )
                    acquired = rwlock.acquire_write(timeout=5.0)
                    if acquired:
                        rwlock.release_write()
                    rounds_then = [get(region, children.FIRST_ROUNDS + i) for i in range(READERS)]
                    # The readers carry on after the writer.
                    wait_until(
                        lambda: all(
                            get(region, children.FIRST_ROUNDS + i) > rounds_then[i] for i in range(READERS)
                        ),
                        "the readers to read again after the writer",
                    )
                    put(region, children.STOP, 1)
                    results(running)
            finally:
                put(region, children.STOP, 1)
        assert acquired, "a writer waited 5 s and never got in between the readers"
    finally:
        rwlock.close()


# ---- wait_any --------------------------------------------------------------------------------

SIGNALED = ["auto-reset event", "manual-reset event", "semaphore"]


@pytest.mark.parametrize("index", range(len(SIGNALED)), ids=SIGNALED)
def test_wait_any_returns_the_index_of_the_object_another_process_signaled(names: Names, index: int) -> None:
    auto_name, manual_name, semaphore_name = names(), names(), names()
    auto = Event(auto_name, manual_reset=False, create=True)
    manual = Event(manual_name, manual_reset=True, create=True)
    semaphore = Semaphore(semaphore_name, create=True)
    try:
        kind, name = [("event", auto_name), ("event", manual_name), ("semaphore", semaphore_name)][index]
        with procs.started(children.signal_later, kind, name, 0.3, timeout=TIMEOUT) as child:
            got = wait_any([auto, manual, semaphore], timeout=TIMEOUT / 2)
            child.result()
        assert got == index
        # Consumed as the kind says: the auto event reset, the count taken; the manual event stays set.
        assert not auto.is_set()
        assert manual.is_set() is (index == 1)
        assert semaphore.value == 0
    finally:
        auto.close()
        manual.close()
        semaphore.close()


def test_wait_any_acquires_a_mutex_when_another_process_releases_it(names: Names) -> None:
    event_name, mutex_name, region_name = names(), names(), names()
    event = Event(event_name, create=True)
    mutex = Mutex(mutex_name, create=True)
    try:
        with (
            scratch(region_name) as region,
            procs.started(
                children.hold_mutex_then_release, mutex_name, region_name, 0.3, timeout=TIMEOUT
            ) as child,
        ):
            wait_until(lambda: get(region, 0) == 1, "the child to hold the mutex")
            assert wait_any([event, mutex], timeout=0) is None
            put(region, 1, 1)
            got = wait_any([event, mutex], timeout=TIMEOUT / 2)
            try:
                assert got == 1
                assert mutex.held()
                assert not mutex.owner_died
            finally:
                if mutex.held():
                    mutex.release()
            child.result()
    finally:
        event.close()
        mutex.close()


# ---- in_region: two processes' views of the same offset ----------------------------------------------


def test_mutex_in_region_held_here_is_seen_held_by_another_process(name: str) -> None:
    with Region.create(name, 4096) as region:
        mutex = Mutex.in_region(region, children.PLACED_AT)
        try:
            with mutex:
                created, acquired, locked = procs.run(
                    children.use_placed_object, "mutex", name, timeout=TIMEOUT
                )
            assert (created, acquired, locked) == (False, False, True)
            assert not mutex.locked()
        finally:
            mutex.close()


def test_semaphore_in_region_keeps_its_creators_count_for_another_process(name: str) -> None:
    with Region.create(name, 4096) as region:
        semaphore = Semaphore.in_region(region, children.PLACED_AT, initial=3)
        try:
            outcome = procs.run(children.use_placed_object, "semaphore", name, timeout=TIMEOUT)
            assert outcome == (False, 3, True)
            assert semaphore.value == 2
        finally:
            semaphore.close()


def test_event_in_region_set_by_another_process_is_seen_here(name: str) -> None:
    with Region.create(name, 4096) as region:
        event = Event.in_region(region, children.PLACED_AT, manual_reset=False)
        try:
            outcome = procs.run(children.use_placed_object, "event", name, timeout=TIMEOUT)
            assert outcome == (False, False)
            assert event.wait(timeout=0) is True
            assert event.wait(timeout=0) is False  # auto reset, as the creator made it
        finally:
            event.close()


def test_condition_in_region_notified_by_another_process_wakes_the_waiter_here(name: str) -> None:
    with Region.create(name, 4096) as region:
        mutex = Mutex.in_region(region, children.CONDITION_MUTEX_AT)
        condition = Condition.in_region(region, children.PLACED_AT, mutex)
        try:
            with (
                mutex,
                procs.started(children.use_placed_object, "condition", name, timeout=TIMEOUT) as child,
            ):
                deadline = time.monotonic() + TIMEOUT / 2
                while region.buf[children.FLAG_AT] == 0:
                    assert condition.wait(timeout=deadline - time.monotonic()), "no notify arrived"
                assert child.result() == (False,)
        finally:
            condition.close()
            mutex.close()


def test_rwlock_in_region_read_here_admits_readers_and_stops_writers_of_another_process(name: str) -> None:
    with Region.create(name, 4096) as region:
        rwlock = RWLock.in_region(region, children.PLACED_AT)
        try:
            with rwlock.read():
                outcome = procs.run(children.use_placed_object, "rwlock", name, timeout=TIMEOUT)
            assert outcome == (False, True, False)
            assert rwlock.acquire_write(timeout=0)
            rwlock.release_write()
        finally:
            rwlock.close()
