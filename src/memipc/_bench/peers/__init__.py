"""The libraries the queue benchmark (:mod:`memipc._bench.queue`) measures, each behind one small adapter.

Every module in this package adapts one way of moving byte messages between
two processes: memipc.Queue and its peers.  The benchmark only ever talks to
the interface below, so every peer is driven by exactly the same loops.

A *link* is two one-way channels between process A (the side that times) and
process B (the side that echoes or consumes): ``a2b`` and ``b2a``.  Its life:

    peer = load("pyzmq_ipc")                # raises Unavailable (with the pip command)
    link = peer.create(size, max_message)   # parent, before spawning: picklable handles
    end = peer.open(link, "b")              # in each spawned child: that side's Endpoint
    end.send(b"..."); end.recv()            # the loops in memipc._bench.queue
    end.close()                             # child
    peer.destroy(link)                      # parent, after the children are gone

``size`` is the message size the link will carry in this phase of the run;
``max_message`` the largest any phase uses (16 MiB).  Peers whose capacity is
counted in bytes (memipc, faster-fifo) size every link for ``max_message``;
peers whose capacity is counted in messages (pyzmq's high-water mark,
posix_ipc's ``max_messages``) size it for ``size``, so that a 16 MiB stream
cannot buffer gigabytes.  ``create`` raises :class:`Unsupported` when the
peer cannot carry ``size`` on this machine; the benchmark reports why.

An :class:`Endpoint` is a record of plain callables, bound directly to the
library's own methods wherever the library already has the right shape, so
that the benchmark measures the library and not an adapter's extra Python
frame.

The pub/sub and request/response benchmarks measure other shapes of
communication and have interfaces of their own, in :mod:`.pubsub` (adapters
``pubsub_*.py``) and :mod:`.rpc` (adapters ``rpc_*.py``); they share
:class:`Unavailable` and :data:`SPAWN` with this one.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from multiprocessing.context import SpawnContext
from typing import ClassVar, Literal

Side = Literal["a", "b"]

#: Every peer: its module in this package (memipc first; the order rows are printed in) and
#: how to install what it needs.
INSTALL: dict[str, str] = {
    "memipc_queue": "pip install -e .",
    "multiprocessing_queue": "(standard library)",
    "multiprocessing_pipe": "(standard library)",
    "faster_fifo": "pip install faster-fifo",
    "pyzmq_ipc": "pip install pyzmq",
    "posix_ipc_mq": "pip install posix_ipc",
    "iceoryx2": "pip install iceoryx2",
}
NAMES: tuple[str, ...] = tuple(INSTALL)

#: Every process of the benchmark is started this way: a fresh interpreter, nothing inherited.
#: (What multiprocessing.get_context("spawn") returns, built directly.)
SPAWN: SpawnContext = SpawnContext()

#: Bytes of buffering a message-counted peer may hold per channel: roughly what memipc's ring holds.
BUFFER_BYTES = 64 << 20


class Unavailable(Exception):
    """The peer's library cannot be imported; the message says how to install it."""


class Unsupported(Exception):
    """The peer cannot carry messages of the asked size here; the message says why."""


@dataclass(eq=False)
class Endpoint:
    """One process's end of a link: it sends on one channel and receives on the other.

    ``send`` / ``recv`` are the library's default blocking calls.  The
    ``*_nowait`` pair never waits, for the busy-poll mode: ``send_nowait``
    returns False if there is no room now, ``recv_nowait`` None if nothing has
    arrived.  The last four are memipc's batch and zero-copy calls; other
    peers leave them None.
    """

    send: Callable[[bytes], object]
    recv: Callable[[], bytes]
    send_nowait: Callable[[bytes], bool]
    recv_nowait: Callable[[], bytes | None]
    close: Callable[[], None]
    send_many: Callable[[list[bytes]], int] | None = None
    recv_many: Callable[[int], list[bytes]] | None = None
    loan: Callable[[int], AbstractContextManager[memoryview]] | None = None
    recv_view: Callable[[], AbstractContextManager[memoryview]] | None = None


class Peer(abc.ABC):
    """A way of moving bytes between two processes, as the benchmark sees it."""

    #: Row label in the tables.
    label: ClassVar[str]
    #: One sentence on how it is driven, for the method notes.
    how: ClassVar[str]

    @abc.abstractmethod
    def create(self, size: int, max_message: int) -> object:
        """In the parent: make the link's two channels; return what the children need (picklable)."""

    @abc.abstractmethod
    def open(self, link: object, side: Side) -> Endpoint:
        """In a child: this side's end of the link (B opens first, then A)."""

    def destroy(self, link: object) -> None:  # noqa: B027 - most peers have nothing to remove
        """In the parent, after both children exited: remove names, files, handles."""


def load(name: str) -> Peer:
    """The adapter for peer ``name`` (a module of this package); Unavailable if its library is missing."""
    if name not in NAMES:
        raise ValueError(f"unknown peer {name!r}; choose from {', '.join(NAMES)}")
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ImportError as error:
        raise Unavailable(f"not importable ({error}); {INSTALL[name]}") from error
    factory: Callable[[], Peer] = module.make
    return factory()


def blocking_only_send(send: Callable[[bytes], object]) -> Callable[[bytes], bool]:
    """A send_nowait for peers without a non-blocking send: send, and report success.

    Used only where the busy-poll loops cannot find the channel full (one
    message in flight), so it never actually waits.
    """

    def send_nowait(data: bytes) -> bool:
        send(data)
        return True

    return send_nowait
