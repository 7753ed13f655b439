"""wait_any in one process (threads allowed): SPEC §4 and issue 3.

Returns the index of a signaled object (the lowest when several are), or None
after the timeout; like WaitForMultipleObjects it consumes what it returns
where the kind says so: an auto-reset event is reset, a semaphore count taken,
a mutex acquired.  A manual-reset event is only observed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

import memipc
from memipc import Condition, Event, Mutex, Region, RWLock, Semaphore, wait_any

Names = Callable[[], str]

DID_NOT_HANG = 5.0
EPSILON = 1e-6


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as threads:
        yield threads


class Objects:
    """An auto-reset event, a manual-reset event, a semaphore and a mutex, closed afterwards."""

    def __init__(self, names: Names) -> None:
        self.auto = Event(names(), manual_reset=False)
        self.manual = Event(names(), manual_reset=True)
        self.semaphore = Semaphore(names())
        self.mutex = Mutex(names())

    def all(self) -> list[Event | Semaphore | Mutex]:
        return [self.auto, self.manual, self.semaphore, self.mutex]

    def close(self) -> None:
        for obj in self.all():
            obj.close()


@pytest.fixture
def objects(names: Names) -> Iterator[Objects]:
    made = Objects(names)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def held_mutex(objects: Objects, pool: ThreadPoolExecutor) -> Iterator[Mutex]:
    """The objects' mutex, held by another thread for the test (so it is not signaled)."""
    assert pool.submit(objects.mutex.acquire, 0).result(DID_NOT_HANG)
    yield objects.mutex
    pool.submit(objects.mutex.release).result(DID_NOT_HANG)


def timed(objects: list[Event | Semaphore | Mutex], timeout: float | None) -> tuple[int | None, float]:
    start = time.monotonic()
    return wait_any(objects, timeout=timeout), time.monotonic() - start


# ---- what is returned and what is consumed ------------------------------------------------------


def test_a_set_auto_event_is_returned_and_reset(objects: Objects, held_mutex: Mutex) -> None:
    objects.auto.set()
    assert wait_any(objects.all(), timeout=0) == 0
    assert not objects.auto.is_set()
    assert wait_any(objects.all(), timeout=0) is None


def test_a_set_manual_event_is_returned_and_stays_set(objects: Objects, held_mutex: Mutex) -> None:
    objects.manual.set()
    assert [wait_any(objects.all(), timeout=0) for _ in range(3)] == [1, 1, 1]
    assert objects.manual.is_set()


def test_a_semaphore_with_counts_is_returned_once_per_count(objects: Objects, held_mutex: Mutex) -> None:
    objects.semaphore.release(2)
    assert [wait_any(objects.all(), timeout=0) for _ in range(3)] == [2, 2, None]
    assert objects.semaphore.value == 0


def test_a_free_mutex_is_returned_acquired_by_the_calling_thread(objects: Objects) -> None:
    assert wait_any(objects.all(), timeout=0) == 3
    try:
        assert objects.mutex.held()
        assert objects.mutex.owner_died is False
    finally:
        objects.mutex.release()


def test_when_several_are_signaled_the_lowest_index_wins(objects: Objects, held_mutex: Mutex) -> None:
    objects.semaphore.release()
    objects.manual.set()
    objects.auto.set()
    assert wait_any(objects.all(), timeout=0) == 0
    assert wait_any(objects.all(), timeout=0) == 1
    objects.manual.clear()
    assert wait_any(objects.all(), timeout=0) == 2
    assert wait_any(objects.all(), timeout=0) is None


def test_an_object_listed_twice_is_returned_at_its_first_index(objects: Objects, held_mutex: Mutex) -> None:
    objects.auto.set()
    assert wait_any([objects.manual, objects.auto, objects.auto], timeout=0) == 1


# ---- waiting -------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1, 2, 3], ids=["auto", "manual", "semaphore", "mutex"])
def test_wait_any_wakes_when_another_thread_signals_one_of_them(
    objects: Objects, pool: ThreadPoolExecutor, index: int
) -> None:
    assert pool.submit(objects.mutex.acquire, 0).result(DID_NOT_HANG)
    signals: list[Callable[[], None]] = [
        objects.auto.set,
        objects.manual.set,
        objects.semaphore.release,
        objects.mutex.release,
    ]

    def signal_later() -> None:
        time.sleep(0.1)
        signals[index]()

    signaling = pool.submit(signal_later)
    try:
        got, _ = timed(objects.all(), 30.0)
        assert got == index
    finally:
        signaling.result(DID_NOT_HANG)
        if index != 3:
            pool.submit(objects.mutex.release).result(DID_NOT_HANG)
        elif objects.mutex.held():
            objects.mutex.release()


@pytest.mark.parametrize("timeout", [0.05, 0.2])
def test_nothing_signaled_returns_none_after_at_least_the_timeout(
    objects: Objects, held_mutex: Mutex, timeout: float
) -> None:
    got, waited = timed(objects.all(), timeout)
    assert got is None
    assert waited >= timeout - EPSILON


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_timeout_zero_never_blocks(objects: Objects, held_mutex: Mutex, timeout: float) -> None:
    with ThreadPoolExecutor(max_workers=1) as caller:  # not the thread that holds the mutex
        attempt = caller.submit(timed, objects.all(), timeout)
        try:
            got, waited = attempt.result(DID_NOT_HANG)
        finally:
            if not attempt.done():
                objects.manual.set()  # let a wrongly blocked wait_any go: fail, do not hang
    assert got is None and waited < DID_NOT_HANG


def test_a_timed_out_wait_any_leaves_no_registration_behind(objects: Objects, held_mutex: Mutex) -> None:
    assert wait_any(objects.all(), timeout=0.05) is None
    assert objects.auto.stats().waiters == 0
    assert objects.semaphore.stats().waiters == 0
    objects.auto.set()
    objects.auto.set()  # nobody waits: still one release only
    assert [objects.auto.wait(timeout=0), objects.auto.wait(timeout=0)] == [True, False]


def test_objects_placed_in_a_region_work_too(name: str) -> None:
    with Region.create(name, 256) as region:
        first = Event.in_region(region, 0, manual_reset=False)
        second = Semaphore.in_region(region, 64)
        try:
            second.release()
            assert wait_any([first, second], timeout=0) == 1
            first.set()
            assert wait_any([first, second], timeout=0) == 0
        finally:
            second.close()
            first.close()


# ---- what it refuses ----------------------------------------------------------------------------------


def test_an_empty_list_raises_value_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        wait_any([], timeout=0)


def test_more_than_64_objects_raise_value_error(objects: Objects) -> None:
    with pytest.raises(ValueError, match="64"):
        wait_any([objects.manual] * 65, timeout=0)
    objects.manual.set()
    assert wait_any([objects.auto] * 63 + [objects.manual], timeout=0) == 63


def test_objects_that_cannot_be_waited_on_raise_type_error(names: Names, objects: Objects) -> None:
    rwlock = RWLock(names())
    condition = Condition(names(), objects.mutex)
    try:
        for odd in (rwlock, condition, "event", None):
            with pytest.raises(TypeError):
                wait_any([objects.auto, odd], timeout=0)  # type: ignore[list-item]
    finally:
        condition.close()
        rwlock.close()


def test_a_closed_object_raises_closed_error(objects: Objects) -> None:
    objects.semaphore.close()
    with pytest.raises(memipc.ClosedError):
        wait_any([objects.auto, objects.semaphore], timeout=0.05)
