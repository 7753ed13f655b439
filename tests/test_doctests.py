"""The runnable examples in the public docstrings really run (against the installed package)."""

from __future__ import annotations

import doctest
import types

import pytest

import memipc
from memipc import _names
from memipc._channels import _pubsub, _queue

# Public classes set __module__ = 'memipc', so their examples are found through memipc.
MODULES = [memipc, _names, _pubsub, _queue]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_pass(module: types.ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, raise_on_error=False, verbose=False)
    assert result.attempted > 0, f"{module.__name__} has no runnable example"
    assert result.failed == 0
