"""L0, Python side: the only Python code that knows which OS it runs on.

Layers above call ``current`` and never branch on the platform themselves.
A macOS or Windows backend is one more module implementing
:class:`~memipc._platform._protocol.Platform`, chosen on the line below.
"""

from __future__ import annotations

import sys

from ._protocol import LockType, Platform

if sys.platform.startswith("linux"):
    from ._linux import LinuxPlatform as _Backend
else:  # pragma: no cover - only Linux is built and tested today (SPEC §9)
    raise ImportError(f"memipc supports Linux today; {sys.platform!r} has no platform backend yet")

current: Platform = _Backend()

__all__ = ["LockType", "Platform", "current"]
