"""memipc: shared-memory inter-process communication for Python.

Processes on one machine create named regions, open them by name, map views
at any offset, and (in later layers) coordinate with cross-process locks and
events and pass messages through channels.  The model is Win32's file mapping
(CreateFileMapping, OpenFileMapping, MapViewOfFile), made portable and safe.

    >>> import memipc, uuid
    >>> name = "doc-" + uuid.uuid4().hex[:8]
    >>> with memipc.Region.create(name, 1024) as region:
    ...     region.buf[:2] = b"hi"
    ...     region.info().size
    1024

Layers, each importing only those below it: ``_platform`` (the OS) and
``_core`` (C: atomics, futex, locks) → ``_region`` / ``_view`` / ``_lifetime``
→ synchronization → channels → ``cli``.
"""

from ._channels import ChannelStats, Client, Publisher, Queue, Request, Server, Subscriber, SubscriberInfo
from ._errors import (
    CallTimeoutError,
    ClosedError,
    CorruptRegionError,
    Empty,
    Error,
    ExistsError,
    Full,
    KindMismatchError,
    MessageTooLargeError,
    NotFoundError,
    RemoteError,
    ServerDiedError,
)
from ._region import Region, RegionInfo
from ._sync import Condition, Event, Mutex, RWLock, Semaphore, SyncStats, wait_any
from ._view import View, ViewStream

__version__ = "0.1.0"

__all__ = [
    "CallTimeoutError",
    "ChannelStats",
    "Client",
    "ClosedError",
    "Condition",
    "CorruptRegionError",
    "Empty",
    "Error",
    "Event",
    "ExistsError",
    "Full",
    "KindMismatchError",
    "MessageTooLargeError",
    "Mutex",
    "NotFoundError",
    "Publisher",
    "Queue",
    "RWLock",
    "Region",
    "RegionInfo",
    "RemoteError",
    "Request",
    "Semaphore",
    "Server",
    "ServerDiedError",
    "Subscriber",
    "SubscriberInfo",
    "SyncStats",
    "View",
    "ViewStream",
    "__version__",
    "wait_any",
]
