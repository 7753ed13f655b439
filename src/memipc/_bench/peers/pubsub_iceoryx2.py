"""iceoryx2 0.10 publish-subscribe, waking subscribers with an event service (one row) or polling (another).

Each channel is one iceoryx2 publish-subscribe service of ``Slice[c_uint8]``
created by the publisher process with ``max_publishers(1)``,
``max_subscribers(n)``, ``history_size(0)``, ``subscriber_max_buffer_size(depth)``
and ``enable_safe_overflow(False)``; the publisher port has
``initial_max_slice_len(size)`` and ``BackpressureStrategy.RetryUntilDelivered``.
Without safe overflow a full subscriber buffer is not overwritten: ``send()``
retries until every subscriber has room, so nothing is dropped and the
publisher goes at the pace of the slowest subscriber, as memipc's
``overflow="block"`` does.  Each subscriber port has ``buffer_size(depth)``.

Publish-subscribe itself never wakes anyone.  In the ``iceoryx2`` row there is
an event service beside each channel (``max_listeners(n)``, one notifier):
the publisher calls ``notify()`` after every ``send()`` (iceoryx2's documented
pattern for waking a subscriber), and a subscriber whose ``receive()`` returns
nothing waits in ``Listener.timed_wait()`` until notified.  In the
``iceoryx2_polling`` row there is no event service: the publisher only sends,
and a subscriber whose ``receive()`` returns nothing calls ``os.sched_yield()``
and polls again.  The first costs the publisher a system call per listener
per message, the second costs idle subscribers CPU; the benchmark judges its
target against whichever is faster.  Sending loans a slice, copies the
payload in (``ctypes.memmove``) and sends; a subscriber reads the first and
last byte of the sample in place (zero-copy) and releases it.

The benchmark's subscribers open their ports before the publisher sends
anything; ``attached()`` reports the smaller of the service's subscriber and
listener counts after ``update_connections()``, so the publisher starts only
when it will deliver to every one of them.

Every iceoryx2 file of a run goes under its own prefix and root directory
(a per-run ``config.Config``), which ``finish()`` removes: nothing of another
iceoryx2 user on this machine is touched.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any, ClassVar

import iceoryx2 as iox2

from .pubsub import PublisherEnd, PubSubPeer, SubscriberEnd

SHM = Path("/dev/shm")

#: One iceoryx2 node per process and run configuration, made on first use.
_NODES: dict[tuple[str, str], Any] = {}


def _node(prefix: str, root: str) -> Any:
    node = _NODES.get((prefix, root))
    if node is None:
        iox2.set_log_level(iox2.LogLevel.Error)
        config = iox2.config.default()
        config.global_cfg.prefix = iox2.FileName.new(prefix)
        config.global_cfg.root_path = iox2.Path.new(root)
        node = iox2.NodeBuilder.new().config(config).create(iox2.ServiceType.Ipc)
        _NODES[(prefix, root)] = node
    return node


class Iceoryx2PubSub(PubSubPeer):
    """The event-based row: notify() after every send, subscribers sleep in Listener.timed_wait()."""

    label: ClassVar[str] = "iceoryx2 pub/sub, events"
    how: ClassVar[str] = (
        "iceoryx2 publish-subscribe of Slice[c_uint8], subscriber buffer = depth, safe overflow off, "
        "RetryUntilDelivered (publisher waits, nothing dropped); notify() per send on an event service, "
        "subscribers Listener.timed_wait() when empty; first and last byte read in place"
    )
    lossless: ClassVar[bool] = True
    #: Whether the publisher notifies and subscribers sleep on a listener (else they poll).
    events: ClassVar[bool] = True

    def __init__(self) -> None:
        run = uuid.uuid4().hex[:10]
        self._prefix = f"mbench{run}_"
        self._root = os.path.join(tempfile.gettempdir(), f"memipc-bench-iceoryx2-{run}") + "/"

    def create(self, size: int, subscribers: int, depth: int) -> object:
        return (self._prefix, self._root, f"memipc-bench/{uuid.uuid4().hex[:12]}", size, subscribers, depth)

    def _services(self, link: object) -> tuple[Any, Any | None, int, int]:
        assert isinstance(link, tuple)
        prefix, root, name, size, subscribers, depth = link
        node = _node(prefix, root)
        channel = (
            node.service_builder(iox2.ServiceName.new(name))
            .publish_subscribe(iox2.Slice[ctypes.c_uint8])
            .max_publishers(1)
            .max_subscribers(subscribers)
            .max_nodes(subscribers + 2)
            .history_size(0)
            .subscriber_max_buffer_size(depth)
            .enable_safe_overflow(False)
            .open_or_create()
        )
        if not self.events:
            return channel, None, size, depth
        wake = (
            node.service_builder(iox2.ServiceName.new(f"{name}/wake"))
            .event()
            .max_listeners(subscribers)
            .max_notifiers(1)
            .max_nodes(subscribers + 2)
            .open_or_create()
        )
        return channel, wake, size, depth

    def publisher(self, link: object) -> PublisherEnd:
        channel, wake, size, _depth = self._services(link)
        publisher = (
            channel.publisher_builder()
            .initial_max_slice_len(size)
            .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
            .create()
        )
        notifier = wake.notifier_builder().create() if wake is not None else None
        loan, memmove = publisher.loan_slice_uninit, ctypes.memmove

        def publish(data: bytes) -> None:
            sample = loan(len(data))
            memmove(sample.payload_ptr, data, len(data))
            sample.assume_init().send()

        send = publish
        if notifier is not None:
            notify = notifier.notify

            def publish_and_notify(data: bytes) -> None:
                publish(data)
                notify()

            send = publish_and_notify

        def attached() -> int:
            publisher.update_connections()
            subscribers: int = channel.dynamic_config.number_of_subscribers
            if wake is None:
                return subscribers
            listeners: int = wake.dynamic_config.number_of_listeners
            return min(subscribers, listeners)

        def close() -> None:
            if notifier is not None:
                notifier.delete()
            publisher.delete()

        return PublisherEnd(send=send, attached=attached, close=close)

    def subscriber(self, link: object, idle_s: float) -> SubscriberEnd:
        channel, wake, _size, depth = self._services(link)
        subscriber = channel.subscriber_builder().buffer_size(depth).create()
        listener = wake.listener_builder().create() if wake is not None else None
        receive, monotonic = subscriber.receive, time.monotonic
        if listener is not None:
            timed_wait, idle = listener.timed_wait, iox2.Duration.from_secs_f64(idle_s)

            def wait() -> None:
                timed_wait(idle)

        else:
            wait = os.sched_yield
        byte_at = ctypes.c_uint8.from_address

        def take() -> int:
            sample = receive()
            if sample is None:
                # timed_wait() can also return early with no activation (seen in this benchmark, with
                # every notify() racing the subscriber's receive()), so only the clock says "timed out".
                deadline = monotonic() + idle_s
                while True:
                    wait()
                    sample = receive()
                    if sample is not None:
                        break
                    if monotonic() >= deadline:
                        return 0
            length: int = sample.header.number_of_elements
            address: int = sample.payload_ptr
            _first, _last = byte_at(address).value, byte_at(address + length - 1).value
            sample.delete()
            return length

        def close() -> None:
            if listener is not None:
                listener.delete()
            subscriber.delete()

        return SubscriberEnd(take=take, missed=lambda: 0, close=close)

    def finish(self) -> None:
        """Remove this run's iceoryx2 files: its root directory and its prefix in /dev/shm."""
        shutil.rmtree(self._root, ignore_errors=True)
        with suppress(OSError):
            for entry in SHM.iterdir():
                if entry.name.startswith(self._prefix):
                    with suppress(OSError):
                        entry.unlink()


class Iceoryx2PubSubPolling(Iceoryx2PubSub):
    """The polling row: no event service; a subscriber that finds nothing yields its CPU and polls again."""

    label: ClassVar[str] = "iceoryx2 pub/sub, polling"
    how: ClassVar[str] = (
        "as iceoryx2 events, but no event service: the publisher only sends, and a subscriber whose "
        "receive() is empty calls os.sched_yield() and polls again"
    )
    events: ClassVar[bool] = False


def make(name: str) -> PubSubPeer:
    return Iceoryx2PubSubPolling() if name == "iceoryx2_polling" else Iceoryx2PubSub()
