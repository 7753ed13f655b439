"""``memipc info NAME``: one object's header and its kind-specific state."""

from __future__ import annotations

import argparse
import time
from typing import Any

from .._errors import CorruptRegionError
from . import _inventory, _table

EXAMPLES = """examples:
  memipc info frames          a queue: depth, capacity, sent/received, waiters, max message
  memipc info 'Global\\ticks'  a global object (quote the backslash)
  memipc info ticks --json    subscriber cursors and lag as JSON
"""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "info",
        help="show one object's header and state",
        description="Show a memipc object's header and kind-specific state (queue depth, subscriber "
        "cursors and lag, mutex owner, event state, semaphore value, ...).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", help="the object's name (Global\\name for global ones), or its /dev/shm name")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    entry = _inventory.find(args.name)
    if entry is None:
        _table.note(f"memipc info: no object named {args.name!r}; `memipc ls` lists what exists")
        return 1
    problem, corrupt = entry.problem, entry.kind == _inventory.CORRUPT
    try:
        state = _inventory.state(entry)
    except CorruptRegionError as error:
        state, problem, corrupt = {}, str(error), True
    if args.json:
        _table.emit_json({**entry.as_json(), "state": state, "problem": problem})
    else:
        print("\n".join(lines(entry, state, problem)))
    return 1 if corrupt else 0


def lines(entry: _inventory.Entry, state: dict[str, Any], problem: str | None) -> list[str]:
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.created)) if entry.created else "-"
    users = ", ".join(map(str, entry.attached)) or ("in use (rows not listed)" if entry.in_use else "none")
    rows: list[tuple[str, Any]] = [
        ("name", entry.name),
        ("kind", entry.kind),
        ("scope", entry.scope),
        ("os name", entry.os_name),
        ("size", f"{entry.size} ({_table.size(entry.size)}); {_table.size(entry.allocated)} in /dev/shm"),
        ("backing", entry.backing),
        ("created", f"{created} by pid {entry.creator_pid or '-'} ({_table.age(entry.created)} ago)"),
        ("users", users),
        (
            "state",
            "stale: no live user (memipc gc removes it)"
            if entry.stale
            else "persistent"
            if entry.persist
            else "in use"
            if entry.in_use
            else "-",
        ),
    ]
    if problem:
        rows.append(("problem", problem))
    nested = []
    for key, value in state.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            nested.append((key, value))
        elif isinstance(value, dict):
            nested.append((key, [value]))
        else:
            rows.append((key.replace("_", " "), "-" if value is None else value))
    width = max(len(key) for key, _ in rows)
    out = [f"{key:<{width}}  {value}" for key, value in rows]
    for key, records in nested:
        out.append("")
        out.append(f"{key.replace('_', ' ')}:")
        headers = list(records[0])
        out.extend("  " + line for line in _table.table(headers, [[r[h] for h in headers] for r in records]))
    return out
