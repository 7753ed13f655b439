"""``memipc doctor``: check this machine for what makes shared memory fail, and say how to fix it.

Each check prints one line: its status, its name and what it found.  Below a
line that is not ``ok`` come an explanation and the commands that fix it.

  ok    nothing to do
  note  worth knowing, nothing is wrong (exit status stays 0)
  warn  likely to cause failures; see the fix
  FAIL  memipc cannot work here until this is fixed
  skip  the check could not run here; the line says why

The checks:

  shm-directory  /dev/shm exists, is a tmpfs (memory, not disk) and is writable
  shm-size       /dev/shm is big enough (Docker gives containers only 64 MiB)
  shm-free       /dev/shm has room left
  container      which container this runs in, if any
  ipc-namespace  whether processes outside this container or namespace can see
                 the memipc objects made here
  remove-ipc     systemd-logind's RemoveIPC=, which deletes a user's /dev/shm
                 objects when the user's last session ends
  max-map-count  vm.max_map_count: every mapped view is one memory mapping
  open-files     the open-files limit: every open memipc object holds a file
                 descriptor
  stale-objects  memipc objects whose every user has died

Exit status: 0 when nothing needs attention, 1 when a check says warn or FAIL,
2 for a usage error.
"""

# Design: every check reads the machine through one `Environment` (paths of
# /dev/shm, /proc and the root of the configuration files, and the few calls
# that are not file reads), so the tests build each situation from files in
# a temporary directory instead of needing Docker, systemd or root.  A check
# is a plain function Environment -> Finding; an OSError inside one becomes a
# "skip" finding for that check alone, so one unreadable file never hides the
# other checks.  Anything else propagates: it is a bug, not a finding.
#
# Rejected: asking the container runtime or systemd (docker inspect, busctl,
# systemd-analyze cat-config).  Those tools are often absent or need
# privileges, and from inside a container they are not there at all; the
# files they read are.

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import pwd
import re
import resource
import shutil
import stat
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .._platform import current as platform

Status = Literal["ok", "note", "warn", "fail", "skip"]

#: How each status is printed: four columns, FAIL in capitals so it stands out.
LABELS: dict[Status, str] = {"ok": "ok", "note": "note", "warn": "warn", "fail": "FAIL", "skip": "skip"}
#: The statuses that make the exit status 1.
ATTENTION: frozenset[Status] = frozenset({"warn", "fail"})

MiB = 1 << 20

# ---- thresholds, and why --------------------------------------------------

#: /dev/shm smaller than this is a warning.  Hosts give /dev/shm half of RAM,
#: so a small one was chosen by someone, usually a container runtime: Docker's
#: default is 64 MiB.  One 1920x1080 RGB frame is 6 MiB, so a channel with ten
#: frames in flight and one peer's image region already fill 64 MiB, and other
#: tenants of /dev/shm (PyTorch data loaders, multiprocessing, browsers) need
#: room too.  Four times Docker's default is where that stops being the
#: usual cause of "No space left on device".
SHM_SIZE_WARN_BYTES = 256 * MiB
#: Free space below either bound is a warning: 64 MiB is a handful of typical
#: regions; under 10 % free the tmpfs is nearly full, and as its pages are
#: RAM, the machine is likely short of memory as well.
SHM_FREE_WARN_BYTES = 64 * MiB
SHM_FREE_WARN_FRACTION = 0.10
#: Below this, creating almost any region fails (a region's header alone is
#: a page, its data are reserved in full at create time): FAIL.
SHM_FREE_FAIL_BYTES = 1 * MiB
#: The kernel's default vm.max_map_count (USHRT_MAX - 5).  Each mapped View,
#: and each region's header, is one mapping; the interpreter and its libraries
#: already use a few hundred.  Below the default, someone lowered it on
#: purpose and a program with many views meets ENOMEM from mmap.
MAX_MAP_COUNT_WARN = 65530
#: What the fix suggests: four times the default, the value Elasticsearch and
#: many databases document, far above what memipc needs.
MAX_MAP_COUNT_SUGGESTED = 262144
#: The usual default soft limit on Linux (and select()'s FD_SETSIZE).  Every
#: open memipc object holds a descriptor (two for a file-backed region), so a
#: lower limit runs out long before memory does.
OPEN_FILES_WARN = 1024
#: systemd's uid_is_system(): uids up to SYS_UID_MAX (999 unless
#: /etc/login.defs says otherwise) are system users, which RemoveIPC= spares.
DEFAULT_SYS_UID_MAX = 999
#: The inode of the kernel's initial IPC namespace (PROC_IPC_INIT_INO, fixed
#: since Linux 3.8): a process whose /proc/self/ns/ipc names another inode
#: is in a namespace that some container or sandbox created.
HOST_IPC_NAMESPACE = 0xEFFFFFFF
#: How many stale objects the explanation names; the JSON lists them all.
STALE_NAMES_SHOWN = 5


# ---- the environment the checks read ----------------------------------------


class InventoryEntry(Protocol):
    """What the checks need from an entry of ``memipc.cli._inventory.scan()``."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def stale(self) -> bool: ...


class InventoryUnavailable(Exception):
    """The object lister cannot run in this build (its module is missing)."""


def _default_shm_directory() -> str:
    # The platform layer knows where segments live; its Protocol exposes only
    # segment_path(), so ask for one and take the directory.
    return os.path.dirname(platform.segment_path("memipc-doctor"))


def _writable(path: str) -> bool:
    effective = os.access in os.supports_effective_ids
    return os.access(path, os.W_OK | os.X_OK, effective_ids=effective)


def _open_files_limit() -> tuple[int, int]:
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _scan_inventory() -> Sequence[InventoryEntry]:
    # Imported when the check runs, so a build without the inventory module
    # still has a doctor; by name, as mypy cannot see a module that may not exist.
    try:
        module = importlib.import_module("memipc.cli._inventory")
    except ImportError as error:
        raise InventoryUnavailable(str(error)) from None
    entries: Sequence[InventoryEntry] = list(module.scan())
    return entries


@dataclass(frozen=True)
class Environment:
    """Everything the checks read.  ``Environment()`` is this machine; tests replace fields.

    ``root_directory`` is where ``.dockerenv``, ``etc/``, ``run/`` and
    ``usr/lib/`` are looked up.  ``list_objects`` raises
    :class:`InventoryUnavailable` when it cannot run in this build.
    """

    shm_directory: str = field(default_factory=_default_shm_directory)
    proc_directory: str = "/proc"
    root_directory: str = "/"
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    statvfs: Callable[[str], os.statvfs_result] = os.statvfs
    writable: Callable[[str], bool] = _writable
    open_files_limit: Callable[[], tuple[int, int]] = _open_files_limit
    uid: Callable[[], int] = os.geteuid
    list_objects: Callable[[], Sequence[InventoryEntry]] = _scan_inventory

    def proc(self, *parts: str) -> str:
        return os.path.join(self.proc_directory, *parts)

    def root(self, *parts: str) -> str:
        return os.path.join(self.root_directory, *parts)


@dataclass(frozen=True)
class Finding:
    """One check's result.  ``measured`` holds the values behind it, for --json.

    ``fix`` is shell, ready to paste: one command per line, prose only in
    ``#`` comments, ``...`` where the user's own arguments go.
    """

    check: str
    status: Status
    summary: str
    detail: str = ""
    fix: str = ""
    measured: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status,
            "summary": self.summary,
            "detail": self.detail,
            "fix": self.fix,
            "measured": self.measured,
        }


# ---- small readers -------------------------------------------------------------


def format_size(size_bytes: int) -> str:
    """``64 MiB``, ``23.5 GiB``: whole numbers when exact, one decimal otherwise."""
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            break
        value /= 1024
    if unit == "B" or value == int(value):
        return f"{int(value)} {unit}"
    return f"{value:.1f} {unit}"


def _read_text(path: str) -> str | None:
    """The file's text, or None if it is absent or unreadable (EACCES on another's /proc)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _read_link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:  # absent, or another user's /proc/<pid>/ns (EACCES)
        return None


@dataclass(frozen=True)
class Mount:
    """One line of /proc/<pid>/mountinfo, the fields the checks use."""

    device: str  # "major:minor" of the file system; tmpfs instances differ
    mount_point: str
    fs_type: str
    options: str  # the file system's own options, e.g. "rw,size=65536k"


def _unescape_mount_path(text: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo octal.
    return re.sub(r"\\([0-7]{3})", lambda octal: chr(int(octal.group(1), 8)), text)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts in a mountinfo file, in its order (later lines are mounted on top)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        separator = fields.index("-", 6)
        if len(fields) < separator + 3:
            continue
        mounts.append(
            Mount(
                device=fields[2],
                mount_point=_unescape_mount_path(fields[4]),
                fs_type=fields[separator + 1],
                options=fields[separator + 3] if len(fields) > separator + 3 else "",
            )
        )
    return mounts


def mount_of(path: str, mounts: Sequence[Mount]) -> Mount | None:
    """The mount that holds ``path``: the longest mount point above it, the last one mounted."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.mount_point.rstrip("/") or "/"
        inside = path == point or path.startswith(point if point == "/" else point + "/")
        if inside and (best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")):
            best = mount
    return best


def _shm_mount(env: Environment, pid: str) -> Mount | None:
    text = _read_text(env.proc(pid, "mountinfo"))
    if text is None:
        return None
    return mount_of(os.path.realpath(env.shm_directory), parse_mountinfo(text))


# ---- container detection ----------------------------------------------------------


@dataclass(frozen=True)
class Container:
    kind: str | None  # "docker", "podman", "kubernetes", "lxc", another runtime's name; None on a host
    evidence: tuple[str, ...]

    @property
    def label(self) -> str:
        names = {"docker": "Docker", "podman": "Podman", "kubernetes": "Kubernetes", "lxc": "LXC"}
        return names.get(self.kind or "", self.kind or "no")


#: Words in /proc/<pid>/cgroup that name a runtime (cgroup v1, or v2 without a
#: cgroup namespace; with one, the file says only "0::/").  Checked in order.
CGROUP_MARKERS = (("kubepods", "kubernetes"), ("libpod", "podman"), ("docker", "docker"), ("lxc", "lxc"))


def detect_container(env: Environment) -> Container:
    evidence: list[str] = []
    kinds: list[str] = []
    if env.environ.get("KUBERNETES_SERVICE_HOST"):
        evidence.append("KUBERNETES_SERVICE_HOST is set")
        kinds.append("kubernetes")
    for marker, path in (("podman", "run/.containerenv"), ("docker", ".dockerenv")):
        if os.path.lexists(env.root(path)):
            evidence.append("/" + path)
            kinds.append(marker)
    # `container=` is what systemd-nspawn, Podman and LXC put in the environment of
    # the container's PID 1; it reaches us only if inherited, so read PID 1's too.
    values = [env.environ.get("container", "")]
    pid1_environ = _read_text(env.proc("1", "environ"))
    if pid1_environ:
        values += [v[len("container=") :] for v in pid1_environ.split("\0") if v.startswith("container=")]
    for value in values:
        if value:
            evidence.append(f"container={value}")
            kinds.append({"oci": "docker"}.get(value, value))
            break
    cgroups = {pid: _read_text(env.proc(pid, "cgroup")) or "" for pid in ("self", "1")}
    hits = [
        (pid, marker, kind) for pid in cgroups for marker, kind in CGROUP_MARKERS if marker in cgroups[pid]
    ]
    if hits:
        pid, marker, kind = hits[0]
        evidence.append(f"/proc/{pid}/cgroup mentions {marker}")
        kinds.append(kind)
    # Kubernetes runs Docker or containerd underneath: name the orchestrator.
    runtime = "kubernetes" if "kubernetes" in kinds else (kinds[0] if kinds else None)
    return Container(runtime, tuple(evidence))


def _bigger_shm_fix(container: Container, shm: str) -> str:
    if container.kind == "docker":
        return 'docker run --shm-size=1g ...\n# docker compose: shm_size: "1gb" in the service'
    if container.kind == "podman":
        return "podman run --shm-size=1g ..."
    if container.kind == "kubernetes":
        return (
            f"# in the pod spec, mount at {shm} a volume emptyDir: {{medium: Memory, sizeLimit: 1Gi}}\n"
            "kubectl explain pod.spec.volumes.emptyDir"
        )
    if container.kind is not None:
        return (
            f"# start the container with a larger {shm} (its runtime's shm size option), or inside it:\n"
            + (f"mount -o remount,size=1G {shm}")
        )
    return (
        f"sudo mount -o remount,size=1G {shm}\n"
        f"# to keep it, in /etc/fstab: tmpfs {shm} tmpfs defaults,size=1G 0 0"
    )


# ---- the checks -----------------------------------------------------------------


def check_shm_directory(env: Environment) -> Finding:
    shm = env.shm_directory
    container = detect_container(env)
    try:
        info = os.stat(shm)
    except FileNotFoundError:
        return Finding(
            "shm-directory",
            "fail",
            f"{shm} does not exist",
            "memipc keeps every named object as a file in this directory, so nothing can be "
            "created or opened. Minimal containers and chroots sometimes lack it.",
            f"sudo mkdir -p {shm} && sudo mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs {shm}"
            if container.kind is None
            else _bigger_shm_fix(container, shm),
            {"path": shm, "exists": False},
        )
    if not stat.S_ISDIR(info.st_mode):
        return Finding(
            "shm-directory",
            "fail",
            f"{shm} is not a directory",
            "memipc keeps every named object as a file in this directory.",
            f"sudo rm {shm} && sudo mkdir -m 1777 {shm} && sudo mount -t tmpfs -o mode=1777 tmpfs {shm}",
            {"path": shm, "exists": True, "directory": False},
        )
    mount = _shm_mount(env, "self")
    fs_type = mount.fs_type if mount else None
    writable = env.writable(shm)
    mode = stat.filemode(info.st_mode)
    measured: dict[str, Any] = {
        "path": shm,
        "exists": True,
        "fs_type": fs_type,
        "mount_point": mount.mount_point if mount else None,
        "mode": mode,
        "writable": writable,
    }
    if not writable:
        return Finding(
            "shm-directory",
            "fail",
            f"{shm} is not writable by this user (mode {mode}, owner uid {info.st_uid})",
            "Creating any memipc object fails with PermissionError; opening objects that others "
            "created still works. /dev/shm is normally world-writable with the sticky bit (1777), "
            "or mounted read-only here.",
            f"sudo chmod 1777 {shm}\n# if it is mounted read-only: sudo mount -o remount,rw {shm}",
            measured,
        )
    if fs_type is None:
        return Finding(
            "shm-directory",
            "ok",
            f"{shm} is writable (file system type unknown: /proc/self/mountinfo unreadable)",
            measured=measured,
        )
    if fs_type != "tmpfs":
        return Finding(
            "shm-directory",
            "warn",
            f"{shm} is on {fs_type}, not tmpfs",
            f"Regions live in files in {shm}. On a tmpfs they are memory; on {fs_type} their pages "
            "can be written back to disk, which makes large transfers slower and leaves data behind "
            "after a reboot"
            + (" (ramfs has no size limit at all)" if fs_type == "ramfs" else "")
            + ". Usually the container or chroot did not mount a tmpfs there.",
            f"sudo mount -t tmpfs -o mode=1777,nosuid,nodev,size=1G tmpfs {shm}"
            if container.kind is None
            else _bigger_shm_fix(container, shm),
            measured,
        )
    return Finding("shm-directory", "ok", f"{shm} is a tmpfs, writable by this user", measured=measured)


def check_shm_size(env: Environment) -> Finding:
    shm = env.shm_directory
    usage = env.statvfs(shm)
    total = usage.f_blocks * usage.f_frsize
    container = detect_container(env)
    measured: dict[str, Any] = {"path": shm, "total_bytes": total, "container": container.kind}
    if total == 0:
        return Finding(
            "shm-size",
            "note",
            f"{shm} reports no size limit",
            "A tmpfs mounted with size=0, or a ramfs, grows until memory runs out; "
            "a runaway writer there can push the whole machine into swap or the OOM killer.",
            f"sudo mount -o remount,size=1G {shm}",
            measured,
        )
    if total < SHM_SIZE_WARN_BYTES:
        where = " (Docker's default)" if container.kind == "docker" and total == 64 * MiB else ""
        return Finding(
            "shm-size",
            "warn",
            f"{shm} holds only {format_size(total)}{where}",
            ("Docker and Podman give a container 64 MiB unless told otherwise. " if container.kind else "")
            + f"Every memory-backed region, queue and lock is reserved in {shm} when it is created, "
            f"so creating more than {format_size(total)} in all fails with OSError (No space left on "
            "device), shared with every other program that uses it. Below "
            f"{format_size(SHM_SIZE_WARN_BYTES)} that happens with a few image-sized buffers.",
            _bigger_shm_fix(container, shm),
            measured,
        )
    return Finding("shm-size", "ok", f"{shm} can hold {format_size(total)}", measured=measured)


def check_shm_free(env: Environment) -> Finding:
    shm = env.shm_directory
    usage = env.statvfs(shm)
    total = usage.f_blocks * usage.f_frsize
    free = usage.f_bavail * usage.f_frsize
    measured: dict[str, Any] = {"path": shm, "free_bytes": free, "total_bytes": total}
    if total == 0:
        return Finding("shm-free", "skip", f"{shm} has no size limit to compare with", measured=measured)
    fraction = free / total
    measured["free_fraction"] = round(fraction, 4)
    found = f"{format_size(free)} free of {format_size(total)} ({fraction:.0%})"
    if free >= SHM_FREE_WARN_BYTES and fraction >= SHM_FREE_WARN_FRACTION:
        return Finding("shm-free", "ok", found, measured=measured)
    status: Status = "fail" if free < SHM_FREE_FAIL_BYTES else "warn"
    return Finding(
        "shm-free",
        status,
        f"{shm} is {'full' if status == 'fail' else 'nearly full'}: {found}",
        "Creating a region that does not fit fails with OSError (No space left on device). "
        f"The space is held by files in {shm}: memipc objects still in use, leftovers of "
        "processes that died, and other programs' shared memory. Its pages are RAM, so a full "
        f"{shm} is also memory the rest of the machine cannot use.",
        "memipc gc --dry-run    # memipc leftovers; memipc gc removes them\n"
        f"du -ah {shm} | sort -h | tail    # what else uses the space\n"
        "# or make it bigger:\n" + _bigger_shm_fix(detect_container(env), shm),
        measured,
    )


def check_container(env: Environment) -> Finding:
    container = detect_container(env)
    measured: dict[str, Any] = {"kind": container.kind, "evidence": list(container.evidence)}
    if container.kind is None:
        return Finding("container", "ok", "not in a container", measured=measured)
    return Finding(
        "container",
        "ok",
        f"in a {container.label} container ({', '.join(container.evidence)})",
        "Containers get their own /dev/shm and IPC namespace unless started otherwise: "
        "see shm-size and ipc-namespace.",
        measured=measured,
    )


def _namespace_inode(link: str | None) -> int | None:
    # "ipc:[4026531839]"
    if link is None or not link.endswith("]") or "[" not in link:
        return None
    try:
        return int(link[link.index("[") + 1 : -1])
    except ValueError:
        return None


def check_ipc_namespace(env: Environment) -> Finding:
    # memipc's names are files in /dev/shm, so two processes share objects exactly
    # when they see the same /dev/shm file system (the device in mountinfo).  The
    # IPC namespace itself holds only System V IPC and POSIX message queues, but
    # container runtimes give a private IPC namespace and a private /dev/shm
    # together (Docker's --ipc), so it is the sign to look for from the inside.
    shm = env.shm_directory
    own = _read_link(env.proc("self", "ns", "ipc"))
    if own is None:
        return Finding("ipc-namespace", "skip", "cannot read /proc/self/ns/ipc")
    pid1 = _read_link(env.proc("1", "ns", "ipc"))
    own_shm, pid1_shm = _shm_mount(env, "self"), _shm_mount(env, "1")
    host = _namespace_inode(own) == HOST_IPC_NAMESPACE
    container = detect_container(env)
    measured: dict[str, Any] = {
        "ipc_namespace": own,
        "pid1_ipc_namespace": pid1,
        "host_ipc_namespace": host,
        "shm_device": own_shm.device if own_shm else None,
        "pid1_shm_device": pid1_shm.device if pid1_shm else None,
        "container": container.kind,
    }
    sharing_fix = (
        "docker run --ipc=host ...    # the host's IPC namespace and /dev/shm\n"
        "# or share one container's with others:\n"
        "docker run --ipc=shareable --name peer1 ...\n"
        "docker run --ipc=container:peer1 ...\n"
        "# docker compose: ipc: host, or ipc: service:peer1\n"
        "# Kubernetes: the containers of a pod share it; across pods, hostIPC: true"
    )
    if own_shm and pid1_shm and own_shm.device != pid1_shm.device:
        return Finding(
            "ipc-namespace",
            "note",
            f"this process sees a different {shm} from PID 1's "
            f"(device {own_shm.device}, PID 1's {pid1_shm.device})",
            f"memipc objects live in {shm}, so only processes that see this same {shm} (this "
            "sandbox or mount namespace) can open them; processes outside cannot, even with the "
            "same names.",
            "start the processes that talk to each other in the same sandbox, or give it the "
            f"host's {shm} (a bind mount of {shm})",
            measured,
        )
    if pid1 is not None and pid1 != own:
        return Finding(
            "ipc-namespace",
            "ok",
            f"own IPC namespace {own}, not PID 1's {pid1}, but the same {shm}",
            "Something (unshare --ipc, systemd PrivateIPC=yes, a sandbox) gave this process its "
            f"own IPC namespace. memipc uses only {shm}, which is the same as PID 1's, so its "
            "objects are still shared.",
            measured=measured,
        )
    if not host and (pid1 is None or pid1 == own):
        inside = f"this {container.label} container" if container.kind else "this container or sandbox"
        return Finding(
            "ipc-namespace",
            "note",
            f"private IPC namespace {own}: memipc objects are shared only within {inside}",
            f"A container normally gets its own IPC namespace and its own {shm}. Processes inside "
            "it share memipc objects with each other, but not with the host or other containers, "
            "even under the same names. That is right for a self-contained service; to talk across "
            "containers, share the namespace.",
            sharing_fix
            if container.kind in {None, "docker", "kubernetes"}
            else (f"{container.kind}: start the containers with a shared IPC namespace and {shm}"),
            measured,
        )
    extra = " (started with --ipc=host or equivalent)" if container.kind else ""
    return Finding("ipc-namespace", "ok", f"the host's IPC namespace{extra}", measured=measured)


#: Where systemd looks for logind.conf and its drop-ins, most important first.
CONFIG_DIRECTORIES = ("etc", "run", "usr/local/lib", "usr/lib")
TRUE_WORDS = {"1", "yes", "y", "true", "t", "on"}
FALSE_WORDS = {"0", "no", "n", "false", "f", "off"}


def _parse_boolean(text: str) -> bool | None:
    word = text.strip().lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


def remove_ipc_settings(text: str) -> list[str]:
    """Every ``RemoveIPC=`` value in the [Login] section of one logind.conf text, in order."""
    values: list[str] = []
    section = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):  # continuation: systemd joins the next line
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        key, equals, value = line.partition("=")
        if equals and section == "Login" and key.strip() == "RemoveIPC":
            values.append(value.strip())
    return values


def _logind_files(env: Environment) -> tuple[str | None, list[str]]:
    """logind.conf and its drop-ins, in the order systemd applies them (the last setting wins)."""
    main = next(
        (path for d in CONFIG_DIRECTORIES if os.path.isfile(path := env.root(d, "systemd", "logind.conf"))),
        None,
    )
    # Drop-ins: *.conf from every directory, sorted by file name; a name in an
    # earlier directory hides the same name in later ones (so /etc overrides /usr/lib).
    chosen: dict[str, str] = {}
    for directory in CONFIG_DIRECTORIES:
        folder = env.root(directory, "systemd", "logind.conf.d")
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, PermissionError):
            for entry in os.listdir(folder):
                if entry.endswith(".conf"):
                    chosen.setdefault(entry, os.path.join(folder, entry))
    return main, [chosen[name] for name in sorted(chosen)]


def _compiled_default(env: Environment, main: str | None) -> tuple[bool, str]:
    """RemoveIPC's default: what the shipped logind.conf's commented line says, else upstream's yes."""
    if main is not None:
        for line in (_read_text(main) or "").splitlines():
            stripped = line.strip()
            if stripped.startswith("#RemoveIPC="):
                value = _parse_boolean(stripped[len("#RemoveIPC=") :])
                if value is not None:
                    return value, f"the default, as the commented line in {_shown(env, main)} says"
    return True, "systemd's upstream default"


def _shown(env: Environment, path: str) -> str:
    """A path as it is on the machine (the tests' root directory stripped)."""
    return "/" + os.path.relpath(path, env.root_directory)


def _sys_uid_max(env: Environment) -> int:
    for line in (_read_text(env.root("etc", "login.defs")) or "").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "SYS_UID_MAX" and words[1].isdigit():
            return int(words[1])
    return DEFAULT_SYS_UID_MAX


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def check_remove_ipc(env: Environment) -> Finding:
    uid = env.uid()
    sys_uid_max = _sys_uid_max(env)
    system_user = uid <= sys_uid_max
    measured: dict[str, Any] = {"uid": uid, "sys_uid_max": sys_uid_max, "system_user": system_user}
    # sd_booted(): systemd is the init system exactly when /run/systemd/system exists.
    booted = os.path.isdir(env.root("run", "systemd", "system"))
    measured["systemd"] = booted
    if not booted:
        container = detect_container(env)
        return Finding(
            "remove-ipc",
            "ok",
            "systemd is not running here (no /run/systemd/system): RemoveIPC= does not apply",
            f"If this container shares the host's {env.shm_directory}, run memipc doctor on the host "
            "as well: the host's systemd-logind can remove objects owned by a user who logs out there."
            if container.kind
            else "",
            measured=measured,
        )
    main, drop_ins = _logind_files(env)
    files = ([main] if main else []) + drop_ins
    remove_ipc, source = _compiled_default(env, main)
    for path in files:
        for value in remove_ipc_settings(_read_text(path) or ""):
            parsed = _parse_boolean(value)
            if parsed is not None:  # systemd ignores an unparsable value, and so do we
                remove_ipc, source = parsed, _shown(env, path)
    measured.update({"remove_ipc": remove_ipc, "set_in": source, "files": [_shown(env, f) for f in files]})
    setting = f"RemoveIPC={'yes' if remove_ipc else 'no'} ({source})"
    if not remove_ipc:
        return Finding("remove-ipc", "ok", setting, measured=measured)
    who = f"uid {uid} ({_user_name(uid)})"
    if system_user:
        return Finding(
            "remove-ipc",
            "ok",
            f"{setting}, but {who} is a system user, which it spares",
            f"systemd-logind removes IPC objects only of regular users (uid > {sys_uid_max}). "
            "Services that run as a regular user are still affected.",
            measured=measured,
        )
    name = _user_name(uid)
    return Finding(
        "remove-ipc",
        "warn",
        f"{setting}: {who} loses its memipc objects at logout",
        f"When {name} logs out of the last session (ssh, desktop, su, cron with PAM), "
        f"systemd-logind deletes every file {name} owns in {env.shm_directory}, "
        "including memipc objects that running services still use: their next open fails "
        "with NotFoundError, and new processes cannot find them.",
        "printf '[Login]\\nRemoveIPC=no\\n' | sudo tee /etc/systemd/logind.conf.d/60-memipc.conf\n"
        "sudo systemctl restart systemd-logind    # or reboot\n"
        f"# or keep {name} logged in for good:\n"
        f"sudo loginctl enable-linger {name}\n"
        "# or run the service as a system user (useradd --system)",
        measured,
    )


def check_max_map_count(env: Environment) -> Finding:
    text = _read_text(env.proc("sys", "vm", "max_map_count"))
    if text is None or not text.strip().isdigit():
        return Finding("max-map-count", "skip", "cannot read /proc/sys/vm/max_map_count")
    limit = int(text)
    measured: dict[str, Any] = {"max_map_count": limit}
    if limit >= MAX_MAP_COUNT_WARN:
        return Finding("max-map-count", "ok", f"vm.max_map_count is {limit}", measured=measured)
    return Finding(
        "max-map-count",
        "warn",
        f"vm.max_map_count is {limit}, below the kernel's default {MAX_MAP_COUNT_WARN}",
        "A process can hold at most this many memory mappings. Every mapped memipc view is one, "
        "and Python with its libraries already uses hundreds; past the limit, mapping a view "
        "fails with ENOMEM (Cannot allocate memory).",
        f"sudo sysctl -w vm.max_map_count={MAX_MAP_COUNT_SUGGESTED}\n"
        f"echo 'vm.max_map_count={MAX_MAP_COUNT_SUGGESTED}' | "
        "sudo tee /etc/sysctl.d/60-memipc.conf    # to keep it after a reboot",
        measured,
    )


def check_open_files(env: Environment) -> Finding:
    soft, hard = env.open_files_limit()

    def shown(limit: int) -> str:
        return "unlimited" if limit == resource.RLIM_INFINITY else str(limit)

    measured: dict[str, Any] = {
        "soft": None if soft == resource.RLIM_INFINITY else soft,
        "hard": None if hard == resource.RLIM_INFINITY else hard,
    }
    limits = f"soft {shown(soft)}, hard {shown(hard)}"

    def raise_soft(to: str) -> str:
        return (
            f"ulimit -n {to}    # in the shell that starts the program\n"
            f"# or in the program: resource.setrlimit(resource.RLIMIT_NOFILE, ({to}, hard))"
        )

    if soft != resource.RLIM_INFINITY and soft < OPEN_FILES_WARN:
        can_raise = hard == resource.RLIM_INFINITY or hard > soft
        target = shown(hard) if hard != resource.RLIM_INFINITY else "65536"
        return Finding(
            "open-files",
            "warn",
            f"open-files limit is {limits}: below {OPEN_FILES_WARN}",
            "Every open memipc object (region, queue, lock, event) holds a file descriptor, two "
            "for a file-backed region; past the limit, opening one fails with OSError (Too many "
            "open files)."
            + (" The hard limit allows more: a process may raise its own soft limit." if can_raise else ""),
            raise_soft(target)
            if can_raise
            else "# raise the hard limit: LimitNOFILE=65536 in the systemd unit,\n"
            "# nofile in /etc/security/limits.conf, or in a container:\n"
            "docker run --ulimit nofile=65536:65536 ...",
            measured,
        )
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        return Finding(
            "open-files",
            "note",
            f"open-files limit is {limits}: a process holding many objects can raise its soft limit",
            "Every open memipc object holds a file descriptor. The soft limit is the one enforced; "
            "a process may raise it up to the hard limit without privileges.",
            raise_soft(shown(hard) if hard != resource.RLIM_INFINITY else "65536"),
            measured,
        )
    return Finding("open-files", "ok", f"open-files limit is {limits}", measured=measured)


def check_stale_objects(env: Environment) -> Finding:
    try:
        entries = list(env.list_objects())
    except InventoryUnavailable as error:
        return Finding(
            "stale-objects",
            "skip",
            "skipped (inventory not available)",
            f"This build has no object inventory ({error}).",
            measured={"available": False},
        )
    stale = [entry for entry in entries if entry.stale]
    stale_bytes = sum(entry.size for entry in stale)
    measured: dict[str, Any] = {
        "available": True,
        "objects": len(entries),
        "stale": len(stale),
        "stale_bytes": stale_bytes,
        "stale_objects": [{"name": e.name, "kind": e.kind, "size": e.size} for e in stale],
    }
    if not stale:
        found = (
            f"{len(entries)} memipc object{'s' if len(entries) != 1 else ''}, none stale"
            if entries
            else ("no memipc objects")
        )
        return Finding("stale-objects", "ok", found, measured=measured)
    plural = "s" if len(stale) != 1 else ""
    names = ", ".join(f"{e.name} ({e.kind})" for e in stale[:STALE_NAMES_SHOWN])
    more = f" and {len(stale) - STALE_NAMES_SHOWN} more" if len(stale) > STALE_NAMES_SHOWN else ""
    return Finding(
        "stale-objects",
        "warn",
        f"{len(stale)} stale memipc object{plural} hold{'' if plural else 's'} {format_size(stale_bytes)}",
        f"Every process that used {'them' if plural else 'it'} has died without closing: {names}{more}. "
        f"{'They keep' if plural else 'It keeps'} their space in {env.shm_directory} until removed "
        "(creating one of these names again reclaims it by itself).",
        "memipc gc --dry-run    # shows what would be removed\nmemipc gc",
        measured,
    )


Check = Callable[[Environment], Finding]

#: Every check, in the order they print.
CHECKS: tuple[tuple[str, Check], ...] = (
    ("shm-directory", check_shm_directory),
    ("shm-size", check_shm_size),
    ("shm-free", check_shm_free),
    ("container", check_container),
    ("ipc-namespace", check_ipc_namespace),
    ("remove-ipc", check_remove_ipc),
    ("max-map-count", check_max_map_count),
    ("open-files", check_open_files),
    ("stale-objects", check_stale_objects),
)


def run_checks(env: Environment) -> list[Finding]:
    findings = []
    for check_id, check in CHECKS:
        try:
            findings.append(check(env))
        except OSError as error:  # e.g. statvfs of a missing /dev/shm: that check cannot run
            findings.append(Finding(check_id, "skip", f"could not check: {error}"))
    return findings


# ---- output ------------------------------------------------------------------------


def render_text(findings: Sequence[Finding], *, width: int = 100, verbose: bool = False) -> str:
    """The findings as aligned lines; explanations and fixes indented under non-ok ones."""
    id_width = max(len(f.check) for f in findings)
    indent = " " * (4 + 2 + id_width + 2)
    text_width = max(40, width - len(indent))
    lines = []
    for finding in findings:
        lines.append(f"{LABELS[finding.status]:<4}  {finding.check:<{id_width}}  {finding.summary}")
        if finding.status == "ok" and not verbose:
            continue
        if finding.detail:
            lines += [indent + line for line in textwrap.wrap(finding.detail, text_width)]
        for number, command in enumerate(finding.fix.splitlines()):
            lines.append(indent + ("fix: " if number == 0 else "     ") + command)
    lines += ["", _verdict(findings)]
    return "\n".join(lines) + "\n"


def _verdict(findings: Sequence[Finding]) -> str:
    failed = sum(f.status == "fail" for f in findings)
    warned = sum(f.status == "warn" for f in findings)
    if not failed + warned:
        return "nothing needs attention."
    parts = ", ".join(f"{n} {label}" for n, label in ((failed, "FAIL"), (warned, "warn")) if n)
    if failed + warned == 1:
        return f"1 finding needs attention ({parts}); its fix is above."
    return f"{failed + warned} findings need attention ({parts}); the fixes are above."


def exit_status(findings: Sequence[Finding]) -> int:
    return 1 if any(f.status in ATTENTION for f in findings) else 0


# ---- command line -------------------------------------------------------------------

EPILOG = """examples:
  memipc doctor                      check this machine, explain every problem and its fix
  memipc doctor --verbose            also explain the checks that passed
  memipc doctor --json | jq '.[] | select(.status != "ok")'
  memipc doctor || echo 'see above'  exit status 1 when something needs attention
"""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "doctor",
        help="check /dev/shm, containers, systemd RemoveIPC and limits; explain each fix",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print only JSON on stdout: a list of findings (check, status, summary, detail, fix, measured)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="explain the checks that passed too")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, env: Environment | None = None) -> int:
    findings = run_checks(env if env is not None else Environment())
    if args.json:
        json.dump([f.to_json() for f in findings], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        width = min(120, max(60, shutil.get_terminal_size((100, 24)).columns))
        sys.stdout.write(render_text(findings, width=width, verbose=args.verbose))
    return exit_status(findings)
