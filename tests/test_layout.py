"""The Python mirror of layout.h matches what the compiler computed."""

from __future__ import annotations

from memipc import _core, _layout


def test_every_python_offset_row_matches_the_c_offset_table() -> None:
    assert _layout.PY_OFFSETS == _core.OFFSETS


def test_header_fits_one_page_and_the_attach_table_fits_the_header() -> None:
    assert _layout.HEADER_BYTES == 4096
    assert (
        _layout.ATTACH_TABLE_OFFSET + _layout.ATTACH_SLOTS * _layout.ATTACH_SLOT.size == _layout.HEADER_BYTES
    )
    assert _layout.HEADER_FIXED.size == _layout.NAME_OFFSET


def test_magic_reveals_the_byte_order() -> None:
    assert _layout.MAGIC_BYTES[0] == 0x89
    assert int.from_bytes(_layout.MAGIC_BYTES, "big") != _layout.MAGIC


def test_abi_version_is_derived_from_the_layout_and_nonzero() -> None:
    assert _core.ABI_VERSION != 0
    assert _core.ABI_VERSION >> 24 == _core.LAYOUT_REVISION
