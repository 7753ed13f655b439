"""Child-process bodies for the region multi-process and crash tests.

Every function here is importable by the spawn start method, takes only
picklable arguments (names as strings, multiprocessing primitives passed at
process start) and returns picklable results.  Children that hold a region
until told to let go wait with a timeout, so a test that forgets them cannot
leave them running; the harness in :mod:`tests._support.procs` kills them
anyway when the test ends.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from memipc import Region

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.synchronize import Barrier, Event

    from memipc._names import Scope

#: How long a holding child waits for the parent before giving up.
HOLD_SECONDS = 60.0
#: How long a racing child waits at a barrier for its siblings.
BARRIER_SECONDS = 30.0
#: One pid slot (little-endian int64) per racer in the race test.
PID_SLOT = struct.Struct("<q")


def _wait(event: Event, what: str) -> None:
    if not event.wait(HOLD_SECONDS):
        raise TimeoutError(f"child {os.getpid()} waited {HOLD_SECONDS} s for {what}")


# ---- plain open / read / write --------------------------------------------


def read_bytes(name: str, offset: int, count: int, scope: Scope | None = None) -> bytes:
    """Open ``name`` and return ``count`` bytes at ``offset``."""
    with Region.open(name, scope=scope) as region:
        return bytes(region.buf[offset : offset + count])


def open_region(name: str) -> int:
    """Open ``name`` and close it again; returns the size (used where open should fail)."""
    with Region.open(name) as region:
        return region.size


def open_and_write(name: str, offset: int, data: bytes) -> int:
    """Open ``name``, write ``data`` at ``offset`` and close; returns the region's size."""
    with Region.open(name) as region:
        region.buf[offset : offset + len(data)] = data
        return region.size


def create_write_and_close(name: str, size: int, data: bytes, persist: bool = False) -> None:
    """Create ``name``, write ``data`` at 0 and close (the last user: unless ``persist``, the name goes)."""
    with Region.create(name, size, persist=persist) as region:
        region.buf[: len(data)] = data


def open_or_create_and_close(name: str, size: int) -> bool:
    """``open_or_create`` then close; returns ``created``."""
    with Region.open_or_create(name, size) as region:
        return region.created


def create(name: str, size: int) -> None:
    """Create ``name`` and close it (for kill points inside create)."""
    Region.create(name, size).close()


# ---- holding a region while the parent looks -----------------------------


def create_and_hold(
    ready: Event,
    release: Event,
    name: str,
    size: int,
    data: bytes,
    persist: bool = False,
    path: str | None = None,
) -> int:
    """Create ``name``, write ``data`` at 0, set ``ready``, hold it until ``release``; returns the pid."""
    with Region.create(name, size, persist=persist, path=path) as region:
        region.buf[: len(data)] = data
        ready.set()
        _wait(release, "release")
    return os.getpid()


def create_several_and_hold(
    ready: Event, release: Event, region_names: list[str], size: int, fill: int
) -> int:
    """Create every name, fill each with the byte ``fill``, set ``ready``, hold them until ``release``."""
    regions = []
    try:
        for region_name in region_names:
            regions.append(Region.create(region_name, size))
            regions[-1].buf[:] = bytes([fill]) * size
        ready.set()
        _wait(release, "release")
    finally:
        for region in regions:
            region.close()
    return os.getpid()


def open_and_hold(ready: Event, release: Event, name: str) -> int:
    """Open ``name``, set ``ready``, hold it until ``release``; returns the pid."""
    with Region.open(name):
        ready.set()
        _wait(release, "release")
    return os.getpid()


# ---- the open_or_create race ----------------------------------------------


def race_open_or_create(
    region_names: list[str], size: int, index: int, barrier: Barrier
) -> list[tuple[bool, list[int]]]:
    """For each name, race the siblings into ``open_or_create``; report who created and what was seen.

    Each round: line up at the barrier, open_or_create, write this pid into
    slot ``index``, line up again (now every racer is attached and has
    written), read every slot, line up a third time, close.  Returns, per
    round, ``(created, pids seen in every slot)``.
    """
    pid = os.getpid()
    rounds = []
    for region_name in region_names:
        barrier.wait(BARRIER_SECONDS)
        with Region.open_or_create(region_name, size) as region:
            with region.view() as view:
                view.pack(PID_SLOT.format, index * PID_SLOT.size, pid)
                barrier.wait(BARRIER_SECONDS)
                seen = [
                    view.unpack(PID_SLOT.format, slot * PID_SLOT.size)[0]
                    for slot in range(size // PID_SLOT.size)
                ]
            barrier.wait(BARRIER_SECONDS)
            rounds.append((region.created, seen))
    return rounds


# ---- file-backed regions --------------------------------------------------


def create_file_backed_write_and_close(name: str, size: int, path: str, data: bytes) -> None:
    """Create a file-backed region, write ``data`` at 0, close it (the last user)."""
    with Region.create(name, size, path=path) as region:
        region.buf[: len(data)] = data


# ---- numpy ---------------------------------------------------------------


def double_float64_array(name: str, count: int) -> float:
    """Open ``name``, view it as ``count`` float64s, return their sum and double them in place."""
    with Region.open(name) as region, region.view() as view:
        array = view.array("float64", (count,))
        total = float(array.sum())
        array *= 2
        del array  # the view cannot close while the array points into it
    return total


# ---- access modes ---------------------------------------------------------


def try_writes_through_read_only_handle(name: str, data_length: int) -> tuple[dict[str, str], bytes]:
    """Open ``name`` with access='r' and try every way to write; report what each raised.

    Returns ``({route: exception class name or "no error"}, bytes read after)``.
    """
    outcomes: dict[str, str] = {}
    with Region.open(name, access="r") as region:

        def attempt(route: str, write: Callable[[], None]) -> None:
            try:
                write()
            except Exception as error:
                outcomes[route] = type(error).__name__
            else:
                outcomes[route] = "no error"

        def through_buf() -> None:
            region.buf[0:3] = b"bad"

        def through_view_write() -> None:
            with region.view() as view:
                view.write(0, b"bad")

        def through_view_pack() -> None:
            with region.view() as view:
                view.pack("<I", 0, 0xDEADBEEF)

        def through_rw_view() -> None:
            with region.view(access="rw") as view:
                view.write(0, b"bad")

        attempt("buf", through_buf)
        attempt("view.write", through_view_write)
        attempt("view.pack", through_view_pack)
        attempt("view(access='rw')", through_rw_view)
        after = bytes(region.buf[:data_length])
    return outcomes, after


def write_through_copy_handle(name: str, data: bytes) -> bytes:
    """Open ``name`` with access='copy', write ``data`` at 0, return what this handle then reads."""
    with Region.open(name, access="copy") as region:
        region.buf[: len(data)] = data
        return bytes(region.buf[: len(data)])
