"""memipc.Server / memipc.Client: the subject of the request/response benchmark.

The server process creates ``memipc.Server(name, capacity=4 * max_message,
max_message=max_message)`` and runs ``srv.serve(echo)``, where ``echo`` returns
``bytes(request)``: a copy of the request it is handed, as every other
server in this benchmark answers with its own copy of what it received (the
handler could return the request view itself and save that copy, but a
view must not outlive the request's slot, so the copy is the usage that is
safe for any handler).  ``serve`` runs until KeyboardInterrupt.
The client process opens ``memipc.Client(name)`` and calls
``cli.call(payload)``, which returns the response as ``bytes``.  Both wait in
memipc's default way (adaptive spin, then futex).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import suppress
from typing import ClassVar

import memipc

from . import Unavailable
from .rpc import ClientEnd, RpcPeer

if not hasattr(memipc, "Server"):
    raise Unavailable(
        f"memipc.Server / Client not built yet in this memipc ({memipc.__file__}); "
        "pip install -e . from a tree that has them"
    )


def echo(request: memoryview) -> bytes:
    return bytes(request)


class MemipcRpc(RpcPeer):
    label: ClassVar[str] = "memipc Server/Client"
    how: ClassVar[str] = (
        "memipc.Server(capacity=4*max_message, max_message), srv.serve(handler returning bytes(request)); "
        "memipc.Client(name).call(payload) -> bytes"
    )

    def create(self, max_message: int) -> object:
        return (f"bench-rpc-{uuid.uuid4().hex[:12]}", max_message)

    def serve(self, link: object, ready: Callable[[], None]) -> None:
        assert isinstance(link, tuple)
        name, max_message = link
        server = memipc.Server(name, capacity=4 * max_message, max_message=max_message)
        try:
            ready()
            with suppress(KeyboardInterrupt):
                server.serve(echo)
        finally:
            server.unlink()
            server.close()

    def client(self, link: object) -> ClientEnd:
        assert isinstance(link, tuple)
        client = memipc.Client(link[0])
        return ClientEnd(call=client.call, close=client.close)


def make() -> RpcPeer:
    return MemipcRpc()
