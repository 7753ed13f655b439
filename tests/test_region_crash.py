"""Regions whose users are SIGKILLed (SPEC §3, lifetime).

A crashed user must never keep a memory-backed region alive, never destroy
one that a live process still uses, and never make a later open hang or a
later create fail for ever.  Children die either at a named fault point
(tests/_support/killpoints.py) or by a SIGKILL from the parent while they
hold the region.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import memipc
from memipc import Region
from tests._support import children, procs
from tests._support.killpoints import kill_at

TIMEOUT = 30.0
#: Generous "did not hang" bound for an open or a reclaim after a crash.
DID_NOT_HANG = 15.0
#: Pause between creates while an unpublished leftover is in its grace
#: period (about a second after its creator died; see reclaim_abandoned).
RETRY_PAUSE = 0.1


@contextmanager
def held_then_killed(function: Callable[..., int], *args: object) -> Iterator[procs.Child]:
    """Start a child running ``function(ready, release, *args)``, wait until it is ready, yield it.

    The test SIGKILLs it with :func:`kill`; the child is killed and reaped
    whatever happens.  A child that fails before it is ready fails the test
    with its own error.
    """
    ready, release = procs.CTX.Event(), procs.CTX.Event()
    with procs.started(function, ready, release, *args, timeout=TIMEOUT) as child:
        deadline = time.monotonic() + TIMEOUT
        while not ready.wait(0.05):
            if not child.process.is_alive():
                result = child.result(0)  # raises what the child raised, if it raised
                raise AssertionError(f"the child exited before it was ready, returning {result!r}")
            assert time.monotonic() < deadline, "the child did not get ready in time"
        yield child


def kill(child: procs.Child) -> None:
    """SIGKILL a holding child and check it died of it."""
    child.signal(signal.SIGKILL)
    child.process.join(TIMEOUT)
    assert child.process.exitcode == -signal.SIGKILL


def create_after_grace_period(name: str, size: int) -> Region:
    """Create ``name``, retrying while an abandoned, unpublished segment is in its grace period."""
    deadline = time.monotonic() + DID_NOT_HANG
    while True:
        try:
            return Region.create(name, size)
        except memipc.ExistsError:
            if time.monotonic() > deadline:
                raise
            time.sleep(RETRY_PAUSE)


# ---- attachers -------------------------------------------------------------


def test_attacher_killed_right_after_attaching_does_not_keep_the_region_alive(
    name: str, os_path: Callable[[str], str]
) -> None:
    with Region.create(name, 100) as region:
        region.buf[:4] = b"mine"
        kill_at("region.open.after_attach", children.open_region, name)
        # Its death destroyed nothing the parent uses, and left no user behind.
        assert os.path.exists(os_path(name))
        assert bytes(region.buf[:4]) == b"mine"
        assert region.info().attached_pids == (os.getpid(),)
    # The parent was the last live user: its close removed the name.
    assert not os.path.exists(os_path(name))


def test_attacher_killed_while_attached_does_not_keep_the_region_alive(
    name: str, os_path: Callable[[str], str]
) -> None:
    with Region.create(name, 100) as region:
        region.buf[:4] = b"mine"
        with held_then_killed(children.open_and_hold, name) as child:
            assert child.pid in region.info().attached_pids
            kill(child)
        assert os.path.exists(os_path(name))
        assert bytes(region.buf[:4]) == b"mine"
        assert region.info().attached_pids == (os.getpid(),)
    assert not os.path.exists(os_path(name))


# ---- creators killed before publishing -----------------------------------

UNPUBLISHED_POINTS = ["region.create.after_lock", "region.create.before_publish"]


@pytest.mark.parametrize("point", UNPUBLISHED_POINTS)
def test_open_of_a_region_whose_creator_died_before_publishing_fails_instead_of_hanging(
    name: str, os_path: Callable[[str], str], point: str
) -> None:
    kill_at(point, children.create, name, 100)
    assert os.path.exists(os_path(name))
    with pytest.raises(procs.ChildFailed) as caught:
        procs.run(children.open_region, name, timeout=DID_NOT_HANG)
    assert caught.value.error_type == "CorruptRegionError"
    assert name in str(caught.value)
    # A failed open removes nothing.
    assert os.path.exists(os_path(name))


@pytest.mark.parametrize("point", UNPUBLISHED_POINTS)
def test_create_reclaims_a_region_whose_creator_died_before_publishing(
    name: str, os_path: Callable[[str], str], point: str
) -> None:
    kill_at(point, children.create, name, 100)
    assert os.path.exists(os_path(name))
    with create_after_grace_period(name, 200) as region:
        assert region.created is True
        assert region.size == 200
        region.buf[:5] = b"fresh"
        assert procs.run(children.read_bytes, name, 0, 5, timeout=TIMEOUT) == b"fresh"
    assert not os.path.exists(os_path(name))


@pytest.mark.parametrize("point", UNPUBLISHED_POINTS)
def test_open_or_create_replaces_a_region_whose_creator_died_before_publishing(
    name: str, os_path: Callable[[str], str], point: str
) -> None:
    # A plain create reclaims such a leftover once it is a second old; an
    # open_or_create must not give up on it either (it runs in a child so that
    # a hang fails the test instead of stalling the run).
    kill_at(point, children.create, name, 100)
    assert procs.run(children.open_or_create_and_close, name, 100, timeout=DID_NOT_HANG) is True
    # The new region's last user closed it, so the name is gone.
    assert not os.path.exists(os_path(name))


# ---- creators killed after publishing ------------------------------------


def test_create_reclaims_the_name_of_a_killed_creator_that_nobody_else_used(
    name: str, os_path: Callable[[str], str]
) -> None:
    with held_then_killed(children.create_and_hold, name, 100, b"stale data") as child:
        kill(child)
    # Nobody closed it, so the name is still there...
    assert os.path.exists(os_path(name))
    # ...but it is abandoned, and a new create takes it over at once.
    with Region.create(name, 300) as region:
        assert region.created is True
        assert region.size == 300
        assert bytes(region.buf[:10]) == bytes(10)
        assert region.info().attached_pids == (os.getpid(),)
    assert not os.path.exists(os_path(name))


def test_open_of_the_name_of_a_killed_creator_sees_its_data_and_close_removes_it(
    name: str, os_path: Callable[[str], str]
) -> None:
    with held_then_killed(children.create_and_hold, name, 100, b"left behind") as child:
        kill(child)
        dead_pid = child.pid
    with Region.open(name) as region:
        assert region.created is False
        assert bytes(region.buf[:11]) == b"left behind"
        info = region.info()
        assert info.creator_pid == dead_pid
        assert info.attached_pids == (os.getpid(),)
    assert not os.path.exists(os_path(name))


def test_persistent_region_of_a_killed_creator_is_not_reclaimed_and_stays_until_unlink(
    name: str, os_path: Callable[[str], str]
) -> None:
    with held_then_killed(children.create_and_hold, name, 100, b"keep me", True) as child:
        kill(child)
    with pytest.raises(memipc.ExistsError):
        Region.create(name, 100)
    assert os.path.exists(os_path(name))
    with Region.open_or_create(name, 100) as region:
        assert region.created is False
        assert region.persist is True
        assert bytes(region.buf[:7]) == b"keep me"
    # Its last handle closed, but persist=True keeps the name until unlink().
    assert os.path.exists(os_path(name))
    with Region.open(name) as region:
        region.unlink()
        assert not os.path.exists(os_path(name))
        assert bytes(region.buf[:7]) == b"keep me"  # handles already open keep working
    with pytest.raises(memipc.NotFoundError):
        Region.open(name)


# ---- closers -----------------------------------------------------------------


def test_closer_killed_before_unlinking_leaves_a_name_that_create_reclaims(
    name: str, os_path: Callable[[str], str]
) -> None:
    kill_at("region.close.before_unlink", children.create_write_and_close, name, 100, b"half closed")
    assert os.path.exists(os_path(name))
    with Region.create(name, 100) as region:
        assert region.created is True
        assert bytes(region.buf[:11]) == bytes(11)
    assert not os.path.exists(os_path(name))


# ---- file-backed regions ---------------------------------------------------


def test_file_backed_data_survives_its_creator_being_killed(
    name: str, os_path: Callable[[str], str], tmp_path: Path
) -> None:
    path = tmp_path / "state.bin"
    with held_then_killed(children.create_and_hold, name, 4096, b"not flushed", False, str(path)) as child:
        kill(child)
    assert path.read_bytes()[:11] == b"not flushed"
    with Region.open_file(path) as mapped:
        assert bytes(mapped.buf[:11]) == b"not flushed"
    # The dead creator's name is reclaimed, and the file keeps its contents.
    with Region.create(name, 4096, path=path) as region:
        assert region.created is True
        assert bytes(region.buf[:11]) == b"not flushed"
    assert not os.path.exists(os_path(name))
