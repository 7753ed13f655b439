"""Real child processes for multi-process tests: spawned, timed out, always reaped.

Children run functions from :mod:`tests._support.children` (importable by the
spawn start method).  :func:`run` returns the child's result or raises what it
raised; :func:`start` gives a handle for tests that coordinate with a running
child.  Every child is killed if it outlives its timeout or the test.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

CTX = mp.get_context("spawn")
DEFAULT_TIMEOUT = 60.0


def _trampoline(conn: Any, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        result = function(*args)
    except BaseException as error:  # report everything, including KeyboardInterrupt
        conn.send(
            ("error", f"{type(error).__name__}: {error}\n{traceback.format_exc()}", type(error).__name__)
        )
    else:
        conn.send(("ok", result, None))
    finally:
        conn.close()


class Child:
    """A spawned process running ``function(*args)``; results come back through a pipe."""

    def __init__(self, function: Callable[..., Any], *args: Any, timeout: float = DEFAULT_TIMEOUT):
        self.timeout = timeout
        self._parent, child_end = CTX.Pipe(duplex=False)
        self.process = CTX.Process(target=_trampoline, args=(child_end, function, args), daemon=True)
        self.process.start()
        child_end.close()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the child's return value; raise ChildFailed / TimeoutError otherwise."""
        wait = self.timeout if timeout is None else timeout
        if not self._parent.poll(wait):
            self.kill()
            raise TimeoutError(f"child {self.pid} did not finish within {wait} s")
        try:
            status, value, error_type = self._parent.recv()
        except EOFError:
            self.process.join(5)
            raise ChildFailed(f"child {self.pid} died with exit code {self.process.exitcode}", None) from None
        self.process.join(5)
        if status == "error":
            raise ChildFailed(value, error_type)
        return value

    def kill(self) -> None:
        if self.process.is_alive():
            os.kill(self.pid, signal.SIGKILL)
        self.process.join(5)

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)


class ChildFailed(AssertionError):
    """The child raised; ``error_type`` is the exception's class name."""

    def __init__(self, message: str, error_type: str | None):
        super().__init__(message)
        self.error_type = error_type


def run(function: Callable[..., Any], *args: Any, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Run ``function(*args)`` in a fresh spawned process and return its result."""
    child = Child(function, *args, timeout=timeout)
    try:
        return child.result()
    finally:
        child.kill()


@contextmanager
def started(function: Callable[..., Any], *args: Any, timeout: float = DEFAULT_TIMEOUT) -> Iterator[Child]:
    """A running child that is killed and reaped when the block ends, whatever happens."""
    child = Child(function, *args, timeout=timeout)
    try:
        yield child
    finally:
        child.kill()
