"""Regions larger than memory: walking a 3 GiB sparse file through windows, and a
64 GiB sparse memory-backed region (SPEC §3: "a size larger than RAM is allowed
(sparse)"; ``windows()`` maps one window at a time).

Every test checks that the files stay sparse: only the pages a test touches
may be allocated.  Which parts of a file are mapped is read from
/proc/self/maps, so "one window at a time" is checked against the kernel, not
only against ``View.closed``.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

import memipc
from memipc import Region

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
FILE_SIZE = 3 * GiB
WINDOW = 64 * MiB
MARK = struct.Struct("<QQ")  # (magic, window position) written at the start of each window
MAGIC = 0x5749_4E44_4F57_2121  # "WINDOW!!"
#: Allocated bytes a test may leave behind: a few pages per window it touched.
SPARSE_LIMIT = 16 * MiB


@pytest.fixture
def sparse_file(tmp_path: Path) -> Path:
    path = tmp_path / "three-gib.dat"
    path.touch()
    os.truncate(path, FILE_SIZE)
    assert allocated(path) < SPARSE_LIMIT, "this file system does not support sparse files"
    return path


def allocated(path: str | os.PathLike[str]) -> int:
    return os.stat(path).st_blocks * 512


def mapped_bytes(path: str | os.PathLike[str]) -> int:
    """How many bytes of ``path`` this process has mapped right now (from /proc/self/maps)."""
    target = os.stat(path)
    total = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) < 6:
                continue
            low, high = (int(x, 16) for x in fields[0].split("-"))
            major, minor = (int(x, 16) for x in fields[3].split(":"))
            if int(fields[4]) == target.st_ino and os.makedev(major, minor) == target.st_dev:
                total += high - low
    return total


def expected_windows(length: int, step: int, start: int, stop: int) -> list[tuple[int, int]]:
    return [(position, min(length, stop - position)) for position in range(start, stop, step)]


def mark_windows(
    region: Region, path: Path, *, length: int, step: int | None, start: int = 0, stop: int | None = None
) -> list[tuple[int, int]]:
    """Walk once, writing MARK at each window's start (cut to the window's length); check that
    one window is mapped at a time."""
    seen = []
    previous = None
    for window in region.windows(length, step=step, start=start, stop=stop):
        if previous is not None:
            assert previous.closed, f"{previous!r} is still mapped after the walk moved on"
        assert not window.closed
        assert mapped_bytes(path) <= len(window) + 2 * 4 * KiB, "more than one window is mapped"
        window.write(0, MARK.pack(MAGIC, window.offset)[: len(window)])
        seen.append((window.offset, len(window)))
        previous = window
    if previous is not None:
        assert previous.closed, "the last window stays mapped after the walk ended"
    assert mapped_bytes(path) == 0
    return seen


@pytest.mark.parametrize(
    "step",
    [None, 48 * MiB, 100 * MiB, WINDOW + 1],
    ids=["adjacent", "overlapping", "with-gaps", "unaligned"],
)
def test_walking_a_3_gib_sparse_file_marks_every_window_and_keeps_it_sparse(
    sparse_file: Path, step: int | None
) -> None:
    stride = WINDOW if step is None else step
    wanted = expected_windows(WINDOW, stride, 0, FILE_SIZE)
    with Region.open_file(sparse_file) as region:
        assert region.size == FILE_SIZE
        assert mark_windows(region, sparse_file, length=WINDOW, step=step) == wanted
    with Region.open_file(sparse_file, access="r") as region:  # a second walk reads the marks back
        positions = []
        for window in region.windows(WINDOW, step=step):
            assert window.unpack(MARK.format, 0) == (MAGIC, window.offset)
            assert window.read(MARK.size, 16) == bytes(16)  # nothing else was written next to it
            positions.append(window.offset)
        assert positions == [position for position, _ in wanted]

    with open(sparse_file, "rb") as f:  # and the marks are where the offsets say, in the file itself
        for position, _ in wanted:
            f.seek(position)
            assert MARK.unpack(f.read(MARK.size)) == (MAGIC, position)
    assert os.path.getsize(sparse_file) == FILE_SIZE
    assert allocated(sparse_file) < SPARSE_LIMIT


@pytest.mark.parametrize(
    ("start", "stop", "step"),
    [
        (GiB + 123, 2 * GiB + 5, 200 * MiB),
        (0, WINDOW // 2, None),  # a single window, cut short by stop
        (FILE_SIZE - 10, FILE_SIZE, None),  # a last window of 10 bytes
        (GiB, GiB + 3 * WINDOW, WINDOW // 3),
    ],
)
def test_windows_between_start_and_stop_never_reach_outside_them(
    sparse_file: Path, start: int, stop: int, step: int | None
) -> None:
    stride = WINDOW if step is None else step
    with Region.open_file(sparse_file) as region:
        seen = mark_windows(region, sparse_file, length=WINDOW, step=step, start=start, stop=stop)
    assert seen == expected_windows(WINDOW, stride, start, stop)
    assert all(start <= position and position + length <= stop for position, length in seen)
    with open(sparse_file, "rb") as f:
        for position, length in seen:
            f.seek(position)
            assert f.read(min(length, MARK.size)) == MARK.pack(MAGIC, position)[:length]
        if start >= MARK.size:
            f.seek(start - MARK.size)
            assert f.read(MARK.size) == bytes(MARK.size)
        f.seek(stop)
        assert f.read(MARK.size) == bytes(min(MARK.size, FILE_SIZE - stop))
    assert allocated(sparse_file) < SPARSE_LIMIT


def test_an_empty_range_yields_no_window(sparse_file: Path) -> None:
    with Region.open_file(sparse_file) as region:
        assert list(region.windows(WINDOW, start=GiB, stop=GiB)) == []
        assert list(region.windows(WINDOW, start=FILE_SIZE)) == []


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"length": 0}, ValueError),
        ({"length": -1}, ValueError),
        ({"length": WINDOW, "step": 0}, ValueError),
        ({"length": WINDOW, "step": -WINDOW}, ValueError),
        ({"length": WINDOW, "start": -1}, IndexError),
        ({"length": WINDOW, "start": GiB, "stop": GiB - 1}, IndexError),
        ({"length": WINDOW, "stop": FILE_SIZE + 1}, IndexError),
        ({"length": WINDOW, "start": FILE_SIZE + 1}, IndexError),
    ],
)
def test_bad_window_arguments_raise_before_anything_is_mapped(
    sparse_file: Path, arguments: dict[str, int], error: type[Exception]
) -> None:
    with Region.open_file(sparse_file) as region:
        with pytest.raises(error) as caught:
            region.windows(**arguments)
        assert type(caught.value) is error
        assert mapped_bytes(sparse_file) == 0


def test_stopping_a_walk_early_unmaps_the_current_window(sparse_file: Path) -> None:
    with Region.open_file(sparse_file) as region:
        walk = region.windows(WINDOW, step=GiB)
        first = next(walk)
        assert mapped_bytes(sparse_file) > 0
        walk.close()
        assert first.closed
        assert mapped_bytes(sparse_file) == 0
        for window in region.windows(WINDOW, step=GiB):
            if window.offset == GiB:
                break
        # Leaving the loop dropped the iterator; CPython finalizes the generator at once.
        assert window.offset == GiB and window.closed
        assert mapped_bytes(sparse_file) == 0


def test_a_window_still_exported_when_the_walk_moves_on_stays_mapped_and_readable(
    sparse_file: Path,
) -> None:
    """Unmapping it would leave the memoryview dangling; the walk keeps going instead."""
    with Region.open_file(sparse_file) as region:
        walk = region.windows(WINDOW, step=GiB)
        first = next(walk)
        first.write(0, b"kept")
        exported = first.buf[:4]
        second = next(walk)
        assert second.offset == GiB
        assert not first.closed
        assert bytes(exported) == b"kept"
        exported.release()
        first.close()
        assert first.closed
        walk.close()
        assert mapped_bytes(sparse_file) == 0


def test_a_file_backed_region_of_3_gib_is_created_sparse(name: str, tmp_path: Path) -> None:
    path = tmp_path / "created.dat"
    with Region.create(name, FILE_SIZE, path=path) as region:
        assert region.size == FILE_SIZE == os.path.getsize(path)
        with region.view(FILE_SIZE - 5) as tail:
            tail.write(0, b"tail!")
        for window in region.windows(WINDOW, step=GiB):
            window.write(1, b"w")
    with open(path, "rb") as f:
        f.seek(FILE_SIZE - 5)
        assert f.read() == b"tail!"
        f.seek(GiB + 1)
        assert f.read(1) == b"w"
    assert allocated(path) < SPARSE_LIMIT


# ---- memory-backed regions larger than RAM -------------------------------------------

HUGE = 64 * GiB


def shm_total() -> int:
    info = os.statvfs("/dev/shm")
    return info.f_blocks * info.f_frsize


def test_a_64_gib_memory_region_with_reserve_false_stays_sparse(
    name: str, os_path: Callable[[str], str]
) -> None:
    touched = [0, GiB + 7, 32 * GiB - 1, HUGE - 16]
    with Region.create(name, HUGE, reserve=False) as region:
        assert region.size == HUGE
        for offset in touched:
            with region.view(offset, 16) as view:
                view.pack("<Q", 0, offset)
        with Region.open(name) as other:
            assert other.size == HUGE == other.info().size
            for offset in touched:
                with other.view(offset, 8) as view:
                    assert view.unpack("<Q") == (offset,)
            assert [w.offset for w in other.windows(GiB, step=16 * GiB)] == [0, 16 * GiB, 32 * GiB, 48 * GiB]
        assert allocated(os_path(name)) < 1 * MiB, "touching four pages allocated more than a few pages"
        assert os.path.getsize(os_path(name)) >= HUGE
    assert not os.path.exists(os_path(name))


def test_reserving_more_than_dev_shm_holds_is_enospc_at_create_and_leaves_no_name(
    name: str, os_path: Callable[[str], str]
) -> None:
    too_big = shm_total() + GiB
    with pytest.raises(OSError, match="/dev/shm") as caught:
        Region.create(name, too_big)
    assert caught.value.errno == errno.ENOSPC
    assert not os.path.exists(os_path(name))
    with pytest.raises(memipc.NotFoundError):
        Region.open(name)
    with Region.create(name, 4 * KiB) as region:  # the name is free again
        assert region.size == 4 * KiB
