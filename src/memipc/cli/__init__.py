"""L4: the ``memipc`` command line.

One module per command; this module only wires argparse.  Exit codes follow
SPEC §8: 0 ok, 1 findings or errors, 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import _bench, _demo, _doctor, _gc, _info, _ls, _rm, _watch

EPILOG = """examples:
  memipc ls                   what is in shared memory: kind, size, creator, users, stale flag
  memipc info frames          one object's state: queue depth, subscriber lag, mutex owner, ...
  memipc watch frames         the same, live, with rates per second
  memipc gc --dry-run         what `memipc gc` would remove (objects whose users all died)
  memipc rm frames            remove an object nobody uses (--force: even if used)
  memipc demo                 seed 000's image job between two processes, two ways, timed
  memipc demo --frames 20 --size 640x480 --out frames
  memipc doctor               check /dev/shm, containers, RemoveIPC and limits; explain each fix
  memipc bench --quick        memipc against every IPC library installed here, as ratios from one run
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memipc",
        description="Shared-memory IPC for Python: inspect and exercise memipc objects.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _ls.add_parser(commands)
    _info.add_parser(commands)
    _watch.add_parser(commands)
    _rm.add_parser(commands)
    _gc.add_parser(commands)
    _demo.add_parser(commands)
    _doctor.add_parser(commands)
    _bench.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        result: int = args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return result
