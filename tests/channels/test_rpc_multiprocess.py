"""Server / Client between real spawned processes: answers, crashes, timeouts, Ctrl-C, leftovers.

Clients send checked requests and servers send checked replies
(:mod:`tests.channels.rpc_children` describes both), so a reply that reached
the wrong client or the wrong call, or carries another request's bytes, fails
in the client that got it.  The outcomes the protocol allows:

* every call gets exactly one reply, its own, whichever of the servers took
  it; each request is handled by exactly one server;
* a server SIGKILLed while it holds a call makes that call raise
  ServerDiedError soon after (the promise is about a second; the bound here is
  ``RECOVERY_BOUND``), and the other servers keep serving;
* a client SIGKILLed before its reply costs the server nothing: the reply is
  delivered into a queue nobody reads or dropped, never waited on for long,
  and no name is left in /dev/shm once the others close (the next Client or
  Server removes a dead client's reply queue; a server closing its handle on
  one removes it too);
* Ctrl-C reaches a process blocked in ``call`` or ``serve`` within 100 ms
  (bound here: ``INTERRUPT_BOUND``), and both still work afterwards.

Measured recovery and interrupt times are printed (``pytest -rP``) and
recorded as junit properties.  Every step has a timeout.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from multiprocessing.connection import Connection, wait
from typing import Any

import pytest

import memipc
from memipc import Client, Queue, Server, ServerDiedError, _names
from memipc._channels import _rpc
from memipc._platform import current as platform
from tests._support import killpoints, procs
from tests.channels import rpc_children as children
from tests.sync import crash_children

#: Timeout of every multi-process step.
TIMEOUT = 60.0
#: A dead server's caller hears of it within about a second; this leaves room for a loaded machine.
RECOVERY_BOUND = 1.5
#: Ctrl-C is promised within 100 ms; this leaves room for a loaded machine.
INTERRUPT_BOUND = 0.5
#: How long a blocked child is watched before it is interrupted.
SETTLE = 0.2

Record = Callable[[str, object], None]


# ---- helpers ------------------------------------------------------------------


def report(record_property: Record, label: str, seconds: float) -> None:
    print(f"{label}: {seconds * 1000:.1f} ms")
    record_property(label, f"{seconds:.4f}")


def our_segments(name: str) -> list[str]:
    prefix = _names.parse(name).os_name
    return sorted(os_name for os_name in platform.list_segments() if os_name.startswith(prefix))


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.005)


@contextmanager
def reporting(
    kind: str, function: Callable[..., Any], *args: Any
) -> Iterator[tuple[procs.Child, Connection, tuple[Any, ...]]]:
    """A child running ``function(*args, conn)`` (duplex ``conn``) that has reported ``kind``."""
    parent_end, child_end = crash_children.pipe(duplex=True)
    try:
        with procs.started(function, *args, child_end, timeout=TIMEOUT) as child:
            child_end.close()
            yield child, parent_end, crash_children.expect(parent_end, child, kind, TIMEOUT)
    finally:
        child_end.close()
        parent_end.close()


def gather(children_: list[procs.Child], timeout: float = TIMEOUT) -> list[Any]:
    """The children's results in order; fails as soon as any of them fails."""
    results: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while len(results) < len(children_):
        pending = {child._parent: child for child in children_ if id(child) not in results}
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"children did not finish within {timeout} s")
        for conn in wait(list(pending), remaining):
            child = pending[conn]  # type: ignore[index]
            results[id(child)] = child.result(5)
    return [results[id(child)] for child in children_]


class Caller(threading.Thread):
    """One call in a thread of the parent; records its outcome and when it came."""

    def __init__(self, name: str, body: bytes, timeout: float | None = TIMEOUT) -> None:
        super().__init__(daemon=True)
        self.service, self.body, self.call_timeout = name, body, timeout
        self.client = Client(name)
        self.outcome: BaseException | bytes | None = None
        self.ended_at = 0.0
        self.start()

    def run(self) -> None:
        request = children.make_request(1, 0, self.body)
        try:
            self.outcome = self.client.call(request, timeout=self.call_timeout)
        except BaseException as error:
            self.outcome = error
        self.ended_at = time.monotonic()

    def finish(self) -> BaseException | bytes | None:
        self.join(TIMEOUT)
        assert not self.is_alive(), f"the call did not end within {TIMEOUT} s"
        self.client.close()
        return self.outcome


def stop_servers(servers: list[tuple[procs.Child, Connection, tuple[Any, ...]]]) -> list[dict[str, Any]]:
    for _, conn, _ in servers:
        conn.send(("stop",))
    return gather([child for child, _, _ in servers])


def handled_pairs(summaries: list[dict[str, Any]]) -> Counter[int]:
    pairs: Counter[int] = Counter()
    for summary in summaries:
        packed = array("Q")
        packed.frombytes(summary["handled"])
        pairs.update(packed)
    return pairs


# ---- many clients, several servers ----------------------------------------------------


CLIENTS, SERVERS, CALLS = 4, 3, 300


def test_many_clients_and_several_servers_answer_every_call_once_to_its_own_caller(
    name: str, record_property: Record
) -> None:
    with Server(name, capacity=1 << 16, create=True) as service, ExitStack() as stack:
        servers = [
            stack.enter_context(reporting("serving", children.serve_until_told, name, "iterate"))
            for _ in range(SERVERS)
        ]
        clients = [
            procs.Child(children.call_many, name, client, CALLS, 1000 + client, 4000, timeout=TIMEOUT)
            for client in range(CLIENTS)
        ]
        try:
            results = gather(clients)
        finally:
            for child in clients:
                child.kill()
        summaries = stop_servers(servers)
        per_server: Counter[int] = Counter()
        for result in results:
            assert sum(result["servers"].values()) == CALLS, result
            per_server.update(result["servers"])
        server_pids = {summary["pid"] for summary in summaries}
        assert set(per_server) <= server_pids, "a reply came from a process that is not one of the servers"
        pairs = handled_pairs(summaries)
        expected = {client << 32 | sequence for client in range(CLIENTS) for sequence in range(CALLS)}
        assert set(pairs) == expected, "some calls were never handled, or unknown ones were"
        assert max(pairs.values()) == 1, "a request was handled twice"
        print(f"calls per server pid: {dict(per_server)}")
        record_property("calls_per_server", str(dict(per_server)))
        stats = service.stats()
        assert stats.sent == stats.received == CLIENTS * CALLS
        assert (stats.depth, stats.drops) == (0, 0)
    assert our_segments(name) == []


def test_object_calls_go_through_serve_objects_in_other_processes(name: str) -> None:
    with Server(name, create=True), ExitStack() as stack:
        servers = [
            stack.enter_context(reporting("serving", children.serve_until_told, name, "objects"))
            for _ in range(2)
        ]
        clients = [procs.Child(children.call_objects, name, client, 100, client) for client in range(2)]
        assert gather(clients) == [100, 100]
        pairs = handled_pairs(stop_servers(servers))
        assert sum(pairs.values()) == len(pairs) == 200


def test_requests_and_replies_of_a_mebibyte_cross_processes(name: str) -> None:
    sizes = [1 << 20, children.REQUEST.size, 65536, 1 << 20, 12345]
    with Server(name, max_message=1 << 20, create=True), ExitStack() as stack:
        servers = [stack.enter_context(reporting("serving", children.serve_until_told, name, "serve"))]
        assert procs.run(children.large_calls, name, sizes, timeout=TIMEOUT) == sizes
        stop_servers(servers)


# ---- servers that die ------------------------------------------------------------------


def test_a_server_killed_mid_request_makes_its_call_raise_server_died_error_and_the_others_go_on(
    name: str, record_property: Record
) -> None:
    with Server(name, create=True) as service, ExitStack() as stack:
        servers = [
            stack.enter_context(reporting("serving", children.serve_until_told, name, "serve"))
            for _ in range(2)
        ]
        caller = Caller(name, b"HOLD this call")
        ready = wait([conn for _, conn, _ in servers], TIMEOUT)
        assert ready, f"no server took the call within {TIMEOUT} s"
        holder = next(server for server in servers if server[1] is ready[0])
        message = holder[1].recv()
        assert message[0] == "holding", message
        victim = message[1]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        outcome = caller.finish()
        assert isinstance(outcome, ServerDiedError), outcome
        assert f"server process {victim} died" in str(outcome)
        report(record_property, "server_died_error_after_kill", caller.ended_at - killed_at)
        assert caller.ended_at - killed_at <= RECOVERY_BOUND
        holder[0].process.join(TIMEOUT)
        survivor = next(server for server in servers if server is not holder)
        with Client(name, timeout=TIMEOUT) as client:
            for sequence in range(20):
                request = children.make_request(2, sequence, b"after the death")
                assert children.check_reply(client.call(request), request) == survivor[0].pid
        stop_servers([survivor])
        # The dead server's record is reclaimed (and counted in drops) once a sender needs its room.
        assert service.stats().depth == 0


@pytest.mark.parametrize(
    ("point", "serve"),
    [
        ("rpc.serve.after_claim", children.serve_for),
        ("rpc.serve.in_handler", children.serve_for),
        ("rpc.reply.before_commit", children.serve_with_loans),
    ],
)
def test_a_server_killed_at_a_named_point_makes_the_waiting_call_raise_server_died_error(
    name: str, point: str, serve: Callable[[str, float], int], record_property: Record
) -> None:
    with Server(name, create=True) as service:
        caller = Caller(name, b"killed at " + point.encode())
        wait_until(lambda: service.stats().sent == 1, "the request to be queued")
        killpoints.kill_at(point, serve, name, 5.0, timeout=TIMEOUT)
        killed_at = time.monotonic()
        outcome = caller.finish()
        assert isinstance(outcome, ServerDiedError), outcome
        report(record_property, f"server_died_error_after_kill_at_{point}", caller.ended_at - killed_at)
        assert caller.ended_at - killed_at <= RECOVERY_BOUND
        # The service still works, with a new server.
        serving = threading.Thread(target=service.serve, args=(lambda data: bytes(data)[::-1],), daemon=True)
        serving.start()
        with Client(name, timeout=TIMEOUT) as client:
            assert client.call(b"again") == b"niaga"
        service.close()
        serving.join(TIMEOUT)
    assert our_segments(name) == []


def test_a_call_to_a_service_whose_only_server_was_killed_idle_raises_server_died_error(
    name: str, record_property: Record
) -> None:
    founder = Server(name, create=True)
    with Client(name) as client:
        founder.close()  # the client keeps the service; the only server is the child below
        with reporting("serving", children.serve_until_told, name, "serve") as (server, _, _):
            request = children.make_request(4, 0, b"before")
            children.check_reply(client.call(request, timeout=TIMEOUT), request)
            server.kill()
        started = time.monotonic()
        with pytest.raises(ServerDiedError, match="no server is running"):
            client.call(b"anyone?", timeout=TIMEOUT)
        waited = time.monotonic() - started
        report(record_property, "server_died_error_with_no_server_after", waited)
        assert _rpc.NO_SERVER_GRACE <= waited <= _rpc.NO_SERVER_GRACE + RECOVERY_BOUND
    assert our_segments(name) == []


# ---- clients that die --------------------------------------------------------------


def test_a_client_killed_after_sending_costs_the_server_nothing_and_leaves_no_name(name: str) -> None:
    with Server(name, create=True) as server:
        dead = killpoints.kill_at("rpc.call.after_send", children.call_once, name, b"from the dead")
        request = server.recv(timeout=TIMEOUT)
        assert request.client_pid == dead
        started = time.monotonic()
        request.reply(children.answer(request.data))  # into a queue nobody reads: harmless
        assert time.monotonic() - started < TIMEOUT
        with Client(name, timeout=TIMEOUT) as client:
            serving = threading.Thread(target=server.serve, args=(children.answer,), daemon=True)
            serving.start()
            follow = children.make_request(2, 0, b"next")
            children.check_reply(client.call(follow), follow)
        server.close()
        serving.join(TIMEOUT)
    assert our_segments(name) == []


def test_a_client_killed_while_writing_its_request_holds_up_no_one(
    name: str, record_property: Record
) -> None:
    with Server(name, create=True) as server:
        killpoints.kill_at("rpc.call.before_commit", children.call_once, name, b"half-sent")
        killed_at = time.monotonic()
        serving = threading.Thread(target=server.serve, args=(children.answer,), daemon=True)
        serving.start()
        with Client(name, timeout=TIMEOUT) as client:
            request = children.make_request(2, 0, b"behind the dead one")
            children.check_reply(client.call(request), request)
        report(record_property, "call_behind_a_dead_writer_answered_after", time.monotonic() - killed_at)
        assert time.monotonic() - killed_at <= RECOVERY_BOUND
        assert server.stats().drops == 1  # the dead client's half-written request, now padding
        server.close()
        serving.join(TIMEOUT)
    assert our_segments(name) == []


def test_a_reply_to_a_dead_client_whose_queue_is_full_is_dropped_soon(
    name: str, record_property: Record
) -> None:
    with Server(name, create=True) as server:
        with reporting("calling", children.call_and_report, name, b"x") as (child, _, _):
            request = server.recv(timeout=TIMEOUT)
            child.kill()
        # Fill the dead client's reply queue (this handle keeps it from going away meanwhile).
        with Queue(_rpc.reply_name(name, request._slot, request._nonce), create=False) as replies:
            for junk in (b"junk" * 100, b""):  # then empty messages: not even a header's room is left
                while True:
                    try:
                        replies.send_nowait(junk)
                    except memipc.Full:
                        break
            drops = server.stats().drops
            started = time.monotonic()
            request.reply(b"nobody will read this", timeout=None)
            took = time.monotonic() - started
            assert len(replies) > 0, "the reply queue was not full"
        report(record_property, "reply_to_dead_full_client_dropped_after", took)
        assert took >= _rpc.CLIENT_SLICE * 0.9, "the reply did not wait on the full queue"
        assert took <= RECOVERY_BOUND
        assert server.stats().drops == drops + 1
        with Client(name):  # sweeps the dead client's slot
            pass
    assert our_segments(name) == []


@pytest.mark.parametrize("sweeper", [Client, Server])
def test_a_client_killed_while_idle_leaves_a_reply_queue_the_next_client_or_server_removes(
    name: str, sweeper: type[Client] | type[Server]
) -> None:
    with Server(name, create=True):
        with reporting("holding", children.hold_a_client, name) as (child, _, message):
            reply_queue = _names.parse(message[2]).os_name
            assert reply_queue in our_segments(name)
            child.kill()
        assert reply_queue in our_segments(name), "nothing removes it before someone looks"
        with sweeper(name):
            assert reply_queue not in our_segments(name)
    assert our_segments(name) == []


# ---- timeouts ----------------------------------------------------------------------


def test_a_call_that_times_out_across_processes_discards_its_late_reply(name: str) -> None:
    with (
        Server(name, create=True),
        reporting("serving", children.serve_slowly, name, 0.5, 2) as (server, _, _),
    ):
        result = procs.run(children.time_out_then_call, name, 0.2, timeout=TIMEOUT)
        assert result["outcome"].startswith("CallTimeoutError"), result
        assert f"server process {server.pid} is still handling it" in result["outcome"]
        assert result["elapsed"] >= 0.2
        assert result["is_empty_and_timeout"]
        assert result["discarded"] == 1
        assert server.result(TIMEOUT) == 2


# ---- Ctrl-C ----------------------------------------------------------------------


def interrupt(child: procs.Child, conn: Connection, what: str, record_property: Record) -> None:
    """``child`` is blocked in ``what``: send SIGINT, check KeyboardInterrupt came in time."""
    time.sleep(SETTLE)
    sent_at = time.monotonic()
    child.signal(signal.SIGINT)
    _, caught_at = crash_children.expect(conn, child, "interrupted", TIMEOUT)
    report(record_property, f"ctrl-c latency in {what}", caught_at - sent_at)
    assert caught_at - sent_at < INTERRUPT_BOUND


def test_ctrl_c_interrupts_a_blocked_call_and_the_client_still_works(
    name: str, record_property: Record
) -> None:
    with Server(name, create=True) as server:
        with reporting("blocking", children.interrupt_call, name) as (child, conn, _):
            wait_until(lambda: server.stats().sent == 1, "the call to be sent")
            interrupt(child, conn, "Client.call", record_property)
            serving = threading.Thread(target=server.serve, args=(lambda data: bytes(data).upper(),))
            serving.start()
            crash_children.go(conn)
            assert child.result(TIMEOUT) == b"SECOND"
        server.close()
        serving.join(TIMEOUT)


def test_ctrl_c_interrupts_serve_and_the_server_still_works(name: str, record_property: Record) -> None:
    with Server(name, create=True) as service:
        waits = service.stats().waits
        with reporting("blocking", children.interrupt_serve, name) as (child, conn, _):
            wait_until(lambda: service.stats().waits > waits, "the server to sleep in serve()")
            interrupt(child, conn, "Server.serve", record_property)
            crash_children.go(conn)
            with Client(name, timeout=TIMEOUT) as client:
                assert client.call(b"again") == b"AGAIN"
            assert child.result(TIMEOUT) == 1
