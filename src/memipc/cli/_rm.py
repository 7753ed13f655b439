"""``memipc rm NAME...``: remove objects by name; refuses objects in use unless --force."""

from __future__ import annotations

import argparse
from typing import Any

from . import _inventory, _table

EXAMPLES = """examples:
  memipc rm frames            remove the object 'frames' if nobody uses it
  memipc rm --force frames    remove its name even while in use (users keep their mappings)
"""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "rm",
        help="remove objects by name",
        description="Remove memipc objects by name.  An object in use is refused (with the pids "
        "using it) unless --force; users that have it open keep working, the name is gone.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="+", metavar="NAME")
    parser.add_argument("--force", action="store_true", help="remove even objects in use")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    results: list[dict[str, Any]] = []
    failed = False
    for name in args.names:
        entry = _inventory.find(name)
        if entry is None:
            results.append({"name": name, "removed": False, "reason": "no such object"})
            failed = True
            continue
        removal = _inventory.remove(entry, force=args.force)
        failed |= not removal.removed
        results.append(
            {"name": entry.name, "kind": entry.kind, "removed": removal.removed, "reason": removal.reason}
        )
    if args.json:
        _table.emit_json(results)
    else:
        for result in results:
            if result["removed"]:
                print(
                    f"removed {result['kind']} {result['name']}"
                    + (f" ({result['reason']})" if result["reason"] else "")
                )
            else:
                _table.note(f"memipc rm: {result['name']}: {result['reason']}")
    return 1 if failed else 0
