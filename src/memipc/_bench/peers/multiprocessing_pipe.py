"""multiprocessing.Pipe (spawn context): one duplex connection, bytes each way.

The link is one ``Pipe(duplex=True)`` (a Unix socket pair): A's end sends
on it what B's end receives, and back.  ``send_bytes`` / ``recv_bytes``
carry bytes without pickling.  Busy-poll: ``poll()`` (a zero-timeout
``poll(2)``), then ``recv_bytes``; with one message in flight the socket
never fills, so ``send_bytes`` never waits.
"""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import ClassVar

from . import SPAWN, Endpoint, Peer, Side, blocking_only_send


class MultiprocessingPipe(Peer):
    label: ClassVar[str] = "multiprocessing.Pipe"
    how: ClassVar[str] = "one spawn-context Pipe(duplex=True): send_bytes/recv_bytes; busy-poll: poll() first"

    def create(self, size: int, max_message: int) -> object:
        return SPAWN.Pipe(duplex=True)

    def open(self, link: object, side: Side) -> Endpoint:
        assert isinstance(link, tuple)
        connection = link[0] if side == "a" else link[1]
        assert isinstance(connection, Connection)
        ready, take = connection.poll, connection.recv_bytes

        def recv_nowait() -> bytes | None:
            return take() if ready() else None

        return Endpoint(
            send=connection.send_bytes,
            recv=connection.recv_bytes,
            send_nowait=blocking_only_send(connection.send_bytes),
            recv_nowait=recv_nowait,
            close=connection.close,
        )

    def destroy(self, link: object) -> None:
        assert isinstance(link, tuple)
        for connection in link:
            connection.close()


def make() -> Peer:
    return MultiprocessingPipe()
