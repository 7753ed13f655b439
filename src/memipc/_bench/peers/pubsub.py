"""The publish-subscribe libraries :mod:`memipc._bench.pubsub` measures, behind one adapter interface.

One *channel* has one publisher process and ``subscribers`` subscriber
processes.  Its life, driven by the benchmark:

    peer = load("pubsub_pyzmq")              # raises Unavailable (with the pip command)
    link = peer.create(size, subscribers, depth)   # parent: picklable, creates nothing shared yet
    pub = peer.publisher(link)               # publisher process, first
    sub = peer.subscriber(link, idle_s)      # each subscriber process, after the publisher
    pub.attached()                           # publisher: how many subscribers it sees (the barrier checks)
    pub.send(payload) ... ; sub.take() ...   # the loops in memipc._bench.pubsub
    sub.close(); pub.close()                 # children
    peer.destroy(link); peer.finish()        # parent: after the channel, after the whole run

``depth`` is how many messages of ``size`` a subscriber may have waiting
before the publisher must wait for it: every peer is configured so that its
buffering comes to about that many messages (memipc: a ring of about ``depth
* size`` bytes, shared by all subscribers; iceoryx2: a subscriber buffer of
``depth`` samples; pyzmq: high-water marks of ``depth`` messages).

Every configuration measured here is meant to be lossless: when a subscriber
falls behind, the publisher waits.  ``lossless`` records whether the peer's
configuration promises that; the benchmark counts what every subscriber
received against what the publisher sent either way, and reports a loss.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from . import Unavailable

#: Every peer, in the order rows are printed (memipc first): its module in this package, and
#: how to install what it needs.
INSTALL: dict[str, str] = {
    "memipc_view": "pip install -e .",
    "memipc_copy": "pip install -e .",
    "iceoryx2": "pip install 'iceoryx2==0.10.*'",
    "iceoryx2_polling": "pip install 'iceoryx2==0.10.*'",
    "pyzmq": "pip install pyzmq",
}
NAMES: tuple[str, ...] = tuple(INSTALL)
MODULES: dict[str, str] = {
    "memipc_view": "pubsub_memipc",
    "memipc_copy": "pubsub_memipc",
    "iceoryx2": "pubsub_iceoryx2",
    "iceoryx2_polling": "pubsub_iceoryx2",
    "pyzmq": "pubsub_pyzmq",
}


@dataclass(eq=False)
class PublisherEnd:
    """The publisher's side of a channel.

    ``send`` copies one message into the channel, waiting while any
    subscriber has no room for it.  ``attached`` says how many subscribers the
    channel delivers to right now, or -1 if the library cannot tell (then a
    subscriber's own open call is the proof that it is attached).
    """

    send: Callable[[bytes], object]
    attached: Callable[[], int]
    close: Callable[[], None]


@dataclass(eq=False)
class SubscriberEnd:
    """One subscriber's side of a channel.

    ``take`` waits for the next message (at most the idle timeout given to
    ``subscriber()``), reads its first and last byte, releases it, and returns
    its length; 0 if nothing arrived in time.  ``missed`` is the number of
    messages the library knows this subscriber lost (0 where it cannot tell).
    """

    take: Callable[[], int]
    missed: Callable[[], int]
    close: Callable[[], None]


class PubSubPeer(abc.ABC):
    """A way of publishing byte messages to several processes, as the benchmark sees it."""

    #: Row label in the tables.
    label: ClassVar[str]
    #: How it is configured and driven, for the method notes and --json.
    how: ClassVar[str]
    #: Whether this configuration promises that no message is dropped (the publisher waits instead).
    lossless: ClassVar[bool]

    @abc.abstractmethod
    def create(self, size: int, subscribers: int, depth: int) -> object:
        """In the parent: name a new channel; return what the children need (picklable)."""

    @abc.abstractmethod
    def publisher(self, link: object) -> PublisherEnd:
        """In the publisher process, before any subscriber opens: create the channel, ready to send."""

    @abc.abstractmethod
    def subscriber(self, link: object, idle_s: float) -> SubscriberEnd:
        """In a subscriber process: attach; from now on every message sent reaches this subscriber."""

    def destroy(self, link: object) -> None:  # noqa: B027 - most peers have nothing to remove
        """In the parent, after every process closed its end: remove what the channel left behind."""

    def finish(self) -> None:  # noqa: B027
        """In the parent, at the end of the run: remove anything the peer left for the whole run."""


def load(name: str) -> PubSubPeer:
    """The adapter for peer ``name``; Unavailable if its library is missing or not built yet."""
    if name not in NAMES:
        raise ValueError(f"unknown peer {name!r}; choose from {', '.join(NAMES)}")
    try:
        module = importlib.import_module(f"{__package__}.{MODULES[name]}")
    except ImportError as error:
        raise Unavailable(f"not importable ({error}); {INSTALL[name]}") from error
    factory: Callable[[str], PubSubPeer] = module.make
    return factory(name)
