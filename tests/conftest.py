"""Shared fixtures: unique names that are always cleaned up, and a leak check.

Every test that creates memipc objects takes names from the ``name`` fixture
(or ``names`` for several).  Whatever happens in the test, every OS object
whose name starts with the test's unique prefix is removed afterwards, and
the session fails if any object this run created is still in /dev/shm at the
end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from memipc import _names
from memipc._platform import current as platform

RUN_TAG = f"t{os.getpid()}{uuid.uuid4().hex[:6]}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--stress", action="store_true", help="run long soak and stress tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--stress"):
        return
    skip = pytest.mark.skip(reason="stress test: run with --stress")
    for item in items:
        if "stress" in item.keywords:
            item.add_marker(skip)


def _remove_tagged(tag: str) -> list[str]:
    removed = []
    for os_name in platform.list_segments():
        if tag in os_name:
            try:
                platform.unlink_segment(os_name)
                removed.append(os_name)
            except FileNotFoundError:
                pass
    return removed


@pytest.fixture
def names() -> Iterator[Callable[[], str]]:
    """A factory of unique names; everything made under them is removed afterwards."""
    tag = f"{RUN_TAG}-{uuid.uuid4().hex[:8]}"
    counter = iter(range(1_000_000))

    def make() -> str:
        return f"{tag}-{next(counter)}"

    yield make
    _remove_tagged(tag)


@pytest.fixture
def name(names: Callable[[], str]) -> str:
    """One unique name, removed after the test even if it fails."""
    return names()


@pytest.fixture
def os_path() -> Callable[[str], str]:
    """The /dev/shm path of a user-scope name."""
    return lambda name: platform.segment_path(_names.parse(name).os_name)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaked = _remove_tagged(RUN_TAG)
    if leaked and exitstatus == 0:
        print(f"\nmemipc objects leaked by this test run (now removed): {leaked}")
        session.exitstatus = 1
