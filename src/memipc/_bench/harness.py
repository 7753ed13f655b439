"""What the benchmarks share: payloads, statistics, placement, the C references, progress, output.

Nothing here measures anything.  The benchmarks run many spawned processes
and report figures from all of them in one table; this module holds the small
pieces they need to do that the same way: the message payload, nearest-rank
percentiles, pinning, a note on the machine and the memipc build measured,
building the C reference programs, progress lines, and JSON that has no NaN.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Placement = Literal["split", "free"]

KIB, MIB = 1 << 10, 1 << 20


def size_name(size: int) -> str:
    if size >= MIB:
        return f"{size // MIB} MiB"
    return f"{size // KIB} KiB" if size >= KIB else f"{size} B"


def payload_of(size: int) -> bytes:
    """A message whose every page is really written (a calloc'd bytes(size) would read the zero page)."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def pin(cpu: int | None) -> None:
    """Pin the calling thread (on Linux, affinity is per thread; threads started later inherit it)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def float_helper_threads(everywhere: set[int]) -> None:
    """Let every thread of this process but the calling one run on any of `everywhere`.

    The threads a library starts (libzmq's I/O thread, a multiprocessing
    manager's connection handler) inherit the pinned main thread's CPU;
    confined there they would queue behind the very thread that hands them
    each message.
    """
    me = threading.get_native_id()
    for entry in os.listdir("/proc/self/task"):
        if int(entry) != me:
            with suppress(OSError):  # the thread may have exited meanwhile
                os.sched_setaffinity(int(entry), everywhere)


def available_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (the rule futex_pingpong.c uses too)."""
    rank = min(len(sorted_values), max(1, math.ceil(fraction * len(sorted_values))))
    return sorted_values[rank - 1]


@dataclass
class Latency:
    """Round trips of one row in one size, pooled over the rounds, in nanoseconds."""

    n: int = 0
    p50_ns: float = math.nan
    p99_ns: float = math.nan
    mean_ns: float = math.nan
    round_p50_ns: list[float] = field(default_factory=list)


def latency(rounds: Sequence[Sequence[int]]) -> Latency:
    pooled = sorted(value for samples in rounds for value in samples)
    if not pooled:
        return Latency()
    return Latency(
        n=len(pooled),
        p50_ns=percentile(pooled, 0.50),
        p99_ns=percentile(pooled, 0.99),
        mean_ns=sum(pooled) / len(pooled),
        round_p50_ns=[percentile(sorted(samples), 0.50) for samples in rounds if samples],
    )


def memipc_note() -> dict[str, str]:
    """Which memipc was measured: its version and a hash of its extension (it changes with every build)."""
    try:
        memipc = importlib.import_module("memipc")
    except ImportError as error:
        return {"memipc": f"not importable ({error})", "memipc_core_sha256": ""}
    core_file = getattr(getattr(memipc, "_core", None), "__file__", None) or ""
    core = Path(core_file)
    return {
        "memipc": str(getattr(memipc, "__version__", "?")),
        "memipc_core_sha256": hashlib.sha256(core.read_bytes()).hexdigest()[:12] if core.is_file() else "",
    }


def machine_note() -> dict[str, Any]:
    model = ""
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        **memipc_note(),
    }


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def rotated(items: Sequence[Any], by: int) -> list[Any]:
    """Round r starts at item r: no peer is always first, or always right after the same one."""
    if not items:
        return []
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]


#: Where a benchmark says what it is doing, one short line per step (a peer's round, a cell):
#: the scripts print each line to stderr, ``memipc bench`` redraws one line in place on a terminal.
Progress = Callable[[str], None]


def to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def silent(message: str) -> None:
    """Progress of a script's --json run: nothing but the document is printed."""


# --------------------------------------------------------------------------- the C references

#: The C reference programs are not part of the package: they are in bench/micro/ of a memipc
#: checkout.  From the package's own file, that is three levels up (src/memipc/_bench/).
CHECKOUT_MICRO = Path(__file__).resolve().parents[3] / "bench" / "micro"


def find_micro(explicit: Path | None = None) -> Path | None:
    """The directory holding bench/micro/*.c, or None: `explicit` if given, else ./bench/micro,
    else the checkout this memipc runs from (an editable install).  None means the C rows are skipped."""
    candidates = [explicit] if explicit is not None else [Path("bench", "micro"), CHECKOUT_MICRO]
    for candidate in candidates:
        if candidate is not None and (candidate / "futex_pingpong.c").is_file():
            return candidate.resolve()
    return None


def build_c(name: str, micro: Path | None, directory: str) -> tuple[Path | None, str]:
    """gcc -Wall -Wextra -Werror -O2 micro/`name` into `directory`: the binary, or None and why not."""
    source = None if micro is None else micro / name
    if source is None or not source.is_file():
        return None, f"bench/micro/{name} not found (it comes with a memipc checkout, not the package)"
    gcc = shutil.which("gcc")
    if gcc is None:
        return None, "gcc not found"
    binary = Path(directory) / source.stem
    command = [gcc, "-Wall", "-Wextra", "-Werror", "-O2", "-o", str(binary), str(source)]
    built = subprocess.run(command, capture_output=True, text=True, check=False)
    if built.returncode != 0:
        return None, f"gcc failed: {built.stderr.strip()}"
    return binary, ""


def clean_for_json(value: Any) -> Any:
    """JSON has no NaN or infinity; floats are rounded to what the figures can carry."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 4)
    if isinstance(value, (list, tuple)):
        return [clean_for_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): clean_for_json(v) for k, v in value.items()}
    return value


def us(ns: float) -> str:
    """Nanoseconds as microseconds, three significant figures ("-" when missing)."""
    if math.isnan(ns):
        return "-"
    value = ns / 1e3
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def count(value: float) -> str:
    """A rate in messages per second, as 1.23 M / 45.6 k / 789."""
    if math.isnan(value):
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    return f"{value / 1e3:.1f} k" if value >= 1e3 else f"{value:.0f} "


def times(value: float) -> str:
    """A ratio as 2.35x / 12.4x / 156x ("-" when missing)."""
    if math.isnan(value) or math.isinf(value):
        return "-"
    return f"{value:.3g}x" if value < 1000 else f"{value:.0f}x"
