"""posix_ipc.MessageQueue: the kernel's POSIX message queues (mq_send / mq_receive).

Each channel is a ``MessageQueue`` with ``max_message_size`` = the phase's
message size and the system's default depth (``/proc/sys/fs/mqueue/msg_max``,
10 here): a POSIX queue's receive buffer must hold its largest message, and
``RLIMIT_MSGQUEUE`` (800 KiB by default) bounds the bytes all of a user's
queues may hold, so one queue per size is how it is used.  Sizes the kernel
refuses (above ``msgsize_max``, 8 KiB, without CAP_SYS_RESOURCE) are skipped
with the reason.  ``receive`` returns (message, priority); busy-poll passes
``timeout=0`` and catches ``BusyError``.
"""

from __future__ import annotations

import resource
import uuid
from contextlib import suppress
from pathlib import Path
from typing import ClassVar

import posix_ipc

from . import Endpoint, Peer, Side, Unsupported


def _limits() -> str:
    try:
        msgsize_max = Path("/proc/sys/fs/mqueue/msgsize_max").read_text().strip()
    except OSError:
        msgsize_max = "?"
    soft, _ = resource.getrlimit(resource.RLIMIT_MSGQUEUE)
    return f"msgsize_max {msgsize_max} B, RLIMIT_MSGQUEUE {soft} B; raising them needs CAP_SYS_RESOURCE"


class PosixIpcQueue(Peer):
    label: ClassVar[str] = "posix_ipc.MessageQueue"
    how: ClassVar[str] = (
        "two posix_ipc.MessageQueue(max_message_size=size, default depth): send/receive; busy-poll: timeout=0"
    )

    def create(self, size: int, max_message: int) -> object:
        names = [f"/memipc-bench-{uuid.uuid4().hex[:12]}-{d}" for d in ("a2b", "b2a")]
        made: list[posix_ipc.MessageQueue] = []
        try:
            for name in names:
                made.append(posix_ipc.MessageQueue(name, posix_ipc.O_CREX, max_message_size=size))
        except (ValueError, OSError, posix_ipc.Error) as error:
            for queue in made:
                queue.unlink()
                queue.close()
            raise Unsupported(f"the kernel refused a {size} B message queue ({error}): {_limits()}") from None
        for queue in made:
            queue.close()
        return tuple(names)

    def open(self, link: object, side: Side) -> Endpoint:
        assert isinstance(link, tuple)
        a2b, b2a = (posix_ipc.MessageQueue(name) for name in link)
        outgoing, incoming = (a2b, b2a) if side == "a" else (b2a, a2b)
        send, receive, busy = outgoing.send, incoming.receive, posix_ipc.BusyError

        def recv() -> bytes:
            message: bytes = receive()[0]
            return message

        def send_nowait(data: bytes) -> bool:
            try:
                send(data, 0)
            except busy:
                return False
            return True

        def recv_nowait() -> bytes | None:
            try:
                message: bytes = receive(0)[0]
            except busy:
                return None
            return message

        def close() -> None:
            a2b.close()
            b2a.close()

        return Endpoint(send=send, recv=recv, send_nowait=send_nowait, recv_nowait=recv_nowait, close=close)

    def destroy(self, link: object) -> None:
        assert isinstance(link, tuple)
        for name in link:
            with suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_message_queue(name)


def make() -> Peer:
    return PosixIpcQueue()
