"""Event in one process (threads allowed): SPEC §4 and issue 3.

Manual reset releases every current and future waiter until ``clear()``.
Auto reset releases exactly one waiter per ``set()``, and a ``set()`` with
nobody waiting leaves the event set until one waiter takes it (Win32 SetEvent:
several such sets still release only one).  Also: timeouts, create/open by
name (the creator's mode wins), kinds, placement in a region, stats, close and
the spin policy.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

import memipc
from memipc import Event, Mutex, Region, RWLock, Semaphore

Names = Callable[[], str]

DID_NOT_HANG = 5.0
EPSILON = 1e-6
THREADS = 4


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=THREADS) as threads:
        yield threads


@pytest.fixture(params=[True, False], ids=["manual", "auto"])
def manual_reset(request: pytest.FixtureRequest) -> bool:
    value: bool = request.param
    return value


def timed_wait(event: Event, timeout: float) -> tuple[bool, float]:
    start = time.monotonic()
    return event.wait(timeout=timeout), time.monotonic() - start


def until_waiting(event: Event, count: int) -> None:
    """Wait until ``count`` threads sleep on ``event`` (as its stats say)."""
    deadline = time.monotonic() + DID_NOT_HANG
    while event.stats().waiters != count:
        assert time.monotonic() < deadline, f"{count} waiters never showed up"
        time.sleep(0.001)


# ---- manual reset -------------------------------------------------------------------------


def test_a_manual_event_stays_set_for_every_wait_until_cleared(name: str) -> None:
    event = Event(name)
    try:
        assert event.manual_reset is True
        assert not event.is_set() and event.wait(timeout=0) is False
        event.set()
        assert event.is_set()
        assert [event.wait(timeout=0) for _ in range(3)] == [True, True, True]
        assert event.wait() is True
        event.set()  # setting a set event changes nothing
        assert event.is_set()
        event.clear()
        assert not event.is_set() and event.wait(timeout=0) is False
        event.clear()
        assert not event.is_set()
    finally:
        event.close()


def test_a_manual_set_releases_every_waiting_thread_and_every_later_one(
    name: str, pool: ThreadPoolExecutor
) -> None:
    event = Event(name, manual_reset=True, spin=0)
    try:
        waiting = [pool.submit(event.wait, 30.0) for _ in range(THREADS)]
        until_waiting(event, THREADS)
        event.set()
        assert [future.result(DID_NOT_HANG) for future in waiting] == [True] * THREADS
        later = [pool.submit(event.wait, 30.0) for _ in range(THREADS)]
        assert [future.result(DID_NOT_HANG) for future in later] == [True] * THREADS
        event.clear()
        assert pool.submit(event.wait, 0.05).result(DID_NOT_HANG) is False
    finally:
        event.close()


# ---- auto reset ------------------------------------------------------------------------------


def test_an_auto_set_with_nobody_waiting_stays_set_until_one_wait_takes_it(name: str) -> None:
    event = Event(name, manual_reset=False)
    try:
        assert event.manual_reset is False
        assert not event.is_set()
        event.set()
        assert event.is_set()
        assert event.is_set()  # looking does not consume
        assert event.wait(timeout=0) is True
        assert not event.is_set()
        assert event.wait(timeout=0) is False
    finally:
        event.close()


def test_several_auto_sets_with_nobody_waiting_release_only_one_later_wait(name: str) -> None:
    event = Event(name, manual_reset=False)
    try:
        for _ in range(3):
            event.set()
        assert [event.wait(timeout=0) for _ in range(3)] == [True, False, False]
    finally:
        event.close()


def test_clear_takes_back_a_pending_auto_release(name: str) -> None:
    event = Event(name, manual_reset=False)
    try:
        event.set()
        event.clear()
        assert not event.is_set() and event.wait(timeout=0) is False
    finally:
        event.close()


def test_each_auto_set_releases_exactly_one_of_several_waiting_threads(
    name: str, pool: ThreadPoolExecutor
) -> None:
    """Acceptable outcomes: after each set, exactly one more waiter has returned True; at the end
    the remaining waiters time out with False.  Sets come one at a time, each after the previous
    release was taken."""
    event = Event(name, manual_reset=False, spin=0)
    try:
        waiting: list[Future[tuple[bool, float]]] = [pool.submit(timed_wait, event, 3.0) for _ in range(3)]
        until_waiting(event, 3)
        for released in (1, 2):
            event.set()
            deadline = time.monotonic() + DID_NOT_HANG
            while sum(future.done() for future in waiting) < released:
                assert time.monotonic() < deadline, "a set released nobody"
                time.sleep(0.001)
            time.sleep(0.1)  # room for a wrong second wake-up to show
            assert sum(future.done() for future in waiting) == released
            assert not event.is_set()
        outcomes = Counter(future.result(DID_NOT_HANG + 3.0)[0] for future in waiting)
        assert outcomes == {True: 2, False: 1}
    finally:
        event.close()


# ---- both modes -----------------------------------------------------------------------------------


def test_set_wakes_a_thread_already_blocked_in_wait(
    name: str, pool: ThreadPoolExecutor, manual_reset: bool
) -> None:
    event = Event(name, manual_reset=manual_reset)
    try:
        waiting = pool.submit(event.wait, 30.0)
        time.sleep(0.05)
        assert not waiting.done()
        event.set()
        assert waiting.result(DID_NOT_HANG) is True
        assert event.is_set() is manual_reset  # an auto release was taken by the waiter
    finally:
        event.close()


def test_initial_true_starts_set(name: str, manual_reset: bool) -> None:
    event = Event(name, manual_reset=manual_reset, initial=True)
    try:
        assert event.is_set()
        assert event.wait(timeout=0) is True
        assert event.is_set() is manual_reset
    finally:
        event.close()


@pytest.mark.parametrize("timeout", [0.05, 0.2])
def test_wait_on_an_unset_event_returns_false_after_at_least_the_timeout(
    name: str, manual_reset: bool, timeout: float
) -> None:
    event = Event(name, manual_reset=manual_reset)
    try:
        woken, waited = timed_wait(event, timeout)
        assert woken is False
        assert waited >= timeout - EPSILON
    finally:
        event.close()


@pytest.mark.parametrize("timeout", [0, -3.0])
def test_wait_with_timeout_zero_never_blocks(
    name: str, pool: ThreadPoolExecutor, manual_reset: bool, timeout: float
) -> None:
    event = Event(name, manual_reset=manual_reset)
    try:
        attempt = pool.submit(timed_wait, event, timeout)
        try:
            woken, waited = attempt.result(DID_NOT_HANG)
        finally:
            if not attempt.done():
                event.set()  # let a wrongly blocked wait go, so the test fails instead of hanging
        assert woken is False and waited < DID_NOT_HANG
        event.set()
        assert event.wait(timeout=timeout) is True
    finally:
        event.close()


def test_the_creators_mode_and_state_win_over_an_openers_arguments(name: str, manual_reset: bool) -> None:
    creator = Event(name, manual_reset=manual_reset, initial=False)
    opener = Event(name, manual_reset=not manual_reset, initial=True)
    try:
        assert (creator.created, opener.created) == (True, False)
        assert opener.manual_reset is manual_reset
        assert not opener.is_set()
        opener.set()
        assert creator.wait(timeout=0) is True
    finally:
        opener.close()
        creator.close()


# ---- names: create / open / kinds ---------------------------------------------------------------


def test_create_true_creates_and_refuses_a_taken_name(name: str) -> None:
    event = Event(name, create=True)
    try:
        assert event.created and event.name == name
        with pytest.raises(memipc.ExistsError):
            Event(name, create=True)
    finally:
        event.close()


def test_create_false_opens_and_refuses_a_missing_name(name: str) -> None:
    with pytest.raises(memipc.NotFoundError):
        Event(name, create=False)
    creator = Event(name, create=True)
    opener = Event(name, create=False)
    try:
        assert not opener.created
        creator.set()
        assert opener.is_set()
    finally:
        opener.close()
        creator.close()


def test_create_none_opens_or_creates(name: str) -> None:
    first, second = Event(name), Event(name)
    try:
        assert (first.created, second.created) == (True, False)
    finally:
        second.close()
        first.close()


def test_the_last_close_removes_the_name_and_unlink_removes_it_early(names: Names) -> None:
    closed_name, unlinked_name = names(), names()
    Event(closed_name).close()
    with pytest.raises(memipc.NotFoundError):
        Event(closed_name, create=False)
    event = Event(unlinked_name)
    try:
        event.unlink()
        with pytest.raises(memipc.NotFoundError):
            Event(unlinked_name, create=False)
        event.set()  # the handle still works
        assert event.is_set()
    finally:
        event.close()


OTHER_KINDS: dict[str, Callable[[str], object]] = {
    "mutex": lambda name: Mutex(name, create=False),
    "semaphore": Semaphore,
    "rwlock": RWLock,
    "region": Region.open,
}


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_opening_an_event_name_as_another_kind_raises_kind_mismatch_naming_both(name: str, kind: str) -> None:
    event = Event(name)
    try:
        with pytest.raises(memipc.KindMismatchError, match="event") as caught:
            OTHER_KINDS[kind](name)
        assert kind in str(caught.value)
    finally:
        event.close()


@pytest.mark.parametrize("create", [None, False])
def test_opening_a_mutex_name_as_an_event_raises_kind_mismatch_naming_both(name: str, create: bool) -> None:
    mutex = Mutex(name)
    try:
        with pytest.raises(memipc.KindMismatchError, match="mutex") as caught:
            Event(name, create=create)
        assert "event" in str(caught.value)
        with pytest.raises(memipc.ExistsError):
            Event(name, create=True)
    finally:
        mutex.close()


# ---- in_region -------------------------------------------------------------------------------------

REGION_SIZE = 512


@pytest.fixture
def region(name: str) -> Iterator[Region]:
    with Region.create(name, REGION_SIZE) as made:
        yield made


def test_two_mappings_of_one_region_share_the_event_at_one_offset(
    region: Region, name: str, manual_reset: bool
) -> None:
    here = Event.in_region(region, 448, manual_reset=manual_reset)
    with Region.open(name) as again:
        there = Event.in_region(again, 448, manual_reset=not manual_reset, initial=True)
        try:
            assert here.created and not there.created
            assert there.manual_reset is manual_reset and not there.is_set()
            here.set()
            assert there.wait(timeout=0) is True
            assert here.is_set() is manual_reset
        finally:
            there.close()
            here.close()


@pytest.mark.parametrize("offset", [7, 36, -1, REGION_SIZE - 48, REGION_SIZE - 56, REGION_SIZE + 64])
def test_in_region_rejects_unaligned_negative_and_too_late_offsets(region: Region, offset: int) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        Event.in_region(region, offset)


def test_in_region_on_an_offset_holding_another_kind_raises_kind_mismatch(region: Region) -> None:
    semaphore = Semaphore.in_region(region, 64)
    try:
        with pytest.raises(memipc.KindMismatchError, match="event") as caught:
            Event.in_region(region, 64)
        assert "semaphore" in str(caught.value)
    finally:
        semaphore.close()


def test_in_region_on_garbage_bytes_raises_corrupt_region_error(region: Region) -> None:
    region.buf[128:192] = (b"not an event! " * 5)[:64]
    with pytest.raises(memipc.CorruptRegionError):
        Event.in_region(region, 128)


def test_an_event_whose_tag_is_overwritten_raises_corrupt_region_error_on_use(region: Region) -> None:
    event = Event.in_region(region, 0)
    try:
        region.buf[0:4] = b"\x02\x00\x59\x53"  # a mutex's tag
        for use in (event.set, event.clear, event.is_set, lambda: event.wait(0)):
            with pytest.raises(memipc.CorruptRegionError):
                use()
    finally:
        event.close()


# ---- stats and close -----------------------------------------------------------------------------------


def test_stats_count_sets_and_sleeping_waiters(name: str, pool: ThreadPoolExecutor) -> None:
    event = Event(name, manual_reset=False, spin=0)
    try:
        before = event.stats()
        assert (before.kind, before.name, before.operations, before.waiters) == ("event", name, 0, 0)
        assert before.state == {"is_set": False, "manual_reset": False}
        waiting = pool.submit(event.wait, 30.0)
        until_waiting(event, 1)
        event.set()
        assert waiting.result(DID_NOT_HANG) is True
        event.set()
        after = event.stats()
        assert after.operations == 2
        assert after.contentions >= 1
        assert after.waiters == 0
        assert after.state == {"is_set": True, "manual_reset": False}
    finally:
        event.close()


OPERATIONS: dict[str, Callable[[Event], object]] = {
    "set": lambda e: e.set(),
    "clear": lambda e: e.clear(),
    "wait": lambda e: e.wait(timeout=0),
    "is_set": lambda e: e.is_set(),
    "manual_reset": lambda e: e.manual_reset,
    "stats": lambda e: e.stats(),
}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_close_is_idempotent_and_every_operation_after_it_raises_closed_error(
    name: str, operation: str
) -> None:
    event = Event(name)
    event.close()
    event.close()
    with pytest.raises(memipc.ClosedError):
        OPERATIONS[operation](event)


# ---- spin policy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("spin", [None, 0, 1e-5])
def test_every_spin_policy_passes_auto_sets_between_threads(
    names: Names, pool: ThreadPoolExecutor, spin: float | None
) -> None:
    ping = Event(names(), manual_reset=False, spin=spin)
    pong = Event(names(), manual_reset=False, spin=spin)
    try:
        assert ping.spin == spin

        def echo() -> int:
            for _ in range(200):
                assert ping.wait(timeout=DID_NOT_HANG)
                pong.set()
            return 200

        echoing = pool.submit(echo)
        for _ in range(200):
            ping.set()
            assert pong.wait(timeout=DID_NOT_HANG)
        assert echoing.result(DID_NOT_HANG) == 200
        woken, waited = timed_wait(ping, 0.05)
        assert not woken and waited >= 0.05 - EPSILON
    finally:
        pong.close()
        ping.close()


def test_a_spin_budget_longer_than_the_timeout_does_not_stretch_the_timeout(
    name: str, pool: ThreadPoolExecutor
) -> None:
    """wait(timeout=0.05) gives up at 0.05 s, so a set 0.5 s later cannot be what it returns with."""
    event = Event(name, manual_reset=False, spin=1.0)
    try:
        attempt = pool.submit(event.wait, 0.05)
        time.sleep(0.5)
        event.set()
        assert attempt.result(DID_NOT_HANG) is False, "wait(timeout=0.05) was still spinning at 0.5 s"
    finally:
        event.close()


@pytest.mark.parametrize("spin", [-1e-3, 2, math.inf, math.nan])
def test_spin_outside_zero_to_one_second_raises_value_error(name: str, spin: float) -> None:
    with pytest.raises(ValueError, match="spin"):
        Event(name, spin=spin)
    event = Event(name)
    try:
        with pytest.raises(ValueError, match="spin"):
            event.spin = spin
        assert event.spin is None
    finally:
        event.close()
