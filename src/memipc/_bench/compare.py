"""``memipc bench``'s run: the four benchmarks over the chosen peers, reduced to memipc-vs-peer ratios.

Each benchmark (queue, sync, pubsub, rpc) measures its own rows and reports
them its own way.  This module picks the rows that stand for the peers asked
for (:mod:`.catalog`), runs the benchmarks one after another, and reduces
every report to *cells*: one figure of one row in one measure, either a time
(a round trip's p50, in ns) or a rate (messages per second).

A peer's cell names the memipc row it is compared with, in the same measure
of the same run; its ratio is "memipc x", how many times faster memipc is:
the peer's time over memipc's, or memipc's rate over the peer's.  So > 1
always means memipc is ahead, and only figures of one run are ever divided
(the machine is shared; absolute figures drift between runs, ratios within
one run much less).

The figures themselves are the benchmarks', unchanged: the cells are a view
of their reports, which the JSON carries in full.
"""

from __future__ import annotations

import importlib
import math
import os
import shutil
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import harness, pubsub, queue, rpc, sync
from .catalog import BY_NAME, PeerSpec, install_hint
from .harness import MIB, size_name
from .peers import NAMES as QUEUE_PEERS
from .peers import pubsub as pubsub_peers
from .peers import rpc as rpc_peers

Unit = Literal["ns", "msgs/s"]
MEMIPC = "memipc"

#: --quick: the scripts' quick settings, on fewer sizes and one fan-out, so that all four
#: benchmarks with every peer take about a minute on two CPUs.
QUICK_QUEUE_SIZES: tuple[int, ...] = (64, MIB)
QUICK_PUBSUB_SIZES: tuple[int, ...] = (64, MIB)
QUICK_FANOUT: tuple[int, ...] = (4,)


@dataclass(frozen=True)
class PeerStatus:
    """What became of a peer asked for: measured, skipped (why, and how to install it), or not run."""

    name: str
    what: str
    status: Literal["measured", "skipped", "not in the chosen benchmarks"]
    reason: str = ""
    install: str = ""


def why_unavailable(peer: PeerSpec, micro: Path | None) -> str:
    """Why `peer` cannot run here, with what to do about it; "" if it can."""
    for module in peer.modules:
        try:
            importlib.import_module(module)
        except Exception as error:  # ImportError, or a library that fails while loading
            return f"not importable ({error}); {install_hint(peer)}"
    if peer.name == "c":
        if micro is None:
            return (
                "bench/micro/*.c not found: run from a memipc checkout, or pass --micro DIR "
                "(the C references are not part of the package)"
            )
        if shutil.which("gcc") is None:
            return "gcc not found: install gcc to build the C references"
    return ""


def select(
    names: Sequence[str], suites: Sequence[str], micro: Path | None
) -> tuple[tuple[str, ...], list[PeerStatus]]:
    """The peers of `names` that will run in `suites`, and the status of every peer asked for."""
    runnable: list[str] = []
    statuses: list[PeerStatus] = []
    for name in names:
        peer = BY_NAME[name]
        if not set(peer.suites) & set(suites):
            statuses.append(
                PeerStatus(
                    name, peer.what, "not in the chosen benchmarks", f"only in {', '.join(peer.suites)}"
                )
            )
            continue
        reason = why_unavailable(peer, micro)
        if reason:
            statuses.append(PeerStatus(name, peer.what, "skipped", reason, install_hint(peer)))
            continue
        runnable.append(name)
        statuses.append(PeerStatus(name, peer.what, "measured"))
    return tuple(runnable), statuses


# --------------------------------------------------------------------------- cells and ratios


@dataclass(frozen=True)
class Cell:
    """One figure of one row in one measure of one benchmark.

    ``peer`` is "memipc" or a peer's name from the catalog; ``against`` is,
    for a peer's cell, the row of memipc's it is compared with ("" for
    memipc's own cells, and for memipc figures that no peer shares).
    ``n``: the round trips or messages the figure rests on.
    """

    suite: str
    measure: str
    row: str
    peer: str
    unit: Unit
    value: float
    n: int
    p99_ns: float = math.nan
    against: str = ""


@dataclass(frozen=True)
class Ratio:
    """A peer's cell against memipc's in the same measure: ``memipc_x`` > 1 means memipc is faster."""

    suite: str
    measure: str
    peer: str
    row: str
    memipc_row: str
    unit: Unit
    memipc: float
    theirs: float
    memipc_x: float


def ratios(cells: Iterable[Cell]) -> list[Ratio]:
    cells = list(cells)
    mine = {(cell.suite, cell.measure, cell.row): cell for cell in cells if cell.peer == MEMIPC}
    out: list[Ratio] = []
    for cell in cells:
        subject = mine.get((cell.suite, cell.measure, cell.against))
        if cell.peer == MEMIPC or subject is None:
            continue
        times = cell.value / subject.value if cell.unit == "ns" else subject.value / cell.value
        if math.isfinite(times) and times > 0:
            out.append(
                Ratio(
                    cell.suite,
                    cell.measure,
                    cell.peer,
                    cell.row,
                    subject.row,
                    cell.unit,
                    subject.value,
                    cell.value,
                    times,
                )
            )
    return out


@dataclass(frozen=True)
class Headline:
    """A measure the summary gives one column (and the chart one group of bars)."""

    suite: str
    measure: str
    title: str
    unit: Unit


def headlines(cells: Sequence[Cell]) -> list[Headline]:
    """The one or two measures of each benchmark that say most: 64 B round trips and streams."""
    wanted = [
        Headline("queue", "round trip 64 B, blocking", "queue round trip 64 B", "ns"),
        Headline("queue", "stream 64 B", "queue stream 64 B", "msgs/s"),
        Headline("sync", "handoff round trip", "sync handoff round trip", "ns"),
        Headline("rpc", "call round trip 64 B", "rpc call 64 B", "ns"),
    ]
    # pub/sub: 64 B to as many subscribers as the run had.
    measured = {cell.measure for cell in cells if cell.suite == "pubsub"}
    fanouts = [
        n for n in sorted({*pubsub.FANOUT, *QUICK_FANOUT}, reverse=True) if _fanout_measure(64, n) in measured
    ]
    if fanouts:
        n = fanouts[0]
        wanted.insert(
            3, Headline("pubsub", _fanout_measure(64, n), f"pubsub 64 B to {n} subscribers", "msgs/s")
        )
    present = {(cell.suite, cell.measure) for cell in cells}
    return [line for line in wanted if (line.suite, line.measure) in present]


def _fanout_measure(size: int, subscribers: int) -> str:
    return f"{size_name(size)} to {subscribers} subscribers, per subscriber"


def _latency_cell(
    suite: str, measure: str, row: str, peer: str, figures: harness.Latency, against: str
) -> Cell | None:
    if figures.n == 0 or not math.isfinite(figures.p50_ns):
        return None
    return Cell(suite, measure, row, peer, "ns", figures.p50_ns, figures.n, figures.p99_ns, against)


def queue_cells(report: queue.Report, owners: dict[str, str]) -> list[Cell]:
    """Round trips (blocking, busy-poll) and streams per size; memipc's batch and zero-copy streams."""
    subject = next((row.label for row in report.rows if row.name == queue.SUBJECT), "")
    cells: list[Cell | None] = []
    for row in report.rows:
        peer = MEMIPC if row.name == queue.SUBJECT else owners.get(row.name, row.name)
        against = "" if peer == MEMIPC else subject
        for key, figures in row.round_trip.items():
            mode, size = key.split(":")
            measure = f"round trip {size_name(int(size))}, {'busy-poll' if mode == 'busy' else 'blocking'}"
            cells.append(_latency_cell("queue", measure, row.label, peer, figures, against))
        for key, rate in row.stream.items():
            kind, size = key.split(":")
            name = {"stream": "stream", "batch": "send_many/recv_many stream", "zerocopy": "zero-copy stream"}
            if math.isfinite(rate.msgs_per_s):
                measure = f"{name[kind]} {size_name(int(size))}"
                cells.append(
                    Cell(
                        "queue",
                        measure,
                        row.label,
                        peer,
                        "msgs/s",
                        rate.msgs_per_s,
                        rate.messages,
                        against=against,
                    )
                )
    references = report.references
    for key, measure, label, peer in (
        (
            "shm_counters",
            "round trip 64 B, busy-poll",
            "shared_memory + 2 counters, Python spin",
            "shm_counters",
        ),
        ("c_spin", "round trip 64 B, busy-poll", "C ping-pong, spin (no payload)", "c"),
        ("c_sleep", "round trip 64 B, blocking", "C ping-pong, futex sleep (no payload)", "c"),
    ):
        if key in references:
            cells.append(_latency_cell("queue", measure, label, peer, references[key], subject))
    gbps = references.get("memcpy_16MiB_gbps")
    if isinstance(gbps, float) and gbps > 0:  # as messages/s of 16 MiB: one copy per message
        measure, copies_per_s = f"stream {size_name(queue.MAX_MESSAGE)}", gbps * 1e9 / queue.MAX_MESSAGE
        label = "memcpy 16 MiB, one thread (C)"
        copies = (
            len(references.get("memcpy_16MiB_round_gbps", [])) * report.meta["settings"]["memcpy_repeats"]
        )
        cells.append(Cell("queue", measure, label, "c", "msgs/s", copies_per_s, copies, against=subject))
    return [cell for cell in cells if cell is not None]


#: Which memipc row each sync row is compared with: a primitive of the same kind, and for the C
#: sleep-only handoff, memipc's sleep-only mode (issue 3 holds that one to the C program).
SYNC_AGAINST: dict[str, str] = {
    "multiprocessing.Lock": "memipc.Mutex",
    "multiprocessing.Semaphore": "memipc.Semaphore",
    "posix_ipc.Semaphore": "memipc.Semaphore",
    sync.C_SLEEP: sync.MEMIPC_SLEEP,
}
SYNC_UNCONTENDED = {
    "memipc.Mutex": "uncontended lock, acquire + release",
    "multiprocessing.Lock": "uncontended lock, acquire + release",
    "memipc.Semaphore": "uncontended semaphore, acquire + release",
    "multiprocessing.Semaphore": "uncontended semaphore, acquire + release",
    "posix_ipc.Semaphore": "uncontended semaphore, acquire + release",
}
SYNC_PEER = {"memipc": MEMIPC, "multiprocessing": "mp_sync", "posix_ipc": "posix_ipc", "c": "c"}


def sync_cells(report: sync.Report) -> list[Cell]:
    """Uncontended lock and semaphore calls; the cross-process handoff round trip."""
    library = {handoff.label: handoff.library for handoff in sync.HANDOFFS}
    library.update({item.label: item.library for item in sync.UNCONTENDED})
    cells: list[Cell] = []
    rows = [(SYNC_UNCONTENDED.get(f.label, ""), f) for f in report.uncontended]
    rows += [("handoff round trip", f) for f in report.handoff]
    for measure, figures in rows:
        peer = SYNC_PEER.get(library.get(figures.label, ""), "")
        if not measure or not peer or not figures.ok:
            continue
        against = "" if peer == MEMIPC else SYNC_AGAINST.get(figures.label, sync.MEMIPC_DEFAULT)
        cells.append(
            Cell(
                "sync", measure, figures.label, peer, "ns", figures.p50_ns, figures.n, figures.p99_ns, against
            )
        )
    return cells


def pubsub_cells(report: pubsub.Report, owners: dict[str, str]) -> list[Cell]:
    """Messages per second per subscriber, for every size and number of subscribers."""
    subject = next((row.label for row in report.rows if row.name == pubsub.SUBJECT), "")
    cells: list[Cell] = []
    for row in report.rows:
        peer = MEMIPC if row.name.startswith("memipc") else owners.get(row.name, row.name)
        against = "" if peer == MEMIPC else subject
        for (size, n), figures in sorted(row.cells.items()):
            if math.isfinite(figures.mean):
                measure = _fanout_measure(size, n)
                cells.append(
                    Cell(
                        "pubsub",
                        measure,
                        row.label,
                        peer,
                        "msgs/s",
                        figures.mean,
                        figures.received,
                        against=against,
                    )
                )
    return cells


def rpc_cells(report: rpc.Report, owners: dict[str, str]) -> list[Cell]:
    """The call's round trip at p50, per size."""
    subject = next((row.label for row in report.rows if row.name == rpc.SUBJECT), "")
    cells: list[Cell | None] = []
    for row in report.rows:
        peer = MEMIPC if row.name == rpc.SUBJECT else owners.get(row.name, row.name)
        against = "" if peer == MEMIPC else subject
        for size, figures in sorted(row.latency.items()):
            measure = f"call round trip {size_name(size)}"
            cells.append(_latency_cell("rpc", measure, row.label, peer, figures, against))
    return [cell for cell in cells if cell is not None]


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Plan:
    """What to run: which benchmarks, which peers (already known to be runnable), how long."""

    quick: bool
    suites: tuple[str, ...]
    peers: tuple[str, ...]
    micro: Path | None
    command: str


@dataclass
class SuiteRun:
    cells: list[Cell]
    report: dict[str, Any]  # the benchmark's own JSON document
    failures: list[str]
    notes: list[str]


def _owners(plan: Plan, suite: str) -> dict[str, str]:
    """The benchmark's row names for the planned peers -> the peer's name."""
    return {row: name for name in plan.peers for row in BY_NAME[name].rows_in(suite)}


def _run_queue(plan: Plan, progress: harness.Progress) -> SuiteRun:
    owners = _owners(plan, "queue")
    sizes = QUICK_QUEUE_SIZES if plan.quick else queue.SIZES
    selected = [name for name in QUEUE_PEERS if name == queue.SUBJECT or name in owners]
    references = [name for name in queue.REFERENCES if name in owners]
    if queue.MAX_MESSAGE not in sizes:  # memcpy is compared with the 16 MiB stream only
        references = [name for name in references if name != "memcpy"]
    settings = queue.QUICK if plan.quick else queue.FULL
    report = queue.measure(
        settings, selected, plan.command, progress, sizes=sizes, references=references, micro=plan.micro
    )
    failures = [f"queue, {row.label}: {failure}" for row in report.rows for failure in row.failures]
    return SuiteRun(queue_cells(report, owners), queue.as_json(report), failures, report.notes)


def _run_sync(plan: Plan, progress: harness.Progress) -> SuiteRun:
    libraries = {MEMIPC, *_owners(plan, "sync")}
    settings = sync.QUICK if plan.quick else sync.FULL
    report = sync.measure(settings, "split", plan.command, progress, libraries=libraries, micro=plan.micro)
    failures = [f"sync, {row.label}: {row.note}" for row in report.handoff if row.note.startswith("failed")]
    return SuiteRun(sync_cells(report), sync.as_json(report), failures, report.notes)


def _run_pubsub(plan: Plan, progress: harness.Progress) -> SuiteRun:
    owners = _owners(plan, "pubsub")
    selected = [name for name in pubsub_peers.NAMES if name == pubsub.SUBJECT or name in owners]
    settings = pubsub.QUICK if plan.quick else pubsub.FULL
    report = pubsub.measure(
        settings,
        selected,
        "split",
        plan.command,
        progress,
        sizes=QUICK_PUBSUB_SIZES if plan.quick else pubsub.SIZES,
        fanout=QUICK_FANOUT if plan.quick else pubsub.FANOUT,
    )
    failures = [f"pubsub, {row.label}: {failure}" for row in report.rows for failure in row.failures]
    return SuiteRun(pubsub_cells(report, owners), pubsub.as_json(report), failures, report.notes)


def _run_rpc(plan: Plan, progress: harness.Progress) -> SuiteRun:
    owners = _owners(plan, "rpc")
    selected = [name for name in rpc_peers.NAMES if name == rpc.SUBJECT or name in owners]
    settings = rpc.QUICK if plan.quick else rpc.FULL
    report = rpc.measure(settings, selected, "split", plan.command, progress)
    failures = [f"rpc, {row.label}: {failure}" for row in report.rows for failure in row.failures]
    return SuiteRun(rpc_cells(report, owners), rpc.as_json(report), failures, report.notes)


RUNNERS = {"queue": _run_queue, "sync": _run_sync, "pubsub": _run_pubsub, "rpc": _run_rpc}


@dataclass
class Outcome:
    """A whole ``memipc bench`` run."""

    meta: dict[str, Any]
    peers: list[PeerStatus]
    cells: list[Cell] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run(plan: Plan, statuses: list[PeerStatus], progress: harness.Progress) -> Outcome:
    """Run every benchmark of the plan in turn; a benchmark that crashes is reported, the others go on."""
    started = time.monotonic()
    outcome = Outcome(
        meta={
            "command": plan.command,
            "date": harness.utc_now(),
            "machine": harness.machine_note(),
            "quick": plan.quick,
            "suites": list(plan.suites),
            "loadavg_start": list(os.getloadavg()),
        },
        peers=statuses,
    )
    for index, suite in enumerate(plan.suites, 1):

        def step(message: str, suite: str = suite, index: int = index) -> None:
            progress(f"{suite} ({index}/{len(plan.suites)}): {message}")

        try:
            result = RUNNERS[suite](plan, step)
        except Exception as error:
            outcome.failures.append(f"{suite}: stopped by {error!r}")
            outcome.notes.append(f"{suite} stopped:\n{traceback.format_exc()}")
            continue
        outcome.cells += result.cells
        outcome.reports[suite] = result.report
        outcome.failures += result.failures
        outcome.notes += [f"{suite}: {note}" for note in result.notes]
        if not any(cell.peer == MEMIPC for cell in result.cells):
            outcome.failures.append(f"{suite}: memipc itself was not measured")
    outcome.ratios = ratios(outcome.cells)
    figured = {cell.peer for cell in outcome.cells}
    outcome.peers = [
        status
        if status.status != "measured" or status.name in figured
        else PeerStatus(status.name, status.what, "skipped", "it ran but gave no figure (see the notes)")
        for status in outcome.peers
    ]
    outcome.meta["loadavg_end"] = list(os.getloadavg())
    outcome.meta["seconds"] = round(time.monotonic() - started, 1)
    return outcome


def as_json(outcome: Outcome) -> dict[str, Any]:
    document = {
        "meta": outcome.meta,
        "peers": [asdict(status) for status in outcome.peers],
        "cells": [asdict(cell) for cell in outcome.cells],
        "ratios": [asdict(ratio) for ratio in outcome.ratios],
        "headlines": [asdict(line) for line in headlines(outcome.cells)],
        "failures": outcome.failures,
        "notes": outcome.notes,
        "suites": outcome.reports,
    }
    cleaned: dict[str, Any] = harness.clean_for_json(document)
    return cleaned
