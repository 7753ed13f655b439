"""Condition in one process (threads allowed): SPEC §4 and issue 3.

Works as threading.Condition over a memipc Mutex: wait/wait_for/notify/
notify_all need the mutex held by the calling thread (RuntimeError
otherwise); wait releases the mutex while it sleeps and holds it again on
return, whatever happened; notify(n) wakes up to n sleepers.  Also:
timeouts, create/open by name, kinds, placement in a region, stats and close.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

import memipc
from memipc import Condition, Event, Mutex, Region, Semaphore

Names = Callable[[], str]

DID_NOT_HANG = 5.0
EPSILON = 1e-6


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as threads:
        yield threads


@pytest.fixture
def mutex(names: Names) -> Iterator[Mutex]:
    made = Mutex(names())
    yield made
    made.close()


@pytest.fixture
def condition(names: Names, mutex: Mutex) -> Iterator[Condition]:
    made = Condition(names(), mutex)
    yield made
    made.close()


def until_sleeping(condition: Condition, count: int) -> None:
    """Wait until ``count`` threads sleep in ``condition.wait`` (as its stats say)."""
    deadline = time.monotonic() + DID_NOT_HANG
    while condition.stats().waiters != count:
        assert time.monotonic() < deadline, f"{count} sleepers never showed up"
        time.sleep(0.001)


def wait_once(condition: Condition, timeout: float) -> tuple[bool, bool]:
    """Hold the mutex, wait once; returns (wait's result, whether the mutex was held on return)."""
    with condition.mutex:
        woken = condition.wait(timeout=timeout)
        return woken, condition.mutex.held()


# ---- the mutex must be held ------------------------------------------------------------

USES: dict[str, Callable[[Condition], object]] = {
    "wait": lambda c: c.wait(timeout=0),
    "wait_for": lambda c: c.wait_for(lambda: False, timeout=0),
    "notify": lambda c: c.notify(),
    "notify_all": lambda c: c.notify_all(),
}


@pytest.mark.parametrize("use", USES)
def test_using_a_condition_without_holding_its_mutex_raises_runtime_error(
    condition: Condition, mutex: Mutex, pool: ThreadPoolExecutor, use: str
) -> None:
    with pytest.raises(RuntimeError, match="holding its mutex"):
        USES[use](condition)
    with mutex:  # held by this thread is not held by that one
        with pytest.raises(RuntimeError, match="holding its mutex"):
            pool.submit(USES[use], condition).result(DID_NOT_HANG)
        assert mutex.held()


def test_a_condition_needs_a_memipc_mutex(names: Names) -> None:
    with pytest.raises(TypeError, match="Mutex"):
        Condition(names(), object())  # type: ignore[arg-type]
    with Region.create(names(), 128) as region, pytest.raises(TypeError, match="Mutex"):
        Condition.in_region(region, 0, object())  # type: ignore[arg-type]


# ---- wait and notify ---------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0.05, 0.2])
def test_wait_without_notify_returns_false_after_at_least_the_timeout_holding_the_mutex(
    condition: Condition, mutex: Mutex, timeout: float
) -> None:
    with mutex:
        start = time.monotonic()
        woken = condition.wait(timeout=timeout)
        waited = time.monotonic() - start
        assert woken is False
        assert waited >= timeout - EPSILON
        assert mutex.held()
    assert not mutex.locked()


def test_wait_with_timeout_zero_never_blocks(
    condition: Condition, mutex: Mutex, pool: ThreadPoolExecutor
) -> None:
    start = time.monotonic()
    attempt = pool.submit(wait_once, condition, 0)
    try:
        assert attempt.result(DID_NOT_HANG) == (False, True)
    finally:
        if not attempt.done():
            with mutex:  # let a wrongly blocked wait go, so the test fails instead of hanging
                condition.notify_all()
    assert time.monotonic() - start < DID_NOT_HANG


def test_wait_lets_go_of_the_mutex_while_it_sleeps(
    condition: Condition, mutex: Mutex, pool: ThreadPoolExecutor
) -> None:
    sleeping = pool.submit(wait_once, condition, 30.0)
    until_sleeping(condition, 1)
    assert mutex.acquire(timeout=DID_NOT_HANG), "the waiter kept the mutex while sleeping"
    try:
        condition.notify()
    finally:
        mutex.release()
    assert sleeping.result(DID_NOT_HANG) == (True, True)
    assert not mutex.locked()


def test_notify_all_wakes_every_sleeping_thread_each_holding_the_mutex_on_return(
    condition: Condition, mutex: Mutex, pool: ThreadPoolExecutor
) -> None:
    sleeping = [pool.submit(wait_once, condition, 30.0) for _ in range(3)]
    until_sleeping(condition, 3)
    with mutex:
        condition.notify_all()
    assert [future.result(DID_NOT_HANG) for future in sleeping] == [(True, True)] * 3
    assert condition.stats().waiters == 0


def test_notify_one_wakes_one_of_three_sleeping_threads(
    condition: Condition, mutex: Mutex, pool: ThreadPoolExecutor
) -> None:
    """Acceptable outcome, the only one: one waiter returns True, two sleep on and time out with False.

    Every waiter is asleep before the notify (none is between releasing the
    mutex and sleeping, where a racing wake-up would be allowed).
    """
    sleeping = [pool.submit(wait_once, condition, 2.0) for _ in range(3)]
    until_sleeping(condition, 3)
    time.sleep(0.1)
    with mutex:
        condition.notify(1)
    outcomes = Counter(future.result(DID_NOT_HANG + 2.0)[0] for future in sleeping)
    assert outcomes == {True: 1, False: 2}


def test_notify_with_nobody_waiting_is_not_remembered(condition: Condition, mutex: Mutex) -> None:
    with mutex:
        condition.notify()
        condition.notify_all()
        condition.notify(0)
        assert condition.wait(timeout=0.05) is False


def test_wait_for_returns_at_once_when_the_predicate_already_holds(
    condition: Condition, mutex: Mutex
) -> None:
    with mutex:
        calls = []

        def predicate() -> str:
            calls.append(1)
            return "ready"

        assert condition.wait_for(predicate, timeout=30.0) == "ready"
        assert len(calls) == 1


def test_wait_for_returns_the_predicates_last_falsy_value_after_the_timeout(
    condition: Condition, mutex: Mutex
) -> None:
    with mutex:
        start = time.monotonic()
        assert condition.wait_for(lambda: 0, timeout=0.1) == 0
        assert time.monotonic() - start >= 0.1 - EPSILON
        assert mutex.held()


def test_wait_for_wakes_when_another_thread_makes_the_predicate_true_and_notifies(
    condition: Condition, mutex: Mutex, pool: ThreadPoolExecutor
) -> None:
    state = {"items": 0}

    def consumer() -> int:
        with mutex:
            assert condition.wait_for(lambda: state["items"] >= 3, timeout=30.0)
            return state["items"]

    waiting = pool.submit(consumer)
    for _ in range(3):
        with mutex:
            state["items"] += 1
            condition.notify()
        time.sleep(0.01)
    assert waiting.result(DID_NOT_HANG) == 3


# ---- names: create / open / kinds -------------------------------------------------------


def test_create_true_creates_and_refuses_a_taken_name(names: Names, mutex: Mutex) -> None:
    name = names()
    condition = Condition(name, mutex, create=True)
    try:
        assert condition.created and condition.name == name and condition.mutex is mutex
        with pytest.raises(memipc.ExistsError):
            Condition(name, mutex, create=True)
    finally:
        condition.close()


def test_create_false_opens_and_refuses_a_missing_name(names: Names, mutex: Mutex) -> None:
    name = names()
    with pytest.raises(memipc.NotFoundError):
        Condition(name, mutex, create=False)
    creator = Condition(name, mutex, create=True)
    opener = Condition(name, mutex, create=False)
    try:
        assert not opener.created
    finally:
        opener.close()
        creator.close()


def test_create_none_opens_or_creates_and_both_handles_are_one_condition(
    names: Names, mutex: Mutex, pool: ThreadPoolExecutor
) -> None:
    name = names()
    first, second = Condition(name, mutex), Condition(name, mutex)
    try:
        assert (first.created, second.created) == (True, False)
        sleeping = pool.submit(wait_once, first, 30.0)
        until_sleeping(second, 1)
        with mutex:
            second.notify()
        assert sleeping.result(DID_NOT_HANG) == (True, True)
    finally:
        second.close()
        first.close()


OTHER_KINDS: dict[str, Callable[[str], object]] = {
    "mutex": Mutex,
    "event": Event,
    "semaphore": Semaphore,
    "region": Region.open,
}


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_opening_a_condition_name_as_another_kind_raises_kind_mismatch_naming_both(
    condition: Condition, kind: str
) -> None:
    assert condition.name is not None
    with pytest.raises(memipc.KindMismatchError, match="condition") as caught:
        OTHER_KINDS[kind](condition.name)
    assert kind in str(caught.value)


def test_opening_a_mutex_name_as_a_condition_raises_kind_mismatch_naming_both(mutex: Mutex) -> None:
    assert mutex.name is not None
    with pytest.raises(memipc.KindMismatchError, match="condition") as caught:
        Condition(mutex.name, mutex)
    assert "mutex" in str(caught.value)


# ---- in_region --------------------------------------------------------------------------------

REGION_SIZE = 256


@pytest.fixture
def region(name: str) -> Iterator[Region]:
    with Region.create(name, REGION_SIZE) as made:
        yield made


def test_a_condition_and_its_mutex_in_two_mappings_of_one_region_work_together(
    region: Region, name: str, pool: ThreadPoolExecutor
) -> None:
    mutex_here = Mutex.in_region(region, 0)
    here = Condition.in_region(region, 64, mutex_here)
    with Region.open(name) as again:
        mutex_there = Mutex.in_region(again, 0)
        there = Condition.in_region(again, 64, mutex_there)
        try:
            assert here.created and not there.created and here.name is None
            sleeping = pool.submit(wait_once, here, 30.0)
            until_sleeping(there, 1)
            with mutex_there:
                there.notify()
            assert sleeping.result(DID_NOT_HANG) == (True, True)
        finally:
            there.close()
            mutex_there.close()
            here.close()
            mutex_here.close()


@pytest.mark.parametrize("offset", [1, 60, -8, REGION_SIZE - 40, REGION_SIZE - 56, REGION_SIZE])
def test_in_region_rejects_unaligned_negative_and_too_late_offsets(
    region: Region, mutex: Mutex, offset: int
) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        Condition.in_region(region, offset, mutex)


def test_in_region_on_an_offset_holding_another_kind_raises_kind_mismatch(
    region: Region, mutex: Mutex
) -> None:
    placed = Mutex.in_region(region, 64)
    try:
        with pytest.raises(memipc.KindMismatchError, match="condition") as caught:
            Condition.in_region(region, 64, mutex)
        assert "mutex" in str(caught.value)
    finally:
        placed.close()


def test_in_region_on_garbage_bytes_raises_corrupt_region_error(region: Region, mutex: Mutex) -> None:
    region.buf[64:128] = b"\x13\x37" * 32
    with pytest.raises(memipc.CorruptRegionError):
        Condition.in_region(region, 64, mutex)


# ---- stats and close -------------------------------------------------------------------------


def test_stats_count_notifies_and_sleeping_waiters(
    condition: Condition, mutex: Mutex, pool: ThreadPoolExecutor, names: Names
) -> None:
    before = condition.stats()
    assert (before.kind, before.operations, before.waiters) == ("condition", 0, 0)
    sleeping = [pool.submit(wait_once, condition, 30.0) for _ in range(2)]
    until_sleeping(condition, 2)
    with mutex:
        condition.notify_all()
    assert [future.result(DID_NOT_HANG) for future in sleeping] == [(True, True)] * 2
    with mutex:
        condition.notify()
    after = condition.stats()
    assert after.operations == 2
    assert after.waiters == 0


OPERATIONS: dict[str, Callable[[Condition], object]] = {
    "wait": lambda c: c.wait(timeout=0),
    "notify": lambda c: c.notify(),
    "notify_all": lambda c: c.notify_all(),
    "stats": lambda c: c.stats(),
}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_close_is_idempotent_and_every_operation_after_it_raises_closed_error(
    names: Names, mutex: Mutex, operation: str
) -> None:
    condition = Condition(names(), mutex)
    condition.close()
    condition.close()
    with mutex, pytest.raises(memipc.ClosedError):
        OPERATIONS[operation](condition)
    assert not mutex.locked()  # a failed wait did not leave the mutex released or held twice
