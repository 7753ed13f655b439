"""Plain-text rendering shared by the commands: aligned tables, sizes, ages.

No rendering library is needed: the columns are few and aligned text pipes
well into grep and less.  (A library such as rich would add colour, not
information; the CLI must work without extras anyway.)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO


def size(value: int) -> str:
    """1536 -> '1.5 KiB'."""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"  # unreachable


def age(created: float | None, now: float | None = None) -> str:
    """Seconds since ``created`` as '42s', '7m', '3h', '2d'."""
    if created is None:
        return "-"
    seconds = max(0.0, (time.time() if now is None else now) - created)
    for limit, unit, divisor in ((120, "s", 1), (7200, "m", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{seconds / divisor:.0f}{unit}"
    return f"{seconds / 86400:.0f}d"


def rate(value: float) -> str:
    """12345.6 -> '12.3 k'."""
    for limit, suffix, divisor in ((1e3, "", 1), (1e6, " k", 1e3), (1e9, " M", 1e6)):
        if abs(value) < limit:
            return f"{value / divisor:.1f}{suffix}" if divisor > 1 else f"{value:.0f}"
    return f"{value / 1e9:.1f} G"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> list[str]:
    """Lines of an aligned table; columns in ``numeric`` are right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
    return lines


def emit_json(value: Any, out: TextIO | None = None) -> None:
    """Only JSON on stdout (SPEC §8); messages go to stderr."""
    json.dump(value, out or sys.stdout, indent=2, sort_keys=False)
    (out or sys.stdout).write("\n")


def note(message: str) -> None:
    print(message, file=sys.stderr)
