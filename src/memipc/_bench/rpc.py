"""Request/response benchmark: memipc Server/Client against pyzmq REQ/REP and multiprocessing, in one run.

    python bench/rpc_bench.py [--quick] [--json] [--peers a,b] [--placement split|free]

A client process calls a server process that answers every request with the
same bytes; one call is timed from the request's send to the response's
return, for 64 B and 1 MiB.  For memipc.Server / memipc.Client and every
importable peer (:mod:`memipc._bench.peers.rpc`): pyzmq REQ/REP over ipc://,
multiprocessing.Pipe used by hand, and a multiprocessing manager's
registered object called through its proxy.  The run reports p50 / p99 /
mean round trip per size after a warm-up, each row's ratio to memipc
measured in the same run, and issue 5's target (memipc's 64 B round trip at
least 10x faster than pyzmq REQ/REP).  bench/README.md gives the method.

``--peers`` picks peers by name (memipc is always measured); ``--json`` prints
one JSON document on stdout and nothing else.  ``memipc bench`` runs the same
:func:`measure`.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import math
import multiprocessing.connection
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from . import harness, peers
from .harness import MIB, Latency, Placement, size_name
from .peers import rpc

SIZES: tuple[int, ...] = (64, MIB)
MAX_MESSAGE = MIB
SUBJECT = "memipc"
TARGET_PEER, TARGET_SIZE, TARGET_RATIO = "pyzmq", 64, 10.0
#: Seconds allowed for a server to open its service, and to stop after SIGINT.
READY_TIMEOUT_S, STOP_TIMEOUT_S = 30.0, 10.0
#: A round is stopped when the client has not started or finished a size for this long.
SILENCE_S = 60.0


@dataclass(frozen=True)
class Settings:
    """How much to measure; --quick trades stability for time."""

    rounds: int  # every peer runs this many times, in an order rotated per round
    phase_s: float  # timed calls per size per round, in seconds
    warmup_s: float  # untimed calls before them
    min_samples: int  # at least this many timed calls, however slow the peer
    max_samples: int  # and at most this many


FULL = Settings(rounds=3, phase_s=1.0, warmup_s=0.2, min_samples=20, max_samples=200_000)
QUICK = Settings(rounds=1, phase_s=0.25, warmup_s=0.05, min_samples=5, max_samples=50_000)


# --------------------------------------------------------------------------- the loop


def timed_calls(
    call: Callable[[bytes], bytes], payload: bytes, seconds: float, min_n: int, max_n: int
) -> list[int]:
    """Call for `seconds` (at least `min_n`, at most `max_n` times); ns per call; the last reply checked."""
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    deadline = clock() + int(seconds * 1e9)
    reply = b""
    while True:
        start = clock()
        reply = call(payload)
        stop = clock()
        append(stop - start)
        if (stop >= deadline and len(samples) >= min_n) or len(samples) >= max_n:
            break
    last = len(payload) - 1
    if len(reply) != len(payload) or reply[0] != payload[0] or reply[last] != payload[last]:
        raise RuntimeError(f"sent {len(payload)} B, got {len(reply)} B back, or different bytes")
    return samples


# --------------------------------------------------------------------------- the two processes


def server_main(name: str, link: object, cpu: int | None, control: Connection) -> None:
    """The server process: open the service, say ready, answer until SIGINT, say stopped."""
    os.dup2(2, 1)  # whatever a library prints must not reach --json's stdout
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent's way to see where we hang
    everywhere = os.sched_getaffinity(0)
    harness.pin(cpu)

    def ready() -> None:
        harness.float_helper_threads(everywhere)
        control.send(("ready", None))

    try:
        rpc.load(name).serve(link, ready)
        control.send(("stopped", None))
    except BaseException:
        control.send(("error", traceback.format_exc()))


def client_main(name: str, link: object, s: Settings, cpu: int | None, control: Connection) -> None:
    """The client process: connect, then for each size a warm-up and the timed calls; report each size."""
    os.dup2(2, 1)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    everywhere = os.sched_getaffinity(0)
    harness.pin(cpu)
    end: rpc.ClientEnd | None = None
    try:
        end = rpc.load(name).client(link)
        end.call(harness.payload_of(SIZES[0]))  # starts the library's helper threads; then let them float
        harness.float_helper_threads(everywhere)
        for size in SIZES:
            control.send(("start", size))
            payload = harness.payload_of(size)
            timed_calls(end.call, payload, s.warmup_s, 2, s.max_samples)
            samples = timed_calls(end.call, payload, s.phase_s, s.min_samples, s.max_samples)
            control.send(("size", (size, samples)))
        control.send(("done", None))
    except BaseException:
        control.send(("error", traceback.format_exc()))
    finally:
        if end is not None:
            with suppress(Exception):
                end.close()


# --------------------------------------------------------------------------- the parent


class RoundFailed(Exception):
    pass


class Round:
    """The two processes of one round and their control pipes; a message from either can end the round."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.processes: dict[str, Any] = {}
        self.controls: dict[str, Connection] = {}

    def start(self, role: str, target: Callable[..., None], args: tuple[Any, ...]) -> None:
        mine, theirs = peers.SPAWN.Pipe()
        process = peers.SPAWN.Process(target=target, args=(*args, theirs), daemon=True)
        process.start()
        theirs.close()
        self.processes[role] = process
        self.controls[role] = mine

    def receive(self, role: str, timeout: float, what: str) -> tuple[str, Any]:
        """The next message from `role`; RoundFailed if either process reports an error or dies,
        or `role` says nothing for `timeout` seconds (then both print their stacks to stderr)."""
        while True:
            ready = multiprocessing.connection.wait(list(self.controls.values()), timeout)
            if not ready:
                for process in self.processes.values():
                    with suppress(OSError, TypeError):
                        os.kill(process.pid, signal.SIGUSR1)
                time.sleep(0.5)
                raise RoundFailed(
                    f"{self.name} {role}, {what}: nothing for {timeout:.0f} s (stacks on stderr)"
                )
            for sender, control in self.controls.items():
                if control not in ready:
                    continue
                try:
                    status, value = control.recv()
                except EOFError:
                    self.processes[sender].join(5)
                    code = self.processes[sender].exitcode
                    raise RoundFailed(f"{self.name} {sender}, {what}: process exited with {code}") from None
                if status == "error":
                    last = str(value).strip().splitlines()[-1]
                    raise RoundFailed(f"{self.name} {sender}, {what}: {last}\n{value}")
                if sender == role:
                    return status, value
                raise RoundFailed(f"{self.name} {sender}, {what}: unexpected {status!r}")

    def retire(self, role: str) -> None:
        """`role` has said all it will: wait for it to exit, and stop listening to it."""
        self.processes[role].join(10)
        self.controls.pop(role).close()

    def interrupt(self, role: str) -> None:
        pid = self.processes[role].pid
        assert pid is not None
        os.kill(pid, signal.SIGINT)

    def close(self) -> None:
        for process in self.processes.values():
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
        for control in self.controls.values():
            control.close()


def peer_round(
    name: str, adapter: rpc.RpcPeer, s: Settings, cpu_client: int | None, cpu_server: int | None
) -> tuple[dict[int, list[int]], str]:
    """One round of one peer: a server, then a client for every size; (samples per size, failure or "")."""
    link = adapter.create(MAX_MESSAGE)
    pair = Round(name)
    results: dict[int, list[int]] = {}
    failure = ""
    try:
        pair.start("server", server_main, (name, link, cpu_server))
        pair.receive("server", READY_TIMEOUT_S, "opening")
        pair.start("client", client_main, (name, link, s, cpu_client))
        while True:
            status, value = pair.receive("client", SILENCE_S, "calling")
            if status == "done":
                break
            if status == "size":
                size, samples = value
                results[size] = samples
        pair.retire("client")
        pair.interrupt("server")
        pair.receive("server", STOP_TIMEOUT_S, "stopping on SIGINT")
    except RoundFailed as failed:
        failure = str(failed)
    finally:
        pair.close()
        with suppress(Exception):
            adapter.destroy(link)
    return results, failure


@dataclass
class Row:
    name: str
    label: str
    how: str = ""
    rounds: dict[int, list[list[int]]] = field(default_factory=dict)  # size -> samples of each round
    latency: dict[int, Latency] = field(default_factory=dict)
    skipped: str = ""
    failures: list[str] = field(default_factory=list)


@dataclass
class Report:
    meta: dict[str, Any]
    rows: list[Row]
    ratios: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def measure(
    s: Settings, selected: Sequence[str], placement: Placement, command: str, progress: harness.Progress
) -> Report:
    """One run: every row in `selected` (memipc first), at both sizes."""
    started = time.monotonic()
    rows: list[Row] = []
    adapters: dict[str, rpc.RpcPeer] = {}
    notes: list[str] = []
    for name in selected:
        try:
            adapter = rpc.load(name)
        except peers.Unavailable as error:
            rows.append(Row(name, name, skipped=str(error)))
            notes.append(f"{name} skipped: {error}")
            continue
        adapters[name] = adapter
        rows.append(Row(name, adapter.label, adapter.how))
    by_name = {row.name: row for row in rows}
    cpus = harness.available_cpus()
    cpu_client: int | None
    cpu_server: int | None
    if placement == "split" and len(cpus) >= 2:
        cpu_client, cpu_server = cpus[0], cpus[1]
        where = f"client pinned to CPU {cpu_client}, server to CPU {cpu_server}"
    else:
        cpu_client = cpu_server = None
        where = "not pinned"
    meta: dict[str, Any] = {
        "command": command,
        "date": harness.utc_now(),
        "machine": harness.machine_note(),
        "placement": where,
        "settings": asdict(s),
        "sizes": list(SIZES),
        "loadavg_start": list(os.getloadavg()),
    }
    for round_index in range(s.rounds):
        for name in harness.rotated(list(adapters), round_index):
            progress(f"round {round_index + 1}/{s.rounds}: {name}")
            row = by_name[name]
            results, failure = peer_round(name, adapters[name], s, cpu_client, cpu_server)
            for size, samples in results.items():
                row.rounds.setdefault(size, []).append(samples)
            if failure:
                row.failures.append(f"round {round_index + 1}: {failure.splitlines()[0]}")
                notes.append(f"{row.label} failed in round {round_index + 1}: {failure}")
    for row in rows:
        row.latency = {size: harness.latency(row.rounds[size]) for size in SIZES if size in row.rounds}
    meta["loadavg_end"] = list(os.getloadavg())
    meta["seconds"] = round(time.monotonic() - started, 1)
    report = Report(meta, rows, notes=notes)
    report.ratios = ratios(report)
    return report


# --------------------------------------------------------------------------- ratios


def _p50(report: Report, name: str, size: int) -> float:
    row = next((row for row in report.rows if row.name == name), None)
    figures = row.latency.get(size) if row is not None else None
    return figures.p50_ns if figures is not None else math.nan


def versus_memipc(report: Report, row: Row, size: int) -> float:
    """This row's p50 round trip over memipc's, same run (> 1: memipc is that many times faster)."""
    return _p50(report, row.name, size) / _p50(report, SUBJECT, size)


def ratios(report: Report) -> list[dict[str, Any]]:
    """Issue 5's target (64 B, vs pyzmq REQ/REP, at p50), then every other row and size as context."""
    out: list[dict[str, Any]] = []
    labels = {row.name: row.label for row in report.rows}
    mine, theirs = _p50(report, SUBJECT, TARGET_SIZE), _p50(report, TARGET_PEER, TARGET_SIZE)
    value = theirs / mine
    out.append(
        {
            "ratio": f"{size_name(TARGET_SIZE)} round trip at p50, memipc vs "
            f"{labels.get(TARGET_PEER, TARGET_PEER)} (x faster)",
            "value": value,
            "target": f">= {TARGET_RATIO:g}",
            "met": None if math.isnan(value) else value >= TARGET_RATIO,
            "detail": f"{harness.us(mine)} us vs {harness.us(theirs)} us",
        }
    )
    for size in SIZES:
        for row in report.rows:
            if row.name == SUBJECT or not row.latency or (row.name, size) == (TARGET_PEER, TARGET_SIZE):
                continue
            out.append(
                {
                    "ratio": f"context: {size_name(size)} round trip at p50, "
                    f"memipc vs {row.label} (x faster)",
                    "value": versus_memipc(report, row, size),
                    "target": None,
                    "met": None,
                    "detail": f"{harness.us(_p50(report, SUBJECT, size))} us vs "
                    f"{harness.us(_p50(report, row.name, size))} us",
                }
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
                "round_trip_ns": {
                    str(size): {**asdict(figures), "memipc_times": versus_memipc(report, row, size)}
                    for size, figures in row.latency.items()
                },
                "skipped": row.skipped,
                "failures": row.failures,
            }
        )
    document = {"meta": report.meta, "peers": rows, "ratios": report.ratios, "notes": report.notes}
    cleaned: dict[str, Any] = harness.clean_for_json(document)
    return cleaned


def print_text(report: Report) -> None:
    meta, machine, settings = report.meta, report.meta["machine"], report.meta["settings"]
    print(f"memipc request/response benchmark (issue 5): {meta['command']}")
    print(
        f"{meta['date']}  Python {machine['python']}  Linux {machine['kernel']}  "
        f"{machine['cpus']} CPUs ({machine['cpu_model']})  "
        f"memipc {machine['memipc']} (_core sha256 {machine['memipc_core_sha256'] or '-'})"
    )
    load_start = " ".join(f"{x:.2f}" for x in meta["loadavg_start"])
    load_end = " ".join(f"{x:.2f}" for x in meta["loadavg_end"])
    print(f"placement: {meta['placement']}; load average {load_start} at start, {load_end} at end")
    print(
        f"{settings['rounds']} round(s); per size {settings['phase_s']} s of timed calls after "
        f"{settings['warmup_s']} s warm-up; {meta['seconds']} s in all"
    )
    print()
    print(
        "(1) Round trip, us: p50 / p99 / mean (the client sends N bytes, the server answers with them); "
        "'memipc x' = this row's p50 / memipc's"
    )
    cell, ratio_width = 24, 10
    print(
        f"  {'peer':<26}"
        + "".join(f"{size_name(size) + ' p50/p99/mean':>{cell}}{'memipc x':>{ratio_width}}" for size in SIZES)
        + "".join(f"{'n ' + size_name(size):>{ratio_width}}" for size in SIZES)
    )
    for row in report.rows:
        if not row.latency:
            continue
        text = f"  {row.label:<26}"
        for size in SIZES:
            figures = row.latency.get(size)
            if figures is None:
                text += f"{'-':>{cell}}{'-':>{ratio_width}}"
                continue
            triple = (
                f"{harness.us(figures.p50_ns)}/{harness.us(figures.p99_ns)}/{harness.us(figures.mean_ns)}"
            )
            text += f"{triple:>{cell}}{harness.times(versus_memipc(report, row, size)):>{ratio_width}}"
        text += "".join(
            f"{row.latency[size].n if size in row.latency else 0:>{ratio_width}}" for size in SIZES
        )
        print(text)
    print()
    print("(2) Ratios (issue 5 target; p50 over the whole run)")
    for ratio in report.ratios:
        value = ratio["value"]
        text = "-" if math.isnan(value) else f"{value:.2f}" if value < 100 else f"{value:.0f}"
        line = f"  {ratio['ratio']}: {text}"
        if ratio["detail"]:
            line += f"  ({ratio['detail']})"
        if ratio["target"] is not None:
            verdict = "met" if ratio["met"] else "MISSED" if ratio["met"] is not None else "not measured"
            line += f"  target {ratio['target']}: {verdict}"
        print(line)
    for row in report.rows:
        figures = row.latency.get(TARGET_SIZE)
        if figures is not None and len(figures.round_p50_ns) > 1:
            print(
                f"  p50 per round, {row.label}, {size_name(TARGET_SIZE)}: "
                + ", ".join(harness.us(x) for x in figures.round_p50_ns)
                + " us"
            )
    for note in report.notes:
        print(f"note: {note.splitlines()[0]}")


def main(argv: Sequence[str] | None = None, *, script: str = "python bench/rpc_bench.py") -> int:
    """bench/rpc_bench.py: `script` is how the run was started (its report says so)."""
    parser = argparse.ArgumentParser(prog=script, description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one round of shorter phases: about 10 s")
    parser.add_argument("--json", action="store_true", help="print only a JSON document on stdout")
    parser.add_argument(
        "--peers",
        default=",".join(rpc.NAMES),
        help=f"comma-separated peers (default all): {', '.join(rpc.NAMES)}; {SUBJECT} is always measured",
    )
    parser.add_argument(
        "--placement",
        choices=("split", "free"),
        default="split",
        help="split (default): client on the first CPU, server on the second; free: no pinning",
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.peers.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in rpc.NAMES]
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(rpc.NAMES)}")
    selected = [name for name in rpc.NAMES if name == SUBJECT or name in chosen]
    command = " ".join([script, *(argv if argv is not None else sys.argv[1:])])
    progress = harness.silent if args.json else harness.to_stderr
    report = measure(QUICK if args.quick else FULL, selected, args.placement, command, progress)
    if args.json:
        json.dump(as_json(report), sys.stdout, indent=2)
        print()
    else:
        print_text(report)
    return 0
