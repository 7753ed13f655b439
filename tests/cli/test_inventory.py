"""The inventory behind `memipc ls / info / rm / gc`, called directly.

What it must never do: crash on a segment that is not a valid memipc object,
hang on one that is not a file, count as a user of what it looks at, keep
anything alive, or remove what memipc did not make.  Corrupt segments are
written here byte by byte, as a damaged file or another program would leave
them; dead users are real processes killed with SIGKILL.

Every test works on its own names only: `collect` is given the test's own
entries, never the whole of /dev/shm, which other test runs share.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import memipc
from memipc import _layout, _names
from memipc._platform import current as platform
from memipc.cli import _inventory
from tests._support import children as region_children
from tests._support.killpoints import kill_at
from tests.cli import children
from tests.cli.harness import DATA_OFFSET, held, segment_bytes, write_segment

PathOf = Callable[[str], str]

#: Age that makes an unpublished segment abandoned (ABANDONED_AFTER_SECONDS is 1 s).
LONG_AGO = 60.0


def _entry(name: str) -> _inventory.Entry:
    entry = _inventory.find(name)
    assert entry is not None, f"{name} was not found"
    return entry


def _mine(tag: str) -> list[_inventory.Entry]:
    return [entry for entry in _inventory.scan(include_foreign=True) if tag in entry.os_name]


# ---- what is listed, and how ---------------------------------------------------------


def test_an_object_in_use_here_is_listed_with_its_header_fields_and_this_process_as_its_user(
    name: str, os_path: PathOf
) -> None:
    with memipc.Region.create(name, 5000) as region:
        entry = _entry(name)
        assert (entry.name, entry.scope, entry.kind, entry.size) == (name, "user", "region", 5000)
        assert entry.os_name == os.path.basename(os_path(name))
        assert entry.creator_pid == os.getpid()
        assert entry.created is not None and abs(entry.created - time.time()) < 60
        assert entry.attached == (os.getpid(),)
        assert entry.in_use and not entry.stale and not entry.persist
        assert entry.backing == "memory" and entry.problem is None
        assert entry.allocated == os.stat(os_path(name)).st_blocks * 512
        assert [e.os_name for e in _inventory.scan() if e.name == name] == [entry.os_name]
        assert region.info().attached_pids == (os.getpid(),)


def test_the_json_form_of_an_entry_has_every_documented_field_and_is_serializable(name: str) -> None:
    with memipc.Queue(name, 4096):
        record = _entry(name).as_json()
    assert set(record) == {
        "name", "os_name", "scope", "kind", "size", "allocated", "creator_pid", "created",
        "attached_pids", "in_use", "stale", "persist", "backing", "problem",
    }  # fmt: skip
    assert json.loads(json.dumps(record)) == record
    assert record["attached_pids"] == [os.getpid()]


def test_looking_counts_as_no_user_and_keeps_nothing_alive(name: str, os_path: PathOf) -> None:
    with held(children.region, name) as holder:
        before = Path(os_path(name)).read_bytes()
        for _ in range(3):
            entry = _entry(name)
            assert _inventory.state(entry) == {}
            assert [e for e in _inventory.scan() if e.name == name] == [entry]
        assert entry.attached == (holder.pid,)
        assert Path(os_path(name)).read_bytes() == before  # no byte was written
        holder.finish()
    # The holder was the only user: its close removed the name; no look kept it.
    assert not os.path.exists(os_path(name))
    assert _inventory.find(name) is None


def test_a_global_object_is_found_by_its_global_name_and_its_os_name_but_not_as_a_user_name(
    name: str,
) -> None:
    with memipc.Region.create("Global\\" + name, 64):
        entry = _entry("Global\\" + name)
        assert (entry.name, entry.scope, entry.kind) == ("Global\\" + name, "global", "region")
        assert entry.os_name == f"memipc.g.{name}"
        assert _entry(entry.os_name) == entry
        assert _inventory.find(name) is None
        assert _inventory.find("Local\\" + name) is None


def test_a_user_object_is_found_by_its_name_with_or_without_local_and_by_its_os_name(name: str) -> None:
    with memipc.Publisher(name, 1 << 12):
        entry = _entry(name)
        assert _entry("Local\\" + name) == entry
        assert _entry(_names.parse(name).os_name) == entry


@pytest.mark.parametrize(
    "bad", ["", "a/b", "../x", "a..b", "with space", "x" * 300, "Global\\", "Global\\a/b", "/", "."]
)
def test_a_name_that_cannot_exist_is_simply_not_found(bad: str) -> None:
    assert _inventory.find(bad) is None


def test_a_foreign_segment_is_found_by_its_exact_name_only_as_foreign(name: str) -> None:
    foreign = f"{name}-foreign"
    write_segment(platform.segment_path(foreign), b"not memipc" * 100)
    entry = _entry(foreign)
    assert (entry.kind, entry.scope, entry.name, entry.size) == ("foreign", "foreign", foreign, 1000)
    assert not entry.memipc and not entry.stale and entry.creator_pid is None
    assert _inventory.state(entry) == {}
    assert [e for e in _inventory.scan() if e.os_name == foreign] == []
    assert [e.kind for e in _inventory.scan(include_foreign=True) if e.os_name == foreign] == ["foreign"]


def test_a_segment_of_another_user_with_a_memipc_like_name_is_foreign(name: str) -> None:
    other = f"memipc.u{os.getuid() + 1}.{name}"
    write_segment(platform.segment_path(other), segment_bytes(name))
    entry = _entry(other)
    assert entry.kind == "foreign" and not entry.memipc
    assert _inventory.find(name) is None


# ---- corrupt and unfinished segments ----------------------------------------------------


CORRUPTIONS: dict[str, tuple[Callable[[str], bytes], str]] = {
    "random bytes": (lambda name: os.urandom(8192), "bad magic"),
    "random bytes, shorter than a header": (lambda name: os.urandom(100), "only 100 bytes"),
    "a header of another layout version": (
        lambda name: segment_bytes(name, abi=_layout.ABI_VERSION + 1),
        "layout version",
    ),
    "a header of the other byte order": (
        lambda name: segment_bytes(name, magic=int.from_bytes(_layout.MAGIC_BYTES, "big")),
        "other byte order",
    ),
    "a header of an unknown kind": (lambda name: segment_bytes(name, kind=250), "unknown kind 250"),
    "a header promising more than the file holds": (
        lambda name: segment_bytes(name, size=1 << 20, file_bytes=DATA_OFFSET + 4096),
        "promises",
    ),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupt_segment_with_a_memipc_name_is_listed_as_corrupt_with_the_reason(
    name: str, os_path: PathOf, corruption: str
) -> None:
    make, reason = CORRUPTIONS[corruption]
    data = make(name)
    write_segment(os_path(name), data)
    entry = _entry(name)
    assert entry.kind == "corrupt" and entry.memipc
    assert entry.problem is not None and reason in entry.problem
    assert entry.size == len(data)
    assert not entry.stale and not entry.in_use and entry.attached == ()
    assert _inventory.state(entry) == {}
    assert [e.kind for e in _inventory.scan() if e.name == name] == ["corrupt"]
    assert Path(os_path(name)).read_bytes() == data  # looking changed nothing


def test_a_fifo_with_a_memipc_name_is_reported_without_opening_it(name: str, os_path: PathOf) -> None:
    os.mkfifo(os_path(name), 0o600)
    try:  # the name fixture removes only regular files: this one is ours to remove
        entry = _entry(name)  # opening a FIFO for reading would wait for a writer for ever
        assert entry.kind == "corrupt"
        assert entry.problem is not None and "not a regular file" in entry.problem
        assert [e for e in _inventory.scan(include_foreign=True) if e.name == name] == []
    finally:
        os.unlink(os_path(name))


@pytest.mark.parametrize(
    "kind", ["mutex", "semaphore", "event", "condition", "rwlock", "queue", "pubsub", "rpc"]
)
def test_state_of_a_header_too_small_for_its_kind_is_corrupt_region_error_not_a_crash(
    name: str, os_path: PathOf, kind: str
) -> None:
    write_segment(os_path(name), segment_bytes(name, kind=_layout.KIND_CODES[kind], size=8))
    entry = _entry(name)
    assert entry.kind == kind
    with pytest.raises(memipc.CorruptRegionError, match="outside"):
        _inventory.state(entry)


def test_state_of_garbage_behind_a_valid_header_never_raises_anything_but_corrupt_region_error(
    name: str, os_path: PathOf
) -> None:
    random_kinds = ["mutex", "semaphore", "event", "condition", "rwlock", "queue", "pubsub", "rpc"]
    for index, kind in enumerate(random_kinds):
        each = f"{name}-{index}"
        header = segment_bytes(each, kind=_layout.KIND_CODES[kind], size=1 << 16)[:DATA_OFFSET]
        write_segment(os_path(each), header + os.urandom(1 << 16))
        entry = _entry(each)
        try:
            state = _inventory.state(entry)
        except memipc.CorruptRegionError:
            continue
        json.dumps(state)  # whatever was read, it is plain data


def test_an_empty_segment_is_an_unfinished_creation_then_stale_once_abandoned(
    name: str, os_path: PathOf
) -> None:
    write_segment(os_path(f"{name}-new"), b"")
    write_segment(os_path(f"{name}-old"), b"", age=LONG_AGO)
    new, old = _entry(f"{name}-new"), _entry(f"{name}-old")
    assert (new.kind, old.kind) == ("unpublished", "unpublished")
    assert not new.stale  # its creator may still be sizing it
    assert old.stale
    assert old.problem == "its creator died while creating it"


def test_a_header_whose_magic_was_never_published_is_unfinished_then_stale(
    name: str, os_path: PathOf
) -> None:
    write_segment(os_path(name), segment_bytes(name, magic=0), age=LONG_AGO)
    entry = _entry(name)
    assert entry.kind == "unpublished" and entry.stale


@pytest.mark.parametrize("point", ["region.create.after_lock", "region.create.before_publish"])
def test_a_creator_killed_before_publishing_leaves_a_stale_entry_that_collect_removes(
    name: str, os_path: PathOf, point: str
) -> None:
    kill_at(point, region_children.create, name, 4096)
    then = time.time() - LONG_AGO
    os.utime(os_path(name), (then, then))
    entry = _entry(name)
    assert entry.kind == "unpublished" and entry.stale and not entry.in_use
    assert [(r.entry.name, r.removed) for r in _inventory.collect([entry], dry_run=False)] == [(name, True)]
    assert not os.path.exists(os_path(name))


# ---- kind-specific state ----------------------------------------------------------------


def test_state_of_a_queue_counts_what_was_sent_and_received(names: Callable[[], str]) -> None:
    mpmc, spsc = names(), names()
    with memipc.Queue(mpmc, 4096) as queue, memipc.Queue(spsc, 4096, mode="spsc"):
        for index in range(5):
            queue.send(b"x" * index)
        queue.recv(timeout=1)
        queue.recv(timeout=1)
        state = _inventory.state(_entry(mpmc))
        assert state["mode"] == "mpmc" and state["capacity"] == 4096
        assert (state["depth"], state["sent"], state["received"]) == (3, 5, 2)
        assert (state["bytes_sent"], state["bytes_received"]) == (0 + 1 + 2 + 3 + 4, 0 + 1)
        assert state["max_message"] == queue.max_message
        assert _inventory.state(_entry(spsc))["mode"] == "spsc"


def test_state_of_a_mutex_names_its_owner_while_held_and_nobody_after(name: str) -> None:
    mutex = memipc.Mutex(name)
    try:
        with mutex:
            owned = _inventory.state(_entry(name))
        free = _inventory.state(_entry(name))
    finally:
        mutex.close()
    assert owned["owner_pid"] == os.getpid() and owned["owner_alive"] is True
    assert owned["owner_tid"] is not None
    assert (free["owner_pid"], free["owner_alive"], free["operations"]) == (None, None, 1)


def test_state_of_a_semaphore_event_and_condition(names: Callable[[], str]) -> None:
    semaphore_name, manual, auto, condition_name, mutex_name = (names() for _ in range(5))
    semaphore = memipc.Semaphore(semaphore_name, initial=3, maximum=7)
    manual_event = memipc.Event(manual, initial=True)
    auto_event = memipc.Event(auto, manual_reset=False)
    mutex = memipc.Mutex(mutex_name)
    condition = memipc.Condition(condition_name, mutex)
    try:
        assert semaphore.acquire(timeout=1)
        state = _inventory.state(_entry(semaphore_name))
        assert (state["value"], state["maximum"], state["sleepers"]) == (2, 7, 0)
        assert _inventory.state(_entry(manual))["signaled"] is True
        assert _inventory.state(_entry(manual))["reset"] == "manual"
        auto_state = _inventory.state(_entry(auto))
        assert (auto_state["signaled"], auto_state["reset"]) == (False, "auto")
        assert set(_inventory.state(_entry(condition_name))) >= {"sleepers", "pending", "sequence"}
    finally:
        for thing in (condition, mutex, auto_event, manual_event, semaphore):
            thing.close()


def test_state_of_an_rwlock_names_its_readers_and_its_writer(name: str) -> None:
    lock = memipc.RWLock(name)
    try:
        with lock.read():
            reading = _inventory.state(_entry(name))
        with lock.write():
            writing = _inventory.state(_entry(name))
    finally:
        lock.close()
    assert reading["reader_pids"] == [os.getpid()] and reading["writer_pid"] is None
    assert writing["reader_pids"] == [] and writing["writer_pid"] == os.getpid()
    assert writing["writer_alive"] is True


def test_state_of_a_pubsub_lists_each_subscriber_with_its_lag(name: str) -> None:
    with (
        memipc.Publisher(name, 1 << 16) as publisher,
        memipc.Subscriber(name) as first,
        memipc.Subscriber(name),
    ):
        for index in range(4):
            publisher.send(b"n%d" % index)
        first.recv(timeout=1)
        state = _inventory.state(_entry(name))
    assert state["sent"] == 4 and state["overflow"] == "block" and state["capacity"] == 1 << 16
    lags = sorted((s["lag"], s["received"], s["pid"]) for s in state["subscribers"])
    assert lags == [(3, 1, os.getpid()), (4, 0, os.getpid())]


def test_state_of_an_rpc_service_lists_its_servers_and_clients(name: str) -> None:
    with memipc.Server(name, capacity=1 << 14):
        alone = _inventory.state(_entry(name))
        with memipc.Client(name):
            with_client = _inventory.state(_entry(name))
    assert alone["server_pids"] == [os.getpid()] and alone["client_pids"] == []
    assert with_client["client_pids"] == [os.getpid()]
    assert alone["requests"]["depth"] == 0


# ---- removing and collecting --------------------------------------------------------------


def test_collect_takes_only_stale_memipc_objects_and_a_dry_run_takes_nothing(
    name: str, os_path: PathOf
) -> None:
    tag = name  # every name below starts with it, so the fixture removes them all
    dead, persistent, live, corrupt = (f"{tag}-{what}" for what in ("dead", "persistent", "live", "corrupt"))
    foreign = platform.segment_path(f"{tag}-foreign")
    with held(children.region, dead) as holder:
        holder.sigkill()
    region_children.create_write_and_close(persistent, 64, b"p", True)
    write_segment(os_path(corrupt), os.urandom(8192))
    write_segment(foreign, b"f" * 64)
    with memipc.Region.create(live, 64):
        entries = _mine(tag)
        assert {e.name: e.stale for e in entries} == {
            dead: True, persistent: False, live: False, corrupt: False, f"{tag}-foreign": False,
        }  # fmt: skip

        dry = _inventory.collect(entries, dry_run=True)
        assert [(r.entry.name, r.removed, r.reason) for r in dry] == [(dead, False, "would remove")]
        assert os.path.exists(os_path(dead))

        wet = _inventory.collect(entries, dry_run=False)
        assert [(r.entry.name, r.removed) for r in wet] == [(dead, True)]
        assert not os.path.exists(os_path(dead))
        for kept in (os_path(persistent), os_path(live), os_path(corrupt), foreign):
            assert os.path.exists(kept)
        assert _inventory.collect(_mine(tag), dry_run=False) == []


def test_collect_leaves_an_object_that_was_opened_again_after_the_scan(name: str, os_path: PathOf) -> None:
    with held(children.region, name) as holder:
        holder.sigkill()
    entry = _entry(name)
    assert entry.stale
    with memipc.Region.open(name) as region:
        (result,) = _inventory.collect([entry], dry_run=False)
        assert not result.removed and "in use again" in result.reason
        assert bytes(region.buf[:4]) == b"kept"
    assert not os.path.exists(os_path(name))  # this process was its last user


def test_remove_refuses_an_object_in_use_unless_forced_and_its_user_keeps_it(
    name: str, os_path: PathOf
) -> None:
    with memipc.Region.create(name, 64) as region:
        refused = _inventory.remove(_entry(name), force=False)
        assert not refused.removed and f"pid {os.getpid()}" in refused.reason
        assert os.path.exists(os_path(name))
        forced = _inventory.remove(_entry(name), force=True)
        assert forced.removed and "keep working" in forced.reason
        assert not os.path.exists(os_path(name))
        region.buf[:2] = b"ok"
        assert bytes(region.buf[:2]) == b"ok"


def test_remove_never_removes_a_foreign_segment_even_when_forced(name: str) -> None:
    path = platform.segment_path(f"{name}-foreign")
    write_segment(path, b"theirs")
    entry = _entry(f"{name}-foreign")
    for force in (False, True):
        result = _inventory.remove(entry, force=force)
        assert not result.removed and "not a memipc object" in result.reason
    assert Path(path).read_bytes() == b"theirs"


def test_remove_of_an_entry_that_went_away_meanwhile_says_so(name: str) -> None:
    region = memipc.Region.create(name, 64, persist=True)
    region.close()
    entry = _entry(name)
    platform.unlink_segment(entry.os_name)
    result = _inventory.remove(entry, force=False)
    assert not result.removed and "already gone" in result.reason
