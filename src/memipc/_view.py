"""L1: View, a bounds-checked window onto part of a region (MapViewOfFile).

A view maps ``length`` bytes starting at any ``offset`` of a region.  The OS
only maps at multiples of the allocation granularity, so a view maps the
aligned superset and hands out the exact slice; users never see the rounding.

Safety rules this module keeps:

* every offset and length a caller passes is checked before any access, and
  out-of-range requests raise ``IndexError`` (negative sizes ``ValueError``);
* a view opened read-only refuses writes with ``PermissionError`` (and its
  ``buf`` is a read-only memoryview, which raises ``TypeError``), so nothing
  ever writes to a read-only page and faults;
* closing a view while a memoryview, numpy array or ctypes object still points
  into it raises ``BufferError`` naming the view, instead of unmapping memory
  that is still referenced (the mapping stays valid, so nothing can crash).
"""

from __future__ import annotations

import ctypes
import io
import mmap
import operator
import struct
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, final

from ._errors import ClosedError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from typing_extensions import Buffer

Access = Literal["r", "rw", "copy"]
ACCESS_MODES: dict[str, int] = {"r": mmap.ACCESS_READ, "rw": mmap.ACCESS_WRITE, "copy": mmap.ACCESS_COPY}
GRANULARITY = mmap.ALLOCATIONGRANULARITY

_CType = TypeVar("_CType", bound="ctypes._CData")


def check_access(access: object) -> Access:
    """Validate an ``access=`` argument."""
    if access not in ACCESS_MODES:
        raise ValueError(f"access must be 'r', 'rw' or 'copy', not {access!r}")
    return access  # type: ignore[return-value]


def map_window(fd: int, file_offset: int, length: int, access: Access) -> tuple[mmap.mmap, int]:
    """Map ``length`` bytes of ``fd`` at ``file_offset``; return (mapping, slice start)."""
    aligned = file_offset - file_offset % GRANULARITY
    delta = file_offset - aligned
    mapping = mmap.mmap(fd, delta + length, access=ACCESS_MODES[access], offset=aligned)
    return mapping, delta


@final
class View:
    """A mapped window of a region: ``length`` bytes starting at ``offset``.

    Views are made by :meth:`Region.view` and :meth:`Region.windows`; use them
    as context managers so the mapping goes away when the block ends::

        >>> import memipc, uuid
        >>> with memipc.Region.create("doc-" + uuid.uuid4().hex[:8], 100) as region:
        ...     with region.view(10, 20) as view:
        ...         _ = view.write(0, b"hello")
        ...         view.pack("<I", 8, 42)
        ...         (view.read(0, 5), view.unpack("<I", 8))
        (b'hello', (42,))
    """

    __slots__ = ("__weakref__", "_buf", "_delta", "_length", "_mmap", "_offset", "_readonly", "_where")

    _mmap: mmap.mmap | None
    _buf: memoryview | None

    def __init__(
        self, mapping: mmap.mmap, delta: int, offset: int, length: int, access: Access, where: str
    ) -> None:
        """Internal: wrap a mapping made by :func:`map_window`.  Use ``Region.view``."""
        self._mmap = mapping
        self._delta = delta
        self._offset = offset
        self._length = length
        self._readonly = access == "r"
        self._where = where
        self._buf = memoryview(mapping)[delta : delta + length]

    # ---- properties ------------------------------------------------------

    @property
    def offset(self) -> int:
        """Where this view starts in the region's user area."""
        return self._offset

    def __len__(self) -> int:
        return self._length

    @property
    def readonly(self) -> bool:
        """True for views opened with ``access="r"``."""
        return self._readonly

    @property
    def closed(self) -> bool:
        return self._buf is None

    @property
    def buf(self) -> memoryview:
        """The view's bytes as a memoryview (read-only for ``access="r"``)."""
        return self._live()

    # ---- checks ----------------------------------------------------------

    def _live(self) -> memoryview:
        buf = self._buf
        if buf is None:
            raise ClosedError(f"{self._describe()} is closed; make a new one with region.view()")
        return buf

    def _describe(self) -> str:
        return f"view [{self._offset}:{self._offset + self._length}] of {self._where}"

    def _span(self, offset: object, length: object) -> tuple[int, int]:
        start = operator.index(offset)  # type: ignore[arg-type]
        count = operator.index(length)  # type: ignore[arg-type]
        if count < 0:
            raise ValueError(f"length must not be negative, got {count}")
        if start < 0 or start > self._length or count > self._length - start:
            raise IndexError(
                f"bytes [{start}:{start + count}] are outside {self._describe()} "
                f"(valid offsets are 0..{self._length})"
            )
        return start, count

    def _writable(self) -> memoryview:
        buf = self._live()
        if self._readonly:
            raise PermissionError(
                f"{self._describe()} is read-only (access='r'); "
                "open the region or view with access='rw' to write"
            )
        return buf

    # ---- bytes -----------------------------------------------------------

    def read(self, offset: int = 0, n: int | None = None) -> bytes:
        """Copy ``n`` bytes starting at ``offset`` (to the end if ``n`` is None)."""
        buf = self._live()
        if n is None:
            start, _ = self._span(offset, 0)
            n = self._length - start
        start, count = self._span(offset, n)
        return bytes(buf[start : start + count])

    def write(self, offset: int, data: Buffer) -> int:
        """Copy ``data`` into the view at ``offset``; returns the number of bytes written."""
        buf = self._writable()
        with memoryview(data) as source:
            source_bytes = source.cast("B") if source.format != "B" or source.ndim != 1 else source
            start, count = self._span(offset, source_bytes.nbytes)
            buf[start : start + count] = source_bytes
        return count

    def unpack(self, fmt: str | bytes, offset: int = 0) -> tuple[Any, ...]:
        """``struct.unpack_from(fmt)`` at ``offset``, bounds-checked."""
        buf = self._live()
        layout = struct.Struct(fmt)
        start, _ = self._span(offset, layout.size)
        return layout.unpack_from(buf, start)

    def pack(self, fmt: str | bytes, offset: int, *values: Any) -> None:
        """``struct.pack_into(fmt)`` at ``offset``, bounds-checked."""
        buf = self._writable()
        layout = struct.Struct(fmt)
        start, _ = self._span(offset, layout.size)
        layout.pack_into(buf, start, *values)

    # ---- typed access ----------------------------------------------------

    def struct(self, ctype: type[_CType], offset: int = 0) -> _CType:
        """A ctypes object of ``ctype`` living in shared memory at ``offset``.

        Writes to its fields go straight to the region.  The object keeps the
        mapping alive: delete it before closing the view.
        """
        if not (
            isinstance(ctype, type)
            and issubclass(ctype, ctypes._SimpleCData | ctypes.Structure | ctypes.Union | ctypes.Array)
        ):
            raise TypeError(f"struct() needs a ctypes type (Structure, c_uint32, ...), not {ctype!r}")
        buf = self._live()
        if self._readonly:
            raise PermissionError(
                f"{self._describe()} is read-only, and ctypes objects are always writable; "
                "use unpack() or array() to read it, or open with access='rw'"
            )
        start, _ = self._span(offset, ctypes.sizeof(ctype))
        alignment = ctypes.alignment(ctype)
        instance = ctype.from_buffer(buf, start)
        if ctypes.addressof(instance) % alignment:
            del instance
            raise ValueError(
                f"offset {start} of {self._describe()} is not aligned for {ctype.__name__} "
                f"(needs a multiple of {alignment} from the start of the mapping)"
            )
        return instance

    def array(self, dtype: Any, shape: int | Sequence[int], offset: int = 0) -> Any:
        """A numpy array of ``dtype`` and ``shape`` over shared memory at ``offset`` (zero copy).

        Needs numpy (``pip install memipc[numpy]``).  The array is read-only
        for read-only views and keeps the mapping alive until it is deleted.
        """
        try:
            import numpy as np  # noqa: PLC0415 - optional dependency, imported when used
        except ImportError:
            raise ImportError("View.array() needs numpy: pip install 'memipc[numpy]'") from None
        buf = self._live()
        dt = np.dtype(dtype)
        if isinstance(shape, int):
            dims: tuple[int, ...] = (operator.index(shape),)
        else:
            dims = tuple(operator.index(d) for d in shape)
        count = 1
        for dim in dims:
            if dim < 0:
                raise ValueError(f"shape {dims} has a negative dimension")
            count *= dim
        start, _ = self._span(offset, count * dt.itemsize)
        # frombuffer keeps a memoryview (an export) as the array's base, so
        # close() cannot unmap under a live array; np.ndarray(buffer=...)
        # would keep only the mmap object and let close() succeed.
        return np.frombuffer(buf, dtype=dt, count=count, offset=start).reshape(dims)

    def stream(self) -> ViewStream:
        """A seekable raw stream over the view (``io.RawIOBase``), like MemoryMappedViewStream."""
        return ViewStream(self)

    # ---- lifetime --------------------------------------------------------

    def flush(self) -> None:
        """Write the view's dirty pages to the backing file (file-backed regions)."""
        self._live()
        if self._mmap is not None and not self._readonly:
            self._mmap.flush()

    def close(self) -> None:
        """Unmap the view.  Raises ``BufferError`` if exported buffers still point into it."""
        buf, mapping = self._buf, self._mmap
        if buf is None or mapping is None:
            return
        released = False
        try:
            buf.release()
            released = True
            mapping.close()
        except BufferError:
            if released:
                self._buf = memoryview(mapping)[self._delta : self._delta + self._length]
            raise BufferError(
                f"cannot close {self._describe()}: memoryviews, numpy arrays or ctypes objects made "
                "from it are still alive. Delete them (or call .release() on memoryviews), then close again"
            ) from None
        self._buf = None
        self._mmap = None

    def _close_quietly(self) -> bool:
        try:
            self.close()
        except BufferError:
            return False
        return True

    def __enter__(self) -> View:
        self._live()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if self._buf is not None:
            self._close_quietly()

    def __repr__(self) -> str:
        state = " closed" if self._buf is None else (" readonly" if self._readonly else "")
        return f"<memipc.View [{self._offset}:{self._offset + self._length}] of {self._where}{state}>"


View.__module__ = "memipc"


class ReadOnlyStreamError(PermissionError, io.UnsupportedOperation):
    """Writing to a stream over a read-only view: a PermissionError, and what io expects."""


@final
class ViewStream(io.RawIOBase):
    """A raw, seekable byte stream over one view.

    Reads past the end return ``b""``; a write that would run past the end
    raises ``OSError`` without writing anything, because a view never grows.
    """

    def __init__(self, view: View) -> None:
        super().__init__()
        self._view = view
        self._position = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return not self._view.readonly

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._checkClosed()
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}.get(whence)
        if base is None:
            raise ValueError(f"whence must be SEEK_SET, SEEK_CUR or SEEK_END, not {whence!r}")
        position = base + operator.index(offset)
        if position < 0:
            raise ValueError(f"cannot seek to negative position {position}")
        self._position = position
        return position

    def readinto(self, buffer: Buffer) -> int:
        self._checkClosed()
        source = self._view.buf
        with memoryview(buffer) as target_view:
            target = target_view.cast("B")
            start = min(self._position, len(source))
            count = min(target.nbytes, len(source) - start)
            target[:count] = source[start : start + count]
        self._position = start + count
        return count

    def write(self, data: Buffer) -> int:
        self._checkClosed()
        if self._view.readonly:
            raise ReadOnlyStreamError(
                "write: the view is read-only (access='r'); open the region or view with access='rw' to write"
            )
        with memoryview(data) as source:
            count = source.nbytes
            if self._position + count > len(self._view):
                raise OSError(
                    f"write of {count} bytes at position {self._position} would run past the end of "
                    f"the {len(self._view)}-byte view; a view never grows, map a larger one"
                )
            self._view.write(self._position, source)
        self._position += count
        return count

    def truncate(self, size: int | None = None) -> int:
        raise io.UnsupportedOperation("a view has a fixed size and cannot be truncated")


ViewStream.__module__ = "memipc"
