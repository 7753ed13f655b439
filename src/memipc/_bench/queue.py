"""Queue benchmark for issue 4: memipc.Queue against its peers, every figure from one run.

    python bench/queue_bench.py [--quick] [--json] [--peers a,b]

For memipc.Queue and every importable peer (:mod:`memipc._bench.peers`), one
run measures, with the main threads of the two processes pinned to two
different CPUs (bench/README.md gives the method):

1. ping-pong round trip (A sends a message of N bytes on a2b, B receives it
   and sends it back on b2a) for 64 B, 4 KiB, 1 MiB and 16 MiB, in the
   default blocking mode and in busy-poll mode (``*_nowait`` in a loop):
   p50 / p99 / mean;
2. one-way stream, A sending and B receiving as fast as they can: msgs/s and
   GB/s for the same sizes (blocking calls);
3. for memipc only: ``send_many`` / ``recv_many`` stream of 64 B messages, and
   the zero-copy stream (``loan`` / ``recv_view``, touching the first and last
   byte) at 64 B and 16 MiB;
4. references: a stdlib ``shared_memory`` block with two counters spun from
   Python (busy-poll round trip, 64 B payload copied each way); the C
   ping-pong bench/micro/futex_pingpong.c (spin and futex sleep) and
   single-thread memcpy bandwidth at 16 MiB (bench/micro/memcpy_bandwidth.c),
   both built with gcc into a temporary directory;
5. the ratios issue 4's targets are stated in.

``--peers`` picks peers by module name (memipc_queue is always measured).
``--json`` prints one JSON document on stdout and nothing else.  ``memipc
bench`` runs the same :func:`measure` with sizes and references of its choice.
"""

from __future__ import annotations

import argparse
import faulthandler
import itertools
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from array import array
from collections.abc import Callable, Collection, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any, Literal

from . import harness, peers
from .harness import KIB, MIB, Latency, latency, payload_of, pin, rotated, size_name

Kind = Literal["rt", "stream", "batch", "zerocopy"]
Mode = Literal["blocking", "busy"]

SPAWN: SpawnContext = peers.SPAWN

SIZES: tuple[int, ...] = (64, 4 * KIB, MIB, 16 * MIB)
MAX_MESSAGE = 16 * MIB
SUBJECT = "memipc_queue"
#: The references measured beside the peers: a Python spin over stdlib shared_memory, and two C programs.
REFERENCES: tuple[str, ...] = ("shm_counters", "c_pingpong", "memcpy")
#: A one-byte message ends a phase: every measured size is at least 64 B.
SENTINEL = b"!"
#: send_many batch, recv_many limit.
BATCH, RECV_MANY = 256, 4096
#: Seconds allowed for a child to start and open its end.
READY_TIMEOUT_S = 60.0
#: A round is stopped when neither child has started or finished a phase for this long
#: (the slowest phase, a 16 MiB stream through a pickling queue, takes a few seconds).
SILENCE_S = 30.0


@dataclass(frozen=True)
class Settings:
    """How much to measure; --quick trades stability for time."""

    rounds: int  # every peer runs this many times, in an order rotated per round
    phase_s: float  # timed seconds per phase per round
    warmup_s: float  # untimed seconds before each phase
    min_samples: int  # a phase times at least this many round trips / messages, however slow
    max_samples: int  # and at most this many round trips per round
    c_spin_trips: int  # C ping-pong round trips per round, spin mode
    c_sleep_trips: int  # and futex-sleep mode
    c_warmup: int
    memcpy_repeats: int  # 16 MiB copies per round


FULL = Settings(
    rounds=3,
    phase_s=0.4,
    warmup_s=0.08,
    min_samples=4,
    max_samples=200_000,
    c_spin_trips=200_000,
    c_sleep_trips=8_000,
    c_warmup=1_000,
    memcpy_repeats=60,
)
QUICK = Settings(
    rounds=1,
    phase_s=0.12,
    warmup_s=0.03,
    min_samples=3,
    max_samples=60_000,
    c_spin_trips=50_000,
    c_sleep_trips=2_000,
    c_warmup=500,
    memcpy_repeats=20,
)


@dataclass(frozen=True)
class Phase:
    kind: Kind
    size: int
    mode: Mode = "blocking"

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.mode}:{self.size}"


def plan_for(peer: str, sizes: Sequence[int]) -> list[Phase]:
    """The phases one peer runs, in order; A and B both follow this list."""
    phases = [Phase("rt", size, mode) for size in sizes for mode in ("blocking", "busy")]
    phases += [Phase("stream", size) for size in sizes]
    if peer == SUBJECT:
        phases += [Phase("batch", 64), Phase("zerocopy", 64), Phase("zerocopy", MAX_MESSAGE)]
    return [phase for phase in phases if phase.size in sizes]


def cpus() -> tuple[int | None, int | None, str]:
    """CPUs for A and B: two different ones when there are two."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) >= 2:
        return available[0], available[1], f"A pinned to CPU {available[0]}, B to CPU {available[1]}"
    return None, None, "one CPU available: A and B not pinned"


# --------------------------------------------------------------------------- the loops, side A (times)


def _round_trips_blocking(
    end: peers.Endpoint, payload: bytes, seconds: float, min_n: int, max_n: int
) -> list[int]:
    send, recv, clock = end.send, end.recv, time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    deadline = clock() + int(seconds * 1e9)
    reply = b""
    while True:
        start = clock()
        send(payload)
        reply = recv()
        stop = clock()
        append(stop - start)
        if (stop >= deadline and len(samples) >= min_n) or len(samples) >= max_n:
            break
    if len(reply) != len(payload):
        raise RuntimeError(f"round trip: sent {len(payload)} B, got {len(reply)} B back")
    return samples


def _round_trips_busy(
    end: peers.Endpoint, payload: bytes, seconds: float, min_n: int, max_n: int
) -> list[int]:
    send_nowait, recv_nowait, clock = end.send_nowait, end.recv_nowait, time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    deadline = clock() + int(seconds * 1e9)
    reply: bytes | None = b""
    while True:
        start = clock()
        while not send_nowait(payload):
            pass
        reply = recv_nowait()
        while reply is None:
            reply = recv_nowait()
        stop = clock()
        append(stop - start)
        if (stop >= deadline and len(samples) >= min_n) or len(samples) >= max_n:
            break
    if reply is None or len(reply) != len(payload):
        raise RuntimeError(f"busy round trip: sent {len(payload)} B, got a different size back")
    return samples


def _stream(end: peers.Endpoint, payload: bytes, seconds: float, min_n: int) -> tuple[int, int]:
    """Send for `seconds`, then the sentinel; (messages, ns until B acknowledged receiving all)."""
    send, clock = end.send, time.perf_counter_ns
    chunk = max(1, min(256, (64 * KIB) // len(payload)))
    sent = 0
    start = clock()
    deadline = start + int(seconds * 1e9)
    while True:
        for _ in itertools.repeat(None, chunk):
            send(payload)
        sent += chunk
        if sent >= min_n and clock() >= deadline:
            break
    send(SENTINEL)
    end.recv()
    return sent, clock() - start


def _batch_stream(end: peers.Endpoint, payload: bytes, seconds: float, min_n: int) -> tuple[int, int]:
    assert end.send_many is not None
    send_many, clock = end.send_many, time.perf_counter_ns
    batch = [payload] * BATCH
    sent = 0
    start = clock()
    deadline = start + int(seconds * 1e9)
    while True:
        done = send_many(batch)
        while done < BATCH:
            done += send_many(batch[done:])
        sent += BATCH
        if sent >= min_n and clock() >= deadline:
            break
    end.send(SENTINEL)
    end.recv()
    return sent, clock() - start


def _zero_copy_stream(end: peers.Endpoint, size: int, seconds: float, min_n: int) -> tuple[int, int]:
    assert end.loan is not None
    loan, clock = end.loan, time.perf_counter_ns
    last = size - 1
    sent = 0
    start = clock()
    deadline = start + int(seconds * 1e9)
    while True:
        for _ in itertools.repeat(None, 64):
            with loan(size) as buf:
                buf[0] = 1
                buf[last] = 1
        sent += 64
        if sent >= min_n and clock() >= deadline:
            break
    end.send(SENTINEL)
    end.recv()
    return sent, clock() - start


#: What a child reports, as (phase key, figures); figures STARTING means the phase begins.
Reporter = Callable[[str, Any], None]
STARTING = object()


def drive(ends: dict[int, peers.Endpoint], plan: list[Phase], s: Settings, report: Reporter) -> None:
    """Side A: run every phase (warm-up, then timed), ending each with the sentinel; report each."""
    for phase in plan:
        report(phase.key, STARTING)
        try:
            result = _drive_phase(ends[phase.size], phase, s)
        except Exception as error:
            raise RuntimeError(f"side A, phase {phase.key}: {error!r}") from error
        report(phase.key, result)


def _drive_phase(end: peers.Endpoint, phase: Phase, s: Settings) -> dict[str, Any]:
    size = phase.size
    payload = payload_of(size)
    if phase.kind == "rt":
        loop = _round_trips_busy if phase.mode == "busy" else _round_trips_blocking
        loop(end, payload, s.warmup_s, 2, s.max_samples)
        samples = loop(end, payload, s.phase_s, s.min_samples, s.max_samples)
        if phase.mode == "busy":
            while not end.send_nowait(SENTINEL):
                pass
        else:
            end.send(SENTINEL)
        return {"samples": samples}
    if phase.kind == "stream":
        _stream(end, payload, s.warmup_s, 2)
        sent, ns = _stream(end, payload, s.phase_s, s.min_samples)
    elif phase.kind == "batch":
        _batch_stream(end, payload, s.warmup_s, BATCH)
        sent, ns = _batch_stream(end, payload, s.phase_s, BATCH)
    else:
        _zero_copy_stream(end, size, s.warmup_s, 2)
        sent, ns = _zero_copy_stream(end, size, s.phase_s, s.min_samples)
    return {"sent": sent, "ns": ns}


# --------------------------------------------------------------------------- the loops, side B (answers)


def _echo(end: peers.Endpoint) -> None:
    send, recv = end.send, end.recv
    while True:
        message = recv()
        if len(message) == 1:
            return
        send(message)


def _echo_busy(end: peers.Endpoint) -> None:
    send_nowait, recv_nowait = end.send_nowait, end.recv_nowait
    while True:
        message = recv_nowait()
        if message is None:
            continue
        if len(message) == 1:
            return
        while not send_nowait(message):
            pass


def _consume(end: peers.Endpoint) -> int:
    recv = end.recv
    received = 0
    while True:
        if len(recv()) == 1:
            end.send(SENTINEL)
            return received
        received += 1


def _consume_batches(end: peers.Endpoint) -> int:
    assert end.recv_many is not None
    recv_many = end.recv_many
    received = 0
    while True:
        messages = recv_many(RECV_MANY)
        received += len(messages)
        if len(messages[-1]) == 1:
            end.send(SENTINEL)
            return received - 1


def _consume_views(end: peers.Endpoint) -> int:
    assert end.recv_view is not None
    recv_view = end.recv_view
    received = 0
    while True:
        with recv_view() as view:
            length = len(view)
            _first, _last = view[0], view[length - 1]
        if length == 1:
            end.send(SENTINEL)
            return received
        received += 1


def answer(ends: dict[int, peers.Endpoint], plan: list[Phase], s: Settings, report: Reporter) -> None:
    """Side B: echo round trips, consume streams (warm-up stream, then timed); report what arrived."""
    for phase in plan:
        report(phase.key, STARTING)
        end = ends[phase.size]
        try:
            if phase.kind == "rt":
                (_echo_busy if phase.mode == "busy" else _echo)(end)
                continue
            consume = {"stream": _consume, "batch": _consume_batches, "zerocopy": _consume_views}[phase.kind]
            consume(end)  # warm-up
            report(phase.key, consume(end))
        except Exception as error:
            raise RuntimeError(f"side B, phase {phase.key}: {error!r}") from error


# --------------------------------------------------------------------------- child processes


def peer_child(
    role: peers.Side,
    peer_name: str,
    links: dict[int, object],
    plan: list[Phase],
    settings: Settings,
    cpu: int | None,
    control: Connection,
) -> None:
    """Body of spawned process A or B for one peer: open, report ready, wait for go, run the plan."""
    os.dup2(2, 1)  # whatever a library prints must not reach --json's stdout
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent's way to see where we hang
    everywhere = os.sched_getaffinity(0)
    pin(cpu)
    ends: dict[int, peers.Endpoint] = {}
    try:
        peer = peers.load(peer_name)
        for size, link in links.items():
            ends[size] = peer.open(link, role)
        control.send(("ready", None))
        if control.recv() != "go":
            return
        # One round trip on every link starts the libraries' helper threads; then let them float.
        for size in sorted(ends):
            if role == "a":
                ends[size].send(payload_of(size))
                ends[size].recv()
                ends[size].send(SENTINEL)
            else:
                _echo(ends[size])
        harness.float_helper_threads(everywhere)

        def report(key: str, value: Any) -> None:
            control.send(("phase", (key, value)) if value is not STARTING else ("start", key))

        (drive if role == "a" else answer)(ends, plan, settings, report)
        control.send(("done", None))
    except BaseException:
        control.send(("error", traceback.format_exc()))
    finally:
        for end in ends.values():
            with suppress(Exception):
                end.close()


STOP = (1 << 64) - 1


def counters_child(
    role: peers.Side, name: str, settings: Settings, cpu: int | None, control: Connection
) -> None:
    """The reference: a stdlib shared_memory block, a request and a reply counter, spun on from Python.

    Layout: request counter (u64) at 0, reply counter at 64 (its own cache
    line), request payload at 128, reply payload at 256.  A writes 64 B,
    bumps the request counter and spins on the reply counter; B spins on the
    request counter, copies the payload out and back into the reply slot, and
    bumps the reply counter.  Each side copies 64 B in and 64 B out, as a
    queue's send and recv do.
    """
    os.dup2(2, 1)
    pin(cpu)
    block = shared_memory.SharedMemory(name)
    buf = block.buf
    assert buf is not None
    words = buf[:128].cast("Q")
    request, reply = buf[128:192], buf[256:320]
    try:
        control.send(("ready", None))
        if control.recv() != "go":
            return
        if role == "b":
            seen = 0
            while True:
                while words[0] == seen:
                    pass
                seen = words[0]
                if seen == STOP:
                    break
                reply[:] = bytes(request)
                words[8] = seen
            control.send(("done", None))
            return
        payload, clock = payload_of(64), time.perf_counter_ns
        sequence = 0
        samples: list[int] = []
        for seconds, min_n in ((settings.warmup_s, 2), (settings.phase_s, settings.min_samples)):
            samples = []
            append = samples.append
            deadline = clock() + int(seconds * 1e9)
            answer_bytes = b""
            while True:
                start = clock()
                request[:] = payload
                sequence += 1
                words[0] = sequence
                while words[8] != sequence:
                    pass
                answer_bytes = bytes(reply)
                stop = clock()
                append(stop - start)
                if (stop >= deadline and len(samples) >= min_n) or len(samples) >= settings.max_samples:
                    break
            if answer_bytes != payload:
                raise RuntimeError("shared_memory reference: the reply differs from the request")
        words[0] = STOP
        control.send(("phase", ("rt:busy:64", {"samples": samples})))
        control.send(("done", None))
    except BaseException:
        control.send(("error", traceback.format_exc()))
    finally:
        words.release()
        request.release()
        reply.release()
        block.close()


# --------------------------------------------------------------------------- the parent: one round of one job


class RoundFailed(Exception):
    pass


def _message(control: Connection, process: Any, label: str, timeout: float) -> tuple[str, Any]:
    """The next message from a child; RoundFailed if it reports an error, dies, or is silent too long."""
    if not control.poll(timeout):
        raise RoundFailed(f"{label}: no answer within {timeout:.0f} s")
    try:
        status, value = control.recv()
    except EOFError:
        process.join(5)
        raise RoundFailed(f"{label}: process exited with {process.exitcode}") from None
    if status == "error":
        raise RoundFailed(f"{label}: {str(value).strip().splitlines()[-1]}\n{value}")
    return status, value


@dataclass
class PairResult:
    """What A and B reported, phase by phase, and the error that ended the round early, if one did."""

    a: dict[str, Any] = field(default_factory=dict)
    b: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def run_pair(
    target: Callable[..., None],
    args: tuple[Any, ...],
    cpu_a: int | None,
    cpu_b: int | None,
    label: str,
    silence_s: float,
) -> PairResult:
    """Spawn B, wait until it is ready, spawn A, wait, say go; collect phase reports until both are done.

    Each child says when it starts a phase; if neither says anything for
    `silence_s` seconds, the round is stopped and the error names the phase
    each side was in.
    """
    processes: list[Any] = []
    controls: list[Connection] = []
    result = PairResult()
    where = ["starting", "starting"]  # B's phase, A's phase
    try:
        for role, cpu in (("b", cpu_b), ("a", cpu_a)):
            mine, theirs = SPAWN.Pipe()
            process = SPAWN.Process(target=target, args=(role, *args, cpu, theirs), daemon=True)
            process.start()
            theirs.close()
            processes.append(process)
            controls.append(mine)
            _message(mine, process, f"{label} ({role.upper()} starting)", READY_TIMEOUT_S)
        for control in controls:
            control.send("go")
        running = {0, 1}
        while running:
            ready = multiprocessing.connection.wait([controls[i] for i in running], silence_s)
            if not ready:
                for process in processes:  # each child prints its threads' stacks to stderr
                    with suppress(OSError):
                        os.kill(process.pid, signal.SIGUSR1)
                time.sleep(0.5)
                raise RoundFailed(
                    f"{label}: stuck for {silence_s:.0f} s (A in phase {where[1]}, B in phase {where[0]}; "
                    "their stacks are on stderr)"
                )
            for connection in ready:
                assert isinstance(connection, Connection)
                index = controls.index(connection)
                status, value = _message(connection, processes[index], label, 1.0)
                if status == "done":
                    running.discard(index)
                elif status == "start":
                    where[index] = value
                elif status == "phase":
                    key, figures = value
                    (result.a if index == 1 else result.b)[key] = figures
        for process in processes:
            process.join(10)
    except RoundFailed as failed:
        result.error = str(failed)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
        for control in controls:
            control.close()
    return result


def peer_round(
    name: str, plan: list[Phase], s: Settings, cpu_a: int | None, cpu_b: int | None
) -> tuple[dict[str, Any], dict[int, str], str]:
    """One attempt at `plan` for one peer: its links, both children, every phase.

    Returns A's figures for every phase that completed (a stream only if B
    received every message A sent), the sizes the peer cannot carry, and the
    error that ended the attempt early ("" if none).
    """
    peer = peers.load(name)
    links: dict[int, object] = {}
    unsupported: dict[int, str] = {}
    try:
        for size in sorted({phase.size for phase in plan}):
            try:
                links[size] = peer.create(size, MAX_MESSAGE)
            except peers.Unsupported as refused:
                unsupported[size] = str(refused)
        runnable = [phase for phase in plan if phase.size in links]
        pair = run_pair(peer_child, (name, links, runnable, s), cpu_a, cpu_b, name, SILENCE_S)
        done: dict[str, Any] = {}
        failure = pair.error
        for key, figures in pair.a.items():
            if "sent" not in figures or pair.b.get(key) == figures["sent"]:
                done[key] = figures
            elif not failure:
                failure = f"{name} {key}: A sent {figures['sent']} messages, B received {pair.b.get(key)}"
        return done, unsupported, failure
    finally:
        for link in links.values():
            with suppress(Exception):
                peer.destroy(link)


def counters_round(s: Settings, cpu_a: int | None, cpu_b: int | None) -> tuple[list[int], str]:
    block = shared_memory.SharedMemory(create=True, size=4096)
    try:
        pair = run_pair(counters_child, (block.name, s), cpu_a, cpu_b, "shared_memory reference", SILENCE_S)
        samples: list[int] = pair.a.get("rt:busy:64", {}).get("samples", [])
        return samples, pair.error
    finally:
        block.close()
        block.unlink()


def c_pingpong_round(
    binary: Path, mode: str, trips: int, warmup: int, cpu_a: int | None, cpu_b: int | None
) -> list[int]:
    where = [str(-1 if cpu is None else cpu) for cpu in (cpu_a, cpu_b)]
    samples_path = binary.with_name(f"samples-{mode}.bin")
    command = [str(binary), mode, str(trips), str(warmup), *where, str(samples_path)]
    subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    samples = array("q")
    samples.frombytes(samples_path.read_bytes())
    return list(samples)


def memcpy_round(binary: Path, repeats: int, cpu: int | None) -> float:
    command = [str(binary), str(MAX_MESSAGE), str(repeats), str(-1 if cpu is None else cpu)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    gbps: float = json.loads(done.stdout)["median_gbps"]
    return gbps


# --------------------------------------------------------------------------- statistics


@dataclass
class Rate:
    """A one-way stream of one row in one size: all rounds' messages over all rounds' time."""

    size: int = 0
    messages: int = 0
    seconds: float = 0.0
    round_msgs_per_s: list[float] = field(default_factory=list)

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else math.nan

    @property
    def gb_per_s(self) -> float:
        return self.msgs_per_s * self.size / 1e9


def rate(size: int, rounds: list[tuple[int, int]]) -> Rate:
    total = Rate(size)
    for sent, ns in rounds:
        total.messages += sent
        total.seconds += ns / 1e9
        total.round_msgs_per_s.append(sent / (ns / 1e9))
    return total


@dataclass
class Row:
    """Everything measured for one peer (or reference)."""

    name: str
    label: str
    how: str = ""
    round_trip: dict[str, Latency] = field(default_factory=dict)  # key "blocking:64"
    stream: dict[str, Rate] = field(default_factory=dict)  # key "stream:64", "batch:64", "zerocopy:64"
    skipped: dict[str, str] = field(default_factory=dict)  # size or "all" -> reason
    failures: list[str] = field(default_factory=list)  # one line per failed attempt


# --------------------------------------------------------------------------- the run


@dataclass
class Report:
    meta: dict[str, Any]
    rows: list[Row]
    references: dict[str, Any]
    ratios: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Collected:
    """Figures from every round, before they are pooled."""

    round_trips: dict[tuple[str, str], list[list[int]]] = field(default_factory=dict)  # (peer, "busy:64")
    streams: dict[tuple[str, str], list[tuple[int, int]]] = field(default_factory=dict)  # (peer, "stream:64")
    references: dict[str, list[list[int]]] = field(default_factory=dict)  # "c_spin" -> rounds
    memcpy_gbps: list[float] = field(default_factory=list)

    def add(self, peer: str, done: dict[str, Any]) -> None:
        for key, value in done.items():
            kind, mode, size = key.split(":")
            if kind == "rt":
                self.round_trips.setdefault((peer, f"{mode}:{size}"), []).append(value["samples"])
            else:
                self.streams.setdefault((peer, f"{kind}:{size}"), []).append((value["sent"], value["ns"]))


def run_peer(
    collected: Collected,
    row: Row,
    round_index: int,
    s: Settings,
    sizes: Sequence[int],
    placement: tuple[int | None, int | None],
) -> list[str]:
    """One round of one peer into `collected`; a failed attempt is retried once for the phases left."""
    notes: list[str] = []
    plan = plan_for(row.name, sizes)
    for attempt in (1, 2):
        done, unsupported, failure = peer_round(row.name, plan, s, *placement)
        for size, reason in unsupported.items():
            row.skipped[str(size)] = reason
        collected.add(row.name, done)
        if not failure:
            break
        plan = [phase for phase in plan if phase.key not in done and phase.size not in unsupported]
        then = (
            "the phases left ran again in new processes" if attempt == 1 else "the phases left were dropped"
        )
        row.failures.append(f"round {round_index + 1}, attempt {attempt}: {failure.splitlines()[0]}")
        notes.append(f"{row.label} failed in round {round_index + 1} ({then}): {failure}")
    return notes


def run_references(
    collected: Collected,
    job: str,
    round_index: int,
    s: Settings,
    binaries: dict[str, Path],
    placement: tuple[int | None, int | None],
) -> list[str]:
    cpu_a, cpu_b = placement
    if job == "shm_counters":
        samples, failure = counters_round(s, cpu_a, cpu_b)
        if samples:
            collected.references.setdefault("shm_counters", []).append(samples)
        return [f"shared_memory reference failed in round {round_index + 1}: {failure}"] if failure else []
    if job == "c_pingpong" and "pingpong" in binaries:
        for mode, trips in (("spin", s.c_spin_trips), ("sleep", s.c_sleep_trips)):
            samples = c_pingpong_round(binaries["pingpong"], mode, trips, s.c_warmup, cpu_a, cpu_b)
            collected.references.setdefault(f"c_{mode}", []).append(samples)
    if job == "memcpy" and "memcpy" in binaries:
        collected.memcpy_gbps.append(memcpy_round(binaries["memcpy"], s.memcpy_repeats, cpu_a))
    return []


def measure(
    s: Settings,
    selected: Sequence[str],
    command: str,
    progress: harness.Progress,
    *,
    sizes: Sequence[int] = SIZES,
    references: Collection[str] = REFERENCES,
    micro: Path | None = None,
) -> Report:
    """One run: every peer in `selected` (memipc first) and every reference in `references`, at `sizes`.

    `micro` is the directory of the C references' sources (see harness.find_micro);
    without it, or without gcc, their rows are left out with a note.
    """
    started = time.monotonic()
    cpu_a, cpu_b, where = cpus()
    notes: list[str] = []
    rows: list[Row] = []
    for name in selected:
        try:
            peer = peers.load(name)
        except peers.Unavailable as error:
            rows.append(Row(name, name, skipped={"all": str(error)}))
            notes.append(f"{name} skipped: {error}")
            continue
        rows.append(Row(name, peer.label, peer.how))
    meta: dict[str, Any] = {
        "command": command,
        "date": harness.utc_now(),
        "machine": harness.machine_note(),
        "placement": where,
        "settings": asdict(s),
        "sizes": list(sizes),
        "loadavg_start": list(os.getloadavg()),
    }
    runnable = {row.name: row for row in rows if "all" not in row.skipped}
    collected = Collected()
    with tempfile.TemporaryDirectory(prefix="memipc-bench-") as directory:
        binaries: dict[str, Path] = {}
        for job, key, source in (
            ("c_pingpong", "pingpong", "futex_pingpong.c"),
            ("memcpy", "memcpy", "memcpy_bandwidth.c"),
        ):
            if job not in references:
                continue
            binary, why_not = harness.build_c(source, micro, directory)
            if binary is None:
                notes.append(f"{source} skipped: {why_not}")
            else:
                binaries[key] = binary
        jobs = [*runnable, *(job for job in REFERENCES if job in references)]
        for round_index in range(s.rounds):
            for job in rotated(jobs, round_index):
                progress(f"round {round_index + 1}/{s.rounds}: {job}")
                if job in runnable:
                    notes += run_peer(collected, runnable[job], round_index, s, sizes, (cpu_a, cpu_b))
                else:
                    notes += run_references(collected, job, round_index, s, binaries, (cpu_a, cpu_b))

    for row in rows:
        for (peer_name, key), rounds in collected.round_trips.items():
            if peer_name == row.name:
                row.round_trip[key] = latency(rounds)
        for (peer_name, key), streams in collected.streams.items():
            if peer_name == row.name:
                row.stream[key] = rate(int(key.split(":")[1]), streams)
        for size_text, reason in row.skipped.items():
            if size_text != "all":
                notes.append(f"{row.label} at {size_name(int(size_text))} skipped: {reason}")
    figures: dict[str, Any] = {key: latency(value) for key, value in collected.references.items()}
    if collected.memcpy_gbps:
        gbps = collected.memcpy_gbps
        figures["memcpy_16MiB_gbps"] = sorted(gbps)[(len(gbps) - 1) // 2]
        figures["memcpy_16MiB_round_gbps"] = gbps
    meta["loadavg_end"] = list(os.getloadavg())
    meta["seconds"] = round(time.monotonic() - started, 1)
    report = Report(meta, rows, figures, notes=notes)
    report.ratios = ratios(report)
    return report


# --------------------------------------------------------------------------- ratios


def _row(report: Report, name: str) -> Row | None:
    return next((row for row in report.rows if row.name == name), None)


def _p50(row: Row | None, key: str) -> float:
    if row is None or key not in row.round_trip:
        return math.nan
    return row.round_trip[key].p50_ns


def _rate(row: Row | None, key: str) -> float:
    if row is None or key not in row.stream:
        return math.nan
    return row.stream[key].msgs_per_s


def _ratio(
    label: str, value: float, target: float | None, higher_is_better: bool, detail: str
) -> dict[str, Any]:
    met: bool | None = None
    if target is not None and not math.isnan(value):
        met = value >= target if higher_is_better else value <= target
    goal = None if target is None else (f">= {target:g}" if higher_is_better else f"<= {target:g}")
    return {"ratio": label, "value": value, "target": goal, "met": met, "detail": detail}


def ratios(report: Report) -> list[dict[str, Any]]:
    """Issue 4's targets, each judged on p50 (round trips) or whole-run rates (streams); then context."""
    memipc_row = _row(report, SUBJECT)
    others = [row for row in report.rows if row.name != SUBJECT and row.round_trip]
    out: list[dict[str, Any]] = []

    mine = _p50(memipc_row, "blocking:64")
    worst: tuple[float, str] = (math.inf, "")
    for row in others:
        theirs = _p50(row, "blocking:64")
        if math.isnan(theirs) or math.isnan(mine):
            continue
        speedup = theirs / mine
        worst = min(worst, (speedup, row.label))
        out.append(
            _ratio(
                f"64 B round trip, memipc default vs {row.label} blocking (x faster)",
                speedup,
                10,
                True,
                f"{mine / 1e3:.2f} us vs {theirs / 1e3:.2f} us",
            )
        )
    if worst[1]:
        out.insert(
            0,
            _ratio(
                "64 B round trip, memipc default vs EVERY peer's blocking mode (x faster, smallest margin)",
                worst[0],
                10,
                True,
                f"smallest margin is against {worst[1]}",
            ),
        )

    busy, reference = _p50(memipc_row, "busy:64"), report.references.get("shm_counters")
    if reference is not None and not math.isnan(busy):
        out.append(
            _ratio(
                "64 B busy-poll round trip, memipc / shared_memory+counters reference (x its time)",
                busy / reference.p50_ns,
                1.0,
                False,
                f"{busy / 1e3:.2f} us vs {reference.p50_ns / 1e3:.2f} us",
            )
        )

    stream = _rate(memipc_row, "stream:64")
    best = max(((_rate(row, "stream:64"), row.label) for row in others), default=(math.nan, ""))
    if best[1] and not math.isnan(stream):
        out.append(
            _ratio(
                f"64 B one-way stream, memipc send/recv vs best peer ({best[1]}) (x its msgs/s)",
                stream / best[0],
                2,
                True,
                f"{stream / 1e6:.2f} M/s vs {best[0] / 1e6:.2f} M/s",
            )
        )
    batch = _rate(memipc_row, "batch:64")
    if not math.isnan(batch):
        out.append(
            _ratio(
                "64 B send_many/recv_many stream (M msgs/s)", batch / 1e6, 10, True, f"{batch / 1e6:.2f} M/s"
            )
        )

    copy_row = memipc_row.stream.get(f"stream:{MAX_MESSAGE}") if memipc_row else None
    memcpy_gbps = report.references.get("memcpy_16MiB_gbps")
    if copy_row is not None and memcpy_gbps:
        out.append(
            _ratio(
                "16 MiB copy stream, memipc GB/s / single-thread memcpy GB/s",
                copy_row.gb_per_s / memcpy_gbps,
                0.8,
                True,
                f"{copy_row.gb_per_s:.2f} GB/s vs memcpy {memcpy_gbps:.2f} GB/s",
            )
        )
    small, large = _rate(memipc_row, "zerocopy:64"), _rate(memipc_row, f"zerocopy:{MAX_MESSAGE}")
    if not (math.isnan(small) or math.isnan(large)):
        out.append(
            _ratio(
                "zero-copy stream msgs/s, 16 MiB / 64 B",
                large / small,
                0.5,
                True,
                f"{large / 1e3:.1f} k/s vs {small / 1e3:.1f} k/s",
            )
        )

    # Context, no targets: how far memipc's two modes are from the C floors measured in this run.
    c_spin, c_sleep = report.references.get("c_spin"), report.references.get("c_sleep")
    if c_spin is not None and not math.isnan(busy):
        out.append(
            _ratio(
                "context: memipc busy-poll 64 B / C spin ping-pong (x its time)",
                busy / c_spin.p50_ns,
                None,
                False,
                "",
            )
        )
    if c_sleep is not None and not math.isnan(mine):
        out.append(
            _ratio(
                "context: C futex-sleep ping-pong / memipc default 64 B (x faster)",
                c_sleep.p50_ns / mine,
                None,
                True,
                "",
            )
        )
    return out


# --------------------------------------------------------------------------- output


def as_json(report: Report) -> dict[str, Any]:
    rows = []
    for row in report.rows:
        rows.append(
            {
                "peer": row.name,
                "label": row.label,
                "how": row.how,
                "round_trip_ns": {key: asdict(value) for key, value in row.round_trip.items()},
                "stream": {
                    key: {**asdict(value), "msgs_per_s": value.msgs_per_s, "gb_per_s": value.gb_per_s}
                    for key, value in row.stream.items()
                },
                "skipped": row.skipped,
                "failures": row.failures,
            }
        )
    references = {
        key: asdict(value) if isinstance(value, Latency) else value
        for key, value in report.references.items()
    }
    document = {
        "meta": report.meta,
        "peers": rows,
        "references": references,
        "ratios": report.ratios,
        "notes": report.notes,
    }
    cleaned: dict[str, Any] = harness.clean_for_json(document)
    return cleaned


def _us(ns: float) -> str:
    if math.isnan(ns):
        return "-"
    us = ns / 1e3
    return f"{us:.3g}" if us < 100 else f"{us:.0f}"


def _count(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    return f"{value / 1e3:.1f} k" if value >= 1e3 else f"{value:.0f} "


def _gb(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"


def _cell_rt(row: Row, mode: str, size: int) -> str:
    if str(size) in row.skipped:
        return "skipped"
    figures = row.round_trip.get(f"{mode}:{size}")
    if figures is None or figures.n == 0:
        return "-"
    return f"{_us(figures.p50_ns)}/{_us(figures.p99_ns)}/{_us(figures.mean_ns)}"


def _cell_stream(row: Row, key: str) -> str:
    size = key.split(":")[1]
    if size in row.skipped:
        return "skipped"
    figures = row.stream.get(key)
    if figures is None:
        return "-"
    if key.startswith("zerocopy"):  # two bytes touched per message: a GB/s figure would mean nothing
        return f"{_count(figures.msgs_per_s)}/s"
    return f"{_count(figures.msgs_per_s)}/s {_gb(figures.gb_per_s)} GB/s"


def print_text(report: Report) -> None:
    meta, machine = report.meta, report.meta["machine"]
    settings = meta["settings"]
    print(f"memipc queue benchmark (issue 4): {meta['command']}")
    print(
        f"{meta['date']}  Python {machine['python']}  Linux {machine['kernel']}  "
        f"{machine['cpus']} CPUs ({machine['cpu_model']})  "
        f"memipc {machine['memipc']} (_core sha256 {machine['memipc_core_sha256']})"
    )
    load_start = " ".join(f"{x:.2f}" for x in meta["loadavg_start"])
    load_end = " ".join(f"{x:.2f}" for x in meta["loadavg_end"])
    print(f"placement: {meta['placement']}; load average {load_start} at start, {load_end} at end")
    print(
        f"{settings['rounds']} round(s), {settings['phase_s']} s timed + {settings['warmup_s']} s warm-up "
        f"per phase per round; {meta['seconds']} s in all"
    )
    print()
    sizes = meta["sizes"]
    measured = [row for row in report.rows if row.round_trip or row.stream]
    width = 21

    print("(1) Ping-pong round trip, us: p50/p99/mean (A sends N bytes, B sends them back)")
    print(f"  {'peer':<24}{'mode':<10}" + "".join(f"{size_name(size):>{width}}" for size in sizes))
    for row in measured:
        for mode in ("blocking", "busy"):
            cells = "".join(f"{_cell_rt(row, mode, size):>{width}}" for size in sizes)
            print(f"  {row.label:<24}{mode:<10}{cells}")
    print()

    print("(2) One-way stream, blocking send/recv: messages/s and GB/s")
    print(f"  {'peer':<34}" + "".join(f"{size_name(size):>{width + 2}}" for size in sizes))
    for row in measured:
        cells = "".join(f"{_cell_stream(row, f'stream:{size}'):>{width + 2}}" for size in sizes)
        print(f"  {row.label:<34}{cells}")
    memipc_row = _row(report, SUBJECT)
    if memipc_row is not None:
        for key, label in (("batch", "memipc send_many/recv_many"), ("zerocopy", "memipc loan/recv_view")):
            texts = [
                _cell_stream(memipc_row, f"{key}:{size}") if f"{key}:{size}" in memipc_row.stream else ""
                for size in sizes
            ]
            cells = "".join(f"{text:>{width + 2}}" for text in texts)
            print(f"  {label:<34}{cells}")
    print()

    print("(3) References, measured in the same run")
    refs = report.references
    for key, label in (
        ("shm_counters", "shared_memory + 2 counters, Python spin, 64 B"),
        ("c_spin", "C ping-pong, spin (futex_pingpong.c)"),
        ("c_sleep", "C ping-pong, futex sleep (futex_pingpong.c)"),
    ):
        if key in refs:
            figures = refs[key]
            triple = f"{_us(figures.p50_ns)}/{_us(figures.p99_ns)}/{_us(figures.mean_ns)}"
            print(f"  {label:<48} round trip {triple} us (p50/p99/mean, n={figures.n})")
    if "memcpy_16MiB_gbps" in refs:
        rounds = ", ".join(f"{x:.1f}" for x in refs["memcpy_16MiB_round_gbps"])
        print(
            f"  {'memcpy 16 MiB, one thread (memcpy_bandwidth.c)':<48} {refs['memcpy_16MiB_gbps']:.2f} GB/s"
            f" (median of rounds: {rounds})"
        )
    print()

    print("(4) Ratios (issue 4 targets; round trips at p50, streams over the whole run)")
    for ratio in report.ratios:
        value = ratio["value"]
        text = "-" if math.isnan(value) else f"{value:.2f}" if value < 100 else f"{value:.0f}"
        line = f"  {ratio['ratio']}: {text}"
        if ratio["detail"]:
            line += f"  ({ratio['detail']})"
        if ratio["target"] is not None:
            line += f"  target {ratio['target']}: {'met' if ratio['met'] else 'MISSED'}"
        print(line)
    if not report.ratios:
        print("  (none: a row they need is missing)")
    for row in report.rows:
        if row.round_trip:
            spread = row.round_trip.get("blocking:64")
            if spread is not None and len(spread.round_p50_ns) > 1:
                print(
                    f"  p50 per round, {row.label} blocking 64 B: "
                    + ", ".join(_us(x) for x in spread.round_p50_ns)
                    + " us"
                )
    for note in report.notes:
        print(f"note: {note.splitlines()[0]}")


def main(
    argv: Sequence[str] | None = None,
    *,
    script: str = "python bench/queue_bench.py",
    micro: Path | None = None,
) -> int:
    """bench/queue_bench.py: `script` is how the run was started (its report says so)."""
    parser = argparse.ArgumentParser(prog=script, description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one round, shorter phases: about a minute")
    parser.add_argument("--json", action="store_true", help="print only a JSON document on stdout")
    parser.add_argument(
        "--peers",
        default=",".join(peers.NAMES),
        help=f"comma-separated peers to measure (default all): {', '.join(peers.NAMES)}; "
        f"{SUBJECT} is always measured",
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.peers.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in peers.NAMES]
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(peers.NAMES)}")
    selected = [name for name in peers.NAMES if name == SUBJECT or name in chosen]
    command = " ".join([script, *(argv if argv is not None else sys.argv[1:])])
    progress = harness.silent if args.json else harness.to_stderr
    report = measure(
        QUICK if args.quick else FULL, selected, command, progress, micro=harness.find_micro(micro)
    )
    if args.json:
        json.dump(as_json(report), sys.stdout, indent=2)
        print()
    else:
        print_text(report)
    return 0
