"""Linux backend: /dev/shm, /proc, and open-file-description locks.

Named segments are files in /dev/shm opened with ``os.open`` (what glibc's
``shm_open`` does), so their names, sizes and permissions are visible with
ordinary tools, and segments made by other programs can be opened raw.

Storage is reserved with ``posix_fallocate``: /dev/shm is a tmpfs, where
``ftruncate`` reserves nothing and touching a page when the tmpfs is full
kills the process with SIGBUS.  Reserving turns that into ``OSError(ENOSPC)``
at create time.

Process identity is pid + start time (field 22 of /proc/<pid>/stat, in clock
ticks since boot): a pid recycled for a new process has a later start time.
"""

from __future__ import annotations

import errno
import os
import stat

from .. import _core
from ._protocol import LockType

SHM_DIRECTORY = "/dev/shm"


def _format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # pragma: no cover


class LinuxPlatform:
    """The Linux implementation of :class:`memipc._platform.Platform`."""

    name = "linux"

    def __init__(self, shm_directory: str = SHM_DIRECTORY) -> None:
        self.shm_directory = shm_directory

    def segment_path(self, os_name: str) -> str:
        return os.path.join(self.shm_directory, os_name)

    def open_segment(self, os_name: str, *, create: bool, mode: int, writable: bool) -> int:
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC | os.O_NOFOLLOW
        if create:
            flags |= os.O_CREAT | os.O_EXCL
        fd = os.open(self.segment_path(os_name), flags, mode)
        if create:
            try:
                os.fchmod(fd, mode)  # exactly `mode`, whatever the umask says
            except OSError:
                os.close(fd)
                raise
        return fd

    def unlink_segment(self, os_name: str) -> None:
        os.unlink(self.segment_path(os_name))

    def still_named(self, os_name: str, fd: int) -> bool:
        try:
            named = os.stat(self.segment_path(os_name), follow_symlinks=False)
        except FileNotFoundError:
            return False
        opened = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)

    def list_segments(self) -> list[str]:
        try:
            entries = os.scandir(self.shm_directory)
        except FileNotFoundError:
            return []
        with entries:
            return sorted(e.name for e in entries if e.is_file(follow_symlinks=False))

    def reserve(self, fd: int, size: int, what: str) -> None:
        info = os.fstatvfs(fd)
        free = info.f_bavail * info.f_frsize
        current = os.fstat(fd).st_size
        if size > current and size - current > free:
            raise OSError(
                errno.ENOSPC,
                f"cannot reserve {_format_bytes(size)} for {what}: {self.shm_directory} has "
                f"{_format_bytes(free)} free of {_format_bytes(info.f_blocks * info.f_frsize)}. "
                "Free space there (memipc gc removes leftovers), use a smaller size, "
                "or pass path= to back the region with a file",
            )
        os.ftruncate(fd, size)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as error:
            raise OSError(
                error.errno,
                f"cannot reserve {_format_bytes(size)} for {what} in {self.shm_directory}: "
                f"{error.strerror}. Free space there or use a smaller size",
            ) from None

    def process_start_ticks(self, pid: int) -> int | None:
        if pid <= 0:
            return None
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                text = f.read()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        # The command name (field 2) may hold spaces and ')'; fields after the
        # last ')' start at field 3 ("state"), so starttime (22) is index 19.
        fields = text[text.rfind(b")") + 2 :].split()
        try:
            return int(fields[19])
        except (IndexError, ValueError):
            return None

    def lock(self, fd: int, start: int, length: int, lock_type: LockType, *, wait: bool) -> bool:
        return _core.ofd_lock(fd, start, length, int(lock_type), wait)

    def locked_elsewhere(self, fd: int, start: int, length: int) -> bool:
        return _core.ofd_probe(fd, start, length, _core.LOCK_WRITE)


def is_regular_file(fd: int) -> bool:
    """True if ``fd`` is a regular file (segments and data files must be)."""
    return stat.S_ISREG(os.fstat(fd).st_mode)
