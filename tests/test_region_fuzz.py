"""Fuzzing the region header: whatever a segment holds, ``Region.open`` ends in
``CorruptRegionError``, ``KindMismatchError`` or a region consistent with its file.

Everything in shared memory is untrusted (STYLE: "read it once, check it, then
use it").  These tests write segments straight into /dev/shm under the OS name
of a fixture name, with contents that range from random bytes to a real header
(copied from ``Region.create``) with one field changed, and check three things:

* the outcome is one of the three allowed ones — never another exception, a
  crash (SIGBUS/SIGSEGV would kill the run) or a hang (every open runs in a
  daemon thread bounded by a generous timeout: an unpublished header that
  nobody holds fails within ``ABANDONED_AFTER_SECONDS``);
* for single-field changes, *which* outcome: the field semantics of
  src/c/layout.h decide whether the header is still consistent;
* on success, the region's size fits the file and ``region.buf`` is exactly the
  file's user area; on failure, the segment is still there, unchanged (a failed
  open never removes or writes anything).

The fuzz properties shorten the "abandoned" wait to keep the file fast;
``test_unpublished_or_truncated_segments_fail_without_hanging`` keeps the real one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from memipc import CorruptRegionError, KindMismatchError, Region, _layout, _names, _region
from memipc._platform import LockType
from memipc._platform import current as platform

Names = Callable[[], str]
Outcome = Region | CorruptRegionError | KindMismatchError

#: Generous bound on one open: ten times the wait for an abandoned, unpublished header.
OPEN_TIMEOUT = 10.0
#: Size of the template regions' user area: not a page multiple, so the file is not either.
AREA = 3 * 4096 + 123
PAGE = 4096
HEADER = _layout.HEADER_BYTES
MAGIC = _layout.MAGIC
ABI = _layout.ABI_VERSION
FLAG_PERSIST = _layout.FLAG_PERSIST
FLAG_FILE_BACKED = _layout.FLAG_FILE_BACKED
KIND_REGION = _layout.KIND_CODES["region"]
OTHER_KINDS = sorted(set(_layout.KIND_NAMES) - {KIND_REGION})

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ---- segments on disk ------------------------------------------------------


def segment_path(name: str) -> str:
    return platform.segment_path(_names.parse(name).os_name)


@contextlib.contextmanager
def segment(name: str, content: bytes, *, file_size: int | None = None) -> Iterator[str]:
    """Write ``content`` as the segment of ``name`` (sparsely extended to ``file_size``); remove it after."""
    path = segment_path(name)
    try:
        with open(path, "xb") as f:
            f.write(content)
            if file_size is not None:
                f.truncate(file_size)
        os.chmod(path, 0o600)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def file_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# ---- bounded open ------------------------------------------------------------


def open_bounded(
    name: str, *, access: str = "rw", timeout: float = OPEN_TIMEOUT, rescue: Callable[[], None] | None = None
) -> Region:
    """``Region.open`` in a daemon thread; fail the test if it has not returned after ``timeout``.

    ``rescue`` is called on a hang to unblock the thread (so that it does not
    linger), before the test fails.
    """
    outcome: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            outcome.append((True, Region.open(name, access=access)))  # type: ignore[arg-type]
        except BaseException as error:
            outcome.append((False, error))

    worker = threading.Thread(target=target, name=f"open {name}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        if rescue is not None:
            rescue()
        worker.join(timeout)
        for succeeded, value in outcome:
            if succeeded:
                value.close()
        pytest.fail(f"Region.open({name!r}, access={access!r}) hung: no result after {timeout} s")
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    return value  # type: ignore[no-any-return]


def attempt(name: str, *, access: str = "rw", rescue: Callable[[], None] | None = None) -> Outcome:
    """The region, or the CorruptRegionError/KindMismatchError it raised; anything else propagates."""
    try:
        outcome: Outcome = open_bounded(name, access=access, rescue=rescue)
    except (CorruptRegionError, KindMismatchError) as error:
        outcome = error
    if currently_in_test_context():
        event(f"outcome: {type(outcome).__name__}")  # see --hypothesis-show-statistics
    return outcome


@pytest.fixture
def quick_abandon() -> Iterator[None]:
    """Shorten the wait for unpublished headers that nobody holds (fuzz speed only)."""
    modules = [sys.modules.get("memipc._segment"), _region]
    holders = [m for m in modules if m is not None and hasattr(m, "ABANDONED_AFTER_SECONDS")]
    assert holders, "no module defines ABANDONED_AFTER_SECONDS any more; update this fixture"
    with pytest.MonkeyPatch.context() as patch:
        for module in holders:
            patch.setattr(module, "ABANDONED_AFTER_SECONDS", 0.02)
        yield


# ---- header images -----------------------------------------------------------


def field_span(field: str) -> tuple[int, int]:
    return _layout.PY_OFFSETS[f"mi_region_header.{field}"]


def get_field(image: bytes | bytearray, field: str) -> int:
    offset, size = field_span(field)
    return int.from_bytes(image[offset : offset + size], "little")


def set_field(image: bytearray, field: str, value: int) -> None:
    offset, size = field_span(field)
    image[offset : offset + size] = value.to_bytes(size, "little")


def set_text(image: bytearray, which: str, raw: bytes, length: int | None = None) -> None:
    """Fill the name or path field with ``raw`` (NUL padded) and set its length (default: len(raw))."""
    offset, capacity = _layout.PY_OFFSETS[f"mi_region_header.{which}"]
    assert len(raw) <= capacity
    image[offset : offset + capacity] = raw.ljust(capacity, b"\0")
    set_field(image, f"{which}_length", len(raw) if length is None else length)


@dataclass(frozen=True)
class Template:
    """The first page of a segment a real ``Region.create`` wrote (published, with its attach row)."""

    header: bytes = dataclasses.field(repr=False)

    def image(self, name: str, *, path: str | None = None) -> bytearray:
        """The header re-addressed to ``name`` (and, for a file-backed template, to ``path``)."""
        image = bytearray(self.header)
        set_text(image, "name", name.encode())
        if path is not None:
            set_text(image, "path", path.encode())
        return image


def real_header(names: Names, **create: Any) -> Template:
    name = names()
    with Region.create(name, AREA, **create):
        header = file_bytes(segment_path(name))[:HEADER]
    assert not os.path.exists(segment_path(name))  # closing the copy's source removed it
    assert header[:8] == _layout.MAGIC_BYTES
    return Template(header)


@pytest.fixture
def memory_template(names: Names) -> Template:
    return real_header(names)


@pytest.fixture
def file_template(names: Names, tmp_path: Path) -> Template:
    template = real_header(names, path=tmp_path / "template.dat")
    assert get_field(template.header, "flags") & FLAG_FILE_BACKED
    return template


def pattern(count: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(count)


# ---- what success must look like -------------------------------------------


def check_consistent(region: Region, image: bytes | bytearray, segment: str, access: str) -> None:
    """An opened region agrees with the header that was written and with its files."""
    size = get_field(image, "size_bytes")
    assert region.size == size == len(region.buf) == region.info().size
    assert region.kind == "region"
    if get_field(image, "flags") & FLAG_FILE_BACKED:
        assert region.path is not None
        data_path, data_offset = region.path, 0
    else:
        assert region.path is None
        data_path, data_offset = segment, get_field(image, "data_offset")
    assert data_offset + size <= os.stat(data_path).st_size, "the region is larger than its file"
    with open(data_path, "rb") as f:
        f.seek(data_offset)
        assert bytes(region.buf) == f.read(size), "region.buf is not the file's user area"
    if access == "rw":
        flipped = region.buf[size - 1] ^ 0xA5
        region.buf[size - 1] = flipped
        assert _pread(data_path, data_offset + size - 1) == bytes([flipped]), "a write missed the file"
    pids = region.info().attached_pids
    assert all(0 < pid < _layout.PID_LIMIT for pid in pids), pids


def _pread(path: str, offset: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, 1, offset)
    finally:
        os.close(fd)


def settle(outcome: Outcome, expected: type[Exception] | None, path: str, written: bytes) -> None:
    """Check ``outcome`` against ``expected`` (None: success), then close what was opened."""
    if isinstance(outcome, Region):
        outcome.close()
        assert expected is None, f"opened a segment that should raise {expected.__name__}"
        return
    assert type(outcome) is expected, f"expected {expected}, got {outcome!r}"
    assert os.path.exists(path), "a failed open removed the segment"
    assert file_bytes(path) == written, "a failed open changed the segment"


# ---- single-field changes of a real header ----------------------------------

U16, U32, U64 = (st.integers(0, 2**bits - 1) for bits in (16, 32, 64))


def byteswapped(value: int, size: int) -> int:
    return int.from_bytes(value.to_bytes(size, "little"), "big")


FIELD_VALUES: dict[str, st.SearchStrategy[int]] = {
    "magic": st.sampled_from([MAGIC, 0, byteswapped(MAGIC, 8), MAGIC ^ 1, MAGIC ^ 1 << 63, 2**64 - 1]) | U64,
    "abi_version": st.sampled_from([ABI, 0, ABI ^ 1, ABI + 1, byteswapped(ABI, 4), 2**32 - 1]) | U32,
    "header_bytes": st.sampled_from([HEADER, 0, HEADER - 1, HEADER + 1, 2 * HEADER, byteswapped(HEADER, 4)])
    | U32,
    "kind": st.integers(0, 12) | U32,
    "flags": st.integers(0, 8) | U32,
    "size_bytes": st.integers(-3, 3).map(lambda d: AREA + d)
    | st.sampled_from([0, 1, 2**40, 2**62 - 1, 2**62, 2**63, 2**64 - 1])
    | U64,
    "data_offset": st.integers(0, 6).map(lambda k: k * PAGE)
    | st.sampled_from([PAGE - 1, PAGE + 1, 2048, 2**40, 2**64 - PAGE, 2**64 - 1])
    | U64,
    "creator_pid": st.sampled_from([0, 1, os.getpid(), 2**32 - 1]) | U32,
    "attach_slot_count": st.sampled_from([0, 1, 63, 64, 65, 2**31, 2**32 - 1]) | U32,
    "creator_start_ticks": U64,
    "created_realtime_ns": U64,
    "name_length": st.integers(0, 300) | U16,
    "path_length": st.integers(0, 1100) | U16,
    "attach_table_offset": st.sampled_from([0, 2048, 2047, 2049, 2080, 4096, 2**32 - 1]) | U32,
}
assert set(FIELD_VALUES) == set(_layout.HEADER_FIELDS)


@st.composite
def field_changes(draw: st.DrawFn) -> tuple[str, int]:
    field = draw(st.sampled_from(_layout.HEADER_FIELDS))
    return field, draw(FIELD_VALUES[field])


def expected_after_change(
    field: str, value: int, image: bytes | bytearray, *, segment_size: int, data_size: int | None
) -> type[Exception] | None:
    """What opening must do once ``field`` of the valid header ``image`` holds ``value`` (None: succeed).

    ``data_size`` is the data file's size for a file-backed header, else None.
    """
    file_backed = data_size is not None
    if field in ("creator_pid", "creator_start_ticks", "created_realtime_ns"):
        return None  # informational: any value is consistent
    if field == "kind":
        if value == KIND_REGION:
            return None
        return KindMismatchError if value in OTHER_KINDS else CorruptRegionError
    if field == "flags":
        consistent = not value & ~_layout.FLAG_KNOWN and bool(value & FLAG_FILE_BACKED) == file_backed
        return None if consistent else CorruptRegionError
    size = get_field(image, "size_bytes")
    offset = get_field(image, "data_offset")
    if field == "size_bytes":
        room = (data_size or 0) if file_backed else segment_size - offset
        return None if 0 < value <= room else CorruptRegionError
    if field == "data_offset":
        if file_backed:
            return None if value == 0 else CorruptRegionError
        fits = value >= HEADER and value % PAGE == 0 and value + size <= segment_size
        return None if fits else CorruptRegionError
    if field == "name_length":
        return None if value == get_field(image, "name_length") else CorruptRegionError
    if field == "path_length":
        # Shorter: another path (missing or a directory); longer: NUL; 0: disagrees with the flag.
        return None if value == get_field(image, "path_length") else CorruptRegionError
    unchanged = {"magic": MAGIC, "abi_version": ABI, "header_bytes": HEADER, "attach_slot_count": 64}
    unchanged["attach_table_offset"] = _layout.ATTACH_TABLE_OFFSET
    return None if value == unchanged[field] else CorruptRegionError


@FUZZ
@given(change=field_changes(), extension=st.sampled_from([0, 0, 1, PAGE, 3 * PAGE]))
def test_one_changed_field_of_a_memory_backed_header_is_accepted_only_if_consistent(
    names: Names, memory_template: Template, quick_abandon: None, change: tuple[str, int], extension: int
) -> None:
    field, value = change
    name = names()
    image = memory_template.image(name)
    segment_size = HEADER + AREA + extension
    expected = expected_after_change(field, value, image, segment_size=segment_size, data_size=None)
    set_field(image, field, value)
    data = pattern(AREA, seed=len(name))
    with segment(name, bytes(image) + data, file_size=segment_size) as path:
        written = file_bytes(path)
        outcome = attempt(name)
        if isinstance(outcome, Region):
            check_consistent(outcome, image, path, "rw")
            assert outcome.info().persist == bool(value & FLAG_PERSIST if field == "flags" else False)
        settle(outcome, expected, path, written)


@FUZZ
@given(change=field_changes(), data_size=st.sampled_from([AREA, AREA + 1, 2 * AREA, AREA - 1, 1]))
def test_one_changed_field_of_a_file_backed_header_is_accepted_only_if_consistent(
    names: Names,
    file_template: Template,
    tmp_path: Path,
    quick_abandon: None,
    change: tuple[str, int],
    data_size: int,
) -> None:
    field, value = change
    name = names()
    data_path = tmp_path / f"{name}.dat"
    data_path.write_bytes(pattern(data_size, seed=data_size))
    image = file_template.image(name, path=str(data_path))
    expected = expected_after_change(field, value, image, segment_size=HEADER, data_size=data_size)
    set_field(image, field, value)
    if expected is None and get_field(image, "size_bytes") > data_size:
        expected = CorruptRegionError  # the data file is too short for the header's size
    with segment(name, bytes(image)) as path:
        outcome = attempt(name)
        if isinstance(outcome, Region):
            check_consistent(outcome, image, path, "rw")
        settle(outcome, expected, path, bytes(image))


def test_an_unchanged_real_header_opens(names: Names, memory_template: Template) -> None:
    name = names()
    image = memory_template.image(name)
    with segment(name, bytes(image) + pattern(AREA, 1)) as path:
        outcome = attempt(name)
        assert isinstance(outcome, Region), outcome
        check_consistent(outcome, image, path, "rw")
        outcome.close()
    assert not os.path.exists(path)


def test_a_byte_swapped_magic_is_reported_as_the_other_byte_order(
    names: Names, memory_template: Template
) -> None:
    name = names()
    image = memory_template.image(name)
    image[:8] = _layout.MAGIC_BYTES[::-1]
    with segment(name, bytes(image) + bytes(AREA)), pytest.raises(CorruptRegionError, match="byte order"):
        open_bounded(name)


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_a_header_of_another_kind_raises_kind_mismatch_error(
    names: Names, memory_template: Template, kind: int
) -> None:
    name = names()
    image = memory_template.image(name)
    set_field(image, "kind", kind)
    with segment(name, bytes(image) + bytes(AREA)) as path:
        with pytest.raises(KindMismatchError, match=_layout.KIND_NAMES[kind]):
            open_bounded(name)
        assert os.path.exists(path)


# ---- random bytes, truncation ---------------------------------------------------


@FUZZ
@given(
    length=st.integers(0, HEADER - 1) | st.integers(HEADER, HEADER + AREA + 100) | st.just(HEADER + AREA),
    seed=st.integers(0, 2**32 - 1),
    valid_fields=st.integers(0, len(_layout.HEADER_FIELDS)) | st.just(len(_layout.HEADER_FIELDS)),
    keep_name=st.booleans(),
)
def test_random_bytes_never_open_as_anything_but_a_consistent_region(
    names: Names,
    memory_template: Template,
    quick_abandon: None,
    length: int,
    seed: int,
    valid_fields: int,
    keep_name: bool,
) -> None:
    """Random contents, with the first ``valid_fields`` fixed fields (and maybe the name) kept
    valid, so that the fuzz reaches the checks behind the magic too."""
    name = names()
    content = bytearray(pattern(length, seed))
    valid = memory_template.image(name)
    for field in _layout.HEADER_FIELDS[:valid_fields]:
        offset, size = field_span(field)
        if offset + size <= length:
            content[offset : offset + size] = valid[offset : offset + size]
    name_offset = _layout.NAME_OFFSET
    if keep_name and length >= name_offset + _layout.NAME_CAPACITY:
        content[name_offset : name_offset + _layout.NAME_CAPACITY] = valid[
            name_offset : name_offset + _layout.NAME_CAPACITY
        ]
    with segment(name, bytes(content)) as path:
        outcome = attempt(name)
        if isinstance(outcome, Region):
            check_consistent(outcome, content, path, "rw")
            outcome.close()
        else:
            settle(outcome, type(outcome), path, bytes(content))


@settings(FUZZ, max_examples=100)
@given(cut=st.integers(0, HEADER - 1) | st.integers(0, HEADER + AREA - 1))
def test_a_truncated_segment_is_corrupt(
    names: Names, memory_template: Template, quick_abandon: None, cut: int
) -> None:
    """Cut anywhere before the end: inside the header (never published) or in the data area."""
    name = names()
    content = (bytes(memory_template.image(name)) + pattern(AREA, cut))[:cut]
    with segment(name, content) as path:
        settle(attempt(name), CorruptRegionError, path, content)


@pytest.mark.parametrize("length", [0, 1, 8, HEADER - 1, HEADER, HEADER + AREA])
def test_unpublished_or_truncated_segments_fail_without_hanging(names: Names, length: int) -> None:
    """The real wait: a zero magic or a file shorter than the header, held by nobody, is
    reported as "not initialized" after about a second (bounded here by OPEN_TIMEOUT)."""
    name = names()
    content = bytes(length)
    with segment(name, content) as path:
        with pytest.raises(CorruptRegionError, match="not initialized"):
            open_bounded(name)
        assert file_bytes(path) == content


# ---- the name field --------------------------------------------------------------

NAME_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


@st.composite
def name_fields(draw: st.DrawFn, real: bytes) -> tuple[bytes, int]:
    """(bytes of the name field, declared name_length)."""
    raw = draw(
        st.sampled_from(
            [
                real,
                real + b"\0",
                real[:-1],
                real.upper(),
                real + b"x",
                b"\0" + real[1:],
                real[:-1] + b"\xff",
                b"\xc3\x28" + real[2:],  # invalid UTF-8
                "é".encode() + real[2:],  # valid UTF-8, not ASCII
                b"x" * _layout.NAME_CAPACITY,  # fills the field: no NUL terminator at all
                real.ljust(_layout.NAME_CAPACITY, b"y"),  # the real name, then garbage instead of NULs
            ]
        )
        | st.binary(min_size=0, max_size=_layout.NAME_CAPACITY)
        | st.text(NAME_CHARACTERS, min_size=1, max_size=200).map(str.encode)
    )
    length = draw(
        st.sampled_from([len(raw), len(real), 0, len(raw) + 1, _layout.NAME_CAPACITY, 2**16 - 1])
        | st.integers(0, 300)
    )
    return raw, length


@FUZZ
@given(data=st.data())
def test_a_damaged_name_field_is_corrupt_unless_it_still_spells_the_name(
    names: Names, memory_template: Template, data: st.DataObject
) -> None:
    name = names()
    real = name.encode()
    raw, length = data.draw(name_fields(real))
    image = memory_template.image(name)
    set_text(image, "name", raw, length)
    spells_it = length == len(real) and raw[:length] == real
    # Garbage after the name instead of NUL padding is harmless; refusing it is allowed too.
    padded_with_garbage = spells_it and raw[length:].strip(b"\0") != b""
    content = bytes(image) + bytes(AREA)
    with segment(name, content) as path:
        outcome = attempt(name)
        if isinstance(outcome, Region):
            assert spells_it, f"opened with name field {raw!r} (length {length})"
            check_consistent(outcome, image, path, "rw")
            outcome.close()
        else:
            assert not spells_it or padded_with_garbage, f"refused its own name: {outcome!r}"
            settle(outcome, CorruptRegionError, path, content)


# ---- the path field (file-backed headers) ----------------------------------------


PATH_KINDS = [
    "regular",
    "larger",
    "symlink",
    "short",
    "empty",
    "missing",
    "directory",
    "device",
    "fifo-rw",
    "under-a-file",
    "symlink-loop",
    "component-too-long",
    "relative",
    "nul-inside",
    "invalid-utf8",
    "no-path",
]


def make_path(kind: str, base: Path, size: int) -> bytes:
    """A path of ``kind`` for a region of ``size`` bytes (files under ``base``)."""
    regular = base / "data.bin"
    regular.write_bytes(pattern(size, size))
    paths = {
        "regular": str(regular),
        "missing": str(base / "missing.bin"),
        "directory": str(base),
        "device": os.devnull,
        "under-a-file": str(regular / "inside"),
        "component-too-long": str(base / ("a" * 300)),
        "relative": "data.bin",
        "nul-inside": f"{regular}\0",
        "no-path": "",
    }
    if kind == "larger":
        regular.write_bytes(pattern(size + 5000, size))
    elif kind == "symlink":
        (base / "link").symlink_to(regular)
        paths["symlink"] = str(base / "link")
    elif kind in ("short", "empty"):
        regular.write_bytes(pattern(size - 1, size) if kind == "short" else b"")
        paths[kind] = str(regular)
    elif kind == "fifo-rw":
        os.mkfifo(base / "fifo")
        paths[kind] = str(base / "fifo")
    elif kind == "symlink-loop":
        (base / "loop").symlink_to(base / "loop")
        paths[kind] = str(base / "loop")
    if kind == "invalid-utf8":
        return str(regular).encode()[:-3] + b"\xff\xfe\xfd"
    return paths.get(kind, paths["regular"]).encode()


@FUZZ
@given(kind=st.sampled_from(PATH_KINDS), access=st.sampled_from(["rw", "r"]), persist=st.booleans())
def test_a_file_backed_header_opens_only_an_absolute_path_to_a_large_enough_regular_file(
    names: Names, file_template: Template, tmp_path: Path, kind: str, access: str, persist: bool
) -> None:
    """The path comes from shared memory: missing files, directories, devices, FIFOs, symlink
    loops, paths through a file, over-long components, relative paths, NULs and invalid UTF-8
    are all CorruptRegionError (never a bare OSError); only a regular file holding at least
    the region's size opens, and then region.buf is that file's first bytes."""
    name = names()
    base = tmp_path / name
    base.mkdir()
    raw_path = make_path(kind, base, AREA)
    if kind == "fifo-rw":
        access = "rw"  # O_RDONLY on a FIFO: test_a_fifo_as_data_file_does_not_hang_a_read_only_open
    image = file_template.image(name)
    set_text(image, "path", raw_path)
    set_field(image, "flags", FLAG_FILE_BACKED | (FLAG_PERSIST if persist else 0))
    opens = kind in ("regular", "larger", "symlink")
    with segment(name, bytes(image)) as path, pytest.MonkeyPatch.context() as patch:
        patch.chdir(base)  # "relative" names a file that exists, relative to the opener's cwd
        outcome = attempt(name, access=access)
        if isinstance(outcome, Region):
            assert opens, f"opened a region whose data file path is {kind}: {raw_path!r}"
            check_consistent(outcome, image, path, access)
            assert outcome.path == raw_path.decode()
            assert outcome.info().persist == persist
        settle(outcome, None if opens else CorruptRegionError, path, bytes(image))


def test_a_fifo_as_data_file_does_not_hang_a_read_only_open(
    names: Names, file_template: Template, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    name = names()
    image = file_template.image(name, path=str(fifo))

    def unblock() -> None:  # a writer end releases an open(O_RDONLY) blocked on the FIFO
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)

    with segment(name, bytes(image)) as path:
        settle(attempt(name, access="r", rescue=unblock), CorruptRegionError, path, bytes(image))
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


# ---- the attach table ---------------------------------------------------------------

INTERESTING_PIDS = [0, 1, os.getpid(), _layout.PID_LIMIT - 1, _layout.PID_LIMIT, 2**31, 2**32 - 1]


@FUZZ
@given(
    seed=st.integers(0, 2**32 - 1),
    pids=st.lists(st.sampled_from(INTERESTING_PIDS) | st.integers(0, 2**32 - 1), min_size=64, max_size=64),
    held=st.sets(st.integers(0, _layout.ATTACH_SLOTS - 1)) | st.just(set(range(_layout.ATTACH_SLOTS))),
)
def test_garbage_in_the_attach_table_never_stops_open_and_info_reports_only_sane_pids(
    names: Names, memory_template: Template, seed: int, pids: list[int], held: set[int]
) -> None:
    """Every row holds random bytes; the rows in ``held`` are locked by another open file
    (as a live user's would be) without being rewritten.  Only locked rows count: the
    opener's own row shows its pid, a held row shows its pid if it is a possible one,
    and nothing else is listed."""
    name = names()
    image = memory_template.image(name)
    garbage = pattern(_layout.ATTACH_SLOTS * _layout.ATTACH_SLOT.size, seed)
    image[_layout.ATTACH_TABLE_OFFSET :] = garbage
    for index, pid in enumerate(pids):
        row = _layout.slot_offset(index)
        image[row : row + 4] = pid.to_bytes(4, "little")
    with segment(name, bytes(image) + bytes(AREA)) as path:
        holder = os.open(path, os.O_RDWR)
        try:
            for index in held:
                assert platform.lock(holder, _layout.slot_offset(index), 1, LockType.READ, wait=False)
            outcome = attempt(name)
            assert isinstance(outcome, Region), outcome
            with outcome as region:
                check_consistent(region, image, path, "rw")
                listed = sorted(region.info().attached_pids)
                own = [os.getpid()] if len(held) < _layout.ATTACH_SLOTS else []
                others = [pids[i] for i in held if 0 < pids[i] < _layout.PID_LIMIT]
                assert listed == sorted([*own, *others])
        finally:
            os.close(holder)
