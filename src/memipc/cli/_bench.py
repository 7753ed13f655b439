"""``memipc bench``: memipc against every IPC library installed here, as ratios from one run.

Runs the project's benchmarks, one after another (bench/README.md in a memipc
checkout gives the method of each):

  queue   memipc.Queue: ping-pong round trip (blocking and busy-poll) and
          one-way stream
  sync    memipc's Mutex, Semaphore and Event: uncontended acquire + release,
          and the cross-process handoff round trip
  pubsub  memipc Publisher / Subscriber: messages per second per subscriber
  rpc     memipc Server / Client: the call's round trip

Every peer that can be imported is measured in the same run as memipc, and
the table gives each figure beside memipc's and "memipc x": how many times
faster memipc is (> 1: faster, < 1: slower).  Absolute figures depend on the
machine and on what else it is doing; the ratios, taken within one run, are
what to compare.  A peer that cannot be imported is listed as skipped, with
the pip command that adds it.  The C references are built with gcc from
bench/micro/ of a memipc checkout (found in ./bench/micro, or give --micro);
without one they are skipped.

Progress goes to stderr (one line per step, redrawn in place on a terminal).
--json prints only JSON on stdout: the machine, every figure (cells), every
ratio, the peers' status, and each benchmark's full report.  --plot draws a
latency and a throughput chart (needs matplotlib: pip install 'memipc[plot]').
Exit status: 0 ok, 1 a benchmark or peer failed (the rest is still reported),
2 usage.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .._bench.catalog import PEERS, SUITES
from . import _table

if TYPE_CHECKING:
    from .._bench.compare import Cell, Outcome, Ratio

PLOT_SUFFIXES = (".png", ".svg", ".pdf")
PLOT_INSTALL = "pip install 'memipc[plot]' (or: pip install matplotlib)"

EXAMPLES = """examples:
  memipc bench --quick                      every benchmark, every peer installed here: about a minute
  memipc bench --only queue,rpc --vs pyzmq  two benchmarks, one peer
  memipc bench --quick --plot bench.png     and a latency / throughput chart
  memipc bench --json > run.json            every figure as JSON (progress on stderr)
"""


def _peer_table() -> str:
    width = max(len(peer.name) for peer in PEERS)
    lines = [f"  {peer.name:<{width}}  {peer.what} [{', '.join(peer.suites)}]" for peer in PEERS]
    return "peers (--vs), with the benchmarks they appear in:\n" + "\n".join(lines)


def _names(valid: Sequence[str], what: str) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated list of names from `valid` (a bad one is a usage error)."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
        unknown = [name for name in names if name not in valid]
        if unknown or not names:
            given = f"unknown {what} {', '.join(map(repr, unknown))}" if unknown else f"no {what} given"
            raise argparse.ArgumentTypeError(f"{given}; choose from {', '.join(valid)}")
        return names

    return parse


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "bench",
        help="memipc against the IPC libraries installed here, as ratios from one run",
        description=f"{__doc__}\n{_peer_table()}",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short phases, fewer sizes: about a minute in all (default: full runs, several minutes)",
    )
    parser.add_argument(
        "--vs",
        type=_names([peer.name for peer in PEERS], "peer"),
        default=tuple(peer.name for peer in PEERS),
        metavar="PEER,...",
        help=f"peers to measure memipc against (default: all): {', '.join(peer.name for peer in PEERS)}",
    )
    parser.add_argument(
        "--only",
        type=_names(SUITES, "benchmark"),
        default=SUITES,
        metavar="BENCH,...",
        help=f"benchmarks to run (default: all): {', '.join(SUITES)}",
    )
    parser.add_argument("--json", action="store_true", help="print only JSON on stdout")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help=f"also draw latency and throughput charts into FILE (.png, .svg or .pdf; {PLOT_INSTALL})",
    )
    parser.add_argument(
        "--micro",
        type=Path,
        metavar="DIR",
        help="where the C references' sources are (default: ./bench/micro, or the checkout memipc runs from)",
    )
    parser.set_defaults(run=run)


class ProgressLine:
    """Progress on stderr: one line per step, redrawn in place on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._open = False
        self._started = time.monotonic()

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()

    def __call__(self, message: str) -> None:
        text = f"memipc bench [{time.monotonic() - self._started:5.1f} s] {message}"
        if self._tty:
            width = max(20, shutil.get_terminal_size().columns - 1)
            self._write(f"\r{text[:width]}\x1b[K")
            self._open = True
        else:
            self._write(text + "\n")

    def clear(self) -> None:
        if self._open:
            self._write("\r\x1b[K")
            self._open = False

    def note(self, text: str) -> None:
        self.clear()
        self._write(text + "\n")


def _command(args: argparse.Namespace) -> str:
    """The command line as given, for the report (argparse keeps the values, not the words)."""
    parts = ["memipc", "bench"]
    if args.quick:
        parts.append("--quick")
    if tuple(args.only) != SUITES:
        parts += ["--only", ",".join(args.only)]
    if len(args.vs) != len(PEERS):
        parts += ["--vs", ",".join(args.vs)]
    for flag, value in (("--plot", args.plot), ("--micro", args.micro)):
        if value is not None:
            parts += [flag, str(value)]
    if args.json:
        parts.append("--json")
    return " ".join(parts)


def _usage(message: str) -> int:
    print(f"memipc bench: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    if args.plot is not None:
        if args.plot.suffix.lower() not in PLOT_SUFFIXES:
            return _usage(f"--plot {args.plot}: the file must end in {', '.join(PLOT_SUFFIXES)}")
        if not args.plot.parent.resolve().is_dir():
            return _usage(f"--plot {args.plot}: no directory {args.plot.parent}")
        try:  # before the run, not after minutes of it
            from .._bench import plot  # noqa: PLC0415 - matplotlib is an optional extra
        except ImportError as error:
            if (error.name or "").startswith("memipc"):
                raise
            print(f"memipc bench: --plot needs matplotlib ({error}): {PLOT_INSTALL}", file=sys.stderr)
            return 1
    # The benchmarks are loaded only now: `memipc ls` and --help need none of them.
    from .._bench import compare, harness  # noqa: PLC0415

    micro = harness.find_micro(args.micro)
    if args.micro is not None and micro is None:
        return _usage(f"--micro {args.micro}: no futex_pingpong.c there")
    peers, statuses = compare.select(args.vs, args.only, micro)
    progress = ProgressLine(sys.stderr)
    measured = ", ".join(peers) or "no peer"
    progress.note(f"memipc bench: {', '.join(args.only)}; memipc against {measured}")
    for status in statuses:
        if status.status == "skipped":
            progress.note(f"  skipped {status.name}: {status.reason}")
    plan = compare.Plan(args.quick, tuple(args.only), peers, micro, _command(args))
    try:
        outcome = compare.run(plan, statuses, progress)
    finally:
        progress.clear()
    if args.json:
        _table.emit_json(compare.as_json(outcome))
    else:
        print("\n".join(render(outcome)))
    if args.plot is not None:
        title = f"{plan.command} ({outcome.meta['date']})"
        plot.draw(outcome.cells, compare.headlines(outcome.cells), args.plot, title)
        progress.note(f"memipc bench: charts written to {args.plot}")
    for failure in outcome.failures:
        progress.note(f"memipc bench: failed: {failure.splitlines()[0]}")
    return 1 if outcome.failures else 0


# --------------------------------------------------------------------------- the text report


def _figure(value: float, unit: str) -> str:
    if not math.isfinite(value):
        return "-"
    if unit == "ns":
        if value >= 1e6:
            return f"{value / 1e6:.3g} ms"
        return f"{value / 1e3:.3g} us"
    if value >= 1e6:
        return f"{value / 1e6:.3g} M/s"
    return f"{value / 1e3:.3g} k/s" if value >= 1e3 else f"{value:.3g} /s"


def _times(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:.0f}x" if value >= 100 else f"{value:.3g}x"


SUITE_TITLES = {
    "queue": "queue: memipc.Queue; round trip = p50 of A sends, B echoes; stream = messages/s one way",
    "sync": "sync: memipc Mutex / Semaphore / Event; p50 per acquire + release, and per handoff round trip",
    "pubsub": "pubsub: memipc Publisher / Subscriber; messages/s per subscriber, none dropped",
    "rpc": "rpc: memipc Server / Client; p50 of one call, request and response of the size given",
}


def _suite_lines(suite: str, cells: Sequence[Cell], ratios: Sequence[Ratio]) -> list[str]:
    rows = [
        [r.measure, r.peer, r.row, _figure(r.memipc, r.unit), _figure(r.theirs, r.unit), _times(r.memipc_x)]
        for r in ratios
        if r.suite == suite
    ]
    lines = [SUITE_TITLES[suite]]
    if rows:
        headers = ["measure", "peer", "peer's row", "memipc", "peer", "memipc x"]
        lines += ["  " + line for line in _table.table(headers, rows, numeric=(3, 4, 5))]
    else:
        lines.append("  (no peer measured here)")
    compared = {(r.measure, r.memipc_row) for r in ratios if r.suite == suite}
    alone = [
        f"{c.measure} {_figure(c.value, c.unit)} ({c.row})"
        for c in cells
        if c.suite == suite and c.peer == "memipc" and (c.measure, c.row) not in compared
    ]
    if alone:
        lines.append("  memipc alone: " + "; ".join(alone))
    return lines


def _summary_lines(outcome: Outcome) -> list[str]:
    from .._bench.compare import headlines  # noqa: PLC0415 - loaded with the run already

    columns = headlines(outcome.cells)
    peers = [status.name for status in outcome.peers if status.status == "measured"]
    rows = []
    for peer in peers:
        row = [peer]
        for line in columns:
            found = [
                r.memipc_x
                for r in outcome.ratios
                if r.peer == peer and (r.suite, r.measure) == (line.suite, line.measure)
            ]
            row.append(_times(min(found)) if found else "-")
        if any(cell != "-" for cell in row[1:]):
            rows.append(row)
    if not rows:
        return ["summary: no peer was measured beside memipc, so there is no ratio"]
    headers = ["peer", *(line.title for line in columns)]
    return [
        "summary: memipc x, how many times faster memipc is than each peer (> 1: faster, < 1: slower);",
        "where a peer has several rows (iceoryx2 events / polling, mp_sync Event / Semaphore), its best",
        *("  " + line for line in _table.table(headers, rows, numeric=range(1, len(headers)))),
    ]


def render(outcome: Outcome) -> list[str]:
    meta, machine = outcome.meta, outcome.meta["machine"]
    load = f"{meta['loadavg_start'][0]:.2f} -> {meta['loadavg_end'][0]:.2f}"
    lines = [
        f"{meta['command']}: every figure and ratio below is from this one run ({meta['seconds']} s)",
        f"{meta['date']}  Python {machine['python']}  Linux {machine['kernel']}  {machine['cpus']} CPUs "
        f"({machine['cpu_model']})  memipc {machine['memipc']} (_core {machine['memipc_core_sha256']})",
        f"load average {load} (1 min, start -> end)",
        "",
    ]
    for suite in meta["suites"]:
        lines += [*_suite_lines(suite, outcome.cells, outcome.ratios), ""]
    lines += [*_summary_lines(outcome), ""]
    skipped = [status for status in outcome.peers if status.status == "skipped"]
    if skipped:
        lines.append("skipped (not measured):")
        lines += [f"  {status.name}: {status.reason}" for status in skipped]
    outside = [status for status in outcome.peers if status.status == "not in the chosen benchmarks"]
    if outside:
        lines.append(
            "not run, their benchmarks were left out by --only: "
            + ", ".join(f"{status.name} ({status.reason})" for status in outside)
        )
    lines += [f"note: {note.splitlines()[0]}" for note in outcome.notes]
    return lines
