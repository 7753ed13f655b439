"""faster-fifo: a circular buffer in shared memory guarded by a process-shared pthread mutex.

Each channel is a ``faster_fifo.Queue(max_size_bytes=64 MiB)``, the same
message storage as memipc's ring, so 16 MiB messages fit.  It is built with
``dumps`` = identity and ``loads`` = ``bytes``: bytes go in and come out
without pickling (one copy each way), the library's best case.  Blocking
calls wait on its condition variable; busy-poll uses ``get_nowait`` /
``put_nowait``, which raise ``Empty`` / ``Full``.
"""

from __future__ import annotations

from typing import ClassVar

import faster_fifo

from . import BUFFER_BYTES, Endpoint, Peer, Side

#: Seconds a blocking call waits before raising; long enough never to matter here.
FOREVER_S = 1e6


def _as_is(message: bytes) -> bytes:
    """dumps: the message is already bytes (module level, so the queue pickles for spawn)."""
    return message


class FasterFifo(Peer):
    label: ClassVar[str] = "faster-fifo"
    how: ClassVar[str] = "two faster_fifo.Queue(max_size_bytes=64 MiB, dumps=identity, loads=bytes)"

    def create(self, size: int, max_message: int) -> object:
        capacity = max(BUFFER_BYTES, 4 * (max_message + 64))
        return tuple(
            faster_fifo.Queue(max_size_bytes=capacity, loads=bytes, dumps=_as_is) for _ in ("a2b", "b2a")
        )

    def open(self, link: object, side: Side) -> Endpoint:
        assert isinstance(link, tuple)
        a2b, b2a = link
        outgoing, incoming = (a2b, b2a) if side == "a" else (b2a, a2b)
        put, get = outgoing.put, incoming.get
        put_nowait, get_nowait = outgoing.put_nowait, incoming.get_nowait
        empty: type[Exception] = faster_fifo.Empty
        full: type[Exception] = faster_fifo.Full

        def send(data: bytes) -> None:
            put(data, timeout=FOREVER_S)

        def recv() -> bytes:
            message: bytes = get(timeout=FOREVER_S)
            return message

        def send_nowait(data: bytes) -> bool:
            try:
                put_nowait(data)
            except full:
                return False
            return True

        def recv_nowait() -> bytes | None:
            try:
                message: bytes = get_nowait()
            except empty:
                return None
            return message

        return Endpoint(send=send, recv=recv, send_nowait=send_nowait, recv_nowait=recv_nowait, close=_noop)


def _noop() -> None:
    """faster-fifo queues have nothing to close in a child; the parent's handles free the memory."""


def make() -> Peer:
    return FasterFifo()
