"""Child-process bodies for the CLI tests: processes that own the objects `memipc` looks at.

Every function is importable by the spawn start method and takes
``(ready, release, ...)``: it makes its objects, sets ``ready``, and holds
them until ``release`` (or until the parent SIGKILLs it, which is the point
of most tests).  Every wait has a timeout, so a child whose parent went away
gives up on its own; :mod:`tests.cli.harness` kills it anyway.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import memipc

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event

#: How long a child holds its objects waiting for the parent.
HOLD_SECONDS = 60.0
#: Sizes the children use, so that the tests can check what `ls` reports.
REGION_SIZE = 5000
CAPACITY = 4096
BUS_CAPACITY = 1 << 16
RPC_CAPACITY = 1 << 14


def _hold(release: Event) -> None:
    if not release.wait(HOLD_SECONDS):
        raise TimeoutError(f"child {os.getpid()} waited {HOLD_SECONDS} s to be released")


def _close_all(objects: list[Any]) -> None:
    for thing in reversed(objects):
        with contextlib.suppress(Exception):
            thing.close()


def every_kind(ready: Event, release: Event, names: dict[str, str]) -> int:
    """One object of each kind under ``names[kind]``; the pubsub has a publisher and a subscriber."""
    objects: list[Any] = []
    try:
        objects.append(memipc.Region.create(names["region"], REGION_SIZE))
        mutex = memipc.Mutex(names["mutex"])
        objects.append(mutex)
        objects.append(memipc.Event(names["event"]))
        objects.append(memipc.Semaphore(names["semaphore"], 1))
        objects.append(memipc.Condition(names["condition"], mutex))
        objects.append(memipc.RWLock(names["rwlock"]))
        objects.append(memipc.Queue(names["queue"], CAPACITY))
        objects.append(memipc.Publisher(names["pubsub"], BUS_CAPACITY))
        objects.append(memipc.Subscriber(names["pubsub"]))
        objects.append(memipc.Server(names["rpc"], capacity=RPC_CAPACITY))
        ready.set()
        _hold(release)
    finally:
        _close_all(objects)
    return os.getpid()


def region(ready: Event, release: Event, name: str, persist: bool = False, path: str | None = None) -> int:
    """A region (persistent or file-backed if asked) with b"kept" at offset 0."""
    with memipc.Region.create(name, REGION_SIZE, persist=persist, path=path) as made:
        made.buf[:4] = b"kept"
        ready.set()
        _hold(release)
    return os.getpid()


def region_in_use_after_release(ready: Event, release: Event, name: str) -> bytes:
    """Hold a region; once released, write through it and read back (its name may be gone by then)."""
    with memipc.Region.create(name, REGION_SIZE) as made:
        ready.set()
        _hold(release)
        made.buf[:11] = b"still works"
        return bytes(made.buf[:11])


def queue_with_traffic(ready: Event, release: Event, name: str, sent: int, received: int) -> int:
    """A queue into which ``sent`` messages were sent and from which ``received`` were taken."""
    with memipc.Queue(name, CAPACITY) as queue:
        for index in range(sent):
            queue.send(b"message %d" % index)
        for _ in range(received):
            queue.recv(timeout=5)
        ready.set()
        _hold(release)
    return os.getpid()


def queue_busy(ready: Event, release: Event, name: str) -> int:
    """Send and receive on a queue continuously until released; returns how many went through."""
    count = 0
    with memipc.Queue(name, CAPACITY) as queue:
        ready.set()
        deadline = time.monotonic() + HOLD_SECONDS
        while not release.is_set() and time.monotonic() < deadline:
            for _ in range(50):
                queue.send(b"tick")
                queue.recv(timeout=5)
            count += 50
            time.sleep(0.001)
    return count


def pubsub_with_lag(ready: Event, release: Event, name: str, published: int, read_by_first: int) -> int:
    """A publisher and two subscribers: the first read ``read_by_first`` messages, the second none."""
    objects: list[Any] = []
    try:
        publisher = memipc.Publisher(name, BUS_CAPACITY)
        objects.append(publisher)
        first = memipc.Subscriber(name)
        objects.append(first)
        objects.append(memipc.Subscriber(name))
        for index in range(published):
            publisher.send(b"news %d" % index)
        for _ in range(read_by_first):
            first.recv(timeout=5)
        ready.set()
        _hold(release)
    finally:
        _close_all(objects)
    return os.getpid()


def mutex_held(ready: Event, release: Event, name: str) -> int:
    """Acquire a mutex and keep it (the parent SIGKILLs this child while it holds it)."""
    mutex = memipc.Mutex(name)
    try:
        assert mutex.acquire(timeout=5)
        ready.set()
        _hold(release)
        mutex.release()
    finally:
        mutex.close()
    return os.getpid()


def signals(ready: Event, release: Event, names: dict[str, str]) -> int:
    """A set event, a clear event, and a semaphore created at 3 (maximum 5) then acquired once."""
    objects: list[Any] = []
    try:
        signaled = memipc.Event(names["set"])
        objects.append(signaled)
        signaled.set()
        objects.append(memipc.Event(names["clear"]))
        semaphore = memipc.Semaphore(names["semaphore"], initial=3, maximum=5)
        objects.append(semaphore)
        assert semaphore.acquire(timeout=5)
        ready.set()
        _hold(release)
    finally:
        _close_all(objects)
    return os.getpid()


def rpc_server(ready: Event, release: Event, name: str) -> int:
    """A request/response service with this process as its (idle) server."""
    with memipc.Server(name, capacity=RPC_CAPACITY):
        ready.set()
        _hold(release)
    return os.getpid()


def global_event(ready: Event, release: Event, name: str) -> int:
    """A set event in the global scope (``Global\\name``)."""
    event = memipc.Event("Global\\" + name)
    try:
        event.set()
        ready.set()
        _hold(release)
    finally:
        event.close()
    return os.getpid()


# ---- for processes started by path (in another mount namespace) ---------------------


def hold_from_command_line(specs: list[str]) -> None:
    """Make every ``KIND:NAME`` in ``specs``, print ``ready``, hold them until stdin closes.

    KIND is region, persistent (a region created with persist=True), queue or
    mutex (created and acquired).  Used as ``python children.py KIND:NAME ...``
    where :mod:`tests._support.procs` cannot reach (see ``private_shm``).
    """
    objects: list[Any] = []
    try:
        for spec in specs:
            kind, _, name = spec.partition(":")
            if kind in ("region", "persistent"):
                objects.append(memipc.Region.create(name, REGION_SIZE, persist=kind == "persistent"))
            elif kind == "queue":
                objects.append(memipc.Queue(name, CAPACITY))
            elif kind == "mutex":
                mutex = memipc.Mutex(name)
                objects.append(mutex)
                assert mutex.acquire(timeout=5)
            else:
                raise ValueError(f"unknown kind in {spec!r}")
        print("ready", os.getpid(), flush=True)
        sys.stdin.read()
    finally:
        _close_all(objects)


if __name__ == "__main__":
    hold_from_command_line(sys.argv[1:])
