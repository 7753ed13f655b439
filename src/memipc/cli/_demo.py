"""``memipc demo``: the seeds' hello world, across two real processes.

Process 1 creates a named region, writes a greeting behind a small ctypes
header (as seed 000 puts a struct at the start of the mapping), and starts
process 2 separately — a new interpreter that knows only the name.  Process 2
opens the region by name, reads the greeting, writes a reply, flips the
header's state word and wakes process 1, which reads the reply.

The hand-off uses the C core's futex on the state word directly; the named
Event of the synchronization layer will replace it.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import time
import uuid
from typing import Any

from .. import _core
from .._region import Region

EMPTY, REQUEST_READY, REPLY_READY = 0, 1, 2
PAYLOAD_OFFSET = 64
REGION_SIZE = 64 * 1024
PEER_TIMEOUT_SECONDS = 30.0


class DemoHeader(ctypes.Structure):
    """The struct at offset 0 of the demo region (cf. seed 000's header)."""

    _fields_ = (
        ("state", ctypes.c_uint32),  # EMPTY → REQUEST_READY → REPLY_READY; futex word
        ("request_length", ctypes.c_uint32),
        ("reply_length", ctypes.c_uint32),
        ("peer_pid", ctypes.c_uint32),
    )


STATE_OFFSET = DemoHeader.state.offset


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="two processes exchange a message through a named region",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--message", default="hello from process 1", help="what process 1 writes")
    parser.add_argument("--peer", metavar="NAME", help=argparse.SUPPRESS)  # internal: run as process 2
    parser.set_defaults(run=run)


def _wait_for_state(buf: memoryview, wanted: int, deadline: float) -> bool:
    """Sleep on the state word until it equals ``wanted`` (futex, no spinning)."""
    while True:
        state = _core.load_u32(buf, STATE_OFFSET)  # acquire: pairs with the peer's release store
        if state == wanted:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        _core.futex_wait(buf, STATE_OFFSET, state, min(remaining, 1.0))


def _say(who: str, text: str) -> None:
    print(f"[{who} pid {os.getpid()}] {text}", flush=True)


def run_peer(name: str) -> int:
    """Process 2: open by name, read, reply, signal."""
    with Region.open(name) as region:
        _say("process 2", f"opened region {name!r} by name ({region.size} bytes)")
        buf = region.buf
        if not _wait_for_state(buf, REQUEST_READY, time.monotonic() + PEER_TIMEOUT_SECONDS):
            _say("process 2", "no request arrived; giving up")
            return 1
        header = DemoHeader.from_buffer(buf)
        length = min(header.request_length, region.size - PAYLOAD_OFFSET)  # untrusted: clamp
        request = bytes(buf[PAYLOAD_OFFSET : PAYLOAD_OFFSET + length]).decode(errors="replace")
        _say("process 2", f"read: {request!r}")
        reply = f"hello back from process 2 (pid {os.getpid()}), I read {length} bytes".encode()
        start = PAYLOAD_OFFSET + length
        buf[start : start + len(reply)] = reply
        header.reply_length = len(reply)
        header.peer_pid = os.getpid()
        del header
        _core.store_u32(buf, STATE_OFFSET, REPLY_READY)  # release: the reply bytes are visible first
        _core.futex_wake(buf, STATE_OFFSET, 1)
        _say("process 2", "wrote a reply and woke process 1")
        del buf
    return 0


def run(args: argparse.Namespace) -> int:
    if args.peer:
        return run_peer(args.peer)
    name = f"memipc-demo-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    with Region.create(name, REGION_SIZE) as region:
        buf = region.buf
        _say("process 1", f"created region {name!r} ({region.size} bytes) in {region.info().os_name}")
        message = args.message.encode()[: REGION_SIZE // 2]
        header = DemoHeader.from_buffer(buf)
        buf[PAYLOAD_OFFSET : PAYLOAD_OFFSET + len(message)] = message
        header.request_length = len(message)
        del header
        _core.store_u32(buf, STATE_OFFSET, REQUEST_READY)  # release: the message is visible first
        _say("process 1", f"wrote {args.message!r}; starting process 2, which knows only the name")
        started = time.monotonic()
        peer = subprocess.Popen([sys.executable, "-m", "memipc", "demo", "--peer", name])
        try:
            got_reply = _wait_for_state(buf, REPLY_READY, started + PEER_TIMEOUT_SECONDS)
            elapsed = time.monotonic() - started
            if not got_reply:
                _say("process 1", "process 2 did not reply in time")
                return 1
            header = DemoHeader.from_buffer(buf)
            start = PAYLOAD_OFFSET + header.request_length
            length = min(header.reply_length, REGION_SIZE - start)
            del header
            reply = bytes(buf[start : start + length]).decode(errors="replace")
            _say("process 1", f"read reply: {reply!r} ({elapsed * 1000:.0f} ms including process start-up)")
        finally:
            del buf
            try:
                peer.wait(timeout=PEER_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                peer.kill()
                peer.wait()
        if peer.returncode != 0:
            _say("process 1", f"process 2 exited with status {peer.returncode}")
            return 1
    _say("process 1", f"closed; region {name!r} was removed with its last user")
    return 0
