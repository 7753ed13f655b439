"""L3: channels — message passing through named shared-memory rings.

The ring itself (reserve / commit / claim / release, crash recovery,
validation of everything read from shared memory) is C: src/c/ring.c, with its
layout in src/c/layout.h.  This package is its Python face: Queue (SPSC and
MPMC), Publisher / Subscriber (src/c/bus.c), Server / Client (request/response: one
shared request ring, one reply Queue per client), the pickle-5 and numpy codecs,
and the stats record.
"""

from ._pubsub import Publisher, Subscriber, SubscriberInfo
from ._queue import Queue
from ._rpc import Client, Request, Server
from ._stats import ChannelStats

__all__ = [
    "ChannelStats",
    "Client",
    "Publisher",
    "Queue",
    "Request",
    "Server",
    "Subscriber",
    "SubscriberInfo",
]
