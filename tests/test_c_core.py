"""Build and run the C core's own test program (no Python involved in the checks).

The C files other than module.c never include Python.h, so they can be tested
alone; under MEMIPC_SANITIZE=1 (CI's second pass) the program is built with
the same sanitizers as the extension.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "src/c/futex.c", ROOT / "src/c/ofd.c", ROOT / "tests/c/test_core.c"]


SANITIZED = os.environ.get("MEMIPC_SANITIZE") == "1"
RING_SOURCES = [ROOT / f"src/c/{name}.c" for name in ("ring", "wait", "mutex", "proc", "futex")]
BUS_SOURCES = [ROOT / f"src/c/{name}.c" for name in ("bus", "wait", "mutex", "proc", "futex")]


def build(sources: list[Path], binary: Path) -> None:
    flags = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", "-pthread"]
    if SANITIZED:
        flags += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-g"]
    result = subprocess.run(
        ["gcc", *flags, f"-I{ROOT / 'src/c'}", *map(str, sources), "-o", str(binary)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def run(binary: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_c_core_passes_its_own_tests(tmp_path: Path) -> None:
    binary = tmp_path / "test_core"
    build(SOURCES, binary)
    result = run(binary)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("\nok ") + result.stdout.startswith("ok ") == 8


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_ring_survives_four_by_four_processes_at_c_speed(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Races between release, reuse and a stale re-read of a header (a live
    ring once reported as corrupt) need millions of operations to show."""
    binary = tmp_path / "test_ring_stress"
    build([ROOT / "tests/c/test_ring_stress.c", *RING_SOURCES], binary)
    per_producer = 300_000 if SANITIZED else 1_000_000
    if request.config.getoption("--stress"):
        per_producer *= 10
    result = run(binary, str(per_producer), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok ring stress"), result.stdout


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("overflow", ["block", "overwrite"])
def test_bus_survives_two_publishers_and_four_subscribers_at_c_speed(
    tmp_path: Path, overflow: str, request: pytest.FixtureRequest
) -> None:
    """Block: every subscriber gets every message in order.  Overwrite: nothing
    torn, order kept, received + missed == published (a reader that checked
    `tail - oldest` between two unlocked reads once saw a live ring as corrupt)."""
    binary = tmp_path / "test_bus_stress"
    build([ROOT / "tests/c/test_bus_stress.c", *BUS_SOURCES], binary)
    per_publisher = 50_000 if SANITIZED else 200_000
    if request.config.getoption("--stress"):
        per_publisher *= 10
    result = run(binary, overflow, str(per_publisher), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok bus stress"), result.stdout
