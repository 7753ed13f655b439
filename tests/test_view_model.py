"""Views against a model: a bytearray of the region, plus the private pages of "copy" views.

``ViewModel`` (a hypothesis RuleBasedStateMachine) opens one region of random
size and then, at random, opens views at random offsets and lengths (many of
them out of range, which must raise exactly ``IndexError`` or ``ValueError``),
writes through them (``write``, ``buf`` slices, ``pack``, ``struct``,
``stream``), reads them back, and closes them.  After every step,
``region.buf`` and every open view must equal the model.

The model of a ``"copy"`` view follows MAP_PRIVATE on Linux: a page it has not
written shows the shared bytes as they are now; the first write to a page
takes a private copy of that page, which later shared writes no longer reach.

The plain tests below cover what a random walk hits rarely: every offset around
the allocation granularity, read-only views, and closing while buffers that
point into a view are still alive (SPEC §3: ``BufferError``, never a crash).
"""

from __future__ import annotations

import ctypes
import io
import mmap
import os
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

import memipc
from memipc import Region, View

np = pytest.importorskip("numpy")

Names = Callable[[], str]
PAGE = mmap.PAGESIZE
GRANULARITY = mmap.ALLOCATIONGRANULARITY

FORMATS = ["<I", "<Q", ">h", "<d", "=B", "<4sI", "<20s", "<?", "<3i", "<e", ">q", "<xHx"]
CTYPES: list[tuple[type[Any], st.SearchStrategy[Any]]] = [
    (ctypes.c_uint8, st.integers(0, 2**8 - 1)),
    (ctypes.c_uint16, st.integers(0, 2**16 - 1)),
    (ctypes.c_uint32, st.integers(0, 2**32 - 1)),
    (ctypes.c_int64, st.integers(-(2**63), 2**63 - 1)),
    (ctypes.c_double, st.floats(allow_nan=False)),
]


def payload(count: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(count)


@dataclass(eq=False)
class Opened:
    """A view and what the model needs to know about it."""

    view: View
    access: str
    #: "copy" views: region page index -> that page's private bytes (clipped to the region).
    private: dict[int, bytearray] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Opened({self.view!r}, access={self.access!r})"


#: Out-of-range errors must be exactly these types (SPEC §3), not subclasses such as CorruptRegionError.
EXACT = (IndexError, ValueError)


def raises_exactly(error: type[BaseException], call: Callable[[], object]) -> BaseException:
    """Run ``call``; it must raise ``error`` (exactly that type for IndexError and ValueError)."""
    with pytest.raises(BaseException) as caught:  # the type is checked below
        call()
    if error in EXACT:
        assert type(caught.value) is error, f"expected exactly {error.__name__}, got {caught.value!r}"
    else:
        assert isinstance(caught.value, error), f"expected {error.__name__}, got {caught.value!r}"
    return caught.value


class ViewModel(RuleBasedStateMachine):
    views = Bundle("views")

    def __init__(self, names: Names) -> None:
        super().__init__()
        self.names = names
        self.region: Region | None = None
        self.model = bytearray()
        self.open_views: list[Opened] = []

    # ---- the model ---------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self.model)

    @property
    def live(self) -> Region:
        assert self.region is not None
        return self.region

    def expected(self, opened: Opened, start: int, count: int) -> bytes:
        """What ``opened`` shows at view bytes [start, start+count)."""
        first = opened.view.offset + start
        shown = bytearray(self.model[first : first + count])
        for page, content in opened.private.items():
            low, high = max(first, page * PAGE), min(first + count, page * PAGE + len(content))
            if low < high:
                shown[low - first : high - first] = content[low - page * PAGE : high - page * PAGE]
        return bytes(shown)

    def apply(self, opened: Opened, start: int, data: bytes) -> None:
        """Record a write of ``data`` at view byte ``start`` through ``opened``."""
        first = opened.view.offset + start
        if opened.access != "copy":
            self.model[first : first + len(data)] = data
            return
        if not data:
            return  # an empty write touches no page, so it copies none
        for page in range(first // PAGE, (first + len(data) - 1) // PAGE + 1):
            if page not in opened.private:  # the first write to a page copies it
                opened.private[page] = bytearray(self.model[page * PAGE : (page + 1) * PAGE])
            content = opened.private[page]
            low, high = max(first, page * PAGE), min(first + len(data), page * PAGE + len(content))
            content[low - page * PAGE : high - page * PAGE] = data[low - first : high - first]

    def span_error(self, opened: Opened, start: int, count: int) -> type[Exception] | None:
        """The error View checks raise for bytes [start, start+count) of ``opened``, if any."""
        if count < 0:
            return ValueError
        if start < 0 or start + count > len(opened.view):
            return IndexError
        return None

    @staticmethod
    def position(data: st.DataObject, length: int) -> int:
        """An offset into something ``length`` long, sometimes just outside it."""
        return data.draw(
            st.integers(0, length) | st.sampled_from([-1, -2, length + 1, length + 2, 2**63]), label="offset"
        )

    # ---- rules ---------------------------------------------------------------

    @initialize(size=st.integers(1, 200_000) | st.sampled_from([1, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE]))
    def create_region(self, size: int) -> None:
        self.region = Region.create(self.names(), size)
        self.model = bytearray(size)

    @rule(target=views, data=st.data())
    def open_view(self, data: st.DataObject) -> Any:
        size = self.size
        boundaries = [GRANULARITY - 1, GRANULARITY, GRANULARITY + 1, size - 1, size, 0]
        offset = data.draw(
            st.integers(0, size - 1) | st.sampled_from([*boundaries, -1, size + 1]), label="offset"
        )
        length = data.draw(
            st.none()
            | st.integers(1, 9000)
            | st.integers(-2, size + 2)
            | st.sampled_from([0, size - offset, size - offset + 1]),
            label="length",
        )
        access = data.draw(st.sampled_from([None, "rw", "r", "copy"]), label="access")
        count = size - offset if length is None else length
        error: type[Exception] | None = None
        if offset < 0 or offset >= size:
            error = IndexError
        elif count <= 0:
            error = ValueError
        elif count > size - offset:
            error = IndexError
        if error is not None:
            raises_exactly(error, lambda: self.live.view(offset, length, access=access))  # type: ignore[arg-type]
            return multiple()
        view = self.live.view(offset, length, access=access)  # type: ignore[arg-type]
        opened = Opened(view, access or "rw")
        assert (view.offset, len(view), view.readonly) == (offset, count, access == "r")
        assert view.read() == self.expected(opened, 0, count)
        self.open_views.append(opened)
        return opened

    @rule(opened=views, data=st.data())
    def write(self, opened: Opened, data: st.DataObject) -> None:
        view = opened.view
        start = self.position(data, len(view))
        count = data.draw(st.integers(0, 64) | st.integers(0, len(view) + 1), label="count")
        chunk = payload(count, data.draw(st.integers(0, 2**32), label="seed"))
        how = data.draw(st.sampled_from(["write", "buf", "stream"]), label="how")
        if how == "buf":  # memoryview slice assignment: Python's own bounds and read-only checks
            if view.readonly:
                raises_exactly(TypeError, lambda: view.buf.__setitem__(slice(0, 1), b"x"))
                return
            if start >= 0 and start + count <= len(view):
                view.buf[start : start + count] = chunk
                self.apply(opened, start, chunk)
            return
        if how == "stream":
            stream = view.stream()
            if start < 0:
                raises_exactly(ValueError, lambda: stream.seek(start))
                return
            stream.seek(start)
            if view.readonly:
                raises_exactly(PermissionError, lambda: stream.write(chunk))
                return
            if start + count > len(view):
                raises_exactly(OSError, lambda: stream.write(chunk))  # nothing written: checked below
                assert stream.tell() == start
                return
            assert stream.write(chunk) == count
            assert stream.tell() == start + count
            self.apply(opened, start, chunk)
            return
        error = PermissionError if view.readonly else self.span_error(opened, start, count)
        if error is not None:
            raises_exactly(error, lambda: view.write(start, chunk))
            return
        assert view.write(start, chunk) == count
        self.apply(opened, start, chunk)

    @rule(opened=views, data=st.data())
    def read(self, opened: Opened, data: st.DataObject) -> None:
        view = opened.view
        start = self.position(data, len(view))
        count = data.draw(st.none() | st.integers(-1, 64) | st.integers(0, len(view) + 1), label="count")
        if count is None and start > len(view):
            return  # test_read_past_the_end_without_a_length_is_an_index_error
        wanted = len(view) - start if count is None else count
        error = self.span_error(opened, start, wanted)
        if error is not None:
            raises_exactly(error, lambda: view.read(start, count))
            return
        assert view.read(start, count) == self.expected(opened, start, wanted)

    @rule(opened=views, data=st.data(), fmt=st.sampled_from(FORMATS))
    def pack_and_unpack(self, opened: Opened, data: st.DataObject, fmt: str) -> None:
        view = opened.view
        layout = struct.Struct(fmt)
        start = self.position(data, len(view))
        values = layout.unpack(payload(layout.size, data.draw(st.integers(0, 2**32), label="seed")))
        error = self.span_error(opened, start, layout.size)
        if error is not None:
            raises_exactly(error, lambda: view.unpack(fmt, start))
        else:
            shown = self.expected(opened, start, layout.size)
            assert layout.pack(*view.unpack(fmt, start)) == layout.pack(*layout.unpack(shown))
        if view.readonly:
            error = PermissionError
        if error is not None:
            raises_exactly(error, lambda: view.pack(fmt, start, *values))
            return
        view.pack(fmt, start, *values)
        self.apply(opened, start, layout.pack(*values))

    @rule(opened=views, data=st.data(), kind=st.sampled_from(CTYPES))
    def ctypes_object(self, opened: Opened, data: st.DataObject, kind: tuple[type[Any], Any]) -> None:
        view = opened.view
        ctype, values = kind
        start = self.position(data, len(view))
        value = data.draw(values, label="value")
        error = PermissionError if view.readonly else self.span_error(opened, start, ctypes.sizeof(ctype))
        if error is None and (view.offset + start) % ctypes.alignment(ctype):
            error = ValueError  # the region's user area starts page aligned
        if error is not None:
            raises_exactly(error, lambda: view.struct(ctype, start))
            return
        instance = view.struct(ctype, start)
        assert bytes(instance) == self.expected(opened, start, ctypes.sizeof(ctype))
        instance.value = value
        del instance  # the view cannot close while it is alive
        self.apply(opened, start, bytes(ctype(value)))

    @rule(opened=views, data=st.data())
    def stream_read(self, opened: Opened, data: st.DataObject) -> None:
        view = opened.view
        stream = view.stream()
        whence = data.draw(st.sampled_from([io.SEEK_SET, io.SEEK_CUR, io.SEEK_END]), label="whence")
        base = {io.SEEK_SET: 0, io.SEEK_CUR: 0, io.SEEK_END: len(view)}[whence]
        delta = data.draw(st.integers(-len(view) - 2, len(view) + 2), label="delta")
        if base + delta < 0:
            raises_exactly(ValueError, lambda: stream.seek(delta, whence))
            assert stream.tell() == 0
            return
        assert stream.seek(delta, whence) == base + delta
        count = data.draw(st.integers(0, 100) | st.just(len(view) + 10), label="count")
        got = stream.read(count)
        start = min(base + delta, len(view))
        assert got == self.expected(opened, start, min(count, len(view) - start))
        assert stream.tell() == start + len(got)
        assert stream.readable() and stream.seekable() and stream.writable() == (not view.readonly)

    @rule(data=st.data())
    def write_region_buf(self, data: st.DataObject) -> None:
        start = data.draw(st.integers(0, self.size - 1), label="start")
        count = data.draw(st.integers(1, min(4 * PAGE, self.size - start)), label="count")
        chunk = payload(count, data.draw(st.integers(0, 2**32), label="seed"))
        self.live.buf[start : start + count] = chunk
        self.model[start : start + count] = chunk

    @rule(opened=views)
    def closing_with_an_exported_slice_is_refused(self, opened: Opened) -> None:
        view = opened.view
        exported = view.buf[: min(8, len(view))]
        raises_exactly(BufferError, view.close)
        assert not view.closed
        assert bytes(exported) == self.expected(opened, 0, len(exported))
        exported.release()

    @rule(opened=consumes(views))
    def close(self, opened: Opened) -> None:
        view = opened.view
        view.close()
        assert view.closed
        view.close()  # idempotent
        raises_exactly(memipc.ClosedError, lambda: view.read(0, 1))
        self.open_views.remove(opened)

    # ---- invariants -------------------------------------------------------------

    @precondition(lambda self: self.region is not None)
    @invariant()
    def region_and_views_match_the_model(self) -> None:
        assert bytes(self.live.buf) == self.model
        for opened in self.open_views:
            assert opened.view.read() == self.expected(opened, 0, len(opened.view)), opened

    def teardown(self) -> None:
        if self.region is not None:
            self.region.close()
            assert all(opened.view.closed for opened in self.open_views)


def test_views_behave_like_slices_of_one_bytearray(names: Names) -> None:
    run_state_machine_as_test(
        lambda: ViewModel(names),  # type: ignore[arg-type]  # a factory works as well as the class
        settings=settings(
            max_examples=100,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


# ---- plain tests --------------------------------------------------------------

BOUNDARY_SIZE = 3 * GRANULARITY + 7
BOUNDARY_OFFSETS = [
    0,
    1,
    GRANULARITY - 1,
    GRANULARITY,
    GRANULARITY + 1,
    2 * GRANULARITY - 1,
    2 * GRANULARITY,
    2 * GRANULARITY + 1,
    BOUNDARY_SIZE - 2,
    BOUNDARY_SIZE - 1,
]


BOUNDARY_CASES = [
    (offset, length)
    for offset in BOUNDARY_OFFSETS
    for length in (1, 2, GRANULARITY + 2, None)
    if length is None or offset + length <= BOUNDARY_SIZE
]


@pytest.mark.parametrize(("offset", "length"), BOUNDARY_CASES)
def test_views_at_every_offset_near_the_granularity_boundary_see_and_change_the_right_bytes(
    name: str, offset: int, length: int | None
) -> None:
    data = payload(BOUNDARY_SIZE, offset)
    with Region.create(name, BOUNDARY_SIZE) as region:
        region.buf[:] = data
        count = BOUNDARY_SIZE - offset if length is None else length
        with region.view(offset, length) as view:
            assert (view.offset, len(view), len(view.buf)) == (offset, count, count)
            assert view.read() == bytes(view.buf) == data[offset : offset + count]
            view.write(0, b"\xaa")
            view.buf[count - 1] = 0xBB
            assert region.buf[offset + count - 1] == 0xBB
            assert region.buf[offset] == (0xAA if count > 1 else 0xBB)
            if offset > 0:
                assert region.buf[offset - 1] == data[offset - 1]  # nothing before the view changed
            if offset + count < BOUNDARY_SIZE:
                assert region.buf[offset + count] == data[offset + count]  # nor after it
            region.buf[offset] = 0x11
            assert view.read(0, 1) == b"\x11"


def test_read_only_views_refuse_every_kind_of_write(name: str) -> None:
    with Region.create(name, 3 * PAGE) as region:
        region.buf[:4] = b"keep"
        with region.view(0, 2 * PAGE, access="r") as view:
            assert view.readonly
            with pytest.raises(PermissionError, match="read-only"):
                view.write(0, b"x")
            with pytest.raises(PermissionError, match="read-only"):
                view.pack("<I", 0, 1)
            with pytest.raises(PermissionError, match="read-only"):
                view.struct(ctypes.c_uint32, 0)
            with pytest.raises(TypeError):
                view.buf[0] = 1
            with pytest.raises(TypeError):
                view.buf[0:4] = b"lost"
            stream = view.stream()
            assert not stream.writable()
            with pytest.raises(PermissionError) as caught:
                stream.write(b"x")
            assert isinstance(caught.value, io.UnsupportedOperation)  # what io's own streams raise
            array = view.array(np.uint8, 4)
            assert not array.flags.writeable
            with pytest.raises(ValueError, match="read-only"):
                array[0] = 1
            del array
            assert view.read(0, 4) == bytes(region.buf[:4]) == b"keep"


def test_a_region_opened_read_only_gives_only_read_only_views(name: str) -> None:
    with Region.create(name, 100) as creator, Region.open(name, access="r") as reader:
        creator.buf[0] = 7
        with pytest.raises(TypeError):
            reader.buf[0] = 1
        with pytest.raises(PermissionError, match="access='rw'"):
            reader.view(0, 10, access="rw")
        with reader.view(0, 10) as view:
            assert view.readonly
            with pytest.raises(PermissionError):
                view.write(0, b"x")
        assert creator.buf[0] == reader.buf[0] == 7


EXPORTERS: dict[str, Callable[[View], Any]] = {
    "memoryview slice": lambda view: view.buf[1:3],
    "numpy array": lambda view: view.array(np.uint8, 2, offset=1),
    "ctypes object": lambda view: view.struct(ctypes.c_uint16, 2),
}


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_closing_a_view_while_a_buffer_points_into_it_raises_buffer_error_and_keeps_the_data(
    name: str, exporter: str
) -> None:
    with Region.create(name, 2 * PAGE) as region:
        region.buf[:6] = b"abcdef"
        view = region.view(PAGE - 2, 8)  # straddles a page boundary
        view.write(0, b"012345")
        exported = EXPORTERS[exporter](view)
        with pytest.raises(BufferError, match=r"view \[4094:4102\]"):
            view.close()
        assert not view.closed
        assert view.read(0, 6) == b"012345"
        assert bytes(exported)[:2] in (b"12", b"23")  # still mapped, still readable
        region.buf[PAGE - 1] = ord("X")
        assert view.read(1, 1) == b"X"
        with pytest.raises(BufferError):
            view.close()  # still alive: still refused
        if isinstance(exported, memoryview):
            exported.release()
        del exported
        view.close()
        assert view.closed
        with pytest.raises(memipc.ClosedError):
            view.read(0, 1)


def test_closing_a_region_while_a_view_has_exports_raises_buffer_error_and_leaves_it_usable(
    name: str, os_path: Callable[[str], str]
) -> None:
    region = Region.create(name, 2 * PAGE)
    view = region.view(10, 100)
    array = view.array(np.uint8, 4)
    with pytest.raises(BufferError, match=r"View \[10:110\]"):
        region.close()
    assert not region.closed
    assert os.path.exists(os_path(name))
    array[:] = [1, 2, 3, 4]
    assert bytes(region.buf[10:14]) == b"\x01\x02\x03\x04"
    region.buf[0] = 9
    with region.view(0, 1) as again:
        assert again.read() == b"\x09"
    assert region.info().attached_pids == (os.getpid(),)
    del array
    region.close()
    assert region.closed and view.closed
    assert not os.path.exists(os_path(name))


def test_a_failed_region_close_names_the_stuck_view_and_keeps_it_and_the_region_usable(name: str) -> None:
    """close() closes the views it can, then raises BufferError naming the stuck ones (no API tells
    whether an mmap has exports without trying to close it); the stuck view and the region stay open."""
    with Region.create(name, 100) as region:
        stuck = region.view(0, 10)
        other = region.view(50, 10)
        exported = stuck.buf[:2]
        try:
            with pytest.raises(BufferError, match=r"View \[0:10\]"):
                region.close()
            assert not region.closed
            assert not stuck.closed
            assert other.closed
            exported[0] = 7
            assert region.buf[0] == 7
            with region.view(50, 10) as again:
                again.write(0, b"ok")
            assert bytes(region.buf[50:52]) == b"ok"
        finally:
            exported.release()


def test_region_buf_exports_block_region_close_too(name: str) -> None:
    region = Region.create(name, 100)
    exported = region.buf[5:7]
    with pytest.raises(BufferError):
        region.close()
    exported[0] = 3
    assert region.buf[5] == 3
    exported.release()
    region.close()
    assert region.closed


def test_read_past_the_end_without_a_length_is_an_index_error(name: str) -> None:
    """An out-of-range offset is an IndexError (_view: "negative sizes ValueError"); the caller
    passed no size, so the message must not speak of a negative length."""
    with Region.create(name, 100) as region, region.view(0, 10) as view:
        assert view.read(10) == b""
        with pytest.raises(IndexError):
            view.read(11)
