"""Server and Client: request/response between processes through shared memory.

Shape (docs/design/rpc.md says why):

* One named segment of kind ``rpc`` per service: a control block with a
  table of servers and a table of clients, then the **request ring**, an MPMC
  ring of src/c/ring.c that every client sends into and every server of the
  service (in any number of processes) receives from.
* Each Client owns one row of the client table and one **reply queue**, a
  ring laid out exactly as a :class:`~memipc.Queue`'s (kind ``queue``), named
  after the service, its row and a random nonce; servers open it with
  Queue().  A request carries (row, nonce, call id); a server answers into
  that row's reply queue with the call id in front of the reply.
* A request record stays claimed (READING, with the server's identity in its
  header, see ring.c) until the server has replied, so the client learns
  everything it needs from its own record (``Ring.inspect``): still waiting
  for a server, held by a live server, held by a dead one (ServerDiedError),
  or released (the reply is already in the reply queue).  No extra shared
  word records who took a call, so there is no window in which a server has
  taken a request that names nobody.

The control block (only Python reads it; every word after publication goes
through ``_core``'s atomics):

    offset  size  field              who writes / notes
    ------  ----  -----------------  ------------------------------------------
         0     4  tag                creator, LAST (release): TAG_BASE | KIND_RPC
         4     4  layout             creator; RPC_LAYOUT
         8     4  server_slots       creator; SERVER_SLOTS
        12     4  client_slots       creator; CLIENT_SLOTS
        16     8  max_message        creator; largest request or reply payload
        24     8  ring_offset        creator; RING_OFFSET
        32     8  server_table       creator; SERVER_TABLE
        40     8  client_table       creator; CLIENT_TABLE
        64     8  skipped            (atomic) stats: requests not handled, caller gone or gave up
        72     8  replies_dropped    (atomic) stats: replies not delivered, caller gone or gave up
        80     8  answered           (atomic) stats: replies delivered
       128  1024  servers[64]        server slots, 16 bytes each (below)
      4096 32768  clients[512]       client slots, 64 bytes each (below)
     36864  1024  request ring       struct mi_ring (layout.h), tag MI_TAG(QUEUE)
     37888     …  ring records

    server slot                      client slot
    0  8 owner     (atomic)          0  8 owner      (atomic) MI_IDENTITY of the owner; 0 free
    8  8 owner_ns  (atomic)          8  8 owner_ns   (atomic) 1 << 32 | pid namespace; 0 unset
                                    16  8 nonce      owner; names the reply queue
                                    24  8 call       (atomic) owner; call id it waits for, 0 none
                                    32  8 calls      (atomic) stats: calls made

A slot is claimed with a CAS of ``owner`` from 0, or from the identity of a
dead owner (pid + start time + pid namespace, proc.c's rule: a recycled pid
does not look alive).  Freeing clears ``call`` and ``owner_ns`` before
``owner``, so a new owner never inherits a stale namespace.  Requests and
replies start with a 32-byte header (``REQUEST`` / ``REPLY``) so payloads
keep the ring's 32-byte alignment.

Everything read from shared memory is checked: a request whose header is
malformed or names a slot that no longer waits for it is dropped (counted in
``stats().drops``), never handled or trusted.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import hashlib
import math
import os
import struct
import threading
import time
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Literal, final

from .. import _core, _faults
from .._errors import (
    CallTimeoutError,
    ClosedError,
    CorruptRegionError,
    Empty,
    Error,
    ExistsError,
    Full,
    KindMismatchError,
    MessageTooLargeError,
    NotFoundError,
    RemoteError,
    ServerDiedError,
)
from .._layout import identity
from .._names import DEFAULT_MODES, NAME_MAX_LENGTH, ObjectName, Scope, parse
from .._platform import current as _platform
from .._region import Region
from .._segment import reclaim_abandoned
from .._sync._base import check_tag, claim
from . import _codec
from ._queue import DEFAULT_CAPACITY, Queue, ring_geometry
from ._queue import _let_go as _release_view
from ._stats import ChannelStats

# ---- layout (see the table above) ------------------------------------------------

RPC_LAYOUT = 1
SERVER_SLOTS = 64
CLIENT_SLOTS = 512
SERVER_SLOT_BYTES = 16
CLIENT_SLOT_BYTES = 64
SERVER_TABLE = 128
CLIENT_TABLE = 4096
RING_OFFSET = CLIENT_TABLE + CLIENT_SLOTS * CLIENT_SLOT_BYTES
_TAG, _LAYOUT, _SERVER_SLOTS, _CLIENT_SLOTS = 0, 4, 8, 12
_MAX_MESSAGE, _RING_OFFSET, _SERVER_TABLE, _CLIENT_TABLE = 16, 24, 32, 40
_SKIPPED, _REPLIES_DROPPED, _ANSWERED = 64, 72, 80
_OWNER, _OWNER_NS, _NONCE, _CALL, _CALLS = 0, 8, 16, 24, 32
_NS_SET = 1 << 32

#: Request header: magic, client slot, client nonce, call id, client pid, flags (zero).
REQUEST = struct.Struct("<IIQQII")
#: Reply header: call id, status, then zero padding.
REPLY = struct.Struct("<QI20x")
HEADER = 32
REQUEST_MAGIC = 0x31515250  # b"PRQ1"
REPLY_OK, REPLY_ERROR, REPLY_GONE = 0, 1, 2

# Request-ring counters (layout.h, struct mi_ring), relative to the ring.
_RING_FIELDS = ("sent", "received", "bytes_sent", "bytes_received", "waits", "drops", "lost_reads")
_RING = {field: RING_OFFSET + _core.OFFSETS[f"mi_ring.{field}"][0] for field in _RING_FIELDS}

# ---- timing ----------------------------------------------------------------------

#: Servers wake at least this often to notice close() from another thread.
SERVER_SLICE = 0.1
#: Clients check, at least this often, what became of their request.
CLIENT_SLICE = 0.2
#: A waiting call fails when no server has been alive for this long.
NO_SERVER_GRACE = 1.0
#: How often a serving loop closes reply queues of clients that went away.
PRUNE_INTERVAL = 1.0
#: How long a server tries to deliver an error reply before dropping it.
FAILURE_REPLY_SECONDS = 1.0
#: Reply queues a server keeps open.
REPLY_CACHE = 64
#: Replies up to this size are sent with one Queue.send (one copy more); larger ones are loaned.
SMALL_REPLY = 64 << 10

assert REQUEST.size == REPLY.size == HEADER
assert SERVER_TABLE + SERVER_SLOTS * SERVER_SLOT_BYTES <= CLIENT_TABLE
assert RING_OFFSET == 36864  # the table above


class _Default(enum.Enum):
    TIMEOUT = "the Client's timeout"


#: ``call(..., timeout=DEFAULT_TIMEOUT)``: use the timeout the Client was made with.
DEFAULT_TIMEOUT: Literal[_Default.TIMEOUT] = _Default.TIMEOUT
Timeout = float | None | Literal[_Default.TIMEOUT]


# ---- helpers ---------------------------------------------------------------------


def _seconds(timeout: float | None, what: str) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or math.isnan(timeout):
        raise ValueError(f"{what} must be None or a number of seconds, not {timeout!r}")
    return max(0.0, float(timeout))


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _slice(deadline: float | None, longest: float) -> float:
    if deadline is None:
        return longest
    return max(0.0, min(longest, deadline - time.monotonic()))


def _byte_view(data: Any) -> memoryview:
    """A flat unsigned-byte view of any bytes-like object (TypeError otherwise)."""
    view = memoryview(data)
    if view.format == "B" and view.ndim == 1 and view.c_contiguous:
        return view
    if view.c_contiguous:
        return view.cast("B")
    return memoryview(view.tobytes())


def _me() -> tuple[int, int]:
    """This process's (owner, owner_ns) words."""
    pid, start_ticks, pidns = _core.self_identity()
    return identity(pid, start_ticks), _NS_SET | pidns


def _alive(owner: int, owner_ns: int) -> bool:
    """May the slot owner still run?  (proc.c: pid + start time + pid namespace.)"""
    pidns = owner_ns & 0xFFFFFFFF if owner_ns & _NS_SET else 0
    return _core.process_alive(owner >> 32, owner & 0xFFFFFFFF, pidns)


def reply_name(service: str, slot: int, nonce: int) -> str:
    """The reply queue of client ``slot`` of ``service`` (always a valid name, <= 200 characters)."""
    suffix = f"-reply{slot}-{nonce:016x}"
    if len(service) + len(suffix) <= NAME_MAX_LENGTH:
        return service + suffix
    digest = hashlib.blake2b(service.encode(), digest_size=6).hexdigest()
    return f"{service[: NAME_MAX_LENGTH - len(suffix) - len(digest) - 1]}-{digest}{suffix}"


def _claim_slot(buf: memoryview, offset: int, me: int, me_ns: int) -> tuple[bool, int]:
    """Take the slot at ``offset`` if free or its owner is dead: (taken, the dead owner or 0)."""
    owner = _core.load_u64(buf, offset + _OWNER)  # acquire: pairs with the owner's CAS / free
    if owner == 0:
        if _core.cas_u64(buf, offset + _OWNER, 0, me):
            _core.store_u64(buf, offset + _OWNER_NS, me_ns)
            return True, 0
        return False, 0
    if _alive(owner, _core.load_u64(buf, offset + _OWNER_NS)):
        return False, 0
    # The dead owner can write nothing more, so only one of us wins this CAS.
    if _core.cas_u64(buf, offset + _OWNER, owner, me):
        _core.store_u64(buf, offset + _OWNER_NS, me_ns)
        return True, owner
    return False, 0


def _free_slot(buf: memoryview, offset: int, me: int, *, client: bool) -> None:
    if client:
        _core.store_u64(buf, offset + _CALL, 0)
    _core.store_u64(buf, offset + _OWNER_NS, 0)
    # release (acq_rel CAS): the cleared fields are visible before the slot reads free.
    _core.cas_u64(buf, offset + _OWNER, me, 0)


def _ring_fields(capacity: int, max_message: int) -> Callable[[memoryview, int], None]:
    """Writes a ring's parameters into its control block, as Queue does (layout.h, struct mi_ring)."""

    def fields(buf: memoryview, offset: int) -> None:
        _core.store_u64(buf, offset + _core.OFFSETS["mi_ring.capacity"][0], capacity)
        _core.store_u64(buf, offset + _core.OFFSETS["mi_ring.max_message"][0], max_message)
        _core.store_u64(buf, offset + _core.OFFSETS["mi_ring.data_offset"][0], _core.RING_CONTROL_BYTES)

    return fields


def _client_offset(slot: int) -> int:
    return CLIENT_TABLE + slot * CLIENT_SLOT_BYTES


def _attach(
    oname: ObjectName,
    create: bool | None,
    size: int,
    mode: int | None,
    initialize: Callable[[memoryview], None],
) -> Region:
    if create:
        return Region._create(oname, size, kind="rpc", mode=mode, initialize=initialize)
    if create is False:
        return Region._open(oname, kind="rpc")
    for _ in range(16):
        try:
            return Region._open(oname, kind="rpc")
        except NotFoundError:
            pass
        try:
            return Region._create(oname, size, kind="rpc", mode=mode, initialize=initialize)
        except ExistsError:
            continue
    raise ExistsError(f"cannot open or create service {oname.qualified!r}: it kept changing; try again")


def _open_service(buf: memoryview, where: str) -> tuple[_core.Ring, int, int]:
    """Check a published control block; return (request ring, max_message, ring capacity)."""
    check_tag(buf, 0, "rpc")
    found = (
        _core.load_u32(buf, _LAYOUT),
        _core.load_u32(buf, _SERVER_SLOTS),
        _core.load_u32(buf, _CLIENT_SLOTS),
        _core.load_u64(buf, _RING_OFFSET),
        _core.load_u64(buf, _SERVER_TABLE),
        _core.load_u64(buf, _CLIENT_TABLE),
    )
    expected = (RPC_LAYOUT, SERVER_SLOTS, CLIENT_SLOTS, RING_OFFSET, SERVER_TABLE, CLIENT_TABLE)
    if found != expected:
        raise CorruptRegionError(
            f"{where}: its control block (layout, tables, ring offset) reads {found}, not {expected}; "
            "it was made by an incompatible memipc or damaged. Remove it and create it again"
        )
    ring = _core.Ring(buf, RING_OFFSET)  # validates the ring's own parameters
    capacity, ring_max, spsc = ring.parameters()
    max_message = _core.load_u64(buf, _MAX_MESSAGE)
    if spsc or not 0 < max_message <= ring_max - HEADER:
        ring.close()
        raise CorruptRegionError(
            f"{where}: max_message {max_message} does not fit its request ring (records of at most "
            f"{ring_max} bytes{', spsc' if spsc else ''}); remove it and create it again"
        )
    return ring, max_message, capacity


# ---- the server side -------------------------------------------------------------


class _ReplyTarget:
    """A cached reply queue; closed once retired and no reply is being written into it."""

    __slots__ = ("nonce", "queue", "retired", "users")

    def __init__(self, nonce: int, queue: Queue) -> None:
        self.nonce, self.queue, self.users, self.retired = nonce, queue, 0, False


@final
class Request:
    """One call taken by a :class:`Server`: read :attr:`data`, then answer it once.

    ``data`` is a read-only view of the request *in the request ring* (zero
    copy); the record stays reserved until the request is answered and no
    view of it is left, so answer promptly: records are freed in order, and
    one held for long makes senders wait once the ring comes round to it.
    A request dropped unanswered (garbage collected, or left when the server
    closes) is answered for you with an error, so its caller never hangs.
    """

    _state: str = "answered"
    _view: memoryview | None = None

    def __init__(
        self,
        server: Server,
        position: int,
        window: _core.Window,
        slot: int,
        nonce: int,
        call: int,
        client_pid: int,
    ) -> None:
        self._server = server
        self._position, self._window, self._view = position, window, memoryview(window)
        self._slot, self._nonce, self._call, self._client_pid = slot, nonce, call, client_pid
        self._size = self._view.nbytes
        self._lock = threading.RLock()
        self._state = "pending"

    @property
    def data(self) -> memoryview:
        """The request bytes, read-only and in place (valid until the request is answered)."""
        view = self._view
        if view is None or self._state != "pending":
            raise ValueError(f"{self!r} was answered; its data is gone (copy it before replying)")
        return view

    @property
    def client_pid(self) -> int:
        """The pid of the calling process."""
        return self._client_pid

    @property
    def answered(self) -> bool:
        return self._state != "pending"

    def object(self) -> Any:
        """The request unpickled (sent with :meth:`Client.call_object`)."""
        return _codec.read_object(self.data)

    def reply(self, data: Any, timeout: float | None = None) -> None:
        """Send ``data`` (bytes-like) back to the caller.

        ``Full`` if the caller's reply queue stays full for ``timeout``
        seconds (None: wait while the caller still waits).  A caller that
        died or gave up is not an error: the reply is dropped.
        """
        source = _byte_view(data)
        if source.nbytes > SMALL_REPLY:
            with self.loan_reply(source.nbytes, timeout) as target:
                target[:] = source
                source.release()  # before the request's record is let go (an echo views it)
            return
        # Small: one copy more, one send instead of a loan (a fraction of the Python work).
        with self._lock:
            self._pending()
            message = REPLY.pack(self._call, REPLY_OK) + source
            source.release()
            self._finish(self._server._send_reply(self, message, _seconds(timeout, "timeout")))

    def reply_object(self, obj: Any, timeout: float | None = None) -> None:
        """Send any picklable object back (pickle 5, read with :meth:`Client.call_object`)."""
        stream, raws, size, offsets = _codec.encode_object(obj)
        with self.loan_reply(size, timeout) as target:
            _codec.write_object(target, stream, raws, offsets)
        for raw in raws:
            raw.release()

    @contextmanager
    def loan_reply(self, nbytes: int, timeout: float | None = None) -> Iterator[memoryview]:
        """Write a reply of ``nbytes`` in place, straight into the caller's reply queue (zero copy).

        The reply is sent when the block ends and discarded if it raises (the
        request then stays unanswered).  The buffer belongs to the caller once
        sent: keeping it, or anything made from it, past the block raises
        BufferError and discards the reply.
        """
        with self._lock:
            self._pending()
            server = self._server
            if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
                raise ValueError(f"a reply size must be a number of bytes >= 0, not {nbytes!r}")
            with ExitStack() as stack:
                target = server._reserve_reply(stack, self, nbytes, _seconds(timeout, "timeout"), REPLY_OK)
                if target is None:  # the caller went away: fill a scratch buffer nobody reads
                    delivered = False
                    target = stack.enter_context(memoryview(bytearray(nbytes)))
                else:
                    delivered = True
                yield target
                if _faults.armed and delivered:
                    _faults.reach("rpc.reply.before_commit")
            self._finish(delivered)

    def _pending(self) -> None:
        if self._state != "pending":
            raise ValueError(f"{self!r} was answered already; a request takes one reply")

    def _finish(self, delivered: bool) -> None:
        """The reply is in (or dropped): let go of the request record."""
        self._state = "answered"
        view, self._view = self._view, None
        server = self._server
        counter = _ANSWERED if delivered else _REPLIES_DROPPED
        buf = server._buf
        if buf is not None:
            _core.fetch_add_u64(buf, counter, 1)
        if view is not None:
            server._let_go(self._position, view, self._window)

    def _abandon(self, status: int, text: str) -> None:
        """Answer with an error (best effort, bounded) so the caller does not wait, and let go."""
        with self._lock:
            if self._state != "pending":
                return
            server = self._server
            delivered = False
            if server._buf is not None:
                message = REPLY.pack(self._call, status) + text.encode("utf-8", "replace")
                with contextlib.suppress(Error, OSError, ValueError):
                    delivered = server._send_reply(
                        self, message[: HEADER + 4096], FAILURE_REPLY_SECONDS, truncate=True
                    )
            self._finish(delivered)

    def __del__(self) -> None:
        if self._state == "pending":
            with contextlib.suppress(Exception):
                self._abandon(REPLY_ERROR, "the server dropped the request without replying")

    def __repr__(self) -> str:
        return (
            f"<memipc.Request call={getattr(self, '_call', '?')} "
            f"client_pid={getattr(self, '_client_pid', '?')} "
            f"bytes={getattr(self, '_size', '?')} {self._state}>"
        )


@final
class Server:
    """The answering side of a named request/response service.

    ``Server(name)`` opens the service or creates it (``create=True`` or
    ``False`` insists).  Any number of Server objects, in any processes, may
    serve one name: they take requests from one shared queue, each request
    going to exactly one of them.  ``capacity`` is the request queue in bytes
    (a power of two); ``max_message`` the largest request or reply (default:
    what fits the capacity); ``mode`` the permission bits of a new service.

    Serve with :meth:`serve` (``handler(request) -> reply``),
    :meth:`serve_objects`, or by hand: ``for request in server:
    request.reply(...)``.  :meth:`close` from another thread stops them.

        >>> import memipc, threading, uuid
        >>> name = "doc-" + uuid.uuid4().hex[:8]
        >>> server = memipc.Server(name, capacity=1 << 16)
        >>> worker = threading.Thread(target=server.serve, args=(lambda request: bytes(request).upper(),))
        >>> worker.start()
        >>> with memipc.Client(name) as client:
        ...     client.call(b"hello", timeout=10)
        b'HELLO'
        >>> server.close(); worker.join()
    """

    _region: Region | None = None
    _buf: memoryview | None = None
    _ring: _core.Ring | None = None
    _name: str = "?"
    _capacity: int = 0
    _max_message: int = 0
    _server_offset: int | None = None
    _closed: bool = True

    def __init__(
        self,
        name: str,
        *,
        capacity: int = DEFAULT_CAPACITY,
        max_message: int | None = None,
        create: bool | None = None,
        scope: Scope | None = None,
        mode: int | None = None,
        spin: float | None = None,
    ) -> None:
        if spin is not None and not 0 <= spin <= 1:
            raise ValueError(f"spin must be None (adaptive) or between 0 and 1 second, not {spin!r}")
        if max_message is not None and (
            isinstance(max_message, bool) or not isinstance(max_message, int) or max_message <= 0
        ):
            raise ValueError(f"max_message must be a positive number of bytes, not {max_message!r}")
        self._spin = spin
        self._oname = oname = parse(name, scope)
        ring_capacity, ring_max = ring_geometry(
            capacity, None if max_message is None else max_message + HEADER
        )
        user_max = ring_max - HEADER

        def initialize(area: memoryview) -> None:
            def control(buf: memoryview, offset: int) -> None:
                _core.store_u32(buf, offset + _LAYOUT, RPC_LAYOUT)
                _core.store_u32(buf, offset + _SERVER_SLOTS, SERVER_SLOTS)
                _core.store_u32(buf, offset + _CLIENT_SLOTS, CLIENT_SLOTS)
                _core.store_u64(buf, offset + _MAX_MESSAGE, user_max)
                _core.store_u64(buf, offset + _RING_OFFSET, RING_OFFSET)
                _core.store_u64(buf, offset + _SERVER_TABLE, SERVER_TABLE)
                _core.store_u64(buf, offset + _CLIENT_TABLE, CLIENT_TABLE)

            # The ring first: the control block's tag, stored last, publishes both.
            claim(area, RING_OFFSET, "queue", _core.RING_CONTROL_BYTES, _ring_fields(ring_capacity, ring_max))
            claim(area, 0, "rpc", RING_OFFSET, control)

        size = RING_OFFSET + _core.RING_CONTROL_BYTES + ring_capacity
        region = _attach(oname, create, size, mode, initialize)
        try:
            buf = region.buf
            self._ring, self._max_message, self._capacity = _open_service(buf, f"service {oname.qualified!r}")
            self._me, self._me_ns = _me()
            self._buf, self._region = buf, region
            for index in range(SERVER_SLOTS):
                offset = SERVER_TABLE + index * SERVER_SLOT_BYTES
                if _claim_slot(buf, offset, self._me, self._me_ns)[0]:
                    self._server_offset = offset
                    break
            # With every slot held by a live server, this one serves unlisted.
            _sweep_clients(buf, oname, self._me, self._me_ns)
        except BaseException:
            self._release_all(region)
            raise
        self._name, self._created = oname.qualified, region.created
        self._state = threading.Lock()
        self._idle = threading.Condition(self._state)
        self._active: dict[int, int] = {}
        self._closing = False
        self._close_on_exit = False
        self._closed = False
        self._requests: weakref.WeakSet[Request] = weakref.WeakSet()
        self._deferred: list[tuple[int, memoryview, _core.Window]] = []
        self._targets: OrderedDict[int, _ReplyTarget] = OrderedDict()
        self._targets_lock = threading.Lock()
        self._next_prune = time.monotonic() + PRUNE_INTERVAL

    # ---- properties ------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def capacity(self) -> int:
        """Bytes of request storage (a power of two)."""
        return self._capacity

    @property
    def max_message(self) -> int:
        """The largest request or reply, in bytes."""
        return self._max_message

    @property
    def created(self) -> bool:
        return self._created

    # ---- serving ---------------------------------------------------------

    def serve(self, handler: Callable[[memoryview], Any], timeout: float | None = None) -> int:
        """Answer requests with ``handler(request) -> bytes-like`` until :meth:`close`.

        ``request`` is a read-only memoryview of the request, in place; the
        handler's result is copied into the caller's reply queue.  Returns how
        many requests were handled, after ``close()`` (from another thread or
        from the handler) or once no request came for ``timeout`` seconds.
        Ctrl-C raises KeyboardInterrupt here; the call in progress, if any, is
        answered with ServerDiedError.  A handler that raises does not stop
        the loop: its caller gets RemoteError with the exception and traceback.
        """
        return self._serve(handler, timeout, objects=False)

    def serve_objects(self, handler: Callable[[Any], Any], timeout: float | None = None) -> int:
        """As :meth:`serve`, for :meth:`Client.call_object`: ``handler(obj) -> obj`` (pickle 5)."""
        return self._serve(handler, timeout, objects=True)

    def _serve(self, handler: Callable[[Any], Any], timeout: float | None, *, objects: bool) -> int:
        idle = _seconds(timeout, "timeout")
        handled = 0
        with self._activity():
            while True:
                request = self._next(idle)
                if request is None:
                    return handled
                self._handle(request, handler, objects=objects)
                handled += 1

    def _handle(self, request: Request, handler: Callable[[Any], Any], *, objects: bool) -> None:
        try:
            argument = request.object() if objects else request.data
        except Exception as error:  # not a pickle: sent with call() to serve_objects()
            request._abandon(REPLY_ERROR, _describe(error, "the request could not be unpickled"))
            return
        try:
            if _faults.armed:
                _faults.reach("rpc.serve.in_handler")
            result = handler(argument)
            del argument
        except Exception as error:
            request._abandon(REPLY_ERROR, _describe(error, "the handler raised"))
            return
        except BaseException:
            request._abandon(REPLY_GONE, "the server was interrupted while handling the call")
            raise
        try:
            if objects:
                request.reply_object(result)
            else:
                request.reply(result)
        except Exception as error:
            # Not bytes-like, unpicklable, too large, or a caller's queue damaged: tell
            # that caller, go on serving the others.
            request._abandon(REPLY_ERROR, _describe(error, "the handler's result could not be sent back"))
        except BaseException:
            request._abandon(REPLY_GONE, "the server was interrupted while replying")
            raise

    def recv(self, timeout: float | None = None) -> Request:
        """The next request (``Empty`` if none comes within ``timeout`` seconds); answer it once."""
        with self._activity():
            request = self._next(_seconds(timeout, "timeout"))
        if request is None:
            if self._closing:
                raise ClosedError(f"{self!r} was closed while recv() waited")
            raise Empty(f"service {self._name!r} received no request within {timeout} s")
        return request

    def __iter__(self) -> Iterator[Request]:
        """Requests as they come, until :meth:`close`; answer each one."""
        with self._activity():
            while True:
                request = self._next(None)
                if request is None:
                    return
                yield request

    def _next(self, timeout: float | None) -> Request | None:
        """The next request that a caller still waits for; None at the timeout or on close."""
        deadline = _deadline(timeout)
        ring = self._ring
        assert ring is not None
        while not self._closing:
            self._housekeeping()
            claimed = ring.claim(_slice(deadline, SERVER_SLICE), self._spin)
            if claimed is not None:
                request = self._accept(*claimed)
                if request is not None:
                    return request
                continue
            if deadline is not None and time.monotonic() >= deadline:
                return None
        return None

    def _accept(self, position: int, offset: int, length: int) -> Request | None:
        """Turn a claimed record into a Request, or drop it: malformed, or its caller stopped waiting."""
        buf, ring = self._buf, self._ring
        assert buf is not None
        assert ring is not None
        if length >= HEADER:
            magic, slot, nonce, call, client_pid, _ = REQUEST.unpack_from(buf, offset)
            if magic == REQUEST_MAGIC and slot < CLIENT_SLOTS and call != 0:
                base = _client_offset(slot)
                # acquire loads: the client stored `call` before committing the request.
                if (
                    _core.load_u64(buf, base + _NONCE) == nonce
                    and _core.load_u64(buf, base + _CALL) == call
                    and _core.load_u64(buf, base + _OWNER) != 0
                ):
                    window = _core.Window(buf, offset + HEADER, length - HEADER, True)
                    request = Request(self, position, window, slot, nonce, call, client_pid)
                    self._requests.add(request)
                    if _faults.armed:
                        _faults.reach("rpc.serve.after_claim")
                    return request
        _core.fetch_add_u64(buf, _SKIPPED, 1)
        ring.release(position)
        return None

    # ---- replying --------------------------------------------------------

    def _caller_waits(self, request: Request, *, check_alive: bool) -> bool:
        buf = self._buf
        if buf is None:
            return False
        base = _client_offset(request._slot)
        if (
            _core.load_u64(buf, base + _NONCE) != request._nonce
            or _core.load_u64(buf, base + _CALL) != request._call
        ):
            return False
        owner = _core.load_u64(buf, base + _OWNER)
        return owner != 0 and (not check_alive or _alive(owner, _core.load_u64(buf, base + _OWNER_NS)))

    def _reserve_reply(
        self, stack: ExitStack, request: Request, nbytes: int, timeout: float | None, status: int
    ) -> memoryview | None:
        """A loan of the reply payload in the caller's queue (header written), or None: caller gone."""
        if nbytes > self._max_message:
            raise MessageTooLargeError(
                f"a reply of {nbytes} bytes is larger than service {self._name!r} allows "
                f"(max_message={self._max_message}); send less, or make the service with a larger max_message"
            )
        target = self._target(request._slot, request._nonce)
        if target is None:
            return None
        stack.callback(self._unuse, request._slot, target)
        queue = target.queue
        if nbytes + HEADER > queue.max_message:
            raise MessageTooLargeError(
                f"a reply of {nbytes} bytes is larger than the reply queue of client pid "
                f"{request._client_pid} takes ({queue.max_message - HEADER}); it was made with a smaller "
                "capacity= than the service's max_message needs"
            )
        deadline = _deadline(timeout)
        while True:
            try:
                buf = stack.enter_context(queue.loan(nbytes + HEADER, _slice(deadline, CLIENT_SLICE)))
                break
            except Full:
                self._check_caller(request, deadline, timeout)
                if not self._caller_waits(request, check_alive=True):
                    return None  # it died or gave up: nobody will make room
        REPLY.pack_into(buf, 0, request._call, status)
        return stack.enter_context(buf[HEADER:])

    def _send_reply(
        self, request: Request, message: bytes, timeout: float | None, *, truncate: bool = False
    ) -> bool:
        """Send a whole reply (header included) to the caller; False if it was dropped: caller gone.

        ``truncate`` cuts an error text to what the service and the caller's queue take.
        """
        if truncate:
            message = message[: HEADER + self._max_message]
        if len(message) - HEADER > self._max_message:
            raise MessageTooLargeError(
                f"a reply of {len(message) - HEADER} bytes is larger than service {self._name!r} allows "
                f"(max_message={self._max_message}); send less, or make the service with a larger max_message"
            )
        target = self._target(request._slot, request._nonce)
        if target is None:
            return False
        try:
            queue = target.queue
            if truncate:
                message = message[: queue.max_message]
            if len(message) > queue.max_message:
                raise MessageTooLargeError(
                    f"a reply of {len(message) - HEADER} bytes is larger than the reply queue of client pid "
                    f"{request._client_pid} takes ({queue.max_message - HEADER}); it was made with a smaller "
                    "capacity= than the service's max_message needs"
                )
            deadline = _deadline(timeout)
            while True:
                try:
                    queue.send(message, _slice(deadline, CLIENT_SLICE))
                    return True
                except Full:
                    self._check_caller(request, deadline, timeout)
                    if not self._caller_waits(request, check_alive=True):
                        return False
        finally:
            self._unuse(request._slot, target)

    def _check_caller(self, request: Request, deadline: float | None, timeout: float | None) -> None:
        if (
            deadline is not None
            and time.monotonic() >= deadline
            and self._caller_waits(request, check_alive=True)
        ):
            raise Full(
                f"could not reply to client pid {request._client_pid} of service {self._name!r} "
                f"within {timeout} s: its reply queue stayed full although it waits for this reply"
            ) from None

    def _target(self, slot: int, nonce: int) -> _ReplyTarget | None:
        """The reply queue of (slot, nonce), opened once and cached; None if it is gone."""
        with self._targets_lock:
            target = self._targets.get(slot)
            if target is not None and target.nonce == nonce:
                self._targets.move_to_end(slot)
                target.users += 1
                return target
        name = reply_name(self._oname.name, slot, nonce)
        try:
            queue = Queue(name, create=False, scope=self._oname.scope, spin=self._spin)
        except (NotFoundError, CorruptRegionError, KindMismatchError):
            return None  # it went away (or something else took its name): the caller is gone
        fresh = _ReplyTarget(nonce, queue)
        fresh.users = 1
        retired = []
        with self._targets_lock:
            old = self._targets.pop(slot, None)
            if old is not None:
                retired.append(old)
            self._targets[slot] = fresh
            while len(self._targets) > REPLY_CACHE:
                retired.append(self._targets.popitem(last=False)[1])
            for entry in retired:
                entry.retired = True
            retired = [entry for entry in retired if entry.users == 0]
        for entry in retired:
            _close_quietly(entry.queue)
        return fresh

    def _unuse(self, slot: int, target: _ReplyTarget) -> None:
        with self._targets_lock:
            target.users -= 1
            close = target.retired and target.users == 0
        if close:
            _close_quietly(target.queue)

    def _housekeeping(self) -> None:
        """Free records whose views were let go; now and then, close queues of clients gone."""
        if self._deferred:
            with self._targets_lock:
                self._deferred = [entry for entry in self._deferred if not self._try_release(*entry)]
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_INTERVAL
        buf = self._buf
        if buf is None:
            return
        retired = []
        with self._targets_lock:
            for slot, target in list(self._targets.items()):
                base = _client_offset(slot)
                owner = _core.load_u64(buf, base + _OWNER)
                if (
                    _core.load_u64(buf, base + _NONCE) != target.nonce
                    or owner == 0
                    or not _alive(owner, _core.load_u64(buf, base + _OWNER_NS))
                ):
                    del self._targets[slot]
                    target.retired = True
                    if target.users == 0:
                        retired.append(target)
        # Our handle may be the last on a dead client's queue: closing it removes the name.
        for target in retired:
            _close_quietly(target.queue)

    def _let_go(self, position: int, view: memoryview, window: _core.Window) -> None:
        with self._targets_lock:
            if not self._try_release(position, view, window):
                # A view of the request is still alive (a slice being returned, an array):
                # the record stays reserved until it is gone; retried as the server runs.
                self._deferred.append((position, view, window))

    def _try_release(self, position: int, view: memoryview, window: _core.Window) -> bool:
        try:
            view.release()
        except BufferError:
            return False
        if window.exported():
            return False
        window.close()
        if self._ring is not None:
            self._ring.release(position)
        return True

    # ---- lifetime --------------------------------------------------------

    @contextmanager
    def _activity(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._state:
            if self._closing:
                raise ClosedError(f"{self!r} is closed; open the service again")
            self._active[me] = self._active.get(me, 0) + 1
        try:
            yield
        finally:
            with self._state:
                depth = self._active[me] - 1
                if depth:
                    self._active[me] = depth
                else:
                    del self._active[me]
                self._idle.notify_all()
                finish = self._close_on_exit and not self._active and not self._closed
                if finish:
                    self._closed = True
            if finish:
                self._finish_close()

    def stats(self) -> ChannelStats:
        """Counters of the whole service (requests), as every server and client sees them.

        ``drops`` counts requests lost to dead peers, requests not handled
        because their caller had gone or given up, and replies dropped for the
        same reason.  ``waits`` counts receives that slept; a server waiting
        idle counts once per 0.1 s slice (it wakes that often to notice close()).
        """
        buf = self._buf
        ring = self._ring
        if buf is None or ring is None:
            raise ClosedError(f"{self!r} is closed")
        counters = {field: _core.load_u64(buf, offset) for field, offset in _RING.items()}
        return ChannelStats(
            sent=counters["sent"],
            received=max(0, counters["received"] - counters["lost_reads"]),
            bytes=counters["bytes_sent"],
            bytes_received=counters["bytes_received"],
            depth=ring.depth(),
            waits=counters["waits"],
            drops=counters["drops"] + _core.load_u64(buf, _SKIPPED) + _core.load_u64(buf, _REPLIES_DROPPED),
        )

    def close(self) -> None:
        """Stop serving and close this handle (idempotent).

        Loops serving in other threads return within about 0.1 s (a handler
        that is running finishes first); called from a handler, the close
        happens when its loop returns.  Requests taken and not answered are
        answered with ServerDiedError.  The service goes away with its last
        handle, servers' and clients' alike.
        """
        with self._state:
            if self._closed:
                leftover = self._region if self._ring is None else None
                if leftover is not None:  # an earlier close() raised BufferError: finish it
                    leftover.close()
                    self._region = None
                return
            self._closing = True
            if threading.get_ident() in self._active:
                self._close_on_exit = True  # the loop this thread runs closes it on the way out
                return
            while self._active:
                self._idle.wait()
            if self._closed:
                return
            self._closed = True
        self._finish_close()

    def _finish_close(self) -> None:
        for request in list(self._requests):
            request._abandon(REPLY_GONE, "the server closed before replying")
        self._housekeeping()
        with self._targets_lock:
            targets, self._targets = list(self._targets.values()), OrderedDict()
        for target in targets:
            _close_quietly(target.queue)
        for position, view, window in self._deferred:
            # Views of these requests are still alive somewhere: free the records anyway
            # (nobody reads them through a closed server); the region then refuses to
            # close below, with BufferError naming the views, as Region.close does.
            with contextlib.suppress(BufferError):
                view.release()
            if self._ring is not None:
                self._ring.release(position)
            del window
        self._deferred = []
        region = self._region
        if region is not None:
            self._release_all(region)

    def _release_all(self, region: Region) -> None:
        buf = self._buf
        if buf is not None and self._server_offset is not None:
            _free_slot(buf, self._server_offset, self._me, client=False)
            self._server_offset = None
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self._buf = None
        del buf
        region.close()  # BufferError: keep _region so a later close() finishes
        self._region = None

    def unlink(self) -> None:
        """Remove the service's name now; open handles keep working."""
        if self._region is None:
            raise ClosedError(f"{self!r} is closed")
        self._region.unlink()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self._region is not None and not self._closed:
            with contextlib.suppress(Exception):
                self.close()

    def __repr__(self) -> str:
        state = " closed" if self._buf is None else ""
        return (
            f"<memipc.Server name={self._name!r} kind='rpc' size={self._capacity} "
            f"max_message={self._max_message}{state}>"
        )


def _describe(error: BaseException, what: str) -> str:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return f"{what}: {type(error).__name__}: {error}\n\nServer traceback (pid {os.getpid()}):\n{text}"


def _close_quietly(queue: Queue) -> None:
    with contextlib.suppress(Exception):
        queue.close()


def _sweep_clients(buf: memoryview, oname: ObjectName, me: int, me_ns: int) -> int:
    """Free the slots of clients that died, and remove their reply queues; returns how many."""
    swept = 0
    for slot in range(CLIENT_SLOTS):
        base = _client_offset(slot)
        if _core.load_u64(buf, base + _OWNER) == 0:
            continue
        taken, dead = _claim_slot(buf, base, me, me_ns)
        if not taken:
            continue
        if dead:
            _forget_client(buf, base, oname, slot)
            swept += 1
        _free_slot(buf, base, me, client=True)
    return swept


def _forget_client(buf: memoryview, base: int, oname: ObjectName, slot: int) -> None:
    """Remove a dead client's reply queue (unless a server still holds it: its close removes it)."""
    nonce = _core.load_u64(buf, base + _NONCE)
    _core.store_u64(buf, base + _CALL, 0)
    if nonce:
        with contextlib.suppress(OSError, ValueError, Error):
            reclaim_abandoned(parse(reply_name(oname.name, slot, nonce), oname.scope))


# ---- the client side -------------------------------------------------------------


def _create_reply_ring(oname: ObjectName, capacity: int, max_message: int | None, mode: int) -> Region:
    """A client's reply queue: a ring laid out as a Queue's, so servers open it with Queue()."""
    ring_capacity, ring_max = ring_geometry(capacity, max_message)
    fields = _ring_fields(ring_capacity, ring_max)

    def initialize(area: memoryview) -> None:
        claim(area, 0, "queue", _core.RING_CONTROL_BYTES, fields)

    size = _core.RING_CONTROL_BYTES + ring_capacity
    return Region._create(oname, size, kind="queue", mode=mode, initialize=initialize)


class _Call:
    """One call in progress: its id, deadline and the caller's slot row."""

    __slots__ = ("base", "deadline", "id", "seconds")

    def __init__(self, call_id: int, seconds: float | None, deadline: float | None, base: int) -> None:
        self.id, self.seconds, self.deadline, self.base = call_id, seconds, deadline, base


@final
class Client:
    """The calling side of a named request/response service.

    ``Client(name)`` opens a service that a :class:`Server` created
    (``NotFoundError`` otherwise) and makes this client's reply queue, sized
    for the service's largest reply unless ``capacity`` (bytes) says
    otherwise.  ``timeout`` is the default for calls (None: wait for ever).

    A call raises :class:`~memipc.CallTimeoutError` (an ``Empty`` and a
    ``TimeoutError``) when its time runs out, :class:`~memipc.ServerDiedError`
    within about a second when the server handling it dies (or when no
    server has been running for a second), and :class:`~memipc.RemoteError`
    when the server's handler raised.  One call at a time per Client: calls
    from several threads take turns (one Client per thread calls in parallel).
    """

    _region: Region | None = None
    _buf: memoryview | None = None
    _ring: _core.Ring | None = None
    _replies: Region | None = None
    _leftover: Region | None = None
    _reply_buf: memoryview | None = None
    _reply_ring: _core.Ring | None = None
    _slot: int | None = None
    _name: str = "?"
    _max_message: int = 0
    _closed: bool = True

    def __init__(
        self,
        name: str,
        *,
        capacity: int | None = None,
        timeout: float | None = None,
        scope: Scope | None = None,
        spin: float | None = None,
    ) -> None:
        if spin is not None and not 0 <= spin <= 1:
            raise ValueError(f"spin must be None (adaptive) or between 0 and 1 second, not {spin!r}")
        if capacity is not None:
            ring_geometry(capacity, None)  # checks it
        self._timeout = _seconds(timeout, "timeout")
        self._spin = spin
        self._oname = oname = parse(name, scope)
        self._name = oname.qualified
        self._region = Region._open(oname, kind="rpc")
        try:
            buf = self._region.buf
            self._ring, self._max_message, _ = _open_service(buf, f"service {oname.qualified!r}")
            self._buf = buf
            self._me, self._me_ns = _me()
            _sweep_clients(buf, oname, self._me, self._me_ns)
            self._take_slot(buf, oname, capacity)
        except BaseException:
            self._release_all()
            raise
        self._lock = threading.Lock()
        self._state = threading.Lock()
        self._caller: int | None = None
        self._closing = False
        self._closed = False
        self._next_call = 1
        self._stale = 0

    def _take_slot(self, buf: memoryview, oname: ObjectName, capacity: int | None) -> None:
        found = next(
            (
                (slot, dead)
                for slot in range(CLIENT_SLOTS)
                for taken, dead in [_claim_slot(buf, _client_offset(slot), self._me, self._me_ns)]
                if taken
            ),
            None,
        )
        if found is None:
            raise Full(
                f"service {self._name!r} has {CLIENT_SLOTS} clients attached; close some (dead ones "
                "are freed by themselves) before opening another"
            )
        slot, dead = found
        self._slot = slot
        base = _client_offset(slot)
        if dead:
            _forget_client(buf, base, oname, slot)
        _core.store_u64(buf, base + _CALL, 0)
        # Servers of other users (scope='global') write replies: same permissions as the service.
        try:
            mode = os.stat(_platform.segment_path(oname.os_name)).st_mode & 0o777
        except OSError:  # unlinked since we opened it: it lives on for its handles
            mode = DEFAULT_MODES[oname.scope]
        for _ in range(4):
            nonce = int.from_bytes(os.urandom(8), "little") | 1
            _core.store_u64(buf, base + _NONCE, nonce)
            try:
                region = _create_reply_ring(
                    parse(reply_name(oname.name, slot, nonce), oname.scope),
                    4096 if capacity is None else capacity,
                    self._max_message + HEADER if capacity is None else None,
                    mode,
                )
            except ExistsError:
                continue  # a leftover with this very nonce: draw another
            break
        else:
            raise ExistsError(f"could not create a reply queue for a client of {self._name!r}; try again")
        self._replies, self._nonce = region, nonce
        try:
            self._reply_buf = region.buf
            self._reply_ring = _core.Ring(self._reply_buf, 0)
        except BaseException:
            self._reply_buf = None
            raise

    # ---- properties ------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def max_message(self) -> int:
        """The largest request the service accepts, in bytes."""
        return self._max_message

    @property
    def timeout(self) -> float | None:
        """The default timeout of calls, in seconds (None: for ever)."""
        return self._timeout

    # ---- calls -----------------------------------------------------------

    def call(self, data: Any, timeout: Timeout = DEFAULT_TIMEOUT) -> bytes:
        """Send ``data`` (bytes-like) to a server and return its reply.

        ``timeout`` in seconds covers the whole call; None waits for ever, and
        leaving it out uses the Client's ``timeout``.
        """
        source = _byte_view(data)
        call = None
        try:
            call = self._begin(source.nbytes, timeout)
            sent = self._send(call, source.nbytes, source, None)
            position, offset, length = self._await_reply(call, sent)
            reply: bytes = self._take(position, offset, length, bytes)
            return reply
        finally:
            if call is not None:
                self._end(call)

    def call_object(self, obj: object, timeout: Timeout = DEFAULT_TIMEOUT) -> Any:
        """Send any picklable object; return the server's object (:meth:`Server.serve_objects`)."""
        stream, raws, size, offsets = _codec.encode_object(obj)
        call = None
        try:
            call = self._begin(size, timeout)
            sent = self._send(
                call, size, None, lambda target: _codec.write_object(target, stream, raws, offsets)
            )
            position, offset, length = self._await_reply(call, sent)
            return self._take(position, offset, length, _codec.read_object)
        finally:
            if call is not None:
                self._end(call)
            for raw in raws:
                raw.release()

    @contextmanager
    def call_view(self, data: Any, timeout: Timeout = DEFAULT_TIMEOUT) -> Iterator[memoryview]:
        """Call, and read the reply in place in the reply queue (zero copy, read-only).

        The reply's record is freed when the block ends: keeping the view, or
        anything made from it, past the block raises BufferError.
        """
        source = _byte_view(data)
        call = None
        try:
            call = self._begin(source.nbytes, timeout)
            sent = self._send(call, source.nbytes, source, None)
            position, offset, length = self._await_reply(call, sent)
            buf = self._reply_buf
            assert buf is not None
            window = _core.Window(buf, offset + HEADER, length - HEADER, True)
            del buf
            view = memoryview(window)
            try:
                yield view
            finally:
                clean = _release_view(view, window)
                self._release_reply(position)
                if not clean:
                    raise BufferError(
                        "a reference to the reply (a slice, an array, a memoryview) outlived the "
                        "'with client.call_view()' block; its record was freed and will be overwritten. "
                        "Copy what you need inside the block"
                    )
        finally:
            if call is not None:
                self._end(call)

    def _begin(self, size: int, timeout: Timeout) -> _Call:
        """Take this client's turn and announce a new call id in its slot."""
        seconds = self._timeout if timeout is DEFAULT_TIMEOUT else _seconds(timeout, "timeout")
        if size > self._max_message:
            raise MessageTooLargeError(
                f"a request of {size} bytes is larger than service {self._name!r} accepts "
                f"(max_message={self._max_message}); send less, or make the service with a larger max_message"
            )
        deadline = _deadline(seconds)
        if not self._lock.acquire(timeout=-1 if deadline is None else _slice(deadline, 1e9)):
            raise CallTimeoutError(
                f"call to service {self._name!r} timed out after {seconds} s waiting for another thread's "
                "call on this Client to finish; give each thread its own Client to call in parallel"
            )
        try:
            self._caller = threading.get_ident()
            buf = self._live()
            base = _client_offset(self._slot or 0)
            if _core.load_u64(buf, base + _OWNER) != self._me:
                raise ClosedError(
                    f"{self!r} lost its slot: another process judged this one dead (a different pid "
                    "namespace?) and took it over; open a new Client"
                )
            call = _Call(self._next_call, seconds, deadline, base)
            self._next_call += 1
            # release: servers that take the request see the call id (pairs with _accept's loads).
            _core.store_u64(buf, base + _CALL, call.id)
            _core.fetch_add_u64(buf, base + _CALLS, 1)
        except BaseException:
            self._caller = None
            self._lock.release()
            raise
        return call

    def _end(self, call: _Call) -> None:
        buf = self._buf
        if buf is not None:
            _core.store_u64(buf, call.base + _CALL, 0)  # a late reply is stale from now on
        del buf
        self._caller = None
        self._lock.release()
        if self._closing and not self._closed:
            self.close()

    def _live(self) -> memoryview:
        buf = self._buf
        if buf is None or self._closing:
            raise ClosedError(f"{self!r} is closed; open a new Client")
        return buf

    def _send(
        self, call: _Call, size: int, source: memoryview | None, fill: Callable[[memoryview], None] | None
    ) -> int:
        """Queue the request; returns its record's position (the client follows it with inspect)."""
        ring = self._ring
        assert ring is not None
        no_server_since: float | None = None
        while True:
            buf = self._live()
            reserved = ring.reserve(size + HEADER, _slice(call.deadline, CLIENT_SLICE), self._spin)
            if reserved != -1:
                break
            now = time.monotonic()
            no_server_since = self._servers_gone(no_server_since, now)
            if call.deadline is not None and now >= call.deadline:
                raise CallTimeoutError(
                    f"call to service {self._name!r} timed out after {call.seconds} s before the request "
                    "could even be queued: the request queue stayed full (the servers are busy, or too "
                    "few). Pass a longer timeout=, or start more servers"
                )
        assert isinstance(reserved, tuple)
        position, offset = reserved
        try:
            REQUEST.pack_into(buf, offset, REQUEST_MAGIC, self._slot, self._nonce, call.id, os.getpid(), 0)
            with buf[offset + HEADER : offset + HEADER + size] as target:
                if source is not None:
                    target[:] = source
                elif fill is not None:
                    fill(target)
            if _faults.armed:
                _faults.reach("rpc.call.before_commit")
        except BaseException:
            ring.abort(position)
            raise
        ring.commit(position)
        if _faults.armed:
            _faults.reach("rpc.call.after_send")
        return position

    def _await_reply(self, call: _Call, position: int) -> tuple[int, int, int]:
        """Wait for the reply to the request at ``position``: (position, offset, length) of its record."""
        ring, replies, buf = self._ring, self._reply_ring, self._reply_buf
        assert ring is not None
        assert replies is not None
        assert buf is not None
        lost: str | None = None  # the request is gone and no reply is queued, once the queue is drained
        no_server_since: float | None = None
        while True:
            self._live()
            claimed = replies.claim(
                0 if lost is not None else _slice(call.deadline, CLIENT_SLICE), self._spin
            )
            if claimed is not None:
                reply_position, offset, length = claimed
                if length < HEADER or REPLY.unpack_from(buf, offset)[0] != call.id:
                    self._stale += 1  # the reply of a call that gave up earlier
                    replies.release(reply_position)
                    continue
                status = REPLY.unpack_from(buf, offset)[1]
                if status == REPLY_OK:
                    return claimed
                text = self._take(reply_position, offset, length, bytes)
                raise self._failure(status, text)
            if lost is not None:
                raise ServerDiedError(f"call to service {self._name!r} failed: {lost}")
            state, pid = ring.inspect(position)
            now = time.monotonic()
            if state == "released":
                # A server replies before it lets go of the request, so the reply is queued
                # (drain once more) unless the record was freed after its server died.
                lost = (
                    "the server that took it let go of it without replying (it died, or could not "
                    "open this client's reply queue)"
                )
                continue
            if state == "reader_died":
                lost = f"server process {pid} died while handling it"
                continue
            if state in ("waiting", "writing"):
                no_server_since = self._servers_gone(no_server_since, now)
            else:
                no_server_since = None
            if call.deadline is not None and now >= call.deadline:
                where = (
                    f"server process {pid} is still handling it"
                    if state == "reading"
                    else "no server has taken the request yet (all busy?)"
                )
                raise CallTimeoutError(
                    f"call to service {self._name!r} got no reply within {call.seconds} s: {where}. "
                    "Pass a longer timeout=, or check the server"
                )

    def _take(self, position: int, offset: int, length: int, read: Callable[[memoryview], Any]) -> Any:
        """``read`` the payload of a claimed reply record, then free the record."""
        buf = self._reply_buf
        assert buf is not None
        try:
            with buf[offset + HEADER : offset + length] as payload:
                return read(payload)
        finally:
            self._release_reply(position)

    def _release_reply(self, position: int) -> None:
        if self._reply_ring is not None:
            self._reply_ring.release(position)

    def _servers_gone(self, since: float | None, now: float) -> float | None:
        """Raise ServerDiedError once no server has run for NO_SERVER_GRACE; else the new 'since'."""
        buf = self._live()
        for index in range(SERVER_SLOTS):
            offset = SERVER_TABLE + index * SERVER_SLOT_BYTES
            owner = _core.load_u64(buf, offset + _OWNER)
            if owner and _alive(owner, _core.load_u64(buf, offset + _OWNER_NS)):
                return None
        if since is None:
            return now
        if now - since >= NO_SERVER_GRACE:
            raise ServerDiedError(
                f"no server is running for service {self._name!r}: the last one closed or died, and none "
                f"came within {NO_SERVER_GRACE:.0f} s to take the call. Start a memipc.Server"
                f"({self._oname.name!r}), then call again"
            )
        return since

    def _failure(self, status: int, text_bytes: bytes) -> Error:
        text = text_bytes.decode("utf-8", "replace")
        if status == REPLY_GONE:
            return ServerDiedError(f"call to service {self._name!r} failed: {text}")
        return RemoteError(f"call to service {self._name!r} failed in the server: {text}")

    # ---- state -----------------------------------------------------------

    def stats(self) -> ChannelStats:
        """Counters of this client's reply queue.

        ``drops`` also counts replies that came after their call had given up
        (timed out or interrupted), which the client discards.
        """
        buf, ring = self._reply_buf, self._reply_ring
        if buf is None or ring is None or self._buf is None:
            raise ClosedError(f"{self!r} is closed")
        counters = {field: _core.load_u64(buf, offset - RING_OFFSET) for field, offset in _RING.items()}
        return ChannelStats(
            sent=counters["sent"],
            received=max(0, counters["received"] - counters["lost_reads"]),
            bytes=counters["bytes_sent"],
            bytes_received=counters["bytes_received"],
            depth=ring.depth(),
            waits=counters["waits"],
            drops=counters["drops"] + self._stale,
        )

    def close(self) -> None:
        """Close this client (idempotent): its reply queue and its slot go at once.

        A call in progress in another thread raises ClosedError within about
        0.2 s; called inside a ``call_view`` block, the close happens when the
        block ends.
        """
        with self._state:
            if self._closed:
                leftover, self._leftover = self._leftover, None
                if leftover is not None:  # an earlier close() raised BufferError: finish it
                    leftover.close()
                return
            self._closing = True
            if self._caller == threading.get_ident():
                return  # the call in this thread closes it on the way out
        with self._lock:
            with self._state:
                if self._closed:
                    return
                self._closed = True
            self._release_all()

    def _release_all(self) -> None:
        replies, self._replies = self._replies, None
        if self._reply_ring is not None:
            self._reply_ring.close()
            self._reply_ring = None
        self._reply_buf = None
        stuck: BufferError | None = None
        if replies is not None:
            with contextlib.suppress(OSError):
                replies.unlink()  # servers may hold it open: the name must go now
            try:
                replies.close()
            except BufferError:
                # A reply view outlived its call_view block, or only garbage still holds
                # one (an exception's traceback keeps the block's frames): collect, retry.
                gc.collect()
                try:
                    replies.close()
                except BufferError as error:
                    stuck, self._leftover = error, replies
        buf = self._buf
        if buf is not None and self._slot is not None:
            _free_slot(buf, _client_offset(self._slot), self._me, client=True)
            self._slot = None
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self._buf = None
        del buf
        if self._region is not None:
            self._region.close()
            self._region = None
        if stuck is not None:
            raise stuck

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self._region is not None:
            with contextlib.suppress(Exception):
                self.close()

    def __repr__(self) -> str:
        state = " closed" if self._buf is None else ""
        return (
            f"<memipc.Client name={self._name!r} kind='rpc' slot={self._slot} "
            f"max_message={self._max_message}{state}>"
        )


Request.__module__ = Server.__module__ = Client.__module__ = "memipc"
