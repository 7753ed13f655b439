"""Attach table and liveness (memipc._lifetime), in one process."""

from __future__ import annotations

import os

from memipc import Region, _layout, _lifetime


def test_every_handle_gets_its_own_attach_row(name: str) -> None:
    handles = [Region.create(name, 10)]
    try:
        handles += [Region.open(name) for _ in range(3)]
        slots = [h._slot for h in handles]
        assert len(set(slots)) == 4
        assert None not in slots
    finally:
        for h in handles:
            h.close()


def test_handles_beyond_the_table_attach_unlisted_but_keep_the_region_alive(name: str) -> None:
    first = Region.create(name, 10)
    handles = [Region.open(name) for _ in range(_layout.ATTACH_SLOTS + 2)]
    try:
        assert sum(h._slot is None for h in handles) == 3
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
        row = other._slot
        other.close()
        with Region.open(name) as again:
            assert again._slot == row


def test_garbage_in_a_live_row_is_reported_as_unknown_pid(name: str) -> None:
    with Region.create(name, 10) as region, Region.open(name) as other:
        assert region._header is not None and other._slot is not None
        row = _layout.slot_offset(other._slot)
        region._header[row : row + 4] = (0xFFFFFFFF).to_bytes(4, "little")
        users = _lifetime.live_users(region._fd, region._header, region._slot)
        assert sorted(u.pid for u in users) == [0, os.getpid()]
        assert region.info().attached_pids == (os.getpid(),)


def test_process_identity_includes_start_time() -> None:
    ticks = _lifetime._platform.process_start_ticks(os.getpid())
    assert ticks is not None and ticks > 0
    assert _lifetime.process_alive(os.getpid(), ticks)
    assert not _lifetime.process_alive(os.getpid(), ticks + 1)  # same pid, other process
    assert not _lifetime.process_alive(2**22 + 5, ticks)
