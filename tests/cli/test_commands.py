"""`memipc ls / info / rm / gc / watch`, each run as a real subprocess (``python -m memipc``).

The objects they look at belong to other processes (tests/cli/children.py),
alive or SIGKILLed while holding them; corrupt and foreign segments are
written into /dev/shm byte by byte.  `--json` output is parsed whole, so
anything but JSON on stdout fails the test.  `gc` runs in a mount namespace
with a /dev/shm of its own (see harness.PrivateShm): in the shared one it
would also collect what other test runs leave there on purpose.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import memipc
from memipc import _layout
from memipc._platform import current as platform
from tests._support import children as region_children
from tests._support import procs
from tests.cli import children
from tests.cli.harness import (
    TIMEOUT,
    PrivateShm,
    by_name,
    held,
    memipc_json,
    segment_bytes,
    write_segment,
)
from tests.cli.harness import memipc as run

PathOf = Callable[[str], str]

KINDS = ("region", "mutex", "event", "semaphore", "condition", "rwlock", "queue", "pubsub", "rpc")
#: What each sync kind occupies (layout.h); channels are checked against their capacity.
SYNC_SIZES = {
    "mutex": _layout.MUTEX_SIZE,
    "event": _layout.EVENT_SIZE,
    "semaphore": _layout.SEMAPHORE_SIZE,
    "condition": _layout.CONDITION_SIZE,
    "rwlock": _layout.RWLOCK_SIZE,
}
CHANNEL_CAPACITIES = {
    "queue": children.CAPACITY,
    "pubsub": children.BUS_CAPACITY,
    "rpc": children.RPC_CAPACITY,
}


def _row(text: str, name: str) -> list[str]:
    """The cells of the `memipc ls` row of ``name`` (sizes such as "4.9 KiB" are two cells)."""
    rows = [line.split() for line in text.splitlines() if line.split()[:1] == [name]]
    assert len(rows) == 1, f"{name} is not listed once in:\n{text}"
    return rows[0]


def _field(text: str, key: str) -> str:
    """The value of ``key`` in `memipc info` text output."""
    match = re.search(rf"^{re.escape(key)}  +(.*)$", text, re.MULTILINE)
    assert match, f"no {key!r} line in:\n{text}"
    return match.group(1)


@pytest.fixture
def every_kind(names: Callable[[], str]) -> dict[str, str]:
    return {kind: names() for kind in KINDS}


# ---- ls ---------------------------------------------------------------------------------


def test_ls_lists_every_kind_a_live_process_made_with_size_creator_and_that_process_as_user(
    every_kind: dict[str, str], os_path: PathOf
) -> None:
    with held(children.every_kind, every_kind) as holder:
        listed = by_name(memipc_json("ls"))
        text = run("ls")
        on_disk = {name: os.stat(os_path(name)) for name in every_kind.values()}
    assert text.returncode == 0, text.stderr
    for kind, name in every_kind.items():
        entry = listed[name]
        assert (entry["kind"], entry["scope"], entry["backing"]) == (kind, "user", "memory")
        assert entry["creator_pid"] == holder.pid
        assert entry["attached_pids"] == [holder.pid]
        assert entry["in_use"] and not entry["stale"] and not entry["persist"]
        assert entry["problem"] is None
        assert entry["allocated"] == on_disk[name].st_blocks * 512
        assert entry["size"] <= on_disk[name].st_size
        if kind == "region":
            assert entry["size"] == children.REGION_SIZE
        elif kind in SYNC_SIZES:
            assert entry["size"] == SYNC_SIZES[kind]
        else:
            assert CHANNEL_CAPACITIES[kind] < entry["size"] < CHANNEL_CAPACITIES[kind] + (1 << 16)
        row = _row(text.stdout, name)
        assert row[1:3] == ["user", kind]
        assert row[5:7] == [str(holder.pid), str(holder.pid)]  # creator, users
        assert row[8:] == ["-", "memory"]  # not stale, not persistent
    assert text.stdout.splitlines()[0].split() == [
        "NAME", "SCOPE", "KIND", "SIZE", "CREATOR", "USERS", "AGE", "STATE", "BACKING",
    ]  # fmt: skip


def test_ls_shows_everything_a_sigkilled_process_made_as_stale_with_no_users(
    every_kind: dict[str, str],
) -> None:
    with held(children.every_kind, every_kind) as holder:
        holder.sigkill()
    listed = by_name(memipc_json("ls"))
    text = run("ls")
    for kind, name in every_kind.items():
        entry = listed[name]
        assert entry["kind"] == kind and entry["creator_pid"] == holder.pid
        assert entry["stale"] and not entry["in_use"] and entry["attached_pids"] == []
        row = _row(text.stdout, name)
        assert row[6:] == ["-", row[7], "stale", "memory"]
    assert re.search(r"\d+ stale object\(s\) hold .*; `memipc gc` removes them", text.stderr)


def test_ls_shows_a_persistent_region_of_a_dead_creator_as_persistent_not_stale(
    name: str, os_path: PathOf
) -> None:
    with held(children.region, name, True) as holder:
        holder.sigkill()
    entry = by_name(memipc_json("ls"))[name]
    assert entry["persist"] and not entry["stale"] and not entry["in_use"]
    assert entry["creator_pid"] == holder.pid and entry["attached_pids"] == []
    assert _row(run("ls").stdout, name)[-2:] == ["persist", "memory"]
    assert _field(run("info", name).stdout, "state") == "persistent"
    assert os.path.exists(os_path(name))


def test_ls_shows_the_data_file_of_a_file_backed_region_as_its_backing(name: str, tmp_path: Path) -> None:
    data = tmp_path / "frames.bin"
    with held(children.region, name, False, str(data)) as holder:
        entry = by_name(memipc_json("ls"))[name]
        row = _row(run("ls").stdout, name)
        info = run("info", name).stdout
    assert entry["backing"] == str(data) and entry["creator_pid"] == holder.pid
    assert entry["size"] == children.REGION_SIZE
    assert row[-1] == str(data)
    assert _field(info, "backing") == str(data)


def test_ls_lists_corrupt_segments_and_with_all_foreign_ones_without_failing(
    names: Callable[[], str], os_path: PathOf
) -> None:
    garbage, truncated, bad_abi, empty, well_formed = (names() for _ in range(5))
    foreign = f"{names()}-foreign"
    other_user = f"memipc.u{os.getuid() + 1}.{names()}"
    write_segment(os_path(garbage), os.urandom(8192))
    write_segment(os_path(truncated), os.urandom(100))
    write_segment(os_path(bad_abi), segment_bytes(bad_abi, abi=_layout.ABI_VERSION + 1))
    write_segment(os_path(empty), b"")
    write_segment(os_path(well_formed), segment_bytes(well_formed))
    write_segment(platform.segment_path(foreign), b"\xff" * 3000)
    write_segment(platform.segment_path(other_user), segment_bytes("theirs"))

    plain = run("ls", "--json")
    assert plain.returncode == 0, plain.stderr
    listed = by_name(json.loads(plain.stdout))  # the whole of stdout is JSON
    assert listed[garbage]["kind"] == "corrupt" and "bad magic" in listed[garbage]["problem"]
    assert listed[truncated]["kind"] == "corrupt" and "only 100 bytes" in listed[truncated]["problem"]
    assert listed[bad_abi]["kind"] == "corrupt" and "layout version" in listed[bad_abi]["problem"]
    assert listed[empty]["kind"] == "unpublished"
    assert listed[well_formed]["kind"] == "region" and listed[well_formed]["stale"]
    for name in (garbage, truncated, bad_abi):
        assert not listed[name]["stale"] and listed[name]["scope"] == "user"
    assert foreign not in listed and other_user not in listed

    everything = run("ls", "--all", "--json")
    assert everything.returncode == 0, everything.stderr
    listed_all = by_name(json.loads(everything.stdout))
    for name in (foreign, other_user):
        assert (listed_all[name]["kind"], listed_all[name]["scope"]) == ("foreign", "foreign")
        assert not listed_all[name]["stale"]
    assert listed_all[foreign]["size"] == 3000
    assert listed_all[garbage] == listed[garbage]

    text = run("ls", "--all")
    assert text.returncode == 0, text.stderr
    assert "Traceback" not in text.stderr
    assert _row(text.stdout, garbage)[2] == "corrupt" and "corrupt" in _row(text.stdout, garbage)
    assert _row(text.stdout, foreign)[1:3] == ["foreign", "foreign"]
    assert _row(text.stdout, empty)[2] == "unpublished"


# ---- info -------------------------------------------------------------------------------


def test_info_shows_a_queues_depth_and_counts_after_sends(name: str) -> None:
    with held(children.queue_with_traffic, name, 5, 2) as holder:
        info = memipc_json("info", name)
        text = run("info", name)
    assert info["kind"] == "queue" and info["attached_pids"] == [holder.pid]
    state = info["state"]
    assert (state["depth"], state["sent"], state["received"]) == (3, 5, 2)
    assert state["capacity"] == children.CAPACITY and state["mode"] == "mpmc"
    assert text.returncode == 0, text.stderr
    assert (_field(text.stdout, "depth"), _field(text.stdout, "sent"), _field(text.stdout, "received")) == (
        "3", "5", "2",
    )  # fmt: skip
    assert _field(text.stdout, "users") == str(holder.pid)


def test_info_shows_each_subscriber_with_its_lag(name: str) -> None:
    with held(children.pubsub_with_lag, name, 5, 2) as holder:
        info = memipc_json("info", name)
        text = run("info", name).stdout
    state = info["state"]
    assert state["sent"] == 5
    subscribers = sorted((s["lag"], s["received"], s["pid"]) for s in state["subscribers"])
    assert subscribers == [(3, 2, holder.pid), (5, 0, holder.pid)]
    table = text.split("subscribers:\n", 1)[1].splitlines()
    assert table[0].split()[:4] == ["slot", "pid", "cursor", "lag"]
    assert sorted(int(line.split()[3]) for line in table[1:3]) == [3, 5]


def test_info_shows_the_mutex_owner_alive_while_it_holds_it_and_dead_after_sigkill(name: str) -> None:
    with held(children.mutex_held, name) as holder:
        alive = memipc_json("info", name)["state"]
        alive_text = run("info", name).stdout
        holder.sigkill()
        dead = memipc_json("info", name)["state"]
        dead_text = run("info", name).stdout
    assert (alive["owner_pid"], alive["owner_alive"]) == (holder.pid, True)
    assert (dead["owner_pid"], dead["owner_alive"]) == (holder.pid, False)
    assert (_field(alive_text, "owner pid"), _field(alive_text, "owner alive")) == (str(holder.pid), "True")
    assert (_field(dead_text, "owner pid"), _field(dead_text, "owner alive")) == (str(holder.pid), "False")


def test_info_shows_whether_an_event_is_signaled_and_a_semaphores_value(names: Callable[[], str]) -> None:
    signals = {"set": names(), "clear": names(), "semaphore": names()}
    with held(children.signals, signals):
        is_set = memipc_json("info", signals["set"])["state"]
        is_clear = memipc_json("info", signals["clear"])["state"]
        semaphore = memipc_json("info", signals["semaphore"])["state"]
        text = run("info", signals["semaphore"]).stdout
    assert (is_set["signaled"], is_clear["signaled"]) == (True, False)
    assert (semaphore["value"], semaphore["maximum"]) == (2, 5)
    assert (_field(text, "value"), _field(text, "maximum")) == ("2", "5")


def test_info_lists_the_server_pids_of_an_rpc_service(name: str) -> None:
    with held(children.rpc_server, name) as holder:
        info = memipc_json("info", name)
        text = run("info", name).stdout
    assert info["kind"] == "rpc" and info["state"]["server_pids"] == [holder.pid]
    assert info["state"]["client_pids"] == []
    assert _field(text, "server pids") == f"[{holder.pid}]"
    assert "requests:" in text


def test_info_and_ls_take_and_show_global_names(name: str) -> None:
    qualified = "Global\\" + name
    with held(children.global_event, name) as holder:
        info = memipc_json("info", qualified)
        text = run("info", qualified)
        listed = by_name(memipc_json("ls"))
        as_user_name = run("info", name)
    assert (info["name"], info["scope"], info["os_name"]) == (qualified, "global", f"memipc.g.{name}")
    assert info["state"]["signaled"] is True and info["attached_pids"] == [holder.pid]
    assert text.returncode == 0 and _field(text.stdout, "name") == qualified
    assert listed[qualified]["scope"] == "global" and listed[qualified]["kind"] == "event"
    assert as_user_name.returncode == 1  # a user-scope name is another object


def test_info_of_an_unknown_name_exits_1_and_says_how_to_find_what_exists(name: str) -> None:
    for args in (("info", name), ("info", name, "--json"), ("info", "not/a/name")):
        result = run(*args)
        assert result.returncode == 1
        assert result.stdout == ""
        assert f"no object named {args[1]!r}" in result.stderr and "memipc ls" in result.stderr
        assert "Traceback" not in result.stderr


def test_info_of_a_corrupt_segment_exits_1_and_shows_the_problem(
    names: Callable[[], str], os_path: PathOf
) -> None:
    garbage, too_small = names(), names()
    write_segment(os_path(garbage), os.urandom(8192))
    write_segment(os_path(too_small), segment_bytes(too_small, kind=_layout.KIND_CODES["queue"], size=8))
    text = run("info", garbage)
    assert text.returncode == 1 and "bad magic" in _field(text.stdout, "problem")
    record = run("info", garbage, "--json")
    assert record.returncode == 1
    assert json.loads(record.stdout)["kind"] == "corrupt"
    # A valid header whose control block lies outside the segment: a finding, not a crash.
    small = run("info", too_small, "--json")
    assert small.returncode == 1, small.stderr
    assert "outside" in json.loads(small.stdout)["problem"]


def test_info_of_a_foreign_segment_says_what_it_is(name: str) -> None:
    foreign = f"{name}-foreign"
    write_segment(platform.segment_path(foreign), b"x" * 10)
    info = memipc_json("info", foreign)
    assert (info["kind"], info["scope"], info["size"], info["state"]) == ("foreign", "foreign", 10, {})


# ---- rm ---------------------------------------------------------------------------------


def test_rm_refuses_an_object_another_live_process_uses_and_names_that_process(
    name: str, os_path: PathOf
) -> None:
    with held(children.region, name) as holder:
        result = run("rm", name)
        assert os.path.exists(os_path(name))
    assert result.returncode == 1
    assert f"in use by pid {holder.pid}" in result.stderr and "--force" in result.stderr
    assert result.stdout == ""


def test_rm_force_removes_the_name_of_an_object_in_use_and_its_user_keeps_working(
    name: str, os_path: PathOf
) -> None:
    with held(children.region_in_use_after_release, name) as holder:
        result = run("rm", "--force", name)
        assert not os.path.exists(os_path(name))
        with pytest.raises(memipc.NotFoundError):
            memipc.Region.open(name)
        assert holder.finish() == b"still works"
    assert result.returncode == 0, result.stderr
    assert f"removed region {name}" in result.stdout and "keep working" in result.stdout


def test_rm_removes_an_object_nobody_uses_once(name: str, os_path: PathOf) -> None:
    procs.run(region_children.create_write_and_close, name, 64, b"p", True)  # persistent: it stays
    first = run("rm", name)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"removed region {name}\n"
    assert not os.path.exists(os_path(name))
    again = run("rm", name)
    assert again.returncode == 1 and "no such object" in again.stderr


def test_rm_of_an_unknown_name_exits_1_but_removes_the_names_that_exist(names: Callable[[], str]) -> None:
    unknown, known = names(), names()
    procs.run(region_children.create_write_and_close, known, 64, b"k", True)
    result = run("rm", unknown, known, "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout) == [
        {"name": unknown, "removed": False, "reason": "no such object"},
        {"name": known, "kind": "region", "removed": True, "reason": ""},
    ]


def test_rm_never_removes_a_foreign_segment(name: str) -> None:
    foreign = platform.segment_path(f"{name}-foreign")
    write_segment(foreign, b"theirs")
    for args in (("rm", os.path.basename(foreign)), ("rm", "--force", os.path.basename(foreign))):
        result = run(*args)
        assert result.returncode == 1
        assert "not a memipc object" in result.stderr
    assert Path(foreign).read_bytes() == b"theirs"


# ---- gc, in a /dev/shm of its own -----------------------------------------------------------


@pytest.fixture
def private_shm() -> Iterator[PrivateShm]:
    shm = PrivateShm.start()
    if shm is None:
        pytest.skip("gc needs a private /dev/shm (unshare -m, or -Urm) and this system allows neither")
    try:
        yield shm
    finally:
        shm.close()


def test_gc_dry_run_lists_what_dead_processes_left_then_gc_removes_it_once(
    private_shm: PrivateShm, names: Callable[[], str]
) -> None:
    region, queue, mutex, abandoned = (names() for _ in range(4))
    with private_shm.holding(f"region:{region}", f"queue:{queue}", f"mutex:{mutex}") as holder:
        private_shm.sigkill(holder)
    write_segment(private_shm.path / private_shm.os_name(abandoned), b"", age=60)  # a creator died at once
    before = private_shm.listing()
    left = {region: "region", queue: "queue", mutex: "mutex", abandoned: "unpublished"}

    dry = private_shm.memipc_json("gc", "--dry-run")
    assert {r["name"]: r["kind"] for r in dry} == left
    assert all(not r["removed"] and r["reason"] == "would remove" and r["stale"] for r in dry)
    assert private_shm.listing() == before
    dry_text = private_shm.memipc("gc", "--dry-run")
    assert dry_text.returncode == 0
    lines = [re.fullmatch(r"would remove (\w+) (\S+) \(.+\)", line) for line in dry_text.stdout.splitlines()]
    assert all(lines), dry_text.stdout
    assert {m.group(2): m.group(1) for m in lines if m} == left
    assert "4 stale object(s); would remove" in dry_text.stderr
    assert private_shm.listing() == before

    collected = private_shm.memipc_json("gc")
    assert {r["name"]: r["removed"] for r in collected} == dict.fromkeys(left, True)
    assert private_shm.listing() == before - {private_shm.os_name(name) for name in left}

    assert private_shm.memipc_json("gc") == []
    nothing = private_shm.memipc("gc")
    assert (nothing.returncode, nothing.stdout, nothing.stderr) == (0, "", "nothing to collect\n")


def test_gc_never_touches_objects_in_use_persistent_ones_or_foreign_and_corrupt_segments(
    private_shm: PrivateShm, names: Callable[[], str]
) -> None:
    live_region, live_queue, persistent, dead, corrupt = (names() for _ in range(5))
    foreign = private_shm.path / "sem.someone-elses"
    write_segment(foreign, b"\x01" * 32)
    write_segment(private_shm.path / private_shm.os_name(corrupt), os.urandom(8192))
    write_segment(private_shm.path / f"memipc.u{private_shm.uid + 1}.{dead}", segment_bytes(dead))
    with private_shm.holding(f"persistent:{persistent}", f"region:{dead}") as dying:
        private_shm.sigkill(dying)
    with private_shm.holding(f"region:{live_region}", f"queue:{live_queue}") as live:
        untouched = {entry.name: entry.read_bytes() for entry in private_shm.path.iterdir()}
        del untouched[private_shm.os_name(dead)]

        collected = private_shm.memipc_json("gc")
        assert [(r["name"], r["removed"]) for r in collected] == [(dead, True)]
        after = {entry.name: entry.read_bytes() for entry in private_shm.path.iterdir()}
        assert after == untouched  # every other segment is there, byte for byte

        listed = by_name(private_shm.memipc_json("ls"))
        assert listed[persistent]["persist"] and not listed[persistent]["stale"]
        assert listed[live_region]["attached_pids"] == [live.pid]
        assert live.stdin is not None
        live.stdin.close()  # the holder closes everything and exits normally
        assert live.wait(TIMEOUT) == 0
    assert private_shm.os_name(live_region) not in private_shm.listing()  # its last user removed it


# ---- watch --------------------------------------------------------------------------------


RATE = re.compile(r"^sent\s+(\d+)\s+(\d+(?:\.\d)?)( k| M| G)?/s$", re.MULTILINE)


def test_watch_prints_the_frames_asked_for_with_rates_of_a_busy_queue(name: str) -> None:
    with held(children.queue_busy, name) as holder:
        result = run("watch", name, "--count", "2", "--interval", "0.1")
        went_through = holder.finish()
    assert result.returncode == 0, result.stderr
    frames = result.stdout.rstrip("\n").split("\n\n")
    assert len(frames) == 2, result.stdout
    for frame in frames:
        assert frame.startswith(f"queue {name}   users {holder.pid}   ")
    assert not RATE.search(frames[0])  # no rate before a second sample
    rate = RATE.search(frames[1])
    assert rate, frames[1]
    assert float(rate.group(2)) > 0 and went_through > 0


def _watch(name: str) -> subprocess.Popen[str]:
    """`memipc watch NAME --interval 0.1`, without end, once its first frame is out."""
    process = subprocess.Popen(
        [sys.executable, "-m", "memipc", "watch", name, "--interval", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    first = process.stdout.readline()
    if not first:
        process.kill()
        raise AssertionError(f"watch printed nothing: {process.communicate(timeout=TIMEOUT)[1]}")
    return process


def test_watch_without_a_count_stops_with_exit_0_on_sigint(name: str) -> None:
    with memipc.Queue(name, 4096):
        process = _watch(name)
        try:
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_watch_exits_1_when_the_object_is_removed_while_it_watches(name: str) -> None:
    with memipc.Region.create(name, 64) as region:
        process = _watch(name)
        try:
            region.unlink()
            _, stderr = process.communicate(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=TIMEOUT)
    assert process.returncode == 1
    assert f"memipc watch: {name} was removed" in stderr


def test_watch_of_an_unknown_name_exits_1(name: str) -> None:
    result = run("watch", name, "--count", "1")
    assert result.returncode == 1 and "memipc ls" in result.stderr


# ---- usage ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["ls", "info", "rm", "gc", "watch"])
def test_help_of_each_command_exits_0_and_shows_examples(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: memipc {command}")
    examples = result.stdout.split("examples:\n", 1)[1]
    assert f"memipc {command}" in examples


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "--bogus"],
        ["info"],
        ["rm"],
        ["watch", "x", "--interval", "0"],
        ["watch", "x", "--count", "-1"],
        ["gc", "--force"],
        ["frobnicate"],
    ],
)
def test_bad_usage_exits_2_with_a_usage_message(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert "usage: memipc" in result.stderr and result.stdout == ""


def test_memipc_with_no_command_exits_2_and_prints_help_with_examples_on_stderr() -> None:
    result = run()
    assert result.returncode == 2
    assert result.stdout == ""
    assert "usage: memipc" in result.stderr and "examples:" in result.stderr
