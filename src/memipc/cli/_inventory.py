"""What is in shared memory: memipc objects (and foreign segments), read without side effects.

Every segment is opened read-only and its header mapped read-only; nothing
here takes a lifetime lock or an attach row, so looking never keeps an object
alive, never counts as a user, and never removes anything.  Everything read
is untrusted: a segment that is not a valid memipc object is listed with the
reason (``kind == "corrupt"``), never allowed to crash the command.

Kind-specific state (queue depth, subscriber cursors, mutex owner, ...) is
read by offset from the tables in ``_layout`` (mirrors of src/c/layout.h);
every offset is bounds-checked against the mapping before use.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from .. import _core, _lifetime
from .._errors import CorruptRegionError
from .._layout import (
    FLAG_FILE_BACKED,
    FLAG_PERSIST,
    HEADER_BYTES,
    KIND_NAMES,
    PY_OFFSETS,
    READER_SLOT_SIZE,
    parse_header,
)
from .._names import ObjectName, from_os_name
from .._platform import current as platform
from .._segment import ABANDONED_AFTER_SECONDS, reclaim_abandoned
from .._view import GRANULARITY

#: kinds that are not memipc kinds
FOREIGN, CORRUPT, UNPUBLISHED = "foreign", "corrupt", "unpublished"


@dataclass(frozen=True, slots=True)
class Entry:
    """One segment in /dev/shm as ``memipc ls`` shows it."""

    os_name: str
    #: the name a user passes to memipc (``Global\\`` prefix for global ones); the OS name if foreign
    name: str
    #: "user", "global", or "foreign"
    scope: str
    #: region, mutex, ..., queue, pubsub, rpc; or foreign / corrupt / unpublished
    kind: str
    #: the logical size (a region's bytes, a channel's whole segment), or the file size
    size: int
    #: bytes the segment occupies in /dev/shm
    allocated: int
    creator_pid: int | None
    #: creation time (Unix seconds), from the header or the file
    created: float | None
    #: pids with a verified attach row (a user that died is never listed)
    attached: tuple[int, ...]
    #: some handle holds the object open (the kernel drops a dead process's locks)
    in_use: bool
    #: a memipc object nobody uses that is not meant to persist: `memipc gc` removes it
    stale: bool
    persist: bool
    #: "memory", or the data file's path for file-backed regions
    backing: str
    #: why a segment is corrupt or could not be read
    problem: str | None = None
    #: the header's data offset (where the object's own state starts)
    data_offset: int = 0

    @property
    def memipc(self) -> bool:
        return self.scope != "foreign"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "os_name": self.os_name,
            "scope": self.scope,
            "kind": self.kind,
            "size": self.size,
            "allocated": self.allocated,
            "creator_pid": self.creator_pid,
            "created": self.created,
            "attached_pids": list(self.attached),
            "in_use": self.in_use,
            "stale": self.stale,
            "persist": self.persist,
            "backing": self.backing,
            "problem": self.problem,
        }


def _display_name(oname: ObjectName) -> str:
    return ("Global\\" if oname.scope == "global" else "") + oname.name


def scan(include_foreign: bool = False) -> list[Entry]:
    """Every memipc object this user can see (and, with ``include_foreign``, every other segment)."""
    entries = []
    for os_name in platform.list_segments():
        oname = from_os_name(os_name)
        if oname is None:
            if include_foreign:
                entries.append(_foreign(os_name))
            continue
        entry = inspect(oname)
        if entry is not None:
            entries.append(entry)
    return entries


def _foreign(os_name: str) -> Entry:
    try:
        info = os.stat(platform.segment_path(os_name), follow_symlinks=False)
        size, allocated, created = info.st_size, info.st_blocks * 512, info.st_mtime
    except OSError:
        size, allocated, created = 0, 0, None
    return Entry(
        os_name,
        os_name,
        "foreign",
        FOREIGN,
        size,
        allocated,
        None,
        created,
        (),
        False,
        False,
        False,
        "memory",
    )


def inspect(oname: ObjectName) -> Entry | None:
    """The entry for one memipc name, or None if it does not exist (any more)."""
    try:
        # Opening a FIFO (or a device) for reading can wait for ever: look
        # first.  Only a non-file swapped in between the two calls could
        # still block, which no memipc process ever does.
        info = os.stat(platform.segment_path(oname.os_name), follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as error:
        return _broken(oname, f"cannot look at it: {error.strerror}", None)
    if not stat.S_ISREG(info.st_mode):
        return _broken(oname, "it is not a regular file, so memipc did not make it", info)
    try:
        fd = platform.open_segment(oname.os_name, create=False, mode=0, writable=False)
    except FileNotFoundError:
        return None
    except OSError as error:
        return _broken(oname, f"cannot open it: {error.strerror}", None)
    try:
        return _read(oname, fd)
    finally:
        os.close(fd)


def _broken(oname: ObjectName, problem: str, info: os.stat_result | None, in_use: bool = False) -> Entry:
    return Entry(
        oname.os_name,
        _display_name(oname),
        oname.scope,
        CORRUPT,
        info.st_size if info else 0,
        info.st_blocks * 512 if info else 0,
        None,
        info.st_mtime if info else None,
        (),
        in_use,
        False,
        False,
        "memory",
        problem,
    )


def _read(oname: ObjectName, fd: int) -> Entry:
    info = os.fstat(fd)
    in_use = _lifetime.in_use_elsewhere(fd)
    if info.st_size < HEADER_BYTES:
        # Zero bytes is a creator between creating the file and sizing it (or
        # one that died there): unpublished, and stale once abandoned, as
        # reclaim_abandoned() sees it.  Any other short size is not memipc's.
        if info.st_size == 0:
            return _unpublished(oname, info, in_use)
        return _broken(oname, f"only {info.st_size} bytes, smaller than a header", info, in_use)
    with mmap.mmap(fd, HEADER_BYTES, access=mmap.ACCESS_READ) as header_map:
        if _core.load_u64(header_map, 0) == 0:  # acquire: pairs with the creator's publication
            return _unpublished(oname, info, in_use)
        try:
            header = parse_header(
                header_map[:HEADER_BYTES],
                segment_size=info.st_size,
                page_size=GRANULARITY,
                where=_display_name(oname),
            )
        except CorruptRegionError as error:
            return _broken(oname, str(error), info, in_use)
        view = memoryview(header_map)
        try:
            users = _lifetime.live_users(fd, view, None)
        finally:
            view.release()
    persist = bool(header.flags & FLAG_PERSIST)
    return Entry(
        oname.os_name,
        _display_name(oname),
        oname.scope,
        KIND_NAMES[header.kind],
        header.size_bytes,
        info.st_blocks * 512,
        header.creator_pid,
        header.created_realtime_ns / 1e9,
        tuple(sorted({u.pid for u in users if u.verified})),
        in_use,
        not in_use and not persist,
        persist,
        header.path if header.flags & FLAG_FILE_BACKED and header.path else "memory",
        None,
        header.data_offset,
    )


def _unpublished(oname: ObjectName, info: os.stat_result, in_use: bool) -> Entry:
    abandoned = not in_use and time.time() - info.st_mtime >= ABANDONED_AFTER_SECONDS
    return Entry(
        oname.os_name,
        _display_name(oname),
        oname.scope,
        UNPUBLISHED,
        info.st_size,
        info.st_blocks * 512,
        None,
        info.st_mtime,
        (),
        in_use,
        abandoned,
        False,
        "memory",
        "its creator has not finished creating it" if in_use else "its creator died while creating it",
    )


def find(name: str) -> Entry | None:
    """The entry a user means by ``name`` (a memipc name, ``Global\\name``, or an OS name).

    A foreign segment is found by its exact /dev/shm name (as ``memipc ls
    --all`` shows it), so that commands can say what it is instead of
    claiming it does not exist.
    """
    from .._names import parse  # noqa: PLC0415 - keeps the import list of the module short

    candidates: list[ObjectName] = []
    direct = from_os_name(name)
    if direct is not None:
        candidates.append(direct)
    with contextlib.suppress(ValueError, TypeError):
        candidates.append(parse(name))
    for oname in candidates:
        entry = inspect(oname)
        if entry is not None:
            return entry
    if direct is None and name in platform.list_segments():
        return _foreign(name)
    return None


# ---- removing ---------------------------------------------------------------------


@dataclass(slots=True)
class Removal:
    entry: Entry
    removed: bool
    reason: str = ""
    extra: list[str] = field(default_factory=list)


def remove(entry: Entry, *, force: bool) -> Removal:
    """Remove one memipc object's name (``force``: even while in use; users keep their mappings)."""
    if not entry.memipc:
        return Removal(entry, False, "not a memipc object; memipc removes only what it created")
    if entry.in_use and not force:
        who = (
            f"pid {', '.join(map(str, entry.attached))}"
            if entry.attached
            else "processes that are not listed in its attach table"
        )
        return Removal(entry, False, f"in use by {who}; close it there, or pass --force")
    try:
        platform.unlink_segment(entry.os_name)
    except FileNotFoundError:
        return Removal(entry, False, "it was already gone")
    except OSError as error:
        return Removal(entry, False, f"cannot remove it: {error.strerror}")
    return Removal(entry, True, "removed while in use; its users keep working" if entry.in_use else "")


def collect(entries: list[Entry], *, dry_run: bool) -> list[Removal]:
    """Remove (or, dry run, list) memipc objects whose users are all dead; never foreign ones."""
    results = []
    for entry in entries:
        if not entry.memipc or not entry.stale:
            continue
        if dry_run:
            results.append(Removal(entry, False, "would remove"))
            continue
        oname = from_os_name(entry.os_name)
        if oname is None:
            continue
        # reclaim_abandoned re-checks under the exclusive lifetime lock, so an
        # object someone opened since the scan is left alone.
        if reclaim_abandoned(oname):
            results.append(Removal(entry, True))
        else:
            results.append(Removal(entry, False, "in use again, or no longer stale; left alone"))
    return results


# ---- kind-specific state ------------------------------------------------------------


class _Reader:
    """Bounds-checked little-endian reads from a read-only snapshot of shared memory."""

    def __init__(self, buf: memoryview, base: int) -> None:
        self.buf = buf
        self.base = base

    def u32(self, offset: int) -> int:
        return self._unpack("<I", offset)

    def u64(self, offset: int) -> int:
        return self._unpack("<Q", offset)

    def _unpack(self, fmt: str, offset: int) -> int:
        at = self.base + offset
        size = struct.calcsize(fmt)
        if at < 0 or at + size > len(self.buf):
            raise CorruptRegionError(f"offset {at} is outside the {len(self.buf)}-byte mapping")
        value: int = struct.unpack_from(fmt, self.buf, at)[0]
        return value


def _at(name: str) -> int:
    return PY_OFFSETS[name][0]


def state(entry: Entry) -> dict[str, Any]:
    """The kind-specific state of ``entry`` (empty for regions and non-memipc segments).

    Raises CorruptRegionError if the object's own control block is inconsistent.
    """
    if not entry.memipc or entry.kind in (CORRUPT, UNPUBLISHED, "region") or entry.backing != "memory":
        return {}
    try:
        fd = platform.open_segment(entry.os_name, create=False, mode=0, writable=False)
    except OSError:
        return {}
    try:
        length = os.fstat(fd).st_size
        if length <= entry.data_offset:
            raise CorruptRegionError(f"{entry.name}: the segment ends before its data")
        with mmap.mmap(fd, length, access=mmap.ACCESS_READ) as mapping:
            view = memoryview(mapping)
            try:
                reader = _Reader(view, entry.data_offset)
                return _KIND_STATE[entry.kind](reader) if entry.kind in _KIND_STATE else {}
            finally:
                view.release()
    finally:
        os.close(fd)


def _owner(reader: _Reader, base: int) -> dict[str, Any]:
    word = reader.u32(base + _at("mi_owned.word"))
    identity = reader.u64(base + _at("mi_owned.owner_identity"))
    pid = word & 0x3FFFFFFF
    alive = None
    if pid:
        pidns = reader.u32(base + _at("mi_owned.owner_pidns"))
        alive = _core.process_alive(pid, identity & 0xFFFFFFFF, pidns)
    return {
        "owner_pid": pid or None,
        "owner_tid": reader.u32(base + _at("mi_owned.owner_tid")) if pid else None,
        "owner_alive": alive,
        "sleepers": reader.u32(base + _at("mi_owned.sleepers")),
    }


def _head(reader: _Reader) -> dict[str, Any]:
    return {
        "operations": reader.u64(_at("mi_sync_head.operations")),
        "contentions": reader.u64(_at("mi_sync_head.contentions")),
        "owner_deaths": reader.u64(_at("mi_sync_head.owner_deaths")),
    }


def _mutex(reader: _Reader) -> dict[str, Any]:
    return {**_owner(reader, _at("mi_mutex.lock")), **_head(reader)}


def _semaphore(reader: _Reader) -> dict[str, Any]:
    return {
        "value": reader.u32(_at("mi_semaphore.value")),
        "maximum": reader.u32(_at("mi_semaphore.maximum")),
        "sleepers": reader.u32(_at("mi_semaphore.sleepers")),
        **_head(reader),
    }


def _event(reader: _Reader) -> dict[str, Any]:
    flags = reader.u32(_at("mi_sync_head.flags"))
    return {
        "signaled": reader.u32(_at("mi_event.state")) != 0,
        "reset": "manual" if flags & _core.EVENT_MANUAL else "auto",
        "waiters": reader.u32(_at("mi_event.registered")),
        **_head(reader),
    }


def _condition(reader: _Reader) -> dict[str, Any]:
    return {
        "sleepers": reader.u32(_at("mi_condition.sleepers")),
        "pending": reader.u32(_at("mi_condition.pending")),
        "sequence": reader.u32(_at("mi_condition.sequence")),
        **_head(reader),
    }


def _rwlock(reader: _Reader) -> dict[str, Any]:
    readers_at, readers_bytes = PY_OFFSETS["mi_rwlock.readers"]
    slot = PY_OFFSETS["mi_reader_slot.identity"][0]
    slot_size = READER_SLOT_SIZE
    readers = [
        reader.u64(readers_at + index * slot_size + slot) >> 32
        for index in range(readers_bytes // slot_size)
    ]
    writer = _owner(reader, _at("mi_rwlock.writer"))
    return {
        "writer_pid": writer["owner_pid"],
        "writer_alive": writer["owner_alive"],
        "reader_pids": sorted(pid for pid in readers if pid),
        "waiting": writer["sleepers"],
        **_head(reader),
    }


def _ring(reader: _Reader) -> dict[str, Any]:
    def u64(field_name: str) -> int:
        return reader.u64(_at(f"mi_ring.{field_name}"))

    sent, received, lost = u64("sent"), u64("received"), u64("lost_reads")
    return {
        "mode": "spsc" if reader.u32(_at("mi_sync_head.flags")) & _core.RING_SPSC else "mpmc",
        "capacity": u64("capacity"),
        "max_message": u64("max_message"),
        "depth": max(0, sent - received),
        "bytes_queued": max(0, u64("tail") - u64("release")),
        "sent": sent,
        "received": max(0, received - lost),
        "bytes_sent": u64("bytes_sent"),
        "bytes_received": u64("bytes_received"),
        "waits": u64("waits"),
        "drops": u64("drops"),
        "receivers_asleep": reader.u32(_at("mi_ring.consumers_asleep")),
        "senders_asleep": reader.u32(_at("mi_ring.producers_asleep")),
    }


def _pubsub(reader: _Reader) -> dict[str, Any]:
    def u64(field_name: str) -> int:
        return reader.u64(_at(f"mi_bus.{field_name}"))

    tail, published = u64("tail"), u64("next_sequence")
    slots = []
    used = min(reader.u32(_at("mi_bus.slots_used")), _core.BUS_SLOTS)
    first_slot = PY_OFFSETS["mi_bus"][1]
    for index in range(used):
        base = first_slot + index * PY_OFFSETS["mi_bus_slot"][1]
        if reader.u64(base + _at("mi_bus_slot.identity")) == 0:
            continue
        cursor = reader.u64(base + _at("mi_bus_slot.cursor"))
        slots.append(
            {
                "slot": index,
                "pid": reader.u32(base + _at("mi_bus_slot.pid")),
                "cursor": cursor,
                "lag": max(0, published - reader.u64(base + _at("mi_bus_slot.next_sequence"))),
                "lag_bytes": max(0, tail - cursor),
                "received": reader.u64(base + _at("mi_bus_slot.received")),
                "missed": reader.u64(base + _at("mi_bus_slot.missed")),
            }
        )
    return {
        "overflow": "overwrite" if reader.u32(_at("mi_sync_head.flags")) & _core.BUS_OVERWRITE else "block",
        "capacity": u64("capacity"),
        "max_message": u64("max_message"),
        "sent": published,
        "bytes_sent": u64("bytes_sent"),
        "waits": u64("waits"),
        "subscribers_lost": u64("subscribers_lost"),
        "joins": u64("joins"),
        "publishers_waiting": reader.u32(_at("mi_bus.publishers_waiting")),
        "subscribers_asleep": reader.u32(_at("mi_bus.subscribers_asleep")),
        "subscribers": slots,
    }


def _rpc(reader: _Reader) -> dict[str, Any]:
    from .._channels import _rpc as rpc  # noqa: PLC0415 - the offset table lives with the protocol

    def pids(table: int, stride: int, count: int) -> list[int]:
        return sorted(pid for pid in (reader.u64(table + i * stride) >> 32 for i in range(count)) if pid)

    servers = pids(rpc.SERVER_TABLE, rpc.SERVER_SLOT_BYTES, rpc.SERVER_SLOTS)
    clients = pids(rpc.CLIENT_TABLE, rpc.CLIENT_SLOT_BYTES, rpc.CLIENT_SLOTS)
    requests = _ring(_Reader(reader.buf, reader.base + rpc.RING_OFFSET))
    return {
        "server_pids": servers,
        "client_pids": clients,
        "answered": reader.u64(80),
        "skipped": reader.u64(64),
        "replies_dropped": reader.u64(72),
        "requests": requests,
    }


_KIND_STATE = {
    "mutex": _mutex,
    "semaphore": _semaphore,
    "event": _event,
    "condition": _condition,
    "rwlock": _rwlock,
    "queue": _ring,
    "pubsub": _pubsub,
    "rpc": _rpc,
}
