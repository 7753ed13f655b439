"""Synchronization benchmark for issue 3: memipc's Mutex, Semaphore and Event against their peers.

    python bench/sync.py [--quick] [--json] [--placement split|same|free]

The benchmark itself is memipc._bench.sync, inside the package so that an
installed memipc can run it too (``memipc bench``).  This script is the
command bench/RESULTS.md cites; it builds the C reference from micro/ beside
it.  bench/README.md gives the method.
"""

from __future__ import annotations

import sys
from pathlib import Path

from memipc._bench import sync

if __name__ == "__main__":
    sys.exit(sync.main(micro=Path(__file__).resolve().parent / "micro"))
