"""L1: Segment — one attached memipc segment (or headerless mapping source).

This module holds the protocols that make named objects safe to share; every
memipc kind (regions now, locks and channels later) is built on a Segment:

* **create**: ``O_CREAT | O_EXCL``, take the attach lock, size and reserve
  the file, write the header with ``magic`` zero, claim an attach row, let the
  kind's initializer fill the user area, then publish by storing ``magic``
  with release order (docs/design/region-header.md);
* **open**: take the attach lock (queueing behind a closer), check the name
  still refers to our file, wait (bounded) for publication with an acquire
  load of ``magic``, validate the whole header, claim a row;
* **release**: drop the row, and if this was the last handle of a
  non-persistent segment, unlink the name (docs/design/lifetime.md).

A failed open never removes anything; a failed create removes only the file
it made itself.  :class:`memipc.Region` wraps a Segment with the user API.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import operator
import os
import stat
import time
from collections.abc import Callable
from typing import final

from . import _core, _faults, _lifetime
from ._errors import CorruptRegionError, ExistsError, KindMismatchError, NotFoundError
from ._layout import (
    FLAG_FILE_BACKED,
    FLAG_PERSIST,
    HEADER_BYTES,
    KIND_CODES,
    MAGIC_BYTES,
    Header,
    pack_header,
    parse_header,
)
from ._names import DEFAULT_MODES, ObjectName, Scope
from ._platform import current as _platform
from ._view import GRANULARITY, Access

#: How long an opener waits for a creator that is still initializing.
INIT_WAIT_SECONDS = 5.0
#: A segment never published and held by nobody is abandoned after this long.
ABANDONED_AFTER_SECONDS = 1.0
_MAX_SIZE = 1 << 62

#: The class a user should open each kind with, for error messages.
KIND_CLASSES = {
    "region": "Region",
    "mutex": "Mutex",
    "semaphore": "Semaphore",
    "event": "Event",
    "condition": "Condition",
    "rwlock": "RWLock",
    "queue": "Queue",
    "pubsub": "Publisher/Subscriber",
    "rpc": "Server/Client",
}


def open_hint(kind: str, name: str) -> str:
    """How a user opens an existing object of ``kind`` (for error messages)."""
    if kind == "region":
        return f"Region.open({name!r})"
    return f"memipc.{KIND_CLASSES[kind].split('/')[0]}({name!r}, create=False)"


def create_hint(kind: str, name: str) -> str:
    """How a user creates an object of ``kind`` (for error messages)."""
    if kind == "region":
        return f"Region.create({name!r}, size)"
    return f"memipc.{KIND_CLASSES[kind].split('/')[0]}({name!r}, create=True)"


def article(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


#: Fills a new object's user area before it is published.
Initializer = Callable[[memoryview], None]


def check_size(size: object) -> int:
    """Validate a region size: a positive int that a file system could hold."""
    if isinstance(size, bool):
        raise TypeError("size must be an int, not bool")
    value = operator.index(size)  # type: ignore[arg-type]
    if value <= 0:
        raise ValueError(
            f"size must be at least 1 byte, got {value}; a region cannot be empty "
            "(Win32 reports ERROR_FILE_INVALID for the same request)"
        )
    if value >= _MAX_SIZE:
        raise OSError(errno.EFBIG, f"size {value} is beyond what any file system can hold")
    return value


def check_mode(mode: object, scope: Scope) -> int:
    """Validate ``mode=`` permission bits (default by scope)."""
    if mode is None:
        return DEFAULT_MODES[scope]
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        raise ValueError(f"mode must be permission bits between 0 and 0o777, not {mode!r}")
    if mode & 0o600 != 0o600:
        raise ValueError(
            f"mode {mode:#o} must give the owner read and write (0o600) so the creator can use it"
        )
    return mode


def _close_fd(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


@final
class Segment:
    """The OS resources behind one handle: descriptors, header mapping, attach row.

    ``data_fd`` and ``data_base`` say where the user area is: the segment
    itself after the header page, or a separate data file at offset 0.
    """

    fd: int = -1
    data_fd: int = -1
    data_base: int = 0
    fd_writable: bool = False
    header_map: mmap.mmap | None = None
    header: memoryview | None = None
    info: Header | None = None
    slot: int | None = None
    unlinked: bool = False
    released: bool = False

    def __init__(
        self,
        *,
        name: str,
        scope: Scope,
        os_name: str | None,
        kind: str,
        size: int,
        path: str | None,
        access: Access,
        created: bool,
        raw: bool,
    ) -> None:
        self.name = name
        self.scope = scope
        self.os_name = os_name
        self.kind = kind
        self.size = size
        self.path = path
        self.access = access
        self.created = created
        self.raw = raw
        self.owner_pid = os.getpid()

    @property
    def persist(self) -> bool:
        return self.info is not None and self.info.persist

    def describe(self) -> str:
        """How messages name this object."""
        if self.raw:
            return f"mapping of {self.path or self.name!r}"
        return f"{self.kind} {('Global' + chr(92) if self.scope == 'global' else '') + self.name!r}"

    # ---- headerless sources ----------------------------------------------

    @classmethod
    def open_raw(cls, oname: ObjectName, access: Access) -> Segment:
        """A segment another program made with ``shm_open``: no header, no lifetime rules."""
        try:
            fd = _platform.open_segment(oname.os_name, create=False, mode=0, writable=access == "rw")
        except FileNotFoundError:
            raise NotFoundError(
                f"cannot open raw segment {oname.name!r}: {_platform.segment_path(oname.os_name)} does not "
                "exist. Check the name the other program passed to shm_open()"
            ) from None
        size = os.fstat(fd).st_size
        if size == 0:
            os.close(fd)
            raise ValueError(f"cannot map raw segment {oname.name!r}: it is empty (size 0)")
        segment = cls(
            name=oname.name,
            scope="user",
            os_name=oname.os_name,
            kind="raw",
            size=size,
            path=None,
            access=access,
            created=False,
            raw=True,
        )
        segment.data_fd = fd
        return segment

    @classmethod
    def open_file(cls, path: str | os.PathLike[str], access: Access, size: int | None) -> Segment:
        """Any regular file, mapped from offset 0; grown to ``size`` if asked (rw only)."""
        file_path = os.path.abspath(os.fspath(path))
        # O_NONBLOCK: opening a FIFO must not hang; regular files ignore it.
        fd = os.open(file_path, (os.O_RDWR if access == "rw" else os.O_RDONLY) | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ValueError(f"cannot map {file_path!r}: it is not a regular file")
            wanted = info.st_size if size is None else check_size(size)
            if wanted == 0:
                raise ValueError(f"cannot map {file_path!r}: the file is empty; pass size= to grow it first")
            if wanted > info.st_size:
                if access != "rw":
                    raise ValueError(
                        f"cannot map {wanted} bytes of {file_path!r}: the file has {info.st_size} and "
                        f"access={access!r} cannot grow it; pass access='rw' or a smaller size"
                    )
                os.ftruncate(fd, wanted)
        except BaseException:
            os.close(fd)
            raise
        segment = cls(
            name=os.path.basename(file_path),
            scope="user",
            os_name=None,
            kind="raw",
            size=wanted,
            path=file_path,
            access=access,
            created=False,
            raw=True,
        )
        segment.data_fd = fd
        return segment

    # ---- create ----------------------------------------------------------

    @classmethod
    def create(
        cls,
        oname: ObjectName,
        size: object,
        *,
        kind: str,
        mode: int | None = None,
        path: str | os.PathLike[str] | None = None,
        persist: bool = False,
        reserve: bool | None = None,
        initialize: Initializer | None = None,
    ) -> Segment:
        """Create and publish a new object of ``kind`` (``ExistsError`` if the name is taken)."""
        size_bytes = check_size(size)
        permissions = check_mode(mode, oname.scope)
        file_path = os.path.abspath(os.fspath(path)) if path is not None else None
        if reserve is None:
            reserve = file_path is None
        for _ in range(8):
            try:
                fd = _platform.open_segment(oname.os_name, create=True, mode=permissions, writable=True)
            except FileExistsError:
                if reclaim_abandoned(oname):
                    continue
                raise ExistsError(
                    f"cannot create {kind} {oname.qualified!r}: the name is already taken. "
                    f"Open it with {open_hint(kind, oname.name)}, or choose another name"
                ) from None
            segment = cls(
                name=oname.name,
                scope=oname.scope,
                os_name=oname.os_name,
                kind=kind,
                size=size_bytes,
                path=file_path,
                access="rw",
                created=True,
                raw=False,
            )
            segment.fd, segment.fd_writable = fd, True
            try:
                _lifetime.lock_attach_byte(fd)
                if not _platform.still_named(oname.os_name, fd):
                    os.close(fd)  # a reclaimer removed our fresh file before we locked it
                    segment.fd = -1
                    continue
                if _faults.armed:
                    _faults.reach("region.create.after_lock")
                segment._build(
                    permissions=permissions, persist=persist, reserve=reserve, initialize=initialize
                )
            except BaseException:
                segment._abandon_creation()
                raise
            return segment
        raise ExistsError(f"cannot create {kind} {oname.qualified!r}: the name kept being taken; try again")

    def _build(
        self, *, permissions: int, persist: bool, reserve: bool, initialize: Initializer | None
    ) -> None:
        what = self.describe()
        if self.path is None:
            self.data_fd, self.data_base = self.fd, -(-HEADER_BYTES // GRANULARITY) * GRANULARITY
            total = self.data_base + self.size
            if reserve:
                _platform.reserve(self.fd, total, what)
            else:
                os.ftruncate(self.fd, total)
        else:
            _platform.reserve(self.fd, HEADER_BYTES, what)
            self.data_fd = os.open(
                self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK, permissions
            )
            info = os.fstat(self.data_fd)
            if not stat.S_ISREG(info.st_mode):
                raise ValueError(f"cannot back {what} with {self.path!r}: it is not a regular file")
            if info.st_size < self.size:
                if reserve:
                    os.posix_fallocate(self.data_fd, 0, self.size)
                else:
                    os.ftruncate(self.data_fd, self.size)
        pid = os.getpid()
        header_bytes = pack_header(
            kind=KIND_CODES[self.kind],
            flags=(FLAG_PERSIST if persist else 0) | (FLAG_FILE_BACKED if self.path is not None else 0),
            size_bytes=self.size,
            data_offset=self.data_base,
            creator_pid=pid,
            creator_start_ticks=_platform.process_start_ticks(pid) or 0,
            created_realtime_ns=time.time_ns(),
            name=self.name,
            path=self.path,
        )
        self.header_map = mmap.mmap(self.fd, HEADER_BYTES, access=mmap.ACCESS_WRITE)
        self.header = memoryview(self.header_map)
        self.header[8 : len(header_bytes)] = header_bytes[8:]  # magic (bytes 0-7) stays zero until publish
        snapshot = bytearray(self.header)
        snapshot[0:8] = MAGIC_BYTES
        self.info = parse_header(
            snapshot, segment_size=os.fstat(self.fd).st_size, page_size=GRANULARITY, where=what
        )
        self.slot = _lifetime.claim_slot(self.fd, self.header)
        if initialize is not None:
            user_area = mmap.mmap(self.data_fd, self.data_base + self.size, access=mmap.ACCESS_WRITE)
            try:
                with memoryview(user_area) as whole, whole[self.data_base :] as area:
                    initialize(area)
            finally:
                user_area.close()  # BufferError here means the initializer kept a reference: a bug
        if _faults.armed:
            _faults.reach("region.create.before_publish")
        # release: every header field, the attach row and the user area's
        # initial state are visible before the magic; pairs with the acquire
        # load in _wait_published().
        _core.store_u64(self.header, 0, _core.MAGIC)

    def _abandon_creation(self) -> None:
        """Undo a failed create: remove our file (only if the name is still ours)."""
        fd = self.fd
        if fd >= 0 and self.os_name is not None:
            with contextlib.suppress(OSError):
                if _platform.still_named(self.os_name, fd):
                    _platform.unlink_segment(self.os_name)
        self.release(lifetime=False)

    # ---- open ------------------------------------------------------------

    @classmethod
    def open(cls, oname: ObjectName, *, kind: str, access: Access) -> Segment:
        """Attach to a published object of ``kind`` (``NotFoundError`` if absent)."""
        for _ in range(8):
            writable = True
            try:
                try:
                    fd = _platform.open_segment(oname.os_name, create=False, mode=0, writable=True)
                except PermissionError:
                    if access == "rw":
                        raise
                    writable = False
                    fd = _platform.open_segment(oname.os_name, create=False, mode=0, writable=False)
            except FileNotFoundError:
                raise NotFoundError(
                    f"cannot open {kind} {oname.qualified!r} (scope={oname.scope}): no such name. Create it "
                    f"with {create_hint(kind, oname.name)}"
                    + (", or pass scope='global' if the creator did" if oname.scope == "user" else "")
                ) from None
            except PermissionError as error:
                raise PermissionError(
                    error.errno,
                    f"cannot open {kind} {oname.qualified!r} with access={access!r}: permission denied "
                    "by its mode; ask its creator for a wider mode= or open with access='r'",
                ) from None
            segment = cls(
                name=oname.name,
                scope=oname.scope,
                os_name=oname.os_name,
                kind=kind,
                size=0,
                path=None,
                access=access,
                created=False,
                raw=False,
            )
            segment.fd, segment.fd_writable = fd, writable
            try:
                _lifetime.lock_attach_byte(fd)
                if not _platform.still_named(oname.os_name, fd):
                    segment.release(lifetime=False)  # its last user unlinked it while we arrived
                    continue
                segment._attach(oname)
                if _faults.armed:
                    _faults.reach("region.open.after_attach")
            except BaseException:
                segment.release(lifetime=False)
                raise
            return segment
        raise NotFoundError(f"cannot open {kind} {oname.qualified!r}: it kept disappearing; try again")

    def _attach(self, oname: ObjectName) -> None:
        where = f"{self.kind} {oname.qualified!r} ({_platform.segment_path(oname.os_name)})"
        self.header_map = _wait_published(self.fd, where, writable=self.fd_writable)
        self.header = memoryview(self.header_map)
        header = parse_header(
            bytes(self.header), segment_size=os.fstat(self.fd).st_size, page_size=GRANULARITY, where=where
        )
        if header.kind_name != self.kind:
            raise KindMismatchError(
                f"cannot open {oname.qualified!r} as {article(self.kind)}: "
                f"it holds {article(header.kind_name)}. "
                f"Open it with {open_hint(header.kind_name, oname.name)}, or choose another name"
            )
        if header.name != oname.name:
            raise CorruptRegionError(f"{where}: its header names it {header.name!r}")
        self.info, self.size, self.path = header, header.size_bytes, header.path
        self.data_fd, self.data_base = self.fd, header.data_offset
        if header.path is not None:
            self.data_fd = self._open_data_file(header.path, where)
        self.slot = _lifetime.claim_slot(self.fd, self.header if self.fd_writable else None)

    def _open_data_file(self, path: str, where: str) -> int:
        # O_NONBLOCK: a path from shared memory may name a FIFO, whose open would hang.
        flags = (os.O_RDWR if self.access == "rw" else os.O_RDONLY) | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            data_fd = os.open(path, flags)
        except FileNotFoundError:
            raise CorruptRegionError(
                f"{where}: its data file {path!r} no longer exists; remove the region and create it again"
            ) from None
        except PermissionError:
            raise
        except OSError as error:  # a directory, a device that refuses, ...
            problem = f"cannot use {path!r} as its data file: {error.strerror}"
            raise CorruptRegionError(f"{where}: {problem}") from None
        self.data_fd = data_fd
        info = os.fstat(data_fd)
        # The path comes from shared memory: only follow it to a regular file
        # owned by whoever owns the segment, so a hostile creator cannot make
        # us write into one of our own files.
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.fstat(self.fd).st_uid:
            raise CorruptRegionError(
                f"{where}: its data file {path!r} is not a regular file owned by the region's creator"
            )
        if info.st_size < self.size:
            raise CorruptRegionError(
                f"{where}: its data file {path!r} holds {info.st_size} bytes but the region needs "
                f"{self.size}; the file was truncated"
            )
        return data_fd

    # ---- open or create ----------------------------------------------------

    @classmethod
    def open_or_create(
        cls,
        oname: ObjectName,
        size: object,
        *,
        kind: str,
        mode: int | None = None,
        path: str | os.PathLike[str] | None = None,
        persist: bool = False,
        reserve: bool | None = None,
        access: Access = "rw",
        initialize: Initializer | None = None,
    ) -> Segment:
        """Open the object, or create it if absent; exactly one racer creates."""
        size_bytes = check_size(size)
        for _ in range(16):
            try:
                return cls.create(
                    oname,
                    size_bytes,
                    kind=kind,
                    mode=mode,
                    path=path,
                    persist=persist,
                    reserve=reserve,
                    initialize=initialize,
                )
            except ExistsError:
                pass
            try:
                segment = cls.open(oname, kind=kind, access=access)
            except NotFoundError:
                continue  # its last user closed it between our two attempts
            except CorruptRegionError as error:
                if getattr(error, "abandoned", False):
                    continue  # its creator died mid-way; by now create() reclaims it
                raise
            if segment.size != size_bytes:
                found = segment.size
                segment.release(lifetime=True)
                raise ValueError(
                    f"{kind} {oname.qualified!r} exists with size {found}, but {size_bytes} was asked for; "
                    f"open it with {open_hint(kind, oname.name)}, or unlink it first"
                )
            return segment
        raise ExistsError(f"cannot open or create {kind} {oname.qualified!r}: it kept changing; try again")

    # ---- lifetime ----------------------------------------------------------

    def live_users(self) -> list[_lifetime.AttachedUser]:
        if self.header is None:
            return []
        return _lifetime.live_users(self.fd, self.header, self.slot)

    def unlink(self) -> None:
        """Remove the name now, unless it already names a newer object."""
        if self.os_name is None:
            return
        if self.raw:
            _platform.unlink_segment(self.os_name)
            return
        if self.unlinked:
            return
        if self.fd >= 0 and not _platform.still_named(self.os_name, self.fd):
            self.unlinked = True  # removed already (maybe a newer object has the name)
            return
        _platform.unlink_segment(self.os_name)
        self.unlinked = True

    def release(self, *, lifetime: bool) -> None:
        """Drop the header mapping, the attach row and the descriptors (idempotent).

        With ``lifetime``, the last handle of a non-persistent object also
        removes its name.  A forked child shares its parent's open file
        description, and with it the parent's locks, so in a child this only
        closes descriptors.
        """
        if self.released:
            return
        self.released = True
        fd = self.fd
        same_process = os.getpid() == self.owner_pid
        managed = lifetime and same_process and fd >= 0 and not self.raw
        if managed:
            _lifetime.release_slot(fd, self.header if self.fd_writable else None, self.slot)
        self.slot = None
        if self.header is not None:
            self.header.release()
            self.header = None
        if self.header_map is not None:
            self.header_map.close()
            self.header_map = None
        if (
            managed
            and self.fd_writable
            and not self.unlinked
            and not self.persist
            and self.os_name is not None
            and _lifetime.last_one_out(fd)
            and _platform.still_named(self.os_name, fd)
        ):
            if _faults.armed:
                _faults.reach("region.close.before_unlink")
            with contextlib.suppress(FileNotFoundError):
                _platform.unlink_segment(self.os_name)
        if self.data_fd != fd:
            _close_fd(self.data_fd)
        _close_fd(fd)
        self.fd = self.data_fd = -1


def _wait_published(fd: int, where: str, *, writable: bool) -> mmap.mmap:
    """Map the header once its creator has published it (acquire load of ``magic``)."""
    started = time.monotonic()
    pause = 0.0005
    header_map: mmap.mmap | None = None
    try:
        while True:
            if header_map is None and os.fstat(fd).st_size >= HEADER_BYTES:
                header_map = mmap.mmap(
                    fd, HEADER_BYTES, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
                )
            # acquire: pairs with the creator's release store of the magic.
            if header_map is not None and _core.load_u64(header_map, 0) != 0:
                return header_map
            waited = time.monotonic() - started
            creator_alive = _lifetime.in_use_elsewhere(fd)
            if waited > (INIT_WAIT_SECONDS if creator_alive else ABANDONED_AFTER_SECONDS):
                reason = (
                    f"its creator has not finished initializing it after {INIT_WAIT_SECONDS:.0f} s"
                    if creator_alive
                    else "its creator died before finishing it (or it is not a memipc object)"
                )
                error = CorruptRegionError(
                    f"{where}: not initialized: {reason}. Remove it, then create it again"
                )
                # Never published and nobody holds it: create() may reclaim it.
                error.abandoned = not creator_alive  # type: ignore[attr-defined]
                raise error
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
    except BaseException:
        if header_map is not None:
            header_map.close()
        raise


def reclaim_abandoned(oname: ObjectName) -> bool:
    """Remove a name left behind by dead processes; True if it was removed.

    Only memipc's own names reach here, only when no handle holds them open
    (we hold the attach byte's write lock while deciding), and only if they
    are not persistent — or were never published and have been abandoned for
    a while (their creator died mid-way).
    """
    try:
        fd = _platform.open_segment(oname.os_name, create=False, mode=0, writable=True)
    except OSError:
        return False
    try:
        if not _lifetime.try_lock_exclusive(fd):
            return False
        info = os.fstat(fd)
        published = False
        if info.st_size >= HEADER_BYTES:
            with mmap.mmap(fd, HEADER_BYTES, access=mmap.ACCESS_READ) as header_map:
                published = _core.load_u64(header_map, 0) != 0
                try:
                    header: Header | None = parse_header(
                        header_map[:HEADER_BYTES],
                        segment_size=info.st_size,
                        page_size=GRANULARITY,
                        where=oname.qualified,
                    )
                except CorruptRegionError:
                    header = None
            if published and (header is None or header.persist):
                return False  # corrupt ones are left for a person to look at; persistent ones wait for unlink
        if not published and time.time() - info.st_mtime < ABANDONED_AFTER_SECONDS:
            return False
        if _platform.still_named(oname.os_name, fd):
            _platform.unlink_segment(oname.os_name)
        return True
    finally:
        os.close(fd)  # drops the write lock
