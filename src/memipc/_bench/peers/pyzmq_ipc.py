"""pyzmq: one PAIR socket pair over ``ipc://`` (a Unix domain socket), bytes each way.

B binds, A connects; a PAIR socket carries both directions.  ``send`` /
``recv`` are pyzmq's defaults (``copy=True``: the bytes are copied into and
out of zmq messages; libzmq's I/O thread moves them).  Blocking calls wait on
the socket's notification fd; busy-poll passes ``zmq.NOBLOCK`` and catches
``zmq.Again``.  The high-water mark is libzmq's default of 1000 messages,
lowered for large messages so that a channel buffers at most about 64 MiB
(16 MiB messages: 4), as memipc's ring holds.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from contextlib import suppress
from typing import ClassVar

import zmq

from . import BUFFER_BYTES, Endpoint, Peer, Side

DEFAULT_HWM = 1000


class PyzmqIpc(Peer):
    label: ClassVar[str] = "pyzmq PAIR ipc://"
    how: ClassVar[str] = (
        "one zmq.PAIR pair over ipc:// (B binds, A connects), send/recv copy=True; "
        "HWM min(1000, 64 MiB / size), at least 2"
    )

    def create(self, size: int, max_message: int) -> object:
        path = os.path.join(tempfile.gettempdir(), f"memipc-bench-{uuid.uuid4().hex[:12]}.zmq")
        hwm = max(2, min(DEFAULT_HWM, BUFFER_BYTES // size))
        return (path, hwm)

    def open(self, link: object, side: Side) -> Endpoint:
        assert isinstance(link, tuple)
        path, hwm = link
        context = zmq.Context()
        sock = context.socket(zmq.PAIR)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
        if side == "b":
            sock.bind(f"ipc://{path}")
        else:
            sock.connect(f"ipc://{path}")
        send, recv, again, noblock = sock.send, sock.recv, zmq.Again, zmq.NOBLOCK

        def send_nowait(data: bytes) -> bool:
            try:
                send(data, noblock)
            except again:
                return False
            return True

        def recv_nowait() -> bytes | None:
            try:
                message: bytes = recv(noblock)
            except again:
                return None
            return message

        def close() -> None:
            sock.close()  # default linger: what A sent last is still delivered
            context.term()

        return Endpoint(send=send, recv=recv, send_nowait=send_nowait, recv_nowait=recv_nowait, close=close)

    def destroy(self, link: object) -> None:
        assert isinstance(link, tuple)
        with suppress(FileNotFoundError):
            os.unlink(link[0])


def make() -> Peer:
    return PyzmqIpc()
