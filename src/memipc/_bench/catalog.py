"""The peers ``memipc bench --vs`` names, and which rows of which benchmark each one stands for.

Each benchmark names its rows its own way (the queue benchmark's
``multiprocessing_pipe`` is the request/response benchmark's ``mp_pipe``);
this table gives every library one name across all four, says what it needs,
and how to install it.  It is plain data, cheap to import: the command line
lists it in ``--help`` and checks ``--vs`` against it without loading any
benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The benchmarks, in the order ``memipc bench`` runs them.
SUITES: tuple[str, ...] = ("queue", "sync", "pubsub", "rpc")

#: Every peer of the optional extra at once.
EXTRA = "pip install 'memipc[bench]'"


@dataclass(frozen=True)
class PeerSpec:
    """One peer: a library (or reference program) compared with memipc.

    ``rows`` maps a benchmark to that benchmark's own names for this peer's
    rows: a peer module (queue, pubsub, rpc), a library (sync), or a
    reference (queue's ``shm_counters``, ``c_pingpong``, ``memcpy``).
    ``modules`` are imported to tell whether the peer can run here.
    """

    name: str
    what: str
    rows: tuple[tuple[str, tuple[str, ...]], ...]
    modules: tuple[str, ...] = ()
    install: str = "(standard library)"

    def rows_in(self, suite: str) -> tuple[str, ...]:
        return next((rows for name, rows in self.rows if name == suite), ())

    @property
    def suites(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.rows)


PEERS: tuple[PeerSpec, ...] = (
    PeerSpec("mp_queue", "multiprocessing.Queue", (("queue", ("multiprocessing_queue",)),)),
    PeerSpec(
        "mp_pipe",
        "multiprocessing.Pipe (send_bytes / recv_bytes)",
        (("queue", ("multiprocessing_pipe",)), ("rpc", ("mp_pipe",))),
    ),
    PeerSpec("mp_manager", "a multiprocessing manager's proxy", (("rpc", ("mp_manager",)),)),
    PeerSpec("mp_sync", "multiprocessing.Lock, Semaphore and Event", (("sync", ("multiprocessing",)),)),
    PeerSpec(
        "faster_fifo",
        "faster-fifo Queue",
        (("queue", ("faster_fifo",)),),
        ("faster_fifo",),
        "pip install faster-fifo",
    ),
    PeerSpec(
        "pyzmq",
        "pyzmq over ipc:// (PAIR, XPUB/SUB, REQ/REP)",
        (("queue", ("pyzmq_ipc",)), ("pubsub", ("pyzmq",)), ("rpc", ("pyzmq",))),
        ("zmq",),
        "pip install pyzmq",
    ),
    PeerSpec(
        "posix_ipc",
        "posix_ipc MessageQueue and Semaphore",
        (("queue", ("posix_ipc_mq",)), ("sync", ("posix_ipc",))),
        ("posix_ipc",),
        "pip install posix_ipc",
    ),
    PeerSpec(
        "iceoryx2",
        "iceoryx2 publish-subscribe (events and polling)",
        (("queue", ("iceoryx2",)), ("pubsub", ("iceoryx2", "iceoryx2_polling"))),
        ("iceoryx2",),
        "pip install 'iceoryx2==0.10.*'",
    ),
    PeerSpec(
        "shm_counters",
        "reference: stdlib shared_memory + two counters spun from Python",
        (("queue", ("shm_counters",)),),
    ),
    PeerSpec(
        "c",
        "reference: C futex / spin ping-pong and memcpy (bench/micro, built with gcc)",
        (("queue", ("c_pingpong", "memcpy")), ("sync", ("c",))),
        install="needs gcc and bench/micro/ of a memipc checkout",
    ),
)
PEER_NAMES: tuple[str, ...] = tuple(peer.name for peer in PEERS)
BY_NAME: dict[str, PeerSpec] = {peer.name: peer for peer in PEERS}


def install_hint(peer: PeerSpec) -> str:
    """How to make `peer` available: its own pip command, and the extra that brings every peer."""
    if peer.install.startswith("pip "):
        return f"{peer.install} (or every peer: {EXTRA})"
    return peer.install
