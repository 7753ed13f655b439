"""``memipc gc``: remove memipc objects whose users all died (never foreign segments)."""

from __future__ import annotations

import argparse
from typing import Any

from . import _inventory, _table

EXAMPLES = """examples:
  memipc gc --dry-run         show what would be removed
  memipc gc                   remove stale objects (no live user, not persistent)
"""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "gc",
        help="remove objects whose users are all dead",
        description="Remove memipc objects that no live process uses and that were not created "
        "with persist=True.  Segments memipc did not create are never touched.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    results = _inventory.collect(_inventory.scan(), dry_run=args.dry_run)
    if args.json:
        _table.emit_json([{**r.entry.as_json(), "removed": r.removed, "reason": r.reason} for r in results])
    else:
        verb = "would remove" if args.dry_run else "removed"
        for r in results:
            if r.removed or args.dry_run:
                print(f"{verb} {r.entry.kind} {r.entry.name} ({_table.size(r.entry.allocated)})")
            else:
                _table.note(f"kept {r.entry.name}: {r.reason}")
        freed = sum(r.entry.allocated for r in results if r.removed or args.dry_run)
        _table.note(
            f"{len(results)} stale object(s); {verb} {_table.size(freed)}"
            if results
            else "nothing to collect"
        )
    return 0
