"""Regions shared between real spawned processes (SPEC §2-3).

Every child is a fresh interpreter started with the spawn method (see
tests/_support/procs.py), so nothing is inherited but the name string and the
multiprocessing primitives used to line processes up.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

import memipc
from memipc import Region
from tests._support import children, procs

TIMEOUT = 30.0
RACERS = 6
RACE_ROUNDS = 20
STALE_ROUNDS = 10


def test_region_created_in_the_parent_is_seen_by_name_in_a_child(
    name: str, os_path: Callable[[str], str]
) -> None:
    with Region.create(name, 10_000) as region:
        region.buf[5000:5011] = b"from parent"
        assert procs.run(children.read_bytes, name, 5000, 11, timeout=TIMEOUT) == b"from parent"
        # The child's close did not take the region away from the parent.
        assert os.path.exists(os_path(name))
        assert bytes(region.buf[5000:5011]) == b"from parent"
    assert not os.path.exists(os_path(name))


def test_writes_by_a_child_are_seen_by_the_parent(name: str, os_path: Callable[[str], str]) -> None:
    with Region.create(name, 10_000) as region:
        size = procs.run(children.open_and_write, name, 9990, b"from child", timeout=TIMEOUT)
        assert size == 10_000
        assert bytes(region.buf[9990:10_000]) == b"from child"
        assert os.path.exists(os_path(name))
    assert not os.path.exists(os_path(name))


def test_region_created_in_a_child_can_be_opened_by_name_in_the_parent(
    name: str, os_path: Callable[[str], str]
) -> None:
    ready, release = procs.CTX.Event(), procs.CTX.Event()
    with procs.started(
        children.create_and_hold, ready, release, name, 4097, b"made by child", timeout=TIMEOUT
    ) as child:
        assert ready.wait(TIMEOUT), "the child did not create the region in time"
        with Region.open(name) as region:
            assert region.created is False
            assert region.size == 4097
            assert bytes(region.buf[:13]) == b"made by child"
            assert region.info().creator_pid == child.pid
        # The parent closed first; the child still holds the name.
        assert os.path.exists(os_path(name))
        release.set()
        assert child.result() == child.pid
    # The child was the last user: its close removed the name.
    assert not os.path.exists(os_path(name))


def race(region_names: list[str]) -> tuple[list[int], list[list[tuple[bool, list[int]]]]]:
    """Run RACERS spawned processes through ``children.race_open_or_create``; (pids, results)."""
    size = RACERS * children.PID_SLOT.size
    barrier = procs.CTX.Barrier(RACERS)
    racers: list[procs.Child] = []
    try:
        for index in range(RACERS):
            racers.append(
                procs.Child(children.race_open_or_create, region_names, size, index, barrier, timeout=60.0)
            )
        results = [racer.result() for racer in racers]
    finally:
        barrier.abort()  # releases any racer still waiting if one failed
        for racer in racers:
            racer.kill()
    return [racer.pid for racer in racers], results


def test_open_or_create_race_between_six_processes_creates_exactly_once(
    names: Callable[[], str], os_path: Callable[[str], str]
) -> None:
    # Acceptable outcome, per round: exactly one racer sees created=True, and
    # every racer sees every racer's pid (they all attached to one region).
    # Anything else (two creators, a missing pid, an error) is a failure.
    region_names = [names() for _ in range(RACE_ROUNDS)]
    pids, results = race(region_names)
    for round_index, region_name in enumerate(region_names):
        outcomes = [result[round_index] for result in results]
        creators = [pid for pid, (created, _) in zip(pids, outcomes, strict=True) if created]
        assert len(creators) == 1, f"round {round_index}: creators {creators}, expected exactly one"
        for pid, (_, seen) in zip(pids, outcomes, strict=True):
            assert seen == pids, f"round {round_index}: racer {pid} saw pids {seen}, expected {pids}"
        # All racers closed: the last one removed the name, and none was left behind.
        assert not os.path.exists(os_path(region_name))


def test_open_or_create_race_over_names_left_by_a_killed_creator_ends_on_one_region(
    names: Callable[[], str], os_path: Callable[[str], str]
) -> None:
    # The names exist but their only user is dead.  Acceptable outcomes, per
    # round: one racer reclaims the name and creates (created=True once), or
    # every racer opens the leftover (created=True never); either way all six
    # share one region.  Two creators, a split, or an error are failures.
    region_names = [names() for _ in range(STALE_ROUNDS)]
    ready, release = procs.CTX.Event(), procs.CTX.Event()
    size = RACERS * children.PID_SLOT.size
    with procs.started(
        children.create_several_and_hold, ready, release, region_names, size, 0xFF, timeout=TIMEOUT
    ) as holder:
        assert ready.wait(TIMEOUT), "the creator did not create the regions in time"
        holder.signal(signal.SIGKILL)
        holder.process.join(TIMEOUT)
        assert holder.process.exitcode == -signal.SIGKILL
    assert all(os.path.exists(os_path(region_name)) for region_name in region_names)
    pids, results = race(region_names)
    for round_index, region_name in enumerate(region_names):
        outcomes = [result[round_index] for result in results]
        creators = [pid for pid, (created, _) in zip(pids, outcomes, strict=True) if created]
        assert len(creators) <= 1, f"round {round_index}: creators {creators}, expected at most one"
        for pid, (_, seen) in zip(pids, outcomes, strict=True):
            assert seen == pids, f"round {round_index}: racer {pid} saw pids {seen}, expected {pids}"
        assert not os.path.exists(os_path(region_name))


def test_file_backed_region_keeps_its_data_after_every_process_exits(
    name: str, os_path: Callable[[str], str], tmp_path: Path
) -> None:
    path = tmp_path / "state.bin"
    procs.run(
        children.create_file_backed_write_and_close, name, 8192, str(path), b"saved state", timeout=TIMEOUT
    )
    # The name went with its last user; the file stayed, with the data.
    assert not os.path.exists(os_path(name))
    with pytest.raises(memipc.NotFoundError):
        Region.open(name)
    assert path.stat().st_size == 8192
    with Region.open_file(path) as mapped:
        assert mapped.size == 8192
        assert bytes(mapped.buf[:11]) == b"saved state"
    with Region.create(name, 8192, path=path) as again:
        assert again.created is True
        assert bytes(again.buf[:11]) == b"saved state"
        assert procs.run(children.read_bytes, name, 0, 11, timeout=TIMEOUT) == b"saved state"
    assert path.read_bytes()[:11] == b"saved state"


def test_persistent_region_created_by_a_child_outlives_it_until_unlink(
    name: str, os_path: Callable[[str], str]
) -> None:
    procs.run(children.create_write_and_close, name, 100, b"still here", True, timeout=TIMEOUT)
    assert os.path.exists(os_path(name))
    with Region.open(name) as region:
        assert region.persist is True
        assert bytes(region.buf[:10]) == b"still here"
    assert os.path.exists(os_path(name))
    with Region.open(name) as region:
        region.unlink()
    assert not os.path.exists(os_path(name))


def test_numpy_array_over_a_view_is_shared_with_a_child(name: str) -> None:
    np = pytest.importorskip("numpy")
    count = 1000
    with Region.create(name, count * 8) as region, region.view() as view:
        array = view.array("float64", (count,))
        try:
            array[:] = np.arange(count, dtype="float64")
            total = procs.run(children.double_float64_array, name, count, timeout=TIMEOUT)
            assert total == count * (count - 1) / 2
            assert np.array_equal(array, 2 * np.arange(count, dtype="float64"))
        finally:
            del array


def test_info_lists_a_child_while_it_holds_the_region_open(name: str) -> None:
    ready, release = procs.CTX.Event(), procs.CTX.Event()
    with Region.create(name, 64) as region:
        with procs.started(children.open_and_hold, ready, release, name, timeout=TIMEOUT) as child:
            assert ready.wait(TIMEOUT), "the child did not open the region in time"
            assert region.info().attached_pids == tuple(sorted((os.getpid(), child.pid)))
            release.set()
            assert child.result() == child.pid
        assert region.info().attached_pids == (os.getpid(),)


def test_global_scope_region_is_visible_from_a_child(name: str) -> None:
    global_name = "Global\\" + name
    with Region.create(global_name, 100) as region:
        assert region.scope == "global"
        region.buf[:6] = b"global"
        assert procs.run(children.read_bytes, global_name, 0, 6, timeout=TIMEOUT) == b"global"
        assert procs.run(children.read_bytes, name, 0, 6, "global", timeout=TIMEOUT) == b"global"
        # The user scope is another namespace: the bare name is not there.
        with pytest.raises(procs.ChildFailed) as caught:
            procs.run(children.read_bytes, name, 0, 6, timeout=TIMEOUT)
        assert caught.value.error_type == "NotFoundError"


def test_read_only_child_cannot_write_by_any_route(name: str) -> None:
    with Region.create(name, 100) as region:
        region.buf[:8] = b"original"
        outcomes, seen = procs.run(children.try_writes_through_read_only_handle, name, 8, timeout=TIMEOUT)
        assert seen == b"original"
        assert set(outcomes) == {"buf", "view.write", "view.pack", "view(access='rw')"}
        for route, outcome in outcomes.items():
            assert outcome in ("TypeError", "PermissionError"), f"write through {route}: {outcome}"
        assert bytes(region.buf[:8]) == b"original"


def test_copy_on_write_child_writes_stay_private(name: str) -> None:
    with Region.create(name, 100) as region:
        region.buf[:8] = b"original"
        seen = procs.run(children.write_through_copy_handle, name, b"private!", timeout=TIMEOUT)
        assert seen == b"private!"
        assert bytes(region.buf[:8]) == b"original"
        assert procs.run(children.read_bytes, name, 0, 8, timeout=TIMEOUT) == b"original"
