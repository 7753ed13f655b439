"""The request/response libraries :mod:`memipc._bench.rpc` measures, behind one adapter interface.

A *service* has one server process and one client process.  The server
answers every request with the same bytes (an echo), so a 64 B call is 64 B
each way and a 1 MiB call 1 MiB each way.  Its life, driven by the benchmark:

    peer = load("rpc_pyzmq")          # raises Unavailable (with the pip command)
    link = peer.create(max_message)   # parent, before spawning: picklable
    peer.serve(link, ready)           # server process: set up, call ready(), answer until KeyboardInterrupt
    end = peer.client(link)           # client process, after ready()
    reply = end.call(request)         # the loops in memipc._bench.rpc
    end.close()                       # client
    peer.destroy(link)                # parent, after both processes are gone

The benchmark stops a server by sending its process SIGINT: every library
here turns that into KeyboardInterrupt in the thread that waits for requests
(memipc's ``Server.serve`` documents it), and ``serve`` then closes what it
opened and returns.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from . import Unavailable

#: Every peer, in the order rows are printed (memipc first): how to install what it needs.
INSTALL: dict[str, str] = {
    "memipc": "pip install -e .",
    "pyzmq": "pip install pyzmq",
    "mp_pipe": "(standard library)",
    "mp_manager": "(standard library)",
}
NAMES: tuple[str, ...] = tuple(INSTALL)


@dataclass(eq=False)
class ClientEnd:
    """The client's side: ``call`` sends one request and returns the server's response."""

    call: Callable[[bytes], bytes]
    close: Callable[[], None]


class RpcPeer(abc.ABC):
    """A way of calling another process and getting an answer, as the benchmark sees it."""

    #: Row label in the tables.
    label: ClassVar[str]
    #: How it is configured and driven, for the method notes and --json.
    how: ClassVar[str]

    @abc.abstractmethod
    def create(self, max_message: int) -> object:
        """In the parent: name a new service for requests up to `max_message` bytes (picklable)."""

    @abc.abstractmethod
    def serve(self, link: object, ready: Callable[[], None]) -> None:
        """In the server process: open the service, call `ready()`, echo every request until interrupted."""

    @abc.abstractmethod
    def client(self, link: object) -> ClientEnd:
        """In the client process, once the server is ready: connect."""

    def destroy(self, link: object) -> None:  # noqa: B027 - most peers have nothing to remove
        """In the parent, after both processes exited: remove names, files, handles."""


def load(name: str) -> RpcPeer:
    """The adapter for peer `name` (module rpc_<name>); Unavailable if its library is missing or not built."""
    if name not in NAMES:
        raise ValueError(f"unknown peer {name!r}; choose from {', '.join(NAMES)}")
    try:
        module = importlib.import_module(f"{__package__}.rpc_{name}")
    except ImportError as error:
        raise Unavailable(f"not importable ({error}); {INSTALL[name]}") from error
    factory: Callable[[], RpcPeer] = module.make
    return factory()
