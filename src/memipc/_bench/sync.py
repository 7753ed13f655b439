"""Synchronization benchmark for issue 3: memipc's Mutex, Semaphore and Event against their peers.

    python bench/sync.py [--quick] [--json] [--placement split|same|free]

One run measures, interleaved so that every figure shares the same machine
conditions (bench/README.md gives the method):

1. uncontended acquire+release per call, in this process: memipc.Mutex,
   memipc.Semaphore, multiprocessing.Lock / Semaphore, posix_ipc.Semaphore and,
   for scale, the in-process threading.Lock;
2. the cross-process handoff round trip (A signals 1, B waits on 1 and
   signals 2, A waits on 2) between two spawned processes, for memipc.Event
   (auto reset) in default and sleep-only mode, a memipc.Semaphore pair,
   multiprocessing.Event, a multiprocessing.Semaphore pair, a posix_ipc
   semaphore pair, and the C reference bench/micro/futex_pingpong.c (futex
   sleep-only and pure spin), built with gcc into a temporary directory;
3. the ratios against the issue's targets and against multiprocessing.

--json prints one JSON document on stdout and nothing else.  ``memipc bench``
runs the same :func:`measure` over the libraries of its choice.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import math
import multiprocessing
import multiprocessing.synchronize
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import memipc

from . import harness
from .harness import percentile, pin, rotated

Placement = Literal["split", "same", "free"]
Action = Callable[[], object]

SPAWN = multiprocessing.get_context("spawn")

#: Whose objects the rows measure; a run may leave some out (memipc bench --vs).
LIBRARIES: tuple[str, ...] = ("memipc", "multiprocessing", "posix_ipc", "threading", "c")

#: Seconds one block may take before its processes are killed and the row marked failed.
BLOCK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Settings:
    """How much to measure; --quick trades stability for time."""

    rounds: int  # handoff: passes over all peers; each pass runs one block per peer
    block: int  # handoff: timed round trips per peer per round
    block_warmup: int  # handoff: untimed round trips before every block
    first_warmup: int  # handoff: untimed round trips when a pair of processes starts
    unc_rounds: int  # uncontended: passes over all primitives
    unc_batches: int  # uncontended: timed batches per primitive per round
    batch_calls: int  # uncontended: acquire+release pairs per batch
    unc_warmup: int  # uncontended: untimed batches per primitive per round


FULL = Settings(
    rounds=50,
    block=1_000,
    block_warmup=100,
    first_warmup=2_000,
    unc_rounds=10,
    unc_batches=20,
    batch_calls=2_000,
    unc_warmup=2,
)
QUICK = Settings(
    rounds=10,
    block=500,
    block_warmup=50,
    first_warmup=500,
    unc_rounds=4,
    unc_batches=10,
    batch_calls=1_000,
    unc_warmup=1,
)


def load_posix_ipc() -> tuple[ModuleType | None, str]:
    """posix_ipc if importable, else None and the note to print."""
    try:
        return importlib.import_module("posix_ipc"), ""
    except ImportError as error:
        return None, f"posix_ipc rows skipped: not importable ({error}); pip install posix_ipc"


# --------------------------------------------------------------------------- statistics


@dataclass
class Figures:
    """One row of a table: p50 / p99 / mean in nanoseconds, and the p50 of every round."""

    label: str
    n: int = 0
    p50_ns: float = math.nan
    p99_ns: float = math.nan
    mean_ns: float = math.nan
    round_p50_ns: list[float] = field(default_factory=list)  # how the machine moved during the run
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.n > 0


def summarize(label: str, rounds: list[list[float]], note: str = "") -> Figures:
    """Pool the samples of all rounds; keep each round's p50 beside them."""
    pooled = sorted(itertools.chain.from_iterable(rounds))
    if not pooled:
        return Figures(label, note=note or "no samples")
    return Figures(
        label,
        n=len(pooled),
        p50_ns=percentile(pooled, 0.50),
        p99_ns=percentile(pooled, 0.99),
        mean_ns=sum(pooled) / len(pooled),
        round_p50_ns=[percentile(sorted(r), 0.50) for r in rounds if r],
        note=note,
    )


# --------------------------------------------------------------------------- process placement


def cpus_for(placement: Placement) -> tuple[int | None, int | None, str]:
    """CPUs for processes A and B, and a sentence saying where they run."""
    available = sorted(os.sched_getaffinity(0))
    if placement == "free":
        return None, None, "free: A and B not pinned; the scheduler places them"
    if placement == "split" and len(available) >= 2:
        return available[0], available[1], f"split: A pinned to CPU {available[0]}, B to CPU {available[1]}"
    reason = "" if placement == "same" else " (only one CPU available, so not split)"
    return available[0], available[0], f"same: A and B both pinned to CPU {available[0]}{reason}"


# --------------------------------------------------------------------------- (1) uncontended

Maker = Callable[[], tuple[Action, Action, Callable[[], None]]]


@dataclass(frozen=True)
class Uncontended:
    label: str
    library: str  # one of LIBRARIES
    baseline: str  # the multiprocessing row it is compared with
    make: Maker  # builds the object here; returns (acquire, release, close)


def _memipc_mutex() -> tuple[Action, Action, Callable[[], None]]:
    mutex = memipc.Mutex(f"bench-sync-{uuid.uuid4().hex[:12]}", create=True)

    def close() -> None:
        mutex.unlink()
        mutex.close()

    return mutex.acquire, mutex.release, close


def _memipc_semaphore() -> tuple[Action, Action, Callable[[], None]]:
    semaphore = memipc.Semaphore(f"bench-sync-{uuid.uuid4().hex[:12]}", initial=1, create=True)

    def close() -> None:
        semaphore.unlink()
        semaphore.close()

    return semaphore.acquire, semaphore.release, close


def _mp_lock() -> tuple[Action, Action, Callable[[], None]]:
    lock = SPAWN.Lock()
    return lock.acquire, lock.release, lambda: None


def _mp_semaphore() -> tuple[Action, Action, Callable[[], None]]:
    semaphore = SPAWN.Semaphore(1)
    return semaphore.acquire, semaphore.release, lambda: None


def _posix_semaphore() -> tuple[Action, Action, Callable[[], None]]:
    posix_ipc, note = load_posix_ipc()
    if posix_ipc is None:
        raise RuntimeError(note)
    semaphore = posix_ipc.Semaphore(
        f"/memipc-bench-{uuid.uuid4().hex[:12]}", flags=posix_ipc.O_CREX, initial_value=1
    )

    def close() -> None:
        semaphore.unlink()
        semaphore.close()

    return semaphore.acquire, semaphore.release, close


def _threading_lock() -> tuple[Action, Action, Callable[[], None]]:
    lock = threading.Lock()
    return lock.acquire, lock.release, lambda: None


UNCONTENDED = [
    Uncontended("memipc.Mutex", "memipc", "multiprocessing.Lock", _memipc_mutex),
    Uncontended("memipc.Semaphore", "memipc", "multiprocessing.Semaphore", _memipc_semaphore),
    Uncontended("multiprocessing.Lock", "multiprocessing", "multiprocessing.Lock", _mp_lock),
    Uncontended("multiprocessing.Semaphore", "multiprocessing", "multiprocessing.Semaphore", _mp_semaphore),
    Uncontended("posix_ipc.Semaphore", "posix_ipc", "multiprocessing.Semaphore", _posix_semaphore),
    Uncontended("threading.Lock (in-process)", "threading", "multiprocessing.Lock", _threading_lock),
]


def time_uncontended(acquire: Action, release: Action, batches: int, calls: int, warmup: int) -> list[float]:
    """Per-call ns of each timed batch of `calls` acquire+release pairs."""
    clock = time.perf_counter_ns
    per_call: list[float] = []
    for batch in range(warmup + batches):
        start = clock()
        for _ in itertools.repeat(None, calls):
            acquire()
            release()
        elapsed = clock() - start
        if batch >= warmup:
            per_call.append(elapsed / calls)
    return per_call


# --------------------------------------------------------------------------- (2) handoff round trip


@dataclass(frozen=True)
class Handoff:
    label: str
    kind: str  # memipc.Event, memipc.Semaphore, mp.Event, mp.Semaphore, posix_ipc, c-sleep, c-spin
    spin: float | None = None

    @property
    def library(self) -> str:
        """One of LIBRARIES."""
        prefix = self.kind.split(".")[0].split("-")[0]
        return {"mp": "multiprocessing"}.get(prefix, prefix)


HANDOFFS = [
    Handoff("memipc.Event default (spin=None)", "memipc.Event", None),
    Handoff("memipc.Event sleep-only (spin=0)", "memipc.Event", 0.0),
    Handoff("memipc.Semaphore pair default", "memipc.Semaphore", None),
    Handoff("multiprocessing.Event", "mp.Event"),
    Handoff("multiprocessing.Semaphore pair", "mp.Semaphore"),
    Handoff("posix_ipc.Semaphore pair", "posix_ipc"),
    Handoff("C futex ping-pong, sleep-only", "c-sleep"),
    Handoff("C futex ping-pong, spin", "c-spin"),
]
MEMIPC_DEFAULT, MEMIPC_SLEEP = HANDOFFS[0].label, HANDOFFS[1].label
MP_EVENT, MP_SEMAPHORE, POSIX_PAIR = HANDOFFS[3].label, HANDOFFS[4].label, HANDOFFS[5].label
C_SLEEP, C_SPIN = HANDOFFS[6].label, HANDOFFS[7].label


def _clearing_wait(event: multiprocessing.synchronize.Event) -> Action:
    """multiprocessing.Event is manual-reset: the waiter clears it, so the next set() is a new signal."""

    def wait() -> None:
        event.wait()
        event.clear()

    return wait


def open_endpoints(
    kind: str, spin: float | None, handles: tuple[object, object]
) -> tuple[Action, Action, Action, Action, Callable[[], None]]:
    """This process's (signal_ping, wait_ping, signal_pong, wait_pong, close) for a handoff kind."""
    first, second = handles
    if kind == "memipc.Event":
        ping = memipc.Event(str(first), create=False, spin=spin)
        pong = memipc.Event(str(second), create=False, spin=spin)

        def close_events() -> None:
            ping.close()
            pong.close()

        return ping.set, ping.wait, pong.set, pong.wait, close_events
    if kind == "memipc.Semaphore":
        ping_s = memipc.Semaphore(str(first), create=False, spin=spin)
        pong_s = memipc.Semaphore(str(second), create=False, spin=spin)

        def close_semaphores() -> None:
            ping_s.close()
            pong_s.close()

        return ping_s.release, ping_s.acquire, pong_s.release, pong_s.acquire, close_semaphores
    if kind == "mp.Event":
        assert isinstance(first, multiprocessing.synchronize.Event)
        assert isinstance(second, multiprocessing.synchronize.Event)
        return first.set, _clearing_wait(first), second.set, _clearing_wait(second), lambda: None
    if kind == "mp.Semaphore":
        assert isinstance(first, multiprocessing.synchronize.Semaphore)
        assert isinstance(second, multiprocessing.synchronize.Semaphore)
        return first.release, first.acquire, second.release, second.acquire, lambda: None
    if kind == "posix_ipc":
        posix_ipc, note = load_posix_ipc()
        if posix_ipc is None:
            raise RuntimeError(note)
        ping_p, pong_p = posix_ipc.Semaphore(str(first)), posix_ipc.Semaphore(str(second))

        def close_posix() -> None:
            ping_p.close()
            pong_p.close()

        return ping_p.release, ping_p.acquire, pong_p.release, pong_p.acquire, close_posix
    raise ValueError(f"unknown handoff kind {kind!r}")


def handoff_process(
    role: Literal["A", "B"],
    kind: str,
    spin: float | None,
    handles: tuple[object, object],
    cpu: int | None,
    control: Connection | None,
) -> None:
    """Body of a spawned process.

    B answers every ping with a pong until it is terminated.  A serves the
    parent: for each (warmup, count) request it runs `warmup` untimed round
    trips, then `count` timed ones, and sends back their times; None ends it.
    """
    pin(cpu)
    signal_ping, wait_ping, signal_pong, wait_pong, close = open_endpoints(kind, spin, handles)
    try:
        if role == "B":
            while True:
                wait_ping()
                signal_pong()
        assert control is not None
        clock = time.perf_counter_ns
        while (request := control.recv()) is not None:
            warmup, count = request
            for _ in itertools.repeat(None, warmup):
                signal_ping()
                wait_pong()
            samples = array("q", bytes(8 * count))
            for index in range(count):
                start = clock()
                signal_ping()
                wait_pong()
                samples[index] = clock() - start
            control.send_bytes(samples.tobytes())
    finally:
        close()


def create_handles(kind: str) -> tuple[tuple[object, object], Callable[[], None]]:
    """Create the two signal objects in the parent: what children need to open them, and the cleanup."""
    tag = uuid.uuid4().hex[:12]
    if kind == "memipc.Event":
        events = [memipc.Event(f"bench-sync-{tag}-{n}", manual_reset=False, create=True) for n in (1, 2)]

        def drop_events() -> None:
            for event in events:
                event.unlink()
                event.close()

        return (events[0].name, events[1].name), drop_events
    if kind == "memipc.Semaphore":
        semaphores = [memipc.Semaphore(f"bench-sync-{tag}-{n}", initial=0, create=True) for n in (1, 2)]

        def drop_semaphores() -> None:
            for semaphore in semaphores:
                semaphore.unlink()
                semaphore.close()

        return (semaphores[0].name, semaphores[1].name), drop_semaphores
    if kind == "mp.Event":
        return (SPAWN.Event(), SPAWN.Event()), lambda: None
    if kind == "mp.Semaphore":
        return (SPAWN.Semaphore(0), SPAWN.Semaphore(0)), lambda: None
    if kind == "posix_ipc":
        posix_ipc, note = load_posix_ipc()
        if posix_ipc is None:
            raise RuntimeError(note)
        posix_semaphores = [
            posix_ipc.Semaphore(f"/memipc-bench-{tag}-{n}", flags=posix_ipc.O_CREX, initial_value=0)
            for n in (1, 2)
        ]

        def drop_posix() -> None:
            for semaphore in posix_semaphores:
                semaphore.unlink()
                semaphore.close()

        return (posix_semaphores[0].name, posix_semaphores[1].name), drop_posix
    raise ValueError(f"unknown handoff kind {kind!r}")


class PythonPair:
    """Spawned processes A and B for one Python peer, kept for the whole run and asked for blocks."""

    def __init__(self, peer: Handoff, cpu_a: int | None, cpu_b: int | None) -> None:
        self.label = peer.label
        self._handles, self._drop = create_handles(peer.kind)
        self._control, child_end = SPAWN.Pipe()
        self._b = SPAWN.Process(
            target=handoff_process, args=("B", peer.kind, peer.spin, self._handles, cpu_b, None), daemon=True
        )
        self._a = SPAWN.Process(
            target=handoff_process,
            args=("A", peer.kind, peer.spin, self._handles, cpu_a, child_end),
            daemon=True,
        )
        self._b.start()
        self._a.start()
        child_end.close()

    def run(self, warmup: int, count: int) -> list[float]:
        self._control.send((warmup, count))
        if not self._control.poll(BLOCK_TIMEOUT_S):
            raise TimeoutError(f"{self.label}: no result within {BLOCK_TIMEOUT_S:.0f} s")
        try:
            payload = self._control.recv_bytes()
        except EOFError:
            self._a.join(5)
            raise RuntimeError(f"{self.label}: process A exited with {self._a.exitcode}") from None
        samples = array("q")
        samples.frombytes(payload)
        return [float(s) for s in samples]

    def close(self) -> None:
        try:
            self._control.send(None)
            self._a.join(5)
        except OSError:
            pass
        for process in (self._a, self._b):  # B answers pings for ever: it is stopped from outside
            if process.is_alive():
                process.terminate()
                process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
        self._control.close()
        self._drop()


class CPeer:
    """The C ping-pong: each block is one run of the program (it forks a fresh B every time)."""

    def __init__(self, peer: Handoff, binary: Path, cpu_a: int | None, cpu_b: int | None) -> None:
        self.label = peer.label
        self._mode = peer.kind.removeprefix("c-")
        self._binary = binary
        self._cpus = [str(-1 if cpu is None else cpu) for cpu in (cpu_a, cpu_b)]
        self._samples = binary.with_name(f"samples-{self._mode}.bin")

    def run(self, warmup: int, count: int) -> list[float]:
        command = [str(self._binary), self._mode, str(count), str(warmup), *self._cpus, str(self._samples)]
        subprocess.run(command, capture_output=True, timeout=BLOCK_TIMEOUT_S, check=True)
        samples = array("q")
        samples.frombytes(self._samples.read_bytes())
        return [float(s) for s in samples]

    def close(self) -> None:
        self._samples.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the run


@dataclass
class Report:
    meta: dict[str, Any]
    uncontended: list[Figures]
    handoff: list[Figures]
    ratios: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def measure_uncontended(
    settings: Settings, libraries: Collection[str], progress: harness.Progress
) -> list[Figures]:
    candidates = [u for u in UNCONTENDED if u.library in libraries]
    samples: dict[str, list[list[float]]] = {u.label: [] for u in candidates}
    progress(f"uncontended: {settings.unc_rounds} rounds")
    for round_index in range(settings.unc_rounds):
        for item in rotated(candidates, round_index):
            acquire, release, close = item.make()
            try:
                samples[item.label].append(
                    time_uncontended(
                        acquire, release, settings.unc_batches, settings.batch_calls, settings.unc_warmup
                    )
                )
            finally:
                close()
    return [summarize(u.label, samples[u.label]) for u in candidates]


def measure_handoff(
    settings: Settings,
    peers: list[Handoff],
    binary: Path | None,
    placement: Placement,
    progress: harness.Progress,
) -> tuple[list[Figures], list[str]]:
    cpu_a, cpu_b, _ = cpus_for(placement)
    notes: list[str] = []
    runners: dict[str, PythonPair | CPeer] = {}
    rounds: dict[str, list[list[float]]] = {p.label: [] for p in peers}
    failures: dict[str, str] = {}
    try:
        progress(f"handoff: starting {len(peers)} peers")
        for peer in peers:
            if peer.kind.startswith("c-"):
                assert binary is not None
                runners[peer.label] = CPeer(peer, binary, cpu_a, cpu_b)
            else:
                runners[peer.label] = PythonPair(peer, cpu_a, cpu_b)
        for round_index in range(settings.rounds):
            progress(f"handoff: round {round_index + 1}/{settings.rounds}")
            for peer in rotated(peers, round_index):
                if peer.label in failures:
                    continue
                first = round_index == 0 and not peer.kind.startswith("c-")
                warmup = settings.first_warmup if first else settings.block_warmup
                try:
                    rounds[peer.label].append(runners[peer.label].run(warmup, settings.block))
                except (OSError, RuntimeError, TimeoutError, subprocess.SubprocessError) as error:
                    failures[peer.label] = f"failed in round {round_index + 1}: {error}"
                    notes.append(f"{peer.label} {failures[peer.label]}")
    finally:
        for runner in runners.values():
            runner.close()
    figures = [summarize(p.label, rounds[p.label], failures.get(p.label, "")) for p in peers]
    return figures, notes


def measure(
    settings: Settings,
    placement: Placement,
    command: str,
    progress: harness.Progress,
    *,
    libraries: Collection[str] = LIBRARIES,
    micro: Path | None = None,
) -> Report:
    """One run of the rows whose library is in `libraries` (posix_ipc only if importable).

    `micro` is the directory of futex_pingpong.c (see harness.find_micro);
    without it, or without gcc, the C rows are left out with a note.
    """
    started = time.monotonic()
    notes: list[str] = []
    chosen = set(libraries)
    if "posix_ipc" in chosen:
        posix_ipc, posix_note = load_posix_ipc()
        if posix_ipc is None:
            notes.append(posix_note)
            chosen.discard("posix_ipc")
    cpu_a, cpu_b, where = cpus_for(placement)
    meta: dict[str, Any] = {
        "command": command,
        "date": harness.utc_now(),
        "machine": harness.machine_note(),
        "placement": where,
        "settings": asdict(settings),
        "loadavg_start": list(os.getloadavg()),
    }
    uncontended = measure_uncontended(settings, chosen, progress)
    with tempfile.TemporaryDirectory(prefix="memipc-bench-") as directory:
        binary: Path | None = None
        if "c" in chosen:
            binary, c_note = harness.build_c("futex_pingpong.c", micro, directory)
            if binary is None:
                notes.append(f"C reference rows skipped: {c_note}")
                chosen.discard("c")
        peers = [p for p in HANDOFFS if p.library in chosen]
        if cpu_a is not None and cpu_a == cpu_b and "c" in chosen:
            peers = [p for p in peers if p.kind != "c-spin"]
            notes.append(
                "C spin row skipped: A and B share one CPU, where a pure spin only waits out time slices"
            )
        handoff, handoff_notes = measure_handoff(settings, peers, binary, placement, progress)
        notes.extend(handoff_notes)
    meta["loadavg_end"] = list(os.getloadavg())
    meta["seconds"] = round(time.monotonic() - started, 1)
    report = Report(meta, uncontended, handoff, notes=notes)
    report.ratios = ratios(report)
    return report


# --------------------------------------------------------------------------- (3) ratios


def _find(rows: list[Figures], label: str) -> Figures | None:
    return next((row for row in rows if row.label == label and row.ok), None)


def _ratio(
    rows: list[Figures], subject: str, reference: str, word: str, target: float | None = None
) -> dict[str, Any] | None:
    """`subject` against `reference`: "faster" is reference / subject, "slower" subject / reference.

    Besides the ratio of the pooled p50s (which the target is judged on), the
    ratio is taken round by round, where the two rows ran seconds apart, and
    its median and 10-90 % range are given: a wide range means a noisy run.
    """
    mine, theirs = _find(rows, subject), _find(rows, reference)
    if mine is None or theirs is None:
        return None

    def of(a: float, b: float) -> float:
        return b / a if word == "faster" else a / b

    p50 = of(mine.p50_ns, theirs.p50_ns)
    per_round = sorted(of(a, b) for a, b in zip(mine.round_p50_ns, theirs.round_p50_ns, strict=False))
    met: bool | None = None
    goal: str | None = None
    if target is not None:
        met = p50 >= target if word == "faster" else p50 <= target
        goal = f">= {target:g}x faster" if word == "faster" else f"<= {target:g}x the time"
    return {
        "subject": subject,
        "reference": reference,
        "word": word,
        "p50_ratio": p50,
        "mean_ratio": of(mine.mean_ns, theirs.mean_ns),
        "per_round_median": percentile(per_round, 0.5) if per_round else math.nan,
        "per_round_p10": percentile(per_round, 0.1) if per_round else math.nan,
        "per_round_p90": percentile(per_round, 0.9) if per_round else math.nan,
        "target": goal,
        "met": met,
    }


def ratios(report: Report) -> list[dict[str, Any]]:
    """Issue 3's two targets (judged on pooled p50), then context that explains them."""
    rows = report.handoff
    wanted = [
        _ratio(rows, MEMIPC_DEFAULT, MP_EVENT, "faster", target=10),
        _ratio(rows, MEMIPC_SLEEP, C_SLEEP, "slower", target=1.2),
        # Context: what a thin Python binding of a futex-based semaphore pays over C,
        # and how far memipc's two modes are from their closest Python and C peers.
        _ratio(rows, POSIX_PAIR, C_SLEEP, "slower"),
        _ratio(rows, MEMIPC_SLEEP, POSIX_PAIR, "slower"),
        _ratio(rows, MEMIPC_DEFAULT, C_SPIN, "slower"),
        _ratio(rows, MEMIPC_DEFAULT, MP_SEMAPHORE, "faster"),
    ]
    return [ratio for ratio in wanted if ratio is not None]


def versus(row: Figures, baseline: Figures | None) -> float:
    """How many times faster `row` is than `baseline` at p50 (nan when either is missing)."""
    if baseline is None or not row.ok:
        return math.nan
    return baseline.p50_ns / row.p50_ns


# --------------------------------------------------------------------------- output


def as_json(report: Report) -> dict[str, Any]:
    baselines = {u.label: u.baseline for u in UNCONTENDED}
    uncontended = [
        {
            **asdict(row),
            "baseline": baselines[row.label],
            "x_faster_than_baseline": versus(row, _find(report.uncontended, baselines[row.label])),
        }
        for row in report.uncontended
    ]
    handoff = [
        {
            **asdict(row),
            "x_faster_than_multiprocessing_event": versus(row, _find(report.handoff, MP_EVENT)),
            "x_faster_than_multiprocessing_semaphore_pair": versus(row, _find(report.handoff, MP_SEMAPHORE)),
        }
        for row in report.handoff
    ]

    def clean(value: Any) -> Any:  # JSON has no NaN
        if isinstance(value, float):
            return None if math.isnan(value) else round(value, 3)
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    document = {
        "meta": report.meta,
        "uncontended_ns_per_call": uncontended,
        "handoff_round_trip_ns": handoff,
        "ratios": report.ratios,
        "notes": report.notes,
    }
    cleaned: dict[str, Any] = clean(document)
    return cleaned


def _num(value: float, unit: float = 1.0) -> str:
    if math.isnan(value):
        return "-"
    scaled = value / unit
    return f"{scaled:.3g}" if scaled < 100 else f"{scaled:.0f}"


def _times(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x" if value < 10 else f"{value:.0f}x"


def print_text(report: Report) -> None:
    meta, machine, settings = report.meta, report.meta["machine"], report.meta["settings"]
    print(f"memipc synchronization benchmark (issue 3): {meta['command']}")
    print(
        f"{meta['date']}  Python {machine['python']}  Linux {machine['kernel']}  "
        f"{machine['cpus']} CPUs ({machine['cpu_model']})  "
        f"memipc {machine['memipc']} (_core sha256 {machine['memipc_core_sha256']})"
    )
    load_start = " ".join(f"{x:.2f}" for x in meta["loadavg_start"])
    load_end = " ".join(f"{x:.2f}" for x in meta["loadavg_end"])
    print(f"placement {meta['placement']}; load average {load_start} -> {load_end}; {meta['seconds']} s")
    print()

    batches = settings["unc_rounds"] * settings["unc_batches"]
    print(
        f"(1) Uncontended acquire+release in one process, ns per pair "
        f"({batches} batches of {settings['batch_calls']} pairs)"
    )
    print(f"  {'primitive':<34}{'p50':>7}{'p99':>7}{'mean':>7}   vs multiprocessing (p50; >1 = faster)")
    baselines = {u.label: u.baseline for u in UNCONTENDED}
    for row in report.uncontended:
        baseline = baselines[row.label]
        speed = versus(row, _find(report.uncontended, baseline))
        print(
            f"  {row.label:<34}{_num(row.p50_ns):>7}{_num(row.p99_ns):>7}{_num(row.mean_ns):>7}"
            f"   {_times(speed)} vs {baseline.removeprefix('multiprocessing.')}"
        )
    print()

    print(
        f"(2) Handoff round trip between two processes, µs ({settings['rounds']} rounds x "
        f"{settings['block']} round trips per peer, {settings['block_warmup']} warm-up per block)"
    )
    print(
        f"  {'peer':<34}{'p50':>7}{'p99':>7}{'mean':>7}  {'round p50 10-90%':<17}"
        f"{'vs mp.Event':>12}{'vs mp.Sem':>10}"
    )
    event, semaphore = _find(report.handoff, MP_EVENT), _find(report.handoff, MP_SEMAPHORE)
    for row in report.handoff:
        spread = "-"
        if row.round_p50_ns:
            ordered = sorted(row.round_p50_ns)
            spread = f"{_num(percentile(ordered, 0.1), 1e3)}-{_num(percentile(ordered, 0.9), 1e3)}"
        figures = f"{_num(row.p50_ns, 1e3):>7}{_num(row.p99_ns, 1e3):>7}{_num(row.mean_ns, 1e3):>7}"
        print(
            f"  {row.label:<34}{figures}  {spread:<17}"
            f"{_times(versus(row, event)):>12}{_times(versus(row, semaphore)):>10}"
            + (f"  ({row.note})" if row.note else "")
        )
    print()

    print("(3) Ratios of handoff round trips: pooled p50 [mean; per-round median, 10-90 %]")
    for ratio in report.ratios:
        if ratio["word"] == "slower":
            claim = f"takes {ratio['p50_ratio']:.2f}x the time of"
        elif ratio["p50_ratio"] >= 1:
            claim = f"is {ratio['p50_ratio']:.2f}x faster than"
        else:  # a speed-up below 1 is a slow-down: say so
            claim = f"is {ratio['p50_ratio']:.2f}x as fast as (SLOWER than)"
        line = (
            f"  {ratio['subject']} {claim} {ratio['reference']}\n"
            f"      [{ratio['mean_ratio']:.2f}x; {ratio['per_round_median']:.2f}x, "
            f"{ratio['per_round_p10']:.2f}-{ratio['per_round_p90']:.2f}x]"
        )
        if ratio["target"] is not None:
            line += f"  target {ratio['target']}: {'met' if ratio['met'] else 'MISSED'}"
        print(line)
    if not report.ratios:
        print("  (none: a row they need is missing)")
    for note in report.notes:
        print(f"note: {note}")


def main(
    argv: Sequence[str] | None = None, *, script: str = "python bench/sync.py", micro: Path | None = None
) -> int:
    """bench/sync.py: `script` is how the run was started (its report says so)."""
    parser = argparse.ArgumentParser(prog=script, description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer round trips: under 20 s, less stable")
    parser.add_argument("--json", action="store_true", help="print only a JSON document on stdout")
    parser.add_argument(
        "--placement",
        choices=["split", "same", "free"],
        default="split",
        help="split (default): A and B pinned to two different CPUs; same: both on one CPU; free: not pinned",
    )
    args = parser.parse_args(argv)
    command = " ".join([script, *(sys.argv[1:] if argv is None else argv)])
    progress = harness.silent if args.json else harness.to_stderr
    report = measure(
        QUICK if args.quick else FULL, args.placement, command, progress, micro=harness.find_micro(micro)
    )
    if args.json:
        json.dump(as_json(report), sys.stdout, indent=2)
        print()
    else:
        print_text(report)
    return 0
