"""multiprocessing managers: a method of a ``BaseManager``-registered object, called through its proxy.

The server process runs a manager server (``EchoManager(address,
authkey).get_server().serve_forever()``, listening on a Unix socket) with one
registered type, ``Echo``, whose method ``echo(data)`` returns its argument.
The client process connects (``manager.connect()``), creates one ``Echo``
through the manager, and calls ``proxy.echo(payload)``: each call pickles the
method name and the bytes, sends them over the manager connection, the
server's thread for that connection unpickles them, calls the method and
sends the pickled result back.  This is what ``multiprocessing`` offers for
calling a function in another process and getting its result.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable
from contextlib import suppress
from multiprocessing.managers import BaseManager
from typing import Any, ClassVar

from .rpc import ClientEnd, RpcPeer


class Echo:
    """The served object: one method, answering with what it was given."""

    def echo(self, data: bytes) -> bytes:
        return data


class EchoManager(BaseManager):
    pass


EchoManager.register("Echo", callable=Echo)


class MultiprocessingManagerRpc(RpcPeer):
    label: ClassVar[str] = "multiprocessing manager"
    how: ClassVar[str] = (
        "BaseManager subclass with Echo registered, its server on a Unix socket; "
        "client: proxy = manager.Echo(); proxy.echo(payload) (pickled both ways)"
    )

    def create(self, max_message: int) -> object:
        path = os.path.join(tempfile.gettempdir(), f"memipc-bench-{uuid.uuid4().hex[:12]}.mgr")
        return (path, os.urandom(16))

    def serve(self, link: object, ready: Callable[[], None]) -> None:
        assert isinstance(link, tuple)
        path, authkey = link
        server: Any = EchoManager(address=path, authkey=authkey).get_server()
        ready()
        # serve_forever() returns by raising SystemExit, also after a KeyboardInterrupt it caught.
        with suppress(KeyboardInterrupt, SystemExit):
            server.serve_forever()

    def client(self, link: object) -> ClientEnd:
        assert isinstance(link, tuple)
        path, authkey = link
        manager = EchoManager(address=path, authkey=authkey)
        manager.connect()
        proxy: Any = manager.Echo()  # type: ignore[attr-defined]  # registered at run time
        call: Callable[[bytes], bytes] = proxy.echo

        def close() -> None:
            """Nothing to do: the proxy tells the server to drop the Echo object when it is collected."""

        return ClientEnd(call=call, close=close)

    def destroy(self, link: object) -> None:
        assert isinstance(link, tuple)
        with suppress(FileNotFoundError):
            os.unlink(link[0])


def make() -> RpcPeer:
    return MultiprocessingManagerRpc()
