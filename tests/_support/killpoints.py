"""SIGKILL a spawned child at a named fault point (see :mod:`memipc._faults`).

:func:`kill_at` runs ``function(*args)`` in a fresh spawned child that has
armed ``point``.  When the library reaches the point, the child first tells the
parent (one message through a pipe, already in the kernel when the process
dies) and then kills itself with SIGKILL.  The parent waits, with a timeout,
for the child to die and checks both facts: the child reported reaching
``point``, and its exit code is -SIGKILL.  A child that returns, raises, dies
of another signal or outlives the timeout fails the test with what it
reported.  The child is always reaped.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from typing import Any

from tests._support.procs import CTX

#: How long a child may take to reach its kill point.
KILL_TIMEOUT = 30.0


def _armed_trampoline(conn: Any, armed: str, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
    from memipc import _faults

    original_reach = _faults.reach

    def reach(point: str) -> None:
        if _faults.armed == point:
            conn.send(("reached", point))
        original_reach(point)

    _faults.reach = reach
    _faults.arm(armed)
    try:
        result = function(*args)
    except BaseException as error:  # report everything, including KeyboardInterrupt
        conn.send(("raised", f"{type(error).__name__}: {error}"))
    else:
        conn.send(("returned", repr(result)))
    finally:
        conn.close()


def _drain(conn: Any) -> list[tuple[str, str]]:
    messages = []
    while conn.poll(0):
        try:
            messages.append(conn.recv())
        except EOFError:
            break
    return messages


def kill_at(point: str, function: Callable[..., Any], *args: Any, timeout: float = KILL_TIMEOUT) -> int:
    """Run ``function(*args)`` in a spawned child with ``point`` armed; assert it died there by SIGKILL.

    Returns the dead child's pid.
    """
    parent_end, child_end = CTX.Pipe(duplex=False)
    process = CTX.Process(target=_armed_trampoline, args=(child_end, point, function, args), daemon=True)
    try:
        process.start()
        child_end.close()
        process.join(timeout)
        if process.exitcode is None:
            raise AssertionError(
                f"child {process.pid} armed at {point!r} was still alive after {timeout} s; "
                f"it reported {_drain(parent_end)}"
            )
        messages = _drain(parent_end)
        assert process.exitcode == -signal.SIGKILL, (
            f"child {process.pid} armed at {point!r} exited with code {process.exitcode}, "
            f"not -SIGKILL; it reported {messages}"
        )
        assert messages == [("reached", point)], (
            f"child {process.pid} died by SIGKILL but not at {point!r}; it reported {messages}"
        )
        assert process.pid is not None
        return process.pid
    finally:
        if process.pid is not None and process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.join(5)
        child_end.close()
        parent_end.close()
