"""multiprocessing.Pipe (spawn context) as request/response, by hand.

The parent makes one ``Pipe(duplex=True)`` (a Unix socket pair) and hands one
end to each process.  The server loops ``conn.send_bytes(conn.recv_bytes())``;
a call is ``send_bytes(payload)`` then ``recv_bytes()``.  No pickling: bytes
in, bytes out, as the standard library's fastest way to ask another process
something.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from multiprocessing.connection import Connection
from typing import ClassVar

from . import SPAWN
from .rpc import ClientEnd, RpcPeer


class MultiprocessingPipeRpc(RpcPeer):
    label: ClassVar[str] = "multiprocessing.Pipe"
    how: ClassVar[str] = (
        "one spawn-context Pipe(duplex=True); server loops send_bytes(recv_bytes()); "
        "call = send_bytes() then recv_bytes()"
    )

    def create(self, max_message: int) -> object:
        return SPAWN.Pipe(duplex=True)

    def serve(self, link: object, ready: Callable[[], None]) -> None:
        assert isinstance(link, tuple)
        connection = link[1]
        assert isinstance(connection, Connection)
        ready()
        send, recv = connection.send_bytes, connection.recv_bytes
        try:
            with suppress(KeyboardInterrupt):
                while True:
                    send(recv())
        finally:
            connection.close()

    def client(self, link: object) -> ClientEnd:
        assert isinstance(link, tuple)
        connection = link[0]
        assert isinstance(connection, Connection)
        send, recv = connection.send_bytes, connection.recv_bytes

        def call(request: bytes) -> bytes:
            send(request)
            return recv()

        return ClientEnd(call=call, close=connection.close)

    def destroy(self, link: object) -> None:
        assert isinstance(link, tuple)
        for connection in link:
            connection.close()


def make() -> RpcPeer:
    return MultiprocessingPipeRpc()
