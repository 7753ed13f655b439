"""Semaphore, Event and Mutex against simple models (hypothesis RuleBasedStateMachines).

Single process, no blocking: every wait uses ``timeout=0``, so each step's
outcome is decided by the model alone.

- Semaphore vs a counter: ``acquire(timeout=0)`` succeeds iff the count is
  positive; ``release(n)`` raises ValueError iff the count would pass the
  maximum (and then changes nothing); ``value`` always equals the model.
  Steps go through two handles of one name, to show they share the count.
- Event vs a flag: manual reset keeps the flag until ``clear``; auto reset
  clears it when a wait takes it (with nobody waiting, any number of sets is
  one release).
- Mutex vs "held by this thread": acquire(0) from the owner raises
  RuntimeError, release by a non-owner raises RuntimeError, and another thread
  can take it exactly when the model says it is free.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from memipc import Event, Mutex, Semaphore

Names = Callable[[], str]

UNBOUNDED = 2**32 - 1  # what maximum=None means: the count is a u32

MODEL_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ---- Semaphore --------------------------------------------------------------------------------


class SemaphoreModel(RuleBasedStateMachine):
    #: Set by the test: the ``names`` fixture's factory.
    names: ClassVar[Names]

    def __init__(self) -> None:
        super().__init__()
        self.name = type(self).names()
        self.handles: list[Semaphore] = []
        self.count = 0
        self.maximum = UNBOUNDED

    @initialize(
        data=st.data(),
        maximum=st.one_of(st.none(), st.integers(1, 6), st.just(UNBOUNDED)),
    )
    def create(self, data: st.DataObject, maximum: int | None) -> None:
        top = UNBOUNDED if maximum is None else maximum
        initial = data.draw(st.integers(0, min(top, 6)), label="initial")
        self.handles = [Semaphore(self.name, initial=initial, maximum=maximum, create=True)]
        self.handles.append(Semaphore(self.name, initial=0, maximum=1, create=False))
        self.count, self.maximum = initial, top

    @rule(handle=st.integers(0, 1))
    def acquire_without_waiting(self, handle: int) -> None:
        acquired = self.handles[handle].acquire(timeout=0)
        assert acquired is (self.count > 0)
        if acquired:
            self.count -= 1

    @rule(handle=st.integers(0, 1), n=st.one_of(st.integers(1, 4), st.integers(UNBOUNDED - 4, UNBOUNDED)))
    def release(self, handle: int, n: int) -> None:
        if self.count + n > self.maximum:
            with pytest.raises(ValueError, match="maximum"):
                self.handles[handle].release(n)
        else:
            self.handles[handle].release(n)
            self.count += n

    @precondition(lambda self: self.handles)
    @invariant()
    def value_and_maximum_match_the_model(self) -> None:
        for handle in self.handles:
            assert handle.value == self.count
            assert handle.maximum == (None if self.maximum == UNBOUNDED else self.maximum)
            assert handle.stats().state["value"] == self.count

    def teardown(self) -> None:
        for handle in self.handles:
            handle.close()


def test_semaphore_counts_like_a_bounded_counter(names: Names) -> None:
    class Machine(SemaphoreModel):
        pass

    Machine.names = names
    run_state_machine_as_test(Machine, settings=MODEL_SETTINGS)


# ---- Event -------------------------------------------------------------------------------------


class EventModel(RuleBasedStateMachine):
    #: Set by the test: the ``names`` fixture's factory.
    names: ClassVar[Names]

    def __init__(self) -> None:
        super().__init__()
        self.name = type(self).names()
        self.handles: list[Event] = []
        self.manual = True
        self.flag = False

    @initialize(manual=st.booleans(), initial=st.booleans())
    def create(self, manual: bool, initial: bool) -> None:
        self.handles = [Event(self.name, manual_reset=manual, initial=initial, create=True)]
        self.handles.append(Event(self.name, manual_reset=not manual, initial=not initial, create=False))
        self.manual, self.flag = manual, initial

    @rule(handle=st.integers(0, 1))
    def set(self, handle: int) -> None:
        self.handles[handle].set()
        self.flag = True

    @rule(handle=st.integers(0, 1))
    def clear(self, handle: int) -> None:
        self.handles[handle].clear()
        self.flag = False

    @rule(handle=st.integers(0, 1))
    def wait_without_waiting(self, handle: int) -> None:
        assert self.handles[handle].wait(timeout=0) is self.flag
        if not self.manual:
            self.flag = False

    @rule(handle=st.integers(0, 1))
    def is_set(self, handle: int) -> None:
        assert self.handles[handle].is_set() is self.flag

    @precondition(lambda self: self.handles)
    @invariant()
    def mode_and_state_match_the_model(self) -> None:
        for handle in self.handles:
            assert handle.manual_reset is self.manual
            assert handle.stats().state == {"is_set": self.flag, "manual_reset": self.manual}

    def teardown(self) -> None:
        for handle in self.handles:
            handle.close()


def test_event_behaves_like_a_flag_that_auto_reset_takes_down_on_wait(names: Names) -> None:
    class Machine(EventModel):
        pass

    Machine.names = names
    run_state_machine_as_test(Machine, settings=MODEL_SETTINGS)


# ---- Mutex ---------------------------------------------------------------------------------------


class MutexModel(RuleBasedStateMachine):
    #: Set by the test: the ``names`` fixture's factory and a second thread.
    names: ClassVar[Names]
    other: ClassVar[ThreadPoolExecutor]

    def __init__(self) -> None:
        super().__init__()
        self.mutex = Mutex(type(self).names(), create=True)
        self.held = False

    @rule()
    def acquire_without_waiting(self) -> None:
        if self.held:
            with pytest.raises(RuntimeError, match="already holds"):
                self.mutex.acquire(timeout=0)
        else:
            assert self.mutex.acquire(timeout=0) is True
            assert self.mutex.owner_died is False
            self.held = True

    @rule()
    def release(self) -> None:
        if self.held:
            self.mutex.release()
            self.held = False
        else:
            with pytest.raises(RuntimeError, match="does not hold"):
                self.mutex.release()

    @rule()
    def another_thread_takes_and_gives_back(self) -> None:
        def attempt() -> bool:
            if not self.mutex.acquire(timeout=0):
                return False
            self.mutex.release()
            return True

        assert self.other.submit(attempt).result(5.0) is (not self.held)

    @rule()
    def another_thread_releases(self) -> None:
        with pytest.raises(RuntimeError, match="does not hold"):
            self.other.submit(self.mutex.release).result(5.0)

    @invariant()
    def locked_and_held_match_the_model(self) -> None:
        assert self.mutex.locked() is self.held
        assert self.mutex.held() is self.held
        assert self.other.submit(self.mutex.held).result(5.0) is False

    def teardown(self) -> None:
        if self.held:
            self.mutex.release()
        self.mutex.close()


def test_mutex_is_held_by_exactly_the_thread_that_acquired_it(names: Names) -> None:
    class Machine(MutexModel):
        pass

    with ThreadPoolExecutor(max_workers=1) as other:
        Machine.names, Machine.other = names, other
        run_state_machine_as_test(Machine, settings=MODEL_SETTINGS)
