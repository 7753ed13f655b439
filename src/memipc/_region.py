"""L1: Region — a named shared-memory region (CreateFileMapping / OpenFileMapping).

A region is a named segment in the shared-memory namespace whose first page
is a self-describing header (layout in src/c/layout.h, validated by
:mod:`memipc._layout`), followed by the user area.  A file-backed region keeps
its header in the named segment and its user data in the file, byte for byte,
so the file is exactly the user's data and survives every process.

Creation publishes the header last: the creator writes every field, claims its
attach row, lets the kind-specific initializer fill the user area, and only
then stores the magic with release order.  Openers load the magic with acquire
order and wait (bounded) while it is zero, so nobody ever sees a half-built
region.  Lifetime (who keeps the name alive, how crashes are forgiven) is in
:mod:`memipc._lifetime`.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import operator
import os
import stat
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, final

from . import _core, _faults, _lifetime
from ._errors import ClosedError, CorruptRegionError, ExistsError, KindMismatchError, NotFoundError
from ._layout import (
    FLAG_FILE_BACKED,
    FLAG_PERSIST,
    HEADER_BYTES,
    KIND_CODES,
    KIND_NAMES,
    MAGIC_BYTES,
    Header,
    pack_header,
    parse_header,
)
from ._names import DEFAULT_MODES, ObjectName, Scope, parse, parse_raw
from ._platform import current as _platform
from ._view import GRANULARITY, Access, View, check_access, map_window

#: How long an opener waits for a creator that is still initializing.
INIT_WAIT_SECONDS = 5.0
#: A segment never published and held by nobody is abandoned after this long.
ABANDONED_AFTER_SECONDS = 1.0
_MAX_SIZE = 1 << 62

#: The class a user should open each kind with, for KindMismatchError messages.
_KIND_CLASSES = {
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

Initializer = Callable[[memoryview], None]


@final
@dataclass(frozen=True, slots=True)
class RegionInfo:
    """What a region's header and attach table say, as returned by :meth:`Region.info`."""

    name: str
    scope: Scope
    kind: str
    size: int
    path: str | None
    persist: bool
    creator_pid: int | None
    #: Creation time, seconds since the epoch (None for headerless mappings).
    created_time: float | None
    #: Pids of the live processes attached (listed rows of the attach table).
    attached_pids: tuple[int, ...]
    abi_version: int | None
    os_name: str | None


RegionInfo.__module__ = "memipc"


def _check_size(size: object) -> int:
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


def _check_mode(mode: object, scope: Scope) -> int:
    if mode is None:
        return DEFAULT_MODES[scope]
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        raise ValueError(f"mode must be permission bits between 0 and 0o777, not {mode!r}")
    if not mode & 0o600 == 0o600:
        raise ValueError(
            f"mode {mode:#o} must give the owner read and write (0o600) so the creator can use it"
        )
    return mode


def _data_offset() -> int:
    return -(-HEADER_BYTES // GRANULARITY) * GRANULARITY


def _close_fd(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


@final
class Region:
    """A named region of shared memory, or a mapped file.

    Make one with :meth:`create`, :meth:`open`, :meth:`open_or_create` or
    :meth:`open_file`; the constructor is not public.  A region is a context
    manager: leaving the block closes this handle (and the name goes away when
    the last handle of a non-persistent region closes).

        >>> import memipc, uuid
        >>> name = "doc-" + uuid.uuid4().hex[:8]
        >>> with memipc.Region.create(name, 4096) as writer:
        ...     writer.buf[:5] = b"hello"
        ...     with memipc.Region.open(name) as reader:
        ...         bytes(reader.buf[:5])
        b'hello'
    """

    # Class-level defaults make close() and __del__ safe on half-built objects.
    _fd: int = -1
    _data_fd: int = -1
    _header_map: mmap.mmap | None = None
    _header: memoryview | None = None
    _main: View | None = None
    _slot: int | None = None
    _closed: bool = True
    _unlinked: bool = False
    _raw: bool = True
    _fd_writable: bool = False
    _owner_pid: int = -1
    _views: weakref.WeakSet[View]
    _info: Header | None = None

    _name: str = "?"
    _scope: Scope = "user"
    _os_name: str | None = None
    _size: int = 0
    _path: str | None = None
    _access: Access = "rw"
    _kind: str = "?"
    _created: bool = False
    _data_base: int = 0

    _construct_token: ClassVar[object] = object()

    def __init__(self, token: object) -> None:
        """Not public: use Region.create / open / open_or_create / open_file."""
        if token is not Region._construct_token:
            raise TypeError(
                "Region() is not public; use Region.create(name, size), Region.open(name), "
                "Region.open_or_create(name, size) or Region.open_file(path)"
            )
        self._views = weakref.WeakSet()
        self._owner_pid = os.getpid()

    # ---- construction ----------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        size: int,
        *,
        scope: Scope | None = None,
        mode: int | None = None,
        path: str | os.PathLike[str] | None = None,
        persist: bool = False,
        reserve: bool | None = None,
    ) -> Region:
        """Create a new named region of ``size`` bytes (``ExistsError`` if the name is taken).

        ``scope`` is ``"user"`` (default; owner-only, mode 0600) or
        ``"global"`` (mode 0660); a ``Global\\`` or ``Local\\`` prefix on the
        name says the same.  ``path`` backs the region with a file that keeps
        the data after every process exits (an existing file keeps its
        contents and grows to ``size`` if smaller).  ``persist=True`` keeps the
        name after its last handle closes, until :meth:`unlink`.

        ``reserve`` (default: True for memory, False for files) allocates the
        storage now, so a full /dev/shm is an ``OSError`` here rather than a
        SIGBUS later.  Pass ``reserve=False`` for a sparse region larger than
        the memory available; touching pages beyond what the system can hold
        then kills the process, as with any sparse mapping.
        """
        return cls._create(
            parse(name, scope), size, kind="region", mode=mode, path=path, persist=persist, reserve=reserve
        )

    @classmethod
    def open(
        cls, name: str, *, scope: Scope | None = None, access: Access = "rw", raw: bool = False
    ) -> Region:
        """Open an existing region by name (``NotFoundError`` if there is none).

        ``access`` is ``"r"`` (read-only), ``"rw"`` or ``"copy"`` (private
        copy-on-write: writes stay in this handle).  ``raw=True`` maps a
        headerless segment another program made with ``shm_open(name)``.
        """
        access = check_access(access)
        if raw:
            return cls._open_raw(parse_raw(name), access)
        return cls._open(parse(name, scope), kind="region", access=access)

    @classmethod
    def open_or_create(
        cls,
        name: str,
        size: int,
        *,
        scope: Scope | None = None,
        mode: int | None = None,
        path: str | os.PathLike[str] | None = None,
        persist: bool = False,
        reserve: bool | None = None,
        access: Access = "rw",
    ) -> Region:
        """Open the region if it exists, else create it; ``region.created`` tells which.

        Safe under races: when many processes call it at once, exactly one
        creates.  An existing region must have the requested ``size``.
        """
        return cls._open_or_create(
            parse(name, scope),
            size,
            kind="region",
            mode=mode,
            path=path,
            persist=persist,
            reserve=reserve,
            access=check_access(access),
        )

    @classmethod
    def open_file(
        cls, path: str | os.PathLike[str], *, access: Access = "rw", size: int | None = None
    ) -> Region:
        """Map any file, no name needed (CreateFileMapping on a file handle).

        ``size`` defaults to the file's size; a larger ``size`` grows the file
        (``access="rw"`` only).  Data written is in the file for every later
        reader; call :meth:`flush` to make it durable.
        """
        access = check_access(access)
        file_path = os.path.abspath(os.fspath(path))
        flags = (os.O_RDWR if access == "rw" else os.O_RDONLY) | os.O_CLOEXEC
        fd = os.open(file_path, flags)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ValueError(f"cannot map {file_path!r}: it is not a regular file")
            wanted = info.st_size if size is None else _check_size(size)
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
        region = cls(cls._construct_token)
        region._setup(
            name=os.path.basename(file_path),
            scope="user",
            os_name=None,
            size=wanted,
            path=file_path,
            access=access,
            kind="raw",
            created=False,
            fd=-1,
            data_fd=fd,
            data_base=0,
            raw=True,
        )
        return region

    # ---- internal constructors (used by every kind) ----------------------

    @classmethod
    def _open_raw(cls, oname: ObjectName, access: Access) -> Region:
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
        region = cls(cls._construct_token)
        region._setup(
            name=oname.name,
            scope="user",
            os_name=oname.os_name,
            size=size,
            path=None,
            access=access,
            kind="raw",
            created=False,
            fd=-1,
            data_fd=fd,
            data_base=0,
            raw=True,
        )
        return region

    @classmethod
    def _create(
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
    ) -> Region:
        size_bytes = _check_size(size)
        permissions = _check_mode(mode, oname.scope)
        file_path = os.path.abspath(os.fspath(path)) if path is not None else None
        if reserve is None:
            reserve = file_path is None
        for _ in range(8):
            try:
                fd = _platform.open_segment(oname.os_name, create=True, mode=permissions, writable=True)
            except FileExistsError:
                if cls._reclaim_abandoned(oname):
                    continue
                raise ExistsError(
                    f"cannot create {kind} {oname.qualified!r}: the name is already taken. "
                    f"Open it with {_KIND_CLASSES.get(kind, 'Region')}.open, use open_or_create, "
                    "or choose another name"
                ) from None
            region = cls(cls._construct_token)
            try:
                _lifetime.lock_attach_byte(fd)
                if not _platform.still_named(oname.os_name, fd):
                    os.close(fd)  # a reclaimer removed our fresh file before we locked it
                    continue
                if _faults.armed:
                    _faults.reach("region.create.after_lock")
                region._build(
                    oname,
                    fd,
                    size_bytes,
                    kind=KIND_CODES[kind],
                    path=file_path,
                    permissions=permissions,
                    persist=persist,
                    reserve=reserve,
                    initialize=initialize,
                )
            except BaseException:
                region._abandon_creation(fd, oname)
                raise
            return region
        raise ExistsError(f"cannot create {kind} {oname.qualified!r}: the name kept being taken; try again")

    def _build(
        self,
        oname: ObjectName,
        fd: int,
        size_bytes: int,
        *,
        kind: int,
        path: str | None,
        permissions: int,
        persist: bool,
        reserve: bool,
        initialize: Initializer | None,
    ) -> None:
        what = f"{KIND_NAMES[kind]} {oname.qualified!r}"
        self._fd = fd
        self._fd_writable = True
        data_fd = fd
        if path is None:
            data_offset = _data_offset()
            total = data_offset + size_bytes
            if reserve:
                _platform.reserve(fd, total, what)
            else:
                os.ftruncate(fd, total)
        else:
            data_offset = 0
            _platform.reserve(fd, HEADER_BYTES, what)
            data_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, permissions)
            self._data_fd = data_fd
            if not stat.S_ISREG(os.fstat(data_fd).st_mode):
                raise ValueError(f"cannot back {what} with {path!r}: it is not a regular file")
            if os.fstat(data_fd).st_size < size_bytes:
                if reserve:
                    os.posix_fallocate(data_fd, 0, size_bytes)
                else:
                    os.ftruncate(data_fd, size_bytes)
        flags = (FLAG_PERSIST if persist else 0) | (FLAG_FILE_BACKED if path is not None else 0)
        pid = os.getpid()
        header_bytes = pack_header(
            kind=kind,
            flags=flags,
            size_bytes=size_bytes,
            data_offset=data_offset,
            creator_pid=pid,
            creator_start_ticks=_platform.process_start_ticks(pid) or 0,
            created_realtime_ns=time.time_ns(),
            name=oname.name,
            path=path,
        )
        self._header_map = mmap.mmap(fd, HEADER_BYTES, access=mmap.ACCESS_WRITE)
        self._header = memoryview(self._header_map)
        self._header[8 : len(header_bytes)] = header_bytes[8:]  # magic (bytes 0-7) stays zero
        snapshot = bytearray(self._header)
        snapshot[0:8] = MAGIC_BYTES
        self._info = parse_header(
            snapshot, segment_size=os.fstat(fd).st_size, page_size=GRANULARITY, where=what
        )
        self._slot = _lifetime.claim_slot(fd, self._header)
        self._setup(
            name=oname.name,
            scope=oname.scope,
            os_name=oname.os_name,
            size=size_bytes,
            path=path,
            access="rw",
            kind=KIND_NAMES[kind],
            created=True,
            fd=fd,
            data_fd=data_fd,
            data_base=data_offset,
            raw=False,
        )
        if initialize is not None:
            initialize(self.buf)
        if _faults.armed:
            _faults.reach("region.create.before_publish")
        # release: every header field, the attach row and the user area's
        # initial state are visible before the magic; pairs with the acquire
        # load in _wait_published().
        _core.store_u64(self._header, 0, _core.MAGIC)

    def _abandon_creation(self, fd: int, oname: ObjectName) -> None:
        """Undo a failed create: our file, our name (only if it is still ours)."""
        self._closed = True
        if self._main is not None:
            self._main._close_quietly()
            self._main = None
        if self._header is not None:
            self._header.release()
            self._header = None
        if self._header_map is not None:
            self._header_map.close()
            self._header_map = None
        try:
            if _platform.still_named(oname.os_name, fd):
                _platform.unlink_segment(oname.os_name)
        except OSError:
            pass
        if self._data_fd != fd:
            _close_fd(self._data_fd)
        _close_fd(fd)
        self._fd = self._data_fd = -1

    @classmethod
    def _reclaim_abandoned(cls, oname: ObjectName) -> bool:
        """Remove a name left behind by dead processes; True if it was removed.

        Only memipc's own segments qualify, only when no handle holds them
        open, and only if they are not persistent (persistent ones wait for
        unlink) — or were never published and have been abandoned a while.
        """
        try:
            fd = _platform.open_segment(oname.os_name, create=False, mode=0, writable=True)
        except OSError:
            return False
        try:
            if not _lifetime.try_lock_exclusive(fd):
                return False
            info = os.fstat(fd)
            if info.st_size >= HEADER_BYTES:
                with mmap.mmap(fd, HEADER_BYTES, access=mmap.ACCESS_READ) as header_map:
                    published = _core.load_u64(header_map, 0) != 0
                    try:
                        header = parse_header(
                            header_map[:HEADER_BYTES],
                            segment_size=info.st_size,
                            page_size=GRANULARITY,
                            where=oname.qualified,
                        )
                    except CorruptRegionError:
                        header = None
                if published and (header is None or header.persist):
                    return False
            else:
                published = False
            if not published and time.time() - info.st_mtime < ABANDONED_AFTER_SECONDS:
                return False
            if _platform.still_named(oname.os_name, fd):
                _platform.unlink_segment(oname.os_name)
            return True
        finally:
            os.close(fd)  # drops the write lock

    @classmethod
    def _open(cls, oname: ObjectName, *, kind: str, access: Access) -> Region:
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
                    f"with {_KIND_CLASSES[kind]}.create({oname.name!r}, ...)"
                    + (", or pass scope='global' if the creator did" if oname.scope == "user" else "")
                ) from None
            except PermissionError as error:
                raise PermissionError(
                    error.errno,
                    f"cannot open {kind} {oname.qualified!r} with access={access!r}: permission denied "
                    "by its mode; ask its creator for a wider mode= or open with access='r'",
                ) from None
            region = cls(cls._construct_token)
            region._fd = fd
            region._fd_writable = writable
            try:
                _lifetime.lock_attach_byte(fd)
                if not _platform.still_named(oname.os_name, fd):
                    os.close(fd)  # its last user unlinked it while we were arriving
                    region._fd = -1
                    continue
                region._attach(oname, kind=kind, access=access)
                if _faults.armed:
                    _faults.reach("region.open.after_attach")
            except BaseException:
                region._closed = False
                region._release(lifetime=False)
                raise
            return region
        raise NotFoundError(f"cannot open {kind} {oname.qualified!r}: it kept disappearing; try again")

    def _attach(self, oname: ObjectName, *, kind: str, access: Access) -> None:
        fd = self._fd
        where = f"{kind} {oname.qualified!r} ({_platform.segment_path(oname.os_name)})"
        self._header_map = self._wait_published(fd, where, writable=self._fd_writable)
        self._header = memoryview(self._header_map)
        segment_size = os.fstat(fd).st_size
        header = parse_header(
            bytes(self._header), segment_size=segment_size, page_size=GRANULARITY, where=where
        )
        if header.kind_name != kind:
            raise KindMismatchError(
                f"cannot open {oname.qualified!r} as a {kind}: it holds a {header.kind_name}. Open it with "
                f"memipc.{_KIND_CLASSES[header.kind_name]}, or choose another name"
            )
        if header.name != oname.name:
            raise CorruptRegionError(f"{where}: its header names it {header.name!r}")
        data_fd = fd
        if header.path is not None:
            data_fd = self._open_data_file(header, access, where, fd)
        self._info = header
        self._slot = _lifetime.claim_slot(fd, self._header if self._fd_writable else None)
        self._setup(
            name=oname.name,
            scope=oname.scope,
            os_name=oname.os_name,
            size=header.size_bytes,
            path=header.path,
            access=access,
            kind=kind,
            created=False,
            fd=fd,
            data_fd=data_fd,
            data_base=header.data_offset,
            raw=False,
        )

    def _open_data_file(self, header: Header, access: Access, where: str, segment_fd: int) -> int:
        assert header.path is not None
        flags = (os.O_RDWR if access == "rw" else os.O_RDONLY) | os.O_CLOEXEC
        try:
            data_fd = os.open(header.path, flags)
        except FileNotFoundError:
            raise CorruptRegionError(
                f"{where}: its data file {header.path!r} no longer exists; "
                "remove the region and create it again"
            ) from None
        self._data_fd = data_fd
        info = os.fstat(data_fd)
        # The path comes from shared memory: only follow it to a regular file
        # owned by whoever owns the segment, so a hostile creator cannot make
        # us write into one of our own files.
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.fstat(segment_fd).st_uid:
            raise CorruptRegionError(
                f"{where}: its data file {header.path!r} is not a regular file owned by the region's creator"
            )
        if info.st_size < header.size_bytes:
            raise CorruptRegionError(
                f"{where}: its data file {header.path!r} holds {info.st_size} bytes but the region needs "
                f"{header.size_bytes}; the file was truncated"
            )
        return data_fd

    @staticmethod
    def _wait_published(fd: int, where: str, *, writable: bool) -> mmap.mmap:
        """Map the header once the creator has published it (acquire on magic)."""
        started = time.monotonic()
        pause = 0.0005
        header_map: mmap.mmap | None = None
        try:
            while True:
                if header_map is None and os.fstat(fd).st_size >= HEADER_BYTES:
                    access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
                    header_map = mmap.mmap(fd, HEADER_BYTES, access=access)
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
                    raise CorruptRegionError(
                        f"{where}: not initialized: {reason}. Remove it and create it again"
                    )
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
        except BaseException:
            if header_map is not None:
                header_map.close()
            raise

    @classmethod
    def _open_or_create(
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
    ) -> Region:
        size_bytes = _check_size(size)
        for _ in range(16):
            try:
                return cls._create(
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
                region = cls._open(oname, kind=kind, access=access)
            except NotFoundError:
                continue  # its last user closed it between our two attempts
            if region.size != size_bytes:
                found = region.size
                region.close()
                raise ValueError(
                    f"{kind} {oname.qualified!r} exists with size {found}, but {size_bytes} was asked for; "
                    f"open it with {_KIND_CLASSES[kind]}.open({oname.name!r}), or unlink it first"
                )
            return region
        raise ExistsError(f"cannot open or create {kind} {oname.qualified!r}: it kept changing; try again")

    def _setup(
        self,
        *,
        name: str,
        scope: Scope,
        os_name: str | None,
        size: int,
        path: str | None,
        access: Access,
        kind: str,
        created: bool,
        fd: int,
        data_fd: int,
        data_base: int,
        raw: bool,
    ) -> None:
        self._name = name
        self._scope = scope
        self._os_name = os_name
        self._size = size
        self._path = path
        self._access = access
        self._kind = kind
        self._created = created
        self._fd = fd
        self._data_fd = data_fd
        self._data_base = data_base
        self._raw = raw
        self._closed = False

    # ---- properties ------------------------------------------------------

    @property
    def name(self) -> str:
        """The name without its scope prefix (the file name for :meth:`open_file`)."""
        return self._name

    @property
    def scope(self) -> Scope:
        return self._scope

    @property
    def size(self) -> int:
        """The logical size in bytes: the same number in every process, never page-rounded."""
        return self._size

    @property
    def path(self) -> str | None:
        """The backing file, or None for a memory-backed region."""
        return self._path

    @property
    def access(self) -> Access:
        return self._access

    @property
    def kind(self) -> str:
        """``"region"`` (or another memipc kind), or ``"raw"`` for headerless mappings."""
        return self._kind

    @property
    def created(self) -> bool:
        """True if this handle created the region (Win32: no ERROR_ALREADY_EXISTS)."""
        return self._created

    @property
    def persist(self) -> bool:
        return self._info is not None and self._info.persist

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def buf(self) -> memoryview:
        """A memoryview of the whole user area (mapped on first use)."""
        self._check_open()
        if self._main is None:
            self._main = self._map(0, self._size, self._access)
        return self._main.buf

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{self._describe()} is closed; open it again with Region.open({self._name!r})")

    def _describe(self) -> str:
        if self._raw:
            return f"mapping of {self._path or self._name!r}"
        return f"{self._kind} {('Global' + chr(92) if self._scope == 'global' else '') + self._name!r}"

    # ---- views -----------------------------------------------------------

    def _map(self, offset: int, length: int, access: Access) -> View:
        mapping, delta = map_window(self._data_fd, self._data_base + offset, length, access)
        return View(mapping, delta, offset, length, access, self._describe())

    def view(self, offset: int = 0, length: int | None = None, *, access: Access | None = None) -> View:
        """Map ``length`` bytes at any ``offset`` (MapViewOfFile); close it or use ``with``.

        ``access`` defaults to the region's; a read-only region gives only
        ``"r"`` or ``"copy"`` views.
        """
        self._check_open()
        start = operator.index(offset)
        if start < 0 or start >= self._size:
            raise IndexError(f"offset {start} is outside {self._describe()} of {self._size} bytes")
        count = self._size - start if length is None else operator.index(length)
        if count <= 0:
            raise ValueError(f"view length must be at least 1 byte, got {count}")
        if count > self._size - start:
            raise IndexError(
                f"view [{start}:{start + count}] runs past the end of {self._describe()} "
                f"of {self._size} bytes"
            )
        wanted = self._access if access is None else check_access(access)
        allowed = {"rw": ("r", "rw", "copy"), "r": ("r", "copy"), "copy": ("r", "copy")}[self._access]
        if wanted not in allowed:
            raise PermissionError(
                f"cannot map a view with access={wanted!r} from {self._describe()} opened with "
                f"access={self._access!r}; open the region with access='rw'"
            )
        view = self._map(start, count, wanted)
        self._views.add(view)
        return view

    def windows(
        self, length: int, *, step: int | None = None, start: int = 0, stop: int | None = None
    ) -> Iterator[View]:
        """Walk the region through views of ``length`` bytes, ``step`` apart (default: adjacent).

        Only one window is mapped at a time, so a file larger than memory or
        than the address space can be walked; each window is closed when the
        iteration moves on (copy out what you need to keep).
        """
        self._check_open()
        window = operator.index(length)
        stride = window if step is None else operator.index(step)
        first = operator.index(start)
        end = self._size if stop is None else operator.index(stop)
        if window <= 0 or stride <= 0:
            raise ValueError(f"length and step must be at least 1, got length={window}, step={stride}")
        if not 0 <= first <= end <= self._size:
            raise IndexError(f"start={first}, stop={end} must satisfy 0 <= start <= stop <= {self._size}")
        return self._walk(window, stride, first, end)

    def _walk(self, window: int, stride: int, first: int, end: int) -> Iterator[View]:
        position = first
        while position < end:
            view = self.view(position, min(window, end - position))
            try:
                yield view
            finally:
                view._close_quietly()
            position += stride

    # ---- information and persistence -----------------------------------

    def info(self) -> RegionInfo:
        """The header and the live users, as :class:`RegionInfo`."""
        self._check_open()
        header = self._info
        if header is None or self._header is None:
            return RegionInfo(
                name=self._name,
                scope=self._scope,
                kind=self._kind,
                size=self._size,
                path=self._path,
                persist=True,
                creator_pid=None,
                created_time=None,
                attached_pids=(),
                abi_version=None,
                os_name=self._os_name,
            )
        users = _lifetime.live_users(self._fd, self._header, self._slot)
        return RegionInfo(
            name=self._name,
            scope=self._scope,
            kind=self._kind,
            size=self._size,
            path=self._path,
            persist=header.persist,
            creator_pid=header.creator_pid,
            created_time=header.created_realtime_ns / 1e9,
            attached_pids=tuple(sorted(u.pid for u in users if u.pid)),
            abi_version=_core.ABI_VERSION,
            os_name=self._os_name,
        )

    def flush(self) -> None:
        """Write dirty pages of a file-backed region to its file and wait for the disk."""
        self._check_open()
        for view in [*list(self._views), *([self._main] if self._main is not None else [])]:
            if not view.closed:
                view.flush()
        if self._path is not None and self._access == "rw":
            os.fsync(self._data_fd)

    # ---- lifetime --------------------------------------------------------

    def unlink(self) -> None:
        """Remove the name now; handles already open keep working (data stays until they close).

        For a file-backed region the name goes, the file stays.
        """
        if self._os_name is None:
            if self._raw and self._path is not None:
                raise ValueError(f"{self._describe()} has no name to unlink; remove the file with os.remove")
            return
        if self._raw:
            _platform.unlink_segment(self._os_name)
            return
        if self._unlinked:
            return
        fd = self._fd
        if fd >= 0 and not _platform.still_named(self._os_name, fd):
            self._unlinked = True  # someone else removed it already (maybe a newer object has the name)
            return
        _platform.unlink_segment(self._os_name)
        self._unlinked = True

    def close(self) -> None:
        """Close this handle (idempotent).

        Raises ``BufferError`` — and stays open — if memoryviews, numpy arrays
        or ctypes objects still point into one of its views.
        """
        if self._closed:
            return
        stuck = [view for view in list(self._views) if not view._close_quietly()]
        if self._main is not None and not self._main._close_quietly():
            stuck.append(self._main)
        if stuck:
            raise BufferError(
                f"cannot close {self._describe()}: buffers exported from {len(stuck)} view(s) are still "
                f"alive ({', '.join(repr(v) for v in stuck[:4])}). Delete the memoryviews, numpy arrays or "
                "ctypes objects made from them (or .release() memoryviews) and close again"
            )
        self._main = None
        self._release(lifetime=True)

    def _release(self, *, lifetime: bool) -> None:
        """Drop mappings, the attachment and descriptors; unlink if this was the last user."""
        if self._closed and self._fd < 0 and self._data_fd < 0:
            return
        self._closed = True
        same_process = os.getpid() == self._owner_pid
        fd = self._fd
        if lifetime and same_process and fd >= 0 and not self._raw:
            _lifetime.release_slot(fd, self._header if self._fd_writable else None, self._slot)
        self._slot = None
        if self._header is not None:
            self._header.release()
            self._header = None
        if self._header_map is not None:
            self._header_map.close()
            self._header_map = None
        # A forked child shares its parent's open file description, and with
        # it the parent's locks: it must neither convert nor drop them.
        if (
            lifetime
            and same_process
            and fd >= 0
            and not self._raw
            and self._fd_writable
            and not self._unlinked
            and not self.persist
            and self._os_name is not None
            and _lifetime.try_lock_exclusive(fd)
            and _platform.still_named(self._os_name, fd)
        ):
            if _faults.armed:
                _faults.reach("region.close.before_unlink")
            with contextlib.suppress(FileNotFoundError):
                _platform.unlink_segment(self._os_name)
        if self._data_fd != fd:
            _close_fd(self._data_fd)
        _close_fd(fd)
        self._fd = self._data_fd = -1

    def __enter__(self) -> Region:
        self._check_open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._closed:
            # Exported buffers keep the mappings alive; the OS reclaims them at exit.
            with contextlib.suppress(BufferError):
                self.close()

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        where = f", path={self._path!r}" if self._path else ""
        return (
            f"<memipc.Region name={self._name!r} kind={self._kind!r} size={self._size} "
            f"scope={self._scope!r} access={self._access!r}{where}{state}>"
        )


Region.__module__ = "memipc"
