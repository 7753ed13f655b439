"""Pub/sub fan-out benchmark: memipc Publisher/Subscriber against iceoryx2 and pyzmq, in one run.

    python bench/pubsub_bench.py [--quick] [--json] [--peers a,b] [--placement split|free]

One publisher process sends messages of 64 B and of 1 MiB as fast as the
channel lets it to 1, 4 and 16 subscriber processes, every one of them a
spawned process that attached before the first message was sent.  Every
configuration is lossless (the publisher waits for the slowest subscriber);
each subscriber reads the first and last byte of every message.  For every
peer (:mod:`memipc._bench.peers.pubsub`) and each (size, subscribers) cell the run
reports messages/s per subscriber (messages received after the first, over
the time from the first to the last one), the mean and range over the
subscribers, the publisher's send rate, and any message lost; then the ratio
of memipc to every peer measured in the same run, and issue 5's target
(memipc at least 2x iceoryx2 per subscriber with 16 subscribers).
bench/README.md gives the method.

``--peers`` picks peers by name (memipc_view is always measured); ``--json``
prints one JSON document on stdout and nothing else.  ``memipc bench`` runs
the same :func:`measure` with sizes and fan-outs of its choice.
"""

from __future__ import annotations

import argparse
import faulthandler
import itertools
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
from .harness import KIB, MIB, Placement, size_name
from .peers import pubsub

SIZES: tuple[int, ...] = (64, MIB)
FANOUT: tuple[int, ...] = (1, 4, 16)
SUBJECT = "memipc_view"
#: memipc's rows; the target takes the faster one in each cell, as it does for iceoryx2.
SUBJECTS: tuple[str, ...] = ("memipc_view", "memipc_copy")
#: The target is judged against the faster of the iceoryx2 rows in each cell.
TARGET_PEERS: tuple[str, ...] = ("iceoryx2", "iceoryx2_polling")
TARGET_SUBSCRIBERS = 16
TARGET_RATIO = 2.0
#: One-byte messages end the warm-up stream and the timed stream (every measured size is >= 64 B).
END_WARMUP, END_TIMED = b"W", b"E"
#: A subscriber that receives nothing for this long stops waiting (and the cell is reported as failed).
IDLE_S = 10.0
#: Seconds allowed for opening a channel end, and for the publisher to see every subscriber.
OPEN_TIMEOUT_S = 30.0
#: A cell is stopped when no process has reported anything for this long.
SILENCE_S = 60.0
#: Buffering per subscriber, in messages: about what every peer may hold before the publisher waits.
MAX_DEPTH, DEPTH_BYTES = 1000, 16 * MIB


def depth_for(size: int) -> int:
    """64 B: 1000 messages; 1 MiB: 16 (16 MiB)."""
    return max(2, min(MAX_DEPTH, DEPTH_BYTES // size))


@dataclass(frozen=True)
class Settings:
    """How much to measure; --quick trades stability for time."""

    rounds: int  # every cell runs this many times; peers in an order rotated per round
    phase_s: float  # the publisher sends for this long (timed stream)
    warmup_s: float  # and for this long before it (untimed)
    min_messages: int  # the timed stream has at least this many messages, however slow


FULL = Settings(rounds=3, phase_s=1.0, warmup_s=0.2, min_messages=20)
QUICK = Settings(rounds=1, phase_s=0.3, warmup_s=0.05, min_messages=5)


# --------------------------------------------------------------------------- the loops


def _stream(send: Callable[[bytes], object], payload: bytes, seconds: float, min_n: int) -> tuple[int, int]:
    """Send for `seconds`, at least `min_n` messages; (messages, ns from first send to last return)."""
    clock = time.perf_counter_ns
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
    return sent, clock() - start


def _consume(take: Callable[[], int]) -> tuple[int, int, int, bool]:
    """Receive until an end marker: (messages, first receipt ns, last receipt ns, whether the marker came)."""
    clock = time.perf_counter_ns
    received = first = last = 0
    while True:
        length = take()
        if length > 1:
            now = clock()
            if not received:
                first = now
            last = now
            received += 1
            continue
        return received, first, last, length == 1


def publish(end: pubsub.PublisherEnd, subscribers: int, size: int, s: Settings) -> dict[str, Any]:
    """The publisher's part of a cell: wait until it sees every subscriber, then warm-up and timed streams."""
    deadline = time.monotonic() + OPEN_TIMEOUT_S
    seen = end.attached()
    while 0 <= seen < subscribers:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the publisher sees {seen} of {subscribers} subscribers after {OPEN_TIMEOUT_S} s"
            )
        time.sleep(0.001)
        seen = end.attached()
    payload = harness.payload_of(size)
    send = end.send
    warmup, _ = _stream(send, payload, s.warmup_s, 2)
    send(END_WARMUP)
    sent, ns = _stream(send, payload, s.phase_s, s.min_messages)
    send(END_TIMED)
    return {"warmup_sent": warmup, "sent": sent, "ns": ns}


def subscribe(end: pubsub.SubscriberEnd) -> dict[str, Any]:
    """A subscriber's part of a cell: the warm-up stream, then the timed one."""
    warmup, _, _, ended = _consume(end.take)
    if not ended:
        return {"warmup_received": warmup, "received": 0, "first_ns": 0, "last_ns": 0, "ended": False}
    received, first, last, ended = _consume(end.take)
    return {
        "warmup_received": warmup,
        "received": received,
        "first_ns": first,
        "last_ns": last,
        "ended": ended,
        "missed": end.missed(),
    }


# --------------------------------------------------------------------------- worker processes


def worker(cpu: int | None, control: Connection) -> None:
    """Body of every spawned process: publisher or subscriber, cell after cell, as the parent says."""
    os.dup2(2, 1)  # whatever a library prints must not reach --json's stdout
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent's way to see where we hang
    everywhere = os.sched_getaffinity(0)
    harness.pin(cpu)
    adapters: dict[str, pubsub.PubSubPeer] = {}
    publisher: pubsub.PublisherEnd | None = None
    while True:
        try:
            command, args = control.recv()
        except EOFError:
            return
        if command == "quit":
            return
        try:
            if command == "publisher":
                name, link = args
                if name not in adapters:
                    adapters[name] = pubsub.load(name)
                publisher = adapters[name].publisher(link)
                harness.float_helper_threads(everywhere)
                control.send(("ready", None))
            elif command == "publish":
                assert publisher is not None
                control.send(("result", publish(publisher, *args)))
            elif command == "close":
                if publisher is not None:
                    end, publisher = publisher, None
                    end.close()
                control.send(("closed", None))
            elif command == "subscribe":
                name, link = args
                if name not in adapters:
                    adapters[name] = pubsub.load(name)
                subscriber = adapters[name].subscriber(link, IDLE_S)
                try:
                    harness.float_helper_threads(everywhere)
                    control.send(("ready", None))
                    result = subscribe(subscriber)
                finally:
                    subscriber.close()
                control.send(("result", result))
            else:
                raise ValueError(f"unknown command {command!r}")
        except BaseException:
            control.send(("error", traceback.format_exc()))


class CellFailed(Exception):
    pass


class Pool:
    """One publisher process and max(FANOUT) subscriber processes, kept for the whole run.

    Spawning 17 interpreters takes seconds on two CPUs, so the processes are
    made once and each cell tells some of them to open a channel end.  A
    cell that fails kills the pool; the next cell starts a fresh one.
    """

    def __init__(self, placement: Placement, subscribers: int) -> None:
        cpus = harness.available_cpus()
        if placement == "split" and len(cpus) >= 2:
            where: list[int | None] = [cpus[0], *(cpus[1 + i % (len(cpus) - 1)] for i in range(subscribers))]
        else:
            where = [None] * (subscribers + 1)
        self.processes: list[Any] = []
        self.controls: list[Connection] = []
        for cpu in where:
            mine, theirs = peers.SPAWN.Pipe()
            process = peers.SPAWN.Process(target=worker, args=(cpu, theirs), daemon=True)
            process.start()
            theirs.close()
            self.processes.append(process)
            self.controls.append(mine)

    def tell(self, index: int, command: str, args: Any = None) -> None:
        self.controls[index].send((command, args))

    def expect(self, index: int, status: str, timeout: float, label: str) -> Any:
        control = self.controls[index]
        who = "publisher" if index == 0 else f"subscriber {index}"
        if not control.poll(timeout):
            self.dump_stacks()
            raise CellFailed(f"{label}: {who} sent nothing for {timeout:.0f} s (stacks on stderr)")
        try:
            got, value = control.recv()
        except EOFError:
            self.processes[index].join(5)
            raise CellFailed(f"{label}: {who} exited with {self.processes[index].exitcode}") from None
        if got == "error":
            raise CellFailed(f"{label}: {who}: {str(value).strip().splitlines()[-1]}\n{value}")
        if got != status:
            raise CellFailed(f"{label}: {who} said {got!r}, expected {status!r}")
        return value

    def collect(self, indices: list[int], label: str) -> dict[int, Any]:
        """The "result" of every process in `indices`, in whatever order they come."""
        waiting = {self.controls[i]: i for i in indices}
        results: dict[int, Any] = {}
        while waiting:
            ready = multiprocessing.connection.wait(list(waiting), SILENCE_S)
            if not ready:
                self.dump_stacks()
                late = ", ".join("publisher" if i == 0 else f"subscriber {i}" for i in waiting.values())
                raise CellFailed(f"{label}: no result for {SILENCE_S:.0f} s from {late} (stacks on stderr)")
            for connection in ready:
                assert isinstance(connection, Connection)
                index = waiting.pop(connection)
                results[index] = self.expect(index, "result", 1.0, label)
        return results

    def dump_stacks(self) -> None:
        for process in self.processes:
            with suppress(OSError, TypeError):
                os.kill(process.pid, signal.SIGUSR1)
        time.sleep(0.5)

    def close(self, kill: bool = False) -> None:
        if not kill:
            for control in self.controls:
                with suppress(OSError):
                    control.send(("quit", None))
            for process in self.processes:
                process.join(5)
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join()
        for control in self.controls:
            control.close()


# --------------------------------------------------------------------------- one cell, many rounds


@dataclass
class Cell:
    """One (peer, size, subscribers) cell in one round: what the publisher sent, what each subscriber got."""

    sent: int
    publish_ns: int
    subscribers: list[dict[str, Any]]


def run_cell(pool: Pool, name: str, adapter: pubsub.PubSubPeer, size: int, n: int, s: Settings) -> Cell:
    label = f"{name}, {size_name(size)}, {n} subscriber(s)"
    link = adapter.create(size, n, depth_for(size))
    try:
        pool.tell(0, "publisher", (name, link))
        pool.expect(0, "ready", OPEN_TIMEOUT_S, label)
        for index in range(1, n + 1):
            pool.tell(index, "subscribe", (name, link))
        for index in range(1, n + 1):
            pool.expect(index, "ready", OPEN_TIMEOUT_S, label)
        # The barrier: every subscriber is attached and waiting; only now may the publisher send.
        pool.tell(0, "publish", (n, size, s))
        results = pool.collect(list(range(n + 1)), label)
        pool.tell(0, "close")
        pool.expect(0, "closed", OPEN_TIMEOUT_S, label)
    finally:  # after a failure the caller kills every process of the pool
        with suppress(Exception):
            adapter.destroy(link)
    sent = results[0]
    received = [results[index] for index in range(1, n + 1)]
    for index, result in enumerate(received, 1):
        if result["warmup_received"] != sent["warmup_sent"] or result["received"] != sent["sent"]:
            raise CellFailed(
                f"{label}: subscriber {index} received {result['warmup_received']} + {result['received']} "
                f"of {sent['warmup_sent']} + {sent['sent']} messages (warm-up + timed)"
                + ("" if result["ended"] else f"; it gave up after {IDLE_S:.0f} s without a message")
            )
    return Cell(sent=sent["sent"], publish_ns=sent["ns"], subscribers=received)


@dataclass
class Figures:
    """A cell over all rounds: per-subscriber rates (one per subscriber per round) and the publisher's."""

    rates: list[float] = field(default_factory=list)  # msgs/s, one per subscriber per round
    round_means: list[float] = field(default_factory=list)  # mean over the subscribers, per round
    sent: int = 0
    publish_s: float = 0.0
    received: int = 0
    missed: int = 0

    @property
    def mean(self) -> float:
        return sum(self.rates) / len(self.rates) if self.rates else math.nan

    @property
    def low(self) -> float:
        return min(self.rates) if self.rates else math.nan

    @property
    def high(self) -> float:
        return max(self.rates) if self.rates else math.nan

    @property
    def publisher_rate(self) -> float:
        return self.sent / self.publish_s if self.publish_s > 0 else math.nan

    def add(self, cell: Cell) -> None:
        rates = []
        for result in cell.subscribers:
            span_ns = result["last_ns"] - result["first_ns"]
            if result["received"] >= 2 and span_ns > 0:
                rates.append((result["received"] - 1) / (span_ns / 1e9))
            self.received += result["received"]
            self.missed += int(result.get("missed", 0))
        self.rates += rates
        if rates:
            self.round_means.append(sum(rates) / len(rates))
        self.sent += cell.sent
        self.publish_s += cell.publish_ns / 1e9


@dataclass
class Row:
    name: str
    label: str
    how: str = ""
    lossless: bool = True
    cells: dict[tuple[int, int], Figures] = field(default_factory=dict)  # (size, subscribers)
    skipped: str = ""
    failures: list[str] = field(default_factory=list)


@dataclass
class Report:
    meta: dict[str, Any]
    rows: list[Row]
    ratios: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def measure(
    s: Settings,
    selected: Sequence[str],
    placement: Placement,
    command: str,
    progress: harness.Progress,
    *,
    sizes: Sequence[int] = SIZES,
    fanout: Sequence[int] = FANOUT,
) -> Report:
    """One run: every row in `selected` (memipc_view first), at every size and count of subscribers."""
    started = time.monotonic()
    rows: list[Row] = []
    adapters: dict[str, pubsub.PubSubPeer] = {}
    notes: list[str] = []
    for name in selected:
        try:
            adapter = pubsub.load(name)
        except peers.Unavailable as error:
            rows.append(Row(name, name, skipped=str(error)))
            notes.append(f"{name} skipped: {error}")
            continue
        adapters[name] = adapter
        rows.append(Row(name, adapter.label, adapter.how, adapter.lossless))
    by_name = {row.name: row for row in rows}
    cpus = harness.available_cpus()
    where = (
        f"publisher pinned to CPU {cpus[0]}, subscribers to CPU(s) {', '.join(map(str, cpus[1:]))}"
        if placement == "split" and len(cpus) >= 2
        else "not pinned"
    )
    meta: dict[str, Any] = {
        "command": command,
        "date": harness.utc_now(),
        "machine": harness.machine_note(),
        "placement": where,
        "settings": asdict(s),
        "sizes": list(sizes),
        "subscribers": list(fanout),
        "depth": {str(size): depth_for(size) for size in sizes},
        "loadavg_start": list(os.getloadavg()),
    }
    pool: Pool | None = None
    try:
        groups = [(size, n) for size in sizes for n in fanout]
        for round_index in range(s.rounds):
            for group_index, (size, n) in enumerate(groups):
                for name in harness.rotated(list(adapters), round_index + group_index):
                    cell_name = f"{name}, {size_name(size)}, {n} subscriber(s)"
                    progress(f"round {round_index + 1}/{s.rounds}: {cell_name}")
                    row = by_name[name]
                    if pool is None:
                        pool = Pool(placement, max(fanout))
                    try:
                        cell = run_cell(pool, name, adapters[name], size, n, s)
                    except CellFailed as failed:
                        pool.close(kill=True)
                        pool = None
                        first_line = str(failed).splitlines()[0]
                        row.failures.append(f"round {round_index + 1}: {first_line}")
                        notes.append(f"{row.label} failed in round {round_index + 1}: {failed}")
                        continue
                    row.cells.setdefault((size, n), Figures()).add(cell)
    finally:
        if pool is not None:
            pool.close()
        for adapter in adapters.values():
            with suppress(Exception):
                adapter.finish()
    meta["loadavg_end"] = list(os.getloadavg())
    meta["seconds"] = round(time.monotonic() - started, 1)
    report = Report(meta, rows, notes=notes)
    report.ratios = ratios(report)
    return report


# --------------------------------------------------------------------------- ratios


def _mean(report: Report, name: str, size: int, n: int) -> float:
    row = next((row for row in report.rows if row.name == name), None)
    figures = row.cells.get((size, n)) if row is not None else None
    return figures.mean if figures is not None else math.nan


def versus_memipc(report: Report, row: Row, size: int, n: int) -> float:
    """How many times memipc's per-subscriber rate this row's is, in the same cell (> 1: memipc faster)."""
    return _mean(report, SUBJECT, size, n) / _mean(report, row.name, size, n)


def ratios(report: Report) -> list[dict[str, Any]]:
    """Issue 5's target at 16 subscribers for each size, then context: memipc against the other rows."""
    out: list[dict[str, Any]] = []
    labels = {row.name: row.label for row in report.rows}
    n = TARGET_SUBSCRIBERS
    sizes: list[int] = report.meta["sizes"]
    for size in sizes:
        # Each side in its faster configuration in this cell: memipc's recv_view
        # (zero copy) or recv (one copy; cheaper than zero-copy bookkeeping for
        # small messages), iceoryx2's events or polling.
        ours = [(_mean(report, name, size, n), name) for name in SUBJECTS]
        ours = [(rate, name) for rate, name in ours if not math.isnan(rate)]
        mine, my_best = max(ours) if ours else (math.nan, SUBJECT)
        candidates = [(_mean(report, name, size, n), name) for name in TARGET_PEERS]
        measured = [(rate, name) for rate, name in candidates if not math.isnan(rate)]
        theirs, best = max(measured) if measured else (math.nan, TARGET_PEERS[0])
        value = mine / theirs
        out.append(
            {
                "ratio": f"{size_name(size)}, {n} subscribers, per-subscriber msgs/s, memipc, its faster "
                f"configuration here ({labels.get(my_best, my_best)}) / "
                f"iceoryx2, its faster configuration here ({labels.get(best, best)})",
                "value": value,
                "target": f">= {TARGET_RATIO:g}",
                "met": None if math.isnan(value) else value >= TARGET_RATIO,
                "detail": f"{harness.count(mine)}/s vs {harness.count(theirs)}/s",
            }
        )
    # Context, no target: memipc against every other row at the target's fan-out (the tables have the rest).
    for size in sizes:
        for row in report.rows:
            if row.name == SUBJECT or not row.cells:
                continue
            value = versus_memipc(report, row, size, n)
            out.append(
                {
                    "ratio": f"context: {size_name(size)}, {n} subscribers, memipc recv_view / {row.label}",
                    "value": value,
                    "target": None,
                    "met": None,
                    "detail": "",
                }
            )
    return out


# --------------------------------------------------------------------------- output


def as_json(report: Report) -> dict[str, Any]:
    rows = []
    for row in report.rows:
        cells = {}
        for (size, n), figures in sorted(row.cells.items()):
            cells[f"{size}:{n}"] = {
                "size": size,
                "subscribers": n,
                "per_subscriber_msgs_per_s": {
                    "mean": figures.mean,
                    "min": figures.low,
                    "max": figures.high,
                    "round_means": figures.round_means,
                    "all": figures.rates,
                },
                "publisher_msgs_per_s": figures.publisher_rate,
                "sent": figures.sent,
                "received": figures.received,
                "missed": figures.missed,
                "memipc_times": versus_memipc(report, row, size, n),
            }
        rows.append(
            {
                "peer": row.name,
                "label": row.label,
                "how": row.how,
                "lossless": row.lossless,
                "cells": cells,
                "skipped": row.skipped,
                "failures": row.failures,
            }
        )
    document = {"meta": report.meta, "peers": rows, "ratios": report.ratios, "notes": report.notes}
    cleaned: dict[str, Any] = harness.clean_for_json(document)
    return cleaned


def print_text(report: Report) -> None:
    meta, machine, settings = report.meta, report.meta["machine"], report.meta["settings"]
    print(f"memipc pub/sub fan-out benchmark (issue 5): {meta['command']}")
    print(
        f"{meta['date']}  Python {machine['python']}  Linux {machine['kernel']}  "
        f"{machine['cpus']} CPUs ({machine['cpu_model']})  "
        f"memipc {machine['memipc']} (_core sha256 {machine['memipc_core_sha256'] or '-'})"
    )
    load_start = " ".join(f"{x:.2f}" for x in meta["loadavg_start"])
    load_end = " ".join(f"{x:.2f}" for x in meta["loadavg_end"])
    print(f"placement: {meta['placement']}; load average {load_start} at start, {load_end} at end")
    print(
        f"{settings['rounds']} round(s); per cell {settings['phase_s']} s timed after "
        f"{settings['warmup_s']} s warm-up; buffering per subscriber: "
        + ", ".join(f"{depth} messages at {size_name(int(size))}" for size, depth in meta["depth"].items())
        + f"; {meta['seconds']} s in all"
    )
    print()
    measured = [row for row in report.rows if row.cells]
    header = (
        f"  {'peer':<24}{'subs':>5}{'mean/s':>11}{'min/s':>10}{'max/s':>10}{'GB/s/sub':>10}"
        f"{'pub/s':>10}{'lost':>6}{'memipc x':>10}"
    )
    sizes: list[int] = meta["sizes"]
    for number, size in enumerate(sizes, 1):
        print(
            f"({number}) {size_name(size)}: msgs/s per subscriber (messages after the first / first-to-last "
            "receipt), over all subscribers and rounds; 'memipc x' = memipc recv_view's mean / this row's"
        )
        print(header)
        for row in measured:
            for n in meta["subscribers"]:
                figures = row.cells.get((size, n))
                if figures is None:
                    print(f"  {row.label:<24}{n:>5}{'-':>11}")
                    continue
                lost = figures.sent * n - figures.received
                print(
                    f"  {row.label:<24}{n:>5}{harness.count(figures.mean):>11}"
                    f"{harness.count(figures.low):>10}{harness.count(figures.high):>10}"
                    f"{figures.mean * size / 1e9:>10.3g}"
                    f"{harness.count(figures.publisher_rate):>10}{lost + figures.missed:>6}"
                    f"{harness.times(versus_memipc(report, row, size, n)):>10}"
                )
        print()
    print(f"({len(sizes) + 1}) Ratios (issue 5 target; per-subscriber means over the whole run)")
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
    for row in measured:
        for size in sizes:
            figures = row.cells.get((size, TARGET_SUBSCRIBERS))
            if figures is not None and len(figures.round_means) > 1:
                print(
                    f"  per round, {row.label}, {size_name(size)}, {TARGET_SUBSCRIBERS} subscribers, mean/s: "
                    + ", ".join(harness.count(x) for x in figures.round_means)
                )
    for note in report.notes:
        print(f"note: {note.splitlines()[0]}")


def main(argv: Sequence[str] | None = None, *, script: str = "python bench/pubsub_bench.py") -> int:
    """bench/pubsub_bench.py: `script` is how the run was started (its report says so)."""
    parser = argparse.ArgumentParser(prog=script, description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one round, shorter streams: under a minute")
    parser.add_argument("--json", action="store_true", help="print only a JSON document on stdout")
    parser.add_argument(
        "--peers",
        default=",".join(pubsub.NAMES),
        help=f"comma-separated peers (default all): {', '.join(pubsub.NAMES)}; {SUBJECT} is always measured",
    )
    parser.add_argument(
        "--placement",
        choices=("split", "free"),
        default="split",
        help="split (default): publisher on the first CPU, subscribers on the others; free: no pinning",
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.peers.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in pubsub.NAMES]
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(pubsub.NAMES)}")
    selected = [name for name in pubsub.NAMES if name == SUBJECT or name in chosen]
    command = " ".join([script, *(argv if argv is not None else sys.argv[1:])])
    progress = harness.silent if args.json else harness.to_stderr
    report = measure(QUICK if args.quick else FULL, selected, args.placement, command, progress)
    if args.json:
        json.dump(as_json(report), sys.stdout, indent=2)
        print()
    else:
        print_text(report)
    return 0
