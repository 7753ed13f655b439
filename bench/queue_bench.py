"""Queue benchmark for issue 4: memipc.Queue against its peers, every figure from one run.

    python bench/queue_bench.py [--quick] [--json] [--peers a,b]

The benchmark itself is memipc._bench.queue, inside the package so that an
installed memipc can run it too (``memipc bench``).  This script is the
command bench/RESULTS.md cites; it builds the C references from micro/ beside
it.  bench/README.md gives the method.
"""

from __future__ import annotations

import sys
from pathlib import Path

from memipc._bench import queue

if __name__ == "__main__":
    sys.exit(queue.main(micro=Path(__file__).resolve().parent / "micro"))
