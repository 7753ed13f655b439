"""What the CLI tests share: running `python -m memipc`, and children that hold objects.

:func:`memipc` runs one command as a real subprocess with a timeout.
:func:`held` starts a child from :mod:`tests.cli.children`, waits until its
objects exist, and kills and reaps it when the block ends, whatever happens;
:meth:`Holder.sigkill` kills it inside the block, the way a crash would.
:class:`PrivateShm` gives `memipc gc` a /dev/shm that no other test run shares.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memipc import _layout
from tests._support import procs
from tests.cli import children

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event

#: Seconds any one command or child may take before the test fails.
TIMEOUT = 30.0
#: A header's data offset: the first page after the 4096-byte header (see _segment.py).
DATA_OFFSET = 4096


def memipc(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    """``python -m memipc ARGS``: exit code, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "memipc", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def memipc_json(*args: str) -> Any:
    """Run a ``--json`` command that must succeed; its stdout, which must be only JSON, parsed."""
    result = memipc(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def by_name(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in entries}


def write_segment(path: str | Path, data: bytes, age: float = 0.0) -> None:
    """Create the file ``path`` holding ``data``, last modified ``age`` seconds ago."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    if age:
        then = time.time() - age
        os.utime(path, (then, then))


def segment_bytes(
    name: str,
    *,
    kind: int = _layout.KIND_CODES["region"],
    size: int = 4096,
    magic: int = _layout.MAGIC,
    abi: int = _layout.ABI_VERSION,
    file_bytes: int | None = None,
) -> bytes:
    """A memipc segment as its creator writes it (header, then data), with these fields.

    Nobody holds it open: unless the fields make it corrupt, it is a stale object.
    """
    header = bytearray(
        _layout.pack_header(
            kind=kind,
            flags=0,
            size_bytes=size,
            data_offset=DATA_OFFSET,
            creator_pid=os.getpid(),
            creator_start_ticks=0,
            created_realtime_ns=time.time_ns(),
            name=name,
            path=None,
        )
    )
    struct.pack_into("<QI", header, 0, magic, abi)
    whole = bytes(header).ljust(DATA_OFFSET, b"\0") + bytes(size)
    return whole if file_bytes is None else whole[:file_bytes].ljust(file_bytes, b"\0")


class Holder:
    """A running child from :mod:`tests.cli.children` that holds its objects until told."""

    def __init__(self, child: procs.Child, release: Event) -> None:
        self.child = child
        self._release = release
        self.done = False

    @property
    def pid(self) -> int:
        return self.child.pid

    def finish(self) -> Any:
        """Let the child close its objects and return; its return value."""
        self.done = True
        self._release.set()
        return self.child.result()

    def sigkill(self) -> None:
        """SIGKILL the child while it holds everything, reap it, and check it died of it."""
        self.done = True
        self.child.signal(signal.SIGKILL)
        self.child.process.join(TIMEOUT)
        assert self.child.process.exitcode == -signal.SIGKILL


@contextmanager
def held(function: Callable[..., Any], *args: Any) -> Iterator[Holder]:
    """A child running ``function(ready, release, *args)``, yielded once it is ready; always reaped.

    Leaving the block normally finishes the child (unless the test finished
    or killed it) and checks it returned without an error; a failing block
    kills it.
    """
    ready, release = procs.CTX.Event(), procs.CTX.Event()
    with procs.started(function, ready, release, *args, timeout=TIMEOUT) as child:
        deadline = time.monotonic() + TIMEOUT
        while not ready.wait(0.02):
            if not child.process.is_alive():
                result = child.result(0)  # raises what the child raised, if it raised
                raise AssertionError(f"the child exited before it was ready, returning {result!r}")
            assert time.monotonic() < deadline, f"child {child.pid} did not get ready in {TIMEOUT} s"
        holder = Holder(child, release)
        yield holder
        if not holder.done:
            holder.finish()


# ---- a /dev/shm of our own ------------------------------------------------------------

#: How to make a mount namespace (as root, or else as an unprivileged user owning a
#: user namespace), and how to enter it again.
_NAMESPACES = [
    (["unshare", "--mount", "--propagation", "private"], ["nsenter", "--mount"]),
    (
        ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"],
        ["nsenter", "--user", "--mount", "--preserve-credentials"],
    ),
]
#: Mount an empty tmpfs on /dev/shm, say so, then live until stdin closes.
_KEEPER = "mount -t tmpfs -o mode=1777,size=64m memipc-test /dev/shm && echo ready && exec cat >/dev/null"
_CHILDREN = str(Path(children.__file__).resolve())


class PrivateShm:
    """A mount namespace whose /dev/shm is an empty tmpfs of its own; commands run inside it.

    `memipc gc` removes every stale object of this user, so run against the
    shared /dev/shm it would also remove what other test runs left there
    for a moment on purpose (a killed creator's region that a test is about
    to reopen).  Its tests run here, where every segment is theirs.  The
    namespace lives as long as one keeper process; ``path`` is its
    /dev/shm seen from outside (/proc/PID/root).
    """

    def __init__(self, keeper: subprocess.Popen[str], enter: list[str]) -> None:
        self._keeper = keeper
        self._enter = [*enter, f"--target={keeper.pid}", "--"]
        self.path = Path(f"/proc/{keeper.pid}/root/dev/shm")
        uid = subprocess.run(
            [*self._enter, sys.executable, "-c", "import os; print(os.getuid())"],
            capture_output=True, text=True, timeout=TIMEOUT, check=True,
        )  # fmt: skip
        self.uid = int(uid.stdout)

    @classmethod
    def start(cls) -> PrivateShm | None:
        """A new private /dev/shm, or None where this system does not allow one."""
        for make, enter in _NAMESPACES:
            try:
                keeper = subprocess.Popen(
                    [*make, "sh", "-c", _KEEPER],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                )  # fmt: skip
            except OSError:  # no unshare(1)
                return None
            assert keeper.stdout is not None
            if keeper.stdout.readline().strip() == "ready":
                try:
                    shm = cls(keeper, enter)
                except (OSError, subprocess.SubprocessError):
                    pass
                else:
                    if shm.path.is_dir() and not any(shm.path.iterdir()):
                        return shm
                    shm.close()
                    continue
            _stop(keeper)
        return None

    def close(self) -> None:
        _stop(self._keeper)

    def os_name(self, name: str) -> str:
        """The OS name of a user-scope memipc name inside the namespace."""
        return f"memipc.u{self.uid}.{name}"

    def listing(self) -> set[str]:
        return {entry.name for entry in self.path.iterdir()}

    def memipc(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m memipc ARGS`` inside the namespace."""
        return subprocess.run(
            [*self._enter, sys.executable, "-m", "memipc", *args],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip

    def memipc_json(self, *args: str) -> Any:
        result = self.memipc(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    @contextmanager
    def holding(self, *specs: str) -> Iterator[subprocess.Popen[str]]:
        """A process inside that holds ``KIND:NAME`` objects (see children.hold_from_command_line).

        Close its stdin to let it finish; it is killed and reaped when the block ends.
        """
        process = subprocess.Popen(
            [*self._enter, sys.executable, _CHILDREN, *specs],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            line = process.stdout.readline().split()
            if line[:1] != ["ready"]:
                process.kill()
                raise AssertionError(f"the holder failed: {process.communicate(timeout=TIMEOUT)[1]}")
            assert int(line[1]) == process.pid  # nsenter ran it in place: a kill reaches it
            yield process
        finally:
            _stop(process)

    def sigkill(self, process: subprocess.Popen[str]) -> None:
        process.send_signal(signal.SIGKILL)
        assert process.wait(TIMEOUT) == -signal.SIGKILL


def _stop(process: subprocess.Popen[str]) -> None:
    """Kill ``process`` if it still runs, reap it, and close our ends of its pipes."""
    if process.poll() is None:
        process.kill()
    process.wait(TIMEOUT)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()
