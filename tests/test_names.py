"""Names and scopes (SPEC §2): validation happens before the OS is touched."""

from __future__ import annotations

import os

import pytest

from memipc import Region
from memipc._names import from_os_name, parse, parse_raw


@pytest.mark.parametrize("good", ["a", "frames", "A.b_c-9", "x" * 200, "Global\\cam0", "Local\\cam0"])
def test_valid_names_are_accepted(good: str) -> None:
    parsed = parse(good)
    assert parsed.name == good.rsplit("\\", maxsplit=1)[-1]


@pytest.mark.parametrize(
    "bad",
    ["", "a/b", "/a", "a\x00b", "..", "a..b", "x" * 201, "sp ace", "é", "Global\\", "Global\\a/b", "a\\b"],
)
def test_invalid_names_raise_value_error_before_touching_the_os(bad: str) -> None:
    with pytest.raises(ValueError, match="name"):
        parse(bad)
    before = set(os.listdir("/dev/shm"))
    with pytest.raises(ValueError, match="name"):
        Region.create(bad, 10)
    assert set(os.listdir("/dev/shm")) == before


def test_non_string_names_raise_type_error() -> None:
    with pytest.raises(TypeError):
        parse(b"frames")  # type: ignore[arg-type]


def test_prefixes_choose_the_scope_and_default_is_user() -> None:
    assert parse("x").scope == "user"
    assert parse("Local\\x").scope == "user"
    assert parse("Global\\x").scope == "global"
    assert parse("x", "global").scope == "global"


def test_a_prefix_that_contradicts_scope_is_refused() -> None:
    with pytest.raises(ValueError, match="scope"):
        parse("Global\\x", "user")
    with pytest.raises(ValueError, match="scope"):
        parse("x", "everyone")  # type: ignore[arg-type]


def test_user_and_global_scopes_use_different_os_names() -> None:
    user, shared = parse("x"), parse("Global\\x")
    assert user.os_name != shared.os_name
    assert str(os.getuid()) in user.os_name
    assert from_os_name(user.os_name) == user
    assert from_os_name(shared.os_name) == shared
    assert from_os_name("psm_12345") is None
    assert from_os_name("memipc.u999999999.x") is None


def test_raw_names_accept_a_leading_slash_like_shm_open() -> None:
    assert parse_raw("/psm_abc").os_name == "psm_abc"
    with pytest.raises(ValueError):
        parse_raw("/a/b")
