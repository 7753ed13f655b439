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


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_c_core_passes_its_own_tests(tmp_path: Path) -> None:
    binary = tmp_path / "test_core"
    flags = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", "-pthread"]
    if os.environ.get("MEMIPC_SANITIZE") == "1":
        flags += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-g"]
    build = subprocess.run(
        ["gcc", *flags, f"-I{ROOT / 'src/c'}", *map(str, SOURCES), "-o", str(binary)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60, env=env, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("\nok ") + run.stdout.startswith("ok ") == 8
