"""Request/response benchmark: memipc Server/Client against pyzmq REQ/REP and multiprocessing, in one run.

    python bench/rpc_bench.py [--quick] [--json] [--peers a,b] [--placement split|free]

The benchmark itself is memipc._bench.rpc, inside the package so that an
installed memipc can run it too (``memipc bench``).  This script is the
command bench/RESULTS.md cites.  bench/README.md gives the method.
"""

from __future__ import annotations

import sys

from memipc._bench import rpc

if __name__ == "__main__":
    sys.exit(rpc.main())
