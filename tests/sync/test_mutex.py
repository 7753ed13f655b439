"""Mutex in one process (threads allowed): SPEC §4 and issue 3.

Ownership is per thread: re-acquiring from the holding thread and releasing
from any other thread raise RuntimeError.  Also: timeouts, create/open by
name, kinds, placement in a region (with every way an offset can be wrong),
stats, close, and the spin policy.  Cross-process behaviour is in
test_multiprocess.py.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

import memipc
from memipc import Condition, Event, Mutex, Region, RWLock, Semaphore

Names = Callable[[], str]

#: Generous "did not hang" bound for calls that must not block.
DID_NOT_HANG = 5.0
#: Rounding slack when checking "took at least the timeout".
EPSILON = 1e-6


@pytest.fixture
def mutex(name: str) -> Iterator[Mutex]:
    m = Mutex(name)
    yield m
    m.close()


@pytest.fixture
def other_thread() -> Iterator[ThreadPoolExecutor]:
    """A second thread to act as another owner."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


# ---- ownership ----------------------------------------------------------------


def test_a_new_mutex_is_unlocked_and_acquire_release_round_trips(mutex: Mutex) -> None:
    assert not mutex.locked() and not mutex.held()
    assert mutex.acquire() is True
    assert mutex.locked() and mutex.held()
    assert mutex.owner_died is False
    mutex.release()
    assert not mutex.locked() and not mutex.held()
    assert mutex.acquire(timeout=0) is True
    mutex.release()


def test_with_statement_holds_the_mutex_inside_the_block_only(mutex: Mutex) -> None:
    with mutex as entered:
        assert entered is mutex
        assert mutex.held()
    assert not mutex.locked()
    with pytest.raises(KeyError), mutex:
        raise KeyError("inside")
    assert not mutex.locked()


def test_reacquiring_from_the_holding_thread_raises_runtime_error_instead_of_deadlocking(
    mutex: Mutex, name: str
) -> None:
    with mutex:
        with pytest.raises(RuntimeError, match="already holds"):
            mutex.acquire()
        with pytest.raises(RuntimeError, match="already holds"):
            mutex.acquire(timeout=0)
        second_handle = Mutex(name, create=False)
        try:
            with pytest.raises(RuntimeError, match="already holds"):
                second_handle.acquire(timeout=1.0)
        finally:
            second_handle.close()
        assert mutex.held()
    assert not mutex.locked()


def test_release_by_a_thread_that_does_not_hold_it_raises_runtime_error(
    mutex: Mutex, other_thread: ThreadPoolExecutor
) -> None:
    with pytest.raises(RuntimeError, match="does not hold"):
        mutex.release()  # nobody holds it
    with mutex:
        with pytest.raises(RuntimeError, match="does not hold"):
            other_thread.submit(mutex.release).result(DID_NOT_HANG)
        assert mutex.held()  # the failed release changed nothing
    with pytest.raises(RuntimeError, match="does not hold"):
        mutex.release()  # released once already


def test_another_thread_cannot_take_a_held_mutex_and_gets_it_once_released(
    mutex: Mutex, other_thread: ThreadPoolExecutor
) -> None:
    mutex.acquire()
    assert other_thread.submit(mutex.acquire, 0).result(DID_NOT_HANG) is False
    assert other_thread.submit(mutex.held).result(DID_NOT_HANG) is False
    assert other_thread.submit(mutex.locked).result(DID_NOT_HANG) is True
    waiting = other_thread.submit(mutex.acquire, 30.0)
    time.sleep(0.05)
    assert not waiting.done()
    mutex.release()
    assert waiting.result(DID_NOT_HANG) is True
    assert mutex.locked() and not mutex.held()
    assert mutex.acquire(timeout=0) is False
    other_thread.submit(mutex.release).result(DID_NOT_HANG)
    assert not mutex.locked()


# ---- timeouts -------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0.05, 0.2])
def test_acquire_of_a_held_mutex_returns_false_after_at_least_the_timeout(
    mutex: Mutex, other_thread: ThreadPoolExecutor, timeout: float
) -> None:
    with mutex:

        def timed() -> tuple[bool, float]:
            start = time.monotonic()
            return mutex.acquire(timeout=timeout), time.monotonic() - start

        acquired, waited = other_thread.submit(timed).result(DID_NOT_HANG + timeout)
    assert acquired is False
    assert waited >= timeout - EPSILON


@pytest.mark.parametrize("timeout", [0, 0.0, -1.0])
def test_acquire_with_timeout_zero_never_blocks(
    mutex: Mutex, other_thread: ThreadPoolExecutor, timeout: float
) -> None:
    with mutex:
        start = time.monotonic()
        assert other_thread.submit(mutex.acquire, timeout).result(DID_NOT_HANG) is False
        assert time.monotonic() - start < DID_NOT_HANG
    assert mutex.acquire(timeout=timeout) is True  # free: no waiting needed
    mutex.release()


def test_a_nan_timeout_raises_value_error_when_the_mutex_is_contended(
    mutex: Mutex, other_thread: ThreadPoolExecutor
) -> None:
    with mutex, pytest.raises(ValueError, match="NaN"):
        other_thread.submit(mutex.acquire, math.nan).result(DID_NOT_HANG)


# ---- names: create / open / kinds --------------------------------------------------


def test_create_true_creates_and_refuses_a_taken_name(name: str) -> None:
    first = Mutex(name, create=True)
    try:
        assert first.created is True
        assert first.name == name
        with pytest.raises(memipc.ExistsError):
            Mutex(name, create=True)
    finally:
        first.close()


def test_create_false_opens_and_refuses_a_missing_name(name: str) -> None:
    with pytest.raises(memipc.NotFoundError):
        Mutex(name, create=False)
    first = Mutex(name, create=True)
    second = Mutex(name, create=False)
    try:
        assert second.created is False
        with first:  # one lock behind both handles
            assert second.locked() and second.held()
    finally:
        second.close()
        first.close()


def test_create_none_opens_or_creates(name: str) -> None:
    first = Mutex(name)
    second = Mutex(name)
    try:
        assert (first.created, second.created) == (True, False)
        with second:
            assert first.locked()
    finally:
        second.close()
        first.close()


def test_a_mutex_goes_away_with_its_last_handle(name: str) -> None:
    Mutex(name).close()
    with pytest.raises(memipc.NotFoundError):
        Mutex(name, create=False)


def test_unlink_removes_the_name_while_open_handles_keep_working(name: str) -> None:
    first = Mutex(name)
    second = Mutex(name, create=False)
    try:
        first.unlink()
        with pytest.raises(memipc.NotFoundError):
            Mutex(name, create=False)
        with first:
            assert second.locked()
    finally:
        second.close()
        first.close()


OTHER_KINDS: dict[str, Callable[[str, Mutex], object]] = {
    "event": lambda name, _: Event(name),
    "semaphore": lambda name, _: Semaphore(name, create=False),
    "condition": Condition,
    "rwlock": lambda name, _: RWLock(name),
    "region": lambda name, _: Region.open(name),
}


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_opening_a_mutex_name_as_another_kind_raises_kind_mismatch_naming_both(
    names: Names, kind: str
) -> None:
    mutex_name = names()
    holder, guard = Mutex(mutex_name), Mutex(names())
    try:
        with pytest.raises(memipc.KindMismatchError, match="mutex") as caught:
            OTHER_KINDS[kind](mutex_name, guard)
        assert kind in str(caught.value)
        assert isinstance(caught.value, TypeError)
        with holder:  # the mutex is unharmed
            assert holder.held()
    finally:
        guard.close()
        holder.close()


@pytest.mark.parametrize("create", [None, False])
def test_opening_a_region_name_as_a_mutex_raises_kind_mismatch_naming_both(name: str, create: bool) -> None:
    with Region.create(name, 4096) as region:
        with pytest.raises(memipc.KindMismatchError, match="mutex") as caught:
            Mutex(name, create=create)
        assert "region" in str(caught.value)
        assert region.buf[:8] == bytes(8)  # untouched


# ---- in_region ---------------------------------------------------------------------

REGION_SIZE = 4096


@pytest.fixture
def region(name: str) -> Iterator[Region]:
    with Region.create(name, REGION_SIZE) as made:
        yield made


def test_mutexes_in_region_at_different_offsets_are_independent(region: Region) -> None:
    first = Mutex.in_region(region, 0)
    last = Mutex.in_region(region, REGION_SIZE - 64)
    try:
        assert first.created and last.created
        assert first.name is None
        with first:
            assert not last.locked()
            assert last.acquire(timeout=0)
            last.release()
    finally:
        last.close()
        first.close()


def test_two_mappings_of_one_region_share_the_mutex_at_one_offset(region: Region, name: str) -> None:
    here = Mutex.in_region(region, 128)
    with Region.open(name) as again:
        there = Mutex.in_region(again, 128)
        try:
            assert here.created and not there.created
            with here:
                assert there.locked()
                with pytest.raises(RuntimeError, match="already holds"):
                    there.acquire(timeout=0)
            assert not there.locked()
        finally:
            there.close()
            here.close()


@pytest.mark.parametrize("offset", [1, 4, 12, -8, REGION_SIZE - 63, REGION_SIZE - 56, REGION_SIZE, 2**40])
def test_in_region_rejects_unaligned_negative_and_too_late_offsets(region: Region, offset: int) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        Mutex.in_region(region, offset)


@pytest.mark.parametrize("other", ["event", "semaphore", "rwlock"])
def test_in_region_on_an_offset_holding_another_kind_raises_kind_mismatch(region: Region, other: str) -> None:
    place: dict[str, Callable[[Region, int], Event | Semaphore | RWLock]] = {
        "event": Event.in_region,
        "semaphore": Semaphore.in_region,
        "rwlock": RWLock.in_region,
    }
    placed = place[other](region, 0)
    try:
        with pytest.raises(memipc.KindMismatchError, match=other) as caught:
            Mutex.in_region(region, 0)
        assert "mutex" in str(caught.value)
    finally:
        placed.close()


def test_in_region_on_garbage_bytes_raises_corrupt_region_error(region: Region) -> None:
    region.buf[64:128] = b"\xa5" * 64
    with pytest.raises(memipc.CorruptRegionError):
        Mutex.in_region(region, 64)


def test_in_region_on_a_half_initialized_offset_raises_corrupt_region_error_after_waiting(
    region: Region,
) -> None:
    region.buf[0:4] = (1).to_bytes(4, "little")  # "being initialized" by a process that never finishes
    start = time.monotonic()
    with pytest.raises(memipc.CorruptRegionError, match="initializ"):
        Mutex.in_region(region, 0)
    assert time.monotonic() - start < 30.0  # did not hang


def test_a_mutex_whose_bytes_are_overwritten_raises_corrupt_region_error_on_use(region: Region) -> None:
    mutex = Mutex.in_region(region, 0)
    try:
        region.buf[0:64] = b"\xff" * 64
        with pytest.raises(memipc.CorruptRegionError):
            mutex.acquire(timeout=0)
        with pytest.raises(memipc.CorruptRegionError):
            mutex.release()
    finally:
        mutex.close()


def test_in_region_needs_a_writable_memipc_region(region: Region, name: str) -> None:
    with Region.open(name, access="r") as read_only, pytest.raises(PermissionError):
        Mutex.in_region(read_only, 0)
    with pytest.raises(TypeError):
        Mutex.in_region(bytearray(64), 0)  # type: ignore[arg-type]


def test_a_mutex_in_a_region_has_no_name_to_unlink(region: Region) -> None:
    mutex = Mutex.in_region(region, 0)
    try:
        with pytest.raises(ValueError, match="no name"):
            mutex.unlink()
    finally:
        mutex.close()
    assert not region.closed  # closing the mutex leaves the user's region open


# ---- stats, repr, close ----------------------------------------------------------------


def test_stats_count_acquisitions_contentions_and_sleeping_waiters(
    name: str, other_thread: ThreadPoolExecutor
) -> None:
    mutex = Mutex(name, spin=0)
    try:
        before = mutex.stats()
        assert (before.kind, before.name) == ("mutex", name)
        assert before.operations == before.contentions == before.owner_deaths == before.waiters == 0
        for _ in range(3):
            with mutex:
                assert mutex.stats().state["owner_pid"] == os.getpid()
        assert mutex.stats().operations == 3
        assert mutex.stats().state["owner_pid"] is None
        with mutex:
            waiting = other_thread.submit(mutex.acquire, 30.0)
            deadline = time.monotonic() + DID_NOT_HANG
            while mutex.stats().waiters != 1:
                assert time.monotonic() < deadline, "the other thread never showed up as a waiter"
                time.sleep(0.001)
        assert waiting.result(DID_NOT_HANG) is True
        other_thread.submit(mutex.release).result(DID_NOT_HANG)
        after = mutex.stats()
        assert after.operations == 5
        assert after.contentions >= 1
        assert after.waiters == 0
        assert after.owner_deaths == 0
    finally:
        mutex.close()


def test_repr_shows_name_and_kind(mutex: Mutex, name: str) -> None:
    assert name in repr(mutex) and "mutex" in repr(mutex)


OPERATIONS: dict[str, Callable[[Mutex], object]] = {
    "acquire": lambda m: m.acquire(timeout=0),
    "release": lambda m: m.release(),
    "locked": lambda m: m.locked(),
    "held": lambda m: m.held(),
    "stats": lambda m: m.stats(),
    "with": lambda m: m.__enter__(),
}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_close_is_idempotent_and_every_operation_after_it_raises_closed_error(
    name: str, operation: str
) -> None:
    mutex = Mutex(name)
    mutex.close()
    mutex.close()
    with pytest.raises(memipc.ClosedError):
        OPERATIONS[operation](mutex)
    assert "closed" in repr(mutex)


def test_close_of_a_handle_leaves_the_other_handles_working(name: str) -> None:
    first, second = Mutex(name), Mutex(name)
    first.close()
    try:
        with second:
            assert second.held()
    finally:
        second.close()


# ---- spin policy ----------------------------------------------------------------------------


@pytest.mark.parametrize("spin", [None, 0, 1e-5])
def test_every_spin_policy_hands_the_mutex_over_between_threads(
    names: Names, other_thread: ThreadPoolExecutor, spin: float | None
) -> None:
    mutex = Mutex(names(), spin=spin)
    placed_region = Region.create(names(), 64)
    placed = Mutex.in_region(placed_region, 0, spin=spin)
    try:
        assert mutex.spin == spin and placed.spin == spin
        for lock in (mutex, placed):
            count = [0]

            def bump(lock: Mutex = lock, count: list[int] = count) -> None:
                for _ in range(200):
                    assert lock.acquire(timeout=DID_NOT_HANG)
                    count[0] += 1
                    lock.release()

            helper = other_thread.submit(bump)
            bump()
            helper.result(DID_NOT_HANG * 4)
            assert count[0] == 400
            with lock:
                start = time.monotonic()
                assert other_thread.submit(lock.acquire, 0.05).result(DID_NOT_HANG) is False
                assert time.monotonic() - start >= 0.05 - EPSILON
    finally:
        placed.close()
        placed_region.close()
        mutex.close()


def test_a_spin_budget_longer_than_the_timeout_does_not_stretch_the_timeout(
    name: str, other_thread: ThreadPoolExecutor
) -> None:
    """acquire(timeout=0.05) gives up at 0.05 s, so a release 0.5 s later cannot be what it returns with."""
    mutex = Mutex(name, spin=1.0)
    try:
        with mutex:
            attempt = other_thread.submit(mutex.acquire, 0.05)
            time.sleep(0.5)
        assert attempt.result(DID_NOT_HANG) is False, "acquire(timeout=0.05) was still spinning at 0.5 s"
    finally:
        if other_thread.submit(mutex.held).result(DID_NOT_HANG):
            other_thread.submit(mutex.release).result(DID_NOT_HANG)
        mutex.close()


@pytest.mark.parametrize("spin", [-1, -1e-9, 1.5, math.inf, math.nan])
def test_spin_outside_zero_to_one_second_raises_value_error(names: Names, spin: float) -> None:
    with pytest.raises(ValueError, match="spin"):
        Mutex(names(), spin=spin)
    with Region.create(names(), 64) as region:
        with pytest.raises(ValueError, match="spin"):
            Mutex.in_region(region, 0, spin=spin)
        placed = Mutex.in_region(region, 0)
        try:
            with pytest.raises(ValueError, match="spin"):
                placed.spin = spin
            assert placed.spin is None
            placed.spin = 2e-5
            assert placed.spin == 2e-5
        finally:
            placed.close()


def test_four_threads_contending_for_the_mutex_each_get_it_every_time(
    mutex: Mutex,
) -> None:
    """Acceptable outcomes: every one of 4 contending threads gets the lock 50 times; none is refused."""
    got = [0] * 4

    def worker(index: int) -> None:
        for _ in range(50):
            assert mutex.acquire(timeout=DID_NOT_HANG * 2)
            try:
                got[index] += 1
                time.sleep(0)
            finally:
                mutex.release()

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DID_NOT_HANG * 6)
    assert got == [50] * 4
