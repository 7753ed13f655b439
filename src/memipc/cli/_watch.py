"""``memipc watch NAME``: a channel's or sync object's state, refreshed in place, with rates."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .._errors import CorruptRegionError
from . import _inventory, _table

EXAMPLES = """examples:
  memipc watch frames               depth, sent/received per second, waiters; Ctrl-C stops
  memipc watch ticks --interval 0.2
  memipc watch jobs --count 5       five refreshes, then exit (for scripts)
"""

#: counters shown as rates (per second) when they grow
RATE_FIELDS = (
    "sent",
    "received",
    "bytes_sent",
    "bytes_received",
    "operations",
    "contentions",
    "waits",
    "answered",
)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "watch",
        help="live view of one object (rates, depth, waiters)",
        description="Show a channel's or sync object's state every --interval seconds, with counters "
        "turned into rates, refreshing in place until Ctrl-C.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name")
    parser.add_argument(
        "--interval", type=_positive, default=1.0, help="seconds between refreshes (default 1)"
    )
    parser.add_argument(
        "--count", type=_count, default=0, help="stop after this many refreshes (0: until Ctrl-C)"
    )
    parser.set_defaults(run=run)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (until Ctrl-C) or a number of refreshes, not {text}")
    return value


def _flatten(state: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            flat[prefix + key] = value
    return flat


def run(args: argparse.Namespace) -> int:
    entry = _inventory.find(args.name)
    if entry is None:
        _table.note(f"memipc watch: no object named {args.name!r}; `memipc ls` lists what exists")
        return 1
    in_place = sys.stdout.isatty()
    previous: tuple[float, dict[str, Any]] | None = None
    shown = 0
    try:
        while True:
            current = _inventory.find(args.name)
            if current is None:
                _table.note(f"memipc watch: {entry.name} was removed")
                return 1
            try:
                state = _inventory.state(current)
            except CorruptRegionError as error:
                _table.note(f"memipc watch: {error}")
                return 1
            now = time.monotonic()
            frame = render(current, state, previous, now)
            previous = (now, _flatten(state))
            if in_place:
                sys.stdout.write("\x1b[H\x1b[J")
            elif shown:
                sys.stdout.write("\n")
            sys.stdout.write("\n".join(frame) + "\n")
            sys.stdout.flush()
            shown += 1
            if args.count and shown >= args.count:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def render(
    entry: _inventory.Entry, state: dict[str, Any], previous: tuple[float, dict[str, Any]] | None, now: float
) -> list[str]:
    users = ",".join(map(str, entry.attached)) or "-"
    lines = [f"{entry.kind} {entry.name}   users {users}   {time.strftime('%H:%M:%S')}"]
    flat = _flatten(state)
    rows = []
    for key, value in flat.items():
        per_second = ""
        leaf = key.rsplit(".", 1)[-1]
        if previous is not None and leaf in RATE_FIELDS and isinstance(value, int):
            before = previous[1].get(key)
            elapsed = now - previous[0]
            if isinstance(before, int) and elapsed > 0:
                per_second = f"{_table.rate((value - before) / elapsed)}/s"
        rows.append([key.replace("_", " "), "-" if value is None else value, per_second])
    lines.extend(_table.table(["", "value", "rate"], rows, numeric=(1, 2)))
    for key, value in state.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            headers = list(value[0])
            lines.append(f"{key}:")
            lines.extend(
                "  " + line for line in _table.table(headers, [[r[h] for h in headers] for r in value])
            )
    return lines
