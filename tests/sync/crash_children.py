"""Child-process bodies for the sync crash and Ctrl-C tests, and the message protocol they share.

Every child function is importable by the spawn start method and takes only
picklable arguments: object names as strings, and the sending end of a
``multiprocessing`` pipe (``conn``) on which it reports where it is.  A pipe
has no feeder thread, so a message sent before a SIGKILL is already in the
kernel, and a SIGINT cannot land in a helper thread of the child.

Messages are tuples whose first item says what happened:

* ``("holding", pid)``: the child holds the object and sleeps until killed;
* ``("waiting", pid)``: the child is about to block (the parent confirms it
  is blocked from the object's ``stats()``);
* ``("blocking", pid, monotonic)``: Ctrl-C children, just before the call;
* ``("interrupted", monotonic_at_catch, ...)``: KeyboardInterrupt arrived;
  the child then waits for the parent's ``("go",)`` (a duplex pipe) before it
  uses the object again, so the parent can inspect what the interrupt left.

Children that wait for the parent do so with a timeout, so a test that
forgets one cannot leave it running; :mod:`tests._support.procs` kills every
child when its test ends anyway.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from memipc import Condition, Event, Mutex, RWLock, Semaphore, wait_any
from tests._support import procs

#: How long a holding child sleeps before it gives up on being killed.
HOLD_SECONDS = 60.0
#: How long a child waits for the parent's next move.
CHILD_TIMEOUT = 20.0


def _sleep_until_killed(what: str) -> NoReturn:
    time.sleep(HOLD_SECONDS)
    raise TimeoutError(f"child {os.getpid()} {what} for {HOLD_SECONDS} s and was never killed")


# ---- the parent's side of the protocol ------------------------------------


def pipe(*, duplex: bool = False) -> tuple[Connection, Connection]:
    """A pipe: (parent's end, child's end); one-way (child to parent) unless ``duplex``."""
    parent_end, child_end = procs.CTX.Pipe(duplex=duplex)
    return parent_end, child_end


def go(conn: Connection) -> None:
    """Tell a Ctrl-C child that the parent has checked the object and it may go on."""
    conn.send(("go",))


def expect(conn: Connection, child: procs.Child, kind: str, timeout: float) -> tuple[Any, ...]:
    """Receive the child's next message, which must be of ``kind``.

    Never reaps the child (a zombie test must keep its zombie): a child that
    died before sending is seen as end-of-file on the pipe, and its own error,
    if it raised one, is re-raised from its result pipe.
    """
    if not conn.poll(timeout):
        raise TimeoutError(f"child {child.pid} did not report {kind!r} within {timeout} s")
    try:
        message: tuple[Any, ...] = conn.recv()
    except EOFError:
        child.result(5)  # raises ChildFailed with the child's traceback if it raised
        raise AssertionError(f"child {child.pid} closed its pipe before reporting {kind!r}") from None
    assert message[0] == kind, f"child {child.pid} reported {message!r}, expected {kind!r}"
    return message


# ---- holders: take an object, report, sleep until SIGKILLed ----------------


def sleep_until_killed(conn: Connection) -> None:
    """A live process for the pid-reuse tests: report the pid, then sleep."""
    conn.send(("holding", os.getpid()))
    _sleep_until_killed("slept")


def hold_mutex(name: str, conn: Connection) -> None:
    """Acquire the Mutex ``name`` and hold it until killed."""
    mutex = Mutex(name, create=False)
    mutex.acquire()
    conn.send(("holding", os.getpid()))
    _sleep_until_killed("held a mutex")


def hold_write_lock(name: str, conn: Connection) -> None:
    """Write-lock the RWLock ``name`` and hold it until killed."""
    rwlock = RWLock(name, create=False)
    rwlock.acquire_write()
    conn.send(("holding", os.getpid()))
    _sleep_until_killed("held a write lock")


def hold_read_lock(name: str, conn: Connection) -> None:
    """Read-lock the RWLock ``name`` and hold it until killed."""
    rwlock = RWLock(name, create=False)
    rwlock.acquire_read()
    conn.send(("holding", os.getpid()))
    _sleep_until_killed("held a read lock")


# ---- waiters: block in a wait, killed there or released by the parent -------


def wait_on_condition(
    mutex_name: str, condition_name: str, timeout: float, conn: Connection
) -> tuple[bool, bool]:
    """Hold the mutex, report, ``wait(timeout)``; return (notified, mutex held on return)."""
    mutex = Mutex(mutex_name, create=False)
    condition = Condition(condition_name, mutex, create=False)
    try:
        mutex.acquire()
        try:
            # The parent knows we are inside wait() once it can take the mutex.
            conn.send(("waiting", os.getpid()))
            notified = condition.wait(timeout)
            return notified, mutex.held()
        finally:
            if mutex.held():
                mutex.release()
    finally:
        condition.close()
        mutex.close()


def wait_on_event(name: str, timeout: float, conn: Connection) -> bool:
    """Report, then ``Event.wait(timeout)``; return what it returned."""
    event = Event(name, create=False)
    try:
        conn.send(("waiting", os.getpid()))
        return event.wait(timeout)
    finally:
        event.close()


def acquire_semaphore(name: str, timeout: float, conn: Connection) -> bool:
    """Report, then ``Semaphore.acquire(timeout)``; return what it returned."""
    semaphore = Semaphore(name, create=False)
    try:
        conn.send(("waiting", os.getpid()))
        return semaphore.acquire(timeout)
    finally:
        semaphore.close()


# ---- Ctrl-C: block with no timeout until SIGINT, then check the object -----


def _until_interrupted(conn: Connection, block: Callable[[], object]) -> float:
    """Run ``block()`` until Ctrl-C; return ``time.monotonic()`` at the catch."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    conn.send(("blocking", os.getpid(), time.monotonic()))
    try:
        outcome = block()
    except KeyboardInterrupt:
        return time.monotonic()
    raise AssertionError(f"the blocking call returned {outcome!r} instead of raising KeyboardInterrupt")


def _interrupted(conn: Connection, *report: object) -> None:
    """Report the interrupt, then wait until the parent says go."""
    conn.send(("interrupted", *report))
    if not conn.poll(CHILD_TIMEOUT):
        raise TimeoutError(f"child {os.getpid()} waited {CHILD_TIMEOUT} s for the parent's go")
    message = conn.recv()
    if message != ("go",):
        raise AssertionError(f"child {os.getpid()} expected ('go',) from the parent, got {message!r}")


def interrupt_mutex_acquire(name: str, conn: Connection) -> tuple[bool, bool]:
    """Block in acquire() of a mutex the parent holds; after Ctrl-C, acquire it once the parent lets go.

    Sends ("interrupted", caught_at, held after the interrupt); returns
    (acquired later, owner_died of that acquisition).
    """
    mutex = Mutex(name, create=False)
    try:
        caught_at = _until_interrupted(conn, mutex.acquire)
        _interrupted(conn, caught_at, mutex.held())
        acquired = mutex.acquire(timeout=CHILD_TIMEOUT)
        owner_died = mutex.owner_died
        if acquired:
            mutex.release()
        return acquired, owner_died
    finally:
        mutex.close()


def interrupt_semaphore_acquire(name: str, conn: Connection) -> bool:
    """Block in acquire() at zero; after Ctrl-C, acquire again (the parent releases one)."""
    semaphore = Semaphore(name, create=False)
    try:
        caught_at = _until_interrupted(conn, semaphore.acquire)
        _interrupted(conn, caught_at)
        return semaphore.acquire(timeout=CHILD_TIMEOUT)
    finally:
        semaphore.close()


def interrupt_event_wait(name: str, conn: Connection) -> bool:
    """Block in wait(); after Ctrl-C, wait again (the parent sets the event)."""
    event = Event(name, create=False)
    try:
        caught_at = _until_interrupted(conn, event.wait)
        _interrupted(conn, caught_at)
        return event.wait(timeout=CHILD_TIMEOUT)
    finally:
        event.close()


def interrupt_condition_wait(mutex_name: str, condition_name: str, conn: Connection) -> tuple[bool, bool]:
    """Block in Condition.wait(); after Ctrl-C (mutex held again?), wait once more to be notified.

    Sends ("interrupted", caught_at, mutex held when KeyboardInterrupt came
    out of wait()); then, still holding the mutex, sends ("waiting", pid) and
    waits again.  Returns (notified, mutex held on return) of that second wait.
    """
    mutex = Mutex(mutex_name, create=False)
    condition = Condition(condition_name, mutex, create=False)
    try:
        mutex.acquire()
        try:
            caught_at = _until_interrupted(conn, condition.wait)
            _interrupted(conn, caught_at, mutex.held())
            if not mutex.held():
                return False, False
            conn.send(("waiting", os.getpid()))
            notified = condition.wait(timeout=CHILD_TIMEOUT)
            return notified, mutex.held()
        finally:
            if mutex.held():
                mutex.release()
    finally:
        condition.close()
        mutex.close()


def interrupt_read_under_writer(name: str, conn: Connection) -> bool:
    """Block in acquire_read() while the parent writes; after Ctrl-C, read once the writer leaves."""
    rwlock = RWLock(name, create=False)
    try:
        caught_at = _until_interrupted(conn, rwlock.acquire_read)
        _interrupted(conn, caught_at)
        acquired = rwlock.acquire_read(timeout=CHILD_TIMEOUT)
        if acquired:
            rwlock.release_read()
        return acquired
    finally:
        rwlock.close()


def interrupt_write_under_reader(name: str, conn: Connection) -> tuple[bool, bool]:
    """Block in acquire_write() while the parent reads; after Ctrl-C, check readers still get in.

    Sends ("interrupted", caught_at, a new read lock was granted within 1 s
    while the parent still reads); then write-locks once the parent has left
    and returns (acquired, owner_died).
    """
    rwlock = RWLock(name, create=False)
    try:
        caught_at = _until_interrupted(conn, rwlock.acquire_write)
        reader_got_in = rwlock.acquire_read(timeout=1.0)
        if reader_got_in:
            rwlock.release_read()
        _interrupted(conn, caught_at, reader_got_in)
        acquired = rwlock.acquire_write(timeout=CHILD_TIMEOUT)
        owner_died = rwlock.owner_died
        if acquired:
            rwlock.release_write()
        return acquired, owner_died
    finally:
        rwlock.close()


def interrupt_wait_any(event_name: str, semaphore_name: str, mutex_name: str, conn: Connection) -> int | None:
    """Block in wait_any([event, semaphore, mutex]); after Ctrl-C, wait again.

    The parent then releases the semaphore; returns the index that wait returned.
    """
    event = Event(event_name, create=False)
    semaphore = Semaphore(semaphore_name, create=False)
    mutex = Mutex(mutex_name, create=False)
    objects: list[Event | Semaphore | Mutex] = [event, semaphore, mutex]
    try:
        caught_at = _until_interrupted(conn, lambda: wait_any(objects))
        _interrupted(conn, caught_at)
        index = wait_any(objects, timeout=CHILD_TIMEOUT)
        if index == 2:
            mutex.release()
        return index
    finally:
        for obj in objects:
            obj.close()
