"""Semaphore in one process (threads allowed): SPEC §4 and issue 3.

A counter that acquire takes from and release gives back to, never above
``maximum`` (ValueError, the count unchanged); ``initial`` and ``maximum``
belong to the creator.  Also: timeouts, waking blocked threads, create/open by
name, kinds, placement in a region, stats, close and the spin policy.
"""

from __future__ import annotations

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


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as threads:
        yield threads


def timed_acquire(semaphore: Semaphore, timeout: float) -> tuple[bool, float]:
    start = time.monotonic()
    return semaphore.acquire(timeout=timeout), time.monotonic() - start


# ---- counting -------------------------------------------------------------------------


def test_acquire_takes_counts_until_none_are_left(name: str) -> None:
    semaphore = Semaphore(name, initial=3)
    try:
        assert semaphore.value == 3
        assert semaphore.maximum is None
        assert [semaphore.acquire(timeout=0) for _ in range(4)] == [True, True, True, False]
        assert semaphore.value == 0
    finally:
        semaphore.close()


def test_release_gives_back_n_counts_at_once(name: str) -> None:
    semaphore = Semaphore(name)
    try:
        assert semaphore.value == 0
        semaphore.release()
        semaphore.release(4)
        assert semaphore.value == 5
    finally:
        semaphore.close()


def test_release_beyond_the_maximum_raises_value_error_and_leaves_the_count_alone(name: str) -> None:
    semaphore = Semaphore(name, initial=1, maximum=3)
    try:
        assert semaphore.maximum == 3
        with pytest.raises(ValueError, match="maximum"):
            semaphore.release(3)
        assert semaphore.value == 1
        semaphore.release(2)
        assert semaphore.value == 3
        with pytest.raises(ValueError, match="maximum"):
            semaphore.release()
        assert semaphore.value == 3
    finally:
        semaphore.close()


@pytest.mark.parametrize("n", [2**32, 2**40])
def test_release_of_more_than_any_count_can_hold_raises_value_error(name: str, n: int) -> None:
    semaphore = Semaphore(name, initial=0, maximum=5)
    try:
        with pytest.raises(ValueError):
            semaphore.release(n)
        assert semaphore.value == 0
    finally:
        semaphore.close()


@pytest.mark.parametrize("n", [0, -1, True, 1.5, "1"])
def test_release_of_a_non_positive_or_non_integer_count_raises_value_error(name: str, n: object) -> None:
    semaphore = Semaphore(name)
    try:
        with pytest.raises(ValueError):
            semaphore.release(n)  # type: ignore[arg-type]
        assert semaphore.value == 0
    finally:
        semaphore.close()


@pytest.mark.parametrize(
    ("initial", "maximum"), [(-1, None), (0, 0), (3, 2), (1.5, None), (0, -1), (True, None), (0, 2**32)]
)
def test_impossible_initial_and_maximum_raise_value_error(
    name: str, initial: int, maximum: int | None, os_path: Callable[[str], str]
) -> None:
    with pytest.raises(ValueError):
        Semaphore(name, initial=initial, maximum=maximum)
    assert not os.path.exists(os_path(name))


def test_opening_keeps_the_creators_initial_and_maximum(name: str) -> None:
    creator = Semaphore(name, initial=2, maximum=4)
    opener = Semaphore(name, initial=0, maximum=9)
    try:
        assert (creator.created, opener.created) == (True, False)
        assert (opener.value, opener.maximum) == (2, 4)
        opener.acquire(timeout=0)
        assert creator.value == 1
    finally:
        opener.close()
        creator.close()


def test_with_statement_takes_a_count_for_the_block(name: str) -> None:
    semaphore = Semaphore(name, initial=1)
    try:
        with semaphore as entered:
            assert entered is semaphore
            assert semaphore.value == 0
        assert semaphore.value == 1
    finally:
        semaphore.close()


# ---- blocking and waking ---------------------------------------------------------------


def test_release_wakes_a_thread_blocked_in_acquire(name: str, pool: ThreadPoolExecutor) -> None:
    semaphore = Semaphore(name)
    try:
        waiting = pool.submit(semaphore.acquire, 30.0)
        time.sleep(0.05)
        assert not waiting.done()
        semaphore.release()
        assert waiting.result(DID_NOT_HANG) is True
        assert semaphore.value == 0
    finally:
        semaphore.close()


def test_release_of_two_lets_exactly_two_of_three_blocked_threads_in(
    name: str, pool: ThreadPoolExecutor
) -> None:
    """Acceptable outcome, the only one: two acquire with True, the third times out with False."""
    semaphore = Semaphore(name, spin=0)
    try:
        waiting = [pool.submit(timed_acquire, semaphore, 2.0) for _ in range(3)]
        deadline = time.monotonic() + DID_NOT_HANG
        while semaphore.stats().waiters != 3:
            assert time.monotonic() < deadline, "the threads never all slept"
            time.sleep(0.001)
        semaphore.release(2)
        outcomes = [future.result(DID_NOT_HANG + 2.0) for future in waiting]
        assert sorted(acquired for acquired, _ in outcomes) == [False, True, True]
        assert semaphore.value == 0
    finally:
        semaphore.close()


@pytest.mark.parametrize("timeout", [0.05, 0.2])
def test_acquire_of_an_empty_semaphore_returns_false_after_at_least_the_timeout(
    name: str, timeout: float
) -> None:
    semaphore = Semaphore(name)
    try:
        acquired, waited = timed_acquire(semaphore, timeout)
        assert acquired is False
        assert waited >= timeout - EPSILON
    finally:
        semaphore.close()


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_acquire_with_timeout_zero_never_blocks(name: str, pool: ThreadPoolExecutor, timeout: float) -> None:
    semaphore = Semaphore(name)
    try:
        attempt = pool.submit(timed_acquire, semaphore, timeout)
        try:
            acquired, waited = attempt.result(DID_NOT_HANG)
        finally:
            if not attempt.done():
                semaphore.release()  # let a wrongly blocked acquire go, so the test fails instead of hanging
        assert acquired is False
        assert waited < DID_NOT_HANG
        semaphore.release()
        assert semaphore.acquire(timeout=timeout) is True
    finally:
        semaphore.close()


# ---- names: create / open / kinds ----------------------------------------------------------


def test_create_true_creates_and_refuses_a_taken_name(name: str) -> None:
    semaphore = Semaphore(name, create=True)
    try:
        assert semaphore.created and semaphore.name == name
        with pytest.raises(memipc.ExistsError):
            Semaphore(name, create=True)
    finally:
        semaphore.close()


def test_create_false_opens_and_refuses_a_missing_name(name: str) -> None:
    with pytest.raises(memipc.NotFoundError):
        Semaphore(name, create=False)
    creator = Semaphore(name, initial=1, create=True)
    opener = Semaphore(name, create=False)
    try:
        assert opener.value == 1 and not opener.created
    finally:
        opener.close()
        creator.close()


def test_create_none_opens_or_creates(name: str) -> None:
    first, second = Semaphore(name, initial=1), Semaphore(name)
    try:
        assert (first.created, second.created) == (True, False)
        assert second.acquire(timeout=0) and first.value == 0
    finally:
        second.close()
        first.close()


OTHER_KINDS: dict[str, Callable[[str], object]] = {
    "mutex": Mutex,
    "event": lambda name: Event(name, create=False),
    "rwlock": RWLock,
    "region": Region.open,
}


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_opening_a_semaphore_name_as_another_kind_raises_kind_mismatch_naming_both(
    name: str, kind: str
) -> None:
    semaphore = Semaphore(name, initial=1)
    try:
        with pytest.raises(memipc.KindMismatchError, match="semaphore") as caught:
            OTHER_KINDS[kind](name)
        assert kind in str(caught.value)
        assert semaphore.value == 1
    finally:
        semaphore.close()


def test_opening_an_event_name_as_a_semaphore_raises_kind_mismatch_naming_both(name: str) -> None:
    event = Event(name)
    try:
        with pytest.raises(memipc.KindMismatchError, match="semaphore") as caught:
            Semaphore(name, initial=1)
        assert "event" in str(caught.value)
    finally:
        event.close()


# ---- in_region --------------------------------------------------------------------------------

REGION_SIZE = 1024


@pytest.fixture
def region(name: str) -> Iterator[Region]:
    with Region.create(name, REGION_SIZE) as made:
        yield made


def test_two_mappings_of_one_region_share_the_semaphore_at_one_offset(region: Region, name: str) -> None:
    here = Semaphore.in_region(region, 64, initial=2, maximum=2)
    with Region.open(name) as again:
        there = Semaphore.in_region(again, 64, initial=0)
        try:
            assert here.created and not there.created
            assert (there.value, there.maximum) == (2, 2)
            assert there.acquire(timeout=0)
            assert here.value == 1
            here.release()
            with pytest.raises(ValueError, match="maximum"):
                there.release()
        finally:
            there.close()
            here.close()


@pytest.mark.parametrize("offset", [2, 4, -64, REGION_SIZE - 60, REGION_SIZE - 56, REGION_SIZE])
def test_in_region_rejects_unaligned_negative_and_too_late_offsets(region: Region, offset: int) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        Semaphore.in_region(region, offset)


def test_in_region_on_an_offset_holding_another_kind_raises_kind_mismatch(region: Region) -> None:
    mutex = Mutex.in_region(region, 0)
    try:
        with pytest.raises(memipc.KindMismatchError, match="semaphore") as caught:
            Semaphore.in_region(region, 0)
        assert "mutex" in str(caught.value)
    finally:
        mutex.close()


def test_in_region_on_garbage_bytes_raises_corrupt_region_error(region: Region) -> None:
    region.buf[0:64] = bytes(range(64))
    with pytest.raises(memipc.CorruptRegionError):
        Semaphore.in_region(region, 0)


def test_a_semaphore_whose_bytes_are_overwritten_raises_corrupt_region_error_on_use(region: Region) -> None:
    semaphore = Semaphore.in_region(region, 0, initial=1)
    try:
        region.buf[0:4] = b"\x00\x00\x00\x00"
        with pytest.raises(memipc.CorruptRegionError):
            semaphore.acquire(timeout=0)
        with pytest.raises(memipc.CorruptRegionError):
            semaphore.release()
    finally:
        semaphore.close()


# ---- stats and close -----------------------------------------------------------------------------


def test_stats_count_acquisitions_contentions_waiters_and_show_the_value(
    name: str, pool: ThreadPoolExecutor
) -> None:
    semaphore = Semaphore(name, initial=2, maximum=5, spin=0)
    try:
        before = semaphore.stats()
        assert (before.kind, before.name) == ("semaphore", name)
        assert before.state == {"value": 2, "maximum": 5}
        assert before.operations == before.contentions == before.waiters == 0
        semaphore.acquire()
        semaphore.acquire()
        assert semaphore.stats().operations == 2
        waiting = pool.submit(semaphore.acquire, 30.0)
        deadline = time.monotonic() + DID_NOT_HANG
        while semaphore.stats().waiters != 1:
            assert time.monotonic() < deadline, "the thread never showed up as a waiter"
            time.sleep(0.001)
        semaphore.release()
        assert waiting.result(DID_NOT_HANG)
        after = semaphore.stats()
        assert after.operations == 3
        assert after.contentions >= 1
        assert after.waiters == 0
        assert after.state == {"value": 0, "maximum": 5}
    finally:
        semaphore.close()


OPERATIONS: dict[str, Callable[[Semaphore], object]] = {
    "acquire": lambda s: s.acquire(timeout=0),
    "release": lambda s: s.release(),
    "value": lambda s: s.value,
    "maximum": lambda s: s.maximum,
    "stats": lambda s: s.stats(),
}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_close_is_idempotent_and_every_operation_after_it_raises_closed_error(
    name: str, operation: str
) -> None:
    semaphore = Semaphore(name, initial=1)
    semaphore.close()
    semaphore.close()
    with pytest.raises(memipc.ClosedError):
        OPERATIONS[operation](semaphore)


def test_the_last_close_removes_the_name(name: str) -> None:
    Semaphore(name).close()
    with pytest.raises(memipc.NotFoundError):
        Semaphore(name, create=False)


# ---- spin policy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spin", [None, 0, 1e-5])
def test_every_spin_policy_passes_counts_between_threads(
    names: Names, pool: ThreadPoolExecutor, spin: float | None
) -> None:
    ping, pong = Semaphore(names(), spin=spin), Semaphore(names(), spin=spin)
    try:
        assert ping.spin == spin

        def echo() -> int:
            for _ in range(200):
                assert ping.acquire(timeout=DID_NOT_HANG)
                pong.release()
            return 200

        echoing = pool.submit(echo)
        for _ in range(200):
            ping.release()
            assert pong.acquire(timeout=DID_NOT_HANG)
        assert echoing.result(DID_NOT_HANG) == 200
        assert ping.value == pong.value == 0
        acquired, waited = timed_acquire(ping, 0.05)
        assert not acquired and waited >= 0.05 - EPSILON
    finally:
        pong.close()
        ping.close()


def test_a_spin_budget_longer_than_the_timeout_does_not_stretch_the_timeout(
    name: str, pool: ThreadPoolExecutor
) -> None:
    """acquire(timeout=0.05) gives up at 0.05 s, so a release 0.5 s later cannot be what it returns with."""
    semaphore = Semaphore(name, spin=1.0)
    try:
        attempt = pool.submit(semaphore.acquire, 0.05)
        time.sleep(0.5)
        semaphore.release()
        assert attempt.result(DID_NOT_HANG) is False, "acquire(timeout=0.05) was still spinning at 0.5 s"
        assert semaphore.value == 1
    finally:
        semaphore.close()


@pytest.mark.parametrize("spin", [-0.5, 1.01, math.inf, math.nan])
def test_spin_outside_zero_to_one_second_raises_value_error(name: str, spin: float) -> None:
    with pytest.raises(ValueError, match="spin"):
        Semaphore(name, spin=spin)
    with Region.create(name, 64) as region, pytest.raises(ValueError, match="spin"):
        Semaphore.in_region(region, 0, spin=spin)
