"""L1: the Python mirror of src/c/layout.h.

The canonical offset tables, with who writes each field and when, are in
``src/c/layout.h``; this module repeats the offsets as ``struct`` formats so
that Python can *read* the fields that never change after the header is
published, and tests/test_layout.py checks every row against
``_core.OFFSETS`` (computed by the compiler with ``offsetof``).

Everything read here comes from shared memory and is untrusted:
:func:`parse_header` reads each field once, checks it, and raises
:class:`~memipc.CorruptRegionError` with the reason on any inconsistency.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import _core
from ._errors import CorruptRegionError

MAGIC = _core.MAGIC
MAGIC_BYTES = struct.pack("<Q", MAGIC)
ABI_VERSION = _core.ABI_VERSION
HEADER_BYTES = _core.HEADER_BYTES
NAME_CAPACITY = _core.NAME_CAPACITY
PATH_CAPACITY = _core.PATH_CAPACITY
ATTACH_SLOTS = _core.ATTACH_SLOTS
FLAG_PERSIST = _core.FLAG_PERSIST
FLAG_FILE_BACKED = _core.FLAG_FILE_BACKED
FLAG_KNOWN = FLAG_PERSIST | FLAG_FILE_BACKED

KIND_NAMES: dict[int, str] = {
    _core.KIND_REGION: "region",
    _core.KIND_MUTEX: "mutex",
    _core.KIND_SEMAPHORE: "semaphore",
    _core.KIND_EVENT: "event",
    _core.KIND_CONDITION: "condition",
    _core.KIND_RWLOCK: "rwlock",
    _core.KIND_QUEUE: "queue",
    _core.KIND_PUBSUB: "pubsub",
    _core.KIND_RPC: "rpc",
}
KIND_CODES: dict[str, int] = {name: code for code, name in KIND_NAMES.items()}

# struct mi_region_header, fixed part (offsets 0..127); see layout.h.
HEADER_FIXED = struct.Struct("<QIIIIQQIIQQHHI56x")
HEADER_FIELDS = (
    "magic",
    "abi_version",
    "header_bytes",
    "kind",
    "flags",
    "size_bytes",
    "data_offset",
    "creator_pid",
    "attach_slot_count",
    "creator_start_ticks",
    "created_realtime_ns",
    "name_length",
    "path_length",
    "attach_table_offset",
)
NAME_OFFSET = 128
PATH_OFFSET = 384
ATTACH_TABLE_OFFSET = 2048

# struct mi_attach_slot.
ATTACH_SLOT = struct.Struct("<IIQQQ")
ATTACH_SLOT_FIELDS = ("pid", "reserved0", "start_ticks", "attached_realtime_ns", "reserved1")
SLOT_PID = 0
SLOT_START_TICKS = 8
SLOT_ATTACHED_NS = 16

# The attach lock byte (byte 0 of the header) and each slot's lock byte (its
# first byte): see docs/design/lifetime.md.
ATTACH_LOCK_BYTE = 0

# Largest plausible pid (Linux PID_MAX_LIMIT); larger values in a slot are garbage.
PID_LIMIT = 1 << 22

# Python-side offsets of every field, for tests/test_layout.py.
PY_OFFSETS: dict[str, tuple[int, int]] = {
    "mi_region_header": (0, HEADER_BYTES),
    "mi_attach_slot": (0, ATTACH_SLOT.size),
    "mi_region_header.name": (NAME_OFFSET, NAME_CAPACITY),
    "mi_region_header.path": (PATH_OFFSET, PATH_CAPACITY),
    "mi_region_header.attach": (ATTACH_TABLE_OFFSET, ATTACH_SLOTS * ATTACH_SLOT.size),
}


def _add_rows(prefix: str, fmt: str, names: tuple[str, ...]) -> None:
    offset = 0
    for name, code in zip(names, [c for c in fmt.lstrip("<") if c.isalpha() and c != "x"], strict=True):
        size = struct.calcsize("<" + code)
        PY_OFFSETS[f"{prefix}.{name}"] = (offset, size)
        offset += size


_add_rows("mi_region_header", "<QIIIIQQIIQQHHI", HEADER_FIELDS)
_add_rows("mi_attach_slot", "<IIQQQ", ATTACH_SLOT_FIELDS)
for _reserved in ("mi_attach_slot.reserved0", "mi_attach_slot.reserved1"):
    del PY_OFFSETS[_reserved]
del _reserved


# ---- synchronization objects (layout.h: mi_sync_head, mi_owned, mi_mutex, ...) ----
SYNC_TAG = 0
SYNC_FLAGS = 4
SYNC_OPERATIONS = 8
SYNC_CONTENTIONS = 16
SYNC_OWNER_DEATHS = 24
OWNED_WORD = 0
OWNED_TID = 4
OWNED_IDENTITY = 8
OWNED_PIDNS = 16
OWNED_SLEEPERS = 20
MUTEX_LOCK = 32
MUTEX_SIZE = 64
SEMAPHORE_VALUE = 32
SEMAPHORE_MAXIMUM = 36
SEMAPHORE_SLEEPERS = 40
SEMAPHORE_SIZE = 64
EVENT_STATE = 32
EVENT_REGISTERED = 36
EVENT_SIZE = 64
CONDITION_SEQUENCE = 32
CONDITION_SLEEPERS = 36
CONDITION_PENDING = 40
CONDITION_SIZE = 64
RWLOCK_WRITER = 32
RWLOCK_GATE = 56
RWLOCK_READER_EXITS = 60
RWLOCK_ABANDONED = 64
RWLOCK_READERS = 128
RWLOCK_SIZE = 2048
READER_SLOT_SIZE = 16
OWNER_MASK = 0x3FFFFFFF
WAITERS_BIT = 0x80000000
TAG_INITIALIZING = _core.TAG_INITIALIZING


def identity(pid: int, start_ticks: int) -> int:
    """An owner identity as layout.h's MI_IDENTITY packs it: pid and low 32 bits of the start time."""
    return (pid << 32) | (start_ticks & 0xFFFFFFFF)


TAG_BASE = _core.TAG_BASE

PY_OFFSETS.update(
    {
        "mi_sync_head.tag": (SYNC_TAG, 4),
        "mi_sync_head.flags": (SYNC_FLAGS, 4),
        "mi_sync_head.operations": (SYNC_OPERATIONS, 8),
        "mi_sync_head.contentions": (SYNC_CONTENTIONS, 8),
        "mi_sync_head.owner_deaths": (SYNC_OWNER_DEATHS, 8),
        "mi_owned.word": (OWNED_WORD, 4),
        "mi_owned.owner_tid": (OWNED_TID, 4),
        "mi_owned.owner_identity": (OWNED_IDENTITY, 8),
        "mi_owned.owner_pidns": (OWNED_PIDNS, 4),
        "mi_owned.sleepers": (OWNED_SLEEPERS, 4),
        "mi_mutex": (0, MUTEX_SIZE),
        "mi_mutex.lock": (MUTEX_LOCK, 24),
        "mi_mutex.spin_estimate": (56, 4),
        "mi_semaphore": (0, SEMAPHORE_SIZE),
        "mi_semaphore.value": (SEMAPHORE_VALUE, 4),
        "mi_semaphore.maximum": (SEMAPHORE_MAXIMUM, 4),
        "mi_semaphore.sleepers": (SEMAPHORE_SLEEPERS, 4),
        "mi_event": (0, EVENT_SIZE),
        "mi_event.state": (EVENT_STATE, 4),
        "mi_event.registered": (EVENT_REGISTERED, 4),
        "mi_condition": (0, CONDITION_SIZE),
        "mi_condition.sequence": (CONDITION_SEQUENCE, 4),
        "mi_condition.sleepers": (CONDITION_SLEEPERS, 4),
        "mi_condition.pending": (CONDITION_PENDING, 4),
        "mi_rwlock": (0, RWLOCK_SIZE),
        "mi_rwlock.writer": (RWLOCK_WRITER, 24),
        "mi_rwlock.gate": (RWLOCK_GATE, 4),
        "mi_rwlock.reader_exits": (RWLOCK_READER_EXITS, 4),
        "mi_rwlock.abandoned": (RWLOCK_ABANDONED, 4),
        "mi_rwlock.readers": (RWLOCK_READERS, _core.RWLOCK_READER_SLOTS * READER_SLOT_SIZE),
        "mi_reader_slot.identity": (0, 8),
        "mi_reader_slot.tid": (8, 4),
        "mi_reader_slot.pidns": (12, 4),
    }
)


# ---- message rings (layout.h: mi_record, mi_ring) ----
PY_OFFSETS.update(
    {
        "mi_record.state": (0, 4),
        "mi_record.length": (4, 4),
        "mi_record.position": (8, 8),
        "mi_record.pid": (16, 4),
        "mi_record.pidns": (20, 4),
        "mi_record.start_ticks": (24, 8),
        "mi_ring": (0, 1024),
        "mi_ring.capacity": (32, 8),
        "mi_ring.max_message": (40, 8),
        "mi_ring.data_offset": (48, 8),
        "mi_ring.producer_lock": (64, 24),
        "mi_ring.tail": (128, 8),
        "mi_ring.consumer_lock": (192, 24),
        "mi_ring.head": (256, 8),
        "mi_ring.release": (320, 8),
        "mi_ring.data_sequence": (384, 4),
        "mi_ring.consumers_asleep": (388, 4),
        "mi_ring.space_sequence": (448, 4),
        "mi_ring.producers_asleep": (452, 4),
        "mi_ring.sent": (512, 8),
        "mi_ring.received": (520, 8),
        "mi_ring.bytes_sent": (528, 8),
        "mi_ring.bytes_received": (536, 8),
        "mi_ring.waits": (544, 8),
        "mi_ring.drops": (552, 8),
        "mi_ring.lost_reads": (560, 8),
    }
)


# ---- publish/subscribe bus (layout.h: mi_bus_record, mi_bus_slot, mi_bus) ----
PY_OFFSETS.update(
    {
        "mi_bus_record.position": (0, 8),
        "mi_bus_record.sequence": (8, 8),
        "mi_bus_record.length": (16, 4),
        "mi_bus_record.kind": (20, 4),
        "mi_bus_slot.identity": (0, 8),
        "mi_bus_slot.pidns": (8, 4),
        "mi_bus_slot.pid": (12, 4),
        "mi_bus_slot.cursor": (16, 8),
        "mi_bus_slot.received": (24, 8),
        "mi_bus_slot.missed": (32, 8),
        "mi_bus_slot.bytes": (40, 8),
        "mi_bus_slot.start_ticks": (48, 8),
        "mi_bus_slot.next_sequence": (56, 8),
        "mi_bus_slot": (0, 64),
        "mi_bus.capacity": (32, 8),
        "mi_bus.max_message": (40, 8),
        "mi_bus.data_offset": (48, 8),
        "mi_bus.slots": (56, 4),
        "mi_bus.slots_used": (60, 4),
        "mi_bus.publisher_lock": (64, 24),
        "mi_bus.tail": (128, 8),
        "mi_bus.oldest": (136, 8),
        "mi_bus.floor": (144, 8),
        "mi_bus.next_sequence": (152, 8),
        "mi_bus.space_wanted": (160, 8),
        "mi_bus.data_sequence": (192, 4),
        "mi_bus.subscribers_asleep": (196, 4),
        "mi_bus.space_sequence": (256, 4),
        "mi_bus.publishers_waiting": (260, 4),
        "mi_bus.publishers_asleep": (268, 4),
        "mi_bus.sent": (320, 8),
        "mi_bus.bytes_sent": (328, 8),
        "mi_bus.waits": (336, 8),
        "mi_bus.subscribers_lost": (344, 8),
        "mi_bus.joins": (352, 8),
        "mi_bus": (0, 1024),
    }
)


def slot_offset(index: int) -> int:
    """Byte offset of attach-table row ``index`` inside the header."""
    return ATTACH_TABLE_OFFSET + index * ATTACH_SLOT.size


@dataclass(frozen=True, slots=True)
class Header:
    """The immutable part of a published region header, validated."""

    kind: int
    flags: int
    size_bytes: int
    data_offset: int
    creator_pid: int
    creator_start_ticks: int
    created_realtime_ns: int
    name: str
    path: str | None

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    @property
    def persist(self) -> bool:
        return bool(self.flags & FLAG_PERSIST)


def pack_header(
    *,
    kind: int,
    flags: int,
    size_bytes: int,
    data_offset: int,
    creator_pid: int,
    creator_start_ticks: int,
    created_realtime_ns: int,
    name: str,
    path: str | None,
) -> bytes:
    """The header bytes a creator writes, with ``magic`` left zero (published last)."""
    name_bytes = name.encode()
    path_bytes = path.encode() if path is not None else b""
    if len(name_bytes) >= NAME_CAPACITY:
        raise ValueError(f"name {name!r} needs {len(name_bytes)} bytes; the header holds {NAME_CAPACITY - 1}")
    if len(path_bytes) >= PATH_CAPACITY:
        raise ValueError(
            f"path {path!r} is {len(path_bytes)} bytes long; a region header holds paths up to "
            f"{PATH_CAPACITY - 1} bytes. Use a shorter path (for example a symlink)"
        )
    fixed = HEADER_FIXED.pack(
        0,
        ABI_VERSION,
        HEADER_BYTES,
        kind,
        flags,
        size_bytes,
        data_offset,
        creator_pid,
        ATTACH_SLOTS,
        creator_start_ticks,
        created_realtime_ns,
        len(name_bytes),
        len(path_bytes),
        ATTACH_TABLE_OFFSET,
    )
    block = bytearray(ATTACH_TABLE_OFFSET)
    block[: len(fixed)] = fixed
    block[NAME_OFFSET : NAME_OFFSET + len(name_bytes)] = name_bytes
    block[PATH_OFFSET : PATH_OFFSET + len(path_bytes)] = path_bytes
    return bytes(block)


def _corrupt(where: str, problem: str) -> CorruptRegionError:
    return CorruptRegionError(
        f"{where}: {problem}. The segment was not written by a compatible memipc or was "
        "damaged; remove it (memipc rm, or Region.unlink) and create it again"
    )


def parse_header(
    header: bytes | bytearray | memoryview, *, segment_size: int, page_size: int, where: str
) -> Header:
    """Validate a published header (``magic`` already checked) and return its fields.

    ``header`` is a snapshot of the first HEADER_BYTES; ``segment_size`` is the
    size of the file holding it.  Every field is checked against the others and
    against the file, so that no later step can index outside the mapping.
    """
    if len(header) < HEADER_BYTES:
        raise _corrupt(where, f"the header is truncated ({len(header)} of {HEADER_BYTES} bytes)")
    values = dict(zip(HEADER_FIELDS, HEADER_FIXED.unpack_from(header, 0), strict=True))
    if values["magic"] != MAGIC:
        if values["magic"] == int.from_bytes(MAGIC_BYTES, "big"):
            raise _corrupt(where, "the header was written on a machine of the other byte order")
        raise _corrupt(where, f"bad magic {values['magic']:#018x} (expected {MAGIC:#018x})")
    if values["abi_version"] != ABI_VERSION:
        raise CorruptRegionError(
            f"{where}: layout version {values['abi_version']:#x} does not match this memipc's "
            f"{ABI_VERSION:#x}. Every process sharing it must use the same memipc version; "
            "upgrade them together, or remove the object and create it again"
        )
    if values["header_bytes"] != HEADER_BYTES:
        raise _corrupt(where, f"header_bytes is {values['header_bytes']}, expected {HEADER_BYTES}")
    if values["kind"] not in KIND_NAMES:
        raise _corrupt(where, f"unknown kind {values['kind']}")
    flags = values["flags"]
    if flags & ~FLAG_KNOWN:
        raise _corrupt(where, f"unknown flags {flags:#x}")
    if values["attach_slot_count"] != ATTACH_SLOTS:
        raise _corrupt(
            where, f"attach table claims {values['attach_slot_count']} rows, expected {ATTACH_SLOTS}"
        )
    if values["attach_table_offset"] != ATTACH_TABLE_OFFSET:
        raise _corrupt(where, f"attach table offset {values['attach_table_offset']} is wrong")
    size_bytes = values["size_bytes"]
    if size_bytes == 0 or size_bytes >= 1 << 62:
        raise _corrupt(where, f"impossible size {size_bytes}")
    data_offset = values["data_offset"]
    if flags & FLAG_FILE_BACKED:
        if data_offset != 0:
            raise _corrupt(where, f"a file-backed header has data_offset {data_offset}")
    else:
        if data_offset < HEADER_BYTES or data_offset % page_size or data_offset >= 1 << 40:
            raise _corrupt(where, f"data offset {data_offset} is not a page-aligned offset after the header")
        if data_offset + size_bytes > segment_size:
            raise _corrupt(
                where,
                f"the header promises {size_bytes} bytes at offset {data_offset}, "
                f"but the segment holds only {segment_size}",
            )
    name_length = values["name_length"]
    path_length = values["path_length"]
    if name_length == 0 or name_length >= NAME_CAPACITY:
        raise _corrupt(where, f"name length {name_length} is impossible")
    if path_length >= PATH_CAPACITY:
        raise _corrupt(where, f"path length {path_length} is impossible")
    raw_name = bytes(header[NAME_OFFSET : NAME_OFFSET + name_length])
    raw_path = bytes(header[PATH_OFFSET : PATH_OFFSET + path_length])
    try:
        name = raw_name.decode("ascii")
        path = raw_path.decode() if path_length else None
    except UnicodeDecodeError:
        raise _corrupt(where, "the name or path is not valid text") from None
    if "\x00" in name or (path is not None and "\x00" in path):
        raise _corrupt(where, "the name or path contains NUL")
    if path is not None and not path.startswith("/"):
        raise _corrupt(where, f"the data file path {path!r} is not absolute")
    if bool(flags & FLAG_FILE_BACKED) != (path is not None):
        raise _corrupt(where, "the file-backed flag and the path disagree")
    return Header(
        kind=values["kind"],
        flags=flags,
        size_bytes=size_bytes,
        data_offset=data_offset,
        creator_pid=values["creator_pid"],
        creator_start_ticks=values["creator_start_ticks"],
        created_realtime_ns=values["created_realtime_ns"],
        name=name,
        path=path,
    )
