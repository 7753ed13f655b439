"""iceoryx2's Python bindings: zero-copy publish-subscribe in shared memory, plus events for waking.

Each channel is an iceoryx2 publish-subscribe service of ``Slice[c_uint8]``
(one publisher, one subscriber; ``enable_safe_overflow(False)`` and
``BackpressureStrategy.RetryUntilDelivered``, so that nothing is dropped when
the subscriber falls behind), with ``initial_max_slice_len`` = the phase's
size and ``AllocationStrategy.PowerOfTwo`` (so 16 MiB fits on any link), and
a subscriber buffer of min(64, 64 MiB / size) samples, at least 2.

Sending loans a slice, copies the bytes in (``ctypes.memmove``), and sends;
receiving copies the sample out as bytes (``ctypes.string_at``) and releases
it: one copy each way, as for every other peer.  Pub-sub itself never
blocks, so the blocking mode is iceoryx2's event-based pattern: an event
service beside each channel, ``notify()`` after every send, and the receiver
calls ``Listener.blocking_wait()`` whenever its subscriber is empty.
Busy-poll is plain ``subscriber.receive()`` polling, with no events.
"""

from __future__ import annotations

import ctypes
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

import iceoryx2 as iox2

from . import BUFFER_BYTES, Endpoint, Peer, Side

MAX_BUFFER = 64


class Iceoryx2(Peer):
    label: ClassVar[str] = "iceoryx2 pub/sub"
    how: ClassVar[str] = (
        "two iceoryx2 pub/sub services of Slice[c_uint8] (no overflow, retry until delivered); "
        "blocking: an event service, notify() per send, Listener.blocking_wait(); busy-poll: receive()"
    )

    def create(self, size: int, max_message: int) -> object:
        buffer = max(2, min(MAX_BUFFER, BUFFER_BYTES // size))
        return (f"memipc-bench/{uuid.uuid4().hex[:12]}", size, buffer)

    def open(self, link: object, side: Side) -> Endpoint:
        assert isinstance(link, tuple)
        tag, size, buffer = link
        iox2.set_log_level(iox2.LogLevel.Error)
        node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)

        def pubsub(direction: str) -> Any:
            return (
                node.service_builder(iox2.ServiceName.new(f"{tag}/{direction}"))
                .publish_subscribe(iox2.Slice[ctypes.c_uint8])
                .enable_safe_overflow(False)
                .subscriber_max_buffer_size(buffer)
                .open_or_create()
            )

        def event(direction: str) -> Any:
            return (
                node.service_builder(iox2.ServiceName.new(f"{tag}/{direction}/event"))
                .event()
                .open_or_create()
            )

        out_name, in_name = ("a2b", "b2a") if side == "a" else ("b2a", "a2b")
        publisher = (
            pubsub(out_name)
            .publisher_builder()
            .initial_max_slice_len(size)
            .allocation_strategy(iox2.AllocationStrategy.PowerOfTwo)
            .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
            .create()
        )
        subscriber = pubsub(in_name).subscriber_builder().buffer_size(buffer).create()
        notifier = event(out_name).notifier_builder().create()
        listener = event(in_name).listener_builder().create()
        loan: Callable[[int], Any] = publisher.loan_slice_uninit
        take: Callable[[], Any] = subscriber.receive
        notify: Callable[[], object] = notifier.notify
        wait: Callable[[], object] = listener.blocking_wait
        memmove, string_at = ctypes.memmove, ctypes.string_at

        def publish(data: bytes) -> None:
            sample = loan(len(data))
            memmove(sample.payload_ptr, data, len(data))
            sample.assume_init().send()

        def send(data: bytes) -> None:
            publish(data)
            notify()

        def send_nowait(data: bytes) -> bool:
            publish(data)
            return True

        def recv_nowait() -> bytes | None:
            sample = take()
            if sample is None:
                return None
            message: bytes = string_at(sample.payload_ptr, sample.header.number_of_elements)
            return message  # the sample is released when the last reference goes, here

        def recv() -> bytes:
            while True:
                message = recv_nowait()
                if message is not None:
                    return message
                wait()

        def close() -> None:
            for port in (publisher, subscriber, notifier, listener):
                port.delete()

        return Endpoint(send=send, recv=recv, send_nowait=send_nowait, recv_nowait=recv_nowait, close=close)


def make() -> Peer:
    return Iceoryx2()
