"""RWLock in one process (threads allowed): SPEC §4 and issue 3.

Many readers or one writer; a waiting writer closes the door on new readers
(so writers are not starved) and a writer that gives up opens it again.
Read and write locks belong to the thread that took them.  Also: ``with
rw.read()`` / ``with rw.write()``, timeouts, create/open by name, kinds,
placement in a region (2048 bytes), stats, close and the spin policy.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

import memipc
from memipc import Event, Mutex, Region, RWLock, Semaphore

Names = Callable[[], str]

DID_NOT_HANG = 5.0
EPSILON = 1e-6
RWLOCK_SIZE = 2048


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as threads:
        yield threads


@pytest.fixture
def rwlock(name: str) -> Iterator[RWLock]:
    made = RWLock(name)
    yield made
    made.close()


def timed(call: Callable[[float], bool], timeout: float) -> tuple[bool, float]:
    start = time.monotonic()
    return call(timeout), time.monotonic() - start


def read_and_release(rwlock: RWLock, timeout: float) -> bool:
    """In the calling thread: try to read-lock, and let go at once if that worked."""
    if not rwlock.acquire_read(timeout):
        return False
    rwlock.release_read()
    return True


def write_and_release(rwlock: RWLock, timeout: float) -> bool:
    """In the calling thread: try to write-lock, and let go at once if that worked."""
    if not rwlock.acquire_write(timeout):
        return False
    rwlock.release_write()
    return True


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DID_NOT_HANG
    while not condition():
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.001)


# ---- readers and writers ---------------------------------------------------------------


def test_readers_in_several_threads_hold_the_lock_together(rwlock: RWLock, pool: ThreadPoolExecutor) -> None:
    assert rwlock.acquire_read(timeout=0)
    assert rwlock.acquire_read(timeout=0)  # again in the same thread
    assert all(pool.submit(read_and_release, rwlock, 0).result(DID_NOT_HANG) for _ in range(3))
    rwlock.release_read()
    rwlock.release_read()
    assert rwlock.stats().state["readers"] == 0


def test_a_writer_keeps_out_readers_and_other_writers(rwlock: RWLock, pool: ThreadPoolExecutor) -> None:
    with rwlock.write() as entered:
        assert entered is rwlock
        assert pool.submit(read_and_release, rwlock, 0).result(DID_NOT_HANG) is False
        assert pool.submit(write_and_release, rwlock, 0).result(DID_NOT_HANG) is False
        assert pool.submit(read_and_release, rwlock, 0.05).result(DID_NOT_HANG) is False
        assert rwlock.acquire_read(timeout=0) is False  # the writer's own thread cannot read either
    assert pool.submit(read_and_release, rwlock, 0).result(DID_NOT_HANG) is True
    assert pool.submit(write_and_release, rwlock, 0).result(DID_NOT_HANG) is True


def test_readers_keep_out_a_writer_until_the_last_one_leaves(
    rwlock: RWLock, pool: ThreadPoolExecutor
) -> None:
    rwlock.acquire_read()
    rwlock.acquire_read()
    assert pool.submit(write_and_release, rwlock, 0).result(DID_NOT_HANG) is False
    waiting = pool.submit(write_and_release, rwlock, 30.0)
    rwlock.release_read()
    time.sleep(0.05)
    assert not waiting.done()
    rwlock.release_read()
    assert waiting.result(DID_NOT_HANG) is True


def test_a_waiting_writer_closes_the_door_on_new_readers(rwlock: RWLock, pool: ThreadPoolExecutor) -> None:
    """Writer preference: once a writer waits, a new reader waits behind it (no starvation)."""
    rwlock.acquire_read()
    released = False
    try:
        writer = pool.submit(write_and_release, rwlock, 30.0)
        until(lambda: rwlock.stats().state["gate_closed"], "the writer close the gate")
        assert pool.submit(read_and_release, rwlock, 0.1).result(DID_NOT_HANG) is False
        late_reader = pool.submit(read_and_release, rwlock, 30.0)
        rwlock.release_read()
        released = True
        assert writer.result(DID_NOT_HANG) is True
        assert late_reader.result(DID_NOT_HANG) is True
    finally:
        if not released:
            rwlock.release_read()


def test_a_writer_that_times_out_waiting_for_readers_opens_the_door_again(
    rwlock: RWLock, pool: ThreadPoolExecutor
) -> None:
    with rwlock.read():
        attempt = functools.partial(write_and_release, rwlock)
        acquired, waited = pool.submit(timed, attempt, 0.1).result(DID_NOT_HANG)
        assert acquired is False
        assert waited >= 0.1 - EPSILON
        assert rwlock.stats().state["gate_closed"] is False
        assert rwlock.stats().state["writer_pid"] is None
        assert pool.submit(read_and_release, rwlock, 0).result(DID_NOT_HANG) is True
    assert rwlock.acquire_write(timeout=0)
    rwlock.release_write()


def test_with_read_and_with_write_release_on_the_way_out_even_on_error(rwlock: RWLock) -> None:
    seen: list[object] = []

    def fail_while_reading() -> None:
        with rwlock.read():
            seen.append(rwlock.stats().state["readers"])
            raise KeyError("inside")

    def fail_while_writing() -> None:
        with rwlock.write():
            seen.append(rwlock.stats().state["writer_pid"])
            raise KeyError("inside")

    with pytest.raises(KeyError):
        fail_while_reading()
    with pytest.raises(KeyError):
        fail_while_writing()
    assert seen == [1, os.getpid()]
    state = rwlock.stats().state
    assert state["readers"] == 0 and state["writer_pid"] is None


def test_with_read_or_write_raises_timeout_error_when_the_lock_stays_busy(
    rwlock: RWLock, pool: ThreadPoolExecutor
) -> None:
    def enter(kind: str) -> None:
        with rwlock.read(timeout=0.05) if kind == "read" else rwlock.write(timeout=0.05):
            pass

    with rwlock.write():
        for kind in ("read", "write"):
            with pytest.raises(TimeoutError):
                pool.submit(enter, kind).result(DID_NOT_HANG)


def test_owner_died_is_false_after_an_ordinary_writer(rwlock: RWLock) -> None:
    for _ in range(2):
        with rwlock.write():
            assert rwlock.owner_died is False


# ---- ownership errors --------------------------------------------------------------------


def test_write_locking_twice_from_one_thread_raises_runtime_error(rwlock: RWLock) -> None:
    with rwlock.write():
        with pytest.raises(RuntimeError, match="already holds"):
            rwlock.acquire_write(timeout=0)
        with pytest.raises(RuntimeError, match="already holds"):
            rwlock.acquire_write(timeout=1.0)


def test_releases_by_a_thread_that_holds_nothing_raise_runtime_error(
    rwlock: RWLock, pool: ThreadPoolExecutor
) -> None:
    with pytest.raises(RuntimeError):
        rwlock.release_read()
    with pytest.raises(RuntimeError):
        rwlock.release_write()
    with rwlock.read():
        with pytest.raises(RuntimeError):
            pool.submit(rwlock.release_read).result(DID_NOT_HANG)
        with pytest.raises(RuntimeError):
            rwlock.release_write()  # reading is not writing
    with rwlock.write():
        with pytest.raises(RuntimeError):
            pool.submit(rwlock.release_write).result(DID_NOT_HANG)
        with pytest.raises(RuntimeError):
            rwlock.release_read()
    assert rwlock.acquire_write(timeout=0)  # nothing was left held
    rwlock.release_write()


# ---- timeouts -------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0.05, 0.2])
def test_acquires_of_a_busy_rwlock_return_false_after_at_least_the_timeout(
    rwlock: RWLock, pool: ThreadPoolExecutor, timeout: float
) -> None:
    with rwlock.write():
        for attempt in (read_and_release, write_and_release):
            acquired, waited = pool.submit(timed, functools.partial(attempt, rwlock), timeout).result(
                DID_NOT_HANG
            )
            assert acquired is False
            assert waited >= timeout - EPSILON


def test_acquires_with_timeout_zero_never_block(rwlock: RWLock, pool: ThreadPoolExecutor) -> None:
    with rwlock.write():
        start = time.monotonic()
        assert pool.submit(read_and_release, rwlock, 0).result(DID_NOT_HANG) is False
        assert pool.submit(write_and_release, rwlock, 0).result(DID_NOT_HANG) is False
        assert time.monotonic() - start < DID_NOT_HANG
    with rwlock.read():
        assert pool.submit(write_and_release, rwlock, 0).result(DID_NOT_HANG) is False


# ---- names: create / open / kinds ------------------------------------------------------------------


def test_create_true_creates_and_refuses_a_taken_name(name: str) -> None:
    rwlock = RWLock(name, create=True)
    try:
        assert rwlock.created and rwlock.name == name
        with pytest.raises(memipc.ExistsError):
            RWLock(name, create=True)
    finally:
        rwlock.close()


def test_create_false_opens_and_refuses_a_missing_name(name: str, pool: ThreadPoolExecutor) -> None:
    with pytest.raises(memipc.NotFoundError):
        RWLock(name, create=False)
    creator = RWLock(name, create=True)
    opener = RWLock(name, create=False)
    try:
        assert not opener.created
        with creator.write():
            assert pool.submit(read_and_release, opener, 0).result(DID_NOT_HANG) is False
    finally:
        opener.close()
        creator.close()


def test_create_none_opens_or_creates(name: str) -> None:
    first, second = RWLock(name), RWLock(name)
    try:
        assert (first.created, second.created) == (True, False)
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
def test_opening_an_rwlock_name_as_another_kind_raises_kind_mismatch_naming_both(
    rwlock: RWLock, name: str, kind: str
) -> None:
    with pytest.raises(memipc.KindMismatchError, match="rwlock") as caught:
        OTHER_KINDS[kind](name)
    assert kind in str(caught.value)


def test_opening_a_semaphore_name_as_an_rwlock_raises_kind_mismatch_naming_both(name: str) -> None:
    semaphore = Semaphore(name)
    try:
        with pytest.raises(memipc.KindMismatchError, match="rwlock") as caught:
            RWLock(name, create=False)
        assert "semaphore" in str(caught.value)
    finally:
        semaphore.close()


# ---- in_region ------------------------------------------------------------------------------------

REGION_SIZE = 3 * RWLOCK_SIZE


@pytest.fixture
def region(name: str) -> Iterator[Region]:
    with Region.create(name, REGION_SIZE) as made:
        yield made


def test_two_mappings_of_one_region_share_the_rwlock_at_one_offset(
    region: Region, name: str, pool: ThreadPoolExecutor
) -> None:
    here = RWLock.in_region(region, RWLOCK_SIZE)
    with Region.open(name) as again:
        there = RWLock.in_region(again, RWLOCK_SIZE)
        try:
            assert here.created and not there.created and there.name is None
            with here.write():
                assert pool.submit(read_and_release, there, 0).result(DID_NOT_HANG) is False
            with there.read():
                assert pool.submit(write_and_release, here, 0).result(DID_NOT_HANG) is False
                assert pool.submit(read_and_release, here, 0).result(DID_NOT_HANG) is True
        finally:
            there.close()
            here.close()


@pytest.mark.parametrize("offset", [4, 2044, -2048, REGION_SIZE - 2040, REGION_SIZE - 64, REGION_SIZE])
def test_in_region_rejects_unaligned_negative_and_too_late_offsets(region: Region, offset: int) -> None:
    with pytest.raises(ValueError, match="2048 bytes"):
        RWLock.in_region(region, offset)


def test_in_region_on_an_offset_holding_another_kind_raises_kind_mismatch(region: Region) -> None:
    event = Event.in_region(region, 0)
    try:
        with pytest.raises(memipc.KindMismatchError, match="rwlock") as caught:
            RWLock.in_region(region, 0)
        assert "event" in str(caught.value)
    finally:
        event.close()


def test_in_region_on_garbage_bytes_raises_corrupt_region_error(region: Region) -> None:
    region.buf[0:RWLOCK_SIZE] = b"\xee" * RWLOCK_SIZE
    with pytest.raises(memipc.CorruptRegionError):
        RWLock.in_region(region, 0)


def test_an_rwlock_whose_tag_is_overwritten_raises_corrupt_region_error_on_use(region: Region) -> None:
    rwlock = RWLock.in_region(region, 0)
    try:
        region.buf[0:4] = b"junk"
        with pytest.raises(memipc.CorruptRegionError):
            rwlock.acquire_read(timeout=0)
        with pytest.raises(memipc.CorruptRegionError):
            rwlock.acquire_write(timeout=0)
    finally:
        rwlock.close()


# ---- stats and close -----------------------------------------------------------------------------


def test_stats_count_acquisitions_and_show_readers_and_writer(rwlock: RWLock, name: str) -> None:
    before = rwlock.stats()
    assert (before.kind, before.name, before.operations) == ("rwlock", name, 0)
    assert before.state == {"readers": 0, "writer_pid": None, "gate_closed": False}
    with rwlock.read(), rwlock.read():
        assert rwlock.stats().state["readers"] == 2
    with rwlock.write():
        state = rwlock.stats().state
        assert state["writer_pid"] == os.getpid() and state["readers"] == 0
    after = rwlock.stats()
    assert after.operations == 3
    assert after.owner_deaths == 0
    assert after.state == {"readers": 0, "writer_pid": None, "gate_closed": False}


OPERATIONS: dict[str, Callable[[RWLock], object]] = {
    "acquire_read": lambda rw: rw.acquire_read(timeout=0),
    "acquire_write": lambda rw: rw.acquire_write(timeout=0),
    "release_write": lambda rw: rw.release_write(),
    "read": lambda rw: rw.read().__enter__(),
    "write": lambda rw: rw.write().__enter__(),
    "stats": lambda rw: rw.stats(),
}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_close_is_idempotent_and_every_operation_after_it_raises_closed_error(
    name: str, operation: str
) -> None:
    rwlock = RWLock(name)
    rwlock.close()
    rwlock.close()
    with pytest.raises(memipc.ClosedError):
        OPERATIONS[operation](rwlock)


# ---- spin policy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spin", [None, 0, 1e-5])
def test_every_spin_policy_passes_the_write_lock_between_threads(
    name: str, pool: ThreadPoolExecutor, spin: float | None
) -> None:
    rwlock = RWLock(name, spin=spin)
    try:
        assert rwlock.spin == spin
        shared = [0]

        def bump() -> None:
            for _ in range(200):
                with rwlock.write(timeout=DID_NOT_HANG):
                    value = shared[0]
                    time.sleep(0)
                    shared[0] = value + 1
                with rwlock.read(timeout=DID_NOT_HANG):
                    pass

        helpers = [pool.submit(bump) for _ in range(2)]
        bump()
        for helper in helpers:
            helper.result(DID_NOT_HANG * 4)
        assert shared[0] == 600
    finally:
        rwlock.close()


def test_a_spin_budget_longer_than_the_timeout_does_not_stretch_the_timeout(
    name: str, pool: ThreadPoolExecutor
) -> None:
    """acquire_read(timeout=0.05) gives up at 0.05 s: a release 0.5 s later cannot be what it returns with."""
    rwlock = RWLock(name, spin=1.0)
    try:
        with rwlock.write():
            attempt = pool.submit(read_and_release, rwlock, 0.05)
            time.sleep(0.5)
        assert attempt.result(DID_NOT_HANG) is False, "acquire_read(timeout=0.05) was still spinning at 0.5 s"
    finally:
        rwlock.close()


@pytest.mark.parametrize("spin", [-2, 1.000001, math.inf, math.nan])
def test_spin_outside_zero_to_one_second_raises_value_error(names: Names, spin: float) -> None:
    with pytest.raises(ValueError, match="spin"):
        RWLock(names(), spin=spin)
    with Region.create(names(), RWLOCK_SIZE) as region, pytest.raises(ValueError, match="spin"):
        RWLock.in_region(region, 0, spin=spin)
