"""Object names and scopes (SPEC §2): validation, then the OS-level name.

A name is 1-200 characters of ``[A-Za-z0-9._-]``, optionally prefixed with
``Global\\`` or ``Local\\`` as on Win32, which choose the scope.  Everything
else is refused with ``ValueError`` before the OS is touched, so a name can
never escape the shared-memory directory or collide with another user's.

Scopes map to distinct OS names so that two users never see each other's
user-scope objects:

==========  ==================================  ===========================
scope       OS name                             default permissions
==========  ==================================  ===========================
``user``    ``memipc.u<uid>.<name>``            0600 (owner only)
``global``  ``memipc.g.<name>``                 0660
==========  ==================================  ===========================

Headerless segments made by other programs are opened *raw*, by their own OS
name, with the same character rules.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

Scope = Literal["user", "global"]

NAME_MAX_LENGTH = 200
OS_NAME_PREFIX = "memipc."
_NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,200}")
_PREFIXES: dict[str, Scope] = {"Global\\": "global", "Local\\": "user"}
DEFAULT_MODES: dict[Scope, int] = {"user": 0o600, "global": 0o660}


@dataclass(frozen=True, slots=True)
class ObjectName:
    """A validated name: what the user called it, its scope, and its OS name."""

    name: str
    scope: Scope
    os_name: str

    @property
    def qualified(self) -> str:
        """The name with its Win32-style scope prefix, as shown in messages."""
        return ("Global\\" if self.scope == "global" else "") + self.name


def _check_characters(name: str, what: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} must not be empty; use 1-{NAME_MAX_LENGTH} characters of [A-Za-z0-9._-]")
    if len(name) > NAME_MAX_LENGTH:
        raise ValueError(
            f"{what} {name[:40]!r}... is {len(name)} characters long; the limit is {NAME_MAX_LENGTH}"
        )
    if not _NAME_PATTERN.fullmatch(name):
        bad = sorted({c for c in name if not re.fullmatch(r"[A-Za-z0-9._-]", c)})
        raise ValueError(
            f"{what} {name!r} contains {''.join(bad)!r}; names may use only letters, digits, '.', '_' and '-'"
        )
    if ".." in name:
        raise ValueError(f"{what} {name!r} contains '..'; choose a name without it")


def parse(name: str, scope: Scope | None = None) -> ObjectName:
    """Validate ``name`` (with an optional ``Global\\``/``Local\\`` prefix) and ``scope``.

    >>> parse("Global\\\\frames").scope
    'global'
    >>> parse("frames").os_name.startswith("memipc.u")
    True
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    if scope is not None and scope not in DEFAULT_MODES:
        raise ValueError(f"scope must be 'user' or 'global', not {scope!r}")
    bare = name
    for prefix, prefix_scope in _PREFIXES.items():
        if name.startswith(prefix):
            bare = name[len(prefix) :]
            if scope is not None and scope != prefix_scope:
                raise ValueError(
                    f"name {name!r} says scope={prefix_scope!r} but scope={scope!r} was passed; "
                    "drop one of the two"
                )
            scope = prefix_scope
            break
    _check_characters(bare, "name")
    resolved: Scope = scope or "user"
    owner = f"u{os.getuid()}" if resolved == "user" else "g"
    return ObjectName(bare, resolved, f"{OS_NAME_PREFIX}{owner}.{bare}")


def parse_raw(name: str) -> ObjectName:
    """Validate the OS name of a foreign segment (``shm_open`` style, leading '/' allowed)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    bare = name[1:] if name.startswith("/") else name
    _check_characters(bare, "segment name")
    return ObjectName(bare, "user", bare)


def from_os_name(os_name: str) -> ObjectName | None:
    """The memipc name behind an OS name, or None if memipc did not make it."""
    if not os_name.startswith(OS_NAME_PREFIX):
        return None
    owner, _, bare = os_name[len(OS_NAME_PREFIX) :].partition(".")
    if not bare or not _NAME_PATTERN.fullmatch(bare) or ".." in bare:
        return None
    if owner == "g":
        return ObjectName(bare, "global", os_name)
    if owner == f"u{os.getuid()}":
        return ObjectName(bare, "user", os_name)
    return None
