"""multiprocessing.Queue (spawn context), the standard library's queue between processes.

Each channel is a spawn-context ``multiprocessing.Queue(maxsize)``: ``put``
pickles the bytes object and hands it to the queue's feeder thread, which
writes it to a pipe; ``get`` reads and unpickles it.  ``maxsize`` is
min(1000, 64 MiB / size) messages, at least 2, as for pyzmq's high-water
mark: an unbounded queue never pushes back, so a one-way stream would only
measure how fast ``put`` appends to the feeder's list, and 16 MiB messages
would pile up for minutes.  Busy-poll: ``put_nowait`` / ``get_nowait`` until
they stop raising ``Full`` / ``Empty``.
"""

from __future__ import annotations

import multiprocessing.queues
from queue import Empty, Full
from typing import ClassVar

from . import BUFFER_BYTES, SPAWN, Endpoint, Peer, Side

DEFAULT_DEPTH = 1000


class MultiprocessingQueue(Peer):
    label: ClassVar[str] = "multiprocessing.Queue"
    how: ClassVar[str] = (
        "two spawn-context multiprocessing.Queue(maxsize=min(1000, 64 MiB / size)): "
        "put/get of bytes (pickled, feeder thread)"
    )

    def create(self, size: int, max_message: int) -> object:
        depth = max(2, min(DEFAULT_DEPTH, BUFFER_BYTES // size))
        return (SPAWN.Queue(depth), SPAWN.Queue(depth))

    def open(self, link: object, side: Side) -> Endpoint:
        assert isinstance(link, tuple)
        a2b, b2a = link
        assert isinstance(a2b, multiprocessing.queues.Queue)
        assert isinstance(b2a, multiprocessing.queues.Queue)
        outgoing, incoming = (a2b, b2a) if side == "a" else (b2a, a2b)
        put, take = outgoing.put_nowait, incoming.get_nowait

        def send_nowait(data: bytes) -> bool:
            try:
                put(data)
            except Full:
                return False
            return True

        def recv_nowait() -> bytes | None:
            try:
                message: bytes = take()
            except Empty:
                return None
            return message

        def close() -> None:
            for queue in (a2b, b2a):
                queue.close()
                queue.join_thread()  # flush what the feeder thread still holds

        return Endpoint(
            send=outgoing.put,
            recv=incoming.get,
            send_nowait=send_nowait,
            recv_nowait=recv_nowait,
            close=close,
        )


def make() -> Peer:
    return MultiprocessingQueue()
