"""Server / Client in one process: servers run in threads, clients in the test's thread.

What is checked here: every way to call and to answer (bytes, objects, zero
copy both ways), the errors a caller can get and what their messages say,
timeouts and stale replies, requests whose callers gave up or whose servers
closed, malformed requests and damaged control blocks, closing from another
thread and from a handler, and that every name a client makes goes away.
``Ring.inspect`` (the C side of "what became of my request") is checked
directly on a Queue's ring.  Crashes and real processes are in
test_rpc_multiprocess.py.
"""

from __future__ import annotations

import gc
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memipc
from memipc import (
    CallTimeoutError,
    Client,
    ClosedError,
    CorruptRegionError,
    Empty,
    KindMismatchError,
    MessageTooLargeError,
    NotFoundError,
    Queue,
    RemoteError,
    Server,
    ServerDiedError,
    _core,
    _names,
)
from memipc._channels import _rpc
from memipc._platform import current as platform

#: Timeout of every blocking step.
TIMEOUT = 30.0
#: Where the user area starts in a segment file (see _segment.py).
DATA_BASE = 4096


# ---- helpers ------------------------------------------------------------------


class Serving(threading.Thread):
    """``server.serve(handler)`` (or ``serve_objects``) in a thread; ``stop()`` closes the server."""

    def __init__(self, server: Server, handler: Callable[[Any], Any], *, objects: bool = False) -> None:
        super().__init__(daemon=True)
        self.server, self.handler, self.objects = server, handler, objects
        self.handled: int | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            serve = self.server.serve_objects if self.objects else self.server.serve
            self.handled = serve(self.handler)
        except BaseException as error:  # reported by stop()
            self.error = error

    def stop(self) -> int:
        self.server.close()
        self.join(TIMEOUT)
        assert not self.is_alive(), "serve() did not return after close()"
        if self.error is not None:
            raise self.error
        assert self.handled is not None
        return self.handled


@contextmanager
def service(
    name: str, handler: Callable[[Any], Any], *, objects: bool = False, **kwargs: Any
) -> Iterator[tuple[Server, Client]]:
    """A server serving ``handler`` in a thread and a client; both closed after."""
    server = Server(name, create=True, **kwargs)
    serving = Serving(server, handler, objects=objects)
    try:
        with Client(name, timeout=TIMEOUT) as client:
            yield server, client
    finally:
        serving.stop()


def our_segments(name: str) -> list[str]:
    """OS names in the shared-memory directory made for ``name`` (the service and its reply queues)."""
    prefix = _names.parse(name).os_name
    return sorted(os_name for os_name in platform.list_segments() if os_name.startswith(prefix))


def upper(data: memoryview) -> bytes:
    return bytes(data).upper()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.002)


# ---- calling and answering ---------------------------------------------------------


def test_a_call_returns_what_the_handler_returns(name: str) -> None:
    with service(name, upper) as (_, client):
        assert client.call(b"hello") == b"HELLO"
        assert client.call(bytearray(b"x")) == b"X"
        assert client.call(b"") == b""
        assert client.call(memoryview(b"abc")[1:]) == b"BC"


def test_any_bytes_like_request_or_reply_is_sent_as_its_bytes(name: str) -> None:
    import array

    with service(name, lambda data: array.array("H", [1, 2, 3])) as (_, client):
        assert client.call(array.array("d", [1.5])) == array.array("H", [1, 2, 3]).tobytes()
        assert client.call(memoryview(b"abcdef")[::2]) == array.array("H", [1, 2, 3]).tobytes()


def test_a_handler_that_echoes_the_request_view_or_a_slice_of_it_works(name: str) -> None:
    with service(name, lambda data: data[2:]) as (server, client):
        for index in range(50):
            assert client.call(b"--payload %d" % index) == b"payload %d" % index
        with service(name + "b", lambda data: data) as (_, other):
            assert other.call(b"same") == b"same"
        assert server.stats().depth == 0


def test_call_object_gets_what_serve_objects_returns_for_any_picklable_object(name: str) -> None:
    numpy = pytest.importorskip("numpy")
    with service(name, lambda obj: {"got": obj, "len": len(obj)}, objects=True) as (_, client):
        assert client.call_object([1, "two", 3.0]) == {"got": [1, "two", 3.0], "len": 3}
        array = numpy.arange(1000, dtype="float64").reshape(10, 100)
        reply = client.call_object([array])
        assert reply["len"] == 1
        numpy.testing.assert_array_equal(reply["got"][0], array)


def test_call_view_reads_the_reply_in_place_and_frees_it_when_the_block_ends(name: str) -> None:
    with service(name, upper) as (_, client):
        with client.call_view(b"zero copy") as view:
            assert view.readonly
            assert bytes(view) == b"ZERO COPY"
        kept = []
        with pytest.raises(BufferError, match="outlived"), client.call_view(b"kept") as view:
            kept.append(view[:2])
        kept.clear()
        assert client.call(b"after") == b"AFTER"


def test_iterating_a_server_yields_each_request_once_to_answer_by_hand(name: str) -> None:
    with Server(name, create=True) as server, Client(name, timeout=TIMEOUT) as client:
        replies: list[bytes] = []
        caller = threading.Thread(target=lambda: replies.extend(client.call(b"%d" % i) for i in range(5)))
        caller.start()
        seen = []
        for request in server:
            assert request.client_pid == os.getpid()
            seen.append(bytes(request.data))
            request.reply(b"r" + request.data)
            if len(seen) == 5:
                break
        caller.join(TIMEOUT)
        assert seen == [b"%d" % i for i in range(5)]
        assert replies == [b"r%d" % i for i in range(5)]


def test_recv_gives_a_request_with_its_data_in_place_until_it_is_answered(name: str) -> None:
    with Server(name, create=True) as server, Client(name, timeout=TIMEOUT) as client:
        result: list[bytes] = []
        caller = threading.Thread(target=lambda: result.append(client.call(b"question")))
        caller.start()
        request = server.recv(timeout=TIMEOUT)
        assert repr(request).endswith("pending>")
        data = request.data
        assert data.readonly and bytes(data) == b"question"
        with pytest.raises(TypeError):
            data[0] = 0
        request.reply(b"answer")
        caller.join(TIMEOUT)
        assert result == [b"answer"]
        assert request.answered
        with pytest.raises(ValueError, match="answered"):
            request.data  # noqa: B018
        with pytest.raises(ValueError, match="one reply"):
            request.reply(b"twice")
        with pytest.raises(ValueError, match="released"):
            bytes(data)


def test_loan_reply_writes_the_reply_straight_into_the_callers_queue(name: str) -> None:
    with Server(name, create=True) as server, Client(name, timeout=TIMEOUT) as client:
        result: list[bytes] = []
        caller = threading.Thread(target=lambda: result.append(client.call(b"12345")))
        caller.start()
        request = server.recv(timeout=TIMEOUT)
        with request.loan_reply(5) as buf:
            buf[:] = request.data[::-1]
        caller.join(TIMEOUT)
        assert result == [b"54321"]


def test_a_loan_reply_block_that_raises_sends_nothing_and_the_request_stays_open(name: str) -> None:
    with Server(name, create=True) as server, Client(name, timeout=TIMEOUT) as client:
        result: list[bytes] = []
        caller = threading.Thread(target=lambda: result.append(client.call(b"q")))
        caller.start()
        request = server.recv(timeout=TIMEOUT)

        def fail_half_way() -> None:
            with request.loan_reply(3) as buf:
                buf[:] = b"bad"
                raise RuntimeError

        with pytest.raises(RuntimeError):
            fail_half_way()
        assert not request.answered
        request.reply_object("fine")  # any reply still goes
        caller.join(TIMEOUT)
        assert len(result) == 1 and result[0] != b"bad"


def test_requests_and_replies_of_a_mebibyte_go_through(name: str) -> None:
    big = bytes(range(256)) * 4096
    with service(name, lambda data: bytes(data)[::-1], max_message=1 << 20) as (server, client):
        assert server.max_message == client.max_message == 1 << 20
        assert client.call(big) == big[::-1]
        with client.call_view(big[:1000]) as view:
            assert bytes(view) == big[:1000][::-1]


def test_a_message_larger_than_max_message_is_refused_at_once(name: str) -> None:
    with service(name, lambda data: b"x" * (2 * len(data)), max_message=1000) as (_, client):
        started = time.monotonic()
        with pytest.raises(MessageTooLargeError, match=r"1001 bytes.*max_message=1000"):
            client.call(b"x" * 1001)
        assert time.monotonic() - started < TIMEOUT
        assert client.call(b"x" * 500) == b"x" * 1000
        with pytest.raises(RemoteError, match="MessageTooLargeError"):
            client.call(b"x" * 600)  # the reply would be 1200 bytes


def test_a_client_with_a_small_reply_queue_hears_when_a_reply_does_not_fit_it(name: str) -> None:
    with service(name, lambda data: b"r" * int(bytes(data))) as (_, default):
        with Client(name, capacity=4096, timeout=TIMEOUT) as small:
            assert small.call(b"1984") == b"r" * 1984
            with pytest.raises(RemoteError, match=r"reply queue of client pid \d+ takes \(1984\)"):
                small.call(b"3000")
            assert small.call(b"10") == b"r" * 10
        assert default.call(b"3000") == b"r" * 3000


# ---- what a caller gets when things go wrong -------------------------------------


def test_a_call_nobody_answers_in_time_raises_call_timeout_error_which_is_empty_and_timeout_error(
    name: str,
) -> None:
    with Server(name, create=True), Client(name) as client:
        started = time.monotonic()
        with pytest.raises(CallTimeoutError, match=r"no reply within 0.3 s: no server has taken") as caught:
            client.call(b"anyone?", timeout=0.3)
        assert time.monotonic() - started >= 0.3
        assert isinstance(caught.value, Empty)
        assert isinstance(caught.value, queue.Empty)
        assert isinstance(caught.value, TimeoutError)
        with pytest.raises(TimeoutError):
            client.call(b"now", timeout=0)


def test_the_client_timeout_is_the_default_of_its_calls(name: str) -> None:
    with Server(name, create=True), Client(name, timeout=0.2) as client:
        assert client.timeout == 0.2
        with pytest.raises(CallTimeoutError, match=r"0\.2 s"):
            client.call(b"x")
        with pytest.raises(CallTimeoutError, match=r"0\.1 s"):
            client.call(b"x", timeout=0.1)


def test_a_late_reply_to_a_call_that_gave_up_is_discarded_and_the_next_call_gets_its_own(name: str) -> None:
    with Server(name, create=True) as server, Client(name) as client:
        held: list[memipc.Request] = []
        taker = threading.Thread(target=lambda: held.append(server.recv(timeout=TIMEOUT)))
        taker.start()
        with pytest.raises(CallTimeoutError, match=f"server process {os.getpid()} is still handling it"):
            client.call(b"slow", timeout=0.4)
        taker.join(TIMEOUT)
        held[0].reply(b"too late")  # the caller gave up: queued as stale, never mistaken for a reply
        result: list[bytes] = []
        caller = threading.Thread(target=lambda: result.append(client.call(b"next", timeout=TIMEOUT)))
        caller.start()
        request = server.recv(timeout=TIMEOUT)
        request.reply(b"own reply")
        caller.join(TIMEOUT)
        assert result == [b"own reply"]
        assert client.stats().drops == 1  # the stale reply, discarded


def test_a_request_whose_caller_gave_up_before_a_server_took_it_is_not_handled(name: str) -> None:
    with Server(name, create=True) as server, Client(name) as client:
        with pytest.raises(CallTimeoutError):
            client.call(b"forgotten", timeout=0.05)
        drops = server.stats().drops
        with pytest.raises(Empty):
            server.recv(timeout=0.1)  # takes the abandoned request and drops it
        assert server.stats().drops == drops + 1


def test_a_handler_that_raises_gives_its_caller_remote_error_and_the_server_goes_on(name: str) -> None:
    def handler(data: memoryview) -> bytes:
        if bytes(data) == b"bad":
            raise ValueError("bad input 42")
        return b"good"

    with service(name, handler) as (_, client):
        with pytest.raises(RemoteError, match=r"(?s)handler raised: ValueError: bad input 42.*Traceback"):
            client.call(b"bad")
        assert client.call(b"fine") == b"good"


def test_an_error_text_longer_than_max_message_reaches_the_caller_cut_short(name: str) -> None:
    def handler(data: memoryview) -> bytes:
        raise ValueError("x" * 5000)

    with service(name, handler, max_message=100) as (_, client):
        with pytest.raises(RemoteError, match="handler raised: ValueError: xxx") as caught:
            client.call(b"q")
        assert len(str(caught.value).encode()) < 300


def test_a_handler_returning_something_not_bytes_like_gives_its_caller_remote_error(name: str) -> None:
    with service(name, lambda data: None) as (_, client), pytest.raises(RemoteError, match="TypeError"):
        client.call(b"x")
    with service(name + "o", lambda obj: lambda: 1, objects=True) as (_, client):
        with pytest.raises(RemoteError, match="could not be sent back"):
            client.call_object("x")
        with pytest.raises(RemoteError, match="could not be unpickled"):
            client.call(b"not a pickle")


def test_a_request_dropped_unanswered_gives_its_caller_remote_error(name: str) -> None:
    with Server(name, create=True) as server, Client(name, timeout=TIMEOUT) as client:
        errors: list[BaseException] = []

        def call() -> None:
            try:
                client.call(b"ignored")
            except BaseException as error:
                errors.append(error)

        caller = threading.Thread(target=call)
        caller.start()
        request = server.recv(timeout=TIMEOUT)
        del request
        gc.collect()
        caller.join(TIMEOUT)
        assert len(errors) == 1
        assert isinstance(errors[0], RemoteError)
        assert "without replying" in str(errors[0])


def test_closing_a_server_answers_the_requests_it_took_with_server_died_error(name: str) -> None:
    owner = Server(name, create=True)
    server = Server(name)
    with Client(name, timeout=TIMEOUT) as client:
        errors: list[BaseException] = []

        def call() -> None:
            try:
                client.call(b"pending")
            except BaseException as error:
                errors.append(error)

        caller = threading.Thread(target=call)
        caller.start()
        request = server.recv(timeout=TIMEOUT)
        server.close()
        assert request.answered
        caller.join(TIMEOUT)
        assert len(errors) == 1 and isinstance(errors[0], ServerDiedError)
        assert "closed before replying" in str(errors[0])
        assert isinstance(errors[0], ConnectionError)
    owner.close()


def test_a_call_with_no_server_left_raises_server_died_error_after_a_grace_period(name: str) -> None:
    server = Server(name, create=True)
    with Client(name) as client:
        server.close()
        started = time.monotonic()
        with pytest.raises(ServerDiedError, match="no server is running"):
            client.call(b"hello?", timeout=TIMEOUT)
        waited = time.monotonic() - started
        assert waited >= _rpc.NO_SERVER_GRACE
        print(f"no server: ServerDiedError after {waited * 1000:.0f} ms")


def test_a_server_that_comes_within_the_grace_period_answers_the_waiting_call(name: str) -> None:
    server = Server(name, create=True)
    with Client(name) as client:
        server.close()
        result: list[bytes] = []
        caller = threading.Thread(target=lambda: result.append(client.call(b"wait", timeout=TIMEOUT)))
        caller.start()
        time.sleep(0.3)
        with Server(name) as again:
            again.recv(timeout=TIMEOUT).reply(b"back")
        caller.join(TIMEOUT)
        assert result == [b"back"]


# ---- opening, closing, names -------------------------------------------------------


def test_a_client_needs_a_service_a_server_created(name: str) -> None:
    with pytest.raises(NotFoundError, match=r"memipc.Server\(.*create=True\)"):
        Client(name)
    with Queue(name, 4096), pytest.raises(KindMismatchError, match="queue"):
        Client(name)
    with pytest.raises(NotFoundError):
        Server(name + "x", create=False)


def test_several_server_handles_share_one_service_and_its_parameters(name: str) -> None:
    with Server(name, capacity=1 << 16, max_message=100, create=True) as first:
        assert first.created
        with Server(name, capacity=1 << 20) as second:
            assert not second.created
            assert (
                (second.capacity, second.max_message) == (first.capacity, first.max_message) == (1 << 16, 100)
            )
        with pytest.raises(memipc.ExistsError):
            Server(name, create=True)


def test_unlink_removes_the_service_name_while_open_handles_keep_working(name: str) -> None:
    with service(name, upper) as (server, client):
        server.unlink()
        assert not any(os_name.endswith(name) for os_name in our_segments(name))
        with pytest.raises(NotFoundError):
            Client(name)
        assert client.call(b"still") == b"STILL"
        with Server(name, create=True) as fresh:  # the name is free for a new service
            assert fresh.created
    with pytest.raises(ClosedError):
        server.unlink()
    assert our_segments(name) == []


def test_every_name_a_client_creates_goes_away_when_it_closes(name: str) -> None:
    with Server(name, create=True) as server:
        service_only = our_segments(name)
        assert len(service_only) == 1
        clients = [Client(name) for _ in range(3)]
        assert len(our_segments(name)) == 4
        serving = Serving(server, upper)
        for client in clients:
            assert client.call(b"a") == b"A"  # the server now holds each reply queue open too
        for client in clients:
            client.close()
        assert our_segments(name) == service_only
        serving.stop()
    assert our_segments(name) == []


def test_close_from_another_thread_stops_serve_and_iteration_and_recv(name: str) -> None:
    server = Server(name, create=True)
    serving = Serving(server, upper)
    time.sleep(0.05)
    started = time.monotonic()
    assert serving.stop() == 0
    print(f"serve() returned {1000 * (time.monotonic() - started):.0f} ms after close()")
    with pytest.raises(ClosedError):
        server.recv(timeout=0)
    with pytest.raises(ClosedError):
        server.serve(upper)

    second = Server(name, create=True)
    outcomes: list[Any] = []

    def iterate() -> None:
        outcomes.append(list(second))

    def receive() -> None:
        try:
            second.recv()
        except ClosedError as error:
            outcomes.append(error)

    threads = [threading.Thread(target=iterate), threading.Thread(target=receive)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    second.close()
    for thread in threads:
        thread.join(TIMEOUT)
    assert [] in outcomes and any(isinstance(o, ClosedError) for o in outcomes)


def test_several_threads_may_serve_one_server_and_close_stops_them_all(name: str) -> None:
    def handler(data: memoryview) -> bytes:
        return b"%d:" % threading.get_ident() + bytes(data)

    server = Server(name, create=True)
    serving = [Serving(server, handler) for _ in range(3)]
    results: dict[int, list[bytes]] = {}

    def caller(index: int) -> None:
        with Client(name, timeout=TIMEOUT) as client:
            results[index] = [client.call(b"%d-%d" % (index, i)) for i in range(100)]

    callers = [threading.Thread(target=caller, args=(index,)) for index in range(3)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(TIMEOUT)
    for index in range(3):
        assert [reply.split(b":", 1)[1] for reply in results[index]] == [
            b"%d-%d" % (index, i) for i in range(100)
        ]
    server.close()
    assert sum(thread.stop() for thread in serving) == 300


def test_a_handler_may_close_its_server_which_stops_after_replying(name: str) -> None:
    box: list[Server] = []

    def handler(data: memoryview) -> bytes:
        box[0].close()
        return b"last"

    server = Server(name, create=True)
    box.append(server)
    serving = Serving(server, handler)
    with Client(name, timeout=TIMEOUT) as client:
        assert client.call(b"stop") == b"last"
        serving.join(TIMEOUT)
        assert not serving.is_alive() and serving.handled == 1
    assert repr(server).endswith("closed>")


def test_serve_returns_after_its_idle_timeout_with_the_count(name: str) -> None:
    with Server(name, create=True) as server, Client(name, timeout=TIMEOUT) as client:
        caller = threading.Thread(target=lambda: [client.call(b"x") for _ in range(3)])
        caller.start()
        assert server.serve(upper, timeout=0.5) == 3
        caller.join(TIMEOUT)


def test_closing_a_client_during_a_call_in_another_thread_raises_closed_error_there(name: str) -> None:
    with Server(name, create=True):
        client = Client(name)
        errors: list[BaseException] = []

        def call() -> None:
            try:
                client.call(b"x", timeout=TIMEOUT)
            except BaseException as error:
                errors.append(error)

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.1)
        client.close()
        caller.join(TIMEOUT)
        assert len(errors) == 1 and isinstance(errors[0], ClosedError)
        with pytest.raises(ClosedError):
            client.call(b"x")
        client.close()


def test_calls_from_several_threads_on_one_client_take_turns(name: str) -> None:
    with service(name, lambda data: bytes(data) * 2) as (_, client):
        results: dict[int, list[bytes]] = {}

        def worker(index: int) -> None:
            results[index] = [client.call(b"%d-%d" % (index, i)) for i in range(50)]

        threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        for index in range(4):
            assert results[index] == [b"%d-%d" % (index, i) * 2 for i in range(50)]


def test_stats_repr_and_idempotent_close(name: str) -> None:
    with service(name, upper, capacity=1 << 16) as (server, client):
        for _ in range(3):
            client.call(b"abcd")
        stats = server.stats()
        assert (stats.sent, stats.received, stats.depth, stats.drops) == (3, 3, 0, 0)
        assert stats.bytes == stats.bytes_received == 3 * (4 + _rpc.HEADER)
        mine = client.stats()
        assert (mine.sent, mine.received, mine.drops) == (3, 3, 0)
        assert repr(server) == f"<memipc.Server name={name!r} kind='rpc' size=65536 max_message=32704>"
        assert repr(client).startswith(f"<memipc.Client name={name!r} kind='rpc' slot=")
    client.close()
    assert repr(client).endswith("closed>")
    with pytest.raises(ClosedError):
        client.stats()
    with pytest.raises(ClosedError):
        server.stats()


def test_constructor_arguments_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="spin"):
        Server(name, spin=2)
    with pytest.raises(ValueError, match="max_message"):
        Server(name, max_message=0)
    with pytest.raises(ValueError, match="capacity"):
        Server(name, capacity=-1)
    with Server(name, create=True):
        with pytest.raises(ValueError, match="timeout"):
            Client(name, timeout=float("nan"))
        with pytest.raises(ValueError, match="spin"):
            Client(name, spin=-1)
    assert our_segments(name) == []


def test_reply_queues_of_long_service_names_are_valid_distinct_names() -> None:
    long_name = "s" * 200
    for slot, nonce in [(0, 1), (511, (1 << 64) - 1)]:
        reply = _rpc.reply_name(long_name, slot, nonce)
        assert len(reply) <= 200
        _names.parse(reply)
    assert _rpc.reply_name(long_name, 1, 5) != _rpc.reply_name("s" * 199 + "t", 1, 5)
    assert _rpc.reply_name("a.", 3, 7) == "a.-reply3-0000000000000007"


@given(
    st.text(alphabet="abcXYZ019._-", min_size=1, max_size=200), st.integers(0, 511), st.integers(1, 2**64 - 1)
)
def test_a_reply_queue_name_is_always_a_valid_name(service_name: str, slot: int, nonce: int) -> None:
    try:
        _names.parse(service_name)
    except ValueError:
        return
    _names.parse(_rpc.reply_name(service_name, slot, nonce))


# ---- many calls, any payload (hypothesis) ------------------------------------------


def test_any_sequence_of_calls_gets_each_reply_back_in_order(name: str) -> None:
    """One service for bytes and one for objects; hypothesis drives sequences of calls through them."""

    def handler(request: Any) -> Any:
        if isinstance(request, memoryview):
            return b"R" + request
        return ("R", request)

    bytes_server = Server(name, capacity=1 << 14, create=True)
    object_server = Server(name + "o", capacity=1 << 14, create=True)
    serving = [Serving(bytes_server, handler), Serving(object_server, handler, objects=True)]
    try:
        with Client(name, timeout=TIMEOUT) as client, Client(name + "o", timeout=TIMEOUT) as objects:

            @settings(max_examples=60, deadline=None)
            @given(
                st.lists(
                    st.tuples(st.sampled_from(["call", "view", "object"]), st.binary(max_size=5000)),
                    min_size=1,
                    max_size=8,
                )
            )
            def run(calls: list[tuple[str, bytes]]) -> None:
                for how, payload in calls:
                    if how == "call":
                        assert client.call(payload) == b"R" + payload
                    elif how == "view":
                        with client.call_view(payload) as view:
                            assert view == b"R" + payload
                    else:
                        assert objects.call_object(payload) == ("R", payload)

            run()
        assert bytes_server.stats().drops == object_server.stats().drops == 0
    finally:
        for thread in serving:
            thread.stop()


# ---- malformed requests, damaged control blocks --------------------------------------


def test_malformed_requests_in_the_ring_are_dropped_never_handled(name: str) -> None:
    handled: list[bytes] = []
    with Server(name, create=True) as server:
        ring = server._ring
        assert ring is not None
        good_header = _rpc.REQUEST.pack(_rpc.REQUEST_MAGIC, 0, 1, 1, 1, 0)
        for junk in [
            b"",
            b"short",
            b"\0" * 32,
            _rpc.REQUEST.pack(0xDEAD, 0, 1, 1, 1, 0),  # wrong magic
            _rpc.REQUEST.pack(_rpc.REQUEST_MAGIC, 1 << 20, 1, 1, 1, 0),  # slot out of range
            _rpc.REQUEST.pack(_rpc.REQUEST_MAGIC, 0, 1, 0, 1, 0),  # call id 0
            good_header + b"no client has slot 0",
        ]:
            assert ring.send(junk, 1.0)

        def handler(data: memoryview) -> bytes:
            handled.append(bytes(data))
            return b""

        assert server.serve(handler, timeout=0.3) == 0
        assert handled == []
        assert server.stats().drops == 7
        with Client(name, timeout=TIMEOUT) as client:
            serving = Serving(server, upper)
            assert client.call(b"still fine") == b"STILL FINE"
            serving.stop()


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (_rpc._LAYOUT, 99, "control block"),
        (_rpc._CLIENT_SLOTS, 5, "control block"),
        (_rpc._RING_OFFSET, 4096, "control block"),
        (_rpc._MAX_MESSAGE, 1 << 40, "max_message"),
        (_rpc._MAX_MESSAGE, 0, "max_message"),
        (_rpc._TAG, 0x12345678, "tag"),
    ],
)
def test_a_damaged_control_block_raises_corrupt_region_error_on_open(
    name: str, offset: int, value: int, message: str
) -> None:
    with Server(name, create=True):
        fd = os.open(platform.segment_path(_names.parse(name).os_name), os.O_RDWR)
        try:
            width = 4 if offset in (_rpc._TAG, _rpc._LAYOUT, _rpc._CLIENT_SLOTS) else 8
            os.pwrite(fd, value.to_bytes(width, "little"), DATA_BASE + offset)
        finally:
            os.close(fd)
        with pytest.raises(CorruptRegionError, match=message):
            Client(name)
        with pytest.raises(CorruptRegionError, match=message):
            Server(name)
    assert our_segments(name) == []


def test_garbage_in_the_client_table_is_never_trusted(name: str) -> None:
    with Server(name, create=True):
        fd = os.open(platform.segment_path(_names.parse(name).os_name), os.O_RDWR)
        try:
            for slot in range(0, _rpc.CLIENT_SLOTS, 7):  # owners that cannot be alive
                row = struct.pack("<QQQQ", (0x3FFFFFF0 << 32) | slot, 0, slot + 1, 5)
                os.pwrite(fd, row, DATA_BASE + _rpc.CLIENT_TABLE + slot * _rpc.CLIENT_SLOT_BYTES)
        finally:
            os.close(fd)
        with Client(name) as client:  # sweeps the dead rows, takes one
            assert client._slot == 0
            serving = Serving(Server(name), upper)
            assert client.call(b"after garbage") == b"AFTER GARBAGE"
            serving.stop()


# ---- Ring.inspect, the C side of "what became of my request" -------------------------


def test_ring_inspect_follows_a_record_from_commit_to_release(name: str) -> None:
    with Queue(name, 4096) as q:
        ring = _core.Ring(q._buf, 0)  # type: ignore[arg-type]
        try:
            reserved = ring.reserve(10, 1.0)
            assert isinstance(reserved, tuple)
            position = reserved[0]
            assert ring.inspect(position) == ("writing", 0)
            ring.commit(position)
            assert ring.inspect(position) == ("waiting", 0)
            claimed = ring.claim(1.0)
            assert claimed is not None and claimed[0] == position
            assert ring.inspect(position) == ("reading", os.getpid())
            ring.release(position)
            assert ring.inspect(position) == ("released", 0)
            for _ in range(200):  # the room is reused many times over
                q.send(b"x" * 100)
                q.recv()
            assert ring.inspect(position) == ("released", 0)
            with pytest.raises(CorruptRegionError):
                ring.inspect(position + 1)  # misaligned
            with pytest.raises(CorruptRegionError):
                ring.inspect(1 << 40)  # never reserved
            with pytest.raises(OverflowError):
                ring.inspect(-1)
        finally:
            ring.close()


def test_process_alive_and_self_identity_agree_with_the_platform() -> None:
    pid, start_ticks, pidns = _core.self_identity()
    assert pid == os.getpid()
    assert start_ticks == platform.process_start_ticks(pid)
    assert _core.process_alive(pid, start_ticks, pidns)
    assert _core.process_alive(pid, start_ticks & 0xFFFFFFFF, pidns)
    assert not _core.process_alive(pid, start_ticks + 1, pidns)
    assert not _core.process_alive(0, 0, 0)
    assert _core.process_alive(pid, start_ticks, pidns + 1)  # another namespace: cannot tell, so alive
    with pytest.raises(OverflowError):
        _core.process_alive(1 << 32, 0, 0)
