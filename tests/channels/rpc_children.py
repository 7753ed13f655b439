"""Child-process bodies for the Server/Client multi-process tests, and the message format they share.

Every function here is importable by the spawn start method and takes only
picklable arguments: the service's name, numbers, and sometimes a duplex
``multiprocessing`` pipe end (``conn``; it has no feeder thread, so what a
child sends just before it is SIGKILLed is already in the kernel).  Children
that wait for the parent do so with a timeout, and :mod:`tests._support.procs`
kills every child when its test ends anyway.

Calls
-----
A test request is ``REQUEST`` (client id, sequence number, CRC-32 of the
body; 16 bytes) followed by a body of random bytes.  The reply a checking
server sends is ``REPLY`` (the same client id and sequence number, the CRC-32
of the whole request as the server saw it, the server's pid) followed by the
request body reversed.  So a reply that went to the wrong client or the wrong
call, or that carries another request's bytes, fails :func:`check_reply`.
Object calls carry ``("obj", client, sequence, body)`` and come back as
``("ok", client, sequence, crc32(body), server pid, len(body))``.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import struct
import threading
import time
import zlib
from array import array
from multiprocessing.connection import Connection
from typing import Any

import memipc
from memipc import Client, Server

#: client id (u32), sequence (u32), CRC-32 of the body (u32), zero (u32).
REQUEST = struct.Struct("<IIII")
#: client id (u32), sequence (u32), CRC-32 of the whole request (u32), server pid (u32).
REPLY = struct.Struct("<IIII")
#: How long a child waits for one call or for the parent's next move.
CHILD_TIMEOUT = 30.0
#: Random bytes that bodies are cut from.
_POOL_BYTES = 1 << 16


def make_request(client: int, sequence: int, body: bytes) -> bytes:
    return REQUEST.pack(client, sequence, zlib.crc32(body), 0) + body


def answer(request: memoryview | bytes) -> bytes:
    """What a checking server replies to a test request."""
    client, sequence, _, _ = REQUEST.unpack_from(request)
    body = bytes(request[REQUEST.size :])
    return REPLY.pack(client, sequence, zlib.crc32(request), os.getpid()) + body[::-1]


def check_reply(reply: memoryview | bytes, request: bytes) -> int:
    """The pid of the server that answered ``request``; AssertionError if ``reply`` is not its answer."""
    client, sequence, crc, pid = REPLY.unpack_from(reply)
    expected_client, expected_sequence, _, _ = REQUEST.unpack_from(request)
    assert (client, sequence) == (expected_client, expected_sequence), (
        f"client {expected_client} call {expected_sequence} got the reply of client {client} call {sequence}"
    )
    assert crc == zlib.crc32(request), f"client {client} call {sequence}: the server saw other bytes"
    assert bytes(reply[REPLY.size :]) == request[REQUEST.size :][::-1], (
        f"client {client} call {sequence}: the reply body is not the request body reversed"
    )
    return int(pid)


def _await(conn: Connection, kind: str) -> None:
    if not conn.poll(CHILD_TIMEOUT):
        raise TimeoutError(f"child {os.getpid()} waited {CHILD_TIMEOUT} s for the parent's {kind!r}")
    message = conn.recv()
    if message != (kind,):
        raise AssertionError(f"child {os.getpid()} expected ({kind!r},), got {message!r}")


class _Handled:
    """What a checking server handled: (client, sequence) pairs, packed."""

    def __init__(self) -> None:
        self.pairs = array("Q")
        self.lock = threading.Lock()

    def add(self, client: int, sequence: int) -> None:
        with self.lock:
            self.pairs.append(client << 32 | sequence)


def _bytes_handler(handled: _Handled, conn: Connection | None) -> Any:
    def handler(request: memoryview) -> bytes:
        client, sequence, _, _ = REQUEST.unpack_from(request)
        body = request[REQUEST.size :]
        if bytes(body[:4]) == b"HOLD" and conn is not None:
            conn.send(("holding", os.getpid(), client, sequence))
            time.sleep(CHILD_TIMEOUT)  # until the parent SIGKILLs this process
        handled.add(client, sequence)
        return answer(request)

    return handler


def _object_handler(handled: _Handled) -> Any:
    def handler(obj: Any) -> Any:
        tag, client, sequence, body = obj
        assert tag == "obj", obj
        handled.add(client, sequence)
        return ("ok", client, sequence, zlib.crc32(body), os.getpid(), len(body))

    return handler


# ---- servers ------------------------------------------------------------------


def serve_until_told(name: str, how: str, conn: Connection) -> dict[str, Any]:
    """Serve until the parent sends ``("stop",)``; report ``("serving", pid)`` first.

    ``how`` is ``"serve"`` (bytes, with ``serve``), ``"objects"``
    (``serve_objects``) or ``"iterate"`` (``for request in server``, answering
    bytes and object calls alike, by hand).  The stop comes through a watcher
    thread calling ``Server.close()``, as an application stops a server from
    another thread.  Returns the pid and the (client, sequence) pairs handled.
    """
    handled = _Handled()
    server = Server(name, create=False)

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError, TimeoutError):  # the parent went away
            _await(conn, "stop")
        server.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    conn.send(("serving", os.getpid()))
    try:
        if how == "serve":
            server.serve(_bytes_handler(handled, conn))
        elif how == "objects":
            server.serve_objects(_object_handler(handled))
        else:
            answer_bytes, answer_object = _bytes_handler(handled, conn), _object_handler(handled)
            for request in server:
                if bytes(request.data[:4]) == b"MPK5":  # the pickle codec's magic: call_object
                    request.reply_object(answer_object(request.object()))
                else:
                    request.reply(answer_bytes(request.data))
    finally:
        server.close()
    watcher.join(CHILD_TIMEOUT)
    return {"pid": os.getpid(), "handled": handled.pairs.tobytes()}


def serve_for(name: str, idle: float) -> int:
    """Serve checking replies until no request came for ``idle`` seconds; return how many were handled."""
    with Server(name, create=False) as server:
        return server.serve(_bytes_handler(_Handled(), None), timeout=idle)


def serve_with_loans(name: str, idle: float) -> int:
    """Answer checked requests by hand, writing each reply in place (``loan_reply``), until idle."""
    handled = 0
    with Server(name, create=False) as server:
        while True:
            try:
                request = server.recv(timeout=idle)
            except memipc.Empty:
                return handled
            reply = answer(request.data)
            with request.loan_reply(len(reply)) as buf:
                buf[:] = reply
            handled += 1


def serve_slowly(name: str, delay: float, count: int, conn: Connection) -> int:
    """Report ``("serving", pid)``; answer ``count`` requests, each after ``delay`` seconds."""
    with Server(name, create=False) as server:
        conn.send(("serving", os.getpid()))
        for _ in range(count):
            request = server.recv(timeout=CHILD_TIMEOUT)
            time.sleep(delay)
            request.reply(answer(request.data))
    return count


# ---- clients --------------------------------------------------------------------


def call_many(name: str, client: int, count: int, seed: int, high: int) -> dict[str, Any]:
    """Make ``count`` checked calls of random sizes (up to ``high`` body bytes) with every method.

    Mostly ``call``, some ``call_view`` and ``call_object``.  Returns, per
    server pid, how many of this client's calls it answered.
    """
    rng = random.Random(seed)
    pool = rng.randbytes(_POOL_BYTES + high)
    servers: dict[int, int] = {}
    with Client(name, timeout=CHILD_TIMEOUT) as cli:
        for sequence in range(count):
            offset = rng.randrange(_POOL_BYTES)
            body = pool[offset : offset + rng.randint(0, high)]
            choice = rng.random()
            if choice < 0.8:
                request = make_request(client, sequence, body)
                pid = check_reply(cli.call(request), request)
            elif choice < 0.9:
                request = make_request(client, sequence, body)
                with cli.call_view(request) as view:
                    pid = check_reply(view, request)
            else:
                reply = cli.call_object(("obj", client, sequence, body))
                assert reply[:4] == ("ok", client, sequence, zlib.crc32(body)), reply
                assert reply[5] == len(body)
                pid = reply[4]
            servers[pid] = servers.get(pid, 0) + 1
    return {"client": client, "servers": servers}


def call_objects(name: str, client: int, count: int, seed: int) -> int:
    """``count`` object calls (to servers running ``serve_objects``); returns how many were checked."""
    rng = random.Random(seed)
    with Client(name, timeout=CHILD_TIMEOUT) as cli:
        for sequence in range(count):
            body = rng.randbytes(rng.randint(0, 3000))
            reply = cli.call_object(("obj", client, sequence, body))
            assert reply[:4] == ("ok", client, sequence, zlib.crc32(body)), reply
    return count


def call_once(name: str, body: bytes) -> bytes:
    """One checked call (killed at a fault point on its way)."""
    with Client(name, timeout=CHILD_TIMEOUT) as cli:
        request = make_request(99, 0, body)
        reply = cli.call(request)
        check_reply(reply, request)
        return reply


def call_and_report(name: str, body: bytes, conn: Connection) -> str:
    """Report ``("calling", pid)`` and make one call with no timeout; return how it ended."""
    with Client(name) as cli:
        request = make_request(7, 0, body)
        conn.send(("calling", os.getpid()))
        try:
            check_reply(cli.call(request, timeout=None), request)
        except memipc.Error as error:
            return f"{type(error).__name__}: {error}"
    return "replied"


def hold_a_client(name: str, conn: Connection) -> None:
    """Open a Client, report ``("holding", pid, reply queue name)``, then wait to be SIGKILLed."""
    cli = Client(name)
    replies = cli._replies
    assert replies is not None
    conn.send(("holding", os.getpid(), replies.name))
    time.sleep(CHILD_TIMEOUT)
    raise TimeoutError(f"child {os.getpid()} held its client for {CHILD_TIMEOUT} s and was never killed")


def large_calls(name: str, sizes: list[int]) -> list[int]:
    """One checked call per size (bodies of random bytes); returns the reply sizes."""
    rng = random.Random(sum(sizes))
    got = []
    with Client(name, timeout=CHILD_TIMEOUT) as cli:
        for sequence, size in enumerate(sizes):
            request = make_request(5, sequence, rng.randbytes(size - REQUEST.size))
            reply = cli.call(request)
            check_reply(reply, request)
            got.append(len(reply))
    return got


def time_out_then_call(name: str, first_timeout: float) -> dict[str, Any]:
    """Call with a short timeout (expected to run out), then again with a long one."""
    with Client(name) as cli:
        first = make_request(3, 0, b"late" * 10)
        started = time.monotonic()
        try:
            cli.call(first, timeout=first_timeout)
        except memipc.CallTimeoutError as error:
            outcome = f"{type(error).__name__}: {error}"
            elapsed = time.monotonic() - started
            is_empty = isinstance(error, memipc.Empty) and isinstance(error, TimeoutError)
        else:
            return {"outcome": "replied in time"}
        second = make_request(3, 1, b"next" * 10)
        check_reply(cli.call(second, timeout=CHILD_TIMEOUT), second)
        return {
            "outcome": outcome,
            "elapsed": elapsed,
            "is_empty_and_timeout": is_empty,
            "discarded": cli.stats().drops,
        }


# ---- Ctrl-C ----------------------------------------------------------------------


def _until_interrupted(conn: Connection, block: Any) -> float:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    conn.send(("blocking", os.getpid(), time.monotonic()))
    try:
        outcome = block()
    except KeyboardInterrupt:
        return time.monotonic()
    raise AssertionError(f"the blocking call returned {outcome!r} instead of raising KeyboardInterrupt")


def interrupt_call(name: str, conn: Connection) -> bytes:
    """Block in ``call`` (nobody serves); after Ctrl-C and the parent's go, call again."""
    with Client(name) as cli:
        caught_at = _until_interrupted(conn, lambda: cli.call(b"first", timeout=None))
        conn.send(("interrupted", caught_at))
        _await(conn, "go")
        return cli.call(b"second", timeout=CHILD_TIMEOUT)


def interrupt_serve(name: str, conn: Connection) -> int:
    """Block in ``serve`` (nobody calls); after Ctrl-C and the parent's go, serve one more call."""
    with Server(name, create=False) as server:
        caught_at = _until_interrupted(conn, lambda: server.serve(lambda data: bytes(data).upper()))
        conn.send(("interrupted", caught_at))
        _await(conn, "go")
        return server.serve(lambda data: bytes(data).upper(), timeout=1.0)
