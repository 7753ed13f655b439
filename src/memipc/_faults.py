"""Fault injection: named points where a test can have this process SIGKILLed.

Crash-safety tests arm one point in a child process; when the child's code
reaches it, the process kills itself with SIGKILL, exactly as if the OOM killer
or a user had struck at that instant.  Call sites are guarded by the module
global so that an unarmed process pays one attribute load:

    if _faults.armed:
        _faults.reach("region.create.before_publish")

Points defined so far (grep for ``_faults.reach`` to see them in place):

==================================  ==================================================
``region.create.after_lock``        new segment exists and is locked, header unwritten
``region.create.before_publish``    header written, magic not yet stored
``region.open.after_attach``        opener holds its attach lock and row
``region.close.before_unlink``      last closer holds the exclusive lock, name not yet removed
``queue.loan.after_reserve``        a record is reserved (WRITING), nothing copied yet
``queue.loan.before_commit``        the loan block finished filling; not yet committed
``queue.recv_view.inside``          a record is claimed (READING), not yet released
``pubsub.loan.after_reserve``       a publisher holds the publisher lock, nothing copied
``pubsub.loan.before_commit``       the loan block finished filling; not yet published
``pubsub.recv_view.inside``         a subscriber is reading a record in place (cursor not moved)
``rpc.call.before_commit``          a Client's request is written into the ring, not committed
``rpc.call.after_send``             a Client's request is committed; it has not waited yet
``rpc.serve.after_claim``           a Server took a request (READING), its handler not yet run
``rpc.serve.in_handler``            serve() is about to call the handler
``rpc.reply.before_commit``         a reply is written into the caller's queue, not committed
==================================  ==================================================

A "mid-copy" death is a kill inside a ``with queue.loan(n) as buf:`` block
after part of ``buf`` was written (tests do that with os.kill directly).
"""

from __future__ import annotations

import os
import signal

#: The armed point's name, or None.  Set through :func:`arm`.
armed: str | None = os.environ.get("MEMIPC_KILL_AT") or None


def arm(point: str | None) -> None:
    """Kill this process with SIGKILL when it reaches ``point`` (None disarms)."""
    global armed  # noqa: PLW0603 - one process-wide switch, by design
    armed = point


def reach(point: str) -> None:
    """Die here if ``point`` is armed."""
    if armed == point:
        os.kill(os.getpid(), signal.SIGKILL)
