"""Child-process bodies for tests/test_core.py and tests/test_region.py (spawn-importable)."""

from __future__ import annotations

import signal
import time

from memipc import Region, _core


def wait_on_word_until_interrupted(name: str, offset: int) -> tuple[str, float]:
    """Block in futex_wait forever; report how the wait ended and when (monotonic)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with Region.open(name) as region:
        buf = region.buf
        _core.store_u32(buf, offset + 4, 1)  # "I am about to wait"
        _core.futex_wake(buf, offset + 4, 1)
        try:
            _core.futex_wait(buf, offset, 0, None)
        except KeyboardInterrupt:
            return "KeyboardInterrupt", time.monotonic()
        finally:
            del buf
    return "woken", time.monotonic()


def set_word_and_wake(name: str, offset: int, value: int, delay: float) -> int:
    time.sleep(delay)
    with Region.open(name) as region:
        buf = region.buf
        _core.store_u32(buf, offset, value)
        woken = _core.futex_wake(buf, offset, 1)
        del buf
    return woken
