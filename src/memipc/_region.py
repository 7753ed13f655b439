"""L1: Region — a named shared-memory region (CreateFileMapping / OpenFileMapping).

A region is a named segment in the shared-memory namespace whose first page
is a self-describing header (layout in src/c/layout.h), followed by the user
area.  A file-backed region keeps its header in the named segment and its
user data in the file, byte for byte, so the file is exactly the user's data
and survives every process.

The protocols that make this safe (publication, validation, lifetime) live in
:mod:`memipc._segment`; this module is the user's API over them: views,
windows, info, flush, close and unlink.
"""

from __future__ import annotations

import contextlib
import operator
import os
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, final

from . import _core
from ._errors import ClosedError
from ._names import ObjectName, Scope, parse, parse_raw
from ._segment import Initializer, Segment
from ._view import Access, View, check_access, map_window


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

    # Class-level defaults make close(), __del__ and repr safe on half-built objects.
    _segment: Segment | None = None
    _main: View | None = None
    _closed: bool = True
    _name: str = "?"
    _kind: str = "?"
    _size: int = 0
    _scope: Scope = "user"
    _access: Access = "rw"
    _path: str | None = None
    _views: weakref.WeakSet[View]

    _construct_token: ClassVar[object] = object()

    def __init__(self, token: object, segment: Segment | None = None) -> None:
        """Not public: use Region.create / open / open_or_create / open_file."""
        if token is not Region._construct_token or segment is None:
            raise TypeError(
                "Region() is not public; use Region.create(name, size), Region.open(name), "
                "Region.open_or_create(name, size) or Region.open_file(path)"
            )
        self._views = weakref.WeakSet()
        self._segment = segment
        self._name, self._kind, self._size = segment.name, segment.kind, segment.size
        self._scope, self._access, self._path = segment.scope, segment.access, segment.path
        self._closed = False

    @classmethod
    def _wrap(cls, segment: Segment) -> Region:
        return cls(cls._construct_token, segment)

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
            return cls._wrap(Segment.open_raw(parse_raw(name), access))
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
        return cls._wrap(Segment.open_file(path, check_access(access), size))

    # ---- for the layers above: any kind -----------------------------------

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
        return cls._wrap(
            Segment.create(
                oname,
                size,
                kind=kind,
                mode=mode,
                path=path,
                persist=persist,
                reserve=reserve,
                initialize=initialize,
            )
        )

    @classmethod
    def _open(cls, oname: ObjectName, *, kind: str, access: Access = "rw") -> Region:
        return cls._wrap(Segment.open(oname, kind=kind, access=access))

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
        return cls._wrap(
            Segment.open_or_create(
                oname,
                size,
                kind=kind,
                mode=mode,
                path=path,
                persist=persist,
                reserve=reserve,
                access=access,
                initialize=initialize,
            )
        )

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
        return self._live_segment().created

    @property
    def persist(self) -> bool:
        """True if the name outlives its last handle (until :meth:`unlink`)."""
        return self._segment is not None and self._segment.persist

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

    def _live_segment(self) -> Segment:
        segment = self._segment
        if self._closed or segment is None:
            raise ClosedError(f"{self._describe()} is closed; open it again with Region.open({self._name!r})")
        return segment

    def _check_open(self) -> None:
        self._live_segment()

    def _describe(self) -> str:
        return self._segment.describe() if self._segment is not None else f"region {self._name!r}"

    # ---- views -----------------------------------------------------------

    def _map(self, offset: int, length: int, access: Access) -> View:
        segment = self._live_segment()
        mapping, delta = map_window(segment.data_fd, segment.data_base + offset, length, access)
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
    ) -> Generator[View, None, None]:
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

    def _walk(self, window: int, stride: int, first: int, end: int) -> Generator[View, None, None]:
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
        segment = self._live_segment()
        header = segment.info
        return RegionInfo(
            name=self._name,
            scope=self._scope,
            kind=self._kind,
            size=self._size,
            path=self._path,
            persist=header is None or header.persist,
            creator_pid=header.creator_pid if header else None,
            created_time=header.created_realtime_ns / 1e9 if header else None,
            attached_pids=tuple(sorted(u.pid for u in segment.live_users() if u.pid)),
            abi_version=_core.ABI_VERSION if header else None,
            os_name=segment.os_name,
        )

    def flush(self) -> None:
        """Write dirty pages of a file-backed region to its file and wait for the disk."""
        self._check_open()
        for view in [*list(self._views), *([self._main] if self._main is not None else [])]:
            if not view.closed:
                view.flush()
        if self._path is not None and self._access == "rw":
            os.fsync(self._live_segment().data_fd)

    # ---- lifetime --------------------------------------------------------

    def unlink(self) -> None:
        """Remove the name now; handles already open keep working (data stays until they close).

        For a file-backed region the name goes, the file stays.
        """
        segment = self._segment
        if segment is None:
            return
        if segment.raw and segment.os_name is None:
            raise ValueError(f"{self._describe()} has no name to unlink; remove the file with os.remove")
        segment.unlink()

    def close(self) -> None:
        """Close this handle (idempotent).

        Raises ``BufferError`` — and stays open — if memoryviews, numpy arrays
        or ctypes objects still point into one of its views.  The views without
        such exports are closed; the message names the ones that stay open.
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
        self._closed = True
        if self._segment is not None:
            self._segment.release(lifetime=True)

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
