"""The public surface: __all__ is honest and public names live in `memipc`."""

from __future__ import annotations

import queue
import types

import memipc
from memipc import _errors


def test_all_lists_exactly_the_public_names() -> None:
    # Submodules (memipc.cli, once any test imported it) are not names of the API.
    public = {
        name
        for name in dir(memipc)
        if not name.startswith("_") and not isinstance(getattr(memipc, name), types.ModuleType)
    }
    assert set(memipc.__all__) - {"__version__"} == public
    assert memipc.__all__ == sorted(memipc.__all__, key=str)


def test_public_classes_report_the_public_module() -> None:
    for name in memipc.__all__:
        value = getattr(memipc, name)
        if isinstance(value, type):
            assert value.__module__ == "memipc", name


def test_error_tree_matches_the_spec() -> None:
    assert issubclass(memipc.ExistsError, memipc.Error)
    assert issubclass(memipc.ExistsError, FileExistsError)
    assert issubclass(memipc.NotFoundError, FileNotFoundError)
    assert issubclass(memipc.KindMismatchError, TypeError)
    assert issubclass(memipc.CorruptRegionError, ValueError)
    assert issubclass(memipc.MessageTooLargeError, ValueError)
    assert issubclass(memipc.Empty, queue.Empty)
    assert issubclass(memipc.Full, queue.Full)
    assert issubclass(memipc.ClosedError, memipc.Error)
    for name in _errors.__all__:
        assert name in (_errors.__doc__ or ""), f"{name} missing from the drawn tree"
