"""The Platform protocol: what the layers above need from an operating system.

Kept deliberately small: named segments (open, create, unlink, reserve), the
identity of a process that pid reuse cannot fool, and byte-range locks whose
owner the kernel forgets when the process dies (the liveness mechanism of
:mod:`memipc._lifetime`).
"""

from __future__ import annotations

import enum
from typing import Protocol


class LockType(enum.IntEnum):
    """Byte-range lock types (values match ``_core.LOCK_*``)."""

    READ = 0
    WRITE = 1
    UNLOCK = 2


class Platform(Protocol):
    """Operations on named segments, processes and locks for one OS."""

    name: str

    def segment_path(self, os_name: str) -> str:
        """Where a named segment lives in the file system (for messages and the CLI)."""
        ...

    def open_segment(self, os_name: str, *, create: bool, mode: int, writable: bool) -> int:
        """Open (or exclusively create, with exactly ``mode``) a named segment; return an fd.

        Raises FileExistsError / FileNotFoundError / PermissionError as the OS does.
        """
        ...

    def unlink_segment(self, os_name: str) -> None:
        """Remove a segment's name; mappings and descriptors stay valid."""
        ...

    def still_named(self, os_name: str, fd: int) -> bool:
        """True if ``os_name`` still refers to the file open on ``fd``."""
        ...

    def list_segments(self) -> list[str]:
        """OS names of every segment in the shared-memory namespace."""
        ...

    def reserve(self, fd: int, size: int, what: str) -> None:
        """Set the file size to ``size`` and reserve its storage now (OSError if there is no room)."""
        ...

    def process_start_ticks(self, pid: int) -> int | None:
        """An opaque start time that distinguishes a pid's current process from earlier ones."""
        ...

    def lock(self, fd: int, start: int, length: int, lock_type: LockType, *, wait: bool) -> bool:
        """Take, convert or drop a lock owned by this open file; False if busy and not waiting."""
        ...

    def locked_elsewhere(self, fd: int, start: int, length: int) -> bool:
        """True if another open file holds any lock on the range."""
        ...
