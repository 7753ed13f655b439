"""Attach table and liveness (memipc._lifetime), in one process."""

from __future__ import annotations

import os

from memipc import Region, _layout, _lifetime
from memipc._segment import Segment


def _row(region: Region) -> int | None:
    segment: Segment | None = region._segment
    assert segment is not None
    return segment.slot


def test_every_handle_gets_its_own_attach_row(name: str) -> None:
    handles = [Region.create(name, 10)]
    try:
        handles += [Region.open(name) for _ in range(3)]
        slots = [_row(h) for h in handles]
        assert len(set(slots)) == 4
        assert None not in slots
    finally:
        for h in handles:
            h.close()


def test_handles_beyond_the_table_attach_unlisted_but_keep_the_region_alive(name: str) -> None:
    first = Region.create(name, 10)
    handles = [Region.open(name) for _ in range(_layout.ATTACH_SLOTS + 2)]
    try:
        assert sum(_row(h) is None for h in handles) == 3
        assert len(first.info().attached_pids) == _layout.ATTACH_SLOTS
        first.close()
        for h in handles[:-1]:
            h.close()
        with Region.open(name) as again:  # the unlisted one alone keeps it alive
            assert again.size == 10
    finally:
        first.close()
        for h in handles:
            h.close()


def test_closed_rows_are_reused(name: str) -> None:
    with Region.create(name, 10):
        other = Region.open(name)
        row = _row(other)
        other.close()
        with Region.open(name) as again:
            assert _row(again) == row


def test_garbage_in_a_live_row_is_reported_as_unknown_pid(name: str) -> None:
    with Region.create(name, 10) as region, Region.open(name) as other:
        mine, theirs = region._segment, other._segment
        assert mine is not None and theirs is not None
        assert mine.header is not None and theirs.slot is not None
        row = _layout.slot_offset(theirs.slot)
        mine.header[row : row + 4] = (0xFFFFFFFF).to_bytes(4, "little")
        users = _lifetime.live_users(mine.fd, mine.header, mine.slot)
        assert sorted(u.pid for u in users) == [0, os.getpid()]
        assert region.info().attached_pids == (os.getpid(),)


def test_process_identity_includes_start_time() -> None:
    ticks = _lifetime._platform.process_start_ticks(os.getpid())
    assert ticks is not None and ticks > 0
    assert _lifetime.process_alive(os.getpid(), ticks)
    assert not _lifetime.process_alive(os.getpid(), ticks + 1)  # same pid, other process
    assert not _lifetime.process_alive(2**22 + 5, ticks)
