"""memipc.Queue: the subject of the benchmark, in its default configuration.

Each channel is a ``memipc.Queue(name, max_message=16 MiB)``: default mode
(``"mpmc"``), default adaptive spin-then-futex wait (``spin=None``), the ring
sized by memipc for the largest message (64 MiB).  Messages go in and come out
as ``bytes`` (``send`` / ``recv``: one copy each way).  Busy-poll uses only the
public API: ``len(q)`` to see whether anything is there, then
``recv_nowait()``; raising and catching ``Empty`` on every empty poll would
cost more than the poll itself.
"""

from __future__ import annotations

import uuid
from typing import ClassVar

import memipc

from . import Endpoint, Peer, Side


class MemipcQueue(Peer):
    label: ClassVar[str] = "memipc.Queue"
    how: ClassVar[str] = (
        "two memipc.Queue(name, max_message=16 MiB) in default mode (mpmc, spin=None); "
        "busy-poll: len(q) then recv_nowait()"
    )

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], list[memipc.Queue]] = {}

    def create(self, size: int, max_message: int) -> object:
        tag = f"bench-queue-{uuid.uuid4().hex[:12]}"
        queues = [memipc.Queue(f"{tag}-{d}", max_message=max_message, create=True) for d in ("a2b", "b2a")]
        link = (queues[0].name, queues[1].name)
        # The parent keeps its handles open until destroy(), so the names outlive any one child.
        self._held[link] = queues
        return link

    def open(self, link: object, side: Side) -> Endpoint:
        assert isinstance(link, tuple)
        a2b = memipc.Queue(link[0], create=False)
        b2a = memipc.Queue(link[1], create=False)
        outgoing, incoming = (a2b, b2a) if side == "a" else (b2a, a2b)
        depth, take = incoming.__len__, incoming.recv_nowait
        put = outgoing.send_nowait

        def recv_nowait() -> bytes | None:
            if not depth():
                return None
            try:
                return take()
            except memipc.Empty:  # counted but not yet committed by its sender
                return None

        def send_nowait(data: bytes) -> bool:
            try:
                put(data)
            except memipc.Full:
                return False
            return True

        def close() -> None:
            a2b.close()
            b2a.close()

        return Endpoint(
            send=outgoing.send,
            recv=incoming.recv,
            send_nowait=send_nowait,
            recv_nowait=recv_nowait,
            close=close,
            send_many=outgoing.send_many,
            recv_many=incoming.recv_many,
            loan=outgoing.loan,
            recv_view=incoming.recv_view,
        )

    def destroy(self, link: object) -> None:
        assert isinstance(link, tuple)
        for queue in self._held.pop(link, []):
            queue.unlink()
            queue.close()


def make() -> Peer:
    return MemipcQueue()
