"""L2: cross-process synchronization — Mutex, Semaphore, Event, Condition, RWLock, wait_any.

Each object is a small struct (layout in src/c/layout.h) that lives either in
its own named segment, opened-or-created by name like the Win32 named kernel
objects the seeds use, or inside a user's region at an offset
(``Mutex.in_region(region, offset)``) for those who lay out their own shared
structs.  The algorithms are in C (src/c/mutex.c, semaphore.c, event.c,
rwlock.c); this package is their Python face.

Design notes:

* **Waiting**: spin briefly, then sleep in the kernel (futex).  The spin
  budget adapts per object (``spin=None``), can be fixed (``spin=2e-5``) or
  switched off (``spin=0``, sleep-only); see :mod:`memipc._sync._base`.
* **Owner death**: a Mutex or write-locked RWLock whose holder dies is taken
  over by the next acquirer, who sees ``owner_died`` (Win32's WAIT_ABANDONED).
  The owner is recorded as pid + process start time + pid namespace, so a
  recycled pid does not look alive; blocked waiters check every 200 ms.
* **Ctrl-C**: every blocking call sleeps in slices of at most 50 ms with the
  GIL released, so KeyboardInterrupt arrives within 100 ms.
"""

from ._base import SyncStats
from ._condition import Condition
from ._event import Event
from ._mutex import Mutex
from ._rwlock import RWLock
from ._semaphore import Semaphore
from ._wait_any import wait_any

__all__ = ["Condition", "Event", "Mutex", "RWLock", "Semaphore", "SyncStats", "wait_any"]
