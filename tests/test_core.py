"""memipc._core: atomics, futex wait/wake and OFD locks at the Python boundary."""

from __future__ import annotations

import mmap
import os
import signal
import threading
import time

import pytest

from memipc import Region, _core
from tests._support import core_children, procs


@pytest.fixture
def page() -> mmap.mmap:
    return mmap.mmap(-1, 4096)


def test_loads_and_stores_round_trip_32_and_64_bit_words(page: mmap.mmap) -> None:
    _core.store_u32(page, 4, 0xDEADBEEF)
    _core.store_u64(page, 8, 2**64 - 1)
    assert _core.load_u32(page, 4) == 0xDEADBEEF
    assert _core.load_u64(page, 8) == 2**64 - 1
    assert int.from_bytes(page[4:8], "little") == 0xDEADBEEF


def test_compare_and_swap_succeeds_only_on_the_expected_value(page: mmap.mmap) -> None:
    assert _core.cas_u32(page, 0, 0, 7)
    assert not _core.cas_u32(page, 0, 0, 8)
    assert _core.load_u32(page, 0) == 7
    assert _core.cas_u64(page, 8, 0, 2**40)
    assert not _core.cas_u64(page, 8, 1, 2)
    assert _core.load_u64(page, 8) == 2**40


def test_fetch_add_returns_the_previous_value_and_wraps(page: mmap.mmap) -> None:
    assert _core.fetch_add_u32(page, 0, 5) == 0
    assert _core.fetch_add_u32(page, 0, 2**32 - 5) == 5
    assert _core.load_u32(page, 0) == 0
    assert _core.fetch_add_u64(page, 8, 3) == 0
    assert _core.load_u64(page, 8) == 3


def test_threads_incrementing_one_word_lose_no_update(page: mmap.mmap) -> None:
    def bump() -> None:
        for _ in range(20_000):
            _core.fetch_add_u64(page, 0, 1)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _core.load_u64(page, 0) == 80_000


@pytest.mark.parametrize("offset", [-1, 4093, 4096, 2**40])
def test_offsets_outside_the_buffer_raise_index_error(page: mmap.mmap, offset: int) -> None:
    with pytest.raises(IndexError):
        _core.load_u32(page, offset)
    with pytest.raises(IndexError):
        _core.store_u64(page, offset, 1)


def test_misaligned_offsets_raise_value_error(page: mmap.mmap) -> None:
    with pytest.raises(ValueError, match="aligned"):
        _core.load_u32(page, 2)
    with pytest.raises(ValueError, match="aligned"):
        _core.cas_u64(page, 4, 0, 1)


def test_values_that_do_not_fit_raise_overflow_error(page: mmap.mmap) -> None:
    with pytest.raises(OverflowError):
        _core.store_u32(page, 0, 2**32)
    with pytest.raises(OverflowError):
        _core.store_u64(page, 0, -1)


def test_stores_into_read_only_buffers_are_refused() -> None:
    with pytest.raises(TypeError):
        _core.store_u32(bytes(8), 0, 1)
    assert _core.load_u32(bytes(8), 0) == 0


def test_futex_wait_times_out_when_nothing_changes(page: mmap.mmap) -> None:
    started = time.monotonic()
    assert _core.futex_wait(page, 0, 0, 0.05) is False
    assert time.monotonic() - started >= 0.045


def test_futex_wait_returns_at_once_when_the_value_already_differs(page: mmap.mmap) -> None:
    _core.store_u32(page, 0, 1)
    assert _core.futex_wait(page, 0, 0, 10) is True


def test_futex_wait_with_zero_or_negative_timeout_does_not_block(page: mmap.mmap) -> None:
    assert _core.futex_wait(page, 0, 0, 0) is False
    assert _core.futex_wait(page, 0, 0, -5) is False


def test_futex_wait_rejects_nan_timeouts(page: mmap.mmap) -> None:
    with pytest.raises(ValueError, match="NaN"):
        _core.futex_wait(page, 0, 0, float("nan"))


def test_futex_wait_releases_the_gil_and_is_woken_by_another_thread(page: mmap.mmap) -> None:
    progress = []

    def waker() -> None:
        for i in range(5):
            progress.append(i)  # runs only if the waiter released the GIL
            time.sleep(0.01)
        _core.store_u32(page, 0, 1)
        _core.futex_wake(page, 0, 1)

    thread = threading.Thread(target=waker)
    thread.start()
    woke = _core.futex_wait(page, 0, 0, 30)
    thread.join()
    assert woke is True
    assert progress == [0, 1, 2, 3, 4]


def test_futex_wake_reports_how_many_sleepers_it_woke(page: mmap.mmap) -> None:
    assert _core.futex_wake(page, 0, 1) == 0
    assert _core.futex_wake(page, 0, 0) == 0


def test_a_process_wakes_a_sleeper_in_another_process(name: str) -> None:
    with Region.create(name, 4096) as region:
        buf = region.buf
        with procs.started(core_children.set_word_and_wake, name, 64, 7, 0.2) as child:
            assert _core.futex_wait(buf, 64, 0, 30) is True
            assert _core.load_u32(buf, 64) == 7
            assert child.result() in (0, 1)
        del buf


def test_ctrl_c_reaches_a_process_blocked_in_futex_wait_within_100_ms(name: str) -> None:
    with Region.create(name, 4096) as region:
        buf = region.buf
        with procs.started(core_children.wait_on_word_until_interrupted, name, 0) as child:
            deadline = time.monotonic() + 30
            while _core.load_u32(buf, 4) == 0 and time.monotonic() < deadline:
                _core.futex_wait(buf, 4, 0, 0.5)
            time.sleep(0.2)  # let it enter the futex wait
            sent = time.monotonic()
            child.signal(signal.SIGINT)
            how, when = child.result()
        del buf
    assert how == "KeyboardInterrupt"
    # The design bound is 50 ms (one wait slice); 0.1 s is SPEC's promise.
    # Noise on a shared 2-core VM is allowed for, but not a missed signal.
    assert when - sent < 0.5


def test_ofd_locks_belong_to_the_open_file_not_the_process(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f")
    first = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    second = os.open(path, os.O_RDWR)
    try:
        assert _core.ofd_lock(first, 0, 1, _core.LOCK_READ)
        assert _core.ofd_probe(second, 0, 1)  # another open file holds it
        assert not _core.ofd_probe(first, 0, 1)  # our own lock never conflicts
        assert not _core.ofd_lock(second, 0, 1, _core.LOCK_WRITE)  # busy
        assert _core.ofd_lock(second, 0, 1, _core.LOCK_READ)  # readers share
        os.close(first)
        first = -1
        assert _core.ofd_lock(second, 0, 1, _core.LOCK_WRITE)  # converted: the other one is gone
    finally:
        for fd in (first, second):
            if fd >= 0:
                os.close(fd)


def test_ofd_calls_reject_bad_arguments() -> None:
    with pytest.raises(ValueError):
        _core.ofd_lock(0, -1, 1, _core.LOCK_READ)
    with pytest.raises(ValueError):
        _core.ofd_lock(0, 0, 1, 7)
    with pytest.raises(OSError):
        _core.ofd_probe(987654, 0, 1)
