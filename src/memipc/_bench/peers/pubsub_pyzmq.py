"""pyzmq PUB/SUB over ``ipc://`` (a Unix domain socket per subscriber), configured not to drop.

The publisher binds a ``zmq.XPUB`` socket, ZeroMQ's PUB socket that also
hands the publisher its subscribers' subscriptions, with ``XPUB_NODROP=1``:
a plain PUB drops a message for any subscriber whose queue is at the
high-water mark, while with NODROP a blocking ``send`` waits until every
subscriber has room, so nothing is lost.  ``XPUB_VERBOSE=1`` passes every
subscriber's subscription up, not only the first, and ``attached()`` counts
them: the publisher starts only after every subscriber's subscription has
reached it (otherwise ZeroMQ's "slow joiner" would miss the first messages).
Each subscriber connects a ``zmq.SUB`` socket and subscribes to everything.

``SNDHWM`` and ``RCVHWM`` are both ``depth`` messages (per subscriber, on
each side; the kernel's socket buffers hold some more).  ``send`` / ``recv``
are pyzmq's defaults (``copy=True``): the publisher's bytes are copied into a
zmq message, libzmq's I/O threads write it to every subscriber's socket, and
``recv`` copies it out as ``bytes``, whose first and last byte are then read.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from contextlib import suppress
from typing import ClassVar

import zmq

from .pubsub import PublisherEnd, PubSubPeer, SubscriberEnd

#: How long closing the publisher may wait for unsent messages (all were received when it closes).
LINGER_MS = 2000


class PyzmqPubSub(PubSubPeer):
    label: ClassVar[str] = "pyzmq PUB/SUB ipc://"
    how: ClassVar[str] = (
        "zmq.XPUB bound on ipc:// with XPUB_NODROP=1 (blocking send waits instead of dropping) and "
        "XPUB_VERBOSE=1; zmq.SUB connect + subscribe(''); SNDHWM = RCVHWM = depth; copy=True"
    )
    lossless: ClassVar[bool] = True

    def create(self, size: int, subscribers: int, depth: int) -> object:
        path = os.path.join(tempfile.gettempdir(), f"memipc-bench-{uuid.uuid4().hex[:12]}.zmq")
        return (path, depth)

    def publisher(self, link: object) -> PublisherEnd:
        assert isinstance(link, tuple)
        path, depth = link
        context = zmq.Context()
        sock = context.socket(zmq.XPUB)
        sock.setsockopt(zmq.SNDHWM, depth)
        sock.setsockopt(zmq.XPUB_NODROP, 1)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        sock.bind(f"ipc://{path}")
        subscriptions = 0

        def attached() -> int:
            nonlocal subscriptions
            while sock.poll(0, zmq.POLLIN):
                if sock.recv()[:1] == b"\x01":
                    subscriptions += 1
            return subscriptions

        def close() -> None:
            sock.close(linger=LINGER_MS)  # what was sent last is still delivered, unless a subscriber died
            context.term()

        return PublisherEnd(send=sock.send, attached=attached, close=close)

    def subscriber(self, link: object, idle_s: float) -> SubscriberEnd:
        assert isinstance(link, tuple)
        path, depth = link
        context = zmq.Context()
        sock = context.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, depth)
        sock.setsockopt(zmq.RCVTIMEO, max(1, round(idle_s * 1000)))
        sock.connect(f"ipc://{path}")
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        recv, again = sock.recv, zmq.Again

        def take() -> int:
            try:
                message = recv()
            except again:
                return 0
            length = len(message)
            _first, _last = message[0], message[length - 1]
            return length

        def close() -> None:
            sock.close(linger=0)
            context.term()

        return SubscriberEnd(take=take, missed=lambda: 0, close=close)

    def destroy(self, link: object) -> None:
        assert isinstance(link, tuple)
        with suppress(FileNotFoundError):
            os.unlink(link[0])


def make(name: str) -> PubSubPeer:
    return PyzmqPubSub()
