"""ChannelStats: the counters every channel reports through ``stats()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import final


@final
@dataclass(frozen=True, slots=True)
class ChannelStats:
    """Counters of a channel (relaxed atomics: exact when quiet, possibly stale while busy)."""

    #: messages committed by senders
    sent: int
    #: messages taken by receivers (claimed; a recv_view in progress counts)
    received: int
    #: payload bytes sent
    bytes: int
    #: payload bytes received
    bytes_received: int
    #: messages waiting to be received
    depth: int
    #: send/receive calls that had to sleep
    waits: int
    #: records lost to dead peers (a sender killed mid-message, a receiver killed holding one)
    drops: int


ChannelStats.__module__ = "memipc"
