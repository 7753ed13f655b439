"""pyzmq REQ/REP over ``ipc://`` (a Unix domain socket).

The server process binds a ``zmq.REP`` socket and answers each request with
the bytes it received (``sock.send(sock.recv())``); the client process
connects a ``zmq.REQ`` socket, and one call is ``send(payload)`` then
``recv()``.  pyzmq's defaults throughout (``copy=True``: bytes are copied
into and out of zmq messages; libzmq's I/O thread in each process moves
them through the socket).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable
from contextlib import suppress
from typing import ClassVar

import zmq

from .rpc import ClientEnd, RpcPeer


class PyzmqRpc(RpcPeer):
    label: ClassVar[str] = "pyzmq REQ/REP ipc://"
    how: ClassVar[str] = "zmq.REP bound on ipc:// echoing send(recv()); zmq.REQ send() then recv(); copy=True"

    def create(self, max_message: int) -> object:
        return os.path.join(tempfile.gettempdir(), f"memipc-bench-{uuid.uuid4().hex[:12]}.zmq")

    def serve(self, link: object, ready: Callable[[], None]) -> None:
        assert isinstance(link, str)
        context = zmq.Context()
        sock = context.socket(zmq.REP)
        try:
            sock.bind(f"ipc://{link}")
            ready()
            send, recv = sock.send, sock.recv
            with suppress(KeyboardInterrupt):
                while True:
                    send(recv())
        finally:
            sock.close(linger=0)
            context.term()

    def client(self, link: object) -> ClientEnd:
        assert isinstance(link, str)
        context = zmq.Context()
        sock = context.socket(zmq.REQ)
        sock.connect(f"ipc://{link}")
        send, recv = sock.send, sock.recv

        def call(request: bytes) -> bytes:
            send(request)
            response: bytes = recv()
            return response

        def close() -> None:
            sock.close(linger=0)
            context.term()

        return ClientEnd(call=call, close=close)

    def destroy(self, link: object) -> None:
        assert isinstance(link, str)
        with suppress(FileNotFoundError):
            os.unlink(link)


def make() -> RpcPeer:
    return PyzmqRpc()
