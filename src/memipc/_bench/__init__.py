"""memipc's benchmarks, inside the package so that an installed memipc can run them (``memipc bench``).

Not public API: nothing here is re-exported, and its shape follows the
benchmarks, not a compatibility promise.  The method behind every figure is in
bench/README.md; the scripts bench/*.py that bench/RESULTS.md cites are thin
wrappers around the modules below.

- :mod:`.harness`: what the benchmarks share (payloads, percentiles,
  pinning, the note on the machine, JSON without NaN); measures nothing.
- :mod:`.peers`: one adapter per library compared with memipc, behind one
  interface per shape of communication (queue links, :mod:`.peers.pubsub`,
  :mod:`.peers.rpc`).  Each peer's library is imported only when it is loaded.
- :mod:`.sync`, :mod:`.queue`, :mod:`.pubsub`, :mod:`.rpc`: the four
  benchmarks (issues 3, 4 and 5), each a ``measure()`` that returns a report,
  and that report's text and JSON.
"""
