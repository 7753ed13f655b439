"""The memipc error tree (SPEC §7).

Every error memipc raises on purpose derives from :class:`Error`, and also from
the standard exception a user would already catch for the same situation, so
``except FileNotFoundError`` keeps working around ``Region.open``::

    Exception
    └── Error
        ├── ExistsError            (also FileExistsError)  the name is taken
        ├── NotFoundError          (also FileNotFoundError) no object has that name
        ├── KindMismatchError      (also TypeError)   the name holds another kind of object
        ├── CorruptRegionError     (also ValueError)  shared state failed validation
        ├── MessageTooLargeError   (also ValueError)  a message can never fit the channel
        ├── Empty                  (also queue.Empty) nothing to receive before the timeout
        │   └── CallTimeoutError   (also TimeoutError) Client.call got no reply in time
        ├── Full                   (also queue.Full)  no room to send before the timeout
        ├── ServerDiedError        (also ConnectionError) the server of a call died or is gone
        ├── RemoteError                               the server's handler failed the call
        └── ClosedError                               *you* closed this handle

Operating-system failures (permissions, no space) are not wrapped: they pass
through as :class:`OSError` subclasses with the object's name in the message.
A peer that died is never reported as ``ClosedError``: that error means the
caller closed the handle itself (the distinction trio draws between
``ClosedResourceError`` and ``BrokenResourceError``).

Messages say what was asked, what was found, and what to do next.
"""

from __future__ import annotations

import queue

__all__ = [
    "CallTimeoutError",
    "ClosedError",
    "CorruptRegionError",
    "Empty",
    "Error",
    "ExistsError",
    "Full",
    "KindMismatchError",
    "MessageTooLargeError",
    "NotFoundError",
    "RemoteError",
    "ServerDiedError",
]


class Error(Exception):
    """Base class of every error memipc raises on purpose."""


class ExistsError(Error, FileExistsError):
    """``create`` was asked for a name that another object already holds."""


class NotFoundError(Error, FileNotFoundError):
    """``open`` was asked for a name that no object holds."""


class KindMismatchError(Error, TypeError):
    """The name holds a different kind of memipc object than the one asked for."""


class CorruptRegionError(Error, ValueError):
    """Shared state failed validation: a header, a length or an index is impossible.

    Shared memory can be written by any process that maps it, including a
    buggy or hostile one, so memipc checks what it reads and raises this
    instead of crashing or touching memory outside the mapping.
    """


class MessageTooLargeError(Error, ValueError):
    """A message is larger than the channel could ever hold."""


class Empty(Error, queue.Empty):
    """Nothing arrived before the timeout (or at once, for ``*_nowait``)."""


class Full(Error, queue.Full):
    """No room became free before the timeout (or at once, for ``*_nowait``)."""


class ClosedError(Error):
    """The handle was closed by its owner and can no longer be used."""


class CallTimeoutError(Empty, TimeoutError):
    """``Client.call`` got no reply before its timeout.

    An :class:`Empty` (the reply never arrived) and a :class:`TimeoutError`,
    so ``except TimeoutError`` works too.  The message says where the call
    was: still waiting for a server to take it, or taken by server pid N.
    """


class ServerDiedError(Error, ConnectionError):
    """The server that took a call died before answering it, or no server is left to take it.

    A peer that broke, not a handle the caller closed (that is :class:`ClosedError`).
    Whether the handler ran, fully or in part, is unknown; retry only what is
    safe to do twice.
    """


class RemoteError(Error):
    """The server could not answer a call: its handler raised, or it dropped the request unanswered.

    The message carries the server's exception and traceback as text.
    """


for _error in (
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
):
    _error.__module__ = "memipc"
del _error
