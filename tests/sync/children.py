"""Child-process bodies for the sync multi-process tests (tests/sync/test_multiprocess.py).

Every function here is importable by the spawn start method, takes only
picklable arguments (names as strings, multiprocessing primitives passed at
process start) and returns picklable results.  Every wait has a timeout, so a
child whose parent went away gives up on its own; the harness in
:mod:`tests._support.procs` kills it anyway when the test ends.

Shared counters live in a plain memipc Region ("scratch region") as
little-endian int64 slots (``get`` / ``put``); where several processes update
them, they do it under a ``Mutex.in_region`` at offset ``GUARD`` of the same
region, so the bookkeeping does not depend on the primitive under test.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from memipc import Condition, Event, Mutex, Region, RWLock, Semaphore

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier

#: How long any child waits for anything before giving up.
WAIT = 30.0
#: One shared counter: a little-endian int64.
SLOT = struct.Struct("<q")
#: Offset of the guard Mutex that protects the counters of a scratch region.
GUARD = 0
#: Size of a scratch region: the guard mutex's 64 bytes, then 32 counters.
SCRATCH_SIZE = 64 + 32 * SLOT.size


def counter(index: int) -> int:
    """Offset of counter ``index`` in a scratch region."""
    return 64 + index * SLOT.size


def get(region: Region, index: int) -> int:
    """Counter ``index`` of a scratch region."""
    value: int = SLOT.unpack_from(region.buf, counter(index))[0]
    return value


def put(region: Region, index: int, value: int) -> None:
    """Set counter ``index`` of a scratch region."""
    SLOT.pack_into(region.buf, counter(index), value)


def add(region: Region, index: int, delta: int) -> int:
    """Add ``delta`` to counter ``index`` (the caller holds the guard); returns the new value."""
    value = get(region, index) + delta
    put(region, index, value)
    return value


def until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``condition()`` every millisecond; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {os.getpid()} waited {timeout} s for {what}")
        time.sleep(0.001)


def _line_up(barrier: Barrier | None) -> None:
    if barrier is not None:
        barrier.wait(WAIT)


# ---- Mutex ------------------------------------------------------------------


def increment_under_mutex(mutex_name: str, region_name: str, rounds: int, barrier: Barrier) -> int:
    """``rounds`` times: take the mutex, read counter 0, yield the CPU, write it back plus one.

    The read-modify-write is deliberately not atomic and gives the CPU away
    between the read and the write, so only the mutex keeps concurrent
    increments from being lost.  Returns how many increments this process made.
    """
    mutex = Mutex(mutex_name, create=False)
    try:
        with Region.open(region_name) as region:
            _line_up(barrier)
            for _ in range(rounds):
                if not mutex.acquire(timeout=WAIT):
                    raise TimeoutError(f"process {os.getpid()} could not take the mutex in {WAIT} s")
                try:
                    value = get(region, 0)
                    time.sleep(0)  # invite another process into the window
                    put(region, 0, value + 1)
                finally:
                    mutex.release()
    finally:
        mutex.close()
    return rounds


# ---- Semaphore ----------------------------------------------------------------

#: Scratch counters of the semaphore test.
HOLDERS, PEAK_HOLDERS = 0, 1


def hold_semaphore(
    semaphore_name: str, region_name: str, rounds: int, hold_seconds: float, barrier: Barrier
) -> int:
    """``rounds`` times: acquire, count this process in as a holder, hold, count out, release.

    Counter HOLDERS is the number of processes inside right now and
    PEAK_HOLDERS the most ever seen, both updated under the guard mutex.
    Returns how many times this process got in.
    """
    semaphore = Semaphore(semaphore_name, create=False)
    try:
        with Region.open(region_name) as region:
            guard = Mutex.in_region(region, GUARD)
            try:
                _line_up(barrier)
                for _ in range(rounds):
                    if not semaphore.acquire(timeout=WAIT):
                        raise TimeoutError(f"process {os.getpid()} could not get a count in {WAIT} s")
                    try:
                        with guard:
                            inside = add(region, HOLDERS, 1)
                            put(region, PEAK_HOLDERS, max(inside, get(region, PEAK_HOLDERS)))
                        time.sleep(hold_seconds)
                        with guard:
                            add(region, HOLDERS, -1)
                    finally:
                        semaphore.release()
            finally:
                guard.close()
    finally:
        semaphore.close()
    return rounds


# ---- Event --------------------------------------------------------------------


def wait_for_event(event_name: str, timeout: float, barrier: Barrier | None) -> tuple[bool, float]:
    """Open the event, line up with the siblings, wait once; returns (result, seconds waited)."""
    event = Event(event_name, create=False)
    try:
        _line_up(barrier)
        start = time.monotonic()
        result = event.wait(timeout=timeout)
        return result, time.monotonic() - start
    finally:
        event.close()


# ---- Condition ------------------------------------------------------------------

#: Scratch counters of the producer/consumer test: a one-item mailbox.
MAILBOX_FULL, MAILBOX_ITEM, PRODUCERS_DONE = 0, 1, 2


def produce(mutex_name: str, condition_name: str, region_name: str, items: list[int]) -> int:
    """Put each item in the one-slot mailbox once it is empty, notifying the consumers."""
    mutex = Mutex(mutex_name, create=False)
    condition = Condition(condition_name, mutex, create=False)
    try:
        with Region.open(region_name) as region:
            for item in items:
                with mutex:
                    if not condition.wait_for(lambda: get(region, MAILBOX_FULL) == 0, timeout=WAIT):
                        raise TimeoutError(f"producer {os.getpid()}: the mailbox stayed full for {WAIT} s")
                    put(region, MAILBOX_ITEM, item)
                    put(region, MAILBOX_FULL, 1)
                    condition.notify_all()
    finally:
        condition.close()
        mutex.close()
    return len(items)


def consume(mutex_name: str, condition_name: str, region_name: str, count: int) -> list[int]:
    """Take ``count`` items out of the one-slot mailbox, notifying the producers; returns them."""
    mutex = Mutex(mutex_name, create=False)
    condition = Condition(condition_name, mutex, create=False)
    taken = []
    try:
        with Region.open(region_name) as region:
            for _ in range(count):
                with mutex:
                    if not condition.wait_for(lambda: get(region, MAILBOX_FULL) == 1, timeout=WAIT):
                        raise TimeoutError(f"consumer {os.getpid()}: the mailbox stayed empty for {WAIT} s")
                    taken.append(get(region, MAILBOX_ITEM))
                    put(region, MAILBOX_FULL, 0)
                    condition.notify_all()
    finally:
        condition.close()
        mutex.close()
    return taken


# ---- RWLock -----------------------------------------------------------------------

#: Scratch counters of the rwlock tests.
ENTERED, READERS_INSIDE, WRITERS_INSIDE, VIOLATIONS, STOP = 0, 1, 2, 3, 4
#: Counter of reader ``index``'s completed rounds in the starvation test.
FIRST_ROUNDS = 8


def read_until_everyone_is_reading(rwlock_name: str, region_name: str, readers: int, timeout: float) -> int:
    """Take the read lock, count in, and keep holding it until ``readers`` processes have counted in.

    Nobody lets go before everyone is in, so success means all ``readers``
    held the read lock at the same moment.  Returns the count this process
    saw last (``readers`` on success, less if the lock kept the others out).
    """
    rwlock = RWLock(rwlock_name, create=False)
    try:
        with Region.open(region_name) as region:
            guard = Mutex.in_region(region, GUARD)
            try:
                if not rwlock.acquire_read(timeout=WAIT):
                    raise TimeoutError(f"reader {os.getpid()} could not read-lock in {WAIT} s")
                try:
                    with guard:
                        add(region, ENTERED, 1)
                    deadline = time.monotonic() + timeout
                    while get(region, ENTERED) < readers and time.monotonic() < deadline:
                        time.sleep(0.001)
                    return get(region, ENTERED)
                finally:
                    rwlock.release_read()
            finally:
                guard.close()
    finally:
        rwlock.close()


def check_rwlock_exclusion(
    rwlock_name: str, region_name: str, writer: bool, rounds: int, barrier: Barrier
) -> int:
    """``rounds`` times: lock (as a writer or a reader), count in, check who else is in, hold, count out.

    A writer must find itself alone (no readers, no other writer); a reader
    must find no writer.  Returns the number of violations this process saw
    (also added to counter VIOLATIONS).
    """
    rwlock = RWLock(rwlock_name, create=False)
    violations = 0
    try:
        with Region.open(region_name) as region:
            guard = Mutex.in_region(region, GUARD)
            try:
                _line_up(barrier)
                for _ in range(rounds):
                    acquired = rwlock.acquire_write(WAIT) if writer else rwlock.acquire_read(WAIT)
                    if not acquired:
                        raise TimeoutError(f"process {os.getpid()} could not lock in {WAIT} s")
                    try:
                        with guard:
                            if writer:
                                writers = add(region, WRITERS_INSIDE, 1)
                                bad = writers != 1 or get(region, READERS_INSIDE) != 0
                            else:
                                add(region, READERS_INSIDE, 1)
                                bad = get(region, WRITERS_INSIDE) != 0
                            if bad:
                                violations += 1
                                add(region, VIOLATIONS, 1)
                        time.sleep(0.0005)
                        with guard:
                            add(region, WRITERS_INSIDE if writer else READERS_INSIDE, -1)
                    finally:
                        if writer:
                            rwlock.release_write()
                        else:
                            rwlock.release_read()
            finally:
                guard.close()
    finally:
        rwlock.close()
    return violations


def read_in_a_loop(rwlock_name: str, region_name: str, index: int, hold_seconds: float) -> int:
    """Read-lock, hold, release, at once again, until counter STOP is set; returns the rounds done.

    Counter ``FIRST_ROUNDS + index`` counts this reader's rounds, so the
    parent can wait until every reader is busy.
    """
    rwlock = RWLock(rwlock_name, create=False)
    rounds = 0
    try:
        with Region.open(region_name) as region:
            deadline = time.monotonic() + WAIT
            while not get(region, STOP):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reader {os.getpid()} was not told to stop within {WAIT} s")
                if not rwlock.acquire_read(timeout=WAIT):
                    raise TimeoutError(f"reader {os.getpid()} could not read-lock in {WAIT} s")
                try:
                    time.sleep(hold_seconds)
                finally:
                    rwlock.release_read()
                rounds += 1
                put(region, FIRST_ROUNDS + index, rounds)
    finally:
        rwlock.close()
    return rounds


# ---- wait_any ------------------------------------------------------------------------


def signal_later(kind: str, name: str, delay: float) -> None:
    """Open the existing ``kind`` object ``name``, sleep ``delay`` seconds, then signal it once."""
    obj: Event | Semaphore
    obj = Event(name, create=False) if kind == "event" else Semaphore(name, create=False)
    try:
        time.sleep(delay)
        if isinstance(obj, Event):
            obj.set()
        else:
            obj.release()
    finally:
        obj.close()


def hold_mutex_then_release(mutex_name: str, region_name: str, delay: float) -> None:
    """Take the mutex, set counter 0 to say so, wait for counter 1, hold ``delay`` more, release."""
    mutex = Mutex(mutex_name, create=False)
    try:
        with Region.open(region_name) as region:
            if not mutex.acquire(timeout=WAIT):
                raise TimeoutError(f"process {os.getpid()} could not take the mutex in {WAIT} s")
            try:
                put(region, 0, 1)
                until(lambda: get(region, 1) == 1, "the parent's go-ahead")
                time.sleep(delay)
            finally:
                mutex.release()
    finally:
        mutex.close()


# ---- in_region: the same offset seen from another process ----------------------------

#: Where the in-region tests place things in their region.
PLACED_AT = 256
#: Where the Condition test places the condition's mutex.
CONDITION_MUTEX_AT = 128
#: Where the Condition test keeps its "notified" flag.
FLAG_AT = 8


def use_placed_object(kind: str, region_name: str) -> tuple[object, ...]:
    """Open the region, place a ``kind`` at PLACED_AT as the parent did, and use it.

    What each kind does and returns (the parent set the stage):

    - mutex (the parent holds it): (created, acquire(timeout=0.1), locked())
    - semaphore (made with initial=3): (created, value, acquire(timeout=0))
    - event: (created, is_set()) before setting it
    - condition (the parent waits on it): (created,) after setting the flag and notifying
    - rwlock (the parent holds a read lock): (created, acquire_read(0), acquire_write(0.1))
    """
    with Region.open(region_name) as region:
        if kind == "mutex":
            mutex = Mutex.in_region(region, PLACED_AT)
            try:
                acquired = mutex.acquire(timeout=0.1)
                if acquired:
                    mutex.release()
                return mutex.created, acquired, mutex.locked()
            finally:
                mutex.close()
        if kind == "semaphore":
            semaphore = Semaphore.in_region(region, PLACED_AT, initial=99)
            try:
                return semaphore.created, semaphore.value, semaphore.acquire(timeout=0)
            finally:
                semaphore.close()
        if kind == "event":
            event = Event.in_region(region, PLACED_AT)
            try:
                before = event.is_set()
                event.set()
                return event.created, before
            finally:
                event.close()
        if kind == "condition":
            mutex = Mutex.in_region(region, CONDITION_MUTEX_AT)
            condition = Condition.in_region(region, PLACED_AT, mutex)
            try:
                if not mutex.acquire(timeout=WAIT):  # free once the parent sleeps in wait()
                    raise TimeoutError(f"process {os.getpid()} could not take the mutex in {WAIT} s")
                try:
                    region.buf[FLAG_AT] = 1
                    condition.notify()
                finally:
                    mutex.release()
                return (condition.created,)
            finally:
                condition.close()
                mutex.close()
        if kind == "rwlock":
            rwlock = RWLock.in_region(region, PLACED_AT)
            try:
                reading = rwlock.acquire_read(timeout=0)
                if reading:
                    rwlock.release_read()
                writing = rwlock.acquire_write(timeout=0.1)
                if writing:
                    rwlock.release_write()
                return rwlock.created, reading, writing
            finally:
                rwlock.close()
    raise ValueError(f"unknown kind {kind!r}")
