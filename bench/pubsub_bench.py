"""Pub/sub fan-out benchmark: memipc Publisher/Subscriber against iceoryx2 and pyzmq, in one run.

    python bench/pubsub_bench.py [--quick] [--json] [--peers a,b] [--placement split|free]

The benchmark itself is memipc._bench.pubsub, inside the package so that an
installed memipc can run it too (``memipc bench``).  This script is the
command bench/RESULTS.md cites.  bench/README.md gives the method.
"""

from __future__ import annotations

import sys

from memipc._bench import pubsub

if __name__ == "__main__":
    sys.exit(pubsub.main())
