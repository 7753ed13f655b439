"""``memipc ls``: every memipc object this user can see, who made it, who uses it."""

from __future__ import annotations

import argparse
from typing import Any

from . import _inventory, _table

EXAMPLES = """examples:
  memipc ls                   memipc objects: kind, size, creator, users, stale flag
  memipc ls --all             also foreign segments in /dev/shm (made by other programs)
  memipc ls --json | jq '.[] | select(.stale)'
"""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "ls",
        help="list memipc objects in shared memory",
        description="List the memipc objects this user can see, read without side effects.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--all", action="store_true", help="also list foreign segments in /dev/shm")
    parser.add_argument("--json", action="store_true", help="print JSON only (a list of objects)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    entries = _inventory.scan(include_foreign=args.all)
    if args.json:
        _table.emit_json([entry.as_json() for entry in entries])
        return 0
    if not entries:
        _table.note(
            "no memipc objects" + ("" if args.all else " (memipc ls --all also lists foreign segments)")
        )
        return 0
    print("\n".join(lines(entries)))
    stale = [e for e in entries if e.stale]
    if stale:
        held = sum(e.allocated for e in stale)
        _table.note(f"{len(stale)} stale object(s) hold {_table.size(held)}; `memipc gc` removes them")
    return 0


def lines(entries: list[_inventory.Entry]) -> list[str]:
    rows = []
    for entry in entries:
        users = ",".join(map(str, entry.attached)) or ("?" if entry.in_use else "-")
        flags = []
        if entry.stale:
            flags.append("stale")
        if entry.persist:
            flags.append("persist")
        if entry.problem and entry.kind in (_inventory.CORRUPT, _inventory.UNPUBLISHED):
            flags.append(entry.kind)
        rows.append(
            [
                entry.name,
                entry.scope,
                entry.kind,
                _table.size(entry.size),
                entry.creator_pid or "-",
                users,
                _table.age(entry.created),
                " ".join(flags) or "-",
                entry.backing,
            ]
        )
    headers = ["NAME", "SCOPE", "KIND", "SIZE", "CREATOR", "USERS", "AGE", "STATE", "BACKING"]
    return _table.table(headers, rows, numeric=(3, 4))
