"""memipc.Publisher / memipc.Subscriber: the subject of the fan-out benchmark.

The publisher process creates ``memipc.Publisher(name, capacity=depth * size,
overflow="block", max_message=size)``: one ring that every subscriber reads
(memipc rounds the capacity up to a power of two); with ``overflow="block"``
``send`` waits while the slowest subscriber has no room, so nothing is
dropped.  Each subscriber process opens ``memipc.Subscriber(name,
start="latest")`` once the publisher exists, before anything is sent, so it
receives every message.  The publisher copies each message in with
``pub.send(payload)``.  Two ways to receive, two rows:

- ``memipc_view``: ``with sub.recv_view(timeout) as view:`` read the first and
  last byte in place (zero-copy; the slot is released on exit);
- ``memipc_copy``: ``sub.recv(timeout)`` copies the message out as ``bytes``,
  then the first and last byte are read.

Both block in memipc's default wait (adaptive spin, then futex).  The
subscriber's ``missed`` counter is reported; with ``overflow="block"`` it
must stay 0.
"""

from __future__ import annotations

import uuid
from typing import ClassVar

import memipc

from . import Unavailable
from .pubsub import PublisherEnd, PubSubPeer, SubscriberEnd

if not hasattr(memipc, "Publisher"):
    raise Unavailable(
        f"memipc.Publisher / Subscriber not built yet in this memipc ({memipc.__file__}); "
        "pip install -e . from a tree that has them"
    )


class MemipcPubSub(PubSubPeer):
    label: ClassVar[str] = "memipc recv_view"
    how: ClassVar[str] = (
        "memipc.Publisher(capacity=depth*size, overflow='block', max_message=size), pub.send(); "
        "Subscriber(start='latest'), with sub.recv_view(timeout) as view: view[0], view[-1]"
    )
    lossless: ClassVar[bool] = True

    def create(self, size: int, subscribers: int, depth: int) -> object:
        return (f"bench-pubsub-{uuid.uuid4().hex[:12]}", depth * size, size)

    def publisher(self, link: object) -> PublisherEnd:
        assert isinstance(link, tuple)
        name, capacity, size = link
        pub = memipc.Publisher(name, capacity=capacity, overflow="block", max_message=size)

        def close() -> None:
            pub.unlink()
            pub.close()

        return PublisherEnd(send=pub.send, attached=lambda: -1, close=close)

    def subscriber(self, link: object, idle_s: float) -> SubscriberEnd:
        assert isinstance(link, tuple)
        sub = memipc.Subscriber(link[0], start="latest")
        recv_view, empty = sub.recv_view, memipc.Empty

        def take() -> int:
            try:
                with recv_view(timeout=idle_s) as view:
                    length = len(view)
                    _first, _last = view[0], view[length - 1]
            except (empty, TimeoutError):
                return 0
            return length

        return SubscriberEnd(take=take, missed=lambda: int(sub.missed), close=sub.close)


class MemipcPubSubCopy(MemipcPubSub):
    label: ClassVar[str] = "memipc recv (copy)"
    how: ClassVar[str] = (
        "as memipc recv_view, but the subscriber copies each message out: "
        "message = sub.recv(timeout); message[0], message[-1]"
    )

    def subscriber(self, link: object, idle_s: float) -> SubscriberEnd:
        assert isinstance(link, tuple)
        sub = memipc.Subscriber(link[0], start="latest")
        recv, empty = sub.recv, memipc.Empty

        def take() -> int:
            try:
                message = recv(timeout=idle_s)
            except (empty, TimeoutError):
                return 0
            length = len(message)
            _first, _last = message[0], message[length - 1]
            return length

        return SubscriberEnd(take=take, missed=lambda: int(sub.missed), close=sub.close)


def make(name: str) -> PubSubPeer:
    return MemipcPubSubCopy() if name == "memipc_copy" else MemipcPubSub()
