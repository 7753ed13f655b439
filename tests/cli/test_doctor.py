"""`memipc doctor`: every check against a machine faked with files, then the real command.

A `FakeMachine` is a directory standing for the root file system (with
`proc/` and `dev/shm/` inside) plus the values the checks get from calls
(statvfs, the open-files limit, the uid, the object list).  It starts as a
healthy host; each test changes the one thing it is about.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from memipc import cli
from memipc.cli import _doctor
from memipc.cli._doctor import Environment, Finding, InventoryUnavailable

MiB = 1 << 20
GiB = 1 << 30
HOST_IPC = "ipc:[4026531839]"
CHECK_IDS = [check_id for check_id, _ in _doctor.CHECKS]


@dataclass
class Entry:
    name: str
    kind: str
    size: int
    stale: bool


@dataclass
class FakeMachine:
    root: Path
    total_bytes: int = 8 * GiB
    free_bytes: int = 7 * GiB
    writable: bool = True
    limits: tuple[int, int] = (4096, 4096)
    uid: int = 1000
    objects: list[Entry] | Exception = field(default_factory=list)
    environ: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.shm.mkdir(parents=True)
        for pid in ("self", "1"):
            (self.proc / pid / "ns").mkdir(parents=True)
            self.ipc_namespace(pid, HOST_IPC)
            self.mount_shm(pid)
            self.write(f"proc/{pid}/cgroup", "0::/\n")
        self.write("proc/sys/vm/max_map_count", "65530\n")

    @property
    def shm(self) -> Path:
        return self.root / "dev" / "shm"

    @property
    def proc(self) -> Path:
        return self.root / "proc"

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def mount_shm(self, pid: str = "self", fs_type: str = "tmpfs", device: str = "0:26") -> None:
        point = os.path.realpath(self.shm).replace(" ", "\\040")
        self.write(
            f"proc/{pid}/mountinfo",
            "21 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
            f"25 21 {device} / {point} rw,nosuid,nodev shared:5 - {fs_type} {fs_type} rw,size=65536k\n",
        )

    def ipc_namespace(self, pid: str, target: str | None) -> None:
        link = self.proc / pid / "ns" / "ipc"
        if os.path.lexists(link):
            link.unlink()
        if target is not None:
            link.symlink_to(target)

    def systemd(self) -> None:
        (self.root / "run" / "systemd" / "system").mkdir(parents=True, exist_ok=True)

    def list_objects(self) -> list[Entry]:
        if isinstance(self.objects, Exception):
            raise self.objects
        return self.objects

    def statvfs(self, path: str) -> os.statvfs_result:
        assert path == str(self.shm)
        block = 4096
        fields = (block, block, self.total_bytes // block, self.free_bytes // block, self.free_bytes // block)
        return os.statvfs_result((*fields, 1000, 900, 900, 0, 255))

    def env(self) -> Environment:
        return Environment(
            shm_directory=str(self.shm),
            proc_directory=str(self.proc),
            root_directory=str(self.root),
            environ=self.environ,
            statvfs=self.statvfs,
            writable=lambda path: self.writable,
            open_files_limit=lambda: self.limits,
            uid=lambda: self.uid,
            list_objects=self.list_objects,
        )

    def finding(self, check_id: str) -> Finding:
        (found,) = [f for f in _doctor.run_checks(self.env()) if f.check == check_id]
        return found


@pytest.fixture
def machine(tmp_path: Path) -> FakeMachine:
    return FakeMachine(tmp_path / "root")


# ---- a healthy machine --------------------------------------------------------------


def test_a_healthy_host_passes_every_check_in_order(machine: FakeMachine) -> None:
    findings = _doctor.run_checks(machine.env())
    assert [f.check for f in findings] == CHECK_IDS
    assert {f.check: f.status for f in findings} == dict.fromkeys(CHECK_IDS, "ok")
    assert _doctor.exit_status(findings) == 0


# ---- /dev/shm ---------------------------------------------------------------------------


def test_shm_directory_missing_fails_with_a_mount_command(machine: FakeMachine) -> None:
    machine.shm.rmdir()
    found = machine.finding("shm-directory")
    assert found.status == "fail"
    assert "does not exist" in found.summary
    assert "mount -t tmpfs" in found.fix
    assert found.measured["exists"] is False


def test_shm_directory_that_is_a_file_fails(machine: FakeMachine) -> None:
    machine.shm.rmdir()
    machine.shm.write_text("")
    assert machine.finding("shm-directory").status == "fail"


def test_shm_directory_not_writable_fails_with_chmod(machine: FakeMachine) -> None:
    machine.writable = False
    found = machine.finding("shm-directory")
    assert found.status == "fail"
    assert "not writable" in found.summary
    assert "chmod 1777" in found.fix
    assert found.measured["writable"] is False


def test_shm_directory_on_disk_warns(machine: FakeMachine) -> None:
    machine.mount_shm(fs_type="overlay")
    found = machine.finding("shm-directory")
    assert found.status == "warn"
    assert "overlay, not tmpfs" in found.summary
    assert found.measured["fs_type"] == "overlay"


def test_shm_directory_type_unknown_without_mountinfo_is_still_ok(machine: FakeMachine) -> None:
    (machine.proc / "self" / "mountinfo").unlink()
    found = machine.finding("shm-directory")
    assert found.status == "ok"
    assert "unknown" in found.summary


def test_shm_directory_ok_reports_tmpfs(machine: FakeMachine) -> None:
    found = machine.finding("shm-directory")
    assert (found.status, found.measured["fs_type"]) == ("ok", "tmpfs")


def test_dockers_default_64_mib_shm_warns_with_shm_size_fix(machine: FakeMachine) -> None:
    machine.write(".dockerenv", "")
    machine.total_bytes, machine.free_bytes = 64 * MiB, 60 * MiB
    found = machine.finding("shm-size")
    assert found.status == "warn"
    assert "64 MiB" in found.summary
    assert "Docker" in found.summary
    assert "docker run --shm-size=1g" in found.fix
    assert "shm_size" in found.fix
    assert found.measured == {"path": str(machine.shm), "total_bytes": 64 * MiB, "container": "docker"}


def test_small_shm_on_a_host_suggests_remount(machine: FakeMachine) -> None:
    machine.total_bytes, machine.free_bytes = 128 * MiB, 128 * MiB
    found = machine.finding("shm-size")
    assert found.status == "warn"
    assert "mount -o remount,size=1G" in found.fix
    assert "/etc/fstab" in found.fix


def test_small_shm_in_kubernetes_suggests_a_memory_emptydir(machine: FakeMachine) -> None:
    machine.environ["KUBERNETES_SERVICE_HOST"] = "10.0.0.1"
    machine.total_bytes = 64 * MiB
    found = machine.finding("shm-size")
    assert found.status == "warn"
    assert "emptyDir" in found.fix
    assert "medium: Memory" in found.fix


def test_shm_size_at_the_threshold_is_ok(machine: FakeMachine) -> None:
    machine.total_bytes, machine.free_bytes = 256 * MiB, 256 * MiB
    assert machine.finding("shm-size").status == "ok"


def test_shm_without_size_limit_is_a_note_and_free_space_is_skipped(machine: FakeMachine) -> None:
    machine.total_bytes = machine.free_bytes = 0
    assert machine.finding("shm-size").status == "note"
    assert machine.finding("shm-free").status == "skip"


@pytest.mark.parametrize(
    ("total", "free", "status"),
    [
        (8 * GiB, 7 * GiB, "ok"),
        (8 * GiB, 500 * MiB, "warn"),  # 6 %: under a tenth free
        (256 * MiB, 40 * MiB, "warn"),  # 16 % but under 64 MiB
        (256 * MiB, 64 * MiB, "ok"),  # exactly at both bounds
        (8 * GiB, 512 * 1024, "fail"),  # under 1 MiB: nothing fits
        (8 * GiB, 0, "fail"),
    ],
)
def test_shm_free_space_thresholds(machine: FakeMachine, total: int, free: int, status: str) -> None:
    machine.total_bytes, machine.free_bytes = total, free
    found = machine.finding("shm-free")
    assert found.status == status
    assert found.measured["free_bytes"] == free
    if status != "ok":
        assert "memipc gc --dry-run" in found.fix
        assert ("full" if status == "fail" else "nearly full") in found.summary


def test_statvfs_failing_skips_only_the_checks_that_need_it(machine: FakeMachine) -> None:
    def broken(path: str) -> os.statvfs_result:
        raise PermissionError(13, "Permission denied", path)

    findings = _doctor.run_checks(dataclasses.replace(machine.env(), statvfs=broken))
    statuses = {f.check: f.status for f in findings}
    assert statuses["shm-size"] == statuses["shm-free"] == "skip"
    assert "Permission denied" in next(f.summary for f in findings if f.check == "shm-size")
    assert statuses["max-map-count"] == "ok"


# ---- containers and IPC namespaces -------------------------------------------------------------


def test_no_container_on_a_plain_host(machine: FakeMachine) -> None:
    found = machine.finding("container")
    assert (found.status, found.measured["kind"]) == ("ok", None)


@pytest.mark.parametrize(
    ("setup", "kind", "evidence"),
    [
        (lambda m: m.write(".dockerenv", ""), "docker", "/.dockerenv"),
        (lambda m: m.write("run/.containerenv", ""), "podman", "/run/.containerenv"),
        (
            lambda m: m.environ.update(container="systemd-nspawn"),
            "systemd-nspawn",
            "container=systemd-nspawn",
        ),
        (lambda m: m.write("proc/1/environ", "PATH=/bin\0container=lxc\0"), "lxc", "container=lxc"),
        (
            lambda m: m.write("proc/self/cgroup", "12:pids:/kubepods/besteffort/pod1/abc\n"),
            "kubernetes",
            "/proc/self/cgroup mentions kubepods",
        ),
        (
            lambda m: m.write("proc/1/cgroup", "9:memory:/docker/0123abcd\n"),
            "docker",
            "/proc/1/cgroup mentions docker",
        ),
    ],
)
def test_container_is_detected_from_each_sign(
    machine: FakeMachine, setup: Callable[[FakeMachine], object], kind: str, evidence: str
) -> None:
    setup(machine)
    found = machine.finding("container")
    assert found.status == "ok"
    assert found.measured["kind"] == kind
    assert evidence in found.measured["evidence"]
    assert evidence in found.summary


def test_kubernetes_wins_over_the_runtime_underneath(machine: FakeMachine) -> None:
    machine.write(".dockerenv", "")
    machine.environ["KUBERNETES_SERVICE_HOST"] = "10.0.0.1"
    assert machine.finding("container").measured["kind"] == "kubernetes"


def test_host_ipc_namespace_is_ok(machine: FakeMachine) -> None:
    found = machine.finding("ipc-namespace")
    assert found.status == "ok"
    assert found.measured["host_ipc_namespace"] is True
    assert found.measured["shm_device"] == "0:26"


def test_docker_container_with_host_ipc_is_ok(machine: FakeMachine) -> None:
    machine.write(".dockerenv", "")
    found = machine.finding("ipc-namespace")
    assert found.status == "ok"
    assert "--ipc=host" in found.summary


def test_private_ipc_namespace_of_a_container_is_a_note_with_sharing_fix(machine: FakeMachine) -> None:
    machine.write(".dockerenv", "")
    for pid in ("self", "1"):  # inside a container, PID 1 is the container's own init
        machine.ipc_namespace(pid, "ipc:[4026532301]")
    found = machine.finding("ipc-namespace")
    assert found.status == "note"
    assert "private IPC namespace" in found.summary
    assert "Docker container" in found.summary
    assert "--ipc=host" in found.fix
    assert "--ipc=container:" in found.fix
    assert found.measured["host_ipc_namespace"] is False
    assert _doctor.exit_status([found]) == 0  # a note needs no action


def test_own_ipc_namespace_but_same_shm_as_pid1_is_ok(machine: FakeMachine) -> None:
    machine.ipc_namespace("self", "ipc:[4026532999]")  # e.g. unshare --ipc, systemd PrivateIPC=yes
    found = machine.finding("ipc-namespace")
    assert found.status == "ok"
    assert "not PID 1's" in found.summary
    assert found.measured["pid1_ipc_namespace"] == HOST_IPC


def test_a_different_shm_from_pid1_is_a_note(machine: FakeMachine) -> None:
    machine.mount_shm("self", device="0:99")
    found = machine.finding("ipc-namespace")
    assert found.status == "note"
    assert "different" in found.summary
    assert (found.measured["shm_device"], found.measured["pid1_shm_device"]) == ("0:99", "0:26")


def test_pid1_namespace_unreadable_falls_back_to_the_host_inode(machine: FakeMachine) -> None:
    machine.ipc_namespace("1", None)  # a regular user may not read PID 1's ns links
    (machine.proc / "1" / "mountinfo").unlink()
    assert machine.finding("ipc-namespace").status == "ok"
    machine.ipc_namespace("self", "ipc:[4026532301]")
    assert machine.finding("ipc-namespace").status == "note"


def test_ipc_namespace_unreadable_is_skipped(machine: FakeMachine) -> None:
    machine.ipc_namespace("self", None)
    assert machine.finding("ipc-namespace").status == "skip"


# ---- systemd-logind RemoveIPC= ---------------------------------------------------------------


def test_remove_ipc_does_not_apply_without_systemd(machine: FakeMachine) -> None:
    machine.write("etc/systemd/logind.conf", "[Login]\nRemoveIPC=yes\n")
    found = machine.finding("remove-ipc")
    assert found.status == "ok"
    assert "systemd is not running" in found.summary
    assert found.measured["systemd"] is False


def test_remove_ipc_default_yes_warns_a_regular_user(machine: FakeMachine) -> None:
    machine.systemd()
    found = machine.finding("remove-ipc")
    assert found.status == "warn"
    assert "RemoveIPC=yes (systemd's upstream default)" in found.summary
    assert "uid 1000" in found.summary
    assert "RemoveIPC=no" in found.fix
    assert "/etc/systemd/logind.conf.d/" in found.fix
    assert "systemctl restart systemd-logind" in found.fix
    assert "enable-linger" in found.fix
    assert found.measured["remove_ipc"] is True
    assert found.measured["system_user"] is False


def test_remove_ipc_default_is_read_from_the_shipped_commented_line(machine: FakeMachine) -> None:
    machine.systemd()
    machine.write("etc/systemd/logind.conf", "[Login]\n#KillUserProcesses=no\n#RemoveIPC=no\n")
    found = machine.finding("remove-ipc")
    assert found.status == "ok"
    assert found.measured["set_in"] == "the default, as the commented line in /etc/systemd/logind.conf says"


def test_remove_ipc_no_in_logind_conf_is_ok(machine: FakeMachine) -> None:
    machine.systemd()
    machine.write("etc/systemd/logind.conf", "# comment\n[Login]\n  RemoveIPC = no  \n")
    found = machine.finding("remove-ipc")
    assert found.status == "ok"
    assert found.summary == "RemoveIPC=no (/etc/systemd/logind.conf)"


def test_remove_ipc_last_drop_in_wins(machine: FakeMachine) -> None:
    machine.systemd()
    machine.write("etc/systemd/logind.conf", "[Login]\nRemoveIPC=no\n")
    machine.write("etc/systemd/logind.conf.d/10-no.conf", "[Login]\nRemoveIPC=false\n")
    machine.write("usr/lib/systemd/logind.conf.d/20-yes.conf", "[Login]\nRemoveIPC=on\n")
    found = machine.finding("remove-ipc")
    assert found.status == "warn"
    assert found.measured["set_in"] == "/usr/lib/systemd/logind.conf.d/20-yes.conf"
    machine.write("etc/systemd/logind.conf.d/30-no.conf", "[Login]\nRemoveIPC=0\n")
    assert machine.finding("remove-ipc").status == "ok"


def test_remove_ipc_drop_in_in_etc_hides_the_same_name_in_usr_lib(machine: FakeMachine) -> None:
    machine.systemd()
    machine.write("usr/lib/systemd/logind.conf.d/50-vendor.conf", "[Login]\nRemoveIPC=yes\n")
    machine.write("etc/systemd/logind.conf.d/50-vendor.conf", "[Login]\nRemoveIPC=no\n")
    found = machine.finding("remove-ipc")
    assert found.status == "ok"
    assert found.measured["files"] == ["/etc/systemd/logind.conf.d/50-vendor.conf"]


def test_remove_ipc_ignores_other_sections_and_unparsable_values(machine: FakeMachine) -> None:
    machine.systemd()
    machine.write(
        "etc/systemd/logind.conf",
        "[Login]\nRemoveIPC=no\nRemoveIPC=maybe\n[Other]\nRemoveIPC=yes\n; RemoveIPC=yes\n",
    )
    assert machine.finding("remove-ipc").status == "ok"


def test_remove_ipc_spares_system_users(machine: FakeMachine) -> None:
    machine.systemd()
    for uid in (0, 999):
        machine.uid = uid
        found = machine.finding("remove-ipc")
        assert found.status == "ok", uid
        assert "system user" in found.summary
        assert found.measured["system_user"] is True


def test_remove_ipc_system_uid_bound_comes_from_login_defs(machine: FakeMachine) -> None:
    machine.systemd()
    machine.write("etc/login.defs", "#SYS_UID_MAX 999\nSYS_UID_MAX\t\t499\n")
    machine.uid = 600
    found = machine.finding("remove-ipc")
    assert found.status == "warn"
    assert found.measured["sys_uid_max"] == 499


def test_remove_ipc_settings_parser_handles_continuations() -> None:
    text = "[Login]\nRemoveIPC=\\\nno\n#RemoveIPC=yes\n"
    assert _doctor.remove_ipc_settings(text) == ["no"]


# ---- limits ------------------------------------------------------------------------------------------


def test_max_map_count_default_is_ok(machine: FakeMachine) -> None:
    found = machine.finding("max-map-count")
    assert (found.status, found.measured) == ("ok", {"max_map_count": 65530})


def test_max_map_count_lowered_warns_with_sysctl_fix(machine: FakeMachine) -> None:
    machine.write("proc/sys/vm/max_map_count", "4096\n")
    found = machine.finding("max-map-count")
    assert found.status == "warn"
    assert "sysctl -w vm.max_map_count=262144" in found.fix
    assert "/etc/sysctl.d/" in found.fix


def test_max_map_count_unreadable_is_skipped(machine: FakeMachine) -> None:
    (machine.proc / "sys" / "vm" / "max_map_count").unlink()
    assert machine.finding("max-map-count").status == "skip"


@pytest.mark.parametrize(
    ("limits", "status", "fix"),
    [
        ((4096, 4096), "ok", ""),
        ((1024, 524288), "note", "ulimit -n 524288"),
        ((256, 4096), "warn", "ulimit -n 4096"),
        ((256, 256), "warn", "LimitNOFILE="),
        ((64, -1), "warn", "ulimit -n 65536"),  # -1 is RLIM_INFINITY
        ((-1, -1), "ok", ""),
    ],
)
def test_open_files_limit(machine: FakeMachine, limits: tuple[int, int], status: str, fix: str) -> None:
    machine.limits = limits
    found = machine.finding("open-files")
    assert found.status == status
    assert fix in found.fix
    assert found.measured["soft"] == (None if limits[0] == -1 else limits[0])


# ---- stale objects -----------------------------------------------------------------------------------


def test_no_stale_objects_is_ok(machine: FakeMachine) -> None:
    machine.objects = [Entry("frames", "region", 4 * MiB, stale=False)]
    found = machine.finding("stale-objects")
    assert found.status == "ok"
    assert found.summary == "1 memipc object, none stale"


def test_stale_objects_warn_with_their_size_and_gc_fix(machine: FakeMachine) -> None:
    machine.objects = [
        Entry("frames", "region", 3 * MiB, stale=True),
        Entry("jobs", "queue", 1 * MiB, stale=True),
        Entry("live", "region", 100 * MiB, stale=False),
    ]
    found = machine.finding("stale-objects")
    assert found.status == "warn"
    assert found.summary == "2 stale memipc objects hold 4 MiB"
    assert "frames (region)" in found.detail
    assert "memipc gc --dry-run" in found.fix
    assert found.fix.splitlines()[-1] == "memipc gc"
    assert found.measured["stale_bytes"] == 4 * MiB
    assert [o["name"] for o in found.measured["stale_objects"]] == ["frames", "jobs"]


def test_stale_objects_skipped_when_the_inventory_is_missing(machine: FakeMachine) -> None:
    machine.objects = InventoryUnavailable("No module named 'memipc.cli._inventory'")
    found = machine.finding("stale-objects")
    assert (found.status, found.summary) == ("skip", "skipped (inventory not available)")
    assert _doctor.exit_status([found]) == 0


def test_the_real_lister_uses_the_inventory_module_when_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("memipc.cli._inventory")
    module.scan = lambda: iter([Entry("x", "region", 1, stale=True)])  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "memipc.cli._inventory", module)
    assert _doctor.Environment().list_objects() == [Entry("x", "region", 1, stale=True)]
    monkeypatch.setitem(sys.modules, "memipc.cli._inventory", None)  # import fails
    with pytest.raises(InventoryUnavailable):
        _doctor.Environment().list_objects()


# ---- output and exit status ------------------------------------------------------------------------------


def _troubled(machine: FakeMachine) -> None:
    machine.write(".dockerenv", "")
    machine.total_bytes, machine.free_bytes = 64 * MiB, 200 * 1024
    machine.write("proc/sys/vm/max_map_count", "1000\n")


def test_text_output_is_aligned_with_explanations_under_problems(machine: FakeMachine) -> None:
    _troubled(machine)
    text = _doctor.render_text(_doctor.run_checks(machine.env()), width=80)
    lines = text.splitlines()
    rows = [line for line in lines if line[:4].rstrip() in {"ok", "note", "warn", "FAIL", "skip"}]
    assert [row.split()[1] for row in rows] == CHECK_IDS
    column = 4 + 2 + max(map(len, CHECK_IDS)) + 2
    assert all(row[column - 1] == " " and row[column] != " " for row in rows)  # summaries in one column
    free_row = lines.index(next(r for r in rows if r.split()[1] == "shm-free"))
    assert lines[free_row].startswith("FAIL  shm-free")
    following = lines[free_row + 1 : lines.index(next(r for r in rows if r.split()[1] == "container"))]
    assert all(line.startswith(" " * column) for line in following)
    fix_at = next(i for i, line in enumerate(following) if line[column:].startswith("fix: "))
    assert fix_at > 0, "an explanation comes before the fix"
    assert all(len(line) <= 80 for line in following[:fix_at])  # explanations wrap; commands do not
    assert following[fix_at][column:].startswith("fix: memipc gc --dry-run")
    assert all(line[column:].startswith("     ") for line in following[fix_at + 1 :])
    ok_row = lines.index(next(r for r in rows if r.split()[1] == "shm-directory"))
    assert lines[ok_row + 1] in rows  # an ok finding carries no explanation
    assert lines[-1] == "3 findings need attention (1 FAIL, 2 warn); the fixes are above."


def test_verbose_explains_ok_findings_too(machine: FakeMachine) -> None:
    machine.write(".dockerenv", "")
    findings = _doctor.run_checks(machine.env())
    assert "Containers get their own" not in _doctor.render_text(findings)
    assert "Containers get their own" in _doctor.render_text(findings, verbose=True)
    assert _doctor.render_text(findings).endswith("\nnothing needs attention.\n")


def _main(machine: FakeMachine, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(_doctor, "Environment", machine.env)
    return cli.main(["doctor", *args])


def test_json_is_a_list_of_findings_and_nothing_else(
    machine: FakeMachine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _troubled(machine)
    assert _main(machine, monkeypatch, "--json") == 1
    out = capsys.readouterr().out
    findings = json.loads(out)
    assert [f["check"] for f in findings] == CHECK_IDS
    for finding in findings:
        assert set(finding) == {"check", "status", "summary", "detail", "fix", "measured"}
        assert finding["status"] in {"ok", "note", "warn", "fail", "skip"}
    by_id = {f["check"]: f for f in findings}
    assert by_id["shm-size"]["measured"]["total_bytes"] == 64 * MiB
    assert by_id["shm-free"]["status"] == "fail"
    assert by_id["max-map-count"]["measured"] == {"max_map_count": 1000}
    assert by_id["container"]["measured"]["kind"] == "docker"


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        (lambda m: None, 0),
        (lambda m: setattr(m, "limits", (1024, 524288)), 0),  # a note needs no attention
        (lambda m: setattr(m, "objects", InventoryUnavailable("absent")), 0),  # nor does a skip
        (lambda m: setattr(m, "limits", (256, 256)), 1),
        (lambda m: setattr(m, "writable", False), 1),
    ],
)
def test_exit_status_is_1_only_for_warn_or_fail(
    machine: FakeMachine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    setup: Callable[[FakeMachine], object],
    code: int,
) -> None:
    setup(machine)
    assert _main(machine, monkeypatch) == code
    assert _main(machine, monkeypatch, "--json") == code
    capsys.readouterr()


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.main(["doctor", "--json=yes"])
    assert raised.value.code == 2
    assert "usage: memipc doctor" in capsys.readouterr().err
    with pytest.raises(SystemExit) as raised:
        cli.main(["doctor", "--no-such-option"])
    assert raised.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_mountinfo_parsing_unescapes_and_prefers_the_top_mount() -> None:
    mounts = _doctor.parse_mountinfo(
        "1 0 0:1 / / rw - overlay overlay rw\n"
        "2 1 0:20 / /dev/shm rw - tmpfs shm rw,size=65536k\n"
        "3 1 0:21 / /dev/shm rw shared:1 master:2 - tmpfs tmpfs rw,size=1g\n"
        "4 1 0:22 / /my\\040dir rw - ext4 /dev/sda1 rw\n"
    )
    top = _doctor.mount_of("/dev/shm", mounts)
    assert top is not None
    assert (top.device, top.options) == ("0:21", "rw,size=1g")
    spaced = _doctor.mount_of("/my dir/x", mounts)
    assert spaced is not None and spaced.fs_type == "ext4"
    root = _doctor.mount_of("/dev/shmx", mounts)
    assert root is not None and root.mount_point == "/"


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (64 * MiB, "64 MiB"),
        (int(23.5 * GiB), "23.5 GiB"),
        (3 * MiB // 2, "1.5 MiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert _doctor.format_size(size) == text


# ---- the real command on this machine ---------------------------------------------------------------


def _memipc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memipc", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_real_doctor_runs_every_check_on_this_machine() -> None:
    text, as_json = _memipc("doctor"), _memipc("doctor", "--json")
    assert text.returncode in {0, 1}, text.stderr
    for check_id in CHECK_IDS:
        assert f"  {check_id}  " in text.stdout
    assert as_json.returncode == text.returncode, as_json.stderr
    findings = json.loads(as_json.stdout)
    assert [f["check"] for f in findings] == CHECK_IDS
    assert as_json.returncode == (1 if any(f["status"] in {"warn", "fail"} for f in findings) else 0)


def test_help_has_examples() -> None:
    result = _memipc("doctor", "--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert "memipc doctor --json" in result.stdout
